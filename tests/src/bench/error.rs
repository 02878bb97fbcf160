//! The benchmarks' error type: each variant names the file, command or line
//! that went wrong, since a benchmark run is read by a person afterwards.

use std::{io, path::PathBuf};

use crate::LabError;

/// Errors of the benchmark building blocks.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Building or driving the lab failed.
    #[error(transparent)]
    Lab(#[from] LabError),

    /// A program could not be started.
    #[error("could not start `{command}`: {source}")]
    Spawn { command: String, source: io::Error },

    /// A program ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },

    /// Waiting for a program, or signalling it, failed.
    #[error("waiting for `{command}` (pid {pid}): {source}")]
    Wait {
        command: String,
        pid: u32,
        source: io::Error,
    },

    /// tcpdump did not report that it was capturing in time.
    #[error("tcpdump on {interface} in {ns} did not start capturing: {stderr}")]
    CaptureStart {
        interface: String,
        ns: String,
        stderr: String,
    },

    /// Reading or writing a file failed.
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    /// A pcap file could not be read.
    #[error("reading the capture {path}: {source}")]
    Pcap {
        path: PathBuf,
        source: pcap_file::PcapError,
    },

    /// A capture of an unexpected link type.
    #[error("the capture {path} has link type {link:?}; expected Ethernet")]
    LinkType { path: PathBuf, link: String },

    /// A tool printed something we could not parse.
    #[error("{tool} output line {line}: {problem}: {text:?}")]
    Output {
        tool: &'static str,
        line: usize,
        problem: String,
        text: String,
    },

    /// The capture does not allow matching a tool's probes.
    #[error("matching {tool}'s probes against the capture: {problem}")]
    Matching { tool: &'static str, problem: String },
}

/// Result with [`BenchError`].
pub type Result<T, E = BenchError> = std::result::Result<T, E>;
