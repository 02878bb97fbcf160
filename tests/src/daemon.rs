//! A real `hopwatch run` inside a lab namespace, as end-to-end tests and the
//! screenshot tool run it: started on a config file, its log collected from
//! stderr, stopped with SIGTERM (by its PID) and its exit status returned.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::netns::exec::NsChild;
use crate::{Lab, LabError};

/// The line `hopwatch run` logs once its web server listens.
pub const WEB_READY: &str = "web UI, API and metrics";

/// Failures of a daemon under test; each carries the daemon's log so far.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("could not start {binary} in node {node}: {source}")]
    Start {
        binary: PathBuf,
        node: String,
        source: Box<LabError>,
    },
    #[error("hopwatch run logged no line containing {needle:?} within {limit:?}; its log:\n{log}")]
    LogTimeout {
        needle: String,
        limit: Duration,
        log: String,
    },
    #[error("hopwatch run exited ({status}) while waiting for {needle:?}; its log:\n{log}")]
    Exited {
        needle: String,
        status: ExitStatus,
        log: String,
    },
    #[error("writing the daemon's config {}: {source}", .path.display())]
    Config {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not send SIGTERM to hopwatch run (pid {pid}): {source}")]
    Signal { pid: u32, source: std::io::Error },
    #[error("waiting for hopwatch run (pid {pid}): {source}")]
    Wait { pid: u32, source: std::io::Error },
    #[error("hopwatch run (pid {pid}) did not stop within {limit:?} of SIGTERM; its log:\n{log}")]
    StopTimeout {
        pid: u32,
        limit: Duration,
        log: String,
    },
}

/// `hopwatch run -c CONFIG` in a lab node; killed (by PID) if dropped unstopped.
pub struct Daemon<'lab> {
    child: NsChild<'lab>,
    log: Arc<Mutex<Vec<String>>>,
}

impl<'lab> Daemon<'lab> {
    /// Starts `binary run -c config` in `node` at log level info and waits
    /// until its web server is up (the [`WEB_READY`] line).
    pub fn start(
        lab: &'lab Lab,
        node: &str,
        binary: &Path,
        config: &Path,
    ) -> Result<Daemon<'lab>, DaemonError> {
        let start_error = |source| DaemonError::Start {
            binary: binary.to_owned(),
            node: node.to_owned(),
            source: Box::new(source),
        };
        let mut cmd = lab
            .command(node, &binary.to_string_lossy())
            .map_err(start_error)?;
        cmd.args(["--log", "info", "run", "-c"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = lab.spawn(node, cmd).map_err(start_error)?;
        let log = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.child_mut().stderr.take() {
            let sink = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    hopwatch::sys::lock(&sink).push(line);
                }
            });
        }
        let mut daemon = Daemon { child, log };
        daemon.wait_for_log(WEB_READY, Duration::from_secs(20))?;
        Ok(daemon)
    }

    /// A daemon in `node` that only reflects STAMP: `[reflector]` on `listen`
    /// (port 862), answering `allow` alone, its web server on `web`, its
    /// config and state under `dir`. Returns once the reflector runs.
    pub fn start_reflector(
        lab: &'lab Lab,
        node: &str,
        binary: &Path,
        dir: &Path,
        listen: std::net::IpAddr,
        allow: std::net::IpAddr,
        web: &str,
    ) -> Result<Daemon<'lab>, DaemonError> {
        let config = dir.join("reflector.toml");
        let text = format!(
            "[service]\nstate_dir = {:?}\n\n[web]\nlisten = \"{web}\"\n\n\
             [reflector]\nlisten = [\"{listen}\"]\nallow = [\"{allow}/{}\"]\n",
            dir.join("reflector-state").display().to_string(),
            if allow.is_ipv4() { 32 } else { 128 }
        );
        std::fs::write(&config, text).map_err(|source| DaemonError::Config {
            path: config.clone(),
            source,
        })?;
        let mut daemon = Daemon::start(lab, node, binary, &config)?;
        daemon.wait_for_log("STAMP reflector started", Duration::from_secs(5))?;
        Ok(daemon)
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The log lines so far.
    pub fn log(&self) -> Vec<String> {
        hopwatch::sys::lock(&self.log).clone()
    }

    /// Waits until a log line contains `needle`; fails early if the daemon exits.
    pub fn wait_for_log(&mut self, needle: &str, limit: Duration) -> Result<(), DaemonError> {
        let start = Instant::now();
        loop {
            if self.log().iter().any(|l| l.contains(needle)) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.child_mut().try_wait() {
                // Let the reader thread drain what the daemon printed last.
                std::thread::sleep(Duration::from_millis(100));
                return Err(DaemonError::Exited {
                    needle: needle.to_owned(),
                    status,
                    log: self.log().join("\n"),
                });
            }
            if start.elapsed() >= limit {
                return Err(DaemonError::LogTimeout {
                    needle: needle.to_owned(),
                    limit,
                    log: self.log().join("\n"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit status (within 15 s).
    pub fn stop(mut self) -> Result<ExitStatus, DaemonError> {
        let pid = self.child.pid();
        // SAFETY: kill(2) on the PID of a child we started and have not reaped.
        if unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) } != 0 {
            return Err(DaemonError::Signal {
                pid,
                source: std::io::Error::last_os_error(),
            });
        }
        let limit = Duration::from_secs(15);
        let start = Instant::now();
        loop {
            match self.child.child_mut().try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if start.elapsed() >= limit => {
                    return Err(DaemonError::StopTimeout {
                        pid,
                        limit,
                        log: self.log().join("\n"),
                    })
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(source) => return Err(DaemonError::Wait { pid, source }),
            }
        }
    }
}
