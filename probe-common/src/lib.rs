//! Types shared by hopwatch's kernel programs (probe-ebpf) and its userspace (service).
//!
//! Everything here is `#[repr(C)]`, fixed-size and free of padding, because the
//! kernel writes these bytes and userspace reads them back. Sizes are asserted at
//! compile time so a field change that would silently break the contract fails
//! the build on both sides.
#![no_std]

/// IP protocol numbers used on the wire.
pub mod ipproto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// Address family tags used in [`ProbeKey::family`].
pub mod family {
    pub const IPV4: u8 = 4;
    pub const IPV6: u8 = 6;
}

/// The identity of one probe on the wire.
///
/// The kernel builds it from an outgoing probe at TC egress, and again from the
/// reply at TC ingress (from the header an ICMP error quotes, from an echo reply,
/// or from a TCP SYN-ACK/RST), so the two meet in one hash map.
///
/// Probes are flow-stable per target (Paris traceroute): the fields ECMP routers
/// hash on stay constant for a target, and the per-probe part lives where those
/// routers do not look:
///
/// | protocol  | `flow`                 | `seq`                               |
/// |-----------|------------------------|-------------------------------------|
/// | ICMP echo | echo identifier        | echo sequence (checksum kept fixed) |
/// | UDP       | source port            | UDP checksum (steered by payload)   |
/// | TCP SYN   | source port            | TCP sequence number                 |
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProbeKey {
    /// Destination address of the probe. IPv4 uses the first four bytes; the rest are zero.
    pub dst: [u8; 16],
    /// [`family::IPV4`] or [`family::IPV6`].
    pub family: u8,
    /// The probe's transport protocol, one of [`ipproto`].
    pub proto: u8,
    /// ICMP echo identifier or transport source port, host byte order.
    pub flow: u16,
    /// ICMP echo sequence, UDP checksum or TCP sequence number, host byte order.
    pub seq: u32,
}

/// Which probe flows belong to this hopwatch process.
///
/// Userspace allocates every target's `flow` (ICMP identifier or source port)
/// from `[flow_lo, flow_hi)` and writes this range into the `PROBE_FILTER` map,
/// so the egress program stamps only our probes and leaves other traffic alone.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeFilter {
    pub flow_lo: u16,
    pub flow_hi: u16,
    /// Non-zero once userspace has configured the range; zero stamps nothing.
    pub enabled: u32,
    /// CLOCK_TAI − CLOCK_REALTIME in ns (adjtimex's `tai`, whole seconds; 0 until
    /// an NTP daemon sets it). The ingress program needs it to place the skb's
    /// receive stamp (CLOCK_REALTIME) on CLOCK_MONOTONIC; userspace keeps it current.
    pub tai_offset_ns: i64,
}

/// How many bytes of a reply, from its IP header on, travel to userspace with the
/// event. Enough for the quoted datagram plus RFC 4884 extensions (MPLS labels).
pub const REPLY_SNAP_LEN: usize = 256;

/// The snapshot of a reply no longer than this travels in a [`SmallReplyEvent`].
/// The default 64-byte probe's replies fit (92 bytes over IPv4, 112 over
/// IPv6); a reply with RFC 4884 extensions (its quote padded to 128 bytes)
/// or to a large probe does not. A small event is 200 bytes against 328, so
/// the ring holds as many replies in less memory (see [`EVENTS_BYTES`]).
pub const REPLY_SNAP_SMALL: usize = 128;

/// One matched reply with room for a [`REPLY_SNAP_LEN`]-byte snapshot.
pub type ReplyEvent = ReplyEventOf<REPLY_SNAP_LEN>;
/// One matched reply of at most [`REPLY_SNAP_SMALL`] bytes.
pub type SmallReplyEvent = ReplyEventOf<REPLY_SNAP_SMALL>;

