//! `hopwatch run -c <config>`: the monitoring daemon. Reloads the config on
//! SIGHUP and when the file changes; stops cleanly, flushing history, on
//! SIGINT and SIGTERM.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::Args;
use tokio::signal::unix::{signal, SignalKind};

use super::exit;
use crate::config::{Config, ConfigError};
use crate::monitor::{Monitor, MonitorError};

/// How often the config file is checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The config file.
    #[arg(
        short = 'c',
        long,
        default_value = "/etc/hopwatch/hopwatch.toml",
        env = "HOPWATCH_CONFIG"
    )]
    pub config: PathBuf,
}

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    #[error("installing the {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        source: std::io::Error,
    },
}

/// Runs the daemon until a stop signal; returns the exit code.
pub async fn run(args: RunArgs) -> i32 {
    match serve(&args.config).await {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("hopwatch run: {err}");
            match err {
                RunError::Config(_) => exit::USAGE,
                RunError::Monitor(MonitorError::Engine(_)) => exit::NO_PRIVILEGE,
                _ => exit::OTHER,
            }
        }
    }
}

async fn serve(path: &Path) -> Result<(), RunError> {
    let config = Config::load(path)?;
    let install = |kind: SignalKind, name: &'static str| {
        signal(kind).map_err(|source| RunError::Signal {
            signal: name,
            source,
        })
    };
    let mut hangup = install(SignalKind::hangup(), "SIGHUP")?;
    let mut interrupt = install(SignalKind::interrupt(), "SIGINT")?;
    let mut terminate = install(SignalKind::terminate(), "SIGTERM")?;

    let monitor = Monitor::start(config).await?;
    let mut watched = FileStamp::read(path);
    let mut watch = tokio::time::interval(WATCH_INTERVAL);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                tracing::info!(config = %path.display(), "SIGHUP: reloading the config");
                watched = FileStamp::read(path);
                reload(&monitor, path);
            }
            _ = watch.tick() => {
                let now = FileStamp::read(path);
                if now != watched {
                    watched = now;
                    tracing::info!(config = %path.display(), "the config file changed: reloading");
                    reload(&monitor, path);
                }
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }
    tracing::info!("stopping");
    monitor.shutdown().await;
    Ok(())
}

/// A bad new config is logged and ignored: the daemon keeps running with the
/// one it has.
fn reload(monitor: &Monitor, path: &Path) {
    match Config::load(path) {
        Ok(config) => {
            let diff = monitor.reload(config);
            tracing::info!(
                added = diff.added.len(),
                removed = diff.removed.len(),
                paused = diff.paused.len(),
                resumed = diff.resumed.len(),
                changed = diff.changed.len(),
                "config reloaded"
            );
        }
        Err(err) => {
            tracing::error!(error = %err, "the new config is invalid; keeping the running one")
        }
    }
}

/// What tells us the file changed: modification time and size.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp(Option<(SystemTime, u64)>);

impl FileStamp {
    fn read(path: &Path) -> FileStamp {
        FileStamp(
            std::fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len()))),
        )
    }
}
