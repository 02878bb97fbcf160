//! The STAMP Session-Reflector (RFC 8762 §4.3), stateful: one UDP socket per
//! configured address, a sequence counter per session (source address and port,
//! local address and port, RFC 8972 SSID), kernel receive stamps for T2, T3
//! written at TC egress by eBPF where it loads ([`super::kernel_tx`]), and the
//! safeguards that keep it from being abused: it binds only to the addresses it
//! is given, answers only allowed source prefixes, rate-limits per source and in
//! total (token buckets), and never answers with more bytes than it received.
//! The TCP echo side lives in [`super::tcp`] and shares the same [`Guard`].

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use serde::Serialize;

use super::clock::ClockSync;
use super::kernel_tx::{KernelTxStamps, T3Source};
use super::socket::{SocketError, StampSocket, Stamps};
use super::tcp;
use super::timestamp::WireTimestamp;
use super::wire::{ReflectorPacket, SenderPacket, BASE_LEN};
use crate::probe::clock::realtime_ns;
use crate::sys;

/// Largest datagram we read; longer ones are truncated and dropped.
const MAX_PACKET: usize = 9216;
/// How often a blocked read wakes up to check for shutdown and expire sessions.
const WAKE: Duration = Duration::from_millis(200);

/// Which sources may use the reflector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowList {
    /// Anyone who can reach the configured address (still rate-limited).
    Any,
    /// Only sources inside these prefixes.
    Prefixes(Vec<IpNet>),
}

impl AllowList {
    pub fn allows(&self, ip: IpAddr) -> bool {
        match self {
            AllowList::Any => true,
            AllowList::Prefixes(nets) => {
                // An IPv4-mapped IPv6 source is its IPv4 address for the list.
                let ip = match ip {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                    v4 => v4,
                };
                nets.iter().any(|net| net.contains(&ip))
            }
        }
    }
}

/// Token-bucket limits on reflected packets (TCP echo frames included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// Packets per second one source address may have reflected.
    pub per_source_pps: NonZeroU32,
    /// That bucket's depth, in packets.
    pub per_source_burst: NonZeroU32,
    /// Packets per second in total.
    pub global_pps: NonZeroU32,
    /// The global bucket's depth, in packets.
    pub global_burst: NonZeroU32,
}

impl Default for RateLimits {
    /// 10,000 pps per source (a 1 ms session with room to spare, or ten of them
    /// at 100 µs) in bursts of up to 1,000; 50,000 pps in total, bursts of 5,000.
    fn default() -> Self {
        let n = |v| NonZeroU32::new(v).expect("non-zero");
        RateLimits {
            per_source_pps: n(10_000),
            per_source_burst: n(1_000),
            global_pps: n(50_000),
            global_burst: n(5_000),
        }
    }
}

/// What the reflector serves and to whom.
#[derive(Clone, Debug)]
pub struct ReflectorConfig {
    /// Addresses to bind (specific addresses, each with its port; 862 is STAMP's).
    pub listen: Vec<SocketAddr>,
    pub allow: AllowList,
    pub limits: RateLimits,
    /// Also serve the TCP echo protocol on the same addresses and ports.
    pub tcp: bool,
    /// SO_TIMESTAMPING receive stamps for T2 (else the userspace clock).
    pub kernel_stamps: bool,
    /// Write UDP replies' T3 at TC egress with eBPF (needs CAP_BPF and
    /// CAP_NET_ADMIN; falls back to the userspace clock, with a warning).
    pub ebpf_t3: bool,
    /// Sessions idle this long are forgotten (their counter restarts).
    pub session_idle: Duration,
    /// Most sessions tracked per address; packets of new sessions beyond it are dropped.
    pub max_sessions: usize,
    /// Most concurrent TCP echo connections.
    pub max_tcp_connections: usize,
}

impl ReflectorConfig {
    /// A reflector on `listen` with the default limits, allowing anyone.
    pub fn new(listen: Vec<SocketAddr>) -> Self {
        ReflectorConfig {
            listen,
            allow: AllowList::Any,
            limits: RateLimits::default(),
            tcp: true,
            kernel_stamps: true,
            ebpf_t3: true,
            session_idle: Duration::from_secs(300),
            max_sessions: 4096,
            max_tcp_connections: 256,
        }
    }

    /// T3 from the userspace clock: no eBPF program is loaded (unit tests on
    /// the host's loopback use this to leave the host's interfaces alone).
    pub fn without_ebpf(mut self) -> Self {
        self.ebpf_t3 = false;
        self
    }
}

