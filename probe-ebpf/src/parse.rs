//! Bounds-checked packet parsing for the TC programs: turns an outgoing probe or an
//! incoming reply into the [`ProbeKey`] both sides agree on (see probe-common).
//!
//! Every read goes through `bpf_skb_load_bytes_relative(.., BPF_HDR_START_NET)`:
//! offsets count from the IP header whatever the link layer is (Ethernet, VLAN
//! offload, tun/WireGuard without L2 header, loopback), the helper checks bounds
//! itself, and it also reads non-linear skbs (an ICMP error whose quote sits in a
//! page fragment), which direct packet access cannot.

use aya_ebpf::{
    bindings::{__sk_buff, bpf_hdr_start_off::BPF_HDR_START_NET},
    helpers::bpf_skb_load_bytes_relative,
    programs::TcContext,
};
use hopwatch_probe_common::{family, ipproto, ProbeKey};

/// EtherTypes as they appear in `__sk_buff::protocol`.
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;

const IPV4_MIN_HDR: u32 = 20;
const IPV6_HDR: u32 = 40;
/// ICMP and ICMPv6 headers, and the part of a transport header an ICMP error
/// is guaranteed to quote (RFC 792 / RFC 4443), are 8 bytes.
const ICMP_HDR: u32 = 8;
/// TCP header up to and including the flags byte.
const TCP_HDR_FLAGS: usize = 14;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAM_PROBLEM: u8 = 12;

const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
const ICMPV6_TIME_EXCEEDED: u8 = 3;
const ICMPV6_PARAM_PROBLEM: u8 = 4;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

const TCP_RST: u8 = 0x04;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// A packet that should have parsed (an IP packet, an ICMP error, a TCP reply)
/// but was truncated or malformed. Counted as `PARSE_ERROR` at ingress.
pub struct ParseError;

/// A reply to one of our probes, as found at ingress.
pub struct Reply {
    /// The probe it answers.
    pub key: ProbeKey,
    /// The reply's source address.
    pub responder: [u8; 16],
    /// ICMP, ICMPv6 or TCP.
    pub proto: u8,
    /// ICMP type/code, or TCP flags and 0.
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// Length of the reply from its IP header on, as its IP header says.
    pub ip_len: u32,
}

/// The skb, read relative to its network header.
pub struct Net<'a> {
    ctx: &'a TcContext,
}

impl<'a> Net<'a> {
    pub fn new(ctx: &'a TcContext) -> Self {
        Net { ctx }
    }

    fn skb(&self) -> *mut __sk_buff {
        self.ctx.skb.skb
    }

    /// The context pointer, for helpers that write the packet.
    pub fn raw(&self) -> *mut __sk_buff {
        self.skb()
    }

    /// Bytes in the packet from skb->data (the link-layer header at TC) on.
    pub fn len(&self) -> u32 {
        // SAFETY: `len` is a readable context field for TC programs.
        unsafe { (*self.skb()).len }
    }

    /// Copies `N` bytes at `off` (from the IP header) onto the stack.
    #[inline(always)]
    pub fn read<const N: usize>(&self, off: u32) -> Result<[u8; N], ParseError> {
        let mut buf = [0u8; N];
        // SAFETY: the helper writes at most N bytes into `buf`, which is N bytes long.
        let ret = unsafe {
            bpf_skb_load_bytes_relative(
                self.skb().cast(),
                off,
                buf.as_mut_ptr().cast(),
                N as u32,
                BPF_HDR_START_NET,
            )
        };
        if ret == 0 {
            Ok(buf)
        } else {
            Err(ParseError)
        }
    }

    /// Copies `len` bytes from the IP header on into `dst`; `len` must already be
    /// bounded by the caller in a way the verifier can see (1..=dst.len()).
    ///
    /// # Safety
    /// `dst` must be valid for `len` bytes of writes.
    #[inline(always)]
    pub unsafe fn copy_from_start(&self, dst: *mut u8, len: u32) -> bool {
        // SAFETY: the caller guarantees `dst` is writable for `len` bytes.
        unsafe {
            bpf_skb_load_bytes_relative(self.skb().cast(), 0, dst.cast(), len, BPF_HDR_START_NET)
                == 0
        }
    }

    /// The L3 protocol from the skb metadata, not from an L2 header, so it works on
    /// devices without one.
    pub fn ethertype(&self) -> u16 {
        // SAFETY: the kernel hands TC programs a valid `__sk_buff`.
        u16::from_be(unsafe { (*self.skb()).protocol } as u16)
    }

    /// Whether a local socket owns the packet. Forwarded packets have none, so a
    /// router running hopwatch does not stamp its clients' traffic.
    pub fn is_local(&self) -> bool {
        // SAFETY: `sk` is a readable context field for TC programs (kernel >= 5.1).
        !unsafe { (*self.skb()).__bindgen_anon_2.sk }.is_null()
    }

