//! What the demo shows: the lab topology, the targets (and what each one is
//! there to demonstrate), and the scripted timeline of network events with the
//! impairments that play it.
//!
//! ```text
//!                          +-- a1 --------+
//! src -- r1 -- r2 -- r3 ---+              +--- r4 -- r5 -- dst
//!                          +-- b1 -- b2 --+
//!
//! r1: rate-limits its ICMP errors, always    r2 (target "edge"), r4 (target "core")
//! r2 -> r3: the loss bursts                  dst: targets "dst", "web", "dst-v6"
//! r4 -> r5: the latency step                 r3 -> a1 | b1-b2: the route changes
//! ```
//!
//! Where each event happens is chosen so that each target sees a different
//! mix: `edge` sits before every event (only r1's rate limiting, which must
//! never raise an alert), `core` sees the loss bursts and the route changes but
//! not the latency step, and the three targets on `dst` see everything.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::{
    error::Result as LabResult, At, Delay, DelaySpec, Impairment, Lab, LabSpec, PathSelect, Plan,
};

/// The router that rate-limits the ICMP errors it sends, for the whole demo.
pub const RATE_LIMITED: &str = "r1";
/// The link whose forward direction loses packets during a loss burst.
pub const LOSS_LINK: (&str, &str) = ("r2", "r3");
/// Loss during a burst, percent.
pub const LOSS_PCT: f64 = 40.0;
/// The link whose forward direction is slowed during the latency step.
pub const DELAY_LINK: (&str, &str) = ("r4", "r5");
/// The latency added during the step.
pub const DELAY: Duration = Duration::from_millis(30);
/// Probes per hop in the live window (a minute at the normal pace). Long
/// enough that when a loss alert raises, the window holds enough of the burst
/// for every hop after the lossy link to show it, so the alert names the right
/// hop; short enough that alerts raise within about 30 s and clear within a
/// minute.
pub const WINDOW: u32 = 60;

/// src - r1 - r2 - r3 - {a1 | b1 - b2} - r4 - r5 - dst, two targets per family.
pub fn lab_spec() -> LabSpec {
    LabSpec::chain(5).targets(2).parallel(3, &[1, 2])
}

/// How fast the demo runs: the real pace, or everything four times faster
/// (`--fast`, for tests and a quick look).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// One round per second; events every minute or two.
    Normal,
    /// Four rounds per second, and the timeline compressed four times.
    Fast,
}

impl Pace {
    fn factor(self) -> u32 {
        match self {
            Pace::Normal => 1,
            Pace::Fast => 4,
        }
    }

    /// `secs` of the normal timeline at this pace. Rounds shrink by the same
    /// factor, so every event spans the same number of rounds at both paces.
    pub fn scaled(self, secs: u64) -> Duration {
        Duration::from_secs(secs) / self.factor()
    }

    /// Time between two rounds of a target.
    pub fn interval(self) -> Duration {
        self.scaled(1)
    }

    /// `ms` milliseconds of the normal pace at this pace.
    pub fn scaled_ms(self, ms: u64) -> Duration {
        Duration::from_millis(ms) / self.factor()
    }

    /// ICMP errors per second (and burst) the rate-limited router sends, per
    /// family: about half of what the IPv4 targets' rounds ask of it, so its hop
    /// loses about half its replies.
    pub fn rate_limit(self) -> u32 {
        2 * self.factor()
    }
}

/// One monitored target.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoTarget {
    /// The target's name in the config, the UI and the webhooks.
    pub name: &'static str,
    /// What is probed.
    pub host: IpAddr,
    /// `icmp`, `udp` or `tcp`.
    pub protocol: &'static str,
    /// Destination port (TCP, UDP).
    pub port: Option<u16>,
    /// Shown in the UI.
    pub label: &'static str,
    /// Its own interval in milliseconds at the normal pace, when not the
    /// default one second.
    pub interval_ms: Option<u64>,
    /// What it demonstrates, for the banner and the config's description.
    pub shows: &'static str,
    /// Whether the scripted events reach it at all (the rate-limited target must
    /// stay silent).
    pub alerts_expected: bool,
}

