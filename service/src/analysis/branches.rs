//! Per-branch statistics of a multipath target: for each ECMP branch its
//! discovery found, loss, latency and jitter per hop and end to end over the
//! same sliding window as the target's own hops, where it splits from and
//! joins the other branches, and the branch a loss belongs to ("loss on
//! branch 2 (through 198.18.3.2 at hop 2)").
//!
//! A branch is probed over its own kept flow, so its rounds are the target's
//! rounds over another path; each hop is kept in a [`HopStats`] and the loss
//! localisation is the target's own ([`findings::localise_loss`]), run on
//! the branch's hops.
//!
//! A branch slower than its siblings (a congested or longer member link) is
//! a latency finding: its end-to-end median exceeds the best sibling's by
//! both [`LATENCY_MIN_EXCESS_NS`] and [`LATENCY_MIN_RATIO`], placed at the
//! first hop after the split that is slower than the same hop on that
//! sibling. mtr merges the branches and cannot show this at all.
//!
//! A branch's kept flow whose responders no longer match the path discovery
//! found for it, in `confirm_rounds` rounds in a row (the target's own rule
//! for a route change, see [`super::path`]), moved to another path: a
//! [`PathEvent::RouteChanged`] naming the branch, on which the branch prober
//! discovers again (a route change that moves only another branch's flow,
//! not the target's own, is seen this way).

use std::net::IpAddr;

use serde::Serialize;

use super::findings::{self, DegradationKind, Evidence, HopView};
use super::hop::{HopStats, StatsSnapshot};
use super::path;
use super::{Localisation, PathEvent};
use crate::model::{BranchIndex, BranchLayout, BranchPath, HopOutcome, RoundRecord};

/// A branch's loss counts as its own, not the whole path's, only when some
/// other branch loses at most this share of it over the same window.
pub const OTHER_BRANCH_MAX_SHARE: f64 = 0.5;

/// A branch is slow when its end-to-end median exceeds the best sibling's by
/// at least this much: a few ms is what two member links of different length
/// differ by without anything being wrong, and jitter moves a median little.
pub const LATENCY_MIN_EXCESS_NS: u64 = 5_000_000;
/// ... and by at least this fraction of the sibling's median, so a long path
/// (100 ms across an ocean) is not slow for 5 ms more on one member.
pub const LATENCY_MIN_RATIO: f64 = 0.5;
/// Hysteresis: a slow branch stays slow until its excess falls under this
/// share of both margins, so a median hovering at the bar does not flap the
/// finding (the alert's raise and clear rounds come on top).
pub const LATENCY_CLEAR_SHARE: f64 = 0.5;
/// Answers at the destination the branch and its sibling each need in the
/// window before their medians are compared: fewer say little about a median.
pub const LATENCY_MIN_ANSWERS: u64 = 20;

/// One branch's statistics.
#[derive(Debug, Clone)]
struct BranchStats {
    path: BranchPath,
    /// Index 0 is TTL 1.
    hops: Vec<HopStats>,
    destination: HopStats,
    destination_ttl: Option<u8>,
    rounds: u64,
    /// Whether the branch is slow against its siblings (with hysteresis,
    /// see [`LATENCY_CLEAR_SHARE`]); re-judged after every round.
    slow: bool,
    /// The path its rounds are checked against (from the layout's first
    /// TTL): discovery's, then that of each confirmed change.
    route: Vec<Option<IpAddr>>,
    route_reached: bool,
    /// Rounds in a row that did not take `route`, while there are some.
    diverging: Option<Diverging>,
}

/// Rounds of a branch that took another path than its known one, not yet
/// `confirm_rounds` of them.
#[derive(Debug, Clone)]
struct Diverging {
    first_at_ms: u64,
    rounds: u32,
    /// The latest responder its rounds saw at each position (from the
    /// first TTL).
    seen: Vec<Option<IpAddr>>,
    /// Positions where they differed from the known path (the known path's
    /// length for a different destination TTL).
    diverged: Vec<usize>,
    /// Where the destination answered, as a position, when a round told it.
    destination: Option<usize>,
}

/// What one round of a branch says about its known path.
#[derive(Debug, PartialEq)]
enum RouteReading {
    /// Some answer differs from the known path (the positions where).
    Differs(Vec<usize>),
    /// Its answers are the known ones at these positions.
    Matches(Vec<usize>),
}

impl BranchStats {
    fn new(path: BranchPath, window: usize) -> BranchStats {
        BranchStats {
            hops: Vec::new(),
            destination: HopStats::new(window),
            destination_ttl: None,
            rounds: 0,
            slow: false,
            route: path.hops.clone(),
            route_reached: path.reached_destination,
            diverging: None,
            path,
        }
    }

    /// The answers of `round` (position from `first_ttl`, responder) and the
    /// destination's position, leaving out what an ambiguous round cannot
    /// tell: when the probe before the destination's lowest answering TTL
    /// was lost, the destination may be one hop nearer (as in
    /// [`super::path`]), so neither its TTL nor answers from it on count.
    fn answers(round: &RoundRecord, first_ttl: u8) -> (Vec<(usize, IpAddr)>, Option<usize>) {
        let reached = round.destination_ttl.map(|t| t.get());
        let ambiguous = path::hop_count_is_ambiguous(round);
        let below = if ambiguous { reached } else { None };
        let answers = round
            .path_samples()
            .iter()
            .filter(|h| below.is_none_or(|d| h.ttl.get() < d))
            .filter_map(|h| {
                let pos = h.ttl.get().checked_sub(first_ttl)?;
                Some((usize::from(pos), h.responder()?))
            })
            .collect();
        let destination = reached
            .filter(|_| !ambiguous)
            .and_then(|d| d.checked_sub(first_ttl))
            .map(usize::from);
        (answers, destination)
    }