/// Why the reflector could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReflectorError {
    #[error("the reflector needs at least one address to listen on")]
    NoAddress,
    #[error("the reflector binds only to specific addresses, not {addr}: name the address peers should reach")]
    Unspecified { addr: SocketAddr },
    #[error("opening the UDP reflector socket on {addr}: {source}")]
    Socket {
        addr: SocketAddr,
        #[source]
        source: SocketError,
    },
    #[error("opening the TCP echo listener on {addr}: {source}")]
    Tcp {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("starting the reflector thread for {addr}: {source}")]
    Thread {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Reflector counters (all since start).
#[derive(Debug, Default)]
pub struct ReflectorCounters {
    pub received: AtomicU64,
    pub reflected: AtomicU64,
    pub rejected_source: AtomicU64,
    pub rate_limited_source: AtomicU64,
    pub rate_limited_global: AtomicU64,
    pub malformed: AtomicU64,
    pub session_table_full: AtomicU64,
    pub send_errors: AtomicU64,
    pub tcp_connections: AtomicU64,
    pub tcp_rejected: AtomicU64,
}

/// A copy of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReflectorStats {
    pub received: u64,
    pub reflected: u64,
    pub rejected_source: u64,
    pub rate_limited_source: u64,
    pub rate_limited_global: u64,
    pub malformed: u64,
    pub session_table_full: u64,
    pub send_errors: u64,
    pub tcp_connections: u64,
    pub tcp_rejected: u64,
    /// Where UDP replies' T3 comes from.
    pub t3_source: T3Source,
    /// UDP replies whose T3 the TC egress program wrote (eBPF only).
    pub t3_kernel_written: u64,
    /// STAMP packets in this namespace (this process's senders' included) the
    /// program could not rewrite; they kept the userspace time.
    pub t3_kernel_failed: u64,
}

impl ReflectorCounters {
    pub fn snapshot(&self) -> ReflectorStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ReflectorStats {
            received: get(&self.received),
            reflected: get(&self.reflected),
            rejected_source: get(&self.rejected_source),
            rate_limited_source: get(&self.rate_limited_source),
            rate_limited_global: get(&self.rate_limited_global),
            malformed: get(&self.malformed),
            session_table_full: get(&self.session_table_full),
            send_errors: get(&self.send_errors),
            tcp_connections: get(&self.tcp_connections),
            tcp_rejected: get(&self.tcp_rejected),
            ..ReflectorStats::default()
        }
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The admission checks every packet passes before it is answered.
pub(crate) struct Guard {
    allow: AllowList,
    per_source: DefaultKeyedRateLimiter<IpAddr>,
    global: DefaultDirectRateLimiter,
    pub counters: ReflectorCounters,
}

impl Guard {
    fn new(allow: AllowList, limits: RateLimits) -> Self {
        Guard {
            allow,
            per_source: RateLimiter::keyed(
                Quota::per_second(limits.per_source_pps).allow_burst(limits.per_source_burst),
            ),
            global: RateLimiter::direct(
                Quota::per_second(limits.global_pps).allow_burst(limits.global_burst),
            ),
            counters: ReflectorCounters::default(),
        }
    }

    pub(crate) fn allows_source(&self, ip: IpAddr) -> bool {
        self.allow.allows(ip)
    }

    /// Whether one more packet from `ip` may be answered now (counts refusals).
    pub(crate) fn admit(&self, ip: IpAddr) -> bool {
        if !self.allow.allows(ip) {
            bump(&self.counters.rejected_source);
            return false;
        }
        if self.per_source.check_key(&ip).is_err() {
            bump(&self.counters.rate_limited_source);
            return false;
        }
        if self.global.check().is_err() {
            bump(&self.counters.rate_limited_global);
            return false;
        }
        true
    }

