//! The outputs of the tools under test, parsed into probes and per-hop figures:
//! `hopwatch trace --raw` (one line per probe with its wire identity), `mtr
//! --raw` (`x` sent / `p` answered lines carrying mtr's sequence, which mtr-packet
//! puts on the wire as the ICMP sequence), `mtr --report`, and trippy's JSON
//! report (per-hop aggregates only, in ms with two decimals).

use std::{collections::BTreeMap, net::IpAddr};

use super::error::{BenchError, Result};
use super::pcap::{Transport, WireKey};

/// One probe as a tool reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolProbe {
    pub key: WireKey,
    pub ttl: u8,
    /// The tool's RTT, `None` when it reported a timeout.
    pub rtt_ns: Option<u64>,
    pub responder: Option<IpAddr>,
    /// hopwatch's timestamp source for this probe.
    pub source: Option<String>,
    /// When it was sent (wall clock, ns since the Unix epoch), where the tool says.
    pub sent_ns: Option<u64>,
}

fn output_error(
    tool: &'static str,
    line: usize,
    text: &str,
    problem: impl Into<String>,
) -> BenchError {
    BenchError::Output {
        tool,
        line,
        problem: problem.into(),
        text: text.to_owned(),
    }
}

/// Parses `hopwatch trace --raw` output.
pub fn parse_hopwatch_raw(text: &str) -> Result<Vec<ToolProbe>> {
    const TOOL: &str = "hopwatch";
    let mut probes = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields: BTreeMap<&str, &str> = line
            .split_whitespace()
            .filter_map(|token| token.split_once('='))
            .collect();
        let err = |problem: String| output_error(TOOL, line_no, line, problem);
        let get = |name: &str| {
            fields
                .get(name)
                .copied()
                .ok_or_else(|| err(format!("no {name}=")))
        };
        fn num<T: std::str::FromStr>(
            value: &str,
            name: &str,
            err: &dyn Fn(String) -> BenchError,
        ) -> Result<T> {
            value
                .parse()
                .map_err(|_| err(format!("{name}={value} is not a number")))
        }
        let dst: IpAddr = num(get("target")?, "target", &err)?;
        let ttl: u8 = num(get("ttl")?, "ttl", &err)?;
        let transport = if let Some(id) = fields.get("icmp_id") {
            Transport::Icmp {
                id: num(id, "icmp_id", &err)?,
                seq: num(get("icmp_seq")?, "icmp_seq", &err)?,
            }
        } else if let Some(csum) = fields.get("udp_csum") {
            let hex = csum.trim_start_matches("0x");
            Transport::Udp {
                sport: num(get("sport")?, "sport", &err)?,
                dport: num(get("dport")?, "dport", &err)?,
                csum: u16::from_str_radix(hex, 16)
                    .map_err(|_| err(format!("udp_csum={csum} is not hexadecimal")))?,
            }
        } else if let Some(seq) = fields.get("tcp_seq") {
            Transport::Tcp {
                sport: num(get("sport")?, "sport", &err)?,
                dport: num(get("dport")?, "dport", &err)?,
                seq: num(seq, "tcp_seq", &err)?,
            }
        } else {
            return Err(err(
                "no probe identity (icmp_id, udp_csum or tcp_seq)".into()
            ));
        };
        let rtt_ns = match get("rtt_ns")? {
            "-" => None,
            value => Some(num(value, "rtt_ns", &err)?),
        };
        let responder = match get("responder")? {
            "*" => None,
            value => Some(num(value, "responder", &err)?),
        };
        let sent = get("sent")?;
        let sent_ns = humantime::parse_rfc3339(sent)
            .map_err(|e| err(format!("sent={sent}: {e}")))?
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        probes.push(ToolProbe {
            key: WireKey { dst, transport },
            ttl,
            rtt_ns,
            responder,
            source: fields.get("source").map(|s| (*s).to_owned()),
            sent_ns: Some(sent_ns),
        });
    }
    Ok(probes)
}

/// What `mtr --raw` printed: probes sent and answered, by mtr's sequence.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MtrRaw {
    /// `x HOP SEQ`: a probe with TTL HOP+1 was sent.
    pub sent: BTreeMap<u16, u8>,
    /// `p HOP RTT_US SEQ`: it was answered after RTT_US microseconds.
    pub answered: BTreeMap<u16, u64>,
}

/// Parses `mtr --raw` output.
pub fn parse_mtr_raw(text: &str) -> Result<MtrRaw> {
    const TOOL: &str = "mtr";
    let mut raw = MtrRaw::default();
    for (n, line) in text.lines().enumerate() {
        let err = |problem: &str| output_error(TOOL, n + 1, line, problem);
        let tokens: Vec<&str> = line.split_whitespace().collect();
        match tokens.as_slice() {
            ["x", hop, seq] => {
                let hop: u8 = hop.parse().map_err(|_| err("bad hop"))?;
                let seq: u16 = seq.parse().map_err(|_| err("bad sequence"))?;
                raw.sent.insert(seq, hop);
            }
            ["p", _hop, rtt, seq] => {
                let rtt: u64 = rtt.parse().map_err(|_| err("bad RTT"))?;
                let seq: u16 = seq.parse().map_err(|_| err("bad sequence"))?;
                raw.answered.insert(seq, rtt);
            }
            // Host (h), DNS (d) and other lines carry no per-probe timing.
            _ => {}
        }
    }
    Ok(raw)
}