/// One matched reply, sent from TC ingress to userspace through the ring buffer,
/// with room for `SNAP` bytes of the reply. The ingress program picks the
/// smallest form the reply fits in; userspace tells them apart by the record's
/// length and widens a small one with [`ReplyEventOf::widen`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ReplyEventOf<const SNAP: usize> {
    /// The probe this reply answers.
    pub key: ProbeKey,
    /// Source address of the reply (a router, or the target). Layout as `ProbeKey::dst`.
    pub responder: [u8; 16],
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the probe left at TC egress.
    pub tx_ns: u64,
    /// When the reply arrived, on the same clock as `tx_ns`: the skb's receive
    /// stamp (taken as the packet entered the stack, the stamp a packet capture
    /// records) when the kernel set one, else `bpf_ktime_get_ns()` at TC ingress
    /// (counted as [`counter::INGRESS_TC_CLOCK`]).
    pub rx_ns: u64,
    /// Interface the reply arrived on.
    pub ifindex: u32,
    /// Protocol of the reply itself: ICMP, ICMPv6 or TCP.
    pub reply_proto: u8,
    /// ICMP type and code of the reply; for TCP replies, the TCP flags and 0.
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub _pad: u8,
    /// How many bytes of `packet` are valid.
    pub snap_len: u32,
    pub _pad2: u32,
    /// The reply from its IP header on, for userspace to parse extensions from.
    pub packet: [u8; SNAP],
}

impl<const SNAP: usize> ReplyEventOf<SNAP> {
    /// Round-trip time as the kernel saw it.
    pub fn rtt_ns(&self) -> u64 {
        self.rx_ns.saturating_sub(self.tx_ns)
    }

    /// The same event in the full-size form: every field copied, the snapshot's
    /// bytes past `SNAP` zero (`snap_len` already says they are not valid).
    pub fn widen(&self) -> ReplyEvent {
        let mut packet = [0u8; REPLY_SNAP_LEN];
        let kept = SNAP.min(REPLY_SNAP_LEN);
        packet[..kept].copy_from_slice(&self.packet[..kept]);
        ReplyEvent {
            key: self.key,
            responder: self.responder,
            tx_ns: self.tx_ns,
            rx_ns: self.rx_ns,
            ifindex: self.ifindex,
            reply_proto: self.reply_proto,
            icmp_type: self.icmp_type,
            icmp_code: self.icmp_code,
            _pad: 0,
            snap_len: self.snap_len.min(kept as u32),
            _pad2: 0,
            packet,
        }
    }
}

/// Indices into the per-CPU `COUNTERS` array map.
pub mod counter {
    /// Outgoing probes that were stamped.
    pub const EGRESS_STAMPED: u32 = 0;
    /// Outgoing probes whose stamp could not be stored (map full).
    pub const EGRESS_MAP_FULL: u32 = 1;
    /// Replies matched to a stamped probe and emitted.
    pub const INGRESS_MATCHED: u32 = 2;
    /// Replies to one of our flows with no stamped probe (late duplicates, evicted).
    pub const INGRESS_UNMATCHED: u32 = 3;
    /// Packets that looked like replies but failed bounds-checked parsing.
    pub const PARSE_ERROR: u32 = 4;
    /// Events lost because the ring buffer was full.
    pub const RINGBUF_DROP: u32 = 5;
    /// Matched replies stamped with the TC ingress clock because the skb carried
    /// no usable receive stamp (network stamping off, or an implausible stamp).
    pub const INGRESS_TC_CLOCK: u32 = 6;
    /// STAMP packets (sender T1, reflector T3) whose transmit timestamp was
    /// written at TC egress.
    pub const STAMP_TX_WRITTEN: u32 = 7;
    /// STAMP packets that could not be rewritten (they keep the userspace time).
    pub const STAMP_TX_FAILED: u32 = 8;
    /// Number of counters.
    pub const COUNT: u32 = 9;
    /// Names for logs and metrics, indexed like the constants above.
    pub const NAMES: [&str; COUNT as usize] = [
        "egress_stamped",
        "egress_map_full",
        "ingress_matched",
        "ingress_unmatched",
        "parse_error",
        "ringbuf_drop",
        "ingress_tc_clock",
        "stamp_tx_written",
        "stamp_tx_failed",
    ];
}

