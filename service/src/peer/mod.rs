//! Peer measurement between two hopwatch boxes (or any STAMP / TWAMP-Light peer):
//! STAMP (RFC 8762) in unauthenticated mode over UDP, and the same packets framed
//! over one long-lived TCP connection, plus the TCP connect time.
//!
//! * [`wire`] and [`timestamp`]: the packet formats, NTP/PTP timestamps and the
//!   Error Estimate, byte for byte as the RFC lays them out.
//! * [`framing`]: the TCP mode's length-prefixed frames, apart from the sockets.
//! * [`socket`]: SO_TIMESTAMPING kernel stamps (receive, and transmit from the
//!   error queue) and the received TTL.
//! * [`reflector`]: the stateful Session-Reflector with its allow list and rate
//!   limits; [`tcp`] adds the TCP echo and connect time.
//! * [`sender`] and [`tracker`]: the Session-Sender (one paced thread per session,
//!   its loop in `pacer`, shared with the TCP sender) and its book of probes in flight.
//! * [`metrics`]: RTT, one-way delay, loss / reordering / duplicates per direction,
//!   jitter; [`clock`]: whether one-way delays can be trusted (adjtimex).
//!
//! ```no_run
//! use hopwatch::peer::{ClockTrust, Reflector, ReflectorConfig, SenderConfig, Session};
//! use std::time::Duration;
//!
//! let reflector = Reflector::start(ReflectorConfig::new(vec!["198.18.1.2:862".parse()?]))?;
//! let mut config = SenderConfig::new("198.18.1.2:862".parse()?);
//! config.interval = Duration::from_millis(1);
//! config.count = Some(1000);
//! let summary = Session::start(config)?.wait()?;
//! println!("RTT p50 {:?} ns, forward loss {:?}", summary.rtt.map(|r| r.p50_ns), summary.loss.forward);
//! # drop(reflector);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod clock;
pub mod framing;
pub mod kernel_tx;
pub mod metrics;
mod pacer;
pub mod reflector;
pub mod sender;
pub mod socket;
pub mod tcp;
pub mod timestamp;
pub mod tracker;
pub mod wire;

pub use clock::{ClockSync, ClockTrust, OwdDoubt, OwdValidity};
pub use kernel_tx::{KernelTxError, KernelTxStamps, T3Source};
pub use metrics::{
    DelayStats, Direction, DirectionCounts, JitterStats, LossStats, Reflection, ReflectorKind,
    RttStats, Sample, Summary,
};
pub use reflector::{
    AllowList, RateLimits, Reflector, ReflectorConfig, ReflectorError, ReflectorStats,
};
pub use sender::{SenderConfig, SenderError, Session, StopHandle, Transport};
pub use tcp::{measure_connect, ConnectSample};
pub use wire::{ReflectorPacket, SenderPacket, WireError, STAMP_PORT};
