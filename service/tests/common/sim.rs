//! What the engine simulations share (no privileges): reading a probe's
//! identity back from its bytes as a router would quote it, answering it
//! through the correlator a moment later as the eBPF path would, and an
//! engine over such a transport. Each test's transport decides who answers.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hopwatch::probe::correlate::{Correlator, ReplyObservation, ReplyTiming};
use hopwatch::probe::parse::{Reply, ReplyKind};
use hopwatch::probe::transport::{OutgoingProbe, SendStamp};
use hopwatch::probe::{
    Engine, EngineParts, ProbeTransport, Protocol, SourceSelection, TimestampSource,
};
use hopwatch_probe_common::{ipproto, ProbeKey};

/// The identity of an IPv4 probe, read back from the transport bytes.
pub fn key_of(probe: &OutgoingProbe<'_>) -> ProbeKey {
    let b = probe.bytes;
    let be16 = |at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    let IpAddr::V4(dst) = probe.dst else {
        unreachable!("the simulations are IPv4")
    };
    match probe.protocol {
        Protocol::Icmp => ProbeKey::v4(dst.octets(), ipproto::ICMP, be16(4), u32::from(be16(6))),
        Protocol::Udp => ProbeKey::v4(dst.octets(), ipproto::UDP, be16(0), u32::from(be16(6))),
        Protocol::Tcp => ProbeKey::v4(
            dst.octets(),
            ipproto::TCP,
            be16(0),
            u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        ),
    }
}

/// A reply without extensions or quote, the responder's initial TTL 64.
pub fn reply(
    responder: IpAddr,
    kind: ReplyKind,
    key: ProbeKey,
    icmp_type: u8,
    icmp_code: u8,
) -> Reply {
    Reply {
        responder,
        kind,
        key,
        icmp_type,
        icmp_code,
        mpls: heapless::Vec::new(),
        mpls_incomplete: false,
        reply_ttl: Some(64),
        quote: None,
    }
}

/// Delivers `reply` after `after`, timed by the "kernel" at exactly `rtt_ns`.
pub fn answer(correlator: &Arc<Correlator>, reply: Reply, rtt_ns: u64, after: Duration) {
    let observation = ReplyObservation {
        reply,
        timing: ReplyTiming::Ebpf {
            tx_ns: 1_000_000,
            rx_ns: 1_000_000 + rtt_ns,
        },
        user_rx_mono_ns: 0,
    };
    let correlator = Arc::clone(correlator);
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        correlator.deliver(observation);
    });
}

/// What a simulated send returns: no kernel stamp (eBPF times the replies).
pub fn sent() -> SendStamp {
    SendStamp {
        user_mono_ns: 0,
        sent_at: SystemTime::now(),
        kernel_tx: None,
    }
}

/// An eBPF-timed engine over `transport`, its flows from 20000, its source
/// fixed so the simulation stays off the host's routing table.
pub fn engine(
    transport: Arc<dyn ProbeTransport>,
    correlator: Arc<Correlator>,
    source: Ipv4Addr,
) -> Engine {
    Engine::from_parts(EngineParts {
        transport,
        correlator,
        source: TimestampSource::Ebpf,
        flow_range: 20000..30000,
        max_probes_per_second: None,
        source_selection: SourceSelection {
            v4: Some(source),
            ..SourceSelection::default()
        },
    })
}
