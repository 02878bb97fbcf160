//! One target's sparkline for the overview: the destination RTT of its last
//! [`SPARKLINE_ROUNDS`] rounds, in start order, 8 bytes a round.
//!
//! A round is kept as its start in milliseconds after the line's own base
//! (a `u32`: 49 days) and its RTT in whole microseconds (the resolution the
//! API serves: a line is drawn, not measured), `u32::MAX` for a lost round.
//! The base moves when a round falls outside that span, which a line of 120
//! rounds only does when rounds are weeks apart or the clock jumps; a kept
//! round too far from a new one to share a base with it is dropped then, as
//! it would be long before the new one in a line of recent rounds.
//! (`(u64, Option<u32>)` pairs took 16 bytes a round: 1.9 MiB at 1,000
//! targets, docs/benchmarks.md.)

use std::collections::VecDeque;

/// Rounds kept per target for its sparkline.
pub const SPARKLINE_ROUNDS: usize = 120;

/// The RTT field of a lost round.
const LOST: u32 = u32::MAX;

/// One target's recent destination RTTs, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Sparkline {
    base_ms: u64,
    /// `(start - base_ms, RTT in µs or LOST)`, sorted by start, starts unique.
    points: VecDeque<(u32, u32)>,
}

impl Sparkline {
    /// Adds a round that started at `at_ms`, keeping the line sorted; `false`
    /// (and nothing added) if a round that started at the same moment is
    /// already there. A round older than every kept one when the line is
    /// full would leave at once: it is not added, and that is not a repeat.
    pub fn push(&mut self, at_ms: u64, rtt_us: Option<u32>) -> bool {
        if self.points.is_empty() {
            self.base_ms = at_ms;
        }
        if !self.fit_base(at_ms) {
            // Weeks older than the newest round kept: not part of this line.
            return true;
        }
        let offset = (at_ms - self.base_ms) as u32;
        let mut at = self
            .points
            .iter()
            .rposition(|(t, _)| *t <= offset)
            .map_or(0, |i| i + 1);
        if at > 0 && self.points[at - 1].0 == offset {
            return false;
        }
        if self.points.len() >= SPARKLINE_ROUNDS {
            if at == 0 {
                return true;
            }
            self.points.pop_front();
            at -= 1;
        }
        if self.points.capacity() == 0 {
            self.points.reserve_exact(SPARKLINE_ROUNDS);
        }
        // Lost, or an RTT past 71 minutes (longer than any probe timeout).
        let rtt = rtt_us.map_or(LOST, |us| us.min(LOST - 1));
        self.points.insert(at, (offset, rtt));
        true
    }

    /// Moves the base so `at_ms` gets an offset, dropping the oldest rounds
    /// that cannot share a base with it; `false` if `at_ms` itself is too old
    /// for the rounds kept.
    fn fit_base(&mut self, at_ms: u64) -> bool {
        const SPAN: u64 = u32::MAX as u64;
        if at_ms < self.base_ms {
            let newest = self.last_at_ms().unwrap_or(at_ms);
            if newest - at_ms > SPAN {
                return false;
            }
            self.move_base(at_ms);
        } else if at_ms - self.base_ms > SPAN {
            while self
                .iter()
                .next()
                .is_some_and(|(oldest, _)| at_ms - oldest > SPAN)
            {
                self.points.pop_front();
            }
            let oldest = self.iter().next().map_or(at_ms, |(oldest, _)| oldest);
            self.move_base(oldest);
        }
        true
    }

    /// Re-expresses every kept round against `base_ms`, which the caller
    /// checked is at most the oldest round and within a `u32` of the newest.
    fn move_base(&mut self, base_ms: u64) {
        for (t, _) in &mut self.points {
            *t = (self.base_ms + u64::from(*t) - base_ms) as u32;
        }
        self.base_ms = base_ms;
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// When the newest round kept started.
    pub fn last_at_ms(&self) -> Option<u64> {
        self.points
            .back()
            .map(|(t, _)| self.base_ms + u64::from(*t))
    }

    /// Each round's start and destination RTT in µs (`None`: lost), oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (u64, Option<u32>)> + '_ {
        self.points
            .iter()
            .map(|(t, rtt)| (self.base_ms + u64::from(*t), (*rtt != LOST).then_some(*rtt)))
    }

    /// Bytes on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.points.capacity() * std::mem::size_of::<(u32, u32)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: u64 = 1_780_000_000_000;
    const DAY_MS: u64 = 86_400_000;

    fn starts(line: &Sparkline) -> Vec<u64> {
        line.iter().map(|(at, _)| at).collect()
    }

    #[test]
    fn rounds_are_kept_sorted_once_each_with_their_rtts_and_losses() {
        let mut line = Sparkline::default();
        assert!(line.push(START + 2_000, Some(300)));
        assert!(line.push(START, None));
        assert!(line.push(START + 1_000, Some(u32::MAX)));
        assert!(!line.push(START + 1_000, Some(5)), "a repeat is refused");
        assert_eq!(
            line.iter().collect::<Vec<_>>(),
            [
                (START, None),
                (START + 1_000, Some(u32::MAX - 1)),
                (START + 2_000, Some(300))
            ]
        );
        assert_eq!(line.last_at_ms(), Some(START + 2_000));
        assert_eq!(line.heap_bytes(), SPARKLINE_ROUNDS * 8);
    }

    #[test]
    fn a_full_line_keeps_the_newest_rounds() {
        let mut line = Sparkline::default();
        for i in 0..200 {
            assert!(line.push(START + i * 1_000, Some(i as u32)));
        }
        assert_eq!(line.len(), SPARKLINE_ROUNDS);
        assert_eq!(line.iter().next(), Some((START + 80_000, Some(80))));
        assert_eq!(line.last_at_ms(), Some(START + 199_000));
        // Older than every kept round: not added, not a repeat.
        assert!(line.push(START, Some(1)));
        assert_eq!(line.iter().next(), Some((START + 80_000, Some(80))));
    }

    #[test]
    fn the_base_follows_rounds_weeks_apart_in_either_direction() {
        let mut line = Sparkline::default();
        line.push(START, Some(1));
        // 30 days later: 2.6e9 ms after the base still fits in a u32.
        line.push(START + 30 * DAY_MS, Some(2));
        // 60 days after the first: it cannot share a base with it, so the
        // first leaves and the base moves to the second.
        line.push(START + 60 * DAY_MS, Some(3));
        assert_eq!(starts(&line), [START + 30 * DAY_MS, START + 60 * DAY_MS]);
        // An older round that fits before the base moves it down.
        line.push(START + 20 * DAY_MS, Some(4));
        assert_eq!(
            starts(&line),
            [
                START + 20 * DAY_MS,
                START + 30 * DAY_MS,
                START + 60 * DAY_MS
            ]
        );
        // One too old for the newest kept is not part of the line.
        assert!(line.push(START, Some(5)));
        assert_eq!(line.len(), 3);
        assert_eq!(line.last_at_ms(), Some(START + 60 * DAY_MS));
        assert_eq!(
            line.iter().map(|(_, rtt)| rtt).collect::<Vec<_>>(),
            [Some(4), Some(2), Some(3)]
        );
    }
}
