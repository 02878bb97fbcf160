//! Rebuilding the samples a receiver missed from hopwatch's own history:
//! for each pushed series whose family the raw rounds determine, its value
//! at every push tick of the outage, read through the store's public query
//! API (`Store::series` at raw resolution, one point per round).
//!
//! Counters continue from the value last pushed before the outage (plus the
//! rounds since), capped at the value pushed after it, so they never step
//! back; window gauges (loss ratio, jitter) are recomputed over the same
//! window of the last `[statistics] window` probes. A multipath target's
//! ECMP branches are stored as series of their own
//! ([`TargetId::branch_series`]), so their window gauges
//! (`hopwatch_branch_loss_ratio`, `_jitter_seconds`,
//! `hopwatch_branch_hop_loss_ratio`) are rebuilt the same way from those.
//! Families that rounds do not determine (MOS, hop count, alerts, route
//! changes, responders, the daemon's own counters) are not backfilled: their
//! series have the gap. Nor are a branch's rounds counter (it restarts with
//! each rediscovery, which the stored rounds do not record), its split and
//! join (the discovery's, not the rounds'), and its RTT average (pushed only
//! with `series = "full"`; not rebuilt yet).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::proto::{Sample, TimeSeries};
use super::series::{label, SeriesKey, Values};
use crate::model::{BranchIndex, TargetId};
use crate::store::{Hop, Point, Resolution, Store, StoreError};

/// A stretch of push ticks the receiver did not get: the ticks after
/// `from_ms` and before `to_ms`, `interval_ms` apart.
#[derive(Debug, Clone)]
pub struct Gap {
    /// The last tick the receiver got before the outage.
    pub from_ms: u64,
    /// The first tick it got after.
    pub to_ms: u64,
    pub interval_ms: u64,
    /// What was pushed at `from_ms` and at `to_ms`.
    pub before: Values,
    pub after: Values,
}

impl Gap {
    /// The missed ticks, oldest first.
    pub fn ticks(&self) -> Vec<u64> {
        let step = self.interval_ms.max(1);
        (1..)
            .map(|k| self.from_ms + k * step)
            .take_while(|t| *t < self.to_ms)
            .collect()
    }
}

/// What a family is rebuilt from, if rounds determine it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Sent,
    Received,
    RttSum,
    RttCount,
    /// A cumulative histogram bucket with this upper bound (seconds).
    Bucket(f64),
    Loss,
    Jitter,
    /// `hopwatch_target_state{state}`: running while rounds are stored.
    State,
}

/// Which rounds a family's series are read from: the target's own flow or
/// one of its ECMP branches', and the destination or one hop along it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scope {
    branch: bool,
    hop: bool,
}

fn kind(name: &str, key: &SeriesKey) -> Option<(Kind, Scope)> {
    // `hopwatch_branch_hop_` before `hopwatch_branch_`, which it starts with.
    let prefixes = [
        ("hopwatch_target_", false, false),
        ("hopwatch_hop_", false, true),
        ("hopwatch_branch_hop_", true, true),
        ("hopwatch_branch_", true, false),
    ];
    let (family, scope) = prefixes.iter().find_map(|&(prefix, branch, hop)| {
        Some((name.strip_prefix(prefix)?, Scope { branch, hop }))
    })?;
    if scope.branch {
        // Only a branch's window gauges: see the module's comment.
        let kind = match family {
            "loss_ratio" => Kind::Loss,
            "jitter_seconds" if !scope.hop => Kind::Jitter,
            _ => return None,
        };
        return Some((kind, scope));
    }
    let hop = scope.hop;
    let kind = match family {
        "probes_sent_total" => Kind::Sent,
        "rounds_total" if !hop => Kind::Sent,
        "probes_received_total" => Kind::Received,
        "rtt_seconds_sum" => Kind::RttSum,
        "rtt_seconds_count" => Kind::RttCount,
        "rtt_seconds_bucket" => Kind::Bucket(match label(key, "le")? {
            "+Inf" => f64::INFINITY,
            le => le.parse().ok()?,
        }),
        "loss_ratio" => Kind::Loss,
        "jitter_seconds" => Kind::Jitter,
        "state" if !hop => Kind::State,
        _ => return None,
    };
    Some((kind, scope))
}

