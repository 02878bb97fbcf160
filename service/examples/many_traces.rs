//! Traces many IPv4 and IPv6 targets at once through one engine, and prints a
//! line per target when its trace ends.
//!
//! Run it inside a lab namespace (it needs CAP_NET_RAW, and CAP_BPF for eBPF):
//!
//! ```text
//! sudo ip netns exec <source-namespace> \
//!     cargo run -p hopwatch-service --example many_traces -- 198.18.100.1 2001:db8:100::1
//! ```

use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use hopwatch::probe::{Engine, EngineConfig, FlowSpec, Protocol, TraceSpec, Ttl};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let targets: Vec<IpAddr> = std::env::args()
        .skip(1)
        .map(|arg| {
            arg.parse()
                .map_err(|err| anyhow::anyhow!("{arg:?} is not an IP address: {err}"))
        })
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(!targets.is_empty(), "usage: many_traces <ip> [<ip> ...]");

    let engine = Engine::start(EngineConfig::default()).await?;
    println!("timestamp source: {}", engine.timestamp_source());

    let traces = targets.into_iter().map(|dst| {
        let engine = engine.clone();
        async move {
            let spec = TraceSpec {
                flow: FlowSpec {
                    dst,
                    protocol: Protocol::Icmp,
                    dst_port: 0,
                    packet_size: 64,
                    timeout: Duration::from_secs(1),
                },
                first_ttl: Ttl::new(1).expect("non-zero"),
                max_ttl: Ttl::new(16).expect("non-zero"),
                rounds: Some(3),
                interval: Duration::from_millis(200),
            };
            let mut results = engine.trace(spec)?;
            let (mut answered, mut sent, mut hops) = (0, 0, 0u8);
            while let Some(result) = results.next().await {
                let result = result?;
                sent += 1;
                if result.answer().is_some() {
                    answered += 1;
                }
                if result.reached_destination() {
                    hops = if hops == 0 {
                        result.ttl.get()
                    } else {
                        hops.min(result.ttl.get())
                    };
                }
            }
            anyhow::Ok((dst, sent, answered, hops))
        }
    });
    for outcome in futures::future::join_all(traces).await {
        let (dst, sent, answered, hops) = outcome?;
        println!("{dst}: {answered}/{sent} probes answered, destination at hop {hops}");
    }
    Ok(())
}
