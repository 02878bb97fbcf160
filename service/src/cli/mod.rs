//! The `hopwatch` command line: argument definitions and exit codes.

pub mod check;
pub mod export;
pub mod peer;
pub mod run;
pub mod trace;

use clap::{Parser, Subcommand};

/// hopwatch: network path monitor with kernel-timestamped per-hop latency.
#[derive(Debug, Parser)]
#[command(name = "hopwatch", version, about, propagate_version = true)]
pub struct Cli {
    /// Log filter (tracing syntax), e.g. `info` or `hopwatch=debug`.
    #[arg(long, global = true, env = "HOPWATCH_LOG", default_value = "warn")]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the config, kernel features and capabilities; explain fallbacks.
    Check(check::CheckArgs),
    /// Export a stored series (a stopped daemon's store) as CSV or JSON.
    Export(export::ExportArgs),
    /// Measure the link to a STAMP reflector (UDP or TCP): RTT, one-way delay, loss per direction.
    Peer(peer::PeerArgs),
    /// Serve as a STAMP reflector (and TCP echo) for `hopwatch peer` and other STAMP senders.
    Reflect(peer::ReflectArgs),
    /// Run the monitoring daemon.
    Run(run::RunArgs),
    /// Trace the path to a host once, like `mtr --report`.
    Trace(trace::TraceArgs),
}

/// Process exit codes, documented in the README.
pub mod exit {
    /// Bad flags or arguments (clap uses 2 as well).
    pub const USAGE: i32 = 2;
    /// The host name did not resolve.
    pub const UNKNOWN_HOST: i32 = 3;
    /// Raw sockets or eBPF need privileges we lack.
    pub const NO_PRIVILEGE: i32 = 4;
    /// Probes could not be sent (no route, network down).
    pub const NETWORK: i32 = 5;
    /// Anything else.
    pub const OTHER: i32 = 1;
}