/// Which stored series a pushed series is read from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Source {
    /// The configured target (its round interval sets the lookback).
    target: String,
    /// The ECMP branch whose stored series is read; `None` for the
    /// target's own flow.
    branch: Option<BranchIndex>,
    /// `None` for the destination.
    ttl: Option<u8>,
}

impl Source {
    /// The name the store keeps these rounds under; `None` for a target
    /// name the store cannot hold (nothing was stored for it).
    fn stored_series(&self) -> Option<TargetId> {
        let target = TargetId::new(&self.target).ok()?;
        Some(match self.branch {
            Some(branch) => target.branch_series(branch),
            None => target,
        })
    }
}

/// Running sums since the gap's start, for the counters.
#[derive(Debug, Clone, Default)]
struct Sums {
    sent: u64,
    received: u64,
    rtt_sum_s: f64,
    /// Answers' RTTs in seconds, for histogram buckets.
    rtts: Vec<f64>,
}

/// A gap being backfilled, a chunk of ticks at a time.
pub struct Backfill {
    gap: Gap,
    ticks: Vec<u64>,
    next: usize,
    /// Per stored series: points read so far are summed up to `cursor_ms`.
    sums: HashMap<Source, Sums>,
    cursor_ms: u64,
    /// The pushed series rebuilt, grouped by where they are read from.
    plan: BTreeMap<Source, Vec<(SeriesKey, Kind)>>,
    window: usize,
    /// How far back a window reaches, per target.
    lookback_ms: HashMap<String, u64>,
}

impl Backfill {
    /// Plans the gap's backfill: the series pushed before it whose families
    /// rounds determine. `window` is `[statistics] window`; `intervals` are
    /// the targets' round intervals (for how far back a window reaches).
    pub fn new(gap: Gap, window: u32, intervals: &HashMap<String, Duration>) -> Backfill {
        let mut plan: BTreeMap<Source, Vec<(SeriesKey, Kind)>> = BTreeMap::new();
        for key in gap.before.keys() {
            let Some(name) = label(key, "__name__") else {
                continue;
            };
            let Some((kind, scope)) = kind(name, key) else {
                continue;
            };
            let Some(target) = label(key, "target") else {
                continue;
            };
            let ttl = match (scope.hop, label(key, "ttl").map(str::parse::<u8>)) {
                (false, _) => None,
                (true, Some(Ok(ttl))) if ttl > 0 => Some(ttl),
                (true, _) => continue,
            };
            let branch = match (scope.branch, label(key, "branch").map(str::parse::<u8>)) {
                (false, _) => None,
                // No branch 0: such a series is skipped, not read as the
                // target's own flow (`BranchIndex::new` gives `None` for it).
                (true, Some(Ok(n))) if n > 0 => BranchIndex::new(n),
                (true, _) => continue,
            };
            plan.entry(Source {
                target: target.to_owned(),
                branch,
                ttl,
            })
            .or_default()
            .push((key.clone(), kind));
        }
        let window = usize::try_from(window).unwrap_or(usize::MAX).max(1);
        let lookback_ms = plan
            .keys()
            .map(|s| {
                let interval = intervals
                    .get(&s.target)
                    .copied()
                    .unwrap_or(Duration::from_secs(1));
                let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
                // A window of rounds, and some slack for late rounds.
                (s.target.clone(), ms.saturating_mul(window as u64 + 2))
            })
            .collect();
        Backfill {
            ticks: gap.ticks(),
            next: 0,
            sums: HashMap::new(),
            cursor_ms: gap.from_ms,
            plan,
            window,
            lookback_ms,
            gap,
        }
    }

    /// Ticks not sent yet.
    pub fn remaining_ticks(&self) -> usize {
        self.ticks.len() - self.next
    }

