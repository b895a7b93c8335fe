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
//! Dropping the returned future cancels any sleep.
//!
//! # What a first-try success costs
//!
//! The first attempt runs in a small future that holds the operation's own and little else
//! (the `retry` span, the call's labels and start time); the retry loop — its state, the seed,
//! the trace id, the log fields, the coordinator — is built on the heap only when that attempt
//! fails. Nothing is allocated on the success path unless the policy bounds attempts itself
//! (`with_attempt_timeout`, `max_elapsed`), whose timer is then boxed. The seed's first-try
//! metrics (`attempt="1"`, `attempts_needed="1"`, the duration) are cached per
//! `(service, operation)`.
//!
//! The decision may come from another [`PolicyEngine`] instead — a policy component
//! (`RetryPolicy::with_component`, feature `component`) — while everything around it stays the same: the breaker's
//! admission, the slot from the coordinator, the metrics and the log. When the engine fails on
//! a decision, the native core of the same config decides that one, and
//! `retry_policy_fallback_total{service,operation,reason}` counts it.
//!
//! # A tokio runtime is required
//!
//! The executor sleeps and bounds attempts with `tokio::time`: it must run inside a tokio
//! runtime with its time driver enabled (`#[tokio::main]` and `Runtime::new` enable it;
//! a `Builder` needs `enable_time()`). Elsewhere tokio panics at the first retry ("there is no
//! reactor running"), or at the first attempt when an attempt timeout or `max_elapsed` bounds
//! it. A first-try success needs no timer when neither is set.
//!
//! # Deadlines
//!
//! `max_elapsed` bounds the whole call, measured on a monotonic clock (the policy's
//! [`Clock`], [`TokioClock`] by default): no retry is scheduled — and, coordinated, no slot is
//! taken — that would fire after it; every attempt, the first included, is cut at the time left
//! (with the attempt timeout, at whichever comes first), and so is a token refresh. A call
//! therefore ends within `max_elapsed` plus the time it takes to notice, whatever the operation
//! or the coordinator do.
//!
//! # The circuit breaker
//!
//! A call the breaker refuses is never made and counts in `retry_circuit_rejected_total`. When
//! the first call is refused the result is [`RetryError::CircuitOpen`]; when a retry is refused
//! (the breaker opened while this call was retrying) the operation ran, so it gives up like any
//! other: [`RetryError::MaxRetriesExceeded`] with reason `circuit_open` and the last error,
//! logged and counted in `retry_failure_total`. Both count in `retry_failure_total` with
//! `error_type="circuit_open"`.
//!
//! The breaker and budget of a service are shared by every call of the policy. Reporting an
//! outcome to them takes a lock for the time of the core's update (well under a microsecond);
//! a [`PolicyEngine`], which may be a sandboxed component and slow, decides on a copy outside
//! the lock, so it never holds up calls of other services — or the admissions and successes of
//! its own. Its result is written back if nothing changed meanwhile; otherwise the failure is
//! reported to the guards as they are now, by the core's rules
//! ([`RetryState::report_to_guards`]), and the engine's decision stands.
//!
//! [`TokioClock`]: crate::clock::TokioClock

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use ricochet_core::breaker::{Admission, CircuitBreaker};
use ricochet_core::budget::RetryBudget;
use ricochet_core::{
    ConfigError, Decision, ErrorCategory, Failure, GiveUpReason, Guards, Policy, RetryConfig,
    RetryState,
};

