//! The STAMP Session-Sender over UDP: one thread per session paces probes on an
//! absolute schedule (the loop in `pacer`, shared with TCP), reads replies and
//! the kernel's transmit stamps as they come, and feeds the
//! [`Tracker`](super::tracker::Tracker).
//!
//! A dedicated thread, not a tokio task: pacing at sub-millisecond intervals
//! needs a timer finer than tokio's, and a session's work is one socket.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use super::clock::ClockTrust;
use super::kernel_tx::KernelTxStamps;
use super::metrics::{ReflectorKind, Sample, Summary};
use super::pacer::{PacedSession, Pacer};
use super::socket::{unspecified_for, SocketError, StampSocket, Stamps};
use super::timestamp::WireTimestamp;
use super::tracker::{Ignored, Shared, Tracker};
use super::wire::{ReflectorPacket, SenderPacket, BASE_LEN, STAMP_PORT};
use crate::probe::clock::realtime_ns;
use crate::sys;

/// The shortest interval between probes.
pub const MIN_INTERVAL: Duration = Duration::from_micros(100);
/// Samples buffered for a slow consumer before they are dropped (and counted).
const SAMPLE_BUFFER: usize = 1 << 16;
/// Largest UDP payload.
const MAX_PAYLOAD: usize = 65_507;

/// How probes travel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// STAMP over UDP (RFC 8762): loss, reordering and duplicates per direction.
    #[default]
    Udp,
    /// STAMP packets framed over one long-lived TCP connection (see [`super::tcp`]).
    Tcp,
}

impl Transport {
    /// Header bytes in front of the STAMP packet: IP + UDP, or IP + TCP + our
    /// 2-octet frame length.
    pub fn header_len(self, ipv6: bool) -> usize {
        match self {
            Transport::Udp => (if ipv6 { 40 } else { 20 }) + 8,
            Transport::Tcp => super::tcp::header_len(ipv6),
        }
    }

    /// The smallest IP packet carrying a STAMP test packet.
    pub fn min_packet_size(self, ipv6: bool) -> usize {
        self.header_len(ipv6) + BASE_LEN
    }

    fn max_body(self) -> usize {
        match self {
            Transport::Udp => MAX_PAYLOAD,
            Transport::Tcp => super::tcp::MAX_FRAME,
        }
    }
}

/// What one session measures and how.
#[derive(Clone, Debug, Serialize)]
pub struct SenderConfig {
    /// The reflector (port 862 unless it listens elsewhere).
    pub peer: SocketAddr,
    pub transport: Transport,
    /// Local address to send from; the routing table's choice when `None`.
    pub source: Option<IpAddr>,
    pub interval: Duration,
    /// Probes to send; `None` runs until stopped.
    pub count: Option<u64>,
    /// IP packet size, headers included; the STAMP packet is padded to fill it.
    pub packet_size: usize,
    /// How long to wait for each reply.
    pub timeout: Duration,
    /// TTL / hop limit of our packets; the system default when `None`.
    pub ttl: Option<u8>,
    /// RFC 8972 session identifier (non-zero).
    pub ssid: u16,
    pub clock: ClockTrust,
    pub reflector: ReflectorKind,
    /// SO_TIMESTAMPING (else the userspace clock).
    pub kernel_stamps: bool,
    /// With `kernel_stamps`, have the eBPF egress program write T1 into each
    /// UDP packet (read back from the reply's echo); falls back to the driver's
    /// SO_TIMESTAMPING stamp, with a warning, when the programs cannot load.
    pub ebpf_t1: bool,
}

impl SenderConfig {
    /// One probe a second to `peer`, smallest packets, 2 s timeout.
    pub fn new(peer: SocketAddr) -> Self {
        SenderConfig {
            peer,
            transport: Transport::Udp,
            source: None,
            interval: Duration::from_secs(1),
            count: None,
            packet_size: Transport::Udp.min_packet_size(peer.is_ipv6()),
            timeout: Duration::from_secs(2),
            ttl: None,
            ssid: random_ssid(),
            clock: ClockTrust::default(),
            reflector: ReflectorKind::default(),
            kernel_stamps: true,
            ebpf_t1: true,
        }
    }

    /// `peer` with STAMP's port.
    pub fn to_host(ip: IpAddr) -> Self {
        Self::new(SocketAddr::new(ip, STAMP_PORT))
    }

