//! The `hopwatch` command line: argument definitions and exit codes.

pub mod check;
pub mod export;
pub mod peer;
pub mod run;
pub mod trace;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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

/// `-c, --config <CONFIG>`, for the subcommands that read the daemon's config
/// file. A subcommand that says more about the file rewords the help with
/// `#[command(mut_arg("config", ...))]`; the flag, default and variable stay.
#[derive(Debug, Clone, Args)]
pub struct ConfigArg {
    /// The config file.
    #[arg(
        id = "config",
        short = 'c',
        long = "config",
        value_name = "CONFIG",
        default_value = "/etc/hopwatch/hopwatch.toml",
        env = "HOPWATCH_CONFIG"
    )]
    pub path: PathBuf,
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

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    fn config_of(args: &[&str]) -> PathBuf {
        match Cli::try_parse_from(args).unwrap().command {
            Command::Check(a) => a.config.path,
            Command::Export(a) => a.config.path,
            Command::Run(a) => a.config.path,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_subcommand_reading_the_config_takes_the_same_flag() {
        Cli::command().debug_assert();
        for sub in [
            &["hopwatch", "check"][..],
            &["hopwatch", "export", "-t", "x"],
            &["hopwatch", "run"],
        ] {
            for flag in ["-c", "--config"] {
                let args = [sub, &[flag, "/tmp/h.toml"]].concat();
                assert_eq!(config_of(&args), PathBuf::from("/tmp/h.toml"), "{args:?}");
            }
            if std::env::var_os("HOPWATCH_CONFIG").is_none() {
                assert_eq!(
                    config_of(sub),
                    PathBuf::from("/etc/hopwatch/hopwatch.toml"),
                    "{sub:?}"
                );
            }
        }
    }
}
