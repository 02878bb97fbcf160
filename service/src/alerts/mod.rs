//! Alerts: rules over each target's destination statistics and path events
//! (loss, latency, jitter, MOS, unreachable, route and hop-count changes) and
//! over each peer's link window (loss with its direction, latency, jitter),
//! a hysteresis state machine per (subject, rule), and at-least-once webhook
//! delivery through a persistent outbox.
//!
//! An alert is raised, then cleared; in between, a target's loss or latency
//! alert is updated whenever the analysis has settled on another hop as where
//! the problem starts (see [`engine`]), so a receiver's diagnosis is right
//! while the alert lasts, not only the moment it was raised.
//!
//! Data flow, once per round of a target (called by the monitor's pipeline
//! after the live analysis took the round) or per update of a peer's window
//! (about once a second, from `monitor::peers::judge`). The monitor hands in
//! the analysis' snapshot (a target's [`TargetSnapshot`], a peer's
//! [`WindowStats`]) with a small description of its subject ([`TargetInfo`],
//! [`PeerInfo`]): alerts sit below the monitor and never read its views.
//!
//! ```text
//! TargetSnapshot / WindowStats ──► AlertEngine (rules + machines) ──► transitions
//!   ──► AlertEvent (id, snapshot, localisation) ──► Outbox (sled, flushed)
//!       (raised / updated / cleared)
//!   ──► Delivery lanes (webhook x subject, in order, backoff) ──► HTTP POST
//! ```
//!
//! [`Alerts`] ties them together for the monitor. A subject is a target
//! (keyed by its name) or a peer (keyed `peer:NAME`, see [`subject`]).
//! [`Alerts`] is started from the alert settings ([`settings`]), which the
//! config fills in, and told which targets and peers exist ([`Monitored`]);
//! it never reads the rest of the config.
//!
//! No alert is lost to a sick disk: an event the outbox cannot write is kept
//! in memory (bounded by `[alerts] outbox_memory_events`), delivered from
//! there and written with a later alert; and none fills the disk: the outbox
//! drops deliveries past `[alerts] outbox_max_age` or `outbox_max_bytes`
//! (see [`outbox`] and [`delivery`]). Both are counted for /metrics.
//!
//! A target or peer removed from the config (by a reload, or while the
//! service was stopped) can no longer recover: its raised alerts are cleared
//! at once, with the reason `target_removed` or `peer_removed`, so no
//! receiver keeps them open forever.

pub mod delivery;
pub mod engine;
pub mod error;
pub mod event;
pub mod format;
pub mod incidents;
pub mod kind;
pub mod machine;
pub mod outbox;
pub mod peer_rules;
pub mod rules;
pub mod secret;
pub mod settings;
pub mod sign;
pub mod subject;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use delivery::{DeliveryCounters, DeliveryOptions, WebhookStatus};
pub use engine::{AlertEngine, RoundOutcome, Transition, UPDATE_AFTER_ROUNDS};
pub use error::{AlertsError, DeliveryError};
pub use event::{AlertEvent, AlertTarget, ClearReason, StartHop, SCHEMA};
pub use incidents::Incident;
pub use kind::{AlertKind, AlertState, UnknownAlertKind};
pub use outbox::{ActiveAlert, DropReason, MemoryCounts, Outbox};
pub use secret::{Secret, WebhookUrl, WebhookUrlError};
pub use settings::{
    AlertRules, AlertsConfig, LatencyStat, OutboxLimits, WebhookConfig, WebhookFilter,
    WebhookFormat,
};
pub use sign::{IDEMPOTENCY_HEADER, SIGNATURE_HEADER};
pub use subject::{InvalidSubject, Subject, SubjectKind, PEER_PREFIX, SERVICE_PREFIX};

use crate::analysis::{PathEvent, TargetSnapshot, WindowStats};
use crate::health::{self, ComponentMode, ComponentStatus};
use crate::model::TargetId;
use crate::sys;
use peer_rules::PeerRound;

use delivery::Delivery;

/// Where the outbox lives: its own sled database inside the state directory.
pub fn outbox_path(state_dir: &Path) -> PathBuf {
    state_dir.join("outbox")
}

/// The targets and peers being monitored (paused ones too: they keep their
/// alerts). A raised alert of any other subject can never recover, so it is
/// cleared as removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Monitored {
    pub targets: Vec<TargetId>,
    /// By peer name.
    pub peers: Vec<TargetId>,
}

