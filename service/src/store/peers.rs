//! Peer (STAMP link) history: a peer's probes go through the same buffer,
//! flushes, rollups and retention as a target's rounds, under a number of
//! their own in the shared `targets` tree.
//!
//! The `targets` tree names a peer `peer:NAME`. `:` cannot occur in a target
//! name (see `TargetId`), so a peer and a target of the same name never share
//! a number, and target listings never show peers. A `raw` value of a peer is
//! one batch of probes ([`PeerBatchV1`]; the monitor writes one a second),
//! each series already as rollup statistics, so minute rollups merge batches
//! exactly and hour rollups are built from minutes like a target's. Rollup
//! series: 0 RTT (series 0, like a target's destination, so the done-marks
//! rebuilt at open work unchanged), 1 forward and 2 backward one-way delay.
//!
//! No schema bump: the layout is additive. A store of an earlier release
//! reads unchanged; a store holding peer history is refused by an earlier
//! release at open (`peer:NAME` is a malformed target name there), never
//! misread.

use serde::Serialize;

use crate::model::TargetId;
use crate::store::buffer::RawEntry;
use crate::store::codec::{decode, encode, PeerBatchV1};
use crate::store::error::StoreError;
use crate::store::flush::sled_err;
use crate::store::keys::{parse_raw_key, raw_key, SeriesNum, TargetNum};
use crate::store::query::{Point, Resolution};
use crate::store::rollup::{scratch_histogram, SeriesAcc, Stats};
use crate::store::schema::RAW;
use crate::store::Store;
use crate::sys;

/// The prefix of a peer's name in the `targets` tree.
pub const PEER_KEY_PREFIX: &str = "peer:";

/// The `targets` tree key of a peer.
pub fn peer_key(peer: &TargetId) -> Vec<u8> {
    format!("{PEER_KEY_PREFIX}{peer}").into_bytes()
}

/// One series of a peer's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerSeries {
    /// Round-trip time; every probe counts, a lost one as lost.
    Rtt,
    /// One-way delay to the reflector; its losses are the probes the
    /// reflector never saw.
    Forward,
    /// One-way delay back; its losses are replies that never came back.
    Backward,
}

impl PeerSeries {
    pub const ALL: [PeerSeries; 3] = [PeerSeries::Rtt, PeerSeries::Forward, PeerSeries::Backward];

    pub fn num(self) -> SeriesNum {
        match self {
            PeerSeries::Rtt => SeriesNum(0),
            PeerSeries::Forward => SeriesNum(1),
            PeerSeries::Backward => SeriesNum(2),
        }
    }

    fn index(self) -> usize {
        self.num().0 as usize
    }
}

/// One batch of a peer's probes being collected; see [`Store::record_peer_batch`].
#[derive(Debug, Default)]
pub struct PeerBatch {
    series: [SeriesAcc; 3],
}

impl PeerBatch {
    /// One value of `series` in nanoseconds, or `None` for a probe lost in it.
    pub fn push(&mut self, series: PeerSeries, value_ns: Option<u64>) {
        self.series[series.index()].push(value_ns);
    }

    pub fn is_empty(&self) -> bool {
        self.series.iter().all(|s| s.sent() == 0)
    }

    fn to_value(&self) -> PeerBatchV1 {
        let mut scratch = scratch_histogram();
        let [rtt, forward, backward] = &self.series;
        PeerBatchV1 {
            rtt: rtt.finish(&mut scratch).to_value(),
            forward: forward.finish(&mut scratch).to_value(),
            backward: backward.finish(&mut scratch).to_value(),
        }
    }
}

/// A stored batch's statistics, in [`PeerSeries::ALL`] order.
pub(super) fn batch_stats(value: PeerBatchV1) -> Result<[Stats; 3], histogram::Error> {
    Ok([
        Stats::from_value(value.rtt)?,
        Stats::from_value(value.forward)?,
        Stats::from_value(value.backward)?,
    ])
}

