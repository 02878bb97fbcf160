//! TCP mode: latency over one long-lived connection per peer pair (firewalls and
//! ECMP see one stable flow), and the time to open a new connection.
//!
//! The echo protocol is STAMP's packets in frames: a 2-octet big-endian length,
//! then a Session-Sender packet (≥ 44 octets, padded); the reflector answers each
//! frame with a frame of the same length holding a Session-Reflector packet. Both
//! ends stamp with SO_TIMESTAMPING: receive stamps come with the read that
//! completes a frame, the sender's transmit stamp is found by its byte offset
//! (OPT_ID counts bytes on TCP). Loss does not exist on TCP (it retransmits); it
//! shows up as RTT instead, and a reply after the timeout counts as late.
//!
//! The reflector's allow list is applied when a connection is accepted (the
//! kernel completes the handshake before that, so a refused source sees a
//! connection that is closed at once), its rate limits to every frame.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::clock::ClockSync;
pub use super::framing::MAX_FRAME;
use super::framing::{header, BadLength, FrameBuffer, FRAME_HEADER};
use super::pacer::{PacedSession, Pacer};
use super::reflector::{bump, Guard};
use super::sender::{SenderConfig, SenderError, Session};
use super::socket::{enable_timestamping, read_tx_stamp, recvmsg, Stamps};
use super::timestamp::WireTimestamp;
use super::tracker::{Ignored, Shared, Tracker};
use super::wire::{ReflectorPacket, SenderPacket};
use crate::probe::clock::realtime_ns;
use crate::probe::TimestampSource;
use crate::sys;

/// How often blocked calls wake to check for shutdown.
const WAKE: Duration = Duration::from_millis(200);

/// IP + TCP header bytes (without options) plus our frame header.
pub fn header_len(ipv6: bool) -> usize {
    (if ipv6 { 40 } else { 20 }) + 20 + FRAME_HEADER
}

/// Opens the echo listener on `addr` (the UDP reflector's address and port).
pub(crate) fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(128)?;
    // accept() honours SO_RCVTIMEO, so the loop can notice a shutdown.
    socket.set_read_timeout(Some(WAKE))?;
    Ok(socket.into())
}

/// Starts the accept loop; it joins its connection threads when `stop` is set.
pub(crate) fn spawn_reflector(
    listener: TcpListener,
    guard: Arc<Guard>,
    stop: Arc<AtomicBool>,
    max_connections: usize,
    kernel_stamps: bool,
) -> io::Result<JoinHandle<()>> {
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name(format!("stamp-tcp-{local}"))
        .spawn(move || {
            let open = Arc::new(AtomicUsize::new(0));
            let mut connections: Vec<JoinHandle<()>> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                connections.retain(|c| !c.is_finished());
                let (stream, from) = match listener.accept() {
                    Ok(pair) => pair,
                    Err(e) if sys::is_transient(&e) => continue,
                    Err(error) => {
                        tracing::warn!(%local, %error, "STAMP TCP accept failed");
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                };
                if !guard.allows_source(from.ip()) {
                    bump(&guard.counters.rejected_source);
                    bump(&guard.counters.tcp_rejected);
                    continue;
                }
                if open.load(Ordering::Relaxed) >= max_connections {
                    bump(&guard.counters.tcp_rejected);
                    continue;
                }
                bump(&guard.counters.tcp_connections);
                open.fetch_add(1, Ordering::Relaxed);
                let (guard, stop, open) =
                    (Arc::clone(&guard), Arc::clone(&stop), Arc::clone(&open));
                let spawned = std::thread::Builder::new()
                    .name(format!("stamp-tcp-{from}"))
                    .spawn(move || {
                        if let Err(error) = echo(&stream, from, &guard, &stop, kernel_stamps) {
                            tracing::debug!(%from, %error, "STAMP TCP echo connection ended");
                        }
                        open.fetch_sub(1, Ordering::Relaxed);
                    });
                match spawned {
                    Ok(handle) => connections.push(handle),
                    Err(error) => {
                        tracing::warn!(%from, %error, "no thread for a STAMP TCP connection")
                    }
                }
            }
            for c in connections {
                let _ = c.join();
            }
        })
}

/// Reads frames off a stream, with the receive stamp of the read that completed
/// each one.
struct FrameReader {
    frames: FrameBuffer,
    last_rx: (u64, TimestampSource),
    kernel_stamps: bool,
}

