//! The monitoring service's shared vocabulary: target identities and the
//! per-round records that flow from the scheduler to statistics, path
//! tracking, the store and alerts.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::probe::quote::QuoteReading;
use crate::probe::{Rtt, TimestampSource, Ttl};

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

    /// The name under which the store keeps one ECMP branch's rounds of this
    /// target: `<name>#branch<N>`. A branch is stored like one more target,
    /// so the store's chunks, rollups and retention serve it unchanged; `#`
    /// is not allowed in a target name ([`TargetId::new`]), so no configured
    /// target (or peer) can ever share this name and its history.
    pub fn branch_series(&self, branch: BranchIndex) -> TargetId {
        TargetId(format!("{}{BRANCH_SERIES_INFIX}{branch}", self.0))
    }

    /// The target and branch a [`TargetId::branch_series`] name stands for;
    /// `None` for a target's own name.
    pub fn branch_of(&self) -> Option<(TargetId, BranchIndex)> {
        let (target, index) = self.0.rsplit_once(BRANCH_SERIES_INFIX)?;
        let index = BranchIndex::new(parse_canonical_u8(index)?)?;
        Some((TargetId::new(target).ok()?, index))
    }

    /// A name as the store keeps it: a target's name or a branch series'
    /// (what [`TargetId::branch_series`] makes, and nothing else with `#`).
    pub fn from_stored(name: &str) -> Result<TargetId, InvalidTargetId> {
        if name.contains(BRANCH_SERIES_INFIX) {
            let id = TargetId(name.to_owned());
            return match id.branch_of() {
                Some(_) => Ok(id),
                None => Err(InvalidTargetId(name.to_owned())),
            };
        }
        TargetId::new(name)
    }
}

/// What separates a target's name from its branch's index in a branch
/// series' name (see [`TargetId::branch_series`]).
const BRANCH_SERIES_INFIX: &str = "#branch";

/// `1`..`255` written the one way `Display` writes them (no sign, no leading
/// zero), so a branch series has exactly one name.
fn parse_canonical_u8(text: &str) -> Option<u8> {
    let canonical =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with('0');
    canonical.then(|| text.parse().ok()).flatten()
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
///
/// Built only from an answer or a loss, so a sample cannot hold an RTT
/// without a responder, or be "the destination" while lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "HopSampleFields", try_from = "HopSampleFields")]
pub struct HopSample {
    pub ttl: Ttl,
    pub outcome: HopOutcome,
}

/// How one probe of a round ended: the hop-sample counterpart of
/// [`probe::Outcome`](crate::probe::Outcome), keeping only what the rounds'
/// consumers read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HopOutcome {
    Answered(HopAnswer),
    /// Timed out, or could not be sent: either way the path gave no answer.
    Lost,
}

/// The answer to one probe of a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HopAnswer {
    /// A router on the path, or the target.
    pub responder: IpAddr,
    pub rtt: Rtt,
    /// The reply came from the target itself.
    pub is_destination: bool,
    /// TTL (hop limit) left in the reply's IP header, when the timestamp path
    /// saw it: the return path's length from this responder. Live analysis
    /// only; not stored (the stored rounds' encoding has no room for it, and
    /// the changes it reveals are stored as path events instead).
    pub reply_ttl: Option<u8>,
    /// For ICMP errors: the quoted header's rewrites and the MPLS labels
    /// (`probe::quote`). Live analysis only, like `reply_ttl`: the path facts
    /// they make are stored as path events.
    pub quote: Option<QuoteReading>,
}

impl HopSample {
    pub const fn answered(ttl: Ttl, answer: HopAnswer) -> HopSample {
        HopSample {
            ttl,
            outcome: HopOutcome::Answered(answer),
        }
    }

    pub const fn lost(ttl: Ttl) -> HopSample {
        HopSample {
            ttl,
            outcome: HopOutcome::Lost,
        }
    }

    pub const fn answer(&self) -> Option<&HopAnswer> {
        match &self.outcome {
            HopOutcome::Answered(answer) => Some(answer),
            HopOutcome::Lost => None,
        }
    }

    pub const fn is_lost(&self) -> bool {
        matches!(self.outcome, HopOutcome::Lost)
    }

