//! The service side of the web layer: [`WebApi`] implements the web crate's
//! read model and control over the running [`Monitor`] (live state, store,
//! engine), the [round tap](tap) (probe counters and histograms for /metrics,
//! sparklines, fed with the pipeline's rounds as they complete), the alerts
//! hook and the config file (where writes persist).
//!
//! It holds the monitor weakly: `hopwatch run` owns it and must get it back
//! to shut it down, whatever requests are still in flight.

pub mod alerts;
pub mod convert;
pub mod history;
pub mod peers;
pub mod persist;
pub mod sparkline;
pub mod tap;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use hopwatch_web::dto::{
    ConfigDto, ControlOutcome, EngineHealth, EventDto, HealthDto, HopRef, HopSummaryDto,
    HopTotalDto, MeasurementDto, NewTarget, SeriesDto, ServiceInfo, Sparkline, StoreHealthDto,
    TargetCounts, TargetDetail, TargetState, TargetSummary,
};
use hopwatch_web::metrics::{
    BranchMetrics, EngineMetrics, HopMetrics, KernelMetrics, MetricsSnapshot, StoreMetrics,
    TargetMetrics,
};
use hopwatch_web::{
    AppState, BranchRef, ConfigReadError, Control, ControlError, FlowSelection, HopSelection,
    HostCheck, ReadError, ReadModel, TimeRange, Tokens, WebServer, WebSettings,
};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::alerts::Subject;
use crate::config::{Config, WebConfig};
use crate::enrich::Enricher;
use crate::model::{BranchIndex, TargetId};
use crate::monitor::{Monitor, PeerView, TargetView};
use crate::remote::RemoteWrite;
use crate::store::Store;
use crate::sys::{self, now_ms};

pub use alerts::{AlertSource, NoAlerts};
pub use persist::ConfigFile;
pub use tap::RoundTap;

/// The web layer's view of the daemon.
pub struct WebApi {
    monitor: Weak<Monitor>,
    /// The running config: targets' intervals for the tap's first sparklines,
    /// measurement details for exports. Replaced on every reload and write.
    config: RwLock<Config>,
    /// Where writes are saved; `None` refuses writes (a monitor without a file).
    file: Option<ConfigFile>,
    alerts: Arc<dyn AlertSource>,
    enricher: Option<Arc<Enricher>>,
    tap: Arc<RoundTap>,
    events: broadcast::Sender<EventDto>,
    started_at_ms: u64,
    hop_histograms: bool,
    shutting_down: AtomicBool,
    /// One write at a time: each reads, edits and replaces the file.
    writing: Mutex<()>,
    /// The remote-write pushers, once started (they read this API's metrics).
    remote: std::sync::OnceLock<Arc<RemoteWrite>>,
}

impl WebApi {
    pub fn new(
        monitor: &Arc<Monitor>,
        config: Config,
        file: Option<ConfigFile>,
        alerts: Arc<dyn AlertSource>,
        enricher: Option<Arc<Enricher>>,
    ) -> Arc<WebApi> {
        Arc::new(WebApi {
            monitor: Arc::downgrade(monitor),
            hop_histograms: config.web.hop_histograms,
            config: RwLock::new(config),
            file,
            alerts,
            enricher,
            tap: Arc::new(RoundTap::new()),
            events: broadcast::channel(256).0,
            started_at_ms: now_ms(),
            shutting_down: AtomicBool::new(false),
            writing: Mutex::new(()),
            remote: std::sync::OnceLock::new(),
        })
    }

    /// Shows the remote-write pushers' state in /metrics, /healthz and the UI.
    pub fn set_remote_write(&self, remote: Arc<RemoteWrite>) {
        let _ = self.remote.set(remote);
    }

    fn remote_status(&self) -> Vec<crate::remote::ReceiverStatus> {
        self.remote.get().map(|r| r.status()).unwrap_or_default()
    }

