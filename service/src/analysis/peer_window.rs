//! A peer link's window: the last `[statistics] window` STAMP probes of one
//! peer and the statistics over them (loss by direction, delays, jitter,
//! percentiles). The monitor keeps one per peer and shows its statistics; the
//! alert rules judge them.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::peer::{Direction, OwdValidity, Sample};
use crate::probe::TimestampSource;

/// Statistics over the probes in the window (serialised into peer alerts'
/// snapshots).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WindowStats {
    /// Probes resolved (answered or lost).
    pub probes: u64,
    pub received: u64,
    pub lost: u64,
    /// Probes lost on the way to the reflector (its counter did not advance).
    pub lost_forward: u64,
    /// Probes reflected whose reply never came back.
    pub lost_backward: u64,
    /// Losses after the last answer, whose direction is not known yet.
    pub lost_unknown: u64,
    pub duplicates_forward: u64,
    pub duplicates_backward: u64,
    /// Replies that arrived after one to a later probe.
    pub reordered: u64,
    pub rtt: Option<DelayWindow>,
    /// Nearest-rank percentiles of the window's RTTs (the rule targets' hop
    /// windows follow), nanoseconds.
    pub rtt_p50_ns: Option<u64>,
    pub rtt_p95_ns: Option<u64>,
    pub rtt_p99_ns: Option<u64>,
    pub forward: Option<DelayWindow>,
    pub backward: Option<DelayWindow>,
    /// RFC 3550 jitter of the RTT and of each one-way delay, nanoseconds.
    pub jitter_rtt_ns: Option<f64>,
    pub jitter_forward_ns: Option<f64>,
    pub jitter_backward_ns: Option<f64>,
    /// Whether the one-way delays can be believed (latest answer's verdict).
    pub owd: Option<OwdValidity>,
    pub source: Option<TimestampSource>,
}

impl WindowStats {
    /// Lost share of the window's probes, 0..=1.
    pub fn loss_ratio(&self) -> Option<f64> {
        (self.probes > 0).then(|| self.lost as f64 / self.probes as f64)
    }

    /// Forward / backward loss as a share of the probes that could be lost there.
    pub fn direction_loss_ratio(&self, direction: Direction) -> Option<f64> {
        if self.probes == 0 {
            return None;
        }
        Some(match direction {
            Direction::Forward => self.lost_forward as f64 / self.probes as f64,
            // Only packets that reached the reflector can be lost on the way back.
            Direction::Backward => {
                let reached = self.probes - self.lost_forward;
                if reached == 0 {
                    0.0
                } else {
                    self.lost_backward as f64 / reached as f64
                }
            }
            Direction::Unknown => self.lost_unknown as f64 / self.probes as f64,
        })
    }
}

/// Min / mean / max of one delay over the window, nanoseconds (one-way delays
/// may be negative when the clocks disagree).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DelayWindow {
    pub min_ns: i64,
    pub mean_ns: f64,
    pub max_ns: i64,
    pub samples: u64,
}

impl DelayWindow {
    fn of(values: impl Iterator<Item = i64>) -> Option<DelayWindow> {
        let (mut min, mut max, mut sum, mut n) = (i64::MAX, i64::MIN, 0i128, 0u64);
        for v in values {
            min = min.min(v);
            max = max.max(v);
            sum += i128::from(v);
            n += 1;
        }
        (n > 0).then(|| DelayWindow {
            min_ns: min,
            mean_ns: sum as f64 / n as f64,
            max_ns: max,
            samples: n,
        })
    }
}

/// Nearest-rank percentile of sorted values: the smallest value with at
/// least `q` of all values at or below it.
fn nearest_rank(sorted: &[u64], q: f64) -> Option<u64> {
    let n = sorted.len();
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n.max(1));
    sorted.get(rank - 1).copied()
}

/// RFC 3550 §6.4.1: J += (|D| − J) / 16 over consecutive values.
fn jitter(values: impl Iterator<Item = i64>) -> Option<f64> {
    let (mut last, mut j, mut n) = (None::<i64>, 0.0f64, 0u64);
    for v in values {
        if let Some(prev) = last {
            j += ((v - prev).unsigned_abs() as f64 - j) / 16.0;
            n += 1;
        }
        last = Some(v);
    }
    (n > 0).then_some(j)
}

/// One resolved probe in the window, its sequence number unwrapped to 64 bits.
#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: u64,
    sample: Sample,
}

/// The last `capacity` probes of one peer, in the order they resolved.
#[derive(Debug, Clone)]
pub struct PeerWindow {
    capacity: usize,
    entries: VecDeque<Entry>,
    /// Entries that are probes (not duplicates), kept so pushing is O(1).
    probes: usize,
    /// Highest sender sequence seen, for unwrapping the 32-bit ones.
    highest: Option<u64>,
    /// Probes pushed since the window was made; [`PeerWindow::clear`] keeps it.
    resolved: u64,
}

impl PeerWindow {
    pub fn new(capacity: usize) -> PeerWindow {
        PeerWindow {
            capacity: capacity.max(1),
            entries: VecDeque::new(),
            probes: 0,
            highest: None,
            resolved: 0,
        }
    }

