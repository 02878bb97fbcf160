//! The one-shot trace report (`hopwatch trace`): per-hop aggregation of probe
//! results, and its renderings as an mtr-style table, JSON, CSV and raw lines.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;

use crate::probe::{Outcome, ProbeResult, Protocol, TimestampSource};
use crate::stats::RunningStats;

/// What was traced, for the report header.
#[derive(Debug, Clone, Serialize)]
pub struct TraceHeader {
    /// The host as the user gave it.
    pub target: String,
    pub address: IpAddr,
    pub source_address: IpAddr,
    pub protocol: Protocol,
    /// Destination port for UDP and TCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub packet_size: usize,
    pub interval_ms: u64,
    pub timestamp_source: TimestampSource,
}

/// One responder seen at a hop (several for ECMP and load balancers).
#[derive(Debug, Clone, Serialize)]
pub struct ResponderReport {
    pub address: IpAddr,
    pub received: u64,
    #[serde(flatten)]
    pub rtt: RttSummary,
    /// MPLS labels from the last reply that carried any, outermost first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mpls: Vec<u32>,
    #[serde(skip)]
    stats: RunningStats,
}

/// RTT figures in nanoseconds (absent before the first reply).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RttSummary {
    pub last_ns: Option<u64>,
    pub avg_ns: Option<u64>,
    pub best_ns: Option<u64>,
    pub worst_ns: Option<u64>,
    pub stddev_ns: Option<u64>,
}

impl From<&RunningStats> for RttSummary {
    fn from(stats: &RunningStats) -> Self {
        RttSummary {
            last_ns: stats.last(),
            avg_ns: stats.mean().map(|m| m.round() as u64),
            best_ns: stats.best(),
            worst_ns: stats.worst(),
            stddev_ns: stats.stddev().map(|s| s.round() as u64),
        }
    }
}

/// One TTL's row.
#[derive(Debug, Clone, Serialize)]
pub struct HopReport {
    pub ttl: u8,
    pub sent: u64,
    pub received: u64,
    pub loss_pct: f64,
    #[serde(flatten)]
    pub rtt: RttSummary,
    pub responders: Vec<ResponderReport>,
    #[serde(skip)]
    stats: RunningStats,
}

/// The aggregated trace.
#[derive(Debug, Clone, Serialize)]
pub struct TraceReport {
    #[serde(flatten)]
    pub header: TraceHeader,
    /// The lowest TTL at which the destination answered.
    pub destination_ttl: Option<u8>,
    pub hops: Vec<HopReport>,
    #[serde(skip)]
    by_ttl: BTreeMap<u8, HopReport>,
}

impl TraceReport {
    pub fn new(header: TraceHeader) -> Self {
        TraceReport {
            header,
            destination_ttl: None,
            hops: Vec::new(),
            by_ttl: BTreeMap::new(),
        }
    }

    /// Adds one probe result.
    pub fn record(&mut self, result: &ProbeResult) {
        let ttl = result.ttl.get();
        let hop = self.by_ttl.entry(ttl).or_insert_with(|| HopReport {
            ttl,
            sent: 0,
            received: 0,
            loss_pct: 0.0,
            rtt: RttSummary::default(),
            responders: Vec::new(),
            stats: RunningStats::default(),
        });
        hop.sent += 1;
        if let Outcome::Answered(answer) = &result.outcome {
            hop.received += 1;
            hop.stats.push(answer.rtt.as_nanos());
            let index = match hop
                .responders
                .iter()
                .position(|r| r.address == answer.responder)
            {
                Some(i) => i,
                None => {
                    hop.responders.push(ResponderReport {
                        address: answer.responder,
                        received: 0,
                        rtt: RttSummary::default(),
                        mpls: Vec::new(),
                        stats: RunningStats::default(),
                    });
                    hop.responders.len() - 1
                }
            };
            let responder = &mut hop.responders[index];
            responder.received += 1;
            responder.stats.push(answer.rtt.as_nanos());
            if !answer.mpls.is_empty() {
                responder.mpls = answer.mpls.iter().map(|l| l.label).collect();
            }
            if answer.kind.reached_destination() {
                self.destination_ttl = Some(self.destination_ttl.map_or(ttl, |d| d.min(ttl)));
            }
        }
    }

    /// Computes the visible rows: every TTL up to the destination, or up to
    /// the last hop that answered when the destination never did.
    pub fn finish(&mut self) {
        let last = self.destination_ttl.or_else(|| {
            self.by_ttl
                .values()
                .rev()
                .find(|h| h.received > 0)
                .map(|h| h.ttl)
        });
        self.hops = self
            .by_ttl
            .values()
            .filter(|h| last.is_some_and(|last| h.ttl <= last))
            .cloned()
            .map(|mut hop| {
                hop.loss_pct = if hop.sent == 0 {
                    0.0
                } else {
                    (hop.sent - hop.received) as f64 * 100.0 / hop.sent as f64
                };
                hop.rtt = RttSummary::from(&hop.stats);
                for responder in &mut hop.responders {
                    responder.rtt = RttSummary::from(&responder.stats);
                }
                hop
            })
            .collect();
    }

