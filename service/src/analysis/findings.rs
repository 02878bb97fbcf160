//! The judgements drawn from per-hop window statistics: which hops lose ICMP
//! replies that the path does not (rate limiting), and where along the path a
//! destination's loss or latency degradation begins (localisation).
//!
//! # ICMP rate limiting
//! An intermediate hop `k` (before the destination) is flagged when, over the
//! window, it has at least [`MIN_WINDOW_PROBES`] probes, loses at least
//! [`RATE_LIMIT_MIN_LOSS_PCT`], and some later hop that answers (any later TTL or
//! the destination) loses at most `max(`[`RATE_LIMIT_FLOOR_PCT`]`, loss(k) / 2)`.
//! Packets that reach that later hop crossed hop `k`'s router, so the replies
//! missing from `k` were the router declining to answer (control-plane rate
//! limits, or never answering at all), not forwarding loss. Flagged loss is never
//! path loss: path loss is the destination's loss.
//!
//! # Localisation of loss
//! The destination is degraded when it has at least [`MIN_WINDOW_PROBES`] probes
//! and loses at least [`DEST_LOSS_DEGRADED_PCT`]. With `D` its loss, a hop *carries*
//! the loss when its own loss is at least [`LOSS_CARRY_FACTOR`] x `D`. Only
//! informative hops count: at least [`MIN_WINDOW_PROBES`] probes, at least one
//! answer, not flagged as rate limited (their replies say nothing about forwarding).
//! Let `m` be the last informative hop that does not carry the loss; the loss starts
//! at the first informative hop after `m` (every one from there to the destination
//! carries it), or at the destination itself. When nothing after `m` answers at all
//! (the destination is unreachable), the loss starts at the TTL right after `m`.
//!
//! # Localisation of latency
//! Each hop's latency rise is its window p50 minus its baseline, the best RTT since
//! the current path was established. The destination is degraded when its rise is
//! at least [`LATENCY_STEP_MIN_NS`] and at least [`LATENCY_STEP_MIN_RATIO`] of its
//! baseline. A hop carries the rise when its own is at least
//! [`LATENCY_CARRY_FACTOR`] x the destination's (hops need
//! [`MIN_LATENCY_ANSWERS`] answers to count), and the rise starts after the last
//! informative hop that does not carry it, exactly as for loss. A hop whose replies
//! are slow on their own (ICMP generated on a busy CPU) but whose followers are
//! not, never becomes the answer: the rise must persist to the destination.
//! The caller withholds latency findings until the window holds only samples from
//! the current path, since a mixed window compares two paths.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;

/// Fewer probes than this in a window say too little about a loss rate.
pub const MIN_WINDOW_PROBES: u64 = 10;
/// Hop loss below this is never flagged as rate limiting.
pub const RATE_LIMIT_MIN_LOSS_PCT: f64 = 5.0;
/// A later hop losing at most this much (or half the hop's loss) clears the path.
pub const RATE_LIMIT_FLOOR_PCT: f64 = 2.0;
/// Destination loss from which a loss localisation is made.
pub const DEST_LOSS_DEGRADED_PCT: f64 = 3.0;
/// A hop carries the destination's loss when it loses at least this fraction of it.
pub const LOSS_CARRY_FACTOR: f64 = 0.5;
/// Smallest destination latency rise (p50 over baseline) that is a degradation.
pub const LATENCY_STEP_MIN_NS: u64 = 10_000_000;
/// ... and it must also be at least this fraction of the baseline.
pub const LATENCY_STEP_MIN_RATIO: f64 = 0.25;
/// A hop carries the destination's rise when its own is at least this fraction.
pub const LATENCY_CARRY_FACTOR: f64 = 0.5;
/// Answers a hop needs in the window before its p50 counts.
pub const MIN_LATENCY_ANSWERS: u64 = 5;

/// What the findings need to know about one hop's window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct HopView {
    pub ttl: u8,
    pub responder: Option<IpAddr>,
    pub sent: u64,
    pub received: u64,
    pub p50_ns: Option<u64>,
    /// Best RTT since the current path was established.
    pub baseline_ns: Option<u64>,
}

