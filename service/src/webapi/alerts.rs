//! The hook through which the web layer shows alerts: which alerts are firing
//! (targets' and peers'), each webhook's delivery health, how many
//! deliveries failed, and what the outbox holds in memory or dropped. [`crate::alerts::Alerts`] implements it; [`NoAlerts`]
//! stands in where no alert subsystem runs.

use std::collections::HashMap;

use hopwatch_web::dto::{AlertDto, AlertSubject, IncidentDto, WebhookDto};
use hopwatch_web::metrics::{AlertOutboxMetrics, DroppedDeliveries};
use hopwatch_web::model::sort_alerts;

use crate::alerts::{ActiveAlert, Alerts, Incident, SubjectKind, WebhookStatus};

/// What the web layer needs from the alert subsystem.
pub trait AlertSource: Send + Sync + 'static {
    /// Every alert firing now, targets' and peers', oldest first.
    fn active(&self) -> Vec<AlertDto>;

    /// Failed webhook delivery attempts since start; `None` when no webhooks run.
    fn webhook_failures(&self) -> Option<u64>;

    /// Every webhook's delivery health, in config order.
    fn webhooks(&self) -> Vec<WebhookDto>;

    /// Events the outbox holds in memory, and the deliveries it dropped;
    /// `None` when no alert subsystem runs.
    fn outbox_metrics(&self) -> Option<AlertOutboxMetrics>;

    /// The incident history over `[from_ms, to_ms]`, of `target` when given,
    /// newest first.
    fn incidents(&self, from_ms: u64, to_ms: u64, target: Option<&str>) -> Vec<IncidentDto>;
}

/// The alerts firing now by subject key: a target's name, or `peer:NAME`
/// (see [`crate::alerts::Subject::key`]).
pub fn by_key(alerts: Vec<AlertDto>) -> HashMap<String, Vec<AlertDto>> {
    let mut by_key: HashMap<String, Vec<AlertDto>> = HashMap::new();
    for alert in alerts {
        by_key.entry(alert.target.clone()).or_default().push(alert);
    }
    by_key
}

/// No alert subsystem: nothing fires, no webhook fails.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoAlerts;

impl AlertSource for NoAlerts {
    fn active(&self) -> Vec<AlertDto> {
        Vec::new()
    }

    fn webhook_failures(&self) -> Option<u64> {
        None
    }

    fn webhooks(&self) -> Vec<WebhookDto> {
        Vec::new()
    }

    fn outbox_metrics(&self) -> Option<AlertOutboxMetrics> {
        None
    }

    fn incidents(&self, _: u64, _: u64, _: Option<&str>) -> Vec<IncidentDto> {
        Vec::new()
    }
}

/// An incident in the web crate's terms.
pub fn incident(incident: Incident, now_ms: u64) -> IncidentDto {
    IncidentDto {
        duration_ms: incident.duration_ms(now_ms),
        id: incident.alert_id,
        name: incident.kind.as_str().to_owned(),
        subject: match incident.subject {
            SubjectKind::Target => AlertSubject::Target,
            SubjectKind::Peer => AlertSubject::Peer,
            SubjectKind::Service => AlertSubject::Service,
        },
        target: incident.target,
        label: incident.label,
        raised_at_ms: incident.raised_at_ms,
        cleared_at_ms: incident.cleared_at_ms,
        clear_reason: incident.clear_reason.map(|r| r.as_str().to_owned()),
        summary: incident.summary,
        peak_value: incident.peak_value,
        threshold: incident.threshold,
        unit: incident.unit,
        localisation: incident.localisation,
        updates: incident.updates,
    }
}

