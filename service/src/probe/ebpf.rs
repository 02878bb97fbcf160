//! The eBPF timestamp source: loads hopwatch's kernel programs (probe-ebpf), attaches
//! them at TC egress and ingress of every interface in the caller's network
//! namespace (and of interfaces that appear later), and hands out the reply events
//! and kernel counters. Dropping the [`EbpfTimestamper`] detaches everything.
//!
//! The contract with the kernel side (keys, events, map names, counters) is
//! probe-common; this module only moves bytes across it.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::io;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use aya::maps::{Array, MapData, MapError, PerCpuArray, PerCpuHashMap, PerCpuValues, RingBuf};
use aya::programs::tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions, TcError};
use aya::programs::{LinkOrder, ProgramError, SchedClassifier, TcAttachType};
use aya::util::KernelVersion;
use aya::Ebpf;
use hopwatch_probe_common::{counter, maps, ProbeFilter, ReplyEvent};

use super::clock;
use tokio::io::unix::AsyncFd;

/// The kernel programs, built by service/build.rs from probe-ebpf.
static PROBE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hopwatch-probe.bpf.o"));

/// Program names: the function names of the `#[classifier]`s in probe-ebpf.
const EGRESS_PROGRAM: &str = "hopwatch_egress";
const INGRESS_PROGRAM: &str = "hopwatch_ingress";

/// How often the watcher looks for new interfaces. Polling if_nameindex() is one
/// netlink dump per second, cheaper and simpler than tracking RTM_NEWLINK.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Why the eBPF timestamp source is unavailable. Every message names the likely
/// cause, because the engine falls back to SO_TIMESTAMPING and logs this.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error(
        "loading hopwatch's eBPF object failed ({}): {}",
        aya_hint(source),
        chain(source)
    )]
    Load {
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("hopwatch's eBPF object has no program `{program}` (the embedded object does not match this loader)")]
    MissingProgram { program: &'static str },
    #[error(
        "the kernel refused eBPF program `{program}` ({}): {}",
        program_hint(source),
        chain(source)
    )]
    Program {
        program: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("hopwatch's eBPF object has no map `{map}` (the embedded object does not match this loader)")]
    MissingMap { map: &'static str },
    #[error("eBPF map `{map}` ({}): {}", map_hint(source), chain(source))]
    Map {
        map: &'static str,
        #[source]
        source: Box<MapError>,
    },
    #[error("listing the network interfaces of this namespace failed: {source}")]
    ListInterfaces {
        #[source]
        source: nix::Error,
    },
    #[error(
        "adding the clsact qdisc to {iface} failed ({}): {}",
        tc_hint(source),
        chain(source)
    )]
    Clsact {
        iface: String,
        #[source]
        source: Box<TcError>,
    },
    #[error(
        "attaching eBPF program `{program}` to {iface} (ifindex {ifindex}) failed ({}): {}",
        program_hint(source),
        chain(source)
    )]
    Attach {
        program: &'static str,
        iface: String,
        ifindex: u32,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("reading the eBPF ring buffer needs a tokio runtime with IO enabled")]
    NoRuntime,
    #[error("waiting on the eBPF ring buffer failed: {source}")]
    RingBuf {
        #[source]
        source: io::Error,
    },
    #[error("eBPF ring buffer record of {len} bytes is shorter than a ReplyEvent ({expected} bytes); the embedded object does not match this loader")]
    ShortRecord { len: usize, expected: usize },
    #[error("reading the possible CPUs ({path}) for a per-CPU map failed: {source}")]
    PossibleCpus {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("starting the eBPF interface watcher thread failed: {source}")]
    Watcher {
        #[source]
        source: io::Error,
    },
}

/// The error and its sources, "outer: inner: ...". aya keeps the OS error (say
/// "Operation not permitted") in a source, and the engine logs only our Display,
/// so the message spells the chain out.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(inner) = next {
        let part = inner.to_string();
        // Transparent wrappers repeat their inner message; skip the repeat.
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = inner.source();
    }
    text
}

