//! The monitoring service's shared vocabulary: target identities and the
//! per-round records that flow from the scheduler to statistics, path
//! tracking, the store and alerts.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::probe::TimestampSource;

/// A configured target's stable identity: its `name` in the config file.
/// History, live state and alerts are keyed by it, so renaming a target's
/// label or changing its interval keeps its history; changing the name starts
/// a new one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TargetId(String);

impl TargetId {
    /// Longest accepted name, so keys and metric labels stay small.
    pub const MAX_LEN: usize = 64;

    /// Accepts 1 to 64 characters of `[A-Za-z0-9._-]`.
    pub fn new(name: impl Into<String>) -> Result<TargetId, InvalidTargetId> {
        let name = name.into();
        let valid = !name.is_empty()
            && name.len() <= Self::MAX_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(TargetId(name))
        } else {
            Err(InvalidTargetId(name))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The error for a target name that is empty, too long or has other characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid target name {0:?}: use 1 to 64 characters of letters, digits, '.', '_' and '-'")]
pub struct InvalidTargetId(pub String);

/// What one probe of a round found at one TTL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HopSample {
    pub ttl: u8,
    /// Who answered; `None` when the probe timed out.
    pub responder: Option<IpAddr>,
    /// Round-trip time in nanoseconds; `None` when the probe timed out.
    pub rtt_ns: Option<u64>,
    /// The reply came from the target itself.
    pub reached: bool,
}

impl HopSample {
    pub fn lost(&self) -> bool {
        self.rtt_ns.is_none()
    }
}

/// One round of one target: a probe at every TTL from the first to the
/// destination (or the maximum), each answered or timed out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundRecord {
    pub target: TargetId,
    /// Round number since the target started, for ordering and gap detection.
    pub seq: u64,
    /// When the round's probes were sent, Unix milliseconds.
    pub started_at_ms: u64,
    /// Samples ordered by TTL, at most one per TTL.
    pub hops: Vec<HopSample>,
    /// The lowest TTL at which the target answered in this round.
    pub destination_ttl: Option<u8>,
    /// The timestamp source of this round's answers (the worst one, if mixed).
    pub source: TimestampSource,
}

impl RoundRecord {
    /// The sample for the destination, if the target answered.
    pub fn destination(&self) -> Option<&HopSample> {
        let ttl = self.destination_ttl?;
        self.hops.iter().find(|h| h.ttl == ttl)
    }

    /// The samples up to and including the destination's TTL (all when the
    /// destination did not answer): probes past the destination add nothing.
    pub fn path_samples(&self) -> &[HopSample] {
        match self.destination_ttl {
            Some(ttl) => {
                let end = self
                    .hops
                    .iter()
                    .position(|h| h.ttl > ttl)
                    .unwrap_or(self.hops.len());
                &self.hops[..end]
            }
            None => &self.hops,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_are_validated() {
        assert!(TargetId::new("core-router_1.example").is_ok());
        assert!(TargetId::new("").is_err());
        assert!(TargetId::new("has space").is_err());
        assert!(TargetId::new("x".repeat(65)).is_err());
        assert!(TargetId::new("x".repeat(64)).is_ok());
    }

    #[test]
    fn path_samples_stop_at_the_destination() {
        let hop = |ttl, reached| HopSample {
            ttl,
            responder: None,
            rtt_ns: Some(1),
            reached,
        };
        let round = RoundRecord {
            target: TargetId::new("t").unwrap(),
            seq: 0,
            started_at_ms: 0,
            hops: vec![hop(1, false), hop(2, true), hop(3, true)],
            destination_ttl: Some(2),
            source: TimestampSource::Ebpf,
        };
        assert_eq!(round.path_samples().len(), 2);
        assert_eq!(round.destination().unwrap().ttl, 2);
    }
}
