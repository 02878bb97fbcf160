//! The round tap: counts probes and fills latency histograms per hop for
//! /metrics, and keeps a sparkline per target for the overview, from every
//! round the monitor's pipeline completes ([`Monitor::subscribe_rounds`]), as
//! it completes. It never reads the store back for them, so a disk that
//! refuses writes leaves these figures live; the store only fills the
//! sparklines once, at start, from the last stored rounds.
//!
//! Counting starts when the tap subscribes (the web server's start). A
//! subscriber that falls more than the channel's capacity behind loses the
//! oldest rounds: those are counted in `hopwatch_live_rounds_skipped_total`
//! and logged as a warning, never dropped silently.
//!
//! [`Monitor::subscribe_rounds`]: crate::monitor::Monitor::subscribe_rounds

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hopwatch_web::metrics::Histogram;
use tokio::sync::broadcast;

use crate::model::{HopSample, RoundRecord, TargetId};
use crate::probe::{Rtt, TimestampSource, Ttl};
use crate::store::Store;
use crate::sys;

pub use super::sparkline::{Sparkline, SPARKLINE_ROUNDS};

/// Added to the span read at start: rounds still being probed or buffered.
const FILL_MARGIN: Duration = Duration::from_secs(5);

/// Probes and answers at one hop (or the destination), since the tap started.
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
    /// The destination's TTL as the rounds last showed it.
    hop_limit: u8,
    pub destination: HopCounts,
    pub hops: BTreeMap<u8, HopCounts>,
    pub sparkline: Sparkline,
    pub last_source: Option<TimestampSource>,
    pub route_changes: u64,
    pub hop_count_changes: u64,
}

