//! Many rollups as one value, column by column (`codec::RollupColumnsV1`,
//! format byte `VALUE_FORMAT_COLUMNS`): what a minute file's block holds for
//! one target; and one rollup alone, as a minute waits in memory for its
//! section and as sled keeps an hour rollup.
//!
//! Entries are `(series, slot, stats)`, `slot` being the bucket's place in
//! its file's span. Their histograms are stored at
//! [`STORED_GROUPING_POWER`] (coarsened if finer). Columns of the same field
//! compress several times better than rows of mixed fields, and a minute's
//! min, max and sums differ from their neighbours' in few bits
//! (docs/benchmarks.md, "Rollups in columns").

use histogram::SparseHistogram32;

use super::codec::{self, DecodeError, RollupColumnsV1, RollupV1, VALUE_FORMAT_COLUMNS};
use super::keys::SeriesNum;
use super::rollup::{hist_config_of, Stats, STORED_GROUPING_POWER};

/// Why a block does not decode: it is then damage, counted and skipped.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("column {column} has {found} values for {entries} entries")]
    Ragged {
        column: &'static str,
        found: usize,
        entries: usize,
    },
    #[error("bad histogram: {0}")]
    Histogram(#[from] histogram::Error),
}

/// One rollup of a block.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub series: SeriesNum,
    pub slot: u8,
    pub stats: Stats,
}

/// Encodes `entries` (best in series then slot order: neighbours predict
/// each other), histograms at the stored power.
pub fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut c = RollupColumnsV1 {
        grouping_power: STORED_GROUPING_POWER,
        ..RollupColumnsV1::default()
    };
    let (mut prev_min, mut prev_max, mut prev_first) = (0u64, 0u64, 0u32);
    for entry in entries {
        let stats = entry.stats.clone().coarsened(STORED_GROUPING_POWER);
        let received = u128::from(stats.received());
        let min = u128::from(stats.min_ns);
        c.series.push(entry.series.0);
        c.slots.push(entry.slot);
        c.sent.push(stats.sent);
        c.lost.push(stats.lost);
        c.min_steps.push(stats.min_ns.wrapping_sub(prev_min) as i64);
        c.max_steps.push(stats.max_ns.wrapping_sub(prev_max) as i64);
        c.sums_above_min
            .push(stats.sum_ns.wrapping_sub(received.wrapping_mul(min)));
        c.squares_above_min.push(
            stats
                .sum_sq_ns2
                .wrapping_sub(min.wrapping_mul(2).wrapping_mul(stats.sum_ns))
                .wrapping_add(received.wrapping_mul(min).wrapping_mul(min)),
        );
        (prev_min, prev_max) = (stats.min_ns, stats.max_ns);
        let index = stats.hist.index();
        c.buckets.push(index.len() as u32);
        if let Some(&first) = index.first() {
            c.first_index_steps
                .push(first.wrapping_sub(prev_first) as i32);
            prev_first = first;
            c.index_gaps
                .extend(index.windows(2).map(|pair| pair[1] - pair[0]));
        } else {
            c.first_index_steps.push(0);
        }
        c.counts.extend_from_slice(stats.hist.count());
    }
    codec::encode_as(VALUE_FORMAT_COLUMNS, &c)
}

/// One rollup as a value of its own (the form [`decode_one`] reads).
#[cfg(test)]
pub fn encode_one(stats: Stats) -> Vec<u8> {
    encode(&[Entry {
        series: SeriesNum(0),
        slot: 0,
        stats,
    }])
}

/// A value of one rollup: the columns of a single entry, or a `RollupV1`
/// (format 1, histogram at grouping power 7) that an older hopwatch wrote.
pub fn decode_one(bytes: &[u8]) -> Result<Stats, BlockError> {
    if bytes.first() == Some(&VALUE_FORMAT_COLUMNS) {
        let mut entries = decode(bytes)?;
        return match (entries.pop(), entries.is_empty()) {
            (Some(entry), true) => Ok(entry.stats),
            (one, _) => Err(BlockError::Ragged {
                column: "series",
                found: entries.len() + usize::from(one.is_some()),
                entries: 1,
            }),
        };
    }
    let row: RollupV1 = codec::decode(bytes)?;
    Ok(Stats::from_value(row)?)
}

