//! `hopwatch run -c <config>`: the monitoring daemon and its web server
//! (`[web]`). Reloads the config on SIGHUP and when the file changes; stops
//! cleanly on SIGINT and SIGTERM: the web server first (live streams end,
//! requests get a grace period), then probing, flushing history.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Args;
use tokio::signal::unix::{signal, SignalKind};

use super::{exit, ConfigArg};
use crate::config::{Config, ConfigError, WebConfig};
use crate::enrich::{EnrichConfig, Enricher};
use crate::monitor::{Monitor, MonitorError};
use crate::remote::{RemoteError, RemoteWrite, SnapshotSource};
use crate::sys;
use crate::webapi::{AlertSource, Background, Web, WebApi, WebError};
use hopwatch_web::ReadModel;

/// How often the config file is checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// How long requests in progress may take once a stop signal arrived.
const WEB_GRACE: Duration = Duration::from_secs(5);
/// How long to wait for the last web request to let go of the monitor.
const RECLAIM_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
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
    #[error(transparent)]
    Web(#[from] WebError),
    #[error("cannot start the web server's runtime: {0}")]
    WebRuntime(std::io::Error),
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// Runs the daemon until a stop signal; returns the exit code.
pub async fn run(args: RunArgs) -> i32 {
    match serve(&args.config.path).await {
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

    let web_config = config.web.clone();
    let monitor = Arc::new(Monitor::start(config.clone()).await?);
    let web = match ServedWeb::start(&monitor, &config, path).await {
        Ok(web) => web,
        Err(err) => {
            stop_monitor(monitor).await;
            return Err(err);
        }
    };
    // Remote write reads the web layer's metrics; without a web server, the
    // same API runs (with its round tap) for it alone.
    let (remote, _standalone) =
        match start_remote_write(&monitor, &config, web.as_ref().map(|w| &w.web)).await {
            Ok(started) => started,
            Err(err) => {
                if let Some(web) = web {
                    web.shutdown(WEB_GRACE).await;
                }
                stop_monitor(monitor).await;
                return Err(err);
            }
        };
    let mut watched = FileStamp::read(path);
    let mut watch = tokio::time::interval(WATCH_INTERVAL);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                tracing::info!(config = %path.display(), "SIGHUP: reloading the config");
                watched = FileStamp::read(path);
                reload(&monitor, path, web.as_ref().map(|w| &w.web), &web_config);
            }
            _ = watch.tick() => {
                let now = FileStamp::read(path);
                if now != watched {
                    watched = now;
                    tracing::info!(config = %path.display(), "the config file changed: reloading");
                    reload(&monitor, path, web.as_ref().map(|w| &w.web), &web_config);
                }
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }
    tracing::info!("stopping");
    drop(remote);
    drop(_standalone);
    if let Some(web) = web {
        web.shutdown(WEB_GRACE).await;
    }
    stop_monitor(monitor).await;
    Ok(())
}

/// Nice value of the web server's threads: above the probes' 0, so HTTP
/// clients get the CPU the probes leave, not the other way round.
const WEB_NICE: i32 = 5;

/// The web server on a runtime of its own: one worker thread (plus tokio's
/// blocking pool for store reads) at nice [`WEB_NICE`]. On the probes'
/// runtime, 200 API connections of history and export reads kept both
/// workers busy and round tasks waited up to 0.5 s to run: the rounds
/// started under that load fell to 64-73% of idle. On a runtime of their
/// own, 100% (tests/tests/web_lab.rs, `history_export_and_live_streams_
/// under_load_keep_probing_on_schedule`; docs/benchmarks.md).
struct ServedWeb {
    web: Web,
    runtime: tokio::runtime::Runtime,
}

impl ServedWeb {
    /// Starts the web server when `[web] enabled`; writes are saved to `path`.
    async fn start(
        monitor: &Arc<Monitor>,
        config: &Config,
        path: &Path,
    ) -> Result<Option<ServedWeb>, RunError> {
        if !config.web.enabled {
            tracing::info!("web server disabled ([web] enabled = false)");
            return Ok(None);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("hopwatch-web")
            .on_thread_start(|| {
                if let Err(err) = sys::lower_thread_priority(WEB_NICE) {
                    tracing::warn!(error = %err, "a web server thread keeps the probes' CPU priority");
                }
            })
            .enable_all()
            .build()
            .map_err(RunError::WebRuntime)?;
        let (monitor, config, path) = (Arc::clone(monitor), config.clone(), path.to_owned());
        // Everything the server spawns (connections, streams, background
        // refreshes) lands on the runtime it starts on.
        let started = runtime
            .spawn(async move { start_web(&monitor, &config, &path).await })
            .await;
        match started {
            Ok(Ok(web)) => Ok(web.map(|web| ServedWeb { web, runtime })),
            Ok(Err(err)) => {
                runtime.shutdown_background();
                Err(err.into())
            }
            Err(join) => {
                runtime.shutdown_background();
                Err(RunError::WebRuntime(std::io::Error::other(
                    join.to_string(),
                )))
            }
        }
    }

    async fn shutdown(self, grace: Duration) {
        self.web.shutdown(grace).await;
        // Dropping a runtime inside another one's task would block it.
        self.runtime.shutdown_background();
    }
}

/// Starts the web server when `[web] enabled`; writes are saved to `path`.
async fn start_web(
    monitor: &Arc<Monitor>,
    config: &Config,
    path: &Path,
) -> Result<Option<Web>, WebError> {
    if !config.web.enabled {
        tracing::info!("web server disabled ([web] enabled = false)");
        return Ok(None);
    }
    // Names for the hop table. Lookups happen only when a page asks, are
    // cached, and never delay probing.
    let enricher = match Enricher::new(EnrichConfig {
        reverse_dns: config.enrichment.reverse_dns,
        dns_timeout: config.enrichment.dns_timeout,
        asn_database: config.enrichment.asn_database.clone(),
        city_database: config.enrichment.city_database.clone(),
        ..EnrichConfig::default()
    }) {
        Ok(enricher) => Some(Arc::new(enricher)),
        Err(err) => {
            tracing::error!(error = %err, "responder names and AS numbers are unavailable");
            None
        }
    };
    let alerts: Arc<dyn AlertSource> = Arc::clone(monitor.alerts()) as Arc<dyn AlertSource>;
    let web = Web::start(monitor, config, Some(path.to_owned()), alerts, enricher).await?;
    tracing::info!(
        address = %web.local_addr(),
        writes = config.web.write_token.is_some(),
        read_token = config.web.read_token.is_some(),
        "web UI, API and metrics"
    );
    Ok(Some(web))
}

/// Starts pushing to the `[[remote_write]]` receivers, if any, from the web
/// server's API (or one of its own when the server is disabled).
async fn start_remote_write(
    monitor: &Arc<Monitor>,
    config: &Config,
    web: Option<&Web>,
) -> Result<(Option<Arc<RemoteWrite>>, Option<Background>), RunError> {
    if config.remote_write.is_empty() {
        return Ok((None, None));
    }
    let (api, background) = match web {
        Some(web) => (Arc::clone(web.api()), None),
        None => {
            let alerts: Arc<dyn AlertSource> = Arc::clone(monitor.alerts()) as Arc<dyn AlertSource>;
            let api = WebApi::new(monitor, config.clone(), None, alerts, None);
            let background = api.spawn_background();
            (api, Some(background))
        }
    };
    let source_api = Arc::clone(&api);
    let snapshot: SnapshotSource = Arc::new(move || source_api.metrics());
    let remote = Arc::new(RemoteWrite::start(
        config,
        Arc::clone(monitor.store()),
        snapshot,
    )?);
    api.set_remote_write(Arc::clone(&remote));
    Ok((Some(remote), background))
}

/// Takes the monitor back from the web layer (which holds it weakly, so
/// only requests in progress can delay this) and shuts it down.
async fn stop_monitor(mut monitor: Arc<Monitor>) {
    let started = std::time::Instant::now();
    loop {
        match Arc::try_unwrap(monitor) {
            Ok(owned) => return owned.shutdown().await,
            Err(shared) if started.elapsed() < RECLAIM_WAIT => {
                monitor = shared;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => {
                tracing::error!(
                    "a request still holds the monitor; stopping without the final flush"
                );
                return;
            }
        }
    }
}

/// `[web]` keys are read once, when the server starts.
fn web_restart_keys(old: &WebConfig, new: &WebConfig) -> Vec<&'static str> {
    [
        ("web.enabled", old.enabled != new.enabled),
        ("web.listen", old.listen != new.listen),
        ("web.read_token", old.read_token != new.read_token),
        ("web.write_token", old.write_token != new.write_token),
        (
            "web.max_body_bytes",
            old.max_body_bytes != new.max_body_bytes,
        ),
        (
            "web.hop_histograms",
            old.hop_histograms != new.hop_histograms,
        ),
        (
            "web.request_timeout",
            old.request_timeout != new.request_timeout,
        ),
        (
            "web.max_concurrent_reads",
            old.max_concurrent_reads != new.max_concurrent_reads,
        ),
        (
            "web.max_live_streams",
            old.max_live_streams != new.max_live_streams,
        ),
        ("web.allowed_hosts", old.allowed_hosts != new.allowed_hosts),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(key, _)| key)
    .collect()
}

/// A bad new config is logged and ignored: the daemon keeps running with the
/// one it has.
fn reload(monitor: &Monitor, path: &Path, web: Option<&Web>, running_web: &WebConfig) {
    match Config::load(path) {
        Ok(config) => {
            for key in web_restart_keys(running_web, &config.web) {
                tracing::warn!(
                    key,
                    "changed in the config, but only takes effect after a restart"
                );
            }
            let diff = monitor.reload(config.clone());
            // After the monitor: targets it removed no longer reach the tap.
            if let Some(web) = web {
                web.api().reloaded(&config);
            }
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
