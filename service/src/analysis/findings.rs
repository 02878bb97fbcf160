//! The judgements drawn from per-hop window statistics: which hops lose ICMP
//! replies that the path does not (rate limiting), which answer slowly on
//! their own (slow responders), and where along the path a destination's loss
//! or latency degradation begins (localisation), with a confidence.
//!
//! # Same rounds, since the change
//! A degradation usually begins part-way through the window, so a hop's window
//! loss mixes old rounds with new ones and, on a short window, is mostly noise.
//! Localisation therefore first finds the *onset* in the destination's probes
//! (the round where its loss rate, or its share of slow answers, stepped up:
//! the best two-segment split by binomial likelihood, accepted when the
//! likelihood-ratio statistic reaches [`ONSET_MIN_LLR`]) and then compares
//! every hop over exactly those rounds: each hop's window holds one probe per
//! round, so the last `n` probes of every hop are the same `n` rounds. Without
//! a clear onset (the problem predates the window) the whole window is used.
//!
//! # ICMP rate limiting
//! An intermediate hop `k` (before the destination) is flagged when, over the
//! window, it has at least [`MIN_WINDOW_PROBES`] probes, loses at least
//! [`RATE_LIMIT_MIN_LOSS_PCT`], and some later hop that answers (any later TTL or
//! the destination) loses at most `max(`[`RATE_LIMIT_FLOOR_PCT`]`, loss(k) / 2)`
//! *and* significantly less (one-sided two-proportion z at least
//! [`RATE_LIMIT_MIN_Z`], or [`RATE_LIMIT_LOSSY_MIN_Z`] when that later hop
//! loses more than the floor itself): a few unlucky losses on a short window
//! are not a router's policy. The higher bar for a lossy later hop is because
//! two hops behind the same lossy link differ by chance all the time, and a
//! window that slides every round tests that pair again and again: at z 3 the
//! hop where the loss starts was flagged in about 1 round of 700 at 40%
//! loss (simulated), which hid it from localisation. Packets that reach that later hop crossed hop `k`'s router,
//! so the replies missing from `k` were the router declining to answer, not
//! forwarding loss. Flagged loss is never path loss: path loss is the
//! destination's loss.
//!
//! # Slow responders
//! An intermediate hop that, in at least [`SLOW_RESPONDER_MIN_SHARE`] of the
//! rounds where both answer,
//! answers later than some later hop by at least [`SLOW_RESPONDER_MIN_NS`] and
//! [`SLOW_RESPONDER_MIN_RATIO`] of that hop's RTT answers slowly on its own:
//! probes to the later hop cross it, so the extra time is spent generating its
//! ICMP reply (a router's slow path), not forwarding. It is flagged and never
//! counts for latency localisation. Pairing by round means a latency step that
//! reaches both hops at once never looks like one.
//!
//! # Localisation: a step along the path
//! Over the rounds since the onset, each informative hop (enough probes, some
//! answers, not flagged) gives a tally: lost probes of all sent for loss;
//! answers at least half the destination's rise above the hop's own baseline,
//! of all answers, for latency. The degradation starts at the hop `s` that best
//! splits the chain (intermediate hops then the destination) into a low rate
//! before `s` and a higher one from `s` on, by binomial likelihood: a problem
//! on the way persists to the destination, so every hop from its start carries
//! it, while a hop that only loses or delays its own replies fits neither side
//! and pulls no split towards it. The confidence is the share of `s` in the
//! likelihood of all possible starts (a flat prior): near 1 when the hops agree,
//! low when the data cannot tell two starts apart. When nothing answers from
//! some hop on and the destination is silent, the path breaks right after the
//! last hop that answers.
//!
//! The destination is degraded for loss when it has at least
//! [`MIN_WINDOW_PROBES`] probes and loses at least [`DEST_LOSS_DEGRADED_PCT`]
//! over the window; for latency when its p50 rise (over the rounds since the
//! onset) is at least [`LATENCY_STEP_MIN_NS`] and [`LATENCY_STEP_MIN_RATIO`] of
//! its baseline, the best RTT since the current path was established. The
//! caller withholds latency findings until the window holds only samples from
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
/// How far above a later hop's loss a hop's must be, in standard errors of the
/// difference, to be flagged (one-sided; about 1 in 700 by chance alone).
pub const RATE_LIMIT_MIN_Z: f64 = 3.0;
/// The same when the later hop itself loses more than [`RATE_LIMIT_FLOOR_PCT`].
pub const RATE_LIMIT_LOSSY_MIN_Z: f64 = 4.5;
/// A hop answering later than a later hop by at least this much ...
pub const SLOW_RESPONDER_MIN_NS: u64 = 2_000_000;
/// ... and by at least this fraction of the later hop's RTT ...
pub const SLOW_RESPONDER_MIN_RATIO: f64 = 0.25;
/// ... in at least this share of the rounds where both answer, is slow to
/// answer itself. A slow path is slow nearly every time; jitter on the link
/// before two hops puts either one ahead by chance, and with 20 ms of uniform
/// jitter a hop trailed the next by the margin in about 38% of rounds, so at
/// one half a 40-round window crossed the bar by chance every few dozen
/// rounds and hid the hop where the jitter starts.
pub const SLOW_RESPONDER_MIN_SHARE: f64 = 0.75;
/// Destination loss from which a loss localisation is made.
pub const DEST_LOSS_DEGRADED_PCT: f64 = 3.0;
/// Smallest destination latency rise (p50 over baseline) that is a degradation.
pub const LATENCY_STEP_MIN_NS: u64 = 10_000_000;
/// ... and it must also be at least this fraction of the baseline.
pub const LATENCY_STEP_MIN_RATIO: f64 = 0.25;
/// An answer counts as raised when it lies at least this fraction of the
/// destination's rise above its hop's baseline.
pub const LATENCY_CARRY_FACTOR: f64 = 0.5;
/// Answers a hop needs (over the compared rounds) before its latency counts.
pub const MIN_LATENCY_ANSWERS: u64 = 5;
/// Probes a hop needs over the compared rounds before its loss counts.
pub const MIN_COMPARED_PROBES: u64 = 5;
/// From where a step begins, the rate must be at least this multiple of the
/// rate before it.
pub const STEP_MIN_RATIO: f64 = 2.0;
/// Twice the log-likelihood gain of splitting the destination's probes in two
/// that makes the split an onset (a chi-square of 10.8 is p = 0.001 for one
/// split point; the best of many splits needs the margin).
pub const ONSET_MIN_LLR: f64 = 10.8;
/// The onset leaves at least this many rounds after it ...
pub const ONSET_MIN_AFTER: usize = 10;
/// ... and this many before it.
pub const ONSET_MIN_BEFORE: usize = 5;

