//! Running RTT statistics (count, last, best, worst, mean, standard deviation)
//! in constant memory, with Welford's update so long runs stay numerically stable.

use serde::Serialize;

/// Running statistics over RTT samples in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RunningStats {
    count: u64,
    last: u64,
    best: u64,
    worst: u64,
    mean: f64,
    /// Sum of squared deviations from the mean (Welford's M2).
    m2: f64,
}

impl RunningStats {
    pub fn push(&mut self, ns: u64) {
        self.count += 1;
        self.last = ns;
        if self.count == 1 {
            self.best = ns;
            self.worst = ns;
        } else {
            self.best = self.best.min(ns);
            self.worst = self.worst.max(ns);
        }
        let x = ns as f64;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
    }

    pub fn count(&self) -> u64 {
        self.count
    }
    /// The latest sample, `None` before the first.
    pub fn last(&self) -> Option<u64> {
        (self.count > 0).then_some(self.last)
    }
    pub fn best(&self) -> Option<u64> {
        (self.count > 0).then_some(self.best)
    }
    pub fn worst(&self) -> Option<u64> {
        (self.count > 0).then_some(self.worst)
    }
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then_some(self.mean)
    }
    /// Population standard deviation, as mtr reports it.
    pub fn stddev(&self) -> Option<f64> {
        (self.count > 0).then(|| (self.m2 / self.count as f64).sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_textbook_formulas() {
        // The classic example whose population standard deviation is exactly 2.
        let samples = [2_000u64, 4_000, 4_000, 4_000, 5_000, 5_000, 7_000, 9_000];
        let mut stats = RunningStats::default();
        for s in samples {
            stats.push(s);
        }
        let n = samples.len() as f64;
        let mean = samples.iter().sum::<u64>() as f64 / n;
        let var = samples
            .iter()
            .map(|s| (*s as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        assert_eq!(stats.count(), 8);
        assert_eq!(stats.best(), Some(2_000));
        assert_eq!(stats.worst(), Some(9_000));
        assert_eq!(stats.last(), Some(9_000));
        assert!((stats.mean().unwrap() - mean).abs() < 1e-9);
        assert!((stats.stddev().unwrap() - var.sqrt()).abs() < 1e-9);
        assert!((stats.stddev().unwrap() - 2_000.0).abs() < 1e-9);
        assert!((stats.mean().unwrap() - 5_000.0).abs() < 1e-9);
    }

    #[test]
    fn empty_has_no_values() {
        let stats = RunningStats::default();
        assert_eq!(stats.mean(), None);
        assert_eq!(stats.best(), None);
        assert_eq!(stats.stddev(), None);
    }
}
