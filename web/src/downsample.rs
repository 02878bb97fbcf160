//! Fitting stored series to a screen: merging consecutive points into at most
//! N buckets for the latency graph, and into a shared column grid for the
//! all-hops heatmap.
//!
//! Raw points are single probes, so a bucket of them gets exact statistics
//! (min, max, mean, population standard deviation, nearest-rank percentiles).
//! Rollup points are already summaries: min, max, mean and standard deviation
//! merge exactly; percentiles are approximated by the mean of the members'
//! percentiles weighted by their answered probes.

use serde::Serialize;

use crate::dto::{HopRef, PointDto, SeriesDto};
use crate::query::TimeRange;

/// A series fitted to the screen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FittedSeries {
    pub hop: HopRef,
    pub responder: Option<std::net::IpAddr>,
    /// The stored resolution the points came from.
    pub resolution: String,
    pub interval_ms: u64,
    /// Width of the merged buckets; 0 when the points were returned as stored.
    pub bucket_ms: u64,
    pub from_ms: u64,
    pub to_ms: u64,
    pub points: Vec<PointDto>,
    pub total: PointDto,
}

/// Nearest-rank percentile of sorted samples.
fn nearest_rank(sorted: &[u64], q: f64) -> Option<u64> {
    let n = sorted.len();
    (n > 0).then(|| sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1])
}

/// Merges points into one stamped `at_ms`.
pub fn merge(at_ms: u64, points: &[&PointDto]) -> PointDto {
    let sent = points.iter().map(|p| p.sent).sum();
    let lost = points.iter().map(|p| p.lost).sum();
    let mut out = PointDto {
        at_ms,
        sent,
        lost,
        ..PointDto::default()
    };
    let answered: Vec<&&PointDto> = points.iter().filter(|p| p.received() > 0).collect();
    if answered.is_empty() {
        return out;
    }
    if points.iter().all(|p| p.sent <= 1) {
        // Single probes: exact statistics from the samples themselves.
        let mut rtts: Vec<u64> = answered.iter().filter_map(|p| p.min_ns).collect();
        rtts.sort_unstable();
        let n = rtts.len() as f64;
        let mean = rtts.iter().map(|v| *v as f64).sum::<f64>() / n;
        let var = rtts.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n;
        out.min_ns = rtts.first().copied();
        out.max_ns = rtts.last().copied();
        out.avg_ns = Some(mean);
        out.stddev_ns = Some(var.sqrt());
        out.p50_ns = nearest_rank(&rtts, 0.50);
        out.p95_ns = nearest_rank(&rtts, 0.95);
        out.p99_ns = nearest_rank(&rtts, 0.99);
        return out;
    }
    let n: f64 = answered.iter().map(|p| p.received() as f64).sum();
    let mean = answered
        .iter()
        .map(|p| p.received() as f64 * p.avg_ns.unwrap_or(0.0))
        .sum::<f64>()
        / n;
    // Pooled variance: within-group variance plus the spread of group means.
    let var = answered
        .iter()
        .map(|p| {
            let k = p.received() as f64;
            let sd = p.stddev_ns.unwrap_or(0.0);
            let m = p.avg_ns.unwrap_or(mean);
            k * (sd * sd + (m - mean).powi(2))
        })
        .sum::<f64>()
        / n;
    let weighted = |get: fn(&PointDto) -> Option<u64>| -> Option<u64> {
        let (mut sum, mut weight) = (0.0, 0.0);
        for p in &answered {
            if let Some(v) = get(p) {
                sum += v as f64 * p.received() as f64;
                weight += p.received() as f64;
            }
        }
        (weight > 0.0).then(|| (sum / weight).round() as u64)
    };
    out.min_ns = answered.iter().filter_map(|p| p.min_ns).min();
    out.max_ns = answered.iter().filter_map(|p| p.max_ns).max();
    out.avg_ns = Some(mean);
    out.stddev_ns = Some(var.sqrt());
    let clamp =
        |v: Option<u64>| v.map(|v| v.clamp(out.min_ns.unwrap_or(v), out.max_ns.unwrap_or(v)));
    out.p50_ns = clamp(weighted(|p| p.p50_ns));
    out.p95_ns = clamp(weighted(|p| p.p95_ns));
    out.p99_ns = clamp(weighted(|p| p.p99_ns));
    out
}

