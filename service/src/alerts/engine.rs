//! The alert engine: per target, the state machine of every rule, fed one
//! snapshot per round. Pure and synchronous (no I/O, no clock): the caller
//! persists what it decides and restores it after a restart.

use std::collections::HashMap;

use super::event::ClearReason;
use super::kind::{AlertKind, AlertState};
use super::machine::{Machine, Step};
use super::rules::{self, Reading, RoundView};
use crate::analysis::{PathEvent, TargetSnapshot};
use crate::config::{AlertRules, AlertsConfig};
use crate::model::TargetId;

/// A raise or clear decided this round.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub kind: AlertKind,
    pub state: AlertState,
    pub reading: Reading,
    pub summary: String,
    /// Why a clear happened; `None` for a raise.
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

#[derive(Debug, Clone, Default)]
struct TargetState {
    answered_ever: bool,
    silent_rounds: u32,
    /// The destination's since-start (sent, received) at the last round.
    seen: (u64, u64),
    machines: [Machine; AlertKind::ALL.len()],
}

/// Every target's alert state.
#[derive(Debug, Clone)]
pub struct AlertEngine {
    config: AlertsConfig,
    targets: HashMap<TargetId, TargetState>,
}

impl AlertEngine {
    pub fn new(config: AlertsConfig) -> AlertEngine {
        AlertEngine {
            config,
            targets: HashMap::new(),
        }
    }

    /// New thresholds (a reload); machine states are kept.
    pub fn set_config(&mut self, config: AlertsConfig) {
        self.config = config;
    }

    pub fn config(&self) -> &AlertsConfig {
        &self.config
    }

    /// Restores what a previous run persisted: whether the target ever answered
    /// and which of its alerts are raised.
    pub fn restore(&mut self, target: &TargetId, answered: bool, raised: &[AlertKind]) {
        let state = self.targets.entry(target.clone()).or_default();
        state.answered_ever |= answered;
        for kind in raised {
            state.machines[kind.index()] = Machine::raised();
        }
    }

    /// The raised alerts of `target`.
    pub fn raised(&self, target: &TargetId) -> Vec<AlertKind> {
        self.targets.get(target).map_or_else(Vec::new, |state| {
            AlertKind::ALL
                .into_iter()
                .filter(|k| state.machines[k.index()].is_raised())
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
            let Some(reading) = rules::read(kind, &rules, &round) else {
                // A check turned off by a reload clears what it had raised.
                if machine.is_raised() {
                    *machine = Machine::default();
                    transitions.push(Transition {
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
                    });
                }
                continue;
            };
            // Window rules need the condition to hold for raise_rounds; the
            // others carry their own duration (unreachable_rounds) or are
            // events (route and hop-count changes) and raise at once.
            let raise_after = match kind {
                AlertKind::Loss | AlertKind::Latency | AlertKind::Jitter | AlertKind::Mos => {
                    rules.raise_rounds
                }
                _ => 1,
            };
            let step = machine.step(reading.condition, raise_after, rules.clear_rounds);
            let state = match step {
                Step::Stay => continue,
                Step::Raise => AlertState::Raised,
                Step::Clear => AlertState::Cleared,
            };
            let path_event = rules::path_event(kind, events).cloned();
            transitions.push(Transition {
                kind,
                state,
                summary: rules::summary(
                    kind,
                    state == AlertState::Raised,
                    &reading,
                    &rules,
                    snapshot.window_probes,
                    path_event.as_ref(),
                ),
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

    /// Drops a removed target's state (a target re-added later starts over,
    /// like its analysis).
    pub fn forget(&mut self, target: &TargetId) {
        self.targets.remove(target);
    }

    /// Every target the engine holds state for.
    pub fn known_targets(&self) -> Vec<TargetId> {
        self.targets.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{AnalysisConfig, TargetAnalysis};
    use crate::model::{HopSample, RoundRecord};
    use crate::probe::TimestampSource;
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
                        HopSample {
                            ttl,
                            responder: rtt.map(|_| addr),
                            rtt_ns: rtt,
                            reached: ttl == 4 && rtt.is_some(),
                        }
                    })
                    .collect();
                let reached = hops[3].reached;
                let round = RoundRecord {
                    target: TargetId::new("t").unwrap(),
                    seq,
                    started_at_ms: seq * 100,
                    hops,
                    destination_ttl: reached.then_some(4),
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
        sim.engine
            .restore(&TargetId::new("t").unwrap(), true, &[AlertKind::Loss]);
        let got = sim.rounds(20, healthy);
        assert_eq!(
            got.iter().map(|t| (t.1, t.2)).collect::<Vec<_>>(),
            vec![(AlertKind::Loss, AlertState::Cleared)]
        );
    }

    #[test]
    fn turning_a_check_off_clears_it() {
        let mut sim = Sim::new(rules(), 10);
        sim.engine
            .restore(&TargetId::new("t").unwrap(), true, &[AlertKind::Jitter]);
        let got = sim.rounds(1, healthy);
        assert_eq!(got, vec![(1, AlertKind::Jitter, AlertState::Cleared)]);
        assert_eq!(sim.all[0].reason, Some(ClearReason::CheckDisabled));
        assert_eq!(sim.all[0].summary, "the jitter check was turned off");
    }
}
