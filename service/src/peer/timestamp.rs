//! STAMP's timestamp formats (RFC 8762 §4.2.1): the 64-bit NTP format (32-bit
//! seconds since 1900, 32-bit binary fraction) that hopwatch sends, and the
//! truncated PTPv2 format (32-bit seconds since 1970, 32-bit nanoseconds) that a
//! peer may send instead, plus the Error Estimate field (RFC 4656 §4.1.2 with the
//! Z bit of RFC 8186) that says which format a timestamp is in and how good it is.

use serde::Serialize;

/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
pub const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A timestamp in one of the two wire formats, as 8 raw bytes' worth of value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum WireTimestamp {
    /// NTP 64-bit format: seconds since 1900 in the high word, fraction in the low.
    Ntp(u64),
    /// PTPv2 truncated format: seconds since 1970 in the high word, nanoseconds in the low.
    Ptp(u64),
}

impl WireTimestamp {
    /// The NTP-format timestamp for `unix_ns` nanoseconds since the Unix epoch.
    pub fn ntp_from_unix_nanos(unix_ns: u64) -> Self {
        let secs = unix_ns / NANOS_PER_SEC + NTP_UNIX_OFFSET_SECS;
        let sub = unix_ns % NANOS_PER_SEC;
        // sub < 2^30, so sub << 32 fits in 62 bits; rounding to the nearest
        // 2^-32 s keeps a round trip through the fraction exact to 1 ns.
        let frac = ((sub << 32) + NANOS_PER_SEC / 2) / NANOS_PER_SEC;
        // `secs` wraps at 2^32 (NTP era 1 starts in 2036); the era is recovered
        // on decoding.
        let raw = ((secs & 0xffff_ffff) << 32).wrapping_add(frac);
        WireTimestamp::Ntp(raw)
    }

    /// Interprets 64 raw bits in the format the Error Estimate's Z bit names.
    pub fn from_raw(raw: u64, format: TimestampFormat) -> Self {
        match format {
            TimestampFormat::Ntp => WireTimestamp::Ntp(raw),
            TimestampFormat::Ptp => WireTimestamp::Ptp(raw),
        }
    }

    /// The 64 bits as they go on the wire (big-endian when written).
    pub fn raw(self) -> u64 {
        match self {
            WireTimestamp::Ntp(raw) | WireTimestamp::Ptp(raw) => raw,
        }
    }

    pub fn format(self) -> TimestampFormat {
        match self {
            WireTimestamp::Ntp(_) => TimestampFormat::Ntp,
            WireTimestamp::Ptp(_) => TimestampFormat::Ptp,
        }
    }

    /// Nanoseconds since the Unix epoch; `None` for the all-zero timestamp (which
    /// a reflector that did not take one leaves in place) and for PTP nanosecond
    /// fields out of range.
    pub fn to_unix_nanos(self) -> Option<u64> {
        match self {
            WireTimestamp::Ntp(0) | WireTimestamp::Ptp(0) => None,
            WireTimestamp::Ntp(raw) => {
                let secs = raw >> 32;
                let frac = raw & 0xffff_ffff;
                // RFC 4330 §3: a clear top bit means era 1 (from 2036-02-07 on).
                let secs = if secs & 0x8000_0000 == 0 {
                    secs + (1 << 32)
                } else {
                    secs
                };
                let unix_secs = secs.checked_sub(NTP_UNIX_OFFSET_SECS)?;
                let nanos = (frac * NANOS_PER_SEC + (1 << 31)) >> 32;
                Some(unix_secs * NANOS_PER_SEC + nanos)
            }
            WireTimestamp::Ptp(raw) => {
                let secs = raw >> 32;
                let nanos = raw & 0xffff_ffff;
                (nanos < NANOS_PER_SEC).then_some(secs * NANOS_PER_SEC + nanos)
            }
        }
    }
}

/// Which format a timestamp is in (the Z bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TimestampFormat {
    Ntp,
    Ptp,
}

/// The Error Estimate field:
///
/// ```text
///  0                   1
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |S|Z|   Scale   |   Multiplier  |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// S: the clock is synchronised to UTC by an external source. Z: the timestamps
/// are in PTP format. The error is Multiplier × 2^(Scale − 32) seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ErrorEstimate {
    pub synchronized: bool,
    pub format: TimestampFormat,
    pub scale: u8,
    pub multiplier: u8,
}

impl ErrorEstimate {
    /// The largest error the field can say: 255 × 2^31 s.
    const MAX_SCALE: u8 = 63;

    /// An estimate for NTP-format timestamps with error `error_ns`, rounded up to
    /// the next value the field can hold (an estimate must not claim better than it
    /// is). Multiplier is never 0 (RFC 4656 forbids it).
    pub fn ntp(synchronized: bool, error_ns: u64) -> Self {
        // The error in units of 2^-32 s, rounded up.
        let units = (u128::from(error_ns) << 32).div_ceil(u128::from(NANOS_PER_SEC));
        let mut scale = 0u8;
        let mut multiplier = units.max(1);
        while multiplier > 255 && scale < Self::MAX_SCALE {
            scale += 1;
            multiplier = units.div_ceil(1u128 << scale);
        }
        ErrorEstimate {
            synchronized,
            format: TimestampFormat::Ntp,
            scale,
            multiplier: multiplier.min(255) as u8,
        }
    }