/// A raised alert in the web crate's terms. The value and threshold are the
/// raise's; the localisation is the one last sent (the latest update's, else
/// the raise's). Records written before the raise event was kept have none.
pub fn alert(active: ActiveAlert) -> AlertDto {
    let localisation = active.localisation().cloned();
    let raise = active.raise;
    AlertDto {
        name: active.kind.as_str().to_owned(),
        id: active.alert_id,
        subject: match active.target.kind() {
            SubjectKind::Target => AlertSubject::Target,
            SubjectKind::Peer => AlertSubject::Peer,
            SubjectKind::Service => AlertSubject::Service,
        },
        target: active.target.key(),
        since_ms: Some(active.raised_at_ms),
        summary: active.summary,
        value: raise.as_ref().and_then(|r| r.value),
        threshold: raise.as_ref().and_then(|r| r.threshold),
        unit: raise.as_ref().and_then(|r| r.unit.clone()),
        localisation,
    }
}

impl AlertSource for Alerts {
    fn active(&self) -> Vec<AlertDto> {
        let mut all: Vec<AlertDto> = Alerts::active(self).into_iter().map(alert).collect();
        sort_alerts(&mut all);
        all
    }

    fn webhook_failures(&self) -> Option<u64> {
        Some(self.counters().failed_attempts)
    }

    fn webhooks(&self) -> Vec<WebhookDto> {
        self.delivery_status().into_iter().map(webhook).collect()
    }

    fn outbox_metrics(&self) -> Option<AlertOutboxMetrics> {
        let memory = self.memory_counts();
        let deliveries_dropped = self
            .delivery_status()
            .into_iter()
            .flat_map(|s| {
                [("age", s.dropped_age), ("bytes", s.dropped_bytes)].map(|(reason, count)| {
                    DroppedDeliveries {
                        webhook: s.name.clone(),
                        reason,
                        count,
                    }
                })
            })
            .collect();
        Some(AlertOutboxMetrics {
            unpersisted: memory.held,
            unpersisted_dropped: memory.dropped,
            deliveries_dropped,
        })
    }

    fn incidents(&self, from_ms: u64, to_ms: u64, target: Option<&str>) -> Vec<IncidentDto> {
        let now = crate::sys::now_ms();
        Alerts::incidents(self, from_ms, to_ms, target)
            .into_iter()
            .map(|i| incident(i, now))
            .collect()
    }
}

