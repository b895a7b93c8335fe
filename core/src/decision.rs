//! Decisions: after an attempt fails, retry after X or give up because Y.
//!
//! A [`RetryState`] is the whole memory of one logical call (≤ 64 bytes, `Copy`): the seed, when
//! it started, how many calls were made, the previous delay. The host reports each failure with
//! [`RetryState::on_failure`] and gets a [`Decision`] back; it reports success with
//! [`RetryState::on_success`]. Shared guards — a circuit breaker and a retry budget — are passed
//! in by reference, so one breaker or budget can serve every call of a service.
//!
//! Checks, in order: the category (non-retryable → give up; `AuthExpired` only once, only after a
//! token refresh), the attempt limit, the server's delay (longer than `max_retry_after` → give
//! up; otherwise it replaces a shorter computed delay, and jitter never shortens it), the total
//! deadline, the circuit breaker, the retry budget. A coordinated retry carries the deadline in
//! its [`SlotRequest`], so the slot it is given is checked against it too
//! ([`Policy::resolve_ticket`]).
//!
//! # What the guards are told
//!
//! A failure in a category the policy retries (or would retry, like `AuthExpired` before a
//! refresh) counts against the service: the breaker records a failure and the budget spends a
//! token. Any other failure — validation, not found, a business rule — is an answer: it proves
//! the dependency is up but says nothing more about its health, so it is neither a failure nor a
//! success. Only one thing changes: a half-open breaker gets its probe back
//! ([`CircuitBreaker::release`]), as resilience4j's ignored exceptions release their
//! permission, so the next call probes instead of being turned away for a whole cool-down.

use crate::breaker::{BreakerState, CircuitBreaker};
use crate::budget::RetryBudget;
use crate::category::ErrorCategory;
use crate::config::Policy;
use crate::slots::SlotRequest;

/// What went wrong in one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The category of the error.
    pub category: ErrorCategory,
    /// The server's requested delay (`Retry-After` and friends), if it sent one.
    pub server_delay_us: Option<u64>,
    /// Whether the host refreshed the credentials after this failure (for `AuthExpired`).
    pub token_refreshed: bool,
}

impl Failure {
    /// A failure of `category` with no server delay and no token refresh.
    pub const fn new(category: ErrorCategory) -> Self {
        Self {
            category,
            server_delay_us: None,
            token_refreshed: false,
        }
    }

    /// The same failure with the server's requested delay.
    #[must_use]
    pub const fn with_server_delay_us(mut self, delay_us: u64) -> Self {
        self.server_delay_us = Some(delay_us);
        self
    }

    /// The same failure, noting that the host refreshed the token.
    #[must_use]
    pub const fn with_token_refreshed(mut self) -> Self {
        self.token_refreshed = true;
        self
    }
}

/// Why a call stops retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// `max_attempts` calls were made.
    Exhausted,
    /// The error's category is not retried.
    NonRetryable,
    /// The next retry would fire (or, coordinated, its slot would) past `max_elapsed`, or no
    /// time is left for another attempt.
    Deadline,
    /// The circuit breaker is open and stays open past the retry's fire time.
    CircuitOpen,
    /// The retry budget is spent, or no coordination window had room.
    Budget,
    /// The server asked for a longer wait than `max_retry_after`.
    RetryAfterTooLong,
}

impl GiveUpReason {
    /// Every reason.
    pub const ALL: [GiveUpReason; 6] = [
        Self::Exhausted,
        Self::NonRetryable,
        Self::Deadline,
        Self::CircuitOpen,
        Self::Budget,
        Self::RetryAfterTooLong,
    ];

    /// The snake_case name used in logs, metrics and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Exhausted => "exhausted",
            Self::NonRetryable => "non_retryable",
            Self::Deadline => "deadline",
            Self::CircuitOpen => "circuit_open",
            Self::Budget => "budget",
            Self::RetryAfterTooLong => "retry_after_too_long",
        }
    }
}

impl core::fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Retry after `delay_us`; when coordinated, first ask for a slot with `slot_request`
    /// (which carries the call's deadline: the slot may still give up with `Deadline`).
    Retry {
        /// The backoff delay (or the server's, when longer).
        delay_us: u64,
        /// The coordinator request, when `coordination_enabled`.
        slot_request: Option<SlotRequest>,
    },
    /// Stop retrying.
    GiveUp {
        /// Why.
        reason: GiveUpReason,
    },
}

/// Shared guards consulted by a decision; either may be absent.
#[derive(Debug, Default)]
pub struct Guards<'a> {
    /// The service's circuit breaker.
    pub breaker: Option<&'a mut CircuitBreaker>,
    /// The service's retry budget.
    pub budget: Option<&'a mut RetryBudget>,
}

