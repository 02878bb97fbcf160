//! The alert engine: per target, the state machine of every rule, fed one
//! snapshot per round; per peer, the same for loss, latency and jitter, fed
//! one window per update. Pure and synchronous (no I/O, no clock): the caller
//! persists what it decides and restores it after a restart.
//!
//! It also keeps a raised target alert's diagnosis current: a loss or latency
//! alert remembers the hop its last event named as where the problem starts,
//! and once the analysis has named another hop, at least [`SURE_CONFIDENCE`]
//! sure, for [`UPDATE_AFTER_ROUNDS`] rounds in a row, the engine decides an
//! update ([`AlertState::Updated`]). An unsure round breaks the streak: the
//! rounds of one streak share most of their window, so three of them in a row
//! are not three independent opinions, and an unsure one is no opinion.
//! A localisation moves while a window fills or empties; waiting for it to
//! hold keeps receivers from hearing every step of that.

use std::collections::{HashMap, HashSet};

use super::event::{ClearReason, StartHop};
use super::kind::{AlertKind, AlertState};
use super::machine::{Condition, Machine, Step};
use super::peer_rules::{self, PeerRound};
use super::rules::{self, Reading, RoundView};
use super::settings::{AlertRules, AlertsConfig};
use super::subject::Subject;
use crate::analysis::{PathEvent, TargetSnapshot};
use crate::model::TargetId;

/// Rounds in a row the analysis must name the same new hop before a raised
/// alert is updated with it.
pub const UPDATE_AFTER_ROUNDS: u32 = 3;
/// A loss or latency raise whose localisation is less sure than this waits
/// (up to `raise_rounds` more rounds) for a surer one: the raise is what an
/// operator acts on, and a few more rounds usually settle where it starts.
pub const SURE_CONFIDENCE: f64 = 0.75;

/// A raise, update or clear decided this round.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub kind: AlertKind,
    pub state: AlertState,
    pub reading: Reading,
    pub summary: String,
    /// Why a clear happened; `None` for a raise or an update.
    pub reason: Option<ClearReason>,
    /// The route or hop-count change that raised it.
    pub path_event: Option<PathEvent>,
}

/// What one round decided for its target.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundOutcome {
    pub transitions: Vec<Transition>,
    /// The destination answered for the first time ever: persist it, so a
    /// restart still knows this target is one that answers.
    pub first_answer: bool,
}

/// Where a raised alert's events said its problem starts, and the other hop
/// the analysis has been naming since, if any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Placement {
    /// The hop the alert's last event (its raise or latest update) named;
    /// `None` when it named none.
    sent: Option<StartHop>,
    /// A different hop the analysis names, and in how many rounds in a row.
    candidate: Option<(StartHop, u32)>,
    /// Rounds a due raise has waited for a surer localisation.
    held: u32,
}

impl Placement {
    fn sent(sent: Option<StartHop>) -> Placement {
        Placement {
            sent,
            candidate: None,
            held: 0,
        }
    }

    /// Takes in where the analysis says the problem starts this round;
    /// returns the new hop once it has held for `UPDATE_AFTER_ROUNDS`
    /// rounds, and from then on counts it as sent.
    fn observe(&mut self, now: Option<StartHop>) -> Option<StartHop> {
        // No answer, or the one already sent, breaks any streak: a hop that
        // comes and goes is not a new diagnosis.
        let Some(hop) = now.filter(|hop| Some(*hop) != self.sent) else {
            self.candidate = None;
            return None;
        };
        let rounds = match self.candidate {
            Some((seen, rounds)) if seen == hop => rounds + 1,
            _ => 1,
        };
        if rounds >= UPDATE_AFTER_ROUNDS {
            *self = Placement::sent(Some(hop));
            Some(hop)
        } else {
            self.candidate = Some((hop, rounds));
            None
        }
    }
}

#[derive(Debug, Clone, Default)]
struct TargetState {
    answered_ever: bool,
    silent_rounds: u32,
    /// The destination's since-start (sent, received) at the last round.
    seen: (u64, u64),
    machines: [Machine; AlertKind::ALL.len()],
    /// Per kind; meaningful while that kind's machine is raised.
    placements: [Placement; AlertKind::ALL.len()],
}

#[derive(Debug, Clone, Default)]
struct PeerState {
    /// The peer's resolved-probe count when it was last judged.
    seen: Option<u64>,
    machines: [Machine; AlertKind::ALL.len()],
}

/// Every target's and every peer's alert state.
#[derive(Debug, Clone)]
pub struct AlertEngine {
    config: AlertsConfig,
    targets: HashMap<TargetId, TargetState>,
    peers: HashMap<TargetId, PeerState>,
    /// The peers in the config: only these are judged, so a window read
    /// just before a reload removed its peer cannot raise after the clear.
    configured_peers: HashSet<TargetId>,
    /// The service's own components (`store`, `outbox`), by name.
    services: HashMap<TargetId, [Machine; AlertKind::ALL.len()]>,
}

impl AlertEngine {
    pub fn new(config: AlertsConfig) -> AlertEngine {
        AlertEngine {
            config,
            targets: HashMap::new(),
            peers: HashMap::new(),
            configured_peers: HashSet::new(),
            services: HashMap::new(),
        }
    }

    /// The peers the config has now (at start and on every reload).
    pub fn set_peers(&mut self, names: impl IntoIterator<Item = TargetId>) {
        self.configured_peers = names.into_iter().collect();
    }

    /// New thresholds (a reload); machine states are kept.
    pub fn set_config(&mut self, config: AlertsConfig) {
        self.config = config;
    }

    pub fn config(&self) -> &AlertsConfig {
        &self.config
    }

    /// Restores what a previous run persisted: whether a target ever answered
    /// and which alerts of a target or a peer are raised.
    pub fn restore(&mut self, subject: &Subject, answered: bool, raised: &[AlertKind]) {
        let machines = match subject {
            Subject::Target(id) => {
                let state = self.targets.entry(id.clone()).or_default();
                state.answered_ever |= answered;
                &mut state.machines
            }
            Subject::Peer(name) => &mut self.peers.entry(name.clone()).or_default().machines,
            Subject::Service(name) => self.services.entry(name.clone()).or_default(),
        };
        for kind in raised {
            machines[kind.index()] = Machine::raised();
        }
    }

    /// Restores where the last event of a target's raised `kind` alert said
    /// the problem starts (`None`: it said nowhere), so a restart neither
    /// repeats an update nor misses one.
    pub fn restore_placement(
        &mut self,
        target: &TargetId,
        kind: AlertKind,
        sent: Option<StartHop>,
    ) {
        let state = self.targets.entry(target.clone()).or_default();
        state.placements[kind.index()] = Placement::sent(sent);
    }

    /// The raised alerts of `subject`.
    pub fn raised(&self, subject: &Subject) -> Vec<AlertKind> {
        let machines = match subject {
            Subject::Target(id) => self.targets.get(id).map(|s| &s.machines),
            Subject::Peer(name) => self.peers.get(name).map(|s| &s.machines),
            Subject::Service(name) => self.services.get(name),
        };
        machines.map_or_else(Vec::new, |machines| {
            AlertKind::ALL
                .into_iter()
                .filter(|k| machines[k.index()].is_raised())
                .collect()
        })
    }

