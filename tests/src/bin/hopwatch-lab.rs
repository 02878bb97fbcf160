//! `hopwatch-lab`: build the lab's topologies by hand, impair them, and look inside.
//! `up` holds a lab until Ctrl-C and records it in /run/hopwatch-lab so the other
//! commands (run from another terminal) can find it by id.

use std::{
    process::ExitCode,
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use hopwatch_lab::{
    netns, state::LabState, At, DelaySpec, Impairment, KernelIcmpLimit, Lab, LabSpec, NfqElement,
    PathSelect,
};
use nix::sys::signal::{SigSet, Signal};

/// `println!` that ignores a closed stdout (`hopwatch-lab up | head`): a panic there
/// would skip the orderly teardown of the lab.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// A multi-hop IPv4/IPv6 test network in network namespaces, for hopwatch.
///
/// Start a lab with `up` in one terminal; it prints the lab id, namespaces and
/// addresses. From another terminal, impair it (`impair`), change its path (`path`)
/// or run commands inside it (`exec`). All commands need root.
#[derive(Debug, Parser)]
#[command(name = "hopwatch-lab", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build a lab and keep it until Ctrl-C (or --for), then remove it.
    ///
    /// Topology: src - r1 - ... - rN - dst, with targets on dst. With --parallel K:L0,L1
    /// the link rK-r(K+1) becomes branches of L0, L1, ... routers (named a1.., b1..).
    Up(UpArgs),
    /// List the labs recorded by `up`.
    List,
    /// Print a lab's nodes, interfaces, addresses and expected hops.
    Show {
        /// Lab id (see `list`).
        lab: String,
        /// Print the plan as JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Change the path through the parallel section (a route change).
    Path {
        /// Lab id.
        lab: String,
        /// `ecmp`, or the branch number (0 = a.., 1 = b.., ...).
        #[arg(value_parser = parse_path)]
        path: PathSelect,
    },
    /// Apply an impairment to a running lab until Ctrl-C (or --for), then remove it.
    Impair {
        /// Lab id.
        lab: String,
        /// Remove the impairment after this long (e.g. 30s, 500ms) instead of on Ctrl-C.
        #[arg(long = "for", value_parser = parse_duration)]
        duration: Option<Duration>,
        #[command(subcommand)]
        kind: ImpairKind,
    },
    /// Run a command inside a lab node's namespace (like `ip netns exec`).
    Exec {
        /// Lab id.
        lab: String,
        /// Node name: src, r1, a1, dst, ...
        node: String,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// Remove a lab whose `up` process died, or (--stale) every such lab.
    Down {
        /// Lab id.
        #[arg(required_unless_present = "stale")]
        lab: Option<String>,
        /// Remove all labs and lab namespaces whose creating process is gone.
        #[arg(long)]
        stale: bool,
    },
    /// Run only an NFQUEUE delay element in a namespace; you add the
    /// `-j NFQUEUE --queue-num N` rule yourself. Prints its counters every second.
    DelayElement {
        /// The namespace to run in (never the root namespace).
        #[arg(long)]
        netns: String,
        /// The NFQUEUE queue number to serve.
        #[arg(long)]
        queue: u16,
        #[command(flatten)]
        delay: DelayArgs,
    },
}

#[derive(Debug, Args)]
struct UpArgs {
    /// Trunk routers r1..rN.
    #[arg(long, default_value_t = 3)]
    routers: usize,
    /// Target addresses per family on dst.
    #[arg(long, default_value_t = 16)]
    targets: usize,
    /// Parallel branches: `K:L0,L1,...` branches after router rK with Li routers each.
    #[arg(long, value_parser = parse_parallel)]
    parallel: Option<(usize, Vec<usize>)>,
    /// Initial path: `ecmp` or a branch number.
    #[arg(long, value_parser = parse_path, default_value = "0")]
    path: PathSelect,
    /// A router that forwards but never answers (repeatable).
    #[arg(long)]
    silent: Vec<String>,
    /// Remove the lab after this long instead of on Ctrl-C.
    #[arg(long = "for", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Print the plan as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Where a packet impairment applies.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct SiteArgs {
    /// Packets sent over one link direction: FROM:TO, e.g. r1:r2.
    #[arg(long, value_parser = parse_link)]
    link: Option<(String, String)>,
    /// Everything a node receives, e.g. r2.
    #[arg(long)]
    at: Option<String>,
}

impl SiteArgs {
    fn site(&self) -> At {
        match (&self.link, &self.at) {
            (Some((from, to)), _) => At::link(from, to),
            (None, Some(node)) => At::router(node),
            (None, None) => unreachable!("clap requires one of --link and --at"),
        }
    }
}

#[derive(Debug, Args)]
struct DelayArgs {
    /// One-way delay, e.g. 30ms.
    #[arg(long, value_parser = parse_duration)]
    delay: Duration,
    /// Uniform jitter of ± this much, e.g. 5ms.
    #[arg(long, value_parser = parse_duration, default_value = "0ms")]
    jitter: Duration,
    /// Never reorder packets, even with jitter.
    #[arg(long)]
    preserve_order: bool,
}

impl DelayArgs {
    fn spec(&self) -> DelaySpec {
        DelaySpec {
            delay: self.delay,
            jitter: self.jitter,
            preserve_order: self.preserve_order,
        }
    }
}

#[derive(Debug, Subcommand)]
enum ImpairKind {
    /// Drop a random percentage of packets.
    Loss {
        #[command(flatten)]
        site: SiteArgs,
        /// Percentage to drop (0-100).
        #[arg(long)]
        percent: f64,
    },
    /// Drop every packet.
    Blackout {
        #[command(flatten)]
        site: SiteArgs,
    },
    /// Drop the next N packets, then pass traffic.
    Burst {
        #[command(flatten)]
        site: SiteArgs,
        /// Consecutive packets to drop.
        #[arg(long)]
        packets: u64,
    },
    /// Delay (and jitter) packets with an NFQUEUE element.
    Delay {
        #[command(flatten)]
        site: SiteArgs,
        #[command(flatten)]
        delay: DelayArgs,
    },
    /// Make a router forward without ever sending time-exceeded.
    Silence {
        /// The router, e.g. r2.
        router: String,
    },
    /// Limit the ICMP errors a node sends with an iptables token bucket.
    RateLimit {
        /// The node, e.g. r2.
        node: String,
        /// Errors per second.
        #[arg(long)]
        per_sec: u32,
        /// Burst size.
        #[arg(long, default_value_t = 5)]
        burst: u32,
    },
    /// Turn on the kernel's ICMP error rate limiting on a node (Linux defaults unless
    /// given).
    KernelRatelimit {
        /// The node, e.g. r2.
        node: String,
        /// Minimum interval between errors to one destination.
        #[arg(long, value_parser = parse_duration, default_value = "1s")]
        interval: Duration,
        /// Global errors per second.
        #[arg(long, default_value_t = 1000)]
        per_sec: u32,
        /// Global burst.
        #[arg(long, default_value_t = 50)]
        burst: u32,
    },
}

fn main() -> ExitCode {
    // Signals are taken synchronously by a waiter thread (see `Signals`); block them
    // before any thread exists so every thread inherits the mask.
    let signals = Signals::block();
    match run(Cli::parse(), &signals) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hopwatch-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, signals: &Signals) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Up(args) => up(args, signals)?,
        Command::List => list()?,
        Command::Show { lab, json } => {
            let state = LabState::load(&lab)?;
            if json {
                say!("{}", serde_json::to_string_pretty(&state.plan)?);
            } else {
                let lab = Lab::attach(state.plan, state.path)?;
                say!("{}", describe(&lab).trim_end());
            }
        }
        Command::Path { lab, path } => {
            let mut state = LabState::load(&lab)?;
            let handle = Lab::attach(state.plan.clone(), state.path)?;
            let previous = handle.set_path(path)?;
            state.path = path;
            state.save()?;
            say!("lab {lab}: path {previous} -> {path}");
            for hop in handle.hops() {
                say!(
                    "  ttl {:>2}  {:<4} {:<15} {}",
                    hop.ttl,
                    hop.name,
                    hop.v4,
                    hop.v6
                );
            }
        }
        Command::Impair {
            lab,
            duration,
            kind,
        } => impair(&lab, duration, kind, signals)?,
        Command::Exec { lab, node, command } => {
            let state = LabState::load(&lab)?;
            let handle = Lab::attach(state.plan, state.path)?;
            let mut cmd = handle.command(&node, &command[0])?;
            let status = cmd
                .args(&command[1..])
                .status()
                .with_context(|| format!("running {}", command.join(" ")))?;
            return Ok(ExitCode::from(
                status.code().unwrap_or(1).clamp(0, 255) as u8
            ));
        }
        Command::Down { lab, stale } => down(lab, stale)?,
        Command::DelayElement {
            netns,
            queue,
            delay,
        } => delay_element(&netns, queue, delay.spec(), signals)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn up(args: UpArgs, signals: &Signals) -> anyhow::Result<()> {
    let mut spec = LabSpec::chain(args.routers).targets(args.targets);
    if let Some((after, branches)) = &args.parallel {
        spec = spec.parallel(*after, branches);
    }
    spec.path = args.path;
    for router in &args.silent {
        spec = spec.silent(router);
    }
    let started = Instant::now();
    let lab = Lab::build(spec)?;
    let state = LabState {
        owner_pid: std::process::id(),
        plan: lab.plan().clone(),
        path: lab.path(),
    };
    state.save()?;
    if args.json {
        say!("{}", serde_json::to_string_pretty(lab.plan())?);
    } else {
        say!("lab {} built in {:?}", lab.id(), started.elapsed());
        say!("{}", describe(&lab).trim_end());
        let src = lab.src();
        say!(
            "\ntry:  hopwatch-lab exec {id} src ping -c 3 {t}\n      ip netns exec {ns} ping -t 2 -c 1 {t}\n      hopwatch-lab impair {id} delay --link r1:r2 --delay 20ms --jitter 5ms",
            id = lab.id(),
            ns = src.ns,
            t = lab.targets_v4()[0],
        );
        say!("\nholding the lab until Ctrl-C{}", hold_text(args.duration));
    }
    signals.wait(args.duration);
    let id = lab.id().to_owned();
    let result = lab.teardown();
    LabState::forget(&id)?;
    result?;
    eprintln!("lab {id} removed");
    Ok(())
}

fn hold_text(duration: Option<Duration>) -> String {
    duration
        .map(|d| format!(" or for {d:?}"))
        .unwrap_or_default()
}

fn describe(lab: &Lab) -> String {
    use std::fmt::Write as _;
    let plan = lab.plan();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<5} {:<22} {:<8} {:<15} IPv6",
        "node", "namespace", "iface", "IPv4"
    );
    for (i, node) in plan.nodes.iter().enumerate() {
        let mut first = true;
        for end in plan
            .links
            .iter()
            .flat_map(|l| [&l.up, &l.down])
            .filter(|e| e.node.0 == i)
        {
            let (name, ns) = if first {
                (node.name.as_str(), node.ns.as_str())
            } else {
                ("", "")
            };
            first = false;
            let _ = writeln!(
                out,
                "{name:<5} {ns:<22} {:<8} {:<15} {}",
                end.ifname, end.v4, end.v6
            );
        }
    }
    let (v4, v6) = (lab.targets_v4(), lab.targets_v6());
    if let (Some(f4), Some(l4), Some(f6), Some(l6)) = (v4.first(), v4.last(), v6.first(), v6.last())
    {
        let _ = writeln!(
            out,
            "targets on dst lo: {} per family, {f4} .. {l4} and {f6} .. {l6}",
            v4.len()
        );
    }
    let _ = writeln!(
        out,
        "path: {}; expected responders per TTL from src:",
        lab.path()
    );
    for hop in lab.hops() {
        let silent = if hop.answers { "" } else { "  (silent)" };
        let _ = writeln!(
            out,
            "  ttl {:>2}  {:<4} {:<15} {}{silent}",
            hop.ttl, hop.name, hop.v4, hop.v6
        );
    }
    out
}

