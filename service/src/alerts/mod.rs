//! Alerts: rules over each target's destination statistics and path events
//! (loss, latency, jitter, MOS, unreachable, route and hop-count changes) and
//! over each peer's link window (loss with its direction, latency, jitter),
//! a hysteresis state machine per (subject, rule), and at-least-once webhook
//! delivery through a persistent outbox.
//!
//! Data flow, once per round of a target (called by the monitor's pipeline
//! after the live analysis took the round) or per update of a peer's window
//! (about once a second, from `monitor::peers::judge`):
//!
//! ```text
//! TargetView / PeerView ──► AlertEngine (rules + machines) ──► transitions
//!   ──► AlertEvent (id, snapshot, localisation) ──► Outbox (sled, flushed)
//!   ──► Delivery lanes (webhook x subject, in order, backoff) ──► HTTP POST
//! ```
//!
//! [`Alerts`] ties them together for the monitor. A subject is a target
//! (keyed by its name) or a peer (keyed `peer:NAME`, see [`subject`]).
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
pub mod kind;
pub mod machine;
pub mod outbox;
pub mod peer_rules;
pub mod rules;
pub mod secret;
pub mod sign;
pub mod subject;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use delivery::{DeliveryCounters, DeliveryOptions, WebhookStatus};
pub use engine::{AlertEngine, RoundOutcome, Transition};
pub use error::{AlertsError, DeliveryError};
pub use event::{AlertEvent, AlertTarget, ClearReason, SCHEMA};
pub use kind::{AlertKind, AlertState, UnknownAlertKind};
pub use outbox::{ActiveAlert, Outbox};
pub use secret::{Secret, WebhookUrl, WebhookUrlError};
pub use sign::{IDEMPOTENCY_HEADER, SIGNATURE_HEADER};
pub use subject::{InvalidSubject, Subject, SubjectKind, PEER_PREFIX};

use crate::analysis::{DegradationKind, PathEvent};
use crate::config::{Config, WebhookConfig};
use crate::model::TargetId;
use crate::monitor::{PeerState, PeerView, TargetStatus, TargetView};
use peer_rules::PeerRound;

use delivery::Delivery;

/// Where the outbox lives: its own sled database inside the state directory.
pub fn outbox_path(state_dir: &Path) -> PathBuf {
    state_dir.join("outbox")
}

/// The running alert subsystem.
pub struct Alerts {
    engine: Mutex<AlertEngine>,
    outbox: Arc<Outbox>,
    delivery: Delivery,
}

impl Alerts {
    /// Opens the outbox in `config.service.state_dir`, clears the alerts of
    /// targets and peers no longer configured, restores the other raised
    /// alerts, and starts delivering what is still owed. Needs a tokio runtime.
    pub fn start(config: &Config) -> Result<Alerts, AlertsError> {
        Alerts::start_with(config, DeliveryOptions::default())
    }

