//! Loading: the kernel object embedded at build time, its programs loaded and
//! its maps taken, and the [`EbpfTimestamper`] put together from them.

use std::io;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use aya::maps::{Array, MapError, PerCpuArray, PerCpuHashMap, RingBuf};
use aya::programs::SchedClassifier;
use aya::util::KernelVersion;
use aya::Ebpf;
use hopwatch_probe_common::{maps, ProbeFilter};

use super::attach::{AttachMode, Attacher};
use super::filter::FilterMap;
use super::receive_stamping::ReceiveStamping;
use super::ring::ReplyEvents;
use super::{EbpfError, EbpfTimestamper};

/// The kernel programs, built by service/build.rs from probe-ebpf.
static PROBE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hopwatch-probe.bpf.o"));

/// Program names: the function names of the `#[classifier]`s in probe-ebpf.
pub(super) const EGRESS_PROGRAM: &str = "hopwatch_egress";
pub(super) const INGRESS_PROGRAM: &str = "hopwatch_ingress";

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
        let filter_map = FilterMap::new(
            take_map(&mut ebpf, maps::PROBE_FILTER, Array::try_from)?,
            filter,
        )?;
        let filter_map = Arc::new(Mutex::new(filter_map));
        let counters = take_map(&mut ebpf, maps::COUNTERS, PerCpuArray::try_from)?;
        let stamp_ports = take_map(&mut ebpf, maps::STAMP_PORTS, PerCpuHashMap::try_from)?;
        let ring = take_map(&mut ebpf, maps::EVENTS, RingBuf::try_from)?;

        let mut attacher = Attacher::new(ebpf, mode, Arc::clone(&filter_map));
        // Initial attachment fails the load: a timestamper that silently misses an
        // interface would mix eBPF and missing timestamps.
        attacher.rescan(true)?;
        let attached = attacher.attached();

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
}

pub(super) fn classifier<'a>(
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
