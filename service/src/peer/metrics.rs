//! Per-session peer metrics from STAMP replies: RTT, one-way delay each way, loss
//! each way, reordering and duplicates each way, and jitter (RFC 3550's smoothed
//! interarrival jitter, over RTT and each direction's one-way delay).
//!
//! # Loss direction
//! A stateful reflector numbers the packets it receives per session, 0, 1, 2, ...
//! (RFC 8762 §4.2). A reply carries both the sender's sequence `s` and the
//! reflector's `r`. Up to the packet with the highest `r` seen, the reflector
//! received `r_max − r_origin + 1` packets (forward duplicates included), while
//! the sender had sent `s_hi − s_origin + 1` (`s_hi` the highest sender sequence
//! the reflector is known to have received). So
//!
//! * forward loss  = sent up to `s_hi` − (received by the reflector − forward duplicates)
//! * backward loss = reflector sequences in `[r_origin, r_max]` never seen here
//!
//! Packets after the last reply (the tail) cannot be placed: they are counted as
//! lost in an unknown direction until later replies place them. A stateless
//! reflector copies `s` into `r`; then no direction can be given.
//!
//! A reflector that restarts (its `r` falls far below `r_max` while `s` grows)
//! starts a new epoch; the counts of earlier epochs are kept.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::clock::OwdValidity;
use crate::probe::TimestampSource;

/// How a reflector numbers its replies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReflectorKind {
    /// Its own counter per session (hopwatch's reflector): loss has a direction.
    #[default]
    Stateful,
    /// Copies the sender's sequence number: loss is round-trip only.
    Stateless,
}

/// One answered probe, all times in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Reflection {
    pub seq: u32,
    pub reflector_seq: u32,
    /// Round-trip time without the reflector's time between receiving and sending:
    /// `(T4 − T1) − (T3 − T2)`.
    pub rtt_ns: u64,
    /// `T2 − T1`: may be negative when the clocks disagree.
    pub forward_ns: i64,
    /// `T4 − T3`.
    pub backward_ns: i64,
    /// `T3 − T2`: how long the reflector held the packet.
    pub reflector_hold_ns: i64,
    /// TTL of our packet when it reached the reflector.
    pub forward_ttl: u8,
    /// TTL of the reply when it reached us.
    pub backward_ttl: Option<u8>,
    /// Where T1 and T4 came from (the weaker of the two).
    pub source: TimestampSource,
    pub owd: OwdValidity,
    /// T1 as Unix nanoseconds.
    pub sent_unix_ns: u64,
}

/// What became of one probe.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Sample {
    Reflected(Reflection),
    /// A second reply to the same probe.
    Duplicate {
        seq: u32,
        reflector_seq: u32,
        direction: Direction,
    },
    /// No reply within the timeout.
    Lost {
        seq: u32,
        sent_unix_ns: u64,
    },
}

/// Which way a packet was going.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Forward,
    Backward,
    Unknown,
}

/// RFC 3550 §6.4.1 jitter: J += (|D| − J) / 16 over consecutive samples.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Jitter {
    last: Option<i64>,
    j: f64,
    count: u64,
}

impl Jitter {
    fn push(&mut self, value: i64) {
        if let Some(last) = self.last {
            let d = (value - last).unsigned_abs() as f64;
            self.j += (d - self.j) / 16.0;
            self.count += 1;
        }
        self.last = Some(value);
    }

    fn get(&self) -> Option<f64> {
        (self.count > 0).then_some(self.j)
    }
}

/// Min / mean / max over signed values, plus the count.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct SignedStats {
    count: u64,
    min: i64,
    max: i64,
    sum: i128,
}

impl SignedStats {
    fn push(&mut self, v: i64) {
        if self.count == 0 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.count += 1;
        self.sum += i128::from(v);
    }

    fn summary(&self) -> Option<DelayStats> {
        (self.count > 0).then(|| DelayStats {
            min_ns: self.min,
            mean_ns: (self.sum / i128::from(self.count)) as i64,
            max_ns: self.max,
        })
    }
}

