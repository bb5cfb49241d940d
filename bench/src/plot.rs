//! `load --ramp --plot FILE`: a ramp drawn as three panels over the offered rate (x): answered
//! requests/s (with the ideal "every request answered" diagonal in grey and the sustainable rate
//! as a green vertical line), loss % (the 1 % sustainability line in grey), and RTT p99 on a log
//! scale. The exact numbers are in the table and the JSON; the plot is for the shape.
//!
//! `FILE.svg` is an SVG: its titles and tick labels are `<text>` elements, which the viewer
//! draws in its own sans-serif font. Any other name is a PNG (plotters' bitmap backend), its text
//! drawn with DejaVu Sans, which is embedded from `bench/fonts/` (license beside it) and drawn by
//! plotters' `ab_glyph` feature: no system fonts, no fontconfig.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::ramp::{RampReport, StepResult, SUSTAINABLE_LOSS_PCT};

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 940;
/// The strip under the panels for the x axis title.
const FOOTER: u32 = 30;
const TITLE_SIZE: f64 = 20.0;
const LABEL_SIZE: f64 = 15.0;
const GRID: RGBColor = RGBColor(225, 225, 225);
const REFERENCE: RGBColor = RGBColor(150, 150, 150);
const ANSWERED: RGBColor = RGBColor(31, 119, 180);
const LOSS: RGBColor = RGBColor(214, 39, 40);
const RTT: RGBColor = RGBColor(148, 103, 189);
const SUSTAINABLE: RGBColor = RGBColor(44, 160, 44);
/// The family every text is set in: the embedded font is registered under this name.
const FAMILY: &str = "sans-serif";
/// DejaVu Sans (see bench/fonts/LICENSE).
const FONT: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");

/// A line of a panel: its points, colour, stroke width, and whether each point gets a dot.
type Line = (Vec<(f64, f64)>, RGBColor, u32, bool);

/// Draws `report` into `path`: an SVG if its name ends in `.svg`, else a PNG (see the module doc).
pub fn write(report: &RampReport, path: &Path) -> anyhow::Result<()> {
    let fail = |e: &dyn std::fmt::Display| anyhow!("drawing the plot into {}: {e}", path.display());
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("svg")) {
        let svg = render_svg(report)?;
        return std::fs::write(path, svg).map_err(|e| fail(&e));
    }
    register_font()?;
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    draw(&root, report)?;
    root.present().map_err(|e| fail(&e))
}

/// The SVG of `report`.
pub fn render_svg(report: &RampReport) -> anyhow::Result<String> {
    // Text in an SVG is laid out by the viewer, but plotters still measures it with the font
    // it knows (for the anchors), so the embedded font is registered for SVGs too.
    register_font()?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, report)?;
        root.present().map_err(|e| anyhow!("drawing the plot: {e}"))?;
    }
    Ok(svg)
}

