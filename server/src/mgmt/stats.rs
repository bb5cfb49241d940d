//! `[stats]`: ntpd-format statistics files ([`super::stats_format`] has the layouts).
//!
//! The sync thread makes the lines ([`SyncStats`]: loopstats at a clock update, peerstats at a
//! source's sample, rawstats at a reply, clockstats at a refclock reading) and hands them to a
//! writer thread over a bounded channel with `try_send`: the sync thread never waits on a disk.
//! A full channel drops the line and counts it. The writer appends to `DIR/KIND.YYYYMMDD`
//! (buffered, flushed within a second), moves to a new file when a line's UTC date changes, keeps
//! `KIND` as a symlink to the current one (as ntpd does), and deletes all but the newest
//! `keep-days` files of each kind. It also writes sysstats once an hour from the workers'
//! counters. A directory that is missing, read-only or full is logged once (and once more when
//! writing works again) and counted; serving and sync go on.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use stratum_proto::mode6::Selection;
use stratum_proto::sync::{ReplyOutcome, SourceId, SourceState, Tracking};
use stratum_proto::{DropReason, NtpDuration, NtpHeader, NtpTimestamp};

use super::stats_format::{self as format, Kind, SysCounts, UnixTime};
use crate::config::StatsConfig;
use crate::dataplane::stats::Totals;
use crate::mgmt::status::ServerStatus;
use crate::sync::upstream::SourceRow;

/// Lines waiting for the writer; more are dropped and counted.
pub const QUEUE_DEPTH: usize = 4096;
/// How often sysstats gets a line.
pub const SYSSTATS_INTERVAL: Duration = Duration::from_secs(3600);

/// Per file: lines written (into the file's buffer), dropped (queue full), failed (the disk
/// refused a line or a buffer's flush).
#[derive(Debug, Default)]
pub struct StatsCounters {
    pub written: [AtomicU64; 5],
    pub dropped: [AtomicU64; 5],
    pub failed: [AtomicU64; 5],
}

/// One line on its way to the writer (without its date columns).
#[derive(Debug)]
pub struct Record {
    kind: Kind,
    at: UnixTime,
    text: String,
}

/// The sync thread's end of the channel.
#[derive(Clone, Debug)]
pub struct StatsSink {
    tx: SyncSender<Record>,
    enabled: [bool; 5],
    pub counters: Arc<StatsCounters>,
}

impl StatsSink {
    pub fn new(config: &StatsConfig) -> (Self, Receiver<Record>) {
        let (tx, rx) = sync_channel(QUEUE_DEPTH);
        let enabled = [config.loopstats, config.peerstats, config.rawstats, config.clockstats, config.sysstats];
        (Self { tx, enabled, counters: Arc::default() }, rx)
    }

    pub fn wants(&self, kind: Kind) -> bool {
        self.enabled[kind.index()]
    }

