//! Sending probes: raw sockets, one per address family and protocol, that set the
//! TTL per packet and can collect the kernel's software transmit timestamp.
//!
//! The engine talks to a [`ProbeTransport`] so it can be tested without privileges.

use std::collections::HashMap;
use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::SystemTime;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};
use socket2::{Domain, Protocol as SockProtocol, SockAddr, Socket, Type};

use super::clock;
use super::types::Ttl;
use super::wire::Protocol;
use crate::sys::{self, setsockopt};

/// One probe ready to leave: its transport bytes and where they go.
#[derive(Debug, Clone, Copy)]
pub struct OutgoingProbe<'a> {
    pub dst: IpAddr,
    pub protocol: Protocol,
    pub ttl: Ttl,
    /// Transport header and payload; the kernel adds the IP header.
    pub bytes: &'a [u8],
}

/// When a probe left, by each clock we can read.
#[derive(Debug, Clone, Copy)]
pub struct SendStamp {
    /// CLOCK_MONOTONIC just before `sendmsg`.
    pub user_mono_ns: u64,
    /// Wall clock just before `sendmsg`, for display.
    pub sent_at: SystemTime,
    /// Handle for the kernel's software transmit stamp, when the socket asked for one.
    pub kernel_tx: Option<TxStampId>,
}

/// Identifies one send's SO_TIMESTAMPING transmit stamp (socket slot and OPT_ID counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxStampId {
    slot: usize,
    id: u32,
}

/// Errors from sending probes.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("opening a raw {protocol} socket for {family} needs root or CAP_NET_RAW: {source}")]
    NoPrivilege {
        family: &'static str,
        protocol: Protocol,
        source: io::Error,
    },
    #[error("opening a raw {protocol} socket for {family}: {source}")]
    Open {
        family: &'static str,
        protocol: Protocol,
        source: io::Error,
    },
    #[error("{family} is not available on this host: {source}")]
    FamilyUnavailable {
        family: &'static str,
        source: io::Error,
    },
    #[error("binding the probe socket to {what}: {source}")]
    Bind { what: String, source: io::Error },
    #[error("sending a {protocol} probe to {dst}: {source}")]
    Send {
        protocol: Protocol,
        dst: IpAddr,
        source: io::Error,
    },
}

/// Sends probes. Implemented by raw sockets, and by fakes in tests.
pub trait ProbeTransport: Send + Sync + 'static {
    /// Sends one probe with its TTL and returns when it left.
    fn send(&self, probe: &OutgoingProbe<'_>) -> Result<SendStamp, TransportError>;

    /// The kernel's software transmit stamp (CLOCK_REALTIME ns) for a send, once
    /// the kernel has reported it. Each stamp can be taken once.
    fn take_tx_stamp(&self, id: TxStampId) -> Option<u64>;
}

/// Where probes leave from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceSelection {
    /// Source address for IPv4 probes.
    pub v4: Option<std::net::Ipv4Addr>,
    /// Source address for IPv6 probes.
    pub v6: Option<std::net::Ipv6Addr>,
    /// Interface to send through (SO_BINDTODEVICE).
    pub interface: Option<String>,
}

/// Raw sockets for every (family, protocol) pair, opened up front so a missing
/// privilege shows at start and not at the first probe.
pub struct RawTransport {
    slots: Vec<Slot>,
}

struct Slot {
    v6: bool,
    protocol: Protocol,
    socket: Result<Socket, UnavailableFamily>,
    /// Serialises `sendmsg` with the OPT_ID counter it advances.
    sender: Mutex<TxCounter>,
    tx_timestamps: bool,
}

#[derive(Debug)]
struct UnavailableFamily(io::Error);

#[derive(Default)]
struct TxCounter {
    next_id: u32,
    /// Transmit stamps read from the error queue and not yet taken, by OPT_ID.
    stamps: HashMap<u32, u64>,
}

/// How many unclaimed transmit stamps a socket keeps; older ones belong to probes
/// that timed out long ago.
const MAX_UNCLAIMED_STAMPS: usize = 8192;

const PROTOCOLS: [Protocol; 3] = [Protocol::Icmp, Protocol::Udp, Protocol::Tcp];

fn slot_index(v6: bool, protocol: Protocol) -> usize {
    let p = PROTOCOLS
        .iter()
        .position(|p| *p == protocol)
        .expect("every protocol is in PROTOCOLS");
    usize::from(v6) * PROTOCOLS.len() + p
}

