//! The reflector's kernel transmit stamps: loads the probe programs in the
//! reflector's network namespace, with probe stamping off, and registers the
//! reflector's UDP ports so the TC egress program writes T3 into each reply as
//! it leaves (probe-ebpf's stamp.rs explains the rewrite). Without it, T3 is
//! the userspace clock just before `sendto`, and the send path counts as
//! network time.
//!
//! A second copy of the programs next to the probe engine's (in `hopwatch run`)
//! is deliberate: the reflector runs in its own threads and may start without a
//! probe engine (`hopwatch reflect`), and each copy keeps its own maps.

use hopwatch_probe_common::ProbeFilter;
use serde::Serialize;

use crate::probe::ebpf::{EbpfError, EbpfTimestamper};

/// Where the reflector's T3 comes from.
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

/// The loaded programs; dropping this detaches them.
pub struct KernelT3 {
    timestamper: EbpfTimestamper,
}

impl std::fmt::Debug for KernelT3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelT3").finish_non_exhaustive()
    }
}

impl KernelT3 {
    /// Loads and attaches the programs in the calling thread's namespace and
    /// registers `ports` (the reflector's bound UDP ports).
    pub fn start(ports: impl IntoIterator<Item = u16>) -> Result<KernelT3, EbpfError> {
        let (mut timestamper, _events) = EbpfTimestamper::load(ProbeFilter::disabled())?;
        for port in ports {
            timestamper.add_reflector_port(port)?;
        }
        Ok(KernelT3 { timestamper })
    }

    /// Replies rewritten, and replies the program could not rewrite, since start.
    pub fn counts(&self) -> (u64, u64) {
        match self.timestamper.counters() {
            Ok(c) => (c.stamp_t3_written, c.stamp_t3_failed),
            Err(error) => {
                tracing::debug!(%error, "reading the T3 counters");
                (0, 0)
            }
        }
    }
}
