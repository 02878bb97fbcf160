//! The alert event: what a webhook receives (in hopwatch's own JSON format,
//! schema `hopwatch.alert.v1`) and what the outbox stores, byte for byte, so
//! every retry sends the same body with the same id and signature.

use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::kind::{AlertKind, AlertState};
use super::subject::SubjectKind;

/// The `schema` field of every event.
pub const SCHEMA: &str = "hopwatch.alert.v1";

/// Why an alert was cleared: receivers (and people) must be able to tell a
/// recovery from an alert that ended because hopwatch stopped watching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClearReason {
    /// The condition recovered and stayed recovered for `clear_rounds`.
    Recovered,
    /// A reload turned the check off (its threshold is now 0).
    CheckDisabled,
    /// The target is no longer in the config: nothing watches it any more.
    TargetRemoved,
    /// The peer is no longer in the config: its link is no longer measured.
    PeerRemoved,
}

impl ClearReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ClearReason::Recovered => "recovered",
            ClearReason::CheckDisabled => "check_disabled",
            ClearReason::TargetRemoved => "target_removed",
            ClearReason::PeerRemoved => "peer_removed",
        }
    }
}

/// The subject an alert is about, as configured: a target, or a peer (a
/// STAMP link, named `peer:NAME`; see [`super::subject`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertTarget {
    /// The subject's key: a target's name, or `peer:NAME`.
    pub name: String,
    /// `target` or `peer`. Events stored before peers had alerts read as
    /// targets.
    #[serde(default)]
    pub subject: SubjectKind,
    pub label: Option<String>,
    /// A target's host as configured; a peer's reflector address.
    pub host: String,
    /// The address being probed, when resolved.
    pub address: Option<IpAddr>,
    pub tags: Vec<String>,
}

/// The hop (TTL) where an alert's localisation says its problem starts: what
/// tells one diagnosis from another. Everything else in a localisation (its
/// evidence, its `confidence`, the percentages) moves every round; only a
/// different hop is worth an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StartHop(pub u8);

impl StartHop {
    /// The `ttl` of a localisation as events carry it; `None` when it has
    /// none (a peer's direction, or no localisation at all).
    pub fn of(localisation: &serde_json::Value) -> Option<StartHop> {
        localisation
            .get("ttl")?
            .as_u64()
            .and_then(|t| u8::try_from(t).ok())
            .map(StartHop)
    }
}

impl std::fmt::Display for StartHop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "hop {}", self.0)
    }
}

/// One raise, update or clear of one alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub schema: String,
    /// Unique per event and stable across retries and restarts: the idempotency
    /// key (`<alert_id>-raised`, `<alert_id>-cleared`, or
    /// `<alert_id>-updated-<seq>` since an alert may have several updates).
    pub id: String,
    /// The alert this event belongs to: its raise, its updates and its clear
    /// share it.
    pub alert_id: String,
    /// Outbox order; increasing per target (and overall) in event order.
    pub seq: u64,
    pub kind: AlertKind,
    pub state: AlertState,
    pub target: AlertTarget,
    /// When the condition was seen (the round's start), Unix milliseconds, and
    /// the same in RFC 3339.
    pub at_ms: u64,
    pub at: String,
    /// When the alert was raised (equal to `at_ms` on the raise; an update
    /// and the clear carry the raise's).
    pub raised_at_ms: u64,
    /// One line for people.
    pub summary: String,
    /// Why a cleared alert ended; `null` on a raise. (Events stored before
    /// this field existed read as `null`.)
    #[serde(default)]
    pub reason: Option<ClearReason>,
    /// The measured value and the threshold it crossed, in `unit`
    /// (`pct`, `ms`, `mos` or `rounds`); `None` for route and hop-count changes.
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub unit: Option<String>,
    /// Where the problem begins (the analysis' localisation matching this
    /// kind, as the analysis serialises it, `confidence` and all), when there
    /// is one. On an update, the new one.
    pub localisation: Option<serde_json::Value>,
    /// The route or hop-count change (before/after), for those kinds.
    pub path_change: Option<serde_json::Value>,
    /// The target's full per-hop snapshot at that moment.
    pub snapshot: serde_json::Value,
}

/// Unix milliseconds now.
pub use crate::sys::now_ms;

/// `ms` as RFC 3339 UTC with milliseconds, e.g. `2026-11-22T04:18:48.123Z`.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_stored_before_subjects_existed_read_as_targets() {
        // A raise as an older release stored it: no `target.subject`, no `reason`.
        let old = serde_json::json!({
            "schema": "hopwatch.alert.v1", "id": "i-1-raised", "alert_id": "i-1", "seq": 1,
            "kind": "loss", "state": "raised",
            "target": {"name": "gw", "label": null, "host": "198.18.0.2",
                       "address": "198.18.0.2", "tags": []},
            "at_ms": 5, "at": "1970-01-01T00:00:00.005Z", "raised_at_ms": 5,
            "summary": "s", "value": 10.0, "threshold": 5.0, "unit": "pct",
            "localisation": null, "path_change": null, "snapshot": null
        });
        let event: AlertEvent = serde_json::from_value(old).unwrap();
        assert_eq!(event.target.subject, SubjectKind::Target);
        assert_eq!(event.reason, None);
        let again = serde_json::to_value(&event).unwrap();
        assert_eq!(again["target"]["subject"], "target");
        assert_eq!(
            serde_json::to_value(ClearReason::PeerRemoved).unwrap(),
            ClearReason::PeerRemoved.as_str()
        );
    }

    #[test]
    fn the_start_hop_is_the_ttl_of_a_localisation() {
        let place = serde_json::json!({"kind": "loss", "ttl": 3, "confidence": 0.7});
        assert_eq!(StartHop::of(&place), Some(StartHop(3)));
        assert_eq!(StartHop(3).to_string(), "hop 3");
        let peer = serde_json::json!({"kind": "loss", "direction": "backward"});
        assert_eq!(StartHop::of(&peer), None);
        assert_eq!(StartHop::of(&serde_json::json!({"ttl": 300})), None);
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
