//! Turns the eBPF ingress program's reply events into reply observations.
//!
//! The kernel already matched the reply to its probe and timed it; userspace
//! parses the packet snapshot for what the kernel does not extract (the reply
//! kind, RFC 4950 MPLS labels), trusting the kernel's key and responder.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hopwatch_probe_common::{family, ReplyEvent};

use super::clock;
use super::correlate::{ReplyObservation, ReplyTiming};
use super::parse::parse_ip_packet;

/// The observation for one event, or `None` when its snapshot is not a reply we
/// can classify (which the kernel's own parser should have ruled out).
pub fn observation(event: &ReplyEvent) -> Option<ReplyObservation> {
    let user_rx_mono_ns = clock::monotonic_ns();
    let snap_len = (event.snap_len as usize).min(event.packet.len());
    let mut reply = match parse_ip_packet(&event.packet[..snap_len]) {
        Ok(reply) => reply,
        Err(err) => {
            tracing::debug!(error = %err, "eBPF reply snapshot did not parse; dropping it");
            return None;
        }
    };
    // The kernel matched on the full packet; the snapshot may be truncated.
    reply.key = event.key;
    reply.responder = address(event.key.family, &event.responder);
    Some(ReplyObservation {
        reply,
        timing: ReplyTiming::Ebpf {
            tx_ns: event.tx_ns,
            rx_ns: event.rx_ns,
        },
        user_rx_mono_ns,
    })
}

/// An address in the kernel's layout: IPv4 in the first four bytes.
pub fn address(family_tag: u8, bytes: &[u8; 16]) -> IpAddr {
    if family_tag == family::IPV4 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    }
}
