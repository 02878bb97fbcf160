//! `bench-throughput`: what probing costs. One hopwatch engine traces N lab
//! targets (one process, the product's design) and, in the same lab right
//! after, N `mtr --report` processes trace the same targets (one per target, as
//! people run mtr); both at one round per second. Reported: probes per second,
//! CPU (user + system, from `wait4`) per probe, and whether every probe was
//! answered by the hop it should have been. A last run repeats hopwatch at the
//! largest N under a packet capture, to check each result against the wire:
//! no missed probes, no reply handed to the wrong probe.
//!
//! Run it through `deploy/bench.sh throughput`. The `engine` subcommand is the
//! hopwatch side, started by `run` inside the lab's source namespace.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use hopwatch::probe::{Engine, EngineConfig, FlowSpec, Protocol, TraceSpec, Ttl};
use hopwatch_lab::{
    bench::{
        capture::Capture,
        compare,
        cpu::{own_cpu, Finished, Running},
        machine::{Busy, CpuSample, Machine},
        pcap::CaptureIndex,
        stats::{percentile, ratio, ErrorSummary, Micros},
        tools::{self, ToolProbe},
    },
    Lab, LabSpec,
};

#[derive(Debug, Parser)]
#[command(name = "bench-throughput")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the lab and run the benchmark; prints a Markdown section.
    Run(RunArgs),
    /// (internal) One engine tracing the given targets; run inside the lab.
    #[command(hide = true)]
    Engine(EngineArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The mtr binary (Debian package mtr-tiny).
    #[arg(long, default_value = "mtr")]
    mtr: String,
    /// Target counts to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    targets: Vec<usize>,
    /// Routers between the prober and the targets (the path has one hop more).
    #[arg(long, default_value_t = 2)]
    routers: usize,
    /// Rounds per target.
    #[arg(long, default_value_t = 20)]
    rounds: u32,
    /// Skip the verification run under a capture.
    #[arg(long)]
    no_verify: bool,
    /// Where outputs are kept.
    #[arg(long, default_value = "target/bench/throughput")]
    out_dir: PathBuf,
}

#[derive(Debug, Args)]
struct EngineArgs {
    #[arg(long)]
    rounds: u32,
    #[arg(long)]
    interval_ms: u64,
    #[arg(long)]
    max_ttl: u8,
    /// Where to write the summary (JSON).
    #[arg(long)]
    summary: PathBuf,
    targets: Vec<IpAddr>,
}

/// One round per second, as the target says; a reply later than this is lost.
const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(1);

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run(args),
        Command::Engine(args) => engine(args),
    }
}

/// The hopwatch side: one engine, a trace per target, results printed at the end.
fn engine(args: EngineArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let engine = Engine::start(EngineConfig::default()).await?;
        let startup_cpu = own_cpu();
        let started = Instant::now();
        let max_ttl = Ttl::new(args.max_ttl).context("--max-ttl must be at least 1")?;
        let mut traces = Vec::new();
        for &dst in &args.targets {
            let spec = TraceSpec {
                flow: FlowSpec {
                    dst,
                    protocol: Protocol::Icmp,
                    dst_port: 0,
                    packet_size: 64,
                    timeout: TIMEOUT,
                },
                first_ttl: Ttl::new(1).expect("1 is a TTL"),
                max_ttl,
                rounds: Some(args.rounds),
                interval: Duration::from_millis(args.interval_ms),
            };
            let stream = engine.trace(spec)?;
            traces.push(tokio::spawn(
                async move { stream.collect::<Vec<_>>().await },
            ));
        }
        let mut results = Vec::new();
        for trace in traces {
            for result in trace.await? {
                results.push(result?);
            }
        }
        let probing_wall = started.elapsed();
        let probing_cpu = own_cpu().saturating_sub(startup_cpu);
        let stats = engine.stats();
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for result in &results {
            writeln!(out, "{}", hopwatch::report::raw_line(result))?;
        }
        out.flush()?;
        let summary = serde_json::json!({
            "timestamp_source": engine.timestamp_source().as_str(),
            "startup_cpu_s": startup_cpu.as_secs_f64(),
            "probing_cpu_s": probing_cpu.as_secs_f64(),
            "probing_wall_s": probing_wall.as_secs_f64(),
            "probes_sent": stats.probes_sent,
            "probes_answered": stats.probes_answered,
            "probes_timed_out": stats.probes_timed_out,
            "send_errors": stats.send_errors,
            "replies_unmatched": stats.replies_unmatched,
            "in_flight": stats.in_flight,
            "kernel": stats.kernel,
        });
        std::fs::write(&args.summary, summary.to_string())
            .with_context(|| format!("writing {}", args.summary.display()))?;
        anyhow::Ok(())
    })
}

