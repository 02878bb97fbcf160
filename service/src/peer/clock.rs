//! How far this host's clock can be trusted for one-way delays: the kernel's NTP
//! state from adjtimex(2) (STA_UNSYNC, the estimated and maximum error), the
//! Error Estimate we put in our packets, and the verdict on a one-way delay given
//! both ends' clock states.
//!
//! One-way delay is `T2 - T1` (forward) and `T4 - T3` (backward), each across two
//! clocks, so it is only as good as the agreement of those clocks. RTT and the
//! per-direction jitter need no agreement (a constant offset cancels out).

use serde::Serialize;

use super::timestamp::ErrorEstimate;

/// The local clock's synchronisation as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ClockSync {
    /// An NTP/PTP daemon disciplines the clock: STA_UNSYNC clear and adjtimex
    /// not answering TIME_ERROR.
    Synchronized {
        /// `esterror`: the daemon's estimate of the clock's error.
        estimated_error_ns: u64,
        /// `maxerror`: the kernel's bound on it, growing while undisciplined.
        max_error_ns: u64,
    },
    /// Nothing disciplines the clock (or it lost sync).
    Unsynchronized { max_error_ns: u64 },
    /// adjtimex failed.
    Unknown,
}

impl ClockSync {
    /// Reads the state with adjtimex(2) in read-only mode (modes = 0).
    pub fn read() -> Self {
        // SAFETY: timex is plain old data; all-zero is a valid value (modes 0 = read only).
        let mut tx: libc::timex = unsafe { std::mem::zeroed() };
        // SAFETY: `tx` is a valid, writable timex.
        let state = unsafe { libc::adjtimex(&mut tx) };
        if state < 0 {
            return ClockSync::Unknown;
        }
        // Both fields are in microseconds.
        let us = |v: libc::c_long| u64::try_from(v).unwrap_or(0).saturating_mul(1_000);
        Self::from_adjtimex(state, tx.status, us(tx.esterror), us(tx.maxerror))
    }

    /// The verdict for an adjtimex return value and its fields (errors in ns).
    pub fn from_adjtimex(
        state: libc::c_int,
        status: libc::c_int,
        estimated_error_ns: u64,
        max_error_ns: u64,
    ) -> Self {
        if state == libc::TIME_ERROR || status & libc::STA_UNSYNC != 0 {
            ClockSync::Unsynchronized { max_error_ns }
        } else {
            ClockSync::Synchronized {
                estimated_error_ns,
                max_error_ns,
            }
        }
    }

    pub fn is_synchronized(self) -> bool {
        matches!(self, ClockSync::Synchronized { .. })
    }

    /// The Error Estimate field for our timestamps: S set only when synchronised;
    /// the error is the daemon's estimate then, else the kernel's maximum error
    /// (an unsynchronised clock claims no precision).
    pub fn error_estimate(self) -> ErrorEstimate {
        match self {
            ClockSync::Synchronized {
                estimated_error_ns, ..
            } => ErrorEstimate::ntp(true, estimated_error_ns.max(1)),
            ClockSync::Unsynchronized { max_error_ns } => ErrorEstimate::ntp(false, max_error_ns),
            // 255 × 2^31 s: "no idea".
            ClockSync::Unknown => ErrorEstimate {
                synchronized: false,
                format: super::timestamp::TimestampFormat::Ntp,
                scale: 63,
                multiplier: 255,
            },
        }
    }
}

/// What the operator tells us about the two ends' clocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockTrust {
    /// Judge from the clock states: both ends must say they are synchronised.
    #[default]
    FromSyncState,
    /// Both ends read the same clock (one host, e.g. namespaces or loopback): the
    /// offset is exactly zero whatever adjtimex says. The best case; the lab's.
    SharedClock,
}

/// Whether one-way delays can be believed, and to within what.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum OwdValidity {
    /// Both clocks are synchronised; each one-way delay is good to `error_bound_ns`
    /// (the sum of both ends' error estimates).
    Synchronized { error_bound_ns: u64 },
    /// One clock read by both ends (operator's word): the one-way delays are exact
    /// to the timestamps' own precision.
    SharedClock,
    /// At least one clock is unsynchronised or its state unknown: one-way delays
    /// include an unknown clock offset. RTT and jitter are still valid.
    Unreliable { reason: OwdDoubt },
}

/// Why one-way delays are flagged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OwdDoubt {
    /// adjtimex says this host's clock is not synchronised.
    LocalUnsynchronized,
    /// adjtimex failed here.
    LocalUnknown,
    /// The reflector's Error Estimate has S clear.
    RemoteUnsynchronized,
    /// The reflector's Error Estimate has multiplier 0.
    RemoteUnknown,
}

