//! Return-path tracking: how many routers each responder's replies cross on
//! their way back, from the TTL (hop limit) left in the reply's IP header.
//! Routers and hosts start their packets at 64, 128 or 255, so the smallest of
//! those at or above the received TTL, minus it, is the return path's length.
//! A length that changes while the forward path stays the same means the way
//! back changed: asymmetric routing moved, which mtr and traceroute cannot see,
//! and which can raise latency with nothing on the forward path to show for it.
//!
//! Each (TTL, responder) pair keeps its confirmed length; a different length
//! seen in [`ReturnPathTracker`]'s `confirm` consecutive answers replaces it
//! and makes a [`PathEvent::ReturnPathChanged`]. The caller resets the tracker
//! when the forward path changes (new responders mean new return paths too)
//! and skips rounds while a forward change is still being confirmed, so a
//! forward reroute is never reported as a return-path change.

use std::net::IpAddr;

use super::path::PathEvent;
use crate::model::RoundRecord;

/// Initial TTLs in common use (Linux and most routers 64, Windows 128, many
/// router control planes 255).
const INITIAL_TTLS: [u8; 3] = [64, 128, 255];
/// Responders tracked per TTL (more: ECMP fan-out; the rest are ignored).
const RESPONDERS_PER_TTL: usize = 4;

/// Routers a reply that arrived with `reply_ttl` crossed on its way back.
pub fn return_hops(reply_ttl: u8) -> u8 {
    let initial = INITIAL_TTLS
        .into_iter()
        .find(|i| *i >= reply_ttl)
        .unwrap_or(u8::MAX);
    initial - reply_ttl
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Responder {
    address: IpAddr,
    confirmed: u8,
    /// A different length and how many answers in a row showed it.
    candidate: Option<(u8, u32)>,
}

/// The confirmed return-path lengths of one target's responders.
#[derive(Debug, Clone)]
pub struct ReturnPathTracker {
    confirm: u32,
    /// Index 0 is TTL 1.
    ttls: Vec<Vec<Responder>>,
}

impl ReturnPathTracker {
    /// A tracker that confirms a new length after `confirm` answers in a row.
    pub fn new(confirm: u32) -> ReturnPathTracker {
        ReturnPathTracker {
            confirm: confirm.max(1),
            ttls: Vec::new(),
        }
    }

    /// Forgets every length: the forward path changed.
    pub fn reset(&mut self) {
        self.ttls.clear();
    }

    /// The confirmed return length of the busiest-known responder per TTL
    /// (index 0 is TTL 1), `None` where nothing is known.
    pub fn lengths(&self) -> Vec<Option<u8>> {
        self.ttls
            .iter()
            .map(|rs| rs.first().map(|r| r.confirmed))
            .collect()
    }

    /// Takes in one round; returns the change it confirms, if any.
    pub fn observe(&mut self, round: &RoundRecord) -> Option<PathEvent> {
        let before = self.lengths();
        let mut first_changed_ttl = None;
        for sample in round.path_samples() {
            let Some(answer) = sample.answer() else {
                continue;
            };
            let Some(reply_ttl) = answer.reply_ttl else {
                continue;
            };
            let (address, i) = (answer.responder, sample.ttl.index());
            if i >= self.ttls.len() {
                self.ttls.reserve_exact(i + 1 - self.ttls.len());
                self.ttls.resize_with(i + 1, Vec::new);
            }
            let length = return_hops(reply_ttl);
            let known = &mut self.ttls[i];
            let Some(r) = known.iter_mut().find(|r| r.address == address) else {
                if known.len() < RESPONDERS_PER_TTL {
                    // One at a time: most TTLs have one responder.
                    known.reserve_exact(1);
                    known.push(Responder {
                        address,
                        confirmed: length,
                        candidate: None,
                    });
                }
                continue;
            };
            if length == r.confirmed {
                r.candidate = None;
                continue;
            }
            let seen = match r.candidate {
                Some((l, n)) if l == length => n + 1,
                _ => 1,
            };
            if seen >= self.confirm {
                r.confirmed = length;
                r.candidate = None;
                first_changed_ttl.get_or_insert(sample.ttl.get());
            } else {
                r.candidate = Some((length, seen));
            }
        }
        let first_changed_ttl = first_changed_ttl?;
        Some(PathEvent::ReturnPathChanged {
            at_ms: round.started_at_ms,
            before,
            after: self.lengths(),
            first_changed_ttl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HopAnswer, HopSample, TargetId};
    use crate::probe::{Rtt, TimestampSource, Ttl};
    use std::net::Ipv4Addr;

    fn round(seq: u64, reply_ttls: &[u8]) -> RoundRecord {
        let n = reply_ttls.len() as u8;
        RoundRecord {
            target: TargetId::new("t").unwrap(),
            seq,
            started_at_ms: seq * 1000,
            hops: reply_ttls
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    HopSample::answered(
                        Ttl::new(i as u8 + 1).unwrap(),
                        HopAnswer {
                            responder: IpAddr::V4(Ipv4Addr::new(198, 18, i as u8, 2)),
                            rtt: Rtt::from_nanos(1_000),
                            is_destination: i as u8 + 1 == n,
                            reply_ttl: Some(*r),
                            quote: None,
                        },
                    )
                })
                .collect(),
            destination_ttl: Ttl::new(n),
            source: TimestampSource::Ebpf,
        }
    }

    #[test]
    fn return_hops_from_the_common_initial_ttls() {
        assert_eq!(return_hops(64), 0);
        assert_eq!(return_hops(61), 3);
        assert_eq!(return_hops(126), 2);
        assert_eq!(return_hops(250), 5);
    }

    #[test]
    fn a_longer_way_back_is_confirmed_once_and_named_from_its_first_hop() {
        let mut tracker = ReturnPathTracker::new(3);
        // Symmetric: hop k's replies cross k - 1 routers.
        assert_eq!(tracker.observe(&round(1, &[64, 63, 62, 61])), None);
        assert_eq!(tracker.lengths(), [Some(0), Some(1), Some(2), Some(3)]);
        // From hop 3 on, replies come back two routers longer; one odd reply
        // in between changes nothing.
        assert_eq!(tracker.observe(&round(2, &[64, 63, 60, 61])), None);
        assert_eq!(tracker.observe(&round(3, &[64, 63, 62, 61])), None);
        assert_eq!(tracker.observe(&round(4, &[64, 63, 60, 59])), None);
        assert_eq!(tracker.observe(&round(5, &[64, 63, 60, 59])), None);
        match tracker.observe(&round(6, &[64, 63, 60, 59])) {
            Some(PathEvent::ReturnPathChanged {
                at_ms,
                before,
                after,
                first_changed_ttl,
            }) => {
                assert_eq!(at_ms, 6000);
                assert_eq!(first_changed_ttl, 3);
                assert_eq!(before, [Some(0), Some(1), Some(2), Some(3)]);
                assert_eq!(after, [Some(0), Some(1), Some(4), Some(5)]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(tracker.observe(&round(7, &[64, 63, 60, 59])), None, "once");
        tracker.reset();
        assert_eq!(tracker.observe(&round(8, &[64, 63, 62, 61])), None);
    }
}