use crate::bounded::{Bounded, InSpan};
use crate::classify::{Classification, Classify};
use crate::clock::{Clock, SharedClock, TokioClock};
use crate::coordination::BoxFuture;
use crate::coordination::{
    schedule_retry_before, Coordinator, InMemoryCoordinator, Scheduled,
    DEFAULT_COORDINATION_DEADLINE,
};
use crate::engine::{DecideInput, EngineError, HostBackends, PolicyEngine};
use crate::idempotency::{IdempotencyStore, InMemoryIdempotencyStore};
use crate::logging::{current_trace_id, scrub_secrets, TARGET};
use crate::metrics::{FirstTry, RetryMetrics};
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
            // Named by its category, as the seed's logs name a `TimeoutError`.
            Self::TimedOut(d) => write!(
                f,
                "TimeoutError: attempt timed out after {:.3}s",
                d.as_secs_f64()
            ),
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
    /// A non-retryable error, returned at once (after one attempt, or two for an expired token);
    /// also a failure classified [`do_not_retry`](Classification::do_not_retry), whatever its
    /// category.
    NonRetryable(E),
    /// The circuit breaker refused the first call: no call was made. (A refused *retry* gives
    /// up as [`RetryError::MaxRetriesExceeded`] with reason `circuit_open`.)
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
    /// The failed attempt's error, rendered, with secrets scrubbed and the policy's redactor
    /// applied (as in the log line).
    pub error: &'a str,
}

/// A hook called before every retry sleep (like backon's `notify` or tenacity's `before_sleep`).
pub type Notify = Arc<dyn Fn(&RetryEvent<'_>) + Send + Sync>;

/// A token refresh hook: called on `AuthExpired`; returns whether it refreshed the token.
pub type TokenRefresh = Arc<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

/// A caller's redactor for error text (see [`RetryPolicy::with_redactor`]).
pub type Redactor = Arc<dyn Fn(&str) -> String + Send + Sync>;

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

/// A service's circuit breaker and retry budget (`Copy`: an engine decides on a copy).
#[derive(Default, Clone, Copy, PartialEq)]
struct ServiceGuards {
    breaker: Option<CircuitBreaker>,
    budget: Option<RetryBudget>,
}

impl ServiceGuards {
    fn lend(&mut self) -> Guards<'_> {
        Guards {
            breaker: self.breaker.as_mut(),
            budget: self.budget.as_mut(),
        }
    }
}

/// Guards by service name.
type GuardMap = HashMap<String, ServiceGuards>;

