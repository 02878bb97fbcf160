//! The eBPF timestamp source: loads hopwatch's kernel programs (probe-ebpf), attaches
//! them at TC egress and ingress of every interface in the caller's network
//! namespace (and of interfaces that appear later), and hands out the reply events
//! and kernel counters. Dropping the [`EbpfTimestamper`] detaches everything.
//!
//! The contract with the kernel side (keys, events, map names, counters) is
//! probe-common; this module only moves bytes across it. This file owns the
//! [`EbpfTimestamper`] handle; the rest lives in:
//!
//! * `load`: the embedded object, loading its programs, taking its maps.
//! * `attach`: attaching to every interface, the watcher for new ones, detaching.
//! * `filter`: the `PROBE_FILTER` map (flow range, TAI offset kept current).
//! * `receive_stamping`: the socket that keeps the kernel stamping received packets.
//! * `stamp_ports`: the STAMP ports given kernel transmit timestamps.
//! * `counters`: the per-CPU kernel counters.
//! * `ring`: the ring-buffer reader, [`ReplyEvents`].
//! * `error` and `hint`: [`EbpfError`] and the likely cause each message names.

mod attach;
mod counters;
mod error;
mod filter;
mod hint;
mod load;
mod receive_stamping;
mod ring;
mod stamp_ports;

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use hopwatch_probe_common::ProbeFilter;

pub use attach::{AttachMode, AttachedInterface};
pub use counters::KernelCounters;
pub use error::EbpfError;
pub use ring::ReplyEvents;

use crate::sys;
use filter::FilterMap;
use receive_stamping::ReceiveStamping;

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
    /// Replaces the flow range the programs stamp and match (the TAI offset in
    /// `filter` is ignored: the loader keeps it current).
    pub fn set_filter(&mut self, filter: ProbeFilter) -> Result<(), EbpfError> {
        sys::lock(&self.filter).write(filter)
    }

    /// How the programs are attached on this kernel.
    pub fn attach_mode(&self) -> AttachMode {
        self.mode
    }

    /// The interfaces the programs are attached to right now.
    pub fn attached_interfaces(&self) -> Vec<AttachedInterface> {
        sys::lock(&self.attached)
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
