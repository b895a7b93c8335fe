//! Arbitrary [`RetryConfig`]s: mostly valid, often at a boundary, sometimes any bits.

use arbitrary::Arbitrary;
use ricochet_core::breaker::BreakerConfig;
use ricochet_core::budget::BudgetConfig;
use ricochet_core::{CategorySet, JitterStrategy, RetryConfig};

/// The largest duration `RetryConfig::validate` accepts, in seconds (2⁵³ µs).
const MAX_SECONDS: f64 = 9_007_199_254.740_992;

/// A duration in seconds.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Seconds {
    /// Whole microseconds: 0 to about 71 minutes.
    Micros(u32),
    /// Whole seconds: 0 to about 18 hours.
    Whole(u16),
    /// A boundary of the accepted range, or just past one.
    Edge(Edge),
    /// Any bit pattern: NaN, infinities, negatives, subnormals, huge values.
    Raw(f64),
}

/// Durations at the edges of what validation accepts.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Edge {
    /// `0.0`.
    Zero,
    /// `-0.0`.
    NegativeZero,
    /// Half a microsecond (rounds to 1 µs).
    HalfMicro,
    /// Just under half a microsecond (rounds to 0).
    UnderHalfMicro,
    /// The largest accepted duration.
    Max,
    /// The next `f64` after the largest accepted duration.
    AboveMax,
    /// `NaN`.
    Nan,
    /// `+inf`.
    Infinity,
}

impl Seconds {
    /// The value in seconds.
    pub fn get(self) -> f64 {
        match self {
            Self::Micros(us) => f64::from(us) / 1e6,
            Self::Whole(s) => f64::from(s),
            Self::Edge(Edge::Zero) => 0.0,
            Self::Edge(Edge::NegativeZero) => -0.0,
            Self::Edge(Edge::HalfMicro) => 0.5e-6,
            Self::Edge(Edge::UnderHalfMicro) => 0.499_999e-6,
            Self::Edge(Edge::Max) => MAX_SECONDS,
            Self::Edge(Edge::AboveMax) => f64::from_bits(MAX_SECONDS.to_bits() + 1),
            Self::Edge(Edge::Nan) => f64::NAN,
            Self::Edge(Edge::Infinity) => f64::INFINITY,
            Self::Raw(x) => x,
        }
    }
}

/// A number in `[0, 1]` (a share, a jitter factor), or any bits.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Share {
    /// `n / 255`.
    Step(u8),
    /// Any bit pattern.
    Raw(f64),
}

impl Share {
    /// The value.
    pub fn get(self) -> f64 {
        match self {
            Self::Step(n) => f64::from(n) / 255.0,
            Self::Raw(x) => x,
        }
    }
}

/// A count: usually small, so a call runs into its limit; sometimes any `u32`.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Count {
    /// 0 to 11.
    Few(u8),
    /// Any value.
    Any(u32),
}

impl Count {
    /// The value.
    pub fn get(self) -> u32 {
        match self {
            Self::Few(n) => u32::from(n % 12),
            Self::Any(n) => n,
        }
    }
}

/// A circuit breaker config.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct FuzzBreaker {
    failure_threshold: Count,
    failure_rate: Share,
    minimum_calls: Count,
    window: Seconds,
    cool_down: Seconds,
    half_open_probes: Count,
}

/// A retry budget config.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct FuzzBudget {
    max_tokens: u16,
    /// `Ok`: thousandths of a token (A6's precision); `Err`: any bits.
    token_ratio: Result<u32, f64>,
}

/// Everything a [`RetryConfig`] holds, drawn field by field.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct FuzzConfig {
    max_attempts: Count,
    initial_delay: Seconds,
    max_delay: Seconds,
    /// `Ok(n)`: `1 + n/64`; `Err`: any bits.
    exponential_base: Result<u8, f64>,
    jitter: bool,
    jitter_factor: Share,
    slot_count: Count,
    slot_width: Seconds,
    coordination_enabled: bool,
    idempotency_ttl: Seconds,
    strategy: u8,
    max_elapsed: Option<Seconds>,
    max_retry_after: Seconds,
    slot_capacity: Option<Count>,
    retry_on: u16,
    circuit_breaker: Option<FuzzBreaker>,
    retry_budget: Option<FuzzBudget>,
}

impl FuzzConfig {
    /// The config.
    pub fn get(&self) -> RetryConfig {
        RetryConfig {
            max_attempts: self.max_attempts.get(),
            initial_delay: self.initial_delay.get(),
            max_delay: self.max_delay.get(),
            exponential_base: match self.exponential_base {
                Ok(n) => 1.0 + f64::from(n) / 64.0,
                Err(x) => x,
            },
            jitter: self.jitter,
            jitter_factor: self.jitter_factor.get(),
            slot_count: self.slot_count.get(),
            slot_width: self.slot_width.get(),
            coordination_enabled: self.coordination_enabled,
            idempotency_ttl: self.idempotency_ttl.get(),
            strategy: JitterStrategy::ALL[usize::from(self.strategy) % JitterStrategy::ALL.len()],
            max_elapsed: self.max_elapsed.map(Seconds::get),
            max_retry_after: self.max_retry_after.get(),
            slot_capacity: self.slot_capacity.map(Count::get),
            retry_on: CategorySet::from_bits(self.retry_on),
            circuit_breaker: self.circuit_breaker.map(|b| BreakerConfig {
                failure_threshold: b.failure_threshold.get(),
                failure_rate: b.failure_rate.get(),
                minimum_calls: b.minimum_calls.get(),
                window: b.window.get(),
                cool_down: b.cool_down.get(),
                half_open_probes: b.half_open_probes.get(),
            }),
            retry_budget: self.retry_budget.map(|b| BudgetConfig {
                max_tokens: u32::from(b.max_tokens),
                token_ratio: match b.token_ratio {
                    Ok(milli) => f64::from(milli) / 1000.0,
                    Err(x) => x,
                },
            }),
        }
    }
}
