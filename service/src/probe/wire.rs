//! Probe packets on the wire: builds the transport-layer bytes of ICMP echo, UDP and
//! TCP SYN probes for raw sockets, and the [`ProbeKey`] each probe carries.
//!
//! The kernel adds the IP header (IPv4 raw sockets without `IP_HDRINCL`, IPv6 raw
//! sockets) and the caller sets the TTL or hop limit per packet. Probes are flow-stable
//! in the style of Paris traceroute: everything an ECMP router may hash on (addresses,
//! protocol, ports, and the first four bytes of an ICMP header, checksum included) stays
//! the same for every probe of a flow. The per-probe identity lives where routers do not
//! look: the ICMP echo sequence, the UDP checksum, or the TCP sequence number. Two
//! payload bytes right after the transport header (the *steering word*) make the ICMP
//! checksum constant and the UDP checksum equal to the wanted value.
//!
//! This file depends only on external crates, because the fuzz crate (`service/fuzz`)
//! compiles it directly together with `parse.rs`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use hopwatch_probe_common::{ipproto, ProbeKey};
use serde::{Deserialize, Serialize};

/// Bytes of an IPv4 header without options, as the kernel adds it to our probes.
pub const IPV4_HEADER_LEN: usize = 20;
/// Bytes of an IPv6 header; our probes carry no extension headers.
pub const IPV6_HEADER_LEN: usize = 40;
/// ICMP echo and UDP headers are both 8 bytes.
const ICMP_ECHO_HEADER_LEN: usize = 8;
const UDP_HEADER_LEN: usize = 8;
/// TCP header with one option, MSS (4 bytes), like a minimal real SYN.
pub const TCP_SYN_LEN: usize = 24;
/// The steering word: two payload bytes that adjust the checksum.
const STEERING_LEN: usize = 2;
/// Largest IP packet `packet_size` may ask for. IPv4's total-length field caps IPv4
/// here; IPv6 could go 40 bytes further, but one limit for both keeps configs portable.
pub const MAX_PACKET_SIZE: usize = 65535;

/// Payload filler, so probes are easy to spot in a packet capture.
pub const PAYLOAD_PATTERN: &[u8; 8] = b"hopwatch";

/// ICMP echo request types.
const ICMPV4_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;

/// TCP flag bits (byte 13 of the header).
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;
/// Window of our SYNs: Linux's default initial window, so the SYN looks ordinary.
const TCP_SYN_WINDOW: u16 = 64240;
/// MSS we announce: an Ethernet MTU minus IP and TCP headers.
const TCP_MSS_V4: u16 = 1460;
const TCP_MSS_V6: u16 = 1440;

/// The transport protocol of a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// ICMP (IPv4) or ICMPv6 echo request.
    Icmp,
    /// UDP datagram to a (closed) destination port.
    Udp,
    /// TCP SYN to a destination port.
    Tcp,
}

impl Protocol {
    /// Every protocol, in a stable order.
    pub const ALL: [Protocol; 3] = [Protocol::Icmp, Protocol::Udp, Protocol::Tcp];

    /// The IP protocol number (IPv4) or next header (IPv6) of this protocol's probes.
    pub fn ip_proto(self, ipv6: bool) -> u8 {
        match (self, ipv6) {
            (Protocol::Icmp, false) => ipproto::ICMP,
            (Protocol::Icmp, true) => ipproto::ICMPV6,
            (Protocol::Udp, _) => ipproto::UDP,
            (Protocol::Tcp, _) => ipproto::TCP,
        }
    }

    /// The protocol whose probes carry IP protocol number `proto` (as in [`ProbeKey::proto`]).
    pub fn from_ip_proto(proto: u8) -> Option<Protocol> {
        match proto {
            ipproto::ICMP | ipproto::ICMPV6 => Some(Protocol::Icmp),
            ipproto::UDP => Some(Protocol::Udp),
            ipproto::TCP => Some(Protocol::Tcp),
            _ => None,
        }
    }