    /// Takes in one round's snapshot of a target and the path events it caused.
    pub fn evaluate(&mut self, snapshot: &TargetSnapshot, events: &[PathEvent]) -> RoundOutcome {
        let rules: AlertRules = *self.config.rules_for(&snapshot.target);
        let state = self.targets.entry(snapshot.target.clone()).or_default();
        let dest = &snapshot.destination.since_start;
        // A target's analysis restarts with the process or when it is re-added.
        if dest.sent < state.seen.0 {
            state.seen = (0, 0);
        }
        let answered_now = dest.received > state.seen.1;
        if answered_now {
            state.silent_rounds = 0;
        } else {
            let rounds = dest.sent.saturating_sub(state.seen.0);
            state.silent_rounds = state
                .silent_rounds
                .saturating_add(u32::try_from(rounds).unwrap_or(u32::MAX));
        }
        state.seen = (dest.sent, dest.received);
        let first_answer = answered_now && !state.answered_ever;
        state.answered_ever |= answered_now;

        let round = RoundView {
            snapshot,
            events,
            answered_ever: state.answered_ever,
            answered_now,
            silent_rounds: state.silent_rounds,
        };
        let mut transitions = Vec::new();
        for kind in AlertKind::ALL {
            let machine = &mut state.machines[kind.index()];
            let placement = &mut state.placements[kind.index()];
            let Some(reading) = rules::read(kind, &rules, &round) else {
                // A check turned off by a reload clears what it had raised.
                if machine.is_raised() {
                    *machine = Machine::default();
                    *placement = Placement::default();
                    transitions.push(check_disabled(kind));
                }
                continue;
            };
            // Window rules need the condition to hold for raise_rounds; the
            // others carry their own duration (unreachable_rounds) or are
            // events (route and hop-count changes) and raise at once.
            let raise_after = match kind {
                AlertKind::Loss
                | AlertKind::Latency
                | AlertKind::Jitter
                | AlertKind::Mos
                | AlertKind::BranchLoss
                | AlertKind::BranchLatency => rules.raise_rounds,
                _ => 1,
            };
            let step = machine.step(reading.condition, raise_after, rules.clear_rounds);
            let start = || rules::localisation(snapshot, kind).map(|l| StartHop(l.ttl));
            let state = match step {
                Step::Stay => {
                    // Only while the condition still breaches: a recovering
                    // window's leftovers say nothing new about where it starts.
                    if machine.is_raised()
                        && reading.condition == Condition::Breach
                        && rules::updates_localisation(kind)
                    {
                        let before = placement.sent;
                        let sure = rules::localisation(snapshot, kind)
                            .filter(|l| l.confidence >= SURE_CONFIDENCE)
                            .map(|l| StartHop(l.ttl));
                        if let Some(now) = placement.observe(sure) {
                            transitions.push(Transition {
                                kind,
                                state: AlertState::Updated,
                                summary: rules::update_summary(
                                    kind,
                                    snapshot.target.as_str(),
                                    now,
                                    before,
                                ),
                                reading,
                                reason: None,
                                path_event: None,
                            });
                        }
                    }
                    if !machine.is_raised() && reading.condition == Condition::Healthy {
                        placement.held = 0;
                    }
                    continue;
                }
                Step::Raise => {
                    let unsure = rules::updates_localisation(kind)
                        && rules::localisation(snapshot, kind)
                            .is_some_and(|l| l.confidence < SURE_CONFIDENCE);
                    if unsure && placement.held < rules.raise_rounds {
                        // Not yet: one breach short of raising again next round.
                        placement.held += 1;
                        *machine = Machine::Idle {
                            breaches: raise_after.saturating_sub(1),
                        };
                        continue;
                    }
                    // The raise carries this round's localisation: it is sent.
                    *placement = Placement::sent(start());
                    AlertState::Raised
                }
                Step::Clear => {
                    *placement = Placement::default();
                    AlertState::Cleared
                }
            };
            let path_event = rules::path_event(kind, events).cloned();
            let mut summary = rules::summary(
                kind,
                state == AlertState::Raised,
                &reading,
                &rules,
                snapshot.window_probes,
                path_event.as_ref(),
            );
            // A branch alert names its branch in the summary itself, not only
            // in its localisation, so every webhook format shows it.
            if state == AlertState::Raised {
                let named = match kind {
                    AlertKind::BranchLoss => rules::branch_finding(snapshot)
                        .map(|f| format!("loss on {}", rules::branch_name(f))),
                    AlertKind::BranchLatency => rules::branch_latency_finding(snapshot)
                        .map(|f| format!("latency on {}", rules::branch_name(f))),
                    _ => None,
                };
                if let Some(named) = named {
                    summary = format!("{named}: {summary}");
                }
            }
            transitions.push(Transition {
                kind,
                state,
                summary,
                reading,
                reason: (state == AlertState::Cleared).then_some(ClearReason::Recovered),
                path_event: path_event.filter(|_| state == AlertState::Raised),
            });
        }
        RoundOutcome {
            transitions,
            first_answer,
        }
    }

    /// Takes in one update of peer `name`'s window. A round is judged only
    /// when the window took new probes since the last one (or the session
    /// failed), so a peer probed more slowly than updates come is not judged
    /// twice on the same probes. Peers not in the config are ignored.
    pub fn evaluate_peer(&mut self, name: &TargetId, round: &PeerRound<'_>) -> Vec<Transition> {
        if !self.configured_peers.contains(name) {
            return Vec::new();
        }
        let rules: AlertRules = *self.config.rules_for_peer(name);
        let state = self.peers.entry(name.clone()).or_default();
        let fresh = state.seen != Some(round.resolved) || round.failed.is_some();
        state.seen = Some(round.resolved);
        let mut transitions = Vec::new();
        for kind in AlertKind::ALL {
            let machine = &mut state.machines[kind.index()];
            let Some(reading) = peer_rules::read(kind, &rules, round) else {
                if machine.is_raised() {
                    *machine = Machine::default();
                    transitions.push(check_disabled(kind));
                }
                continue;
            };
            if !fresh {
                continue;
            }
            let state =
                match machine.step(reading.condition, rules.raise_rounds, rules.clear_rounds) {
                    Step::Stay => continue,
                    Step::Raise => AlertState::Raised,
                    Step::Clear => AlertState::Cleared,
                };
            transitions.push(Transition {
                kind,
                state,
                summary: peer_rules::summary(
                    kind,
                    state == AlertState::Raised,
                    &reading,
                    &rules,
                    round,
                ),
                reading,
                reason: (state == AlertState::Cleared).then_some(ClearReason::Recovered),
                path_event: None,
            });
        }
        transitions
    }

    /// Drops a removed target's or peer's state (one re-added later starts
    /// over, like its analysis or its window).
    pub fn forget(&mut self, subject: &Subject) {
        match subject {
            Subject::Target(id) => {
                self.targets.remove(id);
            }
            Subject::Peer(name) => {
                self.peers.remove(name);
            }
            Subject::Service(name) => {
                self.services.remove(name);
            }
        }
    }