    /// Whether `round` took the known path; `None` when it tells nothing
    /// (every probe that could say was lost, or a TTL the path never
    /// answered at answered now).
    fn read_route(
        &self,
        answers: &[(usize, IpAddr)],
        destination: Option<usize>,
    ) -> Option<RouteReading> {
        let known_end = self.route_reached.then_some(self.route.len());
        let mut differs = Vec::new();
        let mut matches = Vec::new();
        for &(pos, addr) in answers {
            match self.route.get(pos) {
                Some(Some(known)) if *known == addr => matches.push(pos),
                Some(Some(_)) => differs.push(pos),
                Some(None) => {}
                // Beyond the destination the path must have changed.
                None if known_end.is_some() => differs.push(pos),
                None => {}
            }
        }
        if let (Some(end), Some(dest)) = (known_end, destination) {
            if dest + 1 != end && !differs.contains(&(end - 1)) {
                differs.push(end - 1);
            }
        }
        if !differs.is_empty() {
            Some(RouteReading::Differs(differs))
        } else if !matches.is_empty() {
            Some(RouteReading::Matches(matches))
        } else {
            None
        }
    }

    /// Checks `round` against the known path: `confirm_rounds` diverging
    /// rounds in a row are a route change (returned, and the new path is
    /// the known one from then on); a round answering with the known
    /// responder where they diverged cancels them; rounds that tell
    /// nothing neither count nor cancel.
    fn track_route(
        &mut self,
        round: &RoundRecord,
        first_ttl: u8,
        confirm_rounds: u32,
    ) -> Option<PathEvent> {
        let (answers, destination) = Self::answers(round, first_ttl);
        match self.read_route(&answers, destination)? {
            RouteReading::Matches(positions) => {
                if self
                    .diverging
                    .as_ref()
                    .is_some_and(|d| d.diverged.iter().any(|p| positions.contains(p)))
                {
                    self.diverging = None;
                }
                None
            }
            RouteReading::Differs(positions) => {
                let d = self.diverging.get_or_insert_with(|| Diverging {
                    first_at_ms: round.started_at_ms,
                    rounds: 0,
                    seen: Vec::new(),
                    diverged: Vec::new(),
                    destination: None,
                });
                d.rounds += 1;
                for (pos, addr) in answers {
                    if pos >= d.seen.len() {
                        d.seen.resize(pos + 1, None);
                    }
                    d.seen[pos] = Some(addr);
                }
                for pos in positions {
                    if !d.diverged.contains(&pos) {
                        d.diverged.push(pos);
                    }
                }
                d.destination = destination.or(d.destination);
                if d.rounds < confirm_rounds {
                    return None;
                }
                let d = self.diverging.take()?;
                Some(self.commit_route(d, first_ttl))
            }
        }
    }

    /// Takes the diverging rounds' path as the known one.
    fn commit_route(&mut self, d: Diverging, first_ttl: u8) -> PathEvent {
        let first = d.diverged.iter().copied().min().unwrap_or(0);
        let len = match d.destination {
            Some(dest) => dest + 1,
            None => d.seen.len().max(first + 1),
        };
        let after: Vec<Option<IpAddr>> = (0..len)
            .map(|pos| match d.seen.get(pos).copied().flatten() {
                Some(addr) => Some(addr),
                // Not answered in the new rounds: before the change, the
                // known responder is still the best guess.
                None if pos < first => self.route.get(pos).copied().flatten(),
                None => None,
            })
            .collect();
        let before = std::mem::replace(&mut self.route, after);
        self.route_reached = d.destination.is_some();
        let from_ttl1 = |hops: &[Option<IpAddr>]| {
            std::iter::repeat_n(None, usize::from(first_ttl.saturating_sub(1)))
                .chain(hops.iter().copied())
                .collect::<Vec<_>>()
        };
        let before = from_ttl1(&before);
        let after = from_ttl1(&self.route);
        let changed = (0..before.len().max(after.len()))
            .find(|i| before.get(*i) != after.get(*i))
            .unwrap_or(usize::from(first_ttl.saturating_sub(1)) + first);
        PathEvent::RouteChanged {
            at_ms: d.first_at_ms,
            before,
            after,
            first_changed_ttl: (changed + 1) as u8,
            branch: Some(self.path.index),
        }
    }

    fn record(&mut self, round: &RoundRecord, window: usize) {
        let at_ms = round.started_at_ms;
        for sample in round.path_samples() {
            let i = sample.ttl.index();
            if i >= self.hops.len() {
                self.hops.resize_with(i + 1, || HopStats::new(window));
            }
            self.hops[i].record(sample.outcome, at_ms);
        }
        let dest = round.destination();
        self.destination
            .record(dest.map_or(HopOutcome::Lost, |d| d.outcome), at_ms);
        if let Some(ttl) = round.destination_ttl {
            self.destination_ttl = Some(ttl.get());
        }
        self.rounds += 1;
    }

    /// The responder discovery saw at `ttl`.
    fn discovered(&self, first_ttl: u8, ttl: u8) -> Option<IpAddr> {
        let i = usize::from(ttl.checked_sub(first_ttl)?);
        self.path.hops.get(i).copied().flatten()
    }
}

/// The branches of one target: the latest layout and each branch's statistics.
#[derive(Debug, Clone)]
pub struct BranchesAnalysis {
    window: usize,
    /// Diverging rounds in a row that make a branch's route change.
    confirm_rounds: u32,
    layout: Option<BranchLayout>,
    branches: Vec<BranchStats>,
}

/// One hop of one branch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BranchHopSnapshot {
    pub ttl: u8,
    /// The responder with the most answers in the window, else the one
    /// discovery saw.
    pub responder: Option<IpAddr>,
    pub window: StatsSnapshot,
}

