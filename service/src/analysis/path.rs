//! Route tracking for one target: the current path (the responders known per TTL,
//! the dominant one of each, and the hop count) and route or hop-count changes,
//! confirmed with hysteresis.
//!
//! # Rules
//! - A timeout is never a different responder: it neither confirms nor changes
//!   the path. A TTL that has never answered is filled in by its first answer.
//! - A round *diverges* when some TTL answers from an address not known there, an
//!   answer comes from beyond the known destination, or the destination answers at
//!   another TTL. Diverging rounds build a pending path; it replaces the current one
//!   after [`AnalysisConfig::confirm_rounds`](super::AnalysisConfig::confirm_rounds)
//!   diverging rounds that agree with it (share its new responders, or contradict
//!   none of them). A round that answers with the known responder at a TTL where the
//!   pending path differs cancels it; rounds that say nothing about those TTLs
//!   (timeouts) neither count nor cancel.
//! - ECMP: a new responder whose pending path was cancelled by the known one
//!   [`ALTERNATIONS_TO_LEARN`] times within [`ALTERNATE_MEMORY_ROUNDS`] rounds is an
//!   alternating next hop. The next time it answers it joins the hop's known set
//!   (at most [`MAX_RESPONDERS_PER_HOP`]), so the hop becomes a multi-responder hop
//!   and its alternation is never a route change. A new responder that instead holds
//!   for the confirmation rounds is a route change.
//! - A committed change emits [`PathEvent::RouteChanged`] when the dominant responder
//!   sequence differs, and [`PathEvent::HopCountChanged`] when the destination's TTL
//!   does; `at_ms` is the start of the first round that showed the new path.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::path_facts::{HopLabels, MiddleboxFact};
use super::responders::MAX_RESPONDERS_PER_HOP;
use super::ttl_set::TtlSet;
use crate::model::{BranchIndex, RoundRecord};
use crate::probe::Ttl;

/// Cancelled appearances of a new responder before it is taken as an ECMP member.
pub const ALTERNATIONS_TO_LEARN: u8 = 2;
/// How long an alternating responder's history is remembered, in rounds.
pub const ALTERNATE_MEMORY_ROUNDS: u64 = 64;
/// Candidate alternates remembered per hop.
const MAX_ALTERNATES: usize = 4;
/// Responder counts are halved when one reaches this, so the dominant responder
/// of an ECMP hop follows the recent split rather than all history.
const COUNT_DECAY_AT: u32 = 64;

/// A route or hop-count change of one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PathEvent {
    RouteChanged {
        /// Start of the first round that showed the new path, Unix milliseconds.
        at_ms: u64,
        /// Dominant responder per TTL (index 0 is TTL 1), `None` where none answered.
        before: Vec<Option<IpAddr>>,
        after: Vec<Option<IpAddr>>,
        first_changed_ttl: u8,
        /// Set when the change is one of a multipath target's branches
        /// (its kept flow took another path than the one discovery found),
        /// not of the target's own flow; absent otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<BranchIndex>,
    },
    HopCountChanged {
        at_ms: u64,
        before: u8,
        after: u8,
    },
    /// The way back changed while the forward path did not: the routers each
    /// responder's replies cross (see [`super::return_path`]).
    ReturnPathChanged {
        at_ms: u64,
        /// Return-path length per TTL (index 0 is TTL 1), `None` where unknown.
        before: Vec<Option<u8>>,
        after: Vec<Option<u8>>,
        first_changed_ttl: u8,
    },
    /// The header rewrites the quotes show changed: a middlebox appeared,
    /// went, or moved (see [`super::path_facts`]).
    MiddleboxChanged {
        at_ms: u64,
        before: Vec<MiddleboxFact>,
        after: Vec<MiddleboxFact>,
    },
    /// The MPLS label stacks routers report changed.
    MplsChanged {
        at_ms: u64,
        before: Vec<HopLabels>,
        after: Vec<HopLabels>,
    },
}

impl PathEvent {
    /// The event's kind as stored and served (`route_changed`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            PathEvent::RouteChanged { .. } => "route_changed",
            PathEvent::HopCountChanged { .. } => "hop_count_changed",
            PathEvent::ReturnPathChanged { .. } => "return_path_changed",
            PathEvent::MiddleboxChanged { .. } => "middlebox_changed",
            PathEvent::MplsChanged { .. } => "mpls_changed",
        }
    }

    /// Start of the first round that showed the change, Unix milliseconds.
    pub fn at_ms(&self) -> u64 {
        match self {
            PathEvent::RouteChanged { at_ms, .. }
            | PathEvent::HopCountChanged { at_ms, .. }
            | PathEvent::ReturnPathChanged { at_ms, .. }
            | PathEvent::MiddleboxChanged { at_ms, .. }
            | PathEvent::MplsChanged { at_ms, .. } => *at_ms,
        }
    }
}

