//! Backoff: the base exponential delay and the jitter strategies, and whole schedules.
//!
//! Base delay before retry *n* (n = 1, 2, …): `min(max_delay, initial_delay * base^(n-1))`.
//! The power is taken by repeated squaring — only IEEE basic operations, which are exact and
//! identical on every target, and several times faster than `pow`. The jitter draws come from
//! [`crate::unit_interval`] at counter *n*, so the schedule is a pure function of the seed.
//! Strategy formulas are AWS's ("Exponential Backoff And Jitter", 2015) plus the seed's
//! proportional jitter.

use crate::config::{JitterStrategy, Policy};
use crate::rng::{stream, unit_interval};

/// `b^e` by repeated squaring: deterministic on every IEEE 754 target.
#[inline]
fn powi(mut b: f64, mut e: u32) -> f64 {
    let mut acc = 1.0;
    while e > 0 {
        if e & 1 == 1 {
            acc *= b;
        }
        e >>= 1;
        b *= b;
    }
    acc
}

/// A duration of a [`Policy`] (at most 2⁵³ µs, see `config::MAX_SECONDS`) as `f64`, exactly.
/// Through `i64` because x86-64 converts a signed integer in one instruction and an unsigned one
/// in six; for these values the result is the same.
#[inline]
fn us_to_f64(us: u64) -> f64 {
    debug_assert!(us <= 1 << 53);
    us as i64 as f64
}

/// `x` as whole microseconds within `[0, cap]` (truncating; NaN and negatives give 0). `cap` is a
/// duration of a [`Policy`] (at most 2⁵³ µs).
#[inline]
fn clamp_us(x: f64, cap: u64) -> u64 {
    if x >= us_to_f64(cap) {
        cap
    } else if x > 0.0 {
        // 0 < x < 2⁵³: truncating through i64 is exact, and cheaper than through u64.
        x as i64 as u64
    } else {
        0
    }
}

/// One delay of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delay {
    /// The exponential base delay, before jitter.
    pub base_us: u64,
    /// The delay after jitter: what to sleep.
    pub delay_us: u64,
}

impl Policy {
    /// The base delay before retry `retry` (1 = the first retry), before jitter.
    #[inline]
    pub fn base_delay_us(&self, retry: u32) -> u64 {
        Curve::of(self).base_delay_us(retry)
    }

    /// The delay before retry `retry` for `seed`. `prev_delay_us` is the previous delay (only
    /// the decorrelated strategy uses it; pass 0 before the first retry).
    #[inline]
    pub fn next_delay(&self, retry: u32, seed: u64, prev_delay_us: u64) -> Delay {
        Curve::of(self).next_delay(retry, seed, prev_delay_us)
    }

    /// The whole schedule for `seed`: one entry per retry (`max_attempts - 1` of them).
    #[inline]
    pub fn plan(&self, seed: u64) -> Plan {
        plan(self, seed)
    }
}

/// The fields of a [`Policy`] that a schedule reads. A [`Plan`] carries these 40 bytes rather
/// than a copy of the whole 160-byte policy, which took longer to copy than a delay takes to
/// compute.
#[derive(Debug, Clone, Copy)]
struct Curve {
    initial_delay_us: u64,
    max_delay_us: u64,
    exponential_base: f64,
    jitter_factor: f64,
    max_attempts: u32,
    strategy: JitterStrategy,
}

impl Curve {
    #[inline]
    fn of(policy: &Policy) -> Self {
        Self {
            initial_delay_us: policy.initial_delay_us,
            max_delay_us: policy.max_delay_us,
            exponential_base: policy.exponential_base,
            jitter_factor: policy.jitter_factor,
            max_attempts: policy.max_attempts,
            strategy: policy.strategy,
        }
    }

    #[inline]
    fn base_delay_us(&self, retry: u32) -> u64 {
        let exponent = retry.saturating_sub(1);
        clamp_us(
            us_to_f64(self.initial_delay_us) * powi(self.exponential_base, exponent),
            self.max_delay_us,
        )
    }

    #[inline]
    fn next_delay(&self, retry: u32, seed: u64, prev_delay_us: u64) -> Delay {
        let base_us = self.base_delay_us(retry);
        let delay_us = match self.strategy {
            JitterStrategy::None => base_us,
            strategy => {
                let u = unit_interval(seed, stream::JITTER + u64::from(retry));
                let b = us_to_f64(base_us);
                let x = match strategy {
                    JitterStrategy::Proportional => {
                        b * (1.0 + self.jitter_factor * (2.0 * u - 1.0))
                    }
                    JitterStrategy::Full => b * u,
                    JitterStrategy::Equal => 0.5 * b * (1.0 + u),
                    // AWS decorrelated: sleep = min(cap, random_between(base, sleep * 3)).
                    _ => {
                        let lo = us_to_f64(self.initial_delay_us);
                        let prev = if prev_delay_us == 0 {
                            self.initial_delay_us
                        } else {
                            prev_delay_us
                        };
                        let hi = (3.0 * prev as f64).max(lo);
                        lo + u * (hi - lo)
                    }
                };
                clamp_us(x, self.max_delay_us)
            }
        };
        Delay { base_us, delay_us }
    }
}