impl Monitored {
    fn subjects(&self) -> HashSet<Subject> {
        let targets = self.targets.iter().cloned().map(Subject::Target);
        let peers = self.peers.iter().cloned().map(Subject::Peer);
        targets.chain(peers).collect()
    }
}

/// What a target's alerts say about it, as the monitor knows it: built for
/// each round, borrowed, so a round that changes nothing costs no copies.
#[derive(Debug, Clone, Copy)]
pub struct TargetInfo<'a> {
    pub id: &'a TargetId,
    pub label: Option<&'a str>,
    /// The host as configured (a name or an address).
    pub host: &'a str,
    /// The address being probed, once the host is resolved; until then the
    /// analysis' destination address, if it has one, is reported.
    pub address: Option<IpAddr>,
    pub tags: &'a [String],
}

/// What a peer's alerts say about it, as the monitor knows it.
#[derive(Debug, Clone, Copy)]
pub struct PeerInfo<'a> {
    pub name: &'a TargetId,
    pub label: Option<&'a str>,
    pub address: IpAddr,
    pub tags: &'a [String],
}

/// Where a peer's STAMP session stands, as its alerts see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState<'a> {
    /// Paused by the config: its alerts stay as they are.
    Paused,
    /// Starting, or waiting to start again after a failure.
    Starting,
    Running,
    /// The last attempt failed, for this reason.
    Failed {
        error: &'a str,
    },
}

/// One update of a peer link's window, with the session's state.
#[derive(Debug, Clone, Copy)]
pub struct PeerLink<'a> {
    pub state: SessionState<'a>,
    /// The statistics over the last `window_probes` probes.
    pub window: &'a WindowStats,
    /// How many probes the window holds when full.
    pub window_probes: usize,
    /// Probes resolved since the peer's runner started: it grows whenever
    /// `window` took new probes, so each update is judged once.
    pub resolved: u64,
}

/// The running alert subsystem.
pub struct Alerts {
    engine: Mutex<AlertEngine>,
    outbox: Arc<Outbox>,
    delivery: Delivery,
    /// How the outbox opened (quarantined, in memory), for health and metrics.
    outbox_status: ComponentStatus,
}

/// Opens the outbox at `path` so that it cannot stop monitoring: one that
/// cannot be opened is quarantined (moved aside, see [`crate::health`])
/// and a fresh one created; if that fails too, or another process holds its
/// lock, alerts are kept in memory only. Fails only if even sled's in-memory
/// database cannot be created.
pub fn open_outbox(
    path: &Path,
    webhooks: &[String],
) -> Result<(Outbox, ComponentStatus), AlertsError> {
    let error = match Outbox::open(path, webhooks) {
        Ok(outbox) => return Ok((outbox, ComponentStatus::ok(health::OUTBOX))),
        Err(error) => error,
    };
    let mut status = ComponentStatus {
        component: health::OUTBOX,
        mode: ComponentMode::Disabled,
        error: Some(error.to_string()),
        quarantined: Vec::new(),
    };
    let contended = matches!(
        &error,
        AlertsError::Open { source, .. } | AlertsError::Sled { source, .. }
            if health::is_lock_contention(source)
    );
    if !contended {
        match health::quarantine_dir(path) {
            Ok(to) => {
                tracing::error!(
                    path = %path.display(),
                    quarantined = %to.display(),
                    %error,
                    "alert outbox cannot be opened; moved it aside and starting a fresh one"
                );
                status.quarantined.push(to);
                match Outbox::open(path, webhooks) {
                    Ok(outbox) => {
                        status.mode = ComponentMode::Fresh;
                        return Ok((outbox, status));
                    }
                    Err(fresh) => status.error = Some(fresh.to_string()),
                }
            }
            Err(quarantine) => {
                tracing::error!(path = %path.display(), %error, %quarantine, "alert outbox cannot be moved aside");
            }
        }
    }
    tracing::error!(
        path = %path.display(),
        error = status.error.as_deref().unwrap_or_default(),
        "alert outbox unavailable; keeping alerts in memory only (lost on restart)"
    );
    let outbox = Outbox::open_in_memory(path, webhooks)?;
    Ok((outbox, status))
}

