//! Receive stamping: the socket whose presence keeps the kernel stamping
//! received packets, the stamp the ingress program prefers to its own clock.

use crate::sys;

/// A socket that asks for receive timestamps and does nothing else.
///
/// The kernel stamps received packets (`skb->tstamp`) only while at least one
/// socket on the system wants such stamps (the `netstamp_needed` switch). The
/// ingress program prefers that stamp to its own clock, because it is taken
/// as the packet enters the stack, before backlog queueing and packet taps;
/// holding this socket guarantees it exists. It costs one clock read per
/// received packet, system-wide, as any `SO_TIMESTAMP` user (chrony, ptp4l,
/// tcpdump with some options) already does.
pub(super) struct ReceiveStamping(#[allow(dead_code)] socket2::Socket);

impl ReceiveStamping {
    /// `None` (and a warning) when the socket cannot be made: replies are then
    /// timed at TC ingress and counted in `ingress_tc_clock`.
    pub(super) fn enable() -> Option<ReceiveStamping> {
        let socket = match socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None) {
            Ok(socket) => socket,
            Err(error) => {
                tracing::warn!(%error, "eBPF: cannot open the receive-stamping socket; replies are timed at TC ingress");
                return None;
            }
        };
        let on: libc::c_int = 1;
        if let Err(error) = sys::setsockopt(&socket, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &on) {
            tracing::warn!(%error, "eBPF: cannot turn on receive stamping; replies are timed at TC ingress");
            return None;
        }
        Some(ReceiveStamping(socket))
    }
}
