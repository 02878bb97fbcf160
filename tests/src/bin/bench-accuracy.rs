//! `bench-accuracy`: how far each tool's per-probe RTT is from the truth on the
//! wire. A lab path of 5 hops is traced by hopwatch (eBPF, `--timestamps kernel`,
//! `--timestamps userspace`), mtr and trippy, one after the other, while tcpdump
//! captures the prober's interface with nanosecond stamps; each probe is matched
//! to the capture by its identity on the wire and error = tool RTT − capture RTT.
//! All of it runs once on an idle machine and once under stress-ng load.
//!
//! Run it through `deploy/bench.sh accuracy` (which installs the peers); it
//! prints a Markdown section for docs/benchmarks.md and leaves the captures and
//! tool outputs in `--out-dir`.

use std::{
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use hopwatch_lab::{
    bench::{
        capture::{Capture, CaptureStats},
        compare::{self, HopErrors, ProbeMatch},
        cpu::Running,
        load::{StressLoad, STRESSORS},
        machine::{Busy, CpuSample, Machine},
        pcap::CaptureIndex,
        stats::{ratio, ErrorSummary, Micros},
        tools,
    },
    Lab, LabSpec,
};

/// Per-probe RTT accuracy of hopwatch, mtr and trippy against a packet capture.
#[derive(Debug, Parser)]
struct Args {
    /// The hopwatch binary (build it with `cargo build --release -p hopwatch-service`).
    #[arg(long, default_value = "target/release/hopwatch")]
    hopwatch: PathBuf,
    /// The mtr binary (Debian package mtr-tiny).
    #[arg(long, default_value = "mtr")]
    mtr: String,
    /// The trippy binary (`cargo install --locked trippy`).
    #[arg(long, default_value = "trip")]
    trippy: String,
    /// The stress-ng binary, for the runs under load.
    #[arg(long, default_value = "stress-ng")]
    stress_ng: String,
    /// Routers between the prober and the target (the path has one hop more).
    #[arg(long, default_value_t = 4)]
    routers: usize,
    /// Rounds per tool (one probe per hop per round).
    #[arg(long, default_value_t = 200)]
    rounds: u32,
    /// Milliseconds between rounds.
    #[arg(long, default_value_t = 50)]
    interval_ms: u64,
    /// Conditions to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "idle,load")]
    conditions: Vec<Condition>,
    /// Tools to run, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "hopwatch-ebpf,hopwatch-kernel,hopwatch-userspace,mtr,trippy,hopwatch-ebpf-udp,hopwatch-ebpf-tcp"
    )]
    tools: Vec<Tool>,
    /// Where captures and tool outputs are kept.
    #[arg(long, default_value = "target/bench/accuracy")]
    out_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Condition {
    Idle,
    Load,
}

impl Condition {
    fn name(self) -> &'static str {
        match self {
            Condition::Idle => "idle",
            Condition::Load => "load",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Tool {
    HopwatchEbpf,
    HopwatchKernel,
    HopwatchUserspace,
    HopwatchEbpfUdp,
    HopwatchEbpfTcp,
    Mtr,
    Trippy,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::HopwatchEbpf => "hopwatch eBPF",
            Tool::HopwatchKernel => "hopwatch --timestamps kernel",
            Tool::HopwatchUserspace => "hopwatch --timestamps userspace",
            Tool::HopwatchEbpfUdp => "hopwatch eBPF, UDP probes",
            Tool::HopwatchEbpfTcp => "hopwatch eBPF, TCP SYN probes",
            Tool::Mtr => "mtr (mtr-tiny)",
            Tool::Trippy => "trippy",
        }
    }