    /// How many probes the window holds when full.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Probes pushed since the window was made (not reset by a clear).
    pub fn resolved(&self) -> u64 {
        self.resolved
    }

    pub fn push(&mut self, sample: Sample) {
        let seq32 = match sample {
            Sample::Reflected(r) => r.seq,
            Sample::Duplicate { seq, .. } | Sample::Lost { seq, .. } => seq,
        };
        let seq = match self.highest {
            None => u64::from(seq32),
            Some(hi) => {
                let diff = i64::from(seq32.wrapping_sub(hi as u32) as i32);
                hi.saturating_add_signed(diff)
            }
        };
        self.highest = Some(self.highest.map_or(seq, |hi| hi.max(seq)));
        let is_probe = |sample: &Sample| !matches!(sample, Sample::Duplicate { .. });
        self.probes += usize::from(is_probe(&sample));
        self.resolved += u64::from(is_probe(&sample));
        self.entries.push_back(Entry { seq, sample });
        // Duplicates do not count against the window: it holds `capacity` probes.
        while self.probes > self.capacity {
            if let Some(old) = self.entries.pop_front() {
                self.probes -= usize::from(is_probe(&old.sample));
            }
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.probes = 0;
        self.highest = None;
    }

    pub fn stats(&self) -> WindowStats {
        let mut stats = WindowStats::default();
        // Answered probes by sender sequence → reflector sequence.
        let mut answered: BTreeMap<u64, u32> = BTreeMap::new();
        let mut lost: Vec<u64> = Vec::new();
        let mut highest_answered: Option<u64> = None;
        for entry in &self.entries {
            match entry.sample {
                Sample::Reflected(r) => {
                    stats.probes += 1;
                    stats.received += 1;
                    if highest_answered.is_some_and(|hi| entry.seq < hi) {
                        stats.reordered += 1;
                    }
                    highest_answered =
                        Some(highest_answered.map_or(entry.seq, |h| h.max(entry.seq)));
                    answered.insert(entry.seq, r.reflector_seq);
                    stats.owd = Some(r.owd);
                    stats.source = Some(stats.source.map_or(r.source, |s| s.max(r.source)));
                }
                Sample::Lost { .. } => {
                    stats.probes += 1;
                    stats.lost += 1;
                    lost.push(entry.seq);
                }
                Sample::Duplicate { direction, .. } => match direction {
                    Direction::Forward => stats.duplicates_forward += 1,
                    Direction::Backward | Direction::Unknown => stats.duplicates_backward += 1,
                },
            }
        }
        lost.sort_unstable();
        // Between two answers (s1, r1) and (s2, r2) the reflector counted
        // r2 − r1 − 1 probes whose replies never came back; the rest of the
        // s2 − s1 − 1 never reached it.
        let mut attributed_forward = 0u64;
        let mut attributed_backward = 0u64;
        let mut pairs = answered.iter().peekable();
        while let Some((&s1, &r1)) = pairs.next() {
            let Some(&(&s2, &r2)) = pairs.peek() else {
                break;
            };
            let missing = s2 - s1 - 1;
            let lost_here =
                (lost.partition_point(|&s| s < s2) - lost.partition_point(|&s| s <= s1)) as u64;
            let backward = u64::from(r2.wrapping_sub(r1).wrapping_sub(1)).min(lost_here);
            attributed_backward += backward;
            attributed_forward += lost_here.min(missing).saturating_sub(backward);
        }
        stats.lost_forward = attributed_forward;
        stats.lost_backward = attributed_backward;
        stats.lost_unknown = stats.lost - attributed_forward - attributed_backward;

        let reflections = || {
            self.entries.iter().filter_map(|e| match e.sample {
                Sample::Reflected(r) => Some(r),
                _ => None,
            })
        };
        stats.rtt = DelayWindow::of(reflections().map(|r| r.rtt_ns as i64));
        let mut rtts: Vec<u64> = reflections().map(|r| r.rtt_ns).collect();
        rtts.sort_unstable();
        stats.rtt_p50_ns = nearest_rank(&rtts, 0.50);
        stats.rtt_p95_ns = nearest_rank(&rtts, 0.95);
        stats.rtt_p99_ns = nearest_rank(&rtts, 0.99);
        stats.forward = DelayWindow::of(reflections().map(|r| r.forward_ns));
        stats.backward = DelayWindow::of(reflections().map(|r| r.backward_ns));
        stats.jitter_rtt_ns = jitter(reflections().map(|r| r.rtt_ns as i64));
        stats.jitter_forward_ns = jitter(reflections().map(|r| r.forward_ns));
        stats.jitter_backward_ns = jitter(reflections().map(|r| r.backward_ns));
        stats
    }
}

/// Samples for the tests of peer windows here and in the monitor.
#[cfg(test)]
pub(crate) mod test_samples {
    use crate::peer::{OwdValidity, Reflection, Sample};
    use crate::probe::TimestampSource;

