//! `bench-stamp`: how accurate and how cheap hopwatch's STAMP peer measurement is.
//!
//! In a one-router lab it runs `hopwatch reflect` in `dst` and `hopwatch peer
//! --raw` in `src` (separate processes, so each end's CPU is its own), while
//! tcpdump captures both ends' interfaces with nanosecond stamps. Then, per probe:
//!
//! * sender error: our RTT − (reply seen − request seen on src's wire − the
//!   reflector's own hold time T3 − T2 from the reply): how well T1 and T4 match
//!   the wire;
//! * total error: our RTT − the network RTT from both captures (src's wire time
//!   minus dst's wire hold time; both namespaces share one kernel clock): T1,
//!   T2, T3 and T4 together;
//! * the reflector's T2 and T3 against dst's wire.
//!
//! CPU is each process's user + system time (wait4) per second of run, per
//! 1,000 probes per second. Usage (release build of both crates):
//!
//! ```text
//! cargo build --release -p hopwatch-service -p hopwatch-tests
//! target/release/bench-stamp --seconds 10
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use etherparse::{SlicedPacket, TransportSlice};
use hopwatch_lab::bench::{
    capture::Capture,
    cpu::Running,
    machine::Machine,
    stats::{ErrorSummary, Micros},
};
use hopwatch_lab::LabSpec;
use pcap_file::pcap::PcapReader;

#[derive(Debug, Parser)]
#[command(about = "Accuracy (against packet captures) and CPU cost of hopwatch's STAMP sessions")]
struct Args {
    /// The hopwatch binary to measure.
    #[arg(long, default_value = "target/release/hopwatch")]
    hopwatch: PathBuf,
    /// Seconds each run sends for.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Probe intervals to run (humantime: 1ms, 250us, ...).
    #[arg(long, value_delimiter = ',', default_value = "1ms,250us")]
    intervals: Vec<humantime::Duration>,
    /// IP packet size.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Also run each interval without eBPF (SO_TIMESTAMPING T1, userspace T3),
    /// and with userspace timestamps everywhere, for comparison.
    #[arg(long)]
    compare_userspace: bool,
    /// Where the captures go (kept for inspection).
    #[arg(long, default_value = "/tmp/bench-stamp")]
    out_dir: PathBuf,
}

const PORT: u16 = 862;

/// One probe as hopwatch reported it (the fields of its `--raw` lines we use).
#[derive(Debug, serde::Deserialize)]
struct RawSample {
    outcome: String,
    seq: u32,
    #[serde(default)]
    rtt_ns: u64,
}

/// What the capture of one interface saw of the session.
#[derive(Debug, Default)]
struct Wire {
    /// Request seen, by sender sequence.
    request_ns: BTreeMap<u32, u64>,
    /// Reply seen, by sender sequence, with the T2 and T3 it carries (Unix ns).
    reply: BTreeMap<u32, (u64, u64, u64)>,
}

fn ntp_to_unix_ns(raw: u64) -> u64 {
    let secs = (raw >> 32) - 2_208_988_800;
    let frac = raw & 0xffff_ffff;
    secs * 1_000_000_000 + ((frac * 1_000_000_000 + (1 << 31)) >> 32)
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads the STAMP packets of a capture, parsed here from the RFC's offsets
/// (independently of hopwatch's own parser).
fn read_wire(path: &Path) -> Result<Wire> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = PcapReader::new(std::io::BufReader::new(file))
        .with_context(|| format!("reading {}", path.display()))?;
    let mut wire = Wire::default();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.with_context(|| format!("reading {}", path.display()))?;
        let at = packet.timestamp.as_nanos() as u64;
        let Ok(sliced) = SlicedPacket::from_ethernet(&packet.data) else {
            continue;
        };
        let Some(TransportSlice::Udp(udp)) = sliced.transport else {
            continue;
        };
        let payload = udp.payload();
        if payload.len() < 44 {
            continue;
        }
        if udp.destination_port() == PORT {
            wire.request_ns.entry(be_u32(payload, 0)).or_insert(at);
        } else if udp.source_port() == PORT {
            let t3 = ntp_to_unix_ns(be_u64(payload, 4));
            let t2 = ntp_to_unix_ns(be_u64(payload, 16));
            wire.reply
                .entry(be_u32(payload, 24))
                .or_insert((at, t2, t3));
        }
    }
    Ok(wire)
}

