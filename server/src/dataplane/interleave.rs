//! The workers' side of interleaved mode: each worker's adapter between proto's respond() and the
//! one [`InterleavedStore`] every worker shares (a client's requests may reach any worker), the
//! counters, the clock-step watch, and the transmit stamps the backends feed back.
//!
//! Per request: no allocation, no lock (the store's buckets are try-locks), no syscall.

use std::sync::Arc;

use stratum_proto::server::interleaved::{Interleave, InterleavedStore, SaveOutcome, UpdateOutcome};
use stratum_proto::{ClockCorrection, NtpTimestamp, ServerSnapshot};

use crate::config::{Backend, ServerConfig, TxTimestamps};
use crate::dataplane::stats::{incr, WorkerCounters};

/// A correction that moves the served clock by more than this at once is a step: every stored
/// transmit time is then in the old timescale (BAD_INPUTS 44). Slews are continuous (the
/// discipline starts each new line where the last one is), so only rounding stays below it.
const STEP_THRESHOLD_NS: u64 = 1_000;

/// The shared store when `[server] interleaved` is on.
pub fn store(config: &ServerConfig) -> Option<Arc<InterleavedStore>> {
    config.interleaved.then(|| Arc::new(InterleavedStore::new(config.interleaved_entries)))
}

/// Which transmit stamps a backend actually uses, for `stratumctl status` and
/// `stratumd_tx_timestamps_info{mode}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxStampMode {
    /// Interleaved mode off, or `tx-timestamps = "off"`: the daemon's own T3 only.
    Off,
    /// Kernel software stamps, one per reply: the socket backend's from the error queue; the xdp
    /// backend's from the AF_XDP TX metadata in copy mode (the kernel writes CLOCK_TAI when it lets
    /// go of the frame's skb: on veth right after the peer received it, on a NIC at TX completion).
    Software,
    /// The xdp backend without a TX metadata area (or zero-copy with `tx-timestamps =
    /// "software"`): the clock read right before the wakeup that sends a slice of replies.
    SendClock,
    /// NIC stamps (socket SO_TIMESTAMPING hardware; xdp TX metadata in zero-copy mode).
    Hardware,
}

impl TxStampMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Software => "software",
            Self::SendClock => "send-clock",
            Self::Hardware => "hardware",
        }
    }

    /// What the socket backend asks the kernel for: hardware only where asked for (or `auto`
    /// with `timestamping = "hardware"`) and the NIC accepted it (`hardware_ok`).
    pub fn for_socket(config: &ServerConfig, hardware_ok: bool) -> Self {
        let hardware_rx = config.timestamping == crate::config::Timestamping::Hardware;
        match config.tx_timestamps {
            _ if !config.interleaved => Self::Off,
            TxTimestamps::Off => Self::Off,
            TxTimestamps::Software => Self::Software,
            TxTimestamps::Hardware if hardware_ok => Self::Hardware,
            TxTimestamps::Auto if hardware_rx && hardware_ok => Self::Hardware,
            _ => Self::Software,
        }
    }

    /// The xdp backend's: with a TX metadata area on every socket (`metadata`), per-reply stamps
    /// read at completion: the NIC's when bound zero-copy (`zero_copy`), the kernel's software
    /// stamp in copy mode; without one, the clock read before the send wakeup.
    pub fn for_xdp(config: &ServerConfig, metadata: bool, zero_copy: bool) -> Self {
        debug_assert_eq!(config.backend, Backend::Xdp);
        match config.tx_timestamps {
            _ if !config.interleaved => Self::Off,
            TxTimestamps::Off => Self::Off,
            // A zero-copy driver's metadata stamp is the NIC's: "software" is the clock read.
            TxTimestamps::Software if zero_copy => Self::SendClock,
            TxTimestamps::Hardware | TxTimestamps::Auto if metadata && zero_copy => Self::Hardware,
            _ if metadata && !zero_copy => Self::Software,
            _ => Self::SendClock,
        }
    }

    /// The xdp backend reads this mode's stamps from the TX metadata at completion.
    pub fn from_tx_metadata(self) -> bool {
        matches!(self, Self::Software | Self::Hardware)
    }
}

/// One worker's [`Interleave`]: takes and saves through the shared store and counts.
#[derive(Debug)]
pub struct WorkerInterleave {
    store: Option<Arc<InterleavedStore>>,
    counters: Arc<WorkerCounters>,
    correction: Option<ClockCorrection>,
    /// The receive timestamp of the reply respond() last saved (cleared by [`Self::begin`]): the
    /// backend asks the kernel for that reply's transmit stamp.
    saved: Option<NtpTimestamp>,
}

