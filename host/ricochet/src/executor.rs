//! The executor: `RetryPolicy::execute_with_retry`, the seed's direct usage.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use ricochet::{RetryConfig, RetryPolicy};
//! let policy = RetryPolicy::new(RetryConfig { max_attempts: 3, ..RetryConfig::default() })?;
//! let body = policy
//!     .execute_with_retry(|| async { Ok::<_, std::io::Error>("data") }, "stream", "data_fetch")
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Every decision comes from `ricochet-core` (the executor never computes a delay): after a
//! failed attempt the error is classified, the core decides, a coordinated retry asks the
//! coordinator for a slot (falling back locally within its deadline), and the executor sleeps.
//! Dropping the returned future cancels any sleep. On the first-try-success path nothing is
//! allocated beyond what the operation's own future needs: the trace id, log fields and
//! coordinator calls only happen once an attempt fails.
//!
//! The decision may come from another [`PolicyEngine`] instead — a policy component
//! (`RetryPolicy::with_component`, feature `component`) — while everything around it stays the same: the breaker's
//! admission, the slot from the coordinator, the metrics and the log. When the engine fails on
//! a decision, the native core of the same config decides that one, and
//! `retry_policy_fallback_total{service,operation,reason}` counts it.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ricochet_core::breaker::{Admission, CircuitBreaker};
use ricochet_core::budget::RetryBudget;
use ricochet_core::{
    ConfigError, Decision, ErrorCategory, Failure, GiveUpReason, Guards, Policy, RetryConfig,
    RetryState,
};

use crate::classify::{Classification, Classify};
use crate::clock::{Clock, SharedClock, SystemClock};
use crate::coordination::BoxFuture;
use crate::coordination::{
    schedule_retry, Coordinator, InMemoryCoordinator, Scheduled, DEFAULT_COORDINATION_DEADLINE,
};
use crate::engine::{DecideInput, EngineError, HostBackends, PolicyEngine};
use crate::idempotency::{IdempotencyStore, InMemoryIdempotencyStore};
use crate::logging::{current_trace_id, TARGET};
use crate::metrics::RetryMetrics;
use tracing::Instrument;

/// What one attempt ended in, when it did not succeed.
#[derive(Debug)]
pub enum AttemptError<E> {
    /// The operation returned this error.
    Failed(E),
    /// The attempt ran past the per-attempt timeout (a `TimeoutError`).
    TimedOut(Duration),
}

impl<E> AttemptError<E> {
    /// The operation's error, if the attempt did not time out.
    pub fn into_error(self) -> Option<E> {
        match self {
            Self::Failed(e) => Some(e),
            Self::TimedOut(_) => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for AttemptError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(e) => e.fmt(f),
            Self::TimedOut(d) => write!(f, "attempt timed out after {d:?}"),
        }
    }
}

/// The operation did not succeed and will not be retried.
#[derive(Debug)]
pub struct MaxRetriesExceeded<E> {
    /// Calls made.
    pub attempts: u32,
    /// What the last call ended in.
    pub last_error: AttemptError<E>,
    /// Time from the first call to giving up.
    pub elapsed: Duration,
    /// Why no further retry was made (`exhausted`, `deadline`, `budget`, …).
    pub reason: GiveUpReason,
}

/// Why `execute_with_retry` returned no value.
#[derive(Debug)]
pub enum RetryError<E> {
    /// The seed's `MaxRetriesExceeded`: retries ran out (or a deadline, budget, breaker or
    /// Retry-After cap stopped them).
    MaxRetriesExceeded(MaxRetriesExceeded<E>),
    /// A non-retryable error, returned at once (after one attempt, or two for an expired token).
    NonRetryable(E),
    /// The circuit breaker is open: no call was made.
    CircuitOpen {
        /// How long until the breaker lets a probe through.
        retry_after: Duration,
    },
}

