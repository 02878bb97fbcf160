//! The rules: what one round's snapshot of a target says about each alert kind.
//!
//! Every rule reads the destination, never an intermediate hop: a router that
//! rate-limits its ICMP errors loses replies the path does not, and only the
//! destination's numbers say what traffic to the target goes through.
//!
//! A target that has never answered (it blocks or ignores the probes) says
//! nothing about its path: until its first answer every reading is neutral, so
//! it never raises "unreachable" or 100% loss. Window rules also wait until the
//! window is full, so they always speak about the last N probes.

use super::event::StartHop;
use super::kind::AlertKind;
use super::machine::Condition;
use super::settings::{AlertRules, LatencyStat};
use crate::analysis::{BranchFinding, DegradationKind, Localisation, PathEvent, TargetSnapshot};

const NS_PER_MS: f64 = 1e6;

/// One rule's reading of one round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub condition: Condition,
    /// The measured value in `unit`, when there is one.
    pub value: Option<f64>,
    /// The raise threshold in `unit`; `None` for route and hop-count changes.
    pub threshold: Option<f64>,
    pub unit: Option<&'static str>,
}

impl Reading {
    fn neutral() -> Reading {
        Reading {
            condition: Condition::Neutral,
            value: None,
            threshold: None,
            unit: None,
        }
    }
}

/// What the rules see of one round of one target.
#[derive(Debug, Clone, Copy)]
pub struct RoundView<'a> {
    pub snapshot: &'a TargetSnapshot,
    /// The path events this round confirmed.
    pub events: &'a [PathEvent],
    /// The destination has answered at least once since monitoring began.
    pub answered_ever: bool,
    /// The destination answered in this round.
    pub answered_now: bool,
    /// Rounds in a row, up to this one, without an answer from the destination.
    pub silent_rounds: u32,
}

/// The reading of `kind` under `rules`, or `None` when the rule is turned off.
pub fn read(kind: AlertKind, rules: &AlertRules, round: &RoundView<'_>) -> Option<Reading> {
    match kind {
        AlertKind::Loss => {
            let dest = &round.snapshot.destination.window;
            higher_is_worse(rules.loss_pct, rules, round, dest.loss_pct, "pct")
        }
        AlertKind::Latency => {
            let w = &round.snapshot.destination.window;
            let ns = match rules.latency_stat {
                LatencyStat::Avg => w.avg_ns,
                LatencyStat::P50 => w.p50_ns.map(|v| v as f64),
                LatencyStat::P95 => w.p95_ns.map(|v| v as f64),
                LatencyStat::P99 => w.p99_ns.map(|v| v as f64),
            };
            higher_is_worse(
                rules.latency_ms,
                rules,
                round,
                ns.map(|v| v / NS_PER_MS),
                "ms",
            )
        }
        AlertKind::Jitter => {
            let ns = round.snapshot.destination.window.jitter_mean_ns;
            higher_is_worse(
                rules.jitter_ms,
                rules,
                round,
                ns.map(|v| v / NS_PER_MS),
                "ms",
            )
        }
        AlertKind::Mos => {
            if rules.mos_below <= 0.0 {
                return None;
            }
            let mos = round.snapshot.destination.mos.map(|m| m.mos);
            let mut reading = Reading {
                condition: Condition::Neutral,
                value: mos,
                threshold: Some(rules.mos_below),
                unit: Some("mos"),
            };
            if let (Some(mos), true) = (mos, window_ready(round)) {
                reading.condition = if mos < rules.mos_below {
                    Condition::Breach
                } else if mos >= rules.mos_below + rules.mos_clear_margin {
                    Condition::Healthy
                } else {
                    Condition::Neutral
                };
            }
            Some(reading)
        }
        AlertKind::Unreachable => {
            if rules.unreachable_rounds == 0 {
                return None;
            }
            let condition = if !round.answered_ever {
                Condition::Neutral
            } else if round.silent_rounds >= rules.unreachable_rounds {
                Condition::Breach
            } else if round.answered_now {
                Condition::Healthy
            } else {
                Condition::Neutral
            };
            Some(Reading {
                condition,
                value: Some(f64::from(round.silent_rounds)),
                threshold: Some(f64::from(rules.unreachable_rounds)),
                unit: Some("rounds"),
            })
        }
        AlertKind::RouteChange => rules
            .route_change
            .then(|| path_reading(round, |e| matches!(e, PathEvent::RouteChanged { .. }))),
        AlertKind::HopCountChange => rules
            .hop_count_change
            .then(|| path_reading(round, |e| matches!(e, PathEvent::HopCountChanged { .. }))),
        AlertKind::ReturnPathChange => rules
            .return_path_change
            .then(|| path_reading(round, |e| matches!(e, PathEvent::ReturnPathChanged { .. }))),
        AlertKind::BranchLoss => branch_loss(rules, round),
        AlertKind::BranchLatency => branch_latency(rules, round),
        // About the service, not a target: judged from its health
        // (`AlertEngine::evaluate_service`), never from a round.
        AlertKind::Store | AlertKind::Outbox => None,
    }
}

