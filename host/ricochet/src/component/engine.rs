//! [`PolicyComponent`] as a [`PolicyEngine`]: the executor's seam, implemented from above.
//!
//! A component is not trusted to be right: `decide` checks the answer against the world's
//! contract (the call is counted, seed and start are kept, no retry past `max_attempts`, no delay
//! past `max(max_delay, max_retry_after)`, guard state in the core's encoding) and reports a
//! violation as [`EngineError::InvalidDecision`], exactly as it reports a trap.

use ricochet_core as rc;
use ricochet_core::breaker::CircuitBreaker;
use ricochet_core::budget::RetryBudget;

use super::{
    decision_from_wit, failure_to_wit, state_from_wit, state_to_wit, wit, PolicyComponent,
};
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
        let (next, next_guards, decision) = self
            .decide_with(
                backends,
                input.config,
                state_to_wit(state),
                failure_to_wit(input.failure),
                input.now_us,
                &guard_bytes,
            )?
            .map_err(config_error)?;
        let decision = checked(&input, state, &next, decision)?;
        // Decode both guards before touching either, so an error leaves them as they were.
        let new_breaker = match (next_guards.breaker, &breaker) {
            (Some(bytes), Some(_)) => Some(
                CircuitBreaker::from_bytes(&bytes)
                    .ok_or_else(|| invalid("breaker state is not the core's encoding"))?,
            ),
            _ => None,
        };
        let new_budget = match (next_guards.budget, &budget) {
            (Some(bytes), Some(_)) => Some(
                RetryBudget::from_bytes(&bytes)
                    .ok_or_else(|| invalid("budget state is not the core's encoding"))?,
            ),
            _ => None,
        };
        if let (Some(slot), Some(b)) = (breaker, new_breaker) {
            *slot = b;
        }
        if let (Some(slot), Some(b)) = (budget, new_budget) {
            *slot = b;
        }
        *state = state_from_wit(&next);
        Ok(decision)
    }
}

fn invalid(message: impl Into<String>) -> EngineError {
    EngineError::InvalidDecision(message.into())
}

/// The component's answer, if it keeps the contract.
fn checked(
    input: &DecideInput<'_>,
    before: &rc::RetryState,
    after: &wit::RetryState,
    decision: wit::Decision,
) -> Result<rc::Decision, EngineError> {
    let calls = before.calls().saturating_add(1);
    if after.calls != calls {
        return Err(invalid(format!(
            "state counts {} calls after call {calls}",
            after.calls
        )));
    }
    if after.seed != before.seed() || after.started_us != before.started_us() {
        return Err(invalid("state changed its seed or start time"));
    }
    let decision = decision_from_wit(decision);
    if let rc::Decision::Retry { delay_us, .. } = decision {
        let policy = input.policy;
        if calls >= policy.max_attempts() {
            return Err(invalid(format!(
                "retry after call {calls} of max_attempts {}",
                policy.max_attempts()
            )));
        }
        let longest = policy.max_delay_us().max(policy.max_retry_after_us());
        if delay_us > longest {
            return Err(invalid(format!(
                "delay of {delay_us} µs is longer than any this config allows ({longest} µs)"
            )));
        }
    }
    Ok(decision)
}

fn config_error(e: wit::ConfigError) -> EngineError {
    EngineError::Config {
        field: e.field,
        message: e.message,
    }
}
