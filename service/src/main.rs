//! The `hopwatch` binary.

use clap::Parser;
use hopwatch::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() {
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|err| {
        eprintln!("hopwatch: invalid --log filter {:?}: {err}", cli.log);
        std::process::exit(hopwatch::cli::exit::USAGE);
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // journald and log files get plain text; colours only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
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