/// Registers the embedded font with plotters, once per process.
fn register_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if !ok {
        bail!("the embedded font (bench/fonts/DejaVuSans.ttf) is not a font plotters can read");
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

/// The label of 10^e microseconds: 10 µs, 1 ms, 10 s.
fn micros_label(e: i32) -> String {
    match e {
        ..=2 => short_number(10f64.powi(e)) + " µs",
        3..=5 => short_number(10f64.powi(e - 3)) + " ms",
        _ => short_number(10f64.powi(e - 6)) + " s",
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

/// Text of `size` pixels in `color`, anchored at `h` and `v` of its box.
fn text_style(size: f64, color: &'static RGBColor, h: HPos, v: VPos) -> TextStyle<'static> {
    TextStyle::from((FAMILY, size).into_font()).color(color).pos(Pos::new(h, v))
}

/// One panel: a title, y ticks (value, label) and the lines.
struct Panel {
    title: String,
    title_color: &'static RGBColor,
    y_range: (f64, f64),
    y_ticks: Vec<(f64, String)>,
    lines: Vec<Line>,
}

fn draw_panel<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    area: &DrawingArea<DB, Shift>,
    x_max: f64,
    panel: Panel,
) -> anyhow::Result<()> {
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
    let y_label = text_style(LABEL_SIZE, &BLACK, HPos::Right, VPos::Center);
    for (y, label) in &panel.y_ticks {
        let (px, py) = chart.backend_coord(&(0.0, *y));
        root.draw(&Text::new(label.as_str(), (px - 8, py), &y_label)).map_err(|e| fail(&e))?;
    }
    let x_label = text_style(LABEL_SIZE, &BLACK, HPos::Center, VPos::Top);
    for x in ticks(x_max) {
        let (px, py) = chart.backend_coord(&(x, y_lo));
        root.draw(&Text::new(short_number(x), (px, py + 8), &x_label)).map_err(|e| fail(&e))?;
    }
    let (left, top) = chart.backend_coord(&(0.0, y_hi));
    let title = text_style(TITLE_SIZE, panel.title_color, HPos::Left, VPos::Bottom);
    root.draw(&Text::new(panel.title, (left, top - 10), &title)).map_err(|e| fail(&e))?;
    Ok(())
}

/// Draws the three panels and the x axis title of `report` on `root`.
fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, report: &RampReport) -> anyhow::Result<()> {
    if report.steps.is_empty() {
        bail!("the ramp has no steps to plot");
    }
    let fail = |e: &dyn std::fmt::Display| anyhow!("drawing the plot: {e}");
    // Refinement rates lie between the ramp's steps: draw every line in the order of the rate.
    let mut steps = report.steps.clone();
    steps.sort_by_key(|s| s.offered);
    let x_max = steps.iter().map(|s| s.offered).max().unwrap_or(1) as f64 * 1.05;
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let (plots, _footer) = root.split_vertically(HEIGHT - FOOTER);
    let panels = plots.split_evenly((3, 1));
    draw_panel(root, &panels[0], x_max, answered_panel(&steps, report.sustainable_rate, x_max))?;
    draw_panel(root, &panels[1], x_max, loss_panel(&steps, report.max_loss_pct, x_max))?;
    draw_panel(root, &panels[2], x_max, rtt_panel(&steps))?;
    let x_title = text_style(LABEL_SIZE + 2.0, &BLACK, HPos::Center, VPos::Top);
    let at = (WIDTH as i32 / 2, HEIGHT as i32 - FOOTER as i32 + 4);
    root.draw(&Text::new("Offered requests/s", at, &x_title)).map_err(|e| fail(&e))?;
    Ok(())
}

/// Answered/s against offered/s, with the ideal diagonal and the sustainable rate.
fn answered_panel(steps: &[StepResult], sustainable_rate: u64, x_max: f64) -> Panel {
    let sustainable = sustainable_rate as f64;
    let mut lines = vec![(vec![(0.0, 0.0), (x_max, x_max)], REFERENCE, 1, false)];
    if sustainable_rate > 0 {
        lines.push((vec![(sustainable, 0.0), (sustainable, x_max)], SUSTAINABLE, 2, false));
    }
    lines.push((steps.iter().map(|s| (s.offered as f64, s.answered_rate as f64)).collect(), ANSWERED, 2, true));
    Panel {
        title: format!("Answered/s (sustainable {}/s)", short_number(sustainable)),
        title_color: &ANSWERED,
        y_range: (0.0, x_max),
        y_ticks: ticks(x_max).into_iter().map(|t| (t, short_number(t))).collect(),
        lines,
    }
}

/// Loss %, with the sustainability line.
fn loss_panel(steps: &[StepResult], max_loss_pct: f64, x_max: f64) -> Panel {
    let loss_max = steps.iter().map(|s| s.loss_pct).fold(max_loss_pct.max(2.0), f64::max).min(100.0) * 1.05;
    Panel {
        title: "Loss %".into(),
        title_color: &LOSS,
        y_range: (0.0, loss_max),
        y_ticks: ticks(loss_max).into_iter().map(|t| (t, short_number(t) + " %")).collect(),
        lines: vec![
            (vec![(0.0, SUSTAINABLE_LOSS_PCT), (x_max, SUSTAINABLE_LOSS_PCT)], REFERENCE, 1, false),
            (steps.iter().map(|s| (s.offered as f64, s.loss_pct)).collect(), LOSS, 2, true),
        ],
    }
}

/// RTT p99 as log10 of microseconds.
fn rtt_panel(steps: &[StepResult]) -> Panel {
    let log_us = |ns: u64| (ns.max(1) as f64 / 1000.0).max(0.1).log10();
    let lo = steps.iter().map(|s| log_us(s.rtt_p99_ns)).fold(f64::INFINITY, f64::min).floor().min(1.0);
    let hi = steps.iter().map(|s| log_us(s.rtt_p99_ns)).fold(f64::NEG_INFINITY, f64::max).ceil().max(lo + 1.0);
    Panel {
        title: "RTT p99 (log scale)".into(),
        title_color: &RTT,
        y_range: (lo, hi),
        y_ticks: (lo as i32..=hi as i32).map(|e| (e as f64, micros_label(e))).collect(),
        lines: vec![(steps.iter().map(|s| (s.offered as f64, log_us(s.rtt_p99_ns))).collect(), RTT, 2, true)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ramp::report::tests::report;
    use crate::ramp::step::tests::step;

    fn ramp() -> RampReport {
        let mut steps = vec![step(50_000, 0.0), step(100_000, 0.2), step(200_000, 12.0), step(141_421, 0.6)];
        for (s, rtt_us) in steps.iter_mut().zip([40, 90, 20_000, 300]) {
            s.rtt_p99_ns = rtt_us * 1000;
        }
        report(steps, 141_421)
    }

    #[test]
    fn an_svg_has_its_titles_and_axis_labels_as_text_elements() {
        let svg = render_svg(&ramp()).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
        let texts: Vec<&str> = svg
            .split("<text")
            .skip(1)
            .map(|t| t.split_once('>').and_then(|(_, rest)| rest.split_once("</text>")).unwrap().0.trim())
            .collect();
        for label in [
            "Offered requests/s",
            "Answered/s (sustainable 141.42K/s)",
            "Loss %",
            "RTT p99 (log scale)",
            "100K",
            "200K",
            "10 %",
            "10 µs",
            "10 ms",
        ] {
            assert!(texts.contains(&label), "{label:?} in {texts:?}");
        }
        assert!(svg.contains("font-family=\"sans-serif\""), "{svg}");
    }

    #[test]
    fn the_name_picks_svg_or_png() {
        let dir = std::env::temp_dir().join(format!("stratum-bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (svg, png) = (dir.join("ramp.svg"), dir.join("ramp.png"));
        write(&ramp(), &svg).unwrap();
        write(&ramp(), &png).unwrap();
        assert!(std::fs::read_to_string(&svg).unwrap().contains("<text"));
        assert_eq!(&std::fs::read(&png).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
        let empty = report(vec![], 0);
        assert!(write(&empty, &svg).unwrap_err().to_string().contains("no steps"));
        std::fs::remove_dir_all(&dir).unwrap();
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
            ["0.1 µs", "10 µs", "1 ms", "100 ms", "10 s"]
        );
    }
}
