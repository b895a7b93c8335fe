//! The component host: runs any component of the `ricochet:retry` world with wasmtime.
//!
//! Each [`PolicyComponent`] compiles its component once and pre-instantiates it
//! (`InstancePre`), then keeps one `Store` and instance for calls. The guest is bounded: every
//! call gets a fresh fuel allowance and the store has a memory cap, so a looping or
//! allocation-hungry component is an error, never a hung or exhausted host. After a trap an
//! instance refuses further calls, so the next call runs on a fresh store and instance.
//!
//! The imports are served by [`HostState`]: a wall clock, an in-memory slot coordinator and
//! idempotency store, counters, and JSON log lines.

mod bindings;
mod imports;

use std::fmt;
use std::path::Path;

use ricochet_core as rc;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};

pub use bindings::types as wit;
use bindings::{PolicyWorld, PolicyWorldPre};
pub use imports::HostState;

/// Limits on a guest, per call.
#[derive(Debug, Clone, Copy)]
pub struct Sandbox {
    /// Fuel per call (about one unit per wasm instruction).
    pub fuel_per_call: u64,
    /// Cap on the guest's linear memory, bytes.
    pub max_memory_bytes: usize,
}

impl Default for Sandbox {
    /// 50 million fuel per call (a few ms of guest work) and 16 MiB of memory.
    fn default() -> Self {
        Self {
            fuel_per_call: 50_000_000,
            max_memory_bytes: 16 << 20,
        }
    }
}

/// Why a component could not be loaded or called.
#[derive(Debug)]
#[non_exhaustive]
pub enum ComponentError {
    /// The bytes are not a valid component, or it does not fit the `ricochet:retry` world.
    Load(String),
    /// The guest trapped, ran out of fuel or exceeded its memory.
    Trap(String),
}

impl fmt::Display for ComponentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Load(e) => write!(f, "cannot load policy component: {e}"),
            Self::Trap(e) => write!(f, "policy component failed: {e}"),
        }
    }
}

impl std::error::Error for ComponentError {}

fn load_err(e: impl fmt::Display) -> ComponentError {
    ComponentError::Load(format!("{e:#}"))
}

fn trap(e: wasmtime::Error) -> ComponentError {
    ComponentError::Trap(format!("{e:#}"))
}

struct Live {
    store: Store<HostState>,
    world: PolicyWorld,
}

/// A loaded policy component.
pub struct PolicyComponent {
    engine: Engine,
    pre: PolicyWorldPre<HostState>,
    sandbox: Sandbox,
    live: Option<Live>,
}

impl PolicyComponent {
    /// Loads a component from a file.
    pub fn from_file(path: &Path, sandbox: Sandbox) -> Result<Self, ComponentError> {
        let bytes = std::fs::read(path)
            .map_err(|e| ComponentError::Load(format!("{}: {e}", path.display())))?;
        Self::from_bytes(&bytes, sandbox)
    }

    /// Loads a component from its bytes.
    pub fn from_bytes(bytes: &[u8], sandbox: Sandbox) -> Result<Self, ComponentError> {
        let mut config = Config::new();
        config.consume_fuel(true);
        let engine = Engine::new(&config).map_err(load_err)?;
        let component = Component::new(&engine, bytes).map_err(load_err)?;
        let mut linker = Linker::<HostState>::new(&engine);
        PolicyWorld::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(load_err)?;
        let instance_pre = linker.instantiate_pre(&component).map_err(load_err)?;
        let pre = PolicyWorldPre::new(instance_pre).map_err(load_err)?;
        Ok(Self {
            engine,
            pre,
            sandbox,
            live: None,
        })
    }

    fn limits(&self) -> StoreLimits {
        StoreLimitsBuilder::new()
            .memory_size(self.sandbox.max_memory_bytes)
            .instances(4)
            .build()
    }

    /// Runs `f` against a live instance with a fresh fuel allowance; a trap drops the instance.
    fn call<R>(
        &mut self,
        f: impl FnOnce(&PolicyWorld, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, ComponentError> {
        let mut live = match self.live.take() {
            Some(live) => live,
            None => {
                let mut store = Store::new(&self.engine, HostState::new(self.limits()));
                store.limiter(|s| &mut s.limits);
                store.set_fuel(self.sandbox.fuel_per_call).map_err(trap)?;
                let world = self.pre.instantiate(&mut store).map_err(trap)?;
                Live { store, world }
            }
        };
        live.store
            .set_fuel(self.sandbox.fuel_per_call)
            .map_err(trap)?;
        let out = f(&live.world, &mut live.store).map_err(trap)?;
        self.live = Some(live);
        Ok(out)
    }

    /// The host state of the live instance (its coordinator, counters and log), if one is live.
    pub fn host_state(&mut self) -> Option<&mut HostState> {
        self.live.as_mut().map(|l| l.store.data_mut())
    }

    /// `validate` through the component.
    pub fn validate(
        &mut self,
        config: &rc::RetryConfig,
    ) -> Result<Result<(), wit::ConfigError>, ComponentError> {
        let c = to_wit(config);
        self.call(|w, s| w.ricochet_retry_retry_policy().call_validate(s, c))
    }

    /// `next-delay` through the component.
    pub fn next_delay(
        &mut self,
        config: &rc::RetryConfig,
        retry: u32,
        seed: u64,
        prev_delay_us: u64,
    ) -> Result<Result<u64, wit::ConfigError>, ComponentError> {
        let c = to_wit(config);
        self.call(|w, s| {
            w.ricochet_retry_retry_policy()
                .call_next_delay(s, c, retry, seed, prev_delay_us)
        })
    }

    /// `plan` through the component: the whole schedule in one crossing.
    pub fn plan(
        &mut self,
        config: &rc::RetryConfig,
        seed: u64,
    ) -> Result<Result<Vec<wit::PlannedRetry>, wit::ConfigError>, ComponentError> {
        let c = to_wit(config);
        self.call(|w, s| w.ricochet_retry_retry_policy().call_plan(s, c, seed))
    }

    /// `decide` through the component.
    pub fn decide(
        &mut self,
        config: &rc::RetryConfig,
        state: wit::RetryState,
        failure: wit::Failure,
        now_us: u64,
        guards: &wit::Guards,
    ) -> Result<
        Result<(wit::RetryState, wit::Guards, wit::Decision), wit::ConfigError>,
        ComponentError,
    > {
        let c = to_wit(config);
        self.call(|w, s| {
            w.ricochet_retry_retry_policy()
                .call_decide(s, c, state, failure, now_us, guards)
        })
    }

    /// `schedule` through the component: decision, slot from the host's coordinator, log line.
    pub fn schedule(
        &mut self,
        config: &rc::RetryConfig,
        service: &str,
        operation: &str,
        state: wit::RetryState,
        failure: wit::Failure,
    ) -> Result<Result<(wit::RetryState, wit::ScheduleOutcome), wit::ConfigError>, ComponentError>
    {
        let c = to_wit(config);
        self.call(|w, s| {
            w.ricochet_retry_retry_policy()
                .call_schedule(s, c, service, operation, state, failure)
        })
    }
}

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
