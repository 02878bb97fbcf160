//! The minutes of a target's rounds that are not rolled up yet, held as
//! per-series samples rather than as the rounds themselves.
//!
//! A round in memory costs a few hundred bytes (its target, hops,
//! responders); what a minute's rollup needs of it is, per series, whether
//! the probe was answered and its RTT: four bytes. At 1,000 targets the
//! open minutes took 27 MiB as rounds (heaptrack, docs/benchmarks.md) and
//! take about a twentieth as samples.
//!
//! A flush that fails hands its rounds back with the retry, so every minute
//! remembers which rounds it counted, `(start, seq)`, and counts each once.

use std::collections::BTreeMap;

use histogram::Histogram32;

use crate::model::{HopSample, RoundRecord};
use crate::probe::Rtt;
use crate::store::keys::SeriesNum;
use crate::store::rollup::{SeriesAcc, Stats};
use crate::store::MINUTE_MS;

/// A round's identity within its target, as the store deduplicates rounds.
type RoundId = (u64, u64);

/// One series' samples of one minute.
#[derive(Debug, Default)]
struct MinuteSeries {
    lost: u32,
    /// RTTs in microseconds: what a stored round keeps
    /// ([`crate::store::chunk::as_stored`]), so nothing is rounded here.
    rtt_us: Vec<u32>,
}

impl MinuteSeries {
    fn push(&mut self, rtt: Option<Rtt>) {
        match rtt {
            Some(rtt) => {
                let us = rtt.as_nanos() / 1_000;
                self.rtt_us.push(u32::try_from(us).unwrap_or(u32::MAX));
            }
            None => self.lost += 1,
        }
    }

    fn stats(&self, scratch: &mut Histogram32) -> Stats {
        let mut acc = SeriesAcc::default();
        for &us in &self.rtt_us {
            acc.push(Some(u64::from(us) * 1_000));
        }
        for _ in 0..self.lost {
            acc.push(None);
        }
        acc.finish(scratch)
    }
}

/// One minute of one target.
#[derive(Debug, Default)]
struct OpenMinute {
    /// The rounds counted, in the order they came (nearly always rising).
    rounds: Vec<RoundId>,
    series: BTreeMap<SeriesNum, MinuteSeries>,
}

impl OpenMinute {
    /// Whether `id` is counted already; if not, it is now.
    fn count(&mut self, id: RoundId) -> bool {
        // Rounds nearly always come in order: only an older one is searched.
        let new = self.rounds.last().is_none_or(|last| *last < id) || !self.rounds.contains(&id);
        if new {
            self.rounds.push(id);
        }
        new
    }
}

/// A target's open minutes: rounds added, minutes rolled up and dropped.
#[derive(Debug, Default)]
pub struct OpenMinutes {
    minutes: BTreeMap<u64, OpenMinute>,
}

impl OpenMinutes {
    /// Counts `round` (as stored: RTTs to the microsecond) in its minute,
    /// once however often it is added.
    pub fn add(&mut self, round: &RoundRecord) {
        let minute = round.started_at_ms - round.started_at_ms % MINUTE_MS;
        let open = self.minutes.entry(minute).or_default();
        if !open.count((round.started_at_ms, round.seq)) {
            return;
        }
        open.series
            .entry(SeriesNum::DESTINATION)
            .or_default()
            .push(round.destination().and_then(HopSample::rtt));
        for hop in round.path_samples() {
            open.series
                .entry(SeriesNum(hop.ttl.get()))
                .or_default()
                .push(hop.rtt());
        }
    }

    /// The rollup of every series of every minute in `[from_ms, to_ms)`
    /// that has samples, oldest minute first.
    pub fn roll(
        &self,
        from_ms: u64,
        to_ms: u64,
        scratch: &mut Histogram32,
    ) -> Vec<(u64, SeriesNum, Stats)> {
        let mut out = Vec::new();
        for (&minute, open) in self.minutes.range(from_ms..to_ms) {
            for (&series, samples) in &open.series {
                out.push((minute, series, samples.stats(scratch)));
            }
        }
        out
    }

    /// Drops the minutes before `ms` (rolled up and on disk).
    pub fn forget_before(&mut self, ms: u64) {
        self.minutes = self.minutes.split_off(&ms);
    }

    pub fn is_empty(&self) -> bool {
        self.minutes.is_empty()
    }

