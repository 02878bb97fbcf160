//! The real `hopwatch run`, started in the lab's source namespace: its log goes
//! to a file (warnings and errors are echoed to stderr), readiness is its "web
//! UI, API and metrics" log line, and it is stopped by its PID with SIGTERM,
//! as an operator would.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::error::DemoError;
use crate::{netns::exec::NsChild, Lab};

/// The log line the daemon prints once its web server listens.
const READY_LINE: &str = "web UI, API and metrics";
/// Lines of the log shown when the daemon fails.
const TAIL_LINES: usize = 20;

/// A running daemon. Dropping it kills it (by PID); [`stop`](Self::stop) is
/// the clean way.
#[derive(Debug)]
pub struct Daemon<'lab> {
    child: NsChild<'lab>,
    pid: u32,
    log: PathBuf,
    ready: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl<'lab> Daemon<'lab> {
    /// Starts `hopwatch --log info run -c <config>` in the lab's source
    /// namespace, logging to `log`.
    pub fn start(
        lab: &'lab Lab,
        hopwatch: &Path,
        config: &Path,
        log: &Path,
    ) -> Result<Self, DemoError> {
        let mut file = File::create(log).map_err(|source| DemoError::Write {
            path: log.to_owned(),
            source,
        })?;
        let mut cmd = lab
            .command("src", &hopwatch.to_string_lossy())
            .map_err(|source| DemoError::Lab {
                step: "starting hopwatch run",
                source,
            })?;
        cmd.args(["--log", "info", "run", "-c"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = lab.spawn("src", cmd).map_err(|source| DemoError::Lab {
            step: "starting hopwatch run",
            source,
        })?;
        let pid = child.pid();
        let stderr = child.child_mut().stderr.take().expect("stderr is piped");
        let ready = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&ready);
        let reader = std::thread::Builder::new()
            .name("daemon-log".into())
            .spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = writeln!(file, "{line}");
                    if line.contains(READY_LINE) {
                        seen.store(true, Ordering::SeqCst);
                    }
                    if line.contains(" WARN ") || line.contains(" ERROR ") {
                        eprintln!("hopwatch run: {line}");
                    }
                }
            })
            .map_err(|source| DemoError::Process {
                what: "reading the log of",
                pid,
                source,
            })?;
        Ok(Self {
            child,
            pid,
            log: log.to_owned(),
            ready,
            reader: Some(reader),
        })
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Fails when the daemon has exited.
    pub fn check_running(&mut self) -> Result<(), DemoError> {
        match self.child.child_mut().try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.finish_log();
                Err(DemoError::DaemonExited {
                    pid: self.pid,
                    status,
                    log: self.log.clone(),
                    tail: self.tail(),
                })
            }
            Err(source) => Err(DemoError::Process {
                what: "waiting for",
                pid: self.pid,
                source,
            }),
        }
    }

    /// Waits until the web server listens, or fails after `limit` (or when
    /// the daemon exits, or `interrupted` says so).
    pub fn wait_ready(
        &mut self,
        limit: Duration,
        mut interrupted: impl FnMut() -> bool,
    ) -> Result<bool, DemoError> {
        let start = Instant::now();
        while !self.ready.load(Ordering::SeqCst) {
            self.check_running()?;
            if interrupted() {
                return Ok(false);
            }
            if start.elapsed() > limit {
                return Err(DemoError::DaemonNotReady {
                    pid: self.pid,
                    waited: limit,
                    log: self.log.clone(),
                    tail: self.tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(true)
    }

    /// Sends SIGTERM (unless the daemon already stopped, e.g. on the terminal's
    /// Ctrl-C) and waits up to `limit` for it to exit. Returns its status.
    pub fn stop(mut self, limit: Duration) -> Result<ExitStatus, DemoError> {
        let pid = self.pid;
        let waited = |source| DemoError::Process {
            what: "waiting for",
            pid,
            source,
        };
        if self.child.child_mut().try_wait().map_err(waited)?.is_none() {
            // The child is not reaped until it exits, so this PID is still ours.
            kill(Pid::from_raw(pid as i32), Signal::SIGTERM).map_err(|errno| {
                DemoError::Process {
                    what: "sending SIGTERM to",
                    pid,
                    source: errno.into(),
                }
            })?;
        }
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.child_mut().try_wait().map_err(waited)? {
                break status;
            }
            if start.elapsed() > limit {
                // Dropping the child kills and reaps it.
                return Err(DemoError::DaemonStuck {
                    pid,
                    waited: limit,
                    log: self.log.clone(),
                    tail: self.tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.finish_log();
        Ok(status)
    }

    /// Waits for the log reader, which ends with the daemon's stderr.
    fn finish_log(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    /// The last lines of the log.
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
    }
}
