//! Rollup arithmetic: the mergeable statistics one rollup bucket keeps (sent,
//! lost, min, max, exact sums for mean and standard deviation, and a sparse
//! log-linear histogram for percentiles), how they are built from samples,
//! merged (hour from minutes, long ranges from hours) and turned into points.
//!
//! The histogram is `histogram::SparseHistogram32` (iopsystems' `histogram`
//! crate: HDR-style log-linear buckets, a sparse form made for storage, exact
//! merges). Buckets are built at grouping power 7 (relative error 2^-7,
//! 0.8 %) and stored at power 6 (2^-6, 1.6 %; a percentile is reported at
//! its bucket's middle, which halves the worst case); values are
//! nanoseconds up to 2^36 (68.7 s), larger ones are counted in the top
//! bucket. Why 6: the histograms are most of a rollup's bytes, and at power 7
//! a 10-hop target's default windows did not fit issue 15's 25 MiB
//! (docs/benchmarks.md, "Rollups in columns"). Rollups of different powers
//! merge at the coarser one.

use histogram::{Config, Histogram32, SparseHistogram32};

use crate::store::codec::RollupV1;
use crate::store::query::Point;

pub const HIST_GROUPING_POWER: u8 = 7;
/// The grouping power of the histograms the store writes (see the module's header).
pub const STORED_GROUPING_POWER: u8 = 6;
pub const HIST_MAX_VALUE_POWER: u8 = 36;
const HIST_MAX_VALUE: u64 = (1 << HIST_MAX_VALUE_POWER) - 1;

/// The configuration buckets are built with, and that rollups an older
/// hopwatch stored (as `RollupV1`, which does not name it) were written with.
pub fn hist_config() -> Config {
    hist_config_of(HIST_GROUPING_POWER).expect("the store's histogram constants are valid")
}

/// The configuration of grouping power `power` with the store's value range.
pub fn hist_config_of(power: u8) -> Result<Config, histogram::Error> {
    Config::new(power, HIST_MAX_VALUE_POWER)
}

/// The statistics of one rollup bucket (or of any merge of buckets).
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub sent: u64,
    pub lost: u64,
    /// Meaningless while no probe was answered (`received() == 0`).
    pub min_ns: u64,
    pub max_ns: u64,
    pub sum_ns: u128,
    pub sum_sq_ns2: u128,
    pub hist: SparseHistogram32,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            sent: 0,
            lost: 0,
            min_ns: 0,
            max_ns: 0,
            sum_ns: 0,
            sum_sq_ns2: 0,
            hist: SparseHistogram32::with_config(&hist_config()),
        }
    }
}

impl Stats {
    pub fn received(&self) -> u64 {
        self.sent - self.lost
    }

    /// Adds `other` into `self`, as if both buckets' samples had been one.
    pub fn merge(&mut self, other: &Stats) {
        if other.received() > 0 {
            if self.received() == 0 {
                self.min_ns = other.min_ns;
                self.max_ns = other.max_ns;
            } else {
                self.min_ns = self.min_ns.min(other.min_ns);
                self.max_ns = self.max_ns.max(other.max_ns);
            }
        }
        self.sent += other.sent;
        self.lost += other.lost;
        self.sum_ns += other.sum_ns;
        self.sum_sq_ns2 = self.sum_sq_ns2.saturating_add(other.sum_sq_ns2);
        // Counts are u32 per bucket: 4 billion samples in one bucket take a
        // century at one probe per second. Should it ever overflow, the
        // histogram keeps the samples merged so far rather than wrapping.
        let (mine, theirs) = (self.grouping_power(), other.grouping_power());
        let sum = if mine == theirs {
            self.hist.checked_add(&other.hist)
        } else if mine < theirs {
            other
                .hist
                .downsample(mine)
                .and_then(|coarse| self.hist.checked_add(&coarse))
        } else {
            self.hist
                .downsample(theirs)
                .and_then(|coarse| coarse.checked_add(&other.hist))
        };
        if let Ok(sum) = sum {
            self.hist = sum;
        }
    }

    /// The grouping power of the histogram.
    pub fn grouping_power(&self) -> u8 {
        self.hist.config().grouping_power()
    }

    /// The same statistics with the histogram at `power` or coarser.
    pub fn coarsened(mut self, power: u8) -> Stats {
        if self.grouping_power() > power {
            if let Ok(coarse) = self.hist.downsample(power) {
                self.hist = coarse;
            }
        }
        self
    }

