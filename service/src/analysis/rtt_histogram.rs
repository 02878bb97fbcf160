//! A hop's since-start RTT distribution in a fixed 216 bytes: the
//! `histogram` crate's log-linear buckets, kept sparse (only the buckets a
//! sample fell in: a dozen on a steady path, a few dozen on a jittery one)
//! instead of a dense array of counters, in room of its own inside the hop
//! (`heapless`) so that it never allocates. The dense hdrhistogram this
//! replaced took 1.5 KiB per hop on a LAN and 4.5 KiB once a 10 ms RTT had
//! been seen (docs/benchmarks.md, "The daemon's memory at 10 hops").
//!
//! The precision is that histogram's: values in 512 ns units, exact to the
//! unit up to 2^8 units (131 µs), then buckets 2^-7 (0.8 %) wide; a
//! percentile is its bucket's top, so never below the true sample and at
//! most 512 ns or 0.8 % above it. Values up to 2^27 units (68.7 s); larger
//! ones count in the top bucket.
//!
//! Only while the hop's RTTs fit [`MAX_BUCKETS`] buckets, though. Sparse
//! buckets that grow as needed kept growing for as long as the daemon ran:
//! a busy box's RTT tail, or a LAN's jitter at 0.8 %, hits new buckets for
//! hours, 8 bytes each, and at a thousand targets that was the daemon's
//! whole memory trend (docs/benchmarks.md, issue 15 step 11). Now, when a
//! sample needs a bucket and all are taken, the buckets are merged in pairs
//! (the crate's `downsample`: one less grouping power, each bucket twice as
//! wide) until some are free. At grouping power 0 the whole range is 28
//! buckets, so merging always frees some. Such a hop's percentiles are then
//! at most 1.6 %, 3.1 %, … above the true sample, still never below: a LAN
//! hop with ±100 µs of jitter ends at 3.1 %, a WAN hop with ±2 ms at 1.6 %.
//!
//! Percentiles are read through the crate's `SparseHistogram32Ref`, so the
//! ranking (nearest rank) and the bucket bounds are the crate's. Only the
//! value-to-bucket mapping is computed here, because the crate keeps it
//! private; a test checks it against the crate's own dense histogram.

use histogram::{Config, Quantile, SparseHistogram32, SparseHistogram32Ref};

/// 512 ns: the kernel's timestamps are good to about a microsecond, and finer
/// buckets would cost memory for noise.
const UNIT_SHIFT: u32 = 9;
/// 2^-7 relative width above the linear range: within the 1 % the API promises.
const GROUPING_POWER: u8 = 7;
/// 2^27 units of 512 ns: 68.7 s, above the longest probe timeout (a minute).
const MAX_VALUE_POWER: u8 = 27;
/// The most buckets a hop keeps, 6 bytes each: a steady WAN hop uses a
/// dozen at full precision.
const MAX_BUCKETS: usize = 32;

/// The since-start RTT distribution of one hop.
#[derive(Debug, Clone)]
pub struct RttHistogram {
    /// The buckets hit so far, in increasing order. The top bucket's index
    /// is 2,687, so 16 bits hold any.
    index: heapless::Vec<u16, MAX_BUCKETS>,
    /// Each bucket's count, never 0 (saturating: 2^32 probes of one bucket
    /// take 136 years at one round per second).
    count: heapless::Vec<u32, MAX_BUCKETS>,
    /// [`GROUPING_POWER`] until the buckets outgrew [`MAX_BUCKETS`], one less
    /// for each time they did.
    grouping_power: u8,
}

impl Default for RttHistogram {
    fn default() -> RttHistogram {
        RttHistogram {
            index: heapless::Vec::new(),
            count: heapless::Vec::new(),
            grouping_power: GROUPING_POWER,
        }
    }
}