impl HopView {
    fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            100.0 * self.sent.saturating_sub(self.received) as f64 / self.sent as f64
        }
    }

    fn enough_probes(&self) -> bool {
        self.sent >= MIN_WINDOW_PROBES
    }

    fn rise_ns(&self) -> Option<u64> {
        if self.received < MIN_LATENCY_ANSWERS {
            return None;
        }
        Some(self.p50_ns?.saturating_sub(self.baseline_ns?))
    }
}

/// Which way the destination degraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DegradationKind {
    Loss,
    Latency,
}

/// The numbers behind a localisation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Evidence {
    Loss {
        /// Loss at the hop where it starts; `None` when that TTL was never probed.
        hop_loss_pct: Option<f64>,
        /// The last hop before it that answers without carrying the loss.
        previous_ttl: Option<u8>,
        previous_loss_pct: Option<f64>,
        destination_loss_pct: f64,
    },
    Latency {
        /// p50 over baseline at the hop where the rise starts.
        hop_rise_ns: u64,
        previous_ttl: Option<u8>,
        previous_rise_ns: Option<u64>,
        destination_rise_ns: u64,
        destination_p50_ns: u64,
        destination_baseline_ns: u64,
    },
}

/// "Where is the problem": the first hop at which a destination degradation
/// begins and from which it persists to the destination.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Localisation {
    pub kind: DegradationKind,
    /// The hop (TTL) where the degradation starts.
    pub ttl: u8,
    /// Who answers at that hop, when anyone does.
    pub responder: Option<IpAddr>,
    pub evidence: Evidence,
    /// One line for people, e.g. "loss starts at hop 3 (198.18.2.2): 30% there and
    /// at every hop after it".
    pub summary: String,
}

/// The rate-limit flag of each intermediate hop (same order as `intermediate`).
pub(crate) fn rate_limited(intermediate: &[HopView], destination: &HopView) -> Vec<bool> {
    intermediate
        .iter()
        .enumerate()
        .map(|(i, hop)| {
            let loss = hop.loss_pct();
            if !hop.enough_probes() || loss < RATE_LIMIT_MIN_LOSS_PCT {
                return false;
            }
            let clear = RATE_LIMIT_FLOOR_PCT.max(loss / 2.0);
            intermediate[i + 1..]
                .iter()
                .chain(std::iter::once(destination))
                .any(|later| {
                    later.enough_probes() && later.received > 0 && later.loss_pct() <= clear
                })
        })
        .collect()
}

/// Where the hops stop carrying a degradation: `(m, start)` as indices into the
/// hop chain (intermediate hops then the destination, last), where `m` is the last
/// informative hop that does not carry it and `start` the first informative one
/// after it, `None` when no hop after `m` is informative.
fn step(
    chain_len: usize,
    informative: impl Fn(usize) -> bool,
    carries: impl Fn(usize) -> bool,
) -> (Option<usize>, Option<usize>) {
    let last_clear = (0..chain_len)
        .rev()
        .find(|i| informative(*i) && !carries(*i));
    let from = last_clear.map_or(0, |m| m + 1);
    let start = (from..chain_len).find(|i| informative(*i));
    (last_clear, start)
}

fn fmt_pct(pct: f64) -> String {
    if pct >= 10.0 || pct == pct.round() {
        format!("{pct:.0}%")
    } else {
        format!("{pct:.1}%")
    }
}

fn fmt_ms(ns: u64) -> String {
    format!("{:.1} ms", ns as f64 / 1e6)
}

fn fmt_hop(ttl: u8, responder: Option<IpAddr>) -> String {
    match responder {
        Some(addr) => format!("hop {ttl} ({addr})"),
        None => format!("hop {ttl} (no reply)"),
    }
}

