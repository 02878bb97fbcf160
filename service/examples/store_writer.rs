//! Drives the history store with synthetic rounds, for two purposes:
//!
//! * `write <dir> --start-ms <T>`: the loop the crash test
//!   (`tests/store_crash.rs`) kills with SIGKILL, by hand. It resumes after
//!   the last stored round, writes rounds of target `crash` with a synthetic
//!   clock (round `seq` starts at `T + seq × 1 s`, an event every 50 rounds),
//!   flushes every `--per-flush` rounds and prints `flushed <seq>` after each
//!   flush that completed. The test runs the same loop (`common/crash_writer.rs`)
//!   in a child process of its own executable.
//! * `budget <dir>`: measures what the store writes to disk per target and
//!   hour (10-hop targets, one round per second, the default 5 s flush
//!   interval, so one flush per 5 synthetic seconds) from `/proc/self/io`
//!   `write_bytes`, then optionally simulates the retention windows
//!   (`--days`) and reports the disk size:
//!
//! ```text
//! cargo run --release -p hopwatch-service --example store_writer -- \
//!     budget /var/tmp/hopwatch-budget --targets 10 --hours 1 --days 0
//! ```

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hopwatch::model::TargetId;
use hopwatch::store::{Hop, Resolution, Store, StoreConfig, HOUR_MS, MINUTE_MS};

#[path = "common/crash_writer.rs"]
mod crash_writer;
use crash_writer::{round, write};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write rounds until killed, printing `flushed <seq>` after each flush.
    Write {
        dir: PathBuf,
        /// Start of the synthetic clock, Unix milliseconds.
        #[arg(long)]
        start_ms: u64,
        /// Rounds per flush.
        #[arg(long, default_value_t = 25)]
        per_flush: u64,
    },
    /// Measure bytes written per target and hour, and the retained size.
    Budget {
        dir: PathBuf,
        #[arg(long, default_value_t = 10)]
        targets: u32,
        /// Synthetic hours for the write measurement.
        #[arg(long, default_value_t = 1)]
        hours: u64,
        /// Synthetic days for the retention simulation (0: skip it). 367
        /// covers every default window.
        #[arg(long, default_value_t = 0)]
        days: u64,
        /// Flush interval (synthetic seconds) during the retention
        /// simulation; one fsync per 5 s over a year would take hours.
        #[arg(long, default_value_t = 600)]
        sim_flush_secs: u64,
    },
}

/// `write_bytes` of `/proc/self/io`: bytes this process caused to be written
/// to storage (page-cache pages dirtied, counted again when rewritten).
fn proc_write_bytes() -> anyhow::Result<u64> {
    let io = fs::read_to_string("/proc/self/io").context("reading /proc/self/io")?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .context("no write_bytes in /proc/self/io")?
        .trim()
        .parse()
        .context("parsing write_bytes")
}

/// Apparent and allocated bytes of every file under `dir`.
fn dir_size(dir: &Path) -> anyhow::Result<(u64, u64)> {
    let mut apparent = 0;
    let mut allocated = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            let (a, b) = dir_size(&entry.path())?;
            apparent += a;
            allocated += b;
        } else {
            apparent += meta.len();
            allocated += meta.blocks() * 512;
        }
    }
    Ok((apparent, allocated))
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64)
}

