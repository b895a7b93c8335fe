//! `ricochet-core` as a `ricochet:retry@0.2.0` component (world `engine`).
//!
//! A thin adapter: it converts WIT records to core values and back, and does no math of its own —
//! every delay, decision and slot comes from `ricochet-core`, so the component and the native
//! host agree bit for bit. The `policy` resource holds the core's validated [`rc::Policy`]: the
//! config is converted and validated once, in `create`, and every later call starts from it.
//! `schedule` is the one method that uses the imports: it reads the host's clock, asks the
//! host's coordinator for a slot (falling back to the core's local slot when the coordinator is
//! unavailable; the host counts that fallback) and writes the seed's log line. The `http`
//! interface hands hosts that make their own requests (the JavaScript package) the core's
//! status table and header parsers; `probe` does nothing, for measuring a crossing.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::string::ToString;
use alloc::vec::Vec;

use ricochet_core as rc;

wit_bindgen::generate!({ path: "../../wit", world: "engine" });

use exports::ricochet::retry::retry_policy as exported;
use ricochet::retry::types as wit;
use ricochet::retry::{clock, coordination, logging};

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

// Exported only for wasm: a native cdylib cannot carry the component's `ns:pkg/iface#func`
// symbol names, and natively the crate is only type-checked (clippy) and unit-tested.
#[cfg(target_arch = "wasm32")]
export!(Component);

const CATEGORIES: [(wit::CategorySet, rc::ErrorCategory); 10] = [
    (
        wit::CategorySet::CONNECTION_ERROR,
        rc::ErrorCategory::Connection,
    ),
    (wit::CategorySet::TIMEOUT_ERROR, rc::ErrorCategory::Timeout),
    (
        wit::CategorySet::SERVICE_UNAVAILABLE_ERROR,
        rc::ErrorCategory::ServiceUnavailable,
    ),
    (
        wit::CategorySet::RATE_LIMIT_EXCEEDED_ERROR,
        rc::ErrorCategory::RateLimitExceeded,
    ),
    (
        wit::CategorySet::AUTHENTICATION_ERROR,
        rc::ErrorCategory::Authentication,
    ),
    (
        wit::CategorySet::VALIDATION_ERROR,
        rc::ErrorCategory::Validation,
    ),
    (
        wit::CategorySet::RESOURCE_NOT_FOUND_ERROR,
        rc::ErrorCategory::ResourceNotFound,
    ),
    (
        wit::CategorySet::BUSINESS_LOGIC_ERROR,
        rc::ErrorCategory::BusinessLogic,
    ),
    (
        wit::CategorySet::RATE_LIMITED,
        rc::ErrorCategory::RateLimited,
    ),
    (
        wit::CategorySet::AUTH_EXPIRED,
        rc::ErrorCategory::AuthExpired,
    ),
];

fn category(c: wit::ErrorCategory) -> rc::ErrorCategory {
    use wit::ErrorCategory as W;
    match c {
        W::ConnectionError => rc::ErrorCategory::Connection,
        W::TimeoutError => rc::ErrorCategory::Timeout,
        W::ServiceUnavailableError => rc::ErrorCategory::ServiceUnavailable,
        W::RateLimitExceededError => rc::ErrorCategory::RateLimitExceeded,
        W::AuthenticationError => rc::ErrorCategory::Authentication,
        W::ValidationError => rc::ErrorCategory::Validation,
        W::ResourceNotFoundError => rc::ErrorCategory::ResourceNotFound,
        W::BusinessLogicError => rc::ErrorCategory::BusinessLogic,
        W::RateLimited => rc::ErrorCategory::RateLimited,
        W::AuthExpired => rc::ErrorCategory::AuthExpired,
    }
}

fn config(c: &wit::RetryConfig) -> rc::RetryConfig {
    let retry_on = CATEGORIES
        .iter()
        .filter(|(flag, _)| c.retry_on.bits() & flag.bits() != 0)
        .fold(rc::CategorySet::EMPTY, |set, (_, cat)| set.with(*cat));
    rc::RetryConfig {
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
            wit::JitterStrategy::None => rc::JitterStrategy::None,
            wit::JitterStrategy::Proportional => rc::JitterStrategy::Proportional,
            wit::JitterStrategy::Full => rc::JitterStrategy::Full,
            wit::JitterStrategy::Equal => rc::JitterStrategy::Equal,
            wit::JitterStrategy::Decorrelated => rc::JitterStrategy::Decorrelated,
        },
        max_elapsed: c.max_elapsed,
        max_retry_after: c.max_retry_after,
        slot_capacity: c.slot_capacity,
        retry_on,
        circuit_breaker: c.circuit_breaker.map(|b| rc::breaker::BreakerConfig {
            failure_threshold: b.failure_threshold,
            failure_rate: b.failure_rate,
            minimum_calls: b.minimum_calls,
            window: b.window,
            cool_down: b.cool_down,
            half_open_probes: b.half_open_probes,
        }),
        retry_budget: c.retry_budget.map(|b| rc::budget::BudgetConfig {
            max_tokens: b.max_tokens,
            token_ratio: b.token_ratio,
        }),
    }
}