const HINT_PRIVILEGE: &str =
    "likely cause: missing CAP_BPF, CAP_NET_ADMIN or CAP_PERFMON (run as root or grant all three)";
/// Without CAP_PERFMON the verifier treats the loader as unprivileged and
/// refuses pointer arithmetic our bounds-checked parsers rely on.
const HINT_PERFMON: &str =
    "likely cause: missing CAP_PERFMON: without it the verifier refuses pointer arithmetic \
     (\"prohibited for !root\"); grant CAP_PERFMON with CAP_BPF and CAP_NET_ADMIN";
const HINT_KERNEL: &str =
    "likely cause: kernel too old or built without BTF/TC/ring buffer support (needs >= 5.8 with BTF; TCX needs >= 6.6)";
const HINT_VERIFIER: &str = "likely cause: the kernel's verifier rejected the program (kernel too old, or a hopwatch bug); its log follows";
const HINT_GENERIC: &str = "needs root (CAP_BPF, CAP_NET_ADMIN) and a kernel >= 5.8 with BTF";

fn errno_hint(errno: Option<i32>) -> &'static str {
    match errno {
        Some(libc::EPERM | libc::EACCES) => HINT_PRIVILEGE,
        Some(libc::EINVAL | libc::ENOENT | libc::EOPNOTSUPP | libc::ENOSYS | libc::E2BIG) => {
            HINT_KERNEL
        }
        _ => HINT_GENERIC,
    }
}

fn aya_hint(err: &aya::EbpfError) -> &'static str {
    match err {
        aya::EbpfError::MapError(e) => map_hint(e),
        aya::EbpfError::ProgramError(e) => program_hint(e),
        aya::EbpfError::BtfError(_) | aya::EbpfError::NoBTF => HINT_KERNEL,
        _ => HINT_GENERIC,
    }
}

fn map_hint(err: &MapError) -> &'static str {
    match err {
        MapError::CreateError { io_error, .. } => errno_hint(io_error.raw_os_error()),
        MapError::SyscallError(e) => errno_hint(e.io_error.raw_os_error()),
        _ => HINT_GENERIC,
    }
}

fn program_hint(err: &ProgramError) -> &'static str {
    match err {
        // BPF_PROG_LOAD answers EPERM for missing capabilities; the verifier's
        // rejections come back as EACCES or EINVAL.
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => match io_error.raw_os_error() {
            Some(libc::EPERM) => HINT_PRIVILEGE,
            _ if verifier_log.to_string().contains("for !root") => HINT_PERFMON,
            _ => HINT_VERIFIER,
        },
        ProgramError::SyscallError(e) => errno_hint(e.io_error.raw_os_error()),
        ProgramError::TcError(e) => tc_hint(e),
        _ => HINT_GENERIC,
    }
}

fn tc_hint(err: &TcError) -> &'static str {
    match err {
        TcError::NetlinkError(e) => errno_hint(e.raw_os_error()),
        TcError::IoError(e) => errno_hint(e.raw_os_error()),
        _ => HINT_GENERIC,
    }
}

/// The kernel counters, summed over CPUs. See probe_common::counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelCounters {
    /// Outgoing probes stamped at TC egress.
    pub egress_stamped: u64,
    /// Outgoing probes whose stamp could not be stored.
    pub egress_map_full: u64,
    /// Replies matched to a stamp and sent to userspace.
    pub ingress_matched: u64,
    /// Replies to our flow range with no stamp (late, duplicate, evicted).
    pub ingress_unmatched: u64,
    /// Candidate replies that failed bounds-checked parsing.
    pub parse_error: u64,
    /// Matched replies lost because the ring buffer was full.
    pub ringbuf_drop: u64,
    /// Matched replies timed at TC ingress: the skb had no usable receive stamp.
    pub ingress_tc_clock: u64,
    /// STAMP packets whose transmit timestamp was written at TC egress.
    pub stamp_tx_written: u64,
    /// STAMP packets that kept their userspace timestamp (rewrite failed).
    pub stamp_tx_failed: u64,
}