    fn file_stem(self) -> &'static str {
        match self {
            Tool::HopwatchEbpf => "hopwatch-ebpf",
            Tool::HopwatchKernel => "hopwatch-kernel",
            Tool::HopwatchUserspace => "hopwatch-userspace",
            Tool::HopwatchEbpfUdp => "hopwatch-ebpf-udp",
            Tool::HopwatchEbpfTcp => "hopwatch-ebpf-tcp",
            Tool::Mtr => "mtr",
            Tool::Trippy => "trippy",
        }
    }

    /// The `--timestamps` value and protocol of a hopwatch run.
    fn hopwatch(self) -> Option<(&'static str, &'static str)> {
        match self {
            Tool::HopwatchEbpf => Some(("ebpf", "icmp")),
            Tool::HopwatchKernel => Some(("kernel", "icmp")),
            Tool::HopwatchUserspace => Some(("userspace", "icmp")),
            Tool::HopwatchEbpfUdp => Some(("ebpf", "udp")),
            Tool::HopwatchEbpfTcp => Some(("ebpf", "tcp")),
            Tool::Mtr | Tool::Trippy => None,
        }
    }
}

/// One tool's run under one condition.
struct RunResult {
    condition: Condition,
    tool: Tool,
    /// Per-probe matching, for tools that report probes.
    probes: Option<ProbeMatch>,
    summary: Option<ErrorSummary>,
    hops: HopErrors,
    capture: CaptureStats,
    captured_probes: usize,
    wall: Duration,
    /// How busy the whole machine was meanwhile.
    busy: Busy,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let hopwatch = std::fs::canonicalize(&args.hopwatch).with_context(|| {
        format!(
            "the hopwatch binary {} (build it: cargo build --release -p hopwatch-service)",
            args.hopwatch.display()
        )
    })?;
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let out_dir = std::fs::canonicalize(&args.out_dir)?;
    let machine = Machine::this();
    eprintln!("bench-accuracy on {machine}");

    let lab = LabSpec::chain(args.routers).targets(1).build()?;
    let target: IpAddr = lab.targets_v4()[0].into();
    let local = [IpAddr::from(lab.src_v4()), IpAddr::from(lab.src_v6())];
    let hops = lab.expected_trace(target).len();
    let interval = Duration::from_millis(args.interval_ms);
    let setup = Setup {
        lab: &lab,
        target,
        local: &local,
        hops,
        rounds: args.rounds,
        interval,
        hopwatch: &hopwatch,
        mtr: &args.mtr,
        trippy: &args.trippy,
        out_dir: &out_dir,
    };

    let mut results = Vec::new();
    for &condition in &args.conditions {
        // Bounded by its own timeout even if this process dies: each tool
        // needs about rounds × interval plus start-up.
        let per_tool = interval * args.rounds + Duration::from_secs(10);
        let load = match condition {
            Condition::Idle => None,
            Condition::Load => Some(StressLoad::start(
                &args.stress_ng,
                per_tool * args.tools.len() as u32 + Duration::from_secs(60),
            )?),
        };
        for &tool in &args.tools {
            eprintln!("{}: {} ...", condition.name(), tool.name());
            let result = setup
                .run(condition, tool)
                .with_context(|| format!("{} run of {}", condition.name(), tool.name()))?;
            eprintln!("  {}", one_line(&result));
            results.push(result);
        }
        if let Some(load) = load {
            load.stop()?;
        }
    }
    drop(lab);

    print!("{}", report(&args, &machine, hops, &results));
    std::fs::write(out_dir.join("results.json"), json(&results).to_string())?;
    Ok(())
}

struct Setup<'a> {
    lab: &'a Lab,
    target: IpAddr,
    local: &'a [IpAddr],
    hops: usize,
    rounds: u32,
    interval: Duration,
    hopwatch: &'a Path,
    mtr: &'a str,
    trippy: &'a str,
    out_dir: &'a Path,
}

