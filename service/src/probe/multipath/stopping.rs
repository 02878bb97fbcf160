//! MDA's stopping rule: how many flows must cross a vertex without showing a
//! new next hop before we may say, with a given confidence, that it has no
//! more next hops than those seen (Augustin et al., Veitch et al. 2009).

use serde::{Deserialize, Serialize};

/// The confidence of each "no more next hops" decision, in percent (`95` means
/// a 5 % chance, per vertex, of missing a next hop of a uniform load balancer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Confidence(u8);

/// A confidence outside 50..=99 %.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a multipath confidence must be a whole percentage from 50 to 99, not {0}")]
pub struct InvalidConfidence(pub u8);

impl Confidence {
    /// MDA's usual setting.
    pub const DEFAULT: Confidence = Confidence(95);

    pub const fn new(percent: u8) -> Result<Confidence, InvalidConfidence> {
        // Below 50 % the rule stops after a single flow; 100 % needs infinitely many.
        if percent >= 50 && percent <= 99 {
            Ok(Confidence(percent))
        } else {
            Err(InvalidConfidence(percent))
        }
    }

    pub const fn percent(self) -> u8 {
        self.0
    }

    /// The failure probability α = 1 − C.
    fn alpha(self) -> f64 {
        f64::from(100 - self.0) / 100.0
    }

    /// `n_k`: the number of flows through a vertex with `k` next hops seen so
    /// far after which MDA stops looking for a `k+1`-th. If there were `k + 1`
    /// next hops, each equally likely, `n` flows would all miss at least one of
    /// them with probability `P(k+1, n)`; `n_k` is the smallest `n` with
    /// `P(k+1, n) <= α` (Veitch et al. 2009). The union bound
    /// `(k+1)·(k/(k+1))^n` is close but one probe too many for k = 7 and 8, so
    /// `P` is computed exactly (see `CouponWalk`). For k = 0 (nothing
    /// seen yet) one flow is needed: a vertex has at least one next hop.
    pub fn stopping_point(self, k: usize) -> u32 {
        if k == 0 {
            return 1;
        }
        let alpha = self.alpha();
        let mut walk = CouponWalk::new(k + 1);
        let mut n = 0;
        while walk.miss_probability() > alpha {
            walk.step();
            n += 1;
        }
        n
    }
}

/// `n` flows, each sent to one of `hops` next hops with equal chance: the
/// distribution of how many distinct next hops they have seen (a coupon
/// collector), advanced one flow at a time. Summing it this way stays
/// numerically stable where the inclusion–exclusion formula cancels huge terms.
struct CouponWalk {
    /// seen[j]: the probability of having seen exactly j next hops.
    seen: Vec<f64>,
}

impl CouponWalk {
    fn new(hops: usize) -> Self {
        let mut seen = vec![0.0; hops + 1];
        seen[0] = 1.0;
        CouponWalk { seen }
    }

    /// One more flow: it hits a seen next hop with probability j/hops.
    fn step(&mut self) {
        let hops = (self.seen.len() - 1) as f64;
        for j in (0..self.seen.len()).rev() {
            let stay = self.seen[j] * j as f64 / hops;
            let arrive = if j > 0 {
                self.seen[j - 1] * (hops - (j - 1) as f64) / hops
            } else {
                0.0
            };
            self.seen[j] = stay + arrive;
        }
    }

    /// The probability that some next hop is still unseen.
    fn miss_probability(&self) -> f64 {
        1.0 - self.seen[self.seen.len() - 1]
    }
}

impl Default for Confidence {
    fn default() -> Self {
        Confidence::DEFAULT
    }
}

impl TryFrom<u8> for Confidence {
    type Error = InvalidConfidence;
    fn try_from(value: u8) -> Result<Self, Self::Error> {
        Confidence::new(value)
    }
}

impl From<Confidence> for u8 {
    fn from(c: Confidence) -> u8 {
        c.0
    }
}

impl std::fmt::Display for Confidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} %", self.0)
    }
}

impl std::str::FromStr for Confidence {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let percent: u8 = s
            .trim_end_matches('%')
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a whole percentage"))?;
        Confidence::new(percent).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published tables (Augustin et al.; diamond-miner's tests), computed
    /// here from the formula.
    #[test]
    fn stopping_points_match_the_published_tables() {
        let c95 = Confidence::new(95).unwrap();
        let n95: Vec<u32> = (1..=10).map(|k| c95.stopping_point(k)).collect();
        assert_eq!(n95, [6, 11, 16, 21, 27, 33, 38, 44, 51, 57]);
        // diamond-miner's union bound gives 765 for 100 next hops; the exact
        // probability needs a few fewer.
        assert!((755..=765).contains(&c95.stopping_point(100)));
        let c99 = Confidence::new(99).unwrap();
        let n99: Vec<u32> = (1..=4).map(|k| c99.stopping_point(k)).collect();
        assert_eq!(n99, [8, 15, 21, 28]);
        assert_eq!(c95.stopping_point(0), 1);
    }

    #[test]
    fn confidence_bounds_and_parsing() {
        assert_eq!(Confidence::new(100), Err(InvalidConfidence(100)));
        assert_eq!(Confidence::new(49), Err(InvalidConfidence(49)));
        assert_eq!("99%".parse::<Confidence>().unwrap().percent(), 99);
        assert!("abc".parse::<Confidence>().is_err());
        assert_eq!(Confidence::default().percent(), 95);
    }
}