impl KernelCounters {
    fn from_array(v: [u64; counter::COUNT as usize]) -> Self {
        KernelCounters {
            egress_stamped: v[counter::EGRESS_STAMPED as usize],
            egress_map_full: v[counter::EGRESS_MAP_FULL as usize],
            ingress_matched: v[counter::INGRESS_MATCHED as usize],
            ingress_unmatched: v[counter::INGRESS_UNMATCHED as usize],
            parse_error: v[counter::PARSE_ERROR as usize],
            ringbuf_drop: v[counter::RINGBUF_DROP as usize],
            ingress_tc_clock: v[counter::INGRESS_TC_CLOCK as usize],
            stamp_tx_written: v[counter::STAMP_TX_WRITTEN as usize],
            stamp_tx_failed: v[counter::STAMP_TX_FAILED as usize],
        }
    }

    /// The counters indexed like probe_common::counter (and named by `counter::NAMES`).
    pub fn as_array(&self) -> [u64; counter::COUNT as usize] {
        let mut v = [0; counter::COUNT as usize];
        v[counter::EGRESS_STAMPED as usize] = self.egress_stamped;
        v[counter::EGRESS_MAP_FULL as usize] = self.egress_map_full;
        v[counter::INGRESS_MATCHED as usize] = self.ingress_matched;
        v[counter::INGRESS_UNMATCHED as usize] = self.ingress_unmatched;
        v[counter::PARSE_ERROR as usize] = self.parse_error;
        v[counter::RINGBUF_DROP as usize] = self.ringbuf_drop;
        v[counter::INGRESS_TC_CLOCK as usize] = self.ingress_tc_clock;
        v[counter::STAMP_TX_WRITTEN as usize] = self.stamp_tx_written;
        v[counter::STAMP_TX_FAILED as usize] = self.stamp_tx_failed;
        v
    }
}

/// How the programs are attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// TCX links (kernel >= 6.6): no qdisc needed, detached by closing the link.
    /// Ours run first in each direction; they return "next", so programs of other
    /// tools behind them still run and decide.
    Tcx,
    /// cls_bpf filters on a clsact qdisc, managed over netlink (older kernels).
    /// The qdisc is added when missing and left in place on exit (it is empty and
    /// harmless, and another tool may have started using it).
    Netlink,
}

impl AttachMode {
    /// The best mode for the running kernel; the rule aya's own `attach` applies.
    pub fn for_running_kernel() -> Self {
        match KernelVersion::current() {
            Ok(v) if v >= KernelVersion::new(6, 6, 0) => AttachMode::Tcx,
            _ => AttachMode::Netlink,
        }
    }
}

/// An interface the programs are attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachedInterface {
    pub ifindex: u32,
    pub name: String,
}

/// The loaded kernel programs. Stamps outgoing probes whose flow is in the filter
/// range and reports their replies through [`ReplyEvents`].
///
/// Attachment is bound to the network namespace of the thread that called
/// [`EbpfTimestamper::load`]: a watcher thread started from it (threads inherit
/// their creator's namespace) attaches new interfaces, and detaches everything on
/// drop from that same namespace.
pub struct EbpfTimestamper {
    filter: Arc<Mutex<FilterMap>>,
    /// Keeps the kernel stamping received packets while the programs run; see
    /// [`ReceiveStamping`].
    _receive_stamping: Option<ReceiveStamping>,
    stamp_ports: PerCpuHashMap<MapData, u16, u64>,
    counters: PerCpuArray<MapData, u64>,
    mode: AttachMode,
    attached: Arc<Mutex<BTreeMap<u32, String>>>,
    stop: Option<mpsc::Sender<()>>,
    watcher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EbpfTimestamper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbpfTimestamper")
            .field("mode", &self.mode)
            .field("attached", &self.attached_interfaces())
            .finish_non_exhaustive()
    }
}

