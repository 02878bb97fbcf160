//! Request bodies per webhook format: hopwatch's own JSON event as stored, a
//! Slack-compatible message, or an Alertmanager `POST /api/v2/alerts` body.
//!
//! JSON and Slack bodies depend on the stored event only, so a retry sends
//! the same bytes. An update (a raised alert's new localisation) is its own
//! event in JSON (`"state": "updated"`) and Slack; for Alertmanager it is the
//! alert again, firing, with the new `localisation` annotation (Alertmanager
//! merges alerts by their labels). An Alertmanager body of a firing alert also carries how
//! long the alert stays valid (`endsAt`), counted from the attempt: that is
//! Alertmanager's protocol (see [`alertmanager`]).

use serde_json::{json, Value};

use super::event::{rfc3339, AlertEvent};
use super::kind::AlertState;
use super::settings::WebhookFormat;
use super::subject::{SubjectKind, PEER_PREFIX, SERVICE_PREFIX};

/// The body for `format` of the stored event `stored` (its JSON bytes).
/// `valid_until_ms` is the `endsAt` of a firing alert in Alertmanager's format.
pub fn render(
    format: WebhookFormat,
    stored: &[u8],
    event: &AlertEvent,
    valid_until_ms: u64,
) -> Result<Vec<u8>, serde_json::Error> {
    match format {
        WebhookFormat::Json => Ok(stored.to_vec()),
        WebhookFormat::Slack => serde_json::to_vec(&slack(event)),
        WebhookFormat::Alertmanager => {
            serde_json::to_vec(&json!([alertmanager(event, valid_until_ms)]))
        }
    }
}

/// The Alertmanager body that re-sends firing alerts (their raise events,
/// carrying their latest localisation), each valid until `valid_until_ms`.
pub fn alertmanager_resend(
    raises: &[AlertEvent],
    valid_until_ms: u64,
) -> Result<Vec<u8>, serde_json::Error> {
    let alerts: Vec<Value> = raises
        .iter()
        .map(|e| alertmanager(e, valid_until_ms))
        .collect();
    serde_json::to_vec(&alerts)
}

fn localisation_summary(event: &AlertEvent) -> Option<&str> {
    event.localisation.as_ref()?.get("summary")?.as_str()
}

/// How people read the subject: `` `edge (Edge router)` `` for a target,
/// ``peer `dc1 (DC one)` `` for a peer, ``hopwatch's `store` `` for one of
/// the service's components.
fn target_title(event: &AlertEvent) -> String {
    let t = &event.target;
    let name = match t.subject {
        SubjectKind::Target => t.name.as_str(),
        SubjectKind::Peer => t.name.strip_prefix(PEER_PREFIX).unwrap_or(&t.name),
        SubjectKind::Service => t.name.strip_prefix(SERVICE_PREFIX).unwrap_or(&t.name),
    };
    let named = match &t.label {
        Some(label) => format!("`{name} ({label})`"),
        None => format!("`{name}`"),
    };
    match t.subject {
        SubjectKind::Target => named,
        SubjectKind::Peer => format!("peer {named}"),
        SubjectKind::Service => format!("hopwatch's {named}"),
    }
}

/// An incoming-webhook message: Slack (and Mattermost, Rocket.Chat) show `text`.
pub fn slack(event: &AlertEvent) -> Value {
    let icon = match event.state {
        AlertState::Raised => ":red_circle:",
        AlertState::Updated => ":large_orange_circle:",
        AlertState::Cleared => ":large_green_circle:",
    };
    let mut text = format!(
        "{icon} *{} {}* on {}: {}",
        event.kind,
        event.state,
        target_title(event),
        event.summary
    );
    if let Some(where_) = localisation_summary(event) {
        text.push_str(&format!("\n_where:_ {where_}"));
    }
    text.push_str(&format!("\n_at {} · event {}_", event.at, event.id));
    json!({ "text": text })
}

