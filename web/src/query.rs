//! Validation of what clients put in paths and query strings: target names,
//! hops, time ranges and sizes. Every rejection names the parameter and says
//! what is accepted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::dto::HopRef;
use crate::error::ApiError;
use crate::model::{BranchRef, FlowSelection, HopSelection};

/// Longest target name (the service's limit too).
pub const MAX_TARGET_NAME: usize = 64;
/// The longest range served: a little over the default hour-rollup retention.
pub const MAX_SPAN: Duration = Duration::from_secs(400 * 86_400);
/// Points a series may be downsampled to, at most; and by default.
pub const MAX_POINTS: usize = 5_000;
pub const DEFAULT_POINTS: usize = 600;
/// Heatmap columns, at most; and by default.
pub const MAX_COLUMNS: usize = 2_000;
pub const DEFAULT_COLUMNS: usize = 240;

/// The ranges the UI offers, by name. The service answers each from the
/// store's resolution for its span: raw rounds, then 1-minute rollups up to
/// 7 days, then 1-hour rollups (kept a year by default), so `90d` and `1y`
/// come from the hour rollups.
pub const PRESETS: [(&str, Duration); 8] = [
    ("15m", Duration::from_secs(15 * 60)),
    ("1h", Duration::from_secs(3_600)),
    ("6h", Duration::from_secs(6 * 3_600)),
    ("24h", Duration::from_secs(24 * 3_600)),
    ("7d", Duration::from_secs(7 * 86_400)),
    ("30d", Duration::from_secs(30 * 86_400)),
    ("90d", Duration::from_secs(90 * 86_400)),
    ("1y", Duration::from_secs(365 * 86_400)),
];

/// A validated time range `[from_ms, to_ms)`, Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub from_ms: u64,
    pub to_ms: u64,
}

impl TimeRange {
    pub fn span_ms(&self) -> u64 {
        self.to_ms - self.from_ms
    }

    /// The last `span` before `now_ms`.
    pub fn last(span: Duration, now_ms: u64) -> TimeRange {
        TimeRange {
            from_ms: now_ms.saturating_sub(span.as_millis() as u64),
            to_ms: now_ms,
        }
    }
}

/// The wall clock in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `range=1h`, or `from=...&to=...` (Unix milliseconds or RFC 3339; `to`
/// defaults to now). With neither, the last hour.
#[derive(Debug, Default, Deserialize)]
pub struct RangeParams {
    pub range: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

impl RangeParams {
    /// The range fields of an endpoint's own query struct (each endpoint
    /// refuses unknown parameters, so the fields cannot be flattened in).
    pub fn of(range: &Option<String>, from: &Option<String>, to: &Option<String>) -> RangeParams {
        RangeParams {
            range: range.clone(),
            from: from.clone(),
            to: to.clone(),
        }
    }

    pub fn resolve(&self, now_ms: u64) -> Result<TimeRange, ApiError> {
        if let Some(name) = &self.range {
            if self.from.is_some() || self.to.is_some() {
                return Err(ApiError::param(
                    "range",
                    "give either range or from/to, not both",
                ));
            }
            let span = PRESETS
                .iter()
                .find(|(preset, _)| preset == name)
                .map(|(_, span)| *span)
                .ok_or_else(|| {
                    ApiError::param(
                        "range",
                        format!(
                            "{name:?} is not a range; use one of {} or from/to",
                            PRESETS.map(|(n, _)| n).join(", ")
                        ),
                    )
                })?;
            return Ok(TimeRange::last(span, now_ms));
        }
        let to_ms = match &self.to {
            Some(text) => parse_time("to", text)?,
            None => now_ms,
        };
        let from_ms = match &self.from {
            Some(text) => parse_time("from", text)?,
            None if self.to.is_some() => {
                return Err(ApiError::param("from", "required when `to` is given"))
            }
            None => return Ok(TimeRange::last(PRESETS[1].1, now_ms)),
        };
        if from_ms >= to_ms {
            return Err(ApiError::param("from", "must be before `to`"));
        }
        if to_ms - from_ms > MAX_SPAN.as_millis() as u64 {
            return Err(ApiError::param(
                "from",
                format!(
                    "the range is longer than the maximum of {}",
                    humantime::format_duration(MAX_SPAN)
                ),
            ));
        }
        Ok(TimeRange { from_ms, to_ms })
    }
}

/// Unix milliseconds, or an RFC 3339 time.
fn parse_time(name: &'static str, text: &str) -> Result<u64, ApiError> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let time = humantime::parse_rfc3339_weak(text).map_err(|_| {
        ApiError::param(
            name,
            format!("{text:?} is neither Unix milliseconds nor an RFC 3339 time"),
        )
    })?;
    Ok(time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64))
}

/// A target name from the path: 1 to 64 of `[A-Za-z0-9._-]`.
pub fn target_id(id: &str) -> Result<&str, ApiError> {
    let valid = !id.is_empty()
        && id.len() <= MAX_TARGET_NAME
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(id)
    } else {
        Err(ApiError::InvalidTargetName {
            given: id.chars().take(80).collect(),
        })
    }
}

