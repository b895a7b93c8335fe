//! [`PolicyComponent`] as a [`PolicyEngine`]: the executor's seam, implemented from above.
//!
//! A component is not trusted to be right: `decide` checks the answer against the world's
//! contract and reports a violation as [`EngineError::InvalidDecision`], exactly as it reports a
//! trap; the executor then decides natively, on the state and guards as they were before the
//! call. What is checked, and why:
//!
//! - **the state** is not the guest's to write: it answers only "retry after d" or "give up, r",
//!   and the host moves the state by the core's rule (the call counted; a retry's delay kept for
//!   decorrelated jitter; the one auth retry used) and makes a coordinated retry's slot request
//!   by the core's rule too — so a policy cannot hand itself a second auth retry, feed the next
//!   decision a forged delay, or ask for a slot its delay does not give.
//! - **a retry**: it comes before `max-attempts` calls; the core would retry this category at
//!   all (asked of the core itself, not written twice); its delay is at most `max-delay`, or —
//!   only when the failure carried a server delay no longer than `max-retry-after` — at least
//!   that server delay and at most the longer of the two; it fires within `max-elapsed` of the
//!   start. So a policy cannot turn a 1 s backoff into a 60 s one, retry a validation error, or
//!   run past the caller's deadline.
//! - **the guards**: they are the host's (shared by every call of a service), so a policy may
//!   move them by at most what this one failure moves them — the breaker and the budget come
//!   back as they went in (a policy that keeps no guards), or exactly as the core records one
//!   failure at `now-us`; and what went in comes back (`none` for `some` would drop the
//!   failure). A forged `open until the year 586 000` or a refilled budget is refused.

use ricochet_core as rc;
use ricochet_core::breaker::CircuitBreaker;
use ricochet_core::budget::RetryBudget;

use super::guest_text::{sanitized, MAX_MESSAGE_BYTES};
use super::{decision_from_wit, failure_to_wit, state_to_wit, wit, PolicyComponent};
use crate::engine::{DecideInput, EngineError, PlannedRetry, PolicyEngine};

impl PolicyEngine for PolicyComponent {
    fn name(&self) -> &'static str {
        "wasm"
    }

    fn validate(&self, config: &rc::RetryConfig) -> Result<(), EngineError> {
        PolicyComponent::validate(self, config)?.map_err(config_error)
    }

    fn plan(&self, config: &rc::RetryConfig, seed: u64) -> Result<Vec<PlannedRetry>, EngineError> {
        let plan = PolicyComponent::plan(self, config, seed)?.map_err(config_error)?;
        Ok(plan
            .into_iter()
            .map(|r| PlannedRetry {
                retry: r.retry,
                base_delay_us: r.base_delay_us,
                delay_us: r.delay_us,
            })
            .collect())
    }

    fn decide(
        &self,
        input: DecideInput<'_>,
        state: &mut rc::RetryState,
        guards: rc::Guards<'_>,
    ) -> Result<rc::Decision, EngineError> {
        let rc::Guards { breaker, budget } = guards;
        let guard_bytes = wit::Guards {
            breaker: breaker.as_ref().map(|b| b.to_bytes().to_vec()),
            budget: budget.as_ref().map(|b| b.to_bytes().to_vec()),
        };
        let backends = input.imports.unwrap_or(self.backends_arc());
        let (next_guards, decision) = self
            .decide_with(
                backends,
                input.config,
                state_to_wit(state),
                failure_to_wit(input.failure),
                input.now_us,
                &guard_bytes,
            )?
            .map_err(config_error)?;
        let decision = checked(&input, state, decision)?;
        // Check both guards before touching either, so an error leaves them as they were.
        // What one failure does to them is the core's rule (a transient failure is recorded, a
        // rejected request hands a half-open probe back): asked of the core, from the state
        // as it went in.
        let (now_us, went_in) = (input.now_us, *state);
        let report = |guards: rc::Guards<'_>| {
            went_in.report_to_guards(input.policy, input.failure, now_us, guards)
        };
        let new_breaker = moved_guard(
            "breaker",
            breaker.as_deref().copied(),
            next_guards.breaker,
            CircuitBreaker::from_bytes,
            |b| {
                report(rc::Guards {
                    breaker: Some(b),
                    budget: None,
                })
            },
        )?;
        let new_budget = moved_guard(
            "budget",
            budget.as_deref().copied(),
            next_guards.budget,
            RetryBudget::from_bytes,
            |b| {
                report(rc::Guards {
                    breaker: None,
                    budget: Some(b),
                })
            },
        )?;
        if let (Some(slot), Some(b)) = (breaker, new_breaker) {
            *slot = b;
        }
        if let (Some(slot), Some(b)) = (budget, new_budget) {
            *slot = b;
        }
        state.record_failure(input.failure.category, &decision);
        Ok(decision)
    }
}

