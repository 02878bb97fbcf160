//! Stored history for the web layer: one hop's or every hop's series over a
//! range, and per-hop totals for the export.
//!
//! Every hop of a range up to [`ALL_HOPS_RAW_UP_TO`] comes from one pass over
//! the raw rounds (not one pass per hop); longer ranges come from each hop's
//! 1-minute or 1-hour rollups. One hop alone follows the store's automatic
//! resolution (raw up to 6 h).

use std::net::IpAddr;

use hopwatch_web::dto::{HopRef, PointDto, SeriesDto};
use hopwatch_web::{ReadError, TimeRange};

use crate::model::{BranchIndex, HopSample, TargetId};
use crate::monitor::TargetView;
use crate::probe::Rtt;
use crate::store::{Hop, Point, Resolution, Series, Store, StoreError, HOUR_MS};

/// Longest range for which "all hops" is read from raw rounds.
pub const ALL_HOPS_RAW_UP_TO: u64 = HOUR_MS;

pub fn point(p: &Point) -> PointDto {
    PointDto {
        at_ms: p.at_ms,
        sent: p.sent,
        lost: p.lost,
        min_ns: p.min_ns,
        avg_ns: p.avg_ns,
        max_ns: p.max_ns,
        stddev_ns: p.stddev_ns,
        p50_ns: p.p50_ns,
        p95_ns: p.p95_ns,
        p99_ns: p.p99_ns,
    }
}

fn hop_ref(hop: Hop) -> HopRef {
    match hop {
        Hop::Destination => HopRef::Destination,
        Hop::Ttl(ttl) => HopRef::Ttl(ttl),
    }
}

pub fn store_hop(hop: HopRef) -> Hop {
    match hop {
        HopRef::Destination => Hop::Destination,
        HopRef::Ttl(ttl) => Hop::Ttl(ttl),
    }
}

fn series_dto(s: Series, responder: Option<IpAddr>) -> SeriesDto {
    SeriesDto {
        hop: hop_ref(s.hop),
        responder,
        resolution: s.resolution.as_str().to_owned(),
        interval_ms: s.interval_ms,
        points: s.points.iter().map(point).collect(),
        total: point(&s.total),
    }
}

pub fn read_error(what: &'static str, err: StoreError) -> ReadError {
    match err {
        err @ StoreError::Unavailable { .. } => ReadError::Unavailable {
            source: Box::new(err),
        },
        err => ReadError::Failed {
            what,
            source: Box::new(err),
        },
    }
}

/// The TTLs (with their responders) an ECMP branch's all-hops history
/// lists: the branch's hops as the live analysis has them, else (after a
/// restart, before the first discovery) the target's own, without
/// responders: a branch has the target's hop count.
pub fn branch_ttls(view: &TargetView, branch: BranchIndex) -> Vec<(u8, Option<IpAddr>)> {
    let live = view
        .analysis
        .branches
        .iter()
        .flat_map(|b| &b.branches)
        .find(|b| b.index == branch);
    match live {
        Some(b) => b.hops.iter().map(|h| (h.ttl, h.responder)).collect(),
        None => view.analysis.hops.iter().map(|h| (h.ttl, None)).collect(),
    }
}

/// One hop's series at the store's automatic resolution.
pub fn one(
    store: &Store,
    id: &TargetId,
    hop: HopRef,
    range: TimeRange,
    responder: Option<IpAddr>,
) -> Result<SeriesDto, ReadError> {
    let s = store
        .series(
            id,
            store_hop(hop),
            range.from_ms,
            range.to_ms,
            Resolution::Auto,
        )
        .map_err(|e| read_error("reading a series", e))?;
    Ok(series_dto(s, responder))
}

