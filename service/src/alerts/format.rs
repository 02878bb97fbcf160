//! Request bodies per webhook format: hopwatch's own JSON event as stored, a
//! Slack-compatible message, or an Alertmanager `POST /api/v2/alerts` body.
//! Rendering is deterministic, so a retried event has the same bytes.

use serde_json::{json, Value};

use super::event::{rfc3339, AlertEvent};
use super::kind::AlertState;
use crate::config::WebhookFormat;

/// The body for `format` of the stored event `stored` (its JSON bytes).
pub fn render(
    format: WebhookFormat,
    stored: &[u8],
    event: &AlertEvent,
) -> Result<Vec<u8>, serde_json::Error> {
    match format {
        WebhookFormat::Json => Ok(stored.to_vec()),
        WebhookFormat::Slack => serde_json::to_vec(&slack(event)),
        WebhookFormat::Alertmanager => serde_json::to_vec(&alertmanager(event)),
    }
}

fn localisation_summary(event: &AlertEvent) -> Option<&str> {
    event.localisation.as_ref()?.get("summary")?.as_str()
}

fn target_title(event: &AlertEvent) -> String {
    match &event.target.label {
        Some(label) => format!("{} ({})", event.target.name, label),
        None => event.target.name.clone(),
    }
}

/// An incoming-webhook message: Slack (and Mattermost, Rocket.Chat) show `text`.
pub fn slack(event: &AlertEvent) -> Value {
    let icon = match event.state {
        AlertState::Raised => ":red_circle:",
        AlertState::Cleared => ":large_green_circle:",
    };
    let mut text = format!(
        "{icon} *{} {}* on `{}`: {}",
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

/// Alertmanager's API v2 body: a list of one alert. Labels identify the alert
/// (target and kind); a clear sets `endsAt`, which resolves it.
pub fn alertmanager(event: &AlertEvent) -> Value {
    let mut annotations = json!({
        "summary": event.summary,
        "event_id": event.id,
        "alert_id": event.alert_id,
        "host": event.target.host,
    });
    if let Some(where_) = localisation_summary(event) {
        annotations["localisation"] = json!(where_);
    }
    let mut alert = json!({
        "labels": {
            "alertname": format!("hopwatch_{}", event.kind),
            "source": "hopwatch",
            "target": event.target.name,
            "kind": event.kind.as_str(),
        },
        "annotations": annotations,
        "startsAt": rfc3339(event.raised_at_ms),
    });
    if event.state == AlertState::Cleared {
        alert["endsAt"] = json!(event.at);
    }
    json!([alert])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::event::{AlertTarget, SCHEMA};
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
                label: Some("Edge router".into()),
                host: "198.18.0.2".into(),
                address: Some("198.18.0.2".parse().unwrap()),
                tags: vec!["wan".into()],
            },
            at_ms: 1_700_000_060_000,
            at: rfc3339(1_700_000_060_000),
            raised_at_ms: 1_700_000_000_000,
            summary: "loss 40% over the last 10 probes (raises at 10%)".into(),
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
        assert_eq!(render(WebhookFormat::Json, &stored, &e).unwrap(), stored);
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

    #[test]
    fn alertmanager_alerts_resolve_with_ends_at() {
        let raised = alertmanager(&event(AlertState::Raised));
        let alert = &raised[0];
        assert_eq!(alert["labels"]["alertname"], "hopwatch_loss");
        assert_eq!(alert["labels"]["target"], "edge");
        assert_eq!(alert["startsAt"], "2023-11-14T22:13:20.000Z");
        assert!(alert.get("endsAt").is_none());
        assert_eq!(
            alert["annotations"]["localisation"],
            "loss starts at hop 3 (198.18.2.2)"
        );
        let cleared = alertmanager(&event(AlertState::Cleared));
        assert_eq!(cleared[0]["endsAt"], "2023-11-14T22:14:20.000Z");
        assert_eq!(cleared[0]["labels"], alert["labels"], "same alert identity");
    }
}
