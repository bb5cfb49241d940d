//! The control socket's answers as JSON (`stratumctl status|workers|sources|clients`, and their
//! `--json`): a view of the [`ServerStatus`] model, nothing of its own. The keys are an interface
//! (scripts read them): add keys, never rename one.

use serde_json::{json, Map, Value};
use stratum_proto::DropReason;

use crate::dataplane::stats::{Totals, KISS_CODES};
use crate::mgmt::status::{ServerStatus, XdpStatus};

impl ServerStatus {
    /// `stratumctl status`.
    pub fn status_json(&self) -> Value {
        let clock = self.clock();
        json!({
            "version": self.version,
            "uptime_seconds": round_ms(self.uptime_seconds()),
            "backend": self.backend,
            "tx_timestamps": self.tx_timestamps,
            "workers": self.workers.len(),
            "listen": self.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "clock_source": self.clock_source,
            "synchronized": clock.synchronized,
            "stratum": clock.stratum,
            "leap": clock.leap,
            "refid": clock.ref_id.to_text(clock.stratum).to_string(),
            "precision_seconds": clock.precision_seconds,
            "root_delay_seconds": clock.root_delay_seconds,
            "root_dispersion_seconds": clock.root_dispersion_seconds,
            "ratelimit": self.limiter.is_some(),
            "requests": totals_json(&self.totals()),
            "xdp": self.xdp.as_ref().map(|x| xdp_json(&x.read())),
        })
    }

    /// `stratumctl workers`.
    pub fn workers_json(&self) -> Value {
        let workers: Vec<Value> = self
            .workers
            .iter()
            .map(|w| {
                let mut o = Map::new();
                o.insert("id".into(), w.id.into());
                o.insert("core".into(), w.core.map_or(Value::Null, Value::from));
                if let Value::Object(counters) = totals_json(&Totals::sum([w.counters.as_ref()])) {
                    o.extend(counters);
                }
                Value::Object(o)
            })
            .collect();
        json!({ "workers": workers })
    }

    /// `stratumctl sources`: upstream servers and reference clocks. None exist yet (upstream and
    /// GPS discipline are later work); the clock source in use is named instead.
    pub fn sources_json(&self) -> Value {
        let Some(view) = &self.sync else {
            return json!({
                "sources": [],
                "clock_source": self.clock_source,
                "note": "the clock source polls no upstream servers (set [clock] source = \"sync\" and [[upstream]])",
            });
        };
        let now = stratum_host::clock::now();
        let sources: Vec<Value> = view.sources().iter().map(|row| source_json(row, now)).collect();
        json!({ "sources": sources, "clock_source": self.clock_source })
    }

    /// `stratumctl tracking`: the system peer and the served clock's state.
    pub fn tracking_json(&self) -> Value {
        let Some(t) = self.sync.as_ref().and_then(|v| v.tracking()) else {
            return json!({
                "clock_source": self.clock_source,
                "note": "no tracking: the clock source polls no upstream servers",
            });
        };
        json!({
            "clock_source": self.clock_source,
            "synchronized": t.synchronized,
            // A refclock system peer by its name (driver:device), an upstream by its address.
            "system_peer": self.sync.as_ref().and_then(|v| {
                let id = t.system_peer?;
                v.sources().into_iter().find(|r| r.status.id == id && r.status.refclock.is_some()).map(|r| r.name)
            }).or_else(|| t.system_peer_address.map(|a| a.to_string())),
            "stratum": t.stratum,
            "refid": t.ref_id.to_text(t.stratum).to_string(),
            "offset_seconds": t.offset,
            "combined_offset_seconds": t.combined_offset,
            "offset_error_seconds": t.offset_error,
            "frequency_ppm": t.frequency_ppm,
            "system_jitter_seconds": t.system_jitter,
            "root_delay_seconds": t.root_delay,
            "root_dispersion_seconds": t.root_dispersion,
            "leap": t.leap.to_bits(),
            "update_age_seconds": t.update_age,
            "steps": t.steps,
            "poll": t.system_poll,
        })
    }

