//! `ping` from inside a namespace, with its output parsed: replies with their RTT and
//! TTL, ICMP errors with their source (time-exceeded from routers), and the summary.
//! The lab's own tests use it, and so can later tests that need a quick check
//! independent of hopwatch's prober.

use std::{net::IpAddr, process::Command, time::Duration};

use crate::{
    error::{LabError, Result},
    netns::exec,
};

/// A ping to run; built with [`crate::Lab::ping`].
#[derive(Debug, Clone)]
pub struct Ping {
    ns: String,
    target: IpAddr,
    count: u32,
    interval: Duration,
    wait: Duration,
    ttl: Option<u8>,
    deadline: Option<Duration>,
}

/// One ICMP error ping reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingError {
    /// Who sent it.
    pub from: IpAddr,
    /// The echo sequence number it answers.
    pub seq: u32,
    /// ping's description, e.g. "Time to live exceeded".
    pub what: String,
}

/// The parsed result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PingReport {
    /// Echo requests sent.
    pub transmitted: u32,
    /// Echo replies received.
    pub received: u32,
    /// Round-trip time of each reply, in arrival order.
    pub rtts: Vec<Duration>,
    /// TTL (hop limit) of each reply as received.
    pub reply_ttls: Vec<u8>,
    /// ICMP errors (time-exceeded, unreachable) in arrival order.
    pub errors: Vec<PingError>,
}

impl PingReport {
    /// Fraction of requests without a reply (0.0 ..= 1.0).
    pub fn loss(&self) -> f64 {
        if self.transmitted == 0 {
            return 0.0;
        }
        1.0 - f64::from(self.received) / f64::from(self.transmitted)
    }

    /// Distinct sources of ICMP errors, in order of first appearance.
    pub fn error_sources(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = Vec::new();
        for e in &self.errors {
            if !out.contains(&e.from) {
                out.push(e.from);
            }
        }
        out
    }

    /// Mean RTT of the replies.
    pub fn mean_rtt(&self) -> Option<Duration> {
        (!self.rtts.is_empty()).then(|| self.rtts.iter().sum::<Duration>() / self.rtts.len() as u32)
    }

    /// Smallest RTT.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.rtts.iter().min().copied()
    }

    /// Largest RTT.
    pub fn max_rtt(&self) -> Option<Duration> {
        self.rtts.iter().max().copied()
    }

    /// Standard deviation of the RTTs.
    pub fn rtt_stddev(&self) -> Option<Duration> {
        let mean = self.mean_rtt()?.as_secs_f64();
        let var = self
            .rtts
            .iter()
            .map(|r| (r.as_secs_f64() - mean).powi(2))
            .sum::<f64>()
            / self.rtts.len() as f64;
        Some(Duration::from_secs_f64(var.sqrt()))
    }
}

impl Ping {
    /// One echo request from namespace `ns` to `target`, 1 s wait.
    pub fn new(ns: &str, target: IpAddr) -> Self {
        Self {
            ns: ns.to_owned(),
            target,
            count: 1,
            interval: Duration::from_millis(10),
            wait: Duration::from_secs(1),
            ttl: None,
            deadline: None,
        }
    }

    /// Number of echo requests (`-c`).
    #[must_use]
    pub fn count(mut self, n: u32) -> Self {
        self.count = n;
        self
    }

    /// Interval between requests (`-i`; below 200 ms needs root).
    #[must_use]
    pub fn interval(mut self, d: Duration) -> Self {
        self.interval = d;
        self
    }

    /// How long to wait for the last answer (`-W`).
    #[must_use]
    pub fn wait(mut self, d: Duration) -> Self {
        self.wait = d;
        self
    }