/// One branch, ready to serialize.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BranchSnapshot {
    pub index: BranchIndex,
    pub flow_id: u16,
    /// The last TTL this branch shares with every other branch before it
    /// leaves them (the load-balancing router); `None` when it differs from
    /// the first hop, or there is no other branch.
    pub split_ttl: Option<u8>,
    /// The first TTL after the split where it meets every other branch again
    /// (at the latest the destination); `None` when they never meet.
    pub join_ttl: Option<u8>,
    /// The responders discovery saw, from the first TTL.
    pub discovered: Vec<Option<IpAddr>>,
    pub rounds: u64,
    pub hops: Vec<BranchHopSnapshot>,
    /// End to end: the destination over this branch's flow.
    pub destination: StatsSnapshot,
}

/// A loss on one branch only, or a branch slower than its siblings: which
/// branch, the router that sets it apart, and where the degradation starts
/// along it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BranchFinding {
    pub kind: DegradationKind,
    pub branch: BranchIndex,
    /// The hop (TTL) and responder that name the branch: where the loss
    /// starts when that is between the split and the join, else the
    /// branch's first hop after the split.
    pub through_ttl: u8,
    pub through: Option<IpAddr>,
    pub loss_pct: f64,
    /// A latency finding's comparison: the branch's end-to-end median, the
    /// sibling it is compared with (the fastest) and that sibling's median.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<BranchLatency>,
    /// The localisation along the branch; its summary starts with the branch.
    pub localisation: Localisation,
}

/// A slow branch against its fastest sibling, end to end over the window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BranchLatency {
    pub p50_ns: u64,
    pub sibling: BranchIndex,
    pub sibling_p50_ns: u64,
}

impl BranchLatency {
    /// How much slower the branch is than its sibling.
    pub fn excess_ns(&self) -> u64 {
        self.p50_ns.saturating_sub(self.sibling_p50_ns)
    }
}

/// Every branch of a target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BranchesSnapshot {
    pub discovered_at_ms: u64,
    pub probes_sent: u32,
    pub discovery_ms: u64,
    /// Branches discovery found; `branches` holds those probed (up to the cap).
    pub found: usize,
    pub stop: String,
    pub branches: Vec<BranchSnapshot>,
    /// Branches losing what the others do not, worst first, then branches
    /// slower than their siblings, slowest first.
    pub findings: Vec<BranchFinding>,
}

impl BranchesAnalysis {
    /// Statistics over `window` rounds; a branch's route changes after
    /// `confirm_rounds` rounds in a row on another path (at least 1).
    pub fn new(window: usize, confirm_rounds: u32) -> BranchesAnalysis {
        BranchesAnalysis {
            window,
            confirm_rounds: confirm_rounds.max(1),
            layout: None,
            branches: Vec::new(),
        }
    }

    /// Takes a new discovery. A branch found again on the same path under the
    /// same index keeps its statistics; any other starts afresh.
    pub fn set_layout(&mut self, layout: BranchLayout) {
        let mut old = std::mem::take(&mut self.branches);
        self.branches = layout
            .branches
            .iter()
            .map(|path| {
                match old
                    .iter()
                    .position(|b| b.path.index == path.index && b.path.hops == path.hops)
                {
                    Some(i) => {
                        let mut kept = old.swap_remove(i);
                        // Another flow now, found on this path: checked
                        // against it afresh.
                        kept.path = path.clone();
                        kept.route = path.hops.clone();
                        kept.route_reached = path.reached_destination;
                        kept.diverging = None;
                        kept
                    }
                    None => BranchStats::new(path.clone(), self.window),
                }
            })
            .collect();
        self.layout = Some(layout);
    }

    /// Adds a round of `branch`; a round of a branch no longer in the layout
    /// (it was in flight during a rediscovery) is dropped. Returns the route
    /// change of the branch this round confirms, if any.
    pub fn record(&mut self, branch: BranchIndex, round: &RoundRecord) -> Option<PathEvent> {
        let window = self.window;
        let confirm_rounds = self.confirm_rounds;
        let first_ttl = self.layout.as_ref()?.first_ttl.get();
        let stats = self.branches.iter_mut().find(|b| b.path.index == branch)?;
        stats.record(round, window);
        let change = stats.track_route(round, first_ttl, confirm_rounds);
        self.judge_latency();
        change
    }

    /// Re-judges which branches are slow. Kept as state, not derived in
    /// [`Self::snapshot`], because the hysteresis needs yesterday's verdict.
    fn judge_latency(&mut self) {
        let medians: Vec<Option<u64>> = self.branches.iter().map(end_to_end_median).collect();
        for i in 0..self.branches.len() {
            let verdict = match (medians[i], best_sibling(&medians, i)) {
                (Some(own), Some((_, sibling))) => {
                    let share = if self.branches[i].slow {
                        LATENCY_CLEAR_SHARE
                    } else {
                        1.0
                    };
                    slower(own, sibling, share)
                }
                // Too few answers to compare: no verdict either way.
                _ => false,
            };
            self.branches[i].slow = verdict;
        }
    }