/// The address node `name` answers from when a probe arrives from its
/// neighbour `from` (its address on that link), for both families.
pub fn answer_address(plan: &Plan, name: &str, from: &str) -> Option<(Ipv4Addr, Ipv6Addr)> {
    let (node, peer) = (plan.find(name)?, plan.find(from)?);
    let end = plan.link_between(node, peer)?.end_on(node)?;
    Some((end.v4, end.v6))
}

/// Where the loss bursts begin, as the localisation should name it: the TTL
/// and the address of the router right after the lossy link.
pub fn loss_starts_at(plan: &Plan) -> (u8, Ipv4Addr, Ipv6Addr) {
    let (v4, v6) = answer_address(plan, LOSS_LINK.1, LOSS_LINK.0).expect("the loss link exists");
    // r3 is the third router from the source on every path.
    (3, v4, v6)
}

/// Who answers where the latency step begins (the router right after the
/// slowed link); its TTL depends on the branch in use.
pub fn latency_starts_at(plan: &Plan) -> (Ipv4Addr, Ipv6Addr) {
    answer_address(plan, DELAY_LINK.1, DELAY_LINK.0).expect("the delay link exists")
}

/// The demo's targets in the lab built from [`lab_spec`].
pub fn targets(plan: &Plan) -> Vec<DemoTarget> {
    let edge = answer_address(plan, "r2", "r1").expect("r2 follows r1");
    let core = answer_address(plan, "r4", "r5").expect("r4 and r5 are neighbours");
    vec![
        DemoTarget {
            name: "edge",
            host: edge.0.into(),
            protocol: "icmp",
            port: None,
            label: "Edge router r2",
            // The IPv4 targets' intervals differ a little: targets that start
            // together with one interval probe in lockstep, and whichever comes
            // first at each round would take all of r1's replies. Out of step,
            // they share them, as targets started at different times would.
            interval_ms: Some(900),
            shows: "hop 1 (r1) rate-limits its ICMP errors: most of its replies are \
                    missing, shown grey as rate limiting, and no alert is ever raised",
            alerts_expected: false,
        },
        DemoTarget {
            name: "core",
            host: core.0.into(),
            protocol: "icmp",
            port: None,
            label: "Core router r4",
            interval_ms: Some(950),
            shows: "the loss bursts (starting at hop 3) and the route changes; \
                    the latency step is beyond it",
            alerts_expected: true,
        },
        DemoTarget {
            name: "dst",
            host: plan.targets_v4[0].into(),
            protocol: "icmp",
            port: None,
            label: "Server (ICMP)",
            interval_ms: None,
            shows: "everything: loss from hop 3, route changes, the latency step from r5",
            alerts_expected: true,
        },
        DemoTarget {
            name: "web",
            host: plan.targets_v4[1].into(),
            protocol: "tcp",
            port: Some(443),
            label: "Web server (TCP 443)",
            interval_ms: Some(1050),
            shows: "the same path probed with TCP SYNs (the closed port answers with a RST)",
            alerts_expected: true,
        },
        DemoTarget {
            name: "dst-v6",
            host: plan.targets_v6[0].into(),
            protocol: "icmp",
            port: None,
            label: "Server over IPv6",
            interval_ms: None,
            shows: "the same path over IPv6 (ICMPv6)",
            alerts_expected: true,
        },
    ]
}

/// One scripted change to the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A loss burst begins on [`LOSS_LINK`].
    LossStart,
    /// It ends.
    LossEnd,
    /// [`DELAY`] is added on [`DELAY_LINK`].
    LatencyStart,
    /// It is removed.
    LatencyEnd,
    /// Traffic between r3 and r4 moves to branch `n` (0: a1, 1: b1 - b2).
    Route(usize),
}