/// The points of one series of a peer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerSeriesPoints {
    pub series: PeerSeries,
    /// One per batch (raw) or bucket; batches or buckets without a probe of
    /// this series are left out.
    pub points: Vec<Point>,
    /// All points merged into one, stamped `from_ms`.
    pub total: Point,
}

/// A peer's history over `[from_ms, to_ms)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerHistory {
    pub peer: TargetId,
    /// The resolution served (never `Auto`).
    pub resolution: Resolution,
    /// Bucket width; 0 for raw (one point per batch).
    pub interval_ms: u64,
    pub from_ms: u64,
    pub to_ms: u64,
    /// RTT, forward, backward.
    pub series: Vec<PeerSeriesPoints>,
}

impl PeerHistory {
    pub fn get(&self, series: PeerSeries) -> Option<&PeerSeriesPoints> {
        self.series.iter().find(|s| s.series == series)
    }
}

impl Store {
    /// The peer's number, allocating one (written with the next flush) for a
    /// peer the store has not seen.
    fn peer_num(&self, peer: &TargetId) -> Result<TargetNum, StoreError> {
        if let Some(num) = self.peer_lookup(peer) {
            return Ok(num);
        }
        let mut targets = sys::write(&self.targets);
        if let Some(num) = targets.get_peer(peer) {
            return Ok(num);
        }
        let num = targets
            .allocate_peer(peer)
            .ok_or_else(|| StoreError::TargetsExhausted {
                path: self.path.clone(),
            })?;
        sys::lock(&self.pending).push_peer(num, peer.clone());
        Ok(num)
    }

    fn peer_lookup(&self, peer: &TargetId) -> Option<TargetNum> {
        sys::read(&self.targets).get_peer(peer)
    }