    /// `None` before the first discovery.
    pub fn snapshot(&self) -> Option<BranchesSnapshot> {
        let layout = self.layout.as_ref()?;
        let first_ttl = layout.first_ttl.get();
        let paths: Vec<&[Option<IpAddr>]> = self
            .branches
            .iter()
            .map(|b| b.path.hops.as_slice())
            .collect();
        let branches: Vec<BranchSnapshot> = self
            .branches
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let (split, join) = split_join(&paths, i);
                BranchSnapshot {
                    index: b.path.index,
                    flow_id: b.path.flow_id,
                    split_ttl: split.map(|s| first_ttl + s as u8),
                    join_ttl: join.map(|j| first_ttl + j as u8),
                    discovered: b.path.hops.clone(),
                    rounds: b.rounds,
                    hops: hop_rows(b, first_ttl),
                    destination: b.destination.window_stats(),
                }
            })
            .collect();
        let mut found: Vec<BranchFinding> = self
            .branches
            .iter()
            .zip(&branches)
            .filter_map(|(stats, snap)| self.finding(stats, snap, &branches, first_ttl))
            .collect();
        found.sort_by(|a, b| b.loss_pct.total_cmp(&a.loss_pct));
        let mut slow: Vec<BranchFinding> = self
            .branches
            .iter()
            .zip(&branches)
            .filter_map(|(stats, snap)| self.latency_finding(stats, snap, &branches, first_ttl))
            .collect();
        slow.sort_by_key(|f| std::cmp::Reverse(f.latency.map_or(0, |l| l.excess_ns())));
        found.extend(slow);
        Some(BranchesSnapshot {
            discovered_at_ms: layout.discovered_at_ms,
            probes_sent: layout.probes_sent,
            discovery_ms: layout.elapsed_ms,
            found: layout.found,
            stop: layout.stop.clone(),
            branches,
            findings: found,
        })
    }

    /// The loss finding of one branch, when it is degraded and some other
    /// branch is clearly not.
    fn finding(
        &self,
        stats: &BranchStats,
        snap: &BranchSnapshot,
        all: &[BranchSnapshot],
        first_ttl: u8,
    ) -> Option<BranchFinding> {
        let loss = snap.destination.loss_pct?;
        let others_clean = all.iter().any(|o| {
            o.index != snap.index
                && o.destination.sent >= findings::MIN_WINDOW_PROBES
                && o.destination
                    .loss_pct
                    .is_some_and(|l| l <= OTHER_BRANCH_MAX_SHARE * loss)
        });
        if !others_clean {
            return None;
        }
        let dest_ttl = stats.destination_ttl;
        let views: Vec<HopView> = stats
            .hops
            .iter()
            .enumerate()
            .map(|(i, hop)| (i as u8 + 1, hop))
            .filter(|(ttl, hop)| hop.sent() > 0 && dest_ttl.is_none_or(|d| *ttl < d))
            .map(|(ttl, hop)| HopView {
                ttl,
                responder: hop
                    .dominant_responder()
                    .or_else(|| stats.discovered(first_ttl, ttl)),
                probes: hop.window_probes().collect(),
                baseline_ns: hop.path_best_ns(),
            })
            .collect();
        let dest_view = HopView {
            ttl: dest_ttl.unwrap_or_else(|| views.last().map_or(1, |v| v.ttl.saturating_add(1))),
            responder: stats.destination_address(),
            probes: stats.destination.window_probes().collect(),
            baseline_ns: stats.destination.path_best_ns(),
        };
        let flags = findings::rate_limited(&views, &dest_view);
        let mut localisation = findings::localise_loss(&views, &flags, &dest_view)?;
        let inside = |ttl: u8| {
            snap.split_ttl.is_none_or(|s| ttl > s) && snap.join_ttl.is_none_or(|j| ttl <= j)
        };
        let (through_ttl, through) = if inside(localisation.ttl) && localisation.responder.is_some()
        {
            (localisation.ttl, localisation.responder)
        } else {
            let ttl = snap.split_ttl.map_or(first_ttl, |s| s + 1);
            let responder = snap
                .hops
                .iter()
                .find(|h| h.ttl == ttl)
                .and_then(|h| h.responder)
                .or_else(|| stats.discovered(first_ttl, ttl));
            (ttl, responder)
        };
        let named = match through {
            Some(addr) => format!(
                "loss on branch {} (through {addr} at hop {through_ttl})",
                snap.index
            ),
            None => format!(
                "loss on branch {} (hop {through_ttl} does not answer)",
                snap.index
            ),
        };
        localisation.summary = format!("{named}: {}", localisation.summary);
        Some(BranchFinding {
            kind: DegradationKind::Loss,
            branch: snap.index,
            through_ttl,
            through,
            loss_pct: loss,
            latency: None,
            localisation,
        })
    }

    /// The latency finding of one branch, while it is judged slow: against
    /// its fastest sibling, placed at the first hop after the split whose
    /// median exceeds the same hop's on that sibling by at least
    /// [`findings::LATENCY_CARRY_FACTOR`] of the end-to-end excess (the
    /// target's own rule for where a rise starts), else at the branch's
    /// first hop after the split.
    fn latency_finding(
        &self,
        stats: &BranchStats,
        snap: &BranchSnapshot,
        all: &[BranchSnapshot],
        first_ttl: u8,
    ) -> Option<BranchFinding> {
        if !stats.slow {
            return None;
        }
        let medians: Vec<Option<u64>> = self.branches.iter().map(end_to_end_median).collect();
        let own_pos = self
            .branches
            .iter()
            .position(|b| b.path.index == snap.index)?;
        let own = medians[own_pos]?;
        let (sib_pos, sibling_p50) = best_sibling(&medians, own_pos)?;
        let sibling = &all[sib_pos];
        let latency = BranchLatency {
            p50_ns: own,
            sibling: sibling.index,
            sibling_p50_ns: sibling_p50,
        };
        let excess = latency.excess_ns();
        let after_split = snap.split_ttl.map_or(first_ttl, |s| s + 1);
        let last = stats.destination_ttl.unwrap_or(u8::MAX);
        let hop_p50 = |b: &BranchSnapshot, ttl: u8| {
            b.hops
                .iter()
                .find(|h| h.ttl == ttl)
                .filter(|h| h.window.received >= findings::MIN_LATENCY_ANSWERS)
                .and_then(|h| h.window.p50_ns)
        };
        let carried = (excess as f64 * findings::LATENCY_CARRY_FACTOR) as u64;
        // The first hop that is slower than the sibling's at the same TTL.
        let start = snap
            .hops
            .iter()
            .filter(|h| h.ttl >= after_split && h.ttl < last)
            .find_map(|h| {
                let mine = hop_p50(snap, h.ttl)?;
                let theirs = hop_p50(sibling, h.ttl)?;
                (mine.saturating_sub(theirs) >= carried).then_some((h, mine - theirs))
            });
        let responder_at = |ttl: u8| {
            snap.hops
                .iter()
                .find(|h| h.ttl == ttl)
                .and_then(|h| h.responder)
                .or_else(|| stats.discovered(first_ttl, ttl))
        };
        let (start_ttl, start_responder, hop_rise) = match start {
            Some((h, rise)) => (h.ttl, h.responder, rise),
            // No hop on the way answers slower (they may not answer at all):
            // the rise is the destination's, reached through the branch.
            None => (
                stats.destination_ttl.unwrap_or(after_split),
                stats.destination_address(),
                excess,
            ),
        };
        // The router naming the branch: where the delay starts when that is
        // the branch's own (between the split and the join), else the
        // branch's first router after the split.
        let own_hop = snap.join_ttl.is_none_or(|j| start_ttl < j) && start_ttl >= after_split;
        let (through_ttl, through) = if own_hop && start_responder.is_some() {
            (start_ttl, start_responder)
        } else {
            (after_split, responder_at(after_split))
        };
        let named = match through {
            Some(addr) => format!(
                "latency on branch {} (through {addr} at hop {through_ttl})",
                snap.index
            ),
            None => format!(
                "latency on branch {} (hop {through_ttl} does not answer)",
                snap.index
            ),
        };
        let starts = match start_responder {
            Some(addr) => format!("hop {start_ttl} ({addr})"),
            None => format!("hop {start_ttl} (no reply)"),
        };
        let ms = |ns: u64| ns as f64 / 1e6;
        // How consistently the branch is slower: the share of its answers
        // above the sibling's median by at least half the excess.
        let probes: Vec<u64> = stats.destination.window_probes().flatten().collect();
        let above = probes
            .iter()
            .filter(|&&rtt| rtt >= sibling_p50 + carried)
            .count();
        let confidence = above as f64 / probes.len().max(1) as f64;
        let summary = format!(
            "{named}: {:.1} ms end to end against {:.1} ms on branch {}; the extra delay starts at {starts}",
            ms(own),
            ms(sibling_p50),
            sibling.index
        );
        Some(BranchFinding {
            kind: DegradationKind::Latency,
            branch: snap.index,
            through_ttl,
            through,
            loss_pct: snap.destination.loss_pct.unwrap_or(0.0),
            latency: Some(latency),
            localisation: Localisation {
                kind: DegradationKind::Latency,
                ttl: start_ttl,
                responder: start_responder,
                confidence,
                rounds: probes.len(),
                return_path_changed_ttl: None,
                evidence: Evidence::Latency {
                    hop_rise_ns: hop_rise,
                    previous_ttl: None,
                    previous_rise_ns: None,
                    destination_rise_ns: excess,
                    destination_p50_ns: own,
                    destination_baseline_ns: sibling_p50,
                },
                summary,
            },
        })
    }
}

