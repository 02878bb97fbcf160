//! Statistics of one hop (one TTL of one target): loss, RTT, percentiles and jitter
//! over a sliding window of the last N probes and since start, plus its responders.

use std::collections::VecDeque;
use std::net::IpAddr;

use serde::Serialize;

use super::responders::{
    OtherRespondersSnapshot, ResponderSnapshot, Responders, MAX_RESPONDERS_PER_HOP, OTHER_TAG,
};
use super::rtt_histogram::RttHistogram;
use crate::model::HopOutcome;
use crate::stats::RunningStats;

/// RTTs above one minute are recorded as one minute in the histogram (only there:
/// best/worst/avg keep the real value).
pub const HISTOGRAM_MAX_NS: u64 = 60_000_000_000;

/// RFC 3550 §6.4.1 smoothing: J += (|D| - J) / 16.
const RFC3550_GAIN: f64 = 1.0 / 16.0;

/// One probe of the window packed in 4 bytes (a hop keeps a window's worth,
/// so this is most of its memory): the responder tag in the top 4 bits, the
/// RTT in the other 28. RTTs below 2^27 ns (134 ms) are kept to the
/// nanosecond, longer ones to the microsecond (flagged by bit 27, up to 134 s,
/// past the longest probe timeout of a minute), so window statistics stay
/// exact to the kernel stamps' own precision on any real path. A lost probe
/// is all ones: its tag (15) is no responder's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WindowSample(u32);

impl WindowSample {
    const TAG_SHIFT: u32 = 28;
    /// Bit 27: the value counts microseconds.
    const MICROS: u32 = 1 << 27;
    /// The value's bits.
    const VALUE: u32 = Self::MICROS - 1;
    const LOST: u32 = u32::MAX;

    fn answered(rtt_ns: u64, tag: u8) -> WindowSample {
        const _: () = assert!(OTHER_TAG < (1 << (32 - WindowSample::TAG_SHIFT)) - 1);
        let rtt = match u32::try_from(rtt_ns) {
            Ok(ns) if ns < Self::MICROS => ns,
            _ => Self::MICROS | (rtt_ns / 1_000).min(u64::from(Self::VALUE)) as u32,
        };
        WindowSample(u32::from(tag.min(OTHER_TAG)) << Self::TAG_SHIFT | rtt)
    }

    fn lost() -> WindowSample {
        WindowSample(Self::LOST)
    }

    fn rtt_ns(self) -> Option<u64> {
        if self.0 == Self::LOST {
            return None;
        }
        let rtt = self.0 & (Self::MICROS | Self::VALUE);
        Some(if rtt & Self::MICROS != 0 {
            u64::from(rtt & Self::VALUE) * 1_000
        } else {
            u64::from(rtt)
        })
    }

    /// The responder tag; 15 (no responder's) for a lost probe.
    fn tag(self) -> u8 {
        (self.0 >> Self::TAG_SHIFT) as u8
    }
}

/// Change in RTT between consecutive answered probes (losses are skipped, as RFC
/// 3550 skips lost packets), since start.
#[derive(Debug, Clone, Copy, Default)]
struct Jitter {
    previous_ns: Option<u64>,
    pairs: u64,
    /// In f64 rather than u128: exact up to 2^53 ns (104 days of summed
    /// changes), never overflowing after, and a u128 would align the whole
    /// hop to 16 bytes.
    sum_ns: f64,
    max_ns: u64,
    rfc3550_ns: f64,
}

impl Jitter {
    fn push(&mut self, rtt_ns: u64) {
        if let Some(previous) = self.previous_ns {
            let delta = rtt_ns.abs_diff(previous);
            self.pairs += 1;
            self.sum_ns += delta as f64;
            self.max_ns = self.max_ns.max(delta);
            // For round trips, the RFC's transit-time difference D(i-1, i) is the
            // difference of the two RTTs.
            self.rfc3550_ns += (delta as f64 - self.rfc3550_ns) * RFC3550_GAIN;
        }
        self.previous_ns = Some(rtt_ns);
    }

    fn mean_ns(&self) -> Option<f64> {
        (self.pairs > 0).then(|| self.sum_ns / self.pairs as f64)
    }
}

