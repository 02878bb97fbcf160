//! Which on-disk layout can carry the history within issue 15's write
//! budget? Measures the bytes a process sends to the disk (`/proc/self/io`
//! `write_bytes`, which counts every newly dirtied page, so small appends
//! followed by a sync cost a whole page each) for one synthetic hour of
//! 10-hop targets at one round per second, after a warm-up, in four layouts:
//!
//! - `store`: the history store as the daemon runs it (raw rounds as a
//!   chunk per target and minute in hourly files, minute and hour rollups in
//!   sled), flushed on its default grid, once a minute;
//! - `sled-rounds`: the raw half of the store before it (format 1): one sled
//!   value per round (postcard), flushed every 5 s; with `sled-rollups` it
//!   is what that store wrote;
//! - `sled-chunks`: one compressed chunk (`store::chunk`) per target and
//!   10 minutes, inserted into a sled tree and flushed when the 10 minutes
//!   end (raw data only; alone it would lose up to 10 minutes to a crash);
//! - `segments`: the same chunks appended to one file per 10 minutes (an
//!   index at its end), synced once;
//! - `journal`: what bounds the loss of the open 10 minutes: every 5 s, each
//!   target's new rounds as uncompressed chunk columns into one zstd stream
//!   per 10 minutes, flushed to the file (a `kill -9` loses nothing written),
//!   synced every `--sync` seconds (what a power cut can lose);
//! - `minute-chunks`: no journal: one chunk per target and minute, appended
//!   to the hour's file and synced each minute through the store's
//!   `store::segment` (record headers and CRCs included; a crash loses the
//!   open minute);
//! - `sled-rollups`: minute rollups alone, as today's store keeps them (a
//!   sled value per target, series and minute), flushed each minute;
//! - `packed-rollups`: the same rollups, each minute every target's series in
//!   one zstd block appended to the day's file and synced.
//!
//! Two series: `lab` (~10 µs per hop ± 2 µs, no loss) and `wan` (hop k at
//! 2·k ms, 300 µs Gaussian jitter, 1 % spikes of ~5 ms, 1 % loss).
//!
//! ```text
//! cargo run --release -p hopwatch-service --example store_layouts -- \
//!     /var/tmp/hopwatch-layouts --targets 100
//! ```
//! The directory must be on the disk being measured (not a tmpfs).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use hopwatch::model::{HopAnswer, HopSample, RoundRecord, TargetId};
use hopwatch::probe::{Rtt, TimestampSource, Ttl};
use hopwatch::store::keys::{self, TargetNum};
use hopwatch::store::rollup::{scratch_histogram, SeriesAcc};
use hopwatch::store::rollup_files::{Grain, RollupFiles};
use hopwatch::store::segment::{Pending, Segments as SegmentFiles};
use hopwatch::store::{chunk, codec, Hop, Resolution, Store, StoreConfig, HOUR_MS};

#[path = "common/noise.rs"]
mod noise;
use noise::Noise;

const HOPS: u8 = 10;
/// Rounds in a chunk: 10 minutes at one round per second (docs/benchmarks.md,
/// "History chunks": longer chunks gain little).
const CHUNK_ROUNDS: u64 = 600;
/// Seconds between the journal's flushes.
const FLUSH_SECS: u64 = 5;