    /// The field's two bytes as a big-endian integer.
    pub fn to_bits(self) -> u16 {
        let s = u16::from(self.synchronized) << 15;
        let z = u16::from(self.format == TimestampFormat::Ptp) << 14;
        s | z | (u16::from(self.scale & 0x3f) << 8) | u16::from(self.multiplier)
    }

    pub fn from_bits(bits: u16) -> Self {
        ErrorEstimate {
            synchronized: bits & 0x8000 != 0,
            format: if bits & 0x4000 != 0 {
                TimestampFormat::Ptp
            } else {
                TimestampFormat::Ntp
            },
            scale: ((bits >> 8) & 0x3f) as u8,
            multiplier: (bits & 0xff) as u8,
        }
    }

    /// The error in nanoseconds (saturating); `None` when Multiplier is 0, which
    /// RFC 4656 forbids and which hopwatch reads as "unknown".
    pub fn error_ns(self) -> Option<u64> {
        if self.multiplier == 0 {
            return None;
        }
        let units = u128::from(self.multiplier) << self.scale;
        let ns = (units * u128::from(NANOS_PER_SEC)).div_ceil(1u128 << 32);
        Some(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_epoch_is_ntp_2208988800() {
        let ts = WireTimestamp::ntp_from_unix_nanos(0);
        assert_eq!(ts.raw(), 2_208_988_800u64 << 32);
    }

    #[test]
    fn half_a_second_is_fraction_0x80000000() {
        let ts = WireTimestamp::ntp_from_unix_nanos(1_500_000_000);
        assert_eq!(ts.raw(), ((2_208_988_800u64 + 1) << 32) | 0x8000_0000);
    }

    #[test]
    fn ntp_round_trip_is_exact_to_a_nanosecond() {
        for ns in [
            1_795_321_271_937_288_910u64,
            1_700_000_000_000_000_001,
            1_700_000_000_999_999_999,
        ] {
            let back = WireTimestamp::ntp_from_unix_nanos(ns)
                .to_unix_nanos()
                .unwrap();
            assert!(back.abs_diff(ns) <= 1, "{ns} came back as {back}");
        }
    }

    #[test]
    fn ntp_era_1_decodes_after_2036() {
        // 2040-01-01T00:00:00Z = Unix 2208988800: NTP seconds 4417977600 wrap to era 1.
        let ns = 2_208_988_800u64 * NANOS_PER_SEC;
        let ts = WireTimestamp::ntp_from_unix_nanos(ns);
        assert_eq!(ts.raw() >> 32, 4_417_977_600 - (1 << 32));
        assert_eq!(ts.to_unix_nanos(), Some(ns));
    }

    #[test]
    fn zero_timestamp_means_none() {
        assert_eq!(WireTimestamp::Ntp(0).to_unix_nanos(), None);
    }

    #[test]
    fn ptp_format_is_seconds_and_nanoseconds() {
        let raw = (1_700_000_000u64 << 32) | 123_456_789;
        assert_eq!(
            WireTimestamp::Ptp(raw).to_unix_nanos(),
            Some(1_700_000_000_123_456_789)
        );
        let bad = (1u64 << 32) | 1_000_000_000;
        assert_eq!(WireTimestamp::Ptp(bad).to_unix_nanos(), None);
    }

    #[test]
    fn error_estimate_bit_layout() {
        // S=1, Z=0, Scale=0x15, Multiplier=0x2a.
        let e = ErrorEstimate::from_bits(0x952a);
        assert!(e.synchronized);
        assert_eq!(e.format, TimestampFormat::Ntp);
        assert_eq!((e.scale, e.multiplier), (0x15, 0x2a));
        assert_eq!(e.to_bits(), 0x952a);
        let z = ErrorEstimate::from_bits(0x4001);
        assert_eq!(z.format, TimestampFormat::Ptp);
        assert!(!z.synchronized);
    }

    #[test]
    fn error_estimate_never_understates() {
        for error_ns in [0u64, 1, 233, 1_000, 999_999, 16_000_000_000, u64::MAX / 4] {
            let e = ErrorEstimate::ntp(true, error_ns);
            assert!(e.multiplier >= 1);
            let said = e.error_ns().unwrap();
            assert!(said >= error_ns, "{error_ns} ns encoded as {said} ns");
            // And not wildly more: an 8-bit multiplier of at least 128 rounds up by < 1%.
            if error_ns > 1_000 {
                assert!(
                    said as f64 <= error_ns as f64 * 1.01 + 1.0,
                    "{error_ns} -> {said}"
                );
            }
        }
    }

    #[test]
    fn one_microsecond_encodes_as_scale_5_multiplier_135() {
        // 1 µs = 4294.97 units of 2^-32 s → scale 5, multiplier ceil(4294.97/32)=135.
        let e = ErrorEstimate::ntp(false, 1_000);
        assert_eq!((e.scale, e.multiplier), (5, 135));
        assert_eq!(e.to_bits(), 0x0587);
    }

    #[test]
    fn zero_multiplier_is_unknown() {
        assert_eq!(ErrorEstimate::from_bits(0x8000).error_ns(), None);
    }
}
