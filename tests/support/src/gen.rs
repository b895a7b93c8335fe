//! Deterministic inputs: a small generator, random valid configs, and a guest that must have been built.

use ricochet_core::breaker::BreakerConfig;
use ricochet_core::budget::BudgetConfig;
use ricochet_core::{CategorySet, ErrorCategory, JitterStrategy, RetryConfig};

/// An embedded guest, or a failure that says how to get one.
pub fn guest(bytes: Option<&'static [u8]>, name: &str) -> &'static [u8] {
    bytes.unwrap_or_else(|| {
        panic!("the {name} component was not built: install a wasm32 toolchain (see README) and rebuild")
    })
}

/// A small deterministic generator for test inputs (SplitMix64).
pub struct Gen(pub u64);

impl Gen {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

/// A random valid config: any preset, strategy, attempt count, categories, deadline, breaker
/// and budget.
pub fn random_config(g: &mut Gen) -> RetryConfig {
    let base = RetryConfig::preset(RetryConfig::PRESET_NAMES[g.below(3) as usize]).unwrap();
    let mut retry_on = CategorySet::EMPTY;
    for c in ErrorCategory::ALL {
        if g.below(3) > 0 {
            retry_on = retry_on.with(c);
        }
    }
    RetryConfig {
        max_attempts: 1 + g.below(8) as u32,
        strategy: JitterStrategy::ALL[g.below(5) as usize],
        jitter: g.below(5) > 0,
        exponential_base: 1.0 + g.unit() * 2.0,
        max_elapsed: g.chance(2).then(|| 0.2 + g.unit() * 5.0),
        max_retry_after: 1.0 + g.unit() * 30.0,
        coordination_enabled: g.chance(2),
        slot_capacity: g.chance(4).then(|| 1 + g.below(2) as u32),
        retry_on,
        circuit_breaker: g.chance(2).then(|| BreakerConfig {
            failure_threshold: 1 + g.below(5) as u32,
            failure_rate: 0.5,
            minimum_calls: 4,
            window: 1.0,
            cool_down: 0.5 + g.unit(),
            half_open_probes: 1,
        }),
        retry_budget: g.chance(2).then(|| BudgetConfig {
            max_tokens: 1 + g.below(10) as u32,
            token_ratio: 0.1,
        }),
        ..base
    }
}