/// Extends a 32-bit sequence number to 64 bits next to a reference (wraps every
/// 2^32 packets: 49 days at 1,000 per second).
fn extend(seq: u32, reference: u64) -> u64 {
    let diff = i64::from(seq.wrapping_sub(reference as u32) as i32);
    reference.wrapping_add(diff as u64)
}

/// Direction-aware loss, duplicate and reorder accounting (see the module docs).
#[derive(Clone, Debug, Default)]
struct LossAccount {
    epoch: Option<Epoch>,
    /// Closed epochs' forward and backward losses.
    closed_forward: u64,
    closed_backward: u64,
    forward_reordered: u64,
    backward_reordered: u64,
    forward_duplicates: u64,
    backward_duplicates: u64,
}

#[derive(Clone, Debug)]
struct Epoch {
    s_origin: u64,
    r_origin: u64,
    s_hi: u64,
    r_max: u64,
    distinct_r: u64,
    forward_duplicates: u64,
    /// Recent replies by reflector sequence → sender sequence, for reorder and
    /// duplicate checks; bounded to `WINDOW` entries.
    recent: BTreeMap<u64, u64>,
    /// The same replies by sender sequence (how many reflector numbers each got).
    recent_by_s: BTreeMap<u64, u32>,
}

/// Replies remembered per epoch for reorder and duplicate detection.
const WINDOW: usize = 8192;
/// A reflector sequence this far below the highest seen means it restarted.
const RESET_GAP: u64 = 1 << 16;

impl Epoch {
    fn start(s: u64, r32: u32, s_origin: u64) -> Self {
        let sent_before = s - s_origin;
        // A fresh stateful reflector counts from 0, so r ≤ s − s_origin; a larger r
        // is a counter that did not start with us (a reused session): assume no
        // loss before this reply.
        let r = u64::from(r32);
        let r_origin = r.saturating_sub(sent_before);
        Epoch {
            s_origin,
            r_origin,
            s_hi: s,
            r_max: r,
            distinct_r: 1,
            forward_duplicates: 0,
            recent: BTreeMap::from([(r, s)]),
            recent_by_s: BTreeMap::from([(s, 1)]),
        }
    }

    fn forward_lost(&self) -> u64 {
        let sent = self.s_hi - self.s_origin + 1;
        let received = (self.r_max - self.r_origin + 1).saturating_sub(self.forward_duplicates);
        sent.saturating_sub(received)
    }

    fn backward_lost(&self) -> u64 {
        (self.r_max - self.r_origin + 1).saturating_sub(self.distinct_r)
    }
}

/// How a reply relates to earlier ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReplyClass {
    New,
    Duplicate(Direction),
}

impl LossAccount {
    /// Accounts one reply (`s` already extended to 64 bits by the sender).
    fn reply(&mut self, s: u64, r32: u32) -> ReplyClass {
        let Some(epoch) = self.epoch.as_mut() else {
            self.epoch = Some(Epoch::start(s, r32, 0));
            return ReplyClass::New;
        };
        let r = extend(r32, epoch.r_max);
        if r + RESET_GAP < epoch.r_max && s > epoch.s_hi {
            tracing::info!(
                r_max = epoch.r_max,
                r,
                "the reflector's sequence restarted; new loss epoch"
            );
            self.closed_forward += epoch.forward_lost();
            self.closed_backward += epoch.backward_lost();
            let s_origin = epoch.s_hi + 1;
            self.epoch = Some(Epoch::start(s, r32, s_origin));
            return ReplyClass::New;
        }
        if epoch.recent.contains_key(&r) {
            // The same reflector sequence twice: the reply was duplicated on its
            // way back (a forward copy would have got a new number).
            self.backward_duplicates += 1;
            return ReplyClass::Duplicate(Direction::Backward);
        }
        let forward_dup = epoch.recent_by_s.contains_key(&s);
        if r > epoch.r_max {
            if s < epoch.s_hi {
                // The reflector got it after a later packet.
                self.forward_reordered += 1;
            }
            epoch.r_max = r;
        } else {
            // Arrived after a reply the reflector sent later.
            self.backward_reordered += 1;
            let later_sent_earlier = epoch.recent.range(..r).any(|(_, &seen)| seen > s);
            if later_sent_earlier {
                self.forward_reordered += 1;
            }
        }
        epoch.s_hi = epoch.s_hi.max(s);
        epoch.distinct_r += 1;
        epoch.recent.insert(r, s);
        *epoch.recent_by_s.entry(s).or_insert(0) += 1;
        if epoch.recent.len() > WINDOW {
            if let Some((_, old_s)) = epoch.recent.pop_first() {
                if let std::collections::btree_map::Entry::Occupied(mut e) =
                    epoch.recent_by_s.entry(old_s)
                {
                    *e.get_mut() -= 1;
                    if *e.get() == 0 {
                        e.remove();
                    }
                }
            }
        }
        if forward_dup {
            epoch.forward_duplicates += 1;
            self.forward_duplicates += 1;
            return ReplyClass::Duplicate(Direction::Forward);
        }
        ReplyClass::New
    }