impl Alerts {
    /// Opens the outbox in `state_dir`, clears the alerts of targets and
    /// peers no longer `monitored`, restores the other raised alerts, and
    /// starts delivering what is still owed under `settings`. Needs a tokio
    /// runtime.
    pub fn start(
        settings: &AlertsConfig,
        state_dir: &Path,
        monitored: &Monitored,
    ) -> Result<Alerts, AlertsError> {
        Alerts::start_with(settings, state_dir, monitored, DeliveryOptions::default())
    }

    /// [`Alerts::start`] with delivery `options`.
    pub fn start_with(
        settings: &AlertsConfig,
        state_dir: &Path,
        monitored: &Monitored,
        options: DeliveryOptions,
    ) -> Result<Alerts, AlertsError> {
        let hooks = settings.webhooks.clone();
        let names: Vec<String> = hooks.iter().map(|h| h.name.clone()).collect();
        let (outbox, outbox_status) = open_outbox(&outbox_path(state_dir), &names)?;
        let limits = settings.outbox;
        outbox.set_memory_limit(limits.memory_events as usize);
        let options = DeliveryOptions {
            max_age: limits.max_age,
            max_bytes: limits.max_bytes,
            ..options
        };
        let outbox = Arc::new(outbox);
        let mut engine = AlertEngine::new(settings.clone());
        engine.set_peers(monitored.peers.iter().cloned());
        // Queued here, these clears are loaded by the delivery worker below.
        retire_removed(&outbox, &mut engine, &hooks, &monitored.subjects())?;
        let persisted = outbox.persisted()?;
        for id in persisted.answered {
            engine.restore(&Subject::Target(id), true, &[]);
        }
        for active in &persisted.active {
            engine.restore(&active.target, false, &[active.kind]);
            if let Subject::Target(id) = &active.target {
                engine.restore_placement(id, active.kind, active.sent_hop());
            }
        }
        if !persisted.active.is_empty() {
            tracing::info!(
                raised = persisted.active.len(),
                "alerts still raised from the last run"
            );
        }
        let delivery = Delivery::start_with(Arc::clone(&outbox), hooks, options)?;
        Ok(Alerts {
            engine: Mutex::new(engine),
            outbox,
            delivery,
            outbox_status,
        })
    }

