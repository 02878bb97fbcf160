//! Reply parsing: turns a reply (ICMP/ICMPv6 time-exceeded or destination-unreachable,
//! echo reply, TCP SYN-ACK or RST) into the [`ProbeKey`] of the probe it answers, with
//! the responder, the ICMP type and code, any RFC 4950 MPLS label stack, and the
//! IP header fields an ICMP error quotes (for middlebox detection, `probe::quote`).
//!
//! Input is untrusted: the kernel's reply snapshot (the IP packet, cut at
//! `REPLY_SNAP_LEN`) or what raw sockets return. Every read goes through the bounds-checked
//! helpers at the bottom, so any input gives a [`Reply`] or a [`ParseError`], never a
//! panic; `service/fuzz` and the random-input test below hold us to that.
//!
//! This file depends only on external crates and `super::wire`, because the fuzz crate
//! compiles the two files directly (without the service's eBPF build and runtime).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hopwatch_probe_common::{ipproto, ProbeKey};
use serde::{Deserialize, Serialize};

use super::wire::{self, TCP_ACK, TCP_RST, TCP_SYN};

/// ICMPv4 types we read.
const ICMPV4_ECHO_REPLY: u8 = 0;
const ICMPV4_DEST_UNREACH: u8 = 3;
const ICMPV4_ECHO_REQUEST: u8 = 8;
const ICMPV4_TIME_EXCEEDED: u8 = 11;
/// ICMPv4 destination-unreachable codes that mean the probe got to its destination.
const ICMPV4_PROTO_UNREACH: u8 = 2;
const ICMPV4_PORT_UNREACH: u8 = 3;

/// ICMPv6 types we read.
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_TIME_EXCEEDED: u8 = 3;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
const ICMPV6_PORT_UNREACH: u8 = 4;

/// IPv6 extension headers we step over to reach the transport header.
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DEST_OPTS: u8 = 60;

/// ICMP header length; the quoted datagram of an error starts right after it.
const ICMP_HEADER_LEN: usize = 8;
/// Where pre-RFC-4884 routers put extensions: after a 128-byte original datagram.
const COMPAT_ORIGINAL_LEN: usize = 128;
/// RFC 4884 extension structure: version 2 header; MPLS objects are class 1, c-type 1.
const EXT_VERSION: u8 = 2;
const EXT_HEADER_LEN: usize = 4;
const EXT_OBJECT_HEADER_LEN: usize = 4;
const MPLS_CLASS: u8 = 1;
const MPLS_CTYPE_INCOMING: u8 = 1;

/// Most MPLS label stack entries a reply keeps; deeper stacks set `mpls_incomplete`.
pub const MPLS_CAPACITY: usize = 8;

/// One RFC 4950 MPLS label stack entry quoted by a router.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MplsLabel {
    /// The 20-bit label.
    pub label: u32,
    /// Traffic class (formerly EXP), 3 bits.
    pub traffic_class: u8,
    /// Set on the last entry of the stack.
    pub bottom_of_stack: bool,
    pub ttl: u8,
}

impl MplsLabel {
    /// Decodes one 32-bit label stack entry.
    pub fn from_entry(entry: u32) -> Self {
        MplsLabel {
            label: entry >> 12,
            traffic_class: ((entry >> 9) & 0x7) as u8,
            bottom_of_stack: entry & 0x100 != 0,
            ttl: entry as u8,
        }
    }

    /// Encodes the entry as it is on the wire.
    pub fn to_entry(self) -> u32 {
        (self.label & 0xf_ffff) << 12
            | u32::from(self.traffic_class & 0x7) << 9
            | u32::from(self.bottom_of_stack) << 8
            | u32::from(self.ttl)
    }
}

impl fmt::Display for MplsLabel {
    /// Like mtr's `[MPLS: Lbl 24001 TC 0 S 1 TTL 1]`, without the brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Lbl {} TC {} S {} TTL {}",
            self.label,
            self.traffic_class,
            u8::from(self.bottom_of_stack),
            self.ttl
        )
    }
}

/// What a reply says about the probe it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyKind {
    /// A router on the path: the TTL or hop limit ran out there.
    TimeExceeded,
    /// ICMP (code as in RFC 792) or ICMPv6 (RFC 4443) destination unreachable.
    /// `reached` is set when the destination itself said its port (or, IPv4, protocol)
    /// is unreachable: the probe got there. Otherwise the path ends unreachable.
    DestinationUnreachable { code: u8, reached: bool },
    /// The target answered an ICMP echo request.
    EchoReply,
    /// The target accepted a TCP SYN.
    TcpSynAck,
    /// The target refused a TCP SYN.
    TcpRst,
}

impl ReplyKind {
    /// True when the reply came from the target: echo reply, any TCP answer, or port or
    /// protocol unreachable from the destination itself.
    pub fn reached_destination(&self) -> bool {
        match *self {
            ReplyKind::EchoReply | ReplyKind::TcpSynAck | ReplyKind::TcpRst => true,
            ReplyKind::DestinationUnreachable { reached, .. } => reached,
            ReplyKind::TimeExceeded => false,
        }
    }

    /// True when probing further along this path is pointless: the target was reached
    /// or the path ends unreachable here.
    pub fn is_final(&self) -> bool {
        !matches!(self, ReplyKind::TimeExceeded)
    }
}

impl fmt::Display for ReplyKind {
    /// One token, as in the serde names, so `--raw` lines stay space-separated;
    /// an unreachable carries its code (`destination_unreachable/3`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyKind::TimeExceeded => f.write_str("time_exceeded"),
            ReplyKind::DestinationUnreachable { code, .. } => {
                write!(f, "destination_unreachable/{code}")
            }
            ReplyKind::EchoReply => f.write_str("echo_reply"),
            ReplyKind::TcpSynAck => f.write_str("tcp_syn_ack"),
            ReplyKind::TcpRst => f.write_str("tcp_rst"),
        }
    }
}

/// A parsed reply and the probe it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Source address of the reply: a router or the target.
    pub responder: IpAddr,
    pub kind: ReplyKind,
    /// The identity of the probe this reply answers (see [`ProbeKey`]).
    pub key: ProbeKey,
    /// ICMP/ICMPv6 type and code of the reply. For TCP replies, the TCP flags and 0,
    /// as in `ReplyEvent`.
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// RFC 4950 MPLS label stack from RFC 4884 extensions, outermost label first.
    pub mpls: heapless::Vec<MplsLabel, MPLS_CAPACITY>,
    /// Set when the extensions were cut (snapshot limit) or deeper than
    /// [`MPLS_CAPACITY`], so `mpls` may lack entries.
    pub mpls_incomplete: bool,
    /// TTL or hop limit of the reply's IP header, when the input had one.
    pub reply_ttl: Option<u8>,
    /// The probe's IP header as the ICMP error quotes it: what the probe looked
    /// like when it reached the responder. `None` for echo replies and TCP.
    pub quote: Option<QuotedHeader>,
}

/// The IP header fields of a probe as an ICMP error quotes them. Compared with
/// what was sent, they show what middleboxes on the way rewrote (tracebox).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QuotedHeader {
    /// IPv4 type of service or IPv6 traffic class: DSCP (upper 6 bits) and ECN.
    pub tos: u8,
    /// TTL or hop limit as the probe arrived (1 or 0 at a router where it ran out).
    pub ttl: u8,
    /// The whole IP packet's length: IPv4 total length, IPv6 payload length + 40.
    pub ip_len: u16,
    /// The probe's source address.
    pub src: IpAddr,
    /// The transport's source port (UDP, TCP) or echo identifier (ICMP).
    pub src_port: u16,
}