    fn forward_lost(&self) -> u64 {
        self.closed_forward + self.epoch.as_ref().map_or(0, Epoch::forward_lost)
    }

    fn backward_lost(&self) -> u64 {
        self.closed_backward + self.epoch.as_ref().map_or(0, Epoch::backward_lost)
    }
}

/// Delay statistics in nanoseconds (signed: one-way delays across unsynchronised
/// clocks can be negative).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DelayStats {
    pub min_ns: i64,
    pub mean_ns: i64,
    pub max_ns: i64,
}

/// RTT statistics in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RttStats {
    pub min_ns: u64,
    pub mean_ns: f64,
    pub max_ns: u64,
    pub stddev_ns: f64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
}

/// Loss per direction. `forward + backward + unknown_direction = lost`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LossStats {
    /// Probes whose timeout passed without a reply.
    pub lost: u64,
    /// `None` with a stateless reflector.
    pub forward: Option<u64>,
    pub backward: Option<u64>,
    /// Lost probes after the last reply (or all, with a stateless reflector).
    pub unknown_direction: u64,
}

/// Counts per direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DirectionCounts {
    pub forward: u64,
    pub backward: u64,
}

/// Jitter (RFC 3550 smoothed) in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct JitterStats {
    pub rtt_ns: Option<f64>,
    /// Valid even with unsynchronised clocks: a constant offset cancels out.
    pub forward_ns: Option<f64>,
    pub backward_ns: Option<f64>,
}

/// A session's statistics so far.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub sent: u64,
    /// Distinct probes answered in time.
    pub received: u64,
    /// Replies that came after their probe's timeout (not counted as received).
    pub late: u64,
    pub loss: LossStats,
    pub duplicates: DirectionCounts,
    pub reordered: DirectionCounts,
    pub rtt: Option<RttStats>,
    pub forward: Option<DelayStats>,
    pub backward: Option<DelayStats>,
    pub jitter: JitterStats,
    /// The latest verdict on one-way delays.
    pub owd: Option<OwdValidity>,
    /// The weakest timestamp source among the answered probes.
    pub source: Option<TimestampSource>,
    pub reflector: ReflectorKind,
    /// Replies our own socket dropped (receive buffer full), per SO_RXQ_OVFL.
    pub socket_drops: u64,
}

impl Summary {
    /// Lost probes as a percentage of resolved ones (answered or timed out).
    pub fn loss_percent(&self) -> f64 {
        let resolved = self.received + self.loss.lost;
        if resolved == 0 {
            0.0
        } else {
            self.loss.lost as f64 * 100.0 / resolved as f64
        }
    }
}

/// Accumulates samples into a [`Summary`].
#[derive(Debug, Clone)]
pub struct SessionStats {
    reflector: ReflectorKind,
    sent: u64,
    received: u64,
    lost: u64,
    late: u64,
    socket_drops: u64,
    loss: LossAccount,
    rtt: Histogram<u64>,
    /// Exact extremes: the histogram's are rounded to its precision.
    rtt_min: u64,
    rtt_max: u64,
    rtt_sum: f64,
    rtt_sum_sq: f64,
    forward: SignedStats,
    backward: SignedStats,
    rtt_jitter: Jitter,
    forward_jitter: Jitter,
    backward_jitter: Jitter,
    owd: Option<OwdValidity>,
    source: Option<TimestampSource>,
}