#[derive(Parser)]
struct Args {
    /// An empty (or missing) directory on the disk to measure.
    dir: PathBuf,
    #[arg(long, default_value_t = 100)]
    targets: u32,
    /// Synthetic hours measured, after 10 minutes of warm-up.
    #[arg(long, default_value_t = 1)]
    hours: u64,
    /// Seconds between the journal's syncs.
    #[arg(long, default_value_t = 30)]
    sync: u64,
    /// Measure only these layouts (comma-separated; default all).
    #[arg(long, value_delimiter = ',')]
    layouts: Vec<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Profile {
    Lab,
    Wan,
}

/// One round of target `num` (its own responders, RTTs drawn from `noise`).
fn round(
    id: &TargetId,
    num: u32,
    seq: u64,
    at_ms: u64,
    profile: Profile,
    noise: &mut Noise,
) -> RoundRecord {
    let hops: Vec<HopSample> = (1..=HOPS)
        .map(|ttl| {
            let rtt_ns = match profile {
                Profile::Lab => {
                    Some(((10.0 * f64::from(ttl) + 2.0 * noise.gaussian()).max(1.0) * 1e3) as u64)
                }
                Profile::Wan if noise.0.f64() < 0.01 => None,
                Profile::Wan => {
                    let mut us = 2_000.0 * f64::from(ttl) + 300.0 * noise.gaussian();
                    if noise.0.f64() < 0.01 {
                        us += 5_000.0 * (0.5 + noise.0.f64());
                    }
                    Some((us.max(1.0) * 1e3) as u64 + noise.0.u64(0..1_000))
                }
            };
            let ttl_ = Ttl::new(ttl).expect("TTLs start at 1");
            match rtt_ns {
                None => HopSample::lost(ttl_),
                Some(ns) => HopSample::answered(
                    ttl_,
                    HopAnswer {
                        responder: IpAddr::V4(Ipv4Addr::new(10, (num >> 8) as u8, num as u8, ttl)),
                        rtt: Rtt::from_nanos(ns),
                        is_destination: ttl == HOPS,
                        reply_ttl: None,
                        quote: None,
                    },
                ),
            }
        })
        .collect();
    let destination_ttl = hops.iter().find(|h| h.reached()).map(|h| h.ttl);
    RoundRecord {
        target: id.clone(),
        seq,
        started_at_ms: at_ms,
        hops,
        destination_ttl,
        source: TimestampSource::Ebpf,
    }
}

/// A way of writing the history, driven one synthetic second at a time.
trait Layout {
    /// The synthetic clock reached `second`: every target's round of the
    /// second before is in `open`, with the rounds the layout has not taken
    /// yet (it takes them by clearing them).
    fn tick(&mut self, second: u64, at_ms: u64, open: &mut Open) -> anyhow::Result<()>;
}

/// The history store as the daemon runs it: every round recorded, a flush
/// on its default grid (every `flush_interval`, just after each minute
/// closes).
struct TodaysStore(Store);

impl Layout for TodaysStore {
    fn tick(&mut self, second: u64, at_ms: u64, open: &mut Open) -> anyhow::Result<()> {
        for rounds in &mut open.0 {
            for round in rounds.drain(..) {
                self.0.record_round(&round)?;
            }
        }
        let config = self.0.config();
        let interval = config.flush_interval.as_secs().max(1);
        let offset = config.close_delay.as_secs() + 1;
        if second % interval == offset % interval {
            self.0.flush_at(at_ms)?;
        }
        Ok(())
    }
}

/// Each target's rounds not yet taken by the layout, by target number.
#[derive(Default)]
struct Open(Vec<Vec<RoundRecord>>);

impl Open {
    fn push(&mut self, num: u32, round: RoundRecord) {
        let num = num as usize;
        if self.0.len() <= num {
            self.0.resize_with(num + 1, Vec::new);
        }
        self.0[num].push(round);
    }
}

/// One sled value per round, as the store kept raw rounds before the files.
struct SledRounds {
    db: sled::Db,
    tree: sled::Tree,
}

impl Layout for SledRounds {
    fn tick(&mut self, second: u64, _: u64, open: &mut Open) -> anyhow::Result<()> {
        if !second.is_multiple_of(FLUSH_SECS) {
            return Ok(());
        }
        for (num, rounds) in open.0.iter_mut().enumerate() {
            for round in rounds.drain(..) {
                let key = keys::raw_key(TargetNum(num as u32), round.started_at_ms);
                self.tree
                    .insert(key, codec::encode(&codec::RawRoundV1::from_round(&round)))?;
            }
        }
        self.db.flush()?;
        Ok(())
    }
}

struct SledChunks {
    db: sled::Db,
    tree: sled::Tree,
}

impl Layout for SledChunks {
    fn tick(&mut self, second: u64, _: u64, open: &mut Open) -> anyhow::Result<()> {
        if !second.is_multiple_of(CHUNK_ROUNDS) {
            return Ok(());
        }
        for (num, rounds) in open.0.iter_mut().enumerate() {
            let Some(first) = rounds.first() else {
                continue;
            };
            let mut key = (num as u32).to_be_bytes().to_vec();
            key.extend(first.started_at_ms.to_be_bytes());
            self.tree.insert(key, chunk::encode(rounds))?;
            rounds.clear();
        }
        self.db.flush()?;
        Ok(())
    }
}

struct Segments {
    dir: PathBuf,
}

impl Layout for Segments {
    fn tick(&mut self, second: u64, _: u64, open: &mut Open) -> anyhow::Result<()> {
        if !second.is_multiple_of(CHUNK_ROUNDS) {
            return Ok(());
        }
        let mut file = File::create(self.dir.join(format!("seg-{second:08}")))?;
        let mut index = Vec::new();
        let mut at = 0u64;
        for (num, rounds) in open.0.iter_mut().enumerate() {
            if rounds.is_empty() {
                continue;
            }
            let value = chunk::encode(rounds);
            file.write_all(&value)?;
            index.extend((num as u32).to_be_bytes());
            index.extend(at.to_be_bytes());
            index.extend((value.len() as u32).to_be_bytes());
            at += value.len() as u64;
            rounds.clear();
        }
        file.write_all(&index)?;
        file.write_all(&(index.len() as u32).to_be_bytes())?;
        file.sync_all()?;
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

/// One chunk per target and minute, appended to the hour's file and synced,
/// through the store's own raw-history files (`store::segment`): no journal,
/// a crash loses at most the open minute.
struct MinuteChunks(SegmentFiles);

impl Layout for MinuteChunks {
    fn tick(&mut self, second: u64, _: u64, open: &mut Open) -> anyhow::Result<()> {
        if !second.is_multiple_of(60) {
            return Ok(());
        }
        let pending: Vec<Pending<'_>> = open
            .0
            .iter()
            .enumerate()
            .map(|(num, rounds)| Pending {
                target: TargetNum(num as u32),
                rounds,
            })
            .collect();
        self.0.append(&pending)?;
        open.0.iter_mut().for_each(Vec::clear);
        Ok(())
    }
}

/// The minute rollups of every series of `rounds` (each hop, then the
/// destination), each encoded as the store encodes a rollup.
fn minute_rollups(rounds: &[RoundRecord], scratch: &mut histogram::Histogram32) -> Vec<Vec<u8>> {
    let mut series: Vec<SeriesAcc> = (0..=HOPS).map(|_| SeriesAcc::default()).collect();
    for round in rounds {
        for hop in &round.hops {
            let rtt = hop.rtt().map(|r| r.as_nanos());
            series[usize::from(hop.ttl.get() - 1)].push(rtt);
            if hop.reached() {
                series[usize::from(HOPS)].push(rtt);
            }
        }
    }
    series
        .iter()
        .map(|acc| codec::encode(&acc.finish(scratch).to_value()))
        .collect()
}

/// Minute rollups as today: one sled value per target, series and minute,
/// flushed each minute (raw data not included).
struct SledRollups {
    db: sled::Db,
    tree: sled::Tree,
    scratch: histogram::Histogram32,
}

impl Layout for SledRollups {
    fn tick(&mut self, second: u64, at_ms: u64, open: &mut Open) -> anyhow::Result<()> {
        if !second.is_multiple_of(60) {
            return Ok(());
        }
        for (num, rounds) in open.0.iter_mut().enumerate() {
            for (series, value) in minute_rollups(rounds, &mut self.scratch)
                .into_iter()
                .enumerate()
            {
                let mut key = (num as u32).to_be_bytes().to_vec();
                key.push(series as u8);
                key.extend((at_ms - 60_000).to_be_bytes());
                self.tree.insert(key, value)?;
            }
            rounds.clear();
        }
        self.db.flush()?;
        Ok(())
    }
}

/// Minute rollups packed: each minute, every target's series in one zstd
/// block appended to the day's file and synced (raw data not included).
struct PackedRollups {
    dir: PathBuf,
    scratch: histogram::Histogram32,
    file: Option<File>,
}

impl Layout for PackedRollups {
    fn tick(&mut self, second: u64, _: u64, open: &mut Open) -> anyhow::Result<()> {
        if !second.is_multiple_of(60) {
            return Ok(());
        }
        if self.file.is_none() || second.is_multiple_of(86_400) {
            self.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join(format!("minutes-{:04}", second / 86_400)))?,
            );
            File::open(&self.dir)?.sync_all()?;
        }
        let mut block = Vec::new();
        for (num, rounds) in open.0.iter_mut().enumerate() {
            block.extend((num as u32).to_be_bytes());
            for value in minute_rollups(rounds, &mut self.scratch) {
                block.extend((value.len() as u16).to_be_bytes());
                block.extend(value);
            }
            rounds.clear();
        }
        let packed = zstd::stream::encode_all(block.as_slice(), 3)?;
        let file = self.file.as_mut().context("rollup file open")?;
        file.write_all(&(packed.len() as u32).to_be_bytes())?;
        file.write_all(&packed)?;
        file.sync_data()?;
        Ok(())
    }
}

struct Journal {
    dir: PathBuf,
    sync_secs: u64,
    stream: Option<zstd::stream::write::Encoder<'static, File>>,
}

impl Journal {
    fn rotate(&mut self, second: u64) -> anyhow::Result<()> {
        if let Some(stream) = self.stream.take() {
            stream.finish()?.sync_all()?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("journal-{second:08}")))?;
        self.stream = Some(zstd::stream::write::Encoder::new(file, 3)?);
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

impl Layout for Journal {
    fn tick(&mut self, second: u64, _: u64, open: &mut Open) -> anyhow::Result<()> {
        if self.stream.is_none() || second.is_multiple_of(CHUNK_ROUNDS) {
            self.rotate(second)?;
        }
        if !second.is_multiple_of(FLUSH_SECS) {
            return Ok(());
        }
        let stream = self.stream.as_mut().context("journal open")?;
        for (num, rounds) in open.0.iter_mut().enumerate() {
            if rounds.is_empty() {
                continue;
            }
            let body = chunk::encode_columns(rounds);
            stream.write_all(&(num as u32).to_be_bytes())?;
            stream.write_all(&(body.len() as u32).to_be_bytes())?;
            stream.write_all(&body)?;
            rounds.clear();
        }
        // A zstd block boundary: everything so far decodes from the file.
        stream.flush()?;
        if second.is_multiple_of(self.sync_secs) {
            stream.get_ref().sync_data()?;
        }
        Ok(())
    }
}

fn proc_write_bytes() -> anyhow::Result<u64> {
    let io = fs::read_to_string("/proc/self/io")?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .context("write_bytes in /proc/self/io")?
        .trim()
        .parse()
        .context("write_bytes is a number")
}

fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Runs `layout` for the warm-up and the measured hours; returns the bytes
/// written in the measured part.
fn measure(
    layout: &mut dyn Layout,
    args: &Args,
    profile: Profile,
    start_ms: u64,
) -> anyhow::Result<u64> {
    let ids: Vec<TargetId> = (0..args.targets)
        .map(|i| TargetId::new(format!("t{i}")))
        .collect::<Result<_, _>>()?;
    let mut noise: Vec<Noise> = (0..args.targets)
        .map(|i| Noise(fastrand::Rng::with_seed(u64::from(i) + 15)))
        .collect();
    let warm_up = CHUNK_ROUNDS;
    let mut open = Open::default();
    let mut before = 0;
    for second in 0..warm_up + args.hours * 3_600 {
        if second == warm_up {
            before = proc_write_bytes()?;
        }
        let at_ms = start_ms + second * 1_000;
        for (num, id) in ids.iter().enumerate() {
            open.push(
                num as u32,
                round(id, num as u32, second, at_ms, profile, &mut noise[num]),
            );
        }
        layout.tick(second + 1, at_ms + 1_000, &mut open)?;
    }
    Ok(proc_write_bytes()? - before)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        !args.dir.exists() || fs::read_dir(&args.dir)?.next().is_none(),
        "{} is not empty: the measurement needs fresh directories",
        args.dir.display()
    );
    let start_ms = 1_600_000_000_000 / HOUR_MS * HOUR_MS;
    let samples_per_day = 86_400.0 * f64::from(HOPS);
    let hours = args.hours as f64;
    println!(
        "{} targets x {} h, {HOPS} hops, 1 round/s; journal synced every {} s\n",
        args.targets, args.hours, args.sync
    );
    println!("| series | layout | MiB written / target / day | bytes / hop sample | on disk after the run, MiB |");
    println!("|---|---|---:|---:|---:|");
    let mut query_times = Vec::new();
    let mut full_windows = Vec::new();
    for (name, profile) in [("lab", Profile::Lab), ("wan", Profile::Wan)] {
        for layout_name in [
            "store",
            "sled-rounds",
            "sled-chunks",
            "segments",
            "journal",
            "minute-chunks",
            "sled-rollups",
            "packed-rollups",
        ] {
            if !args.layouts.is_empty() && !args.layouts.iter().any(|l| l == layout_name) {
                continue;
            }
            let dir = args.dir.join(format!("{name}-{layout_name}"));
            fs::create_dir_all(&dir)?;
            let mut layout: Box<dyn Layout> = match layout_name {
                "store" => Box::new(TodaysStore(Store::open_at(
                    &dir,
                    StoreConfig::default(),
                    start_ms,
                )?)),
                "sled-rounds" => {
                    // The store's own sled settings (zstd pages, low space).
                    let db = hopwatch::store::schema::sled_config(&dir, 4 << 20).open()?;
                    let tree = db.open_tree("raw")?;
                    Box::new(SledRounds { db, tree })
                }
                "sled-chunks" => {
                    let db = sled::Config::new()
                        .path(&dir)
                        .cache_capacity(4 << 20)
                        .flush_every_ms(None)
                        .open()?;
                    let tree = db.open_tree("chunks")?;
                    Box::new(SledChunks { db, tree })
                }
                "minute-chunks" => Box::new(MinuteChunks(SegmentFiles::open(&dir)?)),
                "sled-rollups" => {
                    let db = sled::Config::new()
                        .path(&dir)
                        .cache_capacity(4 << 20)
                        .flush_every_ms(None)
                        .open()?;
                    let tree = db.open_tree("m1")?;
                    Box::new(SledRollups {
                        db,
                        tree,
                        scratch: scratch_histogram(),
                    })
                }
                "packed-rollups" => Box::new(PackedRollups {
                    dir: dir.clone(),
                    scratch: scratch_histogram(),
                    file: None,
                }),
                "segments" => Box::new(Segments { dir: dir.clone() }),
                "journal" => Box::new(Journal {
                    dir: dir.clone(),
                    sync_secs: args.sync,
                    stream: None,
                }),
                other => unreachable!("no layout {other}"),
            };
            let written = measure(layout.as_mut(), &args, profile, start_ms)?;
            drop(layout);
            if layout_name == "store" {
                let end_ms = start_ms + (CHUNK_ROUNDS + args.hours * 3_600) * 1_000;
                query_times.push((name, raw_query_times(&dir, end_ms, args.hours)?));
                full_windows.push((name, full_window_mib(&dir, &args, start_ms, end_ms)?));
            }
            let per_target_day = written as f64 / f64::from(args.targets) * 24.0 / hours;
            println!(
                "| {name} | {layout_name} | {:.2} | {:.2} | {:.1} |",
                per_target_day / (1 << 20) as f64,
                per_target_day / samples_per_day,
                dir_bytes(&dir) as f64 / (1 << 20) as f64
            );
        }
    }
    if !full_windows.is_empty() {
        println!(
            "\nOn disk per target with every default window full (raw 48 h, minute \
             rollups 30 d, hour rollups 365 d), MiB, from the bytes each kind of file \
             took per hour of this run:\n"
        );
        println!("| series | raw rounds | minute rollups | hour rollups, compacted (as written) | all windows full |");
        println!("|---|---:|---:|---:|---:|");
        for (name, [raw, minutes, hours, hours_written]) in full_windows {
            println!(
                "| {name} | {raw:.1} | {minutes:.1} | {hours:.1} ({hours_written:.1}) | **{:.1}** |",
                raw + minutes + hours
            );
        }
    }
    if !query_times.is_empty() {
        println!("\nThe store reopened, one target's destination from raw rounds (median / max of 10, ms):\n");
        println!("| series | last 1 h | last {} h |", args.hours.min(6));
        println!("|---|---:|---:|");
        for (name, [hour, span]) in query_times {
            println!(
                "| {name} | {:.2} / {:.2} | {:.2} / {:.2} |",
                hour.0, hour.1, span.0, span.1
            );
        }
    }
    Ok(())
}

/// Per target, MiB of raw rounds for 48 h, minute rollups for 30 d and
/// hour rollups for 365 d, from the store's files after the run: the
/// rounds' files over every second written, the minute files of the hours
/// whose minutes were all written, the hour files over the hours rolled up.
fn full_window_mib(
    dir: &Path,
    args: &Args,
    start_ms: u64,
    end_ms: u64,
) -> anyhow::Result<[f64; 4]> {
    let files = |sub: &str, prefix: &str| -> anyhow::Result<Vec<(u64, u64)>> {
        let mut found = Vec::new();
        for entry in fs::read_dir(dir.join(sub))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(prefix) else {
                continue;
            };
            let span: u64 = rest.split('-').next().unwrap_or("").parse()?;
            found.push((span, entry.metadata()?.len()));
        }
        Ok(found)
    };
    let targets = f64::from(args.targets);
    let mib = |bytes: f64| bytes / targets / (1 << 20) as f64;
    let raw: u64 = files("rounds", "raw-")?.iter().map(|(_, len)| len).sum();
    let raw_hours = (end_ms - start_ms) as f64 / HOUR_MS as f64;
    // Minutes reach their file ten minutes at a time: only whole hours count.
    let written_until = end_ms - end_ms % (10 * 60_000);
    let whole: Vec<u64> = files("rollups", "m1-")?
        .iter()
        .filter(|(hour, _)| hour + HOUR_MS <= written_until)
        .map(|(_, len)| *len)
        .collect();
    anyhow::ensure!(
        !whole.is_empty(),
        "no whole hour of minute rollups: run longer"
    );
    let minute_hour = whole.iter().sum::<u64>() as f64 / whole.len() as f64;
    let hours_rolled = (end_ms / HOUR_MS - start_ms / HOUR_MS) as f64;
    let hour_files =
        || -> anyhow::Result<u64> { Ok(files("rollups", "h1-")?.iter().map(|(_, len)| len).sum()) };
    let hours_written = hour_files()?;
    // The daemon compacts a day's hour sections into one once the day is
    // over; the run is shorter than a day, so compact its hours now to see
    // what a finished day keeps (a few hours' block compresses a little
    // worse than a whole day's).
    RollupFiles::open(&dir.join("rollups"), Grain::HOURS)?.compact_before(u64::MAX)?;
    let hours_compacted = hour_files()?;
    let per_year = |bytes: u64| mib(bytes as f64 / hours_rolled * 24.0 * 365.0);
    Ok([
        mib(raw as f64 / raw_hours * 48.0),
        mib(minute_hour * 24.0 * 30.0),
        per_year(hours_compacted),
        per_year(hours_written),
    ])
}

