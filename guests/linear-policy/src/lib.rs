//! A third-party policy for the `ricochet:retry@0.2.0` world: linear backoff, written without
//! `ricochet-core`.
//!
//! It exists to prove that the host runs *any* conforming component, not only the core wrapped
//! in WIT: nothing here is shared with the core but the WIT file. The delay before retry *n* is
//! `min(max_delay, initial_delay * n)`; with `jitter` on it is drawn uniformly from the upper
//! half of that (`d/2 + U(0, d/2)`), from its own hash of `(seed, n)`. It honours `retry_on`,
//! `max_attempts`, a server's `Retry-After` (capped by `max_retry_after`), `max_elapsed` and the
//! one retry after a token refresh, and asks the host's coordinator for a slot when
//! `coordination_enabled`. It has no circuit breaker or retry budget: guard state passes through
//! untouched. Its `schedule` reports a give-up in the seed's `retry_failure_total` and every
//! call in a metric of its own, `linear_policy_schedules_total`, which a ricochet host ignores
//! (it only maps the seed's names) — as a third-party policy's extra metrics would be.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

wit_bindgen::generate!({ path: "../../wit", world: "policy" });

use exports::ricochet::retry::retry_policy as exported;
use ricochet::retry::types as wit;
use ricochet::retry::{clock, coordination, logging, metrics};

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

struct LinearPolicy;

#[cfg(target_arch = "wasm32")]
export!(LinearPolicy);

impl exported::Guest for LinearPolicy {
    /// The `policy` resource: a config checked once, in `create`.
    type Policy = Linear;
}

/// A config checked and converted to microseconds.
struct Linear {
    max_attempts: u32,
    step_us: u64,
    max_us: u64,
    jitter: bool,
    slot_count: u64,
    slot_width_us: u64,
    coordinated: bool,
    max_elapsed_us: Option<u64>,
    max_retry_after_us: u64,
    retry_on: wit::CategorySet,
}

fn reject(field: &str, message: String) -> wit::ConfigError {
    wit::ConfigError {
        field: field.to_string(),
        message,
    }
}

/// Seconds to microseconds, refusing what is not a finite, non-negative number.
fn micros(field: &str, seconds: f64) -> Result<u64, wit::ConfigError> {
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(reject(
            field,
            format!("{field} must be a finite number of seconds >= 0, got {seconds}"),
        ));
    }
    // `as` saturates: anything beyond u64::MAX µs is "forever".
    Ok((seconds * 1_000_000.0) as u64)
}

impl Linear {
    fn new(c: &wit::RetryConfig) -> Result<Self, wit::ConfigError> {
        if c.max_attempts == 0 {
            return Err(reject(
                "max_attempts",
                "max_attempts must be at least 1, got 0".to_string(),
            ));
        }
        let step_us = micros("initial_delay", c.initial_delay)?;
        let max_us = micros("max_delay", c.max_delay)?;
        if step_us > max_us {
            return Err(reject(
                "initial_delay",
                format!(
                    "initial_delay must not exceed max_delay ({}), got {}",
                    c.max_delay, c.initial_delay
                ),
            ));
        }
        let slot_width_us = micros("slot_width", c.slot_width)?;
        if c.coordination_enabled && (c.slot_count == 0 || slot_width_us == 0) {
            return Err(reject(
                "slot_count",
                format!(
                    "coordination needs slot_count >= 1 and slot_width > 0, got {} x {}",
                    c.slot_count, c.slot_width
                ),
            ));
        }
        let max_elapsed_us = match c.max_elapsed {
            Some(s) => Some(micros("max_elapsed", s)?),
            None => None,
        };
        Ok(Self {
            max_attempts: c.max_attempts,
            step_us,
            max_us,
            jitter: c.jitter,
            slot_count: u64::from(c.slot_count.max(1)),
            slot_width_us,
            coordinated: c.coordination_enabled,
            max_elapsed_us,
            max_retry_after_us: micros("max_retry_after", c.max_retry_after)?,
            retry_on: c.retry_on,
        })
    }

    /// The base delay before retry `retry`: `initial_delay * retry`, capped.
    fn base_us(&self, retry: u32) -> u64 {
        self.step_us
            .saturating_mul(u64::from(retry))
            .min(self.max_us)
    }