/// One tool's run over N targets.
#[derive(Debug, Default)]
struct Outcome {
    tool: &'static str,
    targets: usize,
    processes: usize,
    sent: u64,
    answered: u64,
    wrong_responder: u64,
    /// Targets whose probe count is not rounds × hops.
    short_targets: usize,
    wall: Duration,
    cpu: Duration,
    /// How busy the whole machine was meanwhile.
    busy: Busy,
    /// hopwatch only: CPU of the probing phase, without start-up and output.
    steady_cpu: Option<Duration>,
    /// hopwatch only: how far round starts strayed from one per second (p99, max).
    round_jitter: Option<(Duration, Duration)>,
    notes: Vec<String>,
}

impl Outcome {
    fn cpu_per_probe_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.sent.max(1) as f64
    }
}

struct Bench<'a> {
    lab: &'a Lab,
    hops: usize,
    rounds: u32,
    mtr: &'a str,
    out_dir: &'a Path,
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let out_dir = std::fs::canonicalize(&args.out_dir)?;
    let machine = Machine::this();
    eprintln!("bench-throughput on {machine}");
    let most = args.targets.iter().copied().max().context("no --targets")?;
    let lab = LabSpec::chain(args.routers).targets(most).build()?;
    let hops = lab.expected_trace(lab.targets_v4()[0].into()).len();
    let bench = Bench {
        lab: &lab,
        hops,
        rounds: args.rounds,
        mtr: &args.mtr,
        out_dir: &out_dir,
    };
    let mut outcomes = Vec::new();
    for &n in &args.targets {
        eprintln!("{n} targets: hopwatch (one engine) ...");
        let (outcome, _) = bench.hopwatch(n, None)?;
        eprintln!("  {}", one_line(&outcome));
        outcomes.push(outcome);
        eprintln!("{n} targets: mtr (one process per target) ...");
        let outcome = bench.mtr(n)?;
        eprintln!("  {}", one_line(&outcome));
        outcomes.push(outcome);
    }
    let verification = if args.no_verify {
        None
    } else {
        eprintln!("{most} targets: hopwatch under a capture (verification) ...");
        let pcap = out_dir.join(format!("verify-{most}.pcap"));
        let (outcome, check) = bench.hopwatch(most, Some(&pcap))?;
        eprintln!("  {}", one_line(&outcome));
        Some((outcome, check.expect("a capture was taken")))
    };
    drop(lab);
    print!(
        "{}",
        report(&args, &machine, hops, &outcomes, verification.as_ref())
    );
    Ok(())
}

/// What the capture said about the verification run.
struct WireCheck {
    matched: compare::ProbeMatch,
    summary: Option<ErrorSummary>,
    captured: usize,
    dropped: Option<u64>,
}

fn one_line(o: &Outcome) -> String {
    format!(
        "{} probes sent, {} answered, {} wrong responder, {:.1} s, CPU {:.3} s = {:.1} µs/probe",
        o.sent,
        o.answered,
        o.wrong_responder,
        o.wall.as_secs_f64(),
        o.cpu.as_secs_f64(),
        o.cpu_per_probe_us()
    )
}