    fn monitor(&self) -> Option<Arc<Monitor>> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return None;
        }
        self.monitor.upgrade()
    }

    /// Probes in the live window (`[statistics] window`).
    fn window_probes(&self) -> u32 {
        sys::read(&self.config).statistics.window
    }

    /// The daemon applied a new config (a reload): removed targets leave the
    /// tap.
    pub fn reloaded(&self, config: &Config) {
        self.tap
            .retain(|id| config.targets.iter().any(|t| &t.id == id));
        *sys::write(&self.config) = config.clone();
    }

    /// From now on the daemon is stopping: not ready, no more writes.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    pub fn tap(&self) -> &Arc<RoundTap> {
        &self.tap
    }

    /// Starts the round tap (following the pipeline's rounds, its
    /// sparklines first filled from the store) and the event forwarder; they
    /// stop when the returned handle is dropped.
    pub fn spawn_background(self: &Arc<Self>) -> Background {
        let mut tasks = Vec::new();
        if let Some(monitor) = self.monitor() {
            // Subscribed before the store is read, so no round falls between
            // the stored ones and the live ones (the tap skips a round it has).
            tasks.push(tokio::spawn(
                Arc::clone(&self.tap).follow(monitor.subscribe_rounds()),
            ));
            let tap = Arc::clone(&self.tap);
            let store = Arc::clone(monitor.store());
            let targets: Vec<(TargetId, Duration)> = sys::read(&self.config)
                .targets
                .iter()
                .map(|t| (t.id.clone(), t.probe.interval))
                .collect();
            tasks.push(tokio::spawn(async move {
                // The store may take a while; keep it off the runtime.
                let _ = tokio::task::spawn_blocking(move || {
                    tap.fill_from_store(&store, &targets, now_ms());
                })
                .await;
            }));
            let mut path_events = monitor.subscribe();
            let api = Arc::downgrade(self);
            tasks.push(tokio::spawn(async move {
                loop {
                    let event = match path_events.recv().await {
                        Ok(event) => event,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(
                                missed = n,
                                "web: path events lagged; counts may be short"
                            );
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    };
                    let Some(api) = api.upgrade() else { return };
                    match &event.event {
                        // A multipath branch's: not the target's own route.
                        crate::analysis::PathEvent::RouteChanged {
                            branch: Some(_), ..
                        } => {}
                        e => api.tap.count_event(
                            &event.target,
                            matches!(e, crate::analysis::PathEvent::RouteChanged { .. }),
                        ),
                    }
                    let _ = api.events.send(convert::live_event(&event));
                }
            }));
        }
        Background { tasks }
    }

    /// The alerts firing now, by subject key (a target's name, `peer:NAME`).
    fn active_alerts(&self) -> HashMap<String, Vec<hopwatch_web::dto::AlertDto>> {
        alerts::by_key(self.alerts.active())
    }

    fn source_of(&self, id: &TargetId) -> Option<crate::probe::TimestampSource> {
        self.tap
            .with(|taps| taps.get(id).and_then(|t| t.last_source))
    }

    fn view(&self, id: &str) -> Option<(Arc<Monitor>, TargetView)> {
        let tid = TargetId::new(id).ok()?;
        let monitor = self.monitor()?;
        let view = monitor.live().target(&tid)?;
        Some((monitor, view))
    }

    /// The branch `branch=N` asks for, when the target is multipath (now,
    /// in the running config) and the branch is one it probes now or has
    /// stored history of: after a restart, the history is there before the
    /// first discovery is.
    fn branch_of(
        &self,
        store: &Store,
        view: &TargetView,
        branch: BranchRef,
    ) -> Result<BranchIndex, ReadError> {
        let multipath = sys::read(&self.config)
            .targets
            .iter()
            .any(|t| t.id == view.id && t.multipath.is_some());
        if !multipath {
            return Err(ReadError::NotMultipath {
                target: view.id.to_string(),
            });
        }
        let live = view
            .analysis
            .branches
            .iter()
            .flat_map(|b| b.branches.iter().map(|b| b.index));
        let mut known: Vec<BranchIndex> = live.chain(store.branches_of(&view.id)).collect();
        known.sort();
        known.dedup();
        known
            .iter()
            .copied()
            .find(|k| k.get() == branch.get())
            .ok_or_else(|| ReadError::UnknownBranch {
                target: view.id.to_string(),
                branch,
                known: known
                    .iter()
                    .filter_map(|k| BranchRef::new(k.get()))
                    .collect(),
            })
    }

    fn outcome(&self, id: &str, action: &str, changed: bool) -> ControlOutcome {
        ControlOutcome {
            target: id.to_owned(),
            action: action.to_owned(),
            changed,
            persisted_to: self.file.as_ref().map(|f| f.path().display().to_string()),
        }
    }

    /// Runs a config-file edit and applies what it saved.
    fn write(
        &self,
        edit: impl FnOnce(&ConfigFile) -> Result<Option<Config>, ControlError>,
    ) -> Result<bool, ControlError> {
        let file = self.file.as_ref().ok_or_else(|| ControlError::Conflict {
            reason: "this daemon has no config file to save changes to".to_owned(),
        })?;
        let _one_at_a_time = sys::lock(&self.writing);
        let monitor = self.monitor().ok_or(ControlError::ShuttingDown)?;
        let Some(config) = edit(file)? else {
            return Ok(false);
        };
        let diff = monitor.reload(config.clone());
        self.reloaded(&config);
        tracing::info!(
            file = %file.path().display(),
            added = diff.added.len(),
            removed = diff.removed.len(),
            paused = diff.paused.len(),
            resumed = diff.resumed.len(),
            "applied a change made through the web API"
        );
        Ok(true)
    }
}

