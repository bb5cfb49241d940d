//! `load --ramp --plot FILE.png`: a ramp drawn as three panels over the offered rate (x):
//! answered requests/s (with the ideal "every request answered" diagonal in grey and the
//! sustainable rate as a green vertical line), loss % (the 1 % sustainability line in grey), and
//! RTT p99 on a log scale.
//!
//! Text: plotters draws text only with its `ttf` feature (font-kit, which needs fontconfig and
//! system fonts) or `ab_glyph` with a font file we would have to embed; without either it panics
//! on the first label. So plotters is built with `bitmap_backend`, `bitmap_encoder` and
//! `line_series` only, plotters never draws text here, and the titles and tick labels are drawn
//! with the small 3x5 pixel font below (digits, capital letters and `. / % - :`). The exact numbers
//! are in the table and the JSON; the plot is for the shape.

use std::path::Path;

use anyhow::{anyhow, bail};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::ramp::{RampReport, SUSTAINABLE_LOSS_PCT};

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 940;
/// The strip under the panels for the x axis title.
const FOOTER: u32 = 30;
/// Pixels per font pixel.
const SCALE: i32 = 3;
const GRID: RGBColor = RGBColor(225, 225, 225);
const REFERENCE: RGBColor = RGBColor(150, 150, 150);
const ANSWERED: RGBColor = RGBColor(31, 119, 180);
const LOSS: RGBColor = RGBColor(214, 39, 40);
const RTT: RGBColor = RGBColor(148, 103, 189);
const SUSTAINABLE: RGBColor = RGBColor(44, 160, 44);

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
/// A line of a panel: its points, colour, stroke width, and whether each point gets a dot.
type Line = (Vec<(f64, f64)>, RGBColor, u32, bool);

/// 3x5 glyphs, one string of 15 '#'/'.' per character, rows top to bottom.
fn glyph(c: char) -> &'static str {
    match c.to_ascii_uppercase() {
        '0' => "####.##.##.####",
        '1' => ".#.##..#..#.###",
        '2' => "###..#####..###",
        '3' => "###..####..####",
        '4' => "#.##.####..#..#",
        '5' => "####..###..####",
        '6' => "####..####.####",
        '7' => "###..#..#..#..#",
        '8' => "####.#####.####",
        '9' => "####.####..####",
        'A' => ".#.#.#####.##.#",
        'B' => "##.#.###.#.###.",
        'C' => ".###..#..#...##",
        'D' => "##.#.##.##.###.",
        'E' => "####..##.#..###",
        'F' => "####..##.#..#..",
        'G' => ".###..#.##.#.##",
        'H' => "#.##.#####.##.#",
        'I' => "###.#..#..#.###",
        'J' => "..#..#..##.#.#.",
        'K' => "#.##.###.#.##.#",
        'L' => "#..#..#..#..###",
        'M' => "#.########.##.#",
        'N' => "##.#.##.##.##.#",
        'O' => ".#.#.##.##.#.#.",
        'P' => "##.#.###.#..#..",
        'Q' => ".#.#.##.###..##",
        'R' => "##.#.###.#.##.#",
        'S' => ".###...#...###.",
        'T' => "###.#..#..#..#.",
        'U' => "#.##.##.##.####",
        'V' => "#.##.##.##.#.#.",
        'W' => "#.##.########.#",
        'X' => "#.##.#.#.#.##.#",
        'Y' => "#.##.#.#..#..#.",
        'Z' => "###..#.#.#..###",
        '.' => ".............#.",
        '/' => "..#..#.#.#..#..",
        '%' => "#.#..#.#.#..#.#",
        '-' => "......###......",
        ':' => "....#.....#....",
        _ => "...............",
    }
}

/// Width in pixels of `text` in the pixel font.
fn text_width(text: &str) -> i32 {
    (text.chars().count() as i32 * 4 - 1).max(0) * SCALE
}

/// Draws `text` with its top left corner at `(x, y)` (pixels of `area`).
fn draw_text(area: &Area, text: &str, (x, y): (i32, i32), color: &RGBColor) -> anyhow::Result<()> {
    for (i, c) in text.chars().enumerate() {
        let x0 = x + i as i32 * 4 * SCALE;
        for (k, pixel) in glyph(c).bytes().enumerate() {
            if pixel == b'#' {
                let (px, py) = (x0 + (k as i32 % 3) * SCALE, y + (k as i32 / 3) * SCALE);
                area.draw(&Rectangle::new([(px, py), (px + SCALE - 1, py + SCALE - 1)], color.filled()))
                    .map_err(|e| anyhow!("drawing the plot: {e}"))?;
            }
        }
    }
    Ok(())
}

