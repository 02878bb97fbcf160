//! hopwatch's kernel programs: a TC egress classifier that stamps our outgoing
//! probes (and writes the transmit timestamp into our STAMP packets, see
//! stamp.rs), and
//! a TC ingress classifier that matches replies to those stamps and sends one
//! [`ReplyEventOf`] per answered probe to userspace.
//!
//! The contract (map names, key layout, event layout, counters) lives in
//! probe-common; the loader is service/src/probe/ebpf/. The programs never
//! drop a packet, and modify only our own STAMP packets; they return `TC_ACT_UNSPEC` (TCX
//! "next") rather than `TC_ACT_OK` (TCX "pass"), because OK would end the chain
//! and skip the TC programs of other tools attached after ours.
#![no_std]
#![no_main]

mod parse;
mod stamp;

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    helpers::{bpf_ktime_get_ns, bpf_ktime_get_tai_ns},
    macros::{classifier, map},
    maps::{Array, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::TcContext,
};
use hopwatch_probe_common::{
    counter, ProbeFilter, ProbeKey, ReplyEventOf, EVENTS_BYTES, PROBE_TX_CAPACITY, REPLY_SNAP_LEN,
    REPLY_SNAP_SMALL,
    STAMP_PORTS_CAPACITY,
};

use parse::{Net, ParseError, Reply};

// Map statics are named exactly as probe_common::maps says; the loader looks
// them up by those names.

/// Egress stamps of in-flight probes. LRU so unanswered probes age out on their own.
#[map]
static PROBE_TX: LruHashMap<ProbeKey, u64> = LruHashMap::with_max_entries(PROBE_TX_CAPACITY, 0);

/// The flow range userspace owns; one entry, written by the loader.
#[map]
static PROBE_FILTER: Array<ProbeFilter> = Array::with_max_entries(1, 0);

/// Local UDP ports of this process's STAMP senders and reflectors: their
/// packets get the transmit timestamp (T1 or T3) written at egress. The value
/// counts the packets rewritten (per CPU: no atomics on this target). Empty
/// unless a STAMP session or reflector runs.
#[map]
static STAMP_PORTS: PerCpuHashMap<u16, u64> =
    PerCpuHashMap::with_max_entries(STAMP_PORTS_CAPACITY, 0);

/// Matched replies for userspace.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Per-CPU counters: the bpf target has no atomic add, and per-CPU slots need none.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[inline(always)]
fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: the slot belongs to this CPU and a TC program is not preempted
        // by another program on the same CPU while it runs this increment.
        unsafe { *slot += 1 };
    }
}

/// The configuration userspace wrote, or `None` while it has not enabled stamping.
#[inline(always)]
fn filter() -> Option<&'static ProbeFilter> {
    let f = PROBE_FILTER.get(0)?;
    if f.enabled == 0 {
        return None;
    }
    Some(f)
}

#[inline(always)]
fn in_range(f: &ProbeFilter, flow: u16) -> bool {
    flow >= f.flow_lo && flow < f.flow_hi
}

/// A receive stamp older than this is not believed: the TAI offset userspace
/// wrote must be stale (it moves in whole seconds), so the TC clock is used.
const MAX_RECEIVE_STAMP_AGE_NS: u64 = 500_000_000;

/// When the reply arrived, on CLOCK_MONOTONIC like the egress stamps, from the
/// skb's receive stamp; `None` when it has none that can be trusted.
///
/// The kernel stamps a received skb as it enters the stack (`netif_rx` /
/// `netif_receive_skb`, when any socket asked for receive stamps; the loader
/// holds one that does). That is earlier than TC ingress by the backlog wait and
/// by the packet taps (a capture's copy) that run before TC, and it is the very
/// stamp a packet capture records. It is CLOCK_REALTIME, which BPF cannot read;
/// CLOCK_TAI it can, and TAI = REALTIME + the TAI offset. So the stamp's age is
/// taken on TAI and subtracted from the monotonic clock read next to it.
#[inline(always)]
fn receive_stamp(net: &Net<'_>, f: &ProbeFilter) -> Option<u64> {
    let realtime = net.receive_stamp();
    if realtime == 0 {
        return None;
    }
    // SAFETY: helpers without preconditions.
    let (mono_now, tai_now) = unsafe { (bpf_ktime_get_ns(), bpf_ktime_get_tai_ns()) };
    let received_tai = realtime.wrapping_add(f.tai_offset_ns as u64);
    let age = tai_now.wrapping_sub(received_tai);
    // A stamp "from the future" wraps to a huge age and fails this test too.
    if age <= MAX_RECEIVE_STAMP_AGE_NS && age <= mono_now {
        Some(mono_now - age)
    } else {
        None
    }
}