    /// Rounds counted, over all open minutes.
    #[cfg(test)]
    pub fn rounds(&self) -> usize {
        self.minutes.values().map(|m| m.rounds.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    use crate::model::TargetId;
    use crate::probe::{TimestampSource, Ttl};
    use crate::store::rollup::scratch_histogram;

    fn round(seq: u64, at_ms: u64, rtts_us: &[Option<u64>]) -> RoundRecord {
        let last = rtts_us.len() as u8;
        let hops = (1..=last)
            .zip(rtts_us)
            .map(|(ttl, rtt)| {
                let responder = IpAddr::from([10, 0, ttl, 1]);
                HopSample::answered_or_lost(ttl, responder, rtt.map(|us| us * 1_000), ttl == last)
            })
            .collect::<Vec<_>>();
        let destination_ttl = match rtts_us.last() {
            Some(Some(_)) => Ttl::new(last),
            _ => None,
        };
        RoundRecord {
            target: TargetId::new("t").unwrap(),
            seq,
            started_at_ms: at_ms,
            hops,
            destination_ttl,
            source: TimestampSource::Ebpf,
        }
    }

    /// What the rounds' minutes roll up to, the way the store did before:
    /// a `SeriesAcc` per series fed from the rounds themselves.
    fn from_rounds(rounds: &[RoundRecord]) -> Vec<(u64, SeriesNum, Stats)> {
        let mut scratch = scratch_histogram();
        let mut by: BTreeMap<(u64, SeriesNum), SeriesAcc> = BTreeMap::new();
        for r in rounds {
            let minute = r.started_at_ms - r.started_at_ms % MINUTE_MS;
            by.entry((minute, SeriesNum::DESTINATION))
                .or_default()
                .push(
                    r.destination()
                        .and_then(HopSample::rtt)
                        .map(|x| x.as_nanos()),
                );
            for hop in r.path_samples() {
                by.entry((minute, SeriesNum(hop.ttl.get())))
                    .or_default()
                    .push(hop.rtt().map(|x| x.as_nanos()));
            }
        }
        by.into_iter()
            .map(|((m, s), acc)| (m, s, acc.finish(&mut scratch)))
            .collect()
    }

    #[test]
    fn rolls_up_what_the_rounds_roll_up_to() {
        let rounds: Vec<RoundRecord> = (0..150u64)
            .map(|i| {
                let lost = i % 7 == 0;
                round(
                    i,
                    1_000_000_000 + i * 1_000,
                    &[Some(100 + i), if lost { None } else { Some(2_000 + 3 * i) }],
                )
            })
            .collect();
        let mut open = OpenMinutes::default();
        for r in &rounds {
            open.add(r);
        }
        let mut scratch = scratch_histogram();
        let got = open.roll(0, u64::MAX, &mut scratch);
        let want = from_rounds(&rounds);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w);
        }
        // 150 s starting 40 s into a minute: 20 + 60 + 60 + 10 rounds.
        let minutes: std::collections::BTreeSet<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(minutes.len(), 4);
    }

    #[test]
    fn a_round_handed_back_by_a_failed_flush_counts_once() {
        let mut open = OpenMinutes::default();
        let a = round(1, 60_000, &[Some(10)]);
        let b = round(2, 61_000, &[None]);
        open.add(&a);
        open.add(&b);
        // The retry: the same rounds again, in another order.
        open.add(&b);
        open.add(&a);
        assert_eq!(open.rounds(), 2);
        let rolled = open.roll(0, u64::MAX, &mut scratch_histogram());
        let dest = rolled
            .iter()
            .find(|(_, s, _)| *s == SeriesNum::DESTINATION)
            .unwrap();
        assert_eq!((dest.2.sent, dest.2.lost), (2, 1));
    }

    #[test]
    fn forgets_only_minutes_before_the_mark() {
        let mut open = OpenMinutes::default();
        for i in 0..3 {
            open.add(&round(i, i * MINUTE_MS + 5, &[Some(10)]));
        }
        open.forget_before(MINUTE_MS);
        assert_eq!(open.rounds(), 2);
        assert!(open.roll(0, MINUTE_MS, &mut scratch_histogram()).is_empty());
        open.forget_before(10 * MINUTE_MS);
        assert!(open.is_empty());
    }
}
