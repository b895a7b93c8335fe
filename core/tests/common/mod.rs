//! An oracle for the delay formulas, written from the design document rather than from
//! `core/src/backoff.rs`, shared by the integration tests.
//!
//! The base delay is grown by repeated multiplication, not by the engine's repeated squaring, so
//! it is exact only for configs whose growth is exact in `f64` (base 2, or 1.5 from a multiple of
//! a power of two, over a few retries): the scenarios choose such configs on purpose, and then
//! the engine must agree to the microsecond.

// Each test crate uses its own subset of these helpers.
#![allow(dead_code)]

use ricochet_core::{unit_interval, JitterStrategy, RetryConfig};

/// Seconds as whole microseconds, rounded to the nearest (the config's documented conversion).
pub fn us(seconds: f64) -> u64 {
    (seconds * 1e6).round() as u64
}

/// `min(max_delay, initial_delay * exponential_base^(retry - 1))`, truncated to whole µs.
pub fn base_us(config: &RetryConfig, retry: u32) -> u64 {
    let max = us(config.max_delay) as f64;
    let mut base = us(config.initial_delay) as f64;
    for _ in 1..retry {
        if base >= max {
            break;
        }
        base *= config.exponential_base;
    }
    base.min(max) as u64
}

/// The delay before retry `retry` with the documented formula of `strategy`, drawing
/// `u = unit_interval(seed, retry)`, clamped to `[0, max_delay]` and truncated to whole µs.
/// `prev_us` is the previous delay (0 before the first retry), used by `decorrelated` only.
pub fn delay_us(
    config: &RetryConfig,
    strategy: JitterStrategy,
    retry: u32,
    seed: u64,
    prev_us: u64,
) -> u64 {
    let max = us(config.max_delay) as f64;
    let base = base_us(config, retry) as f64;
    let u = unit_interval(seed, u64::from(retry));
    let x = match strategy {
        JitterStrategy::None => base,
        // The seed's jitter: base * (1 + jitter_factor * v), v uniform in [-1, 1).
        JitterStrategy::Proportional => base * (1.0 + config.jitter_factor * (2.0 * u - 1.0)),
        // AWS full jitter: U(0, base).
        JitterStrategy::Full => base * u,
        // AWS equal jitter: base/2 + U(0, base/2).
        JitterStrategy::Equal => base / 2.0 + u * (base / 2.0),
        // AWS decorrelated jitter: U(initial, 3 * previous), the first "previous" being initial.
        JitterStrategy::Decorrelated => {
            let initial = us(config.initial_delay) as f64;
            let prev = if prev_us == 0 {
                initial
            } else {
                prev_us as f64
            };
            let hi = (3.0 * prev).max(initial);
            initial + u * (hi - initial)
        }
    };
    x.clamp(0.0, max) as u64
}

/// The whole schedule of `config` under `strategy` for `seed`: `max_attempts - 1` delays.
pub fn schedule_us(config: &RetryConfig, strategy: JitterStrategy, seed: u64) -> Vec<u64> {
    let mut prev = 0;
    (1..config.max_attempts)
        .map(|retry| {
            prev = delay_us(config, strategy, retry, seed, prev);
            prev
        })
        .collect()
}