impl SessionStats {
    pub fn new(reflector: ReflectorKind) -> Self {
        SessionStats {
            reflector,
            sent: 0,
            received: 0,
            lost: 0,
            late: 0,
            socket_drops: 0,
            loss: LossAccount::default(),
            // 1 ns .. 1 h at 3 significant digits.
            rtt: Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
                .expect("static histogram bounds are valid"),
            rtt_min: u64::MAX,
            rtt_max: 0,
            rtt_sum: 0.0,
            rtt_sum_sq: 0.0,
            forward: SignedStats::default(),
            backward: SignedStats::default(),
            rtt_jitter: Jitter::default(),
            forward_jitter: Jitter::default(),
            backward_jitter: Jitter::default(),
            owd: None,
            source: None,
        }
    }

    pub fn sent(&mut self) {
        self.sent += 1;
    }

    pub fn lost(&mut self) {
        self.lost += 1;
    }

    pub fn late(&mut self) {
        self.late += 1;
    }

    pub fn socket_drops(&mut self, total: u64) {
        self.socket_drops = total;
    }

    /// Accounts a reply to probe `seq64`; returns the duplicate direction when it
    /// is a second reply (then it adds no delay sample).
    pub fn reply(&mut self, seq64: u64, reflection: &Reflection) -> Option<Direction> {
        let class = match self.reflector {
            ReflectorKind::Stateful => self.loss.reply(seq64, reflection.reflector_seq),
            // Nothing to learn from r; duplicates are caught by the sender.
            ReflectorKind::Stateless => ReplyClass::New,
        };
        if let ReplyClass::Duplicate(direction) = class {
            return Some(direction);
        }
        self.received += 1;
        let _ = self.rtt.record(reflection.rtt_ns.max(1));
        self.rtt_min = self.rtt_min.min(reflection.rtt_ns);
        self.rtt_max = self.rtt_max.max(reflection.rtt_ns);
        let rtt = reflection.rtt_ns as f64;
        self.rtt_sum += rtt;
        self.rtt_sum_sq += rtt * rtt;
        self.forward.push(reflection.forward_ns);
        self.backward.push(reflection.backward_ns);
        self.rtt_jitter.push(reflection.rtt_ns as i64);
        self.forward_jitter.push(reflection.forward_ns);
        self.backward_jitter.push(reflection.backward_ns);
        self.owd = Some(reflection.owd);
        self.source = Some(match self.source {
            Some(s) => s.max(reflection.source),
            None => reflection.source,
        });
        None
    }

    /// A duplicate the sender recognised itself (same probe answered twice with a
    /// stateless reflector).
    pub fn duplicate(&mut self, direction: Direction) {
        match direction {
            Direction::Forward => self.loss.forward_duplicates += 1,
            Direction::Backward | Direction::Unknown => self.loss.backward_duplicates += 1,
        }
    }