/// The web layer's background tasks; dropping this stops them.
pub struct Background {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl ReadModel for WebApi {
    fn service(&self) -> ServiceInfo {
        let source = self
            .monitor()
            .map(|m| m.engine().timestamp_source().to_string())
            .unwrap_or_else(|| "stopped".to_owned());
        ServiceInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            timestamp_source: source,
            started_at_ms: self.started_at_ms,
            window_probes: sys::read(&self.config).statistics.window,
            city_database: self
                .enricher
                .as_ref()
                .is_some_and(|e| e.has_city_database()),
        }
    }

    fn targets(&self) -> Vec<TargetSummary> {
        let Some(monitor) = self.monitor() else {
            return Vec::new();
        };
        let mut alerts = self.active_alerts();
        monitor
            .live()
            .targets()
            .iter()
            .map(|view| {
                convert::summary(
                    view,
                    alerts.remove(view.id.as_str()).unwrap_or_default(),
                    self.source_of(&view.id),
                )
            })
            .collect()
    }

    fn target(&self, id: &str) -> Option<TargetDetail> {
        let (_, view) = self.view(id)?;
        let alerts = self.active_alerts().remove(id).unwrap_or_default();
        Some(convert::detail(
            &view,
            alerts,
            self.source_of(&view.id),
            self.enricher.as_deref(),
        ))
    }

    fn sparklines(&self) -> Vec<Sparkline> {
        let Some(monitor) = self.monitor() else {
            return Vec::new();
        };
        // Live targets only: a round of a target being removed may still
        // have reached the tap after the reload.
        let live: std::collections::HashSet<TargetId> =
            monitor.live().target_ids().into_iter().collect();
        let mut lines: Vec<Sparkline> = self.tap.with(|taps| {
            taps.iter()
                .filter(|(id, _)| live.contains(*id))
                .map(|(id, tap)| Sparkline {
                    target: id.to_string(),
                    last_at_ms: tap.sparkline.last_at_ms(),
                    rtt_us: tap.sparkline.iter().map(|(_, rtt_us)| rtt_us).collect(),
                })
                .collect()
        });
        lines.sort_by(|a, b| a.target.cmp(&b.target));
        lines
    }

    fn series(
        &self,
        id: &str,
        flow: FlowSelection,
        hops: HopSelection,
        range: TimeRange,
    ) -> Result<Option<Vec<SeriesDto>>, ReadError> {
        let Some((monitor, view)) = self.view(id) else {
            return Ok(None);
        };
        let store = monitor.store();
        let (series_id, ttls) = match flow {
            FlowSelection::Target => (
                view.id.clone(),
                view.analysis
                    .hops
                    .iter()
                    .map(|h| (h.ttl, h.responder))
                    .collect(),
            ),
            FlowSelection::Branch(branch) => {
                let branch = self.branch_of(store, &view, branch)?;
                (
                    view.id.branch_series(branch),
                    history::branch_ttls(&view, branch),
                )
            }
        };
        let responder_at = |ttl: u8| ttls.iter().find(|(t, _)| *t == ttl).and_then(|(_, r)| *r);
        // Every branch ends at the target's own destination.
        let destination = view.analysis.destination.address;
        match hops {
            HopSelection::One(hop) => {
                let responder = match hop {
                    HopRef::Ttl(ttl) => responder_at(ttl),
                    HopRef::Destination => destination,
                };
                Ok(Some(vec![history::one(
                    store, &series_id, hop, range, responder,
                )?]))
            }
            HopSelection::All => Ok(Some(history::all(
                store,
                &series_id,
                &ttls,
                destination,
                range,
            )?)),
        }
    }

