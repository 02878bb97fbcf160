//! Reading the store: one hop's series over a time range at a chosen or
//! automatic resolution (for the web UI and export), events, targets and raw
//! rounds. Raw rounds are read from the rounds' files, from sled (where an
//! older hopwatch kept them, until they expire) and from the write buffer,
//! so a minute's flush interval does not hide the last minute; rollups and
//! events are what the last flush wrote.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::model::{BranchIndex, HopSample, RoundRecord, TargetId};
use crate::probe::Rtt;
use crate::store::codec::{decode, EventV1, RawRoundV1};
use crate::store::error::StoreError;
use crate::store::flush::sled_err;
use crate::store::keys::{
    parse_event_key, parse_raw_key, raw_key, target_end, time_bound, SeriesNum, TargetNum,
};
use crate::store::rollup::{scratch_histogram, SeriesAcc, Stats};
use crate::store::schema::{Trees, EVENTS, RAW};
use crate::store::segment::{sort_rounds, Segments};
use crate::store::{Store, StoredEvent, HOUR_MS, MINUTE_MS};
use crate::sys;

/// Which hop of a target a series describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hop {
    /// The target itself, at whatever TTL it answered in each round; a round
    /// in which it did not answer counts as one lost probe.
    Destination,
    /// The probe with this TTL (1 to 255), in rounds that reached that far.
    Ttl(u8),
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hop::Destination => f.write_str("destination"),
            Hop::Ttl(ttl) => write!(f, "ttl {ttl}"),
        }
    }
}

/// The spacing of a series' points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Resolution {
    /// Pick from the span: raw up to 6 h, 1-minute up to 7 days, 1-hour beyond.
    #[serde(rename = "auto")]
    Auto,
    /// One point per round.
    #[serde(rename = "raw")]
    Raw,
    #[serde(rename = "1m")]
    Minute,
    #[serde(rename = "1h")]
    Hour,
}

impl Resolution {
    /// Longest span [`Resolution::Auto`] serves from raw rounds.
    pub const RAW_UP_TO_MS: u64 = 6 * HOUR_MS;
    /// Longest span [`Resolution::Auto`] serves from minute rollups.
    pub const MINUTE_UP_TO_MS: u64 = 7 * 24 * HOUR_MS;

    /// The concrete resolution for a span; anything but `Auto` is kept.
    pub fn resolve(self, span_ms: u64) -> Resolution {
        match self {
            Resolution::Auto if span_ms <= Self::RAW_UP_TO_MS => Resolution::Raw,
            Resolution::Auto if span_ms <= Self::MINUTE_UP_TO_MS => Resolution::Minute,
            Resolution::Auto => Resolution::Hour,
            other => other,
        }
    }

    /// Bucket width in milliseconds; 0 for raw (and auto).
    pub fn interval_ms(self) -> u64 {
        match self {
            Resolution::Minute => MINUTE_MS,
            Resolution::Hour => HOUR_MS,
            Resolution::Raw | Resolution::Auto => 0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Auto => "auto",
            Resolution::Raw => "raw",
            Resolution::Minute => "1m",
            Resolution::Hour => "1h",
        }
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A resolution name that is not one of auto, raw, 1m, 1h.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown resolution {0:?}: use auto, raw, 1m or 1h")]
pub struct InvalidResolution(pub String);

impl FromStr for Resolution {
    type Err = InvalidResolution;

    fn from_str(s: &str) -> Result<Resolution, InvalidResolution> {
        match s {
            "auto" => Ok(Resolution::Auto),
            "raw" => Ok(Resolution::Raw),
            "1m" => Ok(Resolution::Minute),
            "1h" => Ok(Resolution::Hour),
            other => Err(InvalidResolution(other.to_string())),
        }
    }
}

/// One point of a series: a round (raw) or a bucket starting at `at_ms`.
/// RTT figures are `None` when no probe in it was answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub at_ms: u64,
    pub sent: u64,
    pub lost: u64,
    pub min_ns: Option<u64>,
    pub avg_ns: Option<f64>,
    pub max_ns: Option<u64>,
    /// Population standard deviation.
    pub stddev_ns: Option<f64>,
    /// Percentiles: exact for raw points; from the rollup histogram (within
    /// 1.6 %, nearer at the bucket's middle; clamped to [min, max]) for rollups.
    pub p50_ns: Option<u64>,
    pub p95_ns: Option<u64>,
    pub p99_ns: Option<u64>,
}

impl Point {
    pub fn no_replies(at_ms: u64, sent: u64, lost: u64) -> Point {
        Point {
            at_ms,
            sent,
            lost,
            min_ns: None,
            avg_ns: None,
            max_ns: None,
            stddev_ns: None,
            p50_ns: None,
            p95_ns: None,
            p99_ns: None,
        }
    }