fn validate(c: &wit::RetryConfig) -> Result<rc::Policy, wit::ConfigError> {
    config(c).validate().map_err(|e| wit::ConfigError {
        field: e.field().to_string(),
        message: e.to_string(),
    })
}

fn failure(f: wit::Failure) -> rc::Failure {
    rc::Failure {
        category: category(f.category),
        server_delay_us: f.server_delay_us,
        token_refreshed: f.token_refreshed,
    }
}

fn state_in(s: wit::RetryState) -> rc::RetryState {
    rc::RetryState::from_parts(rc::RetryStateParts {
        seed: s.seed,
        started_us: s.started_us,
        prev_delay_us: s.prev_delay_us,
        calls: s.calls,
        auth_retried: s.auth_retried,
    })
}

fn state_out(s: &rc::RetryState) -> wit::RetryState {
    let p = s.to_parts();
    wit::RetryState {
        seed: p.seed,
        started_us: p.started_us,
        prev_delay_us: p.prev_delay_us,
        calls: p.calls,
        auth_retried: p.auth_retried,
    }
}

fn reason(r: rc::GiveUpReason) -> wit::GiveUpReason {
    use rc::GiveUpReason as R;
    match r {
        R::Exhausted => wit::GiveUpReason::Exhausted,
        R::NonRetryable => wit::GiveUpReason::NonRetryable,
        R::Deadline => wit::GiveUpReason::Deadline,
        R::CircuitOpen => wit::GiveUpReason::CircuitOpen,
        R::RetryAfterTooLong => wit::GiveUpReason::RetryAfterTooLong,
        // `Budget` and any reason a newer core adds.
        _ => wit::GiveUpReason::Budget,
    }
}

fn request_in(r: wit::SlotRequest) -> rc::SlotRequest {
    rc::SlotRequest {
        earliest_us: r.earliest_us,
        window: r.window,
        retry: r.retry,
        moves: r.moves,
        // The WIT record does not carry the call's deadline.
        latest_us: None,
    }
}

/// A slot from the host's coordinator — the same steps as the native host's `schedule_retry`:
/// ask for the window holding now + delay, let the core resolve the ticket, move to the next
/// window while one is full. The host bounds all acquisitions of this call by one deadline and
/// counts a fallback when one fails. `latest_us` is the call's deadline on the host's clock,
/// which is the coordinator's: a slot past it gives up with `deadline`.
fn coordinate(
    policy: &rc::Policy,
    service: &str,
    operation: &str,
    seed: u64,
    request: rc::SlotRequest,
    delay_us: u64,
) -> Result<wit::ScheduleOutcome, wit::CoordinationError> {
    let (retry, latest_us) = (request.retry, request.latest_us);
    let window_us = policy.window_us();
    let mut grant = coordination::acquire_slot(service, operation, delay_us, window_us)?;
    let mut moves = 0;
    loop {
        let mut request = policy.slot_request_within(grant.earliest_us, latest_us, retry);
        if request.window != grant.window {
            return Err(wit::CoordinationError::Backend(
                "coordinator answered for another window".to_string(),
            ));
        }
        request.moves = moves;
        match policy.resolve_ticket(&request, grant.ticket, seed) {
            rc::SlotResolution::FireAt { fire_at_us, slot } => {
                return Ok(wit::ScheduleOutcome::Retry(wit::ScheduledRetry {
                    delay_us: fire_at_us.saturating_sub(grant.now_us),
                    slot,
                    fallback: false,
                }));
            }
            rc::SlotResolution::NextWindow(next) => {
                moves = next.moves;
                let delay_us = next.earliest_us.saturating_sub(grant.now_us);
                grant = coordination::acquire_slot(service, operation, delay_us, window_us)?;
            }
            rc::SlotResolution::GiveUp(r) => return Ok(wit::ScheduleOutcome::GiveUp(reason(r))),
        }
    }
}

