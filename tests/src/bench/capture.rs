//! A tcpdump capture on one interface of a lab node, written as a pcap with
//! nanosecond timestamps. Started before a tool runs, stopped (by its PID,
//! with SIGINT so it flushes) after; tcpdump's own drop count is kept, since a
//! capture that dropped packets cannot vouch for the probes it is missing.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::mpsc,
    thread::JoinHandle,
    time::Duration,
};

use nix::{sys::signal::Signal, unistd::Pid};

use crate::{netns::exec::describe, Lab};

use super::error::{BenchError, Result};

/// How long tcpdump may take to report that it listens.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running capture. Dropping it without [`Capture::stop`] kills tcpdump.
pub struct Capture {
    child: Child,
    command: String,
    path: PathBuf,
    stderr: Option<JoinHandle<Vec<String>>>,
}

/// What tcpdump said when it stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureStats {
    pub path: PathBuf,
    /// "N packets captured".
    pub captured: Option<u64>,
    /// "N packets dropped by kernel".
    pub dropped: Option<u64>,
}

impl Capture {
    /// Starts tcpdump on `interface` of lab node `node`, writing `path`, and
    /// returns once it is capturing.
    pub fn start(lab: &Lab, node: &str, interface: &str, path: &Path) -> Result<Capture> {
        let ns = lab.ns(node)?.to_owned();
        let mut cmd = lab.command(node, "tcpdump")?;
        cmd.args(["-i", interface, "-n", "-s", "256", "-B", "32768"])
            .arg("--time-stamp-precision=nano")
            // Hand every packet to tcpdump at once and write it at once: with
            // the default block buffering, the packets of the last partly
            // filled block are lost when tcpdump is stopped.
            .arg("--immediate-mode")
            .arg("-U")
            .arg("-w")
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let command = describe(&cmd);
        let mut child = cmd.spawn().map_err(|source| BenchError::Spawn {
            command: command.clone(),
            source,
        })?;
        let stderr = child.stderr.take().expect("stderr was piped");
        let (ready_tx, ready_rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if line.contains("listening on") {
                    let _ = ready_tx.send(());
                }
                lines.push(line);
            }
            lines
        });
        let mut capture = Capture {
            child,
            command,
            path: path.to_owned(),
            stderr: Some(reader),
        };
        if ready_rx.recv_timeout(START_TIMEOUT).is_err() {
            let _ = capture.child.kill();
            let _ = capture.child.wait();
            let lines = capture.stderr.take().map(|h| h.join().unwrap_or_default());
            return Err(BenchError::CaptureStart {
                interface: interface.to_owned(),
                ns,
                stderr: lines.unwrap_or_default().join("\n"),
            });
        }
        Ok(capture)
    }

    /// Stops tcpdump (SIGINT to its PID), waits for it, and reports its counters.
    pub fn stop(mut self) -> Result<CaptureStats> {
        let pid = self.child.id();
        let wait_error = |source| BenchError::Wait {
            command: self.command.clone(),
            pid,
            source,
        };
        // Replies to the last probes may still be on their way back.
        std::thread::sleep(Duration::from_millis(200));
        nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGINT)
            .map_err(|e| wait_error(e.into()))?;
        self.child.wait().map_err(wait_error)?;
        let lines = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let count = |suffix: &str| {
            lines.iter().find_map(|l| {
                l.strip_suffix(suffix)
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
        };
        Ok(CaptureStats {
            path: self.path.clone(),
            captured: count(" packets captured"),
            dropped: count(" packets dropped by kernel"),
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if self.stderr.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
