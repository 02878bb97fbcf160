//! The rules for peers (`[[peer]]` STAMP links): what one update of a peer's
//! window says about loss, latency and jitter, and the words for people.
//!
//! A peer's "round" is one update of its window statistics (about once a
//! second, see `monitor::peers::ALERT_EVERY`); the hysteresis is the targets'
//! ([`super::machine`]). MOS, unreachable, route and hop-count rules are about
//! a traceroute path and do not apply to a link. Unlike a target, a peer is
//! a reflector someone set up to answer: one that does not answer (no reply
//! in the window, or a session that cannot run) is a link down, and raises
//! loss at 100%, even if it never answered.
//!
//! Loss is the round trip's; the summary and the localisation say which
//! direction lost, from the reflector's counter (see `analysis::peer_window`).

use serde_json::{json, Value};

use super::kind::AlertKind;
use super::machine::Condition;
use super::rules::Reading;
use super::settings::{AlertRules, LatencyStat};
use crate::analysis::WindowStats;
use crate::peer::Direction;

const NS_PER_MS: f64 = 1e6;

/// The kinds that apply to peers, in evaluation order.
pub const KINDS: [AlertKind; 3] = [AlertKind::Loss, AlertKind::Latency, AlertKind::Jitter];

/// A direction counts as "the" lossy one when it holds at least this share
/// of the losses placed in a direction; below it the loss is in both.
const DOMINANT_SHARE: f64 = 0.8;

/// What the rules see of one update of one peer.
#[derive(Debug, Clone, Copy)]
pub struct PeerRound<'a> {
    pub window: &'a WindowStats,
    /// Probes the window holds when full: window rules wait for that many.
    pub window_probes: usize,
    /// Probes resolved since the peer's runner started: a round is judged
    /// only when this moved (or the session failed).
    pub resolved: u64,
    /// The session cannot run (it failed to start, or ended): why.
    pub failed: Option<&'a str>,
}

impl PeerRound<'_> {
    /// The window holds a full N probes.
    fn ready(&self) -> bool {
        self.window.probes as usize >= self.window_probes
    }
}

/// Where a peer's losses are, from the reflector's counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossDirection {
    /// On the way to the reflector (here → peer).
    Forward,
    /// On the way back (peer → here).
    Backward,
    Both,
    /// None of the losses could be placed yet (no answer after them).
    Unknown,
}

impl LossDirection {
    pub fn of(window: &WindowStats) -> LossDirection {
        let placed = window.lost_forward + window.lost_backward;
        if placed == 0 {
            return LossDirection::Unknown;
        }
        let share = |n: u64| n as f64 / placed as f64;
        if share(window.lost_forward) >= DOMINANT_SHARE {
            LossDirection::Forward
        } else if share(window.lost_backward) >= DOMINANT_SHARE {
            LossDirection::Backward
        } else {
            LossDirection::Both
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LossDirection::Forward => "forward",
            LossDirection::Backward => "backward",
            LossDirection::Both => "both",
            LossDirection::Unknown => "unknown",
        }
    }

    fn words(self) -> &'static str {
        match self {
            LossDirection::Forward => "on the forward path (here → peer)",
            LossDirection::Backward => "on the backward path (peer → here)",
            LossDirection::Both => "in both directions",
            LossDirection::Unknown => "in a direction not known yet",
        }
    }
}

