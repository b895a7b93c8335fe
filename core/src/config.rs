//! Configuration: the seed's fields and presets, validated once into a [`Policy`].
//!
//! A [`RetryConfig`] is what people write (seconds as `f64`, exactly the seed's field names). It
//! may hold anything — NaN, negative delays, `max_attempts: 0` — until [`RetryConfig::validate`]
//! turns it into a [`Policy`]: integer microseconds, every field checked, the effective jitter
//! strategy resolved. Everything downstream takes a `Policy`, so invalid values cannot reach the
//! math. Errors name the field and hand the rejected value back.
//!
//! # Default
//!
//! | field | `default` | `aggressive` | `conservative` |
//! |---|---|---|---|
//! | `max_attempts` | 3 | 5 | 2 |
//! | `initial_delay` (s) | 0.1 | 0.05 | 0.5 |
//! | `max_delay` (s) | 10.0 | 5.0 | 15.0 |
//! | `exponential_base` | 2 | 1.5 | 2 |
//! | `jitter` | true | true | true |
//! | `jitter_factor` | 0.1 | 0.1 | 0.05 |
//! | `slot_count` | 10 | 20 | 5 |
//! | `slot_width` (s) | 0.1 | 0.05 | 0.2 |
//! | `coordination_enabled` | true | true | true |
//! | `idempotency_ttl` (s) | 3600 | 1800 | 7200 |
//!
//! Fields beyond the seed, the same in every preset: `strategy: proportional` (the seed's
//! ±`jitter_factor`), `max_elapsed: none`, `max_retry_after: 60` s, `slot_capacity: none`
//! (unlimited), `retry_on:` the seed's retryable categories plus `RateLimited`.

use core::fmt;

use crate::breaker::{BreakerConfig, BreakerError, BreakerPolicy};
use crate::budget::{BudgetConfig, BudgetError};
use crate::category::CategorySet;

/// How a base delay is randomised. `jitter: false` means [`JitterStrategy::None`] whatever
/// `strategy` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum JitterStrategy {
    /// The base delay as it is.
    None,
    /// The seed's jitter: `base * (1 + jitter_factor * u)`, `u` uniform in `[-1, 1)`.
    #[default]
    Proportional,
    /// AWS "full jitter": uniform in `[0, base)`.
    Full,
    /// AWS "equal jitter": `base/2` plus uniform in `[0, base/2)`.
    Equal,
    /// AWS "decorrelated jitter": uniform in `[initial_delay, 3 * previous)`, capped at `max_delay`.
    Decorrelated,
}

impl JitterStrategy {
    /// Every strategy.
    pub const ALL: [JitterStrategy; 5] = [
        Self::None,
        Self::Proportional,
        Self::Full,
        Self::Equal,
        Self::Decorrelated,
    ];

    /// The config name (`none`, `proportional`, `full`, `equal`, `decorrelated`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Proportional => "proportional",
            Self::Full => "full",
            Self::Equal => "equal",
            Self::Decorrelated => "decorrelated",
        }
    }

    /// Looks a strategy up by its config name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// A retry configuration as written: the seed's fields, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct RetryConfig {
    /// Every call counts, the first included: 3 means one call and two retries.
    pub max_attempts: u32,
    /// Base delay before the first retry, in seconds.
    pub initial_delay: f64,
    /// Cap on any computed delay, in seconds.
    pub max_delay: f64,
    /// Growth factor of the base delay per retry (≥ 1).
    pub exponential_base: f64,
    /// Whether to randomise delays at all.
    pub jitter: bool,
    /// Spread of the seed's proportional jitter, within `[0, 1]`.
    pub jitter_factor: f64,
    /// Slots per coordination window.
    pub slot_count: u32,
    /// Width of one slot, in seconds.
    pub slot_width: f64,
    /// Whether retries ask the fleet's coordinator for a slot.
    pub coordination_enabled: bool,
    /// How long a completed idempotent result is kept, in seconds.
    pub idempotency_ttl: f64,
    /// Jitter strategy (default: the seed's proportional jitter).
    pub strategy: JitterStrategy,
    /// Total time budget in seconds from the first call; a retry that would end past it is not taken.
    pub max_elapsed: Option<f64>,
    /// Longest server-requested delay (`Retry-After`) that is honoured, in seconds; longer gives up.
    pub max_retry_after: f64,
    /// Retries per slot per window before a retry moves to the next window (default: unlimited).
    pub slot_capacity: Option<u32>,
    /// Categories that are retried (default: the seed's retryable list plus `RateLimited`).
    pub retry_on: CategorySet,
    /// A circuit breaker per service (default: none).
    pub circuit_breaker: Option<BreakerConfig>,
    /// A retry budget per service, gRPC A6 style (default: none).
    pub retry_budget: Option<BudgetConfig>,
}

