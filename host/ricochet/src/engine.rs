//! The seam between the executor and whatever decides: [`PolicyEngine`]. The native core,
//! linked in, is [`NativeEngine`]; a policy component loaded into wasmtime (feature
//! `component`) is another. The executor ([`RetryPolicy::with_engine`]) and every CLI command go
//! through this trait, so `--engine wasm` is a flag, not a second code path — and the executor
//! never names the component host: the host implements this trait from above.
//!
//! An engine that is not the core is not trusted to be right: the component host checks each
//! answer against the world's contract and reports a violation as
//! [`EngineError::InvalidDecision`], exactly as it reports a trap. On any error the executor
//! decides natively instead (see [`RetryPolicy`]).
//!
//! [`RetryPolicy::with_engine`]: crate::RetryPolicy::with_engine
//! [`RetryPolicy`]: crate::RetryPolicy

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ricochet_core as rc;

#[cfg(feature = "component")]
use crate::component::ComponentError;
use crate::coordination::{Coordinator, InMemoryCoordinator, DEFAULT_COORDINATION_DEADLINE};
use crate::idempotency::{IdempotencyStore, InMemoryIdempotencyStore};
use crate::metrics::RetryMetrics;

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
    #[cfg(feature = "component")]
    #[cfg_attr(docsrs, doc(cfg(feature = "component")))]
    Component(ComponentError),
    /// The component answered, but against the world's contract; the message says how.
    InvalidDecision(String),
}

impl EngineError {
    /// A short label: `config_rejected`, `invalid_decision`, or the component's
    /// (`ComponentError::reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Config { .. } => "config_rejected",
            #[cfg(feature = "component")]
            Self::Component(e) => e.reason(),
            Self::InvalidDecision(_) => "invalid_decision",
        }
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config { message, .. } => f.write_str(message),
            #[cfg(feature = "component")]
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

#[cfg(feature = "component")]
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
    /// The backends an engine's imports use for this call (`None`: the engine's own).
    /// The native engine has no imports and ignores it.
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

/// The backends a policy's host serves an engine's imports from (a component's `clock`,
/// `coordination`, `metrics` and `logging`): the executor passes its own with every decision, so
/// a component sees the same coordinator, store and metrics as the native path.
///
/// # Default
///
/// An in-memory coordinator and idempotency store of its own, the metrics on prometheus's
/// default registry, and the 25 ms coordination deadline.
#[derive(Clone)]
pub struct HostBackends {
    /// Slot tickets (`coordination.acquire-slot`) and the clock (`clock.now-us`).
    pub coordinator: Arc<dyn Coordinator>,
    /// `coordination.idempotency-*`.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// `metrics.*`; `None` ignores them.
    pub metrics: Option<RetryMetrics>,
    /// Bound on all coordinator and store calls of one export call together.
    pub deadline: Duration,
}

impl Default for HostBackends {
    fn default() -> Self {
        Self {
            coordinator: Arc::new(InMemoryCoordinator::new()),
            idempotency: Arc::new(InMemoryIdempotencyStore::new()),
            metrics: RetryMetrics::default_registry().cloned(),
            deadline: DEFAULT_COORDINATION_DEADLINE,
        }
    }
}

impl fmt::Debug for HostBackends {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostBackends")
            .field("coordinator", &self.coordinator.name())
            .field("idempotency", &self.idempotency.name())
            .field("metrics", &self.metrics.is_some())
            .field("deadline", &self.deadline)
            .finish()
    }
}