    /// Who answered; `None` when the probe was lost.
    pub fn responder(&self) -> Option<IpAddr> {
        self.answer().map(|a| a.responder)
    }

    /// `None` when the probe was lost.
    pub fn rtt(&self) -> Option<Rtt> {
        self.answer().map(|a| a.rtt)
    }

    /// The target itself answered.
    pub fn reached(&self) -> bool {
        self.answer().is_some_and(|a| a.is_destination)
    }

    /// See [`HopAnswer::reply_ttl`].
    pub fn reply_ttl(&self) -> Option<u8> {
        self.answer().and_then(|a| a.reply_ttl)
    }

    /// Rebuilds a sample from the flat fields that stored and serialised
    /// forms keep, rejecting combinations that no probe can produce.
    /// The reply TTL is never kept, so it comes back as `None`.
    pub fn from_parts(
        ttl: u8,
        responder: Option<IpAddr>,
        rtt: Option<Rtt>,
        reached: bool,
    ) -> Result<HopSample, InvalidHopSample> {
        let ttl = Ttl::new(ttl).ok_or(InvalidHopSample::ZeroTtl)?;
        match (responder, rtt) {
            (Some(responder), Some(rtt)) => Ok(HopSample::answered(
                ttl,
                HopAnswer {
                    responder,
                    rtt,
                    is_destination: reached,
                    reply_ttl: None,
                    quote: None,
                },
            )),
            (None, None) if reached => Err(InvalidHopSample::LostButReached),
            (None, None) => Ok(HopSample::lost(ttl)),
            (Some(_), None) => Err(InvalidHopSample::ResponderWithoutRtt),
            (None, Some(_)) => Err(InvalidHopSample::RttWithoutResponder),
        }
    }
}

#[cfg(test)]
impl HopSample {
    /// A sample for tests written in the flat terms rounds used to have:
    /// answered by `responder` after `rtt_ns`, or lost when that is `None`
    /// (and then `is_destination` does not apply). No reply TTL.
    pub(crate) fn answered_or_lost(
        ttl: u8,
        responder: IpAddr,
        rtt_ns: Option<u64>,
        is_destination: bool,
    ) -> HopSample {
        let ttl = Ttl::new(ttl).expect("test TTLs start at 1");
        match rtt_ns {
            Some(ns) => HopSample::answered(
                ttl,
                HopAnswer {
                    responder,
                    rtt: Rtt::from_nanos(ns),
                    is_destination,
                    reply_ttl: None,
                    quote: None,
                },
            ),
            None => HopSample::lost(ttl),
        }
    }
}

/// [`HopSample`]'s serde form: the flat fields it had before it was typed,
/// kept so anything that reads or writes samples as JSON sees the same shape.
/// `reply_ttl` is live-only and never serialised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct HopSampleFields {
    ttl: u8,
    responder: Option<IpAddr>,
    rtt_ns: Option<u64>,
    reached: bool,
}

impl From<HopSample> for HopSampleFields {
    fn from(sample: HopSample) -> HopSampleFields {
        HopSampleFields {
            ttl: sample.ttl.get(),
            responder: sample.responder(),
            rtt_ns: sample.rtt().map(Rtt::as_nanos),
            reached: sample.reached(),
        }
    }
}

impl TryFrom<HopSampleFields> for HopSample {
    type Error = InvalidHopSample;
    fn try_from(fields: HopSampleFields) -> Result<HopSample, InvalidHopSample> {
        HopSample::from_parts(
            fields.ttl,
            fields.responder,
            fields.rtt_ns.map(Rtt::from_nanos),
            fields.reached,
        )
    }
}

/// Why flat hop fields do not make a [`HopSample`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidHopSample {
    #[error("a hop sample's TTL must be between 1 and 255, not 0")]
    ZeroTtl,
    #[error("a hop sample has a responder but no RTT")]
    ResponderWithoutRtt,
    #[error("a hop sample has an RTT but no responder")]
    RttWithoutResponder,
    #[error("a lost hop sample cannot have reached the destination")]
    LostButReached,
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
    pub destination_ttl: Option<Ttl>,
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

