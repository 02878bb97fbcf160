//! The demo's webhook receiver: an HTTP endpoint that checks each delivery's
//! signature, drops duplicates by their `Idempotency-Key` (deliveries are at
//! least once), and prints one line per alert event: its state, kind, target
//! and where the problem starts. [`Delivery::parse`] reads such a line back
//! (the demo's test does).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hopwatch::alerts::{
    sign, AlertEvent, AlertKind, AlertState, Secret, IDEMPOTENCY_HEADER, SIGNATURE_HEADER,
};

use super::console::Console;

/// Where the receiver takes deliveries.
pub const PATH: &str = "/hook";
/// What every printed delivery line contains, before its fields.
pub const MARK: &str = "webhook: ";

/// One alert event as the receiver prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `raised`, `updated` or `cleared`.
    pub state: String,
    /// `loss`, `latency`, `route_change`, ...
    pub kind: String,
    /// The target's name.
    pub target: String,
    /// Where the problem starts (loss, latency) or where the path first
    /// changed (route change).
    pub hop: Option<u8>,
    /// Who answers at that hop.
    pub responder: Option<IpAddr>,
    /// Whether the HMAC signature matched.
    pub signed: bool,
    /// The event's one-line summary.
    pub summary: String,
}

impl Delivery {
    /// The fields of `event` worth a line.
    pub fn from_event(event: &AlertEvent, signed: bool) -> Self {
        let (mut hop, mut responder) = (None, None);
        match event.kind {
            // Where a degradation begins, when it is raised or updated (a
            // clear's localisation, if any, describes what is left, not the
            // alert).
            AlertKind::Loss
            | AlertKind::Latency
            | AlertKind::Jitter
            | AlertKind::Mos
            | AlertKind::BranchLoss
            | AlertKind::BranchLatency => {
                if let (AlertState::Raised | AlertState::Updated, Some(loc)) =
                    (event.state, &event.localisation)
                {
                    hop = loc["ttl"].as_u64().and_then(|t| u8::try_from(t).ok());
                    responder = loc["responder"].as_str().and_then(|a| a.parse().ok());
                }
            }
            // Where the path first changed, and who answers there now.
            AlertKind::RouteChange => {
                let change = event.path_change.as_ref();
                if let Some(ttl) = change.and_then(|c| c["first_changed_ttl"].as_u64()) {
                    hop = u8::try_from(ttl).ok();
                    responder = change
                        .and_then(|c| c["after"].get(ttl.saturating_sub(1) as usize))
                        .and_then(|a| a.as_str())
                        .and_then(|a| a.parse().ok());
                }
            }
            // Where the way back first changed.
            AlertKind::ReturnPathChange => {
                hop = event
                    .path_change
                    .as_ref()
                    .and_then(|c| c["first_changed_ttl"].as_u64())
                    .and_then(|t| u8::try_from(t).ok());
            }
            AlertKind::Unreachable
            | AlertKind::HopCountChange
            | AlertKind::Store
            | AlertKind::Outbox => {}
        }
        Self {
            state: event.state.to_string(),
            kind: event.kind.to_string(),
            target: event.target.name.clone(),
            hop,
            responder,
            signed,
            summary: event.summary.clone(),
        }
    }

    /// `webhook: RAISED  loss  target=core hop=3 responder=198.18.2.2 | <summary>`.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{MARK}{:<7} {:<16} target={}",
            self.state.to_uppercase(),
            self.kind,
            self.target
        );
        if let Some(hop) = self.hop {
            line.push_str(&format!(" hop={hop}"));
        }
        if let Some(addr) = self.responder {
            line.push_str(&format!(" responder={addr}"));
        }
        if !self.signed {
            line.push_str(" signature=BAD");
        }
        line.push_str(" | ");
        line.push_str(&self.summary);
        line
    }

    /// Reads a line printed by [`line`](Self::line) (with anything before the
    /// mark, such as a time stamp); `None` for other lines.
    pub fn parse(line: &str) -> Option<Self> {
        let (_, rest) = line.split_once(MARK)?;
        let (head, summary) = rest.split_once(" | ")?;
        let mut words = head.split_whitespace();
        let state = words.next()?.to_lowercase();
        let kind = words.next()?.to_owned();
        let mut delivery = Self {
            state,
            kind,
            target: String::new(),
            hop: None,
            responder: None,
            signed: true,
            summary: summary.to_owned(),
        };
        for word in words {
            match word.split_once('=')? {
                ("target", v) => delivery.target = v.to_owned(),
                ("hop", v) => delivery.hop = Some(v.parse().ok()?),
                ("responder", v) => delivery.responder = Some(v.parse().ok()?),
                ("signature", _) => delivery.signed = false,
                _ => return None,
            }
        }
        (!delivery.target.is_empty()).then_some(delivery)
    }
}