/// A retry policy with its backends: the seed's `RetryPolicy`.
///
/// See the [module docs](self) for deadlines, the circuit breaker and the tokio runtime it needs.
///
/// # Default
///
/// Coordination and idempotency in memory (process-local), metrics on prometheus's default
/// registry, a monotonic clock ([`TokioClock`]), a random seed per call, no per-attempt timeout
/// (`max_elapsed`, when set, still bounds every attempt), a 25 ms coordination deadline, no
/// token refresh, secrets scrubbed from logged errors and no redactor of the caller's,
/// decisions by the linked-in core.
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
    redactor: Option<Redactor>,
    guards: Arc<Mutex<GuardMap>>,
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
            clock: Arc::new(TokioClock::default()),
            seed: None,
            attempt_timeout: None,
            coordination_deadline: DEFAULT_COORDINATION_DEADLINE,
            token_refresh: None,
            notify: None,
            redactor: None,
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

    /// The same backends (coordinator, store, metrics, clock, hooks) with another config. An
    /// engine is kept; should it reject the new config, its decisions fall back to the core
    /// (counted as `config_rejected`).
    ///
    /// The circuit breakers and retry budgets carry over where their config did not change, so
    /// a reload ([`ReloadablePolicy`](crate::reload::ReloadablePolicy)) that changes, say, the
    /// backoff does not close an open breaker or refill a spent budget: when neither changed,
    /// both policies share them (calls still in flight on this one keep reporting to them);
    /// when one changed, it starts fresh and the other is carried over as it is now.
    pub fn with_config(&self, config: RetryConfig) -> Result<Self, ConfigError> {
        let policy = config.validate()?;
        let same_breaker = policy.breaker() == self.policy.breaker();
        let same_budget = policy.budget() == self.policy.budget();
        let guards = if same_breaker && same_budget {
            self.guards.clone()
        } else {
            let fresh = |old: &ServiceGuards| ServiceGuards {
                breaker: if same_breaker {
                    old.breaker
                } else {
                    policy.breaker().map(CircuitBreaker::new)
                },
                budget: if same_budget {
                    old.budget
                } else {
                    policy.budget().and_then(|b| RetryBudget::new(b).ok())
                },
            };
            let carried: GuardMap = self
                .lock_guards()
                .iter()
                .map(|(service, old)| (service.clone(), fresh(old)))
                .collect();
            Arc::new(Mutex::new(carried))
        };
        Ok(Self {
            config,
            policy,
            guards,
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

    /// Bounds each attempt; a timed-out attempt counts as a `TimeoutError`. With `max_elapsed`
    /// set, an attempt is also cut at the time left, whichever comes first.
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
    ///
    /// The refresh is only called when a retry could follow (the one auth retry is unused and
    /// an attempt is left), and is bounded like an attempt: by the attempt timeout and the time
    /// `max_elapsed` leaves. A refresh that runs out of time counts as not refreshed.
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

    /// Runs `redact` on every failed attempt's error text before it is logged or handed to the
    /// [`with_notify`](Self::with_notify) hook, after the default scrubbing of URL user
    /// information, secret query parameters and `Authorization` credentials
    /// ([`scrub_secrets`]), which always runs. Use it for what
    /// only you know is secret: a token in a path segment, a JSON body, a header of your own.
    ///
    /// ```
    /// # use ricochet::{RetryConfig, RetryPolicy};
    /// let policy = RetryPolicy::new(RetryConfig::default())?
    ///     .with_redactor(|text| text.replace("acct-4242", "acct-…"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn with_redactor(
        mut self,
        redact: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> Self {
        self.redactor = Some(Arc::new(redact));
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
    #[inline]
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
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with its time driver (see the [module docs](self)): tokio's own
    /// panic, at the first timer the call needs.
    // Not an `async fn`: the future is `execute_classified`'s own, not one more layer around it
    // that every call would build and move.
    pub fn execute_with_retry<'a, T, E, F, Fut>(
        &'a self,
        op: F,
        service: &'a str,
        operation: &'a str,
    ) -> impl Future<Output = Result<T, RetryError<E>>> + use<'a, T, E, F, Fut>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Classify + fmt::Display,
    {
        self.execute_classified(op, service, operation, |e: &E| e.classify())
    }

    /// Runs `op` until it succeeds or the policy gives up, classifying errors with `classify`.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with its time driver (see the [module docs](self)).
    pub async fn execute_classified<T, E, F, Fut, C>(
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
        let span = retry_span(service, operation);
        let call = self.call_labels(service, operation);
        // The first attempt holds little beyond the operation's future; the retry loop and its
        // state are set up only when it fails, on the heap, so that a first-try success never
        // builds (or moves) them. It is `first_attempt` written out, so that the call is one
        // state machine, not two.
        let start = match self.begin_first(&call) {
            Ok(start) => start,
            Err(refused) => return Err(refused),
        };
        let attempt_span = first_attempt_span(&span);
        let outcome = match self.first_limit() {
            None => Ok(InSpan::new(op(), attempt_span).await),
            limit => Bounded::new(op().instrument(attempt_span), limit).await,
        };
        let failure = match self.end_first(&call, start, outcome) {
            Ok(done) => return done,
            Err(failure) => failure,
        };
        Box::pin(
            self.retry_after_failure(op, &call, classify, failure)
                .instrument(span),
        )
        .await
    }

    /// What one call reports under, starting now.
    #[inline]
    pub(crate) fn call_labels<'a>(
        &'a self,
        service: &'a str,
        operation: &'a str,
    ) -> CallLabels<'a> {
        CallLabels {
            service,
            operation,
            metrics: self.metrics(),
            started: Instant::now(),
        }
    }

    /// What one call reports under, for a call that started at `started`.
    #[cfg(feature = "tower")]
    pub(crate) fn call_labels_since<'a>(
        &'a self,
        service: &'a str,
        operation: &'a str,
        started: Instant,
    ) -> CallLabels<'a> {
        CallLabels {
            service,
            operation,
            metrics: self.metrics(),
            started,
        }
    }

    #[inline]
    fn is_guarded(&self) -> bool {
        self.policy.breaker().is_some() || self.policy.budget().is_some()
    }

    /// The first attempt: admission, the first-try metrics, the call (`op`, made only when
    /// admitted) within its time. `Ok` when the call is over (a success, or a breaker that
    /// refused it); else its failure, for [`retry_after_failure`](Self::retry_after_failure).
    ///
    /// Not instrumented as a whole: the only events of a first attempt are the operation's,
    /// inside its `attempt` span, a child of `retry_span`. (`execute_classified` has it
    /// written out.)
    #[cfg(feature = "tower")]
    pub(crate) async fn first_attempt<T, E, Fut>(
        &self,
        op: impl FnOnce() -> Fut,
        call: &CallLabels<'_>,
        retry_span: &tracing::Span,
    ) -> Result<Result<T, RetryError<E>>, FirstFailure<E>>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let start = match self.begin_first(call) {
            Ok(start) => start,
            Err(refused) => return Ok(Err(refused)),
        };
        let attempt_span = first_attempt_span(retry_span);
        let outcome = match self.first_limit() {
            None => Ok(InSpan::new(op(), attempt_span).await),
            limit => Bounded::new(op().instrument(attempt_span), limit).await,
        };
        self.end_first(call, start, outcome)
    }

    /// The first attempt up to its call: admission (`Err` when the breaker refuses it, counted)
    /// and the first-try `attempt` metric; what [`end_first`](Self::end_first) needs.
    #[inline]
    pub(crate) fn begin_first<E>(
        &self,
        call: &CallLabels<'_>,
    ) -> Result<FirstStart, RetryError<E>> {
        self.begin_first_with(call, RetryMetrics::first_try)
    }

    /// [`begin_first`](Self::begin_first), with the first-try series found by `first_try`
    /// (given the metrics, the service and the operation): for a caller that keeps them.
    #[inline]
    pub(crate) fn begin_first_with<E>(
        &self,
        call: &CallLabels<'_>,
        first_try: impl FnOnce(&RetryMetrics, &str, &str) -> Arc<FirstTry>,
    ) -> Result<FirstStart, RetryError<E>> {
        let guarded = self.is_guarded();
        if guarded {
            if let Some(retry_after) = self.refuse_first(call) {
                return Err(RetryError::CircuitOpen { retry_after });
            }
        }
        let first_try = call.metrics.map(|m| {
            let ft = first_try(m, call.service, call.operation);
            ft.attempt();
            ft
        });
        Ok(FirstStart { first_try })
    }

    /// [`begin_first_with`](Self::begin_first_with) for a call on `service` that started at
    /// `started()`, its operation named (by `operation`) and its start read only when the
    /// breaker or the metrics need them.
    #[cfg(feature = "tower")]
    #[inline]
    pub(crate) fn begin_first_since<'a, E>(
        &'a self,
        service: &'a str,
        operation: impl FnOnce() -> &'a str,
        started: impl FnOnce() -> Instant,
        first_try: impl FnOnce(&RetryMetrics, &str, &str) -> Arc<FirstTry>,
    ) -> Result<FirstStart, RetryError<E>> {
        if !self.is_guarded() && matches!(self.metrics, MetricsChoice::Off) {
            return Ok(FirstStart { first_try: None });
        }
        let call = self.call_labels_since(service, operation(), started());
        self.begin_first_with(&call, first_try)
    }

    /// Whether anything reads when a call started: its metrics (the durations), a `max_elapsed`
    /// (the deadline), a policy engine (the state it decides on). A host that reports nothing
    /// else of it — the HTTP layer, whose errors carry no elapsed time — need not read the
    /// clock for it (a clock read is ~25 ns on a VM, more than the rest of a first attempt's
    /// bookkeeping), and starts the retries' clock when the first attempt fails.
    #[cfg(feature = "tower")]
    #[inline]
    pub(crate) fn reads_call_start(&self) -> bool {
        !matches!(self.metrics, MetricsChoice::Off)
            || self.policy.max_elapsed_us().is_some()
            || self.engine.is_some()
    }

    /// The first attempt's limit: the policy's attempt timeout or `max_elapsed`, whichever is
    /// first (all of `max_elapsed` is left for the first call).
    #[inline]
    pub(crate) fn first_limit(&self) -> Option<Duration> {
        earliest(
            self.attempt_timeout,
            self.policy.max_elapsed_us().map(Duration::from_micros),
        )
    }

    /// The breaker's admission of a first call: `Some(wait)` when it is refused (counted).
    fn refuse_first(&self, call: &CallLabels<'_>) -> Option<Duration> {
        let (service, operation) = (call.service, call.operation);
        let retry_after = self.admit(service)?;
        if let Some(m) = call.metrics {
            m.circuit_rejected(service, operation);
            m.failure(
                service,
                operation,
                GiveUpReason::CircuitOpen.name(),
                call.started.elapsed().as_secs_f64(),
            );
        }
        Some(retry_after)
    }

    /// A first attempt that succeeded, for a call on `service` that started at `started()`
    /// (read only for the metrics): the guards and the first-try metrics hear of it.
    #[inline]
    pub(crate) fn first_succeeded(
        &self,
        service: &str,
        started: impl FnOnce() -> Instant,
        start: &FirstStart,
    ) {
        if self.is_guarded() || start.first_try.is_some() {
            let took = start.first_try.as_ref().map(|_| started().elapsed());
            self.report_first_success(service, took, start);
        }
    }

    fn report_first_success(&self, service: &str, took: Option<Duration>, start: &FirstStart) {
        if self.is_guarded() {
            let now_us = self.clock.now_us();
            self.with_guards(service, |g| RetryState::new(0, 0).on_success(now_us, g));
        }
        if let (Some(ft), Some(took)) = (&start.first_try, took) {
            ft.success(took.as_secs_f64());
        }
    }

    /// The first attempt after its call ended (`Err(limit)` when it ran out of time): on a
    /// success the guards and the first-try metrics hear of it; a failure is handed on to
    /// [`retry_after_failure`](Self::retry_after_failure).
    #[inline]
    pub(crate) fn end_first<T, E>(
        &self,
        call: &CallLabels<'_>,
        start: FirstStart,
        outcome: Result<Result<T, E>, Duration>,
    ) -> Result<Result<T, RetryError<E>>, FirstFailure<E>> {
        match outcome {
            Ok(Ok(value)) => {
                self.first_succeeded(call.service, || call.started, &start);
                Ok(Ok(value))
            }
            Ok(Err(e)) => Err(FirstFailure {
                error: AttemptError::Failed(e),
                first_try: start.first_try,
            }),
            Err(limit) => Err(FirstFailure {
                error: AttemptError::TimedOut(limit),
                first_try: start.first_try,
            }),
        }
    }

    /// The call after its first attempt failed: decide, sleep, try again (`op`), until a
    /// success or a give-up. Run it inside the call's `retry` span.
    pub(crate) async fn retry_after_failure<T, E, F, Fut, C>(
        &self,
        mut op: F,
        call: &CallLabels<'_>,
        classify: C,
        failure: FirstFailure<E>,
    ) -> Result<T, RetryError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: fmt::Display,
        C: Fn(&E) -> Classification,
    {
        let FirstFailure {
            mut error,
            first_try,
        } = failure;
        let (service, operation) = (call.service, call.operation);
        let guarded = self.is_guarded();
        // The seed and the clock are only needed from here: a first-try success reads no clock
        // but `started` and draws no seed.
        let started_us = self
            .clock
            .now_us()
            .saturating_sub(micros(call.started.elapsed()));
        let mut state = RetryState::new(self.seed_for_call(), started_us);
        let mut trace_id: Option<String> = None;
        let mut attempt: u32 = 1;
        loop {
            let class = match &error {
                AttemptError::Failed(e) => classify(e),
                AttemptError::TimedOut(_) => Classification::new(ErrorCategory::Timeout),
            };
            let mut failure = Failure::new(class.category);
            failure.server_delay_us = class.server_delay.map(micros);
            if class.category == ErrorCategory::AuthExpired {
                if let Some(refresh) = &self.token_refresh {
                    // Only for a retry that can follow, and within the time an attempt has.
                    if state.may_retry_auth(&self.policy) {
                        failure.token_refreshed = self.refresh(refresh, &state, call).await;
                    }
                }
            }
            let trace = trace_id
                .get_or_insert_with(|| {
                    let id = current_trace_id();
                    tracing::Span::current().record("trace_id", id.as_str());
                    id
                })
                .as_str();
            let message = self.render(&error);
            tracing::warn!(target: TARGET, service, operation, attempt, delay = 0.0_f64, error = message.as_str(), trace_id = trace);
            let now_us = self.clock.now_us();
            let decision = if class.do_not_retry {
                // Final whatever the policy would say: the guards still hear of it.
                if guarded {
                    self.with_guards(service, |g| {
                        state.report_to_guards(&self.policy, failure, now_us, g);
                    });
                }
                Decision::GiveUp {
                    reason: GiveUpReason::NonRetryable,
                }
            } else {
                self.decide_guarded(&mut state, failure, now_us, guarded, call)
            };
            let failed = Failed {
                error,
                category: class.category,
                message,
                trace_id: trace.to_string(),
            };
            let (sleep_us, backoff_us) = match decision {
                Decision::GiveUp { reason } => {
                    return Err(self.give_up(call, reason, attempt, failed))
                }
                Decision::Retry {
                    delay_us,
                    slot_request: None,
                } => (delay_us, delay_us),
                Decision::Retry {
                    delay_us,
                    slot_request: Some(_),
                } => {
                    // The latest the retry may fire, from the time left now (after the
                    // decision, which an engine may have taken a while over).
                    let fire_by = state
                        .time_left_us(&self.policy, self.clock.now_us())
                        .map(|left| Instant::now() + Duration::from_micros(left));
                    let scheduled = schedule_retry_before(
                        self.coordinator.as_ref(),
                        &self.policy,
                        state.seed(),
                        attempt,
                        delay_us,
                        service,
                        operation,
                        self.coordination_deadline,
                        call.metrics,
                        fire_by,
                    )
                    .await;
                    match scheduled {
                        Scheduled::FireIn {
                            delay_us: slotted_us,
                            ..
                        } => (slotted_us, delay_us),
                        Scheduled::GiveUp(reason) => {
                            return Err(self.give_up(call, reason, attempt, failed))
                        }
                    }
                }
            };
            let message = failed.message.as_str();
            tracing::info!(target: TARGET, service, operation, attempt, delay = sleep_us as f64 / 1e6, error = message, trace_id = trace);
            if let Some(notify) = &self.notify {
                notify(&RetryEvent {
                    service,
                    operation,
                    attempt,
                    delay: Duration::from_micros(sleep_us),
                    backoff: Duration::from_micros(backoff_us),
                    error: message,
                });
            }
            tokio::time::sleep(Duration::from_micros(sleep_us)).await;

            // The next attempt. `failed` is the call's last error if it stops before it.
            attempt = state.calls() + 1;
            let time_left = state
                .time_left_us(&self.policy, self.clock.now_us())
                .map(Duration::from_micros);
            if time_left == Some(Duration::ZERO) {
                return Err(self.give_up(call, GiveUpReason::Deadline, attempt - 1, failed));
            }
            if guarded && self.admit(service).is_some() {
                if let Some(m) = call.metrics {
                    m.circuit_rejected(service, operation);
                }
                return Err(self.give_up(call, GiveUpReason::CircuitOpen, attempt - 1, failed));
            }
            drop(failed);
            if let Some(m) = call.metrics {
                m.attempt(service, operation, attempt);
            }
            let attempt_span = tracing::debug_span!(target: TARGET, "attempt", attempt);
            let outcome = Bounded::new(
                op().instrument(attempt_span),
                earliest(self.attempt_timeout, time_left),
            )
            .await;
            error = match outcome {
                Ok(Ok(value)) => {
                    if guarded {
                        let now_us = self.clock.now_us();
                        self.with_guards(service, |g| state.on_success(now_us, g));
                    }
                    if let (Some(m), Some(ft)) = (call.metrics, &first_try) {
                        m.success(service, operation, attempt);
                        ft.duration(call.started.elapsed().as_secs_f64());
                    }
                    return Ok(value);
                }
                Ok(Err(e)) => AttemptError::Failed(e),
                Err(limit) => AttemptError::TimedOut(limit),
            };
        }
    }

    /// The error text of a failed attempt as it is logged: secrets scrubbed, then the caller's
    /// redactor.
    fn render<E: fmt::Display>(&self, error: &AttemptError<E>) -> String {
        let text = error.to_string();
        let scrubbed = scrub_secrets(&text);
        match &self.redactor {
            Some(redact) => redact(&scrubbed),
            None => scrubbed.into_owned(),
        }
    }

    /// Calls the token refresh within the time an attempt would have; false when it ran out.
    async fn refresh(
        &self,
        refresh: &TokenRefresh,
        state: &RetryState,
        call: &CallLabels<'_>,
    ) -> bool {
        let time_left = state
            .time_left_us(&self.policy, self.clock.now_us())
            .map(Duration::from_micros);
        match Bounded::new(refresh(), earliest(self.attempt_timeout, time_left)).await {
            Ok(refreshed) => refreshed,
            Err(limit) => {
                tracing::warn!(
                    service = call.service,
                    operation = call.operation,
                    limit_s = limit.as_secs_f64(),
                    "token refresh did not finish in time; the expired credentials are not retried"
                );
                false
            }
        }
    }

    /// Stops the call for `reason` after `attempts` calls: the ERROR line, the failure metrics
    /// and the error the caller gets.
    fn give_up<E>(
        &self,
        call: &CallLabels<'_>,
        reason: GiveUpReason,
        attempts: u32,
        failed: Failed<E>,
    ) -> RetryError<E> {
        let (service, operation) = (call.service, call.operation);
        tracing::error!(target: TARGET, service, operation, attempt = attempts, delay = 0.0_f64, error = failed.message.as_str(), trace_id = failed.trace_id.as_str());
        if let Some(m) = call.metrics {
            let error_type = match reason {
                GiveUpReason::Exhausted | GiveUpReason::NonRetryable => failed.category.name(),
                other => other.name(),
            };
            m.failure(
                service,
                operation,
                error_type,
                call.started.elapsed().as_secs_f64(),
            );
        }
        match (reason, failed.error) {
            (GiveUpReason::NonRetryable, AttemptError::Failed(e)) => RetryError::NonRetryable(e),
            (reason, last_error) => RetryError::MaxRetriesExceeded(MaxRetriesExceeded {
                attempts,
                last_error,
                elapsed: call.started.elapsed(),
                reason,
            }),
        }
    }

    /// One decision, with the service's breaker and budget when the policy has them.
    ///
    /// The linked-in core decides under the lock: it takes well under a microsecond and never
    /// blocks, and the lock keeps every update in order. An engine decides on a copy, outside
    /// the lock (see the module docs).
    fn decide_guarded(
        &self,
        state: &mut RetryState,
        failure: Failure,
        now_us: u64,
        guarded: bool,
        call: &CallLabels<'_>,
    ) -> Decision {
        if !guarded {
            return self.decide(state, failure, now_us, Guards::none(), call);
        }
        if self.engine.is_none() {
            return self.with_guards(call.service, |g| {
                state.on_failure(&self.policy, failure, now_us, g)
            });
        }
        let before = *state;
        let copied = *self.service_guards(&mut self.lock_guards(), call.service);
        let mut decided = copied;
        let decision = self.decide(state, failure, now_us, decided.lend(), call);
        let mut map = self.lock_guards();
        let current = self.service_guards(&mut map, call.service);
        if *current == copied {
            *current = decided;
        } else if decided != copied {
            // Another call's outcome landed meanwhile: report this failure to the guards as
            // they are now, as the core would have, rather than overwrite that outcome.
            before.report_to_guards(&self.policy, failure, now_us, current.lend());
        }
        decision
    }

    /// One decision: by the engine when one is set (natively when it fails, counted), by the
    /// linked-in core otherwise.
    fn decide(
        &self,
        state: &mut RetryState,
        failure: Failure,
        now_us: u64,
        mut guards: Guards<'_>,
        call: &CallLabels<'_>,
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
                    let (service, operation) = (call.service, call.operation);
                    tracing::warn!(service, operation, engine = engine.name(), reason = e.reason(), error = %e, "policy engine failed; the native policy decides");
                    if let Some(m) = call.metrics {
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
        let mut map = self.lock_guards();
        let g = self.service_guards(&mut map, service);
        match g.breaker.as_mut()?.admit(now_us) {
            Admission::Allowed | Admission::Probe => None,
            Admission::Rejected { retry_after_us } => Some(Duration::from_micros(retry_after_us)),
        }
    }

    fn lock_guards(&self) -> MutexGuard<'_, GuardMap> {
        self.guards.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The guards of `service` in `map`, made when it is first seen.
    fn service_guards<'m>(&self, map: &'m mut GuardMap, service: &str) -> &'m mut ServiceGuards {
        map.entry(service.to_string())
            .or_insert_with(|| ServiceGuards {
                breaker: self.policy.breaker().map(CircuitBreaker::new),
                budget: self.policy.budget().and_then(|b| RetryBudget::new(b).ok()),
            })
    }

    /// Runs `f` on the guards of `service`, under the lock.
    fn with_guards<R>(&self, service: &str, f: impl FnOnce(Guards<'_>) -> R) -> R {
        let mut map = self.lock_guards();
        f(self.service_guards(&mut map, service).lend())
    }
}

