//! Why the eBPF timestamp source is unavailable: [`EbpfError`], whose messages
//! spell out the whole error chain (aya keeps the OS error, say "Operation not
//! permitted", in a source, and the engine logs only our Display) and name the
//! likely cause (see `hint`).

use std::io;

use aya::maps::MapError;
use aya::programs::tc::TcError;
use aya::programs::ProgramError;

use super::hint::{aya_hint, map_hint, program_hint, tc_hint};
use crate::sys::error_chain;

/// Why the eBPF timestamp source is unavailable. Every message names the likely
/// cause, because the engine falls back to SO_TIMESTAMPING and logs this.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error(
        "loading hopwatch's eBPF object failed ({}): {}",
        aya_hint(source),
        error_chain(source)
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
        error_chain(source)
    )]
    Program {
        program: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("hopwatch's eBPF object has no map `{map}` (the embedded object does not match this loader)")]
    MissingMap { map: &'static str },
    #[error("eBPF map `{map}` ({}): {}", map_hint(source), error_chain(source))]
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
        error_chain(source)
    )]
    Clsact {
        iface: String,
        #[source]
        source: Box<TcError>,
    },
    #[error(
        "attaching eBPF program `{program}` to {iface} (ifindex {ifindex}) failed ({}): {}",
        program_hint(source),
        error_chain(source)
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
    #[error("eBPF ring buffer record of {len} bytes is neither a small reply event ({small} bytes) nor a full one ({full} bytes); the embedded object does not match this loader")]
    UnexpectedRecord {
        len: usize,
        small: usize,
        full: usize,
    },
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
