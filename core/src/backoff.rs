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

/// `x` as whole microseconds within `[0, cap]` (truncating; NaN and negatives give 0).
#[inline]
fn clamp_us(x: f64, cap: u64) -> u64 {
    if x >= cap as f64 {
        cap
    } else if x > 0.0 {
        x as u64
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
        let exponent = retry.saturating_sub(1);
        clamp_us(
            self.initial_delay_us as f64 * powi(self.exponential_base, exponent),
            self.max_delay_us,
        )
    }

    /// The delay before retry `retry` for `seed`. `prev_delay_us` is the previous delay (only
    /// the decorrelated strategy uses it; pass 0 before the first retry).
    #[inline]
    pub fn next_delay(&self, retry: u32, seed: u64, prev_delay_us: u64) -> Delay {
        let base_us = self.base_delay_us(retry);
        let delay_us = match self.strategy {
            JitterStrategy::None => base_us,
            strategy => {
                let u = unit_interval(seed, stream::JITTER + u64::from(retry));
                let b = base_us as f64;
                let x = match strategy {
                    JitterStrategy::Proportional => {
                        b * (1.0 + self.jitter_factor * (2.0 * u - 1.0))
                    }
                    JitterStrategy::Full => b * u,
                    JitterStrategy::Equal => 0.5 * b * (1.0 + u),
                    // AWS decorrelated: sleep = min(cap, random_between(base, sleep * 3)).
                    _ => {
                        let lo = self.initial_delay_us as f64;
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

    /// The whole schedule for `seed`: one entry per retry (`max_attempts - 1` of them).
    pub fn plan(&self, seed: u64) -> Plan {
        plan(self, seed)
    }
}

/// The whole schedule of `policy` for `seed`.
pub fn plan(policy: &Policy, seed: u64) -> Plan {
    Plan {
        policy: *policy,
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
    policy: Policy,
    seed: u64,
    next_retry: u32,
    prev_delay_us: u64,
}

impl Iterator for Plan {
    type Item = PlannedRetry;

    fn next(&mut self) -> Option<PlannedRetry> {
        if self.next_retry >= self.policy.max_attempts {
            return None;
        }
        let retry = self.next_retry;
        let d = self.policy.next_delay(retry, self.seed, self.prev_delay_us);
        self.next_retry += 1;
        self.prev_delay_us = d.delay_us;
        Some(PlannedRetry {
            retry,
            base_delay_us: d.base_us,
            delay_us: d.delay_us,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.policy.max_attempts.saturating_sub(self.next_retry) as usize;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Plan {}

#[cfg(test)]
mod tests {
    use super::*;
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
