//! Mean Opinion Score of the destination: what a voice call over this path would
//! feel like, from the ITU-T G.107 E-model in its widely used simplified form.

use serde::Serialize;

/// A voice-quality estimate for the destination.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Mos {
    /// 1 (unusable) to 4.5; the simplified model tops out at about 4.4.
    pub mos: f64,
    /// The E-model's transmission rating R, after the loss penalty (may be negative).
    pub r_factor: f64,
    /// Average RTT + 2 x jitter + 10 ms of codec delay.
    pub effective_latency_ns: f64,
}

/// The simplified E-model (ITU-T Recommendation G.107, "The E-model: a
/// computational model for use in transmission planning"), as popularised for
/// network monitors:
///
/// ```text
/// effective latency L = average latency + 2 x jitter + 10 ms     (in ms)
/// R = 93.2 - L / 40            if L < 160 ms
/// R = 93.2 - (L - 120) / 10    otherwise
/// R = R - 2.5 x loss %
/// MOS = 1 + 0.035 R + 0.000007 R (R - 60) (100 - R), clamped to 1..4.5
/// ```
///
/// 93.2 is G.107's default R for G.711 with no impairment; the two latency slopes
/// approximate its delay impairment Id, whose knee is near 160 ms one way; the
/// MOS mapping is G.107 Annex B's R-to-MOS conversion. Latency here is the
/// measured round-trip time, as ping-based monitors use it, which is conservative
/// (one-way delay is about half). Jitter is the mean |ΔRTT| between consecutive
/// answers.
pub fn mos(avg_latency_ns: f64, jitter_ns: f64, loss_pct: f64) -> Mos {
    const NS_PER_MS: f64 = 1e6;
    let effective_ms = avg_latency_ns / NS_PER_MS + 2.0 * jitter_ns / NS_PER_MS + 10.0;
    let mut r = if effective_ms < 160.0 {
        93.2 - effective_ms / 40.0
    } else {
        93.2 - (effective_ms - 120.0) / 10.0
    };
    r -= 2.5 * loss_pct.clamp(0.0, 100.0);
    let score = if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + 0.000_007 * r * (r - 60.0) * (100.0 - r)
    };
    Mos {
        mos: score.clamp(1.0, 4.5),
        r_factor: r,
        effective_latency_ns: effective_ms * NS_PER_MS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: f64 = 1e6;

    fn near(a: f64, b: f64) -> bool {
        (a - b).abs() < 5e-4
    }

    #[test]
    fn known_values() {
        // A perfect path: L = 10 ms, R = 92.95, MOS = 4.4044 (worked by hand:
        // 1 + 3.25325 + 7e-6 x 92.95 x 32.95 x 7.05).
        let m = mos(0.0, 0.0, 0.0);
        assert!(near(m.r_factor, 92.95));
        assert!(near(m.mos, 4.4044), "{}", m.mos);
        assert!(near(m.effective_latency_ns, 10.0 * MS));
        // 150 ms: L = 160 takes the second slope, R = 89.2, MOS = 4.3189.
        let m = mos(150.0 * MS, 0.0, 0.0);
        assert!(near(m.r_factor, 89.2));
        assert!(near(m.mos, 4.3189), "{}", m.mos);
        // 10% loss: R = 67.95, MOS = 3.4994.
        let m = mos(0.0, 0.0, 10.0);
        assert!(near(m.r_factor, 67.95));
        assert!(near(m.mos, 3.4994), "{}", m.mos);
        // 300 ms RTT + 50 ms jitter: L = 410, R = 64.2, MOS = 3.3146.
        let m = mos(300.0 * MS, 50.0 * MS, 0.0);
        assert!(near(m.r_factor, 64.2));
        assert!(near(m.mos, 3.3146), "{}", m.mos);
    }

    #[test]
    fn continuous_at_the_knee_and_clamped() {
        let below = mos(149.999 * MS, 0.0, 0.0).r_factor;
        let at = mos(150.0 * MS, 0.0, 0.0).r_factor;
        assert!((below - at).abs() < 1e-3);
        // 50% loss drives R below zero: the worst score.
        let m = mos(20.0 * MS, 1.0 * MS, 50.0);
        assert!(m.r_factor < 0.0);
        assert_eq!(m.mos, 1.0);
        assert_eq!(mos(0.0, 0.0, 100.0).mos, 1.0);
        // Absurd latency is floored too.
        assert_eq!(mos(2_000.0 * MS, 0.0, 0.0).mos, 1.0);
    }

    #[test]
    fn worse_inputs_never_score_better() {
        let mut previous = f64::INFINITY;
        for step in 0..60 {
            let x = step as f64;
            let m = mos(x * 10.0 * MS, x * MS, x / 4.0).mos;
            assert!(m <= previous + 1e-12, "step {step}: {m} > {previous}");
            assert!((1.0..=4.5).contains(&m));
            previous = m;
        }
    }
}