/// `hop=destination`, `hop=all` or `hop=<ttl 1-255>`.
pub fn hop_selection(text: Option<&str>) -> Result<HopSelection, ApiError> {
    match text.unwrap_or("destination") {
        "destination" | "dest" => Ok(HopSelection::One(HopRef::Destination)),
        "all" => Ok(HopSelection::All),
        other => match other.parse::<u8>() {
            Ok(ttl) if ttl > 0 => Ok(HopSelection::One(HopRef::Ttl(ttl))),
            _ => Err(ApiError::param(
                "hop",
                format!("{other:?} is not `destination`, `all` or a TTL from 1 to 255"),
            )),
        },
    }
}

/// `branch=N`: one ECMP branch's history (its `index`, 1 to 255); absent,
/// the target's own flow.
pub fn flow_selection(text: Option<&str>) -> Result<FlowSelection, ApiError> {
    let Some(text) = text else {
        return Ok(FlowSelection::Target);
    };
    text.parse::<u8>()
        .ok()
        .and_then(BranchRef::new)
        .map(FlowSelection::Branch)
        .ok_or_else(|| {
            ApiError::param(
                "branch",
                format!(
                    "{text:?} is not a branch number; use the `index` of one of the target's branches (1 to 255)"
                ),
            )
        })
}

/// A count parameter within `1..=max`, `default` when absent.
pub fn count(
    name: &'static str,
    value: Option<usize>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match value {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::param(
            name,
            format!("{n} is out of range; use 1 to {max}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn params(range: Option<&str>, from: Option<&str>, to: Option<&str>) -> RangeParams {
        RangeParams {
            range: range.map(str::to_owned),
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
        }
    }

    #[test]
    fn presets_end_now() {
        let r = params(Some("15m"), None, None).resolve(NOW).unwrap();
        assert_eq!((r.from_ms, r.to_ms), (NOW - 900_000, NOW));
        let r = params(Some("30d"), None, None).resolve(NOW).unwrap();
        assert_eq!(r.span_ms(), 30 * 86_400_000);
        let r = params(Some("90d"), None, None).resolve(NOW).unwrap();
        assert_eq!(r.span_ms(), 90 * 86_400_000);
        let r = params(Some("1y"), None, None).resolve(NOW).unwrap();
        assert_eq!(r.span_ms(), 365 * 86_400_000);
        assert!(r.span_ms() <= MAX_SPAN.as_millis() as u64);
        let r = params(None, None, None).resolve(NOW).unwrap();
        assert_eq!(r.span_ms(), 3_600_000, "the default is the last hour");
    }

    #[test]
    fn custom_ranges_take_milliseconds_or_rfc3339() {
        let r = params(None, Some("1000"), Some("5000"))
            .resolve(NOW)
            .unwrap();
        assert_eq!((r.from_ms, r.to_ms), (1000, 5000));
        let r = params(None, Some("2023-11-14T22:00:00Z"), None)
            .resolve(NOW)
            .unwrap();
        assert_eq!((r.from_ms, r.to_ms), (1_699_999_200_000, NOW));
    }

    #[test]
    fn bad_ranges_name_the_parameter() {
        for (p, needle) in [
            (params(Some("2h"), None, None), "range"),
            (params(Some("1h"), Some("1"), None), "either range"),
            (params(None, Some("5000"), Some("1000")), "before"),
            (params(None, Some("yesterday"), None), "RFC 3339"),
            (params(None, None, Some("1000")), "required"),
            (
                params(None, Some("0"), Some(&u64::MAX.to_string())),
                "maximum",
            ),
        ] {
            let err = p.resolve(NOW).unwrap_err();
            assert!(err.to_string().contains(needle), "{err} lacks {needle:?}");
        }
    }

    #[test]
    fn target_names_and_hops_are_checked() {
        assert!(target_id("core-1.example_x").is_ok());
        assert!(target_id("").is_err());
        assert!(target_id("a/b").is_err());
        assert!(target_id(&"x".repeat(65)).is_err());
        assert_eq!(
            hop_selection(None).unwrap(),
            HopSelection::One(HopRef::Destination)
        );
        assert_eq!(
            hop_selection(Some("3")).unwrap(),
            HopSelection::One(HopRef::Ttl(3))
        );
        assert_eq!(hop_selection(Some("all")).unwrap(), HopSelection::All);
        assert!(hop_selection(Some("0")).is_err());
        assert!(hop_selection(Some("256")).is_err());
        assert_eq!(flow_selection(None).unwrap(), FlowSelection::Target);
        assert_eq!(
            flow_selection(Some("2")).unwrap(),
            FlowSelection::Branch(BranchRef::new(2).unwrap())
        );
        for bad in ["0", "256", "-1", "two", ""] {
            let err = flow_selection(Some(bad)).unwrap_err().to_string();
            assert!(
                err.starts_with("invalid query parameter `branch`"),
                "{bad}: {err}"
            );
        }
        assert!(count("max_points", Some(0), 10, 100).is_err());
        assert_eq!(count("max_points", None, 10, 100).unwrap(), 10);
    }
}