impl TargetTap {
    /// Adds `round` to the sparkline, in start order; `false` (and nothing
    /// added) if a round that started at the same moment is already there.
    fn push_sparkline(&mut self, round: &RoundRecord) -> bool {
        let rtt_us = round
            .destination()
            .and_then(HopSample::rtt)
            .map(|rtt| (rtt.as_nanos() / 1_000).min(u64::from(u32::MAX)) as u32);
        self.sparkline.push(round.started_at_ms, rtt_us)
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
    /// Rounds a lagging subscription lost (`hopwatch_live_rounds_skipped_total`).
    skipped: AtomicU64,
}

impl RoundTap {
    pub fn new() -> RoundTap {
        RoundTap::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TargetId, TargetTap>> {
        sys::lock(&self.targets)
    }

    /// Counts a round the pipeline completed and adds it to its target's
    /// sparkline.
    pub fn record(&self, round: &RoundRecord) {
        let mut taps = self.lock();
        let tap = taps.entry(round.target.clone()).or_default();
        tap.count(round);
        tap.push_sparkline(round);
    }

    /// Fills sparklines from stored rounds (at start): they are drawn, not
    /// counted, and a round already on the line is not added twice.
    pub fn fill_sparkline(&self, target: &TargetId, rounds: &[RoundRecord]) -> usize {
        let mut taps = self.lock();
        let tap = taps.entry(target.clone()).or_default();
        let newest = rounds.len().saturating_sub(SPARKLINE_ROUNDS);
        rounds[newest..]
            .iter()
            .filter(|round| tap.push_sparkline(round))
            .count()
    }

    /// Reads the last stored rounds of `targets` (with their probe interval)
    /// into their sparklines: the one store read the tap makes, one pass
    /// over the rounds' files for all targets. If it fails, the lines start
    /// empty.
    pub fn fill_from_store(&self, store: &Store, targets: &[(TargetId, Duration)], now_ms: u64) {
        let starts: Vec<(TargetId, u64)> = targets
            .iter()
            .map(|(id, interval)| {
                let span = interval.saturating_mul(SPARKLINE_ROUNDS as u32) + FILL_MARGIN;
                (id.clone(), now_ms.saturating_sub(span.as_millis() as u64))
            })
            .collect();
        match store.recent_rounds(&starts, now_ms.saturating_add(1)) {
            Ok(found) => {
                for (id, _) in targets {
                    self.fill_sparkline(id, found.get(id).map_or(&[][..], Vec::as_slice));
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "round tap: the sparklines start empty: reading the last stored rounds failed");
            }
        }
    }

    /// Records that a lagging subscription lost `rounds` rounds.
    pub fn skipped(&self, rounds: u64) {
        self.skipped.fetch_add(rounds, Ordering::Relaxed);
    }

    /// Rounds lost by a lagging subscription since the tap started.
    pub fn skipped_rounds(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Consumes the pipeline's rounds until the channel closes. Falling
    /// behind by more than its capacity is counted and logged as a warning.
    pub async fn follow(self: Arc<Self>, mut rounds: broadcast::Receiver<Arc<RoundRecord>>) {
        loop {
            match rounds.recv().await {
                Ok(round) => self.record(&round),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    self.skipped(missed);
                    tracing::warn!(
                        missed,
                        total = self.skipped_rounds(),
                        "round tap fell behind the pipeline: rounds are missing from /metrics probe counters, histograms and sparklines (hopwatch_live_rounds_skipped_total)"
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Forgets the targets `keep` says are no longer configured.
    pub fn retain(&self, mut keep: impl FnMut(&TargetId) -> bool) {
        self.lock().retain(|id, _| keep(id));
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

    const START: u64 = 1_700_000_000_000;

    #[test]
    fn each_round_is_counted_per_hop_and_drawn() {
        let id = TargetId::new("t").unwrap();
        let tap = RoundTap::new();
        for i in 1..=10u64 {
            tap.record(&round(
                &id,
                i,
                START + i * 1000,
                Some(3),
                if i % 5 == 0 { 2 } else { 0 },
            ));
        }
        let t = tap.target(&id).unwrap();
        assert_eq!(t.hops[&1].sent, 10);
        assert_eq!(t.hops[&2].sent, 10);
        assert_eq!(t.hops[&2].received, 8, "two rounds lost TTL 2");
        assert_eq!(t.hops[&2].rtt.count(), 8);
        assert!((t.hops[&2].rtt.sum_seconds - 8.0 * 0.002).abs() < 1e-9);
        assert_eq!(t.destination.sent, 10);
        assert_eq!(t.destination.received, 10);
        assert_eq!(t.destination.rtt.count(), 10);
        assert_eq!(t.sparkline.len(), 10);
        assert_eq!(
            t.sparkline.iter().last(),
            Some((START + 10_000, Some(3_000)))
        );
        assert_eq!(t.last_source, Some(TimestampSource::Kernel));
        assert_eq!(tap.skipped_rounds(), 0);

        // A path that gets shorter drops the TTLs beyond it.
        tap.record(&round(&id, 11, START + 11_000, Some(2), 0));
        let t = tap.target(&id).unwrap();
        assert!(!t.hops.contains_key(&3));
        assert_eq!(t.destination.sent, 11);

        // The sparkline keeps the newest rounds only.
        for i in 12..200u64 {
            tap.record(&round(&id, i, START + i * 1000, Some(2), 0));
        }
        let t = tap.target(&id).unwrap();
        assert_eq!(t.sparkline.len(), SPARKLINE_ROUNDS);
        assert_eq!(t.sparkline.last_at_ms(), Some(START + 199_000));
        assert_eq!(t.destination.sent, 199);

        // Events count for the target; a target no longer configured is forgotten.
        tap.count_event(&id, true);
        tap.count_event(&id, false);
        tap.count_event(&id, false);
        let t = tap.target(&id).unwrap();
        assert_eq!((t.route_changes, t.hop_count_changes), (1, 2));
        tap.retain(|_| false);
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

    #[test]
    fn stored_rounds_fill_the_sparkline_once_without_counting_or_repeating() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let id = TargetId::new("t").unwrap();
        let other = TargetId::new("quiet").unwrap();
        // Rounds of the previous run, and one the tap also sees live (the
        // store and the tap both get every round).
        for i in 0..5u64 {
            store
                .record_round(&round(&id, i, START + i * 1000, Some(3), 0))
                .unwrap();
        }
        store.flush_at(START + 5_000).unwrap();
        let tap = RoundTap::new();
        tap.record(&round(&id, 4, START + 4_000, Some(3), 0));
        tap.record(&round(&id, 5, START + 5_000, Some(3), 0));
        let targets = [
            (id.clone(), Duration::from_secs(1)),
            (other.clone(), Duration::from_secs(1)),
        ];
        tap.fill_from_store(&store, &targets, START + 5_500);
        let t = tap.target(&id).unwrap();
        let starts: Vec<u64> = t.sparkline.iter().map(|(at, _)| at).collect();
        assert_eq!(
            starts,
            (0..=5u64).map(|i| START + i * 1000).collect::<Vec<_>>(),
            "stored rounds first, in order, each once"
        );
        assert_eq!(
            t.destination.sent, 2,
            "stored rounds are drawn, not counted"
        );
        assert_eq!(t.hops[&1].sent, 2);
        // A target without stored rounds gets an empty line.
        assert!(tap.target(&other).unwrap().sparkline.is_empty());

        // Only the newest rounds of a long history are drawn.
        let long: Vec<RoundRecord> = (0..500u64)
            .map(|i| round(&other, i, START + i * 1000, Some(3), 0))
            .collect();
        assert_eq!(tap.fill_sparkline(&other, &long), SPARKLINE_ROUNDS);
        let line = tap.target(&other).unwrap().sparkline;
        assert_eq!(line.iter().next().map(|(at, _)| at), Some(START + 380_000));
        assert_eq!(line.last_at_ms(), Some(START + 499_000));
    }

    #[tokio::test]
    async fn a_lagging_subscription_counts_the_rounds_it_lost() {
        let id = TargetId::new("t").unwrap();
        let (tx, rx) = broadcast::channel(4);
        let tap = Arc::new(RoundTap::new());
        // Ten rounds before the tap reads any: the oldest six are gone.
        for i in 0..10u64 {
            tx.send(Arc::new(round(&id, i, START + i * 1000, Some(3), 0)))
                .unwrap();
        }
        drop(tx);
        Arc::clone(&tap).follow(rx).await;
        assert_eq!(tap.skipped_rounds(), 6);
        let t = tap.target(&id).unwrap();
        assert_eq!(
            t.destination.sent, 4,
            "the rounds still in the channel count"
        );
        assert_eq!(
            t.sparkline.iter().next().map(|(at, _)| at),
            Some(START + 6_000)
        );
    }
}
