//! Path facts: what one target's ICMP errors say beyond who answered. The
//! header each error quotes shows middleboxes that rewrote the probe (DSCP,
//! ECN, source address, TTL, length; see `probe::quote`), and routers of MPLS
//! networks report the label stack the probe carried (RFC 4950).
//!
//! Each (TTL, responder) keeps the reading of its latest error, so a lost probe
//! does not make a fact come and go. Only readings that show something (a
//! rewrite or labels) are kept: a clean path, the common case, costs no
//! memory, and a responder whose latest quote is clean drops its reading. From those readings a round derives the
//! facts: for each rewritten field the lowest TTL whose quote shows it (the
//! middlebox sits between the hop before and that one), and the label stack
//! per responder. Facts that differ from the confirmed ones for
//! [`PathFactsTracker`]'s `confirm` rounds in a row replace them and make a
//! [`PathEvent::MiddleboxChanged`] or [`PathEvent::MplsChanged`]. The caller
//! resets the readings when the forward path changes (other routers, other
//! quotes) and skips rounds while a forward change is being confirmed.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::path::PathEvent;
use crate::model::RoundRecord;
use crate::probe::parse::MplsLabel;
use crate::probe::quote::{HeaderField, QuoteReading, Rewrite};

/// Responders whose readings are kept per TTL (more: ECMP fan-out; the rest
/// are ignored until the path is reset).
const RESPONDERS_PER_TTL: usize = 4;

/// The latest reading of one responder at one TTL that showed something.
#[derive(Debug, Clone)]
struct Reading {
    ttl: u8,
    responder: IpAddr,
    reading: QuoteReading,
}

/// A header field first seen rewritten in the quote of the responder at `ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MiddleboxFact {
    pub ttl: u8,
    pub responder: IpAddr,
    #[serde(flatten)]
    pub rewrite: Rewrite,
}

impl fmt::Display for MiddleboxFact {
    /// "DSCP 0 → 46 at hop 3 (198.18.0.9)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at hop {} ({})",
            self.rewrite, self.ttl, self.responder
        )
    }
}

/// The MPLS label stack the responder at `ttl` reported, outermost first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HopLabels {
    pub ttl: u8,
    pub responder: IpAddr,
    pub labels: Vec<MplsLabel>,
}

/// What a target's path showed besides its responders.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathFacts {
    /// One per rewritten field, at the first hop whose quote shows it.
    pub middleboxes: Vec<MiddleboxFact>,
    /// Per responder that reported labels, by TTL.
    pub mpls: Vec<HopLabels>,
}

/// The readings, the confirmed facts and a candidate change of one target.
#[derive(Debug, Clone)]
pub struct PathFactsTracker {
    confirm: u32,
    /// By TTL, then in arrival order: each responder's latest reading, when
    /// it showed something.
    readings: Vec<Reading>,
    confirmed: PathFacts,
    /// Different facts and how many rounds in a row derived them.
    candidate: Option<(PathFacts, u32)>,
}

impl PathFactsTracker {
    /// A tracker that confirms new facts after `confirm` rounds in a row.
    pub fn new(confirm: u32) -> PathFactsTracker {
        PathFactsTracker {
            confirm: confirm.max(1),
            readings: Vec::new(),
            confirmed: PathFacts::default(),
            candidate: None,
        }
    }

    /// Forgets the readings: the forward path changed. The confirmed facts
    /// stay until the new path's readings confirm others.
    pub fn reset(&mut self) {
        self.readings.clear();
        self.candidate = None;
    }

    /// Approximate heap bytes: about 100 bytes per reading that shows a
    /// rewrite or labels (none on a clean path), plus the facts.
    pub fn approx_memory_bytes(&self) -> usize {
        let facts = |f: &PathFacts| {
            f.middleboxes.capacity() * std::mem::size_of::<MiddleboxFact>()
                + f.mpls
                    .iter()
                    .map(|h| {
                        std::mem::size_of::<HopLabels>()
                            + h.labels.capacity() * std::mem::size_of::<MplsLabel>()
                    })
                    .sum::<usize>()
        };
        self.readings.capacity() * std::mem::size_of::<Reading>()
            + facts(&self.confirmed)
            + self.candidate.as_ref().map_or(0, |(f, _)| facts(f))
    }

    /// The confirmed facts.
    pub fn facts(&self) -> &PathFacts {
        &self.confirmed
    }