impl Reply {
    /// See [`ReplyKind::reached_destination`].
    pub fn reached_destination(&self) -> bool {
        self.kind.reached_destination()
    }

    /// See [`ReplyKind::is_final`].
    pub fn is_final(&self) -> bool {
        self.kind.is_final()
    }

    /// The destination of the probe this reply answers.
    pub fn probe_destination(&self) -> Option<IpAddr> {
        wire::key_destination(&self.key)
    }
}

/// Why bytes are not a reply to one of our probes. Offsets and lengths count from
/// the start of the layer named by `what`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("truncated {what}: needed {needed} bytes, got {got}")]
    Truncated {
        what: &'static str,
        needed: usize,
        got: usize,
    },
    #[error("IP version {0} is neither 4 nor 6")]
    BadIpVersion(u8),
    #[error("IPv4 header length field is {ihl} words, below the minimum of 5")]
    BadIhl { ihl: u8 },
    #[error("IPv4 total length {total} is shorter than the {header}-byte header")]
    BadTotalLength { total: u16, header: usize },
    #[error("fragment at offset {offset} (8-byte units): only a first fragment holds a transport header")]
    Fragment { offset: u16 },
    #[error("IPv6 extension header {next_header} is not one we can step over")]
    Ipv6Extension { next_header: u8 },
    #[error("reply protocol {proto} is not ICMP, ICMPv6 or TCP")]
    UnexpectedProtocol { proto: u8 },
    #[error("protocol {proto} cannot come from {src}: ICMP is IPv4-only and ICMPv6 IPv6-only")]
    FamilyMismatch { src: IpAddr, proto: u8 },
    #[error("ICMP type {icmp_type} code {icmp_code} is not a reply to a probe")]
    NotAReply { icmp_type: u8, icmp_code: u8 },
    #[error("TCP segment with flags {flags:#04x} is neither a SYN-ACK nor an RST-ACK")]
    NotATcpReply { flags: u8 },
    #[error("quoted datagram has IP version {got}, expected {expected}")]
    QuotedIpVersion { expected: u8, got: u8 },
    #[error("quoted IPv4 header length field is {ihl} words, below the minimum of 5")]
    QuotedBadIhl { ihl: u8 },
    #[error("quoted datagram carries IP protocol {proto}, which hopwatch does not probe with")]
    UnknownQuotedProtocol { proto: u8 },
    #[error("quoted ICMP message has type {icmp_type}, not an echo request")]
    QuotedNotEchoRequest { icmp_type: u8 },
}

/// Parses a reply from its IP header on: the kernel's snapshot, or what an IPv4 raw
/// socket returns. The version nibble picks IPv4 or IPv6. A packet shorter than its IP
/// length field says is taken as a cut snapshot: the key is still found when the
/// quoted headers are there, and MPLS labels as far as they go.
pub fn parse_ip_packet(packet: &[u8]) -> Result<Reply, ParseError> {
    let first = byte(packet, 0, "IP header")?;
    match first >> 4 {
        4 => parse_ipv4(packet),
        6 => parse_ipv6(packet),
        version => Err(ParseError::BadIpVersion(version)),
    }
}

/// Parses a reply without its IP header, as IPv6 raw sockets return it: `src` comes
/// from `recvfrom`, `proto` is the socket's protocol (ICMP, ICMPv6 or TCP) and `l4`
/// the whole transport message. `reply_ttl` is `None`: the caller can fill it from a
/// hop-limit control message.
pub fn parse_transport(src: IpAddr, proto: u8, l4: &[u8]) -> Result<Reply, ParseError> {
    parse_l4(src, proto, l4, l4.len())
}

fn parse_ipv4(packet: &[u8]) -> Result<Reply, ParseError> {
    let h: [u8; 20] = array(packet, 0, "IPv4 header")?;
    let ihl = h[0] & 0x0f;
    if ihl < 5 {
        return Err(ParseError::BadIhl { ihl });
    }
    let header = usize::from(ihl) * 4;
    let total = u16::from_be_bytes([h[2], h[3]]);
    if usize::from(total) < header {
        return Err(ParseError::BadTotalLength { total, header });
    }
    let offset = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
    if offset != 0 {
        return Err(ParseError::Fragment { offset });
    }
    let payload = rest(packet, header, "IPv4 options")?;
    // Bytes beyond `total` are link-layer padding; fewer than `total` is a cut snapshot.
    let real_len = usize::from(total) - header;
    let captured = payload.get(..real_len).unwrap_or(payload);
    let src = IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15]));
    let mut reply = parse_l4(src, h[9], captured, real_len)?;
    reply.reply_ttl = Some(h[8]);
    Ok(reply)
}

fn parse_ipv6(packet: &[u8]) -> Result<Reply, ParseError> {
    let h: [u8; 40] = array(packet, 0, "IPv6 header")?;
    let real_len = usize::from(u16::from_be_bytes([h[4], h[5]]));
    let payload = rest(packet, 40, "IPv6 header")?;
    let captured = payload.get(..real_len).unwrap_or(payload);
    let (proto, at) = skip_ipv6_extensions(h[6], captured)?;
    let l4 = captured.get(at..).unwrap_or_default();
    let src = IpAddr::V6(Ipv6Addr::from(array::<16>(&h, 8, "IPv6 header")?));
    let mut reply = parse_l4(src, proto, l4, real_len.saturating_sub(at))?;
    reply.reply_ttl = Some(h[7]);
    Ok(reply)
}

/// Steps over hop-by-hop, routing, destination-options and first-fragment headers.
/// Returns the transport protocol and its offset in `data`. Each step advances at
/// least 8 bytes, so the loop ends.
fn skip_ipv6_extensions(mut next: u8, data: &[u8]) -> Result<(u8, usize), ParseError> {
    let mut at = 0;
    loop {
        match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => {
                let h: [u8; 2] = array(data, at, "IPv6 extension header")?;
                next = h[0];
                at += (usize::from(h[1]) + 1) * 8;
            }
            IPV6_FRAGMENT => {
                let h: [u8; 8] = array(data, at, "IPv6 fragment header")?;
                let offset = u16::from_be_bytes([h[2], h[3]]) >> 3;
                if offset != 0 {
                    return Err(ParseError::Fragment { offset });
                }
                next = h[0];
                at += 8;
            }
            // 59 is "no next header"; others are ESP, AH, mobility...: none in our replies.
            50 | 51 | 59 | 135 | 139 | 140 | 253 | 254 => {
                return Err(ParseError::Ipv6Extension { next_header: next })
            }
            _ => return Ok((next, at)),
        }
    }
}

/// `l4` is what we have of the transport message, `real_len` how long the IP header
/// says it is (larger when a snapshot cut it).
fn parse_l4(src: IpAddr, proto: u8, l4: &[u8], real_len: usize) -> Result<Reply, ParseError> {
    match (src, proto) {
        (IpAddr::V4(_), ipproto::ICMP) => parse_icmpv4(src, l4, real_len),
        (IpAddr::V6(_), ipproto::ICMPV6) => parse_icmpv6(src, l4, real_len),
        (_, ipproto::TCP) => parse_tcp(src, l4),
        (_, ipproto::ICMP | ipproto::ICMPV6) => Err(ParseError::FamilyMismatch { src, proto }),
        _ => Err(ParseError::UnexpectedProtocol { proto }),
    }
}