impl MtrRaw {
    /// The probes, given the target and the ICMP identifier mtr-packet used
    /// (its PID, read from the capture since mtr does not print it).
    pub fn probes(&self, dst: IpAddr, icmp_id: u16) -> Vec<ToolProbe> {
        self.sent
            .iter()
            .map(|(&seq, &hop)| ToolProbe {
                key: WireKey {
                    dst,
                    transport: Transport::Icmp { id: icmp_id, seq },
                },
                ttl: hop + 1,
                rtt_ns: self.answered.get(&seq).map(|us| us * 1_000),
                responder: None,
                source: None,
                sent_ns: None,
            })
            .collect()
    }
}

/// One hop of `mtr --report`.
#[derive(Debug, Clone, PartialEq)]
pub struct MtrReportHop {
    pub hop: u8,
    /// The responder mtr shows (`???` when none answered).
    pub host: String,
    pub loss_pct: f64,
    pub sent: u64,
}

impl MtrReportHop {
    /// Probes answered, from the sent count and the loss percentage.
    pub fn answered(&self) -> u64 {
        (self.sent as f64 * (100.0 - self.loss_pct) / 100.0).round() as u64
    }
}

/// Parses `mtr --report` output (`  1.|-- 198.18.0.2  0.0%  10  0.1 ...`).
pub fn parse_mtr_report(text: &str) -> Result<Vec<MtrReportHop>> {
    const TOOL: &str = "mtr --report";
    let mut hops = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let Some((hop, rest)) = line.split_once(".|--") else {
            continue;
        };
        let err = |problem: &str| output_error(TOOL, n + 1, line, problem);
        let tokens: Vec<&str> = rest.split_whitespace().collect();
        let [host, loss, sent, ..] = tokens.as_slice() else {
            return Err(err("too few columns"));
        };
        hops.push(MtrReportHop {
            hop: hop.trim().parse().map_err(|_| err("bad hop number"))?,
            host: (*host).to_owned(),
            loss_pct: loss
                .trim_end_matches('%')
                .parse()
                .map_err(|_| err("bad Loss%"))?,
            sent: sent.parse().map_err(|_| err("bad Snt"))?,
        });
    }
    Ok(hops)
}

/// Per-hop figures, in ns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HopFigures {
    pub sent: u64,
    pub answered: u64,
    pub best_ns: f64,
    pub avg_ns: f64,
    pub worst_ns: f64,
}

impl HopFigures {
    /// Best, average and worst of `rtts_ns`, `None` when empty.
    pub fn of(sent: u64, rtts_ns: &[u64]) -> Option<HopFigures> {
        let best = *rtts_ns.iter().min()?;
        let worst = *rtts_ns.iter().max()?;
        Some(HopFigures {
            sent,
            answered: rtts_ns.len() as u64,
            best_ns: best as f64,
            avg_ns: rtts_ns.iter().sum::<u64>() as f64 / rtts_ns.len() as f64,
            worst_ns: worst as f64,
        })
    }
}