impl Bench<'_> {
    fn targets(&self, n: usize) -> Vec<IpAddr> {
        self.lab.targets_v4()[..n]
            .iter()
            .map(|&t| t.into())
            .collect()
    }

    /// Bounds every run: the rounds, the last timeout, and a generous margin
    /// for an overloaded machine. Processes still running then are killed.
    fn deadline(&self) -> Instant {
        Instant::now() + INTERVAL * self.rounds + TIMEOUT + Duration::from_secs(90)
    }

    fn hopwatch(
        &self,
        n: usize,
        pcap: Option<&Path>,
    ) -> anyhow::Result<(Outcome, Option<WireCheck>)> {
        let targets = self.targets(n);
        let stem = if pcap.is_some() { "verify" } else { "hopwatch" };
        let summary_path = self.out_dir.join(format!("{stem}-{n}.summary.json"));
        let mut cmd = std::process::Command::new(std::env::current_exe()?);
        cmd.args(["engine", "--rounds", &self.rounds.to_string()])
            .args(["--interval-ms", &INTERVAL.as_millis().to_string()])
            .args(["--max-ttl", &self.hops.to_string()])
            .arg("--summary")
            .arg(&summary_path)
            .args(targets.iter().map(|t| t.to_string()));
        let capture = match pcap {
            Some(path) => Some(Capture::start(self.lab, "src", "to-r1", path)?),
            None => None,
        };
        // Spawned from a thread inside the namespace, so the child starts there
        // without `ip netns exec` (whose set-up would count as its CPU).
        let cpu_before = CpuSample::now();
        let running = self.lab.run_in("src", move || Running::spawn(cmd))??;
        let finished = wait_all(vec![running], self.deadline())?
            .pop()
            .expect("one child")
            .check()?;
        let busy = CpuSample::now().since(&cpu_before);
        let capture = capture.map(|c| c.stop()).transpose()?;
        let output = finished.stdout_text();
        std::fs::write(self.out_dir.join(format!("{stem}-{n}.raw")), &output)?;
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&summary_path)
                .with_context(|| format!("reading {}", summary_path.display()))?,
        )?;
        let probes = tools::parse_hopwatch_raw(&output)?;

        let mut outcome = Outcome {
            tool: if pcap.is_some() {
                "hopwatch, under capture"
            } else {
                "hopwatch (1 engine)"
            },
            targets: n,
            processes: 1,
            wall: finished.wall,
            cpu: finished.cpu,
            busy,
            steady_cpu: summary["probing_cpu_s"]
                .as_f64()
                .map(Duration::from_secs_f64),
            ..Outcome::default()
        };
        let mut by_target: BTreeMap<IpAddr, Vec<&ToolProbe>> = BTreeMap::new();
        for p in &probes {
            by_target.entry(p.key.dst).or_default().push(p);
        }
        let expected_count = self.rounds as usize * self.hops;
        let mut jitter = Vec::new();
        for target in &targets {
            let list = by_target.remove(target).unwrap_or_default();
            if list.len() != expected_count {
                outcome.short_targets += 1;
            }
            let expected = self.lab.expected_trace(*target);
            for p in &list {
                outcome.sent += 1;
                if p.rtt_ns.is_some() {
                    outcome.answered += 1;
                    let want = expected.get(usize::from(p.ttl) - 1).copied().flatten();
                    if p.responder != want {
                        outcome.wrong_responder += 1;
                    }
                }
            }
            jitter.extend(round_jitter(&list, self.hops));
        }
        if !by_target.is_empty() {
            outcome.notes.push(format!(
                "{} results for targets not traced",
                by_target.len()
            ));
        }
        jitter.sort_unstable();
        outcome.round_jitter = percentile(&jitter, 99.0)
            .zip(jitter.last().copied())
            .map(|(p99, max)| (Duration::from_nanos(p99), Duration::from_nanos(max)));
        for key in [
            "timestamp_source",
            "send_errors",
            "replies_unmatched",
            "in_flight",
            "kernel",
        ] {
            outcome.notes.push(format!("{key} {}", summary[key]));
        }

        let check = match capture {
            Some(stats) => {
                let local = [IpAddr::from(self.lab.src_v4())];
                let index = CaptureIndex::read(&stats.path, &local)?;
                let matched = compare::match_probes(&probes, &index);
                Some(WireCheck {
                    summary: ErrorSummary::of(&matched.errors_ns),
                    matched,
                    captured: index.len(),
                    dropped: stats.dropped,
                })
            }
            None => None,
        };
        Ok((outcome, check))
    }

    fn mtr(&self, n: usize) -> anyhow::Result<Outcome> {
        let targets = self.targets(n);
        let started = Instant::now();
        let cpu_before = CpuSample::now();
        let rounds = self.rounds.to_string();
        let hops = self.hops.to_string();
        let secs = INTERVAL.as_secs_f64().to_string();
        let mtr = self.mtr.to_owned();
        let spawn_targets = targets.clone();
        let running = self.lab.run_in("src", move || {
            spawn_targets
                .iter()
                .map(|target| {
                    let mut cmd = std::process::Command::new(&mtr);
                    // -G 1: wait 1 s for the last replies, as hopwatch does
                    // (mtr's default is 5 s of idle waiting).
                    cmd.args(["-n", "--report", "-c", &rounds, "-i", &secs, "-m", &hops])
                        .args(["-G", "1"])
                        .arg(target.to_string());
                    Running::spawn(cmd)
                })
                .collect::<Result<Vec<_>, _>>()
        })??;
        let finished = wait_all(running, self.deadline())?;
        let wall = started.elapsed();
        let busy = CpuSample::now().since(&cpu_before);
        let mut outcome = Outcome {
            tool: "mtr (1 process per target)",
            targets: n,
            processes: n,
            wall,
            busy,
            ..Outcome::default()
        };
        let mut reports = String::new();
        let mut failed = 0;
        for (target, f) in targets.iter().zip(&finished) {
            outcome.cpu += f.cpu;
            let text = f.stdout_text();
            let _ = writeln!(reports, "== {target} ({})\n{text}", f.status);
            if !f.status.success() {
                failed += 1;
                continue;
            }
            let hops = tools::parse_mtr_report(&text)?;
            let sent: u64 = hops.iter().map(|h| h.sent).sum();
            if sent != self.rounds as u64 * self.hops as u64 {
                outcome.short_targets += 1;
            }
            let expected = self.lab.expected_trace(*target);
            for hop in &hops {
                outcome.sent += hop.sent;
                outcome.answered += hop.answered();
                let want = expected
                    .get(usize::from(hop.hop) - 1)
                    .copied()
                    .flatten()
                    .map(|a| a.to_string());
                if hop.answered() > 0 && want.as_deref() != Some(hop.host.as_str()) {
                    outcome.wrong_responder += hop.answered();
                }
            }
        }
        if failed > 0 {
            outcome
                .notes
                .push(format!("{failed} mtr processes failed or were killed"));
        }
        std::fs::write(self.out_dir.join(format!("mtr-{n}.reports")), reports)?;
        Ok(outcome)
    }
}