/// The loss localisation, when the destination loses enough to be degraded.
/// `flags` are the rate-limit flags of `intermediate`.
pub(crate) fn localise_loss(
    intermediate: &[HopView],
    flags: &[bool],
    destination: &HopView,
) -> Option<Localisation> {
    let dest_loss = destination.loss_pct();
    if !destination.enough_probes() || dest_loss < DEST_LOSS_DEGRADED_PCT {
        return None;
    }
    let chain: Vec<&HopView> = intermediate.iter().chain([destination]).collect();
    let last = chain.len() - 1;
    let informative = |i: usize| {
        let hop = chain[i];
        hop.enough_probes() && hop.received > 0 && !flags.get(i).copied().unwrap_or(false)
    };
    let carries = |i: usize| chain[i].loss_pct() >= LOSS_CARRY_FACTOR * dest_loss;
    let (last_clear, start) = step(chain.len(), informative, carries);
    let previous = last_clear.map(|m| chain[m]);

    let (ttl, responder, hop_loss_pct, mut summary) = match start {
        Some(s) => {
            let hop = chain[s];
            let mut text = if s == last {
                format!(
                    "loss starts at the destination, {}: {}",
                    fmt_hop(hop.ttl, hop.responder),
                    fmt_pct(dest_loss)
                )
            } else {
                format!(
                    "loss starts at {}: {} there and at every hop after it",
                    fmt_hop(hop.ttl, hop.responder),
                    fmt_pct(hop.loss_pct())
                )
            };
            if s != last {
                let _ = write!(text, ", {} at the destination", fmt_pct(dest_loss));
            }
            (hop.ttl, hop.responder, Some(hop.loss_pct()), text)
        }
        None => {
            // Nothing answers after the last clear hop: the path breaks right after it.
            let next = last_clear.map_or(0, |m| m + 1);
            let ttl = chain
                .get(next)
                .map_or_else(|| destination.ttl, |h| h.ttl)
                .max(previous.map_or(1, |p| p.ttl.saturating_add(1)));
            let hop = chain.iter().find(|h| h.ttl == ttl);
            let text = format!(
                "no replies from hop {ttl} onwards, {} at the destination",
                fmt_pct(dest_loss)
            );
            (
                ttl,
                hop.and_then(|h| h.responder),
                hop.filter(|h| h.sent > 0).map(|h| h.loss_pct()),
                text,
            )
        }
    };
    if let Some(p) = previous {
        let _ = write!(
            summary,
            "; {} before it at {}",
            fmt_pct(p.loss_pct()),
            fmt_hop(p.ttl, p.responder)
        );
    }
    Some(Localisation {
        kind: DegradationKind::Loss,
        ttl,
        responder,
        evidence: Evidence::Loss {
            hop_loss_pct,
            previous_ttl: previous.map(|p| p.ttl),
            previous_loss_pct: previous.map(|p| p.loss_pct()),
            destination_loss_pct: dest_loss,
        },
        summary,
    })
}