/// Where the timestamps come from in one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stamps {
    /// T1 and T3 written at TC egress by eBPF; T2 and T4 the kernel's receive stamps.
    Ebpf,
    /// SO_TIMESTAMPING for T1, T2, T4; T3 from the reflector's userspace clock.
    Kernel,
    /// The userspace clock for all four.
    Userspace,
}

impl Stamps {
    fn label(self) -> &'static str {
        match self {
            Stamps::Ebpf => "eBPF T1/T3",
            Stamps::Kernel => "SO_TIMESTAMPING, userspace T3",
            Stamps::Userspace => "userspace",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Stamps::Ebpf => "",
            Stamps::Kernel => "-kernel",
            Stamps::Userspace => "-user",
        }
    }
}

struct RunResult {
    label: String,
    pps: f64,
    sent: usize,
    answered: usize,
    sender_error: ErrorSummary,
    total_error: ErrorSummary,
    t2_error: ErrorSummary,
    t3_error: ErrorSummary,
    sender_cpu_per_kpps: f64,
    reflector_cpu_per_kpps: f64,
    captures_dropped: u64,
}

fn run_once(args: &Args, interval: Duration, stamps: Stamps) -> Result<RunResult> {
    let userspace = stamps == Stamps::Userspace;
    let lab = LabSpec::chain(1).targets(1).build()?;
    let dst = lab.interface("dst", "r1")?.clone();
    let src_if = lab.interface("src", "r1")?.ifname.clone();
    let peer = SocketAddr::new(IpAddr::V4(dst.v4), PORT);
    let tag = format!("{}us{}", interval.as_micros(), stamps.tag());
    std::fs::create_dir_all(&args.out_dir)?;
    let src_pcap = args.out_dir.join(format!("src-{tag}.pcap"));
    let dst_pcap = args.out_dir.join(format!("dst-{tag}.pcap"));
    let src_capture = Capture::start(&lab, "src", &src_if, &src_pcap)?;
    let dst_capture = Capture::start(&lab, "dst", &dst.ifname, &dst_pcap)?;

    let hopwatch = args
        .hopwatch
        .to_str()
        .context("hopwatch path is not UTF-8")?;
    let mut reflect = lab.command("dst", hopwatch)?;
    reflect.args(["reflect", "--listen", &peer.to_string(), "--no-tcp"]);
    if userspace {
        reflect.arg("--userspace-timestamps");
    }
    if stamps != Stamps::Ebpf {
        reflect.arg("--no-ebpf");
    }
    let reflector = Running::spawn(reflect)?;
    std::thread::sleep(Duration::from_millis(300));

    let count = (args.seconds as f64 / interval.as_secs_f64()).round() as u64;
    let mut send = lab.command("src", hopwatch)?;
    send.args(["peer", &peer.to_string(), "--raw", "--shared-clock"])
        .args(["-i", &humantime::format_duration(interval).to_string()])
        .args([
            "-c",
            &count.to_string(),
            "-s",
            &args.size.to_string(),
            "-w",
            "1s",
        ]);
    if userspace {
        send.arg("--userspace-timestamps");
    }
    if stamps != Stamps::Ebpf {
        send.arg("--no-ebpf");
    }
    let sender = Running::spawn(send)?.wait()?.check()?;
    let reflector = reflector.kill()?;
    let src_stats = src_capture.stop()?;
    let dst_stats = dst_capture.stop()?;

    let samples: Vec<RawSample> = sender
        .stdout_text()
        .lines()
        .map(serde_json::from_str)
        .collect::<std::result::Result<_, _>>()
        .context("parsing hopwatch peer --raw")?;
    let src = read_wire(&src_pcap)?;
    let dstw = read_wire(&dst_pcap)?;
    let (mut sender_err, mut total_err, mut t2_err, mut t3_err) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut answered = 0;
    for s in samples.iter().filter(|s| s.outcome == "reflected") {
        answered += 1;
        let (Some(&req), Some(&(rep, t2, t3))) =
            (src.request_ns.get(&s.seq), src.reply.get(&s.seq))
        else {
            continue;
        };
        let (Some(&dreq), Some(&(drep, _, _))) =
            (dstw.request_ns.get(&s.seq), dstw.reply.get(&s.seq))
        else {
            continue;
        };
        let ours = s.rtt_ns as i64;
        let wire_hold = drep as i64 - dreq as i64;
        sender_err.push(ours - ((rep as i64 - req as i64) - (t3 as i64 - t2 as i64)));
        total_err.push(ours - ((rep as i64 - req as i64) - wire_hold));
        t2_err.push(t2 as i64 - dreq as i64);
        t3_err.push(t3 as i64 - drep as i64);
    }
    ensure!(!sender_err.is_empty(), "no probe matched both captures");
    let wall = interval.as_secs_f64() * count as f64;
    let pps = 1.0 / interval.as_secs_f64();
    let per_kpps = |cpu: Duration, wall_s: f64| cpu.as_secs_f64() / wall_s / (pps / 1000.0) * 100.0;
    Ok(RunResult {
        label: format!(
            "{} ({})",
            humantime::format_duration(interval),
            stamps.label()
        ),
        pps,
        sent: count as usize,
        answered,
        sender_error: ErrorSummary::of(&sender_err).context("sender errors")?,
        total_error: ErrorSummary::of(&total_err).context("total errors")?,
        t2_error: ErrorSummary::of(&t2_err).context("T2 errors")?,
        t3_error: ErrorSummary::of(&t3_err).context("T3 errors")?,
        sender_cpu_per_kpps: per_kpps(sender.cpu, sender.wall.as_secs_f64().max(wall)),
        // The reflector ran from before the first probe to after the last: its
        // CPU is spread over the sending time.
        reflector_cpu_per_kpps: per_kpps(reflector.cpu, wall),
        captures_dropped: src_stats.dropped.unwrap_or(0) + dst_stats.dropped.unwrap_or(0),
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !args.hopwatch.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p hopwatch-service`",
            args.hopwatch.display()
        );
    }
    let mut results = Vec::new();
    for interval in &args.intervals {
        let interval: Duration = (*interval).into();
        results.push(run_once(&args, interval, Stamps::Ebpf)?);
        if args.compare_userspace {
            results.push(run_once(&args, interval, Stamps::Kernel)?);
            results.push(run_once(&args, interval, Stamps::Userspace)?);
        }
    }
    println!("Machine: {}\n", Machine::this());
    println!("| interval (stamps) | probes/s | answered | sender error p50 / p99 / max µs (mean) | total error p50 / p99 / max µs (mean) | T2 − wire p50 µs (mean) | T3 − wire p50 µs (mean) | CPU sender / reflector, % of a core per 1,000 probes/s | capture drops |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &results {
        let e = |s: &ErrorSummary| {
            format!(
                "{} / {} / {} ({})",
                Micros::ns(s.p50_abs_ns),
                Micros::ns(s.p99_abs_ns),
                Micros::ns(s.max_abs_ns),
                Micros(s.mean_ns / 1e3)
            )
        };
        let m = |s: &ErrorSummary| {
            format!("{} ({})", Micros::ns(s.p50_abs_ns), Micros(s.mean_ns / 1e3))
        };
        println!(
            "| {} | {:.0} | {}/{} | {} | {} | {} | {} | {:.2} / {:.2} | {} |",
            r.label,
            r.pps,
            r.answered,
            r.sent,
            e(&r.sender_error),
            e(&r.total_error),
            m(&r.t2_error),
            m(&r.t3_error),
            r.sender_cpu_per_kpps,
            r.reflector_cpu_per_kpps,
            r.captures_dropped
        );
    }
    Ok(())
}
