//! The seeded noise of the store examples' synthetic series, shared so both
//! draw the same WAN-like jitter.

/// A seeded generator with a Gaussian draw (Box–Muller).
pub struct Noise(pub fastrand::Rng);

impl Noise {
    pub fn gaussian(&mut self) -> f64 {
        let u1 = self.0.f64().max(f64::MIN_POSITIVE);
        let u2 = self.0.f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}