/// The event of this kind this round, if any.
pub fn path_event(kind: AlertKind, events: &[PathEvent]) -> Option<&PathEvent> {
    events.iter().find(|e| match kind {
        AlertKind::RouteChange => matches!(e, PathEvent::RouteChanged { .. }),
        AlertKind::HopCountChange => matches!(e, PathEvent::HopCountChanged { .. }),
        AlertKind::ReturnPathChange => matches!(e, PathEvent::ReturnPathChanged { .. }),
        _ => false,
    })
}

/// The analysis' localisation that matches `kind`: where loss begins for loss,
/// unreachability and MOS, where latency rises for latency and jitter. Route
/// and hop-count changes carry none: their detail names the changed hops, and
/// a loss finding that happens to be current says nothing about a new path.
pub fn localisation(snapshot: &TargetSnapshot, kind: AlertKind) -> Option<&Localisation> {
    match kind {
        AlertKind::BranchLoss => return branch_finding(snapshot).map(|f| &f.localisation),
        AlertKind::BranchLatency => {
            return branch_latency_finding(snapshot).map(|f| &f.localisation)
        }
        _ => {}
    }
    let wanted = match kind {
        AlertKind::Latency | AlertKind::Jitter => DegradationKind::Latency,
        AlertKind::Loss | AlertKind::Unreachable | AlertKind::Mos => DegradationKind::Loss,
        AlertKind::RouteChange
        | AlertKind::HopCountChange
        | AlertKind::ReturnPathChange
        | AlertKind::Store
        | AlertKind::Outbox
        | AlertKind::BranchLoss
        | AlertKind::BranchLatency => return None,
    };
    let found = &snapshot.localisations;
    found
        .iter()
        .find(|l| l.kind == wanted)
        .or_else(|| match kind {
            AlertKind::Mos | AlertKind::Jitter => found.first(),
            _ => None,
        })
}

/// Whether a raised alert of `kind` follows its localisation with updates:
/// loss and latency, whose localisation is the finding of their own kind.
/// (Jitter and MOS borrow another kind's finding, unreachability has no
/// path left to place, and path changes name their hops already.)
pub fn updates_localisation(kind: AlertKind) -> bool {
    matches!(kind, AlertKind::Loss | AlertKind::Latency)
}

/// One line for people about an update of a raised alert of `kind` on
/// `target`: where the problem starts now, and where its last event said.
pub fn update_summary(
    kind: AlertKind,
    target: &str,
    now: StartHop,
    before: Option<StartHop>,
) -> String {
    let was = match before {
        Some(hop) => format!("was {hop}"),
        None => "was not placed".to_owned(),
    };
    format!("{kind} on {target}: where it starts is now {now} ({was})")
}

/// The destination has answered, and the window holds a full N probes.
/// The worst loss branch finding of a multipath target: the branch a loss is on.
pub fn branch_finding(snapshot: &TargetSnapshot) -> Option<&BranchFinding> {
    branch_findings(snapshot, DegradationKind::Loss).next()
}

/// The slowest latency branch finding of a multipath target.
pub fn branch_latency_finding(snapshot: &TargetSnapshot) -> Option<&BranchFinding> {
    branch_findings(snapshot, DegradationKind::Latency).next()
}

/// A target's branch findings of `kind`, worst first.
fn branch_findings(
    snapshot: &TargetSnapshot,
    kind: DegradationKind,
) -> impl Iterator<Item = &BranchFinding> {
    snapshot
        .branches
        .iter()
        .flat_map(|b| &b.findings)
        .filter(move |f| f.kind == kind)
}