    /// Takes in one round; returns the changes it confirms.
    pub fn observe(&mut self, round: &RoundRecord) -> Vec<PathEvent> {
        for sample in round.path_samples() {
            let Some(answer) = sample.answer() else {
                continue;
            };
            let Some(reading) = answer.quote else {
                continue;
            };
            self.keep(sample.ttl.get(), answer.responder, reading);
        }
        // Readings past the destination belong to an older, longer path.
        let limit = round.destination_ttl.map_or(u8::MAX, |t| t.get());
        let derived = self.derive(limit);
        if derived == self.confirmed {
            self.candidate = None;
            return Vec::new();
        }
        let seen = match &self.candidate {
            Some((facts, n)) if *facts == derived => n + 1,
            _ => 1,
        };
        if seen < self.confirm {
            self.candidate = Some((derived, seen));
            return Vec::new();
        }
        self.candidate = None;
        let before = std::mem::replace(&mut self.confirmed, derived);
        let after = &self.confirmed;
        let at_ms = round.started_at_ms;
        let mut events = Vec::new();
        if before.middleboxes != after.middleboxes {
            events.push(PathEvent::MiddleboxChanged {
                at_ms,
                before: before.middleboxes,
                after: after.middleboxes.clone(),
            });
        }
        if before.mpls != after.mpls {
            events.push(PathEvent::MplsChanged {
                at_ms,
                before: before.mpls,
                after: after.mpls.clone(),
            });
        }
        events
    }

    /// Records `reading` as the latest of `responder` at `ttl`.
    fn keep(&mut self, ttl: u8, responder: IpAddr, reading: QuoteReading) {
        let known = self
            .readings
            .iter()
            .position(|r| r.ttl == ttl && r.responder == responder);
        let shows_something = !reading.rewrites.is_empty() || !reading.mpls.is_empty();
        match (known, shows_something) {
            (Some(i), true) => self.readings[i].reading = reading,
            (Some(i), false) => {
                self.readings.remove(i);
            }
            (None, true) => {
                let at_ttl = self.readings.iter().filter(|r| r.ttl == ttl).count();
                // Full: further responders wait for the next reset.
                if at_ttl < RESPONDERS_PER_TTL {
                    let after = self.readings.partition_point(|r| r.ttl <= ttl);
                    self.readings.insert(
                        after,
                        Reading {
                            ttl,
                            responder,
                            reading,
                        },
                    );
                }
            }
            (None, false) => {}
        }
    }

    /// The facts the readings up to TTL `limit` show.
    fn derive(&self, limit: u8) -> PathFacts {
        let hops = || {
            self.readings
                .iter()
                .filter(move |r| r.ttl <= limit)
                .map(|r| (r.ttl, r.responder, &r.reading))
        };
        let middleboxes = HeaderField::ALL
            .iter()
            .filter_map(|field| {
                hops().find_map(|(ttl, responder, reading)| {
                    reading
                        .rewrites
                        .iter()
                        .find(|r| r.field == *field)
                        .map(|rewrite| MiddleboxFact {
                            ttl,
                            responder,
                            rewrite,
                        })
                })
            })
            .collect();
        let mut mpls: Vec<HopLabels> = hops()
            .filter(|(_, _, r)| !r.mpls.is_empty())
            .map(|(ttl, responder, r)| HopLabels {
                ttl,
                responder,
                labels: r.mpls.labels().collect(),
            })
            .collect();
        // Arrival order of responders must not make a change of its own.
        mpls.sort_by_key(|h| (h.ttl, h.responder));
        PathFacts { middleboxes, mpls }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HopAnswer, HopSample, TargetId};
    use crate::probe::parse::QuotedHeader;
    use crate::probe::parse::ReplyKind;
    use crate::probe::quote::{self, LabelStack, SentHeader};
    use crate::probe::{Rtt, TimestampSource, Ttl};

    const SENT: &str = "192.0.2.1";

    fn router(ttl: u8) -> IpAddr {
        IpAddr::from([198, 18, 0, ttl])
    }

    /// A round of `hops` routers whose quotes carry `tos` from TTL `from_ttl`
    /// on, and the label `label` at TTL 2.
    fn round(seq: u64, hops: u8, tos: u8, from_ttl: u8, label: Option<u32>) -> RoundRecord {
        let sent = SentHeader {
            src: SENT.parse().unwrap(),
            tos: 0,
            ip_len: 64,
        };
        let samples = (1..=hops)
            .map(|ttl| {
                let quoted = QuotedHeader {
                    tos: if ttl >= from_ttl { tos } else { 0 },
                    ttl: 1,
                    ip_len: 64,
                    src: sent.src,
                    src_port: 4000,
                };
                let labels: Vec<MplsLabel> = label
                    .filter(|_| ttl == 2)
                    .map(|l| MplsLabel::from_entry(l << 12 | 0x100 | 1))
                    .into_iter()
                    .collect();
                HopSample::answered(
                    Ttl::new(ttl).unwrap(),
                    HopAnswer {
                        responder: router(ttl),
                        rtt: Rtt::from_nanos(1_000),
                        is_destination: ttl == hops,
                        reply_ttl: None,
                        quote: Some(QuoteReading {
                            rewrites: quote::compare(&sent, &quoted, ReplyKind::TimeExceeded),
                            mpls: LabelStack::new(&labels),
                        }),
                    },
                )
            })
            .collect();
        RoundRecord {
            target: TargetId::new("t").unwrap(),
            seq,
            started_at_ms: 1_000 * seq,
            hops: samples,
            destination_ttl: Ttl::new(hops),
            source: TimestampSource::Ebpf,
        }
    }