/// What the findings need to know about one hop's window.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HopView {
    pub ttl: u8,
    pub responder: Option<IpAddr>,
    /// The window's probes, oldest first: the RTT of an answer, `None` when lost.
    pub probes: Vec<Option<u64>>,
    /// Best RTT since the current path was established.
    pub baseline_ns: Option<u64>,
}

impl HopView {
    /// The last `rounds` probes (all of them when the window is shorter).
    fn recent(&self, rounds: usize) -> &[Option<u64>] {
        &self.probes[self.probes.len().saturating_sub(rounds)..]
    }

    fn window(&self) -> Tally {
        Tally::lost_of(&self.probes)
    }

    /// The p50 of the answers among the last `rounds` probes.
    fn p50_ns(&self, rounds: usize) -> Option<u64> {
        let mut rtts: Vec<u64> = self.recent(rounds).iter().flatten().copied().collect();
        if rtts.is_empty() {
            return None;
        }
        rtts.sort_unstable();
        Some(rtts[(rtts.len() - 1) / 2])
    }

    /// The p50 rise over the baseline across the last `rounds` probes, given
    /// enough answers.
    fn rise_ns(&self, rounds: usize) -> Option<u64> {
        let answers = self.recent(rounds).iter().flatten().count() as u64;
        if answers < MIN_LATENCY_ANSWERS {
            return None;
        }
        Some(self.p50_ns(rounds)?.saturating_sub(self.baseline_ns?))
    }

    /// Answers among the last `rounds` probes at least `by_ns` above the baseline.
    fn raised(&self, rounds: usize, by_ns: u64) -> Tally {
        let baseline = self.baseline_ns.unwrap_or(0);
        let answers = self.recent(rounds).iter().flatten();
        answers.fold(Tally::default(), |t, rtt| {
            t.add(Tally {
                trials: 1,
                hits: u64::from(rtt.saturating_sub(baseline) >= by_ns),
            })
        })
    }
}

/// Hits of some trials: lost probes of those sent, or raised answers of all
/// answers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Tally {
    trials: u64,
    hits: u64,
}

impl Tally {
    fn lost_of(probes: &[Option<u64>]) -> Tally {
        Tally {
            trials: probes.len() as u64,
            hits: probes.iter().filter(|p| p.is_none()).count() as u64,
        }
    }

    fn add(self, other: Tally) -> Tally {
        Tally {
            trials: self.trials + other.trials,
            hits: self.hits + other.hits,
        }
    }

    fn rate(self) -> f64 {
        if self.trials == 0 {
            0.0
        } else {
            self.hits as f64 / self.trials as f64
        }
    }

    fn pct(self) -> f64 {
        100.0 * self.rate()
    }

    fn answered(self) -> u64 {
        self.trials - self.hits
    }

    /// The binomial log-likelihood of these counts at their own rate (the
    /// maximum over all rates; the binomial coefficient cancels in every
    /// comparison made here).
    fn log_likelihood(self) -> f64 {
        let term = |k: u64, p: f64| if k == 0 { 0.0 } else { k as f64 * p.ln() };
        let p = self.rate();
        term(self.hits, p) + term(self.trials - self.hits, 1.0 - p)
    }
}

/// How many standard errors `a`'s rate lies above `b`'s (pooled two-proportion
/// z statistic; 0 when either is empty or both rates are 0 or 1).
fn z_above(a: Tally, b: Tally) -> f64 {
    if a.trials == 0 || b.trials == 0 {
        return 0.0;
    }
    let pooled = a.add(b).rate();
    let se = (pooled * (1.0 - pooled) * (1.0 / a.trials as f64 + 1.0 / b.trials as f64)).sqrt();
    if se == 0.0 {
        0.0
    } else {
        (a.rate() - b.rate()) / se
    }
}