fn list() -> anyhow::Result<()> {
    let labs = LabState::list()?;
    if labs.is_empty() {
        say!("no labs recorded in {}", hopwatch_lab::state::STATE_DIR);
    }
    for lab in labs {
        let status = if lab.owner_alive() {
            format!("held by pid {}", lab.owner_pid)
        } else {
            "stale (owner gone; `hopwatch-lab down` removes it)".to_owned()
        };
        let routers = lab
            .plan
            .nodes
            .iter()
            .filter(|n| n.role == hopwatch_lab::Role::Router)
            .count();
        say!(
            "{}  {routers} routers, {} targets, path {}, {status}",
            lab.plan.id,
            lab.plan.targets_v4.len(),
            lab.path
        );
    }
    Ok(())
}

fn impair(
    id: &str,
    duration: Option<Duration>,
    kind: ImpairKind,
    signals: &Signals,
) -> anyhow::Result<()> {
    let state = LabState::load(id)?;
    if !state.owner_alive() {
        bail!("lab {id} is stale (its `up` process is gone)");
    }
    let lab = Lab::attach(state.plan, state.path)?;
    // Both guard types end up here so they live until the wait below returns.
    enum Guard<'a> {
        Plain(Impairment<'a>),
        Element(hopwatch_lab::Delay<'a>),
    }
    let guard = match kind {
        ImpairKind::Loss { site, percent } => Guard::Plain(lab.loss(site.site(), percent)?),
        ImpairKind::Blackout { site } => Guard::Plain(lab.blackout(site.site())?),
        ImpairKind::Burst { site, packets } => {
            Guard::Element(lab.drop_burst(site.site(), packets)?)
        }
        ImpairKind::Delay { site, delay } => Guard::Element(lab.delay(site.site(), delay.spec())?),
        ImpairKind::Silence { router } => Guard::Plain(lab.silence(&router)?),
        ImpairKind::RateLimit {
            node,
            per_sec,
            burst,
        } => Guard::Plain(lab.icmp_rate_limit(&node, per_sec, burst)?),
        ImpairKind::KernelRatelimit {
            node,
            interval,
            per_sec,
            burst,
        } => Guard::Plain(lab.kernel_icmp_ratelimit(
            &node,
            KernelIcmpLimit {
                per_destination: interval,
                global_per_sec: per_sec,
                global_burst: burst,
            },
        )?),
    };
    let label = match &guard {
        Guard::Plain(g) => g.label().to_owned(),
        Guard::Element(g) => g.label().to_owned(),
    };
    say!("lab {id}: {label}; until Ctrl-C{}", hold_text(duration));
    match guard {
        Guard::Plain(g) => {
            signals.wait(duration);
            g.remove()?;
        }
        Guard::Element(g) => {
            signals.wait_with_ticks(duration, || eprintln!("{:?}", g.stats()));
            let stats = g.remove()?;
            say!("final: {stats:?}");
        }
    }
    say!("removed: {label}");
    Ok(())
}

fn down(lab: Option<String>, stale: bool) -> anyhow::Result<()> {
    let mut removed = Vec::new();
    let mut ids: Vec<String> = lab.into_iter().collect();
    if stale {
        ids.extend(
            LabState::list()?
                .into_iter()
                .filter(|s| !s.owner_alive())
                .map(|s| s.plan.id),
        );
    }
    for id in ids {
        let state = LabState::load(&id)?;
        if state.owner_alive() {
            bail!(
                "lab {id} is held by running process {} (stop it with Ctrl-C there)",
                state.owner_pid
            );
        }
        let names: Vec<String> = state.plan.nodes.iter().map(|n| n.ns.clone()).collect();
        netns::delete(&names)?;
        LabState::forget(&id)?;
        removed.extend(names);
    }
    if stale {
        let names = hopwatch_lab::state::stale_namespaces()?;
        netns::delete(&names)?;
        removed.extend(names);
    }
    say!("removed {} namespace(s)", removed.len());
    for name in removed {
        say!("  {name}");
    }
    Ok(())
}

fn delay_element(ns: &str, queue: u16, spec: DelaySpec, signals: &Signals) -> anyhow::Result<()> {
    hopwatch_lab::privilege::check()?;
    if !netns::exists(ns) {
        bail!("no network namespace named {ns} (see `ip netns list`)");
    }
    let element = NfqElement::start(ns, queue, spec)?;
    say!(
        "delay element on queue {queue} in {ns}: {spec:?}\nfeed it with e.g.: ip netns exec {ns} iptables -t mangle -A POSTROUTING -o IFACE -j NFQUEUE --queue-num {queue}\n(without a listener such packets are dropped, so remove the rule before stopping)"
    );
    signals.wait_with_ticks(None, || eprintln!("{:?}", element.stats()));
    say!("final: {:?}", element.stop()?);
    Ok(())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{s}` needs a unit: us, ms, s or m"))?;
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{number}` is not a number"))?;
    let secs = match unit {
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit `{unit}` (use us, ms, s or m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn parse_path(s: &str) -> Result<PathSelect, String> {
    if s == "ecmp" {
        return Ok(PathSelect::Ecmp);
    }
    s.parse()
        .map(PathSelect::Branch)
        .map_err(|_| format!("`{s}` is neither `ecmp` nor a branch number"))
}

fn parse_link(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_owned(), b.to_owned())),
        _ => Err(format!("`{s}` is not FROM:TO (e.g. r1:r2)")),
    }
}

fn parse_parallel(s: &str) -> Result<(usize, Vec<usize>), String> {
    let (after, branches) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not K:L0,L1,... (e.g. 1:1,3)"))?;
    let after = after
        .parse()
        .map_err(|_| format!("`{after}` is not a router number"))?;
    let branches = branches
        .split(',')
        .map(|n| {
            n.parse()
                .map_err(|_| format!("`{n}` is not a branch length"))
        })
        .collect::<Result<_, _>>()?;
    Ok((after, branches))
}

/// SIGINT, SIGTERM and SIGHUP, blocked in every thread and received by one waiter.
struct Signals {
    rx: mpsc::Receiver<Signal>,
}

impl Signals {
    fn block() -> Self {
        let mut set = SigSet::empty();
        for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            set.add(s);
        }
        let (tx, rx) = mpsc::channel();
        if set.thread_block().is_ok() {
            let _ = std::thread::Builder::new()
                .name("signals".into())
                .spawn(move || {
                    while let Ok(sig) = set.wait() {
                        if tx.send(sig).is_err() {
                            break;
                        }
                    }
                });
        }
        Self { rx }
    }

    /// Waits for a signal, or for `limit` when given.
    fn wait(&self, limit: Option<Duration>) {
        self.wait_with_ticks(limit, || {});
    }

    /// Like [`wait`](Self::wait), calling `tick` every second meanwhile.
    fn wait_with_ticks(&self, limit: Option<Duration>, mut tick: impl FnMut()) {
        let end = limit.map(|d| Instant::now() + d);
        loop {
            let mut step = Duration::from_secs(1);
            if let Some(end) = end {
                match end.checked_duration_since(Instant::now()) {
                    Some(left) => step = step.min(left),
                    None => return,
                }
            }
            match self.rx.recv_timeout(step) {
                Ok(_) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                Err(mpsc::RecvTimeoutError::Timeout) => tick(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_arguments() {
        assert_eq!(parse_duration("30ms"), Ok(Duration::from_millis(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_duration("30").is_err());
        assert_eq!(parse_path("ecmp"), Ok(PathSelect::Ecmp));
        assert_eq!(parse_path("1"), Ok(PathSelect::Branch(1)));
        assert_eq!(parse_link("r1:r2"), Ok(("r1".into(), "r2".into())));
        assert!(parse_link("r1").is_err());
        assert_eq!(parse_parallel("1:1,3"), Ok((1, vec![1, 3])));
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