#[classifier]
pub fn hopwatch_egress(ctx: TcContext) -> i32 {
    // Parse failures on egress are not ours to count: only probe-shaped packets
    // in our flow range are of interest, and those are built by us.
    let _ = try_egress(&ctx);
    TC_ACT_UNSPEC
}

fn try_egress(ctx: &TcContext) -> Result<(), ParseError> {
    let Some(config) = PROBE_FILTER.get(0) else {
        return Ok(());
    };
    let net = Net::new(ctx);
    // Our probes and replies come from our sockets. Without this, a router would
    // stamp (and churn the LRU map with) forwarded client traffic whose ports
    // happen to fall in our flow range.
    if !net.is_local() {
        return Ok(());
    }
    let ip = match parse::outer_ip(&net) {
        Some(ip) => ip?,
        None => return Ok(()),
    };
    if let Some(port) = stamp::udp_source_port(&net, &ip)? {
        if let Some(written) = STAMP_PORTS.get_ptr_mut(&port) {
            match stamp::write_transmit_timestamp(&net, &ip, config) {
                Ok(true) => {
                    // SAFETY: this CPU's slot of a live map value; TC programs are
                    // not preempted by another program on the same CPU.
                    unsafe { *written += 1 };
                    count(counter::STAMP_TX_WRITTEN);
                }
                Ok(false) => {}
                Err(_) => count(counter::STAMP_TX_FAILED),
            }
            return Ok(());
        }
    }
    if config.enabled == 0 {
        return Ok(());
    }
    let Some(key) = parse::egress_key(&net, &ip)? else {
        return Ok(());
    };
    if !in_range(config, key.flow) {
        return Ok(());
    }
    // The entry is made first and stamped last: an LRU insert can take
    // microseconds (refilling its free list, evicting), and every nanosecond
    // spent here after the stamp would read as network time.
    if PROBE_TX.insert(key, 0, 0).is_err() {
        count(counter::EGRESS_MAP_FULL);
        return Ok(());
    }
    let Some(slot) = PROBE_TX.get_ptr_mut(key) else {
        count(counter::EGRESS_MAP_FULL);
        return Ok(());
    };
    // SAFETY: helper without preconditions; `slot` points at the live value
    // just inserted (map values stay valid for the program's RCU section).
    unsafe { *slot = bpf_ktime_get_ns() };
    count(counter::EGRESS_STAMPED);
    Ok(())
}

#[classifier]
pub fn hopwatch_ingress(ctx: TcContext) -> i32 {
    if try_ingress(&ctx).is_err() {
        count(counter::PARSE_ERROR);
    }
    TC_ACT_UNSPEC
}

fn try_ingress(ctx: &TcContext) -> Result<(), ParseError> {
    let Some(config) = filter() else {
        return Ok(());
    };
    let net = Net::new(ctx);
    let Some(reply) = parse::ingress_reply(&net)? else {
        return Ok(());
    };
    if !in_range(config, reply.key.flow) {
        return Ok(());
    }
    // The fallback stamp is read first, before the map work below delays it.
    // SAFETY: helper without preconditions.
    let tc_now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the value is copied out at once; a concurrent delete cannot free it
    // under us because map values stay valid for the program's RCU section.
    let Some(tx_ns) = (unsafe { PROBE_TX.get(reply.key) }).copied() else {
        count(counter::INGRESS_UNMATCHED);
        return Ok(());
    };
    // 0 is an entry whose probe has not left yet (egress stamps it last): no
    // reply can be ours then, so this one is a stray with a colliding key.
    if tx_ns == 0 {
        count(counter::INGRESS_UNMATCHED);
        return Ok(());
    }
    // Whoever deletes the stamp owns the reply: a duplicate reply racing on another
    // CPU finds it gone and is counted as unmatched instead of emitted twice.
    if PROBE_TX.remove(reply.key).is_err() {
        count(counter::INGRESS_UNMATCHED);
        return Ok(());
    }
    let rx_ns = match receive_stamp(&net, config) {
        Some(received) => received,
        None => {
            count(counter::INGRESS_TC_CLOCK);
            tc_now
        }
    };
    emit(&net, &reply, tx_ns, rx_ns);
    Ok(())
}