    /// Takes in how one of the service's components runs: `problem` says
    /// what is wrong while it is degraded, `None` once it is fine. The
    /// `kind` alert of `service:COMPONENT` raises at the first degraded
    /// reading and clears at the first fine one: these are states the
    /// service knows for certain, not noisy measurements.
    pub fn evaluate_service(
        &mut self,
        component: &TargetId,
        kind: AlertKind,
        problem: Option<&str>,
    ) -> Option<Transition> {
        let machine = &mut self.services.entry(component.clone()).or_default()[kind.index()];
        let condition = if problem.is_some() {
            Condition::Breach
        } else {
            Condition::Healthy
        };
        let state = match machine.step(condition, 1, 1) {
            Step::Raise => AlertState::Raised,
            Step::Clear => AlertState::Cleared,
            Step::Stay => return None,
        };
        Some(Transition {
            kind,
            state,
            reading: Reading {
                condition,
                value: None,
                threshold: None,
                unit: None,
            },
            summary: match problem {
                Some(problem) => problem.to_owned(),
                None => format!("the {component} runs normally again"),
            },
            reason: (state == AlertState::Cleared).then_some(ClearReason::Recovered),
            path_event: None,
        })
    }

    /// Every target and peer the engine holds state for.
    pub fn known_subjects(&self) -> Vec<Subject> {
        let targets = self.targets.keys().cloned().map(Subject::Target);
        targets
            .chain(self.peers.keys().cloned().map(Subject::Peer))
            .collect()
    }
}