/// One TTL of the current path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathHopSnapshot {
    pub ttl: u8,
    /// The dominant responder, `None` when this TTL has never answered.
    pub responder: Option<IpAddr>,
    /// Every responder known at this TTL (more than one: a multi-responder hop),
    /// dominant first.
    pub responders: Vec<IpAddr>,
}

/// The current path of a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathSnapshot {
    /// The destination's TTL, `None` until it has answered.
    pub hop_count: Option<u8>,
    pub hops: Vec<PathHopSnapshot>,
    /// Diverging rounds seen so far towards a not yet confirmed change.
    pub pending_change_rounds: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    address: IpAddr,
    count: u32,
}

/// Responders seen at one TTL with how often, at most
/// [`MAX_RESPONDERS_PER_HOP`]. Grown one at a time: most TTLs have one
/// responder, and inline room for eight cost 200 bytes a TTL.
#[derive(Debug, Clone, Default)]
struct SeenSet(Vec<Seen>);

impl SeenSet {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn contains(&self, address: IpAddr) -> bool {
        self.0.iter().any(|s| s.address == address)
    }

    fn add(&mut self, address: IpAddr) {
        if let Some(seen) = self.0.iter_mut().find(|s| s.address == address) {
            seen.count += 1;
            if seen.count >= COUNT_DECAY_AT {
                for s in self.0.iter_mut() {
                    s.count = s.count.div_ceil(2);
                }
            }
            return;
        }
        let fresh = Seen { address, count: 1 };
        if self.0.len() < MAX_RESPONDERS_PER_HOP {
            self.0.reserve_exact(1);
            self.0.push(fresh);
        } else if let Some(least) = self.0.iter_mut().min_by_key(|s| s.count) {
            // Full: the least seen responder makes room, so the set stays bounded.
            *least = fresh;
        }
    }

    /// Most seen; the first seen wins ties, so a 50/50 hop does not flip-flop.
    fn dominant(&self) -> Option<IpAddr> {
        self.0
            .iter()
            .rev()
            .max_by_key(|s| s.count)
            .map(|s| s.address)
    }

    fn is_subset_of(&self, other: &SeenSet) -> bool {
        self.0.iter().all(|s| other.contains(s.address))
    }

    fn by_count(&self) -> Vec<IpAddr> {
        let mut seen: Vec<Seen> = self.0.to_vec();
        seen.sort_by_key(|s| std::cmp::Reverse(s.count));
        seen.into_iter().map(|s| s.address).collect()
    }
}

#[derive(Debug, Clone, Copy)]
struct Alternate {
    address: IpAddr,
    alternations: u8,
    last_round: u64,
}

#[derive(Debug, Clone, Default)]
struct Hop {
    known: SeenSet,
    /// At most [`MAX_ALTERNATES`]; empty on most TTLs.
    alternates: Vec<Alternate>,
}

impl Hop {
    fn forget_old_alternates(&mut self, round: u64) {
        self.alternates
            .retain(|a| round.saturating_sub(a.last_round) <= ALTERNATE_MEMORY_ROUNDS);
    }

    /// Whether `address` has alternated with the known responders often enough to
    /// be one of them; it is then removed from the candidates.
    fn take_learned_alternate(&mut self, address: IpAddr, round: u64) -> bool {
        self.forget_old_alternates(round);
        match self.alternates.iter().position(|a| a.address == address) {
            Some(i) if self.alternates[i].alternations >= ALTERNATIONS_TO_LEARN => {
                self.alternates.swap_remove(i);
                true
            }
            _ => false,
        }
    }

    /// `address` appeared and the known responder came back right after.
    fn note_alternation(&mut self, address: IpAddr, round: u64) {
        self.forget_old_alternates(round);
        if let Some(a) = self.alternates.iter_mut().find(|a| a.address == address) {
            a.alternations = a.alternations.saturating_add(1);
            a.last_round = round;
            return;
        }
        let fresh = Alternate {
            address,
            alternations: 1,
            last_round: round,
        };
        if self.alternates.len() < MAX_ALTERNATES {
            self.alternates.reserve_exact(1);
            self.alternates.push(fresh);
        } else if let Some(oldest) = self.alternates.iter_mut().min_by_key(|a| a.last_round) {
            *oldest = fresh;
        }
    }
}