    #[test]
    fn a_dscp_rewrite_is_placed_at_the_first_hop_whose_quote_shows_it_after_confirmation() {
        let mut tracker = PathFactsTracker::new(3);
        assert!(tracker.observe(&round(1, 5, 0, 1, None)).is_empty());
        assert!(tracker.observe(&round(2, 5, 46 << 2, 3, None)).is_empty());
        assert!(tracker.observe(&round(3, 5, 46 << 2, 3, None)).is_empty());
        let events = tracker.observe(&round(4, 5, 46 << 2, 3, None));
        let fact = MiddleboxFact {
            ttl: 3,
            responder: router(3),
            rewrite: Rewrite {
                field: HeaderField::Dscp,
                from: quote::FieldValue::Number(0),
                to: quote::FieldValue::Number(46),
            },
        };
        assert_eq!(
            events,
            vec![PathEvent::MiddleboxChanged {
                at_ms: 4_000,
                before: vec![],
                after: vec![fact],
            }]
        );
        assert_eq!(tracker.facts().middleboxes, vec![fact]);
        assert_eq!(fact.to_string(), "DSCP 0 → 46 at hop 3 (198.18.0.3)");
        // Steady: nothing more.
        assert!(tracker.observe(&round(5, 5, 46 << 2, 3, None)).is_empty());
    }

    #[test]
    fn a_lost_probe_keeps_the_reading_and_a_brief_change_is_not_confirmed() {
        let mut tracker = PathFactsTracker::new(2);
        for seq in 1..=2 {
            tracker.observe(&round(seq, 4, 1, 2, None));
        }
        assert_eq!(tracker.facts().middleboxes.len(), 1);
        // TTL 2 lost: TTL 2's last reading still places the ECN change there.
        let mut lossy = round(3, 4, 1, 2, None);
        lossy.hops[1] = HopSample::lost(Ttl::new(2).unwrap());
        assert!(tracker.observe(&lossy).is_empty());
        assert_eq!(tracker.facts().middleboxes[0].ttl, 2);
        // One round without the rewrite, then back: no event.
        assert!(tracker.observe(&round(4, 4, 0, 1, None)).is_empty());
        assert!(tracker.observe(&round(5, 4, 1, 2, None)).is_empty());
        assert_eq!(tracker.facts().middleboxes[0].ttl, 2);
    }

    #[test]
    fn label_stacks_are_facts_per_responder_and_their_change_is_an_event() {
        let mut tracker = PathFactsTracker::new(1);
        let events = tracker.observe(&round(1, 3, 0, 1, Some(24001)));
        let labels = |l: u32| HopLabels {
            ttl: 2,
            responder: router(2),
            labels: vec![MplsLabel::from_entry(l << 12 | 0x100 | 1)],
        };
        assert_eq!(
            events,
            vec![PathEvent::MplsChanged {
                at_ms: 1_000,
                before: vec![],
                after: vec![labels(24001)],
            }]
        );
        let events = tracker.observe(&round(2, 3, 0, 1, Some(24002)));
        assert!(
            matches!(&events[..], [PathEvent::MplsChanged { before, after, .. }]
            if before == &vec![labels(24001)] && after == &vec![labels(24002)])
        );
        assert!(tracker.facts().middleboxes.is_empty());
    }

    #[test]
    fn reset_forgets_readings_but_keeps_confirmed_facts_until_others_are_confirmed() {
        let mut tracker = PathFactsTracker::new(2);
        for seq in 1..=2 {
            tracker.observe(&round(seq, 4, 8, 2, None));
        }
        assert_eq!(tracker.facts().middleboxes.len(), 1);
        tracker.reset();
        assert_eq!(tracker.facts().middleboxes.len(), 1);
        assert!(tracker.observe(&round(3, 4, 0, 1, None)).is_empty());
        let events = tracker.observe(&round(4, 4, 0, 1, None));
        assert!(
            matches!(&events[..], [PathEvent::MiddleboxChanged { after, .. }] if after.is_empty())
        );
    }
}