impl RetryConfig {
    /// The seed's `default` level.
    pub const DEFAULT: Self = Self {
        max_attempts: 3,
        initial_delay: 0.1,
        max_delay: 10.0,
        exponential_base: 2.0,
        jitter: true,
        jitter_factor: 0.1,
        slot_count: 10,
        slot_width: 0.1,
        coordination_enabled: true,
        idempotency_ttl: 3600.0,
        strategy: JitterStrategy::Proportional,
        max_elapsed: None,
        max_retry_after: 60.0,
        slot_capacity: None,
        retry_on: CategorySet::SEED_RETRYABLE,
        circuit_breaker: None,
        retry_budget: None,
    };

    /// The seed's `aggressive` level.
    pub const AGGRESSIVE: Self = Self {
        max_attempts: 5,
        initial_delay: 0.05,
        max_delay: 5.0,
        exponential_base: 1.5,
        jitter_factor: 0.1,
        slot_count: 20,
        slot_width: 0.05,
        idempotency_ttl: 1800.0,
        ..Self::DEFAULT
    };

    /// The seed's `conservative` level.
    pub const CONSERVATIVE: Self = Self {
        max_attempts: 2,
        initial_delay: 0.5,
        max_delay: 15.0,
        exponential_base: 2.0,
        jitter_factor: 0.05,
        slot_count: 5,
        slot_width: 0.2,
        idempotency_ttl: 7200.0,
        ..Self::DEFAULT
    };