fn invalid(message: impl Into<String>) -> EngineError {
    EngineError::InvalidDecision(message.into())
}

/// The guard `returned` for one that went in as `before`, if it is `before` itself or `before`
/// after this failure (`fail`, the core's own transition).
fn moved_guard<G: Copy + PartialEq>(
    name: &str,
    before: Option<G>,
    returned: Option<Vec<u8>>,
    decode: impl Fn(&[u8]) -> Option<G>,
    fail: impl Fn(&mut G),
) -> Result<Option<G>, EngineError> {
    match (before, returned) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(invalid(format!(
            "{name} state went in and none came back (a policy without guards returns them as they came)"
        ))),
        (None, Some(_)) => Err(invalid(format!(
            "{name} state came back where none went in"
        ))),
        (Some(before), Some(bytes)) => {
            let got = decode(&bytes)
                .ok_or_else(|| invalid(format!("{name} state is not the core's encoding")))?;
            let mut after_failure = before;
            fail(&mut after_failure);
            if got == before || got == after_failure {
                Ok(Some(got))
            } else {
                Err(invalid(format!(
                    "{name} state moved by more than one failure can move it (or changed its configuration)"
                )))
            }
        }
    }
}

/// The component's answer, if it keeps the contract.
fn checked(
    input: &DecideInput<'_>,
    before: &rc::RetryState,
    decision: wit::Decision,
) -> Result<rc::Decision, EngineError> {
    let policy = input.policy;
    let decision = decision_from_wit(decision, policy, before, input.now_us);
    let rc::Decision::Retry { delay_us, .. } = decision else {
        return Ok(decision);
    };
    let calls = before.calls().saturating_add(1);
    let failure = input.failure;
    if calls >= policy.max_attempts() {
        return Err(invalid(format!(
            "retry after call {calls} of max_attempts {}",
            policy.max_attempts()
        )));
    }
    // Whether the category is retried at all is the core's rule (auth retried once after a
    // refresh, rate limits always, the rest by `retry_on`): ask it rather than restate it.
    let mut reference = *before;
    let native = reference.on_failure(policy, failure, input.now_us, rc::Guards::none());
    if native
        == (rc::Decision::GiveUp {
            reason: rc::GiveUpReason::NonRetryable,
        })
    {
        return Err(invalid(format!(
            "retried a failure of category {} that this config does not retry",
            failure.category.name()
        )));
    }
    let max_delay_us = policy.max_delay_us();
    match failure.server_delay_us {
        None if delay_us > max_delay_us => {
            return Err(invalid(format!(
                "delay of {delay_us} µs is longer than max_delay ({max_delay_us} µs), and the server asked for no delay"
            )))
        }
        None => {}
        Some(server_us) if server_us > policy.max_retry_after_us() => {
            return Err(invalid(format!(
                "retried although the server's delay of {server_us} µs is longer than max_retry_after ({} µs)",
                policy.max_retry_after_us()
            )))
        }
        Some(server_us) if delay_us < server_us || delay_us > server_us.max(max_delay_us) => {
            return Err(invalid(format!(
                "delay of {delay_us} µs is outside [{server_us}, {}] µs (the server's delay, and the longer of it and max_delay)",
                server_us.max(max_delay_us)
            )))
        }
        Some(_) => {}
    }
    if let Some(max_elapsed_us) = policy.max_elapsed_us() {
        let fire_at_us = input.now_us.saturating_add(delay_us);
        let deadline_us = before.started_us().saturating_add(max_elapsed_us);
        if fire_at_us > deadline_us {
            return Err(invalid(format!(
                "retry fires at {fire_at_us} µs, past the max_elapsed deadline at {deadline_us} µs"
            )));
        }
    }
    Ok(decision)
}

/// A `config-error` from the guest: its field and message are the guest's text.
fn config_error(e: wit::ConfigError) -> EngineError {
    EngineError::Config {
        field: sanitized(&e.field, 128),
        message: sanitized(&e.message, MAX_MESSAGE_BYTES),
    }
}