/// What [`FrameReader::next`] found.
enum Frame {
    /// A frame body at `reader.body(range)`, stamped.
    Body {
        range: std::ops::Range<usize>,
        rx_ns: u64,
        rx_source: TimestampSource,
    },
    /// Nothing complete yet (non-blocking read, or the read timed out).
    Pending,
    /// The peer closed the connection.
    Closed,
}

/// A frame header naming an impossible length: the stream is not ours.
#[derive(Debug, thiserror::Error)]
#[error("{bad} (from {peer})")]
struct BadFrame {
    bad: BadLength,
    peer: SocketAddr,
}

impl FrameReader {
    fn new(kernel_stamps: bool) -> Self {
        FrameReader {
            frames: FrameBuffer::new(),
            last_rx: (0, TimestampSource::Userspace),
            kernel_stamps,
        }
    }

    /// The next complete frame, reading at most once (`flags` may hold MSG_DONTWAIT).
    fn next(
        &mut self,
        fd: &impl AsRawFd,
        flags: libc::c_int,
        peer: SocketAddr,
    ) -> io::Result<Frame> {
        if let Some(frame) = self.complete(peer)? {
            return Ok(frame);
        }
        let raw = match recvmsg(fd.as_raw_fd(), self.frames.spare(), flags) {
            Ok(raw) => raw,
            Err(e) if sys::is_transient(&e) => return Ok(Frame::Pending),
            Err(e) => return Err(e),
        };
        if raw.len == 0 {
            return Ok(Frame::Closed);
        }
        self.frames.filled(raw.len);
        let received = raw.received(self.kernel_stamps);
        self.last_rx = (received.rx_ns, received.rx_source);
        Ok(self.complete(peer)?.unwrap_or(Frame::Pending))
    }

    fn complete(&mut self, peer: SocketAddr) -> io::Result<Option<Frame>> {
        let range = self
            .frames
            .next_frame()
            .map_err(|bad| io::Error::new(io::ErrorKind::InvalidData, BadFrame { bad, peer }))?;
        Ok(range.map(|range| Frame::Body {
            range,
            rx_ns: self.last_rx.0,
            rx_source: self.last_rx.1,
        }))
    }

    /// The body of a frame [`FrameReader::next`] just returned.
    fn body(&self, range: std::ops::Range<usize>) -> &[u8] {
        self.frames.body(range)
    }
}

/// Serves one echo connection until it closes or the reflector stops.
fn echo(
    stream: &TcpStream,
    from: SocketAddr,
    guard: &Guard,
    stop: &AtomicBool,
    kernel_stamps: bool,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(WAKE))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let stamps = if kernel_stamps {
        Stamps::KernelRx
    } else {
        Stamps::Userspace
    };
    let kernel = enable_timestamping(stream, stamps);
    let mut reader = FrameReader::new(kernel);
    let mut out = vec![0u8; FRAME_HEADER + MAX_FRAME];
    let mut seq: u32 = 0;
    let mut clock = ClockSync::read();
    let mut clock_at = Instant::now();
    let mut writer = stream;
    while !stop.load(Ordering::Relaxed) {
        let (range, rx_ns) = match reader.next(stream, 0, from)? {
            Frame::Body { range, rx_ns, .. } => (range, rx_ns),
            Frame::Pending => continue,
            Frame::Closed => return Ok(()),
        };
        bump(&guard.counters.received);
        if !guard.admit(from.ip()) {
            continue;
        }
        let len = range.len();
        let request = SenderPacket::decode(reader.body(range))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if clock_at.elapsed() >= Duration::from_secs(1) {
            clock = ClockSync::read();
            clock_at = Instant::now();
        }
        let reply = ReflectorPacket {
            seq,
            timestamp: WireTimestamp::ntp_from_unix_nanos(realtime_ns()),
            error: clock.error_estimate(),
            ssid: request.ssid,
            receive_timestamp: WireTimestamp::ntp_from_unix_nanos(rx_ns),
            sender_seq: request.seq,
            sender_timestamp: request.timestamp,
            sender_error: request.error,
            // Not available per segment on a stream.
            sender_ttl: 0,
        };
        seq = seq.wrapping_add(1);
        out[..FRAME_HEADER].copy_from_slice(&header(len));
        reply
            .encode(&mut out[FRAME_HEADER..], len)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        writer.write_all(&out[..FRAME_HEADER + len])?;
        bump(&guard.counters.reflected);
    }
    Ok(())
}

