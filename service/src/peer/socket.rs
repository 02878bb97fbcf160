//! Kernel-timestamped sockets for STAMP: SO_TIMESTAMPING software stamps on
//! receive (taken as the packet enters the stack) and on transmit (taken in the
//! driver, read back from the socket's error queue by OPT_ID), plus the received
//! TTL / hop limit the reflector copies into its reply. Falls back to the
//! userspace clock, visibly, where the kernel gives no stamp.
//!
//! Stamps are CLOCK_REALTIME nanoseconds: STAMP carries wall-clock time.

use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::probe::clock::realtime_ns;
use crate::probe::TimestampSource;
use crate::sys::setsockopt;

/// Which kernel stamps a socket asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stamps {
    /// None: the userspace clock around the system calls.
    Userspace,
    /// Receive stamps only. A reflector uses this: transmit stamps it never reads
    /// would pile up in the error queue and eat the receive buffer.
    KernelRx,
    /// Receive and transmit stamps (the sender reads the latter by OPT_ID).
    KernelRxTx,
}

impl Stamps {
    /// The SO_TIMESTAMPING flags: software stamps, transmit stamps reported with an
    /// ID per send (OPT_ID) and without the packet echoed back (OPT_TSONLY).
    fn flags(self) -> Option<libc::c_uint> {
        let rx = libc::SOF_TIMESTAMPING_RX_SOFTWARE | libc::SOF_TIMESTAMPING_SOFTWARE;
        match self {
            Stamps::Userspace => None,
            Stamps::KernelRx => Some(rx),
            Stamps::KernelRxTx => Some(
                rx | libc::SOF_TIMESTAMPING_TX_SOFTWARE
                    | libc::SOF_TIMESTAMPING_OPT_ID
                    | libc::SOF_TIMESTAMPING_OPT_TSONLY,
            ),
        }
    }
}

/// `SO_EE_ORIGIN_TIMESTAMPING` from linux/errqueue.h.
const SO_EE_ORIGIN_TIMESTAMPING: u8 = 4;
/// `SCM_TSTAMP_SND`: the stamp was taken as the driver sent the packet.
const SCM_TSTAMP_SND: u32 = 0;

/// Errors setting up a STAMP socket.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("opening a UDP socket for {addr}: {source}")]
    Open { addr: SocketAddr, source: io::Error },
    #[error("binding to {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("setting {option} on the socket bound to {addr}: {source}")]
    Option {
        option: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
}

/// One received datagram (or stream read) with its stamp.
#[derive(Clone, Copy, Debug)]
pub struct Received {
    pub len: usize,
    pub from: Option<SocketAddr>,
    /// CLOCK_REALTIME ns when the packet arrived.
    pub rx_ns: u64,
    /// Kernel when SO_TIMESTAMPING stamped it, else the userspace clock after recvmsg.
    pub rx_source: TimestampSource,
    /// TTL (IPv4) or hop limit (IPv6) of the packet as received.
    pub ttl: Option<u8>,
    /// Datagrams the kernel dropped on this socket so far (SO_RXQ_OVFL; the
    /// kernel says nothing until the first drop).
    pub dropped: Option<u32>,
}

/// A transmit stamp read from the error queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxStamp {
    /// The OPT_ID of the send: for UDP the n-th send since timestamping was
    /// enabled, for TCP the byte offset of the send's last byte.
    pub id: u32,
    /// CLOCK_REALTIME ns when the driver sent it.
    pub tx_ns: u64,
}

/// Turns on SO_TIMESTAMPING; false when not asked for or the kernel refuses (then
/// stamps come from the userspace clock and say so).
pub(crate) fn enable_timestamping(fd: &impl AsRawFd, stamps: Stamps) -> bool {
    let Some(flags) = stamps.flags() else {
        return false;
    };
    match setsockopt(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPING, &flags) {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(%err, "SO_TIMESTAMPING unavailable: STAMP timestamps come from the userspace clock");
            false
        }
    }
}