    /// Smallest `packet_size` (whole IP packet) a probe of this protocol can have.
    ///
    /// ICMP and UDP need their header plus the two steering bytes. A TCP SYN has a
    /// fixed size (no payload), which this returns.
    pub fn min_packet_size(self, ipv6: bool) -> usize {
        let ip = if ipv6 {
            IPV6_HEADER_LEN
        } else {
            IPV4_HEADER_LEN
        };
        ip + match self {
            Protocol::Icmp => ICMP_ECHO_HEADER_LEN + STEERING_LEN,
            Protocol::Udp => UDP_HEADER_LEN + STEERING_LEN,
            Protocol::Tcp => TCP_SYN_LEN,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Icmp => "icmp",
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
        })
    }
}

/// A protocol name that is not `icmp`, `udp` or `tcp`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown probe protocol {given:?}: expected icmp, udp or tcp")]
pub struct UnknownProtocol {
    /// What was given.
    pub given: String,
}

impl FromStr for Protocol {
    type Err = UnknownProtocol;

    /// Case-insensitive, so `ICMP` from a shell works as well as `icmp` from a config.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Protocol::ALL
            .into_iter()
            .find(|p| s.eq_ignore_ascii_case(&p.to_string()))
            .ok_or_else(|| UnknownProtocol {
                given: s.to_owned(),
            })
    }
}

/// Why a probe cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("packet size {size} is too small for a {family} {protocol} probe: the minimum is {min} bytes (IP and {protocol} headers plus 2 payload bytes)")]
    PacketTooSmall {
        protocol: Protocol,
        family: &'static str,
        size: usize,
        min: usize,
    },
    #[error("packet size {size} is too large for a {protocol} probe: the maximum is {max} bytes")]
    PacketTooLarge {
        protocol: Protocol,
        size: usize,
        max: usize,
    },
    #[error("source address {src} and destination {dst} are of different IP versions")]
    FamilyMismatch { src: IpAddr, dst: IpAddr },
    #[error("a {protocol} probe to {dst} needs a specified source address (it is part of the checksum), not {src}")]
    UnspecifiedSource {
        protocol: Protocol,
        src: IpAddr,
        dst: IpAddr,
    },
    #[error("UDP probe sequence {seq} would put {checksum:#06x} in the UDP checksum, which UDP reserves (0 means no checksum, 0xffff is a computed 0): skip sequences whose low 16 bits are 0 or 0xffff")]
    ReservedUdpChecksum { seq: u32, checksum: u16 },
}

/// One probe, as it goes on the wire.
///
/// `flow` is the target's flow identifier (ICMP echo identifier or source port); it and
/// `dst_port` stay constant for a target, `seq` changes per probe. See [`ProbeKey`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbePacket {
    pub protocol: Protocol,
    /// The source address the kernel will put in the IP header. It is part of the
    /// UDP, TCP and ICMPv6 checksums, so it must be the real one (bind the socket to it,
    /// or learn it by `connect`ing a UDP socket to `dst`). Only ICMP over IPv4 may leave
    /// it unspecified (`0.0.0.0`).
    pub src: IpAddr,
    pub dst: IpAddr,
    /// ICMP echo identifier, or UDP/TCP source port.
    pub flow: u16,
    /// UDP/TCP destination port; unused by ICMP.
    pub dst_port: u16,
    /// Per-probe identity. ICMP sends `seq as u16` as its echo sequence; UDP makes its
    /// checksum `seq as u16`, so the caller must skip values whose low 16 bits are 0 or
    /// 0xffff; TCP sends all 32 bits as its sequence number. [`ProbePacket::key`] carries
    /// the value that is actually on the wire.
    pub seq: u32,
    /// Size of the whole IP packet, headers included, as `mtr -s` and `traceroute`
    /// count it. ICMP and UDP fill the rest with payload. A TCP SYN carries no payload
    /// (like mtr's and tcptraceroute's), so TCP ignores this; see [`ProbePacket::ip_len`].
    pub packet_size: usize,
}

impl ProbePacket {
    fn ipv6(&self) -> bool {
        self.dst.is_ipv6()
    }

    fn ip_header_len(&self) -> usize {
        if self.ipv6() {
            IPV6_HEADER_LEN
        } else {
            IPV4_HEADER_LEN
        }
    }