impl OwdValidity {
    /// The verdict from our clock, the reflector's Error Estimate and the
    /// operator's statement.
    pub fn judge(trust: ClockTrust, local: ClockSync, remote: ErrorEstimate) -> Self {
        if trust == ClockTrust::SharedClock {
            return OwdValidity::SharedClock;
        }
        let local_error = match local {
            ClockSync::Synchronized {
                estimated_error_ns, ..
            } => estimated_error_ns,
            ClockSync::Unsynchronized { .. } => {
                return OwdValidity::Unreliable {
                    reason: OwdDoubt::LocalUnsynchronized,
                }
            }
            ClockSync::Unknown => {
                return OwdValidity::Unreliable {
                    reason: OwdDoubt::LocalUnknown,
                }
            }
        };
        let Some(remote_error) = remote.error_ns() else {
            return OwdValidity::Unreliable {
                reason: OwdDoubt::RemoteUnknown,
            };
        };
        if !remote.synchronized {
            return OwdValidity::Unreliable {
                reason: OwdDoubt::RemoteUnsynchronized,
            };
        }
        OwdValidity::Synchronized {
            error_bound_ns: local_error.saturating_add(remote_error),
        }
    }

    /// True unless flagged unreliable.
    pub fn is_reliable(self) -> bool {
        !matches!(self, OwdValidity::Unreliable { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYNCED: ClockSync = ClockSync::Synchronized {
        estimated_error_ns: 50_000,
        max_error_ns: 400_000,
    };

    #[test]
    fn sta_unsync_or_time_error_means_unsynchronised() {
        assert_eq!(
            ClockSync::from_adjtimex(libc::TIME_OK, libc::STA_UNSYNC, 0, 16_000_000_000),
            ClockSync::Unsynchronized {
                max_error_ns: 16_000_000_000
            }
        );
        assert!(!ClockSync::from_adjtimex(libc::TIME_ERROR, 0, 1, 1).is_synchronized());
        assert_eq!(
            ClockSync::from_adjtimex(libc::TIME_OK, libc::STA_PLL, 50_000, 400_000),
            SYNCED
        );
    }

    #[test]
    fn read_returns_a_state_consistent_with_the_s_bit() {
        let state = ClockSync::read();
        assert_ne!(
            state,
            ClockSync::Unknown,
            "adjtimex(2) read-only cannot fail"
        );
        assert_eq!(state.error_estimate().synchronized, state.is_synchronized());
    }

    #[test]
    fn error_estimate_says_sync_and_error() {
        let e = SYNCED.error_estimate();
        assert!(e.synchronized);
        assert!(e.error_ns().unwrap() >= 50_000);
        let u = ClockSync::Unsynchronized {
            max_error_ns: 16_000_000_000,
        }
        .error_estimate();
        assert!(!u.synchronized);
        assert!(u.error_ns().unwrap() >= 16_000_000_000);
    }

    #[test]
    fn owd_needs_both_clocks_synchronised() {
        let remote_ok = ErrorEstimate::ntp(true, 20_000);
        let remote_bad = ErrorEstimate::ntp(false, 20_000);
        match OwdValidity::judge(ClockTrust::FromSyncState, SYNCED, remote_ok) {
            OwdValidity::Synchronized { error_bound_ns } => {
                assert!(
                    (70_000..71_000).contains(&error_bound_ns),
                    "{error_bound_ns}"
                )
            }
            other => panic!("expected synchronised, got {other:?}"),
        }
        assert_eq!(
            OwdValidity::judge(ClockTrust::FromSyncState, SYNCED, remote_bad),
            OwdValidity::Unreliable {
                reason: OwdDoubt::RemoteUnsynchronized
            }
        );
        assert_eq!(
            OwdValidity::judge(
                ClockTrust::FromSyncState,
                ClockSync::Unsynchronized { max_error_ns: 1 },
                remote_ok
            ),
            OwdValidity::Unreliable {
                reason: OwdDoubt::LocalUnsynchronized
            }
        );
        assert_eq!(
            OwdValidity::judge(
                ClockTrust::FromSyncState,
                SYNCED,
                ErrorEstimate::from_bits(0x8000)
            ),
            OwdValidity::Unreliable {
                reason: OwdDoubt::RemoteUnknown
            }
        );
        assert_eq!(
            OwdValidity::judge(ClockTrust::SharedClock, ClockSync::Unknown, remote_bad),
            OwdValidity::SharedClock
        );
    }
}