/// Loss, RTT and jitter over a set of probes (the window, or since start).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsSnapshot {
    pub sent: u64,
    pub received: u64,
    /// `None` before the first probe.
    pub loss_pct: Option<f64>,
    pub last_ns: Option<u64>,
    pub avg_ns: Option<f64>,
    pub best_ns: Option<u64>,
    pub worst_ns: Option<u64>,
    /// Population standard deviation, as mtr reports it.
    pub stddev_ns: Option<f64>,
    /// Window: exact nearest-rank percentiles of the window's samples. Since start:
    /// from the histogram, never below the exact value and at most 512 ns or
    /// 0.8 % above it.
    pub p50_ns: Option<u64>,
    pub p95_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    /// Mean and maximum |ΔRTT| between consecutive answered probes.
    pub jitter_mean_ns: Option<f64>,
    pub jitter_max_ns: Option<u64>,
}

fn loss_pct(sent: u64, received: u64) -> Option<f64> {
    (sent > 0).then(|| 100.0 * sent.saturating_sub(received) as f64 / sent as f64)
}

/// Nearest-rank percentile of sorted samples: the smallest sample with at least
/// `q` of all samples at or below it (the rule the histogram also follows).
fn nearest_rank(sorted: &[u64], q: f64) -> Option<u64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    Some(sorted[rank - 1])
}

/// Statistics of one hop.
///
/// Memory per hop (window N = 100, x86-64): the struct itself (408 B, the
/// since-start histogram's fixed room included), ~80 B per responder seen
/// (at most 8; most hops have one), and the window 4 B x N = 400 B. In all
/// about 900 B for a typical hop, whatever its RTTs, and it does not grow
/// while the daemon runs. [`HopStats::approx_memory_bytes`] reports it.
#[derive(Debug, Clone)]
pub struct HopStats {
    capacity: usize,
    window: VecDeque<WindowSample>,
    sent: u64,
    rtt: RunningStats,
    histogram: RttHistogram,
    jitter: Jitter,
    /// Best RTT since the target's current path was established: the latency
    /// baseline for localisation, reset on a route change.
    path_best_ns: Option<u64>,
    responders: Responders,
}

impl HopStats {
    /// Statistics keeping a window of the last `window` probes (at least 1).
    pub fn new(window: usize) -> HopStats {
        let capacity = window.max(1);
        HopStats {
            capacity,
            window: VecDeque::with_capacity(capacity),
            sent: 0,
            rtt: RunningStats::default(),
            histogram: RttHistogram::default(),
            jitter: Jitter::default(),
            path_best_ns: None,
            responders: Responders::default(),
        }
    }

    /// Records one probe, answered or lost. `at_ms` is the round's start, for
    /// "last seen".
    pub fn record(&mut self, outcome: HopOutcome, at_ms: u64) {
        self.sent += 1;
        let sample = match outcome {
            HopOutcome::Answered(answer) => {
                let rtt = answer.rtt.as_nanos();
                let tag = self.responders.record(answer.responder, rtt, at_ms);
                self.rtt.push(rtt);
                self.histogram.record(rtt.min(HISTOGRAM_MAX_NS));
                self.jitter.push(rtt);
                self.path_best_ns = Some(self.path_best_ns.map_or(rtt, |b| b.min(rtt)));
                WindowSample::answered(rtt, tag)
            }
            HopOutcome::Lost => WindowSample::lost(),
        };
        if self.window.len() == self.capacity {
            self.window.pop_front();
        }
        self.window.push_back(sample);
    }

    /// Probes sent since start.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The window's size limit.
    pub fn window_capacity(&self) -> usize {
        self.capacity
    }

    /// Best RTT since the current path was established.
    pub fn path_best_ns(&self) -> Option<u64> {
        self.path_best_ns
    }

    /// Forgets the latency baseline: the path changed, so the old best RTT no
    /// longer describes this TTL.
    pub fn reset_path_baseline(&mut self) {
        self.path_best_ns = None;
    }