    /// Size of the IP packet that goes on the wire: `packet_size`, or for TCP the
    /// fixed SYN size.
    pub fn ip_len(&self) -> usize {
        match self.protocol {
            Protocol::Tcp => self.ip_header_len() + TCP_SYN_LEN,
            Protocol::Icmp | Protocol::Udp => self.packet_size,
        }
    }

    /// The sequence as it appears on the wire (see [`ProbePacket::seq`]).
    fn wire_seq(&self) -> u32 {
        match self.protocol {
            Protocol::Icmp | Protocol::Udp => u32::from(self.seq as u16),
            Protocol::Tcp => self.seq,
        }
    }

    /// Checks everything [`ProbePacket::build`] checks, without building.
    pub fn validate(&self) -> Result<(), WireError> {
        let (src, dst, protocol) = (self.src, self.dst, self.protocol);
        if src.is_ipv6() != dst.is_ipv6() {
            return Err(WireError::FamilyMismatch { src, dst });
        }
        // Only ICMPv4 has no pseudo-header in its checksum.
        let needs_src = self.ipv6() || protocol != Protocol::Icmp;
        if needs_src && src.is_unspecified() {
            return Err(WireError::UnspecifiedSource { protocol, src, dst });
        }
        if protocol != Protocol::Tcp {
            let min = protocol.min_packet_size(self.ipv6());
            let size = self.packet_size;
            if size < min {
                let family = if self.ipv6() { "IPv6" } else { "IPv4" };
                return Err(WireError::PacketTooSmall {
                    protocol,
                    family,
                    size,
                    min,
                });
            }
            if size > MAX_PACKET_SIZE {
                return Err(WireError::PacketTooLarge {
                    protocol,
                    size,
                    max: MAX_PACKET_SIZE,
                });
            }
        }
        if protocol == Protocol::Udp {
            let checksum = self.seq as u16;
            if checksum == 0 || checksum == 0xffff {
                return Err(WireError::ReservedUdpChecksum {
                    seq: self.seq,
                    checksum,
                });
            }
        }
        Ok(())
    }

    /// Writes the probe's transport-layer bytes (ICMP/UDP/TCP header and payload, no IP
    /// header) into `buf`, replacing its contents.
    pub fn build(&self, buf: &mut Vec<u8>) -> Result<(), WireError> {
        self.validate()?;
        buf.clear();
        match self.protocol {
            Protocol::Icmp => self.build_icmp(buf),
            Protocol::Udp => self.build_udp(buf),
            Protocol::Tcp => self.build_tcp(buf),
        }
        Ok(())
    }

    /// The identity this probe carries on the wire, as the kernel and the reply parser see it.
    pub fn key(&self) -> ProbeKey {
        let proto = self.protocol.ip_proto(self.ipv6());
        let seq = self.wire_seq();
        match self.dst {
            IpAddr::V4(dst) => ProbeKey::v4(dst.octets(), proto, self.flow, seq),
            IpAddr::V6(dst) => ProbeKey::v6(dst.octets(), proto, self.flow, seq),
        }
    }

    /// Header and payload with zeroed checksum and steering word.
    fn header_and_payload(&self, buf: &mut Vec<u8>, header: [u8; 8]) {
        let transport_len = self.packet_size - self.ip_header_len();
        buf.extend_from_slice(&header);
        buf.extend_from_slice(&[0; STEERING_LEN]);
        let filler = transport_len - header.len() - STEERING_LEN;
        buf.extend(PAYLOAD_PATTERN.iter().copied().cycle().take(filler));
    }

    fn build_icmp(&self, buf: &mut Vec<u8>) {
        let (ty, v6) = if self.ipv6() {
            (ICMPV6_ECHO_REQUEST, true)
        } else {
            (ICMPV4_ECHO_REQUEST, false)
        };
        let [id_hi, id_lo] = self.flow.to_be_bytes();
        let seq = self.seq as u16;
        let [seq_hi, seq_lo] = seq.to_be_bytes();
        self.header_and_payload(buf, [ty, 0, 0, 0, id_hi, id_lo, seq_hi, seq_lo]);
        // seq + !seq = 0xffff, one's-complement zero: the sum over the message, and so
        // the checksum, is the same as for sequence 0 whatever the sequence. ICMPv6's
        // pseudo-header is constant per flow, so this holds for the true ICMPv6
        // checksum, which the kernel computes itself on raw ICMPv6 sockets.
        put_u16(buf, ICMP_ECHO_HEADER_LEN, !seq);
        let pseudo = if v6 {
            pseudo_header_sum(self.src, self.dst, ipproto::ICMPV6, buf.len())
        } else {
            0
        };
        let checksum = !fold(sum_words(buf, pseudo));
        put_u16(buf, 2, checksum);
    }

