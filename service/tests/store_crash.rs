//! Crash safety of the history store: a writer process writes rounds and
//! flushes continuously; this test kills it with SIGKILL at random
//! moments, 20 times, and after each kill checks that the store opens cleanly,
//! that every round up to the last flush the writer reported is there (and
//! the history has no gaps), that events up to it are there, and that the
//! minute and hour rollups agree with the raw rounds.
//!
//! The writer is this test executable itself, started again to run only
//! the ignored `writer_process` test (the loop in
//! `examples/common/crash_writer.rs`, which the `store_writer` example also
//! runs), so the test needs no build of its own.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use hopwatch::model::TargetId;
use hopwatch::store::{Hop, Resolution, Store, StoreConfig, HOUR_MS, MINUTE_MS};
use hopwatch::sys::now_ms;

#[path = "../examples/common/crash_writer.rs"]
mod crash_writer;

const ITERATIONS: usize = 20;

/// The environment variables that tell `writer_process` where to write and
/// where its synthetic clock starts.
const WRITER_DIR: &str = "HOPWATCH_CRASH_WRITER_DIR";
const WRITER_START_MS: &str = "HOPWATCH_CRASH_WRITER_START_MS";

/// The writer the crash test kills: run only in the child process
/// `run_and_kill` starts, which sets the two variables.
#[test]
#[ignore = "the writer process of kill_9_at_random_moments_loses_nothing_that_was_flushed, which runs it"]
fn writer_process() -> anyhow::Result<()> {
    let dir = std::env::var_os(WRITER_DIR)
        .with_context(|| format!("{WRITER_DIR} is not set: this test is the writer the crash test starts, not a test of its own"))?;
    let start_ms: u64 = std::env::var(WRITER_START_MS)
        .with_context(|| format!("{WRITER_START_MS} is not set"))?
        .parse()
        .with_context(|| format!("{WRITER_START_MS} is not a number of milliseconds"))?;
    crash_writer::write(Path::new(&dir), start_ms, 25)
}

/// Runs the writer for `run_for`, kills it with SIGKILL and returns the
/// sequence numbers it reported flushed.
fn run_and_kill(
    writer: &Path,
    dir: &Path,
    start_ms: u64,
    run_for: Duration,
) -> anyhow::Result<Vec<u64>> {
    let mut child = Command::new(writer)
        .args(["writer_process", "--exact", "--ignored", "--nocapture"])
        .env(WRITER_DIR, dir)
        .env(WRITER_START_MS, start_ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the writer process")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let reader = std::thread::spawn(move || -> Vec<String> {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect()
    });
    std::thread::sleep(run_for);
    // Child::kill sends SIGKILL: no destructor, no flush, like `kill -9`.
    child.kill().context("killing the writer process")?;
    let status = child.wait()?;
    ensure!(
        status.code().is_none(),
        "the writer process exited by itself ({status}) instead of being killed"
    );
    let lines = reader
        .join()
        .map_err(|_| anyhow::anyhow!("stdout reader panicked"))?;
    // Besides the writer's lines, the test harness prints its own framing
    // ("running 1 test"); nothing else may appear.
    let mut flushed = Vec::new();
    for line in &lines {
        match line.strip_prefix(crash_writer::FLUSHED) {
            Some(n) => flushed.push(
                n.parse()
                    .with_context(|| format!("unexpected writer output {line:?}"))?,
            ),
            None if line.is_empty() || line.starts_with("running ") => {}
            None => bail!("unexpected writer output {line:?}"),
        }
    }
    Ok(flushed)
}