    /// Index of the interface the program runs on.
    pub fn ifindex(&self) -> u32 {
        // SAFETY: as above.
        unsafe { (*self.skb()).ifindex }
    }

    /// The skb's receive timestamp (CLOCK_REALTIME ns), or 0 when the kernel did
    /// not take one. At TC ingress the kernel returns 0 for a delivery time of
    /// another clock, so a non-zero value is always a realtime receive stamp.
    pub fn receive_stamp(&self) -> u64 {
        // SAFETY: `tstamp` is a readable context field for TC programs.
        unsafe { (*self.skb()).tstamp }
    }
}

#[inline(always)]
fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

#[inline(always)]
fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

#[inline(always)]
fn addr4(b: &[u8], i: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = b[i];
    a[1] = b[i + 1];
    a[2] = b[i + 2];
    a[3] = b[i + 3];
    a
}

#[inline(always)]
fn addr6(b: &[u8], i: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[i..i + 16]);
    a
}

/// An IP header: what the key needs from it, and where its payload starts.
pub struct Ip {
    pub family: u8,
    pub proto: u8,
    src: [u8; 16],
    dst: [u8; 16],
    /// Offset of the transport header from the start of this IP header.
    pub hdr_len: u32,
    /// Total length of the datagram (header included).
    pub total_len: u32,
    /// Non-first IPv4 fragments carry no transport header.
    pub first_fragment: bool,
}

#[inline(always)]
fn ipv4(net: &Net<'_>, off: u32) -> Result<Ip, ParseError> {
    let h: [u8; IPV4_MIN_HDR as usize] = net.read(off)?;
    let ihl = u32::from(h[0] & 0x0f) * 4;
    if h[0] >> 4 != 4 || ihl < IPV4_MIN_HDR {
        return Err(ParseError);
    }
    Ok(Ip {
        family: family::IPV4,
        proto: h[9],
        src: addr4(&h, 12),
        dst: addr4(&h, 16),
        hdr_len: ihl,
        total_len: u32::from(be16(&h, 2)),
        first_fragment: be16(&h, 6) & 0x1fff == 0,
    })
}

/// IPv6 without extension headers: our probes never carry any, so a packet whose
/// next header is an extension is simply not one of ours.
#[inline(always)]
fn ipv6(net: &Net<'_>, off: u32) -> Result<Ip, ParseError> {
    let h: [u8; IPV6_HDR as usize] = net.read(off)?;
    if h[0] >> 4 != 6 {
        return Err(ParseError);
    }
    Ok(Ip {
        family: family::IPV6,
        proto: h[6],
        src: addr6(&h, 8),
        dst: addr6(&h, 24),
        hdr_len: IPV6_HDR,
        total_len: IPV6_HDR + u32::from(be16(&h, 4)),
        first_fragment: true,
    })
}

/// The packet's own IP header, chosen by the skb's protocol. `None` for non-IP.
#[inline(always)]
pub fn outer_ip(net: &Net<'_>) -> Option<Result<Ip, ParseError>> {
    match net.ethertype() {
        ETH_P_IP => Some(ipv4(net, 0)),
        ETH_P_IPV6 => Some(ipv6(net, 0)),
        _ => None,
    }
}

/// The probe key of an outgoing packet with IP header `ip`, if it is a
/// probe-shaped packet (echo request, UDP datagram, TCP SYN). The flow range is
/// checked by the caller.
#[inline(always)]
pub fn egress_key(net: &Net<'_>, ip: &Ip) -> Result<Option<ProbeKey>, ParseError> {
    if !ip.first_fragment {
        return Ok(None);
    }
    probe_key(net, ip, ip.hdr_len, false)
}

/// Builds the key of a probe from its IP header `ip` and its transport header at
/// `l4` (offset from the outermost IP header). Used on outgoing probes and on the
/// probe an ICMP error quotes (`quoted`), where only 8 transport bytes are
/// guaranteed, which is exactly what each probe type needs.
#[inline(always)]
fn probe_key(
    net: &Net<'_>,
    ip: &Ip,
    l4: u32,
    quoted: bool,
) -> Result<Option<ProbeKey>, ParseError> {
    let t: [u8; ICMP_HDR as usize] = match ip.proto {
        ipproto::ICMP | ipproto::ICMPV6 | ipproto::UDP | ipproto::TCP => net.read(l4)?,
        _ => return Ok(None),
    };
    let (flow, seq) = match ip.proto {
        ipproto::ICMP if ip.family == family::IPV4 && t[0] == ICMP_ECHO_REQUEST => {
            (be16(&t, 4), u32::from(be16(&t, 6)))
        }
        ipproto::ICMPV6 if ip.family == family::IPV6 && t[0] == ICMPV6_ECHO_REQUEST => {
            (be16(&t, 4), u32::from(be16(&t, 6)))
        }
        ipproto::UDP => (be16(&t, 0), u32::from(be16(&t, 6))),
        ipproto::TCP => {
            // An ICMP error quotes only 8 bytes, not the flags: trust that a quoted
            // TCP segment of ours was a SYN (its key still has to match a stamp).
            if !quoted {
                let flags: [u8; 1] = net.read(l4 + 13)?;
                if flags[0] & (TCP_SYN | TCP_ACK) != TCP_SYN {
                    return Ok(None);
                }
            }
            (be16(&t, 0), be32(&t, 4))
        }
        _ => return Ok(None),
    };
    Ok(Some(ProbeKey {
        dst: ip.dst,
        family: ip.family,
        proto: ip.proto,
        flow,
        seq,
    }))
}

