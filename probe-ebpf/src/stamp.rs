//! STAMP transmit timestamps (RFC 8762 §4.2 and §4.3) written at TC egress:
//! the sender's T1 in its test packets, the reflector's T3 in its replies.
//!
//! A timestamp a socket puts into a packet is taken before `sendto`, so the
//! whole send path (a few µs, more on a busy box) counts as network time. For
//! the reflector there is no alternative (a reply cannot carry a stamp the
//! kernel takes after it left); the sender could use SO_TIMESTAMPING's driver
//! stamp, but that comes after the packet taps, and on a busy box late. This
//! program writes the time into the packet as it passes TC egress, the last
//! hook before the device, and fixes the UDP checksum. The sender reads its T1
//! back from the reply, where the reflector echoes it (the Sender Timestamp).
//! Packets are recognised by their source port, which the loader writes into
//! `STAMP_PORTS`; only packets from local sockets are touched.
//!
//! Both packet types keep the Timestamp at payload offset 4 and the Error
//! Estimate at 12. Only NTP-format timestamps (Z bit clear) are rewritten, the
//! format hopwatch uses; a PTP-format packet is left alone.

use aya_ebpf::{
    bindings::BPF_F_MARK_MANGLED_0,
    helpers::{bpf_csum_diff, bpf_ktime_get_tai_ns, bpf_l4_csum_replace, bpf_skb_store_bytes},
};
use hopwatch_probe_common::{ipproto, ProbeFilter};

use crate::parse::{Ip, Net, ParseError};

const UDP_HDR: u32 = 8;
/// Offset of the checksum in the UDP header.
const UDP_CSUM: u32 = 6;
/// Offset of the Timestamp (T1 or T3) in the STAMP payload: after the 4-byte
/// sequence number, in the unauthenticated packets of both directions.
const T3_OFFSET: u32 = 4;
/// Offset of the Error Estimate, whose Z bit names the timestamp's format.
const ERROR_ESTIMATE_OFFSET: u32 = 12;
/// Z bit of the Error Estimate's first byte: set for PTP format.
const ERROR_ESTIMATE_Z: u8 = 0x40;
/// The shortest unauthenticated STAMP packet, either way (RFC 8762 §4.2.1, §4.3.1).
const STAMP_MIN_PAYLOAD: u32 = 44;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;
const NS_PER_S: u64 = 1_000_000_000;

/// The source port of the UDP datagram `ip` carries (the caller looks it up in
/// `STAMP_PORTS`); `None` for anything else.
#[inline(always)]
pub fn udp_source_port(net: &Net<'_>, ip: &Ip) -> Result<Option<u16>, ParseError> {
    if ip.proto != ipproto::UDP || !ip.first_fragment {
        return Ok(None);
    }
    let ports: [u8; 2] = net.read(ip.hdr_len)?;
    Ok(Some(u16::from_be_bytes(ports)))
}

/// Writes the current time into the Timestamp of the STAMP packet `ip`
/// carries and fixes the UDP checksum. Returns whether it was rewritten.
#[inline(always)]
pub fn write_transmit_timestamp(net: &Net<'_>, ip: &Ip, config: &ProbeFilter) -> Result<bool, ParseError> {
    let udp = ip.hdr_len;
    let payload = udp + UDP_HDR;
    if ip.total_len < payload + STAMP_MIN_PAYLOAD {
        return Ok(false);
    }
    let estimate: [u8; 1] = net.read(payload + ERROR_ESTIMATE_OFFSET)?;
    if estimate[0] & ERROR_ESTIMATE_Z != 0 {
        return Ok(false);
    }
    // Store and checksum helpers address the packet from skb->data, which at TC
    // is the link-layer header (none on tun/WireGuard). An outgoing local packet
    // carries no trailer, so the link header is whatever precedes the IP datagram.
    let Some(l3) = net.len().checked_sub(ip.total_len) else {
        return Err(ParseError);
    };
    if l3 > 64 {
        return Err(ParseError);
    }
    let old: [u8; 8] = net.read(payload + T3_OFFSET)?;

    // SAFETY: helper without preconditions.
    let tai = unsafe { bpf_ktime_get_tai_ns() };
    let unix = tai.wrapping_sub(config.tai_offset_ns as u64);
    let seconds = (unix / NS_PER_S + NTP_UNIX_OFFSET_S) as u32;
    let fraction = (((unix % NS_PER_S) << 32) / NS_PER_S) as u32;
    let mut new = [0u8; 8];
    new[..4].copy_from_slice(&seconds.to_be_bytes());
    new[4..].copy_from_slice(&fraction.to_be_bytes());

    let skb = net.raw();
    // SAFETY: both buffers are 8 readable bytes on the stack, as the sizes say.
    let diff = unsafe {
        bpf_csum_diff(
            old.as_ptr() as *mut u32,
            8,
            new.as_ptr() as *mut u32,
            8,
            0,
        )
    };
    if diff < 0 {
        return Err(ParseError);
    }
    // MARK_MANGLED_0: an IPv4 UDP checksum of 0 means "none" and stays 0, and a
    // computed 0 is sent as 0xffff. A checksum the device will compute
    // (CHECKSUM_PARTIAL) is left to it: the helper knows the difference.
    // SAFETY: `skb` is the program's context; the offset is inside the packet
    // (checked against the IP length above) and the helper re-checks it.
    let rc = unsafe {
        bpf_l4_csum_replace(
            skb.cast(),
            l3 + udp + UDP_CSUM,
            0,
            diff as u64,
            u64::from(BPF_F_MARK_MANGLED_0),
        )
    };
    if rc != 0 {
        return Err(ParseError);
    }
    // SAFETY: as above; `new` is 8 readable bytes.
    let rc = unsafe {
        bpf_skb_store_bytes(
            skb.cast(),
            l3 + payload + T3_OFFSET,
            new.as_ptr().cast(),
            8,
            0,
        )
    };
    if rc != 0 {
        return Err(ParseError);
    }
    Ok(true)
}