/// A path seen in diverging rounds, not yet confirmed.
#[derive(Debug, Clone)]
struct Pending {
    first_at_ms: u64,
    rounds: u32,
    /// Every responder its rounds saw, per TTL (index 0 is TTL 1).
    hops: Vec<SeenSet>,
    hop_count: Option<u8>,
    /// TTLs where its rounds had responders the current path does not know.
    diverged: TtlSet,
    hop_count_diverged: bool,
}

impl Pending {
    fn seen(&self, ttl: u8) -> Option<&SeenSet> {
        self.hops
            .get(usize::from(ttl) - 1)
            .filter(|s| !s.is_empty())
    }

    fn add(&mut self, ttl: u8, address: IpAddr) {
        let i = usize::from(ttl) - 1;
        if i >= self.hops.len() {
            self.hops.reserve_exact(i + 1 - self.hops.len());
            self.hops.resize_with(i + 1, SeenSet::default);
        }
        self.hops[i].add(address);
    }
}

/// What one round says about the path: its answered (TTL, responder) pairs up to
/// the destination, and the destination's TTL.
struct Observation<'a> {
    round: &'a RoundRecord,
    reached: Option<u8>,
    /// Answers from this TTL on are left out (see [`Observation::new`]).
    answers_below: Option<u8>,
}

/// Whether `round`'s destination TTL may be one too high: its lowest
/// answering TTL `d` is evidence of the hop count only when TTL `d - 1` was
/// answered by a router; when the probe at `d - 1` was lost, that loss may
/// have been the destination's own reply, so under loss the destination
/// seems one hop further away.
pub(super) fn hop_count_is_ambiguous(round: &RoundRecord) -> bool {
    round.destination_ttl.map(Ttl::get).is_some_and(|d| {
        round
            .hops
            .iter()
            .any(|h| h.ttl.get() == d - 1 && (h.is_lost() || h.reached()))
    })
}

impl<'a> Observation<'a> {
    /// See [`hop_count_is_ambiguous`]: such a round says nothing about the
    /// hop count, nor about TTLs from the destination's on.
    fn new(round: &'a RoundRecord) -> Observation<'a> {
        let reached = round.destination_ttl.map(Ttl::get);
        let ambiguous = hop_count_is_ambiguous(round);
        if ambiguous {
            Observation {
                round,
                reached: None,
                answers_below: reached,
            }
        } else {
            Observation {
                round,
                reached,
                answers_below: None,
            }
        }
    }

    fn answers(&self) -> impl Iterator<Item = (u8, IpAddr)> + '_ {
        self.round
            .hops
            .iter()
            .filter(|h| self.reached.is_none_or(|d| h.ttl.get() <= d))
            .filter(|h| self.answers_below.is_none_or(|d| h.ttl.get() < d))
            .filter_map(|h| Some((h.ttl.get(), h.responder()?)))
    }
}

/// Path and route-change tracking for one target.
///
/// Memory: ~75 B per TTL (48 B of two vectors, 24 B per responder seen and
/// 32 B per alternate on the heap), plus a pending path of about as much per
/// TTL only while a change is being confirmed.
#[derive(Debug, Clone)]
pub struct PathTracker {
    confirm_rounds: u32,
    /// Index 0 is TTL 1. When `hop_count` is known, exactly that many entries.
    hops: Vec<Hop>,
    hop_count: Option<u8>,
    /// The hop count before a confirmed change whose rounds never reached
    /// the destination, and when that change began: the count change is told
    /// once a round reaches it. (Rounds after a path gets longer stop at the
    /// old destination's TTL, where a router now answers, until the
    /// scheduler probes deeper; a change can be confirmed on those alone.)
    hop_count_before_change: Option<(u8, u64)>,
    pending: Option<Pending>,
    round: u64,
}

impl PathTracker {
    /// A tracker confirming changes after `confirm_rounds` rounds (at least 1).
    pub fn new(confirm_rounds: u32) -> PathTracker {
        PathTracker {
            confirm_rounds: confirm_rounds.max(1),
            hops: Vec::new(),
            hop_count: None,
            hop_count_before_change: None,
            pending: None,
            round: 0,
        }
    }

    /// Diverging rounds seen so far towards a change not yet confirmed.
    pub fn pending_change_rounds(&self) -> u32 {
        self.pending.as_ref().map_or(0, |p| p.rounds)
    }

    /// The destination's TTL on the current path.
    pub fn hop_count(&self) -> Option<u8> {
        self.hop_count
    }

