//! `bench-monitor`: what the monitoring daemon costs to run and what its
//! history costs to keep.
//!
//! 1. **The daemon** (`run`): the real `hopwatch run` binary, in the lab's
//!    source namespace, monitoring N lab targets (a share of them over IPv6)
//!    at one round per second with the default store settings. After a
//!    warm-up, a steady-state window is measured from /proc: CPU (user +
//!    system of all its threads), RSS and peak RSS, and bytes written to
//!    storage. It is then stopped with SIGTERM, and its store is opened to
//!    count the rounds and probes it recorded in the window.
//! 2. **The history** (`run`, or `store` alone): one 10-hop target written
//!    through the store library against a synthetic clock (see
//!    [`hopwatch_lab::bench::storesim`]): a store whose retention windows
//!    are the defaults divided by 30, until every window is full and its
//!    size levels off (the bytes on disk per byte of data); the model's data
//!    size with the default windows, and so the disk it takes; the default
//!    windows for a few days and a month of hour rollups, for the 24 h and
//!    30 d query times. `store --full-days 367 --window-scale 1` writes every
//!    second of a whole year with the default windows (over an hour).
//!
//! Run it through `deploy/bench.sh monitor`; results in docs/benchmarks.md.

use std::{
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use hopwatch::{
    model::TargetId,
    store::{Resolution, Store, StoreConfig, HOUR_MS},
};
use hopwatch_lab::{
    bench::{
        cpu::Running,
        machine::{Busy, CpuSample, Machine},
        procfs::ProcSample,
        stats::percentile,
        storesim::{
            dir_size, logical_day, simulate, span_label, time_query, QueryTiming, SimOutcome,
            SimPlan, SizeSample,
        },
    },
    LabSpec,
};

#[derive(Debug, Parser)]
#[command(name = "bench-monitor")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The daemon in the lab, then the history simulation; prints a Markdown section.
    Run(RunArgs),
    /// Only the history simulation and query timings.
    Store(StoreArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The daemon binary (a release build: that is what users run).
    #[arg(long, default_value = "target/release/hopwatch")]
    hopwatch: PathBuf,
    /// Targets monitored.
    #[arg(long, default_value_t = 1000)]
    targets: usize,
    /// Share of the targets probed over IPv6.
    #[arg(long, default_value_t = 0.1)]
    v6_share: f64,
    /// Routers between the prober and the targets (the path has one hop more).
    #[arg(long, default_value_t = 2)]
    routers: usize,
    /// Seconds the daemon runs before the measured window.
    #[arg(long, default_value_t = 30)]
    warmup_s: u64,
    /// Seconds of the measured window.
    #[arg(long, default_value_t = 180)]
    window_s: u64,
    /// Seconds between two /proc samples inside the window.
    #[arg(long, default_value_t = 5)]
    sample_s: u64,
    /// Skip the history simulation.
    #[arg(long)]
    no_store: bool,
    #[command(flatten)]
    store: StoreArgs,
    /// Where the report, the daemon's config, log and store are kept.
    #[arg(long, default_value = "target/bench/monitor")]
    out_dir: PathBuf,
}

#[derive(Debug, Args, Clone)]
struct StoreArgs {
    /// Where the simulated stores are written (removed afterwards). tmpfs
    /// makes sled's fsyncs free, which changes nothing in the files.
    #[arg(long, default_value = "/dev/shm")]
    sim_dir: PathBuf,
    /// Synthetic days written into the store with the default windows
    /// (its 6 h and 24 h queries are timed).
    #[arg(long, default_value_t = 3)]
    days: u64,
    /// Synthetic days written into the store whose windows are divided by
    /// --window-scale (every window must fill, and the size level off).
    #[arg(long, default_value_t = 16)]
    scaled_days: u64,
    /// Synthetic days of the store the 30 d query runs on (hour rollups
    /// only; at least 31).
    #[arg(long, default_value_t = 31)]
    query_days: u64,
    /// Rounds written at the start of each hour of that store (3600: every
    /// second; fewer keeps the run short).
    #[arg(long, default_value_t = 300)]
    query_seconds: u64,
    /// Runs of each timed query.
    #[arg(long, default_value_t = 20)]
    query_runs: usize,
    /// Instead: only the store with the default windows, for this many days
    /// (367 fills every window; about 11 s per day).
    #[arg(long)]
    full_days: Option<u64>,
    /// Divide every retention window by this for the scaled store (and for
    /// --full-days), so every window fills, and the size must level off, in
    /// days rather than a year (30: raw 1.6 h, minute rollups 1 d, hour
    /// rollups 12.2 d).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    window_scale: u32,
    /// Keep the simulated stores.
    #[arg(long)]
    keep: bool,
}

/// The daemon writes every 60 s by default; the simulations do the same.
const FLUSH_EVERY_S: u64 = 60;
const DAY_MS: u64 = 24 * HOUR_MS;
const MIB: f64 = (1u64 << 20) as f64;

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run(args),
        Command::Store(args) => {
            let machine = Machine::this();
            eprintln!("bench-monitor store on {machine}");
            let history = history(&args)?;
            print!("Machine: {machine}.\n\n{}", history.report);
            Ok(())
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let out_dir = std::fs::canonicalize(&args.out_dir)?;
    let hopwatch = std::fs::canonicalize(&args.hopwatch).with_context(|| {
        format!(
            "{} is missing: `cargo build --release -p hopwatch-service`",
            args.hopwatch.display()
        )
    })?;
    let machine = Machine::this();
    eprintln!("bench-monitor on {machine}");
    let daemon = daemon(&args, &hopwatch, &out_dir)?;
    let mut report = format!("Machine: {machine}.\n\n");
    report.push_str(&daemon.report(&args));
    if !args.no_store {
        report.push_str(&history(&args.store)?.report);
    }
    print!("{report}");
    Ok(())
}

// ---------------------------------------------------------------- daemon

/// What the daemon did and cost over the measured window.
struct DaemonOutcome {
    targets_v4: usize,
    targets_v6: usize,
    hops: usize,
    start: ProcSample,
    end: ProcSample,
    /// Every sample of the window, with its time since the window started.
    samples: Vec<(Duration, ProcSample)>,
    window: Duration,
    busy: Busy,
    /// Rounds stored per target with a start in the window.
    rounds_per_target: Vec<u64>,
    probes: u64,
    answered: u64,
    state_before_stop: (u64, u64),
    state_at_window_start: (u64, u64),
    state_after_stop: (u64, u64),
    stop_took: Duration,
    started_line: String,
}

fn daemon(args: &RunArgs, hopwatch: &Path, out_dir: &Path) -> anyhow::Result<DaemonOutcome> {
    let v6 = ((args.targets as f64) * args.v6_share.clamp(0.0, 1.0)).round() as usize;
    let v4 = args.targets - v6;
    eprintln!("building the lab: {} targets ...", args.targets);
    let lab = LabSpec::chain(args.routers).targets(args.targets).build()?;
    // Different hosts for each family: target i is IPv4 below v4, IPv6 above.
    let mut targets: Vec<(TargetId, IpAddr)> = Vec::new();
    for (i, &a) in lab.targets_v4()[..v4].iter().enumerate() {
        targets.push((TargetId::new(format!("t{i:04}"))?, a.into()));
    }
    for (i, &a) in lab.targets_v6()[v4..args.targets].iter().enumerate() {
        targets.push((TargetId::new(format!("t{:04}", v4 + i))?, a.into()));
    }
    let hops = lab.expected_trace(targets[0].1).len();

    let state = out_dir.join("state");
    if state.exists() {
        std::fs::remove_dir_all(&state)
            .with_context(|| format!("removing the last run's {}", state.display()))?;
    }
    std::fs::create_dir_all(&state)?;
    if let Ok(fs) = nix::sys::statfs::statfs(&state) {
        if fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC {
            eprintln!(
                "warning: {} is on tmpfs, where no write reaches storage: write_bytes will read 0",
                state.display()
            );
        }
    }
    let config = out_dir.join("hopwatch.toml");
    let mut text = format!(
        "# bench-monitor: {} lab targets, one round per second, default storage.\n\
         [service]\nstate_dir = {:?}\n\n\
         # No resolver in the lab; lookups would only fail.\n\
         [enrichment]\nreverse_dns = false\n\n\
         [defaults]\ninterval = \"1s\"\n",
        args.targets,
        state.display().to_string()
    );
    for (id, addr) in &targets {
        let _ = write!(text, "\n[[target]]\nname = \"{id}\"\nhost = \"{addr}\"\n");
    }
    std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;

    let mut cmd = lab.command("src", &hopwatch.to_string_lossy())?;
    cmd.args(["--log", "info", "run", "-c"]).arg(&config);
    eprintln!(
        "starting the daemon; {} s warm-up, {} s window ...",
        args.warmup_s, args.window_s
    );
    let running = Running::spawn(cmd)?;
    let pid = running.pid();
    let mut daemon = Daemon {
        running: Some(running),
        pid,
    };
    // `ip netns exec` execs the daemon in place: wait until the PID is it.
    daemon.wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "hopwatch")
    })?;
    daemon.sleep(Duration::from_secs(args.warmup_s))?;

    let cpu_before = CpuSample::now();
    let state_at_window_start = dir_size(&state)?;
    let started = Instant::now();
    let start = ProcSample::of(pid)?;
    let window_start_ms = hopwatch::sys::now_ms();
    let mut samples = vec![(Duration::ZERO, start)];
    let window = Duration::from_secs(args.window_s);
    while started.elapsed() < window {
        let next = Duration::from_secs(args.sample_s.max(1)) * samples.len() as u32;
        daemon.sleep(next.min(window).saturating_sub(started.elapsed()))?;
        samples.push((started.elapsed(), ProcSample::of(pid)?));
    }
    let end = samples.last().expect("the window's samples").1;
    let window = samples.last().expect("the window's samples").0;
    let window_end_ms = window_start_ms + window.as_millis() as u64;
    let busy = CpuSample::now().since(&cpu_before);
    let state_before_stop = dir_size(&state)?;

    eprintln!("stopping the daemon (SIGTERM to pid {pid}) ...");
    let stopping = Instant::now();
    let finished = daemon.stop(Duration::from_secs(30))?;
    let stop_took = stopping.elapsed();
    std::fs::write(out_dir.join("daemon.log"), &finished.stderr)?;
    let log = String::from_utf8_lossy(&finished.stderr).into_owned();
    if !finished.status.success() {
        bail!(
            "the daemon exited with {} after SIGTERM; log in {}",
            finished.status,
            out_dir.join("daemon.log").display()
        );
    }
    let started_line = log
        .lines()
        .find(|l| l.contains("monitoring started"))
        .unwrap_or("(no \"monitoring started\" line in the log)")
        .to_owned();
    let state_after_stop = dir_size(&state)?;
    drop(lab);

    // What the daemon stored in the window: one round per target per second?
    let store = Store::open_at(&state, StoreConfig::default(), window_end_ms)
        .with_context(|| format!("opening the daemon's store {}", state.display()))?;
    let mut rounds_per_target = Vec::new();
    let (mut probes, mut answered) = (0, 0);
    for (id, _) in &targets {
        let rounds = store.rounds(id, window_start_ms, window_end_ms)?;
        rounds_per_target.push(rounds.len() as u64);
        for round in &rounds {
            probes += round.hops.len() as u64;
            answered += round.hops.iter().filter(|h| !h.is_lost()).count() as u64;
        }
    }
    drop(store);
    Ok(DaemonOutcome {
        targets_v4: v4,
        targets_v6: v6,
        hops,
        start,
        end,
        samples,
        window,
        busy,
        rounds_per_target,
        probes,
        answered,
        state_before_stop,
        state_at_window_start,
        state_after_stop,
        stop_took,
        started_line,
    })
}

