//! The monitoring daemon's core: the probe engine, every target's rounds, the
//! pipeline into live statistics, round subscribers and history, the
//! `[[peer]]` STAMP sessions and the `[reflector]`, and config reloads that
//! leave unchanged targets and peers alone.
//!
//! No single failure stops monitoring: a history store or alert outbox that
//! cannot be opened is quarantined and replaced ([`components`],
//! [`crate::health`]), and a `[reflector]` that cannot bind is retried in the
//! background.

pub mod branches;
pub mod components;
pub mod live;
pub mod peers;
pub mod pipeline;
pub mod scheduler;
pub mod targets;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

pub use components::{ComponentMode, ComponentStatus, OpenedStore};
pub use live::{LiveMemory, LiveState, TargetEvent, TargetView};
pub use peers::{PeerSet, PeerState, PeerView, WindowStats};
pub use scheduler::{TargetRunner, TargetSchedule};
pub use targets::{TargetSet, TargetStatus};

use crate::alerts::{Alerts, AlertsError, Monitored};
use crate::analysis::{AnalysisConfig, AnalysisConfigError};
use crate::config::ReflectorSettings;
use crate::config::{Config, ConfigDiff, PeerDiff};
use crate::model::RoundRecord;
use crate::peer::Reflector;
use crate::probe::{Engine, EngineError};
use crate::store::{Flusher, RawLog, RawLogError, Store, StoreConfig, StoreError};
use crate::sys;
use components::SharedStatus;

/// Rounds waiting for the pipeline; beyond this, target tasks wait (backpressure).
const ROUND_QUEUE: usize = 4096;

/// Completed rounds a subscriber ([`Monitor::subscribe_rounds`]) may fall
/// behind before it loses the oldest (and is told how many). The pipeline
/// never waits for subscribers.
pub const ROUND_BROADCAST: usize = 4096;

/// How often a `[reflector]` that could not bind tries again: its address
/// may appear later (an interface coming up), or its port be freed.
pub const REFLECTOR_RETRY: Duration = Duration::from_secs(30);

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
    /// The task that hands the store's and the outbox's health to the
    /// alerts ([`components::judge`]).
    component_alerts: Option<JoinHandle<()>>,
    /// `[reflector]`: answers other boxes' peers; stopped on shutdown. Shared
    /// with the task that retries a failed bind.
    reflector: Arc<Mutex<Option<Reflector>>>,
    /// That task, while it runs.
    reflector_retry: Option<JoinHandle<()>>,
    /// The reflector's state (`Retrying` while unbound); `None` without a
    /// `[reflector]`.
    reflector_status: Option<SharedStatus>,
    /// How the history store opened (quarantined, disabled).
    store_status: ComponentStatus,
    config: Mutex<Config>,
    events: broadcast::Sender<TargetEvent>,
    /// Every completed round of a live target, as the pipeline finishes it.
    rounds: broadcast::Sender<Arc<RoundRecord>>,
    pipeline: Option<JoinHandle<()>>,
    flusher: Option<Flusher>,
    alerts: Arc<Alerts>,
}