/// The branch's end-to-end median over its window, once it has
/// [`LATENCY_MIN_ANSWERS`] (a full window when the window is shorter). The
/// median rather than the mean: a few replies held up by a busy router or a
/// queue burst move a mean by milliseconds and a median not at all, and a
/// slow member link delays every packet.
///
/// Judged after every branch round for every branch, so it selects the
/// median in linear time instead of building the window's full statistics;
/// it is the same nearest-rank p50 as [`StatsSnapshot::p50_ns`].
fn end_to_end_median(b: &BranchStats) -> Option<u64> {
    let mut rtts: Vec<u64> = b.destination.window_probes().flatten().collect();
    let needed = LATENCY_MIN_ANSWERS.min(b.destination.window_capacity() as u64);
    if rtts.is_empty() || (rtts.len() as u64) < needed {
        return None;
    }
    let rank = rtts.len().div_ceil(2);
    Some(*rtts.select_nth_unstable(rank - 1).1)
}

/// The fastest other branch with a median: its position and its median.
fn best_sibling(medians: &[Option<u64>], i: usize) -> Option<(usize, u64)> {
    medians
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .filter_map(|(j, m)| m.map(|m| (j, m)))
        .min_by_key(|(_, m)| *m)
}

/// Whether `own` exceeds `sibling` by both margins, each scaled by `share`
/// (1 to become slow, [`LATENCY_CLEAR_SHARE`] to stay slow).
fn slower(own: u64, sibling: u64, share: f64) -> bool {
    let excess = own.saturating_sub(sibling);
    excess as f64 >= share * LATENCY_MIN_EXCESS_NS as f64
        && excess as f64 >= share * LATENCY_MIN_RATIO * sibling as f64
}

impl BranchStats {
    fn destination_address(&self) -> Option<IpAddr> {
        self.destination_ttl
            .and_then(|ttl| self.hops.get(usize::from(ttl) - 1))
            .and_then(HopStats::dominant_responder)
    }
}

/// The hop rows of a branch: every TTL probed, up to its destination.
fn hop_rows(b: &BranchStats, first_ttl: u8) -> Vec<BranchHopSnapshot> {
    let last = b.destination_ttl.map_or(b.hops.len(), usize::from);
    b.hops
        .iter()
        .enumerate()
        .take(last)
        .filter(|(_, hop)| hop.sent() > 0)
        .map(|(i, hop)| {
            let ttl = i as u8 + 1;
            BranchHopSnapshot {
                ttl,
                responder: hop
                    .dominant_responder()
                    .or_else(|| b.discovered(first_ttl, ttl)),
                window: hop.window_stats(),
            }
        })
        .collect()
}