/// The clear of a raised alert whose check a reload turned off.
fn check_disabled(kind: AlertKind) -> Transition {
    Transition {
        kind,
        state: AlertState::Cleared,
        reading: Reading {
            condition: super::machine::Condition::Neutral,
            value: None,
            threshold: None,
            unit: None,
        },
        summary: format!("the {kind} check was turned off"),
        reason: Some(ClearReason::CheckDisabled),
        path_event: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{AnalysisConfig, TargetAnalysis};
    use crate::model::{HopAnswer, HopSample, RoundRecord};
    use crate::probe::TimestampSource;
    use crate::probe::{Rtt, Ttl};
    use std::net::{IpAddr, Ipv4Addr};

    const MS: u64 = 1_000_000;
    const DST: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1));

    fn router(ttl: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, ttl - 1, 2))
    }

    /// A 3-router chain whose rounds are decided by `answer(seq, ttl)`, run
    /// through the real analysis and the engine; returns every transition with
    /// the round it happened in.
    struct Sim {
        analysis: TargetAnalysis,
        engine: AlertEngine,
        seq: u64,
        responders: Vec<IpAddr>,
        /// Routers added to the way back of hop 3 and the destination.
        return_extra: u8,
        /// Every transition so far, in order.
        all: Vec<Transition>,
    }

    impl Sim {
        fn new(rules: AlertRules, window: usize) -> Sim {
            let id = TargetId::new("t").unwrap();
            let config = AlertsConfig {
                rules,
                ..AlertsConfig::default()
            };
            Sim {
                analysis: TargetAnalysis::new(id, &AnalysisConfig::new(window, 3).unwrap()),
                engine: AlertEngine::new(config),
                seq: 0,
                responders: (1..=3).map(router).collect(),
                return_extra: 0,
                all: Vec::new(),
            }
        }

        fn rounds(
            &mut self,
            n: usize,
            answer: impl Fn(u64, u8) -> Option<u64>,
        ) -> Vec<(u64, AlertKind, AlertState)> {
            let mut out = Vec::new();
            for _ in 0..n {
                self.seq += 1;
                let seq = self.seq;
                let hops: Vec<HopSample> = (1..=4u8)
                    .map(|ttl| {
                        let rtt = answer(seq, ttl);
                        let addr = if ttl == 4 {
                            DST
                        } else {
                            self.responders[usize::from(ttl) - 1]
                        };
                        let reply_ttl =
                            64 - (ttl - 1) - if ttl >= 3 { self.return_extra } else { 0 };
                        let ttl = Ttl::new(ttl).unwrap();
                        match rtt {
                            Some(ns) => HopSample::answered(
                                ttl,
                                HopAnswer {
                                    responder: addr,
                                    rtt: Rtt::from_nanos(ns),
                                    is_destination: ttl.get() == 4,
                                    reply_ttl: Some(reply_ttl),
                                    quote: None,
                                },
                            ),
                            None => HopSample::lost(ttl),
                        }
                    })
                    .collect();
                let reached = hops[3].reached();
                let round = RoundRecord {
                    target: TargetId::new("t").unwrap(),
                    seq,
                    started_at_ms: seq * 100,
                    hops,
                    destination_ttl: reached.then(|| Ttl::new(4).unwrap()),
                    source: TimestampSource::Ebpf,
                };
                let events = self.analysis.record(&round).unwrap();
                let outcome = self.engine.evaluate(&self.analysis.snapshot(), &events);
                out.extend(outcome.transitions.iter().map(|t| (seq, t.kind, t.state)));
                self.all.extend(outcome.transitions);
            }
            out
        }
    }

    fn healthy(_: u64, ttl: u8) -> Option<u64> {
        Some(u64::from(ttl) * MS)
    }

    fn rules() -> AlertRules {
        AlertRules {
            loss_pct: 20.0,
            latency_ms: 30.0,
            jitter_ms: 0.0,
            mos_below: 0.0,
            unreachable_rounds: 5,
            raise_rounds: 3,
            clear_rounds: 4,
            clear_ratio: 0.5,
            ..AlertRules::default()
        }
    }

    #[test]
    fn a_degraded_component_raises_once_and_clears_once_it_is_fine() {
        let mut engine = AlertEngine::new(AlertsConfig::default());
        let store = TargetId::new("store").unwrap();
        assert_eq!(
            engine.evaluate_service(&store, AlertKind::Store, None),
            None
        );
        let raised = engine
            .evaluate_service(&store, AlertKind::Store, Some("the disk is full"))
            .expect("a raise");
        assert_eq!(
            (raised.kind, raised.state),
            (AlertKind::Store, AlertState::Raised)
        );
        assert_eq!(raised.summary, "the disk is full");
        assert_eq!(
            engine.evaluate_service(&store, AlertKind::Store, Some("still full")),
            None,
            "raised once"
        );
        assert_eq!(
            engine.raised(&Subject::service("store")),
            vec![AlertKind::Store]
        );
        let cleared = engine
            .evaluate_service(&store, AlertKind::Store, None)
            .expect("a clear");
        assert_eq!(cleared.state, AlertState::Cleared);
        assert_eq!(cleared.reason, Some(ClearReason::Recovered));
        assert_eq!(cleared.summary, "the store runs normally again");
        // A restart restores a raised one, which then clears when fine.
        let mut restarted = AlertEngine::new(AlertsConfig::default());
        restarted.restore(&Subject::service("store"), false, &[AlertKind::Store]);
        let cleared = restarted.evaluate_service(&store, AlertKind::Store, None);
        assert_eq!(cleared.map(|t| t.state), Some(AlertState::Cleared));
    }

    #[test]
    fn loss_raises_once_and_clears_once_with_hysteresis() {
        // Raise at 20%, clear at 8% or less, over 20 probes.
        let mut sim = Sim::new(
            AlertRules {
                clear_ratio: 0.4,
                ..rules()
            },
            20,
        );
        assert!(sim.rounds(30, healthy).is_empty());
        // 50% loss from hop 2 on.
        let lossy =
            |seq: u64, ttl: u8| (ttl < 2 || seq.is_multiple_of(2)).then(|| u64::from(ttl) * MS);
        let raised = sim.rounds(30, lossy);
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert_eq!(
            (raised[0].1, raised[0].2),
            (AlertKind::Loss, AlertState::Raised)
        );
        // 20% reached after 4 lost probes (8 rounds); then 3 rounds to raise.
        assert!(raised[0].0 <= 42, "{raised:?}");
        // One probe in seven lost: 10-15% of 20, inside the band: nothing moves.
        let band =
            |seq: u64, ttl: u8| (ttl < 2 || !seq.is_multiple_of(7)).then(|| u64::from(ttl) * MS);
        let during = sim.rounds(60, band);
        assert!(
            during.is_empty(),
            "the band neither raises again nor clears: {during:?}"
        );
        let cleared = sim.rounds(30, healthy);
        assert_eq!(cleared.len(), 1, "exactly one clear: {cleared:?}");
        assert_eq!(
            (cleared[0].1, cleared[0].2),
            (AlertKind::Loss, AlertState::Cleared)
        );
        let reasons: Vec<Option<ClearReason>> = sim.all.iter().map(|t| t.reason).collect();
        assert_eq!(reasons, vec![None, Some(ClearReason::Recovered)]);
    }

    #[test]
    fn latency_raises_on_the_destination_and_clears_below_the_band() {
        let mut sim = Sim::new(rules(), 10);
        assert!(sim.rounds(15, healthy).is_empty());
        let slow = |_: u64, ttl: u8| Some(u64::from(ttl) * MS + if ttl >= 3 { 40 * MS } else { 0 });
        let got = sim.rounds(20, slow);
        assert_eq!(
            got.iter().map(|t| (t.1, t.2)).collect::<Vec<_>>(),
            vec![(AlertKind::Latency, AlertState::Raised)]
        );
        let got = sim.rounds(20, healthy);
        assert_eq!(
            got.iter().map(|t| (t.1, t.2)).collect::<Vec<_>>(),
            vec![(AlertKind::Latency, AlertState::Cleared)]
        );
    }

    #[test]
    fn a_target_that_never_answers_raises_nothing() {
        let mut sim = Sim::new(rules(), 10);
        let silent = |_: u64, ttl: u8| (ttl < 4).then(|| u64::from(ttl) * MS);
        assert!(sim.rounds(100, silent).is_empty());
    }

    #[test]
    fn a_target_that_stops_answering_is_unreachable_then_back() {
        let mut sim = Sim::new(rules(), 10);
        sim.rounds(20, healthy);
        let dark = |_: u64, ttl: u8| (ttl < 3).then(|| u64::from(ttl) * MS);
        let got = sim.rounds(15, dark);
        let kinds: Vec<_> = got.iter().map(|t| (t.1, t.2)).collect();
        assert!(
            kinds.contains(&(AlertKind::Unreachable, AlertState::Raised)),
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&(AlertKind::Loss, AlertState::Raised)),
            "{kinds:?}"
        );
        let unreachable_at = got
            .iter()
            .find(|t| t.1 == AlertKind::Unreachable)
            .unwrap()
            .0;
        assert_eq!(unreachable_at, 25, "after 5 silent rounds (21..=25)");
        let back = sim.rounds(30, healthy);
        let kinds: Vec<_> = back.iter().map(|t| (t.1, t.2)).collect();
        assert!(
            kinds.contains(&(AlertKind::Unreachable, AlertState::Cleared)),
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&(AlertKind::Loss, AlertState::Cleared)),
            "{kinds:?}"
        );
        assert_eq!(back.len(), 2);
    }

    #[test]
    fn rate_limiting_at_a_router_raises_nothing() {
        let mut sim = Sim::new(rules(), 10);
        let limited =
            |seq: u64, ttl: u8| (ttl != 2 || seq.is_multiple_of(3)).then(|| u64::from(ttl) * MS);
        assert!(sim.rounds(100, limited).is_empty());
    }

    #[test]
    fn a_return_path_change_raises_only_when_asked_for() {
        for wanted in [false, true] {
            let mut sim = Sim::new(
                AlertRules {
                    return_path_change: wanted,
                    ..rules()
                },
                10,
            );
            sim.rounds(10, healthy);
            sim.return_extra = 2;
            let got = sim.rounds(10, healthy);
            let kinds: Vec<_> = got.iter().map(|t| (t.1, t.2)).collect();
            let expected = if wanted {
                vec![
                    (AlertKind::ReturnPathChange, AlertState::Raised),
                    (AlertKind::ReturnPathChange, AlertState::Cleared),
                ]
            } else {
                vec![]
            };
            assert_eq!(kinds, expected, "return_path_change = {wanted}");
        }
        let raised = {
            let mut sim = Sim::new(
                AlertRules {
                    return_path_change: true,
                    ..rules()
                },
                10,
            );
            sim.rounds(10, healthy);
            sim.return_extra = 2;
            sim.rounds(5, healthy);
            sim.all[0].summary.clone()
        };
        assert!(raised.contains("from hop 3 on"), "{raised}");
    }

    #[test]
    fn route_changes_raise_and_clear_once_the_path_is_stable() {
        let mut sim = Sim::new(rules(), 10);
        sim.rounds(10, healthy);
        sim.responders[1] = IpAddr::V4(Ipv4Addr::new(198, 18, 77, 2));
        let got = sim.rounds(10, healthy);
        let kinds: Vec<_> = got.iter().map(|t| (t.1, t.2)).collect();
        assert_eq!(
            kinds,
            vec![
                (AlertKind::RouteChange, AlertState::Raised),
                (AlertKind::RouteChange, AlertState::Cleared)
            ]
        );
        assert_eq!(
            got[1].0 - got[0].0,
            4,
            "cleared after clear_rounds stable rounds"
        );
    }

    #[test]
    fn restored_alerts_clear_after_a_restart() {
        let mut sim = Sim::new(rules(), 10);
        sim.engine.restore(
            &Subject::Target(TargetId::new("t").unwrap()),
            true,
            &[AlertKind::Loss],
        );
        let got = sim.rounds(20, healthy);
        assert_eq!(
            got.iter().map(|t| (t.1, t.2)).collect::<Vec<_>>(),
            vec![(AlertKind::Loss, AlertState::Cleared)]
        );
    }

    #[test]
    fn turning_a_check_off_clears_it() {
        let mut sim = Sim::new(rules(), 10);
        sim.engine.restore(
            &Subject::Target(TargetId::new("t").unwrap()),
            true,
            &[AlertKind::Jitter],
        );
        let got = sim.rounds(1, healthy);
        assert_eq!(got, vec![(1, AlertKind::Jitter, AlertState::Cleared)]);
        assert_eq!(sim.all[0].reason, Some(ClearReason::CheckDisabled));
        assert_eq!(sim.all[0].summary, "the jitter check was turned off");
    }

    // ---- updates of a raised alert's localisation ----

    /// 50% loss from hop `from` on (every other round lost there and after).
    fn loss_from(from: u8) -> impl Fn(u64, u8) -> Option<u64> {
        move |seq: u64, ttl: u8| (ttl < from || seq.is_multiple_of(2)).then(|| u64::from(ttl) * MS)
    }

    /// A sim whose loss alert is raised, with loss starting at hop 2; returns
    /// the sim and the snapshot of the raise's round (its loss localisation
    /// is at hop 2).
    fn raised_at_hop_2() -> (Sim, TargetSnapshot) {
        let mut sim = Sim::new(rules(), 10);
        sim.rounds(10, healthy);
        let raised = sim.rounds(30, loss_from(2));
        assert_eq!(
            raised.iter().map(|t| (t.1, t.2)).collect::<Vec<_>>(),
            vec![(AlertKind::Loss, AlertState::Raised)]
        );
        let snapshot = sim.analysis.snapshot();
        let place = rules::localisation(&snapshot, AlertKind::Loss).expect("loss is placed");
        assert_eq!(place.ttl, 2);
        (sim, snapshot)
    }

    /// `snapshot` with its loss localisation at `ttl` (none for `None`): the
    /// same window, so the alert stays raised, with another diagnosis.
    fn placed(snapshot: &TargetSnapshot, ttl: Option<u8>) -> TargetSnapshot {
        let mut next = snapshot.clone();
        let loss = snapshot
            .localisations
            .iter()
            .find(|l| l.kind == crate::analysis::DegradationKind::Loss)
            .expect("a loss localisation");
        next.localisations = ttl
            .map(|ttl| {
                let mut moved = loss.clone();
                moved.ttl = ttl;
                vec![moved]
            })
            .unwrap_or_default();
        next
    }

    /// Evaluates `snapshot` with its loss localisation at each of `ttls` in
    /// turn; returns the transitions with the index of their round.
    fn feed(
        engine: &mut AlertEngine,
        snapshot: &TargetSnapshot,
        ttls: &[Option<u8>],
    ) -> Vec<(usize, Transition)> {
        ttls.iter()
            .enumerate()
            .flat_map(|(i, ttl)| {
                let outcome = engine.evaluate(&placed(snapshot, *ttl), &[]);
                outcome.transitions.into_iter().map(move |t| (i, t))
            })
            .collect()
    }

    /// `snapshot` with its loss localisation's confidence set to `confidence`.
    fn sure(snapshot: &TargetSnapshot, confidence: f64) -> TargetSnapshot {
        let mut next = snapshot.clone();
        for place in &mut next.localisations {
            place.confidence = confidence;
        }
        next
    }

    #[test]
    fn an_unsure_raise_waits_up_to_raise_rounds_for_a_surer_localisation() {
        let (_, snapshot) = raised_at_hop_2();
        let raise_at = |confidences: &[f64]| {
            let mut engine = AlertEngine::new(AlertsConfig {
                rules: rules(),
                ..AlertsConfig::default()
            });
            confidences.iter().position(|c| {
                engine
                    .evaluate(&sure(&snapshot, *c), &[])
                    .transitions
                    .iter()
                    .any(|t| t.kind == AlertKind::Loss && t.state == AlertState::Raised)
            })
        };
        // Sure: raised on the third breach (raise_rounds = 3).
        assert_eq!(raise_at(&[0.99; 10]), Some(2));
        // Unsure for two more rounds, then sure: raised then.
        assert_eq!(raise_at(&[0.4, 0.4, 0.4, 0.4, 0.99, 0.99, 0.99]), Some(4));
        // Never sure: raised anyway after waiting raise_rounds more rounds.
        assert_eq!(raise_at(&[0.4; 10]), Some(5));
    }

    #[test]
    fn a_raised_alert_is_updated_once_its_new_localisation_holds() {
        let (mut sim, snapshot) = raised_at_hop_2();
        let got = feed(&mut sim.engine, &snapshot, &[Some(3); 10]);
        assert_eq!(got.len(), 1, "{got:?}");
        let (round, update) = &got[0];
        assert_eq!(*round, 2, "after UPDATE_AFTER_ROUNDS rounds naming hop 3");
        assert_eq!(
            (update.kind, update.state),
            (AlertKind::Loss, AlertState::Updated)
        );
        assert_eq!(
            update.summary,
            "loss on t: where it starts is now hop 3 (was hop 2)"
        );
        assert_eq!(update.reason, None);
        assert_eq!(update.reading.unit, Some("pct"));
        assert!(update.reading.value.is_some());
        // Back to hop 2: another update, against what was last sent.
        let back = feed(&mut sim.engine, &snapshot, &[Some(2); 5]);
        assert_eq!(back.len(), 1, "{back:?}");
        assert_eq!(
            back[0].1.summary,
            "loss on t: where it starts is now hop 2 (was hop 3)"
        );
        assert_eq!(
            sim.engine
                .raised(&Subject::Target(TargetId::new("t").unwrap())),
            vec![AlertKind::Loss],
            "an updated alert is still raised"
        );
    }

    #[test]
    fn an_unsure_new_localisation_updates_nothing() {
        let (mut sim, snapshot) = raised_at_hop_2();
        let at_3 = placed(&snapshot, Some(3));
        let mut updates = |confidences: &[f64]| {
            confidences
                .iter()
                .flat_map(|c| sim.engine.evaluate(&sure(&at_3, *c), &[]).transitions)
                .filter(|t| t.state == AlertState::Updated)
                .count()
        };
        assert_eq!(updates(&[0.5; 10]), 0, "never sure: never updated");
        // An unsure round breaks a streak of sure ones.
        assert_eq!(updates(&[0.9, 0.9, 0.5, 0.9, 0.9]), 0);
        assert_eq!(updates(&[0.9]), 1, "the third sure round in a row");
    }

    #[test]
    fn a_flapping_localisation_updates_nothing() {
        let (mut sim, snapshot) = raised_at_hop_2();
        // Never the same new hop three rounds in a row: a round naming the
        // hop already sent, another hop, or none breaks the streak.
        let flapping = [
            Some(3),
            Some(3),
            Some(2),
            Some(3),
            Some(3),
            None,
            Some(3),
            Some(1),
            Some(3),
            Some(3),
            Some(1),
            Some(1),
            Some(3),
            Some(2),
        ];
        for _ in 0..5 {
            let got = feed(&mut sim.engine, &snapshot, &flapping);
            assert!(got.is_empty(), "{got:?}");
        }
        // The analysis losing its localisation is no update either.
        assert!(feed(&mut sim.engine, &snapshot, &[None; 10]).is_empty());
    }

    #[test]
    fn a_cleared_alert_is_never_updated() {
        let (mut sim, snapshot) = raised_at_hop_2();
        assert_eq!(
            feed(&mut sim.engine, &snapshot, &[Some(3), Some(3)]).len(),
            0
        );
        let cleared = sim.rounds(40, healthy);
        assert_eq!(
            cleared.iter().map(|t| (t.1, t.2)).collect::<Vec<_>>(),
            vec![(AlertKind::Loss, AlertState::Cleared)]
        );
        // However long a localisation holds, nothing is raised to update.
        let after = sim.analysis.snapshot();
        let mut later = placed(&snapshot, Some(3));
        later.destination = after.destination.clone();
        for _ in 0..10 {
            let got = sim.engine.evaluate(&later, &[]);
            assert!(got.transitions.is_empty(), "{got:?}");
        }
    }

    #[test]
    fn a_real_move_of_the_loss_updates_the_alert_once() {
        let mut sim = Sim::new(rules(), 10);
        sim.rounds(10, healthy);
        let raised = sim.rounds(30, loss_from(3));
        assert_eq!(
            raised.iter().map(|t| (t.1, t.2)).collect::<Vec<_>>(),
            vec![(AlertKind::Loss, AlertState::Raised)]
        );
        sim.all.clear();
        // The loss moves one hop closer: the analysis follows as the window
        // fills, and the alert hears of it once.
        let moved = sim.rounds(60, loss_from(2));
        assert_eq!(
            moved.iter().map(|t| (t.1, t.2)).collect::<Vec<_>>(),
            vec![(AlertKind::Loss, AlertState::Updated)],
            "{:?}",
            sim.all
        );
        assert_eq!(
            sim.all[0].summary,
            "loss on t: where it starts is now hop 2 (was hop 3)"
        );
    }

    #[test]
    fn a_restored_alert_updates_against_what_it_last_sent() {
        let target = TargetId::new("t").unwrap();
        let (_, snapshot) = raised_at_hop_2();
        let restored = |sent: Option<u8>| {
            let mut engine = AlertEngine::new(AlertsConfig {
                rules: rules(),
                ..AlertsConfig::default()
            });
            engine.restore(&Subject::Target(target.clone()), true, &[AlertKind::Loss]);
            engine.restore_placement(&target, AlertKind::Loss, sent.map(StartHop));
            engine
        };
        // It last sent hop 2: hop 2 again is nothing new after a restart.
        let mut engine = restored(Some(2));
        assert!(feed(&mut engine, &snapshot, &[Some(2); 10]).is_empty());
        // It was raised without a localisation: one that appears and holds
        // is an update.
        let mut engine = restored(None);
        let got = feed(&mut engine, &snapshot, &[Some(2); 10]);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            got[0].1.summary,
            "loss on t: where it starts is now hop 2 (was not placed)"
        );
        // Jitter and MOS borrow other findings: they are never updated.
        let mut engine = AlertEngine::new(AlertsConfig {
            rules: AlertRules {
                mos_below: 4.4,
                ..rules()
            },
            ..AlertsConfig::default()
        });
        engine.restore(&Subject::Target(target.clone()), true, &[AlertKind::Mos]);
        let got = feed(&mut engine, &snapshot, &[Some(3); 10]);
        assert!(
            got.iter().all(|(_, t)| t.state != AlertState::Updated),
            "{got:?}"
        );
    }

    // ---- peers ----

    /// What happens to one probe of a peer.
    #[derive(Clone, Copy, PartialEq)]
    enum Fate {
        Answered,
        LostForward,
        LostBackward,
    }

    /// A peer whose probes go through a real window, updates judged by the engine.
    struct PeerSim {
        window: crate::analysis::PeerWindow,
        engine: AlertEngine,
        name: TargetId,
        seq: u32,
        reflector_seq: u32,
        rtt_ms: u64,
        failed: Option<&'static str>,
    }

    impl PeerSim {
        fn new(rules: AlertRules, window: usize) -> PeerSim {
            let name = TargetId::new("dc1").unwrap();
            let mut engine = AlertEngine::new(AlertsConfig {
                rules,
                ..AlertsConfig::default()
            });
            engine.set_peers([name.clone()]);
            PeerSim {
                window: crate::analysis::PeerWindow::new(window),
                engine,
                name,
                seq: 0,
                reflector_seq: 0,
                rtt_ms: 10,
                failed: None,
            }
        }

        fn probe(&mut self, fate: Fate) {
            use crate::peer::{OwdValidity, Reflection, Sample};
            let seq = self.seq;
            self.seq += 1;
            let sample = match fate {
                Fate::Answered => Sample::Reflected(Reflection {
                    seq,
                    reflector_seq: self.reflector_seq,
                    rtt_ns: self.rtt_ms * MS,
                    forward_ns: (self.rtt_ms * MS / 2) as i64,
                    backward_ns: (self.rtt_ms * MS / 2) as i64,
                    reflector_hold_ns: 1_000,
                    forward_ttl: 64,
                    backward_ttl: Some(64),
                    source: TimestampSource::Kernel,
                    owd: OwdValidity::SharedClock,
                    sent_unix_ns: 0,
                }),
                Fate::LostForward | Fate::LostBackward => Sample::Lost {
                    seq,
                    sent_unix_ns: 0,
                },
            };
            if fate != Fate::LostForward {
                self.reflector_seq += 1;
            }
            self.window.push(sample);
        }

        /// One update: `n` probes decided by `fate(i)`, then the engine
        /// judges the window; returns the transitions.
        fn update(&mut self, n: u32, fate: impl Fn(u32) -> Fate) -> Vec<Transition> {
            for _ in 0..n {
                let f = fate(self.seq);
                self.probe(f);
            }
            self.judge()
        }

        /// The engine judges the window as it is.
        fn judge(&mut self) -> Vec<Transition> {
            let stats = self.window.stats();
            let round = PeerRound {
                window: &stats,
                window_probes: self.window.capacity(),
                resolved: self.window.resolved(),
                failed: self.failed,
            };
            self.engine.evaluate_peer(&self.name, &round)
        }
    }

    fn kinds(transitions: &[Transition]) -> Vec<(AlertKind, AlertState)> {
        transitions.iter().map(|t| (t.kind, t.state)).collect()
    }

    fn peer_rules() -> AlertRules {
        AlertRules {
            loss_pct: 10.0,
            raise_rounds: 3,
            clear_rounds: 4,
            clear_ratio: 0.5,
            ..AlertRules::default()
        }
    }

    fn all_answered(_: u32) -> Fate {
        Fate::Answered
    }

    /// Every fifth probe's reply lost on the way back: 20%.
    fn backward_fifth(seq: u32) -> Fate {
        if seq.is_multiple_of(5) {
            Fate::LostBackward
        } else {
            Fate::Answered
        }
    }

    #[test]
    fn one_way_peer_loss_raises_once_naming_the_direction_and_clears_once() {
        let mut sim = PeerSim::new(peer_rules(), 50);
        for _ in 0..5 {
            assert!(sim.update(50, all_answered).is_empty());
        }
        let mut raised = Vec::new();
        let mut updates = 0;
        while raised.is_empty() && updates < 10 {
            raised = sim.update(50, backward_fifth);
            updates += 1;
        }
        assert_eq!(kinds(&raised), vec![(AlertKind::Loss, AlertState::Raised)]);
        assert_eq!(updates, 3, "raise_rounds updates of a lossy window");
        let t = &raised[0];
        assert_eq!(t.reading.unit, Some("pct"));
        assert!((19.0..=21.0).contains(&t.reading.value.unwrap()), "{t:?}");
        assert!(
            t.summary.contains("on the backward path (peer → here)"),
            "{}",
            t.summary
        );
        assert!(t.summary.contains("forward 0.0%"), "{}", t.summary);
        // Still lossy: nothing more.
        for _ in 0..10 {
            assert!(sim.update(50, backward_fifth).is_empty());
        }
        // Back to no loss: one clear, after clear_rounds healthy windows.
        let mut cleared = Vec::new();
        let mut updates = 0;
        while cleared.is_empty() && updates < 20 {
            cleared = sim.update(50, all_answered);
            updates += 1;
        }
        assert_eq!(
            kinds(&cleared),
            vec![(AlertKind::Loss, AlertState::Cleared)]
        );
        assert_eq!(updates, 4, "clear_rounds healthy windows");
        assert_eq!(cleared[0].reason, Some(ClearReason::Recovered));
        assert!(cleared[0]
            .summary
            .starts_with("round-trip loss back to 0.0%"));
        for _ in 0..10 {
            assert!(sim.update(50, all_answered).is_empty());
        }
    }

    #[test]
    fn a_peer_update_without_new_probes_is_not_another_round() {
        let mut sim = PeerSim::new(peer_rules(), 20);
        let forward = |seq: u32| {
            if seq.is_multiple_of(2) {
                Fate::LostForward
            } else {
                Fate::Answered
            }
        };
        assert!(sim.update(20, forward).is_empty(), "round 1");
        for _ in 0..10 {
            assert!(sim.judge().is_empty(), "the same window again");
        }
        assert!(sim.update(1, forward).is_empty(), "round 2");
        let raised = sim.update(1, forward);
        assert_eq!(kinds(&raised), vec![(AlertKind::Loss, AlertState::Raised)]);
        assert!(
            raised[0].summary.contains("forward path (here → peer)"),
            "{}",
            raised[0].summary
        );
    }

    #[test]
    fn a_peer_that_stops_answering_or_cannot_run_is_total_loss() {
        let rules = AlertRules {
            latency_ms: 50.0,
            jitter_ms: 5.0,
            ..peer_rules()
        };
        let mut sim = PeerSim::new(rules, 20);
        sim.update(20, all_answered);
        let mut got = Vec::new();
        for _ in 0..5 {
            got.extend(sim.update(20, |_| Fate::LostForward));
        }
        assert_eq!(kinds(&got), vec![(AlertKind::Loss, AlertState::Raised)]);
        assert_eq!(got[0].reading.value, Some(100.0));
        assert!(
            got[0].summary.starts_with("no reply from the peer"),
            "{}",
            got[0].summary
        );

        // A failed session: every update is a breaching round, even with a
        // healthy (stale) window and no new probes.
        let mut sim = PeerSim::new(rules, 20);
        sim.update(20, all_answered);
        sim.failed = Some("connection refused");
        let got: Vec<Transition> = (0..3).flat_map(|_| sim.judge()).collect();
        assert_eq!(kinds(&got), vec![(AlertKind::Loss, AlertState::Raised)]);
        assert!(
            got[0].summary.contains("connection refused"),
            "{}",
            got[0].summary
        );
        sim.failed = None;
        let got: Vec<Transition> = (0..4).flat_map(|_| sim.update(20, all_answered)).collect();
        assert_eq!(kinds(&got), vec![(AlertKind::Loss, AlertState::Cleared)]);
    }

    #[test]
    fn peer_latency_and_jitter_raise_on_the_rtt() {
        let rules = AlertRules {
            loss_pct: 0.0,
            latency_ms: 30.0,
            latency_stat: crate::alerts::LatencyStat::P95,
            jitter_ms: 0.0,
            ..peer_rules()
        };
        let mut sim = PeerSim::new(rules, 20);
        sim.update(20, all_answered);
        sim.rtt_ms = 40;
        let got: Vec<Transition> = (0..5).flat_map(|_| sim.update(20, all_answered)).collect();
        assert_eq!(kinds(&got), vec![(AlertKind::Latency, AlertState::Raised)]);
        assert_eq!(got[0].reading.value, Some(40.0));
        assert_eq!(
            got[0].summary,
            "RTT p95 40.0 ms over the last 20 probes (raises at 30.0 ms)"
        );
        // Turning latency off clears it; turning jitter on judges the RTT jitter.
        sim.engine.set_config(AlertsConfig {
            rules: AlertRules {
                latency_ms: 0.0,
                jitter_ms: 1.0,
                ..rules
            },
            ..AlertsConfig::default()
        });
        let got = sim.update(1, all_answered);
        assert_eq!(kinds(&got), vec![(AlertKind::Latency, AlertState::Cleared)]);
        assert_eq!(got[0].reason, Some(ClearReason::CheckDisabled));
        // Alternate 10 and 40 ms: |ΔRTT| of 30 ms; RFC 3550 jitter climbs past 1 ms.
        let mut got = Vec::new();
        for i in 0..60 {
            sim.rtt_ms = if i % 2 == 0 { 10 } else { 40 };
            got.extend(sim.update(1, all_answered));
        }
        assert_eq!(kinds(&got), vec![(AlertKind::Jitter, AlertState::Raised)]);
    }

    #[test]
    fn peers_have_their_own_overrides_and_only_configured_peers_are_judged() {
        let mut sim = PeerSim::new(peer_rules(), 20);
        let mut peers = std::collections::BTreeMap::new();
        peers.insert(
            sim.name.clone(),
            AlertRules {
                loss_pct: 50.0,
                ..peer_rules()
            },
        );
        sim.engine.set_config(AlertsConfig {
            rules: peer_rules(),
            peers,
            ..AlertsConfig::default()
        });
        let got: Vec<Transition> = (0..5)
            .flat_map(|_| sim.update(20, backward_fifth))
            .collect();
        assert!(got.is_empty(), "20% is under this peer's 50%: {got:?}");
        // A peer the config no longer has is not judged (a reload removed it).
        sim.engine.set_peers([]);
        sim.engine.set_config(AlertsConfig {
            rules: peer_rules(),
            ..AlertsConfig::default()
        });
        let got: Vec<Transition> = (0..5)
            .flat_map(|_| sim.update(20, backward_fifth))
            .collect();
        assert!(got.is_empty(), "{got:?}");
        assert!(sim
            .engine
            .raised(&Subject::Peer(sim.name.clone()))
            .is_empty());
    }

    #[test]
    fn restored_peer_alerts_clear_and_peers_are_forgotten_apart_from_targets() {
        let mut sim = PeerSim::new(peer_rules(), 20);
        let peer = Subject::Peer(sim.name.clone());
        let target = Subject::Target(sim.name.clone());
        sim.engine.restore(&peer, false, &[AlertKind::Loss]);
        sim.engine.restore(&target, true, &[AlertKind::Loss]);
        assert_eq!(sim.engine.raised(&peer), vec![AlertKind::Loss]);
        let got: Vec<Transition> = (0..4).flat_map(|_| sim.update(20, all_answered)).collect();
        assert_eq!(kinds(&got), vec![(AlertKind::Loss, AlertState::Cleared)]);
        assert_eq!(
            sim.engine.raised(&target),
            vec![AlertKind::Loss],
            "the target's is its own"
        );
        let mut known = sim.engine.known_subjects();
        known.sort();
        assert_eq!(known, vec![target.clone(), peer.clone()]);
        sim.engine.forget(&peer);
        assert_eq!(sim.engine.known_subjects(), vec![target]);
    }
}