    /// The point of one probe.
    pub fn single(at_ms: u64, rtt_ns: Option<u64>) -> Point {
        match rtt_ns {
            None => Point::no_replies(at_ms, 1, 1),
            Some(v) => Point {
                at_ms,
                sent: 1,
                lost: 0,
                min_ns: Some(v),
                avg_ns: Some(v as f64),
                max_ns: Some(v),
                stddev_ns: Some(0.0),
                p50_ns: Some(v),
                p95_ns: Some(v),
                p99_ns: Some(v),
            },
        }
    }

    /// Lost over sent, `None` when nothing was sent.
    pub fn loss_ratio(&self) -> Option<f64> {
        (self.sent > 0).then(|| self.lost as f64 / self.sent as f64)
    }
}

/// One hop's history over `[from_ms, to_ms)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub target: TargetId,
    pub hop: Hop,
    /// The resolution served (never `Auto`).
    pub resolution: Resolution,
    /// Bucket width; 0 for raw.
    pub interval_ms: u64,
    pub from_ms: u64,
    pub to_ms: u64,
    pub points: Vec<Point>,
    /// All points merged into one (exact sums; percentiles from the merged
    /// histograms for rollups), stamped `from_ms`.
    pub total: Point,
}

/// The sample a round contributes to `hop`'s series, if any: `Some(None)`
/// is a lost probe, `None` means the round has no probe at that TTL.
pub(crate) fn sample_for(round: &RoundRecord, hop: Hop) -> Option<Option<u64>> {
    let sample = match hop {
        Hop::Destination => Some(round.destination().and_then(HopSample::rtt)),
        Hop::Ttl(ttl) => round
            .path_samples()
            .iter()
            .find(|h| h.ttl.get() == ttl)
            .map(HopSample::rtt),
    };
    sample.map(|rtt| rtt.map(Rtt::as_nanos))
}

impl Store {
    /// One hop's series over `[from_ms, to_ms)`. A rollup bucket is included
    /// when its start is in the range after rounding `from_ms` down to the
    /// bucket width; buckets still open (the current minute or hour) are not
    /// in the rollups yet. An unknown target has an empty series.
    pub fn series(
        &self,
        target: &TargetId,
        hop: Hop,
        from_ms: u64,
        to_ms: u64,
        resolution: Resolution,
    ) -> Result<Series, StoreError> {
        if from_ms > to_ms {
            return Err(StoreError::InvalidRange { from_ms, to_ms });
        }
        if hop == Hop::Ttl(0) {
            return Err(StoreError::InvalidTtl);
        }
        let resolution = resolution.resolve(to_ms - from_ms);
        let mut series = Series {
            target: target.clone(),
            hop,
            resolution,
            interval_ms: resolution.interval_ms(),
            from_ms,
            to_ms,
            points: Vec::new(),
            total: Point::no_replies(from_ms, 0, 0),
        };
        let Some(num) = self.lookup(target) else {
            return Ok(series);
        };
        let trees = self.trees()?;
        match resolution {
            Resolution::Raw | Resolution::Auto => {
                let mut total = SeriesAcc::default();
                for round in self.rounds_of(&trees, num, target, from_ms, to_ms)? {
                    if let Some(sample) = sample_for(&round, hop) {
                        series
                            .points
                            .push(Point::single(round.started_at_ms, sample));
                        total.push(sample);
                    }
                }
                series.total = total.finish(&mut scratch_histogram()).to_point(from_ms);
            }
            Resolution::Minute => {
                let start = from_ms - from_ms % MINUTE_MS;
                let s = SeriesNum::of(hop);
                let mut total = Stats::default();
                for ((_, at), stats) in self.minute_stats(&trees, num, Some(s), start, to_ms)? {
                    series.points.push(stats.to_point(at));
                    total.merge(&stats);
                }
                series.total = total.to_point(from_ms);
            }
            Resolution::Hour => {
                let start = from_ms - from_ms % resolution.interval_ms();
                let s = SeriesNum::of(hop);
                let mut total = Stats::default();
                for ((_, at), stats) in self.hour_stats(&trees, num, Some(s), start, to_ms)? {
                    series.points.push(stats.to_point(at));
                    total.merge(&stats);
                }
                series.total = total.to_point(from_ms);
            }
        }
        Ok(series)
    }