impl EbpfTimestamper {
    /// Loads the programs, writes `filter`, and attaches egress and ingress programs
    /// to every interface in the calling thread's network namespace (loopback
    /// included); interfaces that appear later are attached within about a second.
    ///
    /// Must be called from a thread that stays in that namespace for the call.
    /// Fails with an [`EbpfError`] naming the likely cause (privileges, kernel) when
    /// the kernel side cannot be used; nothing stays attached then.
    pub fn load(filter: ProbeFilter) -> Result<(EbpfTimestamper, ReplyEvents), EbpfError> {
        Self::load_with_mode(filter, AttachMode::for_running_kernel())
    }

    /// [`EbpfTimestamper::load`] with an explicit attach mode, e.g. netlink on a
    /// kernel that has TCX (tests cover the older kernels' path that way).
    pub fn load_with_mode(
        filter: ProbeFilter,
        mode: AttachMode,
    ) -> Result<(EbpfTimestamper, ReplyEvents), EbpfError> {
        raise_memlock_limit();
        let mut ebpf = Ebpf::load(PROBE_OBJECT).map_err(|source| EbpfError::Load {
            source: Box::new(source),
        })?;
        for program in [EGRESS_PROGRAM, INGRESS_PROGRAM] {
            classifier(&mut ebpf, program)?
                .load()
                .map_err(|source| EbpfError::Program {
                    program,
                    source: Box::new(source),
                })?;
        }

        let receive_stamping = ReceiveStamping::enable();
        let mut filter_map = FilterMap {
            map: take_map(&mut ebpf, maps::PROBE_FILTER, Array::try_from)?,
            current: filter,
        };
        filter_map.write(filter)?;
        let filter_map = Arc::new(Mutex::new(filter_map));
        let counters = take_map(&mut ebpf, maps::COUNTERS, PerCpuArray::try_from)?;
        let stamp_ports = take_map(&mut ebpf, maps::STAMP_PORTS, PerCpuHashMap::try_from)?;
        let ring = take_map(&mut ebpf, maps::EVENTS, RingBuf::try_from)?;

        let mut attacher = Attacher {
            ebpf,
            mode,
            links: BTreeMap::new(),
            warned: BTreeSet::new(),
            attached: Arc::new(Mutex::new(BTreeMap::new())),
            filter: Arc::clone(&filter_map),
        };
        // Initial attachment fails the load: a timestamper that silently misses an
        // interface would mix eBPF and missing timestamps.
        attacher.rescan(true)?;
        let attached = Arc::clone(&attacher.attached);

        let (stop, stopped) = mpsc::channel();
        let watcher = std::thread::Builder::new()
            .name("hopwatch-ebpf".into())
            .spawn(move || attacher.watch(&stopped))
            .map_err(|source| EbpfError::Watcher { source })?;

        let timestamper = EbpfTimestamper {
            filter: filter_map,
            _receive_stamping: receive_stamping,
            stamp_ports,
            counters,
            mode,
            attached,
            stop: Some(stop),
            watcher: Some(watcher),
        };
        Ok((timestamper, ReplyEvents::new(ring)))
    }

    /// Replaces the flow range the programs stamp and match (the TAI offset in
    /// `filter` is ignored: the loader keeps it current).
    pub fn set_filter(&mut self, filter: ProbeFilter) -> Result<(), EbpfError> {
        self.filter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write(filter)
    }

