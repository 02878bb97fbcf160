//! Domain values of the probe engine: TTLs, RTTs, timestamp sources and the
//! result every probe ends in.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::SystemTime;

use hopwatch_probe_common::ProbeKey;
use serde::{Deserialize, Serialize};

use super::parse::{MplsLabel, ReplyKind};
use super::quote::QuoteReading;
use super::wire::Protocol;

/// An IP time-to-live / hop limit. Never zero: a probe with TTL 0 never leaves the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Ttl(u8);

impl Ttl {
    pub const MAX: Ttl = Ttl(u8::MAX);
    /// The first hop.
    pub const MIN: Ttl = Ttl(1);

    /// `None` for 0.
    pub const fn new(value: u8) -> Option<Ttl> {
        if value == 0 {
            None
        } else {
            Some(Ttl(value))
        }
    }

    pub const fn get(self) -> u8 {
        self.0
    }

    /// This TTL's place in a list kept per TTL from TTL 1 on (0 for TTL 1).
    pub const fn index(self) -> usize {
        self.0 as usize - 1
    }
}

impl TryFrom<u8> for Ttl {
    type Error = ZeroTtl;
    fn try_from(value: u8) -> Result<Self, Self::Error> {
        Ttl::new(value).ok_or(ZeroTtl)
    }
}

impl From<Ttl> for u8 {
    fn from(ttl: Ttl) -> u8 {
        ttl.0
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The error for a TTL of zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a TTL must be between 1 and 255, not 0")]
pub struct ZeroTtl;

/// A round-trip time in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Rtt(u64);

impl Rtt {
    pub const fn from_nanos(ns: u64) -> Rtt {
        Rtt(ns)
    }
    pub const fn as_nanos(self) -> u64 {
        self.0
    }
    /// Milliseconds as a float, the unit mtr and SmokePing users read.
    pub fn as_millis_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }
}

/// Where a result's timestamps came from, best first. Recorded on every result
/// and shown to the user: hopwatch never degrades silently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum TimestampSource {
    /// eBPF at TC egress and ingress: both stamps taken in the kernel, next to the wire.
    Ebpf,
    /// SO_TIMESTAMPING software stamps from the kernel's transmit and receive paths.
    Kernel,
    /// The userspace clock around `sendmsg` and `recvmsg`; includes scheduler delay.
    Userspace,
}

impl TimestampSource {
    pub const fn as_str(self) -> &'static str {
        match self {
            TimestampSource::Ebpf => "ebpf",
            TimestampSource::Kernel => "kernel",
            TimestampSource::Userspace => "userspace",
        }
    }
}

impl fmt::Display for TimestampSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which timestamp source the engine should use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimestampPreference {
    /// eBPF, else kernel software stamps, else the userspace clock; the choice is logged.
    #[default]
    Auto,
    /// eBPF or fail.
    Ebpf,
    /// Skip eBPF: kernel software stamps (SO_TIMESTAMPING), else fail.
    Kernel,
    /// The userspace clock only.
    Userspace,
}

impl FromStr for TimestampPreference {
    type Err = UnknownTimestampPreference;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "ebpf" => Ok(Self::Ebpf),
            "kernel" => Ok(Self::Kernel),
            "userspace" => Ok(Self::Userspace),
            other => Err(UnknownTimestampPreference(other.to_owned())),
        }
    }
}

/// The error for an unknown `--timestamps` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown timestamp source {0:?}: expected auto, ebpf, kernel or userspace")]
pub struct UnknownTimestampPreference(pub String);

/// A reply that answered a probe.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Answer {
    /// Who answered: a router on the path, or the target.
    pub responder: IpAddr,
    pub kind: ReplyKind,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub rtt: Rtt,
    /// RFC 4950 MPLS label stack quoted by the router, outermost first.
    pub mpls: heapless::Vec<MplsLabel, 8>,
    /// TTL (hop limit) left in the reply's IP header, when the receive path
    /// saw the header (eBPF, and raw IPv4 sockets; raw IPv6 sockets do not
    /// pass it).
    pub reply_ttl: Option<u8>,
    /// For ICMP errors: what the quoted header shows rewritten on the way and
    /// the label stack, for the daemon's path facts. `None` for echo replies
    /// and TCP answers, which quote nothing.
    #[serde(skip)]
    pub quote: Option<QuoteReading>,
}

/// How a probe ended. A probe is sent, then answered or timed out, exactly once.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Answered(Answer),
    TimedOut,
}

/// The result of one probe.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProbeResult {
    pub target: IpAddr,
    pub ttl: Ttl,
    pub protocol: Protocol,
    /// The probe's identity on the wire (ICMP id/seq or ports and sequence).
    #[serde(skip)]
    pub key: ProbeKey,
    /// Destination port for UDP and TCP probes.
    pub dst_port: u16,
    /// Wall-clock time the probe was handed to the kernel.
    pub sent_at: SystemTime,
    pub outcome: Outcome,
    pub source: TimestampSource,
}

impl ProbeResult {
    pub fn answer(&self) -> Option<&Answer> {
        match &self.outcome {
            Outcome::Answered(answer) => Some(answer),
            Outcome::TimedOut => None,
        }
    }

    /// True when the reply came from the target itself (echo reply, TCP, port unreachable).
    pub fn reached_destination(&self) -> bool {
        self.answer().is_some_and(|a| a.kind.reached_destination())
    }
}