/// Decodes a value written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Vec<Entry>, BlockError> {
    decode_matching(bytes, |_, _| true)
}

/// Decodes the entries of a value written by [`encode`] for which
/// `wanted(series, slot)` holds: a read of one series builds no histogram
/// of the others. The whole value is still checked.
pub fn decode_matching(
    bytes: &[u8],
    wanted: impl Fn(SeriesNum, u8) -> bool,
) -> Result<Vec<Entry>, BlockError> {
    let c: RollupColumnsV1 = codec::decode_as(VALUE_FORMAT_COLUMNS, bytes)?;
    let n = c.series.len();
    for (column, found) in [
        ("slots", c.slots.len()),
        ("sent", c.sent.len()),
        ("lost", c.lost.len()),
        ("min_steps", c.min_steps.len()),
        ("max_steps", c.max_steps.len()),
        ("sums_above_min", c.sums_above_min.len()),
        ("squares_above_min", c.squares_above_min.len()),
        ("buckets", c.buckets.len()),
        ("first_index_steps", c.first_index_steps.len()),
    ] {
        if found != n {
            return Err(BlockError::Ragged {
                column,
                found,
                entries: n,
            });
        }
    }
    let total_buckets: usize = c.buckets.iter().map(|&b| b as usize).sum();
    if c.counts.len() != total_buckets {
        return Err(BlockError::Ragged {
            column: "counts",
            found: c.counts.len(),
            entries: total_buckets,
        });
    }
    let gaps_expected: usize = c
        .buckets
        .iter()
        .map(|&b| (b as usize).saturating_sub(1))
        .sum();
    if c.index_gaps.len() != gaps_expected {
        return Err(BlockError::Ragged {
            column: "index_gaps",
            found: c.index_gaps.len(),
            entries: gaps_expected,
        });
    }
    let config = hist_config_of(c.grouping_power)?;
    let (mut prev_min, mut prev_max, mut prev_first) = (0u64, 0u64, 0u32);
    let (mut gaps, mut counts) = (c.index_gaps.iter(), c.counts.iter());
    let mut entries = Vec::with_capacity(n);
    for i in 0..n {
        let min_ns = prev_min.wrapping_add(c.min_steps[i] as u64);
        let max_ns = prev_max.wrapping_add(c.max_steps[i] as u64);
        (prev_min, prev_max) = (min_ns, max_ns);
        let buckets = c.buckets[i] as usize;
        let first = prev_first.wrapping_add(c.first_index_steps[i] as u32);
        if buckets > 0 {
            prev_first = first;
        }
        let (series, slot) = (SeriesNum(c.series[i]), c.slots[i]);
        if !wanted(series, slot) {
            // Skip its buckets: the lengths were checked above.
            gaps.by_ref().take(buckets.saturating_sub(1)).for_each(drop);
            counts.by_ref().take(buckets).for_each(drop);
            continue;
        }
        let (sent, lost) = (c.sent[i], c.lost[i].min(c.sent[i]));
        let received = u128::from(sent - lost);
        let min = u128::from(min_ns);
        let sum_ns = c.sums_above_min[i].wrapping_add(received.wrapping_mul(min));
        let sum_sq_ns2 = c.squares_above_min[i]
            .wrapping_add(min.wrapping_mul(2).wrapping_mul(sum_ns))
            .wrapping_sub(received.wrapping_mul(min).wrapping_mul(min));
        let mut index = Vec::with_capacity(buckets);
        if buckets > 0 {
            let mut at = first;
            index.push(at);
            for gap in gaps.by_ref().take(buckets - 1) {
                at = at.checked_add(*gap).ok_or(histogram::Error::Overflow)?;
                index.push(at);
            }
        }
        let count: Vec<u32> = counts.by_ref().take(buckets).copied().collect();
        let hist = SparseHistogram32::from_parts(config, index, count)?;
        entries.push(Entry {
            series,
            slot,
            stats: Stats {
                sent,
                lost,
                min_ns,
                max_ns,
                sum_ns,
                sum_sq_ns2,
                hist,
            },
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rollup::{scratch_histogram, SeriesAcc};

    fn stats(seed: u64, n: u64, lost_every: u64) -> Stats {
        let mut acc = SeriesAcc::default();
        let mut x = seed | 1;
        for i in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            acc.push((i % lost_every != 0).then_some(20_000_000 + x % 3_000_000));
        }
        acc.finish(&mut scratch_histogram())
    }

    #[test]
    fn entries_come_back_exactly_with_the_histogram_at_the_stored_power() {
        let mut entries: Vec<Entry> = (0..40)
            .map(|i| Entry {
                series: SeriesNum((i / 10) as u8),
                slot: (i % 10) as u8,
                stats: stats(i, 60, 7),
            })
            .collect();
        // An empty bucket, an all-lost one and extreme values round-trip too.
        entries.push(Entry {
            series: SeriesNum(200),
            slot: 59,
            stats: Stats::default(),
        });
        let mut all_lost = SeriesAcc::default();
        all_lost.push(None);
        entries.push(Entry {
            series: SeriesNum(201),
            slot: 0,
            stats: all_lost.finish(&mut scratch_histogram()),
        });
        let mut huge = SeriesAcc::default();
        huge.push(Some(u64::MAX / 3));
        huge.push(Some(1));
        entries.push(Entry {
            series: SeriesNum(202),
            slot: 1,
            stats: huge.finish(&mut scratch_histogram()),
        });
        let block = encode(&entries);
        let decoded = decode(&block).unwrap();
        assert_eq!(decoded.len(), entries.len());
        // A read of some entries finds the same values as a read of all.
        let some = decode_matching(&block, |series, slot| series.0 == 2 || slot == 1).unwrap();
        let want: Vec<&Entry> = decoded
            .iter()
            .filter(|e| e.series.0 == 2 || e.slot == 1)
            .collect();
        assert_eq!(some.len(), 14);
        assert!(some.iter().zip(want).all(|(a, b)| a == b));
        for (got, want) in decoded.iter().zip(&entries) {
            let want_stats = want.stats.clone().coarsened(STORED_GROUPING_POWER);
            assert_eq!((got.series, got.slot), (want.series, want.slot));
            assert_eq!(got.stats, want_stats);
            assert_eq!(got.stats.grouping_power(), STORED_GROUPING_POWER);
        }
    }

    #[test]
    fn a_block_whose_columns_disagree_is_an_error_not_a_guess() {
        let entries = vec![Entry {
            series: SeriesNum(1),
            slot: 0,
            stats: stats(3, 60, 5),
        }];
        let reencode = |c: &RollupColumnsV1| codec::encode_as(VALUE_FORMAT_COLUMNS, c);
        let mut columns: RollupColumnsV1 =
            codec::decode_as(VALUE_FORMAT_COLUMNS, &encode(&entries)).unwrap();
        columns.counts.pop();
        assert!(matches!(
            decode(&reencode(&columns)),
            Err(BlockError::Ragged {
                column: "counts",
                ..
            })
        ));
        let mut columns: RollupColumnsV1 =
            codec::decode_as(VALUE_FORMAT_COLUMNS, &encode(&entries)).unwrap();
        columns.sent.push(1);
        assert!(matches!(
            decode(&reencode(&columns)),
            Err(BlockError::Ragged { column: "sent", .. })
        ));
        assert!(decode(b"\x02garbage").is_err());
        assert!(decode_one(&encode(&[entries[0].clone(), entries[0].clone()])).is_err());
    }

    #[test]
    fn one_rollup_reads_back_in_either_format() {
        let fine = stats(5, 60, 4);
        let coarse = fine.clone().coarsened(STORED_GROUPING_POWER);
        assert_eq!(decode_one(&encode_one(fine.clone())).unwrap(), coarse);
        // What an older hopwatch left in sled: a RollupV1 at power 7.
        let old = codec::encode(&fine.to_value());
        assert_eq!(decode_one(&old).unwrap(), fine);
    }

    #[test]
    fn a_coarser_and_a_finer_rollup_merge_at_the_coarser_power() {
        let (a, b) = (stats(1, 60, 9), stats(2, 60, 9));
        let mut fine = a.clone();
        fine.merge(&b);
        let mut mixed = a.clone().coarsened(STORED_GROUPING_POWER);
        mixed.merge(&b);
        assert_eq!(mixed, fine.clone().coarsened(STORED_GROUPING_POWER));
        let mut other_way = a;
        other_way.merge(&b.coarsened(STORED_GROUPING_POWER));
        assert_eq!(other_way, fine.coarsened(STORED_GROUPING_POWER));
    }
}