/// The reading of `kind` under `rules`, or `None` when the rule is turned off
/// (or does not apply to peers).
pub fn read(kind: AlertKind, rules: &AlertRules, round: &PeerRound<'_>) -> Option<Reading> {
    let w = round.window;
    let (threshold, value, unit) = match kind {
        AlertKind::Loss => {
            let value = if round.failed.is_some() {
                Some(100.0)
            } else {
                w.loss_ratio().map(|r| r * 100.0)
            };
            (rules.loss_pct, value, "pct")
        }
        AlertKind::Latency => {
            let ns = match rules.latency_stat {
                LatencyStat::Avg => w.rtt.map(|d| d.mean_ns),
                LatencyStat::P50 => w.rtt_p50_ns.map(|v| v as f64),
                LatencyStat::P95 => w.rtt_p95_ns.map(|v| v as f64),
                LatencyStat::P99 => w.rtt_p99_ns.map(|v| v as f64),
            };
            (rules.latency_ms, ns.map(|v| v / NS_PER_MS), "ms")
        }
        AlertKind::Jitter => (
            rules.jitter_ms,
            w.jitter_rtt_ns.map(|v| v / NS_PER_MS),
            "ms",
        ),
        _ => return None,
    };
    if threshold <= 0.0 {
        return None;
    }
    let mut reading = Reading {
        condition: Condition::Neutral,
        value,
        threshold: Some(threshold),
        unit: Some(unit),
    };
    // A failed session breaches loss at once; it says nothing about delays.
    let judged = match (kind, round.failed) {
        (AlertKind::Loss, Some(_)) => true,
        (_, Some(_)) => false,
        _ => round.ready(),
    };
    if let (Some(v), true) = (value, judged) {
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

fn fmt_value(value: Option<f64>, unit: Option<&str>) -> String {
    match (value, unit) {
        (Some(v), Some("pct")) => format!("{v:.1}%"),
        (Some(v), Some(_)) => format!("{v:.1} ms"),
        _ => "n/a".to_owned(),
    }
}

fn pct(ratio: Option<f64>) -> String {
    format!("{:.1}%", ratio.unwrap_or(0.0) * 100.0)
}

/// The losses no answer has placed in a direction yet (lost probes resolve
/// at their timeout, so the window's oldest ones may have no answer before
/// them), said so the directions' shares need not add up to the loss.
fn unplaced(w: &WindowStats) -> String {
    match w.lost_unknown {
        0 => String::new(),
        n => format!(" ({n} lost not placed in a direction yet)"),
    }
}

/// One line for people about a transition of `kind` on a peer.
pub fn summary(
    kind: AlertKind,
    raised: bool,
    reading: &Reading,
    rules: &AlertRules,
    round: &PeerRound<'_>,
) -> String {
    let w = round.window;
    let now = fmt_value(reading.value, reading.unit);
    let raise_at = fmt_value(reading.threshold, reading.unit);
    let clear_at = fmt_value(
        reading.threshold.map(|t| t * rules.clear_ratio),
        reading.unit,
    );
    let probes = w.probes;
    match (kind, raised) {
        (AlertKind::Loss, true) => match round.failed {
            Some(error) => format!(
                "the peer cannot be measured: the session failed ({error}); \
                 loss counts as {now} (raises at {raise_at})"
            ),
            None if w.received == 0 => format!(
                "no reply from the peer in the last {probes} probes: loss {now} (raises at {raise_at})"
            ),
            None => format!(
                "round-trip loss {now} over the last {probes} probes (raises at {raise_at}), {}: \
                 forward {}, backward {}{}",
                LossDirection::of(w).words(),
                pct(w.direction_loss_ratio(Direction::Forward)),
                pct(w.direction_loss_ratio(Direction::Backward)),
                unplaced(w),
            ),
        },
        (AlertKind::Loss, false) => format!("round-trip loss back to {now} (clears at {clear_at})"),
        (AlertKind::Latency, true) => format!(
            "RTT {} {now} over the last {probes} probes (raises at {raise_at})",
            rules.latency_stat
        ),
        (AlertKind::Latency, false) => format!(
            "RTT {} back to {now} (clears at {clear_at})",
            rules.latency_stat
        ),
        (AlertKind::Jitter, true) => {
            format!("RTT jitter {now} over the last {probes} probes (raises at {raise_at})")
        }
        (AlertKind::Jitter, false) => format!("RTT jitter back to {now} (clears at {clear_at})"),
        (other, _) => format!("the {other} check does not apply to peers"),
    }
}

/// Where the problem is, for a raise of `kind`: the direction of the loss
/// (with each direction's share), or for latency each direction's one-way
/// delay when the clocks can be trusted. `None` when there is nothing to say.
pub fn localisation(kind: AlertKind, round: &PeerRound<'_>) -> Option<Value> {
    let w = round.window;
    match kind {
        AlertKind::Loss if round.failed.is_none() && w.lost > 0 => {
            let direction = LossDirection::of(w);
            let forward = w.direction_loss_ratio(Direction::Forward).unwrap_or(0.0) * 100.0;
            let backward = w.direction_loss_ratio(Direction::Backward).unwrap_or(0.0) * 100.0;
            Some(json!({
                "kind": "loss",
                "direction": direction.as_str(),
                "forward_loss_pct": forward,
                "backward_loss_pct": backward,
                "lost_unknown_direction": w.lost_unknown,
                "summary": format!(
                    "loss is {}: forward {forward:.1}%, backward {backward:.1}%{}",
                    direction.words(),
                    unplaced(w),
                ),
            }))
        }
        AlertKind::Latency | AlertKind::Jitter
            if w.owd.is_some_and(|o| o.is_reliable()) && round.failed.is_none() =>
        {
            let (forward, backward) = (w.forward?, w.backward?);
            let (f, b) = (forward.mean_ns / NS_PER_MS, backward.mean_ns / NS_PER_MS);
            Some(json!({
                "kind": "latency",
                "forward_owd_ms": f,
                "backward_owd_ms": b,
                "summary": format!("one-way delay forward {f:.1} ms, backward {b:.1} ms"),
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::DelayWindow;
    use crate::peer::OwdValidity;

    fn rules() -> AlertRules {
        AlertRules {
            loss_pct: 10.0,
            latency_ms: 20.0,
            latency_stat: LatencyStat::P95,
            jitter_ms: 2.0,
            clear_ratio: 0.5,
            ..AlertRules::default()
        }
    }

    fn delay(mean_ms: f64) -> DelayWindow {
        DelayWindow {
            min_ns: 0,
            mean_ns: mean_ms * NS_PER_MS,
            max_ns: (mean_ms * 2.0 * NS_PER_MS) as i64,
            samples: 1,
        }
    }

    /// A window of 100 probes, `forward` and `backward` of them lost in that
    /// direction, with an average RTT of 10 ms and a p95 of `p95_ms`.
    fn window(forward: u64, backward: u64, p95_ms: u64) -> WindowStats {
        let lost = forward + backward;
        WindowStats {
            probes: 100,
            received: 100 - lost,
            lost,
            lost_forward: forward,
            lost_backward: backward,
            rtt: (lost < 100).then(|| delay(10.0)),
            rtt_p50_ns: Some(10_000_000),
            rtt_p95_ns: Some(p95_ms * 1_000_000),
            rtt_p99_ns: Some(p95_ms * 1_000_000),
            forward: Some(delay(8.0)),
            backward: Some(delay(2.0)),
            jitter_rtt_ns: Some(500_000.0),
            owd: Some(OwdValidity::SharedClock),
            ..WindowStats::default()
        }
    }

    fn round(window: &WindowStats) -> PeerRound<'_> {
        PeerRound {
            window,
            window_probes: 100,
            resolved: 100,
            failed: None,
        }
    }

    #[test]
    fn loss_names_the_direction_that_lost() {
        let w = window(0, 20, 5);
        let r = round(&w);
        let loss = read(AlertKind::Loss, &rules(), &r).unwrap();
        assert_eq!(loss.condition, Condition::Breach);
        assert_eq!(loss.value, Some(20.0));
        let text = summary(AlertKind::Loss, true, &loss, &rules(), &r);
        assert_eq!(
            text,
            "round-trip loss 20.0% over the last 100 probes (raises at 10.0%), on the backward \
             path (peer → here): forward 0.0%, backward 20.0%"
        );
        let place = localisation(AlertKind::Loss, &r).unwrap();
        assert_eq!(place["direction"], "backward");
        assert_eq!(place["backward_loss_pct"], 20.0);
        assert_eq!(LossDirection::of(&window(15, 0, 5)), LossDirection::Forward);
        assert_eq!(LossDirection::of(&window(19, 1, 5)), LossDirection::Forward);
        assert_eq!(LossDirection::of(&window(10, 10, 5)), LossDirection::Both);
        let mut some_unplaced = window(0, 0, 5);
        some_unplaced.lost = 3;
        some_unplaced.lost_unknown = 3;
        assert_eq!(LossDirection::of(&some_unplaced), LossDirection::Unknown);
        let mut partly = window(0, 12, 5);
        partly.lost += 8;
        partly.lost_unknown = 8;
        let r = round(&partly);
        let loss = read(AlertKind::Loss, &rules(), &r).unwrap();
        let text = summary(AlertKind::Loss, true, &loss, &rules(), &r);
        assert!(
            text.starts_with("round-trip loss 20.0% over")
                && text.ends_with("backward 12.0% (8 lost not placed in a direction yet)"),
            "{text}"
        );
    }

    #[test]
    fn readings_wait_for_a_full_window_and_have_a_band() {
        let w = window(0, 20, 5);
        let mut r = round(&w);
        r.window_probes = 300;
        let loss = read(AlertKind::Loss, &rules(), &r).unwrap();
        assert_eq!(loss.condition, Condition::Neutral, "the window is not full");
        let band = window(7, 0, 5);
        let loss = read(AlertKind::Loss, &rules(), &round(&band)).unwrap();
        assert_eq!(
            loss.condition,
            Condition::Neutral,
            "7% is between 5% and 10%"
        );
        let good = window(2, 3, 5);
        let loss = read(AlertKind::Loss, &rules(), &round(&good)).unwrap();
        assert_eq!(loss.condition, Condition::Healthy);
    }

    #[test]
    fn latency_uses_the_configured_statistic_and_jitter_the_rtt_jitter() {
        let w = window(0, 0, 25);
        let r = round(&w);
        let latency = read(AlertKind::Latency, &rules(), &r).unwrap();
        assert_eq!(
            (latency.condition, latency.value),
            (Condition::Breach, Some(25.0))
        );
        let avg = AlertRules {
            latency_stat: LatencyStat::Avg,
            ..rules()
        };
        let latency = read(AlertKind::Latency, &avg, &r).unwrap();
        assert_eq!(
            (latency.condition, latency.value),
            (Condition::Healthy, Some(10.0))
        );
        assert_eq!(
            summary(AlertKind::Latency, false, &latency, &avg, &r),
            "RTT avg back to 10.0 ms (clears at 10.0 ms)"
        );
        let place = localisation(AlertKind::Latency, &r).unwrap();
        assert_eq!(place["forward_owd_ms"], 8.0);
        let jitter = read(AlertKind::Jitter, &rules(), &r).unwrap();
        assert_eq!(
            (jitter.condition, jitter.value),
            (Condition::Healthy, Some(0.5))
        );
        // Rules that are off, and kinds that are not for links, read nothing.
        let off = AlertRules {
            jitter_ms: 0.0,
            ..rules()
        };
        assert!(read(AlertKind::Jitter, &off, &r).is_none());
        for kind in [
            AlertKind::Mos,
            AlertKind::Unreachable,
            AlertKind::RouteChange,
            AlertKind::HopCountChange,
        ] {
            assert!(read(kind, &rules(), &r).is_none(), "{kind}");
        }
    }

    #[test]
    fn a_dead_peer_is_total_loss() {
        let w = window(0, 0, 5);
        let silent = WindowStats {
            received: 0,
            lost: 100,
            lost_unknown: 100,
            rtt: None,
            rtt_p50_ns: None,
            rtt_p95_ns: None,
            rtt_p99_ns: None,
            jitter_rtt_ns: None,
            ..w.clone()
        };
        let r = round(&silent);
        let loss = read(AlertKind::Loss, &rules(), &r).unwrap();
        assert_eq!(
            (loss.condition, loss.value),
            (Condition::Breach, Some(100.0))
        );
        assert_eq!(
            summary(AlertKind::Loss, true, &loss, &rules(), &r),
            "no reply from the peer in the last 100 probes: loss 100.0% (raises at 10.0%)"
        );
        let latency = read(AlertKind::Latency, &rules(), &r).unwrap();
        assert_eq!(latency.condition, Condition::Neutral, "no RTT to judge");

        // A session that cannot run breaches loss at once, whatever its
        // (stale) window says, and says nothing about delays.
        let failed = PeerRound {
            failed: Some("no route to host"),
            window_probes: 1_000,
            ..round(&w)
        };
        let loss = read(AlertKind::Loss, &rules(), &failed).unwrap();
        assert_eq!(
            (loss.condition, loss.value),
            (Condition::Breach, Some(100.0))
        );
        let text = summary(AlertKind::Loss, true, &loss, &rules(), &failed);
        assert!(text.contains("session failed (no route to host)"), "{text}");
        let latency = read(AlertKind::Latency, &rules(), &failed).unwrap();
        assert_eq!(latency.condition, Condition::Neutral);
        assert!(localisation(AlertKind::Loss, &failed).is_none());
    }
}