/// The `retry` span of one call.
#[inline]
pub(crate) fn retry_span(service: &str, operation: &str) -> tracing::Span {
    retry_span_with(service, || operation)
}

/// The `retry` span of one call, its operation named (by `operation`) only when it is enabled.
#[inline]
pub(crate) fn retry_span_with<'a>(
    service: &str,
    operation: impl FnOnce() -> &'a str,
) -> tracing::Span {
    tracing::debug_span!(
        target: TARGET,
        "retry",
        service,
        operation = operation(),
        trace_id = tracing::field::Empty
    )
}

/// The `attempt` span of a call's first attempt, a child of its `retry` span.
#[inline]
pub(crate) fn first_attempt_span(retry_span: &tracing::Span) -> tracing::Span {
    tracing::debug_span!(target: TARGET, parent: retry_span, "attempt", attempt = 1_u32)
}

/// A first attempt that was admitted: what its end needs.
pub(crate) struct FirstStart {
    first_try: Option<Arc<FirstTry>>,
}

/// How a call's first attempt failed, and its first-try metrics.
pub(crate) struct FirstFailure<E> {
    error: AttemptError<E>,
    first_try: Option<Arc<FirstTry>>,
}

/// What one call reports under: its labels, its metrics and when it started.
pub(crate) struct CallLabels<'a> {
    service: &'a str,
    operation: &'a str,
    metrics: Option<&'a RetryMetrics>,
    started: Instant,
}

impl<'a> CallLabels<'a> {
    /// When the call started.
    #[cfg(feature = "tower")]
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// The service it reports under.
    #[cfg(feature = "tower")]
    pub(crate) fn service(&self) -> &'a str {
        self.service
    }

    /// The operation it reports under.
    #[cfg(feature = "tower")]
    pub(crate) fn operation(&self) -> &'a str {
        self.operation
    }
}

/// A failed attempt, as the call keeps it until the next one.
struct Failed<E> {
    error: AttemptError<E>,
    category: ErrorCategory,
    /// The error text as logged (scrubbed and redacted).
    message: String,
    trace_id: String,
}

/// The earlier of two optional limits.
#[inline]
fn earliest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A duration in whole microseconds (saturating).
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