    /// The delay before retry `retry`: the base, or a draw from its upper half.
    fn delay_us(&self, retry: u32, seed: u64) -> u64 {
        let base = self.base_us(retry);
        if !self.jitter || base < 2 {
            return base;
        }
        let half = base / 2;
        half + draw(seed, retry) % (base - half + 1)
    }

    fn window_us(&self) -> u64 {
        self.slot_count.saturating_mul(self.slot_width_us).max(1)
    }

    fn retryable(&self, category: wit::ErrorCategory) -> bool {
        use wit::{CategorySet as S, ErrorCategory as C};
        let flag = match category {
            C::ConnectionError => S::CONNECTION_ERROR,
            C::TimeoutError => S::TIMEOUT_ERROR,
            C::ServiceUnavailableError => S::SERVICE_UNAVAILABLE_ERROR,
            C::RateLimitExceededError => S::RATE_LIMIT_EXCEEDED_ERROR,
            C::AuthenticationError => S::AUTHENTICATION_ERROR,
            C::ValidationError => S::VALIDATION_ERROR,
            C::ResourceNotFoundError => S::RESOURCE_NOT_FOUND_ERROR,
            C::BusinessLogicError => S::BUSINESS_LOGIC_ERROR,
            C::RateLimited => return true,
            C::AuthExpired => S::AUTH_EXPIRED,
        };
        self.retry_on.bits() & flag.bits() != 0
    }

    /// One decision; `state` is updated in place.
    fn on_failure(
        &self,
        state: &mut wit::RetryState,
        failure: &wit::Failure,
        now_us: u64,
    ) -> wit::Decision {
        state.calls = state.calls.saturating_add(1);
        let give_up = wit::Decision::GiveUp;
        let retryable = match failure.category {
            wit::ErrorCategory::AuthExpired => failure.token_refreshed && !state.auth_retried,
            other => self.retryable(other),
        };
        if !retryable {
            return give_up(wit::GiveUpReason::NonRetryable);
        }
        if state.calls >= self.max_attempts {
            return give_up(wit::GiveUpReason::Exhausted);
        }
        let retry = state.calls;
        let mut delay_us = self.delay_us(retry, state.seed);
        if let Some(server_us) = failure.server_delay_us {
            if server_us > self.max_retry_after_us {
                return give_up(wit::GiveUpReason::RetryAfterTooLong);
            }
            delay_us = delay_us.max(server_us);
        }
        let earliest_us = now_us.saturating_add(delay_us);
        if let Some(limit) = self.max_elapsed_us {
            if earliest_us > state.started_us.saturating_add(limit) {
                return give_up(wit::GiveUpReason::Deadline);
            }
        }
        if failure.category == wit::ErrorCategory::AuthExpired {
            state.auth_retried = true;
        }
        state.prev_delay_us = delay_us;
        wit::Decision::Retry(delay_us)
    }

    /// Ticket `k` fires `k mod slot_count` slots after the earliest time.
    fn fire_at_us(&self, earliest_us: u64, ticket: u64) -> u64 {
        earliest_us.saturating_add((ticket % self.slot_count).saturating_mul(self.slot_width_us))
    }
}

/// 64 well-mixed bits from `(seed, retry)`: the MurmurHash3 64-bit finaliser of their sum.
fn draw(seed: u64, retry: u32) -> u64 {
    let mut x = seed ^ (u64::from(retry).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    x = x.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    x ^ (x >> 33)
}

fn reason_name(r: wit::GiveUpReason) -> &'static str {
    use wit::GiveUpReason as R;
    match r {
        R::Exhausted => "exhausted",
        R::NonRetryable => "non_retryable",
        R::Deadline => "deadline",
        R::CircuitOpen => "circuit_open",
        R::Budget => "budget",
        R::RetryAfterTooLong => "retry_after_too_long",
    }
}

fn category_name(c: wit::ErrorCategory) -> &'static str {
    use wit::ErrorCategory as C;
    match c {
        C::ConnectionError => "ConnectionError",
        C::TimeoutError => "TimeoutError",
        C::ServiceUnavailableError => "ServiceUnavailableError",
        C::RateLimitExceededError => "RateLimitExceededError",
        C::AuthenticationError => "AuthenticationError",
        C::ValidationError => "ValidationError",
        C::ResourceNotFoundError => "ResourceNotFoundError",
        C::BusinessLogicError => "BusinessLogicError",
        C::RateLimited => "RateLimited",
        C::AuthExpired => "AuthExpired",
    }
}