/// A rate or count, short: 950, 12.5K, 1.25M.
pub fn short_number(v: f64) -> String {
    let trim = |s: String| if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    match v.abs() {
        a if a >= 1e6 => trim(format!("{:.2}", v / 1e6)) + "M",
        a if a >= 1e3 => trim(format!("{:.2}", v / 1e3)) + "K",
        a if a >= 10.0 || a == 0.0 => format!("{v:.0}"),
        _ => trim(format!("{v:.2}")),
    }
}

/// The label of 10^e microseconds: 10US, 1MS, 10S.
fn micros_label(e: i32) -> String {
    match e {
        ..=2 => short_number(10f64.powi(e)) + "US",
        3..=5 => short_number(10f64.powi(e - 3)) + "MS",
        _ => short_number(10f64.powi(e - 6)) + "S",
    }
}

/// At most seven round ticks (1, 2 or 5 x 10^k apart) from 0 to `max`.
pub fn ticks(max: f64) -> Vec<f64> {
    if !(max > 0.0 && max.is_finite()) {
        return vec![0.0];
    }
    let raw = max / 6.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    (0..).map(|i| i as f64 * step).take_while(|t| *t <= max * 1.000_001).collect()
}

/// One panel: a title, y ticks (value, label), the lines (points, colour, width) and the x ticks.
struct Panel<'a> {
    title: &'a str,
    title_color: RGBColor,
    y_range: (f64, f64),
    y_ticks: Vec<(f64, String)>,
    lines: Vec<Line>,
}

fn draw_panel(root: &Area, area: &Area, x_max: f64, panel: Panel) -> anyhow::Result<()> {
    let fail = |e: &dyn std::fmt::Display| anyhow!("drawing the plot: {e}");
    let mut chart = ChartBuilder::on(area)
        .margin_top(40)
        .margin_bottom(30)
        .margin_left(100)
        .margin_right(30)
        .build_cartesian_2d(0.0..x_max, panel.y_range.0..panel.y_range.1)
        .map_err(|e| fail(&e))?;
    let (y_lo, y_hi) = panel.y_range;
    // Grid, then the frame.
    for x in ticks(x_max) {
        chart.draw_series(LineSeries::new([(x, y_lo), (x, y_hi)], GRID.stroke_width(1))).map_err(|e| fail(&e))?;
    }
    for (y, _) in &panel.y_ticks {
        chart.draw_series(LineSeries::new([(0.0, *y), (x_max, *y)], GRID.stroke_width(1))).map_err(|e| fail(&e))?;
    }
    let frame = [(0.0, y_lo), (x_max, y_lo), (x_max, y_hi), (0.0, y_hi), (0.0, y_lo)];
    chart.draw_series(LineSeries::new(frame, BLACK.stroke_width(1))).map_err(|e| fail(&e))?;
    for (points, color, width, markers) in panel.lines {
        chart.draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(width))).map_err(|e| fail(&e))?;
        if markers {
            chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled()))).map_err(|e| fail(&e))?;
        }
    }
    // Labels, in pixels of the root area.
    let font_h = 5 * SCALE;
    for (y, label) in &panel.y_ticks {
        let (px, py) = chart.backend_coord(&(0.0, *y));
        draw_text(root, label, (px - 8 - text_width(label), py - font_h / 2), &BLACK)?;
    }
    for x in ticks(x_max) {
        let (px, py) = chart.backend_coord(&(x, y_lo));
        let label = short_number(x);
        draw_text(root, &label, (px - text_width(&label) / 2, py + 8), &BLACK)?;
    }
    let (left, top) = chart.backend_coord(&(0.0, y_hi));
    draw_text(root, panel.title, (left, top - font_h - 10), &panel.title_color)?;
    Ok(())
}

