//! The round tap: follows the rounds the store has written, so /metrics can
//! count probes and fill latency histograms per hop, and the overview can draw
//! a sparkline per target, without touching the probing path.
//!
//! After each store flush it reads every target's rounds from a short
//! lookback window (the target's probe timeout plus two flush intervals plus
//! a margin: rounds are written when they complete, not in start order) and
//! skips the ones it has seen. Rounds written later than that, which only a
//! disk that refused writes for a while can cause, are not counted: the
//! counters follow what the store holds. Counting starts when the daemon does;
//! the sparkline is first filled from the last stored rounds.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use hopwatch_web::metrics::Histogram;

use crate::model::{HopSample, RoundRecord, TargetId};
use crate::probe::{Rtt, TimestampSource, Ttl};
use crate::store::Store;
use crate::sys;

/// Rounds kept per target for its sparkline.
pub const SPARKLINE_ROUNDS: usize = 120;
/// Added to every lookback: scheduling and pipeline delays.
const LOOKBACK_MARGIN: Duration = Duration::from_secs(5);

/// Probes and answers at one hop (or the destination), since the daemon started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HopCounts {
    pub sent: u64,
    pub received: u64,
    pub rtt: Histogram,
}

impl HopCounts {
    fn record(&mut self, rtt_ns: Option<u64>) {
        self.sent += 1;
        if let Some(rtt) = rtt_ns {
            self.received += 1;
            self.rtt.observe(rtt as f64 / 1e9);
        }
    }
}

/// What the tap knows about one target.
#[derive(Debug, Clone, Default)]
pub struct TargetTap {
    /// Start times of the rounds already counted, within the lookback.
    seen: BTreeSet<u64>,
    /// Rounds that started before this are not counted (the daemon's start).
    counting_from_ms: u64,
    backfilled: bool,
    /// The destination's TTL as the rounds last showed it.
    hop_limit: u8,
    pub destination: HopCounts,
    pub hops: BTreeMap<u8, HopCounts>,
    /// `(started_at_ms, destination rtt)`, oldest first.
    pub sparkline: VecDeque<(u64, Option<u64>)>,
    pub last_source: Option<TimestampSource>,
    pub route_changes: u64,
    pub hop_count_changes: u64,
}

impl TargetTap {
    fn push_sparkline(&mut self, round: &RoundRecord) {
        let rtt = round
            .destination()
            .and_then(HopSample::rtt)
            .map(Rtt::as_nanos);
        // Rounds arrive roughly in order; keep the line sorted anyway.
        let at = self
            .sparkline
            .iter()
            .rposition(|(t, _)| *t <= round.started_at_ms)
            .map_or(0, |i| i + 1);
        self.sparkline.insert(at, (round.started_at_ms, rtt));
        while self.sparkline.len() > SPARKLINE_ROUNDS {
            self.sparkline.pop_front();
        }
    }

    /// Counts one round.
    fn count(&mut self, round: &RoundRecord) {
        if let Some(ttl) = round.destination_ttl.map(Ttl::get) {
            if ttl < self.hop_limit {
                // The path got shorter: the TTLs beyond it are gone.
                self.hops.retain(|t, _| *t <= ttl);
            }
            self.hop_limit = ttl;
        }
        // Without an answer from the destination, TTLs up to the known path
        // (or the furthest answer) count; the rest are probes past the end.
        let limit = match round.destination_ttl {
            Some(ttl) => ttl.get(),
            None => round
                .hops
                .iter()
                .filter(|h| !h.is_lost())
                .map(|h| h.ttl.get())
                .max()
                .unwrap_or(0)
                .max(self.hop_limit),
        };
        for sample in round.hops.iter().filter(|h| h.ttl.get() <= limit) {
            self.hops
                .entry(sample.ttl.get())
                .or_default()
                .record(sample.rtt().map(Rtt::as_nanos));
        }
        self.destination.record(
            round
                .destination()
                .and_then(HopSample::rtt)
                .map(Rtt::as_nanos),
        );
        self.last_source = Some(round.source);
    }
}