/// The daemon while it runs: stopped by its PID, killed if it hangs.
struct Daemon {
    running: Option<Running>,
    pid: u32,
}

impl Daemon {
    /// Fails, with the daemon's log, if it exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        let running = self.running.take().expect("the daemon is running");
        match running.try_wait()? {
            Err(running) => {
                self.running = Some(running);
                Ok(())
            }
            Ok(finished) => bail!(
                "the daemon exited early ({}): {}",
                finished.status,
                String::from_utf8_lossy(&finished.stderr)
            ),
        }
    }

    fn sleep(&mut self, total: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + total;
        loop {
            self.check_alive()?;
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            std::thread::sleep(left.min(Duration::from_millis(500)));
        }
    }

    fn wait_until(&mut self, limit: Duration, ready: impl Fn() -> bool) -> anyhow::Result<()> {
        let until = Instant::now() + limit;
        while !ready() {
            self.check_alive()?;
            if Instant::now() > until {
                bail!(
                    "the daemon (pid {}) did not start within {limit:?}",
                    self.pid
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `limit`.
    fn stop(&mut self, limit: Duration) -> anyhow::Result<hopwatch_lab::bench::cpu::Finished> {
        use nix::{sys::signal, unistd::Pid};
        let mut running = self.running.take().expect("the daemon is running");
        signal::kill(Pid::from_raw(self.pid as i32), signal::Signal::SIGTERM)
            .with_context(|| format!("SIGTERM to the daemon (pid {})", self.pid))?;
        let until = Instant::now() + limit;
        loop {
            running = match running.try_wait()? {
                Ok(finished) => return Ok(finished),
                Err(running) if Instant::now() > until => {
                    eprintln!(
                        "the daemon did not stop within {limit:?}: killing pid {}",
                        self.pid
                    );
                    let finished = running.kill()?;
                    bail!(
                        "the daemon ignored SIGTERM for {limit:?}; log: {}",
                        String::from_utf8_lossy(&finished.stderr)
                    );
                }
                Err(running) => running,
            };
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn mib(bytes: f64) -> String {
    if bytes >= 100.0 * MIB {
        format!("{:.0} MiB", bytes / MIB)
    } else {
        format!("{:.1} MiB", bytes / MIB)
    }
}

fn gib(bytes: f64) -> String {
    format!("{:.1} GiB", bytes / (1u64 << 30) as f64)
}

fn kib(bytes: f64) -> String {
    format!("{:.1} KiB", bytes / 1024.0)
}

impl DaemonOutcome {
    fn report(&self, args: &RunArgs) -> String {
        let n = self.rounds_per_target.len();
        let secs = self.window.as_secs_f64();
        let cpu = self.end.cpu.saturating_sub(self.start.cpu).as_secs_f64();
        let writes = self.end.write_bytes.saturating_sub(self.start.write_bytes) as f64;
        let reads = self.end.read_bytes.saturating_sub(self.start.read_bytes) as f64;
        let per_hour = writes * 3600.0 / secs;
        let mut rounds = self.rounds_per_target.clone();
        rounds.sort_unstable();
        let stored: u64 = rounds.iter().sum();
        // Per-interval CPU, to show the flushes' bursts.
        let mut interval_pct: Vec<u64> = self
            .samples
            .windows(2)
            .map(|w| {
                let c = w[1].1.cpu.saturating_sub(w[0].1.cpu).as_secs_f64();
                let t = (w[1].0 - w[0].0).as_secs_f64().max(1e-3);
                (1000.0 * c / t) as u64 // tenths of a percent
            })
            .collect();
        interval_pct.sort_unstable();
        let tenths =
            |v: Option<u64>| v.map_or("?".to_owned(), |v| format!("{:.1}", v as f64 / 10.0));
        let rss_max = self.samples.iter().map(|s| s.1.rss_kib).max().unwrap_or(0);
        let growth = self
            .state_before_stop
            .1
            .saturating_sub(self.state_at_window_start.1) as f64;

        let mut out = String::new();
        let _ = writeln!(
            out,
            "### The daemon: {n} targets at one round per second\n\n\
             `hopwatch run` ({}) in the lab's `src` namespace (`LabSpec::chain({}).targets({})`, \
             {} hops per target): {} IPv4 and {} IPv6 targets, `interval = \"1s\"`, default \
             timeout, store and web settings, reverse DNS off. Measured from /proc over a {:.0} s \
             window after a {} s warm-up, then stopped with SIGTERM.\n\n\
             Log: `{}`\n",
            args.hopwatch.display(),
            args.routers,
            n,
            self.hops,
            self.targets_v4,
            self.targets_v6,
            secs,
            args.warmup_s,
            self.started_line.trim()
        );
        let _ = writeln!(out, "| what | measured | per target |\n|---|---:|---:|");
        let mut row = |what: &str, value: String, per: String| {
            let _ = writeln!(out, "| {what} | {value} | {per} |");
        };
        row(
            "rounds stored in the window",
            format!("{stored} ({:.1}/s)", stored as f64 / secs),
            format!(
                "min {} / median {} / max {} (window {:.0} s)",
                rounds.first().unwrap_or(&0),
                percentile(&rounds, 50.0).unwrap_or(0),
                rounds.last().unwrap_or(&0),
                secs
            ),
        );
        row(
            // The lab loses nothing, so an unanswered probe is one the
            // daemon lost: a reply dropped by a full eBPF ring, say.
            "probes in those rounds (answered)",
            format!(
                "{} ({:.2} %, {} unanswered)",
                self.probes,
                100.0 * self.answered as f64 / self.probes.max(1) as f64,
                self.probes - self.answered
            ),
            format!("{:.2} per round", self.probes as f64 / stored.max(1) as f64),
        );
        row(
            "CPU, user + system",
            format!(
                "{cpu:.1} s = **{:.1} % of one core** (5-s intervals: median {} %, max {} %)",
                100.0 * cpu / secs,
                tenths(percentile(&interval_pct, 50.0)),
                tenths(interval_pct.last().copied())
            ),
            format!(
                "**{:.1} µs per probe**, {:.0} µs per round",
                cpu * 1e6 / self.probes.max(1) as f64,
                cpu * 1e6 / stored.max(1) as f64
            ),
        );
        row(
            "memory: VmRSS at window start → end (max)",
            format!(
                "{} → **{}** ({})",
                mib(self.start.rss_kib as f64 * 1024.0),
                mib(self.end.rss_kib as f64 * 1024.0),
                mib(rss_max as f64 * 1024.0)
            ),
            kib(self.end.rss_kib as f64 * 1024.0 / n.max(1) as f64),
        );
        row(
            "memory: VmHWM (peak since start)",
            mib(self.end.hwm_kib as f64 * 1024.0),
            "–".to_owned(),
        );
        row(
            "storage writes (`write_bytes`)",
            format!(
                "{} in the window = **{} per hour**",
                mib(writes),
                mib(per_hour)
            ),
            format!("**{} per hour**", kib(per_hour / n.max(1) as f64)),
        );
        row("storage reads (`read_bytes`)", mib(reads), "–".to_owned());
        row(
            "store directory: growth in the window (allocated)",
            format!("{} = {} per hour", mib(growth), mib(growth * 3600.0 / secs)),
            format!("{} per hour", kib(growth * 3600.0 / secs / n.max(1) as f64)),
        );
        row(
            "store directory at stop (allocated; after the final flush)",
            format!(
                "{} ({} after)",
                mib(self.state_before_stop.1 as f64),
                mib(self.state_after_stop.1 as f64)
            ),
            "–".to_owned(),
        );
        row(
            "stop on SIGTERM (final flush included)",
            format!("{:.2} s, exit 0", self.stop_took.as_secs_f64()),
            "–".to_owned(),
        );
        row(
            "machine busy during the window (steal)",
            format!(
                "{:.0} % ({:.1} %) of 2 cores",
                self.busy.busy_pct, self.busy.steal_pct
            ),
            "–".to_owned(),
        );
        // The resident set every minute: growing, or settled?
        let minute_marks: Vec<String> = self
            .samples
            .iter()
            .filter(|(t, _)| t.as_secs() % 60 < args.sample_s.max(1))
            .map(|(t, s)| format!("{} s: {}", t.as_secs(), mib(s.rss_kib as f64 * 1024.0)))
            .collect();
        let _ = writeln!(
            out,
            "\nVmRSS through the window: {}.\n",
            minute_marks.join(", ")
        );
        out
    }
}

// ---------------------------------------------------------------- history

struct History {
    report: String,
}

fn history(args: &StoreArgs) -> anyhow::Result<History> {
    let root = args
        .sim_dir
        .join(format!("hopwatch-bench-monitor-{}", std::process::id()));
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let result = match args.full_days {
        Some(days) => full_only(args, &root, days),
        None => bounded(args, &root),
    };
    if args.keep {
        eprintln!("simulated stores kept in {}", root.display());
    } else {
        // Our own directory, named after our PID.
        let _ = std::fs::remove_dir_all(&root);
    }
    result
}

fn plan(config: StoreConfig, days: u64, seconds_per_hour: u64, sample_every_h: u64) -> SimPlan {
    SimPlan {
        // sled reclaims swept space on a timer of real time; the synthetic
        // clock runs about 8,000 times faster, so its timer does too (the
        // daemon's 5 s is 17,280 chances a day; this gives about as many).
        config: StoreConfig {
            reclaim_interval: Duration::from_millis(1),
            ..config
        },
        days,
        seconds_per_hour,
        flush_every_s: FLUSH_EVERY_S,
        sample_every_h,
    }
}

/// The store with every window at its default.
fn full_plan(days: u64) -> SimPlan {
    plan(StoreConfig::default(), days, 3600, 24)
}

/// A store that keeps only hour rollups (raw rounds and minute rollups for
/// 2 h), written for the first `seconds_per_hour` seconds of every hour: a
/// month of hour rollups to query, in a fraction of the time.
fn hours_only_plan(days: u64, seconds_per_hour: u64) -> SimPlan {
    let short = Duration::from_secs(2 * 3600);
    let config = StoreConfig {
        raw_retention: short,
        minute_retention: short,
        ..StoreConfig::default()
    };
    plan(config, days, seconds_per_hour, 24)
}

fn run_sim(root: &Path, name: &str, plan: &SimPlan) -> anyhow::Result<SimOutcome> {
    let out = simulate(&root.join(name), plan)?;
    eprintln!(
        "  {name}: {} days, {} rounds in {:.0} s; {}",
        plan.days,
        out.rounds,
        out.wall.as_secs_f64(),
        out.samples
            .last()
            .map_or("no sample".to_owned(), |s| mib(s.allocated as f64))
    );
    Ok(out)
}

fn timings(
    out: &SimOutcome,
    spans: &[u64],
    runs: usize,
) -> anyhow::Result<Vec<(u64, QueryTiming, QueryTiming)>> {
    spans
        .iter()
        .map(|&span| {
            let one = time_query(&out.store, &out.target, out.now_ms, span, false, runs)?;
            let all = time_query(&out.store, &out.target, out.now_ms, span, true, runs)?;
            Ok((span, one, all))
        })
        .collect()
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn query_table(rows: &[(u64, QueryTiming, QueryTiming, String)]) -> String {
    let mut out = String::from(
        "| range | served from | points per series | destination only: median / max ms | all 11 series: median / max ms | runs | store queried |\n\
         |---|---|---:|---:|---:|---:|---|\n",
    );
    for (span, one, all, store) in rows {
        // The web UI reads every hop of a range over 1 h from rollups, never
        // eleven raw series one after the other.
        let all_hops = if one.resolution == Resolution::Raw && *span > HOUR_MS {
            "–".to_owned()
        } else {
            format!("{} / {}", ms(all.median), ms(all.max))
        };
        let _ = writeln!(
            out,
            "| last {} | {} | {} | **{}** / {} | {} | {} | {} |",
            span_label(*span),
            one.resolution,
            one.points,
            ms(one.median),
            ms(one.max),
            all_hops,
            one.runs,
            store
        );
    }
    out
}

/// The size-by-day table of a store with the default windows.
fn size_table(out: &mut String, samples: &[SizeSample], days: u64) {
    let _ = writeln!(out, "| after | allocated | apparent |\n|---:|---:|---:|");
    for s in samples {
        let day = s.day.round() as u64;
        let every = if days > 60 { 30 } else { 2 };
        if day <= 3 || day.is_multiple_of(every) || day == days {
            let _ = writeln!(
                out,
                "| {day} d | {} | {} |",
                mib(s.allocated as f64),
                mib(s.apparent as f64)
            );
        }
    }
    out.push('\n');
}

/// The store's windows divided by `scale` (1: the defaults).
fn scaled_config(scale: u32) -> StoreConfig {
    let defaults = StoreConfig::default();
    StoreConfig {
        raw_retention: defaults.raw_retention / scale,
        minute_retention: defaults.minute_retention / scale,
        hour_retention: defaults.hour_retention / scale,
        event_retention: defaults.event_retention / scale,
        ..defaults
    }
}

fn windows_label(config: &StoreConfig) -> String {
    if *config == StoreConfig::default() {
        return "the default windows (raw 48 h, minute rollups 30 d, hour rollups 365 d)"
            .to_owned();
    }
    format!(
        "windows of raw {:.1} h, minute rollups {:.1} d, hour rollups {:.1} d",
        config.raw_retention.as_secs_f64() / 3600.0,
        config.minute_retention.as_secs_f64() / 86_400.0,
        config.hour_retention.as_secs_f64() / 86_400.0
    )
}

/// Bytes the model's data takes with every window of `config` full, as the
/// store encodes it (before sled's layout), per tree: raw, minutes, hours.
fn logical_full(config: &StoreConfig) -> [(&'static str, u64, f64); 3] {
    let day = logical_day();
    let days = |d: Duration| d.as_secs_f64() / 86_400.0;
    [
        ("raw rounds", day.raw, days(config.raw_retention)),
        (
            "1-minute rollups",
            day.minutes,
            days(config.minute_retention),
        ),
        ("1-hour rollups", day.hours, days(config.hour_retention)),
    ]
}

fn logical_total(config: &StoreConfig) -> f64 {
    logical_full(config)
        .iter()
        .map(|&(_, per_day, window)| per_day as f64 * window)
        .sum()
}

/// The model's data itself with the default windows, and what it takes on
/// disk at the overhead `disk_per_logical` measured on the scaled store.
fn logical_table(out: &mut String, disk_per_logical: f64) {
    let _ = writeln!(
        out,
        "The model's data itself with the default windows: keys and values as the store \
         encodes them (postcard, before sled's page compression and layout), per day and per \
         full window:\n\n\
         | tree | per day | window | per full window |\n|---|---:|---:|---:|"
    );
    for (name, per_day, window) in logical_full(&StoreConfig::default()) {
        let _ = writeln!(
            out,
            "| {name} | {} | {window:.0} d | {} |",
            kib(per_day as f64),
            mib(per_day as f64 * window)
        );
    }
    let total = logical_total(&StoreConfig::default());
    let disk = total * disk_per_logical;
    let _ = writeln!(
        out,
        "| **all windows full** | | | **{}** |\n\n\
         At the scaled store's {disk_per_logical:.2} bytes on disk per byte of data, a target \
         whose windows are all full takes at most about **{} on disk**, {} for 1,000 targets \
         (an upper bound: the small scaled store's ratio includes sled's few fixed segments). \
         Disk use scales with the windows and the hop count: shorten `[storage]` retention to \
         fit small flash.\n",
        mib(total),
        mib(disk),
        gib(disk * 1000.0)
    );
}

/// What fits in a few minutes: the store with the default windows for a
/// few days (for its queries), one with scaled-down windows until every
/// window is full (for its steady size), and a month of hour rollups to
/// query.
fn bounded(args: &StoreArgs, root: &Path) -> anyhow::Result<History> {
    eprintln!("history: three simulated stores, two at a time ...");
    let started = Instant::now();
    let full = full_plan(args.days);
    let scaled_config = scaled_config(args.window_scale);
    let scaled = plan(scaled_config.clone(), args.scaled_days, 3600, 24);
    let month = hours_only_plan(args.query_days, args.query_seconds);
    let (scaled, rest) = std::thread::scope(|s| {
        let scaled = s.spawn(|| run_sim(root, "scaled", &scaled));
        let rest = run_sim(root, "defaults", &full)
            .and_then(|full| Ok((full, run_sim(root, "month-of-hours", &month)?)));
        (scaled.join().expect("the simulation panicked"), rest)
    });
    let (scaled, (full, month)) = (scaled?, rest?);
    let wall = started.elapsed();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "### History on disk: one 10-hop target\n\n\
         Synthetic rounds (`storesim::SimModel`) written through `hopwatch::store::Store` \
         against a synthetic clock, one round per second, a flush every {FLUSH_EVERY_S} \
         synthetic seconds (the daemon's default), on {} ({:.0} s in all).\n\n\
         Retention bounds the disk only if sled reuses the space of swept keys, which \
         sled 0.34 does only on its background thread (`store::schema::sled_config`). To see \
         the size level off without simulating a year, a store with {} \
         (the defaults divided by {}), every second of {} days:\n",
        args.sim_dir.display(),
        wall.as_secs_f64(),
        windows_label(&scaled_config),
        args.window_scale,
        args.scaled_days
    );
    size_table(&mut out, &scaled.samples, args.scaled_days);
    let hour_days = scaled_config.hour_retention.as_secs_f64() / 86_400.0;
    let steady: Vec<f64> = scaled
        .samples
        .iter()
        .filter(|s| s.day > hour_days)
        .map(|s| s.allocated as f64)
        .collect();
    let steady_mean = steady.iter().sum::<f64>() / steady.len().max(1) as f64;
    let steady_max = steady.iter().copied().fold(0.0, f64::max);
    let scaled_logical = logical_total(&scaled_config);
    let per_logical = steady_max / scaled_logical;
    let _ = writeln!(
        out,
        "Once every window is full (day {hour_days:.0} on, {} samples): mean {}, max **{}**, \
         for {} of data: {per_logical:.2} bytes on disk per byte.\n",
        steady.len(),
        mib(steady_mean),
        mib(steady_max),
        mib(scaled_logical)
    );
    logical_table(&mut out, per_logical);
    let _ = writeln!(
        out,
        "The store with the default windows, every second of {} days (its queries below):\n",
        args.days
    );
    size_table(&mut out, &full.samples, args.days);
    let mut rows: Vec<_> = timings(&full, &[6 * HOUR_MS, DAY_MS], args.query_runs)?
        .into_iter()
        .map(|(s, o, a)| (s, o, a, format!("defaults, {} d", args.days)))
        .collect();
    rows.extend(
        timings(&month, &[30 * DAY_MS], args.query_runs)?
            .into_iter()
            .map(|(s, o, a)| {
                let note = format!(
                    "hour rollups only, {} d (the first {} s of each hour written)",
                    args.query_days, args.query_seconds
                );
                (s, o, a, note)
            }),
    );
    let _ = writeln!(
        out,
        "Query times (`Store::series`, `Resolution::Auto`, the last N hours or days before the \
         synthetic \"now\"; the destination series alone, then all 11 series of the target one \
         after the other, as the web UI reads a target's hops from rollups):\n"
    );
    out.push_str(&query_table(&rows));
    out.push('\n');
    Ok(History { report: out })
}

/// Only the store with the default windows, every second of `days` days.
fn full_only(args: &StoreArgs, root: &Path, days: u64) -> anyhow::Result<History> {
    eprintln!("history: every second of {days} days into one store (about 11 s per day) ...");
    let config = scaled_config(args.window_scale);
    let windows = windows_label(&config);
    let out = run_sim(root, "defaults", &plan(config, days, 3600, 24))?;
    let mut report = String::new();
    let _ = writeln!(
        report,
        "### History on disk: one 10-hop target, every second of {days} days\n\n\
         One store with {windows}, {} synthetic rounds (`storesim::SimModel`), a \
         flush every {FLUSH_EVERY_S} synthetic seconds, on {} ({:.0} s).\n",
        out.rounds,
        args.sim_dir.display(),
        out.wall.as_secs_f64()
    );
    size_table(&mut report, &out.samples, days);
    let last = out.samples.last().map_or(0, |s| s.allocated) as f64;
    let _ = writeln!(
        report,
        "Final: **{} per target**, {} for 1,000 such targets.\n",
        mib(last),
        gib(last * 1000.0)
    );
    let rows: Vec<_> = timings(&out, &[6 * HOUR_MS, DAY_MS, 30 * DAY_MS], args.query_runs)?
        .into_iter()
        .map(|(s, o, a)| (s, o, a, format!("defaults, {days} d")))
        .collect();
    report.push_str(&query_table(&rows));
    report.push('\n');
    Ok(History { report })
}