/// One of a target's ECMP branches, numbered from 1 in the order discovery
/// listed them: the metric label and what findings name ("branch 2"), never
/// an address, so series stay bounded by the configured cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BranchIndex(u8);

impl BranchIndex {
    /// `n` from 1; `None` for 0.
    pub const fn new(n: u8) -> Option<BranchIndex> {
        if n == 0 {
            None
        } else {
            Some(BranchIndex(n))
        }
    }

    /// The branch at `position` (from 0) of a discovery's list.
    pub fn at(position: usize) -> Option<BranchIndex> {
        u8::try_from(position + 1).ok().map(BranchIndex)
    }

    pub const fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for BranchIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One branch as a discovery found it: the flow kept to follow it and the
/// responder at each TTL along it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BranchPath {
    pub index: BranchIndex,
    /// The wire flow identifier (UDP/TCP source port, ICMP echo id).
    pub flow_id: u16,
    /// The responder at each TTL from `first_ttl`; `None` where nothing answered.
    pub hops: Vec<Option<IpAddr>>,
    pub reached_destination: bool,
}

/// A finished discovery of one target's branches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BranchLayout {
    pub target: TargetId,
    pub discovered_at_ms: u64,
    pub first_ttl: Ttl,
    /// Probes the discovery sent, and how long it took.
    pub probes_sent: u32,
    pub elapsed_ms: u64,
    /// Branches the discovery found; at most the configured cap are probed.
    pub found: usize,
    /// Why discovery stopped (`complete`, or a budget ran out).
    pub stop: String,
    /// The branches probed each round, in index order.
    pub branches: Vec<BranchPath>,
}

/// What a multipath target's branch prober sends the pipeline: a new layout
/// after each discovery, then each branch's rounds.
#[derive(Clone, Debug, PartialEq)]
pub enum BranchUpdate {
    Discovered(BranchLayout),
    /// A round over one branch's kept flow; its `seq` counts that branch's
    /// rounds, not the target's.
    Round {
        branch: BranchIndex,
        round: RoundRecord,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ttl(value: u8) -> Ttl {
        Ttl::new(value).unwrap()
    }

    #[test]
    fn target_names_are_validated() {
        assert!(TargetId::new("core-router_1.example").is_ok());
        assert!(TargetId::new("").is_err());
        assert!(TargetId::new("has space").is_err());
        assert!(TargetId::new("x".repeat(65)).is_err());
        assert!(TargetId::new("x".repeat(64)).is_ok());
    }

    #[test]
    fn a_branch_series_name_is_never_a_target_name_and_reads_back() {
        let target = TargetId::new("x".repeat(64)).unwrap();
        let two = BranchIndex::new(2).unwrap();
        let series = target.branch_series(two);
        assert_eq!(series.as_str(), format!("{}#branch2", "x".repeat(64)));
        // No config (or API) name can be it: `#` is refused in target names.
        assert!(TargetId::new(series.as_str()).is_err());
        assert_eq!(series.branch_of(), Some((target.clone(), two)));
        assert_eq!(target.branch_of(), None);
        // The store reads both kinds of name back, and only canonical ones.
        assert_eq!(TargetId::from_stored(series.as_str()), Ok(series));
        assert_eq!(
            TargetId::from_stored("edge"),
            Ok(TargetId::new("edge").unwrap())
        );
        let last = target.branch_series(BranchIndex::new(255).unwrap());
        assert_eq!(TargetId::from_stored(last.as_str()), Ok(last));
        for bad in [
            "edge#branch0",
            "edge#branch02",
            "edge#branch256",
            "edge#branch",
            "edge#branch+1",
            "#branch1",
            "ed ge#branch1",
            "edge#branch1#branch1",
            "edge#1",
        ] {
            assert!(TargetId::from_stored(bad).is_err(), "{bad}");
        }
    }

    /// `RoundRecord`'s serde form, as it was when samples were flat structs:
    /// whatever reads it as JSON keeps reading the same shape.
    #[test]
    fn the_json_shape_of_a_round_is_pinned() {
        let round = RoundRecord {
            target: TargetId::new("edge").unwrap(),
            seq: 7,
            started_at_ms: 1_700_000_000_000,
            hops: vec![
                HopSample::answered(
                    ttl(1),
                    HopAnswer {
                        responder: "10.0.0.1".parse().unwrap(),
                        rtt: Rtt::from_nanos(1_234_567),
                        is_destination: false,
                        reply_ttl: Some(63),
                        quote: None,
                    },
                ),
                HopSample::lost(ttl(2)),
                HopSample::answered(
                    ttl(3),
                    HopAnswer {
                        responder: "2001:db8::1".parse().unwrap(),
                        rtt: Rtt::from_nanos(9_000_000),
                        is_destination: true,
                        reply_ttl: None,
                        quote: None,
                    },
                ),
            ],
            destination_ttl: Some(ttl(3)),
            source: TimestampSource::Kernel,
        };
        let json = serde_json::to_string(&round).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"target":"edge","seq":7,"started_at_ms":1700000000000,"hops":["#,
                r#"{"ttl":1,"responder":"10.0.0.1","rtt_ns":1234567,"reached":false},"#,
                r#"{"ttl":2,"responder":null,"rtt_ns":null,"reached":false},"#,
                r#"{"ttl":3,"responder":"2001:db8::1","rtt_ns":9000000,"reached":true}],"#,
                r#""destination_ttl":3,"source":"kernel"}"#
            )
        );
        // The reply TTL is live-only, so it does not come back.
        let mut expected = round.clone();
        expected.hops[0] = HopSample::answered(
            ttl(1),
            HopAnswer {
                reply_ttl: None,
                quote: None,
                ..*round.hops[0].answer().unwrap()
            },
        );
        assert_eq!(
            serde_json::from_str::<RoundRecord>(&json).unwrap(),
            expected
        );
    }