/// What the handler shares.
#[derive(Debug)]
struct Inbox {
    console: Console,
    secret: Secret,
    seen: Mutex<HashSet<String>>,
}

/// The receiver's routes; `secret` is the webhook's HMAC key.
pub fn router(console: Console, secret: &str) -> Router {
    let inbox = Arc::new(Inbox {
        console,
        secret: Secret::new(secret),
        seen: Mutex::new(HashSet::new()),
    });
    Router::new().route(PATH, post(receive)).with_state(inbox)
}

async fn receive(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signed =
        header(SIGNATURE_HEADER).is_some_and(|sig| sign::verify(&inbox.secret, &body, sig));
    let event: AlertEvent = match serde_json::from_slice(&body) {
        Ok(event) => event,
        Err(err) => {
            inbox.console.say(format_args!(
                "{MARK}a delivery that is not an alert event: {err}"
            ));
            return StatusCode::BAD_REQUEST;
        }
    };
    let key = header(IDEMPOTENCY_HEADER).unwrap_or(&event.id).to_owned();
    let fresh = hopwatch::sys::lock(&inbox.seen).insert(key);
    // A retry of a delivery already taken: acknowledge it again, print nothing.
    if fresh {
        inbox
            .console
            .say(Delivery::from_event(&event, signed).line());
    }
    StatusCode::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_lines_read_back() {
        let delivery = Delivery {
            state: "raised".into(),
            kind: "loss".into(),
            target: "core".into(),
            hop: Some(3),
            responder: Some("198.18.2.2".parse().unwrap()),
            signed: true,
            summary: "destination loss 40.0% over the last 30 probes | really".into(),
        };
        let line = format!("[+1:02] {}", delivery.line());
        assert!(line.contains("RAISED  loss"), "{line}");
        assert_eq!(Delivery::parse(&line), Some(delivery.clone()));
        let bare = Delivery {
            hop: None,
            responder: None,
            signed: false,
            kind: "hop_count_change".into(),
            ..delivery
        };
        assert_eq!(Delivery::parse(&bare.line()), Some(bare));
        assert_eq!(Delivery::parse("[+0:01] event: loss burst"), None);
    }

    #[test]
    fn route_changes_name_the_first_changed_hop() {
        let event: AlertEvent = serde_json::from_value(serde_json::json!({
            "schema": "hopwatch.alert.v1", "id": "a-1-raised", "alert_id": "a-1", "seq": 1,
            "kind": "route_change", "state": "raised",
            "target": {"name": "dst", "label": null, "host": "198.19.0.1",
                       "address": "198.19.0.1", "tags": []},
            "at_ms": 0, "at": "1970-01-01T00:00:00.000Z", "raised_at_ms": 0,
            "summary": "route changed", "reason": null, "value": null, "threshold": null,
            "unit": null, "localisation": null,
            "path_change": {"before": ["198.18.0.2", "198.18.3.2"],
                            "after": ["198.18.0.2", "198.18.5.2"], "first_changed_ttl": 2},
            "snapshot": {}
        }))
        .expect("an event");
        let d = Delivery::from_event(&event, true);
        assert_eq!(
            (d.hop, d.responder),
            (Some(2), Some("198.18.5.2".parse().unwrap()))
        );
        assert_eq!(
            (d.state.as_str(), d.kind.as_str()),
            ("raised", "route_change")
        );
    }
}
