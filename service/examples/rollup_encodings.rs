//! How many bytes a rollup costs on disk in each block encoding (issue 15:
//! disk with every window full). One 10-hop target's synthetic day (`lab`
//! and `wan`, the series of `store_layouts`), rolled into minutes and hours
//! as the store rolls them; every ten minutes' rollups encoded as one block
//! (a minute file's section) and a day's hours as one block, each
//! compressed as the files compress them (zstd level 9). Layouts: the first
//! minute files' rows, the same rows with histograms at power 6, and the shipped
//! `rollup_block` (columns, histograms at grouping power 6).
//!
//! ```text
//! cargo run --release -p hopwatch-service --example rollup_encodings
//! ```

use hopwatch::store::codec;
use hopwatch::store::keys::SeriesNum;
use hopwatch::store::rollup::{scratch_histogram, SeriesAcc, Stats, STORED_GROUPING_POWER};
use hopwatch::store::rollup_block::{self, Entry};

#[path = "common/noise.rs"]
mod noise;
use noise::Noise;

const HOPS: usize = 10;
const SERIES: usize = HOPS + 1;

#[derive(Clone, Copy)]
enum Profile {
    Lab,
    Wan,
}

fn rtt(profile: Profile, hop: usize, noise: &mut Noise) -> Option<u64> {
    let ttl = (hop + 1) as f64;
    match profile {
        Profile::Lab => Some(((10.0 * ttl + 2.0 * noise.gaussian()).max(1.0) * 1e3) as u64),
        Profile::Wan if noise.0.f64() < 0.01 => None,
        Profile::Wan => {
            let mut us = 2_000.0 * ttl + 300.0 * noise.gaussian();
            if noise.0.f64() < 0.01 {
                us += 5_000.0 * (0.5 + noise.0.f64());
            }
            Some((us.max(1.0) * 1e3) as u64 + noise.0.u64(0..1_000))
        }
    }
}

/// `[minute][series]` for one day.
fn minutes(profile: Profile) -> Vec<Vec<Stats>> {
    let mut noise = Noise(fastrand::Rng::with_seed(7));
    let mut scratch = scratch_histogram();
    (0..1440)
        .map(|_| {
            let mut acc: Vec<SeriesAcc> = (0..SERIES).map(|_| SeriesAcc::default()).collect();
            for _ in 0..60 {
                for (hop, series) in acc.iter_mut().enumerate().take(HOPS) {
                    let value = rtt(profile, hop, &mut noise);
                    series.push(value);
                }
            }
            let stats: Vec<Stats> = acc
                .iter()
                .take(HOPS)
                .map(|a| a.finish(&mut scratch))
                .collect();
            // The destination's series is the last hop's (it answers there).
            let mut all = stats.clone();
            all.push(stats[HOPS - 1].clone());
            all
        })
        .collect()
}

fn hours(minutes: &[Vec<Stats>]) -> Vec<Vec<Stats>> {
    minutes
        .chunks(60)
        .map(|hour| {
            (0..SERIES)
                .map(|s| {
                    let mut merged = Stats::default();
                    for m in hour {
                        merged.merge(&m[s]);
                    }
                    merged
                })
                .collect()
        })
        .collect()
}

/// Today's block: `series | slot | len | postcard` per entry, series-major.
fn rows(group: &[Vec<Stats>]) -> Vec<u8> {
    let mut block = Vec::new();
    for s in 0..SERIES {
        for (slot, entry) in group.iter().enumerate() {
            let value = codec::encode(&entry[s].to_value());
            block.push(s as u8);
            block.push(slot as u8);
            block.extend((value.len() as u16).to_be_bytes());
            block.extend(value);
        }
    }
    block
}

fn coarsened(group: &[Vec<Stats>]) -> Vec<Vec<Stats>> {
    group
        .iter()
        .map(|e| {
            e.iter()
                .map(|s| s.clone().coarsened(STORED_GROUPING_POWER))
                .collect()
        })
        .collect()
}

fn zstd_len(block: &[u8], level: i32) -> usize {
    zstd::stream::encode_all(block, level).unwrap().len()
}

/// Encodes a group of buckets (`[bucket][series]`) as one block.
type Layout<'a> = dyn Fn(&[Vec<Stats>]) -> Vec<u8> + 'a;

fn main() {
    for (name, profile) in [("lab", Profile::Lab), ("wan", Profile::Wan)] {
        let day = minutes(profile);
        let hour_stats = hours(&day);
        let entries = |g: &[Vec<Stats>]| -> Vec<Entry> {
            (0..SERIES)
                .flat_map(|s| {
                    g.iter().enumerate().map(move |(slot, e)| Entry {
                        series: SeriesNum(s as u8),
                        slot: slot as u8,
                        stats: e[s].clone(),
                    })
                })
                .collect()
        };
        let layouts: [(&str, &Layout<'_>); 3] = [
            ("rows of RollupV1, power 7 (hwM1)", &rows),
            ("rows, power 6", &|g| rows(&coarsened(g))),
            ("rollup_block, power 6 (hwM2)", &|g| {
                rollup_block::encode(&entries(g))
            }),
        ];
        for (label, encode) in layouts {
            // Sections are written every ten minutes; hour rollups a day at a time.
            let minute_bytes: usize = day.chunks(10).map(|g| zstd_len(&encode(g), 9)).sum();
            let hour_bytes = zstd_len(&encode(&hour_stats), 9);
            let per_minute = minute_bytes as f64 / (day.len() * SERIES) as f64;
            let per_hour = hour_bytes as f64 / (hour_stats.len() * SERIES) as f64;
            println!(
                "{name}  {label:34} minute rollup {per_minute:5.1} B  hour rollup {per_hour:5.1} B  \
                 30 d of minutes {:5.1} MiB  365 d of hours {:4.1} MiB",
                minute_bytes as f64 * 30.0 / 1_048_576.0,
                hour_bytes as f64 * 365.0 / 1_048_576.0,
            );
        }
        // Hour rollups as the flushes write them, a section per hour (each
        // target's block of that hour and its 16-byte index entry), against
        // the day's one block that compaction leaves (store::rollup_files).
        let block = |g: &[Vec<Stats>]| rollup_block::encode(&entries(g));
        let per_hour: usize = hour_stats
            .chunks(1)
            .map(|g| zstd_len(&block(g), 9) + 16)
            .sum();
        let compacted = zstd_len(&block(&hour_stats), 9) + 16;
        println!(
            "{name}  hour rollups of 365 d: a section per hour {:4.1} MiB, compacted to a block per day {:4.1} MiB ({:.2}x)",
            per_hour as f64 * 365.0 / 1_048_576.0,
            compacted as f64 * 365.0 / 1_048_576.0,
            per_hour as f64 / compacted as f64,
        );
    }
}
