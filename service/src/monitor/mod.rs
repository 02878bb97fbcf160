//! The monitoring daemon's core: the probe engine, every target's rounds, the
//! pipeline into live statistics and history, the `[[peer]]` STAMP sessions
//! and the `[reflector]`, and config reloads that leave unchanged targets and
//! peers alone.

pub mod live;
pub mod peers;
pub mod pipeline;
pub mod scheduler;
pub mod targets;

use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

pub use live::{LiveState, TargetEvent, TargetView};
pub use peers::{PeerSet, PeerState, PeerView, WindowStats};
pub use scheduler::{TargetRunner, TargetSchedule};
pub use targets::{TargetSet, TargetStatus};

use crate::alerts::{Alerts, AlertsError};
use crate::analysis::{AnalysisConfig, AnalysisConfigError};
use crate::config::{Config, ConfigDiff, PeerDiff};
use crate::peer::{Reflector, ReflectorError};
use crate::probe::{Engine, EngineError};
use crate::store::{Flusher, RawLog, RawLogError, Store, StoreConfig, StoreError};

/// Rounds waiting for the pipeline; beyond this, target tasks wait (backpressure).
const ROUND_QUEUE: usize = 4096;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("starting the probe engine: {0}")]
    Engine(#[source] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("opening the raw probe log: {0}")]
    RawLog(#[from] RawLogError),
    #[error("invalid statistics settings: {0}")]
    Analysis(#[from] AnalysisConfigError),
    #[error("starting alerts: {0}")]
    Alerts(#[from] AlertsError),
    #[error("starting the [reflector]: {0}")]
    Reflector(#[from] ReflectorError),
}

/// The running daemon core. Owned by `hopwatch run` and by tests.
pub struct Monitor {
    live: Arc<LiveState>,
    store: Arc<Store>,
    engine: Engine,
    /// `None` once shut down.
    targets: Mutex<Option<TargetSet>>,
    /// STAMP sessions of the `[[peer]]`s; `None` once shut down. Shared
    /// (weakly) with the task that hands their windows to the alert rules.
    peers: Arc<Mutex<Option<PeerSet>>>,
    /// That task ([`peers::judge`]).
    peer_alerts: Option<JoinHandle<()>>,
    /// `[reflector]`: answers other boxes' peers; stopped on shutdown.
    reflector: Mutex<Option<Reflector>>,
    config: Mutex<Config>,
    events: broadcast::Sender<TargetEvent>,
    pipeline: Option<JoinHandle<()>>,
    flusher: Option<Flusher>,
    alerts: Arc<Alerts>,
}

/// The store settings a config asks for.
pub fn store_config(config: &Config) -> StoreConfig {
    let s = &config.storage;
    StoreConfig {
        flush_interval: s.flush_interval,
        raw_retention: s.raw_retention,
        minute_retention: s.minute_retention,
        hour_retention: s.hour_retention,
        event_retention: s.event_retention,
        reclaim_interval: s.flush_interval,
        ..StoreConfig::default()
    }
}

impl Monitor {
    /// Starts the engine in the calling thread's network namespace, opens the
    /// store in `config.service.state_dir`, and starts every target.
    pub async fn start(config: Config) -> Result<Monitor, MonitorError> {
        let engine = Engine::start(config.engine_config())
            .await
            .map_err(MonitorError::Engine)?;
        let store = Arc::new(Store::open(
            &config.service.state_dir,
            store_config(&config),
        )?);
        Monitor::start_with(config, engine, store)
    }

    /// Starts over an engine and a store the caller opened.
    pub fn start_with(
        config: Config,
        engine: Engine,
        store: Arc<Store>,
    ) -> Result<Monitor, MonitorError> {
        let analysis = AnalysisConfig::new(
            config.statistics.window as usize,
            AnalysisConfig::DEFAULT_CONFIRM_ROUNDS,
        )?;
        let live = Arc::new(LiveState::new(analysis));
        let raw_log = match &config.storage.raw_log {
            Some(c) => Some(RawLog::open(&c.path, c.max_bytes, c.keep as usize)?),
            None => None,
        };
        let reflector = match &config.reflector {
            Some(settings) => {
                let reflector = Reflector::start(settings.reflector_config())?;
                tracing::info!(
                    listen = ?reflector.local_addrs(),
                    allowed = ?settings.allow,
                    "STAMP reflector started"
                );
                Some(reflector)
            }
            None => None,
        };
        let alerts = Arc::new(Alerts::start(&config)?);
        let flusher = store.spawn_flusher()?;
        let (rounds_tx, rounds_rx) = mpsc::channel(ROUND_QUEUE);
        let (events, _) = broadcast::channel(1024);
        let pipeline = tokio::spawn(pipeline::run(
            rounds_rx,
            Arc::clone(&live),
            Arc::clone(&store),
            raw_log,
            events.clone(),
            Arc::clone(&alerts),
        ));
        let mut targets = TargetSet::new(engine.clone(), rounds_tx, Arc::clone(&live));
        targets.start_all(&config);
        let peers = Arc::new(Mutex::new(Some(PeerSet::start(
            &config,
            Some(Arc::clone(&store)),
        ))));
        let peer_alerts = tokio::spawn(peers::judge(Arc::downgrade(&peers), Arc::clone(&alerts)));
        tracing::info!(
            targets = config.targets.len(),
            peers = config.peers.len(),
            store = %store.path().display(),
            timestamp_source = %engine.timestamp_source(),
            "monitoring started"
        );
        Ok(Monitor {
            live,
            store,
            engine,
            targets: Mutex::new(Some(targets)),
            peers,
            peer_alerts: Some(peer_alerts),
            reflector: Mutex::new(reflector),
            config: Mutex::new(config),
            events,
            pipeline: Some(pipeline),
            flusher: Some(flusher),
            alerts,
        })
    }

    /// Applies a new config: adds, removes, pauses, resumes and edits targets
    /// without touching the others. Settings read only at start are logged as
    /// needing a restart and keep their old values.
    pub fn reload(&self, new: Config) -> ConfigDiff {
        let mut current = self.config.lock().unwrap_or_else(|e| e.into_inner());
        let diff = ConfigDiff::between(&current, &new);
        for key in diff.restart_needed() {
            tracing::warn!(
                key,
                "changed in the config, but only takes effect after a restart"
            );
        }
        if let Some(targets) = self
            .targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            targets.apply(&new, &diff);
        }
        if current.reflector != new.reflector {
            tracing::warn!(
                key = "reflector",
                "changed in the config, but only takes effect after a restart"
            );
        }
        let peer_diff = PeerDiff::between(&current.peers, &new.peers);
        if !peer_diff.is_empty() {
            tracing::info!(
                added = peer_diff.added.len(),
                removed = peer_diff.removed.len(),
                changed = peer_diff.changed.len(),
                "peers reloaded"
            );
        }
        if let Some(peers) = self
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            peers.apply(&new, &peer_diff);
        }
        self.alerts.reload(&new);
        *current = new;
        diff
    }

    /// Every `[[peer]]` with its session state and window statistics.
    pub fn peers(&self) -> Vec<PeerView> {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(PeerSet::views)
            .unwrap_or_default()
    }

    /// One peer by name.
    pub fn peer(&self, name: &str) -> Option<PeerView> {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|p| p.view(name))
    }

    pub fn live(&self) -> &Arc<LiveState> {
        &self.live
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Alert rules, raised alerts and webhook delivery status.
    pub fn alerts(&self) -> &Arc<Alerts> {
        &self.alerts
    }

    /// Route and hop-count changes as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<TargetEvent> {
        self.events.subscribe()
    }

    /// Stops probing, lets the pipeline finish the rounds it has, and flushes
    /// the store.
    pub async fn shutdown(mut self) {
        // Dropping the target set drops every sender of the round queue.
        let targets = self
            .targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(targets);
        if let Some(judge) = self.peer_alerts.take() {
            judge.abort();
        }
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(peers) = peers {
            // Sessions end once their probes in flight are answered or time out.
            tokio::task::spawn_blocking(move || peers.shutdown())
                .await
                .ok();
        }
        let reflector = self
            .reflector
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(reflector) = reflector {
            tokio::task::spawn_blocking(move || reflector.stop())
                .await
                .ok();
        }
        if let Some(pipeline) = self.pipeline.take() {
            let _ = pipeline.await;
        }
        // Undelivered alerts stay in the outbox for the next start.
        self.alerts.shutdown().await;
        if let Some(flusher) = self.flusher.take() {
            tokio::task::spawn_blocking(move || flusher.stop())
                .await
                .ok();
        }
        tracing::info!("monitoring stopped; history flushed");
    }
}