/// The targets and peers `config` monitors, as the alerts need to know them
/// (to clear the alerts of the removed ones).
pub fn monitored(config: &Config) -> Monitored {
    Monitored {
        targets: config.targets.iter().map(|t| t.id.clone()).collect(),
        peers: config.peers.iter().map(|p| p.name.clone()).collect(),
    }
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
    /// store in `config.service.state_dir` (quarantining a broken one, see
    /// [`components::open_store`]), and starts every target.
    pub async fn start(config: Config) -> Result<Monitor, MonitorError> {
        let engine = Engine::start(config.engine_config())
            .await
            .map_err(MonitorError::Engine)?;
        Monitor::start_with_engine(config, engine)
    }

    /// Starts over an engine the caller made, opening the store as
    /// [`Monitor::start`] does. Needs a tokio runtime.
    pub fn start_with_engine(config: Config, engine: Engine) -> Result<Monitor, MonitorError> {
        let store = components::open_store(&config.service.state_dir, store_config(&config));
        Monitor::start_opened(config, engine, store)
    }

    /// Starts over an engine and a store the caller opened.
    pub fn start_with(
        config: Config,
        engine: Engine,
        store: Arc<Store>,
    ) -> Result<Monitor, MonitorError> {
        Monitor::start_opened(config, engine, OpenedStore::ok(store))
    }

    fn start_opened(
        config: Config,
        engine: Engine,
        opened: OpenedStore,
    ) -> Result<Monitor, MonitorError> {
        let OpenedStore {
            store,
            status: store_status,
        } = opened;
        let analysis = AnalysisConfig::new(
            config.statistics.window as usize,
            AnalysisConfig::DEFAULT_CONFIRM_ROUNDS,
        )?;
        let live = Arc::new(LiveState::new(analysis));
        let raw_log = match &config.storage.raw_log {
            Some(c) => Some(RawLog::open(&c.path, c.max_bytes, c.keep as usize)?),
            None => None,
        };
        let reflector = Arc::new(Mutex::new(None));
        let (reflector_status, reflector_retry) = match &config.reflector {
            Some(settings) => {
                let (status, retry) =
                    start_reflector(settings.clone(), Arc::clone(&reflector), REFLECTOR_RETRY);
                (Some(status), retry)
            }
            None => (None, None),
        };
        let alerts = Arc::new(Alerts::start(
            &config.alerts,
            &config.service.state_dir,
            &monitored(&config),
        )?);
        let flusher = store.spawn_flusher()?;
        let (rounds_tx, rounds_rx) = mpsc::channel(ROUND_QUEUE);
        let (branches_tx, branches_rx) = mpsc::channel(ROUND_QUEUE);
        let (events, _) = broadcast::channel(1024);
        let (completed, _) = broadcast::channel(ROUND_BROADCAST);
        let pipeline = tokio::spawn(pipeline::run(
            pipeline::Inputs {
                rounds: rounds_rx,
                branches: branches_rx,
            },
            Arc::clone(&live),
            Arc::clone(&store),
            raw_log,
            pipeline::Outputs {
                rounds: completed.clone(),
                events: events.clone(),
            },
            Arc::clone(&alerts),
        ));
        let branch_outputs = branches::BranchOutputs {
            updates: branches_tx,
            store: Arc::clone(&store),
            events: events.clone(),
            discoveries: branches::Discoveries::default(),
        };
        let mut targets =
            TargetSet::new(engine.clone(), rounds_tx, branch_outputs, Arc::clone(&live));
        targets.start_all(&config);
        let peers = Arc::new(Mutex::new(Some(PeerSet::start(
            &config,
            Some(Arc::clone(&store)),
        ))));
        let peer_alerts = tokio::spawn(peers::judge(Arc::downgrade(&peers), Arc::clone(&alerts)));
        let component_alerts = tokio::spawn(components::judge(
            Arc::clone(&store),
            store_status.clone(),
            Arc::clone(&alerts),
        ));
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
            component_alerts: Some(component_alerts),
            reflector,
            reflector_retry,
            reflector_status,
            store_status,
            config: Mutex::new(config),
            events,
            rounds: completed,
            pipeline: Some(pipeline),
            flusher: Some(flusher),
            alerts,
        })
    }

    /// Applies a new config: adds, removes, pauses, resumes and edits targets
    /// without touching the others. Settings read only at start are logged as
    /// needing a restart and keep their old values.
    pub fn reload(&self, new: Config) -> ConfigDiff {
        let mut current = sys::lock(&self.config);
        let diff = ConfigDiff::between(&current, &new);
        for key in diff.restart_needed() {
            tracing::warn!(
                key,
                "changed in the config, but only takes effect after a restart"
            );
        }
        if let Some(targets) = sys::lock(&self.targets).as_mut() {
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
        if let Some(peers) = sys::lock(&self.peers).as_mut() {
            peers.apply(&new, &peer_diff);
        }
        self.alerts.reload(&new.alerts, &monitored(&new));
        *current = new;
        diff
    }

    /// Every `[[peer]]` with its session state and window statistics.
    pub fn peers(&self) -> Vec<PeerView> {
        sys::lock(&self.peers)
            .as_ref()
            .map(PeerSet::views)
            .unwrap_or_default()
    }

    /// One peer by name.
    pub fn peer(&self, name: &str) -> Option<PeerView> {
        sys::lock(&self.peers).as_ref().and_then(|p| p.view(name))
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

    /// Every component's state, in the order store, outbox, probe engine,
    /// reflector (the reflector only when configured).
    pub fn components(&self) -> Vec<ComponentStatus> {
        let mut all = vec![
            self.store_status.clone(),
            self.alerts.outbox_status(),
            components::engine_status(&self.engine, sys::now_ms()),
        ];
        if let Some(status) = &self.reflector_status {
            all.push(sys::lock(status).clone());
        }
        all
    }

    /// Alert rules, raised alerts and webhook delivery status.
    pub fn alerts(&self) -> &Arc<Alerts> {
        &self.alerts
    }

    /// Route and hop-count changes as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<TargetEvent> {
        self.events.subscribe()
    }

    /// Every round of a live target from now on, once, as the pipeline
    /// completes it (whether or not the store can write it). A receiver more
    /// than [`ROUND_BROADCAST`] rounds behind gets `Lagged` with the number
    /// it lost.
    pub fn subscribe_rounds(&self) -> broadcast::Receiver<Arc<RoundRecord>> {
        self.rounds.subscribe()
    }

    /// Stops probing, lets the pipeline finish the rounds it has, and flushes
    /// the store.
    pub async fn shutdown(mut self) {
        // Dropping the target set drops every sender of the round queue.
        let targets = sys::lock(&self.targets).take();
        drop(targets);
        if let Some(judge) = self.peer_alerts.take() {
            judge.abort();
        }
        if let Some(judge) = self.component_alerts.take() {
            judge.abort();
        }
        let peers = sys::lock(&self.peers).take();
        if let Some(peers) = peers {
            // Sessions end once their probes in flight are answered or time out.
            tokio::task::spawn_blocking(move || peers.shutdown())
                .await
                .ok();
        }
        if let Some(retry) = self.reflector_retry.take() {
            retry.abort();
        }
        let reflector = sys::lock(&self.reflector).take();
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

/// Starts the `[reflector]` into `slot`. If it cannot bind, the error is
/// logged and reported in the returned status, and a task tries again every
/// `retry` until it binds (or is aborted at shutdown): peers of other boxes
/// go unanswered meanwhile, everything else runs. Needs a tokio runtime.
pub fn start_reflector(
    settings: ReflectorSettings,
    slot: Arc<Mutex<Option<Reflector>>>,
    retry: Duration,
) -> (SharedStatus, Option<JoinHandle<()>>) {
    let status = Arc::new(Mutex::new(ComponentStatus::ok(components::REFLECTOR)));
    let try_start = {
        let status = Arc::clone(&status);
        move |settings: &ReflectorSettings, attempt: u64| -> bool {
            let mut status = sys::lock(&status);
            match Reflector::start(settings.reflector_config()) {
                Ok(reflector) => {
                    tracing::info!(
                        listen = ?reflector.local_addrs(),
                        allowed = ?settings.allow,
                        attempt,
                        "STAMP reflector started"
                    );
                    *sys::lock(&slot) = Some(reflector);
                    *status = ComponentStatus::ok(components::REFLECTOR);
                    true
                }
                Err(error) => {
                    // Loud on the first failure, quieter on the retries.
                    if attempt == 1 {
                        tracing::error!(%error, retry_in = ?retry, "STAMP reflector cannot start; retrying in the background");
                    } else {
                        tracing::warn!(%error, attempt, "STAMP reflector still cannot start");
                    }
                    status.mode = ComponentMode::Retrying;
                    status.error = Some(error.to_string());
                    false
                }
            }
        }
    };
    if try_start(&settings, 1) {
        return (status, None);
    }
    let task = tokio::spawn(async move {
        let mut attempt = 1;
        loop {
            tokio::time::sleep(retry).await;
            attempt += 1;
            // Binding is quick, but a blocking call: keep it off the runtime.
            let settings = settings.clone();
            let try_start = try_start.clone();
            let started = tokio::task::spawn_blocking(move || try_start(&settings, attempt))
                .await
                .unwrap_or(false);
            if started {
                return;
            }
        }
    });
    (status, Some(task))
}