    /// The dominant responder per TTL of the current path (index 0 is TTL 1).
    pub fn current(&self) -> Vec<Option<IpAddr>> {
        self.hops.iter().map(|h| h.known.dominant()).collect()
    }

    /// Every responder known at `ttl`, dominant first.
    pub fn responders(&self, ttl: u8) -> Vec<IpAddr> {
        usize::from(ttl)
            .checked_sub(1)
            .and_then(|i| self.hops.get(i))
            .map_or_else(Vec::new, |h| h.known.by_count())
    }

    /// Approximate bytes this tracker occupies, heap included.
    pub fn approx_memory_bytes(&self) -> usize {
        let seen = |s: &SeenSet| s.0.capacity() * std::mem::size_of::<Seen>();
        std::mem::size_of::<PathTracker>()
            + self.hops.capacity() * std::mem::size_of::<Hop>()
            + self
                .hops
                .iter()
                .map(|h| {
                    seen(&h.known) + h.alternates.capacity() * std::mem::size_of::<Alternate>()
                })
                .sum::<usize>()
            + self.pending.as_ref().map_or(0, |p| {
                p.hops.capacity() * std::mem::size_of::<SeenSet>()
                    + p.hops.iter().map(seen).sum::<usize>()
            })
    }

    pub fn snapshot(&self) -> PathSnapshot {
        PathSnapshot {
            hop_count: self.hop_count,
            hops: self
                .hops
                .iter()
                .enumerate()
                .map(|(i, h)| PathHopSnapshot {
                    ttl: (i + 1) as u8,
                    responder: h.known.dominant(),
                    responders: h.known.by_count(),
                })
                .collect(),
            pending_change_rounds: self.pending.as_ref().map_or(0, |p| p.rounds),
        }
    }

    /// Takes in one round and returns the changes it confirms, if any.
    pub fn observe(&mut self, round: &RoundRecord) -> Vec<PathEvent> {
        self.round += 1;
        let obs = Observation::new(round);

        let mut new_ttls = TtlSet::default();
        for (ttl, address) in obs.answers() {
            match self.hops.get_mut(usize::from(ttl) - 1) {
                Some(hop) if !hop.known.is_empty() => {
                    if hop.known.contains(address) {
                        continue;
                    }
                    if hop.take_learned_alternate(address, self.round) {
                        hop.known.add(address);
                    } else {
                        new_ttls.insert(ttl);
                    }
                }
                // A TTL that never answered: its first answer fills it in.
                Some(_) => {}
                // Beyond the known destination the path must have changed; beyond
                // the last answer of a path whose end is unknown, it is just longer.
                None if self.hop_count.is_some() => new_ttls.insert(ttl),
                None => {}
            }
        }
        let hop_count_diverged =
            matches!((obs.reached, self.hop_count), (Some(x), Some(d)) if x != d);

        if new_ttls.is_empty() && !hop_count_diverged {
            return self.confirm_current(&obs).into_iter().collect();
        }

        let consistent = self
            .pending
            .as_ref()
            .is_some_and(|p| Self::agrees(p, &obs, &new_ttls, hop_count_diverged));
        let pending = match (self.pending.as_mut(), consistent) {
            (Some(p), true) => {
                p.rounds += 1;
                p
            }
            _ => self.pending.insert(Pending {
                first_at_ms: round.started_at_ms,
                rounds: 1,
                hops: Vec::new(),
                hop_count: None,
                diverged: TtlSet::default(),
                hop_count_diverged: false,
            }),
        };
        for (ttl, address) in obs.answers() {
            pending.add(ttl, address);
        }
        pending.diverged.union(&new_ttls);
        pending.hop_count = pending.hop_count.or(obs.reached);
        pending.hop_count_diverged |= hop_count_diverged;

        if pending.rounds >= self.confirm_rounds {
            let pending = self.pending.take().expect("pending path was just updated");
            return self.commit(pending);
        }
        Vec::new()
    }