/// Opens the long-lived connection and starts a session over it.
pub(crate) fn start_session(config: SenderConfig) -> Result<Session, SenderError> {
    let peer = config.peer;
    let connect = |source| SenderError::Connect { peer, source };
    let socket = Socket::new(Domain::for_address(peer), Type::STREAM, Some(Protocol::TCP))
        .map_err(connect)?;
    if let Some(ip) = config.source {
        socket
            .bind(&SockAddr::from(SocketAddr::new(ip, 0)))
            .map_err(connect)?;
    }
    if let Some(ttl) = config.ttl {
        if peer.is_ipv6() {
            socket
                .set_unicast_hops_v6(u32::from(ttl))
                .map_err(connect)?;
        } else {
            socket.set_ttl(u32::from(ttl)).map_err(connect)?;
        }
    }
    socket
        .connect_timeout(&SockAddr::from(peer), config.timeout)
        .map_err(connect)?;
    socket.set_nodelay(true).map_err(connect)?;
    socket
        .set_write_timeout(Some(config.timeout))
        .map_err(connect)?;
    let stream: TcpStream = socket.into();
    let local = stream.local_addr().map_err(connect)?;
    // After connect: on TCP, OPT_ID counts bytes from the current send sequence.
    let stamps = if config.kernel_stamps {
        Stamps::KernelRxTx
    } else {
        Stamps::Userspace
    };
    let kernel = enable_timestamping(&stream, stamps);
    let shared = Shared::new(config.reflector);
    let (tx, samples) = sync_channel(1 << 16);
    let stop = Arc::new(AtomicBool::new(false));
    let abort = Arc::new(AtomicBool::new(false));
    let tracker = Tracker::new(
        config.timeout,
        config.clock,
        config.reflector,
        Arc::clone(&shared),
        Some(tx),
    );
    let body_len = config.packet_size - header_len(peer.is_ipv6());
    let pacer = Pacer::new(&config, Arc::clone(&stop), Arc::clone(&abort));
    let runner = TcpRunner {
        body_len,
        out: vec![0u8; FRAME_HEADER + body_len],
        stream,
        reader: FrameReader::new(kernel),
        bytes_written: 0,
        config,
        tracker,
    };
    let thread = std::thread::Builder::new()
        .name(format!("stamp-tcp-send-{peer}"))
        .spawn(move || pacer.run(runner))
        .map_err(|source| SenderError::Thread { peer, source })?;
    Ok(Session::from_parts(
        peer, local, stop, abort, shared, samples, thread,
    ))
}

struct TcpRunner {
    stream: TcpStream,
    reader: FrameReader,
    config: SenderConfig,
    body_len: usize,
    /// The frame being built: header and body.
    out: Vec<u8>,
    bytes_written: u64,
    tracker: Tracker,
}

impl PacedSession for TcpRunner {
    fn tracker(&mut self) -> &mut Tracker {
        &mut self.tracker
    }

    fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    fn send_one(&mut self) -> Result<(), SenderError> {
        let clock = self.tracker.clock();
        let user_tx_ns = realtime_ns();
        let packet = SenderPacket {
            seq: self.tracker.next_seq(),
            timestamp: WireTimestamp::ntp_from_unix_nanos(user_tx_ns),
            error: clock.error_estimate(),
            ssid: self.config.ssid,
        };
        let body_len = self.body_len;
        self.out[..FRAME_HEADER].copy_from_slice(&header(body_len));
        packet
            .encode(&mut self.out[FRAME_HEADER..], body_len)
            .expect("frame length validated");
        self.stream
            .write_all(&self.out)
            .map_err(|source| SenderError::Send {
                peer: self.config.peer,
                source,
            })?;
        self.bytes_written += self.out.len() as u64;
        // OPT_ID on TCP: the offset of the write's last byte.
        let tx_id = (self.bytes_written - 1) as u32;
        self.tracker.sent(user_tx_ns, tx_id);
        Ok(())
    }

    fn drain(&mut self) -> Result<(), SenderError> {
        let peer = self.config.peer;
        let fd = self.stream.as_raw_fd();
        while let Ok(stamp) = read_tx_stamp(fd) {
            if let Some(stamp) = stamp {
                self.tracker.tx_stamp(stamp);
            }
        }
        loop {
            match self.reader.next(&self.stream, libc::MSG_DONTWAIT, peer) {
                Ok(Frame::Body {
                    range,
                    rx_ns,
                    rx_source,
                }) => {
                    let Ok(reply) = ReflectorPacket::decode(self.reader.body(range)) else {
                        continue;
                    };
                    match self.tracker.reply(&reply, rx_ns, rx_source, None) {
                        Ok(()) | Err(Ignored::Late) => {}
                        Err(why) => tracing::debug!(%peer, ?why, "STAMP TCP reply ignored"),
                    }
                }
                Ok(Frame::Pending) => return Ok(()),
                Ok(Frame::Closed) => {
                    return Err(SenderError::Send {
                        peer,
                        source: io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "the reflector closed the TCP echo connection",
                        ),
                    })
                }
                Err(source) => return Err(SenderError::Send { peer, source }),
            }
        }
    }
}

