//! Random draws for arrivals and jitter, on `fastrand`'s per-thread
//! generator. Load shapes need spread, not cryptographic quality.

/// A uniform draw from `[0, 1)`.
pub fn unit() -> f64 {
    fastrand::f64()
}

/// An exponential draw with the given mean (Poisson inter-arrival times).
pub fn exponential(mean: f64) -> f64 {
    -mean * (1.0 - unit()).ln()
}