/// Waits for every child; kills (by PID) those still running at `deadline`.
fn wait_all(mut running: Vec<Running>, deadline: Instant) -> anyhow::Result<Vec<Finished>> {
    let mut done: Vec<Option<Finished>> = (0..running.len()).map(|_| None).collect();
    let mut pending: Vec<(usize, Running)> = running.drain(..).enumerate().collect();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for (i, child) in pending {
            match child.try_wait()? {
                Ok(finished) => done[i] = Some(finished),
                Err(child) if Instant::now() >= deadline => {
                    eprintln!(
                        "  killing `{}` (pid {}): past the deadline",
                        child.command(),
                        child.pid()
                    );
                    done[i] = Some(child.kill()?);
                }
                Err(child) => still.push((i, child)),
            }
        }
        pending = still;
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    match done.into_iter().collect::<Option<Vec<_>>>() {
        Some(all) => Ok(all),
        None => bail!("a child was neither waited for nor killed"),
    }
}

/// |gap between consecutive round starts − interval| for one target, in ns.
/// A round's probes leave together, so its start is its earliest send.
fn round_jitter(probes: &[&ToolProbe], hops: usize) -> Vec<u64> {
    let mut sent: Vec<u64> = probes.iter().filter_map(|p| p.sent_ns).collect();
    sent.sort_unstable();
    let starts: Vec<u64> = sent.chunks(hops).map(|c| c[0]).collect();
    let interval = INTERVAL.as_nanos() as i64;
    starts
        .windows(2)
        .map(|w| (w[1] as i64 - w[0] as i64 - interval).unsigned_abs())
        .collect()
}