fn parse_icmpv4(src: IpAddr, msg: &[u8], real_len: usize) -> Result<Reply, ParseError> {
    let h: [u8; 8] = array(msg, 0, "ICMP header")?;
    let (icmp_type, icmp_code) = (h[0], h[1]);
    let kind = match icmp_type {
        ICMPV4_ECHO_REPLY => {
            let key = echo_key(src, ipproto::ICMP, h);
            return Ok(reply(src, ReplyKind::EchoReply, key, icmp_type, icmp_code));
        }
        ICMPV4_TIME_EXCEEDED => ReplyKind::TimeExceeded,
        ICMPV4_DEST_UNREACH => ReplyKind::DestinationUnreachable {
            code: icmp_code,
            reached: false,
        },
        _ => {
            return Err(ParseError::NotAReply {
                icmp_type,
                icmp_code,
            })
        }
    };
    let quoted = rest(msg, ICMP_HEADER_LEN, "ICMP header")?;
    let key = quoted_key_v4(quoted)?;
    let reached = matches!(icmp_code, ICMPV4_PROTO_UNREACH | ICMPV4_PORT_UNREACH);
    let mut r = reply(
        src,
        with_reached(kind, reached, src, &key),
        key,
        icmp_type,
        icmp_code,
    );
    r.quote = quoted_header_v4(quoted, key.flow);
    // RFC 4884: byte 5 is the original datagram's length in 32-bit words.
    read_extensions(&mut r, msg, usize::from(h[5]) * 4, real_len);
    Ok(r)
}

fn parse_icmpv6(src: IpAddr, msg: &[u8], real_len: usize) -> Result<Reply, ParseError> {
    let h: [u8; 8] = array(msg, 0, "ICMPv6 header")?;
    let (icmp_type, icmp_code) = (h[0], h[1]);
    let kind = match icmp_type {
        ICMPV6_ECHO_REPLY => {
            let key = echo_key(src, ipproto::ICMPV6, h);
            return Ok(reply(src, ReplyKind::EchoReply, key, icmp_type, icmp_code));
        }
        ICMPV6_TIME_EXCEEDED => ReplyKind::TimeExceeded,
        ICMPV6_DEST_UNREACH => ReplyKind::DestinationUnreachable {
            code: icmp_code,
            reached: false,
        },
        _ => {
            return Err(ParseError::NotAReply {
                icmp_type,
                icmp_code,
            })
        }
    };
    let quoted = rest(msg, ICMP_HEADER_LEN, "ICMPv6 header")?;
    let key = quoted_key_v6(quoted)?;
    let reached = icmp_code == ICMPV6_PORT_UNREACH;
    let mut r = reply(
        src,
        with_reached(kind, reached, src, &key),
        key,
        icmp_type,
        icmp_code,
    );
    r.quote = quoted_header_v6(quoted, key.flow);
    // RFC 4884: byte 4 is the original datagram's length in 64-bit words.
    read_extensions(&mut r, msg, usize::from(h[4]) * 8, real_len);
    Ok(r)
}

/// Marks a destination unreachable as "reached" when its code says so and it comes
/// from the probe's destination itself (a firewall on the way may send the same code).
fn with_reached(kind: ReplyKind, code_reached: bool, src: IpAddr, key: &ProbeKey) -> ReplyKind {
    match kind {
        ReplyKind::DestinationUnreachable { code, .. } => ReplyKind::DestinationUnreachable {
            code,
            reached: code_reached && wire::key_destination(key) == Some(src),
        },
        other => other,
    }
}

fn reply(src: IpAddr, kind: ReplyKind, key: ProbeKey, icmp_type: u8, icmp_code: u8) -> Reply {
    Reply {
        responder: src,
        kind,
        key,
        icmp_type,
        icmp_code,
        mpls: heapless::Vec::new(),
        mpls_incomplete: false,
        reply_ttl: None,
        quote: None,
    }
}

/// An echo reply carries the request's identifier and sequence; the request went to
/// whoever answers.
fn echo_key(src: IpAddr, proto: u8, h: [u8; 8]) -> ProbeKey {
    let id = u16::from_be_bytes([h[4], h[5]]);
    let seq = u32::from(u16::from_be_bytes([h[6], h[7]]));
    key_for(src, proto, id, seq)
}

fn key_for(dst: IpAddr, proto: u8, flow: u16, seq: u32) -> ProbeKey {
    match dst {
        IpAddr::V4(a) => ProbeKey::v4(a.octets(), proto, flow, seq),
        IpAddr::V6(a) => ProbeKey::v6(a.octets(), proto, flow, seq),
    }
}

fn quoted_key_v4(quoted: &[u8]) -> Result<ProbeKey, ParseError> {
    let q: [u8; 20] = array(quoted, 0, "quoted IPv4 header")?;
    let version = q[0] >> 4;
    if version != 4 {
        return Err(ParseError::QuotedIpVersion {
            expected: 4,
            got: version,
        });
    }
    let ihl = q[0] & 0x0f;
    if ihl < 5 {
        return Err(ParseError::QuotedBadIhl { ihl });
    }
    let dst = IpAddr::V4(Ipv4Addr::new(q[16], q[17], q[18], q[19]));
    let transport: [u8; 8] = array(quoted, usize::from(ihl) * 4, "quoted transport header")?;
    quoted_transport_key(dst, q[9], transport)
}

/// The quoted IPv4 header's fields; the key's parse already checked its version
/// and length, so this cannot fail once that succeeded.
fn quoted_header_v4(quoted: &[u8], src_port: u16) -> Option<QuotedHeader> {
    let q: [u8; 20] = array(quoted, 0, "quoted IPv4 header").ok()?;
    Some(QuotedHeader {
        tos: q[1],
        ttl: q[8],
        ip_len: u16::from_be_bytes([q[2], q[3]]),
        src: IpAddr::V4(Ipv4Addr::new(q[12], q[13], q[14], q[15])),
        src_port,
    })
}

/// The quoted IPv6 header's fields; the traffic class straddles the first two bytes.
fn quoted_header_v6(quoted: &[u8], src_port: u16) -> Option<QuotedHeader> {
    let q: [u8; 40] = array(quoted, 0, "quoted IPv6 header").ok()?;
    let src: [u8; 16] = array(&q, 8, "quoted IPv6 header").ok()?;
    Some(QuotedHeader {
        tos: (q[0] << 4) | (q[1] >> 4),
        ttl: q[7],
        ip_len: u16::from_be_bytes([q[4], q[5]]).saturating_add(40),
        src: IpAddr::V6(Ipv6Addr::from(src)),
        src_port,
    })
}

fn quoted_key_v6(quoted: &[u8]) -> Result<ProbeKey, ParseError> {
    let q: [u8; 40] = array(quoted, 0, "quoted IPv6 header")?;
    let version = q[0] >> 4;
    if version != 6 {
        return Err(ParseError::QuotedIpVersion {
            expected: 6,
            got: version,
        });
    }
    let dst: [u8; 16] = array(&q, 24, "quoted IPv6 header")?;
    let rest = rest(quoted, 40, "quoted IPv6 header")?;
    let (proto, at) = skip_ipv6_extensions(q[6], rest)?;
    let transport: [u8; 8] = array(rest, at, "quoted transport header")?;
    quoted_transport_key(IpAddr::V6(Ipv6Addr::from(dst)), proto, transport)
}