    /// `stratumctl clients --top N`: the heaviest clients in the rate limiter's table.
    pub fn clients_json(&self, top: usize) -> Value {
        let Some(limiter) = &self.limiter else {
            return json!({ "ratelimit": false, "clients": [] });
        };
        let clients: Vec<Value> = limiter
            .top(top)
            .iter()
            .map(|c| {
                json!({
                    "prefix": format!("{}/{}", c.address, c.prefix_len),
                    "requests": c.requests,
                    "limited": c.limited,
                    "fast_retries": c.fast_retries,
                })
            })
            .collect();
        json!({
            "ratelimit": true,
            "tracked": self.tracked_clients(),
            "capacity": limiter.capacity(),
            "clients": clients,
        })
    }
}

/// One source as `stratumctl sources --json` shows it.
fn source_json(row: &crate::sync::upstream::SourceRow, now: stratum_proto::NtpTimestamp) -> Value {
    let s = &row.status;
    let mut v = json!({
        "name": row.name,
        // A refclock has no network address (its row's is a pseudo-address for the metrics).
        "address": if s.refclock.is_some() { "-".to_string() } else { row.address.to_string() },
        "refclock": s.refclock.is_some(),
        "state": s.state.name(),
        "symbol": s.state.symbol().to_string(),
        "stratum": s.stratum,
        "refid": match s.refclock {
            Some(refid) => Some(refid.to_text(0).to_string()),
            None => s.upstream_ref_id.zip(s.stratum).map(|(r, st)| r.to_text(st).to_string()),
        },
        "poll": s.poll,
        "reach": format!("{:o}", s.reach),
        "last_offset_seconds": s.last_offset,
        "last_delay_seconds": s.last_delay,
        "last_sample_age_seconds": s.last_sample_time.map(|t| now.since(t).to_seconds_f64()),
        "jitter_seconds": s.jitter,
        "root_distance_seconds": s.root_distance,
        "flash": s.last_flash.to_string(),
        // A refclock out of the selection until its next estimate (fix lost, no samples).
        "stale": s.refclock.is_some().then_some(s.refclock_stale),
        "kod": match s.state {
            stratum_proto::sync::SourceState::Demobilised(code) => Some(code.as_str()),
            _ => None,
        },
    });
    // A refclock's driver state (issue 18): its keys only on refclock rows.
    if let (Some(rc), Value::Object(o)) = (&row.refclock, &mut v) {
        o.insert("driver".into(), rc.driver.into());
        o.insert("fix".into(), json!(rc.fix));
        o.insert("satellites".into(), json!(rc.satellites));
        o.insert("pps_locked".into(), json!(rc.pps_locked));
        o.insert(
            "pulses".into(),
            json!(rc.pulses.map(|p| json!({
                "total": p.pulses,
                "locked": p.locked,
                "unlocked": p.unlocked,
                "double": p.doubles,
                "wrong_edge": p.wrong_edges,
                "missing": p.missing,
            }))),
        );
        o.insert("last_pulse_offset_seconds".into(), json!(rc.last_pulse_offset));
        o.insert("samples".into(), s.refclock_samples.into());
        o.insert("samples_dropped".into(), rc.dropped.into());
    }
    v
}

fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// Counters as JSON: `received`, `answered`, `kod` by code, `dropped` by reason, and the rest.
pub fn totals_json(t: &Totals) -> Value {
    let kod: Map<String, Value> = KISS_CODES.iter().zip(t.kod).map(|(c, n)| (c.as_str().into(), n.into())).collect();
    let dropped: Map<String, Value> =
        DropReason::ALL.iter().zip(t.dropped).map(|(r, n)| (r.as_str().into(), n.into())).collect();
    json!({
        "received": t.received,
        "answered": t.answered,
        "kod": kod,
        "dropped": dropped,
        "send_failed": t.send_failed,
        "receive_errors": t.receive_errors,
        "socket_drops": t.socket_drops,
        "interleaved": {
            "replies": t.interleaved_replies,
            "tx_stamps": t.tx_stamps,
            "tx_stamps_missing": t.tx_stamps_missing,
            "tx_stamps_late": t.tx_stamps_late,
            "evictions": t.interleaved_evictions,
        },
    })
}

