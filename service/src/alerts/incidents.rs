//! Incident history: one record per alert, from its raise through its
//! updates to its clear (when, how long, where the problem started, the worst
//! value reported), kept in the outbox's database beside the alert's events
//! and written in the same atomic batch, so the history and the webhooks
//! never disagree. Served by `GET /api/v1/incidents` and listed in the UI.
//!
//! Keys: `i` + raised-at (u64 ms, big-endian) + alert id, so a scan returns
//! incidents oldest first. Retention: closed incidents older than
//! [`RETENTION`] are dropped when the outbox opens, and at most
//! [`MAX_INCIDENTS`] are kept (the oldest go first).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::event::{AlertEvent, ClearReason};
use super::kind::{AlertKind, AlertState};
use super::subject::SubjectKind;

/// Key prefix of an incident in the outbox's tree.
pub(crate) const INCIDENT: u8 = b'i';
/// How long a closed incident is kept.
pub const RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// The most incidents kept: about 2 KB each, so a few MB of flash at most.
pub const MAX_INCIDENTS: usize = 5_000;

/// One alert's life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub alert_id: String,
    pub kind: AlertKind,
    /// The subject's key: a target's name or `peer:NAME`.
    pub target: String,
    pub subject: SubjectKind,
    pub label: Option<String>,
    pub raised_at_ms: u64,
    /// `None` while the alert is still raised.
    pub cleared_at_ms: Option<u64>,
    pub clear_reason: Option<ClearReason>,
    /// The raise's summary.
    pub summary: String,
    /// The worst value the alert's events reported (raise and updates), in
    /// `unit`; for MOS the lowest.
    pub peak_value: Option<f64>,
    pub threshold: Option<f64>,
    pub unit: Option<String>,
    /// Where the problem started, as last sent (the latest update's, else the
    /// raise's).
    pub localisation: Option<serde_json::Value>,
    /// How many times the localisation was updated while raised.
    pub updates: u32,
}

impl Incident {
    /// The incident a raise opens. Also used for an update or clear whose
    /// raise predates incident history.
    pub fn open(event: &AlertEvent) -> Incident {
        Incident {
            alert_id: event.alert_id.clone(),
            kind: event.kind,
            target: event.target.name.clone(),
            subject: event.target.subject,
            label: event.target.label.clone(),
            raised_at_ms: event.raised_at_ms,
            cleared_at_ms: None,
            clear_reason: None,
            summary: event.summary.clone(),
            peak_value: None,
            threshold: event.threshold,
            unit: event.unit.clone(),
            localisation: None,
            updates: 0,
        }
    }

    /// Takes in one of the alert's events.
    pub fn apply(&mut self, event: &AlertEvent) {
        match event.state {
            AlertState::Raised | AlertState::Updated => {
                if let Some(value) = event.value {
                    let worse = |peak: f64| {
                        if self.kind == AlertKind::Mos {
                            value < peak
                        } else {
                            value > peak
                        }
                    };
                    if self.peak_value.is_none_or(worse) {
                        self.peak_value = Some(value);
                    }
                }
                if event.localisation.is_some() {
                    self.localisation = event.localisation.clone();
                }
                if event.state == AlertState::Updated {
                    self.updates += 1;
                }
            }
            AlertState::Cleared => {
                self.cleared_at_ms = Some(event.at_ms);
                self.clear_reason = event.reason;
            }
        }
    }

    /// How long it lasted, or has lasted until `now_ms` while still raised.
    pub fn duration_ms(&self, now_ms: u64) -> u64 {
        self.cleared_at_ms
            .unwrap_or(now_ms)
            .saturating_sub(self.raised_at_ms)
    }

    /// Whether it was raised at any moment in `[from_ms, to_ms]`.
    pub fn overlaps(&self, from_ms: u64, to_ms: u64) -> bool {
        self.raised_at_ms <= to_ms && self.cleared_at_ms.is_none_or(|c| c >= from_ms)
    }
}

/// The key of the incident of `alert_id`, raised at `raised_at_ms`.
pub(crate) fn key(raised_at_ms: u64, alert_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + alert_id.len());
    key.push(INCIDENT);
    key.extend_from_slice(&raised_at_ms.to_be_bytes());
    key.extend_from_slice(alert_id.as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::event::{AlertTarget, SCHEMA};

    fn event(state: AlertState, at_ms: u64, value: f64, ttl: Option<u8>) -> AlertEvent {
        AlertEvent {
            schema: SCHEMA.to_owned(),
            id: format!("x-1-{state}"),
            alert_id: "x-1".to_owned(),
            seq: at_ms,
            kind: AlertKind::Loss,
            state,
            target: AlertTarget {
                name: "gw".to_owned(),
                subject: SubjectKind::Target,
                label: None,
                host: "198.18.0.2".to_owned(),
                address: None,
                tags: vec![],
            },
            at_ms,
            at: String::new(),
            raised_at_ms: 100,
            summary: format!("loss on gw at {at_ms}"),
            reason: (state == AlertState::Cleared).then_some(ClearReason::Recovered),
            value: Some(value),
            threshold: Some(20.0),
            unit: Some("pct".to_owned()),
            localisation: ttl.map(|t| serde_json::json!({"ttl": t})),
            path_change: None,
            snapshot: serde_json::Value::Null,
        }
    }

    #[test]
    fn an_incident_follows_its_alert_from_raise_to_clear() {
        let raise = event(AlertState::Raised, 100, 25.0, Some(3));
        let mut incident = Incident::open(&raise);
        incident.apply(&raise);
        assert!(incident.overlaps(0, 100));
        assert!(!incident.overlaps(0, 99));
        assert!(incident.overlaps(10_000, 20_000), "still raised");
        incident.apply(&event(AlertState::Updated, 400, 41.0, Some(2)));
        incident.apply(&event(AlertState::Cleared, 900, 2.0, None));
        assert_eq!(incident.cleared_at_ms, Some(900));
        assert_eq!(incident.clear_reason, Some(ClearReason::Recovered));
        assert_eq!(incident.duration_ms(5_000), 800);
        assert_eq!(
            incident.peak_value,
            Some(41.0),
            "the clear's value is no peak"
        );
        assert_eq!(incident.localisation.unwrap()["ttl"], 2);
        assert_eq!(incident.updates, 1);
        assert_eq!(incident.summary, "loss on gw at 100");
        assert!(!Incident::open(&raise).overlaps(0, 50));
    }

    #[test]
    fn keys_sort_by_raise_time() {
        assert!(key(99, "b") < key(100, "a"));
        assert_eq!(key(1, "a")[0], INCIDENT);
    }
}