/// The whole schedule of `policy` for `seed`.
#[inline]
pub fn plan(policy: &Policy, seed: u64) -> Plan {
    Plan {
        curve: Curve::of(policy),
        seed,
        next_retry: 1,
        prev_delay_us: 0,
    }
}

/// One planned retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedRetry {
    /// 1 for the first retry (the second call).
    pub retry: u32,
    /// Base delay before jitter.
    pub base_delay_us: u64,
    /// Delay after jitter.
    pub delay_us: u64,
}

/// Iterator over a schedule, made by [`plan`].
#[derive(Debug, Clone)]
pub struct Plan {
    curve: Curve,
    seed: u64,
    next_retry: u32,
    prev_delay_us: u64,
}

impl Iterator for Plan {
    type Item = PlannedRetry;

    #[inline]
    fn next(&mut self) -> Option<PlannedRetry> {
        if self.next_retry >= self.curve.max_attempts {
            return None;
        }
        let retry = self.next_retry;
        let d = self.curve.next_delay(retry, self.seed, self.prev_delay_us);
        self.next_retry += 1;
        self.prev_delay_us = d.delay_us;
        Some(PlannedRetry {
            retry,
            base_delay_us: d.base_us,
            delay_us: d.delay_us,
        })
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.curve.max_attempts.saturating_sub(self.next_retry) as usize;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Plan {}

#[cfg(test)]
mod tests {
    use crate::RetryConfig;

    fn delays(config: RetryConfig, seed: u64) -> ([u64; 16], usize) {
        let mut out = [0; 16];
        let mut n = 0;
        for (i, r) in config.validate().expect("valid").plan(seed).enumerate() {
            out[i] = r.delay_us;
            n += 1;
        }
        (out, n)
    }

    fn no_jitter(c: RetryConfig) -> RetryConfig {
        RetryConfig { jitter: false, ..c }
    }

    #[test]
    fn preset_schedules_without_jitter_are_exact() {
        let (d, n) = delays(no_jitter(RetryConfig::DEFAULT), 7);
        assert_eq!(&d[..n], &[100_000, 200_000]);
        let (d, n) = delays(no_jitter(RetryConfig::AGGRESSIVE), 7);
        assert_eq!(&d[..n], &[50_000, 75_000, 112_500, 168_750]);
        let (d, n) = delays(no_jitter(RetryConfig::CONSERVATIVE), 7);
        assert_eq!(&d[..n], &[500_000]);
    }

    #[test]
    fn proportional_jitter_stays_within_its_band() {
        for preset in [
            RetryConfig::DEFAULT,
            RetryConfig::AGGRESSIVE,
            RetryConfig::CONSERVATIVE,
        ] {
            let p = preset.validate().expect("valid");
            for seed in 0..2_000 {
                for r in p.plan(seed) {
                    let b = r.base_delay_us as f64;
                    let lo = (b * (1.0 - preset.jitter_factor)) as u64;
                    let hi = (b * (1.0 + preset.jitter_factor)) as u64;
                    assert!((lo..=hi).contains(&r.delay_us), "{r:?} not in [{lo}, {hi}]");
                    assert!(r.delay_us <= p.max_delay_us());
                }
            }
        }
    }

    #[test]
    fn base_delay_is_capped_and_survives_overflow() {
        let c = RetryConfig {
            max_attempts: 1000,
            exponential_base: 10.0,
            ..RetryConfig::DEFAULT
        };
        let p = c.validate().expect("valid");
        assert_eq!(p.base_delay_us(1), 100_000);
        assert_eq!(p.base_delay_us(3), 10_000_000);
        assert_eq!(p.base_delay_us(999), 10_000_000);
        assert_eq!(p.base_delay_us(u32::MAX), 10_000_000);
    }

    #[test]
    fn same_seed_same_schedule_other_seed_other_schedule() {
        let c = RetryConfig {
            max_attempts: 8,
            ..RetryConfig::DEFAULT
        };
        assert_eq!(delays(c, 42), delays(c, 42));
        assert_ne!(delays(c, 42), delays(c, 43));
    }
}