/// Names of the maps, shared so the loader and the programs cannot drift apart.
pub mod maps {
    pub const PROBE_TX: &str = "PROBE_TX";
    pub const PROBE_FILTER: &str = "PROBE_FILTER";
    pub const EVENTS: &str = "EVENTS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const STAMP_PORTS: &str = "STAMP_PORTS";
}

/// How many local UDP ports (STAMP senders and reflectors of one process in one
/// network namespace) can have their transmit timestamps written at TC egress.
pub const STAMP_PORTS_CAPACITY: u32 = 4096;
/// Capacity of the in-flight probe map (LRU: the oldest unanswered stamps go first).
pub const PROBE_TX_CAPACITY: u32 = 1 << 16;
/// Ring buffer size in bytes (power of two, multiple of the page size).
///
/// It costs twice its size in the daemon's resident memory (the kernel maps
/// its data pages twice, so a record can be read across the wrap, and the
/// reader touches them all within one lap). 2 MiB holds 10,082 small events
/// (208 bytes each with the ring's 8-byte header): a second of replies at
/// 1,000 10-hop targets probed once a second, a little less than the 4 MiB
/// ring of full-size events it replaced (12,483 events), at half the memory
/// (docs/benchmarks.md, "The eBPF ring at half the size").
pub const EVENTS_BYTES: u32 = 1 << 21;

const _: () = assert!(core::mem::size_of::<ProbeKey>() == 24);
const _: () = assert!(core::mem::size_of::<ProbeFilter>() == 16);
const _: () =
    assert!(core::mem::size_of::<ReplyEvent>() == 24 + 16 + 8 + 8 + 4 + 4 + 8 + REPLY_SNAP_LEN);
const _: () = assert!(
    core::mem::size_of::<SmallReplyEvent>() == 24 + 16 + 8 + 8 + 4 + 4 + 8 + REPLY_SNAP_SMALL
);
// The ingress program bounds a snapshot's length with a mask.
const _: () = assert!(REPLY_SNAP_LEN.is_power_of_two() && REPLY_SNAP_SMALL.is_power_of_two());
const _: () = assert!(REPLY_SNAP_SMALL < REPLY_SNAP_LEN);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data: repr(C), no padding (asserted above), every bit pattern valid.
    unsafe impl aya::Pod for super::ProbeKey {}
    unsafe impl aya::Pod for super::ProbeFilter {}
    unsafe impl aya::Pod for super::ReplyEvent {}
    unsafe impl aya::Pod for super::SmallReplyEvent {}
}

impl ProbeFilter {
    /// Stamping enabled for flows `[flow_lo, flow_hi)`. The loader fills in the
    /// TAI offset, so callers leave it at 0.
    pub const fn flows(flow_lo: u16, flow_hi: u16) -> Self {
        ProbeFilter {
            flow_lo,
            flow_hi,
            enabled: 1,
            tai_offset_ns: 0,
        }
    }

    /// Loaded but stamping nothing (the self-check loads the programs this way).
    pub const fn disabled() -> Self {
        ProbeFilter {
            flow_lo: 0,
            flow_hi: 0,
            enabled: 0,
            tai_offset_ns: 0,
        }
    }
}

impl ProbeKey {
    /// Key for an IPv4 destination.
    pub const fn v4(dst: [u8; 4], proto: u8, flow: u16, seq: u32) -> Self {
        let mut d = [0u8; 16];
        d[0] = dst[0];
        d[1] = dst[1];
        d[2] = dst[2];
        d[3] = dst[3];
        ProbeKey {
            dst: d,
            family: family::IPV4,
            proto,
            flow,
            seq,
        }
    }

    /// Key for an IPv6 destination.
    pub const fn v6(dst: [u8; 16], proto: u8, flow: u16, seq: u32) -> Self {
        ProbeKey {
            dst,
            family: family::IPV6,
            proto,
            flow,
            seq,
        }
    }
}