    /// [`Alerts::start`] with delivery `options`.
    pub fn start_with(config: &Config, options: DeliveryOptions) -> Result<Alerts, AlertsError> {
        let hooks = config.alerts.webhooks.clone();
        let names: Vec<String> = hooks.iter().map(|h| h.name.clone()).collect();
        let outbox = Arc::new(Outbox::open(
            &outbox_path(&config.service.state_dir),
            &names,
        )?);
        let mut engine = AlertEngine::new(config.alerts.clone());
        engine.set_peers(config.peers.iter().map(|p| p.name.clone()));
        // Queued here, these clears are loaded by the delivery worker below.
        retire_removed(&outbox, &mut engine, &hooks, &configured(config))?;
        let persisted = outbox.persisted()?;
        for id in persisted.answered {
            engine.restore(&Subject::Target(id), true, &[]);
        }
        for active in &persisted.active {
            engine.restore(&active.target, false, &[active.kind]);
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
        })
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, AlertEngine> {
        // Evaluation is one synchronous step: a panic leaves the state usable.
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Evaluates one round of `view`'s target, with the path events it caused,
    /// and stores and queues what it raises or clears. Errors are logged: alerts
    /// never stop the pipeline.
    pub async fn on_round(&self, view: &TargetView, events: &[PathEvent]) {
        let outcome = self.engine().evaluate(&view.analysis, events);
        if outcome.transitions.is_empty() && !outcome.first_answer {
            return;
        }
        let about = About {
            subject: Subject::Target(view.id.clone()),
            target: AlertTarget {
                name: view.id.to_string(),
                subject: SubjectKind::Target,
                label: view.label.clone(),
                host: view.host.clone(),
                address: match &view.status {
                    TargetStatus::Running { address } => Some(*address),
                    _ => view.analysis.destination.address,
                },
                tags: view.tags.clone(),
            },
            at_ms: view.analysis.last_round_at_ms.unwrap_or_else(event::now_ms),
            snapshot: serde_json::to_value(&view.analysis).unwrap_or(serde_json::Value::Null),
        };
        let answered = outcome.first_answer.then_some(&view.id);
        let placed = outcome
            .transitions
            .into_iter()
            .map(|t| {
                let place = localisation(view, t.kind);
                (t, place)
            })
            .collect();
        if let Err(err) = self.record(&about, placed, answered).await {
            tracing::error!(target = %view.id, error = %err, "alert not stored; its webhooks will miss it");
        }
    }

    /// Evaluates one update of a peer's window (a paused peer keeps its
    /// alerts as they are), and stores and queues what it raises or clears.
    /// Errors are logged.
    pub async fn on_peer(&self, view: &PeerView) {
        let failed = match &view.state {
            PeerState::Paused => return,
            PeerState::Failed { error } => Some(error.as_str()),
            PeerState::Starting | PeerState::Running => None,
        };
        let round = PeerRound {
            window: &view.window,
            window_probes: view.window_probes,
            resolved: view.resolved,
            failed,
        };
        let transitions = self.engine().evaluate_peer(&view.config.name, &round);
        if transitions.is_empty() {
            return;
        }
        let c = &view.config;
        let about = About {
            subject: Subject::Peer(c.name.clone()),
            target: AlertTarget {
                name: Subject::Peer(c.name.clone()).key(),
                subject: SubjectKind::Peer,
                label: c.label.clone(),
                host: c.address.to_string(),
                address: Some(c.address),
                tags: c.tags.clone(),
            },
            at_ms: event::now_ms(),
            snapshot: serde_json::json!({
                "peer": c.name,
                "state": match &view.state {
                    PeerState::Failed { .. } => "failed",
                    PeerState::Starting => "starting",
                    _ => "running",
                },
                "error": failed,
                "window_probes": view.window_probes,
                "window": view.window,
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
            tracing::error!(peer = %c.name, error = %err, "alert not stored; its webhooks will miss it");
        }
    }

    /// Turns the `transitions` of one subject (each with its localisation)
    /// into events, commits them with `answered`, and queues their deliveries.
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
            let seq = self.outbox.reserve_seq();
            let (alert_id, raised_at_ms) = match transition.state {
                AlertState::Raised => (format!("{}-{seq}", self.outbox.instance()), at_ms),
                AlertState::Cleared => match self.outbox.active(&about.subject, transition.kind)? {
                    Some(active) => (active.alert_id, active.raised_at_ms),
                    None => (format!("{}-{seq}", self.outbox.instance()), at_ms),
                },
            };
            let event = AlertEvent {
                schema: SCHEMA.to_owned(),
                id: format!("{alert_id}-{}", transition.state),
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
        self.outbox.commit(&entries, answered)?;
        self.outbox.flush().await?;
        self.delivery.enqueue(deliveries(&entries));
        Ok(())
    }

    /// Applies a reload: new thresholds, and the raised alerts of targets and
    /// peers the new config no longer has are cleared (reason
    /// `target_removed` or `peer_removed`). Webhooks are set up at start: a
    /// change to them is reported by the reload as needing a restart. Errors
    /// are logged; the service goes on.
    pub fn reload(&self, config: &Config) {
        let mut engine = self.engine();
        let mut next = config.alerts.clone();
        next.webhooks = engine.config().webhooks.clone();
        engine.set_config(next);
        engine.set_peers(config.peers.iter().map(|p| p.name.clone()));
        let webhooks = engine.config().webhooks.clone();
        match retire_removed(&self.outbox, &mut engine, &webhooks, &configured(config)) {
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

    /// Per-webhook delivery state: pending, delivered, failures, last error.
    pub fn delivery_status(&self) -> Vec<WebhookStatus> {
        self.delivery.status()
    }

    /// Totals for metrics.
    pub fn counters(&self) -> DeliveryCounters {
        self.delivery.counters()
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

/// The targets and peers `config` monitors (paused ones too: they keep
/// their alerts).
fn configured(config: &Config) -> HashSet<Subject> {
    let targets = config.targets.iter().map(|t| Subject::Target(t.id.clone()));
    let peers = config.peers.iter().map(|p| Subject::Peer(p.name.clone()));
    targets.chain(peers).collect()
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

/// The analysis' localisation that matches `kind`: where loss begins for loss,
/// unreachability and MOS, where latency rises for latency and jitter. Route
/// and hop-count changes carry none: their detail names the changed hops, and
/// a loss finding that happens to be current says nothing about a new path.
fn localisation(view: &TargetView, kind: AlertKind) -> Option<serde_json::Value> {
    let wanted = match kind {
        AlertKind::Latency | AlertKind::Jitter => DegradationKind::Latency,
        AlertKind::Loss | AlertKind::Unreachable | AlertKind::Mos => DegradationKind::Loss,
        AlertKind::RouteChange | AlertKind::HopCountChange => return None,
    };
    let found = &view.analysis.localisations;
    found
        .iter()
        .find(|l| l.kind == wanted)
        .or_else(|| match kind {
            AlertKind::Mos | AlertKind::Jitter => found.first(),
            _ => None,
        })
        .and_then(|l| serde_json::to_value(l).ok())
}
