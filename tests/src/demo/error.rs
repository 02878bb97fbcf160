//! Why the demo could not run or stop cleanly. Each variant says what was being
//! done and where, and for the daemon the end of its log.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::LabError;

/// Errors of the demo driver.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The `hopwatch` binary to run is not there.
    #[error(
        "{} is missing: build it with `cargo build --release -p hopwatch-service` \
         (deploy/demo.sh does), or point --hopwatch at it", path.display()
    )]
    HopwatchMissing { path: PathBuf },

    /// The port asked for is taken on the host's loopback.
    #[error(
        "127.0.0.1:{port} is already in use by another program; choose a free port \
         with --port N"
    )]
    PortInUse { port: u16 },

    /// No port was asked for and none of the usual ones is free.
    #[error("no free port on 127.0.0.1 from {first} to {last}; choose one with --port N")]
    NoFreePort { first: u16, last: u16 },

    /// Listening on the host's loopback failed for another reason.
    #[error("listening on 127.0.0.1:{port}: {source}")]
    Listen { port: u16, source: io::Error },

    /// The lab refused something.
    #[error("{step}: {source}")]
    Lab {
        step: &'static str,
        source: LabError,
    },

    /// A scripted event could not be played.
    #[error("playing the event \"{event}\": {source}")]
    Event { event: String, source: LabError },

    /// The demo's working directory.
    #[error("creating a temporary directory for the demo: {0}")]
    TempDir(io::Error),

    /// Writing a file.
    #[error("writing {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },

    /// The system's random source.
    #[error("drawing the demo's random tokens: {0}")]
    Random(getrandom::Error),

    /// The receiver and forwarder thread.
    #[error("starting the webhook receiver and the web forwarder: {0}")]
    Services(io::Error),

    /// The daemon ended on its own.
    #[error(
        "hopwatch run (pid {pid}) exited unexpectedly ({status}); the end of its log \
         ({}):\n{tail}", log.display()
    )]
    DaemonExited {
        pid: u32,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },

    /// The daemon did not bring up its web server in time.
    #[error(
        "hopwatch run (pid {pid}) did not start its web server within {waited:?}; the \
         end of its log ({}):\n{tail}", log.display()
    )]
    DaemonNotReady {
        pid: u32,
        waited: Duration,
        log: PathBuf,
        tail: String,
    },

    /// The daemon ignored SIGTERM.
    #[error(
        "hopwatch run (pid {pid}) did not stop within {waited:?} of SIGTERM, and was \
         killed; the end of its log ({}):\n{tail}", log.display()
    )]
    DaemonStuck {
        pid: u32,
        waited: Duration,
        log: PathBuf,
        tail: String,
    },

    /// The daemon stopped, but not cleanly.
    #[error("hopwatch run (pid {pid}) stopped with {status}; its log: {}", log.display())]
    DaemonFailed {
        pid: u32,
        status: ExitStatus,
        log: PathBuf,
    },

    /// Waiting for or signalling the daemon.
    #[error("{what} hopwatch run (pid {pid}): {source}")]
    Process {
        what: &'static str,
        pid: u32,
        source: io::Error,
    },

    /// The web UI, through the forwarder, does not answer as it should.
    #[error("the web UI does not answer on {url}: {reason}")]
    WebUnreachable { url: String, reason: WebFailure },
}

/// How a request to the web UI failed.
#[derive(Debug, thiserror::Error)]
pub enum WebFailure {
    #[error("{0}")]
    Request(#[from] ureq::Error),
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
}