/// Asks for the received TTL / hop limit with every datagram.
fn enable_ttl_reporting(socket: &Socket, v6: bool) -> io::Result<()> {
    let on: libc::c_int = 1;
    if v6 {
        setsockopt(socket, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, &on)
    } else {
        setsockopt(socket, libc::IPPROTO_IP, libc::IP_RECVTTL, &on)
    }
}

/// A UDP socket that stamps what it sends and receives.
#[derive(Debug)]
pub struct StampSocket {
    socket: Socket,
    local: SocketAddr,
    kernel_stamps: bool,
    /// OPT_ID the next send will carry (UDP counts sends from 0).
    next_tx_id: u32,
}

impl StampSocket {
    /// Opens a UDP socket bound to `addr` with the kernel stamps asked for and TTL
    /// reporting on.
    pub fn bind(addr: SocketAddr, stamps: Stamps) -> Result<Self, SocketError> {
        let domain = Domain::for_address(addr);
        let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
            .map_err(|source| SocketError::Open { addr, source })?;
        let option = |option: &'static str| {
            move |source| SocketError::Option {
                option,
                addr,
                source,
            }
        };
        if addr.is_ipv6() {
            socket.set_only_v6(true).map_err(option("IPV6_V6ONLY"))?;
        }
        socket
            .bind(&SockAddr::from(addr))
            .map_err(|source| SocketError::Bind { addr, source })?;
        let local = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(addr);
        enable_ttl_reporting(&socket, addr.is_ipv6()).map_err(option("IP_RECVTTL"))?;
        // Counting the socket's own drops tells "the network lost it" from "we did".
        let on: libc::c_int = 1;
        setsockopt(&socket, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &on)
            .map_err(option("SO_RXQ_OVFL"))?;
        // Thousands of probes per second arrive in bursts when the thread is late.
        let _ = socket.set_recv_buffer_size(4 << 20);
        let _ = socket.set_send_buffer_size(4 << 20);
        let kernel_stamps = enable_timestamping(&socket, stamps);
        Ok(StampSocket {
            socket,
            local,
            kernel_stamps,
            next_tx_id: 0,
        })
    }

    /// Where the socket is bound (with the port the kernel chose).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Whether SO_TIMESTAMPING is on.
    pub fn kernel_stamps(&self) -> bool {
        self.kernel_stamps
    }

    /// TTL / hop limit of what we send.
    pub fn set_ttl(&self, ttl: u8) -> io::Result<()> {
        if self.local.is_ipv6() {
            self.socket.set_unicast_hops_v6(u32::from(ttl))
        } else {
            self.socket.set_ttl(u32::from(ttl))
        }
    }

    /// Accepts datagrams from `peer` only, and lets the kernel refuse (EMSGSIZE)
    /// packets larger than the path MTU instead of fragmenting them.
    pub fn connect(&mut self, peer: SocketAddr) -> io::Result<()> {
        let (level, name, value) = if peer.is_ipv6() {
            (
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                libc::IPV6_PMTUDISC_DO,
            )
        } else {
            (
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_DO,
            )
        };
        setsockopt(&self.socket, level, name, &value)?;
        self.socket.connect(&SockAddr::from(peer))?;
        // Connecting picked the source address: report it rather than the wildcard.
        if let Some(local) = self.socket.local_addr()?.as_socket() {
            self.local = local;
        }
        Ok(())
    }

    /// The kernel's current path MTU towards the connected peer.
    pub fn path_mtu(&self) -> io::Result<u32> {
        let (level, name) = if self.local.is_ipv6() {
            (libc::IPPROTO_IPV6, libc::IPV6_MTU)
        } else {
            (libc::IPPROTO_IP, libc::IP_MTU)
        };
        let mut mtu: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `mtu` and `len` are valid for writes of the stated size.
        let rc = unsafe {
            libc::getsockopt(
                self.socket.as_raw_fd(),
                level,
                name,
                (&mut mtu as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            Ok(u32::try_from(mtu).unwrap_or(0))
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Sets the receive timeout of blocking reads (the reflector wakes up to see
    /// whether it should stop).
    pub fn set_read_timeout(&self, timeout: std::time::Duration) -> io::Result<()> {
        self.socket.set_read_timeout(Some(timeout))
    }

    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.socket.set_nonblocking(nonblocking)
    }

    /// Sends `packet` to `to` and returns the OPT_ID its transmit stamp will carry.
    pub fn send_to(&mut self, packet: &[u8], to: SocketAddr) -> io::Result<u32> {
        let sent = self.socket.send_to(packet, &SockAddr::from(to))?;
        if sent != packet.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sent {sent} of {} bytes", packet.len()),
            ));
        }
        // The kernel takes the ID when it builds the datagram and gives it back on
        // failure, so it advances exactly with successful sends.
        let id = self.next_tx_id;
        self.next_tx_id = self.next_tx_id.wrapping_add(1);
        Ok(id)
    }

    /// Accounts for a send that failed after the kernel had taken its OPT_ID
    /// (dropped on the way out) and returns that ID.
    pub fn skip_tx_id(&mut self) -> u32 {
        let id = self.next_tx_id;
        self.next_tx_id = self.next_tx_id.wrapping_add(1);
        id
    }

    /// Reads one datagram (blocking unless non-blocking or with a timeout).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        let raw = recvmsg(self.socket.as_raw_fd(), buf, 0)?;
        Ok(raw.received(self.kernel_stamps))
    }

    /// Reads one transmit stamp from the error queue; `Ok(None)` when the queue
    /// holds something else (which is consumed), WouldBlock when it is empty.
    pub fn recv_tx_stamp(&self) -> io::Result<Option<TxStamp>> {
        read_tx_stamp(self.socket.as_raw_fd())
    }
}

