//! The bounded set of responders seen at one hop (ECMP members, load balancers),
//! each with its own RTT statistics, and an "other" bucket for the overflow.

use std::net::IpAddr;

use serde::Serialize;

use crate::stats::RunningStats;

/// Responders tracked separately per hop. Real ECMP fan-out seen by one flow-stable
/// probe sequence is 1, per-packet balancers rarely exceed 4-8 next hops; anything
/// beyond this is counted in one "other responders" bucket so memory stays fixed.
pub const MAX_RESPONDERS_PER_HOP: usize = 8;

/// Window-sample tag for an answer counted in the "other" bucket.
pub(crate) const OTHER_TAG: u8 = MAX_RESPONDERS_PER_HOP as u8;

#[derive(Debug, Clone)]
struct Responder {
    address: IpAddr,
    rtt: RunningStats,
    last_seen_ms: u64,
}

#[derive(Debug, Clone, Default)]
struct Other {
    rtt: RunningStats,
    last_address: Option<IpAddr>,
    last_seen_ms: u64,
}

/// Per-responder statistics since start, in first-seen order.
///
/// On the heap and grown one responder at a time, not inline at the bound:
/// almost every hop has one responder, and eight inline slots cost ~560
/// bytes more on every hop of every target (2.2 MiB at 1,000 3-hop targets;
/// docs/benchmarks.md, "The daemon's memory, piece by piece").
///
/// The overflow bucket is boxed for the same reason: it exists only at a hop
/// that more than [`MAX_RESPONDERS_PER_HOP`] routers answered, and inline it
/// cost ~80 bytes on every hop.
#[derive(Debug, Clone, Default)]
pub(crate) struct Responders {
    known: Vec<Responder>,
    other: Option<Box<Other>>,
}

/// One responder at a hop.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResponderSnapshot {
    pub address: IpAddr,
    /// Answers from this responder since start.
    pub received: u64,
    /// Answers from this responder among the window's probes.
    pub window_received: u64,
    /// Its share of the hop's answers in the window, `None` when the window has none.
    pub window_share_pct: Option<f64>,
    pub last_ns: Option<u64>,
    pub avg_ns: Option<f64>,
    pub best_ns: Option<u64>,
    pub worst_ns: Option<u64>,
    pub stddev_ns: Option<f64>,
    /// When it last answered, Unix milliseconds (the round's start).
    pub last_seen_ms: u64,
}

/// Answers from responders beyond the first [`MAX_RESPONDERS_PER_HOP`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OtherRespondersSnapshot {
    pub received: u64,
    pub window_received: u64,
    pub last_address: Option<IpAddr>,
    pub avg_ns: Option<f64>,
    pub last_seen_ms: u64,
}

impl Responders {
    /// Counts one answer and returns the tag the window stores for it.
    pub(crate) fn record(&mut self, address: IpAddr, rtt_ns: u64, at_ms: u64) -> u8 {
        if let Some(i) = self.known.iter().position(|r| r.address == address) {
            let r = &mut self.known[i];
            r.rtt.push(rtt_ns);
            r.last_seen_ms = at_ms;
            return i as u8;
        }
        let mut rtt = RunningStats::default();
        rtt.push(rtt_ns);
        let fresh = Responder {
            address,
            rtt,
            last_seen_ms: at_ms,
        };
        if self.known.len() < MAX_RESPONDERS_PER_HOP {
            self.known.reserve_exact(1);
            self.known.push(fresh);
            (self.known.len() - 1) as u8
        } else {
            let other = self.other.get_or_insert_with(Box::default);
            other.rtt.push(rtt_ns);
            other.last_address = Some(address);
            other.last_seen_ms = at_ms;
            OTHER_TAG
        }
    }