/// Opens the store as a restarted daemon would and checks it against what
/// the writer reported.
fn verify(dir: &Path, start_ms: u64, flushed: Option<u64>) -> anyhow::Result<u64> {
    let store =
        Store::open(dir, StoreConfig::default()).context("the store must open after kill -9")?;
    let target = TargetId::new(crash_writer::TARGET)?;
    let rounds = store.rounds(&target, 0, u64::MAX)?;
    for (i, round) in rounds.iter().enumerate() {
        let i = i as u64;
        ensure!(
            round.seq == i,
            "gap or duplicate: round {} at position {i}",
            round.seq
        );
        ensure!(
            round.started_at_ms == start_ms + i * 1000,
            "round {i} has the wrong time"
        );
        ensure!(
            round.hops.len() == 10,
            "round {i} has {} hops",
            round.hops.len()
        );
    }
    if let Some(last) = flushed {
        ensure!(
            rounds.len() as u64 > last,
            "flushed up to round {last} but only {} rounds are stored",
            rounds.len()
        );
    }
    // Events: one per 50 rounds, all there up to the last reported flush.
    let events: HashSet<u64> = store
        .events(&target, 0, u64::MAX)?
        .iter()
        .filter_map(|e| e.payload["seq"].as_u64())
        .collect();
    if let Some(last) = flushed {
        for seq in (0..=last).step_by(50) {
            ensure!(
                events.contains(&seq),
                "event of round {seq} is missing (flushed up to {last})"
            );
        }
    }
    // Rollups: the open's catch-up flush closed every minute the wall clock
    // has passed; each must count exactly the raw rounds in it.
    let closed_before = now_ms() - 20_000;
    let mut per_minute: BTreeMap<u64, u64> = BTreeMap::new();
    for round in &rounds {
        let minute = round.started_at_ms / MINUTE_MS * MINUTE_MS;
        if minute + MINUTE_MS <= closed_before {
            *per_minute.entry(minute).or_default() += 1;
        }
    }
    let end = start_ms + rounds.len() as u64 * 1000;
    let minutes = store.series(&target, Hop::Destination, start_ms, end, Resolution::Minute)?;
    let stored: BTreeMap<u64, u64> = minutes
        .points
        .iter()
        .filter(|p| p.at_ms + MINUTE_MS <= closed_before)
        .map(|p| (p.at_ms, p.sent))
        .collect();
    if stored != per_minute {
        let rollups = dir.join(hopwatch::store::ROLLUPS_DIR);
        let mut names: Vec<_> = std::fs::read_dir(&rollups)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for path in names {
            let checked = hopwatch::store::rollup_files::RollupFiles::check_file(
                hopwatch::store::rollup_files::Grain::MINUTES,
                &path,
            );
            eprintln!(
                "minute rollups file at the failure: {} {:?}",
                path.display(),
                checked
            );
        }
    }
    ensure!(
        stored == per_minute,
        "minute rollups disagree with raw rounds: {:?}",
        per_minute
            .iter()
            .filter(|(m, n)| stored.get(m) != Some(n))
            .map(|(m, n)| (m, n, stored.get(m)))
            .chain(
                stored
                    .iter()
                    .filter(|(m, _)| !per_minute.contains_key(m))
                    .map(|(m, n)| (m, &0, Some(n)))
            )
            .take(10)
            .collect::<Vec<_>>()
    );
    let hours = store.series(&target, Hop::Ttl(6), start_ms, end, Resolution::Hour)?;
    for hour in &hours.points {
        let raw: u64 = per_minute
            .range(hour.at_ms..hour.at_ms + HOUR_MS)
            .map(|(_, n)| n)
            .sum();
        ensure!(
            hour.sent == raw,
            "hour {} counts {} probes, raw has {raw}",
            hour.at_ms,
            hour.sent
        );
    }
    Ok(rounds.len() as u64)
}

#[test]
fn kill_9_at_random_moments_loses_nothing_that_was_flushed() -> anyhow::Result<()> {
    // The writer is this executable, running `writer_process` only.
    let writer = std::env::current_exe()?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("store");
    // The synthetic clock starts a day back, so the open's catch-up flush
    // (wall clock) can close the minutes the writer produced.
    let start_ms = (now_ms() - 24 * HOUR_MS) / HOUR_MS * HOUR_MS;
    let seed = now_ms();
    eprintln!("random seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut best_flushed: Option<u64> = None;
    let mut kills_after_a_flush = 0;
    let started = Instant::now();
    for i in 0..ITERATIONS {
        // Opening replays sled's log (~0.2 s in a debug build), so short runs
        // kill the writer during recovery and longer ones mid-write or mid-flush.
        let run_for = Duration::from_millis(rng.u64(20..700));
        let flushed = run_and_kill(&writer, &dir, start_ms, run_for)
            .with_context(|| format!("iteration {i}"))?;
        let last = flushed.last().copied();
        if last.is_some() {
            kills_after_a_flush += 1;
        }
        best_flushed = best_flushed.max(last);
        let stored = verify(&dir, start_ms, best_flushed).with_context(|| {
            format!("iteration {i}: killed after {run_for:?}, last flush {last:?}")
        })?;
        eprintln!(
            "iteration {i}: killed after {run_for:?}, last flush {last:?}, {stored} rounds stored"
        );
    }
    ensure!(
        kills_after_a_flush >= ITERATIONS / 4,
        "only {kills_after_a_flush} of {ITERATIONS} kills came after a flush: the test did not exercise much"
    );
    eprintln!("{ITERATIONS} kills in {:?}", started.elapsed());
    Ok(())
}
