//! `hopwatch reflect` (a STAMP Session-Reflector, with the TCP echo) and
//! `hopwatch peer <addr>` (a STAMP session to a reflector, over UDP or TCP, with
//! a summary: RTT, one-way delays, loss / reordering / duplicates per direction,
//! jitter, and the clock state that says whether the one-way delays hold).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use clap::Args;
use ipnet::IpNet;
use serde::Serialize;
use tokio::signal::unix::{signal, SignalKind};

use super::exit;
use crate::peer::{
    measure_connect, AllowList, ClockSync, ClockTrust, ConnectSample, OwdValidity, RateLimits,
    Reflector, ReflectorConfig, ReflectorKind, Sample, SenderConfig, SenderError, Session, Summary,
    T3Source, Transport, STAMP_PORT,
};

/// `hopwatch reflect`: answer STAMP (and TCP echo) on the given addresses.
#[derive(Debug, Args)]
pub struct ReflectArgs {
    /// Address to serve, `IP` (port 862) or `IP:PORT` / `[IPv6]:PORT`; repeatable.
    /// Only these addresses are bound, never the wildcard.
    #[arg(long, required = true, value_parser = parse_endpoint)]
    pub listen: Vec<SocketAddr>,

    /// Answer only sources in this prefix (e.g. 198.18.0.0/15); repeatable.
    /// Without it, any source that reaches the address is answered.
    #[arg(long, value_name = "PREFIX")]
    pub allow: Vec<IpNet>,

    /// Packets per second reflected in total (token bucket).
    #[arg(long, default_value_t = RateLimits::default().global_pps)]
    pub max_pps: NonZeroU32,

    /// Packets per second reflected per source address (token bucket).
    #[arg(long, default_value_t = RateLimits::default().per_source_pps)]
    pub per_source_pps: NonZeroU32,

    /// Do not serve the TCP echo protocol.
    #[arg(long)]
    pub no_tcp: bool,

    /// Take T2 from the userspace clock instead of SO_TIMESTAMPING.
    #[arg(long)]
    pub userspace_timestamps: bool,

    /// Take T3 from the userspace clock before sending instead of writing it
    /// into each UDP reply at TC egress with eBPF.
    #[arg(long)]
    pub no_ebpf: bool,

    /// Print the final counters as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `hopwatch peer`: measure the link to a STAMP reflector.
#[derive(Debug, Args)]
pub struct PeerArgs {
    /// The reflector: `IP` (port 862) or `IP:PORT` / `[IPv6]:PORT`.
    #[arg(value_parser = parse_endpoint)]
    pub peer: SocketAddr,

    /// Time between probes (`1ms`, `250us`, `1s`, ...); at least 100us.
    #[arg(short = 'i', long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Probes to send; without it, runs until interrupted.
    #[arg(short = 'c', long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// IP packet size, headers included (padded STAMP packet); up to the path MTU.
    /// [default: the smallest, 72 bytes over UDP/IPv4]
    #[arg(short = 's', long)]
    pub size: Option<usize>,

    /// Time to wait for each reply.
    #[arg(short = 'w', long, default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Measure over one long-lived TCP connection (the TCP echo) instead of UDP.
    #[arg(long)]
    pub tcp: bool,

    /// Also time this many new TCP connections (handshake RTT), one per interval.
    #[arg(long, value_name = "N")]
    pub connect: Option<u32>,

    /// Source address to send from.
    #[arg(long)]
    pub source: Option<IpAddr>,

    /// TTL / hop limit of the probes.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..))]
    pub ttl: Option<u8>,

    /// Both ends read the same clock (one host): trust one-way delays whatever
    /// the clock-sync state says.
    #[arg(long)]
    pub shared_clock: bool,

    /// The reflector copies our sequence numbers (stateless): loss gets no direction.
    #[arg(long)]
    pub stateless_reflector: bool,

    /// Use the userspace clock instead of SO_TIMESTAMPING.
    #[arg(long)]
    pub userspace_timestamps: bool,

    /// Take T1 from the driver's SO_TIMESTAMPING stamp instead of writing it
    /// into each packet at TC egress with eBPF.
    #[arg(long)]
    pub no_ebpf: bool,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,