    pub fn summary(&self) -> Summary {
        let rtt = (!self.rtt.is_empty()).then(|| {
            let n = self.rtt.len() as f64;
            let mean = self.rtt_sum / n;
            RttStats {
                min_ns: self.rtt_min,
                mean_ns: mean,
                max_ns: self.rtt_max,
                stddev_ns: (self.rtt_sum_sq / n - mean * mean).max(0.0).sqrt(),
                p50_ns: self.rtt.value_at_quantile(0.5),
                p90_ns: self.rtt.value_at_quantile(0.9),
                p99_ns: self.rtt.value_at_quantile(0.99),
            }
        });
        let loss = match self.reflector {
            ReflectorKind::Stateful => {
                let forward = self.loss.forward_lost().min(self.lost);
                let backward = self.loss.backward_lost().min(self.lost - forward);
                LossStats {
                    lost: self.lost,
                    forward: Some(forward),
                    backward: Some(backward),
                    unknown_direction: self.lost - forward - backward,
                }
            }
            ReflectorKind::Stateless => LossStats {
                lost: self.lost,
                forward: None,
                backward: None,
                unknown_direction: self.lost,
            },
        };
        Summary {
            sent: self.sent,
            received: self.received,
            late: self.late,
            loss,
            duplicates: DirectionCounts {
                forward: self.loss.forward_duplicates,
                backward: self.loss.backward_duplicates,
            },
            reordered: DirectionCounts {
                forward: self.loss.forward_reordered,
                backward: self.loss.backward_reordered,
            },
            rtt,
            forward: self.forward.summary(),
            backward: self.backward.summary(),
            jitter: JitterStats {
                rtt_ns: self.rtt_jitter.get(),
                forward_ns: self.forward_jitter.get(),
                backward_ns: self.backward_jitter.get(),
            },
            owd: self.owd,
            source: self.source,
            reflector: self.reflector,
            socket_drops: self.socket_drops,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reflection(seq: u32, r: u32, rtt_ns: u64) -> Reflection {
        Reflection {
            seq,
            reflector_seq: r,
            rtt_ns,
            forward_ns: (rtt_ns / 2) as i64,
            backward_ns: (rtt_ns / 2) as i64,
            reflector_hold_ns: 1_000,
            forward_ttl: 63,
            backward_ttl: Some(63),
            source: TimestampSource::Kernel,
            owd: OwdValidity::SharedClock,
            sent_unix_ns: 0,
        }
    }

    /// Runs a scripted session: `sent` probes; `replies` as (s, r) in arrival
    /// order; every unanswered probe times out.
    fn run(sent: u32, replies: &[(u32, u32)]) -> Summary {
        let mut stats = SessionStats::new(ReflectorKind::Stateful);
        let mut answered = std::collections::BTreeSet::new();
        for _ in 0..sent {
            stats.sent();
        }
        for &(s, r) in replies {
            if stats
                .reply(u64::from(s), &reflection(s, r, 1_000_000))
                .is_none()
            {
                answered.insert(s);
            }
        }
        for s in 0..sent {
            if !answered.contains(&s) {
                stats.lost();
            }
        }
        stats.summary()
    }

    #[test]
    fn no_loss() {
        let replies: Vec<_> = (0..10).map(|i| (i, i)).collect();
        let s = run(10, &replies);
        assert_eq!((s.received, s.loss.lost), (10, 0));
        assert_eq!(s.loss.forward, Some(0));
        assert_eq!(s.loss.backward, Some(0));
    }

    #[test]
    fn forward_loss_shows_as_a_gap_in_both_numbers() {
        // Probes 3 and 4 never reach the reflector: it numbers 5 as 3.
        let replies = [(0, 0), (1, 1), (2, 2), (5, 3), (6, 4), (7, 5)];
        let s = run(8, &replies);
        assert_eq!(s.loss.lost, 2);
        assert_eq!(s.loss.forward, Some(2));
        assert_eq!(s.loss.backward, Some(0));
        assert_eq!(s.loss.unknown_direction, 0);
    }

    #[test]
    fn backward_loss_shows_as_a_gap_in_reflector_numbers() {
        // Replies 3 and 4 are lost on the way back: the reflector numbered them.
        let replies = [(0, 0), (1, 1), (2, 2), (5, 5), (6, 6), (7, 7)];
        let s = run(8, &replies);
        assert_eq!(s.loss.forward, Some(0));
        assert_eq!(s.loss.backward, Some(2));
    }

    #[test]
    fn mixed_loss_and_an_unplaceable_tail() {
        // Probe 2 lost forward, probe 4's reply (r=3) lost backward, 8 and 9 after
        // the last reply.
        let replies = [(0, 0), (1, 1), (3, 2), (5, 4), (6, 5), (7, 6)];
        let s = run(10, &replies);
        assert_eq!(s.loss.lost, 4);
        assert_eq!(s.loss.forward, Some(1));
        assert_eq!(s.loss.backward, Some(1));
        assert_eq!(s.loss.unknown_direction, 2);
    }

    #[test]
    fn loss_before_the_first_reply_is_placed_by_the_reflector_counter() {
        // First two probes lost forward: the reflector's count still starts at 0.
        let s = run(5, &[(2, 0), (3, 1), (4, 2)]);
        assert_eq!(s.loss.forward, Some(2));
        // First two replies lost backward: r starts at 2.
        let s = run(5, &[(2, 2), (3, 3), (4, 4)]);
        assert_eq!(s.loss.backward, Some(2));
        assert_eq!(s.loss.forward, Some(0));
    }

    #[test]
    fn forward_reordering_is_not_loss() {
        // The reflector got 2 after 3.
        let s = run(5, &[(0, 0), (1, 1), (3, 2), (2, 3), (4, 4)]);
        assert_eq!(s.loss.lost, 0);
        assert_eq!(s.loss.forward, Some(0));
        assert_eq!(s.reordered.forward, 1);
        assert_eq!(s.reordered.backward, 0);
    }

    #[test]
    fn backward_reordering() {
        // The reply numbered 2 arrives after the one numbered 3.
        let s = run(5, &[(0, 0), (1, 1), (3, 3), (2, 2), (4, 4)]);
        assert_eq!(s.loss.lost, 0);
        assert_eq!(s.loss.backward, Some(0));
        assert_eq!(s.reordered.backward, 1);
        assert_eq!(s.reordered.forward, 0);
    }

    #[test]
    fn duplicates_by_direction() {
        // Probe 1 duplicated on the way there (two reflector numbers), reply 2
        // duplicated on the way back (same number twice).
        let s = run(4, &[(0, 0), (1, 1), (1, 2), (2, 3), (2, 3), (3, 4)]);
        assert_eq!(s.duplicates.forward, 1);
        assert_eq!(s.duplicates.backward, 1);
        assert_eq!(s.received, 4);
        assert_eq!(s.loss.forward, Some(0));
        assert_eq!(s.loss.backward, Some(0));
    }

    #[test]
    fn reflector_restart_starts_a_new_epoch() {
        let mut replies: Vec<(u32, u32)> = (0..70_000).map(|i| (i, i)).collect();
        // Probes 70000..70009 are lost while it restarts; it counts from 0 again.
        replies.extend((70_010..70_020).map(|i| (i, i - 70_010)));
        let s = run(70_020, &replies);
        assert_eq!(s.loss.lost, 10);
        assert_eq!(s.loss.forward, Some(10));
        assert_eq!(s.loss.backward, Some(0));
    }

    #[test]
    fn sequence_wrap_is_continuous() {
        assert_eq!(extend(2, u64::from(u32::MAX) - 1), (1u64 << 32) + 2);
        assert_eq!(extend(u32::MAX, 1 << 32), u64::from(u32::MAX));
    }

    #[test]
    fn stateless_reflector_gives_no_direction() {
        let mut stats = SessionStats::new(ReflectorKind::Stateless);
        for s in 0..3u32 {
            stats.sent();
            if s != 1 {
                stats.reply(u64::from(s), &reflection(s, s, 1_000));
            }
        }
        stats.lost();
        let summary = stats.summary();
        assert_eq!(summary.loss.forward, None);
        assert_eq!(summary.loss.unknown_direction, 1);
    }

    #[test]
    fn rtt_and_jitter() {
        let mut stats = SessionStats::new(ReflectorKind::Stateful);
        // RTTs alternate 1.0 and 1.2 ms: |D| = 0.2 ms every time.
        for s in 0..200u32 {
            stats.sent();
            let rtt = if s % 2 == 0 { 1_000_000 } else { 1_200_000 };
            stats.reply(u64::from(s), &reflection(s, s, rtt));
        }
        let summary = stats.summary();
        let rtt = summary.rtt.unwrap();
        assert_eq!(rtt.min_ns / 1000, 1_000);
        assert_eq!(rtt.max_ns / 1000, 1_200);
        assert!((rtt.mean_ns - 1_100_000.0).abs() < 1.0);
        assert!((rtt.stddev_ns - 100_000.0).abs() < 1.0);
        // J converges to |D| = 200 µs (from 0, after 199 steps: within 0.1%).
        let j = summary.jitter.rtt_ns.unwrap();
        assert!((j - 200_000.0).abs() < 200.0, "jitter {j}");
        // Forward/backward are rtt/2 here: their jitter is 100 µs.
        let jf = summary.jitter.forward_ns.unwrap();
        assert!((jf - 100_000.0).abs() < 100.0, "forward jitter {jf}");
        assert_eq!(summary.forward.unwrap().min_ns, 500_000);
    }
}