    /// Buffers one batch of `peer`'s probes, stamped `at_ms` (when the batch
    /// began), for the next flush. An empty batch writes nothing. Never
    /// touches the disk.
    pub fn record_peer_batch(
        &self,
        peer: &TargetId,
        at_ms: u64,
        batch: &PeerBatch,
    ) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let num = self.peer_num(peer)?;
        let entry = RawEntry::new(num, at_ms, encode(&batch.to_value()));
        let mut pending = sys::lock(&self.pending);
        pending.push_raw(entry);
        self.enforce_cap(&mut pending);
        Ok(())
    }

    /// A peer's stored history over `[from_ms, to_ms)`, with the resolution
    /// rules of [`Store::series`]. An unknown peer has empty series.
    pub fn peer_history(
        &self,
        peer: &TargetId,
        from_ms: u64,
        to_ms: u64,
        resolution: Resolution,
    ) -> Result<PeerHistory, StoreError> {
        if from_ms > to_ms {
            return Err(StoreError::InvalidRange { from_ms, to_ms });
        }
        let resolution = resolution.resolve(to_ms - from_ms);
        let mut points: [Vec<Point>; 3] = Default::default();
        let mut totals: [Stats; 3] = Default::default();
        if let Some(num) = self.peer_lookup(peer) {
            let trees = self.trees()?;
            match resolution {
                Resolution::Raw | Resolution::Auto => {
                    for item in trees.raw.range(raw_key(num, from_ms)..raw_key(num, to_ms)) {
                        let (key, value) =
                            item.map_err(sled_err(&self.path, "read peer batches"))?;
                        let (_, at) =
                            parse_raw_key(&key).ok_or_else(|| StoreError::MalformedKey {
                                path: self.path.clone(),
                                tree: RAW,
                                key: key.to_vec(),
                            })?;
                        let value =
                            decode::<PeerBatchV1>(&value).map_err(|source| StoreError::Decode {
                                path: self.path.clone(),
                                tree: RAW,
                                key: key.to_vec(),
                                source,
                            })?;
                        let stats = match batch_stats(value) {
                            Ok(stats) => stats,
                            Err(error) => {
                                self.note_corrupt(RAW, &key, &error);
                                continue;
                            }
                        };
                        for (i, s) in stats.iter().enumerate() {
                            if s.sent > 0 {
                                points[i].push(s.to_point(at));
                                totals[i].merge(s);
                            }
                        }
                    }
                }
                Resolution::Minute => {
                    let start = from_ms - from_ms % resolution.interval_ms();
                    for series in PeerSeries::ALL {
                        let found =
                            self.minute_stats(&trees, num, Some(series.num()), start, to_ms)?;
                        for ((_, at), stats) in found {
                            points[series.index()].push(stats.to_point(at));
                            totals[series.index()].merge(&stats);
                        }
                    }
                }
                Resolution::Hour => {
                    let start = from_ms - from_ms % resolution.interval_ms();
                    for series in PeerSeries::ALL {
                        let found =
                            self.hour_stats(&trees, num, Some(series.num()), start, to_ms)?;
                        for ((_, at), stats) in found {
                            points[series.index()].push(stats.to_point(at));
                            totals[series.index()].merge(&stats);
                        }
                    }
                }
            }
        }
        let series = PeerSeries::ALL
            .into_iter()
            .zip(points)
            .zip(totals)
            .map(|((series, points), total)| PeerSeriesPoints {
                series,
                points,
                total: total.to_point(from_ms),
            })
            .collect();
        Ok(PeerHistory {
            peer: peer.clone(),
            resolution,
            interval_ms: resolution.interval_ms(),
            from_ms,
            to_ms,
            series,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Hop, StoreConfig, HOUR_MS, MINUTE_MS};

    /// An hour boundary.
    const T0: u64 = 1_700_002_800_000;

    fn id(name: &str) -> TargetId {
        TargetId::new(name).unwrap()
    }

    /// A batch of ten probes: RTT 10 ms + a few µs, the 4th lost on the way
    /// out and the 8th on the way back; each direction half the RTT.
    fn batch(second: u64) -> PeerBatch {
        let mut b = PeerBatch::default();
        for i in 0..10u64 {
            let rtt = 10_000_000 + (second * 10 + i) * 1_000;
            match i {
                3 => {
                    b.push(PeerSeries::Rtt, None);
                    b.push(PeerSeries::Forward, None);
                }
                7 => {
                    b.push(PeerSeries::Rtt, None);
                    b.push(PeerSeries::Backward, None);
                }
                _ => {
                    b.push(PeerSeries::Rtt, Some(rtt));
                    b.push(PeerSeries::Forward, Some(rtt / 2));
                    b.push(PeerSeries::Backward, Some(rtt / 2));
                }
            }
        }
        b
    }

    fn series(h: &PeerHistory, s: PeerSeries) -> &PeerSeriesPoints {
        h.get(s).expect("every series is listed")
    }

    #[test]
    fn peer_batches_are_stored_rolled_up_and_kept_apart_from_targets() {
        let dir = tempfile::tempdir().unwrap();
        let peer = id("branch-b");
        {
            let store = Store::open_at(dir.path(), StoreConfig::default(), T0).unwrap();
            store
                .record_peer_batch(&peer, T0, &PeerBatch::default())
                .unwrap();
            // Three minutes of one batch a second.
            for s in 0..180 {
                store
                    .record_peer_batch(&peer, T0 + s * 1000, &batch(s))
                    .unwrap();
            }
            store.flush_at(T0 + 3 * MINUTE_MS + 20_000).unwrap();

            let raw = store
                .peer_history(&peer, T0, T0 + 3 * MINUTE_MS, Resolution::Raw)
                .unwrap();
            let rtt = series(&raw, PeerSeries::Rtt);
            assert_eq!(
                rtt.points.len(),
                180,
                "one point per batch, none for the empty one"
            );
            assert_eq!((rtt.points[0].sent, rtt.points[0].lost), (10, 2));
            assert_eq!(rtt.points[0].min_ns, Some(10_000_000));
            assert_eq!((rtt.total.sent, rtt.total.lost), (1800, 360));
            let fwd = series(&raw, PeerSeries::Forward);
            assert_eq!((fwd.total.sent, fwd.total.lost), (1620, 180));
            assert_eq!(fwd.points[0].min_ns, Some(5_000_000));
            let back = series(&raw, PeerSeries::Backward);
            assert_eq!((back.total.sent, back.total.lost), (1620, 180));

            let minutes = store
                .peer_history(&peer, T0, T0 + 3 * MINUTE_MS, Resolution::Minute)
                .unwrap();
            let rtt_m = series(&minutes, PeerSeries::Rtt);
            assert_eq!(rtt_m.points.len(), 3, "three closed minutes");
            assert_eq!(rtt_m.points[1].at_ms, T0 + MINUTE_MS);
            assert_eq!((rtt_m.points[1].sent, rtt_m.points[1].lost), (600, 120));
            // A minute's exact figures are those of the batches it merged.
            let in_minute: Vec<&Point> = rtt
                .points
                .iter()
                .filter(|p| (T0 + MINUTE_MS..T0 + 2 * MINUTE_MS).contains(&p.at_ms))
                .collect();
            assert_eq!(in_minute.len(), 60);
            assert_eq!(rtt_m.points[1].min_ns, in_minute[0].min_ns);
            assert_eq!(rtt_m.points[1].max_ns, in_minute[59].max_ns);
            assert_eq!(rtt_m.total.sent, rtt.total.sent);
            assert_eq!(
                series(&minutes, PeerSeries::Backward).points[2].min_ns,
                Some((10_000_000 + 1200 * 1_000) / 2)
            );

            // The peer is not a target, and its name does not reach target history.
            assert!(store.targets().is_empty());
            let as_target = store
                .series(&peer, Hop::Destination, T0, T0 + HOUR_MS, Resolution::Raw)
                .unwrap();
            assert!(as_target.points.is_empty());
        }

        // After a restart the peer keeps its number and its hour rolls up.
        let store = Store::open_at(dir.path(), StoreConfig::default(), T0).unwrap();
        assert!(store.targets().is_empty());
        store
            .record_peer_batch(&peer, T0 + 3 * MINUTE_MS, &batch(180))
            .unwrap();
        store.flush_at(T0 + HOUR_MS + 2 * MINUTE_MS).unwrap();
        let raw = store
            .peer_history(&peer, T0, T0 + HOUR_MS, Resolution::Raw)
            .unwrap();
        assert_eq!(series(&raw, PeerSeries::Rtt).points.len(), 181);
        let hours = store
            .peer_history(&peer, T0, T0 + HOUR_MS, Resolution::Hour)
            .unwrap();
        let rtt_h = series(&hours, PeerSeries::Rtt);
        assert_eq!(rtt_h.points.len(), 1);
        assert_eq!((rtt_h.points[0].sent, rtt_h.points[0].lost), (1810, 362));
        assert_eq!(
            series(&hours, PeerSeries::Forward).points[0].min_ns,
            Some(5_000_000)
        );
        // An unknown peer has empty series; a reversed range is an error.
        let none = store
            .peer_history(&id("nobody"), T0, T0 + HOUR_MS, Resolution::Raw)
            .unwrap();
        assert!(none.series.iter().all(|s| s.points.is_empty()));
        assert!(store
            .peer_history(&peer, T0 + 1, T0, Resolution::Raw)
            .is_err());
    }

    #[test]
    fn a_target_and_a_peer_of_the_same_name_get_different_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let name = id("same");
        {
            let store = Store::open_at(dir.path(), StoreConfig::default(), T0).unwrap();
            store.record_peer_batch(&name, T0, &batch(0)).unwrap();
            store.flush_at(T0 + 1_000).unwrap();
        }
        let store = Store::open_at(dir.path(), StoreConfig::default(), T0).unwrap();
        let peer = store
            .peer_lookup(&name)
            .expect("the peer's number survives a restart");
        assert_eq!(store.lookup(&name), None, "the peer is not a target");
        let target = store.target_num(&name).unwrap();
        assert_ne!(peer, target);
    }
}
