//! Running programs inside a namespace: `Command` builders prefixed with
//! `ip netns exec`, `ip -batch` scripts, and children that are killed (by PID) on drop.

use std::{
    ffi::OsStr,
    io::Write,
    marker::PhantomData,
    process::{Child, Command, ExitStatus, Output, Stdio},
};

use crate::error::{LabError, Result};

/// A `Command` that runs `program` inside namespace `ns` (`ip netns exec NS PROGRAM`).
/// `ip netns exec` execs the program, so the child's PID is the program's PID.
pub fn command(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.arg("netns").arg("exec").arg(ns).arg(program);
    cmd
}

/// Renders a command line for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs a command to completion, optionally feeding `stdin`, and fails with the command
/// line and its stderr when it exits non-zero.
pub fn run(mut cmd: Command, ns: Option<&str>, stdin: Option<&str>) -> Result<Output> {
    let line = describe(&cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| spawn_error(&cmd, &line, e))?;
    if let Some(input) = stdin {
        // Dropping the handle after writing closes the pipe so the child sees EOF.
        let mut pipe = child.stdin.take().expect("stdin was piped");
        pipe.write_all(input.as_bytes())
            .map_err(|source| LabError::Spawn {
                command: line.clone(),
                source,
            })?;
    }
    let output = child.wait_with_output().map_err(|source| LabError::Spawn {
        command: line.clone(),
        source,
    })?;
    if !output.status.success() {
        return Err(failed(&line, stdin, ns, output.status, &output.stderr));
    }
    Ok(output)
}

/// Runs `ip [-n NS] [-force] -batch -` with `script` on stdin.
pub fn ip_batch(ns: Option<&str>, script: &str, force: bool) -> Result<()> {
    run(ip_batch_command(ns, force), ns, Some(script)).map(drop)
}

/// Starts an `ip -batch` without waiting, so independent namespaces are configured
/// concurrently; [`PendingBatch::wait`] collects the result.
pub fn spawn_ip_batch(ns: Option<&str>, script: &str, force: bool) -> Result<PendingBatch> {
    let mut cmd = ip_batch_command(ns, force);
    let line = describe(&cmd);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| spawn_error(&cmd, &line, e))?;
    let mut pipe = child.stdin.take().expect("stdin was piped");
    pipe.write_all(script.as_bytes())
        .map_err(|source| LabError::Spawn {
            command: line.clone(),
            source,
        })?;
    drop(pipe);
    Ok(PendingBatch {
        child,
        line,
        script: script.to_owned(),
        ns: ns.map(str::to_owned),
    })
}

/// An `ip -batch` process started by [`spawn_ip_batch`].
#[derive(Debug)]
pub struct PendingBatch {
    child: Child,
    line: String,
    script: String,
    ns: Option<String>,
}

impl PendingBatch {
    /// Waits for the batch and fails with its script and stderr if it failed.
    pub fn wait(self) -> Result<()> {
        let output = self
            .child
            .wait_with_output()
            .map_err(|source| LabError::Spawn {
                command: self.line.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(failed(
                &self.line,
                Some(&self.script),
                self.ns.as_deref(),
                output.status,
                &output.stderr,
            ));
        }
        Ok(())
    }
}

fn ip_batch_command(ns: Option<&str>, force: bool) -> Command {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.arg("-n").arg(ns);
    }
    if force {
        cmd.arg("-force");
    }
    cmd.arg("-batch").arg("-");
    cmd
}

fn spawn_error(cmd: &Command, line: &str, source: std::io::Error) -> LabError {
    if source.kind() == std::io::ErrorKind::NotFound {
        LabError::ToolMissing {
            tool: cmd.get_program().to_string_lossy().into_owned(),
            source,
        }
    } else {
        LabError::Spawn {
            command: line.to_owned(),
            source,
        }
    }
}

fn failed(
    line: &str,
    stdin: Option<&str>,
    ns: Option<&str>,
    status: ExitStatus,
    stderr: &[u8],
) -> LabError {
    let command = match stdin {
        Some(input) => format!("{line} <<EOF\n{}EOF", input),
        None => line.to_owned(),
    };
    LabError::CommandFailed {
        command,
        ns: ns.map(str::to_owned),
        status,
        stderr: String::from_utf8_lossy(stderr).trim().to_owned(),
    }
}

/// A process started inside a namespace. Dropping it kills that process (by its PID,
/// and only it) and reaps it, so a test that panics leaves nothing running. The
/// lifetime ties it to the lab whose namespace it runs in.
#[derive(Debug)]
pub struct NsChild<'lab> {
    child: Child,
    ns: String,
    _lab: PhantomData<&'lab ()>,
}

impl NsChild<'_> {
    /// Starts `cmd` (usually built with [`command`]) and remembers its namespace.
    pub fn spawn(mut cmd: Command, ns: &str) -> Result<Self> {
        let line = describe(&cmd);
        let child = cmd.spawn().map_err(|e| spawn_error(&cmd, &line, e))?;
        Ok(Self {
            child,
            ns: ns.to_owned(),
            _lab: PhantomData,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The namespace it runs in.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The underlying child, e.g. to take its stdout.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits for the process to exit on its own.
    pub fn wait(mut self) -> std::io::Result<ExitStatus> {
        self.child.wait()
    }
}

impl Drop for NsChild<'_> {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Child::kill signals exactly this PID; it cannot hit a reused PID because
            // the child is not reaped until the wait below.
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