    /// The mtr `--report` style table, RTTs in milliseconds to the microsecond.
    pub fn to_table(&self) -> String {
        let h = &self.header;
        let mut out = String::new();
        let port = h.port.map(|p| format!(" port {p}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "hopwatch trace to {} ({}) from {}: {}{}, {} bytes, timestamps: {}",
            h.target,
            h.address,
            h.source_address,
            h.protocol,
            port,
            h.packet_size,
            h.timestamp_source
        );
        let _ = writeln!(
            out,
            "{:<44} {:>6} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "HOP  HOST", "Loss%", "Snt", "Last", "Avg", "Best", "Wrst", "StDev"
        );
        for hop in &self.hops {
            let first = hop.responders.first();
            let host = first.map_or_else(|| "???".to_owned(), with_mpls);
            let _ = write!(out, "{:>3}.|-- {:<36}", hop.ttl, host);
            let _ = write!(out, " {:>5.1}% {:>5}", hop.loss_pct, hop.sent);
            for value in [
                hop.rtt.last_ns,
                hop.rtt.avg_ns,
                hop.rtt.best_ns,
                hop.rtt.worst_ns,
                hop.rtt.stddev_ns,
            ] {
                match value {
                    Some(ns) => {
                        let _ = write!(out, " {:>9.3}", ns as f64 / 1e6);
                    }
                    None => out.push_str(&format!(" {:>9}", "")),
                }
            }
            out.truncate(out.trim_end().len());
            out.push('\n');
            for other in hop.responders.iter().skip(1) {
                let _ = writeln!(
                    out,
                    "    |   {:<36} ({} replies)",
                    with_mpls(other),
                    other.received
                );
            }
        }
        out
    }

    /// One CSV row per hop and responder; hop-level columns repeat per responder.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "ttl,responder,loss_pct,sent,received,last_ms,avg_ms,best_ms,worst_ms,stddev_ms,mpls_labels,timestamp_source\n",
        );
        let ms = |v: Option<u64>| {
            v.map(|ns| format!("{:.3}", ns as f64 / 1e6))
                .unwrap_or_default()
        };
        for hop in &self.hops {
            let rows: Vec<(String, u64, RttSummary, String)> = if hop.responders.is_empty() {
                vec![(String::new(), 0, hop.rtt, String::new())]
            } else {
                hop.responders
                    .iter()
                    .map(|r| {
                        let labels = r
                            .mpls
                            .iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(" ");
                        (r.address.to_string(), r.received, r.rtt, labels)
                    })
                    .collect()
            };
            for (responder, received, rtt, labels) in rows {
                let _ = writeln!(
                    out,
                    "{},{},{:.1},{},{},{},{},{},{},{},{},{}",
                    hop.ttl,
                    responder,
                    hop.loss_pct,
                    hop.sent,
                    received,
                    ms(rtt.last_ns),
                    ms(rtt.avg_ns),
                    ms(rtt.best_ns),
                    ms(rtt.worst_ns),
                    ms(rtt.stddev_ns),
                    labels,
                    self.header.timestamp_source
                );
            }
        }
        out
    }
}

fn with_mpls(responder: &ResponderReport) -> String {
    if responder.mpls.is_empty() {
        responder.address.to_string()
    } else {
        let labels: Vec<String> = responder.mpls.iter().map(|l| format!("L={l}")).collect();
        format!("{} [MPLS {}]", responder.address, labels.join(" "))
    }
}

/// One line per probe for `--raw`: enough to find the probe in a packet
/// capture (its identity on the wire) and its exact timing.
pub fn raw_line(result: &ProbeResult) -> String {
    let key = &result.key;
    let identity = match result.protocol {
        Protocol::Icmp => format!("icmp_id={} icmp_seq={}", key.flow, key.seq),
        Protocol::Udp => format!(
            "sport={} dport={} udp_csum=0x{:04x}",
            key.flow, result.dst_port, key.seq
        ),
        Protocol::Tcp => format!(
            "sport={} dport={} tcp_seq={}",
            key.flow, result.dst_port, key.seq
        ),
    };
    let sent = humantime::format_rfc3339_nanos(result.sent_at);
    match &result.outcome {
        Outcome::Answered(answer) => format!(
            "target={} ttl={} proto={} {} sent={} responder={} rtt_ns={} icmp_type={} icmp_code={} kind={} source={}",
            result.target,
            result.ttl,
            result.protocol,
            identity,
            sent,
            answer.responder,
            answer.rtt.as_nanos(),
            answer.icmp_type,
            answer.icmp_code,
            answer.kind,
            result.source
        ),
        Outcome::TimedOut => format!(
            "target={} ttl={} proto={} {} sent={} responder=* rtt_ns=- source={}",
            result.target, result.ttl, result.protocol, identity, sent, result.source
        ),
    }
}