    fn decode_round(
        &self,
        target: &TargetId,
        key: &[u8],
        value: &[u8],
    ) -> Result<RoundRecord, StoreError> {
        let decode_err = |source| StoreError::Decode {
            path: self.path.clone(),
            tree: RAW,
            key: key.to_vec(),
            source,
        };
        let (_, at) = parse_raw_key(key).ok_or_else(|| StoreError::MalformedKey {
            path: self.path.clone(),
            tree: RAW,
            key: key.to_vec(),
        })?;
        decode::<RawRoundV1>(value)
            .and_then(|raw| raw.into_round(target.clone(), at))
            .map_err(decode_err)
    }

    /// The stored rounds of `target` that started in `[from_ms, to_ms)`, oldest first.
    pub fn rounds(
        &self,
        target: &TargetId,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<RoundRecord>, StoreError> {
        if from_ms > to_ms {
            return Err(StoreError::InvalidRange { from_ms, to_ms });
        }
        let Some(num) = self.lookup(target) else {
            return Ok(Vec::new());
        };
        let trees = self.trees()?;
        self.rounds_of(&trees, num, target, from_ms, to_ms)
    }

    /// The rounds of many targets, each from its own start up to `to_ms`,
    /// reading each rounds file once for all of them (a read per target
    /// would read the same hour's file once per target). Unknown targets
    /// are left out.
    pub fn recent_rounds(
        &self,
        targets: &[(TargetId, u64)],
        to_ms: u64,
    ) -> Result<HashMap<TargetId, Vec<RoundRecord>>, StoreError> {
        let wanted: HashMap<TargetNum, (&TargetId, u64)> = targets
            .iter()
            .filter_map(|(id, from)| Some((self.lookup(id)?, (id, *from))))
            .collect();
        let Some(from_ms) = wanted.values().map(|(_, from)| *from).min() else {
            return Ok(HashMap::new());
        };
        let trees = self.trees()?;
        let mut found = Segments::reader(&self.rounds_dir).read_many(from_ms, to_ms, |num| {
            wanted.get(&num).map(|(id, _)| (*id).clone())
        })?;
        for damage in &found.damage {
            self.note_damage(damage);
        }
        let mut out = HashMap::new();
        for (&num, &(id, from)) in &wanted {
            let mut rounds = found.rounds.remove(&num).unwrap_or_default();
            rounds.retain(|r| r.started_at_ms >= from);
            rounds.extend(self.sled_rounds(&trees, num, id, from, to_ms)?);
            rounds.extend(self.buffered_rounds(num, id, from, to_ms));
            sort_rounds(&mut rounds);
            out.insert(id.clone(), rounds);
        }
        Ok(out)
    }

    /// Every round of `target` in `[from_ms, to_ms)`: stored ones and those
    /// waiting in the write buffer.
    fn rounds_of(
        &self,
        trees: &Trees,
        num: TargetNum,
        target: &TargetId,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<RoundRecord>, StoreError> {
        let mut rounds = self.stored_rounds(trees, num, target, from_ms, to_ms)?;
        rounds.extend(self.buffered_rounds(num, target, from_ms, to_ms));
        sort_rounds(&mut rounds);
        Ok(rounds)
    }

    /// `target`'s rounds in `[from_ms, to_ms)` on disk: in the rounds' files
    /// and in sled's `raw` tree. Damage in the files is logged and counted;
    /// the records around it are read.
    pub(super) fn stored_rounds(
        &self,
        trees: &Trees,
        num: TargetNum,
        target: &TargetId,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<RoundRecord>, StoreError> {
        let mut rounds = self.sled_rounds(trees, num, target, from_ms, to_ms)?;
        let found = Segments::reader(&self.rounds_dir).read(num, target, from_ms, to_ms)?;
        for damage in &found.damage {
            self.note_damage(damage);
        }
        rounds.extend(found.rounds);
        sort_rounds(&mut rounds);
        Ok(rounds)
    }

    /// `target`'s rounds in `[from_ms, to_ms)` in sled's `raw` tree, where
    /// an older hopwatch kept them (until they expire).
    fn sled_rounds(
        &self,
        trees: &Trees,
        num: TargetNum,
        target: &TargetId,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<RoundRecord>, StoreError> {
        trees
            .raw
            .range(raw_key(num, from_ms)..raw_key(num, to_ms))
            .map(|item| {
                let (key, value) = item.map_err(sled_err(&self.path, "read rounds"))?;
                self.decode_round(target, &key, &value)
            })
            .collect()
    }

    /// `target`'s rounds in `[from_ms, to_ms)` still in the write buffer.
    fn buffered_rounds(
        &self,
        num: TargetNum,
        target: &TargetId,
        from_ms: u64,
        to_ms: u64,
    ) -> Vec<RoundRecord> {
        let mut rounds = sys::lock(&self.pending).rounds_of(num, target);
        rounds.retain(|r| (from_ms..to_ms).contains(&r.started_at_ms));
        rounds
    }

    /// The newest stored round of `target` (to resume its sequence after a restart).
    pub fn last_round(&self, target: &TargetId) -> Result<Option<RoundRecord>, StoreError> {
        let Some(num) = self.lookup(target) else {
            return Ok(None);
        };
        let trees = self.trees()?;
        let last = trees
            .raw
            .range(time_bound(num, 0).as_slice()..target_end(num).as_slice())
            .next_back()
            .transpose()
            .map_err(sled_err(&self.path, "read last round"))?;
        let in_sled = last
            .map(|(key, value)| self.decode_round(target, &key, &value))
            .transpose()?;
        let in_files = Segments::reader(&self.rounds_dir).last_round(num, target)?;
        let buffered = self.buffered_rounds(num, target, 0, u64::MAX);
        Ok([in_sled, in_files, buffered.into_iter().last()]
            .into_iter()
            .flatten()
            .max_by_key(|r| (r.started_at_ms, r.seq)))
    }

    /// The events of `target` in `[from_ms, to_ms)`, oldest first.
    pub fn events(
        &self,
        target: &TargetId,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        if from_ms > to_ms {
            return Err(StoreError::InvalidRange { from_ms, to_ms });
        }
        let Some(num) = self.lookup(target) else {
            return Ok(Vec::new());
        };
        let trees = self.trees()?;
        let mut events = Vec::new();
        for item in trees
            .events
            .range(time_bound(num, from_ms)..time_bound(num, to_ms))
        {
            let (key, value) = item.map_err(sled_err(&self.path, "read events"))?;
            let decode_err = |source| StoreError::Decode {
                path: self.path.clone(),
                tree: EVENTS,
                key: key.to_vec(),
                source,
            };
            let (_, at_ms) = parse_event_key(&key).ok_or_else(|| StoreError::MalformedKey {
                path: self.path.clone(),
                tree: EVENTS,
                key: key.to_vec(),
            })?;
            let event: EventV1 = decode(&value).map_err(decode_err)?;
            // Payloads were serialised from a `serde_json::Value`; if one no
            // longer parses, keep the event and its text.
            let payload = serde_json::from_str(&event.payload_json)
                .unwrap_or(serde_json::Value::String(event.payload_json));
            events.push(StoredEvent {
                target: target.clone(),
                at_ms,
                kind: event.kind,
                payload,
            });
        }
        Ok(events)
    }

    /// Every target the store has seen (including ones written only to the
    /// buffer so far), sorted by name; not their branches' series.
    pub fn targets(&self) -> Vec<TargetId> {
        let targets = sys::read(&self.targets);
        let mut names: Vec<TargetId> = targets
            .names()
            .filter(|name| name.branch_of().is_none())
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// The ECMP branches of `target` the store has rounds of (including
    /// rounds only buffered so far), in index order. Their history is read
    /// under [`TargetId::branch_series`] with the same calls as a target's.
    pub fn branches_of(&self, target: &TargetId) -> Vec<BranchIndex> {
        let targets = sys::read(&self.targets);
        let mut branches: Vec<BranchIndex> = targets
            .names()
            .filter_map(TargetId::branch_of)
            .filter(|(of, _)| of == target)
            .map(|(_, branch)| branch)
            .collect();
        branches.sort();
        branches
    }
}