    /// Makes the egress program write the transmit timestamp into STAMP packets
    /// sent from this local UDP port (a sender's T1, a reflector's T3); see
    /// probe-ebpf's stamp.rs. At most `STAMP_PORTS_CAPACITY` ports.
    pub fn add_stamp_port(&mut self, port: u16) -> Result<(), EbpfError> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(path, source)| EbpfError::PossibleCpus { path, source })?;
        let zeros =
            PerCpuValues::try_from(vec![0u64; cpus]).map_err(|source| EbpfError::PossibleCpus {
                path: "/sys/devices/system/cpu/possible",
                source,
            })?;
        self.stamp_ports
            .insert(port, zeros, 0)
            .map_err(|source| EbpfError::Map {
                map: maps::STAMP_PORTS,
                source: Box::new(source),
            })
    }

    /// Stops rewriting packets from `port`.
    pub fn remove_stamp_port(&mut self, port: u16) -> Result<(), EbpfError> {
        self.stamp_ports
            .remove(&port)
            .map_err(|source| EbpfError::Map {
                map: maps::STAMP_PORTS,
                source: Box::new(source),
            })
    }

    /// Packets from `port` whose transmit timestamp was written, since it was added.
    pub fn stamp_port_written(&self, port: u16) -> Result<u64, EbpfError> {
        let per_cpu = self
            .stamp_ports
            .get(&port, 0)
            .map_err(|source| EbpfError::Map {
                map: maps::STAMP_PORTS,
                source: Box::new(source),
            })?;
        Ok(per_cpu.iter().copied().fold(0, u64::wrapping_add))
    }

    /// The kernel counters, summed over all CPUs.
    pub fn counters(&self) -> Result<KernelCounters, EbpfError> {
        let mut sums = [0u64; counter::COUNT as usize];
        for (index, sum) in (0..counter::COUNT).zip(sums.iter_mut()) {
            let per_cpu = self
                .counters
                .get(&index, 0)
                .map_err(|source| EbpfError::Map {
                    map: maps::COUNTERS,
                    source: Box::new(source),
                })?;
            *sum = per_cpu.iter().copied().fold(0, u64::wrapping_add);
        }
        Ok(KernelCounters::from_array(sums))
    }

    /// How the programs are attached on this kernel.
    pub fn attach_mode(&self) -> AttachMode {
        self.mode
    }

    /// The interfaces the programs are attached to right now.
    pub fn attached_interfaces(&self) -> Vec<AttachedInterface> {
        self.attached
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(&ifindex, name)| AttachedInterface {
                ifindex,
                name: name.clone(),
            })
            .collect()
    }
}

impl Drop for EbpfTimestamper {
    fn drop(&mut self) {
        // Closing the channel wakes the watcher, which detaches from inside the
        // namespace it attached in (netlink detach is namespace-relative).
        drop(self.stop.take());
        if let Some(watcher) = self.watcher.take() {
            if watcher.join().is_err() {
                tracing::error!(
                    "the eBPF watcher thread panicked; programs may stay attached until exit"
                );
            }
        }
    }
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    program: &'static str,
) -> Result<&'a mut SchedClassifier, EbpfError> {
    ebpf.program_mut(program)
        .ok_or(EbpfError::MissingProgram { program })?
        .try_into()
        .map_err(|source| EbpfError::Program {
            program,
            source: Box::new(source),
        })
}

fn take_map<T>(
    ebpf: &mut Ebpf,
    map: &'static str,
    convert: impl FnOnce(aya::maps::Map) -> Result<T, MapError>,
) -> Result<T, EbpfError> {
    let raw = ebpf.take_map(map).ok_or(EbpfError::MissingMap { map })?;
    convert(raw).map_err(|source| EbpfError::Map {
        map,
        source: Box::new(source),
    })
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK (64 KiB by default),
/// far below our maps; later kernels use memory cgroups and ignore it.
fn raise_memlock_limit() {
    if matches!(KernelVersion::current(), Ok(v) if v >= KernelVersion::new(5, 11, 0)) {
        return;
    }
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(
            error = %io::Error::last_os_error(),
            "could not raise RLIMIT_MEMLOCK; map creation may fail on this kernel"
        );
    }
}

/// The links of one interface.
struct IfaceLinks {
    name: String,
    egress: SchedClassifierLinkId,
    ingress: SchedClassifierLinkId,
}

/// The `PROBE_FILTER` map and what was last written to it. The timestamper
/// changes the flow range; the watcher keeps the TAI offset current.
struct FilterMap {
    map: Array<MapData, ProbeFilter>,
    current: ProbeFilter,
}