/// Draws `report` into a PNG at `path` (see the module doc).
pub fn write_png(report: &RampReport, path: &Path) -> anyhow::Result<()> {
    if report.steps.is_empty() {
        bail!("the ramp has no steps to plot");
    }
    let fail = |e: &dyn std::fmt::Display| anyhow!("drawing the plot into {}: {e}", path.display());
    // Refinement rates lie between the ramp's steps: draw every line in the order of the rate.
    let mut steps = report.steps.clone();
    steps.sort_by_key(|s| s.offered);
    let x_max = steps.iter().map(|s| s.offered).max().unwrap_or(1) as f64 * 1.05;
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let (plots, _footer) = root.split_vertically(HEIGHT - FOOTER);
    let panels = plots.split_evenly((3, 1));
    let sustainable = report.sustainable_rate as f64;

    // Answered/s against offered/s.
    let rate_max = x_max;
    let mut lines = vec![(vec![(0.0, 0.0), (x_max, x_max)], REFERENCE, 1, false)];
    if report.sustainable_rate > 0 {
        lines.push((vec![(sustainable, 0.0), (sustainable, rate_max)], SUSTAINABLE, 2, false));
    }
    lines.push((steps.iter().map(|s| (s.offered as f64, s.answered_rate as f64)).collect(), ANSWERED, 2, true));
    let title = format!("ANSWERED/S - SUSTAINABLE {}/S", short_number(sustainable));
    let y_ticks = ticks(rate_max).into_iter().map(|t| (t, short_number(t))).collect();
    draw_panel(
        &root,
        &panels[0],
        x_max,
        Panel { title: &title, title_color: ANSWERED, y_range: (0.0, rate_max), y_ticks, lines },
    )?;

    // Loss %.
    let loss_max = steps.iter().map(|s| s.loss_pct).fold(report.max_loss_pct.max(2.0), f64::max).min(100.0) * 1.05;
    let lines = vec![
        (vec![(0.0, SUSTAINABLE_LOSS_PCT), (x_max, SUSTAINABLE_LOSS_PCT)], REFERENCE, 1, false),
        (steps.iter().map(|s| (s.offered as f64, s.loss_pct)).collect(), LOSS, 2, true),
    ];
    let y_ticks = ticks(loss_max).into_iter().map(|t| (t, short_number(t) + "%")).collect();
    let title = "LOSS %";
    draw_panel(&root, &panels[1], x_max, Panel { title, title_color: LOSS, y_range: (0.0, loss_max), y_ticks, lines })?;

    // RTT p99, log10 of microseconds.
    let log_us = |ns: u64| (ns.max(1) as f64 / 1000.0).max(0.1).log10();
    let lo = steps.iter().map(|s| log_us(s.rtt_p99_ns)).fold(f64::INFINITY, f64::min).floor().min(1.0);
    let hi = steps.iter().map(|s| log_us(s.rtt_p99_ns)).fold(f64::NEG_INFINITY, f64::max).ceil().max(lo + 1.0);
    let y_ticks = (lo as i32..=hi as i32).map(|e| (e as f64, micros_label(e))).collect();
    let lines = vec![(steps.iter().map(|s| (s.offered as f64, log_us(s.rtt_p99_ns))).collect(), RTT, 2, true)];
    let title = "RTT P99 - LOG SCALE";
    draw_panel(&root, &panels[2], x_max, Panel { title, title_color: RTT, y_range: (lo, hi), y_ticks, lines })?;
    let label = "OFFERED REQUESTS/S";
    draw_text(&root, label, ((WIDTH as i32 - text_width(label)) / 2, HEIGHT as i32 - FOOTER as i32 + 4), &BLACK)?;

    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_glyph_is_3x5() {
        for c in ('0'..='9').chain('A'..='Z').chain(". /%-:".chars()) {
            assert_eq!(glyph(c).len(), 15, "{c:?}");
        }
    }

    #[test]
    fn ticks_and_short_numbers() {
        assert_eq!(ticks(100.0), [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(ticks(262_500.0), [0.0, 50_000.0, 100_000.0, 150_000.0, 200_000.0, 250_000.0]);
        assert_eq!(ticks(0.0), [0.0]);
        assert_eq!(short_number(250_000.0), "250K");
        assert_eq!(short_number(1_250_000.0), "1.25M");
        assert_eq!(short_number(12_500.0), "12.5K");
        assert_eq!(short_number(950.0), "950");
        assert_eq!(short_number(0.5), "0.5");
        assert_eq!(short_number(0.0), "0");
        assert_eq!(
            [micros_label(-1), micros_label(1), micros_label(3), micros_label(5), micros_label(7)],
            ["0.1US", "10US", "1MS", "100MS", "10S"]
        );
    }
}