/// The bucket width that fits `range` in `max` buckets.
fn bucket_width(range: TimeRange, max: usize) -> u64 {
    range.span_ms().div_ceil(max.max(1) as u64).max(1)
}

/// Groups points into buckets of `width` starting at `range.from_ms`; buckets
/// without points are left out.
fn group(points: &[PointDto], range: TimeRange, width: u64) -> Vec<(u64, Vec<&PointDto>)> {
    let mut groups: Vec<(u64, Vec<&PointDto>)> = Vec::new();
    for p in points {
        let index = p.at_ms.saturating_sub(range.from_ms) / width;
        let start = range.from_ms + index * width;
        match groups.last_mut() {
            Some((at, members)) if *at == start => members.push(p),
            _ => groups.push((start, vec![p])),
        }
    }
    groups
}

/// At most `max_points` points over `range`: the points as they are when
/// they fit, else merged into equal buckets; with the bucket width (0 when
/// nothing was merged).
pub fn fit_points(
    points: Vec<PointDto>,
    range: TimeRange,
    max_points: usize,
) -> (Vec<PointDto>, u64) {
    if points.len() <= max_points {
        (points, 0)
    } else {
        let width = bucket_width(range, max_points);
        let merged = group(&points, range, width)
            .into_iter()
            .map(|(at, members)| merge(at, &members))
            .collect();
        (merged, width)
    }
}

/// Fits a series to at most `max_points` points.
pub fn fit(series: SeriesDto, range: TimeRange, max_points: usize) -> FittedSeries {
    let (points, bucket_ms) = fit_points(series.points, range, max_points);
    FittedSeries {
        hop: series.hop,
        responder: series.responder,
        resolution: series.resolution,
        interval_ms: series.interval_ms,
        bucket_ms,
        from_ms: range.from_ms,
        to_ms: range.to_ms,
        points,
        total: series.total,
    }
}

/// One row of the heatmap: a hop's median latency and loss per column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeatmapRow {
    pub hop: HopRef,
    pub responder: Option<std::net::IpAddr>,
    /// Median RTT per column; `null` where nothing was answered.
    pub p50_ns: Vec<Option<u64>>,
    /// Lost share per column (0 to 1, four decimals); `null` where nothing was sent.
    pub loss: Vec<Option<f64>>,
}

/// Every hop on one time grid.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Heatmap {
    pub from_ms: u64,
    pub to_ms: u64,
    pub columns: usize,
    pub bucket_ms: u64,
    /// The stored resolution the cells came from.
    pub resolution: String,
    pub rows: Vec<HeatmapRow>,
}