#[cfg(test)]
mod branch_tests {
    use super::*;
    use crate::analysis::{AnalysisConfig, TargetAnalysis};
    use crate::model::{
        BranchIndex, BranchLayout, BranchPath, BranchUpdate, HopSample, RoundRecord,
    };
    use crate::probe::{TimestampSource, Ttl};
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A round of target "t" through `via` at TTL 2; lost from hop 2 on when `lost`.
    fn round(seq: u64, via: &str, lost: bool) -> RoundRecord {
        let path = ["198.18.0.2", via, "198.18.9.1", "198.19.0.1"];
        let hops: Vec<HopSample> = path
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let ttl = i as u8 + 1;
                let rtt = (!(lost && ttl >= 2)).then_some(u64::from(ttl) * 1_000_000);
                HopSample::answered_or_lost(ttl, ip(addr), rtt, ttl == 4)
            })
            .collect();
        RoundRecord {
            target: TargetId::new("t").unwrap(),
            seq,
            started_at_ms: seq * 1000,
            destination_ttl: (!lost).then(|| Ttl::new(4).unwrap()),
            hops,
            source: TimestampSource::Ebpf,
        }
    }

    /// Target `t` with two ECMP branches discovered, through 198.18.1.2
    /// (branch 1) and 198.18.2.2 (branch 2) at hop 2.
    fn two_branch_target() -> (TargetId, TargetAnalysis) {
        let id = TargetId::new("t").unwrap();
        let mut analysis = TargetAnalysis::new(id.clone(), &AnalysisConfig::new(20, 3).unwrap());
        let path = |n: u8, via: &str| BranchPath {
            index: BranchIndex::new(n).unwrap(),
            flow_id: 40_000 + u16::from(n),
            hops: ["198.18.0.2", via, "198.18.9.1", "198.19.0.1"]
                .iter()
                .map(|a| Some(ip(a)))
                .collect(),
            reached_destination: true,
        };
        analysis.record_branch(&BranchUpdate::Discovered(BranchLayout {
            target: id.clone(),
            discovered_at_ms: 0,
            first_ttl: Ttl::MIN,
            probes_sent: 50,
            elapsed_ms: 3,
            found: 2,
            stop: "complete".into(),
            branches: vec![path(1, "198.18.1.2"), path(2, "198.18.2.2")],
        }));
        (id, analysis)
    }

    /// `round` over branch `n` of [`two_branch_target`].
    fn branch_round(n: u8, round: RoundRecord) -> BranchUpdate {
        BranchUpdate::Round {
            branch: BranchIndex::new(n).unwrap(),
            round,
        }
    }

    #[test]
    fn loss_on_one_branch_raises_branch_loss_naming_it_and_no_path_loss() {
        let (_, mut analysis) = two_branch_target();
        let mut engine = AlertEngine::new(AlertsConfig {
            rules: AlertRules {
                loss_pct: 10.0,
                raise_rounds: 3,
                ..AlertRules::default()
            },
            ..AlertsConfig::default()
        });
        let mut raised = Vec::new();
        for seq in 1..=60u64 {
            // The target's own flow takes the clean branch.
            analysis.record(&round(seq, "198.18.1.2", false)).unwrap();
            analysis.record_branch(&branch_round(1, round(seq, "198.18.1.2", false)));
            analysis.record_branch(&branch_round(2, round(seq, "198.18.2.2", seq % 3 == 0)));
            let outcome = engine.evaluate(&analysis.snapshot(), &[]);
            raised.extend(outcome.transitions.into_iter().map(|t| (seq, t)));
        }
        assert_eq!(raised.len(), 1, "{raised:#?}");
        let (seq, t) = &raised[0];
        assert_eq!(
            (t.kind, t.state),
            (AlertKind::BranchLoss, AlertState::Raised)
        );
        assert!(*seq >= 20, "waits for a full window: round {seq}");
        assert!(
            t.summary.starts_with(
                "loss on branch 2 (through 198.18.2.2 at hop 2): end-to-end loss 35.0%"
            ),
            "{}",
            t.summary
        );
        let loc = rules::localisation(&analysis.snapshot(), AlertKind::BranchLoss).cloned();
        assert_eq!(loc.map(|l| l.ttl), Some(2));
    }

    /// A round over the branch through `via`, every answer from hop 2 on
    /// `extra_ms` later than the 1 ms a hop of the other branch.
    fn slow_round(seq: u64, via: &str, extra_ms: u64) -> RoundRecord {
        let mut r = round(seq, via, false);
        r.hops = ["198.18.0.2", via, "198.18.9.1", "198.19.0.1"]
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let ttl = i as u8 + 1;
                let extra = if ttl >= 2 { extra_ms } else { 0 };
                let rtt = (u64::from(ttl) + extra) * 1_000_000;
                HopSample::answered_or_lost(ttl, ip(addr), Some(rtt), ttl == 4)
            })
            .collect();
        r
    }

    #[test]
    fn a_slow_branch_raises_branch_latency_naming_it_and_clears_when_it_recovers() {
        let (_, mut analysis) = two_branch_target();
        let config = |branch_latency_ms| AlertsConfig {
            rules: AlertRules {
                branch_latency_ms,
                raise_rounds: 3,
                clear_rounds: 5,
                ..AlertRules::default()
            },
            ..AlertsConfig::default()
        };
        let mut engine = AlertEngine::new(config(5.0));
        // 0 turns the check off: nothing is ever read.
        let mut off = AlertEngine::new(config(0.0));
        let mut seen = Vec::new();
        for seq in 1..=120u64 {
            analysis.record(&round(seq, "198.18.1.2", false)).unwrap();
            // 20 ms slower for 60 rounds, then as fast as the other.
            let extra = if seq <= 60 { 20 } else { 0 };
            analysis.record_branch(&branch_round(1, round(seq, "198.18.1.2", false)));
            analysis.record_branch(&branch_round(2, slow_round(seq, "198.18.2.2", extra)));
            let snapshot = analysis.snapshot();
            let outcome = engine.evaluate(&snapshot, &[]);
            seen.extend(outcome.transitions.into_iter().map(|t| (seq, t)));
            assert!(off.evaluate(&snapshot, &[]).transitions.is_empty());
        }
        let kinds: Vec<_> = seen
            .iter()
            .map(|(seq, t)| (*seq, t.kind, t.state))
            .collect();
        assert_eq!(kinds.len(), 2, "{seen:#?}");
        let (raise_seq, raise) = &seen[0];
        assert_eq!(
            (raise.kind, raise.state),
            (AlertKind::BranchLatency, AlertState::Raised)
        );
        // 20 answers each before a median counts, then raise_rounds.
        assert!((20..=25).contains(raise_seq), "raised at round {raise_seq}");
        assert!(
            raise.summary.starts_with(
                "latency on branch 2 (through 198.18.2.2 at hop 2): end to end 20.0 ms slower"
            ),
            "{}",
            raise.summary
        );
        assert_eq!(raise.reading.value, Some(20.0));
        let (clear_seq, clear) = &seen[1];
        assert_eq!(
            (clear.kind, clear.state),
            (AlertKind::BranchLatency, AlertState::Cleared)
        );
        // Once half the 20-round window is fast again, plus clear_rounds.
        assert!(
            (70..=80).contains(clear_seq),
            "cleared at round {clear_seq}"
        );
    }
}