    /// How the outbox opened: `Ok`, `Fresh` after a quarantine, or
    /// `Disabled` (in memory only).
    pub fn outbox_status(&self) -> ComponentStatus {
        self.outbox_status.clone()
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, AlertEngine> {
        // Evaluation is one synchronous step: a panic leaves the state usable.
        sys::lock(&self.engine)
    }

    /// Evaluates one round of `target`, whose analysis now reads `snapshot`,
    /// with the path events the round caused, and stores and queues what it
    /// raises, updates or clears. Errors are logged: alerts never stop the
    /// pipeline.
    pub async fn on_round(
        &self,
        target: &TargetInfo<'_>,
        snapshot: &TargetSnapshot,
        events: &[PathEvent],
    ) {
        let outcome = self.engine().evaluate(snapshot, events);
        if outcome.transitions.is_empty() && !outcome.first_answer {
            return;
        }
        let about = About {
            subject: Subject::Target(target.id.clone()),
            target: AlertTarget {
                name: target.id.to_string(),
                subject: SubjectKind::Target,
                label: target.label.map(str::to_owned),
                host: target.host.to_owned(),
                address: target.address.or(snapshot.destination.address),
                tags: target.tags.to_vec(),
            },
            at_ms: snapshot.last_round_at_ms.unwrap_or_else(event::now_ms),
            snapshot: serde_json::to_value(snapshot).unwrap_or(serde_json::Value::Null),
        };
        let answered = outcome.first_answer.then_some(target.id);
        let placed = outcome
            .transitions
            .into_iter()
            .map(|t| {
                let place = localisation(snapshot, t.kind);
                (t, place)
            })
            .collect();
        if let Err(err) = self.record(&about, placed, answered).await {
            tracing::error!(target = %target.id, error = %err, "alert not stored or not flushed");
        }
    }

    /// Evaluates one update of `peer`'s link (a paused peer keeps its alerts
    /// as they are), and stores and queues what it raises or clears. Errors
    /// are logged.
    pub async fn on_peer(&self, peer: &PeerInfo<'_>, link: &PeerLink<'_>) {
        let failed = match link.state {
            SessionState::Paused => return,
            SessionState::Failed { error } => Some(error),
            SessionState::Starting | SessionState::Running => None,
        };
        let round = PeerRound {
            window: link.window,
            window_probes: link.window_probes,
            resolved: link.resolved,
            failed,
        };
        let transitions = self.engine().evaluate_peer(peer.name, &round);
        if transitions.is_empty() {
            return;
        }
        let about = About {
            subject: Subject::Peer(peer.name.clone()),
            target: AlertTarget {
                name: Subject::Peer(peer.name.clone()).key(),
                subject: SubjectKind::Peer,
                label: peer.label.map(str::to_owned),
                host: peer.address.to_string(),
                address: Some(peer.address),
                tags: peer.tags.to_vec(),
            },
            at_ms: event::now_ms(),
            snapshot: serde_json::json!({
                "peer": peer.name,
                "state": match link.state {
                    SessionState::Failed { .. } => "failed",
                    SessionState::Starting => "starting",
                    _ => "running",
                },
                "error": failed,
                "window_probes": link.window_probes,
                "window": link.window,
            }),
        };
        let placed = transitions
            .into_iter()
            .map(|t| {
                let place = (t.state == AlertState::Raised)
                    .then(|| peer_rules::localisation(t.kind, &round))
                    .flatten();
                (t, place)
            })
            .collect();
        if let Err(err) = self.record(&about, placed, None).await {
            tracing::error!(peer = %peer.name, error = %err, "alert not stored or not flushed");
        }
    }

    /// Takes in how one of the service's own components runs (`problem`:
    /// what is wrong while it is degraded, `None` when it is fine) and
    /// raises or clears its `kind` alert (`store`, `outbox`), subject
    /// `service:COMPONENT`. Called whenever the monitor reads its health;
    /// errors are logged. An outbox that cannot be written still delivers
    /// its own alert from memory.
    pub async fn on_component(
        &self,
        component: &'static str,
        kind: AlertKind,
        problem: Option<&str>,
    ) {
        let subject = Subject::service(component);
        let Some(transition) = self
            .engine()
            .evaluate_service(subject.name(), kind, problem)
        else {
            return;
        };
        let about = About {
            target: AlertTarget {
                name: subject.key(),
                subject: SubjectKind::Service,
                label: None,
                host: String::new(),
                address: None,
                tags: Vec::new(),
            },
            subject,
            at_ms: event::now_ms(),
            snapshot: serde_json::json!({"component": component, "problem": problem}),
        };
        if let Err(err) = self.record(&about, vec![(transition, None)], None).await {
            tracing::error!(component, error = %err, "alert not stored or not flushed");
        }
    }

    /// Turns the `transitions` of one subject (each with its localisation)
    /// into events, commits them with `answered`, and queues their deliveries.
    /// An update of an alert the outbox no longer holds as raised (a reload
    /// cleared it meanwhile) is dropped: a cleared alert is never updated.
    async fn record(
        &self,
        about: &About,
        transitions: Vec<(Transition, Option<serde_json::Value>)>,
        answered: Option<&TargetId>,
    ) -> Result<(), AlertsError> {
        let webhooks = self.engine().config().webhooks.clone();
        let at_ms = about.at_ms;
        let mut entries = Vec::with_capacity(transitions.len());
        for (transition, localisation) in transitions {
            let active = match transition.state {
                AlertState::Raised => None,
                AlertState::Updated | AlertState::Cleared => {
                    self.outbox.active(&about.subject, transition.kind)?
                }
            };
            if transition.state == AlertState::Updated && active.is_none() {
                tracing::debug!(target = %about.subject, kind = %transition.kind,
                    "update of an alert no longer raised: dropped");
                continue;
            }
            let seq = self.outbox.reserve_seq();
            let (alert_id, raised_at_ms) = match active {
                Some(active) => (active.alert_id, active.raised_at_ms),
                None => (format!("{}-{seq}", self.outbox.instance()), at_ms),
            };
            let event = AlertEvent {
                schema: SCHEMA.to_owned(),
                id: event_id(&alert_id, transition.state, seq),
                alert_id,
                seq,
                kind: transition.kind,
                state: transition.state,
                target: about.target.clone(),
                at_ms,
                at: event::rfc3339(at_ms),
                raised_at_ms,
                summary: transition.summary,
                reason: transition.reason,
                value: transition.reading.value,
                threshold: transition.reading.threshold,
                unit: transition.reading.unit.map(str::to_owned),
                localisation,
                path_change: transition
                    .path_event
                    .as_ref()
                    .and_then(|e| serde_json::to_value(e).ok()),
                snapshot: about.snapshot.clone(),
            };
            let wanted: Vec<String> = webhooks
                .iter()
                .filter(|h| {
                    h.filter
                        .accepts(&about.subject, &about.target.tags, event.kind)
                })
                .map(|h| h.name.clone())
                .collect();
            tracing::info!(
                target = %about.subject,
                kind = %event.kind,
                state = %event.state,
                id = %event.id,
                webhooks = wanted.len(),
                "alert {}: {}",
                event.state,
                event.summary
            );
            entries.push((event, wanted));
        }
        // A commit the disk refuses keeps the events in memory: they are
        // queued for delivery all the same.
        let stale = self.outbox.commit(&entries, answered)?;
        entries.retain(|(event, _)| !stale.contains(&event.seq));
        let flushed = self.outbox.flush().await;
        self.delivery.enqueue(deliveries(&entries));
        flushed
    }

    /// Applies a reload: new thresholds from `settings`, and the raised
    /// alerts of targets and peers no longer `monitored` are cleared (reason
    /// `target_removed` or `peer_removed`). Webhooks are set up at start: a
    /// change to them is reported by the reload as needing a restart. Errors
    /// are logged; the service goes on.
    pub fn reload(&self, settings: &AlertsConfig, monitored: &Monitored) {
        let mut engine = self.engine();
        let mut next = settings.clone();
        next.webhooks = engine.config().webhooks.clone();
        engine.set_config(next);
        engine.set_peers(monitored.peers.iter().cloned());
        let webhooks = engine.config().webhooks.clone();
        match retire_removed(&self.outbox, &mut engine, &webhooks, &monitored.subjects()) {
            Ok(entries) => self.delivery.enqueue(deliveries(&entries)),
            Err(err) => tracing::error!(
                error = %err,
                "clearing the alerts of removed targets and peers failed; they clear at the next start"
            ),
        }
    }

    /// Alerts raised and not cleared, over all targets and peers.
    pub fn active(&self) -> Vec<ActiveAlert> {
        self.outbox.active_all().unwrap_or_else(|err| {
            tracing::warn!(error = %err, "reading raised alerts failed");
            Vec::new()
        })
    }

    /// The incidents (alerts' lives) that were raised at some moment in
    /// `[from_ms, to_ms]`, of `subject` (a target's name or `peer:NAME`) when
    /// given, newest first. Errors are logged and read as none.
    pub fn incidents(&self, from_ms: u64, to_ms: u64, subject: Option<&str>) -> Vec<Incident> {
        self.outbox
            .incidents(from_ms, to_ms, subject)
            .unwrap_or_else(|err| {
                tracing::warn!(error = %err, "reading the incident history failed");
                Vec::new()
            })
    }

    /// Per-webhook delivery state: pending, delivered, failures, last error.
    pub fn delivery_status(&self) -> Vec<WebhookStatus> {
        self.delivery.status()
    }

    /// Totals for metrics.
    pub fn counters(&self) -> DeliveryCounters {
        self.delivery.counters()
    }

    /// Events kept in memory because the outbox cannot be written, and those
    /// its memory bound dropped, for metrics.
    pub fn memory_counts(&self) -> MemoryCounts {
        self.outbox.memory_counts()
    }

    /// Stops delivering and flushes the outbox; whatever is undelivered is
    /// delivered after the next start.
    pub async fn shutdown(&self) {
        self.delivery.shutdown().await;
        if let Err(err) = self.outbox.flush().await {
            tracing::warn!(error = %err, "flushing the alert outbox failed");
        }
    }
}

/// What the events of one evaluation are about, as they carry it.
struct About {
    subject: Subject,
    target: AlertTarget,
    /// When the condition was seen.
    at_ms: u64,
    snapshot: serde_json::Value,
}

/// An event's id, unique and stable across retries: `<alert_id>-raised` and
/// `<alert_id>-cleared` (an alert has one each), `<alert_id>-updated-<seq>`
/// (it may have several updates; `seq` is the event's outbox number).
fn event_id(alert_id: &str, state: AlertState, seq: u64) -> String {
    match state {
        AlertState::Raised | AlertState::Cleared => format!("{alert_id}-{state}"),
        AlertState::Updated => format!("{alert_id}-{state}-{seq}"),
    }
}

/// The `(webhook, subject, seq)` deliveries of committed `entries`.
fn deliveries(
    entries: &[(AlertEvent, Vec<String>)],
) -> impl Iterator<Item = (String, Subject, u64)> + '_ {
    entries.iter().flat_map(|(event, hooks)| {
        let subject =
            Subject::parse(&event.target.name).expect("events are built from valid subject keys");
        hooks
            .iter()
            .map(move |h| (h.clone(), subject.clone(), event.seq))
    })
}

