//! Crash safety of the history store: the `store_writer` example writes
//! rounds and flushes continuously; this test kills it with SIGKILL at random
//! moments, 20 times, and after each kill checks that the store opens cleanly,
//! that every round up to the last flush the writer reported is there (and
//! the history has no gaps), that events up to it are there, and that the
//! minute and hour rollups agree with the raw rounds.
//!
//! Cargo gives integration tests no path to examples, so the test builds the
//! example with the cargo that runs it (`$CARGO`, same profile, same target
//! directory) and takes the executable's path from cargo's JSON messages
//! rather than guessing the layout of the target directory.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use hopwatch::model::TargetId;
use hopwatch::store::{Hop, Resolution, Store, StoreConfig, HOUR_MS, MINUTE_MS};
use hopwatch::sys::now_ms;

const ITERATIONS: usize = 20;

/// Builds the example and returns its path.
fn build_writer() -> anyhow::Result<PathBuf> {
    // The test executable lives in <target>/<profile>/deps.
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .context("cannot tell the cargo profile from the test's path")?
        .to_string();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "--example",
        "store_writer",
        "-p",
        "hopwatch-service",
        "--message-format=json",
    ]);
    match profile_dir.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let output = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build for the store_writer example")?;
    ensure!(
        output.status.success(),
        "cargo build --example store_writer failed"
    );
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "store_writer" {
            if let Some(path) = msg["executable"].as_str() {
                return Ok(PathBuf::from(path));
            }
        }
    }
    bail!("cargo reported no executable for the store_writer example")
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
        .args([
            "write",
            &dir.display().to_string(),
            "--start-ms",
            &start_ms.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting store_writer")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let reader = std::thread::spawn(move || -> Vec<String> {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect()
    });
    std::thread::sleep(run_for);
    // Child::kill sends SIGKILL: no destructor, no flush, like `kill -9`.
    child.kill().context("killing store_writer")?;
    let status = child.wait()?;
    ensure!(
        status.code().is_none(),
        "store_writer exited by itself ({status}) instead of being killed"
    );
    let lines = reader
        .join()
        .map_err(|_| anyhow::anyhow!("stdout reader panicked"))?;
    lines
        .iter()
        .map(|l| {
            l.strip_prefix("flushed ")
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("unexpected writer output {l:?}"))
        })
        .collect()
}

/// Opens the store as a restarted daemon would and checks it against what
/// the writer reported.
fn verify(dir: &Path, start_ms: u64, flushed: Option<u64>) -> anyhow::Result<u64> {
    let store =
        Store::open(dir, StoreConfig::default()).context("the store must open after kill -9")?;
    let target = TargetId::new("crash")?;
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
    let writer = build_writer()?;
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