/// The latency localisation, when the destination's p50 has risen enough above
/// its baseline to be degraded.
pub(crate) fn localise_latency(
    intermediate: &[HopView],
    destination: &HopView,
) -> Option<Localisation> {
    let dest_rise = destination.rise_ns()?;
    let dest_baseline = destination.baseline_ns?;
    let dest_p50 = destination.p50_ns?;
    if dest_rise < LATENCY_STEP_MIN_NS
        || (dest_rise as f64) < LATENCY_STEP_MIN_RATIO * dest_baseline as f64
    {
        return None;
    }
    let chain: Vec<&HopView> = intermediate.iter().chain([destination]).collect();
    let last = chain.len() - 1;
    let informative = |i: usize| chain[i].rise_ns().is_some();
    let carries = |i: usize| {
        chain[i]
            .rise_ns()
            .is_some_and(|r| r as f64 >= LATENCY_CARRY_FACTOR * dest_rise as f64)
    };
    // The destination is informative and carries its own rise, so a start exists.
    let (last_clear, start) = step(chain.len(), informative, carries);
    let start = start?;
    let hop = chain[start];
    let hop_rise = hop.rise_ns()?;
    let previous = last_clear.map(|m| chain[m]);
    let mut summary = if start == last {
        format!(
            "latency rises at the destination, {}: +{} over its best",
            fmt_hop(hop.ttl, hop.responder),
            fmt_ms(hop_rise)
        )
    } else {
        format!(
            "latency rises at {}: +{} over its best there and at every hop after it, +{} at the destination",
            fmt_hop(hop.ttl, hop.responder),
            fmt_ms(hop_rise),
            fmt_ms(dest_rise)
        )
    };
    let _ = write!(
        summary,
        " (p50 {}, best {})",
        fmt_ms(dest_p50),
        fmt_ms(dest_baseline)
    );
    if let Some(p) = previous {
        let _ = write!(
            summary,
            "; +{} before it at {}",
            fmt_ms(p.rise_ns().unwrap_or(0)),
            fmt_hop(p.ttl, p.responder)
        );
    }
    Some(Localisation {
        kind: DegradationKind::Latency,
        ttl: hop.ttl,
        responder: hop.responder,
        evidence: Evidence::Latency {
            hop_rise_ns: hop_rise,
            previous_ttl: previous.map(|p| p.ttl),
            previous_rise_ns: previous.and_then(|p| p.rise_ns()),
            destination_rise_ns: dest_rise,
            destination_p50_ns: dest_p50,
            destination_baseline_ns: dest_baseline,
        },
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const MS: u64 = 1_000_000;

    fn addr(ttl: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(198, 18, ttl - 1, 2)))
    }

    /// A hop with `lost` of 100 probes lost, p50 and baseline in ms.
    fn hop(ttl: u8, lost: u64, p50_ms: u64, best_ms: u64) -> HopView {
        HopView {
            ttl,
            responder: addr(ttl),
            sent: 100,
            received: 100 - lost,
            p50_ns: (lost < 100).then_some(p50_ms * MS),
            baseline_ns: (lost < 100).then_some(best_ms * MS),
        }
    }

    fn split(hops: &[HopView]) -> (&[HopView], &HopView) {
        let (dest, inter) = hops.split_last().unwrap();
        (inter, dest)
    }

    #[test]
    fn rate_limited_hop_is_flagged_and_raises_no_loss_finding() {
        let hops = [
            hop(1, 0, 1, 1),
            hop(2, 40, 2, 2),
            hop(3, 1, 3, 3),
            hop(4, 0, 4, 4),
        ];
        let (inter, dest) = split(&hops);
        let flags = rate_limited(inter, dest);
        assert_eq!(flags, vec![false, true, false]);
        assert_eq!(localise_loss(inter, &flags, dest), None);
    }

    #[test]
    fn a_silent_hop_is_flagged_too() {
        let hops = [hop(1, 0, 1, 1), hop(2, 100, 0, 0), hop(3, 0, 3, 3)];
        let (inter, dest) = split(&hops);
        assert_eq!(rate_limited(inter, dest), vec![false, true]);
    }

    #[test]
    fn loss_that_carries_through_is_not_rate_limiting() {
        // Hop 2 loses 30%, and so does everything after it: forwarding loss.
        let hops = [
            hop(1, 0, 1, 1),
            hop(2, 30, 2, 2),
            hop(3, 28, 3, 3),
            hop(4, 31, 4, 4),
        ];
        let (inter, dest) = split(&hops);
        let flags = rate_limited(inter, dest);
        assert_eq!(flags, vec![false, false, false]);
        let found = localise_loss(inter, &flags, dest).unwrap();
        assert_eq!(found.kind, DegradationKind::Loss);
        assert_eq!(found.ttl, 2);
        assert_eq!(found.responder, addr(2));
        assert_eq!(
            found.summary,
            "loss starts at hop 2 (198.18.1.2): 30% there and at every hop after it, \
             31% at the destination; 0% before it at hop 1 (198.18.0.2)"
        );
        match found.evidence {
            Evidence::Loss {
                hop_loss_pct,
                previous_ttl,
                destination_loss_pct,
                ..
            } => {
                assert_eq!(hop_loss_pct, Some(30.0));
                assert_eq!(previous_ttl, Some(1));
                assert_eq!(destination_loss_pct, 31.0);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn loss_start_skips_a_rate_limited_hop_before_it() {
        // Hop 2 rate limits (60%); real loss of 20% starts at hop 3.
        let hops = [
            hop(1, 0, 1, 1),
            hop(2, 60, 2, 2),
            hop(3, 20, 3, 3),
            hop(4, 21, 4, 4),
        ];
        let (inter, dest) = split(&hops);
        let flags = rate_limited(inter, dest);
        assert_eq!(flags, vec![false, true, false]);
        assert_eq!(localise_loss(inter, &flags, dest).unwrap().ttl, 3);
    }

    #[test]
    fn loss_must_persist_to_the_destination() {
        // Hop 2 carries some loss, hop 3 does not: the loss starts at hop 4.
        let hops = [
            hop(1, 0, 1, 1),
            hop(2, 12, 2, 2),
            hop(3, 1, 3, 3),
            hop(4, 10, 4, 4),
            hop(5, 11, 5, 5),
        ];
        let (inter, dest) = split(&hops);
        let flags = rate_limited(inter, dest);
        assert_eq!(localise_loss(inter, &flags, dest).unwrap().ttl, 4);
    }

    #[test]
    fn loss_at_the_destination_only() {
        let hops = [hop(1, 0, 1, 1), hop(2, 0, 2, 2), hop(3, 20, 3, 3)];
        let (inter, dest) = split(&hops);
        let found = localise_loss(inter, &rate_limited(inter, dest), dest).unwrap();
        assert_eq!(found.ttl, 3);
        assert!(
            found
                .summary
                .starts_with("loss starts at the destination, hop 3"),
            "{}",
            found.summary
        );
    }

    #[test]
    fn unreachable_destination_names_the_first_silent_hop() {
        let mut hops = [
            hop(1, 0, 1, 1),
            hop(2, 0, 2, 2),
            hop(3, 100, 0, 0),
            hop(4, 100, 0, 0),
        ];
        hops[2].responder = None;
        hops[3].responder = None;
        let (inter, dest) = split(&hops);
        let flags = rate_limited(inter, dest);
        let found = localise_loss(inter, &flags, dest).unwrap();
        assert_eq!(found.ttl, 3);
        assert_eq!(found.responder, None);
        assert_eq!(
            found.summary,
            "no replies from hop 3 onwards, 100% at the destination; 0% before it at hop 2 (198.18.1.2)"
        );
    }

    #[test]
    fn small_or_thin_loss_is_not_a_finding() {
        let hops = [hop(1, 0, 1, 1), hop(2, 2, 2, 2)];
        let (inter, dest) = split(&hops);
        assert_eq!(localise_loss(inter, &[false], dest), None);
        let mut thin = hop(2, 5, 2, 2);
        thin.sent = 9;
        assert_eq!(localise_loss(inter, &[false], &thin), None);
    }

    #[test]
    fn latency_step_is_attributed_to_its_first_hop() {
        // +50 ms from hop 3 on. Hop 1 answers slowly on its own (+30 ms) but hop 2
        // after it does not, so hop 1 is not where the rise starts.
        let hops = [
            hop(1, 0, 31, 1), // slow ICMP at hop 1 only
            hop(2, 0, 2, 2),
            hop(3, 0, 53, 3),
            hop(4, 0, 54, 4),
            hop(5, 0, 55, 5),
        ];
        let (inter, dest) = split(&hops);
        let found = localise_latency(inter, dest).unwrap();
        assert_eq!(found.kind, DegradationKind::Latency);
        assert_eq!(found.ttl, 3);
        assert_eq!(found.responder, addr(3));
        assert!(
            found
                .summary
                .starts_with("latency rises at hop 3 (198.18.2.2): +50.0 ms over its best"),
            "{}",
            found.summary
        );
        match found.evidence {
            Evidence::Latency {
                hop_rise_ns,
                previous_ttl,
                destination_rise_ns,
                ..
            } => {
                assert_eq!(hop_rise_ns, 50 * MS);
                assert_eq!(previous_ttl, Some(2));
                assert_eq!(destination_rise_ns, 50 * MS);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn small_latency_rises_are_not_findings() {
        // +8 ms: under the absolute step.
        let hops = [hop(1, 0, 1, 1), hop(2, 0, 10, 2)];
        let (inter, dest) = split(&hops);
        assert_eq!(localise_latency(inter, dest), None);
        // +20 ms on a 100 ms path: under the relative step.
        let hops = [hop(1, 0, 1, 1), hop(2, 0, 120, 100)];
        let (inter, dest) = split(&hops);
        assert_eq!(localise_latency(inter, dest), None);
        // +30 ms on a 100 ms path is one.
        let hops = [hop(1, 0, 1, 1), hop(2, 0, 130, 100)];
        let (inter, dest) = split(&hops);
        assert_eq!(localise_latency(inter, dest).unwrap().ttl, 2);
    }
}
