//! A small deterministic random number generator (xoshiro256**, seeded by
//! SplitMix64).
//!
//! The simulator owns its generator instead of depending on `rand` so that a
//! capture is byte-identical for the same seed and arguments across dependency
//! upgrades: the fixtures in `rules/captures/` must regenerate exactly.

/// xoshiro256** with helpers for the distributions the traffic model uses.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a over a label: derives independent streams from one seed.
fn fnv1a(label: &str) -> u64 {
    label.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        Rng {
            s: [
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
            ],
        }
    }

    /// An independent stream for one part of the simulation, so that adding a
    /// scenario does not change the baseline traffic drawn from another stream.
    ///
    /// ```
    /// use shop_sim::rng::Rng;
    /// let mut a = Rng::stream(7, "baseline");
    /// let mut b = Rng::stream(7, "baseline");
    /// assert_eq!(a.next_u64(), b.next_u64());
    /// ```
    pub fn stream(seed: u64, label: &str) -> Self {
        Rng::new(seed ^ fnv1a(label).rotate_left(17))
    }

    /// A child generator, independent of the rest of this one's sequence.
    pub fn fork(&mut self) -> Self {
        Rng::new(self.next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform integer in [lo, hi] (inclusive).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Uniform real in [lo, hi).
    pub fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len().saturating_sub(1) as u64) as usize]
    }

    /// Index into `weights`, chosen in proportion to the weights.
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut x = self.unit() * total;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len().saturating_sub(1)
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-12);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-normal with the given median and shape (sigma of the log).
    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    /// Exponential with the given mean (inter-arrival times of a Poisson process).
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }

    /// `n` random bytes as lowercase hex.
    pub fn hex(&mut self, bytes: usize) -> String {
        let mut s = String::with_capacity(bytes * 2);
        let mut left = bytes;
        while left > 0 {
            let v = self.next_u64().to_be_bytes();
            for b in v.iter().take(left.min(8)) {
                s.push_str(&format!("{b:02x}"));
            }
            left = left.saturating_sub(8);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| Rng::stream(1, "x").next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::stream(1, "x").next_u64(),
            Rng::stream(1, "y").next_u64()
        );
        assert_ne!(
            Rng::stream(1, "x").next_u64(),
            Rng::stream(2, "x").next_u64()
        );
    }

    #[test]
    fn hex_has_the_requested_length() {
        let mut r = Rng::new(3);
        assert_eq!(r.hex(16).len(), 32);
        assert_eq!(r.hex(8).len(), 16);
        assert_eq!(r.hex(3).len(), 6);
    }
}