impl FilterMap {
    /// Writes `filter` with the current TAI offset.
    fn write(&mut self, filter: ProbeFilter) -> Result<(), EbpfError> {
        let filter = ProbeFilter {
            tai_offset_ns: clock::tai_offset_ns(),
            ..filter
        };
        self.map
            .set(0, filter, 0)
            .map_err(|source| EbpfError::Map {
                map: maps::PROBE_FILTER,
                source: Box::new(source),
            })?;
        self.current = filter;
        Ok(())
    }

    /// Rewrites the filter when the TAI offset moved since the last write. Until
    /// then the ingress program sees receive stamps a second or more off and
    /// falls back to its own clock (`ingress_tc_clock`), so no RTT is wrong.
    fn refresh_tai_offset(&mut self) -> Result<(), EbpfError> {
        let offset = clock::tai_offset_ns();
        if offset == self.current.tai_offset_ns {
            return Ok(());
        }
        tracing::info!(
            tai_offset_s = offset / 1_000_000_000,
            "eBPF: the TAI offset changed; receive stamps follow it"
        );
        self.write(self.current)
    }
}

/// A socket that asks for receive timestamps and does nothing else.
///
/// The kernel stamps received packets (`skb->tstamp`) only while at least one
/// socket on the system wants such stamps (the `netstamp_needed` switch). The
/// ingress program prefers that stamp to its own clock, because it is taken
/// as the packet enters the stack, before backlog queueing and packet taps;
/// holding this socket guarantees it exists. It costs one clock read per
/// received packet, system-wide, as any `SO_TIMESTAMP` user (chrony, ptp4l,
/// tcpdump with some options) already does.
struct ReceiveStamping(#[allow(dead_code)] socket2::Socket);

impl ReceiveStamping {
    /// `None` (and a warning) when the socket cannot be made: replies are then
    /// timed at TC ingress and counted in `ingress_tc_clock`.
    fn enable() -> Option<ReceiveStamping> {
        let socket = match socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None) {
            Ok(socket) => socket,
            Err(error) => {
                tracing::warn!(%error, "eBPF: cannot open the receive-stamping socket; replies are timed at TC ingress");
                return None;
            }
        };
        let on: libc::c_int = 1;
        // SAFETY: a valid socket, option and int-sized value.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            let error = io::Error::last_os_error();
            tracing::warn!(%error, "eBPF: cannot turn on receive stamping; replies are timed at TC ingress");
            return None;
        }
        Some(ReceiveStamping(socket))
    }
}

/// Owns the loaded programs and their links; lives on the watcher thread.
struct Attacher {
    ebpf: Ebpf,
    mode: AttachMode,
    links: BTreeMap<u32, IfaceLinks>,
    /// Interfaces whose attach failure was already logged (avoids a warning a second).
    warned: BTreeSet<u32>,
    /// What [`EbpfTimestamper::attached_interfaces`] reports.
    attached: Arc<Mutex<BTreeMap<u32, String>>>,
    /// Rewritten when the TAI offset changes (an NTP daemon setting it, a leap second).
    filter: Arc<Mutex<FilterMap>>,
}

impl Attacher {
    fn watch(mut self, stopped: &mpsc::Receiver<()>) {
        // Runs until the timestamper drops its sender (Disconnected).
        while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(WATCH_INTERVAL) {
            if let Err(error) = self.rescan(false) {
                tracing::warn!(%error, "eBPF interface watcher");
            }
            let refreshed = self
                .filter
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .refresh_tai_offset();
            if let Err(error) = refreshed {
                tracing::warn!(%error, "eBPF: updating the TAI offset");
            }
        }
        self.detach_all();
    }