    /// The point for a bucket starting at `at_ms`.
    pub fn to_point(&self, at_ms: u64) -> Point {
        let n = self.received();
        if n == 0 {
            return Point::no_replies(at_ms, self.sent, self.lost);
        }
        let mean = self.sum_ns as f64 / n as f64;
        let quantiles = self.hist.quantiles(&[0.5, 0.95, 0.99]).ok().flatten();
        let pick = |q: f64| -> Option<u64> {
            let result = quantiles.as_ref()?;
            let bucket = result.get(&histogram::Quantile::new(q).ok()?)?;
            // The bucket's middle halves the worst-case error of either end;
            // clamping keeps p50 ≤ p95 ≤ p99 inside the exact [min, max].
            let mid = bucket.start() + (bucket.end() - bucket.start()) / 2;
            Some(mid.clamp(self.min_ns, self.max_ns))
        };
        Point {
            at_ms,
            sent: self.sent,
            lost: self.lost,
            min_ns: Some(self.min_ns),
            avg_ns: Some(mean),
            max_ns: Some(self.max_ns),
            stddev_ns: Some(population_stddev(n, self.sum_ns, self.sum_sq_ns2)),
            p50_ns: pick(0.5),
            p95_ns: pick(0.95),
            p99_ns: pick(0.99),
        }
    }

    pub fn to_value(&self) -> RollupV1 {
        let mut deltas = Vec::with_capacity(self.hist.len());
        let mut previous = 0u32;
        for &index in self.hist.index() {
            deltas.push(index - previous);
            previous = index;
        }
        RollupV1 {
            sent: self.sent,
            lost: self.lost,
            min_ns: self.min_ns,
            max_ns: self.max_ns,
            sum_ns: self.sum_ns,
            sum_sq_ns2: self.sum_sq_ns2,
            hist_index_deltas: deltas,
            hist_counts: self.hist.count().to_vec(),
        }
    }

    pub fn from_value(value: RollupV1) -> Result<Stats, histogram::Error> {
        let mut index = Vec::with_capacity(value.hist_index_deltas.len());
        let mut current = 0u32;
        for delta in value.hist_index_deltas {
            current = current
                .checked_add(delta)
                .ok_or(histogram::Error::Overflow)?;
            index.push(current);
        }
        let hist = SparseHistogram32::from_parts(hist_config(), index, value.hist_counts)?;
        Ok(Stats {
            sent: value.sent,
            lost: value.lost.min(value.sent),
            min_ns: value.min_ns,
            max_ns: value.max_ns,
            sum_ns: value.sum_ns,
            sum_sq_ns2: value.sum_sq_ns2,
            hist,
        })
    }
}

/// Population standard deviation from exact sums: `sqrt((nΣx² − (Σx)²)) / n`,
/// in integers while they fit so there is no cancellation, in floats beyond.
fn population_stddev(n: u64, sum: u128, sum_sq: u128) -> f64 {
    let n128 = n as u128;
    let exact = n128
        .checked_mul(sum_sq)
        .zip(sum.checked_mul(sum))
        .map(|(a, b)| a.saturating_sub(b));
    match exact {
        Some(numerator) => (numerator as f64).sqrt() / n as f64,
        None => {
            let mean = sum as f64 / n as f64;
            (sum_sq as f64 / n as f64 - mean * mean).max(0.0).sqrt()
        }
    }
}

/// Accumulates one series' samples for one bucket; `finish` builds the stats.
#[derive(Debug, Default)]
pub struct SeriesAcc {
    sent: u64,
    lost: u64,
    values: Vec<u64>,
}

impl SeriesAcc {
    /// Probes pushed so far, lost ones included.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// One probe: its RTT, or `None` when it was lost.
    pub fn push(&mut self, rtt_ns: Option<u64>) {
        self.sent += 1;
        match rtt_ns {
            Some(v) => self.values.push(v),
            None => self.lost += 1,
        }
    }

    /// The bucket's statistics. `scratch` is a dense histogram reused between
    /// buckets (it is ~15 KiB; the stored form keeps only non-zero buckets).
    pub fn finish(&self, scratch: &mut Histogram32) -> Stats {
        scratch.reset();
        let mut stats = Stats {
            sent: self.sent,
            lost: self.lost,
            min_ns: self.values.iter().copied().min().unwrap_or(0),
            max_ns: self.values.iter().copied().max().unwrap_or(0),
            sum_ns: 0,
            sum_sq_ns2: 0,
            hist: SparseHistogram32::with_config(&hist_config()),
        };
        for &v in &self.values {
            stats.sum_ns += v as u128;
            stats.sum_sq_ns2 = stats.sum_sq_ns2.saturating_add((v as u128) * (v as u128));
            // Cannot fail: the value is clamped into the configured range.
            let _ = scratch.increment(v.min(HIST_MAX_VALUE));
        }
        stats.hist = SparseHistogram32::from(&*scratch);
        stats
    }
}

