//! One interface over the two engines that can run a policy: the native core, linked in, and a
//! policy component loaded into wasmtime. The executor ([`RetryPolicy::with_engine`]) and every
//! CLI command go through [`PolicyEngine`], so `--engine wasm` is a flag, not a second code path.
//!
//! A component is not trusted to be right: [`PolicyComponent`]'s `decide` checks the answer
//! against the world's contract (the call is counted, seed and start are kept, no retry past
//! `max_attempts`, no delay past `max(max_delay, max_retry_after)`, guard state in the core's
//! encoding) and reports a violation as [`EngineError::InvalidDecision`], exactly as it reports
//! a trap. On any error the executor decides natively instead (see [`RetryPolicy`]).
//!
//! [`RetryPolicy::with_engine`]: crate::RetryPolicy::with_engine
//! [`RetryPolicy`]: crate::RetryPolicy

use std::fmt;
use std::sync::Arc;

use ricochet_core as rc;
use ricochet_core::breaker::CircuitBreaker;
use ricochet_core::budget::RetryBudget;

use crate::component::{
    decision_from_wit, failure_to_wit, state_from_wit, state_to_wit, wit, ComponentError,
    HostBackends, PolicyComponent,
};

/// One planned retry, as either engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedRetry {
    /// 1 for the first retry.
    pub retry: u32,
    /// Base delay before jitter.
    pub base_delay_us: u64,
    /// Delay after jitter.
    pub delay_us: u64,
}

/// Why an engine could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineError {
    /// The config was rejected: the field, and a message naming the value.
    Config {
        /// The offending field.
        field: String,
        /// What was wrong, with the value.
        message: String,
    },
    /// The component failed (trap, budget, memory) or does not fit the world.
    Component(ComponentError),
    /// The component answered, but against the world's contract; the message says how.
    InvalidDecision(String),
}

impl EngineError {
    /// A short label: `config_rejected`, `invalid_decision`, or the component's
    /// ([`ComponentError::reason`]).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Config { .. } => "config_rejected",
            Self::Component(e) => e.reason(),
            Self::InvalidDecision(_) => "invalid_decision",
        }
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config { message, .. } => f.write_str(message),
            Self::Component(e) => e.fmt(f),
            Self::InvalidDecision(e) => write!(f, "policy component broke its contract: {e}"),
        }
    }
}

impl std::error::Error for EngineError {}

impl From<rc::ConfigError> for EngineError {
    fn from(e: rc::ConfigError) -> Self {
        Self::Config {
            field: e.field().to_string(),
            message: e.to_string(),
        }
    }
}

impl From<ComponentError> for EngineError {
    fn from(e: ComponentError) -> Self {
        Self::Component(e)
    }
}

/// The inputs of one decision.
#[derive(Clone, Copy)]
pub struct DecideInput<'a> {
    /// The config, as the user wrote it (what a component receives).
    pub config: &'a rc::RetryConfig,
    /// The same config, validated natively.
    pub policy: &'a rc::Policy,
    /// The failed attempt.
    pub failure: rc::Failure,
    /// Now, µs.
    pub now_us: u64,
    /// The backends a component's imports use for this call (`None`: the component's own).
    /// A native engine has no imports and ignores it.
    pub imports: Option<&'a Arc<HostBackends>>,
}

/// A policy engine.
pub trait PolicyEngine: Send + Sync + 'static {
    /// `native` or `wasm`.
    fn name(&self) -> &'static str;
    /// Validates `config`.
    fn validate(&self, config: &rc::RetryConfig) -> Result<(), EngineError>;
    /// The whole schedule for `seed`.
    fn plan(&self, config: &rc::RetryConfig, seed: u64) -> Result<Vec<PlannedRetry>, EngineError>;
    /// One decision after a failure: updates `state` and `guards` and says what comes next.
    /// On `Err`, `state` and `guards` are left as they were.
    fn decide(
        &self,
        input: DecideInput<'_>,
        state: &mut rc::RetryState,
        guards: rc::Guards<'_>,
    ) -> Result<rc::Decision, EngineError>;
}

/// The core, linked in.
#[derive(Debug, Default, Clone, Copy)]
pub struct NativeEngine;

impl PolicyEngine for NativeEngine {
    fn name(&self) -> &'static str {
        "native"
    }

    fn validate(&self, config: &rc::RetryConfig) -> Result<(), EngineError> {
        config.validate()?;
        Ok(())
    }

    fn plan(&self, config: &rc::RetryConfig, seed: u64) -> Result<Vec<PlannedRetry>, EngineError> {
        Ok(config
            .validate()?
            .plan(seed)
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
        Ok(state.on_failure(input.policy, input.failure, input.now_us, guards))
    }
}

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