    fn hop_summary(
        &self,
        id: &str,
        flow: FlowSelection,
        range: TimeRange,
    ) -> Result<Option<HopSummaryDto>, ReadError> {
        let Some(series) = self.series(id, flow, HopSelection::All, range)? else {
            return Ok(None);
        };
        let Some((_, view)) = self.view(id) else {
            return Ok(None);
        };
        let config = sys::read(&self.config);
        let window = config.statistics.window;
        let resolution = series
            .first()
            .map_or_else(|| "raw".to_owned(), |s| s.resolution.clone());
        let hops = series
            .into_iter()
            .map(|s| {
                let info = s
                    .responder
                    .and_then(|ip| self.enricher.as_ref().map(|e| e.responder_info(ip)))
                    .unwrap_or_default();
                HopTotalDto {
                    hop: s.hop,
                    responder: s.responder,
                    hostname: info.hostname,
                    asn: info.asn,
                    as_org: info.as_org,
                    total: s.total,
                }
            })
            .collect();
        Ok(Some(HopSummaryDto {
            measurement: MeasurementDto {
                probe_interval_ms: view.interval_ms,
                protocol: view.protocol.to_string(),
                port: view.port,
                packet_size: view.packet_size,
                window_probes: window,
                window_ms: view.interval_ms * u64::from(window),
                timestamp_source: self.source_of(&view.id).map(|s| s.to_string()),
            },
            resolution,
            hops,
        }))
    }

    fn events(&self, id: &str, range: TimeRange) -> Result<Option<Vec<EventDto>>, ReadError> {
        let Some((monitor, view)) = self.view(id) else {
            return Ok(None);
        };
        let events = monitor
            .store()
            .events(&view.id, range.from_ms, range.to_ms)
            .map_err(|e| history::read_error("reading events", e))?;
        Ok(Some(
            events
                .iter()
                .map(|e| {
                    let mut dto = convert::stored_event(e);
                    dto.as_info = convert::as_info(&dto.detail, self.enricher.as_deref());
                    dto
                })
                .collect(),
        ))
    }

    fn health(&self) -> HealthDto {
        let shutting_down = self.shutting_down.load(Ordering::Relaxed);
        let Some(monitor) = self.monitor() else {
            return HealthDto {
                engine: EngineHealth {
                    running: false,
                    timestamp_source: "stopped".to_owned(),
                    probes_sent_total: 0,
                    in_flight: 0,
                },
                store: StoreHealthDto {
                    ok: false,
                    consecutive_failures: 0,
                    last_flush_ok_at_ms: None,
                    last_error_at_ms: None,
                    pending_bytes: 0,
                },
                targets: TargetCounts::default(),
                last_round_at_ms: None,
                shutting_down,
                components: Vec::new(),
                remote_write: self.remote_write(),
            };
        };
        let stats = monitor.engine().stats();
        let store = monitor.store().health();
        let mut counts = TargetCounts::default();
        let mut last_round = None;
        for view in monitor.live().targets() {
            counts.total += 1;
            match convert::state(&view.status).0 {
                TargetState::Running => counts.running += 1,
                TargetState::Paused => counts.paused += 1,
                TargetState::Resolving => counts.resolving += 1,
                TargetState::Failed => counts.failed += 1,
            }
            last_round = last_round.max(view.analysis.last_round_at_ms);
        }
        HealthDto {
            engine: EngineHealth {
                running: true,
                timestamp_source: monitor.engine().timestamp_source().to_string(),
                probes_sent_total: stats.probes_sent,
                in_flight: stats.in_flight,
            },
            store: StoreHealthDto {
                ok: store.ok,
                consecutive_failures: store.consecutive_failures,
                last_flush_ok_at_ms: store.last_flush_ok_at_ms,
                last_error_at_ms: store.last_error_at_ms,
                pending_bytes: store.pending_bytes,
            },
            targets: counts,
            last_round_at_ms: last_round,
            shutting_down,
            components: monitor
                .components()
                .iter()
                .map(convert::component_health)
                .collect(),
            remote_write: self.remote_write(),
        }
    }