/// A dense histogram of the store's configuration, for [`SeriesAcc::finish`].
pub fn scratch_histogram() -> Histogram32 {
    Histogram32::with_config(&hist_config())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec::{decode, encode};

    /// Nearest-rank percentile, the definition the histogram uses.
    fn exact_percentile(sorted: &[u64], q: f64) -> u64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    fn samples(seed: u64, n: usize) -> Vec<Option<u64>> {
        // A deterministic spread from 200 µs to ~80 ms with 10 % loss.
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (!x.is_multiple_of(10)).then_some(200_000 + (x >> 8) % 80_000_000)
            })
            .collect()
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1.0)
    }

    fn check_against_raw(point: &Point, raw: &[Option<u64>]) {
        let mut values: Vec<u64> = raw.iter().flatten().copied().collect();
        values.sort_unstable();
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        assert_eq!(point.sent, raw.len() as u64);
        assert_eq!(
            point.lost,
            raw.iter().filter(|v| v.is_none()).count() as u64
        );
        assert_eq!(point.min_ns, values.first().copied());
        assert_eq!(point.max_ns, values.last().copied());
        assert!(
            close(point.avg_ns.unwrap(), mean, 1e-12),
            "{point:?} mean {mean}"
        );
        assert!(
            close(point.stddev_ns.unwrap(), var.sqrt(), 1e-9),
            "{point:?} sd {}",
            var.sqrt()
        );
        let tolerance = 2f64.powi(-(HIST_GROUPING_POWER as i32));
        for (q, got) in [
            (0.5, point.p50_ns),
            (0.95, point.p95_ns),
            (0.99, point.p99_ns),
        ] {
            let want = exact_percentile(&values, q) as f64;
            let got = got.unwrap() as f64;
            assert!(close(got, want, tolerance), "p{q}: got {got}, exact {want}");
        }
    }

    #[test]
    fn a_bucket_matches_statistics_computed_from_raw_samples() {
        let raw = samples(7, 60);
        let mut acc = SeriesAcc::default();
        raw.iter().for_each(|&s| acc.push(s));
        let stats = acc.finish(&mut scratch_histogram());
        check_against_raw(&stats.to_point(0), &raw);
    }

    #[test]
    fn an_hour_merged_from_minutes_matches_the_hour_computed_from_raw() {
        let raw = samples(99, 3600);
        let mut scratch = scratch_histogram();
        let mut hour = Stats::default();
        for minute in raw.chunks(60) {
            let mut acc = SeriesAcc::default();
            minute.iter().for_each(|&s| acc.push(s));
            let stored = encode(&acc.finish(&mut scratch).to_value());
            hour.merge(&Stats::from_value(decode(&stored).unwrap()).unwrap());
        }
        check_against_raw(&hour.to_point(0), &raw);
        // Merging is exact: it equals the hour built in one go.
        let mut acc = SeriesAcc::default();
        raw.iter().for_each(|&s| acc.push(s));
        assert_eq!(hour, acc.finish(&mut scratch));
    }

    #[test]
    fn all_lost_and_empty_buckets_have_no_rtt_figures() {
        let mut acc = SeriesAcc::default();
        acc.push(None);
        acc.push(None);
        let point = acc.finish(&mut scratch_histogram()).to_point(5);
        assert_eq!((point.sent, point.lost), (2, 2));
        assert_eq!(
            (point.min_ns, point.avg_ns, point.p99_ns),
            (None, None, None)
        );
        // Merging an empty bucket into a full one leaves min and max alone.
        let mut full = SeriesAcc::default();
        full.push(Some(3_000));
        let mut merged = full.finish(&mut scratch_histogram());
        merged.merge(&Stats::default());
        merged.merge(&acc.finish(&mut scratch_histogram()));
        let p = merged.to_point(0);
        assert_eq!(
            (p.sent, p.lost, p.min_ns, p.max_ns),
            (3, 2, Some(3_000), Some(3_000))
        );
        assert_eq!(p.p50_ns, Some(3_000));
    }

    #[test]
    fn huge_rtts_are_kept_in_sums_and_clamped_in_the_histogram() {
        let mut acc = SeriesAcc::default();
        acc.push(Some(u64::MAX / 4));
        acc.push(Some(1_000));
        let p = acc.finish(&mut scratch_histogram()).to_point(0);
        assert_eq!(p.max_ns, Some(u64::MAX / 4));
        assert!(p.stddev_ns.unwrap().is_finite());
    }

    #[test]
    fn a_typical_minute_stays_small_on_disk() {
        // 60 probes, 10 ms ± 1 ms: the stored bucket, histogram included.
        let mut acc = SeriesAcc::default();
        for i in 0..60u64 {
            acc.push(Some(10_000_000 + (i * 7919 % 2_000_000)));
        }
        let bytes = encode(&acc.finish(&mut scratch_histogram()).to_value());
        assert!(
            bytes.len() < 110,
            "a minute rollup is {} bytes",
            bytes.len()
        );
    }
}
