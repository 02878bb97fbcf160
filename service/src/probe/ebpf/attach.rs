//! Attaching: the egress and ingress programs on every interface of the
//! namespace (TCX or a clsact qdisc), a watcher thread that attaches interfaces
//! appearing later and keeps the TAI offset current, and detaching on the way
//! out.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aya::programs::tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions, TcError};
use aya::programs::{LinkOrder, TcAttachType};
use aya::util::KernelVersion;
use aya::Ebpf;

use super::filter::FilterMap;
use super::load::{classifier, EGRESS_PROGRAM, INGRESS_PROGRAM};
use super::EbpfError;
use crate::sys;

/// How often the watcher looks for new interfaces. Polling if_nameindex() is one
/// netlink dump per second, cheaper and simpler than tracking RTM_NEWLINK.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

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

/// The links of one interface.
struct IfaceLinks {
    name: String,
    egress: SchedClassifierLinkId,
    ingress: SchedClassifierLinkId,
}

/// Owns the loaded programs and their links; lives on the watcher thread.
pub(super) struct Attacher {
    ebpf: Ebpf,
    mode: AttachMode,
    links: BTreeMap<u32, IfaceLinks>,
    /// Interfaces whose attach failure was already logged (avoids a warning a second).
    warned: BTreeSet<u32>,
    /// What [`EbpfTimestamper::attached_interfaces`](super::EbpfTimestamper::attached_interfaces) reports.
    attached: Arc<Mutex<BTreeMap<u32, String>>>,
    /// Rewritten when the TAI offset changes (an NTP daemon setting it, a leap second).
    filter: Arc<Mutex<FilterMap>>,
}

impl Attacher {
    pub(super) fn new(ebpf: Ebpf, mode: AttachMode, filter: Arc<Mutex<FilterMap>>) -> Attacher {
        Attacher {
            ebpf,
            mode,
            links: BTreeMap::new(),
            warned: BTreeSet::new(),
            attached: Arc::new(Mutex::new(BTreeMap::new())),
            filter,
        }
    }

    /// The interfaces attached right now, shared with the timestamper.
    pub(super) fn attached(&self) -> Arc<Mutex<BTreeMap<u32, String>>> {
        Arc::clone(&self.attached)
    }

    pub(super) fn watch(mut self, stopped: &mpsc::Receiver<()>) {
        // Runs until the timestamper drops its sender (Disconnected).
        while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(WATCH_INTERVAL) {
            if let Err(error) = self.rescan(false) {
                tracing::warn!(%error, "eBPF interface watcher");
            }
            let refreshed = sys::lock(&self.filter).refresh_tai_offset();
            if let Err(error) = refreshed {
                tracing::warn!(%error, "eBPF: updating the TAI offset");
            }
        }
        self.detach_all();
    }

    /// Attaches to interfaces not seen before and forgets vanished ones. With
    /// `strict`, the first attach failure is returned; otherwise it is logged once
    /// per interface and retried on the next scan.
    pub(super) fn rescan(&mut self, strict: bool) -> Result<(), EbpfError> {
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
        *sys::lock(&self.attached) = self
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
        sys::lock(&self.attached).clear();
    }
}

fn still_present(ifindex: u32, name: &str) -> bool {
    CString::new(name)
        .ok()
        .and_then(|c| nix::net::if_::if_nametoindex(c.as_c_str()).ok())
        == Some(ifindex)
}