    fn forget_idle_sources(&self) {
        self.per_source.retain_recent();
    }
}

/// A running reflector; dropping it (or [`Reflector::stop`]) stops every thread.
pub struct Reflector {
    stop: Arc<AtomicBool>,
    guard: Arc<Guard>,
    threads: Vec<JoinHandle<()>>,
    bound: Vec<SocketAddr>,
    /// One registration per bound port with the eBPF T3 writer; `None` means
    /// T3 is the userspace clock.
    kernel_t3: Option<Vec<KernelTxStamps>>,
}

impl std::fmt::Debug for Reflector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reflector")
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

/// Attempts at a port for both UDP and TCP when the port asked for is 0.
const ANY_PORT_ATTEMPTS: usize = 16;

/// Binds the UDP socket at `addr` and, with `tcp`, a TCP listener on the same
/// port. Port 0 asks for any port: TCP then takes the one UDP got, which a TCP
/// socket may already hold (UDP and TCP ports are separate spaces), so the
/// pair is tried again on another port.
fn bind(
    addr: SocketAddr,
    stamps: Stamps,
    tcp: bool,
) -> Result<(StampSocket, Option<TcpListener>), ReflectorError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let socket = StampSocket::bind(addr, stamps)
            .map_err(|source| ReflectorError::Socket { addr, source })?;
        socket
            .set_read_timeout(WAKE)
            .map_err(|source| ReflectorError::Socket {
                addr,
                source: SocketError::Option {
                    option: "SO_RCVTIMEO",
                    addr,
                    source,
                },
            })?;
        if !tcp {
            return Ok((socket, None));
        }
        let bound = socket.local_addr();
        match tcp::listen(bound) {
            Ok(listener) => return Ok((socket, Some(listener))),
            Err(error)
                if addr.port() == 0
                    && error.kind() == std::io::ErrorKind::AddrInUse
                    && attempt < ANY_PORT_ATTEMPTS => {}
            Err(source) => {
                return Err(ReflectorError::Tcp {
                    addr: bound,
                    source,
                })
            }
        }
    }
}

impl Reflector {
    /// Binds every address (UDP, and TCP when configured) in the calling thread's
    /// network namespace and starts serving. Fails without serving anything if
    /// one address cannot be bound.
    pub fn start(config: ReflectorConfig) -> Result<Reflector, ReflectorError> {
        if config.listen.is_empty() {
            return Err(ReflectorError::NoAddress);
        }
        if let Some(&addr) = config.listen.iter().find(|a| a.ip().is_unspecified()) {
            return Err(ReflectorError::Unspecified { addr });
        }
        let guard = Arc::new(Guard::new(config.allow.clone(), config.limits));
        let stop = Arc::new(AtomicBool::new(false));
        let mut sockets = Vec::new();
        let mut listeners = Vec::new();
        for &addr in &config.listen {
            let stamps = if config.kernel_stamps {
                Stamps::KernelRx
            } else {
                Stamps::Userspace
            };
            let (socket, listener) = bind(addr, stamps, config.tcp)?;
            if let Some(listener) = listener {
                listeners.push((socket.local_addr(), listener));
            }
            sockets.push(socket);
        }
        let bound: Vec<SocketAddr> = sockets.iter().map(StampSocket::local_addr).collect();
        let kernel_t3 = if config.ebpf_t3 {
            match bound
                .iter()
                .map(|addr| KernelTxStamps::register(addr.port()))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(k) => Some(k),
                Err(error) => {
                    tracing::warn!(%error, "STAMP reflector: T3 will be the userspace clock before sending (eBPF unavailable)");
                    None
                }
            }
        } else {
            None
        };
        let mut reflector = Reflector {
            stop,
            guard,
            threads: Vec::new(),
            bound,
            kernel_t3,
        };
        for socket in sockets {
            let addr = socket.local_addr();
            let worker = UdpWorker {
                socket,
                guard: Arc::clone(&reflector.guard),
                stop: Arc::clone(&reflector.stop),
                sessions: HashMap::new(),
                idle: config.session_idle,
                max_sessions: config.max_sessions,
            };
            let thread = std::thread::Builder::new()
                .name(format!("stamp-reflect-{addr}"))
                .spawn(move || worker.run())
                .map_err(|source| ReflectorError::Thread { addr, source })?;
            reflector.threads.push(thread);
        }
        for (addr, listener) in listeners {
            let thread = tcp::spawn_reflector(
                listener,
                Arc::clone(&reflector.guard),
                Arc::clone(&reflector.stop),
                config.max_tcp_connections,
                config.kernel_stamps,
            )
            .map_err(|source| ReflectorError::Thread { addr, source })?;
            reflector.threads.push(thread);
        }
        tracing::info!(
            addresses = ?reflector.bound,
            tcp = config.tcp,
            t3 = reflector.t3_source().as_str(),
            "STAMP reflector started"
        );
        Ok(reflector)
    }

    /// The addresses served (with the ports actually bound).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.bound
    }

    pub fn stats(&self) -> ReflectorStats {
        let mut stats = self.guard.counters.snapshot();
        stats.t3_source = self.t3_source();
        if let Some(ports) = &self.kernel_t3 {
            // Two addresses on one port share one count: count each port once.
            let mut seen = std::collections::BTreeSet::new();
            stats.t3_kernel_written = ports
                .iter()
                .filter(|p| seen.insert(p.port()))
                .map(KernelTxStamps::written)
                .sum();
            stats.t3_kernel_failed = ports.first().map_or(0, KernelTxStamps::failed_in_namespace);
        }
        stats
    }

    /// Where UDP replies' T3 comes from (TCP echo replies always carry the
    /// userspace clock: a TCP segment's payload is not rewritten).
    pub fn t3_source(&self) -> T3Source {
        if self.kernel_t3.is_some() {
            T3Source::Ebpf
        } else {
            T3Source::Userspace
        }
    }

    /// Stops and waits for every thread (within about 200 ms).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a STAMP reflector thread panicked");
            }
        }
    }
}

