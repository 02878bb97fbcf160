//! Running programs and measuring what they cost: the CPU time (user + system)
//! of a child and of the children it reaped, from `wait4`'s rusage, and its
//! wall time. The kernel accounts the total from the scheduler's runtime, so
//! the sum is exact even though the user/system split is sampled by ticks.

use std::{
    io::Read,
    os::unix::process::ExitStatusExt,
    process::{Child, Command, ExitStatus, Stdio},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::netns::exec::describe;

use super::error::{BenchError, Result};

/// What a finished child printed and cost.
#[derive(Debug)]
pub struct Finished {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// User + system CPU of the child and of the descendants it waited for.
    pub cpu: Duration,
    pub wall: Duration,
}

impl Finished {
    /// Fails with the command line and its stderr unless it exited 0.
    pub fn check(self) -> Result<Finished> {
        if self.status.success() {
            Ok(self)
        } else {
            Err(BenchError::Failed {
                command: self.command,
                status: self.status.to_string(),
                stderr: String::from_utf8_lossy(&self.stderr).trim().to_owned(),
            })
        }
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// A child whose output is being collected; [`Running::wait`] reaps it with `wait4`.
pub struct Running {
    child: Child,
    command: String,
    started: Instant,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
    reaped: bool,
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        // A read error ends the output early; the exit status tells the rest.
        let _ = pipe.read_to_end(&mut out);
        out
    })
}

impl Running {
    /// Starts `cmd` with stdout and stderr collected and stdin closed.
    pub fn spawn(mut cmd: Command) -> Result<Running> {
        let command = describe(&cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|source| BenchError::Spawn {
            command: command.clone(),
            source,
        })?;
        let stdout = drain(child.stdout.take().expect("stdout was piped"));
        let stderr = drain(child.stderr.take().expect("stderr was piped"));
        Ok(Running {
            child,
            command,
            started,
            stdout,
            stderr,
            reaped: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn command(&self) -> &str {
        &self.command
    }

    /// Waits for the child and returns its output and cost.
    pub fn wait(mut self) -> Result<Finished> {
        self.reap_now(true)
            .map(|finished| finished.expect("a blocking wait4 returns the child"))
    }

    /// The child's output and cost if it has exited, else `Ok(Err(self))`.
    pub fn try_wait(mut self) -> Result<std::result::Result<Finished, Running>> {
        match self.reap_now(false)? {
            Some(finished) => Ok(Ok(finished)),
            None => Ok(Err(self)),
        }
    }

    /// Kills the child (by its PID) and reaps it.
    pub fn kill(mut self) -> Result<Finished> {
        let _ = self.child.kill();
        self.wait()
    }

    fn reap_now(&mut self, block: bool) -> Result<Option<Finished>> {
        let pid = self.child.id();
        let mut status = 0;
        // SAFETY: rusage is plain data that wait4 fills in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let flags = if block { 0 } else { libc::WNOHANG };
        loop {
            // SAFETY: status and usage are valid, writable locals; pid is our child.
            let rc = unsafe { libc::wait4(pid as libc::pid_t, &mut status, flags, &mut usage) };
            if rc == pid as libc::pid_t {
                break;
            }
            if rc == 0 {
                return Ok(None);
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(BenchError::Wait {
                    command: self.command.clone(),
                    pid,
                    source: err,
                });
            }
        }
        self.reaped = true;
        let wall = self.started.elapsed();
        let stdout = std::mem::replace(&mut self.stdout, std::thread::spawn(Vec::new));
        let stderr = std::mem::replace(&mut self.stderr, std::thread::spawn(Vec::new));
        Ok(Some(Finished {
            command: self.command.clone(),
            status: ExitStatus::from_raw(status),
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
            cpu: timeval(usage.ru_utime) + timeval(usage.ru_stime),
            wall,
        }))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.reaped {
            // Only this child, by its PID; then reap it.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
}

/// CPU time (user + system) this process has used so far, all threads.
pub fn own_cpu() -> Duration {
    // SAFETY: rusage is plain data that getrusage fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid, writable rusage cannot fail.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    timeval(usage.ru_utime) + timeval(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_child_reports_its_cpu_and_output() {
        // `sh` spins for a moment of CPU, then prints.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo done");
        let finished = Running::spawn(cmd)
            .unwrap()
            .wait()
            .unwrap()
            .check()
            .unwrap();
        assert_eq!(finished.stdout_text(), "done\n");
        assert!(
            finished.cpu > Duration::from_millis(5),
            "{:?}",
            finished.cpu
        );
        assert!(finished.cpu <= finished.wall + Duration::from_millis(50));
    }

    #[test]
    fn a_failing_child_is_an_error_naming_it() {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("echo nope >&2; exit 3");
        let err = Running::spawn(cmd)
            .unwrap()
            .wait()
            .unwrap()
            .check()
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sh -c") && text.contains("nope"), "{text}");
    }
}
