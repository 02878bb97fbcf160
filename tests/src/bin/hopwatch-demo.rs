//! `hopwatch-demo`: the README's demo. Builds a lab network, runs the real
//! `hopwatch run` daemon in it with its web UI on the host's 127.0.0.1, prints
//! webhook deliveries, and plays scripted network events until Ctrl-C (or
//! `--duration`), then removes everything. Needs root. `deploy/demo.sh` sets
//! up, builds and runs it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use hopwatch_lab::demo::{self, signals::Signals, Options, Pace};

/// hopwatch's demo: a lab network monitored by the real daemon, with scripted
/// loss, latency, route changes and ICMP rate limiting. Needs root; nothing
/// leaves the lab's network namespaces.
#[derive(Debug, Parser)]
#[command(name = "hopwatch-demo", version)]
struct Cli {
    /// Port of the web UI on 127.0.0.1 [default: 8080, or the next free one].
    #[arg(long, value_name = "N")]
    port: Option<u16>,
    /// Stop after SECS seconds instead of at Ctrl-C.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    duration: Option<u64>,
    /// Run four times faster: rounds every 250 ms and the timeline compressed,
    /// so every event happens within 105 s.
    #[arg(long)]
    fast: bool,
    /// The hopwatch binary to run [default: `hopwatch` next to this program].
    #[arg(long, value_name = "PATH")]
    hopwatch: Option<PathBuf>,
    /// Print the daemon's config with example values and exit (the content of
    /// deploy/examples/lab-demo.toml).
    #[arg(long)]
    print_config: bool,
}

fn main() -> ExitCode {
    // First, so that no signal can end the demo without its cleanup.
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(err) => {
            eprintln!("hopwatch-demo: taking over SIGINT and SIGTERM: {err}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse();
    if cli.print_config {
        print!("{}", demo::config::example());
        return ExitCode::SUCCESS;
    }
    let hopwatch = cli.hopwatch.unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("hopwatch")))
            .unwrap_or_else(|| PathBuf::from("hopwatch"))
    });
    // Absolute, so the commands the banner suggests work from anywhere.
    let hopwatch = std::fs::canonicalize(&hopwatch).unwrap_or(hopwatch);
    let options = Options {
        port: cli.port,
        duration: cli.duration.map(Duration::from_secs),
        pace: if cli.fast { Pace::Fast } else { Pace::Normal },
        hopwatch,
    };
    match demo::run(&options, &signals) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hopwatch-demo: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