/// Seconds (at the normal pace) before the first event: the windows fill and
/// the latency baselines settle.
const WARMUP_S: u64 = 60;
/// The timeline repeats with this period.
const CYCLE_S: u64 = 450;
/// One cycle: offsets from its start. A loss burst outlasts a window, so the
/// loss alerts raise with plenty of the burst in view (and name the right
/// hop) even when the destination's loss reads below the link's. The latency
/// step starts well over a window after a route change, because the daemon
/// compares latency only within one path; alerts have cleared before the
/// route changes.
const CYCLE: [(u64, Event); 6] = [
    (0, Event::LossStart),
    (90, Event::LossEnd),
    (150, Event::Route(1)),
    (225, Event::LatencyStart),
    (315, Event::LatencyEnd),
    (360, Event::Route(0)),
];

/// "60 s", "22.5 s".
pub fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn branch_route(branch: usize) -> &'static str {
    match branch {
        0 => "r3 -> a1 -> r4",
        _ => "r3 -> b1 -> b2 -> r4 (one hop longer)",
    }
}

/// The demo's schedule at one pace, repeating forever.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    pace: Pace,
}

impl Timeline {
    /// The schedule at `pace`.
    pub fn new(pace: Pace) -> Self {
        Self { pace }
    }

    /// The length of one cycle.
    pub fn cycle(&self) -> Duration {
        self.pace.scaled(CYCLE_S)
    }

    /// How many events one cycle has.
    pub fn events_per_cycle(&self) -> usize {
        CYCLE.len()
    }

    /// The `n`-th event (from 0): when, counted from the demo's start, and what.
    pub fn nth(&self, n: usize) -> (Duration, Event) {
        let (offset, event) = CYCLE[n % CYCLE.len()];
        let cycles = (n / CYCLE.len()) as u64;
        (
            self.pace.scaled(WARMUP_S + cycles * CYCLE_S + offset),
            event,
        )
    }

    /// How long the event starting at `CYCLE[i]` lasts, if it ends itself.
    fn span_of(&self, event: Event) -> Option<Duration> {
        let end = match event {
            Event::LossStart => Event::LossEnd,
            Event::LatencyStart => Event::LatencyEnd,
            _ => return None,
        };
        let at = |e: Event| CYCLE.iter().find(|(_, x)| *x == e).map(|(t, _)| *t);
        Some(self.pace.scaled(at(end)? - at(event)?))
    }

    /// One line about `event`, as the banner and the log say it.
    pub fn describe(&self, event: Event) -> String {
        let span = |e| {
            self.span_of(e)
                .map(|d| format!(" for {}", seconds(d)))
                .unwrap_or_default()
        };
        let (from, to) = (LOSS_LINK.0, LOSS_LINK.1);
        let (dfrom, dto) = (DELAY_LINK.0, DELAY_LINK.1);
        match event {
            Event::LossStart => format!(
                "loss burst: {LOSS_PCT}% of packets {from} -> {to} lost{}; \
                 core, dst, web and dst-v6 raise loss alerts \"starting at hop 3\"",
                span(event)
            ),
            Event::LossEnd => format!("loss burst over: {from} -> {to} is clean again"),
            Event::LatencyStart => format!(
                "latency step: +{} ms on {dfrom} -> {dto}{}; dst, web and dst-v6 \
                 raise latency alerts starting at {dto}",
                DELAY.as_millis(),
                span(event)
            ),
            Event::LatencyEnd => format!("latency step over: {dfrom} -> {dto} is fast again"),
            Event::Route(b) => format!(
                "route change: traffic now takes {}; core, dst, web and dst-v6 raise \
                 route and hop-count change alerts",
                branch_route(b)
            ),
        }
    }
}

/// The impairments in force: the permanent rate limiting, and whichever
/// scripted events are active. Dropping it lifts them all.
#[derive(Debug)]
pub struct Network<'lab> {
    lab: &'lab Lab,
    _rate_limit: Impairment<'lab>,
    loss: Option<Impairment<'lab>>,
    delay: Option<Delay<'lab>>,
}

