//! Tool against capture: per-probe RTT errors for tools that report probes
//! (matched by wire identity, with the TTL cross-checked), and per-hop
//! best/avg/worst errors for every tool, so tools that only report per-hop
//! aggregates (trippy) are compared on the same footing.

use std::collections::BTreeMap;

use super::pcap::CaptureIndex;
use super::tools::{HopFigures, ToolProbe};

/// The outcome of matching one run's probes against its capture.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProbeMatch {
    /// tool RTT − capture RTT, ns, for every probe both answered.
    pub errors_ns: Vec<i64>,
    /// (TTL, tool RTT, capture RTT) in ns of the matched probes, for the
    /// per-hop comparison.
    pub matched: Vec<(u8, u64, u64)>,
    /// Probes the tool reported.
    pub reported: usize,
    /// Probes the tool timed out.
    pub timed_out: usize,
    /// Answered by the tool but absent (or unanswered) in the capture.
    pub not_in_capture: usize,
    /// The capture's TTL differs from the tool's: the match is wrong, so left out.
    pub ttl_mismatch: usize,
    /// The capture's responder differs from the tool's (a mixed-up reply).
    pub responder_mismatch: usize,
    /// Results per hopwatch timestamp source ("ebpf", "kernel", "userspace").
    pub sources: BTreeMap<String, usize>,
}

/// Matches `probes` against `capture` by wire identity.
pub fn match_probes(probes: &[ToolProbe], capture: &CaptureIndex) -> ProbeMatch {
    let mut m = ProbeMatch {
        reported: probes.len(),
        ..ProbeMatch::default()
    };
    for probe in probes {
        if let Some(source) = &probe.source {
            *m.sources.entry(source.clone()).or_default() += 1;
        }
        let Some(tool_rtt) = probe.rtt_ns else {
            m.timed_out += 1;
            continue;
        };
        let Some((captured, capture_rtt)) = capture
            .get(&probe.key)
            .and_then(|c| c.rtt_ns().map(|rtt| (c, rtt)))
        else {
            m.not_in_capture += 1;
            continue;
        };
        if captured.ttl != probe.ttl {
            m.ttl_mismatch += 1;
            continue;
        }
        if let (Some(tool), Some(reply)) = (probe.responder, captured.reply) {
            if tool != reply.responder {
                m.responder_mismatch += 1;
            }
        }
        m.errors_ns.push(tool_rtt as i64 - capture_rtt as i64);
        m.matched.push((probe.ttl, tool_rtt, capture_rtt));
    }
    m
}

impl ProbeMatch {
    /// (TTL, tool RTT) of every matched probe.
    pub fn tool_rtts(&self) -> Vec<(u8, u64)> {
        self.matched.iter().map(|&(ttl, t, _)| (ttl, t)).collect()
    }

    /// (TTL, capture RTT) of every matched probe.
    pub fn capture_rtts(&self) -> Vec<(u8, u64)> {
        self.matched.iter().map(|&(ttl, _, c)| (ttl, c)).collect()
    }
}

/// Per-TTL figures of (TTL, RTT) samples.
pub fn tool_hops(matched: &[(u8, u64)]) -> BTreeMap<u8, HopFigures> {
    let mut by_ttl: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
    for &(ttl, rtt) in matched {
        by_ttl.entry(ttl).or_default().push(rtt);
    }
    by_ttl
        .into_iter()
        .filter_map(|(ttl, rtts)| Some((ttl, HopFigures::of(rtts.len() as u64, &rtts)?)))
        .collect()
}

/// Per-TTL figures of the capture's RTTs, over every answered probe to `dst`.
pub fn capture_hops(capture: &CaptureIndex, dst: std::net::IpAddr) -> BTreeMap<u8, HopFigures> {
    let mut by_ttl: BTreeMap<u8, (u64, Vec<u64>)> = BTreeMap::new();
    for probe in capture.probes().filter(|p| p.key.dst == dst) {
        let entry = by_ttl.entry(probe.ttl).or_default();
        entry.0 += 1;
        if let Some(rtt) = probe.rtt_ns() {
            entry.1.push(rtt);
        }
    }
    by_ttl
        .into_iter()
        .filter_map(|(ttl, (sent, rtts))| Some((ttl, HopFigures::of(sent, &rtts)?)))
        .collect()
}

/// The largest |tool − capture| over the hops both have, per figure, in ns.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct HopErrors {
    pub hops: usize,
    pub best_ns: f64,
    pub avg_ns: f64,
    pub worst_ns: f64,
}

/// Compares per-hop figures hop by hop.
pub fn compare_hops(
    tool: &BTreeMap<u8, HopFigures>,
    capture: &BTreeMap<u8, HopFigures>,
) -> HopErrors {
    let mut e = HopErrors::default();
    for (ttl, t) in tool {
        let Some(c) = capture.get(ttl) else { continue };
        e.hops += 1;
        e.best_ns = e.best_ns.max((t.best_ns - c.best_ns).abs());
        e.avg_ns = e.avg_ns.max((t.avg_ns - c.avg_ns).abs());
        e.worst_ns = e.worst_ns.max((t.worst_ns - c.worst_ns).abs());
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::pcap::{Transport, WireKey};

    fn probe(seq: u16, ttl: u8, rtt_ns: Option<u64>) -> ToolProbe {
        ToolProbe {
            key: WireKey {
                dst: "198.19.0.1".parse().unwrap(),
                transport: Transport::Icmp { id: 1, seq },
            },
            ttl,
            rtt_ns,
            responder: None,
            source: Some("ebpf".into()),
            sent_ns: None,
        }
    }

    #[test]
    fn probes_missing_from_the_capture_or_timed_out_are_counted_not_compared() {
        let capture = CaptureIndex::default();
        let m = match_probes(&[probe(1, 1, Some(5)), probe(2, 1, None)], &capture);
        assert!(m.errors_ns.is_empty());
        assert_eq!((m.reported, m.timed_out, m.not_in_capture), (2, 1, 1));
        assert_eq!(m.sources["ebpf"], 2);
    }

    #[test]
    fn hop_errors_take_the_worst_hop() {
        let tool = tool_hops(&[(1, 100), (1, 300), (2, 1_000)]);
        let mut capture = tool.clone();
        capture.get_mut(&2).unwrap().avg_ns = 900.0;
        capture.get_mut(&1).unwrap().worst_ns = 250.0;
        let e = compare_hops(&tool, &capture);
        assert_eq!(
            (e.hops, e.best_ns, e.avg_ns, e.worst_ns),
            (2, 0.0, 100.0, 50.0)
        );
    }
}