impl AsRawFd for StampSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// Reads one message from `fd`'s error queue and returns it if it is a transmit
/// stamp (MSG_DONTWAIT: WouldBlock when empty).
pub(crate) fn read_tx_stamp(fd: RawFd) -> io::Result<Option<TxStamp>> {
    let mut empty = [0u8; 0];
    let raw = recvmsg(fd, &mut empty, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT)?;
    Ok(match (raw.ext_err, raw.sw_stamp) {
        (Some(err), Some(tx_ns))
            if err.ee_origin == SO_EE_ORIGIN_TIMESTAMPING && err.ee_info == SCM_TSTAMP_SND =>
        {
            Some(TxStamp {
                id: err.ee_data,
                tx_ns,
            })
        }
        _ => None,
    })
}

/// What one recvmsg returned, cmsgs decoded.
pub(crate) struct RawRecv {
    pub len: usize,
    pub from: Option<SocketAddr>,
    pub user_ns: u64,
    pub sw_stamp: Option<u64>,
    pub ttl: Option<u8>,
    pub dropped: Option<u32>,
    pub ext_err: Option<libc::sock_extended_err>,
}

impl RawRecv {
    pub(crate) fn received(&self, kernel_stamps: bool) -> Received {
        let (rx_ns, rx_source) = match self.sw_stamp {
            Some(ns) if kernel_stamps => (ns, TimestampSource::Kernel),
            _ => (self.user_ns, TimestampSource::Userspace),
        };
        Received {
            len: self.len,
            from: self.from,
            rx_ns,
            rx_source,
            ttl: self.ttl,
            dropped: self.dropped,
        }
    }
}