impl<'lab> Network<'lab> {
    /// Turns on the rate limiting of [`RATE_LIMITED`] for the lab's life.
    pub fn new(lab: &'lab Lab, pace: Pace) -> LabResult<Self> {
        let per_sec = pace.rate_limit();
        Ok(Self {
            lab,
            _rate_limit: lab.icmp_rate_limit(RATE_LIMITED, per_sec, per_sec)?,
            loss: None,
            delay: None,
        })
    }

    /// Plays `event` on the lab.
    pub fn apply(&mut self, event: Event) -> LabResult<()> {
        match event {
            Event::LossStart => {
                self.loss = Some(
                    self.lab
                        .loss(At::link(LOSS_LINK.0, LOSS_LINK.1), LOSS_PCT)?,
                );
            }
            Event::LossEnd => {
                if let Some(loss) = self.loss.take() {
                    loss.remove()?;
                }
            }
            Event::LatencyStart => {
                self.delay = Some(self.lab.delay(
                    At::link(DELAY_LINK.0, DELAY_LINK.1),
                    DelaySpec::fixed(DELAY),
                )?);
            }
            Event::LatencyEnd => {
                if let Some(delay) = self.delay.take() {
                    delay.remove()?;
                }
            }
            Event::Route(branch) => {
                self.lab.set_path(PathSelect::Branch(branch))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan::new(&lab_spec(), "example").expect("the demo's spec is valid")
    }

    #[test]
    fn targets_sit_where_the_events_reach_them_as_described() {
        let plan = plan();
        let targets = targets(&plan);
        let host = |name: &str| targets.iter().find(|t| t.name == name).unwrap().host;
        // edge is r2 (before the lossy link), core is r4 (before the slow link).
        assert_eq!(plan.owner_of(host("edge")), plan.find("r2"));
        assert_eq!(plan.owner_of(host("core")), plan.find("r4"));
        for name in ["dst", "web", "dst-v6"] {
            assert_eq!(plan.owner_of(host(name)), Some(plan.dst), "{name}");
        }
        assert_eq!(targets.iter().filter(|t| !t.alerts_expected).count(), 1);
        let (ttl, v4, _) = loss_starts_at(&plan);
        assert_eq!((ttl, v4), (3, Ipv4Addr::new(198, 18, 2, 2)));
        assert_eq!(
            plan.path_routers(0)[usize::from(ttl) - 1],
            plan.find("r3").unwrap()
        );
    }

    #[test]
    fn the_timeline_repeats_and_scales_with_the_pace() {
        let normal = Timeline::new(Pace::Normal);
        let fast = Timeline::new(Pace::Fast);
        assert_eq!(normal.nth(0), (Duration::from_secs(60), Event::LossStart));
        assert_eq!(normal.nth(6), (Duration::from_secs(510), Event::LossStart));
        assert_eq!(
            fast.nth(2),
            (Duration::from_millis(52_500), Event::Route(1))
        );
        assert_eq!(fast.cycle(), Duration::from_millis(112_500));
        // Events are in order, and the latency step waits more than a window
        // after a route change (the daemon compares latency within one path).
        let mut last = Duration::ZERO;
        let mut route_at = None;
        for n in 0..2 * normal.events_per_cycle() {
            let (at, event) = normal.nth(n);
            assert!(at > last, "event {n} comes after the one before");
            last = at;
            match event {
                Event::Route(_) => route_at = Some(at),
                Event::LatencyStart => {
                    let since = at - route_at.expect("a route change comes first");
                    assert!(since > normal.interval_for_windows(1));
                }
                _ => {}
            }
        }
        assert!(normal.describe(Event::LossStart).contains("for 90 s"));
        assert!(fast.describe(Event::LatencyStart).contains("for 22.5 s"));
    }

    impl Timeline {
        fn interval_for_windows(&self, n: u32) -> Duration {
            self.pace.interval() * WINDOW * n
        }
    }
}
