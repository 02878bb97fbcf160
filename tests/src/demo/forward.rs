//! A TCP forwarder from the host's loopback into the lab: the daemon's web
//! server listens on 127.0.0.1 of the lab's source namespace, which the host
//! cannot reach, so the demo listens on the host's 127.0.0.1 with the same port
//! and relays every connection (live streams included) to it. Only loopback on
//! either side: nothing here can reach another address.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};

/// Accepts on `listener` (bound in the host's namespace) and connects each
/// client to `upstream` from the namespace of the calling runtime's thread.
/// Runs until its task is dropped.
pub async fn forward(listener: TcpListener, upstream: SocketAddr) {
    loop {
        let mut client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(err) => {
                // Out of file descriptors and the like: wait rather than spin.
                eprintln!("hopwatch-demo: accepting a web connection: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            // A refused connection (the daemon starting or stopping) closes the
            // client's, which a browser shows as "connection reset".
            if let Ok(mut server) = TcpStream::connect(upstream).await {
                let _ = copy_bidirectional(&mut client, &mut server).await;
            }
        });
    }
}