fn xdp_json(x: &XdpStatus) -> Value {
    json!({
        "interface": x.interface,
        "attach_mode": x.attach_mode,
        "bind_mode": x.bind_mode,
        "hardware_timestamps": x.hardware_timestamps,
        "program": {
            "redirected": x.redirected,
            "passed": x.passed,
            "malformed": x.malformed,
            "no_socket": x.no_socket,
            "not_ours": x.not_ours,
            "denied": x.denied,
        },
        "queues": x.queues.iter().map(|q| json!({
            "queue": q.queue,
            "worker": q.worker,
            "rx_dropped": q.rx_dropped,
            "rx_invalid_descs": q.rx_invalid_descs,
            "tx_invalid_descs": q.tx_invalid_descs,
            "rx_ring_full": q.rx_ring_full,
            "fill_ring_empty": q.fill_ring_empty,
            "tx_ring_empty": q.tx_ring_empty,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;
    use stratum_proto::server::ratelimit::RateLimiter;
    use stratum_proto::{KissCode, ServerSnapshot, Verdict};

    use crate::dataplane::stats::WorkerCounters;
    use crate::mgmt::status::WorkerHandle;
    use crate::time::core::SnapshotCell;

    fn status(limiter: bool) -> ServerStatus {
        let workers: Vec<WorkerHandle> = (0..2)
            .map(|id| WorkerHandle { id, core: Some(id), counters: Arc::new(WorkerCounters::default()) })
            .collect();
        workers[0].counters.add_received(3);
        workers[0].counters.count(&Verdict::Reply(48));
        workers[0].counters.count(&Verdict::Kod(KissCode::Rate));
        workers[1].counters.add_received(1);
        workers[0].counters.count(&Verdict::Drop(DropReason::Short));
        workers[1].counters.count(&Verdict::Drop(DropReason::Short));
        let limiter = limiter
            .then(|| Arc::new(RateLimiter::new(&stratum_proto::server::ratelimit::RateLimitConfig::default(), [1, 2])));
        ServerStatus {
            version: "0.0.0",
            started: Instant::now(),
            backend: "socket",
            tx_timestamps: "software",
            xdp: None,
            addresses: vec!["127.0.0.1:123".parse().unwrap()],
            workers,
            clock_source: "local".into(),
            cell: SnapshotCell::new(ServerSnapshot::unsynchronized(-20)),
            limiter,
            sync: None,
            ntpq: None,
            stats: None,
            ntske: None,
        }
    }

    #[test]
    fn health_needs_synchronised_time_within_the_root_distance() {
        let mut s = status(false);
        assert!(!s.health(1.0).healthy, "unsynchronised");
        assert!(s.health(1.0).reason.starts_with("unsynchronised"));
        let synced = ServerSnapshot {
            leap: stratum_proto::LeapIndicator::NoWarning,
            stratum: 2,
            root_delay: stratum_proto::NtpShort::from_micros(4_000),
            root_dispersion: stratum_proto::NtpShort::from_micros(10_000),
            dispersion_rate: 0,
            ..ServerSnapshot::unsynchronized(-20)
        };
        s.cell = SnapshotCell::new(synced);
        let h = s.health(0.1);
        assert!(h.healthy, "{h:?}");
        assert!((h.root_distance - 0.012).abs() < 0.0005, "{h:?}");
        let h = s.health(0.005);
        assert!(!h.healthy && h.reason.contains("over the 0.005 s allowed"), "{h:?}");
    }

    #[test]
    fn status_carries_clock_state_and_totals() {
        let s = status(false).status_json();
        assert_eq!(s["backend"], "socket");
        assert_eq!(s["workers"], 2);
        assert_eq!(s["synchronized"], false);
        assert_eq!(s["stratum"], 16);
        assert_eq!(s["leap"], 3);
        assert_eq!(s["requests"]["received"], 4);
        assert_eq!(s["requests"]["answered"], 1);
        assert_eq!(s["requests"]["kod"]["rate"], 1);
        assert_eq!(s["requests"]["dropped"]["short"], 2);
        assert_eq!(s["listen"][0], "127.0.0.1:123");
    }

    #[test]
    fn workers_are_listed_with_their_own_counters() {
        let w = status(false).workers_json();
        assert_eq!(w["workers"][0]["core"], 0);
        assert_eq!(w["workers"][0]["received"], 3);
        assert_eq!(w["workers"][1]["dropped"]["short"], 1);
    }

    #[test]
    fn clients_without_rate_limiting_is_an_empty_list() {
        assert_eq!(status(false).clients_json(5), json!({ "ratelimit": false, "clients": [] }));
        let with = status(true).clients_json(5);
        assert_eq!(with["ratelimit"], true);
        assert_eq!(with["clients"], json!([]));
        assert_eq!(status(false).sources_json()["sources"], json!([]));
    }
}
