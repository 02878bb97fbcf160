//! `hopwatch trace <host>`: trace a path for a number of rounds and print an
//! mtr-style report, JSON, CSV, or one raw line per probe.

use std::io::Write;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use clap::{ArgGroup, Args};
use futures::StreamExt;

use super::exit;
use crate::probe::multipath::{
    Confidence, MdaConfig, MultipathError, MultipathSpec, MultipathTrace,
};
use crate::probe::transport::TransportError;
use crate::probe::Engine;
use crate::probe::{
    EngineConfig, EngineError, FlowSpec, Protocol, SourceSelection, TimestampPreference, TraceSpec,
    Ttl,
};
use crate::report::{raw_line, TraceHeader, TraceReport};

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("format").args(["json", "csv", "raw"])))]
#[command(group(ArgGroup::new("family").args(["ipv4", "ipv6"])))]
pub struct TraceArgs {
    /// Host name or IP address to trace.
    pub host: String,

    /// Number of rounds (probes per hop).
    #[arg(short = 'c', long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,

    /// Seconds between rounds (fractions allowed, minimum 0.01).
    #[arg(short = 'i', long, default_value_t = 1.0, value_parser = parse_interval)]
    pub interval: f64,

    /// Probe protocol.
    #[arg(short = 'P', long, default_value = "icmp")]
    pub protocol: Protocol,

    /// Destination port for UDP and TCP probes [default: 33434 for UDP, 80 for TCP].
    #[arg(short = 'p', long)]
    pub port: Option<u16>,

    /// IP packet size in bytes, headers included.
    #[arg(short = 's', long = "size", default_value_t = 64)]
    pub packet_size: usize,

    /// First TTL to probe.
    #[arg(short = 'f', long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..))]
    pub first_ttl: u8,

    /// Largest TTL to probe.
    #[arg(short = 'm', long, default_value_t = 30, value_parser = clap::value_parser!(u8).range(1..))]
    pub max_ttl: u8,

    /// Seconds to wait for each reply.
    #[arg(short = 'w', long, default_value_t = 2.0, value_parser = parse_timeout)]
    pub timeout: f64,

    /// Use IPv4 only.
    #[arg(short = '4')]
    pub ipv4: bool,

    /// Use IPv6 only.
    #[arg(short = '6')]
    pub ipv6: bool,

    /// Source address to send from.
    #[arg(long)]
    pub source: Option<IpAddr>,

    /// Interface to send through.
    #[arg(short = 'I', long)]
    pub interface: Option<String>,

    /// Global limit on probes per second.
    #[arg(long)]
    pub rate: Option<NonZeroU32>,

    /// Timestamp source: auto (eBPF, then kernel, then userspace), ebpf, kernel, userspace.
    #[arg(long, default_value = "auto")]
    pub timestamps: TimestampPreference,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,

    /// Print the report as CSV.
    #[arg(long)]
    pub csv: bool,

    /// Print one line per probe as results arrive.
    #[arg(long)]
    pub raw: bool,

    /// Discover every load-balanced (ECMP) path with MDA instead of tracing one
    /// flow: varies the flow identifier (ICMP id, UDP/TCP source port) and
    /// prints each hop's responders, the branches and the probes spent.
    #[arg(long, conflicts_with_all = ["csv", "raw"])]
    pub multipath: bool,

    /// With --multipath: confidence, in percent, that no next hop of a router was missed.
    #[arg(long, default_value = "95", requires = "multipath")]
    pub confidence: Confidence,

    /// ICMP identifiers / source ports to use, as START-END (END excluded)
    /// [default: a random block of 4096]. Fixing it makes multipath runs
    /// repeatable and lets firewalls allow the probes.
    #[arg(long, value_parser = parse_flow_range)]
    pub flow_range: Option<std::ops::Range<u16>>,

    /// With --multipath: the most probes discovery may send.
    #[arg(long, default_value_t = 5000, requires = "multipath", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_probes: u32,
}

fn parse_flow_range(s: &str) -> Result<std::ops::Range<u16>, String> {
    let (start, end) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not START-END"))?;
    let number = |x: &str| {
        x.trim()
            .parse::<u16>()
            .map_err(|_| format!("{x:?} is not a number from 1 to 65535"))
    };
    let (start, end) = (number(start)?, number(end)?);
    if start == 0 || start >= end {
        return Err(format!(
            "the flow range {start}-{end} must start above 0 and end above its start"
        ));
    }
    Ok(start..end)
}

fn parse_interval(s: &str) -> Result<f64, String> {
    parse_seconds(s, 0.01)
}