impl RttHistogram {
    pub fn record(&mut self, rtt_ns: u64) {
        let bucket = bucket_of(rtt_ns >> UNIT_SHIFT, self.grouping_power);
        match self.index.binary_search(&bucket) {
            Ok(i) => self.count[i] = self.count[i].saturating_add(1),
            Err(_) if self.index.is_full() => {
                self.merge_buckets();
                self.record(rtt_ns);
            }
            Err(i) => {
                self.index
                    .insert(i, bucket)
                    .expect("not full: checked above");
                self.count.insert(i, 1).expect("as long as the index");
            }
        }
    }

    /// Halves the resolution, merging neighbouring buckets until one is free.
    /// Rare: a hop merges at most seven times in its life.
    fn merge_buckets(&mut self) {
        let mut histogram = SparseHistogram32::from_parts(
            config(self.grouping_power),
            self.index.iter().copied().map(u32::from).collect(),
            self.count.to_vec(),
        )
        .expect("record keeps the indices sorted, unique, in range and the counts non-zero");
        while histogram.len() >= MAX_BUCKETS {
            let coarser = histogram.config().grouping_power() - 1;
            histogram = histogram
                .downsample(coarser)
                .expect("at grouping power 0 every value fits in 28 buckets: never below 0");
        }
        self.grouping_power = histogram.config().grouping_power();
        // Merged counts may wrap where saturating would not: 2^32 probes in
        // two buckets take 68 years at one round per second.
        let (_, index, count) = histogram.into_parts();
        self.index = index
            .into_iter()
            .map(|i| u16::try_from(i).expect("a coarser bucket's index is smaller"))
            .collect();
        self.count = heapless::Vec::from_slice(&count).expect("fewer than before");
    }

    /// Nearest-rank percentiles (each `q` in 0..=1) in nanoseconds, each the
    /// top of its bucket; `None` before the first sample.
    pub fn percentiles<const N: usize>(&self, quantiles: [f64; N]) -> Option<[u64; N]> {
        let index: heapless::Vec<u32, MAX_BUCKETS> =
            self.index.iter().copied().map(u32::from).collect();
        let view =
            SparseHistogram32Ref::from_parts(config(self.grouping_power), &index, &self.count)
                .expect(
                    "record keeps the indices sorted, unique, in range and the counts non-zero",
                );
        let result = view
            .quantiles(&quantiles)
            .expect("the quantiles are constants in 0..=1")?;
        Some(quantiles.map(|q| {
            let q = Quantile::new(q).expect("checked by quantiles above");
            let top_unit = result.get(&q).map_or(0, |bucket| bucket.end());
            ((top_unit + 1) << UNIT_SHIFT) - 1
        }))
    }

    /// The grouping power p in use: buckets above the linear range are
    /// 2^-p of their value wide, 7 (0.8 %) until the hop's RTTs spread over
    /// more than [`MAX_BUCKETS`] of them. For the hop's tests.
    #[cfg(test)]
    pub fn grouping_power(&self) -> u8 {
        self.grouping_power
    }
}

fn config(grouping_power: u8) -> Config {
    Config::new(grouping_power, MAX_VALUE_POWER)
        .expect("grouping powers 0..=7 below the constant top are valid")
}