impl WorkerInterleave {
    pub fn new(store: Option<Arc<InterleavedStore>>, counters: Arc<WorkerCounters>) -> Self {
        Self { store, counters, correction: None, saved: None }
    }

    /// Once a batch, with the snapshot the batch is served from: a step of the served clock since
    /// the last batch invalidates the store (every worker sees it; one invalidation is enough,
    /// more are harmless).
    pub fn watch_steps(&mut self, snapshot: &ServerSnapshot) {
        let new = snapshot.correction;
        let Some(old) = self.correction.replace(new) else { return };
        if old == new {
            return;
        }
        // Where the new line starts, the old one should be (a slew) or not (a step).
        let jump = new.apply(new.base).since(old.apply(new.base));
        if jump.to_nanos().unsigned_abs() > STEP_THRESHOLD_NS {
            if let Some(store) = &self.store {
                store.invalidate();
            }
        }
    }

    /// Before each request: nothing saved yet.
    pub fn begin(&mut self) {
        self.saved = None;
    }

    /// The reply just answered was saved under this receive timestamp (an interleaved client's).
    pub fn saved(&self) -> Option<NtpTimestamp> {
        self.saved
    }

    /// The kernel or NIC says the reply with receive timestamp `key` left at `stamp` (host clock,
    /// UTC); in served time with `snapshot`'s correction.
    pub fn tx_stamp(&self, key: NtpTimestamp, stamp: NtpTimestamp, snapshot: &ServerSnapshot) {
        let Some(store) = &self.store else { return };
        match store.update_tx(key, snapshot.correction.apply(stamp)) {
            UpdateOutcome::Updated => incr(&self.counters.tx_stamps),
            UpdateOutcome::Late => incr(&self.counters.tx_stamps_late),
            // Already used (the client was faster than the stamp), evicted or invalidated.
            UpdateOutcome::NotFound => {}
        }
    }

    pub fn enabled(&self) -> bool {
        self.store.is_some()
    }
}

impl Interleave for WorkerInterleave {
    fn take(&mut self, origin: NtpTimestamp) -> Option<NtpTimestamp> {
        let stored = self.store.as_ref()?.take(origin)?;
        incr(&self.counters.interleaved_replies);
        if !stored.precise {
            incr(&self.counters.tx_stamps_missing);
        }
        Some(stored.transmit)
    }

    fn save(&mut self, receive: NtpTimestamp, transmit: NtpTimestamp) {
        let Some(store) = &self.store else { return };
        match store.save(receive, transmit) {
            SaveOutcome::Saved => self.saved = Some(receive),
            SaveOutcome::Evicted => {
                incr(&self.counters.interleaved_evictions);
                self.saved = Some(receive);
            }
            SaveOutcome::Busy => {}
        }
    }
}

/// The receive timestamp (the store's key) of the NTP reply in a frame the kernel looped back
/// (socket error queue) or sent (AF_XDP): Ethernet (VLAN tags skipped) or bare IP, then
/// IPv4/IPv6 and UDP. None for anything else, a request or a frame overwritten since included.
pub fn reply_key(packet: &[u8]) -> Option<NtpTimestamp> {
    let payload = ethernet_payload(packet).and_then(udp_payload).or_else(|| udp_payload(packet))?;
    let receive = payload.get(32..40)?;
    // A server reply (mode 4) with a receive timestamp carrying our LSB marker.
    let mode = payload.first()? & 7;
    let key = u64::from_be_bytes(receive.try_into().ok()?);
    (mode == 4 && payload.len() >= 48 && key & 1 == 1).then(|| NtpTimestamp::from_bits(key))
}

fn ethernet_payload(frame: &[u8]) -> Option<&[u8]> {
    let mut at = 12;
    loop {
        let ethertype = u16::from_be_bytes(frame.get(at..at + 2)?.try_into().ok()?);
        match ethertype {
            0x8100 | 0x88A8 => at += 4,
            0x0800 | 0x86DD => return frame.get(at + 2..),
            _ => return None,
        }
    }
}