/// Every TTL in `ttls` (with its current responder), then the destination.
pub fn all(
    store: &Store,
    id: &TargetId,
    ttls: &[(u8, Option<IpAddr>)],
    destination: Option<IpAddr>,
    range: TimeRange,
) -> Result<Vec<SeriesDto>, ReadError> {
    if range.span_ms() > ALL_HOPS_RAW_UP_TO {
        let resolution = if range.span_ms() <= Resolution::MINUTE_UP_TO_MS {
            Resolution::Minute
        } else {
            Resolution::Hour
        };
        let mut out = Vec::with_capacity(ttls.len() + 1);
        for (hop, responder) in ttls
            .iter()
            .map(|(ttl, r)| (Hop::Ttl(*ttl), *r))
            .chain([(Hop::Destination, destination)])
        {
            let s = store
                .series(id, hop, range.from_ms, range.to_ms, resolution)
                .map_err(|e| read_error("reading rollups", e))?;
            out.push(series_dto(s, responder));
        }
        return Ok(out);
    }
    let rounds = store
        .rounds(id, range.from_ms, range.to_ms)
        .map_err(|e| read_error("reading rounds", e))?;
    let mut out: Vec<SeriesDto> = ttls
        .iter()
        .map(|(ttl, responder)| SeriesDto {
            hop: HopRef::Ttl(*ttl),
            responder: *responder,
            resolution: "raw".into(),
            interval_ms: 0,
            points: Vec::with_capacity(rounds.len()),
            total: PointDto::default(),
        })
        .collect();
    let mut dest = SeriesDto {
        hop: HopRef::Destination,
        responder: destination,
        resolution: "raw".into(),
        interval_ms: 0,
        points: Vec::with_capacity(rounds.len()),
        total: PointDto::default(),
    };
    for round in &rounds {
        for (series, (ttl, _)) in out.iter_mut().zip(ttls) {
            // The same rule as the store's own raw series: the probe with this
            // TTL, in rounds that reached that far.
            let sample = round.path_samples().iter().find(|h| h.ttl.get() == *ttl);
            if let Some(sample) = sample {
                series.points.push(PointDto::single(
                    round.started_at_ms,
                    sample.rtt().map(Rtt::as_nanos),
                ));
            }
        }
        dest.points.push(PointDto::single(
            round.started_at_ms,
            round
                .destination()
                .and_then(HopSample::rtt)
                .map(Rtt::as_nanos),
        ));
    }
    out.push(dest);
    for s in &mut out {
        let all: Vec<&PointDto> = s.points.iter().collect();
        s.total = hopwatch_web::downsample::merge(range.from_ms, &all);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The UI's long presets (90 d, 1 y) are answered from the 1-hour
    /// rollups, for one hop and for all hops; 30 d and 7 d from what they were.
    #[test]
    fn long_presets_are_served_from_hour_rollups() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let id = TargetId::new("t").unwrap();
        let now = 1_800_000_000_000u64;
        for (name, span) in hopwatch_web::query::PRESETS {
            let range = TimeRange::last(span, now);
            let one = one(&store, &id, HopRef::Destination, range, None).unwrap();
            let all = all(&store, &id, &[(1, None)], None, range).unwrap();
            let (expect_one, expect_all) = match name {
                "15m" | "1h" => ("raw", "raw"),
                "6h" => ("raw", "1m"),
                "24h" | "7d" => ("1m", "1m"),
                "30d" | "90d" | "1y" => ("1h", "1h"),
                other => panic!("a preset without an expected resolution: {other}"),
            };
            assert_eq!(one.resolution, expect_one, "{name}, one hop");
            for s in &all {
                assert_eq!(s.resolution, expect_all, "{name}, all hops");
            }
        }
        // The hour rollups are kept long enough for the longest preset.
        let year = hopwatch_web::query::PRESETS.last().unwrap().1;
        assert!(StoreConfig::default().hour_retention >= year);
    }
    use crate::model::{HopSample, RoundRecord};
    use crate::probe::TimestampSource;
    use crate::probe::Ttl;
    use crate::store::StoreConfig;
    use std::net::Ipv4Addr;

    #[test]
    fn all_hops_from_raw_rounds_match_the_stores_own_series() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let id = TargetId::new("t").unwrap();
        let start = 1_700_000_000_000u64;
        for i in 0..50u64 {
            let hops = (1..=3u8)
                .map(|ttl| {
                    HopSample::answered_or_lost(
                        ttl,
                        IpAddr::V4(Ipv4Addr::new(198, 18, ttl, 2)),
                        (i % 7 != u64::from(ttl)).then_some(u64::from(ttl) * 1_000_000 + i),
                        ttl == 3,
                    )
                })
                .collect();
            store
                .record_round(&RoundRecord {
                    target: id.clone(),
                    seq: i,
                    started_at_ms: start + i * 1000,
                    hops,
                    destination_ttl: (i % 7 != 3).then(|| Ttl::new(3).unwrap()),
                    source: TimestampSource::Ebpf,
                })
                .unwrap();
        }
        store.flush_at(start + 60_000).unwrap();
        let range = TimeRange {
            from_ms: start,
            to_ms: start + 60_000,
        };
        let ttls = [(1, None), (2, None), (3, None)];
        let all = all(&store, &id, &ttls, None, range).unwrap();
        assert_eq!(all.len(), 4);
        for (s, hop) in all
            .iter()
            .zip([Hop::Ttl(1), Hop::Ttl(2), Hop::Ttl(3), Hop::Destination])
        {
            let own = store
                .series(&id, hop, range.from_ms, range.to_ms, Resolution::Raw)
                .unwrap();
            let own_points: Vec<PointDto> = own.points.iter().map(point).collect();
            assert_eq!(s.points, own_points, "{hop}");
            assert_eq!(s.total.sent, own.total.sent, "{hop}");
            assert_eq!(s.total.lost, own.total.lost, "{hop}");
            assert_eq!(s.total.min_ns, own.total.min_ns, "{hop}");
            assert_eq!(s.total.max_ns, own.total.max_ns, "{hop}");
        }
    }
}