/// Every target's tap.
#[derive(Debug, Default)]
pub struct RoundTap {
    targets: Mutex<HashMap<TargetId, TargetTap>>,
}

/// What one scan found, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub rounds: usize,
    pub read_errors: usize,
}

impl RoundTap {
    pub fn new() -> RoundTap {
        RoundTap::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TargetId, TargetTap>> {
        sys::lock(&self.targets)
    }

    /// Reads the rounds stored since the last scan. `targets` are the
    /// configured targets with their probe timeout and interval; others are
    /// forgotten. `started_ms` is when counting began.
    pub fn scan(
        &self,
        store: &Store,
        targets: &[(TargetId, Duration, Duration)],
        started_ms: u64,
        now_ms: u64,
    ) -> ScanReport {
        let flush = store.config().flush_interval;
        let mut report = ScanReport::default();
        // Read outside the lock: the store may take a while; counting is quick.
        let mut batches: Vec<(TargetId, Vec<RoundRecord>, bool)> = Vec::new();
        let known: HashMap<TargetId, bool> = self
            .lock()
            .iter()
            .map(|(id, tap)| (id.clone(), tap.backfilled))
            .collect();
        for (id, timeout, interval) in targets {
            let lookback = *timeout + 2 * flush + LOOKBACK_MARGIN;
            let backfill = !known.get(id).copied().unwrap_or(false);
            let span = if backfill {
                // Enough history for a full sparkline.
                lookback + interval.saturating_mul(SPARKLINE_ROUNDS as u32)
            } else {
                lookback
            };
            let from = now_ms.saturating_sub(span.as_millis() as u64);
            match store.rounds(id, from, now_ms.saturating_add(1)) {
                Ok(rounds) => batches.push((id.clone(), rounds, backfill)),
                Err(err) => {
                    report.read_errors += 1;
                    tracing::debug!(target = %id, error = %err, "round tap: reading rounds failed");
                }
            }
        }
        let mut taps = self.lock();
        taps.retain(|id, _| targets.iter().any(|(t, _, _)| t == id));
        for (id, rounds, backfill) in batches {
            let tap = taps.entry(id).or_insert_with(|| TargetTap {
                counting_from_ms: started_ms,
                ..TargetTap::default()
            });
            for round in &rounds {
                if !tap.seen.insert(round.started_at_ms) {
                    continue;
                }
                if round.started_at_ms < tap.counting_from_ms {
                    if backfill {
                        tap.push_sparkline(round);
                    }
                    continue;
                }
                tap.count(round);
                tap.push_sparkline(round);
                report.rounds += 1;
            }
            tap.backfilled = true;
            // Forget start times older than any lookback can reach again.
            let keep_from = rounds.first().map_or(0, |r| r.started_at_ms);
            tap.seen = tap.seen.split_off(&keep_from);
        }
        report
    }

    /// Counts a confirmed route or hop-count change of `target`.
    pub fn count_event(&self, target: &TargetId, route_change: bool) {
        let mut taps = self.lock();
        if let Some(tap) = taps.get_mut(target) {
            if route_change {
                tap.route_changes += 1;
            } else {
                tap.hop_count_changes += 1;
            }
        }
    }

    /// A copy of one target's tap.
    pub fn target(&self, id: &TargetId) -> Option<TargetTap> {
        self.lock().get(id).cloned()
    }

    /// Runs `f` over the taps without copying them.
    pub fn with<T>(&self, f: impl FnOnce(&HashMap<TargetId, TargetTap>) -> T) -> T {
        f(&self.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HopOutcome;
    use crate::store::StoreConfig;
    use std::net::{IpAddr, Ipv4Addr};

    fn round(
        target: &TargetId,
        seq: u64,
        at_ms: u64,
        dest_ttl: Option<u8>,
        lost_ttl: u8,
    ) -> RoundRecord {
        let hops = (1..=3u8)
            .map(|ttl| {
                HopSample::answered_or_lost(
                    ttl,
                    IpAddr::V4(Ipv4Addr::new(198, 18, ttl, 2)),
                    (ttl != lost_ttl).then_some(u64::from(ttl) * 1_000_000),
                    Some(ttl) == dest_ttl,
                )
            })
            .collect();
        RoundRecord {
            target: target.clone(),
            seq,
            started_at_ms: at_ms,
            hops,
            destination_ttl: dest_ttl.and_then(Ttl::new),
            source: TimestampSource::Kernel,
        }
    }

    #[test]
    fn rounds_are_counted_once_per_hop_even_when_scanned_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let id = TargetId::new("t").unwrap();
        let start = 1_700_000_000_000;
        // One round before counting began: sparkline only.
        store
            .record_round(&round(&id, 0, start - 1000, Some(3), 0))
            .unwrap();
        for i in 1..=10u64 {
            store
                .record_round(&round(
                    &id,
                    i,
                    start + i * 1000,
                    Some(3),
                    if i % 5 == 0 { 2 } else { 0 },
                ))
                .unwrap();
        }
        store.flush_at(start + 11_000).unwrap();
        let tap = RoundTap::new();
        let targets = [(id.clone(), Duration::from_secs(2), Duration::from_secs(1))];
        let report = tap.scan(&store, &targets, start, start + 11_000);
        assert_eq!(report.rounds, 10);
        // A second scan over the same window counts nothing new.
        assert_eq!(tap.scan(&store, &targets, start, start + 12_000).rounds, 0);
        let t = tap.target(&id).unwrap();
        assert_eq!(t.hops[&1].sent, 10);
        assert_eq!(t.hops[&2].sent, 10);
        assert_eq!(t.hops[&2].received, 8, "two rounds lost TTL 2");
        assert_eq!(t.hops[&2].rtt.count(), 8);
        assert!((t.hops[&2].rtt.sum_seconds - 8.0 * 0.002).abs() < 1e-9);
        assert_eq!(t.destination.sent, 10);
        assert_eq!(t.destination.received, 10);
        assert_eq!(t.sparkline.len(), 11, "the older round fills the sparkline");
        assert_eq!(t.last_source, Some(TimestampSource::Kernel));

        // A late round (stored after a newer one) is still counted once.
        store
            .record_round(&round(&id, 11, start + 10_500, Some(3), 0))
            .unwrap();
        store.flush_at(start + 13_000).unwrap();
        assert_eq!(tap.scan(&store, &targets, start, start + 13_000).rounds, 1);
        assert_eq!(tap.target(&id).unwrap().destination.sent, 11);

        // A path that gets shorter drops the TTLs beyond it.
        store
            .record_round(&round(&id, 12, start + 12_000, Some(2), 0))
            .unwrap();
        store.flush_at(start + 14_000).unwrap();
        tap.scan(&store, &targets, start, start + 14_000);
        let t = tap.target(&id).unwrap();
        assert!(!t.hops.contains_key(&3));

        // A target no longer configured is forgotten.
        tap.scan(&store, &[], start, start + 15_000);
        assert!(tap.target(&id).is_none());
    }

    #[test]
    fn silence_past_the_known_path_is_not_counted() {
        let id = TargetId::new("t").unwrap();
        let mut tap = TargetTap::default();
        tap.count(&round(&id, 0, 0, Some(2), 0));
        // The destination does not answer: TTL 3 is a probe past the end.
        let mut silent = round(&id, 1, 1000, None, 3);
        for h in &mut silent.hops {
            if let HopOutcome::Answered(answer) = &mut h.outcome {
                answer.is_destination = false;
            }
        }
        silent.hops[1] = HopSample::lost(silent.hops[1].ttl);
        tap.count(&silent);
        assert_eq!(tap.hops.get(&3), None);
        assert_eq!(tap.hops[&2].sent, 2);
        assert_eq!(tap.hops[&2].received, 1);
        assert_eq!((tap.destination.sent, tap.destination.received), (2, 1));
    }
}