/// The UDP payload of an IPv4 (any header length) or IPv6 (no extension headers) packet.
fn udp_payload(ip: &[u8]) -> Option<&[u8]> {
    let udp = match ip.first()? >> 4 {
        4 if *ip.get(9)? == libc::IPPROTO_UDP as u8 => ip.get(usize::from(ip[0] & 0x0F) * 4..)?,
        6 if *ip.get(6)? == libc::IPPROTO_UDP as u8 => ip.get(40..)?,
        _ => return None,
    };
    let udp_len = usize::from(u16::from_be_bytes(udp.get(4..6)?.try_into().ok()?));
    udp.get(8..udp_len.clamp(8, udp.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratum_proto::NtpDuration;

    fn snapshot(offset_ns: i64, base: NtpTimestamp, rate: i32) -> ServerSnapshot {
        let mut s = ServerSnapshot::unsynchronized(-20);
        s.correction = ClockCorrection { offset: NtpDuration::from_nanos(offset_ns), base, rate };
        s
    }

    fn rx(n: u64) -> NtpTimestamp {
        NtpTimestamp::from_bits(0xE000_0000_0000_0000 | (n << 8) | 1)
    }

    #[test]
    fn a_step_of_the_served_clock_invalidates_a_slew_does_not() {
        let store = Arc::new(InterleavedStore::new(64));
        let counters = Arc::new(WorkerCounters::default());
        let mut w = WorkerInterleave::new(Some(store.clone()), counters);
        let t0 = NtpTimestamp::from_parts(0xE000_0000, 0);
        let first = snapshot(5_000, t0, 0);
        w.watch_steps(&first);
        w.save(rx(1), t0);
        w.save(rx(2), t0);
        // A slew: a new line starting where the old one is at its base, with another rate.
        let t1 = t0.add(NtpDuration::from_seconds(10));
        let slew = snapshot(first.correction.apply(t1).since(t1).to_nanos(), t1, 4_000);
        w.watch_steps(&slew);
        assert!(w.take(rx(1)).is_some(), "a slew keeps the store");
        // A step of 10 ms.
        let step = snapshot(slew.correction.apply(t1).since(t1).to_nanos() + 10_000_000, t1, 4_000);
        w.watch_steps(&step);
        assert_eq!(w.take(rx(2)), None, "a step empties it");
    }

    #[test]
    fn taking_counts_interleaved_replies_and_missing_stamps() {
        let store = Arc::new(InterleavedStore::new(64));
        let counters = Arc::new(WorkerCounters::default());
        let mut w = WorkerInterleave::new(Some(store), counters.clone());
        let s = snapshot(0, NtpTimestamp::ZERO, 0);
        let t = NtpTimestamp::from_parts(0xE000_0000, 0);
        w.begin();
        w.save(rx(1), t);
        assert_eq!(w.saved(), Some(rx(1)));
        w.save(rx(2), t);
        w.tx_stamp(rx(2), t.add(NtpDuration::from_nanos(3_000)), &s);
        w.tx_stamp(rx(1), t.add(NtpDuration::from_seconds(2)), &s);
        assert_eq!(w.take(rx(1)), Some(t), "the late stamp was refused");
        assert_eq!(w.take(rx(2)), Some(t.add(NtpDuration::from_nanos(3_000))));
        let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(get(&counters.interleaved_replies), 2);
        assert_eq!(get(&counters.tx_stamps_missing), 1);
        assert_eq!((get(&counters.tx_stamps), get(&counters.tx_stamps_late)), (1, 1));
    }

    #[test]
    fn xdp_stamps_come_from_the_tx_metadata_where_registered() {
        use crate::config::Config;
        let base = "[clock]\nsource = \"local\"\n[server]\nbackend = \"xdp\"\ninterface = \"eth0\"\n";
        let server = |extra: &str| Config::parse(&format!("{base}{extra}"), "t").unwrap().server;
        use TxStampMode::*;
        // (tx-timestamps, metadata, zero-copy) -> mode
        let cases = [
            ("", true, false, Software),
            ("", false, false, SendClock),
            ("", true, true, Hardware),
            ("", false, true, SendClock),
            ("tx-timestamps = \"software\"\n", true, false, Software),
            ("tx-timestamps = \"software\"\n", true, true, SendClock),
            ("tx-timestamps = \"software\"\n", false, false, SendClock),
            ("tx-timestamps = \"hardware\"\n", true, false, Software),
            ("tx-timestamps = \"hardware\"\n", true, true, Hardware),
            ("tx-timestamps = \"hardware\"\n", false, true, SendClock),
            ("tx-timestamps = \"off\"\n", true, true, Off),
            ("interleaved = false\n", true, false, Off),
        ];
        for (extra, metadata, zero_copy, want) in cases {
            assert_eq!(
                TxStampMode::for_xdp(&server(extra), metadata, zero_copy),
                want,
                "{extra} {metadata} {zero_copy}"
            );
        }
        assert!(Software.from_tx_metadata() && Hardware.from_tx_metadata());
        assert!(!SendClock.from_tx_metadata() && !Off.from_tx_metadata());
        assert_eq!(SendClock.as_str(), "send-clock");
    }

    #[test]
    fn without_a_store_nothing_is_saved_or_taken() {
        let mut w = WorkerInterleave::new(None, Arc::new(WorkerCounters::default()));
        w.save(rx(1), NtpTimestamp::ZERO);
        assert_eq!((w.saved(), w.take(rx(1))), (None, None));
    }
}