    /// A round that fits the current path: count its responders, fill in unknown
    /// TTLs, and cancel a pending change if the round shows the old path where the
    /// pending one differs.
    /// Returns the hop-count change a confirmed route change left open, once
    /// this round tells it.
    fn confirm_current(&mut self, obs: &Observation<'_>) -> Option<PathEvent> {
        for (ttl, address) in obs.answers() {
            let i = usize::from(ttl) - 1;
            if i >= self.hops.len() {
                // Exactly: a path's TTLs arrive one by one, and doubling
                // would leave room for up to twice as many.
                self.hops.reserve_exact(i + 1 - self.hops.len());
                self.hops.resize_with(i + 1, Hop::default);
            }
            self.hops[i].known.add(address);
        }
        let mut told = None;
        if let (None, Some(reached)) = (self.hop_count, obs.reached) {
            self.hop_count = Some(reached);
            self.hops.resize_with(usize::from(reached), Hop::default);
            told = self
                .hop_count_before_change
                .take()
                .filter(|&(before, _)| before != reached)
                .map(|(before, at_ms)| PathEvent::HopCountChanged {
                    at_ms,
                    before,
                    after: reached,
                });
        }
        let cancels = self.pending.as_ref().is_some_and(|p| {
            obs.answers().any(|(ttl, _)| p.diverged.contains(ttl))
                || (p.hop_count_diverged && obs.reached.is_some())
        });
        if !cancels {
            return told;
        }
        let Some(pending) = self.pending.take() else {
            return told;
        };
        // The new responders came and went: remember them as possible ECMP members.
        for ttl in pending.diverged.iter() {
            let (Some(seen), Some(hop)) =
                (pending.seen(ttl), self.hops.get_mut(usize::from(ttl) - 1))
            else {
                continue;
            };
            for s in seen.0.iter() {
                if !hop.known.contains(s.address) {
                    hop.note_alternation(s.address, self.round);
                }
            }
        }
        told
    }

    /// Whether a diverging round supports the pending path rather than starting
    /// another: same destination TTL when both are known, and it shares one of the
    /// pending path's new responders or contradicts none of them.
    fn agrees(
        p: &Pending,
        obs: &Observation<'_>,
        new_ttls: &TtlSet,
        hop_count_diverged: bool,
    ) -> bool {
        if let (Some(x), Some(px)) = (obs.reached, p.hop_count) {
            if x != px {
                return false;
            }
        }
        let mut shared = hop_count_diverged && obs.reached.is_some() && obs.reached == p.hop_count;
        let mut contradicted = false;
        for (ttl, address) in obs.answers() {
            if new_ttls.contains(ttl) {
                if let Some(seen) = p.seen(ttl) {
                    if seen.contains(address) {
                        shared = true;
                    } else {
                        contradicted = true;
                    }
                }
            } else if p.diverged.contains(ttl) {
                // The old responder where the pending path has a new one.
                contradicted = true;
            }
        }
        shared || !contradicted
    }