impl RawTransport {
    /// Opens the sockets. `tx_timestamps` asks the kernel for SO_TIMESTAMPING
    /// software transmit stamps on every send (the `kernel` timestamp source).
    pub fn open(source: &SourceSelection, tx_timestamps: bool) -> Result<Self, TransportError> {
        let mut slots = Vec::with_capacity(6);
        for v6 in [false, true] {
            for protocol in PROTOCOLS {
                let socket = match open_raw(v6, protocol, source, tx_timestamps) {
                    Ok(socket) => Ok(socket),
                    Err(OpenError::Unavailable(err)) => Err(UnavailableFamily(err)),
                    Err(OpenError::Fatal(err)) => return Err(err),
                };
                slots.push(Slot {
                    v6,
                    protocol,
                    socket,
                    sender: Mutex::new(TxCounter::default()),
                    tx_timestamps,
                });
            }
        }
        Ok(RawTransport { slots })
    }
}

enum OpenError {
    /// The address family is missing (IPv6 disabled): probes to it fail later.
    Unavailable(io::Error),
    Fatal(TransportError),
}

fn family_name(v6: bool) -> &'static str {
    if v6 {
        "IPv6"
    } else {
        "IPv4"
    }
}

fn open_raw(
    v6: bool,
    protocol: Protocol,
    source: &SourceSelection,
    tx_timestamps: bool,
) -> Result<Socket, OpenError> {
    let family = family_name(v6);
    let (domain, proto) = match (v6, protocol) {
        (false, Protocol::Icmp) => (Domain::IPV4, SockProtocol::ICMPV4),
        (true, Protocol::Icmp) => (Domain::IPV6, SockProtocol::ICMPV6),
        (false, Protocol::Udp) => (Domain::IPV4, SockProtocol::UDP),
        (true, Protocol::Udp) => (Domain::IPV6, SockProtocol::UDP),
        (false, Protocol::Tcp) => (Domain::IPV4, SockProtocol::TCP),
        (true, Protocol::Tcp) => (Domain::IPV6, SockProtocol::TCP),
    };
    let socket = Socket::new(domain, Type::RAW, Some(proto)).map_err(|source| {
        match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => {
                OpenError::Fatal(TransportError::NoPrivilege {
                    family,
                    protocol,
                    source,
                })
            }
            Some(libc::EAFNOSUPPORT) => OpenError::Unavailable(source),
            _ => OpenError::Fatal(TransportError::Open {
                family,
                protocol,
                source,
            }),
        }
    })?;
    let fatal = |source| {
        OpenError::Fatal(TransportError::Open {
            family,
            protocol,
            source,
        })
    };
    // These sockets only send. A raw socket still gets a copy of every incoming
    // packet of its protocol; a classic BPF filter that accepts nothing keeps
    // that from costing a copy per packet.
    drop_all_incoming(&socket).map_err(fatal)?;
    socket.set_nonblocking(true).map_err(fatal)?;
    if let Some(interface) = &source.interface {
        socket
            .bind_device(Some(interface.as_bytes()))
            .map_err(|source| {
                OpenError::Fatal(TransportError::Bind {
                    what: format!("interface {interface}"),
                    source,
                })
            })?;
    }
    let bind_addr: Option<IpAddr> = if v6 {
        source.v6.map(IpAddr::V6)
    } else {
        source.v4.map(IpAddr::V4)
    };
    if let Some(addr) = bind_addr {
        socket
            .bind(&SockAddr::from(SocketAddr::new(addr, 0)))
            .map_err(|source| {
                OpenError::Fatal(TransportError::Bind {
                    what: format!("source address {addr}"),
                    source,
                })
            })?;
    }
    if tx_timestamps {
        enable_tx_timestamps(&socket).map_err(fatal)?;
    }
    Ok(socket)
}

/// Attaches `ret #0`: the socket receives nothing.
fn drop_all_incoming(socket: &Socket) -> io::Result<()> {
    let mut filter = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    setsockopt(socket, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)
}

fn enable_tx_timestamps(socket: &Socket) -> io::Result<()> {
    let flags: libc::c_uint = libc::SOF_TIMESTAMPING_TX_SOFTWARE
        | libc::SOF_TIMESTAMPING_SOFTWARE
        | libc::SOF_TIMESTAMPING_OPT_ID
        | libc::SOF_TIMESTAMPING_OPT_TSONLY;
    setsockopt(socket, libc::SOL_SOCKET, libc::SO_TIMESTAMPING, &flags)
}