/// Lays every series on a grid of `columns` equal buckets over `range`.
pub fn heatmap(series: Vec<SeriesDto>, range: TimeRange, columns: usize) -> Heatmap {
    let width = bucket_width(range, columns);
    let columns = range.span_ms().div_ceil(width).max(1) as usize;
    let resolution = series
        .first()
        .map_or_else(|| "raw".to_owned(), |s| s.resolution.clone());
    let rows = series
        .into_iter()
        .map(|s| {
            let mut p50 = vec![None; columns];
            let mut loss = vec![None; columns];
            for (at, members) in group(&s.points, range, width) {
                let i = ((at - range.from_ms) / width) as usize;
                if i >= columns {
                    continue;
                }
                let merged = merge(at, &members);
                p50[i] = merged.p50_ns;
                loss[i] = (merged.sent > 0).then(|| {
                    (10_000.0 * merged.lost as f64 / merged.sent as f64).round() / 10_000.0
                });
            }
            HeatmapRow {
                hop: s.hop,
                responder: s.responder,
                p50_ns: p50,
                loss,
            }
        })
        .collect();
    Heatmap {
        from_ms: range.from_ms,
        to_ms: range.to_ms,
        columns,
        bucket_ms: width,
        resolution,
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(at_ms: u64, rtt: Option<u64>) -> PointDto {
        PointDto::single(at_ms, rtt)
    }

    fn series(points: Vec<PointDto>) -> SeriesDto {
        SeriesDto {
            hop: HopRef::Destination,
            responder: None,
            resolution: "raw".into(),
            interval_ms: 0,
            total: PointDto::default(),
            points,
        }
    }

    #[test]
    fn raw_probes_merge_into_exact_statistics() {
        let points: Vec<PointDto> = [10, 20, 30, 40]
            .iter()
            .map(|v| raw(0, Some(*v)))
            .chain([raw(0, None)])
            .collect();
        let refs: Vec<&PointDto> = points.iter().collect();
        let m = merge(0, &refs);
        assert_eq!((m.sent, m.lost), (5, 1));
        assert_eq!((m.min_ns, m.max_ns), (Some(10), Some(40)));
        assert_eq!(m.avg_ns, Some(25.0));
        assert_eq!(m.p50_ns, Some(20));
        assert_eq!(m.p95_ns, Some(40));
        assert!((m.stddev_ns.unwrap() - 125f64.sqrt()).abs() < 1e-9);
    }

    #[test]
    fn rollups_merge_with_pooled_variance() {
        let a = PointDto {
            at_ms: 0,
            sent: 2,
            lost: 0,
            min_ns: Some(1),
            avg_ns: Some(2.0),
            max_ns: Some(3),
            stddev_ns: Some(1.0),
            p50_ns: Some(2),
            p95_ns: Some(3),
            p99_ns: Some(3),
        };
        let b = PointDto {
            min_ns: Some(5),
            avg_ns: Some(6.0),
            max_ns: Some(7),
            p50_ns: Some(6),
            p95_ns: Some(7),
            p99_ns: Some(7),
            ..a.clone()
        };
        let m = merge(0, &[&a, &b]);
        // Samples 1,3,5,7: mean 4, population variance 5.
        assert_eq!(m.avg_ns, Some(4.0));
        assert!((m.stddev_ns.unwrap() - 5f64.sqrt()).abs() < 1e-9);
        assert_eq!((m.min_ns, m.max_ns, m.p50_ns), (Some(1), Some(7), Some(4)));
    }

    #[test]
    fn fitting_caps_the_point_count_and_keeps_every_probe() {
        let points: Vec<PointDto> = (0..1000)
            .map(|i| raw(i * 1000, (i % 10 != 0).then_some(1_000 + i)))
            .collect();
        let range = TimeRange {
            from_ms: 0,
            to_ms: 1_000_000,
        };
        let fitted = fit(series(points.clone()), range, 100);
        assert_eq!(fitted.points.len(), 100);
        assert_eq!(fitted.bucket_ms, 10_000);
        assert_eq!(fitted.points.iter().map(|p| p.sent).sum::<u64>(), 1000);
        assert_eq!(fitted.points.iter().map(|p| p.lost).sum::<u64>(), 100);
        let small = fit(series(points[..50].to_vec()), range, 100);
        assert_eq!((small.points.len(), small.bucket_ms), (50, 0));
    }

    #[test]
    fn the_heatmap_puts_every_hop_on_one_grid() {
        let range = TimeRange {
            from_ms: 0,
            to_ms: 100,
        };
        let a = series(vec![raw(5, Some(10)), raw(55, None)]);
        let mut b = series(vec![raw(60, Some(30))]);
        b.hop = HopRef::Ttl(1);
        let map = heatmap(vec![b, a], range, 2);
        assert_eq!((map.columns, map.bucket_ms), (2, 50));
        assert_eq!(map.rows[0].p50_ns, vec![None, Some(30)]);
        assert_eq!(map.rows[1].p50_ns, vec![Some(10), None]);
        assert_eq!(map.rows[1].loss, vec![Some(0.0), Some(1.0)]);
    }
}
