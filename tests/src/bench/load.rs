//! Heavy background load for the "under load" runs: one stress-ng process
//! loading CPU, memory, I/O and context switches. It stops itself after its
//! `--timeout`, and is stopped earlier by its PID (SIGTERM, which stress-ng
//! forwards to its workers) when the guard is stopped or dropped.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};

use crate::netns::exec::describe;

use super::error::{BenchError, Result};

/// The stressors: every core busy computing, a memory thrasher, an I/O syncer
/// and context-switch ping-pong, i.e. a busy router's control plane.
pub const STRESSORS: &[&str] = &[
    "--cpu",
    "2",
    "--vm",
    "1",
    "--vm-bytes",
    "512M",
    "--io",
    "1",
    "--switch",
    "2",
];

/// Time stress-ng gets to start its workers before measuring.
const WARM_UP: Duration = Duration::from_secs(2);

/// A running stress-ng.
pub struct StressLoad {
    child: Child,
    command: String,
    stopped: bool,
}

impl StressLoad {
    /// Starts `program` (stress-ng) with [`STRESSORS`], ending by itself after
    /// `timeout` at the latest, and returns after a short warm-up.
    pub fn start(program: &str, timeout: Duration) -> Result<StressLoad> {
        let mut cmd = Command::new(program);
        cmd.args(STRESSORS)
            .arg("--timeout")
            .arg(format!("{}s", timeout.as_secs().max(1)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let command = describe(&cmd);
        let child = cmd.spawn().map_err(|source| BenchError::Spawn {
            command: command.clone(),
            source,
        })?;
        let mut load = StressLoad {
            child,
            command,
            stopped: false,
        };
        std::thread::sleep(WARM_UP);
        if let Ok(Some(status)) = load.child.try_wait() {
            load.stopped = true;
            return Err(BenchError::Failed {
                command: load.command.clone(),
                status: status.to_string(),
                stderr: "stress-ng exited during its warm-up".to_owned(),
            });
        }
        Ok(load)
    }

    /// The command line, for the report.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Stops stress-ng: SIGTERM to its PID, SIGKILL if it has not exited in 10 s.
    pub fn stop(mut self) -> Result<()> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let pid = self.child.id();
        let wait_error = |source| BenchError::Wait {
            command: self.command.clone(),
            pid,
            source,
        };
        if self.child.try_wait().map_err(wait_error)?.is_some() {
            return Ok(());
        }
        nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGTERM)
            .map_err(|e| wait_error(e.into()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().map_err(wait_error)?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill().map_err(wait_error)?;
        self.child.wait().map_err(wait_error)?;
        Ok(())
    }
}

impl Drop for StressLoad {
    fn drop(&mut self) {
        if let Err(err) = self.terminate() {
            eprintln!("stopping the background load: {err}");
        }
    }
}
