//! Pure, deterministic analysis of one target's rounds: per-hop statistics, the
//! destination's MOS, ICMP rate-limit detection, localisation of degradations,
//! route tracking and path facts (middleboxes, MPLS labels); and of one peer link's window of STAMP probes
//! ([`peer_window`]). No I/O and no clocks: the daemon feeds [`RoundRecord`]s into a
//! [`TargetAnalysis`] and reads [`TargetSnapshot`]s and [`PathEvent`]s out.
//!
//! Cost, for the sizing target of 1,000 targets x ~10 hops at one round per second:
//! recording a round touches each hop once (ring buffer push, Welford update,
//! histogram increment, a linear scan of at most [`MAX_RESPONDERS_PER_HOP`]
//! responders) and allocates nothing once a hop exists. Sorting for window
//! percentiles and the findings happen only when a snapshot is taken.
//! Memory per hop is documented on [`HopStats`].
//!
//! [`RoundRecord`]: crate::model::RoundRecord

pub mod branches;
pub mod findings;
pub mod hop;
pub mod mos;
pub mod path;
pub mod path_facts;
pub mod peer_window;
mod responders;
pub mod return_path;
mod rtt_histogram;
pub mod target;
mod ttl_set;

pub use branches::{
    BranchFinding, BranchHopSnapshot, BranchLatency, BranchSnapshot, BranchesAnalysis,
    BranchesSnapshot,
};
pub use findings::{DegradationKind, Evidence, Localisation};
pub use hop::{HopStats, StatsSnapshot};
pub use mos::Mos;
pub use path::{PathEvent, PathSnapshot, PathTracker};
pub use path_facts::{HopLabels, MiddleboxFact, PathFacts};
pub use peer_window::{DelayWindow, PeerWindow, WindowStats};
pub use responders::{OtherRespondersSnapshot, ResponderSnapshot, MAX_RESPONDERS_PER_HOP};
pub use target::{DestinationSnapshot, HopSnapshot, RecordError, TargetAnalysis, TargetSnapshot};

/// The tunable part of the analysis, validated once when the config is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnalysisConfig {
    window: usize,
    confirm_rounds: u32,
}

impl AnalysisConfig {
    /// `[statistics] window`: the sliding window is the last 100 probes per hop.
    pub const DEFAULT_WINDOW: usize = 100;
    /// A window of one probe has no loss rate, jitter or percentiles worth the name.
    pub const MIN_WINDOW: usize = 2;
    /// Each probe in a window costs 8 bytes per hop; 10,000 keeps a hop under 100 KB.
    pub const MAX_WINDOW: usize = 10_000;
    /// A changed path must be seen in 3 consecutive rounds before it replaces the old one.
    pub const DEFAULT_CONFIRM_ROUNDS: u32 = 3;
    pub const MAX_CONFIRM_ROUNDS: u32 = 100;

    pub fn new(window: usize, confirm_rounds: u32) -> Result<AnalysisConfig, AnalysisConfigError> {
        if !(Self::MIN_WINDOW..=Self::MAX_WINDOW).contains(&window) {
            return Err(AnalysisConfigError::WindowOutOfRange {
                window,
                min: Self::MIN_WINDOW,
                max: Self::MAX_WINDOW,
            });
        }
        if !(1..=Self::MAX_CONFIRM_ROUNDS).contains(&confirm_rounds) {
            return Err(AnalysisConfigError::ConfirmRoundsOutOfRange {
                rounds: confirm_rounds,
                min: 1,
                max: Self::MAX_CONFIRM_ROUNDS,
            });
        }
        Ok(AnalysisConfig {
            window,
            confirm_rounds,
        })
    }

    /// Probes per hop in the sliding window.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Consecutive rounds a new path must be seen in before it is reported.
    pub fn confirm_rounds(&self) -> u32 {
        self.confirm_rounds
    }
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            window: Self::DEFAULT_WINDOW,
            confirm_rounds: Self::DEFAULT_CONFIRM_ROUNDS,
        }
    }
}

/// A statistics or route-tracking setting outside its supported range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalysisConfigError {
    #[error("statistics window of {window} probes is out of range: use {min} to {max}")]
    WindowOutOfRange {
        window: usize,
        min: usize,
        max: usize,
    },
    #[error("route change confirmation of {rounds} rounds is out of range: use {min} to {max}")]
    ConfirmRoundsOutOfRange { rounds: u32, min: u32, max: u32 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_bounds_are_enforced() {
        let config = AnalysisConfig::default();
        assert_eq!(config.window(), 100);
        assert_eq!(config.confirm_rounds(), 3);
        assert!(AnalysisConfig::new(2, 1).is_ok());
        assert!(matches!(
            AnalysisConfig::new(1, 3),
            Err(AnalysisConfigError::WindowOutOfRange { window: 1, .. })
        ));
        assert!(matches!(
            AnalysisConfig::new(10_001, 3),
            Err(AnalysisConfigError::WindowOutOfRange { .. })
        ));
        let err = AnalysisConfig::new(100, 0).unwrap_err();
        assert!(err.to_string().contains("0 rounds"), "{err}");
    }
}
