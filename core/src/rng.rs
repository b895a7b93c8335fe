//! Counter-based randomness: `u = f(seed, counter)`.
//!
//! A retry schedule must be reproducible from its seed on every target, and a host must be able to
//! recompute the jitter of retry *n* without replaying retries 1..n. So there is no generator
//! state: the n-th draw is SplitMix64's output at position n of the stream that starts at `seed`
//! (Steele, Lea & Flood, "Fast splittable pseudorandom number generators", 2014).

/// SplitMix64's increment (the golden ratio in 64-bit fixed point).
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function (variant 13 of Stafford's mixers).
#[inline]
const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The 64 random bits at position `counter` of the stream seeded by `seed`.
#[inline]
pub(crate) const fn bits(seed: u64, counter: u64) -> u64 {
    mix64(seed.wrapping_add(GOLDEN_GAMMA.wrapping_mul(counter.wrapping_add(1))))
}

/// A uniform draw from `[0, 1)` at position `counter` of the stream seeded by `seed`.
///
/// The top 53 bits become the mantissa, so every value is an exact multiple of 2⁻⁵³ and the
/// conversion is exact on every IEEE 754 target.
#[inline]
pub fn unit_interval(seed: u64, counter: u64) -> f64 {
    (bits(seed, counter) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Streams used for different purposes, so that the slot draw of retry n is independent of its
/// jitter draw.
pub(crate) mod stream {
    /// Jitter of retry n uses counter n.
    pub const JITTER: u64 = 0;
    /// The local fallback slot of retry n uses counter n + SLOT.
    pub const SLOT: u64 = 1 << 32;
    /// The jitter inside a slot of retry n uses counter n + SLOT_JITTER.
    pub const SLOT_JITTER: u64 = 2 << 32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values_are_stable() {
        // SplitMix64 seeded with 0 yields 0xE220A8397B1DCDAF first (the published test vector).
        assert_eq!(bits(0, 0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(bits(0, 1), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn unit_interval_stays_in_range() {
        for seed in [0, 1, u64::MAX, 0xDEAD_BEEF] {
            for n in 0..10_000 {
                let u = unit_interval(seed, n);
                assert!((0.0..1.0).contains(&u), "u = {u}");
            }
        }
    }
}