impl Drop for Reflector {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A session as RFC 8762 §4 identifies it (plus RFC 8972's SSID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SessionKey {
    peer: SocketAddr,
    ssid: u16,
}

struct SessionState {
    next_seq: u32,
    last_seen: Instant,
}

/// One UDP address's receive-reflect loop.
struct UdpWorker {
    socket: StampSocket,
    guard: Arc<Guard>,
    stop: Arc<AtomicBool>,
    sessions: HashMap<SessionKey, SessionState>,
    idle: Duration,
    max_sessions: usize,
}

impl UdpWorker {
    fn run(mut self) {
        let mut buf = vec![0u8; MAX_PACKET];
        let mut out = vec![0u8; MAX_PACKET];
        let mut clock = ClockSync::read();
        let mut last_housekeeping = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now.duration_since(last_housekeeping) >= Duration::from_secs(1) {
                last_housekeeping = now;
                clock = ClockSync::read();
                self.sessions
                    .retain(|_, s| now.duration_since(s.last_seen) < self.idle);
                self.guard.forget_idle_sources();
            }
            let received = match self.socket.recv(&mut buf) {
                Ok(r) => r,
                Err(e) if sys::is_transient(&e) => continue,
                Err(error) => {
                    tracing::warn!(local = %self.socket.local_addr(), %error, "STAMP reflector receive failed");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            bump(&self.guard.counters.received);
            let Some(from) = received.from else { continue };
            if !self.guard.admit(from.ip()) {
                continue;
            }
            // A datagram longer than the buffer was truncated: not ours to answer.
            if received.len > MAX_PACKET || received.len < BASE_LEN {
                bump(&self.guard.counters.malformed);
                continue;
            }
            let Ok(request) = SenderPacket::decode(&buf[..received.len]) else {
                bump(&self.guard.counters.malformed);
                continue;
            };
            let Some(seq) = self.next_seq(SessionKey {
                peer: from,
                ssid: request.ssid,
            }) else {
                bump(&self.guard.counters.session_table_full);
                continue;
            };
            let reply = ReflectorPacket {
                seq,
                // T3 as late as userspace can take it: just before the send.
                timestamp: WireTimestamp::ntp_from_unix_nanos(realtime_ns()),
                error: clock.error_estimate(),
                ssid: request.ssid,
                receive_timestamp: WireTimestamp::ntp_from_unix_nanos(received.rx_ns),
                sender_seq: request.seq,
                sender_timestamp: request.timestamp,
                sender_error: request.error,
                sender_ttl: received.ttl.unwrap_or(0),
            };
            // Same length as the request: the reply never amplifies.
            let Ok(bytes) = reply.encode(&mut out, received.len) else {
                bump(&self.guard.counters.malformed);
                continue;
            };
            match self.socket.send_to(bytes, from) {
                Ok(_) => bump(&self.guard.counters.reflected),
                Err(error) => {
                    bump(&self.guard.counters.send_errors);
                    tracing::debug!(%from, %error, "STAMP reply not sent");
                }
            }
        }
    }

    /// The next reflector sequence number of the session, creating it; `None` when
    /// the table is full of live sessions.
    fn next_seq(&mut self, key: SessionKey) -> Option<u32> {
        let now = Instant::now();
        if !self.sessions.contains_key(&key) && self.sessions.len() >= self.max_sessions {
            let idle = self.idle;
            self.sessions
                .retain(|_, s| now.duration_since(s.last_seen) < idle);
            if self.sessions.len() >= self.max_sessions {
                return None;
            }
        }
        let state = self.sessions.entry(key).or_insert(SessionState {
            next_seq: 0,
            last_seen: now,
        });
        let seq = state.next_seq;
        state.next_seq = state.next_seq.wrapping_add(1);
        state.last_seen = now;
        Some(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_prefixes_and_mapped_addresses() {
        let list = AllowList::Prefixes(vec![
            "198.18.0.0/24".parse().unwrap(),
            "2001:db8::/64".parse().unwrap(),
        ]);
        assert!(list.allows("198.18.0.1".parse().unwrap()));
        assert!(!list.allows("198.18.1.1".parse().unwrap()));
        assert!(list.allows("::ffff:198.18.0.9".parse().unwrap()));
        assert!(list.allows("2001:db8::5".parse().unwrap()));
        assert!(!list.allows("2001:db8:1::5".parse().unwrap()));
        assert!(AllowList::Any.allows("203.0.113.1".parse().unwrap()));
    }

    #[test]
    fn per_source_bucket_limits_one_source_not_another() {
        let limits = RateLimits {
            per_source_pps: NonZeroU32::new(1).unwrap(),
            per_source_burst: NonZeroU32::new(5).unwrap(),
            global_pps: NonZeroU32::new(1_000).unwrap(),
            global_burst: NonZeroU32::new(100).unwrap(),
        };
        let guard = Guard::new(AllowList::Any, limits);
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        let b: IpAddr = "198.18.0.2".parse().unwrap();
        let admitted_a = (0..20).filter(|_| guard.admit(a)).count();
        assert_eq!(admitted_a, 5, "the burst, then nothing within the second");
        assert!(guard.admit(b));
        assert_eq!(guard.counters.snapshot().rate_limited_source, 15);
    }

    #[test]
    fn global_bucket_limits_all_sources_together() {
        let limits = RateLimits {
            per_source_pps: NonZeroU32::new(1_000).unwrap(),
            per_source_burst: NonZeroU32::new(100).unwrap(),
            global_pps: NonZeroU32::new(1).unwrap(),
            global_burst: NonZeroU32::new(3).unwrap(),
        };
        let guard = Guard::new(AllowList::Any, limits);
        let admitted = (0..10u8)
            .filter(|i| guard.admit(IpAddr::from([198, 18, 0, *i])))
            .count();
        assert_eq!(admitted, 3);
        assert_eq!(guard.counters.snapshot().rate_limited_global, 7);
    }

    #[test]
    fn refuses_unspecified_and_empty_listen_lists() {
        assert!(matches!(
            Reflector::start(ReflectorConfig::new(vec![])),
            Err(ReflectorError::NoAddress)
        ));
        let err = Reflector::start(ReflectorConfig::new(vec!["0.0.0.0:862".parse().unwrap()]))
            .unwrap_err();
        assert!(err.to_string().contains("0.0.0.0:862"), "{err}");
    }

    #[test]
    fn reflects_on_loopback_with_its_own_sequence_and_same_length() {
        let reflector = Reflector::start(
            ReflectorConfig::new(vec!["127.0.0.1:0".parse().unwrap()]).without_ebpf(),
        )
        .unwrap();
        let target = reflector.local_addrs()[0];
        let mut client =
            StampSocket::bind("127.0.0.1:0".parse().unwrap(), Stamps::KernelRxTx).unwrap();
        client.set_read_timeout(Duration::from_secs(2)).unwrap();
        let mut buf = [0u8; 256];
        let mut replies = Vec::new();
        for seq in [10u32, 11, 15] {
            let request = SenderPacket {
                seq,
                timestamp: WireTimestamp::ntp_from_unix_nanos(realtime_ns()),
                error: ClockSync::read().error_estimate(),
                ssid: 0xbeef,
            };
            let bytes = request.encode(&mut buf, 100).unwrap().to_vec();
            client.send_to(&bytes, target).unwrap();
            let got = client.recv(&mut buf).unwrap();
            assert_eq!(got.len, 100, "reply as long as the request");
            let reply = ReflectorPacket::decode(&buf[..got.len]).unwrap();
            assert_eq!(reply.sender_seq, seq);
            assert_eq!(reply.sender_timestamp, request.timestamp);
            assert_eq!(reply.sender_error, request.error);
            assert_eq!(reply.ssid, 0xbeef);
            assert_eq!(reply.sender_ttl, 64, "loopback default TTL");
            let t1 = request.timestamp.to_unix_nanos().unwrap();
            let t2 = reply.receive_timestamp.to_unix_nanos().unwrap();
            let t3 = reply.timestamp.to_unix_nanos().unwrap();
            assert!(t1 <= t2 + 1 && t2 <= t3 + 1, "T1 {t1} ≤ T2 {t2} ≤ T3 {t3}");
            replies.push(reply.seq);
        }
        assert_eq!(replies, [0, 1, 2], "the reflector counts its own sequence");
        // The counter moves just after the send that we already saw arrive.
        let deadline = Instant::now() + Duration::from_secs(2);
        while reflector.stats().reflected < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let stats = reflector.stats();
        assert_eq!((stats.received, stats.reflected), (3, 3));
    }
}
