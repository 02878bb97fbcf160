//! Stop requests: SIGINT (Ctrl-C), SIGTERM and SIGHUP get handlers (tokio's, on
//! a thread of their own) that turn them into messages, so a signal never kills
//! the demo between two steps of building or removing the lab; the main loop
//! polls for them and then tears everything down in order.
//!
//! Handlers rather than a blocked signal mask: a mask is inherited by the
//! programs the demo starts (the daemon would never see its SIGTERM), while
//! handlers are reset when a child execs.

use std::io;
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};

/// The stop signals, as they arrive.
#[derive(Debug)]
pub struct Signals {
    rx: mpsc::Receiver<Signal>,
}

impl Signals {
    /// Installs the handlers; from its return on, the stop signals no longer
    /// end the process. Call it first in `main`.
    pub fn install() -> io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<io::Result<()>>(1);
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let streams = (|| {
                        Ok::<_, io::Error>((
                            signal(SignalKind::interrupt())?,
                            signal(SignalKind::terminate())?,
                            signal(SignalKind::hangup())?,
                        ))
                    })();
                    let (mut int, mut term, mut hup) = match streams {
                        Ok(streams) => streams,
                        Err(err) => {
                            let _ = ready_tx.send(Err(err));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    loop {
                        let got = tokio::select! {
                            _ = int.recv() => Signal::SIGINT,
                            _ = term.recv() => Signal::SIGTERM,
                            _ = hup.recv() => Signal::SIGHUP,
                        };
                        if tx.send(got).is_err() {
                            break;
                        }
                    }
                });
            })?;
        ready_rx
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the signal thread ended early")))?;
        Ok(Self { rx })
    }

    /// Waits up to `limit` for a stop signal.
    pub fn wait(&self, limit: Duration) -> Option<Signal> {
        self.rx.recv_timeout(limit).ok()
    }

    /// A stop signal that already arrived, if any.
    pub fn pending(&self) -> Option<Signal> {
        self.rx.try_recv().ok()
    }
}