/// A webhook's status in the web crate's terms. The status holds nothing
/// secret already (a redacted URL, errors scrubbed of the URL, no key).
pub fn webhook(status: WebhookStatus) -> WebhookDto {
    WebhookDto {
        name: status.name,
        format: status.format.as_str().to_owned(),
        url: status.url,
        signed: status.signed,
        failing: status.consecutive_failures > 0,
        pending: status.pending,
        delivered: status.delivered,
        resent: status.resent,
        failed_attempts: status.failed_attempts,
        consecutive_failures: status.consecutive_failures,
        last_success_at_ms: status.last_success_ms,
        last_error_at_ms: status.last_error_ms,
        last_error: status.last_error,
        next_retry_at_ms: status.next_retry_ms,
        retrying_targets: status.retrying_targets,
        dropped_age: status.dropped_age,
        dropped_bytes: status.dropped_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::{AlertEvent, AlertKind, AlertState, AlertTarget, Subject, SCHEMA};
    use crate::model::TargetId;

    fn active(subject: Subject, kind: AlertKind, raised_at_ms: u64, raise: bool) -> ActiveAlert {
        let event = AlertEvent {
            schema: SCHEMA.to_owned(),
            id: format!("i-{raised_at_ms}-raised"),
            alert_id: format!("i-{raised_at_ms}"),
            seq: raised_at_ms,
            kind,
            state: AlertState::Raised,
            target: AlertTarget {
                name: subject.key(),
                subject: subject.kind(),
                label: None,
                host: "198.18.1.2".to_owned(),
                address: None,
                tags: Vec::new(),
            },
            at_ms: raised_at_ms,
            at: String::new(),
            raised_at_ms,
            summary: "round-trip loss 30.0% ..., on the backward path (peer → here)".to_owned(),
            reason: None,
            value: Some(30.0),
            threshold: Some(10.0),
            unit: Some("pct".to_owned()),
            localisation: Some(serde_json::json!({"kind": "loss", "direction": "backward"})),
            path_change: None,
            snapshot: serde_json::Value::Null,
        };
        ActiveAlert {
            target: subject,
            kind,
            alert_id: event.alert_id.clone(),
            raised_at_ms,
            summary: event.summary.clone(),
            raise: raise.then_some(event),
            updated_localisation: None,
        }
    }

    fn name(s: &str) -> TargetId {
        TargetId::new(s).unwrap()
    }

    #[test]
    fn a_peer_alert_keeps_its_subject_key_and_what_raised_it() {
        let dto = alert(active(
            Subject::Peer(name("gw")),
            AlertKind::Loss,
            5_000,
            true,
        ));
        assert_eq!(dto.subject, AlertSubject::Peer);
        assert_eq!(dto.target, "peer:gw");
        assert_eq!((dto.name.as_str(), dto.id.as_str()), ("loss", "i-5000"));
        assert_eq!(dto.since_ms, Some(5_000));
        assert_eq!(
            (dto.value, dto.threshold, dto.unit.as_deref()),
            (Some(30.0), Some(10.0), Some("pct"))
        );
        assert_eq!(dto.localisation.unwrap()["direction"], "backward");
        assert!(dto.summary.contains("backward path"), "{}", dto.summary);
    }

    #[test]
    fn an_updated_alert_shows_its_latest_localisation() {
        let mut updated = active(Subject::Target(name("edge")), AlertKind::Loss, 7, true);
        updated.updated_localisation =
            Some(serde_json::json!({"kind": "loss", "ttl": 2, "confidence": 0.6}));
        let dto = alert(updated);
        assert_eq!(dto.localisation.as_ref().unwrap()["ttl"], 2);
        assert_eq!(dto.localisation.unwrap()["confidence"], 0.6);
        assert_eq!(dto.since_ms, Some(7), "still the raise's alert");
    }

    #[test]
    fn alerts_stored_without_their_raise_have_no_reading() {
        let dto = alert(active(
            Subject::Target(name("gw")),
            AlertKind::RouteChange,
            1,
            false,
        ));
        assert_eq!(dto.subject, AlertSubject::Target);
        assert_eq!(dto.target, "gw");
        assert_eq!(dto.name, "route_change");
        assert_eq!((dto.value, dto.threshold, dto.unit), (None, None, None));
        assert_eq!(dto.localisation, None);
    }

    #[test]
    fn a_target_and_a_peer_of_one_name_are_grouped_apart() {
        let all = vec![
            alert(active(
                Subject::Target(name("gw")),
                AlertKind::Loss,
                1,
                true,
            )),
            alert(active(Subject::Peer(name("gw")), AlertKind::Loss, 2, true)),
            alert(active(
                Subject::Peer(name("gw")),
                AlertKind::Jitter,
                3,
                true,
            )),
        ];
        let grouped = by_key(all);
        assert_eq!(grouped["gw"].len(), 1);
        let peer: Vec<&str> = grouped["peer:gw"].iter().map(|a| a.name.as_str()).collect();
        assert_eq!(peer, ["loss", "jitter"]);
    }

    #[test]
    fn a_webhook_shows_the_deliveries_its_outbox_bounds_dropped() {
        let dto = webhook(WebhookStatus {
            name: "pager".to_owned(),
            url: "https://hooks.example/…".to_owned(),
            format: crate::alerts::WebhookFormat::Slack,
            signed: true,
            pending: 1,
            delivered: 4,
            resent: 0,
            failed_attempts: 3,
            consecutive_failures: 2,
            last_success_ms: Some(10),
            last_error: Some("HTTP 500".to_owned()),
            last_error_ms: Some(20),
            next_retry_ms: Some(30),
            retrying_targets: vec!["gw".to_owned()],
            dropped_age: 2,
            dropped_bytes: 5,
        });
        assert_eq!((dto.dropped_age, dto.dropped_bytes), (2, 5));
        assert_eq!(dto.format, "slack");
        assert!(dto.failing, "two attempts failed in a row");
        assert_eq!(dto.retrying_targets, ["gw"]);
    }
}