/// recvmsg(2) with room for the control messages we ask for, decoded.
pub(crate) fn recvmsg(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<RawRecv> {
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 64];
    let mut addr = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; zero is a valid starting value.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = addr.as_mut_ptr().cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control);
    // SAFETY: every pointer in `msg` refers to live buffers of the stated sizes.
    let n = unsafe { libc::recvmsg(fd, &mut msg, flags) };
    let user_ns = realtime_ns();
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let from = if msg.msg_namelen > 0 {
        // SAFETY: the kernel wrote a sockaddr of msg_namelen bytes into `addr`.
        let storage = unsafe { addr.assume_init() };
        // SAFETY: `storage` holds a valid address of the given length.
        unsafe { SockAddr::new(storage, msg.msg_namelen) }.as_socket()
    } else {
        None
    };
    let mut out = RawRecv {
        len: n as usize,
        from,
        user_ns,
        sw_stamp: None,
        ttl: None,
        dropped: None,
        ext_err: None,
    };
    // SAFETY: `msg` was filled by recvmsg; the CMSG macros walk its control buffer
    // within msg_controllen, and each payload is read unaligned at its own size.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let hdr = &*cmsg;
            let data = libc::CMSG_DATA(cmsg);
            match (hdr.cmsg_level, hdr.cmsg_type) {
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPING) => {
                    // Three timespecs: software, (deprecated), hardware.
                    let ts = std::ptr::read_unaligned(data.cast::<libc::timespec>());
                    if ts.tv_sec != 0 || ts.tv_nsec != 0 {
                        out.sw_stamp = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                    }
                }
                (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) => {
                    out.dropped = Some(std::ptr::read_unaligned(data.cast::<u32>()));
                }
                (libc::IPPROTO_IP, libc::IP_TTL) | (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                    let v = std::ptr::read_unaligned(data.cast::<libc::c_int>());
                    out.ttl = u8::try_from(v).ok();
                }
                (libc::IPPROTO_IP, libc::IP_RECVERR) | (libc::IPPROTO_IPV6, libc::IPV6_RECVERR) => {
                    out.ext_err = Some(std::ptr::read_unaligned(
                        data.cast::<libc::sock_extended_err>(),
                    ));
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(out)
}

/// The unspecified address of `ip`'s family with port 0: "any local address".
pub fn unspecified_for(ip: IpAddr) -> SocketAddr {
    match ip {
        IpAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        IpAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pair() -> (StampSocket, StampSocket) {
        let a = StampSocket::bind("127.0.0.1:0".parse().unwrap(), Stamps::KernelRxTx).unwrap();
        let b = StampSocket::bind("127.0.0.1:0".parse().unwrap(), Stamps::KernelRx).unwrap();
        (a, b)
    }

    #[test]
    fn loopback_datagrams_carry_kernel_rx_stamps_and_ttl() {
        let (mut a, b) = pair();
        b.set_read_timeout(Duration::from_secs(2)).unwrap();
        a.set_ttl(17).unwrap();
        let before = realtime_ns();
        a.send_to(&[7u8; 44], b.local_addr()).unwrap();
        let mut buf = [0u8; 64];
        let got = b.recv(&mut buf).unwrap();
        assert_eq!(got.len, 44);
        assert_eq!(got.from, Some(a.local_addr()));
        assert_eq!(got.rx_source, TimestampSource::Kernel);
        assert!(got.rx_ns >= before && got.rx_ns <= realtime_ns());
        assert_eq!(got.ttl, Some(17));
        // SO_RXQ_OVFL reports only once something was dropped.
        assert_eq!(got.dropped.unwrap_or(0), 0);
    }

    #[test]
    fn tx_stamps_come_back_with_consecutive_ids() {
        let (mut a, b) = pair();
        let mut ids = Vec::new();
        let before = realtime_ns();
        for _ in 0..3 {
            ids.push(a.send_to(&[1u8; 44], b.local_addr()).unwrap());
        }
        assert_eq!(ids, [0, 1, 2]);
        let mut stamps = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while stamps.len() < 3 && std::time::Instant::now() < deadline {
            match a.recv_tx_stamp() {
                Ok(Some(s)) => stamps.push(s),
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("error queue: {e}"),
            }
        }
        assert_eq!(stamps.iter().map(|s| s.id).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(stamps.iter().all(|s| s.tx_ns >= before));
        assert!(stamps.windows(2).all(|w| w[0].tx_ns <= w[1].tx_ns));
    }
}