impl Setup<'_> {
    fn command(&self, tool: Tool) -> anyhow::Result<std::process::Command> {
        let rounds = self.rounds.to_string();
        let hops = self.hops.to_string();
        let secs = format!("{}", self.interval.as_secs_f64());
        let target = self.target.to_string();
        let cmd = if let Some((timestamps, protocol)) = tool.hopwatch() {
            let mut cmd = self.lab.command("src", &self.hopwatch.to_string_lossy())?;
            cmd.args(["trace", "--raw", "-c", &rounds, "-i", &secs, "-m", &hops])
                .args([
                    "-w",
                    "1",
                    "--timestamps",
                    timestamps,
                    "-P",
                    protocol,
                    &target,
                ]);
            cmd
        } else if tool == Tool::Mtr {
            let mut cmd = self.lab.command("src", self.mtr)?;
            // -G 1: wait 1 s for the last replies, like hopwatch's -w 1 (mtr's default is 5 s).
            cmd.args([
                "--raw", "-n", "-c", &rounds, "-i", &secs, "-m", &hops, "-G", "1",
            ])
            .arg(&target);
            cmd
        } else {
            let mut cmd = self.lab.command("src", self.trippy)?;
            let ms = format!("{}ms", self.interval.as_millis());
            cmd.args([
                "--mode", "json", "-4", "-C", &rounds, "-i", &ms, "-g", "10ms",
            ])
            .args(["--max-ttl", &hops, &target]);
            cmd
        };
        Ok(cmd)
    }

    fn run(&self, condition: Condition, tool: Tool) -> anyhow::Result<RunResult> {
        let stem = format!("{}-{}", condition.name(), tool.file_stem());
        let pcap = self.out_dir.join(format!("{stem}.pcap"));
        let capture = Capture::start(self.lab, "src", "to-r1", &pcap)?;
        let started = Instant::now();
        let cpu_before = CpuSample::now();
        let finished = Running::spawn(self.command(tool)?)?.wait()?.check()?;
        let busy = CpuSample::now().since(&cpu_before);
        let wall = started.elapsed();
        let capture = capture.stop()?;
        let output = finished.stdout_text();
        std::fs::write(self.out_dir.join(format!("{stem}.out")), &output)?;
        let index = CaptureIndex::read(&pcap, self.local)?;

        let (probes, tool_hops, capture_hops) = if tool == Tool::Trippy {
            let tool_hops = tools::parse_trippy_json(&output)?;
            (None, tool_hops, compare::capture_hops(&index, self.target))
        } else {
            let probes = if tool == Tool::Mtr {
                let raw = tools::parse_mtr_raw(&output)?;
                let ids = index.icmp_ids();
                let [id] = ids.iter().copied().collect::<Vec<_>>()[..] else {
                    bail!(
                        "expected mtr-packet's one ICMP identifier in the capture, found {ids:?}"
                    );
                };
                raw.probes(self.target, id)
            } else {
                tools::parse_hopwatch_raw(&output)?
            };
            let matched = compare::match_probes(&probes, &index);
            let tool_hops = compare::tool_hops(&matched.tool_rtts());
            let capture_hops = compare::tool_hops(&matched.capture_rtts());
            (Some(matched), tool_hops, capture_hops)
        };
        Ok(RunResult {
            condition,
            tool,
            summary: probes.as_ref().and_then(|p| ErrorSummary::of(&p.errors_ns)),
            probes,
            hops: compare::compare_hops(&tool_hops, &capture_hops),
            capture,
            captured_probes: index.len(),
            wall,
            busy,
        })
    }
}

fn one_line(r: &RunResult) -> String {
    match (&r.summary, &r.probes) {
        (Some(s), Some(p)) => format!(
            "{} probes matched of {} reported; |error| p50 {} µs, p99 {} µs, max {} µs; capture dropped {:?}",
            s.probes,
            p.reported,
            Micros::ns(s.p50_abs_ns),
            Micros::ns(s.p99_abs_ns),
            Micros::ns(s.max_abs_ns),
            r.capture.dropped
        ),
        _ => format!(
            "{} hops compared; max |avg error| {} µs; {} probes captured",
            r.hops.hops,
            Micros(r.hops.avg_ns / 1e3),
            r.captured_probes
        ),
    }
}

