//! The README's demo (`sudo bash deploy/demo.sh`, binary `hopwatch-demo`): a
//! lab network with several targets, the real `hopwatch run` daemon in its
//! source namespace with its web UI forwarded to the host's 127.0.0.1, a
//! webhook receiver that prints each alert, and a scripted timeline of loss
//! bursts, a latency step, route changes and a router that always rate-limits
//! ICMP. Ctrl-C stops the daemon and removes the lab.
//!
//! [`scenario`] says what happens where and when, [`config`] writes the
//! daemon's config, [`run`] drives it all.

pub mod banner;
pub mod config;
pub mod console;
pub mod daemon;
pub mod error;
pub mod forward;
pub mod receiver;
pub mod run;
pub mod scenario;
pub mod services;
pub mod signals;

pub use error::DemoError;
pub use run::{run, Options, DEFAULT_PORT};
pub use scenario::Pace;