fn parse_timeout(s: &str) -> Result<f64, String> {
    parse_seconds(s, 0.001)
}

fn parse_seconds(s: &str, min: f64) -> Result<f64, String> {
    let value: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !value.is_finite() || value < min || value > 3600.0 {
        return Err(format!("{value} seconds is out of range ({min} to 3600)"));
    }
    Ok(value)
}

/// Runs the command and returns the process exit code.
pub async fn run(args: TraceArgs) -> i32 {
    match trace(args).await {
        Ok(()) => 0,
        // `hopwatch trace ... | head` closing the pipe early is not an error.
        Err(TraceError::Output(err)) if err.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(err) => {
            eprintln!("hopwatch trace: {err}");
            err.exit_code()
        }
    }
}

/// Why a trace failed.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("unknown host {host:?}: {reason}")]
    UnknownHost { host: String, reason: String },
    #[error("{0}")]
    Usage(String),
    #[error("{0}\nhint: run as root, or grant CAP_NET_RAW (and CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON for eBPF timestamps)")]
    Engine(#[source] EngineError),
    #[error(transparent)]
    Probe(#[from] crate::probe::ProbeError),
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
    #[error(transparent)]
    Multipath(#[from] MultipathError),
}

impl TraceError {
    fn exit_code(&self) -> i32 {
        match self {
            TraceError::UnknownHost { .. } => exit::UNKNOWN_HOST,
            TraceError::Usage(_) => exit::USAGE,
            TraceError::Engine(EngineError::Transport(TransportError::NoPrivilege { .. }))
            | TraceError::Engine(EngineError::EbpfRequired(_)) => exit::NO_PRIVILEGE,
            TraceError::Engine(EngineError::NoRoute { .. })
            | TraceError::Probe(_)
            | TraceError::Multipath(MultipathError::Probe { .. }) => exit::NETWORK,
            TraceError::Multipath(MultipathError::Config { .. }) => exit::USAGE,
            TraceError::Multipath(MultipathError::OpenFlow { .. }) => exit::OTHER,
            TraceError::Engine(_) | TraceError::Output(_) => exit::OTHER,
        }
    }
}

async fn resolve(host: &str, v4_only: bool, v6_only: bool) -> Result<IpAddr, TraceError> {
    let unknown = |reason: String| TraceError::UnknownHost {
        host: host.to_owned(),
        reason,
    };
    let addrs: Vec<IpAddr> = if let Ok(ip) = host.parse::<IpAddr>() {
        vec![ip]
    } else {
        tokio::net::lookup_host((host, 0))
            .await
            .map_err(|err| unknown(err.to_string()))?
            .map(|sa| sa.ip())
            .collect()
    };
    addrs
        .into_iter()
        .find(|ip| (!v4_only || ip.is_ipv4()) && (!v6_only || ip.is_ipv6()))
        .ok_or_else(|| {
            let family = if v4_only { "IPv4" } else { "IPv6" };
            unknown(format!("it has no {family} address"))
        })
}

async fn trace(args: TraceArgs) -> Result<(), TraceError> {
    if args.first_ttl > args.max_ttl {
        return Err(TraceError::Usage(format!(
            "--first-ttl {} is above --max-ttl {}",
            args.first_ttl, args.max_ttl
        )));
    }
    let dst = resolve(&args.host, args.ipv4, args.ipv6).await?;
    let mut source = SourceSelection {
        interface: args.interface.clone(),
        ..SourceSelection::default()
    };
    match args.source {
        Some(IpAddr::V4(a)) if dst.is_ipv4() => source.v4 = Some(a),
        Some(IpAddr::V6(a)) if dst.is_ipv6() => source.v6 = Some(a),
        Some(src) => {
            return Err(TraceError::Usage(format!(
                "--source {src} and the target {dst} are of different IP versions"
            )))
        }
        None => {}
    }
    let engine = Engine::start(EngineConfig {
        timestamps: args.timestamps,
        source,
        max_probes_per_second: args.rate,
        flow_range: args.flow_range.clone(),
    })
    .await
    .map_err(TraceError::Engine)?;

    let port = match args.protocol {
        Protocol::Icmp => 0,
        Protocol::Udp => args.port.unwrap_or(33434),
        Protocol::Tcp => args.port.unwrap_or(80),
    };
    let flow = FlowSpec {
        dst,
        protocol: args.protocol,
        dst_port: port,
        packet_size: args.packet_size,
        timeout: Duration::from_secs_f64(args.timeout),
    };
    if args.multipath {
        let trace = engine
            .discover_multipath(MultipathSpec {
                flow,
                mda: MdaConfig {
                    confidence: args.confidence,
                    first_ttl: Ttl::new(args.first_ttl).expect("clap rejects 0"),
                    max_ttl: Ttl::new(args.max_ttl).expect("clap rejects 0"),
                    max_probes: args.max_probes,
                    ..MdaConfig::default()
                },
            })
            .await?;
        let mut out = std::io::stdout().lock();
        if args.json {
            serde_json::to_writer_pretty(&mut out, &trace.report())
                .map_err(std::io::Error::from)?;
            writeln!(out)?;
        } else {
            out.write_all(multipath_table(&args.host, &trace).as_bytes())?;
        }
        return Ok(());
    }
    let spec = TraceSpec {
        flow: flow.clone(),
        first_ttl: Ttl::new(args.first_ttl).expect("clap rejects 0"),
        max_ttl: Ttl::new(args.max_ttl).expect("clap rejects 0"),
        rounds: Some(args.count),
        interval: Duration::from_secs_f64(args.interval),
    };
    let source_address = engine
        .open_flow(flow)
        .map_err(|err| match err {
            EngineError::Probe { source, .. } => TraceError::Usage(source.to_string()),
            other => TraceError::Engine(other),
        })?
        .source();
    let mut results = engine.trace(spec).map_err(TraceError::Engine)?;
    let mut report = TraceReport::new(TraceHeader {
        target: args.host.clone(),
        address: dst,
        source_address,
        protocol: args.protocol,
        port: (args.protocol != Protocol::Icmp).then_some(port),
        // A TCP SYN has no payload: its size is fixed whatever --size says.
        packet_size: match args.protocol {
            Protocol::Tcp => {
                crate::probe::wire::TCP_SYN_LEN
                    + if dst.is_ipv6() {
                        crate::probe::wire::IPV6_HEADER_LEN
                    } else {
                        crate::probe::wire::IPV4_HEADER_LEN
                    }
            }
            _ => args.packet_size,
        },
        interval_ms: (args.interval * 1000.0).round() as u64,
        timestamp_source: engine.timestamp_source(),
    });
    let stdout = std::io::stdout();
    while let Some(result) = results.next().await {
        let result = result?;
        if args.raw {
            let mut out = stdout.lock();
            writeln!(out, "{}", raw_line(&result))?;
        }
        report.record(&result);
    }
    report.finish();
    let mut out = stdout.lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else if args.csv {
        out.write_all(report.to_csv().as_bytes())?;
    } else if !args.raw {
        out.write_all(report.to_table().as_bytes())?;
    }
    Ok(())
}

/// The text report of a multipath discovery: hops, branches, diamonds, cost.
fn multipath_table(host: &str, trace: &MultipathTrace) -> String {
    use std::fmt::Write as _;
    let d = &trace.discovery;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "multipath to {host} ({}) from {}, {}, confidence {}",
        trace.target, trace.source, trace.protocol, d.confidence
    );
    let _ = writeln!(s, "{:>3}  {:<40} flows", "TTL", "responder");
    for hop in &d.hops {
        for (i, r) in hop.responders.iter().enumerate() {
            let ttl = if i == 0 {
                hop.ttl.to_string()
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "{ttl:>3}  {:<40} {}",
                r.vertex.to_string(),
                r.flows.len()
            );
        }
    }
    for diamond in &d.diamonds {
        let joins = match (diamond.convergence_ttl, diamond.convergence) {
            (Some(ttl), Some(v)) => format!("join at hop {ttl} ({v})"),
            _ => "do not join before the last hop".to_owned(),
        };
        let _ = writeln!(
            s,
            "paths split at hop {} ({}) into up to {} and {joins}",
            diamond.divergence_ttl, diamond.divergence, diamond.max_width
        );
    }
    let _ = writeln!(s, "branches: {}", d.branches.len());
    for (i, b) in d.branches.iter().enumerate() {
        let id = trace
            .flow_id(b.flow)
            .map_or("?".to_owned(), |id| id.to_string());
        let path: Vec<String> = b.path.iter().map(ToString::to_string).collect();
        let _ = writeln!(s, "  #{i} flow {id}: {}", path.join(" > "));
    }
    let _ = writeln!(
        s,
        "probes spent: {} ({} flows, {} rounds, MDA bound {}), {}, {} ms",
        d.probes_sent,
        d.flows_used,
        d.rounds,
        d.mda_bound(),
        d.stop,
        trace.elapsed.as_millis()
    );
    s
}