    fn validate(&self) -> Result<(), SenderError> {
        if self.interval < MIN_INTERVAL {
            return Err(SenderError::IntervalTooShort {
                interval: self.interval,
                min: MIN_INTERVAL,
            });
        }
        let v6 = self.peer.is_ipv6();
        let min = self.transport.min_packet_size(v6);
        let max = self.transport.header_len(v6) + self.transport.max_body();
        if !(min..=max).contains(&self.packet_size) {
            return Err(SenderError::PacketSize {
                size: self.packet_size,
                min,
                max,
                transport: self.transport,
            });
        }
        if self.ssid == 0 {
            return Err(SenderError::ZeroSsid);
        }
        if let Some(source) = self.source {
            if source.is_ipv6() != v6 {
                return Err(SenderError::FamilyMismatch {
                    local: source,
                    peer: self.peer,
                });
            }
        }
        Ok(())
    }
}

/// A non-zero SSID that differs between sessions and runs, so a reflector that
/// still remembers an earlier session of ours starts a fresh counter.
fn random_ssid() -> u16 {
    let mixed = realtime_ns() ^ (u64::from(std::process::id()) << 17);
    let folded = (mixed ^ (mixed >> 16) ^ (mixed >> 32) ^ (mixed >> 48)) as u16;
    folded.max(1)
}

/// Why a session could not start or had to end.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    #[error("probe interval {interval:?} is below the minimum of {min:?}")]
    IntervalTooShort { interval: Duration, min: Duration },
    #[error("packet size {size} is outside {min}..={max} bytes for {transport:?} (IP and transport headers plus a 44-byte STAMP packet at least)")]
    PacketSize {
        size: usize,
        min: usize,
        max: usize,
        transport: Transport,
    },
    #[error("the SSID must be non-zero (RFC 8972 §3)")]
    ZeroSsid,
    #[error("source address {local} and peer {peer} are of different address families")]
    FamilyMismatch { local: IpAddr, peer: SocketAddr },
    #[error("opening the STAMP socket: {0}")]
    Socket(#[from] SocketError),
    #[error("connecting the STAMP socket to {peer}: {source}")]
    Connect { peer: SocketAddr, source: io::Error },
    #[error("packets of {size} bytes do not fit the path MTU of {mtu} bytes to {peer}; use --size {mtu} or less")]
    AboveMtu {
        size: usize,
        mtu: u32,
        peer: SocketAddr,
    },
    #[error("sending to {peer}: {source}")]
    Send { peer: SocketAddr, source: io::Error },
    #[error("waiting on the STAMP socket for {peer}: {source}")]
    Poll { peer: SocketAddr, source: io::Error },
    #[error("starting the session thread for {peer}: {source}")]
    Thread { peer: SocketAddr, source: io::Error },
    #[error("the session thread for {peer} panicked")]
    Panicked { peer: SocketAddr },
}