/// Finds which probe an incoming packet answers, if it is a reply at all.
#[inline(always)]
pub fn ingress_reply(net: &Net<'_>) -> Result<Option<Reply>, ParseError> {
    let ip = match outer_ip(net) {
        Some(ip) => ip?,
        None => return Ok(None),
    };
    if !ip.first_fragment {
        return Ok(None);
    }
    let l4 = ip.hdr_len;
    match (ip.family, ip.proto) {
        (family::IPV4, ipproto::ICMP) => {
            let icmp: [u8; ICMP_HDR as usize] = net.read(l4)?;
            match icmp[0] {
                ICMP_ECHO_REPLY => Ok(Some(echo_reply(&ip, &icmp))),
                ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAM_PROBLEM => {
                    let quoted = ipv4(net, l4 + ICMP_HDR)?;
                    icmp_error(net, &ip, &icmp, &quoted)
                }
                _ => Ok(None),
            }
        }
        (family::IPV6, ipproto::ICMPV6) => {
            let icmp: [u8; ICMP_HDR as usize] = net.read(l4)?;
            match icmp[0] {
                ICMPV6_ECHO_REPLY => Ok(Some(echo_reply(&ip, &icmp))),
                ICMPV6_DEST_UNREACH
                | ICMPV6_PACKET_TOO_BIG
                | ICMPV6_TIME_EXCEEDED
                | ICMPV6_PARAM_PROBLEM => {
                    let quoted = ipv6(net, l4 + ICMP_HDR)?;
                    icmp_error(net, &ip, &icmp, &quoted)
                }
                _ => Ok(None),
            }
        }
        (_, ipproto::TCP) => tcp_reply(net, &ip),
        _ => Ok(None),
    }
}

/// An echo reply answers the echo request to its source with the same id/seq.
#[inline(always)]
fn echo_reply(ip: &Ip, icmp: &[u8; ICMP_HDR as usize]) -> Reply {
    Reply {
        key: ProbeKey {
            dst: ip.src,
            family: ip.family,
            proto: ip.proto,
            flow: be16(icmp, 4),
            seq: u32::from(be16(icmp, 6)),
        },
        responder: ip.src,
        proto: ip.proto,
        icmp_type: icmp[0],
        icmp_code: icmp[1],
        ip_len: ip.total_len,
    }
}

/// An ICMP error answers the probe whose headers it quotes.
#[inline(always)]
fn icmp_error(
    net: &Net<'_>,
    ip: &Ip,
    icmp: &[u8; ICMP_HDR as usize],
    quoted: &Ip,
) -> Result<Option<Reply>, ParseError> {
    let l4 = ip.hdr_len + ICMP_HDR + quoted.hdr_len;
    let Some(key) = probe_key(net, quoted, l4, true)? else {
        return Ok(None);
    };
    Ok(Some(Reply {
        key,
        responder: ip.src,
        proto: ip.proto,
        icmp_type: icmp[0],
        icmp_code: icmp[1],
        ip_len: ip.total_len,
    }))
}

/// A SYN-ACK or an RST answers the SYN whose sequence number it acknowledges.
/// An RST without ACK carries no acknowledgment (it answers a non-SYN), so it
/// cannot name a probe and is skipped.
#[inline(always)]
fn tcp_reply(net: &Net<'_>, ip: &Ip) -> Result<Option<Reply>, ParseError> {
    let t: [u8; TCP_HDR_FLAGS] = net.read(ip.hdr_len)?;
    let flags = t[13];
    let syn_ack = flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK;
    let rst_ack = flags & (TCP_RST | TCP_ACK) == TCP_RST | TCP_ACK;
    if !syn_ack && !rst_ack {
        return Ok(None);
    }
    Ok(Some(Reply {
        key: ProbeKey {
            dst: ip.src,
            family: ip.family,
            proto: ipproto::TCP,
            flow: be16(&t, 2),
            seq: be32(&t, 8).wrapping_sub(1),
        },
        responder: ip.src,
        proto: ipproto::TCP,
        icmp_type: flags,
        icmp_code: 0,
        ip_len: ip.total_len,
    }))
}