    /// The oldest tick not sent yet.
    pub fn next_tick_ms(&self) -> Option<u64> {
        self.ticks.get(self.next).copied()
    }

    /// Series rebuilt per tick: the size of one tick's request.
    pub fn series_per_tick(&self) -> usize {
        self.plan.values().map(Vec::len).sum()
    }

    /// Skips the ticks before `oldest_ms` (older than the max age); returns
    /// how many were skipped.
    pub fn skip_before(&mut self, oldest_ms: u64) -> usize {
        let before = self.next;
        while self.next_tick_ms().is_some_and(|t| t < oldest_ms) {
            self.next += 1;
        }
        self.next - before
    }

    /// The next `ticks` ticks' samples, oldest first; empty when done.
    pub fn next_chunk(
        &mut self,
        store: &Store,
        ticks: usize,
    ) -> Result<Vec<TimeSeries>, StoreError> {
        let chunk: Vec<u64> = self.ticks[self.next..]
            .iter()
            .copied()
            .take(ticks.max(1))
            .collect();
        let (Some(&first), Some(&last)) = (chunk.first(), chunk.last()) else {
            return Ok(Vec::new());
        };
        let mut out: BTreeMap<SeriesKey, Vec<Sample>> = BTreeMap::new();
        for (source, series) in &self.plan {
            let lookback = self.lookback_ms.get(&source.target).copied().unwrap_or(0);
            // Counters sum from the cursor on; windows look back from each tick.
            let from = first.saturating_sub(lookback).min(self.cursor_ms + 1);
            let Some(stored) = source.stored_series() else {
                continue;
            };
            let hop = source.ttl.map_or(Hop::Destination, Hop::Ttl);
            let points = store
                .series(&stored, hop, from, last + 1, Resolution::Raw)?
                .points;
            let sums = self.sums.entry(source.clone()).or_default();
            let mut summed = points.partition_point(|p| p.at_ms <= self.cursor_ms);
            for &tick in &chunk {
                let upto = points.partition_point(|p| p.at_ms <= tick);
                for p in &points[summed..upto.max(summed)] {
                    add(sums, p);
                }
                summed = summed.max(upto);
                let window = &points[upto.saturating_sub(self.window)..upto];
                for (key, kind) in series {
                    let value = match kind {
                        Kind::Sent
                        | Kind::Received
                        | Kind::RttSum
                        | Kind::RttCount
                        | Kind::Bucket(_) => {
                            let base = self.gap.before.get(key).copied().unwrap_or(0.0);
                            let value = base + counted(sums, *kind);
                            match self.gap.after.get(key) {
                                Some(&cap) if cap >= base => value.min(cap),
                                _ => value,
                            }
                        }
                        Kind::Loss => match loss(window) {
                            Some(v) => v,
                            None => continue,
                        },
                        Kind::Jitter => match jitter(window) {
                            Some(v) => v,
                            None => continue,
                        },
                        Kind::State => {
                            let interval = self.gap.interval_ms.max(1);
                            let recent = points[..upto]
                                .iter()
                                .rev()
                                .take_while(|p| p.at_ms + 2 * interval > tick)
                                .count();
                            if recent == 0 {
                                continue;
                            }
                            f64::from(label(key, "state") == Some("running"))
                        }
                    };
                    out.entry(key.clone()).or_default().push(Sample {
                        value,
                        timestamp: i64::try_from(tick).unwrap_or(i64::MAX),
                    });
                }
            }
        }
        self.cursor_ms = last;
        self.next += chunk.len();
        Ok(out
            .into_iter()
            .map(|(labels, samples)| TimeSeries { labels, samples })
            .collect())
    }
}

fn add(sums: &mut Sums, point: &Point) {
    sums.sent += point.sent;
    if point.sent > point.lost {
        if let Some(rtt) = point.min_ns {
            let s = rtt as f64 / 1e9;
            sums.received += 1;
            sums.rtt_sum_s += s;
            sums.rtts.push(s);
        }
    }
}