    /// The names of the presets, in the seed's order.
    pub const PRESET_NAMES: [&'static str; 3] = ["default", "aggressive", "conservative"];

    /// A preset by name: `default`, `aggressive` or `conservative`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "default" => Some(Self::DEFAULT),
            "aggressive" => Some(Self::AGGRESSIVE),
            "conservative" => Some(Self::CONSERVATIVE),
            _ => None,
        }
    }

    /// Checks every field and converts to microseconds once.
    pub fn validate(&self) -> Result<Policy, ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::ZeroAttempts);
        }
        if self.max_attempts > MAX_ATTEMPTS {
            return Err(ConfigError::OutOfRange {
                field: "max_attempts",
                value: self.max_attempts as f64,
                min: 1.0,
                max: MAX_ATTEMPTS as f64,
            });
        }
        let initial_delay_us = seconds_to_us("initial_delay", self.initial_delay)?;
        let max_delay_us = seconds_to_us("max_delay", self.max_delay)?;
        if initial_delay_us > max_delay_us {
            return Err(ConfigError::InitialAboveMax {
                initial_delay: self.initial_delay,
                max_delay: self.max_delay,
            });
        }
        let base = self.exponential_base;
        if !base.is_finite() {
            return Err(ConfigError::NotFinite {
                field: "exponential_base",
                value: base,
            });
        }
        if base < 1.0 {
            return Err(ConfigError::OutOfRange {
                field: "exponential_base",
                value: base,
                min: 1.0,
                max: f64::INFINITY,
            });
        }
        let factor = self.jitter_factor;
        if !factor.is_finite() {
            return Err(ConfigError::NotFinite {
                field: "jitter_factor",
                value: factor,
            });
        }
        if !(0.0..=1.0).contains(&factor) {
            return Err(ConfigError::OutOfRange {
                field: "jitter_factor",
                value: factor,
                min: 0.0,
                max: 1.0,
            });
        }
        let slot_width_us = seconds_to_us("slot_width", self.slot_width)?;
        if self.coordination_enabled {
            if self.slot_count == 0 {
                return Err(ConfigError::ZeroSlotCount);
            }
            if slot_width_us == 0 {
                return Err(ConfigError::OutOfRange {
                    field: "slot_width",
                    value: self.slot_width,
                    min: 1e-6,
                    max: MAX_SECONDS,
                });
            }
        }
        if self.slot_capacity == Some(0) {
            return Err(ConfigError::OutOfRange {
                field: "slot_capacity",
                value: 0.0,
                min: 1.0,
                max: u32::MAX as f64,
            });
        }
        let idempotency_ttl_us = seconds_to_us("idempotency_ttl", self.idempotency_ttl)?;
        let max_elapsed_us = match self.max_elapsed {
            Some(s) => Some(seconds_to_us("max_elapsed", s)?),
            None => None,
        };
        let max_retry_after_us = seconds_to_us("max_retry_after", self.max_retry_after)?;
        let strategy = if self.jitter {
            self.strategy
        } else {
            JitterStrategy::None
        };
        let breaker = match &self.circuit_breaker {
            Some(b) => Some(b.validate().map_err(ConfigError::Breaker)?),
            None => None,
        };
        if let Some(b) = &self.retry_budget {
            b.validate().map_err(ConfigError::Budget)?;
        }
        Ok(Policy {
            max_attempts: self.max_attempts,
            initial_delay_us,
            max_delay_us,
            exponential_base: base,
            strategy,
            jitter_factor: factor,
            slot_count: self.slot_count,
            slot_width_us,
            coordination_enabled: self.coordination_enabled,
            idempotency_ttl_us,
            max_elapsed_us,
            max_retry_after_us,
            slot_capacity: self.slot_capacity,
            retry_on: self.retry_on,
            breaker,
            budget: self.retry_budget,
        })
    }
}