/// Clears every raised alert of a target or peer outside `keep`, queues the
/// clears for the webhooks that want them, and forgets those subjects (in the
/// engine and the outbox), so one that comes back starts over. Returns what
/// it committed, flushed to disk, for the caller to hand to the delivery
/// worker.
fn retire_removed(
    outbox: &Outbox,
    engine: &mut AlertEngine,
    webhooks: &[WebhookConfig],
    keep: &HashSet<Subject>,
) -> Result<Vec<(AlertEvent, Vec<String>)>, AlertsError> {
    let persisted = outbox.persisted()?;
    let at_ms = event::now_ms();
    let mut entries = Vec::new();
    for active in persisted.active {
        if keep.contains(&active.target) {
            continue;
        }
        let target = match &active.raise {
            Some(raise) => raise.target.clone(),
            // Raised before raise events were kept: the name is all we know.
            None => AlertTarget {
                name: active.target.key(),
                subject: active.target.kind(),
                label: None,
                host: String::new(),
                address: None,
                tags: Vec::new(),
            },
        };
        let (reason, summary) = match active.target.kind() {
            SubjectKind::Target => (
                ClearReason::TargetRemoved,
                format!(
                    "the target was removed from the config: no longer monitored, so its {} alert ends",
                    active.kind
                ),
            ),
            SubjectKind::Peer => (
                ClearReason::PeerRemoved,
                format!(
                    "the peer was removed from the config: its link is no longer measured, so its {} alert ends",
                    active.kind
                ),
            ),
            // The service's own alerts end when their component recovers,
            // never by a config change.
            SubjectKind::Service => continue,
        };
        let seq = outbox.reserve_seq();
        let event = AlertEvent {
            schema: SCHEMA.to_owned(),
            id: format!("{}-{}", active.alert_id, AlertState::Cleared),
            alert_id: active.alert_id,
            seq,
            kind: active.kind,
            state: AlertState::Cleared,
            at_ms,
            at: event::rfc3339(at_ms),
            raised_at_ms: active.raised_at_ms,
            summary,
            reason: Some(reason),
            value: None,
            threshold: None,
            unit: None,
            localisation: None,
            path_change: None,
            snapshot: serde_json::Value::Null,
            target,
        };
        let wanted: Vec<String> = webhooks
            .iter()
            .filter(|h| {
                h.filter
                    .accepts(&active.target, &event.target.tags, event.kind)
            })
            .map(|h| h.name.clone())
            .collect();
        tracing::info!(
            target = %active.target,
            kind = %event.kind,
            id = %event.id,
            reason = reason.as_str(),
            webhooks = wanted.len(),
            "alert cleared: its {} was removed from the config",
            active.target.kind()
        );
        entries.push((event, wanted));
    }
    if !entries.is_empty() {
        outbox.commit(&entries, None)?;
    }
    let gone = persisted
        .answered
        .into_iter()
        .map(Subject::Target)
        .chain(engine.known_subjects())
        .filter(|subject| !keep.contains(subject))
        .collect::<HashSet<_>>();
    // The clears are committed: from here on a failure is logged, and the
    // clears are still handed over (delivery reads them from the outbox).
    for subject in &gone {
        engine.forget(subject);
        if let Subject::Target(id) = subject {
            if let Err(err) = outbox.forget_answered(id) {
                tracing::warn!(target = %id, error = %err, "forgetting a removed target failed");
            }
        }
    }
    if !entries.is_empty() || !gone.is_empty() {
        if let Err(err) = outbox.flush_now() {
            tracing::warn!(error = %err, "flushing the clears of removed targets failed");
        }
    }
    Ok(entries)
}

/// The analysis' localisation that matches `kind` (see
/// [`rules::localisation`]), as the analysis serialises it: fields this
/// module does not know (such as `confidence`) pass through as they are.
fn localisation(snapshot: &TargetSnapshot, kind: AlertKind) -> Option<serde_json::Value> {
    rules::localisation(snapshot, kind).and_then(|l| serde_json::to_value(l).ok())
}
