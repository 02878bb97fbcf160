//! The demo's own servers, on one tokio thread inside the lab's source
//! namespace: the webhook receiver, on that namespace's loopback where the
//! daemon can reach it, and the web UI forwarder, whose listener was bound on
//! the host's loopback before the thread moved into the lab.

use std::future::IntoFuture;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::{console::Console, error::DemoError, forward::forward, receiver};
use crate::{netns::enter::NsThread, Lab};

/// The running servers. Dropping them stops them.
#[derive(Debug)]
pub struct Services {
    receiver_port: u16,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<NsThread<()>>,
}

impl Services {
    /// Starts the receiver (checking signatures with `secret`) and forwards
    /// connections to `ui` (bound on the host's 127.0.0.1) to the same port on
    /// the source namespace's 127.0.0.1.
    pub fn start(
        lab: &Lab,
        ui: std::net::TcpListener,
        console: Console,
        secret: &str,
    ) -> Result<Self, DemoError> {
        let ui_port = ui.local_addr().map_err(DemoError::Services)?.port();
        ui.set_nonblocking(true).map_err(DemoError::Services)?;
        let router = receiver::router(console, secret);
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<u16>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = lab
            .spawn_in("src", "demo-services", move || {
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
                    let started = async {
                        let hook = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
                        let port = hook.local_addr()?.port();
                        Ok::<_, io::Error>((hook, port, tokio::net::TcpListener::from_std(ui)?))
                    };
                    let (hook, port, ui) = match started.await {
                        Ok(parts) => parts,
                        Err(err) => {
                            let _ = ready_tx.send(Err(err));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(port));
                    let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, ui_port));
                    // Stopping drops both servers with the runtime, mid-connection
                    // if need be: the daemon, their only other party, is gone by then.
                    tokio::select! {
                        _ = stop_rx => {}
                        _ = forward(ui, upstream) => {}
                        served = axum::serve(hook, router).into_future() => {
                            if let Err(err) = served {
                                eprintln!("hopwatch-demo: the webhook receiver stopped: {err}");
                            }
                        }
                    }
                });
            })
            .map_err(|source| DemoError::Lab {
                step: "starting the receiver thread in the source namespace",
                source,
            })?;
        let mut services = Self {
            receiver_port: 0,
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(port)) => services.receiver_port = port,
            Ok(Err(err)) => return Err(DemoError::Services(err)),
            Err(_) => {
                return Err(DemoError::Services(io::Error::other(
                    "the receiver thread ended before it started",
                )))
            }
        }
        Ok(services)
    }

    /// The receiver's URL, as the daemon (in the source namespace) reaches it.
    pub fn webhook_url(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.receiver_port, receiver::PATH)
    }

    /// Stops both servers and waits for their thread.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join();
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.shut();
    }
}