/// Where path `i` leaves the others and meets them again, as positions in
/// the paths: the split is the last position before the first one where some
/// other path differs from it; the join the first position after that where
/// every path has the same responder.
fn split_join(paths: &[&[Option<IpAddr>]], i: usize) -> (Option<usize>, Option<usize>) {
    let own = paths[i];
    let others: Vec<&[Option<IpAddr>]> = paths
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, p)| *p)
        .collect();
    if others.is_empty() {
        return (None, None);
    }
    let differs = |pos: usize| others.iter().any(|o| o.get(pos) != own.get(pos));
    let Some(first_diff) = (0..own.len()).find(|&pos| differs(pos)) else {
        return (None, None);
    };
    let split = first_diff.checked_sub(1);
    let join = (first_diff + 1..own.len()).find(|&pos| own[pos].is_some() && !differs(pos));
    (split, join)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HopAnswer, HopSample, TargetId};
    use crate::probe::{Rtt, TimestampSource, Ttl};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A 100-round window, changes confirmed after 3 rounds, on [`layout`].
    fn analysis() -> BranchesAnalysis {
        let mut a = BranchesAnalysis::new(100, 3);
        a.set_layout(layout());
        a
    }

    fn layout() -> BranchLayout {
        let path = |n: u8, via: &str| BranchPath {
            index: BranchIndex::new(n).unwrap(),
            flow_id: 40_000 + u16::from(n),
            hops: vec![
                Some(ip("198.18.0.1")),
                Some(ip(via)),
                Some(ip("198.18.9.1")),
                Some(ip("198.18.9.9")),
            ],
            reached_destination: true,
        };
        BranchLayout {
            target: TargetId::new("t").unwrap(),
            discovered_at_ms: 1,
            first_ttl: Ttl::MIN,
            probes_sent: 60,
            elapsed_ms: 900,
            found: 2,
            stop: "complete".into(),
            branches: vec![path(1, "198.18.1.2"), path(2, "198.18.2.2")],
        }
    }

    /// A round over branch `via`, lost from TTL 2 on when `lost`.
    fn round(seq: u64, via: &str, lost: bool) -> RoundRecord {
        slow_round(seq, via, lost, u8::MAX, 0)
    }

    /// A round over branch `via` whose answers from `from_ttl` on come
    /// `extra_ns` later than the 1 ms a hop of the others.
    fn slow_round(seq: u64, via: &str, lost: bool, from_ttl: u8, extra_ns: u64) -> RoundRecord {
        let hop = |ttl: u8, addr: &str, dest: bool| {
            if lost && ttl >= 2 {
                return HopSample::lost(Ttl::new(ttl).unwrap());
            }
            let extra = if ttl >= from_ttl { extra_ns } else { 0 };
            HopSample::answered(
                Ttl::new(ttl).unwrap(),
                HopAnswer {
                    responder: ip(addr),
                    rtt: Rtt::from_nanos(1_000_000 * u64::from(ttl) + extra),
                    is_destination: dest,
                    reply_ttl: None,
                    quote: None,
                },
            )
        };
        RoundRecord {
            target: TargetId::new("t").unwrap(),
            seq,
            started_at_ms: seq * 1000,
            hops: vec![
                hop(1, "198.18.0.1", false),
                hop(2, via, false),
                hop(3, "198.18.9.1", false),
                hop(4, "198.18.9.9", true),
            ],
            destination_ttl: (!lost).then(|| Ttl::new(4).unwrap()),
            source: TimestampSource::Ebpf,
        }
    }

    #[test]
    fn nothing_before_the_first_discovery() {
        assert_eq!(BranchesAnalysis::new(100, 3).snapshot(), None);
    }

    #[test]
    fn branches_split_after_the_balancer_and_join_where_they_meet() {
        let a = analysis();
        let snap = a.snapshot().unwrap();
        for b in &snap.branches {
            assert_eq!((b.split_ttl, b.join_ttl), (Some(1), Some(3)), "{b:?}");
        }
        // One path alone neither splits nor joins.
        let only = [Some(ip("198.18.0.1"))];
        let paths: Vec<&[Option<IpAddr>]> = vec![&only];
        assert_eq!(split_join(&paths, 0), (None, None));
    }

    #[test]
    fn loss_on_one_branch_is_named_by_its_router_and_the_other_stays_clean() {
        let mut a = analysis();
        let one = BranchIndex::new(1).unwrap();
        let two = BranchIndex::new(2).unwrap();
        for seq in 0..100 {
            a.record(one, &round(seq, "198.18.1.2", false));
            // Every third round of branch 2 is lost from hop 2 on.
            a.record(two, &round(seq, "198.18.2.2", seq % 3 == 0));
        }
        let snap = a.snapshot().unwrap();
        assert_eq!(snap.branches[0].destination.loss_pct, Some(0.0));
        let lossy = snap.branches[1].destination.loss_pct.unwrap();
        assert!((33.0..=35.0).contains(&lossy), "{lossy}");
        assert_eq!(snap.findings.len(), 1, "{:?}", snap.findings);
        let f = &snap.findings[0];
        assert_eq!(f.branch, two);
        assert_eq!((f.through_ttl, f.through), (2, Some(ip("198.18.2.2"))));
        assert!(
            f.localisation.summary.starts_with(
                "loss on branch 2 (through 198.18.2.2 at hop 2): loss starts at hop 2"
            ),
            "{}",
            f.localisation.summary
        );
    }

    #[test]
    fn loss_on_every_branch_is_no_branch_finding() {
        let mut a = analysis();
        for seq in 0..100 {
            for (n, via) in [(1, "198.18.1.2"), (2, "198.18.2.2")] {
                let lost = seq % 3 == 0;
                a.record(BranchIndex::new(n).unwrap(), &round(seq, via, lost));
            }
        }
        assert!(a.snapshot().unwrap().findings.is_empty());
    }

    #[test]
    fn a_rediscovery_keeps_the_statistics_of_an_unchanged_branch() {
        let mut a = analysis();
        let one = BranchIndex::new(1).unwrap();
        a.record(one, &round(0, "198.18.1.2", false));
        let mut next = layout();
        next.branches[1].hops[1] = Some(ip("198.18.3.2"));
        a.set_layout(next);
        a.record(BranchIndex::new(2).unwrap(), &round(0, "198.18.3.2", false));
        let snap = a.snapshot().unwrap();
        assert_eq!(snap.branches[0].rounds, 1);
        assert_eq!(snap.branches[1].rounds, 1, "a new path starts afresh");
    }

    const MS: u64 = 1_000_000;

    /// `rounds` rounds of both branches, branch 2's slower by `extra_ns`
    /// from `from_ttl` on, starting at round `from`.
    fn feed(a: &mut BranchesAnalysis, from: u64, rounds: u64, from_ttl: u8, extra_ns: u64) {
        for seq in from..from + rounds {
            a.record(
                BranchIndex::new(1).unwrap(),
                &round(seq, "198.18.1.2", false),
            );
            a.record(
                BranchIndex::new(2).unwrap(),
                &slow_round(seq, "198.18.2.2", false, from_ttl, extra_ns),
            );
        }
    }

    fn latency_findings(a: &BranchesAnalysis) -> Vec<BranchFinding> {
        let snap = a.snapshot().unwrap();
        snap.findings
            .into_iter()
            .filter(|f| f.kind == DegradationKind::Latency)
            .collect()
    }

    #[test]
    fn a_branch_20_ms_slower_is_named_by_its_router_where_the_delay_starts() {
        let mut a = analysis();
        feed(&mut a, 0, 100, 2, 20 * MS);
        let found = latency_findings(&a);
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert_eq!(f.branch, BranchIndex::new(2).unwrap());
        assert_eq!((f.through_ttl, f.through), (2, Some(ip("198.18.2.2"))));
        assert_eq!(
            (f.localisation.ttl, f.localisation.responder),
            (2, Some(ip("198.18.2.2")))
        );
        let latency = f.latency.unwrap();
        assert_eq!(latency.sibling, BranchIndex::new(1).unwrap());
        assert_eq!((latency.p50_ns, latency.sibling_p50_ns), (24 * MS, 4 * MS));
        assert_eq!(f.localisation.confidence, 1.0);
        assert_eq!(
            f.localisation.summary,
            "latency on branch 2 (through 198.18.2.2 at hop 2): 24.0 ms end to end \
             against 4.0 ms on branch 1; the extra delay starts at hop 2 (198.18.2.2)"
        );
        // Not a loss: the loss finding stays away, and it sorts after any.
        assert!(a
            .snapshot()
            .unwrap()
            .findings
            .iter()
            .all(|f| f.kind == DegradationKind::Latency));
    }

    #[test]
    fn a_delay_from_the_join_on_is_placed_there_and_named_by_the_branch_router() {
        let mut a = analysis();
        // The member link into the join router is slow: hop 2 answers in
        // time, the join (hop 3, on both branches) and the destination late.
        feed(&mut a, 0, 100, 3, 20 * MS);
        let found = latency_findings(&a);
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert_eq!(
            (f.localisation.ttl, f.localisation.responder),
            (3, Some(ip("198.18.9.1")))
        );
        // The join is shared: the branch is named by its own router.
        assert_eq!((f.through_ttl, f.through), (2, Some(ip("198.18.2.2"))));
        assert!(
            f.localisation
                .summary
                .starts_with("latency on branch 2 (through 198.18.2.2 at hop 2): 24.0 ms"),
            "{}",
            f.localisation.summary
        );
    }

    #[test]
    fn equal_branches_and_small_differences_are_no_latency_finding() {
        let mut a = analysis();
        feed(&mut a, 0, 100, 2, 0);
        assert!(a.snapshot().unwrap().findings.is_empty());
        // 3 ms more is 75 % more here, but under the 5 ms margin.
        feed(&mut a, 100, 100, 2, 3 * MS);
        assert!(latency_findings(&a).is_empty());
    }

    #[test]
    fn a_long_path_is_not_slow_for_a_few_ms_more() {
        let mut a = analysis();
        // Both ~104 ms; branch 2 is 10 ms (10 %) slower: under 50 %.
        for seq in 0..100 {
            a.record(
                BranchIndex::new(1).unwrap(),
                &slow_round(seq, "198.18.1.2", false, 2, 100 * MS),
            );
            a.record(
                BranchIndex::new(2).unwrap(),
                &slow_round(seq, "198.18.2.2", false, 2, 110 * MS),
            );
        }
        assert!(latency_findings(&a).is_empty());
    }

    #[test]
    fn too_few_answers_are_no_latency_finding() {
        let mut a = analysis();
        feed(&mut a, 0, LATENCY_MIN_ANSWERS - 1, 2, 20 * MS);
        assert!(latency_findings(&a).is_empty());
        feed(&mut a, LATENCY_MIN_ANSWERS - 1, 1, 2, 20 * MS);
        assert_eq!(latency_findings(&a).len(), 1);
    }

    #[test]
    fn the_median_is_the_windows_p50() {
        let mut a = analysis();
        for seq in 0..37 {
            a.record(
                BranchIndex::new(1).unwrap(),
                &slow_round(seq, "198.18.1.2", seq % 5 == 0, 2, (seq * 7919 % 31) * MS),
            );
        }
        let b = &a.branches[0];
        assert_eq!(end_to_end_median(b), b.destination.window_stats().p50_ns);
    }

    #[test]
    fn a_slow_branch_clears_with_hysteresis() {
        let mut a = analysis();
        feed(&mut a, 0, 100, 2, 20 * MS);
        assert_eq!(latency_findings(&a).len(), 1);
        // 3 ms more would not raise (above), but a slow branch stays slow
        // until it is under half the margins: 2.5 ms and 25 %.
        feed(&mut a, 100, 100, 2, 3 * MS);
        let still = latency_findings(&a);
        assert_eq!(still.len(), 1, "{still:?}");
        assert_eq!(still[0].latency.unwrap().excess_ns(), 3 * MS);
        feed(&mut a, 200, 100, 2, 2 * MS);
        assert!(latency_findings(&a).is_empty());
        // And it does not come back at 3 ms.
        feed(&mut a, 300, 100, 2, 3 * MS);
        assert!(latency_findings(&a).is_empty());
    }

    #[test]
    fn a_lossy_and_slow_branch_has_both_findings_loss_first() {
        let mut a = analysis();
        for seq in 0..100 {
            a.record(
                BranchIndex::new(1).unwrap(),
                &round(seq, "198.18.1.2", false),
            );
            a.record(
                BranchIndex::new(2).unwrap(),
                &slow_round(seq, "198.18.2.2", seq % 3 == 0, 2, 20 * MS),
            );
        }
        let kinds: Vec<_> = a
            .snapshot()
            .unwrap()
            .findings
            .iter()
            .map(|f| (f.kind, f.branch.get()))
            .collect();
        assert_eq!(
            kinds,
            [(DegradationKind::Loss, 2), (DegradationKind::Latency, 2)]
        );
    }
    #[test]
    fn a_branch_whose_flow_takes_another_path_for_confirm_rounds_is_a_route_change_of_that_branch()
    {
        let mut a = analysis();
        let one = BranchIndex::new(1).unwrap();
        let two = BranchIndex::new(2).unwrap();
        let mut events = Vec::new();
        let mut feed = |a: &mut BranchesAnalysis, seq: u64, via2: &str, lost: bool| {
            assert_eq!(a.record(one, &round(seq, "198.18.1.2", false)), None);
            if let Some(e) = a.record(two, &round(seq, via2, lost)) {
                events.push((seq, e));
            }
        };
        for seq in 0..10 {
            feed(&mut a, seq, "198.18.2.2", false);
        }
        // One round elsewhere, then the known path again: no change; nor
        // do rounds lost past the balancer tell anything.
        feed(&mut a, 10, "198.18.3.2", false);
        feed(&mut a, 11, "198.18.2.2", false);
        feed(&mut a, 12, "198.18.2.2", true);
        // Three rounds in a row through 198.18.3.2 (a lost one between does
        // not break the run): branch 2's route changed.
        feed(&mut a, 20, "198.18.3.2", false);
        feed(&mut a, 21, "198.18.3.2", true);
        feed(&mut a, 22, "198.18.3.2", false);
        feed(&mut a, 23, "198.18.3.2", false);
        // Told once: the new path is the known one now.
        for seq in 24..40 {
            feed(&mut a, seq, "198.18.3.2", false);
        }
        let path = |via: &str| {
            vec![
                Some(ip("198.18.0.1")),
                Some(ip(via)),
                Some(ip("198.18.9.1")),
                Some(ip("198.18.9.9")),
            ]
        };
        assert_eq!(
            events,
            vec![(
                23,
                PathEvent::RouteChanged {
                    at_ms: 20_000,
                    before: path("198.18.2.2"),
                    after: path("198.18.3.2"),
                    first_changed_ttl: 2,
                    branch: Some(two),
                }
            )]
        );
        // A rediscovery finding the same paths checks the new flows against
        // them again: branch 2 back on 198.18.2.2 is no change.
        a.set_layout(layout());
        for seq in 40..45 {
            assert_eq!(a.record(two, &round(seq, "198.18.2.2", false)), None);
        }
    }

    #[test]
    fn a_branch_path_getting_longer_or_shorter_is_a_route_change() {
        let mut a = BranchesAnalysis::new(100, 2);
        a.set_layout(layout());
        let two = BranchIndex::new(2).unwrap();
        // The destination now answers at TTL 3 (the join router is gone).
        let shorter = |seq: u64| {
            let mut r = round(seq, "198.18.2.2", false);
            r.hops.truncate(2);
            r.hops.push(HopSample::answered(
                Ttl::new(3).unwrap(),
                HopAnswer {
                    responder: ip("198.18.9.9"),
                    rtt: Rtt::from_nanos(3_000_000),
                    is_destination: true,
                    reply_ttl: None,
                    quote: None,
                },
            ));
            r.destination_ttl = Some(Ttl::new(3).unwrap());
            r
        };
        assert_eq!(a.record(two, &shorter(0)), None);
        match a.record(two, &shorter(1)) {
            Some(PathEvent::RouteChanged {
                after,
                first_changed_ttl,
                branch,
                ..
            }) => {
                assert_eq!(first_changed_ttl, 3);
                assert_eq!(branch, Some(two));
                assert_eq!(
                    after,
                    vec![
                        Some(ip("198.18.0.1")),
                        Some(ip("198.18.2.2")),
                        Some(ip("198.18.9.9"))
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
        // And back: longer again.
        assert_eq!(a.record(two, &round(2, "198.18.2.2", false)), None);
        assert!(a.record(two, &round(3, "198.18.2.2", false)).is_some());
    }
}