    /// Queues `text` for `kind`'s file at `at`; never blocks.
    pub fn send(&self, kind: Kind, at: NtpTimestamp, text: String) {
        if !self.wants(kind) {
            return;
        }
        let record = Record { kind, at: UnixTime::from_ntp(at), text };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(record) {
            self.counters.dropped[kind.index()].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the sync thread keeps to know what is new at each publication.
#[derive(Debug)]
pub struct SyncStats {
    sink: StatsSink,
    last_update: Option<NtpTimestamp>,
    last_samples: HashMap<SourceId, NtpTimestamp>,
}

impl SyncStats {
    pub fn new(sink: StatsSink) -> Self {
        Self { sink, last_update: None, last_samples: HashMap::new() }
    }

    pub fn wants(&self, kind: Kind) -> bool {
        self.sink.wants(kind)
    }

    /// At each publication: a loopstats line for a new clock update (the engine's wander), a
    /// peerstats line for each source with a new sample.
    pub fn observe(&mut self, rows: &[SourceRow], tracking: &Tracking) {
        if let Some(at) = tracking.last_update.filter(|t| Some(*t) != self.last_update) {
            self.last_update = Some(at);
            let line = format::loop_line(
                tracking.combined_offset,
                tracking.frequency_ppm,
                tracking.offset_error,
                tracking.wander_ppm,
                tracking.system_poll,
            );
            self.sink.send(Kind::Loop, at, line);
        }
        if !self.sink.wants(Kind::Peer) {
            return;
        }
        for row in rows {
            let s = &row.status;
            let Some(at) = s.last_sample_time else { continue };
            if self.last_samples.insert(s.id, at) == Some(at) {
                continue;
            }
            let line = format::peer_line(
                row.address.ip(),
                peer_status(s.state, s.reach),
                s.last_offset.unwrap_or(0.0),
                s.last_delay.unwrap_or(0.0),
                s.dispersion.unwrap_or(0.0),
                s.jitter.unwrap_or(0.0),
            );
            self.sink.send(Kind::Peer, at, line);
        }
    }

    /// rawstats: a reply from `source` (to our `local` address) received at `t4`, and what the
    /// engine made of it. Our requests carry a random transmit timestamp (so a reply's origin
    /// proves it answers us), so T1 is not in the reply: for a sample it is T4 − delay −
    /// (T3 − T2), for anything else the reply's origin as it came.
    pub fn raw(&self, source: IpAddr, local: IpAddr, reply: &[u8], t4: NtpTimestamp, outcome: &ReplyOutcome) {
        if !self.sink.wants(Kind::Raw) {
            return;
        }
        let Some(h) = NtpHeader::new(reply) else { return };
        let (t2, t3) = (h.receive_timestamp(), h.transmit_timestamp());
        let t1 = match outcome {
            ReplyOutcome::Sample { delay, .. } => {
                t4.add(NtpDuration::from_seconds_f64(-delay)).add(NtpDuration::from_bits(-t3.since(t2).to_bits()))
            }
            _ => h.origin_timestamp(),
        };
        let t = [t1, t2, t3, t4];
        self.sink.send(Kind::Raw, t4, format::raw_line(source, local, t));
    }

    /// clockstats: a refclock's reading (its reference time as the timecode).
    pub fn clock(&self, address: IpAddr, driver: &str, reference: NtpTimestamp, local: NtpTimestamp) {
        if !self.sink.wants(Kind::Clock) {
            return;
        }
        let timecode = format!("{driver} {}", format::iso8601(reference));
        self.sink.send(Kind::Clock, local, format::clock_line(address, &timecode));
    }
}

/// The peer status word as mode 6 shows it (configured, reachable, selection).
fn peer_status(state: SourceState, reach: u8) -> u16 {
    let selection = match state {
        SourceState::SystemPeer => Selection::SystemPeer,
        SourceState::Candidate => Selection::Candidate,
        SourceState::Outlier => Selection::Outlier,
        SourceState::Falseticker => Selection::Falseticker,
        _ => Selection::Reject,
    };
    (0x80 | if reach != 0 { 0x10 } else { 0 } | selection as u16) << 8
}

/// Writes records to their day's file.
#[derive(Debug)]
pub struct StatsFiles {
    dir: PathBuf,
    keep: usize,
    open: [Option<(u32, BufWriter<File>)>; 5],
    counters: Arc<StatsCounters>,
    failing: bool,
}

impl StatsFiles {
    pub fn new(dir: &Path, keep: usize, counters: Arc<StatsCounters>) -> Self {
        Self { dir: dir.to_path_buf(), keep, open: Default::default(), counters, failing: false }
    }

    /// Appends `text` to `kind`'s file for `at`'s UTC day, moving to a new file when the day
    /// changed. A failure is counted and logged once; the next line tries again.
    pub fn write(&mut self, kind: Kind, at: UnixTime, text: &str) {
        let day = at.day();
        let result = self.file(kind, day).and_then(|f| writeln!(f, "{} {text}", at.stamp()));
        self.outcome(kind, result);
    }

    /// Pushes buffered lines to the files.
    pub fn flush(&mut self) {
        for kind in Kind::ALL {
            if let Some((_, f)) = self.open[kind.index()].as_mut() {
                if let Err(e) = f.flush() {
                    // What was buffered is lost with the writer: start that file again.
                    self.open[kind.index()] = None;
                    self.outcome(kind, Err(e));
                }
            }
        }
    }

    fn file(&mut self, kind: Kind, day: u32) -> std::io::Result<&mut BufWriter<File>> {
        let slot = &mut self.open[kind.index()];
        if slot.as_ref().is_none_or(|(d, _)| *d != day) {
            if let Some((_, mut old)) = slot.take() {
                old.flush()?;
            }
            let name = format::file_name(kind, day);
            let file = OpenOptions::new().create(true).append(true).open(self.dir.join(&name))?;
            *slot = Some((day, BufWriter::new(file)));
            // `KIND` points at today's file, as ntpd's filegen link does (best effort).
            let link = self.dir.join(kind.name());
            if link.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
                let _ = std::fs::remove_file(&link);
            }
            let _ = std::os::unix::fs::symlink(&name, &link);
            self.expire(kind);
        }
        Ok(&mut self.open[kind.index()].as_mut().expect("opened above").1)
    }

    /// Deletes all but the newest `keep` day files of `kind`.
    fn expire(&self, kind: Kind) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let names: Vec<String> = entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
        for name in format::expired(kind, &names, self.keep) {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
    }

    fn outcome(&mut self, kind: Kind, result: std::io::Result<()>) {
        match result {
            Ok(()) => {
                self.counters.written[kind.index()].fetch_add(1, Ordering::Relaxed);
                if self.failing {
                    tracing::info!(directory = %self.dir.display(), "statistics files are written again");
                    self.failing = false;
                }
            }
            Err(e) => {
                self.counters.failed[kind.index()].fetch_add(1, Ordering::Relaxed);
                if !self.failing {
                    tracing::error!(directory = %self.dir.display(), file = kind.name(), error = %e,
                        "cannot write statistics files (counted in stratumd_stats_lines_total{{outcome=\"failed\"}}); serving and sync go on");
                    self.failing = true;
                }
            }
        }
    }
}

/// The writer thread.
#[derive(Debug)]
pub struct StatsWriter {
    thread: JoinHandle<()>,
}

impl StatsWriter {
    pub fn start(
        config: &StatsConfig,
        rx: Receiver<Record>,
        sink: StatsSink,
        status: Arc<ServerStatus>,
        shutdown: Arc<AtomicBool>,
    ) -> anyhow::Result<Self> {
        let mut files = StatsFiles::new(&config.directory, config.keep_days, sink.counters.clone());
        let thread = std::thread::Builder::new().name("stratumd-stats".into()).spawn(move || {
            let mut last_sys = (Instant::now(), status.totals());
            while !shutdown.load(Ordering::Relaxed) {
                // Short, so that a stop is quick; a flush with nothing buffered costs nothing.
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(r) => {
                        files.write(r.kind, r.at, &r.text);
                        for r in rx.try_iter().take(QUEUE_DEPTH) {
                            files.write(r.kind, r.at, &r.text);
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                if last_sys.0.elapsed() >= SYSSTATS_INTERVAL {
                    let totals = status.totals();
                    let counts = sys_counts(&last_sys.1, &totals, last_sys.0.elapsed().as_secs());
                    sink.send(Kind::Sys, stratum_host::clock::now(), format::sys_line(&counts));
                    last_sys = (Instant::now(), totals);
                }
                files.flush();
            }
            for r in rx.try_iter() {
                files.write(r.kind, r.at, &r.text);
            }
            files.flush();
        })?;
        Ok(Self { thread })
    }

    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// sysstats' columns over an interval, from the workers' totals at its start and end. The
/// workers count no version split: "current version" is every request processed, "old
/// version" those dropped for their version.
pub fn sys_counts(before: &Totals, now: &Totals, seconds: u64) -> SysCounts {
    let d = |a: u64, b: u64| b.saturating_sub(a);
    let drop = |r: DropReason| d(before.dropped[r.index()], now.dropped[r.index()]);
    let kod = d(before.kod.iter().sum(), now.kod.iter().sum());
    let processed = d(before.answered, now.answered) + kod;
    SysCounts {
        seconds,
        received: d(before.received, now.received),
        processed,
        current_version: processed,
        old_version: drop(DropReason::Version),
        denied: drop(DropReason::Denied),
        bad_format: drop(DropReason::Short) + drop(DropReason::Malformed) + drop(DropReason::TooLong),
        bad_auth: drop(DropReason::Authenticated),
        declined: drop(DropReason::Mode) + drop(DropReason::Control),
        limited: drop(DropReason::RateLimited) + kod,
        kod,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day_offset: i64, seconds: i64) -> UnixTime {
        // 2026-12-05 00:00:00 UTC plus the offsets.
        UnixTime { seconds: 1_796_428_800 + day_offset * 86_400 + seconds, nanos: 0 }
    }

    fn lines(dir: &Path, name: &str) -> Vec<String> {
        std::fs::read_to_string(dir.join(name)).unwrap_or_default().lines().map(String::from).collect()
    }

    #[test]
    fn a_day_boundary_moves_to_a_new_file_and_old_days_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let counters = Arc::new(StatsCounters::default());
        let mut files = StatsFiles::new(dir.path(), 2, counters.clone());
        let line = format::loop_line(0.000001, 1.5, 0.00001, 0.001, 6);
        files.write(Kind::Loop, at(-2, 10), &line);
        files.write(Kind::Loop, at(-1, 10), &line);
        files.write(Kind::Loop, at(0, 86_399), &line);
        files.write(Kind::Loop, at(1, 0), &line);
        files.flush();
        let mut names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["loopstats", "loopstats.20261205", "loopstats.20261206"], "two newest days kept");
        // ntpd's columns: MJD, seconds of day, offset, frequency, jitter, wander, tc.
        let before = lines(dir.path(), "loopstats.20261205");
        assert_eq!(before, ["61379 86399.000 0.000001000 1.500 0.000010000 0.001000 6"]);
        let after = lines(dir.path(), "loopstats");
        assert_eq!(after.len(), 1, "the link names the new day's file");
        let cols: Vec<&str> = after[0].split(' ').collect();
        assert_eq!((cols.len(), cols[0], cols[1]), (7, "61380", "0.000"));
        assert_eq!(counters.written[Kind::Loop.index()].load(Ordering::Relaxed), 4);
    }

    #[test]
    fn a_missing_directory_is_counted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let counters = Arc::new(StatsCounters::default());
        let mut files = StatsFiles::new(&dir.path().join("gone"), 7, counters.clone());
        files.write(Kind::Peer, at(0, 1), "192.0.2.1 9614 0 0 0 0");
        files.write(Kind::Peer, at(0, 2), "192.0.2.1 9614 0 0 0 0");
        assert_eq!(counters.failed[Kind::Peer.index()].load(Ordering::Relaxed), 2);
        std::fs::create_dir(dir.path().join("gone")).unwrap();
        files.write(Kind::Peer, at(0, 3), "192.0.2.1 9614 0 0 0 0");
        files.flush();
        assert_eq!(lines(&dir.path().join("gone"), "peerstats.20261205").len(), 1, "writing again once it exists");
    }

    #[test]
    fn a_full_disk_is_counted_and_writing_goes_on() {
        if !Path::new("/dev/full").exists() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/full", dir.path().join("sysstats.20261205")).unwrap();
        let counters = Arc::new(StatsCounters::default());
        let mut files = StatsFiles::new(dir.path(), 7, counters.clone());
        files.write(Kind::Sys, at(0, 1), &format::sys_line(&SysCounts::default()));
        files.flush();
        assert_eq!(counters.failed[Kind::Sys.index()].load(Ordering::Relaxed), 1, "ENOSPC on flush");
        files.write(Kind::Sys, at(1, 1), &format::sys_line(&SysCounts::default()));
        files.flush();
        assert_eq!(lines(dir.path(), "sysstats.20261206").len(), 1, "the next day's file is written");
    }

    #[test]
    fn the_sync_thread_makes_a_line_per_new_sample_and_clock_update() {
        use stratum_proto::sync::{SourceConfig, SyncConfig, SyncEngine};
        let config: StatsConfig = toml::from_str("directory = \"/nonexistent\"").unwrap();
        let (sink, rx) = StatsSink::new(&config);
        let mut stats = SyncStats::new(sink);
        let t0 = NtpTimestamp::from_parts(3_990_000_000, 0);
        let mut engine = SyncEngine::new(SyncConfig::default());
        engine.add_source("192.0.2.10".parse().unwrap(), SourceConfig::default(), t0).unwrap();
        let mut status = engine.sources().next().unwrap();
        let mut tracking = engine.tracking(t0);
        let row = |status| SourceRow {
            name: "s".into(),
            address: "192.0.2.10:123".parse().unwrap(),
            local: None,
            status,
            refclock: None,
        };
        stats.observe(&[row(status)], &tracking);
        assert_eq!(rx.try_iter().count(), 0, "no sample, no update: nothing");

        status.last_sample_time = Some(t0);
        status.last_offset = Some(0.0015);
        status.last_delay = Some(0.0002);
        tracking.last_update = Some(t0);
        tracking.frequency_ppm = 10.0;
        stats.observe(&[row(status)], &tracking);
        stats.observe(&[row(status)], &tracking);
        let lines: Vec<Record> = rx.try_iter().collect();
        assert_eq!(lines.len(), 2, "one of each, once: {lines:?}");
        assert_eq!(lines[0].kind, Kind::Loop);
        let cols: Vec<&str> = lines[0].text.split(' ').collect();
        assert_eq!((cols.len(), cols[1], cols[3]), (5, "10.000", "0.000000"), "frequency, no wander yet: {lines:?}");
        assert_eq!(lines[1].kind, Kind::Peer);
        assert!(lines[1].text.starts_with("192.0.2.10 8000 0.001500000 0.000200000 "), "{lines:?}");

        // The next update, with the engine's wander.
        let t1 = t0.add(stratum_proto::NtpDuration::from_seconds(64));
        tracking.last_update = Some(t1);
        tracking.wander_ppm = 0.25;
        stats.observe(&[row(status)], &tracking);
        let lines: Vec<Record> = rx.try_iter().collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0].text.split(' ').nth(3), Some("0.250000"), "{lines:?}");
    }

    #[test]
    fn sysstats_counts_an_interval() {
        let before = Totals { received: 10, answered: 8, ..Default::default() };
        let mut now = Totals { received: 110, answered: 90, kod: [1, 2, 0], ..Default::default() };
        now.dropped[DropReason::RateLimited.index()] = 5;
        now.dropped[DropReason::Short.index()] = 2;
        let c = sys_counts(&before, &now, 3600);
        assert_eq!((c.received, c.processed, c.kod, c.limited, c.bad_format), (100, 85, 3, 8, 2));
    }
}