    fn build_udp(&self, buf: &mut Vec<u8>) {
        let [sp_hi, sp_lo] = self.flow.to_be_bytes();
        let [dp_hi, dp_lo] = self.dst_port.to_be_bytes();
        let len = self.packet_size - self.ip_header_len();
        // UDP's length field is 16 bits; validate() capped packet_size at 65535.
        let [len_hi, len_lo] = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
        self.header_and_payload(buf, [sp_hi, sp_lo, dp_hi, dp_lo, len_hi, len_lo, 0, 0]);
        let partial = sum_words(
            buf,
            pseudo_header_sum(self.src, self.dst, ipproto::UDP, len),
        );
        // The checksum is !(folded sum); we want it to be `seq`, so the folded sum must
        // be !seq, which validate() keeps away from 0 (a non-empty sum never folds to 0).
        let wanted = self.seq as u16;
        put_u16(buf, UDP_HEADER_LEN, steer(fold(partial), !wanted));
        put_u16(buf, 6, wanted);
    }

    fn build_tcp(&self, buf: &mut Vec<u8>) {
        let mss = if self.ipv6() { TCP_MSS_V6 } else { TCP_MSS_V4 };
        buf.extend_from_slice(&self.flow.to_be_bytes());
        buf.extend_from_slice(&self.dst_port.to_be_bytes());
        buf.extend_from_slice(&self.seq.to_be_bytes());
        buf.extend_from_slice(&0u32.to_be_bytes()); // acknowledgment number
        buf.push(((TCP_SYN_LEN / 4) as u8) << 4); // data offset in 32-bit words
        buf.push(TCP_SYN);
        buf.extend_from_slice(&TCP_SYN_WINDOW.to_be_bytes());
        buf.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        buf.extend_from_slice(&[2, 4]); // option kind 2 (MSS), length 4
        buf.extend_from_slice(&mss.to_be_bytes());
        let pseudo = pseudo_header_sum(self.src, self.dst, ipproto::TCP, buf.len());
        let checksum = !fold(sum_words(buf, pseudo));
        put_u16(buf, 16, checksum);
    }
}

/// The probe destination a key names, or `None` for an unknown family tag.
pub fn key_destination(key: &ProbeKey) -> Option<IpAddr> {
    match key.family {
        hopwatch_probe_common::family::IPV4 => {
            let [a, b, c, d, ..] = key.dst;
            Some(IpAddr::from([a, b, c, d]))
        }
        hopwatch_probe_common::family::IPV6 => Some(IpAddr::from(key.dst)),
        _ => None,
    }
}

/// Writes a big-endian u16 at `at`; callers write only inside the buffer they just built.
fn put_u16(buf: &mut [u8], at: usize, value: u16) {
    if let Some(slot) = buf.get_mut(at..at + 2) {
        slot.copy_from_slice(&value.to_be_bytes());
    }
}

