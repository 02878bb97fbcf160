//! The monitoring daemon's moving parts: per-target probing rounds and the
//! pipeline that turns rounds into statistics, history and events.

pub mod scheduler;

pub use scheduler::{TargetRunner, TargetSchedule};