/// Times `Store::series` of target `t0`'s destination from raw rounds over
/// the last hour and the last `hours` (at most 6, the raw span the API
/// serves): (median, max) ms of 10 runs each. Every file of the span holds
/// all targets' records, so this is what many targets cost a query.
fn raw_query_times(dir: &Path, end_ms: u64, hours: u64) -> anyhow::Result<[(f64, f64); 2]> {
    let store = Store::open_at(dir, StoreConfig::default(), end_ms)?;
    let id = TargetId::new("t0")?;
    let mut out = [(0.0, 0.0); 2];
    for (slot, span_h) in out.iter_mut().zip([1, hours.clamp(1, 6)]) {
        let mut times: Vec<f64> = (0..10)
            .map(|_| {
                let started = std::time::Instant::now();
                let series = store.series(
                    &id,
                    Hop::Destination,
                    end_ms - span_h * HOUR_MS,
                    end_ms,
                    Resolution::Raw,
                )?;
                anyhow::ensure!(!series.points.is_empty(), "no rounds of t0 read back");
                Ok(started.elapsed().as_secs_f64() * 1e3)
            })
            .collect::<anyhow::Result<_>>()?;
        times.sort_by(f64::total_cmp);
        *slot = (times[times.len() / 2], times[times.len() - 1]);
    }
    Ok(out)
}