/// Parses trippy's `--mode json` report into per-TTL figures.
pub fn parse_trippy_json(text: &str) -> Result<BTreeMap<u8, HopFigures>> {
    const TOOL: &str = "trippy";
    let err = |problem: String| output_error(TOOL, 0, "", problem);
    let report: serde_json::Value =
        serde_json::from_str(text).map_err(|e| err(format!("not JSON: {e}")))?;
    let hops = report["hops"]
        .as_array()
        .ok_or_else(|| err("no \"hops\" array".into()))?;
    let mut out = BTreeMap::new();
    for hop in hops {
        let int = |name: &str| {
            hop[name]
                .as_u64()
                .ok_or_else(|| err(format!("hop field {name} is not an integer: {hop}")))
        };
        // trippy prints its RTT figures as strings of milliseconds ("0.12").
        let ms = |name: &str| {
            hop[name]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .map(|ms| ms * 1e6)
                .ok_or_else(|| err(format!("hop field {name} is not a number of ms: {hop}")))
        };
        let ttl = u8::try_from(int("ttl")?).map_err(|_| err(format!("bad ttl in {hop}")))?;
        let answered = int("recv")?;
        if answered == 0 {
            continue;
        }
        out.insert(
            ttl,
            HopFigures {
                sent: int("sent")?,
                answered,
                best_ns: ms("best")?,
                avg_ns: ms("avg")?,
                worst_ns: ms("worst")?,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hopwatch_raw_lines_of_every_protocol_and_timeouts() {
        let text = "\
target=198.19.0.1 ttl=1 proto=icmp icmp_id=4096 icmp_seq=7 sent=2026-01-01T00:00:00.000000001Z responder=198.18.0.2 rtt_ns=81234 icmp_type=11 icmp_code=0 kind=time-exceeded source=ebpf
target=198.19.0.1 ttl=2 proto=udp sport=4097 dport=33434 udp_csum=0x00ff sent=2026-01-01T00:00:00Z responder=* rtt_ns=- source=kernel
target=198.19.0.1 ttl=3 proto=tcp sport=4098 dport=80 tcp_seq=268566528 sent=2026-01-01T00:00:00Z responder=198.19.0.1 rtt_ns=5 icmp_type=0 icmp_code=0 kind=tcp-rst source=userspace
";
        let probes = parse_hopwatch_raw(text).unwrap();
        assert_eq!(probes.len(), 3);
        assert_eq!(
            probes[0].key.transport,
            Transport::Icmp { id: 4096, seq: 7 }
        );
        assert_eq!(probes[0].rtt_ns, Some(81_234));
        assert_eq!(probes[0].source.as_deref(), Some("ebpf"));
        assert_eq!(probes[0].sent_ns.map(|ns| ns % 1_000), Some(1));
        assert_eq!(
            probes[1].key.transport,
            Transport::Udp {
                sport: 4097,
                dport: 33434,
                csum: 0xff
            }
        );
        assert_eq!((probes[1].rtt_ns, probes[1].responder), (None, None));
        assert_eq!(
            probes[2].key.transport,
            Transport::Tcp {
                sport: 4098,
                dport: 80,
                seq: 268_566_528
            }
        );
    }

    #[test]
    fn a_raw_line_without_identity_is_an_error_naming_the_line() {
        let err = parse_hopwatch_raw("target=198.19.0.1 ttl=1 rtt_ns=5 responder=*\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1") && err.contains("identity"), "{err}");
    }

    #[test]
    fn mtr_raw_pairs_sends_and_replies_by_sequence() {
        let raw = parse_mtr_raw("x 0 33000\nh 0 198.18.0.2\np 0 278 33000\nx 1 33001\n").unwrap();
        let probes = raw.probes("198.19.0.1".parse().unwrap(), 15828);
        assert_eq!(probes.len(), 2);
        assert_eq!((probes[0].ttl, probes[0].rtt_ns), (1, Some(278_000)));
        assert_eq!(
            probes[0].key.transport,
            Transport::Icmp {
                id: 15828,
                seq: 33000
            }
        );
        assert_eq!((probes[1].ttl, probes[1].rtt_ns), (2, None));
    }

    #[test]
    fn mtr_report_hops() {
        let text = "\
Start: 2026-11-22T03:49:05+0000
HOST: box                         Loss%   Snt   Last   Avg  Best  Wrst StDev
  1.|-- 198.18.0.2                 0.0%    10    0.1   0.1   0.1   0.1   0.0
  2.|-- 198.19.0.1                10.0%    10    0.2   0.2   0.1   0.3   0.0
";
        let hops = parse_mtr_report(text).unwrap();
        assert_eq!(hops.len(), 2);
        assert_eq!((hops[1].hop, hops[1].sent, hops[1].answered()), (2, 10, 9));
        assert_eq!(hops[0].host, "198.18.0.2");
    }

    #[test]
    fn trippy_json_hops_in_ns() {
        let text = r#"{"info":{"target":{"ip":"198.19.0.1","hostname":"x"}},"hops":[
            {"ttl":1,"hosts":[],"extensions":[],"loss_pct":"0.00","sent":200,"last":"0.08","recv":200,"avg":"0.07","best":"0.05","worst":"0.31","stddev":"0.01","jitter":"0.00","javg":"0.00","jmax":"0.00","jinta":"0.00","nat":null},
            {"ttl":2,"hosts":[],"extensions":[],"loss_pct":"100.00","sent":200,"last":"0.00","recv":0,"avg":"0.00","best":"0.00","worst":"0.00","stddev":"0.00","jitter":"0.00","javg":"0.00","jmax":"0.00","jinta":"0.00","nat":null}]}"#;
        let hops = parse_trippy_json(text).unwrap();
        assert_eq!(hops.len(), 1, "a hop without replies has no figures");
        let h = hops[&1];
        assert_eq!((h.sent, h.answered), (200, 200));
        assert!((h.best_ns - 50_000.0).abs() < 1.0 && (h.worst_ns - 310_000.0).abs() < 1.0);
    }

    #[test]
    fn hop_figures_of_samples() {
        let h = HopFigures::of(4, &[10, 30, 20]).unwrap();
        assert_eq!(
            (h.best_ns, h.avg_ns, h.worst_ns, h.answered),
            (10.0, 20.0, 30.0, 3)
        );
        assert!(HopFigures::of(1, &[]).is_none());
    }
}
