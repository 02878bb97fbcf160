//! Values with units in the config: durations ("100ms", "48h", "30d") and byte
//! sizes (67108864, "64MiB"), parsed and checked against their allowed range.

use std::time::Duration;

use super::error::Problem;
use super::raw::RawSize;

/// Parses a humantime duration and checks `min <= value <= max`.
pub(crate) fn duration_in(text: &str, min: Duration, max: Duration) -> Result<Duration, Problem> {
    let value = humantime::parse_duration(text.trim()).map_err(|source| Problem::Duration {
        given: text.to_owned(),
        source,
    })?;
    if value < min {
        return Err(Problem::BelowMinimum {
            value: text.to_owned(),
            min: humantime::format_duration(min).to_string(),
        });
    }
    if value > max {
        return Err(Problem::AboveMaximum {
            value: text.to_owned(),
            max: humantime::format_duration(max).to_string(),
        });
    }
    Ok(value)
}

/// Parses a byte count (bare integer, or a string with an SI or IEC unit: "64MB"
/// is 64,000,000 bytes, "64MiB" is 67,108,864) and checks `min <= value <= max`.
pub(crate) fn size_in(raw: &RawSize, min: u64, max: u64) -> Result<u64, Problem> {
    let (value, shown) = match raw {
        RawSize::Bytes(n) => (
            u64::try_from(*n).map_err(|_| Problem::BelowMinimum {
                value: n.to_string(),
                min: format!("{min} bytes"),
            })?,
            n.to_string(),
        ),
        RawSize::Text(text) => (
            parse_size::parse_size(text.trim()).map_err(|source| Problem::Size {
                given: text.clone(),
                source,
            })?,
            format!("{text:?}"),
        ),
    };
    int_in(value, min, max).map_err(|problem| match problem {
        Problem::BelowMinimum { min, .. } => Problem::BelowMinimum {
            value: format!("{shown} ({value} bytes)"),
            min: format!("{min} bytes"),
        },
        Problem::AboveMaximum { max, .. } => Problem::AboveMaximum {
            value: format!("{shown} ({value} bytes)"),
            max: format!("{max} bytes"),
        },
        other => other,
    })
}

/// Checks `min <= value <= max` for any integer.
pub(crate) fn int_in<T>(value: T, min: T, max: T) -> Result<T, Problem>
where
    T: PartialOrd + ToString,
{
    if value < min {
        Err(Problem::BelowMinimum {
            value: value.to_string(),
            min: min.to_string(),
        })
    } else if value > max {
        Err(Problem::AboveMaximum {
            value: value.to_string(),
            max: max.to_string(),
        })
    } else {
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn durations_parse_with_units() {
        let day = Duration::from_secs(86_400);
        assert_eq!(
            duration_in("100ms", MS, day).unwrap(),
            Duration::from_millis(100)
        );
        assert_eq!(
            duration_in("48h", MS, day * 3).unwrap(),
            Duration::from_secs(48 * 3600)
        );
        assert_eq!(duration_in("30d", MS, day * 30).unwrap(), day * 30);
        assert_eq!(
            duration_in("1m 30s", MS, day).unwrap(),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn durations_out_of_range_or_unitless_are_refused() {
        let min = Duration::from_millis(100);
        let err = duration_in("50ms", min, Duration::from_secs(1)).unwrap_err();
        assert_eq!(err.to_string(), "50ms is below the minimum of 100ms");
        let err = duration_in("2h", min, Duration::from_secs(3600)).unwrap_err();
        assert_eq!(err.to_string(), "2h is above the maximum of 1h");
        let err = duration_in("5", min, Duration::from_secs(10)).unwrap_err();
        assert!(matches!(err, Problem::Duration { .. }), "{err}");
        assert!(err.to_string().contains("\"5\" is not a duration"), "{err}");
    }

    #[test]
    fn sizes_take_bytes_or_units() {
        assert_eq!(size_in(&RawSize::Bytes(4096), 1, u64::MAX).unwrap(), 4096);
        assert_eq!(
            size_in(&RawSize::Text("64MiB".into()), 1, u64::MAX).unwrap(),
            64 << 20
        );
        assert_eq!(
            size_in(&RawSize::Text("1 MB".into()), 1, u64::MAX).unwrap(),
            1_000_000
        );
        let err = size_in(&RawSize::Text("1KiB".into()), 4096, u64::MAX).unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"1KiB\" (1024 bytes) is below the minimum of 4096 bytes"
        );
        let err = size_in(&RawSize::Bytes(-1), 4096, u64::MAX).unwrap_err();
        assert!(matches!(err, Problem::BelowMinimum { .. }), "{err}");
        let err = size_in(&RawSize::Text("lots".into()), 1, u64::MAX).unwrap_err();
        assert!(matches!(err, Problem::Size { .. }), "{err}");
    }
}