    #[test]
    fn path_samples_stop_at_the_destination() {
        let hop = |at, is_destination| {
            HopSample::answered(
                ttl(at),
                HopAnswer {
                    responder: "198.18.0.1".parse().unwrap(),
                    rtt: Rtt::from_nanos(1),
                    is_destination,
                    reply_ttl: None,
                    quote: None,
                },
            )
        };
        let round = RoundRecord {
            target: TargetId::new("t").unwrap(),
            seq: 0,
            started_at_ms: 0,
            hops: vec![hop(1, false), hop(2, true), hop(3, true)],
            destination_ttl: Some(ttl(2)),
            source: TimestampSource::Ebpf,
        };
        assert_eq!(round.path_samples().len(), 2);
        assert_eq!(round.destination().unwrap().ttl, ttl(2));
    }

    #[test]
    fn flat_fields_that_no_probe_produces_are_refused() {
        let ip: IpAddr = "198.18.0.1".parse().unwrap();
        let rtt = Some(Rtt::from_nanos(5));
        let answered = HopSample::from_parts(4, Some(ip), rtt, true).unwrap();
        assert_eq!(answered.ttl, ttl(4));
        assert_eq!(answered.responder(), Some(ip));
        assert_eq!(answered.rtt(), rtt);
        assert!(answered.reached() && !answered.is_lost());
        let lost = HopSample::from_parts(4, None, None, false).unwrap();
        assert_eq!(lost, HopSample::lost(ttl(4)));
        assert!(lost.is_lost() && !lost.reached());
        assert_eq!(lost.rtt(), None);
        assert_eq!(lost.responder(), None);

        let refused = |ttl, responder, rtt, reached| {
            HopSample::from_parts(ttl, responder, rtt, reached).unwrap_err()
        };
        assert_eq!(refused(0, None, None, false), InvalidHopSample::ZeroTtl);
        assert_eq!(
            refused(4, None, rtt, false),
            InvalidHopSample::RttWithoutResponder
        );
        assert_eq!(
            refused(4, Some(ip), None, false),
            InvalidHopSample::ResponderWithoutRtt
        );
        assert_eq!(
            refused(4, None, None, true),
            InvalidHopSample::LostButReached
        );
        let json = r#"{"ttl":4,"responder":null,"rtt_ns":5,"reached":false}"#;
        assert!(serde_json::from_str::<HopSample>(json).is_err());
    }
}