/// The core's seeded local slot, when the coordinator did not answer.
fn local_slot(
    policy: &rc::Policy,
    seed: u64,
    decided: rc::SlotRequest,
    delay_us: u64,
) -> wit::ScheduleOutcome {
    let retry = decided.retry;
    let now_us = clock::now_us();
    let request =
        policy.slot_request_within(now_us.saturating_add(delay_us), decided.latest_us, retry);
    let ticket = policy.fallback_ticket(seed, retry);
    let (delay_us, slot) = match policy.resolve_ticket(&request, ticket, seed) {
        rc::SlotResolution::FireAt { fire_at_us, slot } => {
            (fire_at_us.saturating_sub(now_us), slot)
        }
        rc::SlotResolution::GiveUp(r) => return wit::ScheduleOutcome::GiveUp(reason(r)),
        // A fallback ticket is below slot_count, so always within capacity.
        rc::SlotResolution::NextWindow(_) => (delay_us, ticket as u32),
    };
    wit::ScheduleOutcome::Retry(wit::ScheduledRetry {
        delay_us,
        slot,
        fallback: true,
    })
}

fn decision_out(decision: rc::Decision) -> wit::Decision {
    match decision {
        rc::Decision::Retry { delay_us, .. } => wit::Decision::Retry(delay_us),
        rc::Decision::GiveUp { reason: r } => wit::Decision::GiveUp(reason(r)),
    }
}

fn category_out(c: rc::ErrorCategory) -> wit::ErrorCategory {
    use wit::ErrorCategory as W;
    match c {
        rc::ErrorCategory::Connection => W::ConnectionError,
        rc::ErrorCategory::Timeout => W::TimeoutError,
        rc::ErrorCategory::ServiceUnavailable => W::ServiceUnavailableError,
        rc::ErrorCategory::RateLimitExceeded => W::RateLimitExceededError,
        rc::ErrorCategory::Authentication => W::AuthenticationError,
        rc::ErrorCategory::Validation => W::ValidationError,
        rc::ErrorCategory::ResourceNotFound => W::ResourceNotFoundError,
        rc::ErrorCategory::BusinessLogic => W::BusinessLogicError,
        rc::ErrorCategory::RateLimited => W::RateLimited,
        // AuthExpired and any category a newer core adds.
        _ => W::AuthExpired,
    }
}

