//! The `hopwatch` binary.

use std::os::unix::fs::MetadataExt;

use clap::Parser;
use hopwatch::cli::{Cli, Command};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Whether stderr is the journal stream systemd gave this process
/// (`JOURNAL_STREAM` is "device:inode" of that stream; a child whose stderr
/// was redirected inherits the variable but not the stream).
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(stderr.dev()) && ino.parse() == Ok(stderr.ino())
}

/// Logs to the journal, each record with its level as the priority (a
/// warning is priority 4, so `journalctl -p warning` finds it), when systemd
/// runs hopwatch; otherwise plain text to stderr.
fn init_logging(filter: EnvFilter) {
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(journal) => {
                tracing_subscriber::registry()
                    .with(filter)
                    .with(journal.with_syslog_identifier("hopwatch".to_owned()))
                    .init();
                return;
            }
            Err(err) => eprintln!("hopwatch: cannot log to the journal ({err}); logging to stderr"),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Log files get plain text; colours only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() {
    let big_allocations_mapped = hopwatch::sys::keep_big_allocations_mapped();
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|err| {
        eprintln!("hopwatch: invalid --log filter {:?}: {err}", cli.log);
        std::process::exit(hopwatch::cli::exit::USAGE);
    });
    init_logging(filter);
    if !big_allocations_mapped {
        tracing::warn!(
            "the C library refused M_MMAP_THRESHOLD; memory use may be higher than documented"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .thread_name("hopwatch-main")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("hopwatch: cannot start the async runtime: {err}");
            std::process::exit(hopwatch::cli::exit::OTHER);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Check(args) => hopwatch::cli::check::run(args).await,
            Command::Export(args) => hopwatch::cli::export::run(args),
            Command::Peer(args) => hopwatch::cli::peer::peer(args).await,
            Command::Reflect(args) => hopwatch::cli::peer::reflect(args).await,
            Command::Run(args) => hopwatch::cli::run::run(args).await,
            Command::Trace(args) => hopwatch::cli::trace::run(args).await,
        }
    });
    std::process::exit(code);
}
