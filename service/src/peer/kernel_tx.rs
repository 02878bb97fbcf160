//! Kernel transmit timestamps for STAMP: the probe programs' TC egress
//! classifier writes the time into each outgoing STAMP packet of a registered
//! local UDP port (a sender's T1, a reflector's T3; probe-ebpf's stamp.rs
//! explains the rewrite). Without it, a reflector's T3 is the userspace clock
//! before `sendto`, and a sender's T1 the driver's SO_TIMESTAMPING stamp.
//!
//! One copy of the programs serves every sender and reflector of this process
//! in one network namespace (a daemon with a hundred peers attaches once, not a
//! hundred times); it is loaded with the first registration there and detached
//! when the last one is dropped. It runs next to the probe engine's copy, with
//! probe stamping off: the STAMP threads may run without a probe engine
//! (`hopwatch reflect`, `hopwatch peer`), and each copy keeps its own maps.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, Weak};

use hopwatch_probe_common::ProbeFilter;
use serde::Serialize;

use crate::probe::ebpf::{EbpfError, EbpfTimestamper};
use crate::sys;

/// Where a reflector's T3 comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum T3Source {
    /// Written at TC egress by eBPF.
    Ebpf,
    /// The userspace clock before `sendto`.
    #[default]
    Userspace,
}

impl T3Source {
    pub fn as_str(self) -> &'static str {
        match self {
            T3Source::Ebpf => "ebpf",
            T3Source::Userspace => "userspace",
        }
    }
}

/// Why kernel transmit stamps are unavailable.
#[derive(Debug, thiserror::Error)]
pub enum KernelTxError {
    #[error("reading this thread's network namespace ({path}): {source}")]
    Namespace {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Ebpf(#[from] EbpfError),
}

/// The programs loaded in one network namespace, and how many registrations
/// each port has (a reflector serving two addresses on one port registers it
/// twice).
struct NamespaceStamper {
    netns: u64,
    loaded: Mutex<Loaded>,
}

struct Loaded {
    timestamper: EbpfTimestamper,
    ports: HashMap<u16, usize>,
}

/// Every namespace's programs, while anyone uses them.
static STAMPERS: Mutex<Vec<Weak<NamespaceStamper>>> = Mutex::new(Vec::new());

const NETNS_PATH: &str = "/proc/thread-self/ns/net";

/// The calling thread's network namespace, by inode.
fn current_netns() -> Result<u64, KernelTxError> {
    std::fs::metadata(NETNS_PATH)
        .map(|m| m.ino())
        .map_err(|source| KernelTxError::Namespace {
            path: NETNS_PATH,
            source,
        })
}

/// One local UDP port whose STAMP packets get their transmit timestamp written
/// at TC egress; dropping it stops that (and detaches the programs when it
/// was the namespace's last).
pub struct KernelTxStamps {
    stamper: Arc<NamespaceStamper>,
    port: u16,
}

impl std::fmt::Debug for KernelTxStamps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelTxStamps")
            .field("netns", &self.stamper.netns)
            .field("port", &self.port)
            .finish()
    }
}

impl KernelTxStamps {
    /// Registers `port` in the calling thread's network namespace, loading and
    /// attaching the programs there if this is the first registration.
    pub fn register(port: u16) -> Result<KernelTxStamps, KernelTxError> {
        let netns = current_netns()?;
        let stamper = {
            let mut stampers = sys::lock(&STAMPERS);
            stampers.retain(|w| w.strong_count() > 0);
            match stampers
                .iter()
                .filter_map(Weak::upgrade)
                .find(|s| s.netns == netns)
            {
                Some(stamper) => stamper,
                None => {
                    let (timestamper, _events) = EbpfTimestamper::load(ProbeFilter::disabled())?;
                    let stamper = Arc::new(NamespaceStamper {
                        netns,
                        loaded: Mutex::new(Loaded {
                            timestamper,
                            ports: HashMap::new(),
                        }),
                    });
                    stampers.push(Arc::downgrade(&stamper));
                    stamper
                }
            }
        };
        {
            let mut loaded = sys::lock(&stamper.loaded);
            let registrations = loaded.ports.get(&port).copied().unwrap_or(0);
            if registrations == 0 {
                loaded.timestamper.add_stamp_port(port)?;
            }
            loaded.ports.insert(port, registrations + 1);
        }
        Ok(KernelTxStamps { stamper, port })
    }

    /// The registered port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Packets from this port rewritten since the port was first registered.
    pub fn written(&self) -> u64 {
        let loaded = sys::lock(&self.stamper.loaded);
        match loaded.timestamper.stamp_port_written(self.port) {
            Ok(n) => n,
            Err(error) => {
                tracing::debug!(%error, port = self.port, "reading the STAMP rewrite count");
                0
            }
        }
    }

    /// Packets of any registered port in this namespace the program could not
    /// rewrite (they kept the userspace time).
    pub fn failed_in_namespace(&self) -> u64 {
        let loaded = sys::lock(&self.stamper.loaded);
        loaded
            .timestamper
            .counters()
            .map_or(0, |c| c.stamp_tx_failed)
    }
}

impl Drop for KernelTxStamps {
    fn drop(&mut self) {
        let mut loaded = sys::lock(&self.stamper.loaded);
        let registrations = loaded.ports.get(&self.port).copied().unwrap_or(1);
        if registrations <= 1 {
            loaded.ports.remove(&self.port);
            if let Err(error) = loaded.timestamper.remove_stamp_port(self.port) {
                tracing::debug!(%error, port = self.port, "unregistering a STAMP port");
            }
        } else {
            loaded.ports.insert(self.port, registrations - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_is_read_from_proc() {
        let a = current_netns().unwrap();
        let b = current_netns().unwrap();
        assert_eq!(a, b);
        assert_ne!(a, 0);
    }
}