fn config_out(c: &rc::RetryConfig) -> wit::RetryConfig {
    let retry_on = CATEGORIES
        .iter()
        .filter(|(_, cat)| c.retry_on.contains(*cat))
        .fold(wit::CategorySet::empty(), |set, (flag, _)| set | *flag);
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
            rc::JitterStrategy::Full => wit::JitterStrategy::Full,
            rc::JitterStrategy::Equal => wit::JitterStrategy::Equal,
            rc::JitterStrategy::Decorrelated => wit::JitterStrategy::Decorrelated,
            rc::JitterStrategy::Proportional => wit::JitterStrategy::Proportional,
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

/// The `policy` resource: a config validated once.
struct Policy {
    policy: rc::Policy,
}

struct Component;

impl exported::Guest for Component {
    type Policy = Policy;
}

impl exported::GuestPolicy for Policy {
    fn create(c: wit::RetryConfig) -> Result<exported::Policy, wit::ConfigError> {
        Ok(exported::Policy::new(Policy {
            policy: validate(&c)?,
        }))
    }

    fn next_delay(&self, retry: u32, seed: u64, prev_delay_us: u64) -> u64 {
        self.policy.next_delay(retry, seed, prev_delay_us).delay_us
    }

    fn plan(&self, seed: u64) -> Vec<wit::PlannedRetry> {
        self.policy
            .plan(seed)
            .map(|r| wit::PlannedRetry {
                retry: r.retry,
                base_delay_us: r.base_delay_us,
                delay_us: r.delay_us,
            })
            .collect()
    }

    fn decide(&self, state: wit::RetryState, f: wit::Failure, now_us: u64) -> wit::Decision {
        let mut st = state_in(state);
        decision_out(st.on_failure(&self.policy, failure(f), now_us, rc::Guards::none()))
    }

    fn decide_guarded(
        &self,
        state: wit::RetryState,
        f: wit::Failure,
        now_us: u64,
        guards: wit::Guards,
    ) -> exported::GuardedDecision {
        let policy = &self.policy;
        let mut breaker = policy.breaker().map(|p| {
            guards
                .breaker
                .as_deref()
                .and_then(rc::breaker::CircuitBreaker::from_bytes)
                .unwrap_or_else(|| rc::breaker::CircuitBreaker::new(p))
        });
        let mut budget = policy.budget().and_then(|b| {
            guards
                .budget
                .as_deref()
                .and_then(rc::budget::RetryBudget::from_bytes)
                .or_else(|| rc::budget::RetryBudget::new(b).ok())
        });
        let mut st = state_in(state);
        let decision = st.on_failure(
            policy,
            failure(f),
            now_us,
            rc::Guards {
                breaker: breaker.as_mut(),
                budget: budget.as_mut(),
            },
        );
        exported::GuardedDecision {
            guards: wit::Guards {
                breaker: breaker.map(|b| b.to_bytes().to_vec()),
                budget: budget.map(|b| b.to_bytes().to_vec()),
            },
            decision: decision_out(decision),
        }
    }

    fn resolve_ticket(&self, request: wit::SlotRequest, ticket: u64, seed: u64) -> Option<u64> {
        match self
            .policy
            .resolve_ticket(&request_in(request), ticket, seed)
        {
            rc::SlotResolution::FireAt { fire_at_us, .. } => Some(fire_at_us),
            _ => None,
        }
    }

    fn schedule(
        &self,
        service: alloc::string::String,
        operation: alloc::string::String,
        state: wit::RetryState,
        f: wit::Failure,
    ) -> exported::Scheduled {
        let policy = &self.policy;
        let now_us = clock::now_us();
        let mut st = state_in(state);
        let failed = failure(f);
        let attempt = st.calls() + 1;
        let decision = st.on_failure(policy, failed, now_us, rc::Guards::none());
        let log = |level, delay_us: u64| {
            logging::log(&wit::LogRecord {
                level,
                service: service.clone(),
                operation: operation.clone(),
                attempt,
                delay: delay_us as f64 / 1e6,
                error: Some(failed.category.name().to_string()),
                trace_id: None,
            })
        };
        let outcome = match decision {
            rc::Decision::GiveUp { reason: r } => {
                log(wit::LogLevel::Error, 0);
                wit::ScheduleOutcome::GiveUp(reason(r))
            }
            rc::Decision::Retry {
                delay_us,
                slot_request: None,
            } => {
                log(wit::LogLevel::Info, delay_us);
                wit::ScheduleOutcome::Retry(wit::ScheduledRetry {
                    delay_us,
                    slot: 0,
                    fallback: false,
                })
            }
            rc::Decision::Retry {
                delay_us,
                slot_request: Some(request),
            } => {
                let seed = st.seed();
                let placed = coordinate(policy, &service, &operation, seed, request, delay_us)
                    .unwrap_or_else(|_| local_slot(policy, seed, request, delay_us));
                match &placed {
                    wit::ScheduleOutcome::Retry(r) => log(wit::LogLevel::Info, r.delay_us),
                    wit::ScheduleOutcome::GiveUp(_) => log(wit::LogLevel::Error, 0),
                }
                placed
            }
        };
        exported::Scheduled {
            state: state_out(&st),
            outcome,
        }
    }
}

impl exports::ricochet::retry::http::Guest for Component {
    fn classify_response(
        status: u16,
        retry_after: Option<alloc::string::String>,
        ratelimit: Option<alloc::string::String>,
        x_ratelimit_reset: Option<alloc::string::String>,
        now_us: u64,
    ) -> Option<wit::Failure> {
        let headers = rc::http::DelayHeaders {
            retry_after: retry_after.as_deref(),
            ratelimit: ratelimit.as_deref(),
            x_ratelimit_reset: x_ratelimit_reset.as_deref(),
        };
        rc::http::classify_response(status, headers, now_us).map(|f| wit::Failure {
            category: category_out(f.category),
            server_delay_us: f.server_delay_us,
            token_refreshed: f.token_refreshed,
        })
    }

    fn server_delay(
        header: alloc::string::String,
        value: alloc::string::String,
        now_us: u64,
    ) -> Option<u64> {
        let header = rc::retry_after::ServerDelayHeader::from_name(&header)?;
        rc::retry_after::parse_server_delay(header, &value, now_us)
    }

    fn preset(name: alloc::string::String) -> Option<wit::RetryConfig> {
        rc::RetryConfig::preset(&name).map(|c| config_out(&c))
    }
}

impl exports::ricochet::retry::probe::Guest for Component {
    fn empty() {}
}