/// A running session. Samples stream out of [`Session::samples`]; the running
/// [`Summary`] is always available. Dropping it aborts the session.
pub struct Session {
    peer: SocketAddr,
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
    shared: Arc<Shared>,
    samples: Receiver<Sample>,
    thread: Option<JoinHandle<Result<(), SenderError>>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.peer)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Opens the socket (in the calling thread's network namespace) and starts
    /// sending.
    pub fn start(config: SenderConfig) -> Result<Session, SenderError> {
        config.validate()?;
        if config.transport == Transport::Tcp {
            return super::tcp::start_session(config);
        }
        let peer = config.peer;
        let bind = config
            .source
            .map_or_else(|| unspecified_for(peer.ip()), |ip| SocketAddr::new(ip, 0));
        let stamps = if config.kernel_stamps {
            Stamps::KernelRxTx
        } else {
            Stamps::Userspace
        };
        let mut socket = StampSocket::bind(bind, stamps)?;
        socket
            .connect(peer)
            .map_err(|source| SenderError::Connect { peer, source })?;
        if let Ok(mtu) = socket.path_mtu() {
            if config.packet_size > mtu as usize {
                return Err(SenderError::AboveMtu {
                    size: config.packet_size,
                    mtu,
                    peer,
                });
            }
        }
        if let Some(ttl) = config.ttl {
            socket
                .set_ttl(ttl)
                .map_err(|source| SenderError::Connect { peer, source })?;
        }
        socket
            .set_nonblocking(true)
            .map_err(|source| SenderError::Connect { peer, source })?;
        let local = socket.local_addr();
        let shared = Shared::new(config.reflector);
        let (tx, samples) = sync_channel(SAMPLE_BUFFER);
        let stop = Arc::new(AtomicBool::new(false));
        let abort = Arc::new(AtomicBool::new(false));
        let mut tracker = Tracker::new(
            config.timeout,
            config.clock,
            config.reflector,
            Arc::clone(&shared),
            Some(tx),
        );
        let kernel_t1 = if config.kernel_stamps && config.ebpf_t1 {
            match KernelTxStamps::register(local.port()) {
                Ok(registration) => {
                    tracker.use_kernel_t1();
                    Some(registration)
                }
                Err(error) => {
                    tracing::warn!(%peer, %error, "STAMP sender: T1 will be the driver's SO_TIMESTAMPING stamp (eBPF unavailable)");
                    None
                }
            }
        } else {
            None
        };
        let payload_len = config.packet_size - Transport::Udp.header_len(peer.is_ipv6());
        let pacer = Pacer::new(&config, Arc::clone(&stop), Arc::clone(&abort));
        let runner = Runner {
            out: vec![0u8; payload_len],
            buf: vec![0u8; payload_len.max(BASE_LEN) + 64],
            socket,
            config,
            tracker,
            shared: Arc::clone(&shared),
            _kernel_t1: kernel_t1,
        };
        let thread = std::thread::Builder::new()
            .name(format!("stamp-send-{peer}"))
            .spawn(move || pacer.run(runner))
            .map_err(|source| SenderError::Thread { peer, source })?;
        Ok(Session::from_parts(
            peer, local, stop, abort, shared, samples, thread,
        ))
    }

    /// A handle on a session thread started by a transport.
    pub(crate) fn from_parts(
        peer: SocketAddr,
        local: SocketAddr,
        stop: Arc<AtomicBool>,
        abort: Arc<AtomicBool>,
        shared: Arc<Shared>,
        samples: Receiver<Sample>,
        thread: JoinHandle<Result<(), SenderError>>,
    ) -> Session {
        Session {
            peer,
            local,
            stop,
            abort,
            shared,
            samples,
            thread: Some(thread),
        }
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Our address and port (the session's UDP source).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// One sample per probe as it resolves (answered, duplicated or lost).
    pub fn samples(&self) -> &Receiver<Sample> {
        &self.samples
    }

    /// Statistics so far.
    pub fn summary(&self) -> Summary {
        self.shared.summary()
    }

    /// Samples the consumer did not take in time.
    pub fn dropped_samples(&self) -> u64 {
        self.shared.dropped_samples.load(Ordering::Relaxed)
    }

    /// Stops sending; the session ends once the probes in flight are answered or
    /// time out.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// A handle that stops the session from elsewhere (a signal handler).
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(Arc::clone(&self.stop))
    }

    /// Whether the session thread has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the session to end (after `count` probes, or after
    /// [`stop`](Self::stop)) and returns the final statistics.
    pub fn wait(mut self) -> Result<Summary, SenderError> {
        self.join()?;
        Ok(self.shared.summary())
    }

    fn join(&mut self) -> Result<(), SenderError> {
        match self.thread.take() {
            None => Ok(()),
            Some(thread) => thread
                .join()
                .map_err(|_| SenderError::Panicked { peer: self.peer })?,
        }
    }
}

/// Stops a [`Session`] like [`Session::stop`], from another thread or task.
#[derive(Clone, Debug)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.abort.store(true, Ordering::Relaxed);
        let _ = self.join();
    }
}

/// The session thread's state.
struct Runner {
    socket: StampSocket,
    config: SenderConfig,
    /// The probe being built (the UDP payload).
    out: Vec<u8>,
    /// A received reply.
    buf: Vec<u8>,
    tracker: Tracker,
    shared: Arc<Shared>,
    /// Keeps the egress program writing T1 for our port while the session runs.
    _kernel_t1: Option<KernelTxStamps>,
}

impl PacedSession for Runner {
    fn tracker(&mut self) -> &mut Tracker {
        &mut self.tracker
    }

    fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
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
        let len = self.out.len();
        let bytes = packet
            .encode(&mut self.out, len)
            .expect("payload length validated against BASE_LEN");
        match self.socket.send_to(bytes, self.config.peer) {
            Ok(tx_id) => {
                self.tracker.sent(user_tx_ns, tx_id);
                Ok(())
            }
            Err(source) if source.raw_os_error() == Some(libc::EMSGSIZE) => {
                Err(SenderError::AboveMtu {
                    size: self.config.packet_size,
                    mtu: self.socket.path_mtu().unwrap_or(0),
                    peer: self.config.peer,
                })
            }
            // Dropped after the kernel built the datagram (a local firewall rule
            // answers EPERM, a full queue ENOBUFS): it took an OPT_ID and counts
            // as sent and lost on the way out.
            Err(source) if matches!(source.raw_os_error(), Some(libc::EPERM | libc::ENOBUFS)) => {
                tracing::debug!(peer = %self.config.peer, error = %source, "STAMP probe dropped on the way out");
                let tx_id = self.socket.skip_tx_id();
                self.tracker.sent(user_tx_ns, tx_id);
                Ok(())
            }
            // Refused before a datagram existed: an earlier ICMP port unreachable
            // from the peer surfaces as ECONNREFUSED on a connected socket, no
            // route as ENETUNREACH. The probe did not leave; the next one may.
            Err(source)
                if matches!(
                    source.raw_os_error(),
                    Some(
                        libc::ECONNREFUSED | libc::EAGAIN | libc::EHOSTUNREACH | libc::ENETUNREACH
                    )
                ) =>
            {
                tracing::debug!(peer = %self.config.peer, error = %source, "STAMP probe not sent");
                self.tracker.send_failed();
                Ok(())
            }
            Err(source) => Err(SenderError::Send {
                peer: self.config.peer,
                source,
            }),
        }
    }

    /// Reads every transmit stamp, then every reply, that is waiting. A
    /// receive error ends the reading, not the session.
    fn drain(&mut self) -> Result<(), SenderError> {
        // Transmit stamps first: a reply is never older than its probe's stamp.
        loop {
            match self.socket.recv_tx_stamp() {
                Ok(Some(stamp)) => self.tracker.tx_stamp(stamp),
                Ok(None) => {}
                Err(_) => break,
            }
        }
        loop {
            let received = match self.socket.recv(&mut self.buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    // Port unreachable from the peer: no reflector there (yet).
                    tracing::debug!(peer = %self.config.peer, "STAMP peer refused (ICMP port unreachable)");
                    continue;
                }
                Err(error) => {
                    tracing::warn!(peer = %self.config.peer, %error, "STAMP receive failed");
                    break;
                }
            };
            if let Some(dropped) = received.dropped {
                sys::lock(&self.shared.stats).socket_drops(u64::from(dropped));
            }
            let Ok(reply) = ReflectorPacket::decode(&self.buf[..received.len.min(self.buf.len())])
            else {
                continue;
            };
            // SSID 0: a plain RFC 8762 reflector zeroes what it sees as MBZ.
            if reply.ssid != self.config.ssid && reply.ssid != 0 {
                continue;
            }
            match self
                .tracker
                .reply(&reply, received.rx_ns, received.rx_source, received.ttl)
            {
                Ok(()) | Err(Ignored::Late) => {}
                Err(why) => {
                    tracing::debug!(peer = %self.config.peer, ?why, seq = reply.sender_seq, "STAMP reply ignored")
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::clock::OwdValidity;
    use crate::peer::reflector::{Reflector, ReflectorConfig};
    use crate::probe::TimestampSource;

    #[test]
    fn config_is_validated() {
        let mut c = SenderConfig::new("127.0.0.1:862".parse().unwrap());
        c.ebpf_t1 = false;
        c.interval = Duration::from_micros(10);
        assert!(matches!(
            Session::start(c.clone()),
            Err(SenderError::IntervalTooShort { .. })
        ));
        c.interval = Duration::from_millis(1);
        c.packet_size = 60;
        let err = Session::start(c.clone()).unwrap_err();
        assert!(err.to_string().contains("60 is outside 72..="), "{err}");
        c.packet_size = 72;
        c.ssid = 0;
        assert!(matches!(Session::start(c), Err(SenderError::ZeroSsid)));
    }

    #[test]
    fn loopback_session_measures_and_counts() {
        let reflector = Reflector::start(
            ReflectorConfig::new(vec!["127.0.0.1:0".parse().unwrap()]).without_ebpf(),
        )
        .unwrap();
        let mut config = SenderConfig::new(reflector.local_addrs()[0]);
        config.ebpf_t1 = false;
        config.interval = Duration::from_millis(1);
        config.count = Some(200);
        config.packet_size = 200;
        config.clock = ClockTrust::SharedClock;
        let session = Session::start(config).unwrap();
        let summary = session.wait().unwrap();
        assert_eq!(summary.sent, 200);
        assert_eq!(summary.received, 200, "{summary:?}");
        assert_eq!(summary.loss.lost, 0);
        assert_eq!(summary.source, Some(TimestampSource::Kernel));
        assert_eq!(summary.owd, Some(OwdValidity::SharedClock));
        let rtt = summary.rtt.unwrap();
        // Loopback with the reflector's hold time taken out: well under 1 ms.
        assert!(rtt.p50_ns < 1_000_000, "{rtt:?}");
        let fwd = summary.forward.unwrap();
        assert!(fwd.min_ns >= 0, "one clock: no negative one-way delay");
    }

    #[test]
    fn no_reflector_means_all_lost() {
        // A bound but silent socket: the probes arrive, nothing answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut config = SenderConfig::new(silent.local_addr().unwrap());
        config.ebpf_t1 = false;
        config.interval = Duration::from_millis(2);
        config.count = Some(10);
        config.timeout = Duration::from_millis(100);
        let session = Session::start(config).unwrap();
        let summary = session.wait().unwrap();
        assert_eq!((summary.sent, summary.received), (10, 0));
        assert_eq!(summary.loss.lost, 10);
        assert_eq!(summary.loss.unknown_direction, 10);
    }
}