    fn components(&self) -> Vec<hopwatch_web::dto::ComponentHealthDto> {
        self.monitor()
            .map(|m| {
                m.components()
                    .iter()
                    .map(convert::component_health)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn webhooks(&self) -> Vec<hopwatch_web::dto::WebhookDto> {
        self.alerts.webhooks()
    }

    fn alerts(&self) -> Vec<hopwatch_web::dto::AlertDto> {
        self.alerts.active()
    }

    fn incidents(
        &self,
        range: hopwatch_web::query::TimeRange,
        target: Option<&str>,
    ) -> Vec<hopwatch_web::dto::IncidentDto> {
        self.alerts.incidents(range.from_ms, range.to_ms, target)
    }

    fn metrics(&self) -> MetricsSnapshot {
        let Some(monitor) = self.monitor() else {
            return MetricsSnapshot::default();
        };
        let engine = monitor.engine();
        let stats = engine.stats();
        let store = monitor.store();
        let sm = store.metrics();
        let mut alerts = self.active_alerts();
        let views = monitor.live().targets();
        let targets = self.tap.with(|taps| {
            views
                .iter()
                .map(|view| {
                    let a = &view.analysis;
                    let tap = taps.get(&view.id);
                    let dest = &a.destination.window;
                    TargetMetrics {
                        target: view.id.to_string(),
                        state: convert::state(&view.status).0.as_str().to_owned(),
                        hop_count: a.path.hop_count.filter(|_| !view.final_hop_only),
                        mos: a.destination.mos.map(|m| m.mos),
                        loss_ratio: dest.loss_pct.map(|p| p / 100.0),
                        jitter_seconds: dest.jitter_mean_ns.map(|ns| ns / 1e9),
                        rounds: a.rounds,
                        route_changes: tap.map_or(0, |t| t.route_changes),
                        hop_count_changes: tap.map_or(0, |t| t.hop_count_changes),
                        alerts_firing: alerts
                            .remove(view.id.as_str())
                            .unwrap_or_default()
                            .into_iter()
                            .map(|a| a.name)
                            .collect(),
                        probes_sent: tap.map_or(0, |t| t.destination.sent),
                        probes_received: tap.map_or(0, |t| t.destination.received),
                        rtt: tap.map(|t| t.destination.rtt.clone()).unwrap_or_default(),
                        hops: a
                            .hops
                            .iter()
                            .map(|h| {
                                let counts = tap.and_then(|t| t.hops.get(&h.ttl));
                                HopMetrics {
                                    ttl: h.ttl,
                                    responder: h.responder.map(|r| r.to_string()),
                                    probes_sent: counts.map_or(0, |c| c.sent),
                                    probes_received: counts.map_or(0, |c| c.received),
                                    loss_ratio: h.window.loss_pct.map(|p| p / 100.0),
                                    jitter_seconds: h.window.jitter_mean_ns.map(|ns| ns / 1e9),
                                    rate_limited: h.rate_limited,
                                    slow_responder: h.slow_responder,
                                    rtt: self
                                        .hop_histograms
                                        .then(|| counts.map(|c| c.rtt.clone()).unwrap_or_default()),
                                }
                            })
                            .collect(),
                        discovery_probes: a.branches.as_ref().map(|b| u64::from(b.probes_sent)),
                        branches: a
                            .branches
                            .iter()
                            .flat_map(|b| &b.branches)
                            .map(|b| BranchMetrics {
                                branch: b.index.get(),
                                rounds: b.rounds,
                                loss_ratio: b.destination.loss_pct.map(|p| p / 100.0),
                                rtt_avg_seconds: b.destination.avg_ns.map(|ns| ns / 1e9),
                                jitter_seconds: b.destination.jitter_mean_ns.map(|ns| ns / 1e9),
                                split_ttl: b.split_ttl,
                                join_ttl: b.join_ttl,
                                hop_loss: b
                                    .hops
                                    .iter()
                                    .filter_map(|h| Some((h.ttl, h.window.loss_pct? / 100.0)))
                                    .collect(),
                            })
                            .collect(),
                    }
                })
                .collect()
        });
        MetricsSnapshot {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            timestamp_source: engine.timestamp_source().to_string(),
            engine: EngineMetrics {
                probes_sent: stats.probes_sent,
                probes_answered: stats.probes_answered,
                probes_timed_out: stats.probes_timed_out,
                send_errors: stats.send_errors,
                replies_unmatched: stats.replies_unmatched,
                in_flight: stats.in_flight,
                kernel: stats.kernel.map(|k| KernelMetrics {
                    egress_stamped: k.egress_stamped,
                    egress_map_full: k.egress_map_full,
                    ingress_matched: k.ingress_matched,
                    ingress_unmatched: k.ingress_unmatched,
                    parse_errors: k.parse_error,
                    ringbuf_drops: k.ringbuf_drop,
                    ingress_tc_clock: k.ingress_tc_clock,
                }),
            },
            store: StoreMetrics {
                write_bytes: sm.write_bytes_total,
                flushes: sm.flushes_total,
                flush_errors: sm.flush_errors_total,
                dropped_rounds: sm.dropped_rounds_total,
                dropped_events: sm.dropped_events_total,
                pending_bytes: sm.pending_bytes,
                healthy: store.health().ok,
            },
            live_rounds_skipped: self.tap.skipped_rounds(),
            webhook_delivery_failures: self.alerts.webhook_failures(),
            alert_outbox: self.alerts.outbox_metrics(),
            components: monitor
                .components()
                .iter()
                .map(convert::component_metrics)
                .collect(),
            targets,
            peers: monitor
                .peers()
                .iter()
                .map(|view| peers::metrics(view, peer_alerts(&mut alerts, view)))
                .collect(),
            remote_write: self
                .remote_status()
                .iter()
                .map(|r| convert::remote_write_metrics(r, now_ms()))
                .collect(),
            memory: Some(convert::memory_metrics(
                crate::sys::heap_usage(),
                monitor.live().memory(),
            )),
        }
    }

    /// A scrape at 1,000 10-hop targets builds every target's view and
    /// 10,000 hop series; freed, they stayed resident in the web threads'
    /// heaps until the next flush's trim, ~10 MiB at scrapes every 15 s
    /// (docs/benchmarks.md, issue 15 step 11).
    fn scrape_done(&self) {
        crate::sys::return_freed_memory();
    }

    fn remote_write(&self) -> Vec<hopwatch_web::dto::RemoteWriteDto> {
        self.remote_status()
            .iter()
            .map(|r| convert::remote_write_dto(r, now_ms()))
            .collect()
    }

    fn subscribe(&self) -> broadcast::Receiver<EventDto> {
        self.events.subscribe()
    }

    fn peers(&self) -> Vec<hopwatch_web::dto::PeerDto> {
        let Some(monitor) = self.monitor() else {
            return Vec::new();
        };
        let window = self.window_probes();
        let mut alerts = self.active_alerts();
        monitor
            .peers()
            .iter()
            .map(|view| peers::dto(view, window, peer_alerts(&mut alerts, view)))
            .collect()
    }

    fn peer(&self, name: &str) -> Option<hopwatch_web::dto::PeerDto> {
        let monitor = self.monitor()?;
        let window = self.window_probes();
        let view = monitor.peer(name)?;
        let alerts = peer_alerts(&mut self.active_alerts(), &view);
        Some(peers::dto(&view, window, alerts))
    }

    fn peer_history(
        &self,
        name: &str,
        range: TimeRange,
    ) -> Result<Option<hopwatch_web::dto::PeerHistoryDto>, ReadError> {
        let Some(monitor) = self.monitor() else {
            return Ok(None);
        };
        // Only configured peers: a removed peer's history stays in the store
        // until retention drops it, but is not served.
        let Some(view) = monitor.peer(name) else {
            return Ok(None);
        };
        peers::history(monitor.store(), &view.config.name, range).map(Some)
    }

    fn config(&self) -> Result<ConfigDto, ConfigReadError> {
        self.shown_config()
    }
}

/// Takes `view`'s peer's alerts out of `alerts` (keyed by subject key).
fn peer_alerts(
    alerts: &mut HashMap<String, Vec<hopwatch_web::dto::AlertDto>>,
    view: &PeerView,
) -> Vec<hopwatch_web::dto::AlertDto> {
    let key = Subject::Peer(view.config.name.clone()).key();
    alerts.remove(&key).unwrap_or_default()
}

impl Control for WebApi {
    fn set_paused(&self, id: &str, paused: bool) -> Result<ControlOutcome, ControlError> {
        let changed = self.write(|file| file.set_paused(id, paused))?;
        Ok(self.outcome(id, if paused { "paused" } else { "resumed" }, changed))
    }

    fn add_target(&self, target: &NewTarget) -> Result<ControlOutcome, ControlError> {
        self.write(|file| file.add_target(target).map(Some))?;
        Ok(self.outcome(&target.name, "added", true))
    }

    fn remove_target(&self, id: &str) -> Result<ControlOutcome, ControlError> {
        self.write(|file| file.remove_target(id).map(Some))?;
        Ok(self.outcome(id, "removed", true))
    }

    fn add_targets(&self, targets: &[NewTarget]) -> Result<Vec<ControlOutcome>, ControlError> {
        self.write(|file| file.add_targets(targets).map(Some))?;
        Ok(targets
            .iter()
            .map(|t| self.outcome(&t.name, "added", true))
            .collect())
    }
}

impl WebApi {
    /// The config file, secrets redacted, when it is what the daemon runs.
    fn shown_config(&self) -> Result<ConfigDto, ConfigReadError> {
        let file = self.file.as_ref().ok_or(ConfigReadError::Unavailable)?;
        let running = sys::read(&self.config).clone();
        show_config(file.path(), &running)
    }
}

/// The config file at `path`, secrets redacted, when it is `running` (an
/// edit not reloaded yet would show something the daemon does not do).
fn show_config(path: &std::path::Path, running: &Config) -> Result<ConfigDto, ConfigReadError> {
    let failed = |source: hopwatch_web::model::Source| ConfigReadError::Failed { source };
    let text = std::fs::read_to_string(path).map_err(|e| failed(Box::new(e)))?;
    let on_disk = Config::parse(&text, path).map_err(|err| ConfigReadError::Conflict {
        reason: format!(
            "the config file no longer validates, so it is not what the daemon runs \
             ({err}); fix it, or undo the edit"
        ),
    })?;
    if on_disk != *running {
        return Err(ConfigReadError::Conflict {
            reason: format!(
                "the config file {} was changed since the daemon loaded it; reload the \
                 daemon (SIGHUP, e.g. systemctl reload hopwatch) to run it, or undo the edit",
                path.display()
            ),
        });
    }
    let shown = crate::config::redact::redact(&text).map_err(|e| failed(Box::new(e)))?;
    let toml = shown.to_toml().map_err(|e| failed(Box::new(e)))?;
    let config = serde_json::to_value(&shown.table).map_err(|e| failed(Box::new(e)))?;
    let header = format!(
        "# hopwatch configuration from {}, as running.\n# Secrets are replaced by \"{}\": {}.\n# Comments are not kept.\n\n",
        path.display(),
        crate::config::redact::REDACTED,
        if shown.redacted.is_empty() {
            "none".to_owned()
        } else {
            shown.redacted.join(", ")
        }
    );
    Ok(ConfigDto {
        path: Some(path.display().to_string()),
        redacted: shown.redacted,
        config,
        toml: header + &toml,
    })
}

/// The web server of `hopwatch run`, with what it needs to stop cleanly.
pub struct Web {
    api: Arc<WebApi>,
    server: WebServer,
    _background: Background,
}

/// Why the web server could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("starting the web server ([web] listen = {listen}): {source}")]
    Serve {
        listen: std::net::SocketAddr,
        source: hopwatch_web::ServeError,
    },
}

/// The web crate's settings from `[web]`.
pub fn settings(web: &WebConfig) -> WebSettings {
    WebSettings {
        tokens: Tokens {
            read: web.read_token.clone(),
            write: web.write_token.clone(),
        },
        max_body_bytes: usize::try_from(web.max_body_bytes).unwrap_or(usize::MAX),
        request_timeout: web.request_timeout,
        max_concurrent_reads: usize::try_from(web.max_concurrent_reads).unwrap_or(usize::MAX),
        max_live_streams: usize::try_from(web.max_live_streams).unwrap_or(usize::MAX),
        hosts: HostCheck::for_listen(web.listen, &web.allowed_hosts),
        ..WebSettings::default()
    }
}

impl Web {
    /// Starts the web server for a running monitor. `config_file` is where
    /// writes are saved.
    pub async fn start(
        monitor: &Arc<Monitor>,
        config: &Config,
        config_file: Option<PathBuf>,
        alerts: Arc<dyn AlertSource>,
        enricher: Option<Arc<Enricher>>,
    ) -> Result<Web, WebError> {
        let api = WebApi::new(
            monitor,
            config.clone(),
            config_file.map(ConfigFile::new),
            alerts,
            enricher,
        );
        let background = api.spawn_background();
        let state = AppState::new(
            Arc::clone(&api) as Arc<dyn ReadModel>,
            Arc::clone(&api) as Arc<dyn Control>,
            settings(&config.web),
        );
        let server = WebServer::bind(config.web.listen, state)
            .await
            .map_err(|source| WebError::Serve {
                listen: config.web.listen,
                source,
            })?;
        Ok(Web {
            api,
            server,
            _background: background,
        })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }

    pub fn api(&self) -> &Arc<WebApi> {
        &self.api
    }

    /// Not ready any more, live streams ended, requests in progress given
    /// `grace` to finish.
    pub async fn shutdown(self, grace: Duration) {
        self.api.begin_shutdown();
        self.server.shutdown(grace).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_config_is_shown_redacted_and_an_unloaded_edit_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hopwatch.toml");
        let text = "[web]\nwrite_token = \"write-secret-0123456789\"\n\n\
                    [[target]]\nname = \"gw\"\nhost = \"198.18.0.1\"\n";
        std::fs::write(&path, text).unwrap();
        let running = Config::parse(text, &path).unwrap();

        let shown = show_config(&path, &running).unwrap();
        assert_eq!(shown.path.as_deref(), Some(path.to_str().unwrap()));
        assert_eq!(shown.redacted, ["web.write_token"]);
        assert_eq!(shown.config["web"]["write_token"], "<redacted>");
        assert_eq!(shown.config["target"][0]["host"], "198.18.0.1");
        assert!(!shown.toml.contains("write-secret"), "{}", shown.toml);
        assert!(
            shown.toml.contains("Secrets are replaced"),
            "{}",
            shown.toml
        );
        assert!(
            shown.toml.contains("host = \"198.18.0.1\""),
            "{}",
            shown.toml
        );

        // Edited, not reloaded: not what runs, and the answer says what to do.
        std::fs::write(&path, text.replace("198.18.0.1", "198.18.0.2")).unwrap();
        match show_config(&path, &running) {
            Err(ConfigReadError::Conflict { reason }) => {
                assert!(reason.contains("reload"), "{reason}");
                assert!(reason.contains(path.to_str().unwrap()), "{reason}");
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        std::fs::write(&path, "[defaults]\nintervall = 1\n").unwrap();
        match show_config(&path, &running) {
            Err(ConfigReadError::Conflict { reason }) => {
                assert!(reason.contains("no longer validates"), "{reason}");
                assert!(reason.contains("intervall"), "{reason}");
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            show_config(&path, &running),
            Err(ConfigReadError::Failed { .. })
        ));
    }

    #[test]
    fn the_web_limits_reach_the_server() {
        let mut web = WebConfig {
            request_timeout: Duration::from_secs(3),
            max_concurrent_reads: 2,
            max_live_streams: 5,
            ..WebConfig::default()
        };
        let s = settings(&web);
        assert_eq!(s.request_timeout, Duration::from_secs(3));
        assert_eq!(s.max_concurrent_reads, 2);
        assert_eq!(s.max_live_streams, 5);
        // Loopback (the default): Host always checked.
        assert!(s.hosts.enforced());
        assert!(!s.hosts.allows("evil.example"));

        // On the network: checked only once names are listed.
        web.listen = "0.0.0.0:9470".parse().unwrap();
        assert!(!settings(&web).hosts.enforced());
        web.allowed_hosts = vec!["mon.example".to_owned()];
        let s = settings(&web);
        assert!(s.hosts.allows("mon.example:9470"));
        assert!(!s.hosts.allows("evil.example"));
    }
}