/// "branch 2 (through 198.18.3.2 at hop 2)": how a branch alert names its branch.
pub fn branch_name(finding: &BranchFinding) -> String {
    match finding.through {
        Some(addr) => format!(
            "branch {} (through {addr} at hop {})",
            finding.branch, finding.through_ttl
        ),
        None => format!(
            "branch {} (hop {} silent)",
            finding.branch, finding.through_ttl
        ),
    }
}

/// The worst end-to-end loss among a multipath target's branches whose
/// windows are full. It breaches only while a branch finding says the loss
/// is one branch's (a loss on every branch is the `loss` rule's), and is
/// healthy once every branch is back under the clear level.
fn branch_loss(rules: &AlertRules, round: &RoundView<'_>) -> Option<Reading> {
    let threshold = rules.loss_pct;
    if threshold <= 0.0 {
        return None;
    }
    let branches = round.snapshot.branches.as_ref()?;
    let full = round.snapshot.window_probes as u64;
    let worst = branches
        .branches
        .iter()
        .filter(|b| b.destination.sent >= full)
        .filter_map(|b| b.destination.loss_pct)
        .reduce(f64::max);
    let own = branch_finding(round.snapshot).is_some();
    let condition = match worst {
        Some(v) if v >= threshold && own => Condition::Breach,
        Some(v) if v <= threshold * rules.clear_ratio => Condition::Healthy,
        _ => Condition::Neutral,
    };
    Some(Reading {
        condition,
        value: worst,
        threshold: Some(threshold),
        unit: Some("pct"),
    })
}

/// How much slower than its fastest sibling a multipath target's slowest
/// branch is (ms). It breaches while the analysis finds a branch slow by at
/// least the threshold over a full window, and is healthy once no branch is
/// slow; in between (slow, but by less than the threshold) it holds. The
/// analysis' own hysteresis keeps a branch at the bar from flapping.
fn branch_latency(rules: &AlertRules, round: &RoundView<'_>) -> Option<Reading> {
    let threshold = rules.branch_latency_ms;
    if threshold <= 0.0 {
        return None;
    }
    let branches = round.snapshot.branches.as_ref()?;
    let full = round.snapshot.window_probes as u64;
    let slowest = branch_latency_finding(round.snapshot);
    let excess = slowest
        .and_then(|f| f.latency)
        .map(|l| l.excess_ns() as f64 / NS_PER_MS);
    let window_full = slowest.is_some_and(|f| {
        branches
            .branches
            .iter()
            .find(|b| b.index == f.branch)
            .is_some_and(|b| b.destination.sent >= full)
    });
    let condition = match excess {
        Some(v) if v >= threshold && window_full => Condition::Breach,
        Some(_) => Condition::Neutral,
        None => Condition::Healthy,
    };
    Some(Reading {
        condition,
        value: excess,
        threshold: Some(threshold),
        unit: Some("ms"),
    })
}

fn window_ready(round: &RoundView<'_>) -> bool {
    let window = &round.snapshot.destination.window;
    round.answered_ever && window.sent as usize >= round.snapshot.window_probes
}

fn higher_is_worse(
    threshold: f64,
    rules: &AlertRules,
    round: &RoundView<'_>,
    value: Option<f64>,
    unit: &'static str,
) -> Option<Reading> {
    if threshold <= 0.0 {
        return None;
    }
    let mut reading = Reading {
        condition: Condition::Neutral,
        value,
        threshold: Some(threshold),
        unit: Some(unit),
    };
    if let (Some(v), true) = (value, window_ready(round)) {
        reading.condition = if v >= threshold {
            Condition::Breach
        } else if v <= threshold * rules.clear_ratio {
            Condition::Healthy
        } else {
            Condition::Neutral
        };
    }
    Some(reading)
}

/// A route or hop-count change breaches in the round that confirms it; every
/// later round without one counts towards the clear ("the path is stable
/// again"). Only an established path (the target has answered) counts.
fn path_reading(round: &RoundView<'_>, matches: impl Fn(&PathEvent) -> bool) -> Reading {
    if !round.answered_ever {
        return Reading::neutral();
    }
    let condition = if round.events.iter().any(matches) {
        Condition::Breach
    } else {
        Condition::Healthy
    };
    Reading {
        condition,
        ..Reading::neutral()
    }
}