/// Adds `data`, as big-endian 16-bit words (an odd last byte padded with zero), to the
/// unfolded one's-complement sum `acc`. A u64 cannot overflow for any IP packet.
pub(crate) fn sum_words(data: &[u8], acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    let mut sum = acc;
    for pair in &mut chunks {
        sum += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    sum
}

/// Folds carries back in (end-around carry). The result is 0 only if every word was 0.
pub(crate) fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The word to add to a message whose folded sum is `partial` so its folded sum becomes
/// `target` (non-zero): one's-complement subtraction, `target + !partial`.
fn steer(partial: u16, target: u16) -> u16 {
    fold(u64::from(target) + u64::from(!partial))
}

/// Sum of the IPv4 or IPv6 pseudo-header that UDP, TCP and ICMPv6 checksums cover.
fn pseudo_header_sum(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u64 {
    let addrs = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => sum_words(&d.octets(), sum_words(&s.octets(), 0)),
        (IpAddr::V6(s), IpAddr::V6(d)) => sum_words(&d.octets(), sum_words(&s.octets(), 0)),
        // validate() rejects mixed families before any checksum is computed.
        _ => 0,
    };
    // IPv4: zero, protocol, 16-bit length; IPv6: 32-bit length, zeros, next header.
    // As words both add up to protocol + length.
    addrs + u64::from(proto) + len as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use hopwatch_probe_common::family;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SRC4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const DST4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
    const SRC6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    const DST6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 1, 0, 0, 0xabcd, 0x42));

    fn probe(protocol: Protocol, src: IpAddr, dst: IpAddr) -> ProbePacket {
        ProbePacket {
            protocol,
            src,
            dst,
            flow: 33000,
            dst_port: 33434,
            seq: 1,
            packet_size: 64,
        }
    }

    fn built(p: &ProbePacket) -> Vec<u8> {
        let mut buf = Vec::new();
        p.build(&mut buf).expect("valid probe");
        buf
    }

    /// RFC 1071 checksum written independently of the code under test: a plain u32
    /// accumulator over byte pairs, folded by modulo arithmetic.
    fn reference_sum(chunks: &[&[u8]]) -> u16 {
        let bytes: Vec<u8> = chunks.concat();
        let mut sum: u32 = 0;
        for i in (0..bytes.len()).step_by(2) {
            let hi = u32::from(bytes[i]) << 8;
            let lo = bytes.get(i + 1).copied().map_or(0, u32::from);
            sum += hi | lo;
        }
        // End-around carry is addition modulo 0xffff, with 0xffff standing for zero
        // when anything non-zero was added.
        let r = sum % 0xffff;
        if r == 0 && sum != 0 {
            0xffff
        } else {
            r as u16
        }
    }

    fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> Vec<u8> {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut p = [s.octets(), d.octets()].concat();
                p.extend_from_slice(&[0, proto]);
                p.extend_from_slice(&(len as u16).to_be_bytes());
                p
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut p = [s.octets(), d.octets()].concat();
                p.extend_from_slice(&(len as u32).to_be_bytes());
                p.extend_from_slice(&[0, 0, 0, proto]);
                p
            }
            _ => panic!("mixed families"),
        }
    }

    /// A message verifies when the sum over it, checksum included, is all ones.
    fn verifies(p: &ProbePacket, bytes: &[u8]) -> bool {
        let proto = p.protocol.ip_proto(p.dst.is_ipv6());
        let sum = if proto == ipproto::ICMP {
            reference_sum(&[bytes])
        } else {
            reference_sum(&[&pseudo(p.src, p.dst, proto, bytes.len()), bytes])
        };
        sum == 0xffff
    }

    fn be16(b: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    #[test]
    fn protocol_names_round_trip() {
        for p in Protocol::ALL {
            assert_eq!(p.to_string().parse::<Protocol>(), Ok(p));
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{p}\""));
            assert_eq!(serde_json::from_str::<Protocol>(&json).unwrap(), p);
        }
        assert_eq!("TCP".parse::<Protocol>(), Ok(Protocol::Tcp));
        let err = "sctp".parse::<Protocol>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown probe protocol \"sctp\": expected icmp, udp or tcp"
        );
    }

    #[test]
    fn ip_proto_maps_both_ways() {
        for p in Protocol::ALL {
            for v6 in [false, true] {
                assert_eq!(Protocol::from_ip_proto(p.ip_proto(v6)), Some(p));
            }
        }
        assert_eq!(Protocol::Icmp.ip_proto(true), ipproto::ICMPV6);
        assert_eq!(Protocol::from_ip_proto(47), None);
    }

    #[test]
    fn icmp_echo_layout_and_checksum() {
        for (src, dst, ty) in [(SRC4, DST4, 8), (SRC6, DST6, 128)] {
            let mut p = probe(Protocol::Icmp, src, dst);
            p.seq = 0x1_0203; // only the low 16 bits go on the wire
            let b = built(&p);
            assert_eq!(b.len(), 64 - p.ip_header_len());
            assert_eq!((b[0], b[1]), (ty, 0));
            assert_eq!(be16(&b, 4), 33000);
            assert_eq!(be16(&b, 6), 0x0203);
            assert!(verifies(&p, &b), "{dst}: checksum does not verify");
            assert_eq!(&b[10..18], b"hopwatch");
        }
    }

    #[test]
    fn icmp_checksum_is_constant_across_every_sequence() {
        for (src, dst) in [(SRC4, DST4), (SRC6, DST6)] {
            let mut p = probe(Protocol::Icmp, src, dst);
            let mut buf = Vec::new();
            let mut first = None;
            for seq in 0..=u32::from(u16::MAX) {
                p.seq = seq;
                p.build(&mut buf).unwrap();
                let checksum = be16(&buf, 2);
                assert_eq!(*first.get_or_insert(checksum), checksum, "{dst} seq {seq}");
                if seq % 4099 == 0 {
                    assert!(verifies(&p, &buf), "{dst} seq {seq}");
                }
            }
        }
    }

    #[test]
    fn icmpv4_without_source_address_is_fine() {
        let p = probe(Protocol::Icmp, IpAddr::V4(Ipv4Addr::UNSPECIFIED), DST4);
        assert!(verifies(&p, &built(&p)));
    }

    #[test]
    fn udp_checksum_is_the_requested_id_for_every_sequence() {
        for (src, dst) in [(SRC4, DST4), (SRC6, DST6)] {
            // Odd and even payload lengths: an odd tail byte is padded in the checksum.
            for size in [64, 65, 1500] {
                let mut p = probe(Protocol::Udp, src, dst);
                p.packet_size = size;
                let mut buf = Vec::new();
                // Every sequence for small packets; a sample for the big one (debug builds are slow).
                let step = if size > 100 { 61 } else { 1 };
                for seq in (1..0xffff_u32).step_by(step) {
                    p.seq = seq;
                    p.build(&mut buf).unwrap();
                    assert_eq!(be16(&buf, 6), seq as u16, "{dst} size {size}");
                    if size == 65 || seq % 997 == 0 {
                        assert!(verifies(&p, &buf), "{dst} size {size} seq {seq}");
                    }
                }
                assert_eq!(be16(&buf, 0), 33000);
                assert_eq!(be16(&buf, 2), 33434);
                assert_eq!(usize::from(be16(&buf, 4)), buf.len());
                assert_eq!(&buf[10..18], b"hopwatch");
            }
        }
    }

    #[test]
    fn udp_rejects_reserved_checksums() {
        for seq in [0, 0xffff, 0x1_0000, 0x7_ffff] {
            let mut p = probe(Protocol::Udp, SRC4, DST4);
            p.seq = seq;
            let err = p.build(&mut Vec::new()).unwrap_err();
            assert!(
                matches!(err, WireError::ReservedUdpChecksum { .. }),
                "{seq}: {err}"
            );
        }
    }

    #[test]
    fn tcp_syn_layout_and_checksum() {
        for (src, dst, mss) in [(SRC4, DST4, 1460), (SRC6, DST6, 1440)] {
            let mut p = probe(Protocol::Tcp, src, dst);
            p.seq = 0xdead_beef;
            p.packet_size = 1000; // ignored: a SYN has no payload
            let b = built(&p);
            assert_eq!(b.len(), 24);
            assert_eq!(p.ip_len(), p.ip_header_len() + 24);
            assert_eq!(be16(&b, 0), 33000);
            assert_eq!(be16(&b, 2), 33434);
            assert_eq!(u32::from_be_bytes([b[4], b[5], b[6], b[7]]), 0xdead_beef);
            assert_eq!(&b[8..12], &[0; 4]);
            assert_eq!(b[12] >> 4, 6, "data offset");
            assert_eq!(b[13], TCP_SYN);
            assert_eq!(be16(&b, 14), 64240);
            assert_eq!(&b[20..22], &[2, 4]);
            assert_eq!(be16(&b, 22), mss);
            assert!(verifies(&p, &b));
        }
    }

    #[test]
    fn sizes_are_whole_ip_packets() {
        for (src, dst, ip) in [(SRC4, DST4, 20), (SRC6, DST6, 40)] {
            for protocol in [Protocol::Icmp, Protocol::Udp] {
                let min = protocol.min_packet_size(dst.is_ipv6());
                assert_eq!(min, ip + 10);
                for size in [min, min + 1, 100, 1500, MAX_PACKET_SIZE] {
                    let mut p = probe(protocol, src, dst);
                    p.packet_size = size;
                    let b = built(&p);
                    assert_eq!(b.len() + ip, size);
                    assert_eq!(p.ip_len(), size);
                    assert!(verifies(&p, &b), "{protocol} {dst} {size}");
                }
                let mut p = probe(protocol, src, dst);
                p.packet_size = min - 1;
                let err = p.validate().unwrap_err();
                assert!(matches!(err, WireError::PacketTooSmall { size, .. } if size == min - 1));
                assert!(
                    err.to_string()
                        .contains(&format!("packet size {}", min - 1)),
                    "{err}"
                );
                p.packet_size = MAX_PACKET_SIZE + 1;
                let err = p.validate().unwrap_err();
                assert!(
                    matches!(err, WireError::PacketTooLarge { size: 65536, .. }),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn addresses_are_validated() {
        let p = probe(Protocol::Udp, SRC6, DST4);
        assert!(matches!(
            p.validate(),
            Err(WireError::FamilyMismatch { .. })
        ));
        for (protocol, unspec, dst) in [
            (Protocol::Udp, IpAddr::V4(Ipv4Addr::UNSPECIFIED), DST4),
            (Protocol::Tcp, IpAddr::V4(Ipv4Addr::UNSPECIFIED), DST4),
            (Protocol::Icmp, IpAddr::V6(Ipv6Addr::UNSPECIFIED), DST6),
        ] {
            let err = probe(protocol, unspec, dst).validate().unwrap_err();
            assert!(matches!(err, WireError::UnspecifiedSource { .. }), "{err}");
        }
    }

    #[test]
    fn key_matches_what_the_packet_carries() {
        for (src, dst) in [(SRC4, DST4), (SRC6, DST6)] {
            for protocol in Protocol::ALL {
                let mut p = probe(protocol, src, dst);
                p.seq = 0x0004_1234;
                let b = built(&p);
                let key = p.key();
                let (fam, addr) = match dst {
                    IpAddr::V4(a) => (family::IPV4, [&a.octets()[..], &[0; 12]].concat()),
                    IpAddr::V6(a) => (family::IPV6, a.octets().to_vec()),
                };
                assert_eq!(key.family, fam);
                assert_eq!(&key.dst[..], &addr[..]);
                assert_eq!(key_destination(&key), Some(dst));
                assert_eq!(key.proto, protocol.ip_proto(dst.is_ipv6()));
                let (flow, seq) = match protocol {
                    Protocol::Icmp => (be16(&b, 4), u32::from(be16(&b, 6))),
                    Protocol::Udp => (be16(&b, 0), u32::from(be16(&b, 6))),
                    Protocol::Tcp => (be16(&b, 0), u32::from_be_bytes([b[4], b[5], b[6], b[7]])),
                };
                assert_eq!((key.flow, key.seq), (flow, seq), "{protocol} {dst}");
                let expect = if protocol == Protocol::Tcp {
                    0x0004_1234
                } else {
                    0x1234
                };
                assert_eq!(key.seq, expect);
            }
        }
    }

    #[test]
    fn build_replaces_buffer_contents() {
        let mut buf = vec![0xaa; 3000];
        probe(Protocol::Icmp, SRC4, DST4).build(&mut buf).unwrap();
        assert_eq!(buf.len(), 44);
    }

    #[test]
    fn steer_reaches_every_target() {
        for partial in [0u16, 1, 0x7fff, 0xfffe, 0xffff] {
            for target in [1u16, 2, 0x8000, 0xfffe, 0xffff] {
                let w = steer(partial, target);
                assert_eq!(
                    fold(u64::from(partial) + u64::from(w)),
                    target,
                    "{partial} {target}"
                );
            }
        }
    }
}