    /// RFC 3550 §6.4.1 interarrival jitter: a running estimate with gain 1/16, so
    /// it already weighs roughly the last 16 answers and has no separate window or
    /// since-start value. `None` before the second answer.
    pub fn rfc3550_jitter_ns(&self) -> Option<f64> {
        (self.jitter.pairs > 0).then_some(self.jitter.rfc3550_ns)
    }

    /// The window's probes, oldest first: the RTT of an answer, `None` when
    /// lost. One per round, so the same positions from the end of two hops'
    /// windows are the same rounds.
    pub fn window_probes(&self) -> impl Iterator<Item = Option<u64>> + '_ {
        self.window.iter().map(|s| s.rtt_ns())
    }

    /// Statistics over the last N probes.
    pub fn window_stats(&self) -> StatsSnapshot {
        let mut rtts: Vec<u64> = Vec::with_capacity(self.window.len());
        let mut jitter = Jitter::default();
        let mut sum: u128 = 0;
        for rtt in self.window.iter().filter_map(|s| s.rtt_ns()) {
            rtts.push(rtt);
            jitter.push(rtt);
            sum += u128::from(rtt);
        }
        let sent = self.window.len() as u64;
        let received = rtts.len() as u64;
        let last_ns = rtts.last().copied();
        let avg_ns = (received > 0).then(|| sum as f64 / received as f64);
        // Two passes over at most N samples: exact, and cheap at snapshot time.
        let stddev_ns = avg_ns.map(|mean| {
            let m2: f64 = rtts.iter().map(|r| (*r as f64 - mean).powi(2)).sum();
            (m2 / received as f64).sqrt()
        });
        rtts.sort_unstable();
        StatsSnapshot {
            sent,
            received,
            loss_pct: loss_pct(sent, received),
            last_ns,
            avg_ns,
            best_ns: rtts.first().copied(),
            worst_ns: rtts.last().copied(),
            stddev_ns,
            p50_ns: nearest_rank(&rtts, 0.50),
            p95_ns: nearest_rank(&rtts, 0.95),
            p99_ns: nearest_rank(&rtts, 0.99),
            jitter_mean_ns: jitter.mean_ns(),
            jitter_max_ns: (jitter.pairs > 0).then_some(jitter.max_ns),
        }
    }

    /// Statistics since the hop was first probed.
    pub fn since_start_stats(&self) -> StatsSnapshot {
        let received = self.rtt.count();
        let [p50_ns, p95_ns, p99_ns] = self
            .histogram
            .percentiles([0.50, 0.95, 0.99])
            .map_or([None; 3], |p| p.map(Some));
        StatsSnapshot {
            sent: self.sent,
            received,
            loss_pct: loss_pct(self.sent, received),
            last_ns: self.rtt.last(),
            avg_ns: self.rtt.mean(),
            best_ns: self.rtt.best(),
            worst_ns: self.rtt.worst(),
            stddev_ns: self.rtt.stddev(),
            p50_ns,
            p95_ns,
            p99_ns,
            jitter_mean_ns: self.jitter.mean_ns(),
            jitter_max_ns: (self.jitter.pairs > 0).then_some(self.jitter.max_ns),
        }
    }

    fn window_tag_counts(&self) -> [u64; MAX_RESPONDERS_PER_HOP + 1] {
        let mut counts = [0u64; MAX_RESPONDERS_PER_HOP + 1];
        for sample in &self.window {
            if let Some(count) = counts.get_mut(usize::from(sample.tag())) {
                *count += 1;
            }
        }
        counts
    }

    /// The responders seen at this hop, busiest in the window first, and the
    /// overflow bucket when more than [`MAX_RESPONDERS_PER_HOP`] answered.
    pub fn responders(&self) -> (Vec<ResponderSnapshot>, Option<OtherRespondersSnapshot>) {
        self.responders.snapshot(&self.window_tag_counts())
    }

    /// The responder with the most answers in the window, or since start when the
    /// window has none.
    pub fn dominant_responder(&self) -> Option<IpAddr> {
        let counts = self.window_tag_counts();
        let (tag, count) = counts[..MAX_RESPONDERS_PER_HOP]
            .iter()
            .enumerate()
            .rev()
            .max_by_key(|(_, c)| **c)?;
        if *count > 0 {
            self.responders.address(tag as u8)
        } else {
            self.responders.most_answers()
        }
    }

    /// Approximate bytes this hop occupies, heap included.
    pub fn approx_memory_bytes(&self) -> usize {
        std::mem::size_of::<HopStats>()
            + self.window.capacity() * std::mem::size_of::<WindowSample>()
            + self.responders.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HopAnswer;
    use crate::probe::Rtt;
    use std::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 9, 2));

    /// A probe answered by `responder` after `rtt_ns`, or lost when `None`.
    fn probe(rtt_ns: Option<u64>, responder: IpAddr) -> HopOutcome {
        rtt_ns.map_or(HopOutcome::Lost, |ns| {
            HopOutcome::Answered(HopAnswer {
                responder,
                rtt: Rtt::from_nanos(ns),
                is_destination: false,
                reply_ttl: None,
                quote: None,
            })
        })
    }

    /// A deterministic pseudo-random RTT stream (xorshift), 200 µs to ~60 ms,
    /// with every seventh probe lost.
    fn samples(n: usize) -> Vec<Option<u64>> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (i % 7 != 3).then_some(200_000 + x % 60_000_000)
            })
            .collect()
    }

    /// Everything computed straight from the raw samples, the slow obvious way.
    struct Expected {
        sent: u64,
        received: u64,
        mean: f64,
        stddev: f64,
        best: u64,
        worst: u64,
        last: u64,
        sorted: Vec<u64>,
        jitter_mean: f64,
        jitter_max: u64,
    }

    fn expected(raw: &[Option<u64>]) -> Expected {
        let answered: Vec<u64> = raw.iter().flatten().copied().collect();
        let n = answered.len() as f64;
        let mean = answered.iter().map(|r| *r as f64).sum::<f64>() / n;
        let var = answered
            .iter()
            .map(|r| (*r as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let deltas: Vec<u64> = answered.windows(2).map(|w| w[1].abs_diff(w[0])).collect();
        let mut sorted = answered.clone();
        sorted.sort();
        Expected {
            sent: raw.len() as u64,
            received: answered.len() as u64,
            mean,
            stddev: var.sqrt(),
            best: *sorted.first().unwrap(),
            worst: *sorted.last().unwrap(),
            last: *answered.last().unwrap(),
            sorted,
            jitter_mean: deltas.iter().sum::<u64>() as f64 / deltas.len() as f64,
            jitter_max: *deltas.iter().max().unwrap(),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-6 * b.abs().max(1.0)
    }

    #[test]
    fn window_matches_raw_samples_and_evicts_the_oldest() {
        let raw = samples(250);
        let mut hop = HopStats::new(100);
        for (i, s) in raw.iter().enumerate() {
            hop.record(probe(*s, A), i as u64);
        }
        // The window holds exactly the last 100 probes.
        let w = hop.window_stats();
        let e = expected(&raw[150..]);
        assert_eq!((w.sent, w.received), (e.sent, e.received));
        assert_eq!(w.sent, 100);
        let loss = 100.0 * (e.sent - e.received) as f64 / e.sent as f64;
        assert!(close(w.loss_pct.unwrap(), loss));
        assert!(close(w.avg_ns.unwrap(), e.mean));
        assert!(close(w.stddev_ns.unwrap(), e.stddev));
        assert_eq!(w.best_ns, Some(e.best));
        assert_eq!(w.worst_ns, Some(e.worst));
        assert_eq!(w.last_ns, Some(e.last));
        // Nearest rank: p50 of n samples is the ceil(n/2)-th smallest.
        let n = e.sorted.len();
        assert_eq!(w.p50_ns, Some(e.sorted[n.div_ceil(2) - 1]));
        assert_eq!(
            w.p95_ns,
            Some(e.sorted[(0.95 * n as f64).ceil() as usize - 1])
        );
        assert_eq!(
            w.p99_ns,
            Some(e.sorted[(0.99 * n as f64).ceil() as usize - 1])
        );
        assert!(close(w.jitter_mean_ns.unwrap(), e.jitter_mean));
        assert_eq!(w.jitter_max_ns, Some(e.jitter_max));
    }

    #[test]
    fn since_start_matches_raw_samples_with_percentiles_within_precision() {
        let raw = samples(2_000);
        let mut hop = HopStats::new(100);
        for (i, s) in raw.iter().enumerate() {
            hop.record(probe(*s, A), i as u64);
        }
        let t = hop.since_start_stats();
        let e = expected(&raw);
        assert_eq!((t.sent, t.received), (e.sent, e.received));
        assert!(close(t.avg_ns.unwrap(), e.mean));
        assert!((t.stddev_ns.unwrap() - e.stddev).abs() < 1e-3 * e.stddev);
        assert_eq!(
            (t.best_ns, t.worst_ns, t.last_ns),
            (Some(e.best), Some(e.worst), Some(e.last))
        );
        assert!(close(t.jitter_mean_ns.unwrap(), e.jitter_mean));
        assert_eq!(t.jitter_max_ns, Some(e.jitter_max));
        let n = e.sorted.len() as f64;
        for (q, got) in [(0.50, t.p50_ns), (0.95, t.p95_ns), (0.99, t.p99_ns)] {
            let exact = e.sorted[(q * n).ceil() as usize - 1];
            let got = got.unwrap();
            // The histogram reports its bucket's top: never below, at most a
            // bucket above. RTTs spread evenly over 0.2–60 ms take more than
            // its 32 buckets at 0.8 %, so its buckets are wider here.
            let grouping_power = hop.histogram.grouping_power();
            assert!(grouping_power < 7);
            assert!(got >= exact, "p{q}: {got} < exact {exact}");
            assert!(
                got - exact <= exact >> grouping_power,
                "p{q}: {got} vs exact {exact} at grouping power {grouping_power}"
            );
        }
    }

    #[test]
    fn microsecond_rtts_keep_sub_microsecond_histogram_resolution() {
        let mut hop = HopStats::new(10);
        for rtt in [20_000u64, 21_000, 22_000, 23_000, 90_000] {
            hop.record(probe(Some(rtt), A), 0);
        }
        let t = hop.since_start_stats();
        let p50 = t.p50_ns.unwrap();
        assert!((22_000..22_000 + 512).contains(&p50), "{p50}");
        assert!(t.p99_ns.unwrap() >= 90_000 && t.p99_ns.unwrap() < 90_000 + 1_000);
    }

    #[test]
    fn jitter_both_ways_and_rfc3550() {
        let mut hop = HopStats::new(10);
        // 10, 14, lost, 11, 11 ms: deltas 4, 3, 0 (the loss is skipped).
        let ms = 1_000_000;
        for s in [
            Some(10 * ms),
            Some(14 * ms),
            None,
            Some(11 * ms),
            Some(11 * ms),
        ] {
            hop.record(probe(s, A), 0);
        }
        let w = hop.window_stats();
        assert_eq!(w.jitter_max_ns, Some(4 * ms));
        assert!(close(w.jitter_mean_ns.unwrap(), (7 * ms) as f64 / 3.0));
        // J after |D| = 4, 3, 0 ms from J = 0.
        let mut j = 0.0f64;
        for d in [4.0, 3.0, 0.0] {
            j += (d * ms as f64 - j) / 16.0;
        }
        assert!(close(hop.rfc3550_jitter_ns().unwrap(), j));
        // Converges to a constant |D|.
        let mut hop = HopStats::new(10);
        for i in 0..400 {
            let rtt = if i % 2 == 0 { 10 * ms } else { 12 * ms };
            hop.record(probe(Some(rtt), A), 0);
        }
        assert!((hop.rfc3550_jitter_ns().unwrap() - (2 * ms) as f64).abs() < 1.0);
        assert_eq!(HopStats::new(5).rfc3550_jitter_ns(), None);
    }

    #[test]
    fn losses_only_and_empty() {
        let mut hop = HopStats::new(3);
        assert_eq!(hop.window_stats().loss_pct, None);
        for _ in 0..5 {
            hop.record(HopOutcome::Lost, 0);
        }
        let w = hop.window_stats();
        assert_eq!((w.sent, w.received, w.loss_pct), (3, 0, Some(100.0)));
        assert_eq!((w.avg_ns, w.p50_ns, w.jitter_mean_ns), (None, None, None));
        let t = hop.since_start_stats();
        assert_eq!((t.sent, t.received, t.p99_ns), (5, 0, None));
    }

    #[test]
    fn responders_share_the_window_and_the_dominant_one_is_named() {
        let mut hop = HopStats::new(4);
        for addr in [A, A, A, B, B, B] {
            hop.record(probe(Some(1_000_000), addr), 0);
        }
        // Window: A B B B.
        assert_eq!(hop.dominant_responder(), Some(B));
        let (list, other) = hop.responders();
        assert!(other.is_none());
        assert_eq!(list[0].address, B);
        assert_eq!(list[0].window_received, 3);
        assert_eq!(list[1].window_received, 1);
        assert_eq!(list[1].received, 3);
        assert_eq!(list[0].window_share_pct, Some(75.0));
    }

    #[test]
    fn huge_rtts_are_capped_in_the_histogram_only() {
        let mut hop = HopStats::new(4);
        hop.record(probe(Some(1_000_000), A), 0);
        hop.record(probe(Some(1_800_000_000_123), A), 0);
        let t = hop.since_start_stats();
        assert_eq!(t.worst_ns, Some(1_800_000_000_123));
        assert!(t.p99_ns.unwrap() <= HISTOGRAM_MAX_NS + HISTOGRAM_MAX_NS / 100);
        // The window keeps RTTs up to 134 s, to the microsecond past 134 ms.
        assert_eq!(hop.window_stats().worst_ns, Some(134_217_727_000));
    }

    #[test]
    fn the_window_keeps_rtts_to_the_nanosecond_up_to_134_ms() {
        let mut hop = HopStats::new(8);
        let rtts = [
            1,
            999,
            134_217_727,
            134_217_728,
            2_500_000_999,
            60_000_000_999,
        ];
        for rtt in rtts {
            hop.record(probe(Some(rtt), A), 0);
        }
        hop.record(probe(None, A), 0);
        let window: Vec<Option<u64>> = hop.window_probes().collect();
        assert_eq!(
            window,
            [
                Some(1),
                Some(999),
                Some(134_217_727),
                Some(134_217_000),
                Some(2_500_000_000),
                Some(60_000_000_000),
                None
            ]
        );
        // The responder tag survives the packing.
        assert_eq!(hop.dominant_responder(), Some(A));
    }

    #[test]
    fn every_responder_tag_survives_the_packing_beside_any_rtt() {
        for tag in 0..=OTHER_TAG {
            for rtt in [0, 1, 134_217_727, 134_217_728, 60_000_000_000, u64::MAX] {
                let sample = WindowSample::answered(rtt, tag);
                assert_eq!(sample.tag(), tag, "tag {tag} beside {rtt} ns");
                assert!(sample.rtt_ns().is_some(), "an answer is never read as lost");
            }
        }
        let lost = WindowSample::lost();
        assert_eq!(lost.rtt_ns(), None);
        assert!(
            usize::from(lost.tag()) > MAX_RESPONDERS_PER_HOP,
            "no responder's tag"
        );
    }

    #[test]
    fn memory_per_hop_stays_within_the_documented_bound() {
        let mut hop = HopStats::new(100);
        for i in 0..1_000u64 {
            hop.record(probe(Some(100_000 + i), A), 0);
        }
        let lan = hop.approx_memory_bytes();
        assert!(lan < 1_000, "a LAN hop takes {lan} B");
        // New RTTs, however large, and RTTs that never repeat (a busy box's
        // tail) cost nothing more: the histogram's room is fixed.
        hop.record(probe(Some(10_000_000), A), 0);
        hop.record(probe(Some(10 * HISTOGRAM_MAX_NS), A), 0);
        for i in 0..100_000u64 {
            hop.record(probe(Some(1_000 + i * 997 % 5_000_000), A), 0);
        }
        assert_eq!(hop.approx_memory_bytes(), lan);
        assert!(hop.histogram.grouping_power() < 7);
    }
}