/// The key from the first 8 bytes of the quoted probe (all an ICMP error must quote).
fn quoted_transport_key(dst: IpAddr, proto: u8, t: [u8; 8]) -> Result<ProbeKey, ParseError> {
    let be16 = |at: usize| u16::from_be_bytes([t[at], t[at + 1]]);
    let (flow, seq) = match (dst, proto) {
        (IpAddr::V4(_), ipproto::ICMP) | (IpAddr::V6(_), ipproto::ICMPV6) => {
            let echo = if dst.is_ipv4() {
                ICMPV4_ECHO_REQUEST
            } else {
                ICMPV6_ECHO_REQUEST
            };
            if t[0] != echo {
                return Err(ParseError::QuotedNotEchoRequest { icmp_type: t[0] });
            }
            (be16(4), u32::from(be16(6)))
        }
        // The UDP checksum is the probe's identity (see wire.rs).
        (_, ipproto::UDP) => (be16(0), u32::from(be16(6))),
        (_, ipproto::TCP) => (be16(0), u32::from_be_bytes([t[4], t[5], t[6], t[7]])),
        _ => return Err(ParseError::UnknownQuotedProtocol { proto }),
    };
    Ok(key_for(dst, proto, flow, seq))
}

fn parse_tcp(src: IpAddr, seg: &[u8]) -> Result<Reply, ParseError> {
    let t: [u8; 14] = array(seg, 0, "TCP header")?;
    let flags = t[13];
    let kind = if flags & (TCP_RST | TCP_ACK) == TCP_RST | TCP_ACK {
        ReplyKind::TcpRst
    } else if flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN | TCP_ACK {
        ReplyKind::TcpSynAck
    } else {
        // Without ACK there is no acknowledgment number to recover our sequence from.
        return Err(ParseError::NotATcpReply { flags });
    };
    // The reply goes to our source port and acknowledges our sequence number + 1 (the SYN).
    let flow = u16::from_be_bytes([t[2], t[3]]);
    let ack = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
    let key = key_for(src, ipproto::TCP, flow, ack.wrapping_sub(1));
    Ok(reply(src, kind, key, flags, 0))
}

/// Reads RFC 4884 extensions after the original datagram and keeps MPLS label stacks
/// (RFC 4950). Problems here never fail the reply: the key is what matters, labels are
/// a bonus, so a bad structure is ignored and a cut one is read as far as it goes.
///
/// `original_len` is from the ICMP length field (0 when the router does not set it);
/// `real_len` is the ICMP message's length before any snapshot cut.
fn read_extensions(reply: &mut Reply, msg: &[u8], original_len: usize, real_len: usize) {
    // RFC 4884 routers give the length; older ones (and RFC 4884's compatibility rule)
    // put extensions after exactly 128 bytes of original datagram, with length 0.
    let compliant = original_len != 0;
    let original_len = if compliant {
        original_len
    } else {
        COMPAT_ORIGINAL_LEN
    };
    let start = ICMP_HEADER_LEN + original_len;
    if real_len < start + EXT_HEADER_LEN {
        return;
    }
    let Some(ext) = msg.get(start..) else {
        // The snapshot ended inside the original datagram. With a length field we know
        // an extension exists; without one we cannot tell.
        reply.mpls_incomplete = compliant;
        return;
    };
    let whole = start + ext.len() >= real_len;
    let Ok(header) = array::<2>(ext, 0, "ICMP extension header") else {
        reply.mpls_incomplete = compliant;
        return;
    };
    if header[0] >> 4 != EXT_VERSION {
        return;
    }
    // The checksum covers the whole structure; we can only check it when we have it.
    // Zero means the sender did not compute one: accepted at an offset the length field
    // gave (as traceroute does), not at the guessed compatibility offset, where any
    // quoted payload byte 0x2_ would otherwise pass for a header.
    let checksum = ext
        .get(2..4)
        .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
    if whole && checksum == 0 && !compliant {
        return;
    }
    if whole && checksum != 0 && wire::fold(wire::sum_words(ext, 0)) != 0xffff {
        return;
    }
    if !whole && !compliant {
        // A cut, unverifiable structure at the guessed offset may be payload bytes.
        // Accept it only if it starts like an MPLS object.
        let object = ext.get(EXT_HEADER_LEN + 2..EXT_HEADER_LEN + 4);
        if object != Some(&[MPLS_CLASS, MPLS_CTYPE_INCOMING][..]) {
            return;
        }
    }
    reply.mpls_incomplete = !whole;
    let mut at = EXT_HEADER_LEN;
    while let Ok(obj) = array::<4>(ext, at, "ICMP extension object header") {
        let len = usize::from(u16::from_be_bytes([obj[0], obj[1]]));
        if len < EXT_OBJECT_HEADER_LEN {
            return; // malformed: a zero length would never advance
        }
        let end = at + len;
        if end > ext.len() && whole {
            return; // an object overrunning a complete structure is malformed
        }
        if obj[2] == MPLS_CLASS && obj[3] == MPLS_CTYPE_INCOMING {
            let entries = ext
                .get(at + EXT_OBJECT_HEADER_LEN..end.min(ext.len()))
                .unwrap_or_default();
            for entry in entries.chunks_exact(4) {
                let word = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
                if reply.mpls.push(MplsLabel::from_entry(word)).is_err() {
                    reply.mpls_incomplete = true;
                    return;
                }
            }
        }
        at = end;
    }
}

/// Everything in `buf` from `at` on; `what` names the layer that must fit before it.
fn rest<'a>(buf: &'a [u8], at: usize, what: &'static str) -> Result<&'a [u8], ParseError> {
    buf.get(at..).ok_or(ParseError::Truncated {
        what,
        needed: at,
        got: buf.len(),
    })
}

/// `N` bytes of `buf` from `at` as an array, so callers index with constants the
/// compiler checks.
fn array<const N: usize>(buf: &[u8], at: usize, what: &'static str) -> Result<[u8; N], ParseError> {
    let end = at.saturating_add(N);
    let bytes = buf.get(at..end).ok_or(ParseError::Truncated {
        what,
        needed: end,
        got: buf.len(),
    })?;
    let mut out = [0; N];
    out.copy_from_slice(bytes);
    Ok(out)
}