    /// A reflected probe with `rtt_ms`, of which `forward_ms` one way.
    pub(crate) fn reflected(seq: u32, reflector_seq: u32, rtt_ms: u64, forward_ms: i64) -> Sample {
        Sample::Reflected(Reflection {
            seq,
            reflector_seq,
            rtt_ns: rtt_ms * 1_000_000,
            forward_ns: forward_ms * 1_000_000,
            backward_ns: (rtt_ms as i64 - forward_ms) * 1_000_000,
            reflector_hold_ns: 10_000,
            forward_ttl: 64,
            backward_ttl: Some(64),
            source: TimestampSource::Kernel,
            owd: OwdValidity::SharedClock,
            sent_unix_ns: 0,
        })
    }

    /// A probe that never came back.
    pub(crate) fn lost(seq: u32) -> Sample {
        Sample::Lost {
            seq,
            sent_unix_ns: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_samples::{lost, reflected};
    use super::*;

    #[test]
    fn loss_is_attributed_to_the_direction_the_reflector_counter_shows() {
        let mut window = PeerWindow::new(100);
        // seq 0..=5: seq 1 never reached the reflector (r did not advance),
        // seq 3's reply was lost (r advanced from 1 to 3), seq 5 is still open.
        window.push(reflected(0, 0, 30, 20));
        window.push(reflected(2, 1, 30, 20));
        window.push(reflected(4, 3, 30, 20));
        window.push(lost(1));
        window.push(lost(3));
        window.push(lost(5));
        let stats = window.stats();
        assert_eq!((stats.probes, stats.received, stats.lost), (6, 3, 3));
        assert_eq!(stats.lost_forward, 1);
        assert_eq!(stats.lost_backward, 1);
        assert_eq!(stats.lost_unknown, 1);
        assert_eq!(
            stats.direction_loss_ratio(Direction::Forward),
            Some(1.0 / 6.0)
        );
        // 5 probes reached the reflector, one reply was lost.
        assert_eq!(
            stats.direction_loss_ratio(Direction::Backward),
            Some(1.0 / 5.0)
        );
        assert_eq!(stats.loss_ratio(), Some(0.5));
    }

    #[test]
    fn delays_and_jitter_cover_the_window_only() {
        let mut window = PeerWindow::new(3);
        window.push(reflected(0, 0, 1000, 900));
        for (i, rtt) in [(1u32, 30u64), (2, 40), (3, 30)] {
            window.push(reflected(i, i, rtt, 20));
        }
        let stats = window.stats();
        assert_eq!(stats.probes, 3, "the oldest probe left the window");
        let rtt = stats.rtt.expect("answers in the window");
        assert_eq!((rtt.min_ns, rtt.max_ns), (30_000_000, 40_000_000));
        let forward = stats.forward.expect("answers in the window");
        assert_eq!(forward.mean_ns, 20_000_000.0);
        let backward = stats.backward.expect("answers in the window");
        assert_eq!((backward.min_ns, backward.max_ns), (10_000_000, 20_000_000));
        // |40−30| then |30−40|: J = 10/16, then J += (10 − J)/16.
        let j1 = 10_000_000.0 / 16.0;
        let j2 = j1 + (10_000_000.0 - j1) / 16.0;
        assert!((stats.jitter_rtt_ns.expect("three answers") - j2).abs() < 1.0);
        assert_eq!(stats.jitter_forward_ns, Some(0.0));
        // Nearest rank over [30, 30, 40] ms.
        assert_eq!(stats.rtt_p50_ns, Some(30_000_000));
        assert_eq!(stats.rtt_p95_ns, Some(40_000_000));
        assert_eq!(stats.rtt_p99_ns, Some(40_000_000));
        // Every probe counts as resolved, the one that left the window too,
        // and a clear (a session restart) does not start the count over.
        assert_eq!(window.resolved(), 4);
        window.clear();
        assert_eq!((window.stats().probes, window.resolved()), (0, 4));
        assert_eq!(window.stats().rtt_p50_ns, None);
    }

    #[test]
    fn reordering_duplicates_and_wrapping_sequences() {
        let mut window = PeerWindow::new(10);
        window.push(reflected(u32::MAX, 7, 10, 5));
        window.push(reflected(1, 9, 10, 5));
        window.push(reflected(0, 8, 10, 5));
        window.push(Sample::Duplicate {
            seq: 1,
            reflector_seq: 10,
            direction: Direction::Forward,
        });
        let stats = window.stats();
        assert_eq!(stats.probes, 3);
        assert_eq!(stats.reordered, 1, "seq 0 came after seq 1");
        assert_eq!(stats.duplicates_forward, 1);
        assert_eq!(stats.lost, 0);
        assert_eq!(window.resolved(), 3, "a duplicate is not a probe");
    }

    #[test]
    fn duplicates_do_not_push_probes_out_of_the_window() {
        let mut window = PeerWindow::new(2);
        window.push(reflected(0, 0, 10, 5));
        window.push(reflected(1, 1, 10, 5));
        window.push(Sample::Duplicate {
            seq: 1,
            reflector_seq: 2,
            direction: Direction::Backward,
        });
        let stats = window.stats();
        assert_eq!((stats.probes, stats.duplicates_backward), (2, 1));
        window.push(reflected(2, 3, 10, 5));
        assert_eq!(window.stats().probes, 2);
    }
}