impl Guards<'_> {
    /// No breaker, no budget.
    pub const fn none() -> Self {
        Self {
            breaker: None,
            budget: None,
        }
    }
}

/// The state of one logical call across its attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryState {
    seed: u64,
    started_us: u64,
    prev_delay_us: u64,
    calls: u32,
    auth_retried: bool,
}

const _: () = assert!(core::mem::size_of::<RetryState>() <= 64);

impl RetryState {
    /// A call that starts at `started_us` with jitter seed `seed`.
    pub const fn new(seed: u64, started_us: u64) -> Self {
        Self {
            seed,
            started_us,
            prev_delay_us: 0,
            calls: 0,
            auth_retried: false,
        }
    }

    /// The seed of this call's draws.
    pub const fn seed(&self) -> u64 {
        self.seed
    }

    /// Calls made and reported so far.
    pub const fn calls(&self) -> u32 {
        self.calls
    }

    /// When the call started.
    pub const fn started_us(&self) -> u64 {
        self.started_us
    }

    /// Reports a successful attempt (feeds the breaker and the budget).
    pub fn on_success(&mut self, now_us: u64, guards: Guards<'_>) {
        self.calls = self.calls.saturating_add(1);
        if let Some(breaker) = guards.breaker {
            breaker.record(true, now_us);
        }
        if let Some(budget) = guards.budget {
            budget.on_success();
        }
    }

    /// How long the call may still run at `now_us`: `max_elapsed` after it started, less what
    /// has passed (0 once the deadline is reached); `None` when the policy sets no deadline.
    ///
    /// A host bounds each attempt (and anything else it waits for, such as a token refresh) by
    /// this, so a call ends within `max_elapsed` however long an attempt hangs.
    pub fn time_left_us(&self, policy: &Policy, now_us: u64) -> Option<u64> {
        policy.max_elapsed_us.map(|max_us| {
            self.started_us
                .saturating_add(max_us)
                .saturating_sub(now_us)
        })
    }

    /// Whether an `AuthExpired` failure of the next call could be retried after a token
    /// refresh: the one auth retry is unused and another call is allowed. A host asks this
    /// before refreshing, so it never refreshes for a retry that cannot follow.
    pub fn may_retry_auth(&self, policy: &Policy) -> bool {
        !self.auth_retried && self.calls.saturating_add(1) < policy.max_attempts
    }

    /// Whether `failure` is retryable for this call as it stands (before it is reported).
    fn retryable(&self, policy: &Policy, failure: &Failure) -> bool {
        match failure.category {
            ErrorCategory::AuthExpired => failure.token_refreshed && !self.auth_retried,
            ErrorCategory::RateLimited => true,
            other => policy.retry_on.contains(other),
        }
    }

    /// What [`RetryState::on_failure`] tells the guards about `failure`, without deciding or
    /// changing the state: a transient failure is recorded on the breaker and spends a budget
    /// token; any other hands a half-open breaker's probe back (see the module docs).
    ///
    /// For a host that decided on a copy of shared guards (an engine that may be slow decides
    /// outside the lock) and finds that other calls changed them meanwhile: it reports the
    /// failure to the current guards with this, from the state as it was before the decision.
    pub fn report_to_guards(
        &self,
        policy: &Policy,
        failure: Failure,
        now_us: u64,
        guards: Guards<'_>,
    ) {
        let retryable = self.retryable(policy, &failure);
        // Transient failures count against the service; a rejected request (validation, not
        // found, …) is an answer, which says nothing about its health.
        let transient = retryable || policy.retry_on.contains(failure.category);
        let Guards { breaker, budget } = guards;
        if transient {
            if let Some(b) = breaker {
                b.record(false, now_us);
            }
            if let Some(b) = budget {
                b.on_failure();
            }
        } else if let Some(b) = breaker {
            b.release();
        }
    }

    /// Reports a failed attempt at `now_us` and decides what comes next.
    pub fn on_failure(
        &mut self,
        policy: &Policy,
        failure: Failure,
        now_us: u64,
        guards: Guards<'_>,
    ) -> Decision {
        let category = failure.category;
        let retryable = self.retryable(policy, &failure);
        let Guards {
            mut breaker,
            mut budget,
        } = guards;
        self.report_to_guards(
            policy,
            failure,
            now_us,
            Guards {
                breaker: breaker.as_deref_mut(),
                budget: budget.as_deref_mut(),
            },
        );
        let decision = self.decide(policy, failure, retryable, now_us, breaker, budget);
        self.record_failure(category, &decision);
        decision
    }