/// One alert of Alertmanager's API v2 (`postableAlert`). Labels identify the
/// alert (subject, target and kind; a peer's `target` is `peer:NAME`), so a
/// re-send updates the same alert.
///
/// Alertmanager treats an alert it has not heard about for a while as
/// resolved: a firing alert's `endsAt` is when it stops being valid, and a
/// client is expected to re-send it while it fires (Prometheus re-sends every
/// minute with `endsAt` four intervals ahead). So a raise carries
/// `endsAt = valid_until_ms`, and the delivery worker re-sends firing alerts
/// the same way; a clear carries the time it cleared, which resolves it. An
/// update is sent like a raise: same labels and start, new annotations.
pub fn alertmanager(event: &AlertEvent, valid_until_ms: u64) -> Value {
    let mut annotations = json!({
        "summary": event.summary,
        "event_id": event.id,
        "alert_id": event.alert_id,
        "host": event.target.host,
    });
    if let Some(where_) = localisation_summary(event) {
        annotations["localisation"] = json!(where_);
    }
    if let Some(reason) = event.reason {
        annotations["reason"] = json!(reason.as_str());
    }
    let ends_at = match event.state {
        AlertState::Raised | AlertState::Updated => rfc3339(valid_until_ms.max(event.at_ms)),
        AlertState::Cleared => event.at.clone(),
    };
    json!({
        "labels": {
            "alertname": format!("hopwatch_{}", event.kind),
            "source": "hopwatch",
            "subject": event.target.subject.as_str(),
            "target": event.target.name,
            "kind": event.kind.as_str(),
        },
        "annotations": annotations,
        "startsAt": rfc3339(event.raised_at_ms),
        "endsAt": ends_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::event::{AlertTarget, ClearReason, SCHEMA};
    use crate::alerts::AlertKind;

    fn event(state: AlertState) -> AlertEvent {
        AlertEvent {
            schema: SCHEMA.into(),
            id: format!("abc-7-{state}"),
            alert_id: "abc-7".into(),
            seq: 9,
            kind: AlertKind::Loss,
            state,
            target: AlertTarget {
                name: "edge".into(),
                subject: SubjectKind::Target,
                label: Some("Edge router".into()),
                host: "198.18.0.2".into(),
                address: Some("198.18.0.2".parse().unwrap()),
                tags: vec!["wan".into()],
            },
            at_ms: 1_700_000_060_000,
            at: rfc3339(1_700_000_060_000),
            raised_at_ms: 1_700_000_000_000,
            summary: "loss 40% over the last 10 probes (raises at 10%)".into(),
            reason: (state == AlertState::Cleared).then_some(ClearReason::Recovered),
            value: Some(40.0),
            threshold: Some(10.0),
            unit: Some("pct".into()),
            localisation: Some(json!({"ttl": 3, "summary": "loss starts at hop 3 (198.18.2.2)"})),
            path_change: None,
            snapshot: json!({"hops": []}),
        }
    }

    #[test]
    fn json_is_the_stored_bytes() {
        let e = event(AlertState::Raised);
        let stored = serde_json::to_vec(&e).unwrap();
        assert_eq!(render(WebhookFormat::Json, &stored, &e, 0).unwrap(), stored);
        let back: AlertEvent = serde_json::from_slice(&stored).unwrap();
        assert_eq!(back, e);
        let v: Value = serde_json::from_slice(&stored).unwrap();
        assert_eq!(v["schema"], "hopwatch.alert.v1");
        assert_eq!(v["state"], "raised");
        assert_eq!(v["kind"], "loss");
        assert_eq!(v["localisation"]["ttl"], 3);
    }

    #[test]
    fn slack_messages_name_the_target_and_where() {
        let text = slack(&event(AlertState::Raised))["text"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            text.starts_with(":red_circle: *loss raised* on `edge (Edge router)`"),
            "{text}"
        );
        assert!(text.contains("loss starts at hop 3"), "{text}");
        assert!(text.contains("event abc-7-raised"), "{text}");
    }

    /// A peer's loss alert, with the direction as its localisation.
    fn peer_event(state: AlertState) -> AlertEvent {
        let mut e = event(state);
        e.target = AlertTarget {
            name: "peer:dc1".into(),
            subject: SubjectKind::Peer,
            label: Some("DC one".into()),
            host: "198.18.1.2".into(),
            address: Some("198.18.1.2".parse().unwrap()),
            tags: vec![],
        };
        e.localisation = Some(json!({
            "kind": "loss", "direction": "backward",
            "summary": "loss is on the backward path (peer → here): forward 0.0%, backward 20.0%"
        }));
        e
    }

    #[test]
    fn every_format_tells_a_peer_from_a_target() {
        let e = peer_event(AlertState::Raised);
        let stored = serde_json::to_vec(&e).unwrap();
        let v: Value = serde_json::from_slice(&stored).unwrap();
        assert_eq!(v["target"]["subject"], "peer");
        assert_eq!(v["target"]["name"], "peer:dc1");
        assert_eq!(v["localisation"]["direction"], "backward");
        let text = slack(&e)["text"].as_str().unwrap().to_owned();
        assert!(
            text.starts_with(":red_circle: *loss raised* on peer `dc1 (DC one)`"),
            "{text}"
        );
        assert!(text.contains("backward path"), "{text}");
        let am = alertmanager(&e, 1_700_000_300_000);
        assert_eq!(am["labels"]["subject"], "peer");
        assert_eq!(am["labels"]["target"], "peer:dc1");
        assert_ne!(
            am["labels"],
            alertmanager(&event(AlertState::Raised), 1_700_000_300_000)["labels"],
            "a peer's alert is not a target's"
        );
        assert_eq!(am["annotations"]["host"], "198.18.1.2");
    }

    /// An update of [`event`]'s alert: loss now starts at hop 2, with the
    /// `confidence` the analysis may add.
    fn update() -> AlertEvent {
        let mut e = event(AlertState::Updated);
        e.id = "abc-7-updated-12".into();
        e.seq = 12;
        e.summary = "loss on edge: where it starts is now hop 2 (was hop 3)".into();
        e.localisation = Some(json!({
            "kind": "loss", "ttl": 2, "confidence": 0.85,
            "summary": "loss starts at hop 2 (198.18.1.2)"
        }));
        e
    }

    #[test]
    fn every_format_renders_an_update() {
        let e = update();
        let stored = serde_json::to_vec(&e).unwrap();
        let v: Value =
            serde_json::from_slice(&render(WebhookFormat::Json, &stored, &e, 0).unwrap()).unwrap();
        assert_eq!(v["state"], "updated");
        assert_eq!(v["id"], "abc-7-updated-12");
        assert_eq!(v["alert_id"], "abc-7");
        assert_eq!(v["raised_at_ms"], 1_700_000_000_000u64);
        assert_eq!(v["localisation"]["ttl"], 2);
        assert_eq!(v["localisation"]["confidence"], 0.85, "passed through");
        assert_eq!(v["reason"], Value::Null);

        let text = slack(&e)["text"].as_str().unwrap().to_owned();
        assert!(
            text.starts_with(":large_orange_circle: *loss updated* on `edge (Edge router)`"),
            "{text}"
        );
        assert!(text.contains("is now hop 2 (was hop 3)"), "{text}");
        assert!(text.contains("_where:_ loss starts at hop 2"), "{text}");

        let valid_until = 1_700_000_300_000;
        let am = alertmanager(&e, valid_until);
        let raised = alertmanager(&event(AlertState::Raised), valid_until);
        assert_eq!(am["labels"], raised["labels"], "the same alert, merged");
        assert_eq!(am["startsAt"], raised["startsAt"]);
        assert_eq!(am["endsAt"], rfc3339(valid_until), "still firing");
        assert_eq!(
            am["annotations"]["localisation"],
            "loss starts at hop 2 (198.18.1.2)"
        );
        assert_eq!(am["annotations"]["event_id"], "abc-7-updated-12");
    }

    #[test]
    fn alertmanager_alerts_stay_valid_for_a_while_and_resolve_with_ends_at() {
        let valid_until = 1_700_000_300_000;
        let raised = alertmanager(&event(AlertState::Raised), valid_until);
        assert_eq!(raised["labels"]["alertname"], "hopwatch_loss");
        assert_eq!(raised["labels"]["target"], "edge");
        assert_eq!(raised["labels"]["subject"], "target");
        assert_eq!(raised["startsAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(
            raised["endsAt"], "2023-11-14T22:18:20.000Z",
            "a firing alert is valid until the next re-send is overdue"
        );
        assert_eq!(
            raised["annotations"]["localisation"],
            "loss starts at hop 3 (198.18.2.2)"
        );
        assert!(raised["annotations"].get("reason").is_none());
        let body: Value = serde_json::from_slice(
            &render(
                WebhookFormat::Alertmanager,
                b"{}",
                &event(AlertState::Raised),
                valid_until,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(body, json!([raised.clone()]), "a list of one alert");

        let cleared = alertmanager(&event(AlertState::Cleared), valid_until);
        assert_eq!(
            cleared["endsAt"], "2023-11-14T22:14:20.000Z",
            "a clear ends the alert when it cleared, whatever the validity"
        );
        assert_eq!(cleared["labels"], raised["labels"], "same alert identity");
        assert_eq!(cleared["annotations"]["reason"], "recovered");

        // A re-send is the raise again, with a later validity: same labels,
        // same start, so Alertmanager extends the alert it has.
        let later = valid_until + 60_000;
        let resend: Value = serde_json::from_slice(
            &alertmanager_resend(&[event(AlertState::Raised)], later).unwrap(),
        )
        .unwrap();
        assert_eq!(resend[0]["labels"], raised["labels"]);
        assert_eq!(resend[0]["startsAt"], raised["startsAt"]);
        assert_eq!(resend[0]["endsAt"], rfc3339(later));
        // A validity in the past (a clock step) never ends an alert before it was seen.
        let stale = alertmanager(&event(AlertState::Raised), 0);
        assert_eq!(stale["endsAt"], rfc3339(1_700_000_060_000));
    }
}