    /// TTL / hop limit of the requests (`-t`).
    #[must_use]
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Stop after this long whatever happened (`-w`).
    #[must_use]
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = Some(d);
        self
    }

    /// The command line this ping runs.
    pub fn command(&self) -> Command {
        let mut cmd = exec::command(&self.ns, "ping");
        cmd.arg(if self.target.is_ipv6() { "-6" } else { "-4" })
            .arg("-n")
            .args(["-c", &self.count.to_string()])
            .args(["-i", &format!("{:.3}", self.interval.as_secs_f64())])
            .args(["-W", &format!("{:.3}", self.wait.as_secs_f64())]);
        if let Some(ttl) = self.ttl {
            cmd.args(["-t", &ttl.to_string()]);
        }
        if let Some(d) = self.deadline {
            cmd.args(["-w", &format!("{}", d.as_secs_f64().ceil() as u64)]);
        }
        cmd.arg(self.target.to_string());
        cmd
    }

    /// Runs it and parses the output. "No reply" is a result, not an error; ping
    /// failing to run (exit status 2 and above) is an error.
    pub fn run(&self) -> Result<PingReport> {
        let mut cmd = self.command();
        let line = exec::describe(&cmd);
        let output = cmd.output().map_err(|source| LabError::Spawn {
            command: line.clone(),
            source,
        })?;
        match output.status.code() {
            Some(0 | 1) => {}
            _ => {
                return Err(LabError::CommandFailed {
                    command: line,
                    ns: Some(self.ns.clone()),
                    status: output.status,
                    stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                })
            }
        }
        parse(&String::from_utf8_lossy(&output.stdout)).map_err(|detail| {
            LabError::UnexpectedOutput {
                command: line,
                detail,
            }
        })
    }
}

/// Parses iputils ping output (`-n`).
fn parse(out: &str) -> std::result::Result<PingReport, String> {
    let mut report = PingReport::default();
    let mut summary = false;
    for line in out.lines() {
        if line.contains(" bytes from ") {
            let (ttl, time) = (field(line, "ttl="), field(line, "time="));
            if let (Some(ttl), Some(time)) = (ttl, time) {
                let ms: f64 = time.parse().map_err(|_| format!("bad time in `{line}`"))?;
                report.rtts.push(Duration::from_secs_f64(ms / 1000.0));
                report
                    .reply_ttls
                    .push(ttl.parse().map_err(|_| format!("bad ttl in `{line}`"))?);
            }
        } else if let Some(rest) = line.strip_prefix("From ") {
            let mut parts = rest.splitn(3, ' ');
            let from = parts.next().unwrap_or_default().trim_end_matches(':');
            let seq = parts.next().and_then(|s| s.strip_prefix("icmp_seq="));
            let (Ok(from), Some(seq)) = (from.parse(), seq) else {
                return Err(format!("bad error line `{line}`"));
            };
            report.errors.push(PingError {
                from,
                seq: seq.parse().map_err(|_| format!("bad seq in `{line}`"))?,
                what: parts.next().unwrap_or_default().to_owned(),
            });
        } else if line.contains("packets transmitted") {
            summary = true;
            let numbers: Vec<u32> = line
                .split(',')
                .filter_map(|part| part.split_whitespace().next()?.parse().ok())
                .collect();
            report.transmitted = *numbers.first().ok_or("no transmitted count")?;
            report.received = *numbers.get(1).ok_or("no received count")?;
        }
    }
    if summary {
        Ok(report)
    } else {
        Err(format!("no summary line in:\n{out}"))
    }
}

/// The value after `key` up to the next space, e.g. `ttl=` in `... ttl=61 time=...`.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    line[start..].split_whitespace().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies_errors_and_summary() {
        let out = "PING 198.19.0.1 (198.19.0.1) 56(84) bytes of data.\n\
            64 bytes from 198.19.0.1: icmp_seq=1 ttl=61 time=0.123 ms\n\
            From 198.18.1.2 icmp_seq=2 Time to live exceeded\n\
            From 2001:db8::2 icmp_seq=3 Time exceeded: Hop limit\n\
            \n--- 198.19.0.1 ping statistics ---\n\
            3 packets transmitted, 1 received, +2 errors, 66.6667% packet loss, time 2ms\n";
        let r = parse(out).unwrap();
        assert_eq!((r.transmitted, r.received), (3, 1));
        assert_eq!(r.rtts, [Duration::from_micros(123)]);
        assert_eq!(r.reply_ttls, [61]);
        assert_eq!(
            r.error_sources(),
            [
                "198.18.1.2".parse::<IpAddr>().unwrap(),
                "2001:db8::2".parse().unwrap()
            ]
        );
        assert_eq!(r.errors[1].what, "Time exceeded: Hop limit");
        assert!((r.loss() - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn missing_summary_is_an_error() {
        assert!(parse("ping: connect: Network is unreachable\n").is_err());
    }
}