    /// Print one JSON line per probe as it resolves.
    #[arg(long)]
    pub raw: bool,
}

fn parse_endpoint(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, STAMP_PORT))
        .map_err(|_| format!("{s:?} is not an IP address or IP:PORT ([IPv6]:PORT)"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration such as 1ms, 250us or 2s: {e}"))?;
    if d.is_zero() || d > Duration::from_secs(3600) {
        return Err(format!("{s} is out of range (more than 0, at most 1h)"));
    }
    Ok(d)
}

/// Waits for SIGINT or SIGTERM.
async fn stop_signal() {
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // No handler: only the session's own end (count) stops it.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// Runs `hopwatch reflect` until SIGINT/SIGTERM; returns the exit code.
pub async fn reflect(args: ReflectArgs) -> i32 {
    let mut config = ReflectorConfig::new(args.listen.clone());
    if !args.allow.is_empty() {
        config.allow = AllowList::Prefixes(args.allow.clone());
    }
    config.limits.global_pps = args.max_pps;
    config.limits.per_source_pps = args.per_source_pps;
    config.tcp = !args.no_tcp;
    config.kernel_stamps = !args.userspace_timestamps;
    config.ebpf_t3 = !args.no_ebpf;
    let reflector = match Reflector::start(config) {
        Ok(r) => r,
        Err(err) => {
            eprintln!("hopwatch reflect: {err}");
            return exit::NETWORK;
        }
    };
    eprintln!(
        "hopwatch reflect: serving STAMP{} on {}; T3 from {}; allowed sources: {}",
        if args.no_tcp { "" } else { " and TCP echo" },
        reflector
            .local_addrs()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        match reflector.t3_source() {
            T3Source::Ebpf => "eBPF at TC egress",
            T3Source::Userspace => "the userspace clock",
        },
        if args.allow.is_empty() {
            "any".to_owned()
        } else {
            args.allow
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    stop_signal().await;
    let stats = reflector.stats();
    reflector.stop();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&stats).unwrap_or_default()
        );
    } else {
        eprintln!(
            "hopwatch reflect: received {}, reflected {}, rejected sources {}, rate-limited {} (source) {} (global), malformed {}",
            stats.received,
            stats.reflected,
            stats.rejected_source,
            stats.rate_limited_source,
            stats.rate_limited_global,
            stats.malformed
        );
    }
    0
}

/// The `hopwatch peer` report (also its JSON form).
#[derive(Debug, Serialize)]
pub struct PeerReport {
    pub config: SenderConfig,
    pub local: SocketAddr,
    pub clock: ClockSync,
    pub summary: Summary,
    pub connect: Vec<ConnectSample>,
    pub dropped_samples: u64,
}

/// Runs `hopwatch peer`; returns the exit code (5 when nothing came back).
pub async fn peer(args: PeerArgs) -> i32 {
    match run_peer(args).await {
        Ok(code) => code,
        Err(PeerCliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(err) => {
            eprintln!("hopwatch peer: {err}");
            match err {
                PeerCliError::Sender(SenderError::IntervalTooShort { .. })
                | PeerCliError::Sender(SenderError::PacketSize { .. })
                | PeerCliError::Sender(SenderError::FamilyMismatch { .. })
                | PeerCliError::Sender(SenderError::AboveMtu { .. }) => exit::USAGE,
                PeerCliError::Sender(_) => exit::NETWORK,
                _ => exit::OTHER,
            }
        }
    }
}

/// Why `hopwatch peer` failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerCliError {
    #[error(transparent)]
    Sender(#[from] SenderError),
    #[error("the session thread could not be waited for: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

async fn run_peer(args: PeerArgs) -> Result<i32, PeerCliError> {
    let mut config = SenderConfig::new(args.peer);
    config.transport = if args.tcp {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    config.packet_size = args
        .size
        .unwrap_or_else(|| config.transport.min_packet_size(args.peer.is_ipv6()));
    config.interval = args.interval;
    config.count = args.count;
    config.timeout = args.timeout;
    config.source = args.source;
    config.ttl = args.ttl;
    config.kernel_stamps = !args.userspace_timestamps;
    config.ebpf_t1 = !args.no_ebpf;
    if args.shared_clock {
        config.clock = ClockTrust::SharedClock;
    }
    if args.stateless_reflector {
        config.reflector = ReflectorKind::Stateless;
    }
    let session = Session::start(config.clone())?;
    let local = session.local_addr();
    let stop = session.stop_handle();
    let stopper = tokio::spawn(async move {
        stop_signal().await;
        stop.stop();
    });
    let raw = args.raw;
    let waited = tokio::task::spawn_blocking(move || {
        let mut out = std::io::stdout().lock();
        while !session.is_finished() {
            match session.samples().recv_timeout(Duration::from_millis(100)) {
                Ok(sample) if raw => print_sample(&mut out, &sample)?,
                Ok(_) | Err(_) => {}
            }
        }
        while let Ok(sample) = session.samples().try_recv() {
            if raw {
                print_sample(&mut out, &sample)?;
            }
        }
        let dropped = session.dropped_samples();
        Ok::<_, PeerCliError>((session.wait()?, dropped))
    })
    .await?;
    stopper.abort();
    let (summary, dropped_samples) = waited?;

    let mut connect = Vec::new();
    for _ in 0..args.connect.unwrap_or(0) {
        let (peer, source, timeout) = (config.peer, config.source, config.timeout);
        let sample =
            tokio::task::spawn_blocking(move || measure_connect(peer, source, timeout)).await??;
        connect.push(sample);
        tokio::time::sleep(config.interval).await;
    }

    let report = PeerReport {
        config,
        local,
        clock: ClockSync::read(),
        summary,
        connect,
        dropped_samples,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else if !args.raw {
        write_text(&mut out, &report)?;
    }
    Ok(if report.summary.received == 0 {
        exit::NETWORK
    } else {
        0
    })
}

fn print_sample(out: &mut impl Write, sample: &Sample) -> Result<(), PeerCliError> {
    serde_json::to_writer(&mut *out, sample).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

fn ms(ns: f64) -> String {
    format!("{:.3}", ns / 1e6)
}

fn write_text(out: &mut impl Write, r: &PeerReport) -> std::io::Result<()> {
    let s = &r.summary;
    let c = &r.config;
    writeln!(
        out,
        "STAMP {} {} -> {}, {} probes every {:?}, {}-byte packets, timestamps: {}",
        match c.transport {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        },
        r.local,
        c.peer,
        s.sent,
        c.interval,
        c.packet_size,
        s.source.map_or("none", |src| src.as_str()),
    )?;
    let dir = |v: Option<u64>| v.map_or("-".to_owned(), |n| n.to_string());
    writeln!(
        out,
        "sent {}  received {}  lost {} ({:.2}%: forward {}, backward {}, unknown {})  late {}",
        s.sent,
        s.received,
        s.loss.lost,
        s.loss_percent(),
        dir(s.loss.forward),
        dir(s.loss.backward),
        s.loss.unknown_direction,
        s.late
    )?;
    if let Some(rtt) = &s.rtt {
        writeln!(
            out,
            "rtt      min {}  avg {}  max {}  p50 {}  p90 {}  p99 {}  stddev {} ms",
            ms(rtt.min_ns as f64),
            ms(rtt.mean_ns),
            ms(rtt.max_ns as f64),
            ms(rtt.p50_ns as f64),
            ms(rtt.p90_ns as f64),
            ms(rtt.p99_ns as f64),
            ms(rtt.stddev_ns)
        )?;
    }
    for (name, d) in [("forward", &s.forward), ("backward", &s.backward)] {
        if let Some(d) = d {
            writeln!(
                out,
                "{name:<8} min {}  avg {}  max {} ms (one-way)",
                ms(d.min_ns as f64),
                ms(d.mean_ns as f64),
                ms(d.max_ns as f64)
            )?;
        }
    }
    let j = |v: Option<f64>| v.map_or("-".to_owned(), ms);
    writeln!(
        out,
        "jitter   rtt {}  forward {}  backward {} ms (RFC 3550)",
        j(s.jitter.rtt_ns),
        j(s.jitter.forward_ns),
        j(s.jitter.backward_ns)
    )?;
    writeln!(
        out,
        "reordered forward {} backward {};  duplicates forward {} backward {}",
        s.reordered.forward, s.reordered.backward, s.duplicates.forward, s.duplicates.backward
    )?;
    let owd = match s.owd {
        None => "no replies".to_owned(),
        Some(OwdValidity::SharedClock) => "valid (one shared clock, as stated)".to_owned(),
        Some(OwdValidity::Synchronized { error_bound_ns }) => {
            format!(
                "valid to ±{} ms (both clocks synchronised)",
                ms(error_bound_ns as f64)
            )
        }
        Some(OwdValidity::Unreliable { reason }) => format!(
            "UNRELIABLE ({}); RTT and jitter are unaffected",
            serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
                .replace('_', " ")
        ),
    };
    writeln!(out, "one-way delays: {owd}")?;
    for (i, sample) in r.connect.iter().enumerate() {
        writeln!(
            out,
            "connect {}: {} ms (handshake rtt {} ms)",
            i + 1,
            ms(sample.connect_ns as f64),
            sample
                .handshake_rtt_ns
                .map_or("-".to_owned(), |ns| ms(ns as f64))
        )?;
    }
    if s.socket_drops > 0 || r.dropped_samples > 0 {
        writeln!(
            out,
            "warning: {} replies dropped by our socket buffer, {} samples not displayed",
            s.socket_drops, r.dropped_samples
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_default_to_the_stamp_port() {
        assert_eq!(
            parse_endpoint("198.18.1.2").unwrap(),
            "198.18.1.2:862".parse().unwrap()
        );
        assert_eq!(
            parse_endpoint("[2001:db8::2]:9000").unwrap(),
            "[2001:db8::2]:9000".parse().unwrap()
        );
        assert_eq!(
            parse_endpoint("2001:db8::2").unwrap(),
            "[2001:db8::2]:862".parse().unwrap()
        );
        assert!(parse_endpoint("router-1").unwrap_err().contains("router-1"));
    }

    #[test]
    fn durations_need_units_and_a_sane_range() {
        assert_eq!(parse_duration("1ms").unwrap(), Duration::from_millis(1));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("fast").unwrap_err().contains("fast"));
    }
}