fn counted(sums: &Sums, kind: Kind) -> f64 {
    match kind {
        Kind::Sent => sums.sent as f64,
        Kind::Received | Kind::RttCount => sums.received as f64,
        Kind::RttSum => sums.rtt_sum_s,
        Kind::Bucket(le) => sums.rtts.iter().filter(|&&s| s <= le).count() as f64,
        Kind::Loss | Kind::Jitter | Kind::State => 0.0,
    }
}

/// Lost over sent in the window.
fn loss(window: &[Point]) -> Option<f64> {
    let sent: u64 = window.iter().map(|p| p.sent).sum();
    let lost: u64 = window.iter().map(|p| p.lost).sum();
    (sent > 0).then(|| lost as f64 / sent as f64)
}

/// Mean |ΔRTT| between consecutive answers in the window, in seconds.
fn jitter(window: &[Point]) -> Option<f64> {
    let rtts: Vec<f64> = window
        .iter()
        .filter(|p| p.sent > p.lost)
        .filter_map(|p| p.min_ns.map(|ns| ns as f64))
        .collect();
    if rtts.len() < 2 {
        return None;
    }
    let total: f64 = rtts.windows(2).map(|w| (w[1] - w[0]).abs()).sum();
    Some(total / (rtts.len() - 1) as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::model::{HopSample, RoundRecord};
    use crate::probe::{TimestampSource, Ttl};
    use crate::remote::proto::Label;
    use crate::store::StoreConfig;

    const T0: u64 = 1_700_002_800_000;

    /// A 3-hop round: TTL k answers in k ms; the destination (TTL 3) is lost
    /// in rounds 20 to 39 (an outage seen by the box).
    fn round(seq: u64) -> RoundRecord {
        let lost = (20..40).contains(&seq);
        round_with(seq, (!lost).then_some(3_000_000), false)
    }

    /// A 3-hop round of target `dst`, one a second: TTL 1 answers in 1 ms,
    /// TTL 2 in 2 ms unless `hop_2_lost`, the destination (TTL 3) in
    /// `destination_rtt_ns` (`None`: lost).
    fn round_with(seq: u64, destination_rtt_ns: Option<u64>, hop_2_lost: bool) -> RoundRecord {
        let hops = (1..=3u8)
            .map(|ttl| {
                let rtt = match ttl {
                    3 => destination_rtt_ns,
                    2 if hop_2_lost => None,
                    _ => Some(u64::from(ttl) * 1_000_000),
                };
                HopSample::answered_or_lost(ttl, IpAddr::from([198, 18, 0, ttl]), rtt, ttl == 3)
            })
            .collect();
        RoundRecord {
            target: TargetId::new("dst").unwrap(),
            seq,
            started_at_ms: T0 + seq * 1000,
            hops,
            destination_ttl: destination_rtt_ns.map(|_| Ttl::new(3).unwrap()),
            source: TimestampSource::Ebpf,
        }
    }

    fn key(name: &str, extra: &[(&str, &str)]) -> SeriesKey {
        let mut labels: Vec<Label> = [("__name__", name), ("target", "dst"), ("vantage", "v")]
            .iter()
            .chain(extra)
            .map(|(n, v)| Label {
                name: (*n).to_owned(),
                value: (*v).to_owned(),
            })
            .collect();
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        labels
    }

    /// Every sample the backfill rebuilds, three series a chunk, per series
    /// as (seconds after `T0`, value).
    fn rebuild_all(backfill: &mut Backfill, store: &Store) -> BTreeMap<SeriesKey, Vec<(u64, f64)>> {
        let mut all: BTreeMap<SeriesKey, Vec<(u64, f64)>> = BTreeMap::new();
        while backfill.remaining_ticks() > 0 {
            for series in backfill.next_chunk(store, 3).unwrap() {
                let samples = series
                    .samples
                    .iter()
                    .map(|s| ((s.timestamp as u64 - T0) / 1000, s.value));
                all.entry(series.labels).or_default().extend(samples);
            }
        }
        all
    }

    #[test]
    fn a_gap_is_rebuilt_from_stored_rounds() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_at(dir.path().join("s"), StoreConfig::default(), T0).unwrap();
        for seq in 0..60 {
            store.record_round(&round(seq)).unwrap();
        }
        store.flush_at(T0 + 61_000).unwrap();

        let sent = key("hopwatch_target_probes_sent_total", &[]);
        let received = key("hopwatch_target_probes_received_total", &[]);
        let loss = key("hopwatch_target_loss_ratio", &[]);
        let hop_loss = key("hopwatch_hop_loss_ratio", &[("ttl", "2")]);
        let bucket = key("hopwatch_target_rtt_seconds_bucket", &[("le", "0.0025")]);
        let running = key("hopwatch_target_state", &[("state", "running")]);
        let mos = key("hopwatch_target_mos", &[]);
        // Pushed at round 9 (10 rounds counted) and again at round 50.
        let before: Values = [
            (sent.clone(), 10.0),
            (received.clone(), 10.0),
            (loss.clone(), 0.0),
            (hop_loss.clone(), 0.0),
            (bucket.clone(), 0.0),
            (running.clone(), 1.0),
            (mos.clone(), 4.4),
        ]
        .into_iter()
        .collect();
        let after: Values = [(sent.clone(), 51.0), (received.clone(), 31.0)]
            .into_iter()
            .collect();
        let gap = Gap {
            from_ms: T0 + 9_000,
            to_ms: T0 + 50_000,
            interval_ms: 5_000,
            before,
            after,
        };
        assert_eq!(gap.ticks().len(), 8, "{:?}", gap.ticks());
        let intervals = [("dst".to_owned(), Duration::from_secs(1))].into();
        let mut backfill = Backfill::new(gap, 10, &intervals);
        // MOS is not determined by rounds: not planned.
        assert_eq!(backfill.series_per_tick(), 6);
        let all = rebuild_all(&mut backfill, &store);
        let values = |k: &SeriesKey| all[k].clone();
        // Counters go on from the value before the gap, one round a second.
        assert_eq!(
            values(&sent),
            vec![
                (14, 15.0),
                (19, 20.0),
                (24, 25.0),
                (29, 30.0),
                (34, 35.0),
                (39, 40.0),
                (44, 45.0),
                (49, 50.0)
            ]
        );
        // No answers in rounds 20..40.
        assert_eq!(
            values(&received),
            vec![
                (14, 15.0),
                (19, 20.0),
                (24, 20.0),
                (29, 20.0),
                (34, 20.0),
                (39, 20.0),
                (44, 25.0),
                (49, 30.0)
            ]
        );
        // 3 ms is above the 2.5 ms bucket: it stays where it was.
        assert!(values(&bucket).iter().all(|(_, v)| *v == 0.0));
        // The window of the last 10 rounds: all lost from round 29 to 39.
        let l = values(&loss);
        assert_eq!(l[0], (14, 0.0));
        assert_eq!(l[2], (24, 0.5));
        assert_eq!(l[3], (29, 1.0));
        assert_eq!(l[5], (39, 1.0));
        assert_eq!(l[7], (49, 0.0));
        // Hop 2 answered throughout.
        assert!(values(&hop_loss).iter().all(|(_, v)| *v == 0.0));
        assert!(values(&running).iter().all(|(_, v)| *v == 1.0));
        // Samples are oldest first within each series.
        for samples in all.values() {
            assert!(samples.windows(2).all(|w| w[0].0 < w[1].0));
        }
    }

    #[test]
    fn a_gap_in_branch_series_is_rebuilt_from_each_branch_s_stored_rounds() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_at(dir.path().join("s"), StoreConfig::default(), T0).unwrap();
        let (one, two) = (BranchIndex::new(1).unwrap(), BranchIndex::new(2).unwrap());
        for seq in 0..60 {
            // The target's own flow loses rounds 20 to 39 (as in `round`),
            // which neither branch may be rebuilt from.
            store.record_round(&round(seq)).unwrap();
            // Branch 1 answers every round, alternately in 3 and 5 ms: a
            // jitter of 2 ms.
            let rtt = if seq % 2 == 0 { 3_000_000 } else { 5_000_000 };
            store
                .record_branch_round(one, &round_with(seq, Some(rtt), false))
                .unwrap();
            // Branch 2 loses one round in 5 at the destination (20% of any 10
            // in a row) and one in 10 at hop 2 (10%).
            let answered = (seq % 5 != 0).then_some(3_000_000);
            store
                .record_branch_round(two, &round_with(seq, answered, seq % 10 == 0))
                .unwrap();
        }
        store.flush_at(T0 + 61_000).unwrap();

        let target_loss = key("hopwatch_target_loss_ratio", &[]);
        let loss_1 = key("hopwatch_branch_loss_ratio", &[("branch", "1")]);
        let loss_2 = key("hopwatch_branch_loss_ratio", &[("branch", "2")]);
        let jitter_1 = key("hopwatch_branch_jitter_seconds", &[("branch", "1")]);
        let hop_loss_2 = key(
            "hopwatch_branch_hop_loss_ratio",
            &[("branch", "2"), ("ttl", "2")],
        );
        // Not rebuilt: the counter restarts with each rediscovery, and a
        // branch 0 does not exist.
        let rounds_2 = key("hopwatch_branch_rounds_total", &[("branch", "2")]);
        let loss_0 = key("hopwatch_branch_loss_ratio", &[("branch", "0")]);
        let before: Values = [
            (target_loss.clone(), 0.0),
            (loss_1.clone(), 0.0),
            (loss_2.clone(), 0.2),
            (jitter_1.clone(), 0.002),
            (hop_loss_2.clone(), 0.1),
            (rounds_2.clone(), 10.0),
            (loss_0.clone(), 0.0),
        ]
        .into_iter()
        .collect();
        let gap = Gap {
            from_ms: T0 + 9_000,
            to_ms: T0 + 50_000,
            interval_ms: 5_000,
            before,
            after: Values::new(),
        };
        let intervals = [("dst".to_owned(), Duration::from_secs(1))].into();
        let mut backfill = Backfill::new(gap, 10, &intervals);
        assert_eq!(backfill.series_per_tick(), 5);
        let all = rebuild_all(&mut backfill, &store);
        assert!(!all.contains_key(&rounds_2) && !all.contains_key(&loss_0));
        let values = |k: &SeriesKey| all[k].clone();
        let ticks = [14, 19, 24, 29, 34, 39, 44, 49];
        let at = |value: f64| ticks.iter().map(|&t| (t, value)).collect::<Vec<_>>();
        // Each branch over the window of its own last 10 rounds.
        assert_eq!(values(&loss_1), at(0.0));
        assert_eq!(values(&loss_2), at(0.2));
        assert_eq!(values(&hop_loss_2), at(0.1));
        assert!(
            values(&jitter_1)
                .iter()
                .all(|(_, v)| (v - 0.002).abs() < 1e-12),
            "{:?}",
            values(&jitter_1)
        );
        assert_eq!(values(&jitter_1).len(), ticks.len());
        // The target's own series still reads the target's rounds: all lost
        // from round 29 to 39.
        assert_eq!(values(&target_loss)[3], (29, 1.0));
    }

    #[test]
    fn ticks_older_than_the_max_age_are_skipped() {
        let gap = Gap {
            from_ms: 0,
            to_ms: 100_000,
            interval_ms: 10_000,
            before: Values::new(),
            after: Values::new(),
        };
        let mut backfill = Backfill::new(gap, 100, &HashMap::new());
        assert_eq!(backfill.remaining_ticks(), 9);
        assert_eq!(backfill.skip_before(35_000), 3);
        assert_eq!(backfill.next_tick_ms(), Some(40_000));
    }
}
