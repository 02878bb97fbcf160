//! Running Rust code inside a namespace: a new thread `setns(CLONE_NEWNET)`s into it,
//! so sockets it opens (and threads it spawns) live there, while the rest of the
//! process stays in its own namespace. The network namespace is per thread, which is
//! why this never touches the calling thread.

use std::{fs::File, io, path::Path, sync::mpsc, thread};

use nix::sched::{setns, CloneFlags};

use super::NETNS_DIR;
use crate::error::{LabError, Result};

/// Moves the *calling thread* into namespace `ns`. Threads it spawns afterwards start
/// there too. Prefer [`run_in`] or [`spawn_in`], which use a fresh thread; call this
/// directly only on a thread you own for its whole life (e.g. a runtime worker in
/// `on_thread_start`).
pub fn enter(ns: &str) -> Result<()> {
    let path = Path::new(NETNS_DIR).join(ns);
    let file = File::open(&path).map_err(|source| LabError::EnterNamespace {
        ns: ns.to_owned(),
        source,
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|errno| LabError::EnterNamespace {
        ns: ns.to_owned(),
        source: io::Error::from(errno),
    })
}

/// Runs `f` on a new thread inside namespace `ns` and returns its result. A panic in
/// `f` is re-raised in the caller, so test assertions inside `f` work as usual.
///
/// ```no_run
/// # fn demo(lab: &hopwatch_lab::Lab) -> hopwatch_lab::Result<()> {
/// let src = lab.node("src")?.ns.clone();
/// let port = hopwatch_lab::netns::enter::run_in(&src, || {
///     let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
///     rt.block_on(async { tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap().local_addr().unwrap().port() })
/// })?;
/// # Ok(()) }
/// ```
pub fn run_in<T, F>(ns: &str, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    thread::scope(|scope| {
        let handle = thread::Builder::new()
            .name(format!("netns-{ns}"))
            .spawn_scoped(scope, || enter(ns).map(|()| f()))
            .map_err(|source| LabError::Spawn {
                command: format!("thread in namespace {ns}"),
                source,
            })?;
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// A thread running inside a namespace, started by [`spawn_in`].
#[derive(Debug)]
pub struct NsThread<T> {
    handle: thread::JoinHandle<T>,
}

impl<T> NsThread<T> {
    /// Waits for the thread and returns its result; a panic in it is re-raised here.
    pub fn join(self) -> T {
        match self.handle.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Whether the thread has finished.
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

/// Starts `f` on a new thread inside namespace `ns` and returns once the thread has
/// entered it (so a failure to enter is reported here, not at join time).
pub fn spawn_in<T, F>(ns: &str, name: &str, f: F) -> Result<NsThread<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (entered_tx, entered_rx) = mpsc::sync_channel::<Result<()>>(1);
    let ns_owned = ns.to_owned();
    let handle = thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let entered = enter(&ns_owned);
            let ok = entered.is_ok();
            let _ = entered_tx.send(entered);
            if !ok {
                // The caller got the error; this thread has nothing to run.
                std::panic::resume_unwind(Box::new("namespace not entered"));
            }
            f()
        })
        .map_err(|source| LabError::Spawn {
            command: format!("thread {name} in namespace {ns}"),
            source,
        })?;
    match entered_rx.recv() {
        Ok(Ok(())) => Ok(NsThread { handle }),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => Err(LabError::ThreadPanicked {
            thread: name.to_owned(),
        }),
    }
}
