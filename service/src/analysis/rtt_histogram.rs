//! A hop's since-start RTT distribution in a few hundred bytes: the
//! `histogram` crate's log-linear buckets, kept sparse (only the buckets a
//! sample fell in: a dozen on a steady path, a few dozen on a jittery one)
//! instead of a dense array of counters. The dense hdrhistogram this
//! replaces took 1.5 KiB per hop on a LAN and 4.5 KiB once a 10 ms RTT had
//! been seen, the largest part of a 10-hop target's memory
//! (docs/benchmarks.md, "The daemon's memory at 10 hops").
//!
//! The precision is that histogram's: values in 512 ns units, exact to the
//! unit up to 2^8 units (131 µs), then buckets 2^-7 (0.8 %) wide; a
//! percentile is its bucket's top, so never below the true sample and at
//! most 512 ns or 0.8 % above it. Values up to 2^27 units (68.7 s); larger
//! ones count in the top bucket.
//!
//! Percentiles are read through the crate's `SparseHistogram32Ref`, so the
//! ranking (nearest rank) and the bucket bounds are the crate's. Only the
//! value-to-bucket mapping is computed here, because the crate keeps it
//! private; a test checks it against the crate's own dense histogram.

use histogram::{Config, Quantile, SparseHistogram32Ref};

/// 512 ns: the kernel's timestamps are good to about a microsecond, and finer
/// buckets would cost memory for noise.
const UNIT_SHIFT: u32 = 9;
/// 2^-7 relative width above the linear range: within the 1 % the API promises.
const GROUPING_POWER: u8 = 7;
/// 2^27 units of 512 ns: 68.7 s, above the longest probe timeout (a minute).
const MAX_VALUE_POWER: u8 = 27;

/// The since-start RTT distribution of one hop.
#[derive(Debug, Clone, Default)]
pub struct RttHistogram {
    /// The buckets hit so far, in increasing order.
    index: Vec<u32>,
    /// Each bucket's count, never 0 (saturating: 2^32 probes of one bucket
    /// take 136 years at one round per second).
    count: Vec<u32>,
}

impl RttHistogram {
    pub fn record(&mut self, rtt_ns: u64) {
        let bucket = bucket_of(rtt_ns >> UNIT_SHIFT);
        match self.index.binary_search(&bucket) {
            Ok(i) => self.count[i] = self.count[i].saturating_add(1),
            Err(i) => {
                // One bucket at a time: a hop uses few, and keeps them.
                self.index.reserve_exact(1);
                self.count.reserve_exact(1);
                self.index.insert(i, bucket);
                self.count.insert(i, 1);
            }
        }
    }

    /// Nearest-rank percentiles (each `q` in 0..=1) in nanoseconds, each the
    /// top of its bucket; `None` before the first sample.
    pub fn percentiles<const N: usize>(&self, quantiles: [f64; N]) -> Option<[u64; N]> {
        let view = SparseHistogram32Ref::from_parts(config(), &self.index, &self.count)
            .expect("record keeps the indices sorted, unique, in range and the counts non-zero");
        let result = view
            .quantiles(&quantiles)
            .expect("the quantiles are constants in 0..=1")?;
        Some(quantiles.map(|q| {
            let q = Quantile::new(q).expect("checked by quantiles above");
            let top_unit = result.get(&q).map_or(0, |bucket| bucket.end());
            ((top_unit + 1) << UNIT_SHIFT) - 1
        }))
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        (self.index.capacity() + self.count.capacity()) * std::mem::size_of::<u32>()
    }
}

fn config() -> Config {
    Config::new(GROUPING_POWER, MAX_VALUE_POWER).expect("constant histogram parameters are valid")
}

/// The crate's bucket for `value` (in units): values below 2^(p+1) have a
/// bucket each; above, each power of two is split into 2^p buckets. Values
/// past the top land in the top bucket.
fn bucket_of(value: u64) -> u32 {
    let top = (1u64 << MAX_VALUE_POWER) - 1;
    let value = value.min(top);
    let p = u32::from(GROUPING_POWER);
    let index = if value < 1 << (p + 1) {
        value
    } else {
        let shift = 63 - value.leading_zeros() - p;
        (u64::from(shift) << p) + (value >> shift)
    };
    index as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use histogram::Histogram32;

    /// Values spread over every magnitude up to past the top.
    fn values() -> Vec<u64> {
        let mut out: Vec<u64> = (0..600).collect();
        let mut v = 600u64;
        while v < 1 << 29 {
            out.extend([v - 1, v, v + 1]);
            v = v * 21 / 20 + 1;
        }
        out.push(u64::MAX >> UNIT_SHIFT);
        out
    }

    #[test]
    fn buckets_are_the_crates_own() {
        let config = config();
        for value in values() {
            let mut dense = Histogram32::with_config(&config);
            dense
                .increment(value.min((1 << MAX_VALUE_POWER) - 1))
                .unwrap();
            let expected = dense.as_slice().iter().position(|c| *c > 0).unwrap();
            assert_eq!(bucket_of(value) as usize, expected, "value {value}");
        }
    }

    #[test]
    fn percentiles_are_exact_ranks_rounded_up_to_their_bucket() {
        let mut h = RttHistogram::default();
        assert_eq!(h.percentiles([0.5]), None);
        // 1..=1000 µs plus one 2 s outlier, shuffled by a stride.
        let mut samples: Vec<u64> = (1..=1000u64)
            .map(|i| ((i * 617) % 1000 + 1) * 1_000)
            .collect();
        samples.push(2_000_000_000);
        for s in &samples {
            h.record(*s);
        }
        samples.sort_unstable();
        let n = samples.len();
        let [p50, p95, p99, p100] = h.percentiles([0.5, 0.95, 0.99, 1.0]).unwrap();
        for (q, got) in [(0.5, p50), (0.95, p95), (0.99, p99), (1.0, p100)] {
            let exact = samples[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
            assert!(got >= exact, "p{q}: {got} below {exact}");
            let slack = (exact / 128).max(511);
            assert!(
                got <= exact + slack,
                "p{q}: {got} more than a bucket above {exact}"
            );
        }
        // 131 one-unit buckets up to 131 µs, then 128 per doubling.
        assert!(
            h.index.len() <= 131 + 3 * 128 + 1,
            "{} buckets",
            h.index.len()
        );
        // Steady RTTs use few buckets: that is the point.
        let mut steady = RttHistogram::default();
        for i in 0..10_000u64 {
            steady.record(20_000_000 + (i * 7919) % 600_000);
        }
        assert!(steady.index.len() <= 6, "{} buckets", steady.index.len());
        assert!(steady.heap_bytes() <= 48);
    }

    #[test]
    fn sub_millisecond_rtts_keep_512_ns_resolution() {
        let mut h = RttHistogram::default();
        for _ in 0..10 {
            h.record(22_000);
        }
        let [p50] = h.percentiles([0.5]).unwrap();
        assert!((22_000..22_000 + 512).contains(&p50), "{p50}");
    }

    #[test]
    fn counts_saturate_instead_of_wrapping() {
        let mut h = RttHistogram {
            index: vec![bucket_of(1_000 >> UNIT_SHIFT)],
            count: vec![u32::MAX],
        };
        h.record(1_000);
        assert_eq!(h.count, [u32::MAX]);
    }
}