impl Default for RetryConfig {
    /// The seed's `default` level.
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Largest accepted `max_attempts`: it bounds the `attempt` label of the metrics.
pub const MAX_ATTEMPTS: u32 = 1000;

/// Largest accepted duration in seconds: 2⁵³ µs (about 285 years), so that every microsecond
/// count is an exact `f64` integer.
pub const MAX_SECONDS: f64 = 9_007_199_254.740_992;

fn seconds_to_us(field: &'static str, seconds: f64) -> Result<u64, ConfigError> {
    if !seconds.is_finite() {
        return Err(ConfigError::NotFinite {
            field,
            value: seconds,
        });
    }
    if seconds < 0.0 {
        return Err(ConfigError::Negative {
            field,
            value: seconds,
        });
    }
    if seconds > MAX_SECONDS {
        return Err(ConfigError::OutOfRange {
            field,
            value: seconds,
            min: 0.0,
            max: MAX_SECONDS,
        });
    }
    Ok(libm::round(seconds * 1e6) as u64)
}

/// A config that was rejected: which field, and the value that was wrong.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_attempts` is 0: not even the first call would be made.
    ZeroAttempts,
    /// A number is NaN or infinite.
    NotFinite {
        /// The field.
        field: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// A duration is negative.
    Negative {
        /// The field.
        field: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// A number is outside its range.
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The rejected value.
        value: f64,
        /// Smallest accepted value.
        min: f64,
        /// Largest accepted value.
        max: f64,
    },
    /// `initial_delay` is larger than `max_delay`.
    InitialAboveMax {
        /// The rejected `initial_delay`.
        initial_delay: f64,
        /// The `max_delay` it exceeds.
        max_delay: f64,
    },
    /// `slot_count` is 0 while `coordination_enabled` is true.
    ZeroSlotCount,
    /// A `circuit_breaker` field is out of range.
    Breaker(BreakerError),
    /// A `retry_budget` field is out of range.
    Budget(BudgetError),
}

impl ConfigError {
    /// The name of the offending field, as written in a config file.
    pub fn field(&self) -> &'static str {
        match self {
            Self::ZeroAttempts => "max_attempts",
            Self::NotFinite { field, .. }
            | Self::Negative { field, .. }
            | Self::OutOfRange { field, .. } => field,
            Self::InitialAboveMax { .. } => "initial_delay",
            Self::ZeroSlotCount => "slot_count",
            Self::Breaker(e) => e.field(),
            Self::Budget(e) => e.field(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ZeroAttempts => f.write_str("max_attempts must be at least 1, got 0"),
            Self::NotFinite { field, value } => {
                write!(f, "{field} must be a finite number, got {value:?}")
            }
            Self::Negative { field, value } => {
                write!(f, "{field} must not be negative, got {value:?}")
            }
            Self::OutOfRange {
                field,
                value,
                min,
                max,
            } if max == f64::INFINITY => {
                write!(f, "{field} must be at least {min:?}, got {value:?}")
            }
            Self::OutOfRange {
                field,
                value,
                min,
                max,
            } => {
                write!(
                    f,
                    "{field} must be within [{min:?}, {max:?}], got {value:?}"
                )
            }
            Self::InitialAboveMax {
                initial_delay,
                max_delay,
            } => write!(
                f,
                "initial_delay must not exceed max_delay ({max_delay:?}), got {initial_delay:?}"
            ),
            Self::ZeroSlotCount => f.write_str(
                "slot_count must be at least 1 when coordination_enabled is true, got 0",
            ),
            Self::Breaker(e) => e.fmt(f),
            Self::Budget(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for ConfigError {}

/// A validated configuration: durations in integer microseconds, every field in range.
///
/// Made only by [`RetryConfig::validate`]; everything that computes a delay takes one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub(crate) max_attempts: u32,
    pub(crate) initial_delay_us: u64,
    pub(crate) max_delay_us: u64,
    pub(crate) exponential_base: f64,
    pub(crate) strategy: JitterStrategy,
    pub(crate) jitter_factor: f64,
    pub(crate) slot_count: u32,
    pub(crate) slot_width_us: u64,
    pub(crate) coordination_enabled: bool,
    pub(crate) idempotency_ttl_us: u64,
    pub(crate) max_elapsed_us: Option<u64>,
    pub(crate) max_retry_after_us: u64,
    pub(crate) slot_capacity: Option<u32>,
    pub(crate) retry_on: CategorySet,
    pub(crate) breaker: Option<BreakerPolicy>,
    pub(crate) budget: Option<BudgetConfig>,
}

impl Policy {
    /// Every call counts, the first included.
    pub const fn max_attempts(&self) -> u32 {
        self.max_attempts
    }
    /// Base delay before the first retry.
    pub const fn initial_delay_us(&self) -> u64 {
        self.initial_delay_us
    }
    /// Cap on any computed delay.
    pub const fn max_delay_us(&self) -> u64 {
        self.max_delay_us
    }
    /// The effective jitter strategy (`None` when `jitter` is off).
    pub const fn strategy(&self) -> JitterStrategy {
        self.strategy
    }
    /// Slots per coordination window.
    pub const fn slot_count(&self) -> u32 {
        self.slot_count
    }
    /// Width of one slot.
    pub const fn slot_width_us(&self) -> u64 {
        self.slot_width_us
    }
    /// Whether retries ask the coordinator for a slot.
    pub const fn coordination_enabled(&self) -> bool {
        self.coordination_enabled
    }
    /// How long a completed idempotent result is kept.
    pub const fn idempotency_ttl_us(&self) -> u64 {
        self.idempotency_ttl_us
    }
    /// Total time budget from the first call, if any.
    pub const fn max_elapsed_us(&self) -> Option<u64> {
        self.max_elapsed_us
    }
    /// Longest honoured server delay.
    pub const fn max_retry_after_us(&self) -> u64 {
        self.max_retry_after_us
    }
    /// Retries per slot per window, if limited.
    pub const fn slot_capacity(&self) -> Option<u32> {
        self.slot_capacity
    }
    /// Categories that are retried.
    pub const fn retry_on(&self) -> CategorySet {
        self.retry_on
    }
    /// The validated circuit breaker settings, if any.
    pub const fn breaker(&self) -> Option<BreakerPolicy> {
        self.breaker
    }
    /// The retry budget settings, if any.
    pub const fn budget(&self) -> Option<BudgetConfig> {
        self.budget
    }
}

/// A partial config: every field optional, for `extends` and file overrides.
///
/// `extends` names the policy this one starts from (a preset or another entry of the same file);
/// resolving names is the host's job, [`PartialRetryConfig::apply`] lays the fields over a base.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[allow(missing_docs)] // each field is the RetryConfig field of the same name
pub struct PartialRetryConfig {
    /// The policy this one inherits from.
    pub extends: Option<crate::PolicyName>,
    pub max_attempts: Option<u32>,
    pub initial_delay: Option<f64>,
    pub max_delay: Option<f64>,
    pub exponential_base: Option<f64>,
    pub jitter: Option<bool>,
    pub jitter_factor: Option<f64>,
    pub slot_count: Option<u32>,
    pub slot_width: Option<f64>,
    pub coordination_enabled: Option<bool>,
    pub idempotency_ttl: Option<f64>,
    pub strategy: Option<JitterStrategy>,
    pub max_elapsed: Option<f64>,
    pub max_retry_after: Option<f64>,
    pub slot_capacity: Option<u32>,
    pub retry_on: Option<CategorySet>,
    pub circuit_breaker: Option<BreakerConfig>,
    pub retry_budget: Option<BudgetConfig>,
}

impl PartialRetryConfig {
    /// `base` with every field this partial config sets replaced.
    pub fn apply(&self, base: RetryConfig) -> RetryConfig {
        RetryConfig {
            max_attempts: self.max_attempts.unwrap_or(base.max_attempts),
            initial_delay: self.initial_delay.unwrap_or(base.initial_delay),
            max_delay: self.max_delay.unwrap_or(base.max_delay),
            exponential_base: self.exponential_base.unwrap_or(base.exponential_base),
            jitter: self.jitter.unwrap_or(base.jitter),
            jitter_factor: self.jitter_factor.unwrap_or(base.jitter_factor),
            slot_count: self.slot_count.unwrap_or(base.slot_count),
            slot_width: self.slot_width.unwrap_or(base.slot_width),
            coordination_enabled: self
                .coordination_enabled
                .unwrap_or(base.coordination_enabled),
            idempotency_ttl: self.idempotency_ttl.unwrap_or(base.idempotency_ttl),
            strategy: self.strategy.unwrap_or(base.strategy),
            max_elapsed: self.max_elapsed.or(base.max_elapsed),
            max_retry_after: self.max_retry_after.unwrap_or(base.max_retry_after),
            slot_capacity: self.slot_capacity.or(base.slot_capacity),
            retry_on: self.retry_on.unwrap_or(base.retry_on),
            circuit_breaker: self.circuit_breaker.or(base.circuit_breaker),
            retry_budget: self.retry_budget.or(base.retry_budget),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(c: RetryConfig) -> ConfigError {
        match c.validate() {
            Err(e) => e,
            Ok(p) => panic!("accepted {p:?}"),
        }
    }

    #[test]
    fn presets_are_the_seeds_and_valid() {
        for name in RetryConfig::PRESET_NAMES {
            let c = RetryConfig::preset(name).expect("preset");
            assert!(c.validate().is_ok(), "{name}");
        }
        let p = RetryConfig::AGGRESSIVE.validate().expect("valid");
        assert_eq!(p.initial_delay_us(), 50_000);
        assert_eq!(p.max_delay_us(), 5_000_000);
        assert_eq!(p.slot_width_us(), 50_000);
        assert_eq!(p.slot_count(), 20);
        let c = RetryConfig::CONSERVATIVE;
        assert_eq!(
            (c.max_attempts, c.jitter_factor, c.idempotency_ttl),
            (2, 0.05, 7200.0)
        );
        assert_eq!(RetryConfig::preset("reckless"), None);
    }

    #[test]
    fn every_invalid_kind_names_field_and_value() {
        let d = RetryConfig::DEFAULT;
        let cases: [(RetryConfig, &str, &str); 10] = [
            (
                RetryConfig {
                    initial_delay: f64::NAN,
                    ..d
                },
                "initial_delay",
                "NaN",
            ),
            (
                RetryConfig {
                    max_delay: f64::INFINITY,
                    ..d
                },
                "max_delay",
                "inf",
            ),
            (
                RetryConfig {
                    initial_delay: -0.5,
                    ..d
                },
                "initial_delay",
                "-0.5",
            ),
            (
                RetryConfig {
                    max_attempts: 0,
                    ..d
                },
                "max_attempts",
                "0",
            ),
            (
                RetryConfig {
                    initial_delay: 20.0,
                    ..d
                },
                "initial_delay",
                "20",
            ),
            (
                RetryConfig {
                    exponential_base: 0.5,
                    ..d
                },
                "exponential_base",
                "0.5",
            ),
            (
                RetryConfig {
                    jitter_factor: 1.5,
                    ..d
                },
                "jitter_factor",
                "1.5",
            ),
            (
                RetryConfig {
                    jitter_factor: -0.1,
                    ..d
                },
                "jitter_factor",
                "-0.1",
            ),
            (RetryConfig { slot_count: 0, ..d }, "slot_count", "0"),
            (
                RetryConfig {
                    idempotency_ttl: 1e300,
                    ..d
                },
                "idempotency_ttl",
                "1e300",
            ),
        ];
        for (config, field, value) in cases {
            let e = err(config);
            assert_eq!(e.field(), field, "{e}");
            let mut buf = [0u8; 160];
            let msg = format_into(&mut buf, &e);
            assert!(msg.contains(field) && msg.contains(value), "{msg}");
        }
        // slot_count 0 is fine when coordination is off.
        let off = RetryConfig {
            slot_count: 0,
            coordination_enabled: false,
            ..d
        };
        assert!(off.validate().is_ok());
    }

    #[test]
    fn jitter_off_means_no_jitter_whatever_the_strategy() {
        let c = RetryConfig {
            jitter: false,
            strategy: JitterStrategy::Full,
            ..RetryConfig::DEFAULT
        };
        assert_eq!(
            c.validate().expect("valid").strategy(),
            JitterStrategy::None
        );
    }

    #[test]
    fn partial_config_overrides_only_what_it_sets() {
        let p = PartialRetryConfig {
            max_attempts: Some(7),
            ..Default::default()
        };
        let c = p.apply(RetryConfig::AGGRESSIVE);
        assert_eq!(c.max_attempts, 7);
        assert_eq!(c.initial_delay, 0.05);
    }

    /// Formats into a stack buffer (no alloc in this crate's tests either).
    fn format_into<'a>(buf: &'a mut [u8], e: &ConfigError) -> &'a str {
        struct W<'b>(&'b mut [u8], usize);
        impl fmt::Write for W<'_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                let end = self.1 + s.len();
                self.0
                    .get_mut(self.1..end)
                    .ok_or(fmt::Error)?
                    .copy_from_slice(s.as_bytes());
                self.1 = end;
                Ok(())
            }
        }
        let mut w = W(buf, 0);
        fmt::write(&mut w, format_args!("{e}")).expect("fits");
        let n = w.1;
        core::str::from_utf8(&buf[..n]).expect("utf8")
    }
}