    /// The decision of [`on_failure`](Self::on_failure), from the state before the failed call
    /// is counted.
    fn decide(
        &self,
        policy: &Policy,
        failure: Failure,
        retryable: bool,
        now_us: u64,
        breaker: Option<&mut CircuitBreaker>,
        budget: Option<&mut RetryBudget>,
    ) -> Decision {
        let give_up = |reason| Decision::GiveUp { reason };
        if !retryable {
            return give_up(GiveUpReason::NonRetryable);
        }
        let retry = self.calls.saturating_add(1);
        if retry >= policy.max_attempts {
            return give_up(GiveUpReason::Exhausted);
        }
        let mut delay_us = policy
            .next_delay(retry, self.seed, self.prev_delay_us)
            .delay_us;
        if let Some(server_us) = failure.server_delay_us {
            if server_us > policy.max_retry_after_us {
                return give_up(GiveUpReason::RetryAfterTooLong);
            }
            delay_us = delay_us.max(server_us);
        }
        let fire_at_us = now_us.saturating_add(delay_us);
        if self
            .deadline_us(policy)
            .is_some_and(|deadline_us| fire_at_us > deadline_us)
        {
            return give_up(GiveUpReason::Deadline);
        }
        if let Some(b) = breaker {
            if let BreakerState::Open { until_us } = b.state(now_us) {
                if until_us > fire_at_us {
                    return give_up(GiveUpReason::CircuitOpen);
                }
            }
        }
        if let Some(b) = budget {
            if !b.can_retry() {
                return give_up(GiveUpReason::Budget);
            }
        }
        self.retry_after(policy, now_us, delay_us)
    }

    /// When the call must be over: `max_elapsed` after it started.
    fn deadline_us(&self, policy: &Policy) -> Option<u64> {
        policy
            .max_elapsed_us
            .map(|max_us| self.started_us.saturating_add(max_us))
    }

    /// The retry after `delay_us` of a call that failed at `now_us`, this state not counting the
    /// failure yet: with the slot request the policy's coordination asks for (the fire time,
    /// the latest it may move to, which retry it is), or none when the policy is not coordinated.
    ///
    /// [`on_failure`](Self::on_failure) retries through this; so does a host whose policy only
    /// names the delay (a policy component's `decide`): the request is the core's rule, not the
    /// policy's.
    pub fn retry_after(&self, policy: &Policy, now_us: u64, delay_us: u64) -> Decision {
        let fire_at_us = now_us.saturating_add(delay_us);
        let retry = self.calls.saturating_add(1);
        let slot_request = policy
            .coordination_enabled
            .then(|| policy.slot_request_within(fire_at_us, self.deadline_us(policy), retry));
        Decision::Retry {
            delay_us,
            slot_request,
        }
    }

    /// Moves the state past a failed call of `category` that `decision` answered: the call is
    /// counted; a retry's delay is kept (decorrelated jitter draws from it) and, when the
    /// failure was an expired credential, its one retry is used.
    ///
    /// [`on_failure`](Self::on_failure) moves the state by exactly this; a host whose decision
    /// came from elsewhere (a policy component) moves it by this too, so a policy never writes
    /// the memory its next decision reads.
    pub fn record_failure(&mut self, category: ErrorCategory, decision: &Decision) {
        self.calls = self.calls.saturating_add(1);
        if let Decision::Retry { delay_us, .. } = *decision {
            self.prev_delay_us = delay_us;
            if category == ErrorCategory::AuthExpired {
                self.auth_retried = true;
            }
        }
    }
}

/// The fields of a [`RetryState`], for carrying it across a boundary (a WIT record, shared memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryStateParts {
    /// Jitter seed.
    pub seed: u64,
    /// Start of the call.
    pub started_us: u64,
    /// Previous delay.
    pub prev_delay_us: u64,
    /// Calls made so far.
    pub calls: u32,
    /// Whether the one auth retry was used.
    pub auth_retried: bool,
}

impl RetryState {
    /// The state as plain fields.
    pub const fn to_parts(&self) -> RetryStateParts {
        RetryStateParts {
            seed: self.seed,
            started_us: self.started_us,
            prev_delay_us: self.prev_delay_us,
            calls: self.calls,
            auth_retried: self.auth_retried,
        }
    }

    /// A state from plain fields (as produced by [`RetryState::to_parts`]).
    pub const fn from_parts(p: RetryStateParts) -> Self {
        Self {
            seed: p.seed,
            started_us: p.started_us,
            prev_delay_us: p.prev_delay_us,
            calls: p.calls,
            auth_retried: p.auth_retried,
        }
    }
}
