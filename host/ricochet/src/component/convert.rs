//! Core values to WIT records and back: the host's half of the adapter that the policy guest
//! implements on the other side. Lossless in both directions for every value the core produces.

use ricochet_core as rc;

use super::wit;

const CATEGORY_FLAGS: [(rc::ErrorCategory, wit::CategorySet); 10] = [
    (
        rc::ErrorCategory::Connection,
        wit::CategorySet::CONNECTION_ERROR,
    ),
    (rc::ErrorCategory::Timeout, wit::CategorySet::TIMEOUT_ERROR),
    (
        rc::ErrorCategory::ServiceUnavailable,
        wit::CategorySet::SERVICE_UNAVAILABLE_ERROR,
    ),
    (
        rc::ErrorCategory::RateLimitExceeded,
        wit::CategorySet::RATE_LIMIT_EXCEEDED_ERROR,
    ),
    (
        rc::ErrorCategory::Authentication,
        wit::CategorySet::AUTHENTICATION_ERROR,
    ),
    (
        rc::ErrorCategory::Validation,
        wit::CategorySet::VALIDATION_ERROR,
    ),
    (
        rc::ErrorCategory::ResourceNotFound,
        wit::CategorySet::RESOURCE_NOT_FOUND_ERROR,
    ),
    (
        rc::ErrorCategory::BusinessLogic,
        wit::CategorySet::BUSINESS_LOGIC_ERROR,
    ),
    (
        rc::ErrorCategory::RateLimited,
        wit::CategorySet::RATE_LIMITED,
    ),
    (
        rc::ErrorCategory::AuthExpired,
        wit::CategorySet::AUTH_EXPIRED,
    ),
];

/// A core config as the WIT record.
pub fn to_wit(c: &rc::RetryConfig) -> wit::RetryConfig {
    let retry_on = CATEGORY_FLAGS
        .iter()
        .filter(|(cat, _)| c.retry_on.contains(*cat))
        .fold(wit::CategorySet::empty(), |set, (_, flag)| set | *flag);
    wit::RetryConfig {
        max_attempts: c.max_attempts,
        initial_delay: c.initial_delay,
        max_delay: c.max_delay,
        exponential_base: c.exponential_base,
        jitter: c.jitter,
        jitter_factor: c.jitter_factor,
        slot_count: c.slot_count,
        slot_width: c.slot_width,
        coordination_enabled: c.coordination_enabled,
        idempotency_ttl: c.idempotency_ttl,
        strategy: match c.strategy {
            rc::JitterStrategy::None => wit::JitterStrategy::None,
            rc::JitterStrategy::Proportional => wit::JitterStrategy::Proportional,
            rc::JitterStrategy::Full => wit::JitterStrategy::Full,
            rc::JitterStrategy::Equal => wit::JitterStrategy::Equal,
            rc::JitterStrategy::Decorrelated => wit::JitterStrategy::Decorrelated,
        },
        max_elapsed: c.max_elapsed,
        max_retry_after: c.max_retry_after,
        slot_capacity: c.slot_capacity,
        retry_on,
        circuit_breaker: c.circuit_breaker.map(|b| wit::BreakerConfig {
            failure_threshold: b.failure_threshold,
            failure_rate: b.failure_rate,
            minimum_calls: b.minimum_calls,
            window: b.window,
            cool_down: b.cool_down,
            half_open_probes: b.half_open_probes,
        }),
        retry_budget: c.retry_budget.map(|b| wit::BudgetConfig {
            max_tokens: b.max_tokens,
            token_ratio: b.token_ratio,
        }),
    }
}

/// A core category as the WIT enum.
pub fn category_to_wit(c: rc::ErrorCategory) -> wit::ErrorCategory {
    use rc::ErrorCategory as C;
    match c {
        C::Connection => wit::ErrorCategory::ConnectionError,
        C::Timeout => wit::ErrorCategory::TimeoutError,
        C::ServiceUnavailable => wit::ErrorCategory::ServiceUnavailableError,
        C::RateLimitExceeded => wit::ErrorCategory::RateLimitExceededError,
        C::Authentication => wit::ErrorCategory::AuthenticationError,
        C::Validation => wit::ErrorCategory::ValidationError,
        C::ResourceNotFound => wit::ErrorCategory::ResourceNotFoundError,
        C::BusinessLogic => wit::ErrorCategory::BusinessLogicError,
        C::RateLimited => wit::ErrorCategory::RateLimited,
        // AuthExpired and any category a newer core adds.
        _ => wit::ErrorCategory::AuthExpired,
    }
}

/// A WIT give-up reason as the core's.
pub fn reason_from_wit(r: wit::GiveUpReason) -> rc::GiveUpReason {
    match r {
        wit::GiveUpReason::Exhausted => rc::GiveUpReason::Exhausted,
        wit::GiveUpReason::NonRetryable => rc::GiveUpReason::NonRetryable,
        wit::GiveUpReason::Deadline => rc::GiveUpReason::Deadline,
        wit::GiveUpReason::CircuitOpen => rc::GiveUpReason::CircuitOpen,
        wit::GiveUpReason::Budget => rc::GiveUpReason::Budget,
        wit::GiveUpReason::RetryAfterTooLong => rc::GiveUpReason::RetryAfterTooLong,
    }
}

/// A core retry state as the WIT record.
pub fn state_to_wit(s: &rc::RetryState) -> wit::RetryState {
    let p = s.to_parts();
    wit::RetryState {
        seed: p.seed,
        started_us: p.started_us,
        prev_delay_us: p.prev_delay_us,
        calls: p.calls,
        auth_retried: p.auth_retried,
    }
}

/// A WIT retry state as the core's.
pub fn state_from_wit(s: &wit::RetryState) -> rc::RetryState {
    rc::RetryState::from_parts(rc::RetryStateParts {
        seed: s.seed,
        started_us: s.started_us,
        prev_delay_us: s.prev_delay_us,
        calls: s.calls,
        auth_retried: s.auth_retried,
    })
}

/// A core failure as the WIT record.
pub fn failure_to_wit(f: rc::Failure) -> wit::Failure {
    wit::Failure {
        category: category_to_wit(f.category),
        server_delay_us: f.server_delay_us,
        token_refreshed: f.token_refreshed,
    }
}

/// A WIT decision as the core's, for a call in `before` (not counting this failure yet) that
/// failed at `now_us`: a retry's slot request is the core's rule for `policy`, not the guest's.
pub fn decision_from_wit(
    d: wit::Decision,
    policy: &rc::Policy,
    before: &rc::RetryState,
    now_us: u64,
) -> rc::Decision {
    match d {
        wit::Decision::Retry(delay_us) => before.retry_after(policy, now_us, delay_us),
        wit::Decision::GiveUp(reason) => rc::Decision::GiveUp {
            reason: reason_from_wit(reason),
        },
    }
}