/// Writes the event straight into the ring buffer (it is too big for the
/// 512-byte BPF stack), including a snapshot of the reply for userspace
/// parsing: in the small form when the whole reply fits, so the ring holds
/// more replies per byte, else in the full form.
#[inline(always)]
fn emit(net: &Net<'_>, reply: &Reply, tx_ns: u64, rx_ns: u64) {
    if reply.ip_len <= REPLY_SNAP_SMALL as u32 {
        emit_sized::<REPLY_SNAP_SMALL>(net, reply, tx_ns, rx_ns);
    } else {
        emit_sized::<REPLY_SNAP_LEN>(net, reply, tx_ns, rx_ns);
    }
}

/// [`emit`] for one event size. `SNAP` is a power of two (asserted in
/// probe-common), as [`verifier_bounded_len`] needs.
#[inline(always)]
fn emit_sized<const SNAP: usize>(net: &Net<'_>, reply: &Reply, tx_ns: u64, rx_ns: u64) {
    let Some(mut entry) = EVENTS.reserve::<ReplyEventOf<SNAP>>(0) else {
        count(counter::RINGBUF_DROP);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved, writable, 8-byte aligned event; all
    // writes go through raw field pointers because the memory is uninitialised.
    unsafe {
        core::ptr::addr_of_mut!((*ev).key).write(reply.key);
        core::ptr::addr_of_mut!((*ev).responder).write(reply.responder);
        core::ptr::addr_of_mut!((*ev).tx_ns).write(tx_ns);
        core::ptr::addr_of_mut!((*ev).rx_ns).write(rx_ns);
        core::ptr::addr_of_mut!((*ev).ifindex).write(net.ifindex());
        core::ptr::addr_of_mut!((*ev).reply_proto).write(reply.proto);
        core::ptr::addr_of_mut!((*ev).icmp_type).write(reply.icmp_type);
        core::ptr::addr_of_mut!((*ev).icmp_code).write(reply.icmp_code);
        core::ptr::addr_of_mut!((*ev)._pad).write(0);
        core::ptr::addr_of_mut!((*ev)._pad2).write(0);
        let packet = core::ptr::addr_of_mut!((*ev).packet).cast::<u8>();
        let snap_len = snapshot::<SNAP>(net, packet, reply.ip_len);
        core::ptr::addr_of_mut!((*ev).snap_len).write(snap_len);
    }
    entry.submit(0);
    count(counter::INGRESS_MATCHED);
}

/// Copies up to `SNAP` bytes of the reply, from its IP header on, into
/// `packet` and returns how many are valid. Ring buffer memory is not zeroed
/// by the kernel, so the buffer is cleared first: userspace never sees stale bytes.
///
/// # Safety
/// `packet` must be valid for `SNAP` bytes of writes and 8-byte aligned.
#[inline(always)]
unsafe fn snapshot<const SNAP: usize>(net: &Net<'_>, packet: *mut u8, ip_len: u32) -> u32 {
    let words = packet.cast::<u64>();
    for i in 0..SNAP / 8 {
        // SAFETY: in bounds of the SNAP-byte, 8-aligned buffer.
        unsafe { words.add(i).write(0) };
    }
    let mut len = ip_len;
    if len > SNAP as u32 {
        len = SNAP as u32;
    }
    if len == 0 {
        return 0;
    }
    let len = verifier_bounded_len::<SNAP>(len);
    // SAFETY: `len` is at most SNAP, the buffer's size.
    if unsafe { net.copy_from_start(packet, len) } {
        len
    } else {
        // The skb is shorter than its IP header claims; keep the event (its RTT is
        // valid) without a snapshot.
        0
    }
}

/// Returns `len` (already in 1..=SNAP) in a form whose bound the verifier
/// can see in the very register passed to the helper.
///
/// A plain clamp is not enough: LLVM may test a zero-extended copy of the value and
/// pass the original register, whose bounds the verifier then does not know
/// ("R4 invalid zero-sized read", seen with an earlier version of this code).
/// `black_box` hides the clamp from LLVM, so it must keep the mask below, and
/// `((len - 1) & (SNAP - 1)) + 1` is the identity on 1..=SNAP (SNAP a power
/// of two) that the verifier reads as exactly that range.
#[inline(always)]
fn verifier_bounded_len<const SNAP: usize>(len: u32) -> u32 {
    let opaque = core::hint::black_box(len);
    (opaque.wrapping_sub(1) & (SNAP as u32 - 1)) + 1
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // Unreachable in a verified program (the verifier rejects any path that
    // could get here), but no_std needs a handler.
    loop {}
}

/// License for the kernel: helpers like bpf_ktime_get_ns and ring buffers need a
/// GPL-compatible program.
#[no_mangle]
#[link_section = "license"]
pub static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