    /// Attaches to interfaces not seen before and forgets vanished ones. With
    /// `strict`, the first attach failure is returned; otherwise it is logged once
    /// per interface and retried on the next scan.
    fn rescan(&mut self, strict: bool) -> Result<(), EbpfError> {
        let present: BTreeMap<u32, String> = nix::net::if_::if_nameindex()
            .map_err(|source| EbpfError::ListInterfaces { source })?
            .iter()
            .map(|i| (i.index(), i.name().to_string_lossy().into_owned()))
            .collect();

        let vanished: Vec<u32> = self
            .links
            .keys()
            .filter(|i| !present.contains_key(i))
            .copied()
            .collect();
        for ifindex in vanished {
            if let Some(links) = self.links.remove(&ifindex) {
                tracing::debug!(iface = %links.name, ifindex, "interface gone");
                // The kernel already dropped the attachment with the device;
                // detaching only releases our handle, so errors are expected.
                let _ = self.detach(links);
            }
        }
        self.warned.retain(|i| present.contains_key(i));

        for (&ifindex, name) in &present {
            if self.links.contains_key(&ifindex) {
                continue;
            }
            match self.attach(ifindex, name) {
                Ok(links) => {
                    tracing::debug!(iface = %name, ifindex, mode = ?self.mode, "eBPF programs attached");
                    self.links.insert(ifindex, links);
                    self.warned.remove(&ifindex);
                }
                // Vanished between the listing and the attach: not an error.
                Err(_) if !still_present(ifindex, name) => {}
                Err(error) if strict => {
                    self.detach_all();
                    return Err(error);
                }
                Err(error) => {
                    if self.warned.insert(ifindex) {
                        tracing::warn!(%error, "probe replies on this interface get no eBPF timestamps");
                    }
                }
            }
        }
        *self.attached.lock().unwrap_or_else(PoisonError::into_inner) = self
            .links
            .iter()
            .map(|(&i, l)| (i, l.name.clone()))
            .collect();
        Ok(())
    }

    fn attach(&mut self, ifindex: u32, name: &str) -> Result<IfaceLinks, EbpfError> {
        if self.mode == AttachMode::Netlink {
            // cls_bpf filters need a clsact qdisc; one may already be there (ours
            // from an earlier run, or another tool's), which is fine to share.
            match tc::qdisc_add_clsact(name) {
                Ok(()) => {}
                Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(source) => {
                    return Err(EbpfError::Clsact {
                        iface: name.to_owned(),
                        source: Box::new(source),
                    })
                }
            }
        }
        let mode = self.mode;
        let attach = |ebpf: &mut Ebpf, program: &'static str, direction| {
            let options = match mode {
                // First, so a program ahead of ours that ends the chain cannot hide
                // probes or replies from us.
                AttachMode::Tcx => TcAttachOptions::TcxOrder(LinkOrder::first()),
                AttachMode::Netlink => TcAttachOptions::Netlink(NlOptions::default()),
            };
            classifier(ebpf, program)?
                .attach_with_options(name, direction, options)
                .map_err(|source| EbpfError::Attach {
                    program,
                    iface: name.to_owned(),
                    ifindex,
                    source: Box::new(source),
                })
        };
        let egress = attach(&mut self.ebpf, EGRESS_PROGRAM, TcAttachType::Egress)?;
        let ingress = match attach(&mut self.ebpf, INGRESS_PROGRAM, TcAttachType::Ingress) {
            Ok(id) => id,
            Err(e) => {
                // Half-attached would stamp probes whose replies are never matched.
                if let Ok(prog) = classifier(&mut self.ebpf, EGRESS_PROGRAM) {
                    let _ = prog.detach(egress);
                }
                return Err(e);
            }
        };
        Ok(IfaceLinks {
            name: name.to_owned(),
            egress,
            ingress,
        })
    }

    fn detach(&mut self, links: IfaceLinks) -> Result<(), EbpfError> {
        let egress = classifier(&mut self.ebpf, EGRESS_PROGRAM)?
            .detach(links.egress)
            .map_err(|source| EbpfError::Program {
                program: EGRESS_PROGRAM,
                source: Box::new(source),
            });
        let ingress = classifier(&mut self.ebpf, INGRESS_PROGRAM)?
            .detach(links.ingress)
            .map_err(|source| EbpfError::Program {
                program: INGRESS_PROGRAM,
                source: Box::new(source),
            });
        egress.and(ingress)
    }

    fn detach_all(&mut self) {
        for (ifindex, links) in std::mem::take(&mut self.links) {
            let name = links.name.clone();
            if let Err(error) = self.detach(links) {
                if still_present(ifindex, &name) {
                    tracing::warn!(%error, iface = %name, "detaching eBPF programs");
                }
            }
        }
        self.attached
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

fn still_present(ifindex: u32, name: &str) -> bool {
    CString::new(name)
        .ok()
        .and_then(|c| nix::net::if_::if_nametoindex(c.as_c_str()).ok())
        == Some(ifindex)
}

/// Matched replies from the kernel, in arrival order.
///
/// Keeps working after the [`EbpfTimestamper`] is dropped, but then no new
/// events arrive.
pub struct ReplyEvents {
    state: RingState,
}

enum RingState {
    /// Not yet registered with tokio (load() may run outside a runtime).
    Idle(RingBuf<MapData>),
    Registered(AsyncFd<RingBuf<MapData>>),
    /// Only while switching states.
    Empty,
}

impl std::fmt::Debug for ReplyEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyEvents").finish_non_exhaustive()
    }
}

