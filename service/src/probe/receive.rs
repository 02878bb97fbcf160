//! Receiving replies without eBPF: raw sockets for ICMP, ICMPv6 and TCP that
//! read every reply, stamp it (SO_TIMESTAMPING software stamps when asked, else
//! the userspace clock) and hand it to the correlator.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};
use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use super::clock;
use super::correlate::{Correlator, ReplyObservation, ReplyTiming};
use super::parse::{parse_ip_packet, parse_transport};
use crate::sys::setsockopt;

/// Errors opening the receive sockets.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("opening a raw {what} receive socket needs root or CAP_NET_RAW: {source}")]
    NoPrivilege {
        what: &'static str,
        source: io::Error,
    },
    #[error("opening a raw {what} receive socket: {source}")]
    Open {
        what: &'static str,
        source: io::Error,
    },
    #[error("enabling SO_TIMESTAMPING receive stamps on the {what} socket: {source}")]
    Timestamping {
        what: &'static str,
        source: io::Error,
    },
}

struct Receiver {
    what: &'static str,
    v6: bool,
    proto: u8,
    socket: AsyncFd<Socket>,
    kernel_stamps: bool,
}

/// Opens the receive sockets and spawns one task per socket. IPv6 sockets are
/// skipped (with a log line) where IPv6 is disabled.
pub fn spawn_receivers(
    kernel_stamps: bool,
    correlator: Arc<Correlator>,
) -> Result<Vec<JoinHandle<()>>, ReceiveError> {
    let specs: [(&'static str, bool, SockProtocol, u8); 4] = [
        (
            "ICMP",
            false,
            SockProtocol::ICMPV4,
            libc::IPPROTO_ICMP as u8,
        ),
        (
            "ICMPv6",
            true,
            SockProtocol::ICMPV6,
            libc::IPPROTO_ICMPV6 as u8,
        ),
        (
            "TCP/IPv4",
            false,
            SockProtocol::TCP,
            libc::IPPROTO_TCP as u8,
        ),
        ("TCP/IPv6", true, SockProtocol::TCP, libc::IPPROTO_TCP as u8),
    ];
    let mut receivers = Vec::new();
    for (what, v6, protocol, proto) in specs {
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let socket = match Socket::new(domain, Type::RAW, Some(protocol)) {
            Ok(socket) => socket,
            Err(err) if err.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                tracing::info!(
                    socket = what,
                    "IPv6 is unavailable; not listening for IPv6 replies"
                );
                continue;
            }
            Err(source) if matches!(source.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => {
                return Err(ReceiveError::NoPrivilege { what, source })
            }
            Err(source) => return Err(ReceiveError::Open { what, source }),
        };
        socket
            .set_nonblocking(true)
            .map_err(|source| ReceiveError::Open { what, source })?;
        // Replies can arrive in bursts of thousands per second; a larger buffer
        // keeps them from being dropped while the task is scheduled.
        let _ = socket.set_recv_buffer_size(4 << 20);
        if kernel_stamps {
            let flags: libc::c_uint =
                libc::SOF_TIMESTAMPING_RX_SOFTWARE | libc::SOF_TIMESTAMPING_SOFTWARE;
            setsockopt(&socket, libc::SOL_SOCKET, libc::SO_TIMESTAMPING, &flags)
                .map_err(|source| ReceiveError::Timestamping { what, source })?;
        }
        // SAFETY: the Socket owns its descriptor, and nothing closes or replaces
        // it while the AsyncFd holds it.
        let socket = unsafe { AsyncFd::register(socket) }.map_err(|err| ReceiveError::Open {
            what,
            source: err.into(),
        })?;
        receivers.push(Receiver {
            what,
            v6,
            proto,
            socket,
            kernel_stamps,
        });
    }
    Ok(receivers
        .into_iter()
        .map(|receiver| {
            let correlator = Arc::clone(&correlator);
            tokio::spawn(async move { receiver.run(&correlator).await })
        })
        .collect())
}

impl Receiver {
    async fn run(self, correlator: &Correlator) {
        let mut buf = vec![0u8; 65536];
        loop {
            let mut guard = match self.socket.readable().await {
                Ok(guard) => guard,
                Err(err) => {
                    tracing::error!(socket = self.what, %err, "reply socket failed; no more replies from it");
                    return;
                }
            };
            loop {
                match self.read_one(&mut buf) {
                    Ok(Some(observation)) => {
                        correlator.deliver(observation);
                    }
                    Ok(None) => {}
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        guard.clear_ready();
                        break;
                    }
                    Err(err) => {
                        tracing::warn!(socket = self.what, %err, "reading a reply failed");
                        guard.clear_ready();
                        break;
                    }
                }
            }
        }
    }

    /// Reads one packet; `Ok(None)` for packets that are not replies to probes.
    fn read_one(&self, buf: &mut [u8]) -> io::Result<Option<ReplyObservation>> {
        let mut cmsg_buf = nix::cmsg_space!(nix::sys::socket::Timestamps);
        let mut iov = [io::IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrStorage>(
            self.socket.get_ref().as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_buf),
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(io::Error::from)?;
        let user_rx_mono_ns = clock::monotonic_ns();
        let len = msg.bytes;
        let mut rx_realtime_ns = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for cmsg in cmsgs {
                if let ControlMessageOwned::ScmTimestampsns(ts) = cmsg {
                    let sw = ts.system;
                    rx_realtime_ns = Some(sw.tv_sec() as u64 * 1_000_000_000 + sw.tv_nsec() as u64);
                }
            }
        }
        let source: Option<IpAddr> = msg.address.and_then(|addr: SockaddrStorage| {
            addr.as_sockaddr_in()
                .map(|a| IpAddr::V4(a.ip()))
                .or_else(|| addr.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())))
        });
        let packet = &iov[0][..len];
        // IPv4 raw sockets deliver the IP header; IPv6 raw sockets deliver only
        // the transport message, the source coming from recvmsg.
        let parsed = if self.v6 {
            match source {
                Some(src) => parse_transport(src, self.proto, packet),
                None => return Ok(None),
            }
        } else {
            parse_ip_packet(packet)
        };
        let Ok(reply) = parsed else {
            // Most packets on a raw socket are other traffic, not malformed replies.
            return Ok(None);
        };
        let timing = match (self.kernel_stamps, rx_realtime_ns) {
            (true, Some(rx_realtime_ns)) if rx_realtime_ns > 0 => {
                ReplyTiming::KernelRx { rx_realtime_ns }
            }
            _ => ReplyTiming::UserspaceOnly,
        };
        Ok(Some(ReplyObservation {
            reply,
            timing,
            user_rx_mono_ns,
        }))
    }
}