/// The crate's bucket for `value` (in units) at `grouping_power` p: values
/// below 2^(p+1) have a bucket each; above, each power of two is split into
/// 2^p buckets. Values past the top land in the top bucket.
fn bucket_of(value: u64, grouping_power: u8) -> u16 {
    let top = (1u64 << MAX_VALUE_POWER) - 1;
    let value = value.min(top);
    let p = u32::from(grouping_power);
    let index = if value < 1 << (p + 1) {
        value
    } else {
        let shift = 63 - value.leading_zeros() - p;
        (u64::from(shift) << p) + (value >> shift)
    };
    u16::try_from(index).expect("the top bucket's index is 2,687")
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
        for grouping_power in 0..=GROUPING_POWER {
            let config = config(grouping_power);
            for value in values() {
                let mut dense = Histogram32::with_config(&config);
                dense
                    .increment(value.min((1 << MAX_VALUE_POWER) - 1))
                    .unwrap();
                let expected = dense.as_slice().iter().position(|c| *c > 0).unwrap();
                assert_eq!(
                    bucket_of(value, grouping_power) as usize,
                    expected,
                    "value {value} at grouping power {grouping_power}"
                );
            }
        }
    }

    /// Checks nearest-rank percentiles of `samples` against `h`: never below
    /// the exact rank, at most one bucket of `h`'s grouping power above it.
    fn assert_percentiles(h: &RttHistogram, mut samples: Vec<u64>) {
        samples.sort_unstable();
        let n = samples.len();
        let [p50, p95, p99, p100] = h.percentiles([0.5, 0.95, 0.99, 1.0]).unwrap();
        for (q, got) in [(0.5, p50), (0.95, p95), (0.99, p99), (1.0, p100)] {
            let exact = samples[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
            assert!(got >= exact, "p{q}: {got} below {exact}");
            let slack = (exact >> h.grouping_power).max(511);
            assert!(
                got <= exact + slack,
                "p{q}: {got} more than a bucket (grouping power {}) above {exact}",
                h.grouping_power
            );
        }
    }

    /// `n` values spread evenly over `from..from + span`, shuffled by a stride.
    fn spread(from: u64, span: u64, n: u64) -> Vec<u64> {
        (0..n).map(|i| from + (i * 617) % n * span / n).collect()
    }

    #[test]
    fn percentiles_are_exact_ranks_rounded_up_to_their_bucket() {
        let mut h = RttHistogram::default();
        assert_eq!(h.percentiles([0.5]), None);
        // A WAN hop: 20 ms with 2 ms of jitter, and one 2 s outlier.
        let mut samples = spread(19_000_000, 2_000_000, 1_000);
        samples.push(2_000_000_000);
        for s in &samples {
            h.record(*s);
        }
        assert_eq!(
            h.grouping_power,
            GROUPING_POWER,
            "{} buckets",
            h.index.len()
        );
        assert_percentiles(&h, samples);
        // Steady RTTs use few buckets: that is the point.
        let mut steady = RttHistogram::default();
        for i in 0..10_000u64 {
            steady.record(20_000_000 + (i * 7919) % 600_000);
        }
        assert!(steady.index.len() <= 6, "{} buckets", steady.index.len());
        // The room is the hop's own: no heap, whatever it records.
        assert!(std::mem::size_of::<RttHistogram>() <= 6 * MAX_BUCKETS + 24);
    }

    #[test]
    fn a_wide_spread_merges_buckets_instead_of_growing() {
        // Every microsecond from 1 to 1000 and a 2 s outlier: 370 buckets
        // at full precision.
        let mut h = RttHistogram::default();
        let mut samples = spread(1_000, 999_000, 1_000);
        samples.push(2_000_000_000);
        for s in &samples {
            h.record(*s);
            assert!(h.index.len() <= MAX_BUCKETS);
        }
        assert!(h.grouping_power < GROUPING_POWER);
        assert_percentiles(&h, samples.clone());
        // No sample is lost in the merges.
        let total: u64 = h.count.iter().map(|c| u64::from(*c)).sum();
        assert_eq!(total, samples.len() as u64);

        // A LAN hop, 0.5 ms ± 100 µs: 200 buckets at 0.8 %, 25 at 3.1 %.
        let mut lan = RttHistogram::default();
        let samples = spread(400_000, 200_000, 5_000);
        for s in &samples {
            lan.record(*s);
        }
        assert_eq!(lan.grouping_power, 5);
        assert_percentiles(&lan, samples);

        // Every value the histogram can hold still fits.
        let mut all = RttHistogram::default();
        for v in values() {
            all.record(v << UNIT_SHIFT);
        }
        assert!(all.index.len() <= MAX_BUCKETS);
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
            index: heapless::Vec::from_slice(&[bucket_of(1_000 >> UNIT_SHIFT, GROUPING_POWER)])
                .unwrap(),
            count: heapless::Vec::from_slice(&[u32::MAX]).unwrap(),
            grouping_power: GROUPING_POWER,
        };
        h.record(1_000);
        assert_eq!(h.count, [u32::MAX]);
    }
}