fn budget(
    dir: &Path,
    targets: u32,
    hours: u64,
    days: u64,
    sim_flush_secs: u64,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !dir.exists() || fs::read_dir(dir)?.next().is_none(),
        "{} is not empty: the measurement needs a fresh store",
        dir.display()
    );
    let ids: Vec<TargetId> = (0..targets)
        .map(|i| TargetId::new(format!("budget-{i}")))
        .collect::<Result<_, _>>()?;
    // A synthetic clock far in the past keeps the wall clock out of it.
    let start = 1_600_000_000_000 / HOUR_MS * HOUR_MS;
    let config = StoreConfig::default();
    let flush_every = std::env::var("HW_FLUSH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(config.flush_interval.as_secs().max(1));
    let store = Store::open_at(dir, config, start)?;
    let mut seq = 0u64;

    // Warm-up hour: target names, first segments, first rollups.
    let run = |store: &Store, seconds: u64, flush_secs: u64, seq: &mut u64| -> anyhow::Result<()> {
        for _ in 0..seconds {
            let at = start + *seq * 1000;
            for id in &ids {
                store.record_round(&round(id, *seq, at))?;
            }
            *seq += 1;
            if seq.is_multiple_of(flush_secs) {
                store.flush_at(start + *seq * 1000)?;
            }
        }
        Ok(())
    };
    run(&store, 3600, flush_every, &mut seq)?;
    store.flush_at(start + seq * 1000)?;

    let io_before = proc_write_bytes()?;
    let logical_before = store.metrics().write_bytes_total;
    let (_, alloc_before) = dir_size(dir)?;
    let clock = Instant::now();
    run(&store, hours * 3600, flush_every, &mut seq)?;
    store.flush_at(start + seq * 1000)?;
    let elapsed = clock.elapsed();
    let io = proc_write_bytes()? - io_before;
    let logical = store.metrics().write_bytes_total - logical_before;
    let (_, alloc_after) = dir_size(dir)?;
    let per = |b: u64| b / (targets as u64 * hours);
    println!(
        "write budget: {targets} targets x {hours} h, 10 hops, 1 round/s, flush every {flush_every} s \
         ({:.1} s elapsed)",
        elapsed.as_secs_f64()
    );
    println!(
        "  disk writes (/proc/self/io write_bytes): {} per target per hour",
        mib(per(io))
    );
    println!(
        "  bytes handed to sled (keys + values):     {} per target per hour",
        mib(per(logical))
    );
    println!(
        "  store directory growth (allocated):       {} per target per hour",
        mib(per(alloc_after.saturating_sub(alloc_before)))
    );

    if days > 0 {
        let clock = Instant::now();
        let mut last_report = 0;
        while seq < days * 86_400 {
            run(
                &store,
                sim_flush_secs.min(days * 86_400 - seq),
                sim_flush_secs,
                &mut seq,
            )?;
            let day = seq / 86_400;
            if [2, 5, 10, 30, 90, 180, 365].contains(&day) && day != last_report {
                last_report = day;
                let (apparent, allocated) = dir_size(dir)?;
                println!(
                    "  after {day:>3} days: {} allocated ({} apparent), sled says {}, {} per target",
                    mib(allocated),
                    mib(apparent),
                    mib(store.size_on_disk()?),
                    mib(allocated / targets as u64),
                );
            }
        }
        store.flush_at(start + seq * 1000)?;
        let now = start + seq * 1000;
        let (apparent, allocated) = dir_size(dir)?;
        println!(
            "retention simulation: {days} days in {:.0} s; final size {} allocated ({} apparent), {} per target",
            clock.elapsed().as_secs_f64(),
            mib(allocated),
            mib(apparent),
            mib(allocated / targets as u64)
        );
        let id = &ids[0];
        for (name, res, span) in [
            ("raw", Resolution::Raw, 3 * 86_400_000),
            ("1m", Resolution::Minute, 40 * 86_400_000),
            ("1h", Resolution::Hour, 400 * 86_400_000),
        ] {
            let from = now.saturating_sub(span);
            let points = store.series(id, Hop::Ttl(5), from, now, res)?.points;
            let oldest = points
                .first()
                .map_or(0, |p| (now - p.at_ms) / MINUTE_MS / 60 / 24);
            println!(
                "  {name} points kept for one hop: {} (oldest {oldest} days back)",
                points.len()
            );
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Write {
            dir,
            start_ms,
            per_flush,
        } => write(&dir, start_ms, per_flush),
        Command::Budget {
            dir,
            targets,
            hours,
            days,
            sim_flush_secs,
        } => budget(&dir, targets, hours, days, sim_flush_secs),
    }
}