    /// Bytes the responders take on the heap.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.known.capacity() * std::mem::size_of::<Responder>()
            + self
                .other
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<Other>())
    }

    pub(crate) fn address(&self, tag: u8) -> Option<IpAddr> {
        self.known.get(usize::from(tag)).map(|r| r.address)
    }

    /// The responder with the most answers since start (first seen wins ties).
    pub(crate) fn most_answers(&self) -> Option<IpAddr> {
        self.known
            .iter()
            .rev()
            .max_by_key(|r| r.rtt.count())
            .map(|r| r.address)
    }

    /// `window_counts[i]` is how many window answers carry tag `i`
    /// (index [`OTHER_TAG`] for the other bucket).
    pub(crate) fn snapshot(
        &self,
        window_counts: &[u64; MAX_RESPONDERS_PER_HOP + 1],
    ) -> (Vec<ResponderSnapshot>, Option<OtherRespondersSnapshot>) {
        let window_total: u64 = window_counts.iter().sum();
        let share = |n: u64| (window_total > 0).then(|| 100.0 * n as f64 / window_total as f64);
        let mut list: Vec<ResponderSnapshot> = self
            .known
            .iter()
            .enumerate()
            .map(|(i, r)| ResponderSnapshot {
                address: r.address,
                received: r.rtt.count(),
                window_received: window_counts[i],
                window_share_pct: share(window_counts[i]),
                last_ns: r.rtt.last(),
                avg_ns: r.rtt.mean(),
                best_ns: r.rtt.best(),
                worst_ns: r.rtt.worst(),
                stddev_ns: r.rtt.stddev(),
                last_seen_ms: r.last_seen_ms,
            })
            .collect();
        // Busiest first, so the UI's first line is the dominant next hop.
        list.sort_by_key(|r| std::cmp::Reverse((r.window_received, r.received)));
        let other = self.other.as_ref().map(|other| OtherRespondersSnapshot {
            received: other.rtt.count(),
            window_received: window_counts[usize::from(OTHER_TAG)],
            last_address: other.last_address,
            avg_ns: other.rtt.mean(),
            last_seen_ms: other.last_seen_ms,
        });
        (list, other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn addr(i: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 1, i))
    }

    #[test]
    fn responders_are_tracked_separately_and_bounded() {
        let mut r = Responders::default();
        assert_eq!(r.record(addr(1), 1_000, 10), 0);
        assert_eq!(r.record(addr(2), 3_000, 11), 1);
        assert_eq!(r.record(addr(1), 2_000, 12), 0);
        for i in 3..=8 {
            assert_eq!(r.record(addr(i), 5_000, 13), i - 1);
        }
        // The set is full: the ninth and tenth go to the other bucket.
        assert_eq!(r.record(addr(9), 7_000, 14), OTHER_TAG);
        assert_eq!(r.record(addr(10), 9_000, 15), OTHER_TAG);
        assert_eq!(r.address(0), Some(addr(1)));
        assert_eq!(r.address(OTHER_TAG), None);
        assert_eq!(r.most_answers(), Some(addr(1)));

        let mut counts = [0u64; MAX_RESPONDERS_PER_HOP + 1];
        counts[0] = 2;
        counts[1] = 6;
        counts[usize::from(OTHER_TAG)] = 2;
        let (list, other) = r.snapshot(&counts);
        assert_eq!(list.len(), MAX_RESPONDERS_PER_HOP);
        assert_eq!(list[0].address, addr(2), "most window answers first");
        assert_eq!(list[0].window_share_pct, Some(60.0));
        let first = list.iter().find(|s| s.address == addr(1)).unwrap();
        assert_eq!(first.received, 2);
        assert_eq!(first.avg_ns, Some(1_500.0));
        assert_eq!(first.best_ns, Some(1_000));
        assert_eq!(first.last_seen_ms, 12);
        let other = other.unwrap();
        assert_eq!(other.received, 2);
        assert_eq!(other.window_received, 2);
        assert_eq!(other.last_address, Some(addr(10)));
        assert_eq!(other.avg_ns, Some(8_000.0));
    }
}