impl ReplyEvents {
    fn new(ring: RingBuf<MapData>) -> Self {
        ReplyEvents {
            state: RingState::Idle(ring),
        }
    }

    /// Waits for the next reply event. Cancel-safe: an event is removed from the
    /// ring only when it is returned.
    pub async fn next(&mut self) -> Result<ReplyEvent, EbpfError> {
        let fd = self.registered()?;
        loop {
            let mut guard = fd
                .readable_mut()
                .await
                .map_err(|source| EbpfError::RingBuf { source })?;
            if let Some(event) = read_one(guard.get_inner_mut()) {
                return event;
            }
            // Readiness is edge-triggered; tokio's tick check keeps a wakeup that
            // raced with this read from being lost.
            guard.clear_ready();
        }
    }

    /// Returns an event if one is waiting, without blocking.
    pub fn try_next(&mut self) -> Option<Result<ReplyEvent, EbpfError>> {
        match &mut self.state {
            RingState::Idle(ring) => read_one(ring),
            RingState::Registered(fd) => read_one(fd.get_mut()),
            RingState::Empty => None,
        }
    }

    fn registered(&mut self) -> Result<&mut AsyncFd<RingBuf<MapData>>, EbpfError> {
        if let RingState::Idle(_) = self.state {
            if tokio::runtime::Handle::try_current().is_err() {
                return Err(EbpfError::NoRuntime);
            }
            let RingState::Idle(ring) = std::mem::replace(&mut self.state, RingState::Empty) else {
                unreachable!("checked above");
            };
            // SAFETY: the ring buffer's fd is the map's own, owned by `ring` itself,
            // so it stays open and the same for as long as the AsyncFd holds `ring`.
            let registered =
                unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) };
            match registered {
                Ok(fd) => self.state = RingState::Registered(fd),
                Err(err) => {
                    let (ring, source) = err.into_parts();
                    self.state = RingState::Idle(ring);
                    return Err(EbpfError::RingBuf { source });
                }
            }
        }
        match &mut self.state {
            RingState::Registered(fd) => Ok(fd),
            _ => Err(EbpfError::NoRuntime),
        }
    }
}

fn read_one(ring: &mut RingBuf<MapData>) -> Option<Result<ReplyEvent, EbpfError>> {
    let item = ring.next()?;
    let expected = std::mem::size_of::<ReplyEvent>();
    if item.len() < expected {
        return Some(Err(EbpfError::ShortRecord {
            len: item.len(),
            expected,
        }));
    }
    // SAFETY: the record holds at least size_of::<ReplyEvent>() bytes, ReplyEvent is
    // plain old data (every bit pattern valid), and read_unaligned needs no alignment.
    Some(Ok(unsafe {
        std::ptr::read_unaligned(item.as_ptr().cast::<ReplyEvent>())
    }))
}