impl exported::GuestPolicy for Linear {
    fn create(config: wit::RetryConfig) -> Result<exported::Policy, wit::ConfigError> {
        Ok(exported::Policy::new(Linear::new(&config)?))
    }

    fn next_delay(&self, retry: u32, seed: u64, _prev_delay_us: u64) -> u64 {
        self.delay_us(retry, seed)
    }

    fn plan(&self, seed: u64) -> Vec<wit::PlannedRetry> {
        (1..self.max_attempts)
            .map(|retry| wit::PlannedRetry {
                retry,
                base_delay_us: self.base_us(retry),
                delay_us: self.delay_us(retry, seed),
            })
            .collect()
    }

    /// The host keeps the state (the core's bookkeeping); this policy's copy of it is dropped.
    fn decide(
        &self,
        mut state: wit::RetryState,
        failure: wit::Failure,
        now_us: u64,
    ) -> wit::Decision {
        self.on_failure(&mut state, &failure, now_us)
    }

    /// No breaker, no budget: the guards pass through untouched.
    fn decide_guarded(
        &self,
        mut state: wit::RetryState,
        failure: wit::Failure,
        now_us: u64,
        guards: wit::Guards,
    ) -> exported::GuardedDecision {
        let decision = self.on_failure(&mut state, &failure, now_us);
        exported::GuardedDecision { guards, decision }
    }

    fn resolve_ticket(&self, request: wit::SlotRequest, ticket: u64, _seed: u64) -> Option<u64> {
        Some(self.fire_at_us(request.earliest_us, ticket))
    }

    fn schedule(
        &self,
        service: String,
        operation: String,
        mut state: wit::RetryState,
        failure: wit::Failure,
    ) -> exported::Scheduled {
        let linear = self;
        let attempt = state.calls + 1;
        let decision = linear.on_failure(&mut state, &failure, clock::now_us());
        let outcome = match decision {
            wit::Decision::GiveUp(reason) => wit::ScheduleOutcome::GiveUp(reason),
            wit::Decision::Retry(delay_us) => {
                let placed = if !linear.coordinated {
                    Ok((delay_us, 0))
                } else {
                    coordination::acquire_slot(&service, &operation, delay_us, linear.window_us())
                        .map(|grant| {
                            let fire_at = linear.fire_at_us(grant.earliest_us, grant.ticket);
                            (
                                fire_at.saturating_sub(grant.now_us),
                                (grant.ticket % linear.slot_count) as u32,
                            )
                        })
                };
                wit::ScheduleOutcome::Retry(match placed {
                    Ok((delay_us, slot)) => wit::ScheduledRetry {
                        delay_us,
                        slot,
                        fallback: false,
                    },
                    // No coordinator: a slot drawn from the seed, on the local clock.
                    Err(_) => {
                        // The retry this is: the state counts the failed call already.
                        let ticket = draw(state.seed, state.calls);
                        wit::ScheduledRetry {
                            delay_us: linear.fire_at_us(delay_us, ticket),
                            slot: (ticket % linear.slot_count) as u32,
                            fallback: true,
                        }
                    }
                })
            }
        };
        let label = |name: &str, value: &str| wit::Label {
            name: name.to_string(),
            value: value.to_string(),
        };
        metrics::counter_add(
            "linear_policy_schedules_total",
            &[label("policy", "linear")],
            1,
        );
        if let wit::ScheduleOutcome::GiveUp(reason) = &outcome {
            metrics::counter_add(
                "retry_failure_total",
                &[
                    label("service", &service),
                    label("operation", &operation),
                    label("error_type", reason_name(*reason)),
                ],
                1,
            );
        }
        let (level, delay_us) = match &outcome {
            wit::ScheduleOutcome::Retry(r) => (wit::LogLevel::Info, r.delay_us),
            wit::ScheduleOutcome::GiveUp(_) => (wit::LogLevel::Error, 0),
        };
        logging::log(&wit::LogRecord {
            level,
            service,
            operation,
            attempt,
            delay: delay_us as f64 / 1e6,
            error: Some(category_name(failure.category).to_string()),
            trace_id: None,
        });
        exported::Scheduled { state, outcome }
    }
}