/// The time to open one TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ConnectSample {
    /// From the connect() call to the connection being established, on the
    /// userspace clock (includes the system calls).
    pub connect_ns: u64,
    /// The kernel's own SYN → SYN-ACK round trip (TCP_INFO `tcpi_rtt` right after
    /// the handshake: its first RTT sample), microsecond resolution.
    pub handshake_rtt_ns: Option<u64>,
}

/// Opens a new TCP connection to `peer`, times it, and closes it.
pub fn measure_connect(
    peer: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
) -> Result<ConnectSample, SenderError> {
    let connect = |source| SenderError::Connect { peer, source };
    let socket = Socket::new(Domain::for_address(peer), Type::STREAM, Some(Protocol::TCP))
        .map_err(connect)?;
    if let Some(ip) = source {
        socket
            .bind(&SockAddr::from(SocketAddr::new(ip, 0)))
            .map_err(connect)?;
    }
    // Close with RST rather than FIN: no TIME_WAIT left behind per measurement.
    socket.set_linger(Some(Duration::ZERO)).map_err(connect)?;
    let started = Instant::now();
    socket
        .connect_timeout(&SockAddr::from(peer), timeout)
        .map_err(connect)?;
    let connect_ns = started.elapsed().as_nanos() as u64;
    Ok(ConnectSample {
        connect_ns,
        handshake_rtt_ns: tcp_rtt_us(&socket).map(|us| us * 1_000),
    })
}

/// TCP_INFO's smoothed RTT in microseconds.
fn tcp_rtt_us(socket: &impl AsRawFd) -> Option<u64> {
    // SAFETY: tcp_info is plain old data; zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writes of the stated size.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0 && info.tcpi_rtt > 0).then_some(u64::from(info.tcpi_rtt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::clock::ClockTrust;
    use crate::peer::reflector::{Reflector, ReflectorConfig};
    use crate::peer::sender::Transport;

    #[test]
    fn tcp_session_over_loopback() {
        let reflector = Reflector::start(
            ReflectorConfig::new(vec!["127.0.0.1:0".parse().unwrap()]).without_ebpf(),
        )
        .unwrap();
        let mut config = SenderConfig::new(reflector.local_addrs()[0]);
        config.ebpf_t1 = false;
        config.transport = Transport::Tcp;
        config.packet_size = 128;
        config.interval = Duration::from_millis(1);
        config.count = Some(100);
        config.clock = ClockTrust::SharedClock;
        let session = Session::start(config).unwrap();
        let summary = session.wait().unwrap();
        assert_eq!((summary.sent, summary.received), (100, 100), "{summary:?}");
        assert_eq!(summary.source, Some(TimestampSource::Kernel));
        assert!(summary.rtt.unwrap().p50_ns < 1_000_000);
        let stats = reflector.stats();
        assert_eq!(stats.tcp_connections, 1);
        assert_eq!(stats.reflected, 100);
    }

    #[test]
    fn connect_time_over_loopback() {
        let reflector = Reflector::start(
            ReflectorConfig::new(vec!["127.0.0.1:0".parse().unwrap()]).without_ebpf(),
        )
        .unwrap();
        let sample =
            measure_connect(reflector.local_addrs()[0], None, Duration::from_secs(1)).unwrap();
        assert!(
            sample.connect_ns > 0 && sample.connect_ns < 100_000_000,
            "{sample:?}"
        );
        let rtt = sample
            .handshake_rtt_ns
            .expect("TCP_INFO has an RTT after the handshake");
        assert!(rtt < 10_000_000, "{sample:?}");
    }

    #[test]
    fn frames_with_impossible_lengths_end_the_connection() {
        let reflector = Reflector::start(
            ReflectorConfig::new(vec!["127.0.0.1:0".parse().unwrap()]).without_ebpf(),
        )
        .unwrap();
        let mut stream = TcpStream::connect(reflector.local_addrs()[0]).unwrap();
        stream.write_all(&[0, 10]).unwrap();
        stream.write_all(&[0u8; 10]).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 16];
        let n = std::io::Read::read(&mut stream, &mut buf).unwrap_or(0);
        assert_eq!(n, 0, "closed without a reply");
        assert_eq!(reflector.stats().reflected, 0);
    }
}