    fn commit(&mut self, pending: Pending) -> Vec<PathEvent> {
        let before = self.current();
        let old_hop_count = self
            .hop_count
            .or(self.hop_count_before_change.map(|(before, _)| before));
        let change_at_ms = self
            .hop_count_before_change
            .take()
            .map_or(pending.first_at_ms, |(_, at_ms)| at_ms);
        let first_diverged = pending.diverged.min();
        let new_len = match pending.hop_count {
            Some(d) => usize::from(d),
            None => pending
                .hops
                .iter()
                .rposition(|s| !s.is_empty())
                .map_or(0, |i| i + 1),
        };
        let old = std::mem::take(&mut self.hops);
        self.hops = (0..new_len)
            .map(|i| {
                let ttl = (i + 1) as u8;
                let seen = pending.hops.get(i).cloned().unwrap_or_default();
                // A TTL the change did not touch keeps what is known about it (an
                // ECMP hop keeps all its members even if the new rounds saw one).
                let untouched = !pending.diverged.contains(ttl)
                    && old.get(i).is_some_and(|h| !h.known.is_empty())
                    && seen.is_subset_of(&old[i].known)
                    && (!seen.is_empty() || first_diverged.is_some_and(|f| ttl < f));
                Hop {
                    known: if untouched {
                        old[i].known.clone()
                    } else {
                        seen
                    },
                    alternates: Vec::new(),
                }
            })
            .collect();
        self.hop_count = pending.hop_count;

        let after = self.current();
        let mut events = Vec::new();
        let longest = before.len().max(after.len());
        if let Some(i) = (0..longest).find(|i| before.get(*i) != after.get(*i)) {
            events.push(PathEvent::RouteChanged {
                at_ms: pending.first_at_ms,
                before,
                after,
                first_changed_ttl: (i + 1) as u8,
                branch: None,
            });
        }
        match (old_hop_count, self.hop_count) {
            (Some(before), Some(after)) if before != after => {
                events.push(PathEvent::HopCountChanged {
                    at_ms: change_at_ms,
                    before,
                    after,
                });
            }
            (Some(before), None) => self.hop_count_before_change = Some((before, change_at_ms)),
            _ => {}
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HopSample, TargetId};
    use crate::probe::TimestampSource;
    use std::net::Ipv4Addr;

    fn ip(a: u8, b: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, a, b))
    }

    const DST: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1));

    /// A round through `path` (one entry per TTL before the destination, `None`
    /// for a timeout), ending at the destination when `reached`.
    fn round(seq: u64, path: &[Option<IpAddr>], reached: bool) -> RoundRecord {
        let mut hops: Vec<HopSample> = path
            .iter()
            .enumerate()
            .map(|(i, r)| match r {
                Some(router) => {
                    HopSample::answered_or_lost((i + 1) as u8, *router, Some(1_000_000), false)
                }
                None => HopSample::lost(Ttl::new((i + 1) as u8).unwrap()),
            })
            .collect();
        let dest_ttl = (path.len() + 1) as u8;
        hops.push(HopSample::answered_or_lost(
            dest_ttl,
            DST,
            reached.then_some(2_000_000),
            true,
        ));
        RoundRecord {
            target: TargetId::new("t").unwrap(),
            seq,
            started_at_ms: 1_000 * seq,
            hops,
            destination_ttl: reached.then(|| Ttl::new(dest_ttl).unwrap()),
            source: TimestampSource::Ebpf,
        }
    }

    fn full(path: &[IpAddr]) -> Vec<Option<IpAddr>> {
        path.iter().copied().map(Some).collect()
    }

    fn with_dst(path: &[IpAddr]) -> Vec<Option<IpAddr>> {
        let mut v = full(path);
        v.push(Some(DST));
        v
    }

    /// Feeds rounds, returning every event with the seq of the round that emitted it.
    fn feed(t: &mut PathTracker, rounds: &[RoundRecord]) -> Vec<(u64, PathEvent)> {
        rounds
            .iter()
            .flat_map(|r| t.observe(r).into_iter().map(move |e| (r.seq, e)))
            .collect()
    }

    #[test]
    fn first_rounds_establish_the_path_without_events() {
        let old = [ip(0, 2), ip(1, 2), ip(2, 2)];
        let mut t = PathTracker::new(3);
        // The first round misses TTL 2; the second fills it in.
        let mut gappy = full(&old);
        gappy[1] = None;
        let events = feed(
            &mut t,
            &[round(1, &gappy, true), round(2, &full(&old), true)],
        );
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(t.current(), with_dst(&old));
        assert_eq!(t.hop_count(), Some(4));
    }

    #[test]
    fn a_longer_path_confirmed_before_reaching_the_destination_still_tells_the_hop_count() {
        // Rounds after the change stop at the old destination's TTL, where a
        // router now answers; the destination shows up a TTL deeper later.
        let old = [ip(0, 2), ip(1, 2)];
        let longer = [ip(0, 2), ip(1, 2), ip(7, 2)];
        let mut t = PathTracker::new(3);
        let mut rounds: Vec<RoundRecord> = (1..=5).map(|s| round(s, &full(&old), true)).collect();
        rounds.extend((6..=8).map(|s| round(s, &full(&longer), false)));
        rounds.extend((9..=10).map(|s| round(s, &full(&longer), true)));
        let events = feed(&mut t, &rounds);
        let hop_counts: Vec<_> = events
            .iter()
            .filter(|(_, e)| matches!(e, PathEvent::HopCountChanged { .. }))
            .collect();
        assert_eq!(
            hop_counts,
            vec![&(
                9,
                PathEvent::HopCountChanged {
                    at_ms: 6_000,
                    before: 3,
                    after: 4,
                }
            )],
            "{events:?}"
        );
        assert!(
            events
                .iter()
                .any(|(seq, e)| *seq == 8 && matches!(e, PathEvent::RouteChanged { .. })),
            "{events:?}"
        );
        assert_eq!(t.hop_count(), Some(4));
    }

    #[test]
    fn route_change_is_confirmed_after_k_rounds_with_before_and_after() {
        let old = [ip(0, 2), ip(1, 2), ip(2, 2)];
        let new = [ip(0, 2), ip(5, 2), ip(6, 2)];
        let mut t = PathTracker::new(3);
        let mut rounds: Vec<RoundRecord> = (1..=5).map(|s| round(s, &full(&old), true)).collect();
        rounds.extend((6..=10).map(|s| round(s, &full(&new), true)));
        let events = feed(&mut t, &rounds);
        assert_eq!(
            events,
            vec![(
                8,
                PathEvent::RouteChanged {
                    at_ms: 6_000,
                    before: with_dst(&old),
                    after: with_dst(&new),
                    first_changed_ttl: 2,
                    branch: None,
                }
            )]
        );
        assert_eq!(t.current(), with_dst(&new));
    }

    #[test]
    fn a_timeout_in_the_middle_of_a_change_neither_counts_nor_cancels() {
        let old = [ip(0, 2), ip(1, 2)];
        let new = [ip(0, 2), ip(7, 2)];
        let mut t = PathTracker::new(3);
        let silent = [Some(ip(0, 2)), None];
        let rounds = [
            round(1, &full(&old), true),
            round(2, &full(&new), true),
            round(3, &silent, true),
            round(4, &full(&new), true),
            round(5, &full(&new), true),
        ];
        let events = feed(&mut t, &rounds);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].0, 5);
    }

    #[test]
    fn single_misses_and_blips_are_ignored() {
        let old = [ip(0, 2), ip(1, 2), ip(2, 2)];
        let mut t = PathTracker::new(3);
        let mut rounds = Vec::new();
        for s in 1..=30 {
            let mut path = full(&old);
            match s % 5 {
                // One missing reply at a hop.
                1 => path[1] = None,
                // A whole round lost, destination included.
                2 => path = vec![None; 3],
                // One stray responder for one round.
                3 => path[2] = Some(ip(9, 9)),
                _ => {}
            }
            rounds.push(round(s, &path, s % 5 != 2));
        }
        let events = feed(&mut t, &rounds);
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(t.current(), with_dst(&old));
        assert_eq!(t.hop_count(), Some(4));
    }

    #[test]
    fn lengthening_and_shortening_are_reported() {
        let short = [ip(0, 2), ip(1, 2)];
        let long = [ip(0, 2), ip(1, 2), ip(3, 2), ip(4, 2)];
        let mut t = PathTracker::new(2);
        let mut rounds: Vec<RoundRecord> = (1..=3).map(|s| round(s, &full(&short), true)).collect();
        rounds.extend((4..=6).map(|s| round(s, &full(&long), true)));
        rounds.extend((7..=9).map(|s| round(s, &full(&short), true)));
        let events: Vec<PathEvent> = feed(&mut t, &rounds).into_iter().map(|(_, e)| e).collect();
        assert_eq!(
            events,
            vec![
                PathEvent::RouteChanged {
                    at_ms: 4_000,
                    before: with_dst(&short),
                    after: with_dst(&long),
                    first_changed_ttl: 3,
                    branch: None,
                },
                PathEvent::HopCountChanged {
                    at_ms: 4_000,
                    before: 3,
                    after: 5
                },
                PathEvent::RouteChanged {
                    at_ms: 7_000,
                    before: with_dst(&long),
                    after: with_dst(&short),
                    first_changed_ttl: 3,
                    branch: None,
                },
                PathEvent::HopCountChanged {
                    at_ms: 7_000,
                    before: 5,
                    after: 3
                },
            ]
        );
        assert_eq!(t.hop_count(), Some(3));
    }

    #[test]
    fn ecmp_alternation_is_a_multi_responder_hop_not_a_change() {
        let a = [ip(0, 2), ip(1, 2), ip(2, 2)];
        let b = [ip(0, 2), ip(8, 2), ip(2, 2)];
        let mut t = PathTracker::new(3);
        // Alternating per round, and now and then two in a row of one member.
        let pattern = "ababaabbabab aabab babba".replace(' ', "");
        let rounds: Vec<RoundRecord> = pattern
            .chars()
            .enumerate()
            .map(|(i, c)| round(i as u64 + 1, &full(if c == 'a' { &a } else { &b }), true))
            .collect();
        let events = feed(&mut t, &rounds);
        assert!(events.is_empty(), "{events:?}");
        let mut members = t.responders(2);
        members.sort();
        assert_eq!(members, vec![ip(1, 2), ip(8, 2)]);
        assert_eq!(t.snapshot().hops[1].responders.len(), 2);
        // Once both are known, long runs of either member are no change either.
        let runs: Vec<RoundRecord> = "bbbbbaaaaabbbbb"
            .chars()
            .enumerate()
            .map(|(i, c)| round(i as u64 + 50, &full(if c == 'a' { &a } else { &b }), true))
            .collect();
        let events = feed(&mut t, &runs);
        assert!(events.is_empty(), "{events:?}");
        // A real change away from both members is still reported.
        let c = [ip(0, 2), ip(9, 2), ip(2, 2)];
        let later: Vec<RoundRecord> = (100..103).map(|s| round(s, &full(&c), true)).collect();
        let events = feed(&mut t, &later);
        assert_eq!(events.len(), 1, "{events:?}");
        match &events[0].1 {
            PathEvent::RouteChanged {
                first_changed_ttl,
                after,
                ..
            } => {
                assert_eq!(*first_changed_ttl, 2);
                assert_eq!(after[1], Some(ip(9, 2)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ecmp_hop_untouched_by_a_later_change_keeps_its_members() {
        let a = [ip(0, 2), ip(1, 2), ip(2, 2), ip(3, 2)];
        let b = [ip(0, 2), ip(8, 2), ip(2, 2), ip(3, 2)];
        let mut t = PathTracker::new(3);
        let learn: Vec<RoundRecord> = "abababab"
            .chars()
            .enumerate()
            .map(|(i, c)| round(i as u64 + 1, &full(if c == 'a' { &a } else { &b }), true))
            .collect();
        assert!(feed(&mut t, &learn).is_empty());
        let before = t.current();
        // TTL 4 changes while the new rounds all happen to see member b at TTL 2.
        let moved = [ip(0, 2), ip(8, 2), ip(2, 2), ip(7, 7)];
        let rounds: Vec<RoundRecord> = (20..23).map(|s| round(s, &full(&moved), true)).collect();
        let events = feed(&mut t, &rounds);
        match &events[..] {
            [(
                _,
                PathEvent::RouteChanged {
                    first_changed_ttl,
                    before: b,
                    ..
                },
            )] => {
                assert_eq!(*first_changed_ttl, 4);
                assert_eq!(b, &before);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t.responders(2).len(), 2);
    }

    #[test]
    fn destination_unreachable_alone_is_not_a_change() {
        let path = [ip(0, 2), ip(1, 2)];
        let mut t = PathTracker::new(3);
        let mut rounds = vec![round(1, &full(&path), true)];
        rounds.extend((2..10).map(|s| round(s, &full(&path), false)));
        assert!(feed(&mut t, &rounds).is_empty());
        assert_eq!(t.hop_count(), Some(3));
    }

    #[test]
    fn competing_new_paths_restart_the_count() {
        let old = [ip(0, 2), ip(1, 2)];
        let x = [ip(0, 2), ip(5, 5)];
        let y = [ip(0, 2), ip(6, 6)];
        let mut t = PathTracker::new(3);
        let rounds = [
            round(1, &full(&old), true),
            round(2, &full(&x), true),
            round(3, &full(&x), true),
            round(4, &full(&y), true),
            round(5, &full(&y), true),
            round(6, &full(&y), true),
        ];
        let events = feed(&mut t, &rounds);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].0, 6);
        match &events[0].1 {
            PathEvent::RouteChanged { at_ms, after, .. } => {
                assert_eq!(*at_ms, 4_000);
                assert_eq!(after[1], Some(ip(6, 6)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn events_serialize_with_a_kind_tag() {
        let e = PathEvent::HopCountChanged {
            at_ms: 5,
            before: 3,
            after: 4,
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "hop_count_changed");
        assert_eq!(json["before"], 3);
        let back: PathEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn a_lost_destination_reply_does_not_look_like_a_longer_path() {
        let mut t = PathTracker::new(3);
        let routers = [ip(0, 2), ip(1, 2), ip(2, 2)];
        let normal: Vec<RoundRecord> = (0..5).map(|s| round(s, &full(&routers), true)).collect();
        assert!(feed(&mut t, &normal).is_empty());
        assert_eq!(t.hop_count(), Some(4));
        // Under loss, the destination's reply at TTL 4 is lost while the probe
        // with TTL 5 also reached it: TTL 4 is a timeout, TTL 5 the destination.
        let mut lossy_path = full(&routers);
        lossy_path.push(None);
        let lossy: Vec<RoundRecord> = (5..15).map(|s| round(s, &lossy_path, true)).collect();
        assert!(
            feed(&mut t, &lossy).is_empty(),
            "no route or hop-count change from loss"
        );
        assert_eq!(t.hop_count(), Some(4));
        // A router that answers at TTL 4 is real evidence of a longer path.
        let mut longer = full(&routers);
        longer.push(Some(ip(3, 2)));
        let rounds: Vec<RoundRecord> = (15..20).map(|s| round(s, &longer, true)).collect();
        let events = feed(&mut t, &rounds);
        assert!(
            events.iter().any(|(_, e)| matches!(
                e,
                PathEvent::HopCountChanged {
                    before: 4,
                    after: 5,
                    ..
                }
            )),
            "{events:?}"
        );
    }
}
