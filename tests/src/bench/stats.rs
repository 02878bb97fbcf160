//! Summaries of measured errors and costs: nearest-rank percentiles of
//! absolute errors, the signed mean (a bias shows there), and the ratios the
//! report compares tools by.

use std::fmt;

/// The nearest-rank `p`-th percentile (0 < p <= 100) of ascending `sorted`.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Per-probe RTT errors (tool − capture) of one run, summarised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorSummary {
    pub probes: usize,
    pub p50_abs_ns: u64,
    pub p99_abs_ns: u64,
    pub max_abs_ns: u64,
    /// Mean of the signed errors: positive means the tool reads long.
    pub mean_ns: f64,
}

impl ErrorSummary {
    /// `None` without errors to summarise.
    pub fn of(errors_ns: &[i64]) -> Option<ErrorSummary> {
        let mut abs: Vec<u64> = errors_ns.iter().map(|e| e.unsigned_abs()).collect();
        abs.sort_unstable();
        Some(ErrorSummary {
            probes: errors_ns.len(),
            p50_abs_ns: percentile(&abs, 50.0)?,
            p99_abs_ns: percentile(&abs, 99.0)?,
            max_abs_ns: *abs.last()?,
            mean_ns: errors_ns.iter().map(|&e| e as f64).sum::<f64>() / errors_ns.len() as f64,
        })
    }
}

/// Nanoseconds as microseconds with one decimal, the report's unit.
pub struct Micros(pub f64);

impl Micros {
    pub fn ns(ns: u64) -> Micros {
        Micros(ns as f64 / 1_000.0)
    }
}

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.abs() >= 1_000.0 {
            write!(f, "{:.0}", self.0)
        } else {
            write!(f, "{:.1}", self.0)
        }
    }
}

/// `value / reference` as "12.3×", or "–" when it is undefined.
pub fn ratio(value: f64, reference: f64) -> String {
    if reference > 0.0 && value.is_finite() {
        let r = value / reference;
        if r >= 10.0 {
            format!("{r:.0}×")
        } else {
            format!("{r:.1}×")
        }
    } else {
        "–".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summaries_use_absolute_errors_and_keep_the_sign_in_the_mean() {
        let s = ErrorSummary::of(&[-4_000, 1_000, 2_000, 3_000]).unwrap();
        assert_eq!(
            (s.p50_abs_ns, s.p99_abs_ns, s.max_abs_ns),
            (2_000, 4_000, 4_000)
        );
        assert_eq!(s.mean_ns, 500.0);
        assert_eq!(s.probes, 4);
        assert!(ErrorSummary::of(&[]).is_none());
    }

    #[test]
    fn ratios_and_micros_format_for_the_report() {
        assert_eq!(ratio(70.0, 3.5), "20×");
        assert_eq!(ratio(3.0, 2.0), "1.5×");
        assert_eq!(ratio(3.0, 0.0), "–");
        assert_eq!(Micros::ns(1_460).to_string(), "1.5");
        assert_eq!(Micros::ns(2_345_678).to_string(), "2346");
    }
}