fn report(
    args: &RunArgs,
    machine: &Machine,
    hops: usize,
    outcomes: &[Outcome],
    verification: Option<&(Outcome, WireCheck)>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Machine: {machine}.\n");
    let _ = writeln!(
        out,
        "Lab: `LabSpec::chain({}).targets(N)`, {hops} hops per target; {} rounds per target, one per second; \
         ICMP probes, max TTL {hops}, 1 s timeout. hopwatch: one engine (eBPF timestamps) in one process; \
         mtr: `mtr -n --report -c {} -i 1 -m {hops} -G 1 TARGET`, one process per target, all at once. \
         CPU = user + system time from `wait4` (mtr's includes the mtr-packet child it reaps).\n",
        args.routers, args.rounds, args.rounds
    );
    let _ = writeln!(
        out,
        "| targets | tool | processes | probes sent | answered | wrong hop | wall s | probes/s | CPU s | CPU µs/probe | mtr ÷ hopwatch | machine busy % (steal) |"
    );
    let _ = writeln!(
        out,
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for o in outcomes {
        let hopwatch = outcomes
            .iter()
            .find(|x| x.targets == o.targets && x.processes == 1);
        let vs = match hopwatch {
            Some(h) if o.processes > 1 => ratio(o.cpu_per_probe_us(), h.cpu_per_probe_us()),
            _ => "–".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.1} | {:.0} | {:.2} | {:.1} | {} | {:.0} ({:.1}) |",
            o.targets,
            o.tool,
            o.processes,
            o.sent,
            o.answered,
            o.wrong_responder,
            o.wall.as_secs_f64(),
            o.sent as f64 / o.wall.as_secs_f64(),
            o.cpu.as_secs_f64(),
            o.cpu_per_probe_us(),
            vs,
            o.busy.busy_pct,
            o.busy.steal_pct
        );
    }
    let _ = writeln!(out, "\nhopwatch details:\n");
    for o in outcomes.iter().chain(verification.map(|v| &v.0)) {
        if o.processes != 1 {
            continue;
        }
        let (p99, max) = o.round_jitter.unwrap_or_default();
        let _ = writeln!(
            out,
            "- {} targets, {}: probing-phase CPU {} ({:.1} µs/probe, start-up and output excluded); \
             round starts off the 1 s grid by p99 {} µs, max {} µs; targets with a wrong probe count: {}; {}.",
            o.targets,
            o.tool,
            o.steady_cpu
                .map_or("?".to_owned(), |c| format!("{:.2} s", c.as_secs_f64())),
            o.steady_cpu
                .map_or(0.0, |c| c.as_secs_f64() * 1e6 / o.sent.max(1) as f64),
            Micros::ns(p99.as_nanos() as u64),
            Micros::ns(max.as_nanos() as u64),
            o.short_targets,
            o.notes.join(", ")
        );
    }
    for o in outcomes.iter().filter(|o| o.processes > 1) {
        let _ = writeln!(
            out,
            "- {} targets, {}: targets with a wrong probe count: {}{}.",
            o.targets,
            o.tool,
            o.short_targets,
            if o.notes.is_empty() {
                String::new()
            } else {
                format!("; {}", o.notes.join(", "))
            }
        );
    }
    if let Some((o, check)) = verification {
        let m = &check.matched;
        let _ = writeln!(
            out,
            "\nVerification against the wire ({} targets, tcpdump on `to-r1`, {} probes captured, \
             {} capture drops): {} results, {} matched to a captured probe and reply, {} timed out, \
             {} answered but not in the capture, {} TTL mismatches, {} responder mismatches \
             (a reply handed to the wrong probe would show here).",
            o.targets,
            check.captured,
            check.dropped.map_or("?".to_owned(), |d| d.to_string()),
            m.reported,
            m.errors_ns.len(),
            m.timed_out,
            m.not_in_capture,
            m.ttl_mismatch,
            m.responder_mismatch
        );
        if let Some(s) = &check.summary {
            let _ = writeln!(
                out,
                "At this rate the eBPF RTT error against the capture was p50 {} µs, p99 {} µs, max {} µs.",
                Micros::ns(s.p50_abs_ns),
                Micros::ns(s.p99_abs_ns),
                Micros::ns(s.max_abs_ns)
            );
        }
    }
    out
}