impl<E> RetryError<E> {
    /// The operation's last error, if there is one.
    pub fn into_last_error(self) -> Option<E> {
        match self {
            Self::MaxRetriesExceeded(m) => m.last_error.into_error(),
            Self::NonRetryable(e) => Some(e),
            Self::CircuitOpen { .. } => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MaxRetriesExceeded(m) => write!(
                f,
                "max retries exceeded after {} attempt(s) in {:.3}s ({}): {}",
                m.attempts,
                m.elapsed.as_secs_f64(),
                m.reason,
                m.last_error
            ),
            Self::NonRetryable(e) => write!(f, "non-retryable error: {e}"),
            Self::CircuitOpen { retry_after } => {
                write!(
                    f,
                    "circuit open: no call made, retry after {:.3}s",
                    retry_after.as_secs_f64()
                )
            }
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for RetryError<E> {}

/// A retry about to sleep, as passed to a [`RetryPolicy::with_notify`] hook.
#[derive(Debug, Clone, Copy)]
pub struct RetryEvent<'a> {
    /// The service.
    pub service: &'a str,
    /// The operation.
    pub operation: &'a str,
    /// The attempt that failed (1 = the first call).
    pub attempt: u32,
    /// How long the executor will sleep before the next attempt.
    pub delay: Duration,
    /// The core's backoff delay (or the server's, when longer) before the retry slot was added.
    pub backoff: Duration,
    /// The failed attempt's error, rendered.
    pub error: &'a str,
}

/// A hook called before every retry sleep (like backon's `notify` or tenacity's `before_sleep`).
pub type Notify = Arc<dyn Fn(&RetryEvent<'_>) + Send + Sync>;

/// A token refresh hook: called on `AuthExpired`; returns whether it refreshed the token.
pub type TokenRefresh = Arc<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

/// Where a policy records metrics.
#[derive(Clone)]
enum MetricsChoice {
    /// prometheus's default registry, registered on first use.
    Default,
    /// The application's.
    Custom(RetryMetrics),
    /// None.
    Off,
}

#[derive(Default)]
struct ServiceGuards {
    breaker: Option<CircuitBreaker>,
    budget: Option<RetryBudget>,
}

/// A retry policy with its backends: the seed's `RetryPolicy`.
///
/// # Default
///
/// Coordination and idempotency in memory (process-local), metrics on prometheus's default
/// registry, the wall clock, a random seed per call, no per-attempt timeout, a 25 ms
/// coordination deadline, no token refresh, decisions by the linked-in core.
#[derive(Clone)]
pub struct RetryPolicy {
    config: RetryConfig,
    policy: Policy,
    coordinator: Arc<dyn Coordinator>,
    idempotency: Arc<dyn IdempotencyStore>,
    metrics: MetricsChoice,
    clock: SharedClock,
    seed: Option<u64>,
    attempt_timeout: Option<Duration>,
    coordination_deadline: Duration,
    token_refresh: Option<TokenRefresh>,
    notify: Option<Notify>,
    guards: Arc<Mutex<HashMap<String, ServiceGuards>>>,
    /// Decides instead of the linked-in core, when set.
    engine: Option<Arc<dyn PolicyEngine>>,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("config", &self.config)
            .field("coordinator", &self.coordinator.name())
            .field("idempotency", &self.idempotency.name())
            .field("seed", &self.seed)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("engine", &self.engine_name())
            .finish_non_exhaustive()
    }
}

impl RetryPolicy {
    /// A policy for `config` with the embedded defaults (see [`RetryPolicy`]).
    pub fn new(config: RetryConfig) -> Result<Self, ConfigError> {
        let policy = config.validate()?;
        Ok(Self {
            config,
            policy,
            coordinator: Arc::new(InMemoryCoordinator::new()),
            idempotency: Arc::new(InMemoryIdempotencyStore::new()),
            metrics: MetricsChoice::Default,
            clock: Arc::new(SystemClock),
            seed: None,
            attempt_timeout: None,
            coordination_deadline: DEFAULT_COORDINATION_DEADLINE,
            token_refresh: None,
            notify: None,
            guards: Arc::new(Mutex::new(HashMap::new())),
            engine: None,
        })
    }

    /// Decisions by `engine` instead of the linked-in core. The config must pass the engine's
    /// own validation (and a component must be able to run it).
    ///
    /// A component's imports are served by this policy's backends — its coordinator (and
    /// clock), idempotency store, metrics and coordination deadline, as they are at each
    /// call. The engine only decides: admission by the breaker, the slot from the coordinator
    /// and the sleep stay the executor's.
    ///
    /// When the engine fails on a decision (a trap, an exhausted time or fuel budget, memory,
    /// a config it rejects, an answer against the world's contract), the native core of the
    /// same config makes that decision from the same state, the retry goes on, and
    /// `retry_policy_fallback_total{service,operation,reason}` counts it (`reason` as in
    /// [`EngineError::reason`]). The engine is asked again at the next failure; a component
    /// gets a fresh instance.
    pub fn with_engine(mut self, engine: Arc<dyn PolicyEngine>) -> Result<Self, EngineError> {
        engine.validate(&self.config)?;
        self.engine = Some(engine);
        Ok(self)
    }

    /// `native`, or the engine's name (`wasm` for a component).
    pub fn engine_name(&self) -> &'static str {
        self.engine.as_ref().map_or("native", |e| e.name())
    }

    /// The same backends (coordinator, store, metrics, clock, hooks) with another config; the
    /// breaker and budget start fresh. An engine is kept; should it reject the new config, its
    /// decisions fall back to the core (counted as `config_rejected`).
    pub fn with_config(&self, config: RetryConfig) -> Result<Self, ConfigError> {
        let policy = config.validate()?;
        Ok(Self {
            config,
            policy,
            guards: Arc::new(Mutex::new(HashMap::new())),
            ..self.clone()
        })
    }

    /// Uses `coordinator` for slot tickets (e.g. a `RedisCoordinator`).
    #[must_use]
    pub fn with_coordinator(mut self, coordinator: Arc<dyn Coordinator>) -> Self {
        self.coordinator = coordinator;
        self
    }

    /// Uses `store` for idempotency.
    #[must_use]
    pub fn with_idempotency_store(mut self, store: Arc<dyn IdempotencyStore>) -> Self {
        self.idempotency = store;
        self
    }

    /// Records metrics in `metrics` (registered on the caller's registry).
    #[must_use]
    pub fn with_metrics(mut self, metrics: RetryMetrics) -> Self {
        self.metrics = MetricsChoice::Custom(metrics);
        self
    }

    /// Records no metrics.
    #[must_use]
    pub fn without_metrics(mut self) -> Self {
        self.metrics = MetricsChoice::Off;
        self
    }

    /// Reads "now" from `clock` (deadlines, breaker, budget).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Uses a fixed jitter seed for every call (tests, reproducible runs).
    #[must_use]
    pub const fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Bounds each attempt; a timed-out attempt counts as a `TimeoutError`.
    #[must_use]
    pub const fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// How long a coordination call may take before the local fallback slot is used.
    #[must_use]
    pub const fn with_coordination_deadline(mut self, deadline: Duration) -> Self {
        self.coordination_deadline = deadline;
        self
    }

    /// Calls `refresh` on `AuthExpired`; the attempt is retried once, only if it returns true.
    #[must_use]
    pub fn with_token_refresh<F, Fut>(mut self, refresh: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.token_refresh = Some(Arc::new(move || Box::pin(refresh())));
        self
    }

    /// Calls `notify` before every retry sleep.
    #[must_use]
    pub fn with_notify(mut self, notify: impl Fn(&RetryEvent<'_>) + Send + Sync + 'static) -> Self {
        self.notify = Some(Arc::new(notify));
        self
    }

    /// The config this policy was made from.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// The validated policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The coordinator.
    pub fn coordinator(&self) -> &Arc<dyn Coordinator> {
        &self.coordinator
    }

    /// The idempotency store.
    pub fn idempotency_store(&self) -> &Arc<dyn IdempotencyStore> {
        &self.idempotency
    }

    /// The metrics, if recorded.
    pub fn metrics(&self) -> Option<&RetryMetrics> {
        match &self.metrics {
            MetricsChoice::Default => RetryMetrics::default_registry(),
            MetricsChoice::Custom(m) => Some(m),
            MetricsChoice::Off => None,
        }
    }

    fn seed_for_call(&self) -> u64 {
        self.seed.unwrap_or_else(crate::entropy::random_u64)
    }

    /// Runs `op` until it succeeds or the policy gives up, classifying errors with [`Classify`].
    pub async fn execute_with_retry<T, E, F, Fut>(
        &self,
        op: F,
        service: &str,
        operation: &str,
    ) -> Result<T, RetryError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Classify + fmt::Display,
    {
        self.execute_classified(op, service, operation, |e: &E| e.classify())
            .await
    }

    /// Runs `op` until it succeeds or the policy gives up, classifying errors with `classify`.
    pub async fn execute_classified<T, E, F, Fut, C>(
        &self,
        op: F,
        service: &str,
        operation: &str,
        classify: C,
    ) -> Result<T, RetryError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: fmt::Display,
        C: Fn(&E) -> Classification,
    {
        let span = tracing::debug_span!(
            target: TARGET,
            "retry",
            service,
            operation,
            trace_id = tracing::field::Empty
        );
        self.run_classified(op, service, operation, classify)
            .instrument(span)
            .await
    }

    async fn run_classified<T, E, F, Fut, C>(
        &self,
        mut op: F,
        service: &str,
        operation: &str,
        classify: C,
    ) -> Result<T, RetryError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: fmt::Display,
        C: Fn(&E) -> Classification,
    {
        let started = Instant::now();
        // The seed and the clock are only needed once an attempt fails: a first-try success
        // reads no clock but `started` and draws no seed.
        let mut state = RetryState::new(0, 0);
        let guarded = self.policy.breaker().is_some() || self.policy.budget().is_some();
        let mut trace_id: Option<String> = None;
        let mut first_try = None;
        let metrics = self.metrics();
        loop {
            if guarded {
                if let Some(retry_after) = self.admit(service) {
                    return Err(RetryError::CircuitOpen { retry_after });
                }
            }
            let attempt = state.calls() + 1;
            if let Some(m) = metrics {
                if attempt == 1 {
                    let ft = m.first_try(service, operation);
                    ft.attempt();
                    first_try = Some(ft);
                } else {
                    m.attempt(service, operation, attempt);
                }
            }
            let call = op().instrument(tracing::debug_span!(target: TARGET, "attempt", attempt));
            let outcome = match self.attempt_timeout {
                Some(limit) => match tokio::time::timeout(limit, call).await {
                    Ok(r) => r.map_err(AttemptError::Failed),
                    Err(_) => Err(AttemptError::TimedOut(limit)),
                },
                None => call.await.map_err(AttemptError::Failed),
            };
            let error = match outcome {
                Ok(value) => {
                    if guarded {
                        let now_us = self.clock.now_us();
                        self.with_guards(service, guarded, |g| state.on_success(now_us, g));
                    }
                    if let (Some(m), Some(ft)) = (metrics, &first_try) {
                        let elapsed = started.elapsed().as_secs_f64();
                        if attempt == 1 {
                            ft.success(elapsed);
                        } else {
                            m.success(service, operation, attempt);
                            ft.duration(elapsed);
                        }
                    }
                    return Ok(value);
                }
                Err(e) => e,
            };
            if attempt == 1 {
                let started_us = self
                    .clock
                    .now_us()
                    .saturating_sub(started.elapsed().as_micros() as u64);
                state = RetryState::new(self.seed_for_call(), started_us);
            }
            let class = match &error {
                AttemptError::Failed(e) => classify(e),
                AttemptError::TimedOut(_) => Classification::new(ErrorCategory::Timeout),
            };
            let mut failure = Failure::new(class.category);
            failure.server_delay_us = class.server_delay.map(|d| d.as_micros() as u64);
            if class.category == ErrorCategory::AuthExpired {
                if let Some(refresh) = &self.token_refresh {
                    failure.token_refreshed = refresh().await;
                }
            }
            let trace = trace_id
                .get_or_insert_with(|| {
                    let id = current_trace_id();
                    tracing::Span::current().record("trace_id", id.as_str());
                    id
                })
                .as_str();
            let message = error.to_string();
            tracing::warn!(target: TARGET, service, operation, attempt, delay = 0.0_f64, error = message.as_str(), trace_id = trace);
            let now_us = self.clock.now_us();
            let decision = self.with_guards(service, guarded, |g| {
                self.decide(&mut state, failure, now_us, g, service, operation)
            });
            let give_up = |reason: GiveUpReason, error: AttemptError<E>| {
                tracing::error!(target: TARGET, service, operation, attempt, delay = 0.0_f64, error = message.as_str(), trace_id = trace);
                if let Some(m) = metrics {
                    let error_type = match reason {
                        GiveUpReason::Exhausted | GiveUpReason::NonRetryable => {
                            class.category.name()
                        }
                        other => other.name(),
                    };
                    m.failure(
                        service,
                        operation,
                        error_type,
                        started.elapsed().as_secs_f64(),
                    );
                }
                match (reason, error) {
                    (GiveUpReason::NonRetryable, AttemptError::Failed(e)) => {
                        RetryError::NonRetryable(e)
                    }
                    (reason, last_error) => RetryError::MaxRetriesExceeded(MaxRetriesExceeded {
                        attempts: attempt,
                        last_error,
                        elapsed: started.elapsed(),
                        reason,
                    }),
                }
            };
            let (sleep_us, backoff_us) = match decision {
                Decision::GiveUp { reason } => return Err(give_up(reason, error)),
                Decision::Retry {
                    delay_us,
                    slot_request: None,
                } => (delay_us, delay_us),
                Decision::Retry {
                    delay_us,
                    slot_request: Some(_),
                } => {
                    let scheduled = schedule_retry(
                        self.coordinator.as_ref(),
                        &self.policy,
                        state.seed(),
                        attempt,
                        delay_us,
                        service,
                        operation,
                        self.coordination_deadline,
                        metrics,
                    )
                    .await;
                    match scheduled {
                        Scheduled::FireIn {
                            delay_us: slotted_us,
                            ..
                        } => (slotted_us, delay_us),
                        Scheduled::GiveUp(reason) => return Err(give_up(reason, error)),
                    }
                }
            };
            tracing::info!(target: TARGET, service, operation, attempt, delay = sleep_us as f64 / 1e6, error = message.as_str(), trace_id = trace);
            if let Some(notify) = &self.notify {
                notify(&RetryEvent {
                    service,
                    operation,
                    attempt,
                    delay: Duration::from_micros(sleep_us),
                    backoff: Duration::from_micros(backoff_us),
                    error: &message,
                });
            }
            tokio::time::sleep(Duration::from_micros(sleep_us)).await;
        }
    }

    /// One decision: by the engine when one is set (natively when it fails, counted), by the
    /// linked-in core otherwise.
    fn decide(
        &self,
        state: &mut RetryState,
        failure: Failure,
        now_us: u64,
        mut guards: Guards<'_>,
        service: &str,
        operation: &str,
    ) -> Decision {
        if let Some(engine) = &self.engine {
            let imports = Arc::new(HostBackends {
                coordinator: self.coordinator.clone(),
                idempotency: self.idempotency.clone(),
                metrics: self.metrics().cloned(),
                deadline: self.coordination_deadline,
            });
            let input = DecideInput {
                config: &self.config,
                policy: &self.policy,
                failure,
                now_us,
                imports: Some(&imports),
            };
            let lent = Guards {
                breaker: guards.breaker.as_deref_mut(),
                budget: guards.budget.as_deref_mut(),
            };
            match engine.decide(input, state, lent) {
                Ok(decision) => return decision,
                Err(e) => {
                    tracing::warn!(service, operation, engine = engine.name(), reason = e.reason(), error = %e, "policy engine failed; the native policy decides");
                    if let Some(m) = self.metrics() {
                        m.policy_fallback(service, operation, e.reason());
                    }
                }
            }
        }
        state.on_failure(&self.policy, failure, now_us, guards)
    }

    /// Asks the service's breaker for admission; `Some(wait)` when it is open.
    fn admit(&self, service: &str) -> Option<Duration> {
        let now_us = self.clock.now_us();
        let mut map = self.guards.lock().unwrap_or_else(|p| p.into_inner());
        let g = map
            .entry(service.to_string())
            .or_insert_with(|| self.new_guards());
        match g.breaker.as_mut()?.admit(now_us) {
            Admission::Allowed | Admission::Probe => None,
            Admission::Rejected { retry_after_us } => Some(Duration::from_micros(retry_after_us)),
        }
    }

    fn new_guards(&self) -> ServiceGuards {
        ServiceGuards {
            breaker: self.policy.breaker().map(CircuitBreaker::new),
            budget: self.policy.budget().and_then(|b| RetryBudget::new(b).ok()),
        }
    }

    fn with_guards<R>(&self, service: &str, guarded: bool, f: impl FnOnce(Guards<'_>) -> R) -> R {
        if !guarded {
            return f(Guards::none());
        }
        let mut map = self.guards.lock().unwrap_or_else(|p| p.into_inner());
        let g = map
            .entry(service.to_string())
            .or_insert_with(|| self.new_guards());
        f(Guards {
            breaker: g.breaker.as_mut(),
            budget: g.budget.as_mut(),
        })
    }
}