/// Rounds since the hit rate of `rounds` (one tally per round, oldest first)
/// stepped up, when it clearly did; `None` when it is steady throughout.
fn onset(rounds: &[Tally]) -> Option<usize> {
    let n = rounds.len();
    if n < ONSET_MIN_BEFORE + ONSET_MIN_AFTER {
        return None;
    }
    let total = rounds.iter().fold(Tally::default(), |a, t| a.add(*t));
    let whole = total.log_likelihood();
    let mut before = Tally::default();
    let mut best: Option<(f64, usize)> = None;
    for (t, round) in rounds.iter().enumerate().take(n - ONSET_MIN_AFTER + 1) {
        if t >= ONSET_MIN_BEFORE {
            let after = Tally {
                trials: total.trials - before.trials,
                hits: total.hits - before.hits,
            };
            if after.rate() > before.rate() {
                let gain = before.log_likelihood() + after.log_likelihood() - whole;
                if best.is_none_or(|(g, _)| gain > g) {
                    best = Some((gain, t));
                }
            }
        }
        before = before.add(*round);
    }
    best.filter(|(gain, _)| 2.0 * gain >= ONSET_MIN_LLR)
        .map(|(_, t)| n - t)
}

/// One tally per round over every hop of the path, oldest round first, for
/// the destination's `len` rounds: `count` judges one hop's probe. Pooling the
/// hops finds the onset from every probe that crossed the problem, not from
/// the destination's alone.
fn per_round(
    hops: &[&HopView],
    len: usize,
    count: impl Fn(&HopView, Option<u64>) -> Tally,
) -> Vec<Tally> {
    let mut rounds = vec![Tally::default(); len];
    for hop in hops {
        let recent = hop.recent(len);
        let offset = len - recent.len();
        for (j, probe) in recent.iter().enumerate() {
            rounds[offset + j] = rounds[offset + j].add(count(hop, *probe));
        }
    }
    rounds
}

/// Where a step up in the rate of `chain`'s tallies (path order) begins, and
/// how sure that is: see the module docs.
fn step_start(chain: &[Tally]) -> Option<(usize, f64)> {
    let total = chain.iter().fold(Tally::default(), |a, t| a.add(*t));
    let mut before = Tally::default();
    let mut fits: Vec<(usize, f64)> = Vec::with_capacity(chain.len());
    for (s, tally) in chain.iter().enumerate() {
        let from = Tally {
            trials: total.trials - before.trials,
            hits: total.hits - before.hits,
        };
        if s == 0 {
            fits.push((s, from.log_likelihood()));
        } else if from.rate() > STEP_MIN_RATIO * before.rate() {
            // A split has one more rate to fit than none: the Bayesian
            // information criterion's price for it, so noise along a path
            // that loses from its first hop does not invent a step.
            let price = 0.5 * (total.trials as f64).ln();
            fits.push((s, before.log_likelihood() + from.log_likelihood() - price));
        }
        before = before.add(*tally);
    }
    let &(start, best) = fits.iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
    let share: f64 = fits.iter().map(|(_, ll)| (ll - best).exp()).sum();
    Some((start, 1.0 / share))
}

/// Which way the destination degraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DegradationKind {
    Loss,
    Latency,
}

/// The numbers behind a localisation, over the compared rounds.
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
    /// How sure the analysis is of this hop, 0 to 1 (see the module docs).
    pub confidence: f64,
    /// The rounds every hop was compared over: those since the destination's
    /// onset, or the whole window.
    pub rounds: usize,
    /// Set when the return path changed (from this TTL on) as the latency
    /// rise began: the rise may be on the way back, not on the forward path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_path_changed_ttl: Option<u8>,
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
            let own = hop.window();
            let loss = own.pct();
            if own.trials < MIN_WINDOW_PROBES || loss < RATE_LIMIT_MIN_LOSS_PCT {
                return false;
            }
            let clear = RATE_LIMIT_FLOOR_PCT.max(loss / 2.0);
            intermediate[i + 1..]
                .iter()
                .chain(std::iter::once(destination))
                .map(HopView::window)
                .any(|later| {
                    later.trials >= MIN_WINDOW_PROBES
                        && later.answered() > 0
                        && later.pct() <= clear
                        && z_above(own, later) >= rate_limit_min_z(later)
                })
        })
        .collect()
}

/// How significant a hop's excess loss over `later` must be to call it rate
/// limiting: see the module docs.
fn rate_limit_min_z(later: Tally) -> f64 {
    if later.pct() <= RATE_LIMIT_FLOOR_PCT {
        RATE_LIMIT_MIN_Z
    } else {
        RATE_LIMIT_LOSSY_MIN_Z
    }
}