fn report(args: &Args, machine: &Machine, hops: usize, results: &[RunResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Machine: {machine}.\n");
    let _ = writeln!(
        out,
        "Lab: `LabSpec::chain({})`, {hops} hops to one IPv4 target; {} rounds per tool, {} ms apart; \
         capture: tcpdump on the prober's interface (`to-r1` in `src`), `--time-stamp-precision=nano`. \
         Load: `stress-ng {} --timeout …`.\n",
        args.routers,
        args.rounds,
        args.interval_ms,
        STRESSORS.join(" ")
    );
    let _ = writeln!(out, "Per-probe |tool RTT − capture RTT| in µs:\n");
    let _ = writeln!(
        out,
        "| condition | tool | probes matched | p50 | p99 | max | mean (signed) | p99 vs hopwatch eBPF | max vs hopwatch eBPF |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let reference = results
            .iter()
            .find(|x| x.condition == r.condition && x.tool == Tool::HopwatchEbpf)
            .and_then(|x| x.summary);
        match (&r.summary, &r.probes) {
            (Some(s), Some(p)) => {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} / {} | {} | {} | {} | {:+.1} | {} | {} |",
                    r.condition.name(),
                    r.tool.name(),
                    s.probes,
                    p.reported,
                    Micros::ns(s.p50_abs_ns),
                    Micros::ns(s.p99_abs_ns),
                    Micros::ns(s.max_abs_ns),
                    s.mean_ns / 1e3,
                    reference.map_or("–".to_owned(), |e| ratio(
                        s.p99_abs_ns as f64,
                        e.p99_abs_ns as f64
                    )),
                    reference.map_or("–".to_owned(), |e| ratio(
                        s.max_abs_ns as f64,
                        e.max_abs_ns as f64
                    )),
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "| {} | {} | per-hop only | – | – | – | – | – | – |",
                    r.condition.name(),
                    r.tool.name()
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "\nPer-hop figures, |tool − capture| in µs, the largest over the {hops} hops \
         (trippy reports only these, rounded to 10 µs):\n"
    );
    let _ = writeln!(out, "| condition | tool | hops | best | avg | worst |");
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|");
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            r.condition.name(),
            r.tool.name(),
            r.hops.hops,
            Micros(r.hops.best_ns / 1e3),
            Micros(r.hops.avg_ns / 1e3),
            Micros(r.hops.worst_ns / 1e3)
        );
    }
    let _ = writeln!(
        out,
        "\nBookkeeping (nothing here should be non-zero but the sources):\n"
    );
    let _ = writeln!(
        out,
        "| condition | tool | wall s | machine busy % (steal) | captured probes | capture drops | timed out | not in capture | TTL mismatch | responder mismatch | sources |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in results {
        let p = r.probes.clone().unwrap_or_default();
        let sources = p
            .sources
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.0} ({:.1}) | {} | {} | {} | {} | {} | {} | {} |",
            r.condition.name(),
            r.tool.name(),
            r.wall.as_secs_f64(),
            r.busy.busy_pct,
            r.busy.steal_pct,
            r.captured_probes,
            r.capture.dropped.map_or("?".to_owned(), |d| d.to_string()),
            p.timed_out,
            p.not_in_capture,
            p.ttl_mismatch,
            p.responder_mismatch,
            if sources.is_empty() {
                "–".to_owned()
            } else {
                sources
            },
        );
    }
    out
}

fn json(results: &[RunResult]) -> serde_json::Value {
    serde_json::Value::Array(
        results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "condition": r.condition.name(),
                    "tool": r.tool.name(),
                    "probes_matched": r.summary.map(|s| s.probes),
                    "p50_abs_ns": r.summary.map(|s| s.p50_abs_ns),
                    "p99_abs_ns": r.summary.map(|s| s.p99_abs_ns),
                    "max_abs_ns": r.summary.map(|s| s.max_abs_ns),
                    "mean_ns": r.summary.map(|s| s.mean_ns),
                    "hop_max_abs_ns": {
                        "best": r.hops.best_ns, "avg": r.hops.avg_ns, "worst": r.hops.worst_ns,
                    },
                    "capture_dropped": r.capture.dropped,
                    "captured_probes": r.captured_probes,
                    "wall_s": r.wall.as_secs_f64(),
                    "machine_busy_pct": r.busy.busy_pct,
                    "steal_pct": r.busy.steal_pct,
                })
            })
            .collect(),
    )
}