fn fmt_value(value: f64, unit: &str) -> String {
    match unit {
        "pct" => format!("{value:.1}%"),
        "ms" => format!("{value:.1} ms"),
        "mos" => format!("{value:.2}"),
        _ => format!("{value:.0} {unit}"),
    }
}

/// One line for people about a transition of `kind`.
pub fn summary(
    kind: AlertKind,
    raised: bool,
    reading: &Reading,
    rules: &AlertRules,
    window: usize,
    event: Option<&PathEvent>,
) -> String {
    let value = |v: Option<f64>| match (v, reading.unit) {
        (Some(v), Some(unit)) => fmt_value(v, unit),
        _ => "n/a".to_owned(),
    };
    let now = value(reading.value);
    let raise_at = value(reading.threshold);
    let clear_at = value(reading.threshold.map(|t| t * rules.clear_ratio));
    match (kind, raised) {
        (AlertKind::Loss, true) => {
            format!("destination loss {now} over the last {window} probes (raises at {raise_at})")
        }
        (AlertKind::Loss, false) => {
            format!("destination loss back to {now} (clears at {clear_at})")
        }
        (AlertKind::Latency, true) => format!(
            "destination {} latency {now} over the last {window} probes (raises at {raise_at})",
            rules.latency_stat
        ),
        (AlertKind::Latency, false) => format!(
            "destination {} latency back to {now} (clears at {clear_at})",
            rules.latency_stat
        ),
        (AlertKind::Jitter, true) => {
            format!("destination jitter {now} over the last {window} probes (raises at {raise_at})")
        }
        (AlertKind::Jitter, false) => {
            format!("destination jitter back to {now} (clears at {clear_at})")
        }
        (AlertKind::Mos, true) => format!("MOS {now} is below {raise_at}"),
        (AlertKind::Mos, false) => format!(
            "MOS back to {now} (clears at {})",
            value(reading.threshold.map(|t| t + rules.mos_clear_margin))
        ),
        (AlertKind::Unreachable, true) => format!("no reply from the target in {now}"),
        (AlertKind::Unreachable, false) => "the target answers again".to_owned(),
        (AlertKind::RouteChange, true) => match event {
            Some(PathEvent::RouteChanged {
                first_changed_ttl, ..
            }) => format!("the route changed from hop {first_changed_ttl} on"),
            _ => "the route changed".to_owned(),
        },
        (AlertKind::RouteChange, false) => {
            format!(
                "the route has been stable for {} rounds",
                rules.clear_rounds
            )
        }
        (AlertKind::HopCountChange, true) => match event {
            Some(PathEvent::HopCountChanged { before, after, .. }) => {
                format!("the path is now {after} hops long (was {before})")
            }
            _ => "the hop count changed".to_owned(),
        },
        (AlertKind::HopCountChange, false) => {
            format!(
                "the hop count has been stable for {} rounds",
                rules.clear_rounds
            )
        }
        (AlertKind::ReturnPathChange, true) => match event {
            Some(PathEvent::ReturnPathChanged {
                first_changed_ttl, ..
            }) => format!(
                "the return path changed from hop {first_changed_ttl} on (the forward path did not)"
            ),
            _ => "the return path changed".to_owned(),
        },
        (AlertKind::ReturnPathChange, false) => {
            format!(
                "the return path has been stable for {} rounds",
                rules.clear_rounds
            )
        }
        (AlertKind::BranchLoss, true) => format!(
            "end-to-end loss {now} over the last {window} probes of the branch (raises at {raise_at})"
        ),
        (AlertKind::BranchLoss, false) => {
            format!("every branch's loss back to {now} or less (clears at {clear_at})")
        }
        (AlertKind::BranchLatency, true) => format!(
            "end to end {now} slower than the fastest other branch over the last {window} probes (raises at {raise_at})"
        ),
        (AlertKind::BranchLatency, false) => "no branch is slower than the others".to_owned(),
        // Never read from a round (see `read`): their summaries say what
        // is wrong with the component.
        (AlertKind::Store | AlertKind::Outbox, _) => format!("the {kind} check"),
    }
}