/// Whether `own` (an earlier hop's RTT) is slower than `later`'s by the margin
/// that makes a responder slow.
fn inverted(own: u64, later: u64) -> bool {
    own >= later + SLOW_RESPONDER_MIN_NS
        && (own - later) as f64 >= SLOW_RESPONDER_MIN_RATIO * later as f64
}

/// The slow-responder flag of each intermediate hop (same order as
/// `intermediate`): in [`SLOW_RESPONDER_MIN_SHARE`] of the rounds where both
/// answered, it took longer than some later hop by the margin. Paired by
/// round, so a latency step that reaches both hops at once never looks like one.
pub(crate) fn slow_responders(intermediate: &[HopView], destination: &HopView) -> Vec<bool> {
    intermediate
        .iter()
        .enumerate()
        .map(|(i, hop)| {
            intermediate[i + 1..]
                .iter()
                .chain(std::iter::once(destination))
                .any(|later| {
                    let rounds = hop.probes.len().min(later.probes.len());
                    let (mut paired, mut slower) = (0u64, 0u64);
                    for (own, next) in hop.recent(rounds).iter().zip(later.recent(rounds)) {
                        if let (Some(own), Some(next)) = (own, next) {
                            paired += 1;
                            slower += u64::from(inverted(*own, *next));
                        }
                    }
                    paired >= MIN_LATENCY_ANSWERS
                        && slower as f64 >= SLOW_RESPONDER_MIN_SHARE * paired as f64
                })
        })
        .collect()
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

/// "; compared over the last 23 rounds, confidence 97%".
fn fmt_basis(rounds: usize, confidence: f64) -> String {
    format!(
        "; compared over the last {rounds} rounds, confidence {:.0}%",
        100.0 * confidence
    )
}

/// The loss localisation, when the destination loses enough to be degraded.
/// `flags` are the rate-limit flags of `intermediate`.
pub(crate) fn localise_loss(
    intermediate: &[HopView],
    flags: &[bool],
    destination: &HopView,
) -> Option<Localisation> {
    let window = destination.window();
    if window.trials < MIN_WINDOW_PROBES || window.pct() < DEST_LOSS_DEGRADED_PCT {
        return None;
    }
    let len = destination.probes.len();
    let path: Vec<&HopView> = intermediate.iter().chain([destination]).collect();
    let lost = per_round(&path, len, |_, probe| Tally {
        trials: 1,
        hits: u64::from(probe.is_none()),
    });
    let rounds = onset(&lost).unwrap_or(len);
    let tally = |hop: &HopView| Tally::lost_of(hop.recent(rounds));
    let dest = tally(destination);
    // Hops whose replies say something about forwarding over these rounds.
    let informative: Vec<&HopView> = intermediate
        .iter()
        .zip(flags.iter().chain(std::iter::repeat(&false)))
        .filter(|(hop, flagged)| {
            let t = tally(hop);
            !**flagged && t.trials >= MIN_COMPARED_PROBES && t.answered() > 0
        })
        .map(|(hop, _)| hop)
        .collect();

    if dest.answered() == 0 {
        // Nothing comes back from the destination: the path breaks right
        // after the last hop that still answers.
        let previous = informative.last().copied();
        let ttl = previous.map_or(1, |p| p.ttl.saturating_add(1));
        let hop = intermediate.iter().find(|h| h.ttl == ttl);
        let mut summary = format!(
            "no replies from hop {ttl} onwards, {} at the destination",
            fmt_pct(dest.pct())
        );
        if let Some(p) = previous {
            let _ = write!(
                summary,
                "; {} before it at {}",
                fmt_pct(tally(p).pct()),
                fmt_hop(p.ttl, p.responder)
            );
        }
        return Some(Localisation {
            kind: DegradationKind::Loss,
            ttl,
            responder: hop.and_then(|h| h.responder),
            confidence: 1.0,
            rounds,
            return_path_changed_ttl: None,
            evidence: Evidence::Loss {
                hop_loss_pct: hop.map(|h| tally(h).pct()),
                previous_ttl: previous.map(|p| p.ttl),
                previous_loss_pct: previous.map(|p| tally(p).pct()),
                destination_loss_pct: dest.pct(),
            },
            summary,
        });
    }

    let chain: Vec<&HopView> = informative.into_iter().chain([destination]).collect();
    let tallies: Vec<Tally> = chain.iter().map(|h| tally(h)).collect();
    let (start, confidence) = step_start(&tallies)?;
    let hop = chain[start];
    let previous = start.checked_sub(1).map(|p| chain[p]);
    let mut summary = if start == chain.len() - 1 {
        format!(
            "loss starts at the destination, {}: {}",
            fmt_hop(hop.ttl, hop.responder),
            fmt_pct(dest.pct())
        )
    } else {
        format!(
            "loss starts at {}: {} there and at every hop after it, {} at the destination",
            fmt_hop(hop.ttl, hop.responder),
            fmt_pct(tallies[start].pct()),
            fmt_pct(dest.pct())
        )
    };
    if let Some(p) = previous {
        let _ = write!(
            summary,
            "; {} before it at {}",
            fmt_pct(tally(p).pct()),
            fmt_hop(p.ttl, p.responder)
        );
    }
    // A rate-limited hop between the two cannot tell whether it forwards the loss.
    let hidden: Vec<String> = intermediate
        .iter()
        .zip(flags)
        .filter(|(h, flagged)| {
            **flagged && h.ttl < hop.ttl && previous.is_none_or(|p| h.ttl > p.ttl)
        })
        .map(|(h, _)| h.ttl.to_string())
        .collect();
    if !hidden.is_empty() {
        let _ = write!(
            summary,
            " (hop {} between them limits its ICMP replies: the loss may start there)",
            hidden.join(", ")
        );
    }
    summary.push_str(&fmt_basis(rounds, confidence));
    Some(Localisation {
        kind: DegradationKind::Loss,
        ttl: hop.ttl,
        responder: hop.responder,
        confidence,
        rounds,
        return_path_changed_ttl: None,
        evidence: Evidence::Loss {
            hop_loss_pct: Some(tallies[start].pct()),
            previous_ttl: previous.map(|p| p.ttl),
            previous_loss_pct: previous.map(|p| tally(p).pct()),
            destination_loss_pct: dest.pct(),
        },
        summary,
    })
}

/// Whether a rise of `rise_ns` over `baseline_ns` is a latency degradation.
fn degraded_rise(rise_ns: u64, baseline_ns: u64) -> bool {
    rise_ns >= LATENCY_STEP_MIN_NS && rise_ns as f64 >= LATENCY_STEP_MIN_RATIO * baseline_ns as f64
}

/// The latency localisation, when the destination's p50 has risen enough above
/// its baseline to be degraded. `slow` are the slow-responder flags of
/// `intermediate`.
pub(crate) fn localise_latency(
    intermediate: &[HopView],
    slow: &[bool],
    destination: &HopView,
) -> Option<Localisation> {
    let dest_baseline = destination.baseline_ns?;
    // The onset of answers raised by half the smallest degradation.
    let smallest = LATENCY_STEP_MIN_NS.max((LATENCY_STEP_MIN_RATIO * dest_baseline as f64) as u64);
    let len = destination.probes.len();
    let path: Vec<&HopView> = intermediate.iter().chain([destination]).collect();
    let raised = per_round(&path, len, |hop, probe| match (probe, hop.baseline_ns) {
        (Some(rtt), Some(baseline)) => Tally {
            trials: 1,
            hits: u64::from(rtt.saturating_sub(baseline) >= smallest / 2),
        },
        _ => Tally::default(),
    });
    let rounds = onset(&raised).unwrap_or(len);
    let dest_rise = destination.rise_ns(rounds)?;
    let dest_p50 = destination.p50_ns(rounds)?;
    if !degraded_rise(dest_rise, dest_baseline) {
        return None;
    }
    let by_ns = (LATENCY_CARRY_FACTOR * dest_rise as f64) as u64;
    let chain: Vec<&HopView> = intermediate
        .iter()
        .zip(slow.iter().chain(std::iter::repeat(&false)))
        .filter(|(hop, flagged)| !**flagged && hop.rise_ns(rounds).is_some())
        .map(|(hop, _)| hop)
        .chain([destination])
        .collect();
    let tallies: Vec<Tally> = chain.iter().map(|h| h.raised(rounds, by_ns)).collect();
    let (start, confidence) = step_start(&tallies)?;
    let hop = chain[start];
    let hop_rise = hop.rise_ns(rounds)?;
    let previous = start.checked_sub(1).map(|p| chain[p]);
    let mut summary = if start == chain.len() - 1 {
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
            fmt_ms(p.rise_ns(rounds).unwrap_or(0)),
            fmt_hop(p.ttl, p.responder)
        );
    }
    summary.push_str(&fmt_basis(rounds, confidence));
    Some(Localisation {
        kind: DegradationKind::Latency,
        ttl: hop.ttl,
        responder: hop.responder,
        confidence,
        rounds,
        return_path_changed_ttl: None,
        evidence: Evidence::Latency {
            hop_rise_ns: hop_rise,
            previous_ttl: previous.map(|p| p.ttl),
            previous_rise_ns: previous.and_then(|p| p.rise_ns(rounds)),
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

    /// A hop whose `lost` of 100 probes are lost, spread evenly, and whose
    /// answers take `rtt_ms`; its baseline is `best_ms`.
    fn hop(ttl: u8, lost: u64, rtt_ms: u64, best_ms: u64) -> HopView {
        let probes = (0..100u64)
            .map(|i| ((i + 1) * lost / 100 == i * lost / 100).then_some(rtt_ms * MS))
            .collect();
        HopView {
            ttl,
            responder: addr(ttl),
            probes,
            baseline_ns: (lost < 100).then_some(best_ms * MS),
        }
    }

    /// A hop answering every probe, its RTT per round given by `rtt_ms(round)`.
    fn timed(ttl: u8, rounds: u64, best_ms: u64, rtt_ms: impl Fn(u64) -> u64) -> HopView {
        HopView {
            ttl,
            responder: addr(ttl),
            probes: (0..rounds).map(|r| Some(rtt_ms(r) * MS)).collect(),
            baseline_ns: Some(best_ms * MS),
        }
    }

    fn split(hops: &[HopView]) -> (&[HopView], &HopView) {
        let (dest, inter) = hops.split_last().unwrap();
        (inter, dest)
    }

    /// A small deterministic generator (xorshift), so noisy cases repeat.
    struct Rng(u64);

    impl Rng {
        fn chance(&mut self, p: f64) -> bool {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64 <= p
        }
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
    fn hops_behind_one_lossy_link_are_not_rate_limiting_by_chance() {
        // Hops 2, 3 and the destination all sit behind a link losing 40%: a
        // window of 40 slides over 20,000 rounds, and hop 2 (where the loss
        // starts) must not be flagged, which would hide it from localisation.
        // At z 3 for every later hop this flagged it in 1 round of ~700.
        const WINDOW: usize = 40;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut lossy = |rounds: usize| -> Vec<Option<u64>> {
            (0..rounds)
                .map(|_| (!rng.chance(0.4)).then_some(5 * MS))
                .collect()
        };
        let rounds = 20_000;
        let series = [
            vec![Some(MS); rounds],
            lossy(rounds),
            lossy(rounds),
            lossy(rounds),
        ];
        let flagged = (WINDOW..=rounds)
            .filter(|&end| {
                let hops: Vec<HopView> = series
                    .iter()
                    .enumerate()
                    .map(|(i, probes)| HopView {
                        ttl: i as u8 + 1,
                        responder: addr(i as u8 + 1),
                        probes: probes[end - WINDOW..end].to_vec(),
                        baseline_ns: Some(MS),
                    })
                    .collect();
                let (inter, dest) = split(&hops);
                rate_limited(inter, dest)[1]
            })
            .count();
        assert!(
            flagged <= 2,
            "hop 2 flagged in {flagged} of {rounds} rounds"
        );
    }

    #[test]
    fn a_silent_hop_is_flagged_too() {
        let hops = [hop(1, 0, 1, 1), hop(2, 100, 0, 0), hop(3, 0, 3, 3)];
        let (inter, dest) = split(&hops);
        assert_eq!(rate_limited(inter, dest), vec![false, true]);
    }

    #[test]
    fn a_few_unlucky_losses_are_not_rate_limiting() {
        // 10 of 40 against 4 of 40 later: twice as much, but well within chance.
        let mut hops = [hop(1, 0, 1, 1), hop(2, 25, 2, 2), hop(3, 10, 3, 3)];
        for h in &mut hops {
            h.probes.truncate(40);
        }
        let (inter, dest) = split(&hops);
        assert_eq!(rate_limited(inter, dest), vec![false, false]);
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
        assert_eq!(found.rounds, 100, "steady loss: the whole window");
        assert!(found.confidence > 0.99, "{}", found.confidence);
        assert_eq!(
            found.summary,
            "loss starts at hop 2 (198.18.1.2): 30% there and at every hop after it, \
             31% at the destination; 0% before it at hop 1 (198.18.0.2); \
             compared over the last 100 rounds, confidence 100%"
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
        let found = localise_loss(inter, &flags, dest).unwrap();
        assert_eq!(found.ttl, 3);
        assert!(
            found
                .summary
                .contains("hop 2 between them limits its ICMP replies"),
            "{}",
            found.summary
        );
    }

    #[test]
    fn loss_must_persist_to_the_destination() {
        // Hop 2 loses some replies, hop 3 does not: the loss starts at hop 4.
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
    fn a_little_loss_at_the_destination_on_a_short_window_is_still_its_own() {
        // 2 of 40 lost at the destination only: too little to be sure of, but
        // the step model must not blame the whole path for it.
        let mut hops = [
            hop(1, 0, 1, 1),
            hop(2, 0, 2, 2),
            hop(3, 0, 3, 3),
            hop(4, 5, 4, 4),
        ];
        for h in &mut hops {
            h.probes.truncate(40);
        }
        let (inter, dest) = split(&hops);
        let found = localise_loss(inter, &rate_limited(inter, dest), dest).unwrap();
        assert_eq!(found.ttl, 4, "{}", found.summary);
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
        thin.probes.truncate(9);
        thin.probes[0] = None;
        assert_eq!(localise_loss(inter, &[false], &thin), None);
    }

    /// The defect behind issue 16: 40% loss from link 2 began part-way through
    /// a window of 40, and the window figures were noisy enough to name hop 3.
    /// Compared over the rounds since the onset, the right hop is named for
    /// nearly every seed, link, loss rate and window, wherever in the window
    /// the loss began, at the moment an alert at 20% would be raised; the
    /// rare miss says it is unsure.
    #[test]
    fn loss_that_began_inside_the_window_is_placed_right_for_every_seed() {
        let mut wrong = Vec::new();
        let mut judged = 0;
        let mut window_rule_wrong = 0;
        for seed in 1..=200u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            for (window, loss) in [(40, 0.4), (100, 0.3), (100, 0.5)] {
                // Loss on the link into hop `link` of a 6-hop path (7 is the
                // destination), for the last `since` rounds.
                let link = 1 + (seed % 7) as u8;
                let mut hops: Vec<HopView> =
                    (1..=7).map(|ttl| hop(ttl, 0, ttl.into(), 1)).collect();
                for h in &mut hops {
                    h.probes.truncate(window);
                }
                let mut since = 0;
                loop {
                    since += 1;
                    let round = window - since;
                    for h in hops.iter_mut().filter(|h| h.ttl >= link) {
                        h.probes[round] = (!rng.chance(loss)).then_some(1);
                    }
                    // Raised at the first round the destination loses 20%,
                    // or still not raised with the window full of loss.
                    let dest = hops.last().unwrap().recent(since);
                    if 5 * dest.iter().filter(|p| p.is_none()).count() >= window || since == window
                    {
                        break;
                    }
                }
                let (inter, dest) = split(&hops);
                if dest.window().pct() < 20.0 {
                    continue;
                }
                judged += 1;
                let flags = rate_limited(inter, dest);
                let found = localise_loss(inter, &flags, dest).unwrap();
                if found.ttl != link {
                    wrong.push((seed, window, loss, link, found.summary, found.confidence));
                }
                if window_rule::localise_loss(inter, dest) != Some(link) {
                    window_rule_wrong += 1;
                }
            }
        }
        // The figure for docs/benchmarks.md: this design against the one
        // before it, on the same draws.
        println!(
            "loss localisation at raise: wrong {} of {judged} (rounds since the onset, \
             step model); {window_rule_wrong} of {judged} with window percentages (before)",
            wrong.len()
        );
        assert!(judged > 500, "{judged}");
        // A few draws are ambiguous in the data itself (hop 2 losing 2 of 12
        // where hop 3 lost 4): those must say they are unsure.
        assert!(
            wrong.len() * 100 <= judged && wrong.iter().all(|w| w.5 < 0.75),
            "{} wrong of {judged}: {wrong:#?}",
            wrong.len()
        );
    }

    /// The loss localisation this module replaced (window percentages: a hop
    /// carries the loss at half the destination's window loss; rate limiting
    /// by ratio alone), kept only to measure the new one against it.
    mod window_rule {
        use super::super::{HopView, Tally};

        fn enough(t: Tally) -> bool {
            t.trials >= 10
        }

        pub fn localise_loss(intermediate: &[HopView], destination: &HopView) -> Option<u8> {
            let dest = destination.window();
            let flags: Vec<bool> = intermediate
                .iter()
                .enumerate()
                .map(|(i, hop)| {
                    let own = hop.window();
                    let clear = 2f64.max(own.pct() / 2.0);
                    enough(own)
                        && own.pct() >= 5.0
                        && intermediate[i + 1..]
                            .iter()
                            .chain([destination])
                            .map(HopView::window)
                            .any(|l| enough(l) && l.answered() > 0 && l.pct() <= clear)
                })
                .collect();
            let chain: Vec<&HopView> = intermediate.iter().chain([destination]).collect();
            let informative = |i: usize| {
                let t = chain[i].window();
                enough(t) && t.answered() > 0 && !flags.get(i).copied().unwrap_or(false)
            };
            let carries = |i: usize| chain[i].window().pct() >= 0.5 * dest.pct();
            let last_clear = (0..chain.len())
                .rev()
                .find(|i| informative(*i) && !carries(*i));
            let from = last_clear.map_or(0, |m| m + 1);
            (from..chain.len())
                .find(|i| informative(*i))
                .map(|s| chain[s].ttl)
        }
    }

    /// Rounds a steady-state test slides its window over.
    const STEADY_ROUNDS: usize = 5_000;

    /// Steady state: the loss has lasted longer than the window, which slides
    /// round by round, and every round's localisation must name the link.
    /// Before a step had to double the rate, loss from the first hop (where
    /// the no-step fit competes) was placed behind it in 3.7% of the rounds
    /// at 40% loss; noise alone then moved the live hop and any update.
    #[test]
    fn loss_that_lasts_stays_placed_as_the_window_slides() {
        let mut worst = (0.0, 0);
        for link in 1..=7u8 {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15u64.wrapping_mul(u64::from(link) + 7) | 1);
            let mut hops: Vec<HopView> = (1..=7).map(|ttl| hop(ttl, 0, ttl.into(), 1)).collect();
            for h in &mut hops {
                h.probes.truncate(40);
            }
            let (mut wrong, mut judged) = (0, 0);
            for round in 0..STEADY_ROUNDS {
                for h in hops.iter_mut() {
                    h.probes.remove(0);
                    let lost = h.ttl >= link && rng.chance(0.4);
                    h.probes.push((!lost).then_some(MS));
                }
                if round < 40 {
                    continue;
                }
                let (inter, dest) = split(&hops);
                let flags = rate_limited(inter, dest);
                let found = localise_loss(inter, &flags, dest).expect("40% loss is a finding");
                judged += 1;
                wrong += usize::from(found.ttl != link);
            }
            let share = wrong as f64 / judged as f64;
            if share > worst.0 {
                worst = (share, link);
            }
        }
        println!(
            "steady 40% loss, 40-round window: worst link {} wrong in {:.2}% of rounds",
            worst.1,
            100.0 * worst.0
        );
        assert!(worst.0 <= 0.01, "{worst:?}");
    }

    /// Jitter on a link (each packet delayed 0..`jitter_ms`, uniformly) puts
    /// one hop's answer behind the next one's by chance in many rounds: that
    /// must neither flag a slow responder nor move the latency localisation.
    /// At one half of the rounds for a slow responder, 40 ms of jitter placed
    /// the start one hop late in up to 10% of the rounds.
    #[test]
    fn jitter_that_lasts_flags_no_slow_responder_and_stays_placed() {
        for jitter_ms in [20u64, 40] {
            for link in 1..=7u8 {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15u64.wrapping_mul(u64::from(link) + 7) | 1);
                let mut hops: Vec<HopView> = (1..=7)
                    .map(|ttl| timed(ttl, 40, ttl.into(), |_| ttl.into()))
                    .collect();
                let (mut wrong, mut flagged) = (0, 0);
                for round in 0..STEADY_ROUNDS {
                    for h in hops.iter_mut() {
                        h.probes.remove(0);
                        let mut rtt = u64::from(h.ttl) * MS;
                        if h.ttl >= link {
                            // Uniform in 0..=jitter_ms, in 1/8 ms steps.
                            let draw = (0..16)
                                .fold(0u64, |d, bit| d | (u64::from(rng.chance(0.5)) << bit));
                            rtt += (draw % (jitter_ms * 8 + 1)) * MS / 8;
                        }
                        h.probes.push(Some(rtt));
                    }
                    if round < 40 {
                        continue;
                    }
                    let (inter, dest) = split(&hops);
                    let slow = slow_responders(inter, dest);
                    flagged += usize::from(slow.iter().any(|f| *f));
                    if let Some(found) = localise_latency(inter, &slow, dest) {
                        wrong += usize::from(found.ttl != link);
                    }
                }
                assert_eq!(
                    (flagged, wrong),
                    (0, 0),
                    "{jitter_ms} ms of jitter from hop {link}: rounds with a slow responder, wrongly placed"
                );
            }
        }
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
        let slow = slow_responders(inter, dest);
        assert_eq!(slow, vec![true, false, false, false]);
        let found = localise_latency(inter, &slow, dest).unwrap();
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
    fn a_step_that_began_inside_the_window_is_compared_since_its_onset() {
        // 100 rounds; +30 ms from hop 3 on for the last 30 of them only. The
        // window p50 has not moved yet, the last 30 rounds have.
        let hops: Vec<HopView> = (1..=5u8)
            .map(|ttl| {
                timed(ttl, 100, ttl.into(), move |r| {
                    u64::from(ttl) + if ttl >= 3 && r >= 70 { 30 } else { 0 }
                })
            })
            .collect();
        let (inter, dest) = split(&hops);
        let slow = slow_responders(inter, dest);
        assert_eq!(
            slow,
            vec![false; 4],
            "a shared step is not a slow responder"
        );
        let found = localise_latency(inter, &slow, dest).unwrap();
        assert_eq!((found.ttl, found.rounds), (3, 30), "{}", found.summary);
        assert!(found.confidence > 0.99);
    }

    #[test]
    fn a_slow_responder_is_flagged_and_never_a_finding() {
        // Hop 2 takes 20 ms to answer; hops after it answer in 3-5 ms.
        let hops = [
            hop(1, 0, 1, 1),
            hop(2, 0, 20, 2),
            hop(3, 0, 3, 3),
            hop(4, 0, 4, 4),
        ];
        let (inter, dest) = split(&hops);
        let slow = slow_responders(inter, dest);
        assert_eq!(slow, vec![false, true, false]);
        assert_eq!(localise_latency(inter, &slow, dest), None);
    }

    #[test]
    fn small_latency_rises_are_not_findings() {
        // +8 ms: under the absolute step.
        let hops = [hop(1, 0, 1, 1), hop(2, 0, 10, 2)];
        let (inter, dest) = split(&hops);
        assert_eq!(localise_latency(inter, &[false], dest), None);
        // +20 ms on a 100 ms path: under the relative step.
        let hops = [hop(1, 0, 1, 1), hop(2, 0, 120, 100)];
        let (inter, dest) = split(&hops);
        assert_eq!(localise_latency(inter, &[false], dest), None);
        // +30 ms on a 100 ms path is one.
        let hops = [hop(1, 0, 1, 1), hop(2, 0, 130, 100)];
        let (inter, dest) = split(&hops);
        assert_eq!(localise_latency(inter, &[false], dest).unwrap().ttl, 2);
    }

    #[test]
    fn onset_finds_where_a_rate_stepped_up() {
        let round = |hit: bool| Tally {
            trials: 1,
            hits: u64::from(hit),
        };
        let mut rounds = vec![round(false); 60];
        for i in (60..100).step_by(2) {
            rounds.push(round(i % 4 == 0));
            rounds.push(round(true));
        }
        assert_eq!(onset(&rounds), Some(40));
        let steady: Vec<Tally> = (0..100).map(|i| round(i % 2 == 0)).collect();
        assert_eq!(onset(&steady), None, "steady");
        assert_eq!(onset(&[round(false); 10]), None, "too short");
    }
}