impl ProbeTransport for RawTransport {
    fn send(&self, probe: &OutgoingProbe<'_>) -> Result<SendStamp, TransportError> {
        let v6 = probe.dst.is_ipv6();
        let slot_id = slot_index(v6, probe.protocol);
        let slot = &self.slots[slot_id];
        let socket = slot.socket.as_ref().map_err(|UnavailableFamily(err)| {
            TransportError::FamilyUnavailable {
                family: family_name(v6),
                source: io::Error::from_raw_os_error(
                    err.raw_os_error().unwrap_or(libc::EAFNOSUPPORT),
                ),
            }
        })?;
        let mut counter = sys::lock(&slot.sender);
        let user_mono_ns = clock::monotonic_ns();
        let sent_at = SystemTime::now();
        send_with_ttl(socket, probe).map_err(|source| TransportError::Send {
            protocol: probe.protocol,
            dst: probe.dst,
            source,
        })?;
        let kernel_tx = if slot.tx_timestamps {
            let id = counter.next_id;
            counter.next_id = counter.next_id.wrapping_add(1);
            drain_error_queue(socket, &mut counter.stamps);
            Some(TxStampId { slot: slot_id, id })
        } else {
            None
        };
        debug_assert_eq!(slot.v6, v6);
        debug_assert_eq!(slot.protocol, probe.protocol);
        Ok(SendStamp {
            user_mono_ns,
            sent_at,
            kernel_tx,
        })
    }

    fn take_tx_stamp(&self, id: TxStampId) -> Option<u64> {
        let slot = self.slots.get(id.slot)?;
        let socket = slot.socket.as_ref().ok()?;
        let mut counter = sys::lock(&slot.sender);
        if let Some(ns) = counter.stamps.remove(&id.id) {
            return Some(ns);
        }
        drain_error_queue(socket, &mut counter.stamps);
        counter.stamps.remove(&id.id)
    }
}

/// `sendmsg` with the TTL (IPv4) or hop limit (IPv6) as ancillary data, so
/// concurrent probes with different TTLs share one socket without races.
fn send_with_ttl(socket: &Socket, probe: &OutgoingProbe<'_>) -> io::Result<()> {
    let addr = SockAddr::from(SocketAddr::new(probe.dst, 0));
    let (level, kind) = if probe.dst.is_ipv6() {
        (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT)
    } else {
        (libc::IPPROTO_IP, libc::IP_TTL)
    };
    let ttl = libc::c_int::from(probe.ttl.get());
    // Room for one cmsg carrying a c_int, aligned as the kernel expects.
    let mut control = [0u64; 4];
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(mem::size_of::<libc::c_int>() as u32) } as usize;
    debug_assert!(space <= mem::size_of_val(&control));
    let mut iov = libc::iovec {
        iov_base: probe.bytes.as_ptr() as *mut libc::c_void,
        iov_len: probe.bytes.len(),
    };
    // SAFETY: msghdr is plain data; every pointer we set refers to a live local
    // (addr, iov, control) that outlives the sendmsg call.
    unsafe {
        let mut msg: libc::msghdr = mem::zeroed();
        msg.msg_name = addr.as_ptr() as *mut libc::c_void;
        msg.msg_namelen = addr.len();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = kind;
        (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<libc::c_int>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), ttl);
        let sent = libc::sendmsg(socket.as_raw_fd(), &msg, 0);
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Moves every transmit stamp waiting on the socket's error queue into `stamps`.
fn drain_error_queue(socket: &Socket, stamps: &mut HashMap<u32, u64>) {
    loop {
        let mut cmsg_buf = nix::cmsg_space!(
            nix::sys::socket::Timestamps,
            libc::sock_extended_err,
            libc::sockaddr_in6
        );
        let mut data = [0u8; 64];
        let mut iov = [io::IoSliceMut::new(&mut data)];
        let msg = match recvmsg::<SockaddrStorage>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_buf),
            MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(msg) => msg,
            Err(_) => return,
        };
        let mut stamp = None;
        let mut id = None;
        let Ok(cmsgs) = msg.cmsgs() else { return };
        for cmsg in cmsgs {
            match cmsg {
                ControlMessageOwned::ScmTimestampsns(ts) => {
                    let sw = ts.system;
                    stamp = Some(sw.tv_sec() as u64 * 1_000_000_000 + sw.tv_nsec() as u64);
                }
                ControlMessageOwned::Ipv4RecvErr(err, _)
                | ControlMessageOwned::Ipv6RecvErr(err, _)
                    if err.ee_origin == libc::SO_EE_ORIGIN_TIMESTAMPING =>
                {
                    id = Some(err.ee_data);
                }
                _ => {}
            }
        }
        if let (Some(id), Some(ns)) = (id, stamp) {
            if stamps.len() >= MAX_UNCLAIMED_STAMPS {
                // Probes this old have timed out; their stamps will never be asked for.
                let newest = id;
                stamps.retain(|k, _| newest.wrapping_sub(*k) < (MAX_UNCLAIMED_STAMPS / 2) as u32);
            }
            stamps.insert(id, ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_and_protocol_has_its_own_slot() {
        let mut seen = std::collections::HashSet::new();
        for v6 in [false, true] {
            for p in PROTOCOLS {
                assert!(seen.insert(slot_index(v6, p)));
            }
        }
        assert_eq!(seen.len(), 6);
        assert!(seen.iter().all(|i| *i < 6));
    }
}
