//! The probe engine: builds and sends probes, timestamps them (eBPF first), and
//! correlates replies into results.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use futures::StreamExt;
//! use hopwatch::probe::{Engine, EngineConfig, FlowSpec, Protocol, TraceSpec, Ttl};
//! use std::time::Duration;
//!
//! let engine = Engine::start(EngineConfig::default()).await?;
//! let mut results = engine.trace(TraceSpec {
//!     flow: FlowSpec {
//!         dst: "198.18.0.9".parse()?,
//!         protocol: Protocol::Icmp,
//!         dst_port: 0,
//!         packet_size: 64,
//!         timeout: Duration::from_secs(1),
//!     },
//!     first_ttl: Ttl::new(1).unwrap(),
//!     max_ttl: Ttl::new(30).unwrap(),
//!     rounds: Some(3),
//!     interval: Duration::from_secs(1),
//! })?;
//! while let Some(result) = results.next().await {
//!     println!("{:?}", result?);
//! }
//! # Ok(()) }
//! ```

pub mod clock;
pub mod correlate;
pub mod ebpf;
pub mod engine;
pub mod kernel_event;
pub mod multipath;
pub mod parse;
pub mod quote;
pub mod receive;
pub mod trace;
pub mod transport;
pub mod types;
pub mod wire;

pub use engine::{
    Engine, EngineConfig, EngineError, EngineParts, EngineStats, Flow, FlowSpec, KernelLosses,
    ProbeError, KERNEL_LOSS_CHECK,
};
pub use trace::{TraceSpec, TraceStream};
pub use transport::{ProbeTransport, SourceSelection};
pub use types::{Answer, Outcome, ProbeResult, Rtt, TimestampPreference, TimestampSource, Ttl};
pub use wire::Protocol;