fn byte(buf: &[u8], at: usize, what: &'static str) -> Result<u8, ParseError> {
    array::<1>(buf, at, what).map(|[b]| b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::wire::{ProbePacket, Protocol};

    const SRC4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const DST4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
    const ROUTER4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 254);
    const SRC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const DST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 7);
    const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x99, 0, 0, 0, 0, 0xfe);

    fn checksum(chunks: &[&[u8]]) -> u16 {
        !wire::fold(chunks.iter().fold(0, |acc, c| wire::sum_words(c, acc)))
    }

    fn ipv4(proto: u8, src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload: &[u8]) -> Vec<u8> {
        let total = (20 + payload.len()) as u16;
        let mut h = vec![0x45, 0];
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&[0x12, 0x34, 0x40, 0, ttl, proto, 0, 0]);
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&dst.octets());
        let c = checksum(&[&h]);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h.extend_from_slice(payload);
        h
    }

    fn ipv6(next: u8, src: Ipv6Addr, dst: Ipv6Addr, hops: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        h.extend_from_slice(&[next, hops]);
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&dst.octets());
        h.extend_from_slice(payload);
        h
    }

    fn probe(protocol: Protocol, v6: bool) -> ProbePacket {
        let (src, dst) = if v6 {
            (IpAddr::V6(SRC6), IpAddr::V6(DST6))
        } else {
            (IpAddr::V4(SRC4), IpAddr::V4(DST4))
        };
        ProbePacket {
            protocol,
            src,
            dst,
            flow: 40001,
            dst_port: 33434,
            seq: 0x0102_0304,
            packet_size: 72,
        }
    }

    /// The probe as a router sees it, IP header included, with TTL 1.
    fn datagram(p: &ProbePacket) -> Vec<u8> {
        let mut l4 = Vec::new();
        p.build(&mut l4).unwrap();
        let proto = p.protocol.ip_proto(p.dst.is_ipv6());
        match (p.src, p.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => ipv4(proto, s, d, 1, &l4),
            (IpAddr::V6(s), IpAddr::V6(d)) => ipv6(proto, s, d, 1, &l4),
            _ => unreachable!(),
        }
    }

    /// RFC 4884 extension structure holding one RFC 4950 MPLS object.
    fn mpls_extension(labels: &[MplsLabel]) -> Vec<u8> {
        let mut ext = vec![EXT_VERSION << 4, 0, 0, 0];
        ext.extend_from_slice(&((4 + 4 * labels.len()) as u16).to_be_bytes());
        ext.extend_from_slice(&[MPLS_CLASS, MPLS_CTYPE_INCOMING]);
        for l in labels {
            ext.extend_from_slice(&l.to_entry().to_be_bytes());
        }
        let c = checksum(&[&ext]);
        ext[2..4].copy_from_slice(&c.to_be_bytes());
        ext
    }

    #[derive(Clone, Copy)]
    enum Length {
        /// RFC 4884: the length field is set and the datagram padded to 128 bytes.
        Rfc4884,
        /// Pre-RFC 4884: length 0, extensions after exactly 128 bytes.
        Compat,
    }

    /// An ICMP or ICMPv6 error quoting `quoted`, with optional extensions.
    fn icmp_error(
        v6: bool,
        ty: u8,
        code: u8,
        quoted: &[u8],
        ext: Option<(&[u8], Length)>,
    ) -> Vec<u8> {
        let mut m = vec![ty, code, 0, 0, 0, 0, 0, 0];
        let mut original = quoted.to_vec();
        if let Some((ext, length)) = ext {
            let unit = if v6 { 8 } else { 4 };
            original.resize(original.len().max(128).div_ceil(unit) * unit, 0);
            if let Length::Compat = length {
                original.truncate(128);
            } else {
                m[if v6 { 4 } else { 5 }] = (original.len() / unit) as u8;
            }
            original.extend_from_slice(ext);
        }
        m.extend_from_slice(&original);
        let c = checksum(&[&m]);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        m
    }

    fn from_router(v6: bool, icmp: &[u8]) -> Vec<u8> {
        if v6 {
            ipv6(ipproto::ICMPV6, ROUTER6, SRC6, 62, icmp)
        } else {
            ipv4(ipproto::ICMP, ROUTER4, SRC4, 250, icmp)
        }
    }

    fn router(v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(ROUTER6)
        } else {
            IpAddr::V4(ROUTER4)
        }
    }

    fn time_exceeded(v6: bool) -> u8 {
        if v6 {
            ICMPV6_TIME_EXCEEDED
        } else {
            ICMPV4_TIME_EXCEEDED
        }
    }

    fn labels(n: u32) -> Vec<MplsLabel> {
        (0..n)
            .map(|i| MplsLabel {
                label: 16 + i * 1000 + 0x8_0000,
                traffic_class: (i % 8) as u8,
                bottom_of_stack: i + 1 == n,
                ttl: 1 + i as u8,
            })
            .collect()
    }

    /// The quote's IP fields are read as the router saw them, so a rewrite on
    /// the way (here DSCP 46 and ECT(0), and a new source) shows.
    #[test]
    fn the_quoted_header_is_read_for_both_families() {
        for v6 in [false, true] {
            let p = probe(Protocol::Udp, v6);
            let mut quoted = datagram(&p);
            let nat: IpAddr = if v6 {
                // The UDP checksum (the key) is left alone, so the reply still matches.
                quoted[0] = 0x60 | (0xba >> 4);
                quoted[1] = (0xba << 4) & 0xf0;
                let nat = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 5);
                quoted[8..24].copy_from_slice(&nat.octets());
                IpAddr::V6(nat)
            } else {
                quoted[1] = 0xba;
                let nat = Ipv4Addr::new(198, 18, 7, 5);
                quoted[12..16].copy_from_slice(&nat.octets());
                IpAddr::V4(nat)
            };
            let icmp = icmp_error(v6, time_exceeded(v6), 0, &quoted, None);
            let r = parse_ip_packet(&from_router(v6, &icmp)).unwrap();
            assert_eq!(r.key, p.key());
            let q = r.quote.expect("a time exceeded quotes the probe");
            assert_eq!(q.tos, 0xba, "v6={v6}");
            assert_eq!(q.ttl, 1);
            assert_eq!(usize::from(q.ip_len), p.packet_size);
            assert_eq!(q.src, nat);
            assert_eq!(q.src_port, p.flow);
        }
        // Echo replies quote nothing.
        let mut echo = vec![ICMPV4_ECHO_REPLY, 0, 0, 0, 0x9c, 0x41, 0, 1];
        echo.extend_from_slice(&[0; 8]);
        let r = parse_ip_packet(&ipv4(ipproto::ICMP, DST4, SRC4, 60, &echo)).unwrap();
        assert_eq!(r.quote, None);
    }

    #[test]
    fn time_exceeded_quotes_every_probe_protocol() {
        for v6 in [false, true] {
            for protocol in Protocol::ALL {
                let p = probe(protocol, v6);
                let icmp = icmp_error(v6, time_exceeded(v6), 0, &datagram(&p), None);
                let r = parse_ip_packet(&from_router(v6, &icmp)).unwrap();
                assert_eq!(r.key, p.key(), "{protocol} v6={v6}");
                assert_eq!(r.kind, ReplyKind::TimeExceeded);
                assert_eq!((r.icmp_type, r.icmp_code), (time_exceeded(v6), 0));
                assert_eq!(r.responder, router(v6));
                assert_eq!(r.reply_ttl, Some(if v6 { 62 } else { 250 }));
                assert_eq!(r.probe_destination(), Some(p.dst));
                assert!(r.mpls.is_empty() && !r.mpls_incomplete);
                assert!(!r.is_final() && !r.reached_destination());

                // Raw sockets: without the IP header (how IPv6 raw sockets deliver it).
                let proto = if v6 { ipproto::ICMPV6 } else { ipproto::ICMP };
                let raw = parse_transport(router(v6), proto, &icmp).unwrap();
                assert_eq!(raw.key, p.key());
                assert_eq!(raw.reply_ttl, None);
            }
        }
    }

    #[test]
    fn port_unreachable_from_the_target_reaches_it() {
        for v6 in [false, true] {
            let p = probe(Protocol::Udp, v6);
            let (ty, port, net) = if v6 { (1, 4, 0) } else { (3, 3, 0) };
            for (code, from_target, reached) in [
                (port, true, true),
                (port, false, false),
                (net, true, false),
                (net, false, false),
            ] {
                let icmp = icmp_error(v6, ty, code, &datagram(&p), None);
                let src = if from_target { p.dst } else { router(v6) };
                let r =
                    parse_transport(src, if v6 { ipproto::ICMPV6 } else { ipproto::ICMP }, &icmp)
                        .unwrap();
                assert_eq!(r.key, p.key());
                assert_eq!(r.kind, ReplyKind::DestinationUnreachable { code, reached });
                assert_eq!(
                    r.reached_destination(),
                    reached,
                    "v6={v6} code={code} target={from_target}"
                );
                assert!(r.is_final());
            }
        }
        // IPv4 protocol unreachable from the target counts too.
        let p = probe(Protocol::Udp, false);
        let icmp = icmp_error(false, 3, 2, &datagram(&p), None);
        assert!(parse_transport(p.dst, 1, &icmp)
            .unwrap()
            .reached_destination());
    }

    #[test]
    fn echo_replies_carry_id_and_sequence() {
        for v6 in [false, true] {
            let p = probe(Protocol::Icmp, v6);
            let mut icmp = Vec::new();
            p.build(&mut icmp).unwrap();
            icmp[0] = if v6 {
                ICMPV6_ECHO_REPLY
            } else {
                ICMPV4_ECHO_REPLY
            };
            let packet = match p.dst {
                IpAddr::V4(d) => ipv4(1, d, SRC4, 57, &icmp),
                IpAddr::V6(d) => ipv6(58, d, SRC6, 57, &icmp),
            };
            let r = parse_ip_packet(&packet).unwrap();
            assert_eq!(r.key, p.key());
            assert_eq!(r.kind, ReplyKind::EchoReply);
            assert_eq!(r.responder, p.dst);
            assert!(r.reached_destination() && r.is_final());
        }
    }

    fn tcp_reply(p: &ProbePacket, flags: u8, ack: u32) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&p.dst_port.to_be_bytes());
        t.extend_from_slice(&p.flow.to_be_bytes());
        t.extend_from_slice(&0x5555_0000_u32.to_be_bytes());
        t.extend_from_slice(&ack.to_be_bytes());
        t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        t
    }

    #[test]
    fn tcp_syn_ack_and_rst_acknowledge_the_probe() {
        for v6 in [false, true] {
            for seq in [0x0102_0304, u32::MAX, 0] {
                let mut p = probe(Protocol::Tcp, v6);
                p.seq = seq;
                for (flags, kind) in [
                    (TCP_SYN | TCP_ACK, ReplyKind::TcpSynAck),
                    (TCP_RST | TCP_ACK, ReplyKind::TcpRst),
                ] {
                    let seg = tcp_reply(&p, flags, seq.wrapping_add(1));
                    let packet = match p.dst {
                        IpAddr::V4(d) => ipv4(6, d, SRC4, 60, &seg),
                        IpAddr::V6(d) => ipv6(6, d, SRC6, 60, &seg),
                    };
                    for r in [
                        parse_ip_packet(&packet).unwrap(),
                        parse_transport(p.dst, 6, &seg).unwrap(),
                    ] {
                        assert_eq!(r.key, p.key(), "v6={v6} seq={seq}");
                        assert_eq!(r.kind, kind);
                        assert_eq!((r.icmp_type, r.icmp_code), (flags, 0));
                        assert!(r.reached_destination());
                    }
                }
            }
        }
    }

    #[test]
    fn tcp_segments_without_ack_are_not_replies() {
        let p = probe(Protocol::Tcp, false);
        // SYN, RST without ACK, bare ACK, FIN-ACK, nothing.
        for flags in [TCP_SYN, TCP_RST, TCP_ACK, TCP_ACK | 0x01, 0] {
            let seg = tcp_reply(&p, flags, 1);
            assert_eq!(
                parse_transport(p.dst, 6, &seg),
                Err(ParseError::NotATcpReply { flags })
            );
        }
    }

    #[test]
    fn rfc4884_mpls_one_label_ipv4() {
        let p = probe(Protocol::Udp, false);
        let stack = labels(1);
        let ext = mpls_extension(&stack);
        let icmp = icmp_error(false, 11, 0, &datagram(&p), Some((&ext, Length::Rfc4884)));
        assert_eq!(icmp[5], 32, "128 bytes of original datagram");
        let r = parse_ip_packet(&from_router(false, &icmp)).unwrap();
        assert_eq!(r.key, p.key());
        assert_eq!(&r.mpls[..], &stack[..]);
        assert!(r.mpls[0].bottom_of_stack && !r.mpls_incomplete);
    }

    #[test]
    fn rfc4884_mpls_two_labels_ipv6() {
        let p = probe(Protocol::Icmp, true);
        let stack = labels(2);
        let ext = mpls_extension(&stack);
        let icmp = icmp_error(true, 3, 0, &datagram(&p), Some((&ext, Length::Rfc4884)));
        assert_eq!(
            icmp[4], 16,
            "128 bytes of original datagram, in 64-bit words"
        );
        let r = parse_ip_packet(&from_router(true, &icmp)).unwrap();
        assert_eq!(r.key, p.key());
        assert_eq!(&r.mpls[..], &stack[..]);
        assert!(!r.mpls[0].bottom_of_stack && r.mpls[1].bottom_of_stack);
        assert!(!r.mpls_incomplete);
    }

    #[test]
    fn mpls_entries_decode_the_rfc_layout() {
        // Label 0x12345, TC 5, S 1, TTL 0xfe: 0001 0010 0011 0100 0101 | 101 | 1 | 1111 1110
        let l = MplsLabel::from_entry(0x1234_5bfe);
        assert_eq!(
            l,
            MplsLabel {
                label: 0x12345,
                traffic_class: 5,
                bottom_of_stack: true,
                ttl: 0xfe
            }
        );
        assert_eq!(l.to_entry(), 0x1234_5bfe);
        assert_eq!(l.to_string(), "Lbl 74565 TC 5 S 1 TTL 254");
    }

    #[test]
    fn compat_extensions_at_offset_128() {
        for v6 in [false, true] {
            let p = probe(Protocol::Tcp, v6);
            let stack = labels(2);
            let ext = mpls_extension(&stack);
            let icmp = icmp_error(
                v6,
                time_exceeded(v6),
                0,
                &datagram(&p),
                Some((&ext, Length::Compat)),
            );
            let r = parse_ip_packet(&from_router(v6, &icmp)).unwrap();
            assert_eq!(r.key, p.key());
            assert_eq!(&r.mpls[..], &stack[..], "v6={v6}");

            // At a guessed offset a structure must prove itself with its checksum.
            let mut unchecked = ext.clone();
            unchecked[2..4].copy_from_slice(&[0, 0]);
            let icmp = icmp_error(
                v6,
                time_exceeded(v6),
                0,
                &datagram(&p),
                Some((&unchecked, Length::Compat)),
            );
            assert!(parse_ip_packet(&from_router(v6, &icmp))
                .unwrap()
                .mpls
                .is_empty());
            // With the length field given, a zero checksum means "not computed".
            let icmp = icmp_error(
                v6,
                time_exceeded(v6),
                0,
                &datagram(&p),
                Some((&unchecked, Length::Rfc4884)),
            );
            assert_eq!(
                parse_ip_packet(&from_router(v6, &icmp)).unwrap().mpls.len(),
                2
            );
        }
    }

    #[test]
    fn long_quoted_datagram_without_extensions_has_no_labels() {
        // Linux quotes up to 576 bytes: our payload at offset 128 must not pass for an extension.
        let mut p = probe(Protocol::Udp, false);
        p.packet_size = 500;
        let icmp = icmp_error(false, 11, 0, &datagram(&p), None);
        let r = parse_transport(router(false), 1, &icmp).unwrap();
        assert_eq!(r.key, p.key());
        assert!(r.mpls.is_empty() && !r.mpls_incomplete);
    }

    #[test]
    fn bad_extensions_lose_labels_not_the_key() {
        let p = probe(Protocol::Udp, false);
        let ext = mpls_extension(&labels(2));
        let mut broken = Vec::new();
        // Bad checksum, wrong version, zero-length object (would loop), object overrun.
        let mut bad_sum = ext.clone();
        bad_sum[9] ^= 0xff;
        broken.push(bad_sum);
        let mut version = ext.clone();
        version[0] = 0x10;
        broken.push(version);
        for object_len in [0u16, 3, 200] {
            let mut e = ext.clone();
            e[4..6].copy_from_slice(&object_len.to_be_bytes());
            e[2..4].copy_from_slice(&[0, 0]);
            let c = checksum(&[&e]);
            e[2..4].copy_from_slice(&c.to_be_bytes());
            broken.push(e);
        }
        for ext in broken {
            let icmp = icmp_error(false, 11, 0, &datagram(&p), Some((&ext, Length::Rfc4884)));
            let r = parse_transport(router(false), 1, &icmp).unwrap();
            assert_eq!(r.key, p.key());
            assert!(r.mpls.is_empty(), "{ext:02x?}");
        }
    }

    #[test]
    fn deep_label_stacks_are_capped_and_flagged() {
        let p = probe(Protocol::Icmp, false);
        let ext = mpls_extension(&labels(10));
        let icmp = icmp_error(false, 11, 0, &datagram(&p), Some((&ext, Length::Rfc4884)));
        let r = parse_transport(router(false), 1, &icmp).unwrap();
        assert_eq!(&r.mpls[..], &labels(10)[..MPLS_CAPACITY]);
        assert!(r.mpls_incomplete);
    }

    /// Every prefix of a reply: no panic; an error until the quoted headers fit, the key
    /// from then on; labels as far as they go, flagged incomplete until the end.
    #[test]
    fn every_truncation_gives_an_error_or_the_key() {
        for v6 in [false, true] {
            for protocol in Protocol::ALL {
                let p = probe(protocol, v6);
                let stack = labels(3);
                let ext = mpls_extension(&stack);
                let icmp = icmp_error(
                    v6,
                    time_exceeded(v6),
                    0,
                    &datagram(&p),
                    Some((&ext, Length::Rfc4884)),
                );
                let packet = from_router(v6, &icmp);
                let ip = if v6 { 40 } else { 20 };
                let key_from = ip + 8 + ip + 8;
                let ext_from = packet.len() - ext.len();
                for len in 0..=packet.len() {
                    let got = parse_ip_packet(&packet[..len]);
                    if len < key_from {
                        assert!(got.is_err(), "v6={v6} {protocol} len={len}");
                        continue;
                    }
                    let r = got.unwrap_or_else(|e| panic!("v6={v6} {protocol} len={len}: {e}"));
                    assert_eq!(r.key, p.key());
                    assert_eq!(r.mpls_incomplete, len < packet.len(), "len={len}");
                    let whole_entries = len.saturating_sub(ext_from + 8) / 4;
                    assert_eq!(r.mpls.len(), whole_entries.min(3), "len={len}");
                    assert_eq!(&r.mpls[..], &stack[..r.mpls.len()]);
                }
                // Raw-socket input has no length to compare with: prefixes must still not panic.
                let proto = if v6 { 58 } else { 1 };
                for len in 0..=icmp.len() {
                    let got = parse_transport(router(v6), proto, &icmp[..len]);
                    assert_eq!(got.is_ok(), len >= 8 + ip + 8, "len={len}");
                }
            }
        }
    }

    #[test]
    fn snapshot_cut_at_256_bytes_keeps_the_key() {
        // 40 + 8 + 184 bytes of quoted probe + 8 bytes of extension headers: the cut at
        // 256 leaves room for 4 of the 8 labels.
        let mut p = probe(Protocol::Udp, true);
        p.packet_size = 184;
        let ext = mpls_extension(&labels(8));
        let icmp = icmp_error(true, 3, 0, &datagram(&p), Some((&ext, Length::Rfc4884)));
        let packet = from_router(true, &icmp);
        let r = parse_ip_packet(&packet[..hopwatch_probe_common::REPLY_SNAP_LEN]).unwrap();
        assert_eq!(r.key, p.key());
        assert!(r.mpls_incomplete);
        assert_eq!(&r.mpls[..], &labels(8)[..4]);
    }

    #[test]
    fn ipv4_length_fields_that_lie() {
        let p = probe(Protocol::Udp, false);
        let good = from_router(false, &icmp_error(false, 11, 0, &datagram(&p), None));

        let mut short_ihl = good.clone();
        short_ihl[0] = 0x44;
        assert_eq!(
            parse_ip_packet(&short_ihl),
            Err(ParseError::BadIhl { ihl: 4 })
        );

        let mut long_ihl = good.clone();
        long_ihl[0] = 0x4f;
        let mut tiny = long_ihl.clone();
        tiny.truncate(40);
        assert!(matches!(
            parse_ip_packet(&tiny),
            Err(ParseError::Truncated { needed: 60, .. })
        ));
        // IHL 15 eats the ICMP header as options: what follows is not a reply.
        assert!(parse_ip_packet(&long_ihl).is_err());

        let mut below_header = good.clone();
        below_header[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            parse_ip_packet(&below_header),
            Err(ParseError::BadTotalLength {
                total: 19,
                header: 20
            })
        );

        // Shorter than the quoted headers: the packet ends there.
        let mut cut = good.clone();
        cut[2..4].copy_from_slice(&40u16.to_be_bytes());
        assert!(matches!(
            parse_ip_packet(&cut),
            Err(ParseError::Truncated { .. })
        ));

        // Longer than what we have: a cut snapshot, still parsed.
        let mut longer = good.clone();
        longer[2..4].copy_from_slice(&1400u16.to_be_bytes());
        assert_eq!(parse_ip_packet(&longer).unwrap().key, p.key());

        // Link-layer padding after the packet is ignored.
        let mut padded = good.clone();
        padded.extend_from_slice(&[0x20; 200]);
        let r = parse_ip_packet(&padded).unwrap();
        assert!(r.mpls.is_empty() && !r.mpls_incomplete);
    }

    #[test]
    fn later_fragments_are_rejected() {
        let p = probe(Protocol::Udp, false);
        let mut packet = from_router(false, &icmp_error(false, 11, 0, &datagram(&p), None));
        packet[6..8].copy_from_slice(&0x2010u16.to_be_bytes());
        assert_eq!(
            parse_ip_packet(&packet),
            Err(ParseError::Fragment { offset: 0x10 })
        );
    }

    #[test]
    fn foreign_icmp_is_not_a_reply() {
        let p = probe(Protocol::Icmp, false);
        let quoted = datagram(&p);
        // Redirect, echo request, router advertisement, parameter problem, timestamp.
        for ty in [5, 8, 9, 12, 13] {
            let icmp = icmp_error(false, ty, 1, &quoted, None);
            let got = parse_ip_packet(&from_router(false, &icmp));
            assert_eq!(
                got,
                Err(ParseError::NotAReply {
                    icmp_type: ty,
                    icmp_code: 1
                })
            );
        }
        let p = probe(Protocol::Icmp, true);
        // Packet too big, parameter problem, echo request, router advertisement, neighbour solicitation.
        for ty in [2, 4, 128, 134, 135] {
            let icmp = icmp_error(true, ty, 0, &datagram(&p), None);
            let got = parse_transport(router(true), 58, &icmp);
            assert_eq!(
                got,
                Err(ParseError::NotAReply {
                    icmp_type: ty,
                    icmp_code: 0
                })
            );
        }
    }

    #[test]
    fn ipv4_options_in_outer_and_quoted_headers() {
        let p = probe(Protocol::Udp, false);
        let mut quoted = datagram(&p);
        // Quoted header with a 4-byte option (NOPs + end): IHL 6.
        quoted[0] = 0x46;
        quoted.splice(20..20, [1, 1, 1, 0]);
        let icmp = icmp_error(false, 11, 0, &quoted, None);
        let mut packet = from_router(false, &icmp);
        // Outer header with a router-alert option: IHL 6, total length + 4.
        packet[0] = 0x46;
        packet.splice(20..20, [0x94, 4, 0, 0]);
        let total = packet.len() as u16;
        packet[2..4].copy_from_slice(&total.to_be_bytes());
        let r = parse_ip_packet(&packet).unwrap();
        assert_eq!(r.key, p.key());
    }

    #[test]
    fn ipv6_extension_headers_are_stepped_over() {
        let p = probe(Protocol::Udp, true);
        let icmp = icmp_error(true, 3, 0, &datagram(&p), None);
        // Hop-by-hop options (8 bytes: next header ICMPv6, length 0, padding).
        let mut payload = vec![58, 0, 1, 4, 0, 0, 0, 0];
        payload.extend_from_slice(&icmp);
        let packet = ipv6(IPV6_HOP_BY_HOP, ROUTER6, SRC6, 64, &payload);
        assert_eq!(parse_ip_packet(&packet).unwrap().key, p.key());

        let packet = ipv6(59, ROUTER6, SRC6, 64, &icmp);
        assert_eq!(
            parse_ip_packet(&packet),
            Err(ParseError::Ipv6Extension { next_header: 59 })
        );
    }

    #[test]
    fn quoted_datagrams_that_are_not_our_probes() {
        let p = probe(Protocol::Udp, false);
        let mut gre = datagram(&p);
        gre[9] = 47;
        let icmp = icmp_error(false, 11, 0, &gre, None);
        assert_eq!(
            parse_transport(router(false), 1, &icmp),
            Err(ParseError::UnknownQuotedProtocol { proto: 47 })
        );

        let mut echo_reply = datagram(&probe(Protocol::Icmp, false));
        echo_reply[20] = 0;
        let icmp = icmp_error(false, 11, 0, &echo_reply, None);
        assert_eq!(
            parse_transport(router(false), 1, &icmp),
            Err(ParseError::QuotedNotEchoRequest { icmp_type: 0 })
        );

        // An ICMPv6 error quoting an IPv4 datagram.
        let icmp = icmp_error(true, 3, 0, &datagram(&p), None);
        assert_eq!(
            parse_transport(router(true), 58, &icmp),
            Err(ParseError::QuotedIpVersion {
                expected: 6,
                got: 4
            })
        );
    }

    #[test]
    fn wrong_versions_and_protocols() {
        assert!(matches!(
            parse_ip_packet(&[]),
            Err(ParseError::Truncated {
                needed: 1,
                got: 0,
                ..
            })
        ));
        assert_eq!(
            parse_ip_packet(&[0x55; 60]),
            Err(ParseError::BadIpVersion(5))
        );
        let udp = ipv4(17, ROUTER4, SRC4, 9, &[0; 16]);
        assert_eq!(
            parse_ip_packet(&udp),
            Err(ParseError::UnexpectedProtocol { proto: 17 })
        );
        assert_eq!(
            parse_transport(router(true), 1, &[0; 64]),
            Err(ParseError::FamilyMismatch {
                src: router(true),
                proto: 1
            })
        );
        assert_eq!(
            parse_transport(router(false), 58, &[0; 64]),
            Err(ParseError::FamilyMismatch {
                src: router(false),
                proto: 58
            })
        );
    }

    #[test]
    fn reply_kinds_print_and_serialize_as_one_token() {
        let unreachable = ReplyKind::DestinationUnreachable {
            code: 3,
            reached: true,
        };
        assert_eq!(unreachable.to_string(), "destination_unreachable/3");
        assert_eq!(ReplyKind::TcpSynAck.to_string(), "tcp_syn_ack");
        assert_eq!(
            serde_json::to_string(&ReplyKind::TimeExceeded).unwrap(),
            "\"time_exceeded\""
        );
        assert_eq!(
            serde_json::to_string(&unreachable).unwrap(),
            r#"{"destination_unreachable":{"code":3,"reached":true}}"#
        );
    }

    /// xorshift64*: a deterministic generator, so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// The fuzz target's property in the normal suite: random and mutated inputs never
    /// panic, and whatever parses has a well-formed key.
    #[test]
    fn random_and_mutated_inputs_never_panic() {
        let mut rng = Rng(0x686f_7077_6174_6368);
        let mut seeds = Vec::new();
        for v6 in [false, true] {
            for protocol in Protocol::ALL {
                let p = probe(protocol, v6);
                let ext = mpls_extension(&labels(2));
                for length in [Length::Rfc4884, Length::Compat] {
                    let icmp = icmp_error(
                        v6,
                        time_exceeded(v6),
                        0,
                        &datagram(&p),
                        Some((&ext, length)),
                    );
                    seeds.push(from_router(v6, &icmp));
                }
            }
            let tcp = tcp_reply(&probe(Protocol::Tcp, v6), TCP_SYN | TCP_ACK, 5);
            seeds.push(if v6 {
                ipv6(6, DST6, SRC6, 1, &tcp)
            } else {
                ipv4(6, DST4, SRC4, 1, &tcp)
            });
        }
        let check = |input: &[u8], proto: u8| {
            let results = [
                parse_ip_packet(input),
                parse_transport(IpAddr::V4(ROUTER4), proto, input),
                parse_transport(IpAddr::V6(ROUTER6), proto, input),
            ];
            for r in results.into_iter().flatten() {
                assert!(r.probe_destination().is_some());
                assert!(r.mpls.len() <= MPLS_CAPACITY);
            }
        };
        let mut parsed = 0;
        for round in 0..60_000 {
            let mut input = if round % 4 == 0 {
                // Pure noise, with a plausible version nibble half the time.
                let mut v: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
                if let Some(first) = v.first_mut() {
                    if rng.below(2) == 0 {
                        *first = (*first & 0x0f) | if rng.below(2) == 0 { 0x40 } else { 0x60 };
                    }
                }
                v
            } else {
                seeds[rng.below(seeds.len())].clone()
            };
            // Flip, overwrite with boundary values, cut or extend.
            for _ in 0..1 + rng.below(6) {
                if input.is_empty() {
                    break;
                }
                let at = rng.below(input.len());
                match rng.below(5) {
                    0 => input[at] ^= 1 << rng.below(8),
                    1 => input[at] = [0, 1, 4, 5, 0x0f, 0x20, 0x7f, 0x80, 0xff][rng.below(9)],
                    2 => input.truncate(at),
                    3 => input.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
                    _ => input[at] = rng.next() as u8,
                }
            }
            let proto = [1, 6, 17, 58, 0][rng.below(5)];
            check(&input, proto);
            parsed += usize::from(parse_ip_packet(&input).is_ok());
        }
        // The mutations must leave many inputs parseable, or the test explores nothing deep.
        assert!(parsed > 10_000, "only {parsed} inputs parsed");
    }
}
