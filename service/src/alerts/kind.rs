//! The vocabulary of alerts: which rule fired ([`AlertKind`]) and whether the
//! alert was raised, updated or cleared ([`AlertState`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The rule behind an alert. Every rule looks at the destination (the path as
/// a whole), never at one intermediate hop, so ICMP rate limiting at a router
/// on the way cannot raise anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// The destination's window loss is at or above `loss_pct`.
    Loss,
    /// The destination's window latency (avg or a percentile) is at or above `latency_ms`.
    Latency,
    /// The destination's window mean jitter is at or above `jitter_ms`.
    Jitter,
    /// The destination's MOS is below `mos_below`.
    Mos,
    /// A target that used to answer has not answered in `unreachable_rounds` rounds.
    Unreachable,
    /// The established path changed (a different responder at some TTL).
    RouteChange,
    /// The destination's TTL changed.
    HopCountChange,
    /// The return path (the routers replies cross on the way back) changed
    /// while the forward path did not. Off unless `return_path_change = true`.
    ReturnPathChange,
    /// The history store runs degraded: it could not be opened (quarantined,
    /// a fresh one in use, or no history at all), or its writes fail. About
    /// the service itself (subject `service:store`), not a target.
    Store,
    /// The alert outbox could not be opened (quarantined, a fresh one in use,
    /// or alerts kept in memory only). Subject `service:outbox`.
    Outbox,
    /// A multipath target's worst ECMP branch loses at least `loss_pct` end
    /// to end while some other branch does not: the loss is that branch's
    /// (its localisation names it). Read only for targets with `multipath`.
    BranchLoss,
    /// A multipath target's ECMP branch is slower end to end than its fastest
    /// sibling (a latency branch finding) by at least `branch_latency_ms`:
    /// the delay is that branch's. Read only for targets with `multipath`.
    BranchLatency,
}

impl AlertKind {
    /// Every kind, in evaluation order.
    pub const ALL: [AlertKind; 12] = [
        AlertKind::Loss,
        AlertKind::Latency,
        AlertKind::Jitter,
        AlertKind::Mos,
        AlertKind::Unreachable,
        AlertKind::RouteChange,
        AlertKind::HopCountChange,
        AlertKind::ReturnPathChange,
        AlertKind::Store,
        AlertKind::Outbox,
        AlertKind::BranchLoss,
        AlertKind::BranchLatency,
    ];

    /// The names accepted in the config, in [`AlertKind::ALL`] order.
    pub const NAMES: [&'static str; 12] = [
        "loss",
        "latency",
        "jitter",
        "mos",
        "unreachable",
        "route_change",
        "hop_count_change",
        "return_path_change",
        "store",
        "outbox",
        "branch_loss",
        "branch_latency",
    ];

    /// The kinds about the service itself (its [`super::Subject::Service`]
    /// components), not about a target or a peer.
    pub const SERVICE: [AlertKind; 2] = [AlertKind::Store, AlertKind::Outbox];

    /// Whether this kind is about the service itself.
    pub fn is_service(self) -> bool {
        Self::SERVICE.contains(&self)
    }

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self.index()]
    }

    /// Position in [`AlertKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an alert kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an alert kind; use one of loss, latency, jitter, mos, unreachable, route_change, hop_count_change, return_path_change, store, outbox, branch_loss, branch_latency")]
pub struct UnknownAlertKind(pub String);

impl FromStr for AlertKind {
    type Err = UnknownAlertKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim().to_ascii_lowercase();
        Self::NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| Self::ALL[i])
            .ok_or_else(|| UnknownAlertKind(s.to_owned()))
    }
}

/// Which transition an alert event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Raised,
    /// A raised alert's diagnosis changed (where the problem starts moved to
    /// another hop and stayed there): the alert is still raised.
    Updated,
    Cleared,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Raised => "raised",
            AlertState::Updated => "updated",
            AlertState::Cleared => "cleared",
        }
    }

    /// Whether the alert is still firing after this event: a raise and an
    /// update leave it raised, a clear ends it.
    pub fn is_firing(self) -> bool {
        match self {
            AlertState::Raised | AlertState::Updated => true,
            AlertState::Cleared => false,
        }
    }
}

impl fmt::Display for AlertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for (i, kind) in AlertKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
            assert_eq!(kind.as_str().parse::<AlertKind>().unwrap(), *kind);
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, kind.as_str());
        }
        assert_eq!(
            "Route_Change".parse::<AlertKind>(),
            Ok(AlertKind::RouteChange)
        );
        let err = "lost".parse::<AlertKind>().unwrap_err();
        assert!(
            err.to_string().starts_with("\"lost\" is not an alert kind"),
            "{err}"
        );
    }

    #[test]
    fn states_serialise_as_their_names_and_updates_still_fire() {
        for state in [AlertState::Raised, AlertState::Updated, AlertState::Cleared] {
            let json = serde_json::to_value(state).unwrap();
            assert_eq!(json, state.as_str());
            assert_eq!(serde_json::from_value::<AlertState>(json).unwrap(), state);
        }
        assert_eq!(AlertState::Updated.to_string(), "updated");
        assert!(AlertState::Updated.is_firing());
        assert!(!AlertState::Cleared.is_firing());
    }
}
