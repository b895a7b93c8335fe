//! What the host gives a policy component: its imports, served by the native backends.
//!
//! | import | served by |
//! |---|---|
//! | `clock.now-us` | the coordinator's clock: the host's wall clock plus the estimated coordinator offset (0 in memory) |
//! | `coordination.acquire-slot` | the configured [`Coordinator`](crate::coordination::Coordinator) (memory or Redis), within the coordination deadline |
//! | `coordination.idempotency-*` | the configured [`IdempotencyStore`](crate::idempotency::IdempotencyStore), within the same deadline |
//! | `metrics.*` | the seed's metrics on the configured Prometheus registry ([`RetryMetrics`](crate::metrics::RetryMetrics)) |
//! | `logging.log` | a `tracing` event with target [`TARGET`](crate::logging::TARGET), rendered by `SeedJsonLayer` |
//!
//! **Deadline and fallback.** A coordination import obeys the same rule as the native
//! `schedule_retry`: all coordinator *and* store calls of one export call share one deadline
//! (25 ms by default); a timeout or a backend error comes back as `coordination-error`, and the
//! host counts a failed `acquire-slot` in
//! `retry_coordination_fallback_total{service,operation,reason}` (reasons `timeout`,
//! `connection`, `backend`, as natively). The guest then takes its local slot and must not count
//! the fallback again. The wait never blocks past the deadline (see `bridge`), and the time is
//! the host's: it is not charged to the guest's time budget, so the deadline is what bounds it.
//!
//! **What a guest may ask for.** A guest is not trusted with names, keys or sizes that outlive
//! the call (metric series, coordinator keys, store records):
//!
//! - `acquire-slot` may name only the service and operation the host called the export for
//!   (`schedule`'s arguments); an export called for none (`decide`, …) may not take a slot at
//!   all. At most [`MAX_SLOT_CALLS_PER_CALL`] acquisitions per export call.
//! - `idempotency-*`: at most [`MAX_STORE_CALLS_PER_CALL`] calls per export call; keys and
//!   fingerprints of at most [`MAX_GUEST_KEY_BYTES`], values of at most
//!   [`MAX_GUEST_VALUE_BYTES`]; a lease of at most [`MAX_GUEST_LEASE_MS`] and a TTL of at most
//!   the config's `idempotency_ttl` (and [`MAX_GUEST_TTL_MS`]) — longer ones are shortened. Every
//!   key is stored under the component's own namespace (`␞component:<sha-256 of the component,
//!   32 hex digits>␟<key>`), so a guest can neither read nor claim a key of the native executor
//!   (`<service>␟<operation>␟<key>`) or of another component; only keys this component claimed
//!   can be completed.
//! - `logging.log`: at most [`MAX_LOG_LINES_PER_CALL`] lines per export call; service and
//!   operation are cut to [`MAX_LOG_NAME_BYTES`], the error to [`MAX_LOG_ERROR_BYTES`], the
//!   trace id to 64 bytes (the JSON encoder escapes what remains).
//!
//! A refused call comes back as `coordination-error::backend` with the rule it broke, touches no
//! backend and is counted in [`ImportStats::refused_import_calls`].
//!
//! **Metrics from a guest.** Known names map onto [`RetryMetrics`](crate::metrics::RetryMetrics)
//! when the labels are exactly the metric's label names: the counters `retry_attempts_total`,
//! `retry_success_total`, `retry_failure_total`, `retry_coordination_fallback_total`,
//! `retry_policy_fallback_total` and the histogram `retry_duration_seconds`. Anything else — an
//! unknown name, missing or extra labels, a label value over 64 bytes or with a control
//! character, a non-finite observation — is ignored and counted in
//! [`ImportStats::ignored_metric_calls`]. So that a guest cannot blow up the registry's
//! cardinality, one component may create at most [`MAX_GUEST_SERIES`] distinct series; further
//! new series are ignored the same way.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

use crate::coordination::CoordinationError;
use crate::engine::HostBackends;
use crate::idempotency::{Begin, HolderToken, StoreError};
use crate::logging::{current_trace_id, TARGET};

use super::bindings::{clock, coordination, logging, metrics, types};
use super::bridge::{run_until, BridgeError};
use super::guest_text::clipped;
use types::{BeginOutcome, Label, LogLevel, LogRecord, SlotGrant};

/// Distinct metric series one component may create.
pub const MAX_GUEST_SERIES: usize = 256;

/// `acquire-slot` calls one export call may make: the first window and every move to a later
/// one (`ricochet_core::MAX_WINDOW_MOVES` = 4), with room to spare.
pub const MAX_SLOT_CALLS_PER_CALL: u32 = 8;

/// `idempotency-*` calls one export call may make.
pub const MAX_STORE_CALLS_PER_CALL: u32 = 16;

/// `logging.log` lines one export call may write (more are dropped and counted).
pub const MAX_LOG_LINES_PER_CALL: u32 = 16;

/// The longest idempotency key or fingerprint a guest may pass, bytes.
pub const MAX_GUEST_KEY_BYTES: usize = 256;

/// The largest result a guest may store, bytes.
pub const MAX_GUEST_VALUE_BYTES: usize = 64 << 10;

/// The longest lease a guest may take, ms (longer ones are shortened to it).
pub const MAX_GUEST_LEASE_MS: u64 = 60_000;

/// The longest TTL a guest may give a result, ms, whatever the config's `idempotency_ttl`.
pub const MAX_GUEST_TTL_MS: u64 = 24 * 3_600_000;

/// The longest service or operation in a guest's log line, bytes.
pub const MAX_LOG_NAME_BYTES: usize = 256;

/// The longest error in a guest's log line, bytes.
pub const MAX_LOG_ERROR_BYTES: usize = 2048;

/// The longest trace id in a guest's log line, bytes (a W3C trace id has 32 hex digits).
const MAX_TRACE_ID_BYTES: usize = 64;

/// Idempotency keys one component may hold open at once (the oldest claim is forgotten first).
const MAX_HELD_KEYS: usize = 1024;

/// Counters of what the imports refused or could not do, shared by a component's instances.
#[derive(Debug, Default)]
pub struct ImportStats {
    /// Metric calls ignored (unknown name, wrong labels, too many series, bad value).
    pub ignored_metric_calls: AtomicU64,
    /// Coordination and store calls that failed or missed the deadline.
    pub backend_failures: AtomicU64,
    /// Coordination and store calls refused without reaching a backend: a slot for a service or
    /// operation the export was not called for, more calls than one export call may make, an
    /// oversize key, fingerprint or value (see the module docs).
    pub refused_import_calls: AtomicU64,
    /// Log lines dropped because the export call had written its share.
    pub dropped_log_lines: AtomicU64,
}

/// State shared by every instance of one component: its key namespace, open idempotency
/// claims, guest metric series, counters.
pub(crate) struct Shared {
    /// The prefix of every idempotency key this component uses.
    key_prefix: String,
    holders: Mutex<(HashMap<String, HolderToken>, VecDeque<String>)>,
    series: Mutex<HashSet<(String, Vec<String>)>>,
    pub(crate) stats: ImportStats,
}

impl Shared {
    /// The shared state of a component whose namespace is `namespace` (the hex digest of its
    /// bytes). The prefix starts with a record separator, which no native key starts with
    /// unless its service name does.
    pub(crate) fn new(namespace: &str) -> Self {
        Self {
            key_prefix: format!("\u{1e}component:{namespace}\u{1f}"),
            holders: Mutex::default(),
            series: Mutex::default(),
            stats: ImportStats::default(),
        }
    }
}

/// What one export call lets the guest's imports do.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallScope {
    /// The service and operation the host called the export for (`schedule`'s): the only ones
    /// `acquire-slot` may name. `None`: the export has none, and may not take a slot.
    pub(crate) names: Option<(String, String)>,
    /// The config's `idempotency_ttl`, seconds: the longest TTL a guest may ask for (see
    /// [`ttl_cap_ms`](Self::ttl_cap_ms); converted only when an import needs it, not per call).
    idempotency_ttl: f64,
}

impl CallScope {
    /// The scope of an export called with `config`, for `names` if any.
    pub(crate) fn new(config: &ricochet_core::RetryConfig, names: Option<(&str, &str)>) -> Self {
        Self {
            names: names.map(|(s, o)| (s.to_string(), o.to_string())),
            idempotency_ttl: config.idempotency_ttl,
        }
    }

    /// The longest TTL a guest may ask for, ms: the config's `idempotency_ttl`, at most
    /// [`MAX_GUEST_TTL_MS`], at least 1.
    pub(crate) fn ttl_cap_ms(&self) -> u64 {
        Duration::try_from_secs_f64(self.idempotency_ttl)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .clamp(1, MAX_GUEST_TTL_MS)
    }
}

/// The guest's memory grew past its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryCapExceeded {
    /// The size the guest asked for, bytes.
    pub requested_bytes: usize,
    /// The cap, bytes.
    pub limit_bytes: usize,
}

impl std::fmt::Display for MemoryCapExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "guest memory would grow to {} bytes, over its cap of {} bytes",
            self.requested_bytes, self.limit_bytes
        )
    }
}

impl std::error::Error for MemoryCapExceeded {}

/// A guest table grew (or was declared) past its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableCapExceeded {
    /// The elements the guest asked for.
    pub requested_elements: usize,
    /// The cap, elements per table.
    pub limit_elements: usize,
}

impl std::fmt::Display for TableCapExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a guest table would grow to {} elements, over its cap of {} elements",
            self.requested_elements, self.limit_elements
        )
    }
}

impl std::error::Error for TableCapExceeded {}

/// The store data of one component instance.
pub struct HostState {
    limits: StoreLimits,
    max_memory_bytes: usize,
    max_table_elements: usize,
    backends: Arc<HostBackends>,
    shared: Arc<Shared>,
    /// What the current export call may do.
    scope: CallScope,
    /// Time the current export call spent in coordinator and store calls (one deadline for all).
    backend_spent: Duration,
    /// `acquire-slot` calls of the current export call.
    slot_calls: u32,
    /// `idempotency-*` calls of the current export call.
    store_calls: u32,
    /// Log lines of the current export call.
    log_lines: u32,
    /// When the current export call started (time-metered stores only).
    pub(crate) call_started: Option<Instant>,
    /// Time the current export call spent in host imports (not the guest's).
    pub(crate) host_time: Duration,
}

impl HostState {
    pub(crate) fn new(
        sandbox: &super::Sandbox,
        backends: Arc<HostBackends>,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            limits: StoreLimitsBuilder::new()
                .memory_size(sandbox.max_memory_bytes)
                .table_elements(sandbox.max_table_elements)
                // A componentized module is a handful of core instances, tables and memories.
                .instances(16)
                .tables(16)
                .memories(4)
                .build(),
            max_memory_bytes: sandbox.max_memory_bytes,
            max_table_elements: sandbox.max_table_elements,
            backends,
            shared,
            scope: CallScope::default(),
            backend_spent: Duration::ZERO,
            slot_calls: 0,
            store_calls: 0,
            log_lines: 0,
            call_started: None,
            host_time: Duration::ZERO,
        }
    }

    /// Prepares for one export call served by `backends`, within `scope`.
    pub(crate) fn begin_call(
        &mut self,
        backends: &Arc<HostBackends>,
        scope: CallScope,
        timed: bool,
    ) {
        if !Arc::ptr_eq(&self.backends, backends) {
            self.backends = backends.clone();
        }
        self.scope = scope;
        self.backend_spent = Duration::ZERO;
        self.slot_calls = 0;
        self.store_calls = 0;
        self.log_lines = 0;
        self.host_time = Duration::ZERO;
        self.call_started = timed.then(Instant::now);
    }

    fn count_fallback(&self, service: &str, operation: &str, reason: &str) {
        self.shared
            .stats
            .backend_failures
            .fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.backends.metrics {
            m.coordination_fallback(service, operation, reason);
        }
    }

    /// Refuses an import call that broke `rule`, without reaching a backend.
    fn refuse(&self, import: &str, rule: &str) -> types::CoordinationError {
        self.shared
            .stats
            .refused_import_calls
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(import, rule, "refused an import call of a policy component");
        types::CoordinationError::Backend(format!("{import} refused: {rule}"))
    }

    /// Runs a backend future within what is left of the export call's deadline, accounting
    /// the time as the host's.
    fn wait<T, F>(&mut self, future: F) -> Result<T, BridgeError>
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let budget = self.backends.deadline.saturating_sub(self.backend_spent);
        let started = Instant::now();
        let result = if budget.is_zero() {
            Err(BridgeError::Timeout)
        } else {
            run_until(started + budget, future)
        };
        let spent = started.elapsed();
        self.backend_spent += spent;
        self.host_time += spent;
        result
    }

    /// Counts one more store call of this export call, or refuses it.
    fn admit_store_call(&mut self, import: &str) -> Result<(), types::CoordinationError> {
        if self.store_calls >= MAX_STORE_CALLS_PER_CALL {
            return Err(self.refuse(
                import,
                &format!("one call may make at most {MAX_STORE_CALLS_PER_CALL} idempotency calls"),
            ));
        }
        self.store_calls += 1;
        Ok(())
    }

    fn store_call<T, F>(&mut self, future: F) -> Result<T, types::CoordinationError>
    where
        F: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        let result = match self.wait(future) {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => store_error(e),
            Err(e) => bridge_error(e),
        };
        self.shared
            .stats
            .backend_failures
            .fetch_add(1, Ordering::Relaxed);
        Err(result)
    }

    /// The store key of the guest's `key`: under this component's namespace.
    fn store_key(&self, key: &str) -> String {
        let mut stored = String::with_capacity(self.shared.key_prefix.len() + key.len());
        stored.push_str(&self.shared.key_prefix);
        stored.push_str(key);
        stored
    }

    fn hold(&self, key: String, token: HolderToken) {
        let mut guard = self
            .shared
            .holders
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *guard;
        if map.insert(key.clone(), token).is_none() {
            order.push_back(key);
            while map.len() > MAX_HELD_KEYS {
                match order.pop_front() {
                    Some(oldest) => {
                        map.remove(&oldest);
                    }
                    None => break,
                }
            }
        }
    }

    /// Whether this component holds the claim on `key` (a store key).
    fn holds(&self, key: &str) -> bool {
        let guard = self
            .shared
            .holders
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        guard.0.contains_key(key)
    }

    fn release(&self, key: &str) -> Option<HolderToken> {
        let mut guard = self
            .shared
            .holders
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *guard;
        let token = map.remove(key)?;
        order.retain(|k| k != key);
        Some(token)
    }

    fn ignore_metric(&self, name: &str, why: &str) {
        self.shared
            .stats
            .ignored_metric_calls
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            metric = %clipped(name.to_string(), 64),
            why,
            "ignored a metric from a policy component"
        );
    }

    /// The label values of `labels` in the order of `names`, if they are exactly those names,
    /// and the series is known or may still be created.
    fn series(&self, metric: &str, names: &[&str], labels: Vec<Label>) -> Option<Vec<String>> {
        if labels.len() != names.len() {
            self.ignore_metric(metric, "labels are not the metric's label names");
            return None;
        }
        let mut values = vec![None; names.len()];
        for label in labels {
            let Some(i) = names.iter().position(|n| *n == label.name) else {
                self.ignore_metric(metric, "unknown label");
                return None;
            };
            if label.value.len() > 64
                || label.value.chars().any(char::is_control)
                || values[i].is_some()
            {
                self.ignore_metric(
                    metric,
                    "label value too long, with a control character, or repeated",
                );
                return None;
            }
            values[i] = Some(label.value);
        }
        let values: Vec<String> = values.into_iter().flatten().collect();
        let mut series = self.shared.series.lock().unwrap_or_else(|p| p.into_inner());
        let key = (metric.to_string(), values);
        if !series.contains(&key) {
            if series.len() >= MAX_GUEST_SERIES {
                drop(series);
                self.ignore_metric(metric, "too many series from this component");
                return None;
            }
            series.insert(key.clone());
        }
        Some(key.1)
    }
}

fn bridge_error(e: BridgeError) -> types::CoordinationError {
    match e {
        BridgeError::Timeout => types::CoordinationError::Timeout,
        BridgeError::Down => {
            types::CoordinationError::Connection("the host's bridge runtime is down".into())
        }
    }
}

fn coordination_error(e: CoordinationError) -> types::CoordinationError {
    match e {
        CoordinationError::Timeout => types::CoordinationError::Timeout,
        CoordinationError::Connection(m) => types::CoordinationError::Connection(m),
        other => types::CoordinationError::Backend(other.to_string()),
    }
}

fn store_error(e: StoreError) -> types::CoordinationError {
    match e {
        StoreError::Timeout => types::CoordinationError::Timeout,
        StoreError::Connection(m) => types::CoordinationError::Connection(m),
        other => types::CoordinationError::Backend(other.to_string()),
    }
}

/// Reason labels, as the native `schedule_retry` spells them.
fn reason(e: &types::CoordinationError) -> &'static str {
    match e {
        types::CoordinationError::Timeout => "timeout",
        types::CoordinationError::Connection(_) => "connection",
        types::CoordinationError::Backend(_) => "backend",
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if self.limits.memory_growing(current, desired, maximum)? {
            Ok(true)
        } else {
            // A trap, not a -1: the guest's allocator would turn -1 into an anonymous abort.
            Err(MemoryCapExceeded {
                requested_bytes: desired,
                limit_bytes: self.max_memory_bytes,
            }
            .into())
        }
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if self.limits.table_growing(current, desired, maximum)? {
            Ok(true)
        } else {
            // A trap, like memory: a guest that grows a table past the cap is hostile, and a
            // pooled instance would otherwise keep what it did manage to grow.
            Err(TableCapExceeded {
                requested_elements: desired,
                limit_elements: self.max_table_elements,
            }
            .into())
        }
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl types::Host for HostState {}

impl clock::Host for HostState {
    fn now_us(&mut self) -> u64 {
        self.backends.coordinator.now_us()
    }
}

impl coordination::Host for HostState {
    fn acquire_slot(
        &mut self,
        service: String,
        operation: String,
        delay_us: u64,
        window_us: u64,
    ) -> Result<SlotGrant, types::CoordinationError> {
        const IMPORT: &str = "acquire-slot";
        let bound = matches!(&self.scope.names, Some((s, o)) if *s == service && *o == operation);
        if !bound {
            return Err(self.refuse(
                IMPORT,
                "a slot may be taken only for the service and operation this call was made for",
            ));
        }
        if self.slot_calls >= MAX_SLOT_CALLS_PER_CALL {
            return Err(self.refuse(
                IMPORT,
                &format!("one call may take at most {MAX_SLOT_CALLS_PER_CALL} slots"),
            ));
        }
        self.slot_calls += 1;
        let coordinator = self.backends.coordinator.clone();
        let (svc, op) = (service.clone(), operation.clone());
        let answer = self.wait(async move {
            coordinator
                .acquire_slot(&svc, &op, delay_us, window_us)
                .await
        });
        let error = match answer {
            Ok(Ok(g)) => {
                return Ok(SlotGrant {
                    ticket: g.ticket,
                    window: g.window,
                    earliest_us: g.earliest_us,
                    now_us: g.now_us,
                })
            }
            Ok(Err(e)) => coordination_error(e),
            Err(e) => bridge_error(e),
        };
        self.count_fallback(&service, &operation, reason(&error));
        Err(error)
    }

    fn idempotency_begin(
        &mut self,
        key: String,
        fingerprint: String,
        lease_ms: u64,
    ) -> Result<BeginOutcome, types::CoordinationError> {
        const IMPORT: &str = "idempotency-begin";
        if key.len() > MAX_GUEST_KEY_BYTES || fingerprint.len() > MAX_GUEST_KEY_BYTES {
            return Err(self.refuse(
                IMPORT,
                &format!("keys and fingerprints may be at most {MAX_GUEST_KEY_BYTES} bytes"),
            ));
        }
        self.admit_store_call(IMPORT)?;
        let lease_ms = lease_ms.clamp(1, MAX_GUEST_LEASE_MS);
        let store = self.backends.idempotency.clone();
        let stored = self.store_key(&key);
        let k = stored.clone();
        let begun =
            self.store_call(async move { store.begin(&k, &fingerprint, lease_ms).await })?;
        Ok(match begun {
            Begin::Started(token) => {
                self.hold(stored, token);
                BeginOutcome::Started
            }
            Begin::Completed(value) => BeginOutcome::Completed(value),
            Begin::InProgress { .. } => BeginOutcome::InProgress,
            // `Mismatch` and any outcome a newer store adds: the caller must not run.
            _ => BeginOutcome::Mismatch,
        })
    }

    fn idempotency_complete(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> Result<(), types::CoordinationError> {
        const IMPORT: &str = "idempotency-complete";
        if value.len() > MAX_GUEST_VALUE_BYTES {
            return Err(self.refuse(
                IMPORT,
                &format!("a stored value may be at most {MAX_GUEST_VALUE_BYTES} bytes"),
            ));
        }
        let stored = self.store_key(&key);
        if !self.holds(&stored) {
            return Err(types::CoordinationError::Backend(format!(
                "idempotency key `{}` is not held by this component",
                clipped(key, MAX_GUEST_KEY_BYTES)
            )));
        }
        self.admit_store_call(IMPORT)?;
        let Some(token) = self.release(&stored) else {
            return Err(types::CoordinationError::Backend(
                "idempotency key is no longer held by this component".into(),
            ));
        };
        let ttl_ms = ttl_ms.min(self.scope.ttl_cap_ms()).max(1);
        let store = self.backends.idempotency.clone();
        self.store_call(async move { store.complete(&stored, &token, &value, ttl_ms).await })
    }

    fn idempotency_fail(&mut self, key: String) -> Result<(), types::CoordinationError> {
        let stored = self.store_key(&key);
        if !self.holds(&stored) {
            return Ok(());
        }
        self.admit_store_call("idempotency-fail")?;
        let Some(token) = self.release(&stored) else {
            return Ok(());
        };
        let store = self.backends.idempotency.clone();
        self.store_call(async move { store.fail(&stored, &token).await })
    }
}

impl metrics::Host for HostState {
    fn counter_add(&mut self, name: String, labels: Vec<Label>, value: u64) {
        let Some(m) = self.backends.metrics.clone() else {
            return;
        };
        let (counter, names) = match name.as_str() {
            "retry_attempts_total" => (&m.attempts, ["service", "operation", "attempt"]),
            "retry_success_total" => (&m.success, ["service", "operation", "attempts_needed"]),
            "retry_failure_total" => (&m.failure, ["service", "operation", "error_type"]),
            "retry_coordination_fallback_total" => {
                (&m.coordination_fallback, ["service", "operation", "reason"])
            }
            "retry_policy_fallback_total" => {
                (&m.policy_fallback, ["service", "operation", "reason"])
            }
            _ => return self.ignore_metric(&name, "unknown metric"),
        };
        if let Some(values) = self.series(&name, &names, labels) {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            counter.with_label_values(&values).inc_by(value);
        }
    }

    fn histogram_observe(&mut self, name: String, labels: Vec<Label>, value: f64) {
        let Some(m) = self.backends.metrics.clone() else {
            return;
        };
        if name != "retry_duration_seconds" {
            return self.ignore_metric(&name, "unknown metric");
        }
        if !value.is_finite() || value < 0.0 {
            return self.ignore_metric(&name, "not a finite, non-negative duration");
        }
        if let Some(values) = self.series(&name, &["service", "operation"], labels) {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            m.duration.with_label_values(&values).observe(value);
        }
    }
}

impl logging::Host for HostState {
    fn log(&mut self, line: LogRecord) {
        if self.log_lines >= MAX_LOG_LINES_PER_CALL {
            self.shared
                .stats
                .dropped_log_lines
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.log_lines += 1;
        let LogRecord {
            level,
            service,
            operation,
            attempt,
            delay,
            error,
            trace_id,
        } = line;
        let service = clipped(service, MAX_LOG_NAME_BYTES);
        let operation = clipped(operation, MAX_LOG_NAME_BYTES);
        let error = error.map(|e| clipped(e, MAX_LOG_ERROR_BYTES));
        let trace_id = trace_id.map_or_else(current_trace_id, |t| clipped(t, MAX_TRACE_ID_BYTES));
        let (service, operation) = (service.as_str(), operation.as_str());
        let (error, trace_id) = (error.as_deref().unwrap_or(""), trace_id.as_str());
        match level {
            LogLevel::Debug => {
                tracing::debug!(target: TARGET, service, operation, attempt, delay, error, trace_id)
            }
            LogLevel::Info => {
                tracing::info!(target: TARGET, service, operation, attempt, delay, error, trace_id)
            }
            LogLevel::Warning => {
                tracing::warn!(target: TARGET, service, operation, attempt, delay, error, trace_id)
            }
            LogLevel::Error => {
                tracing::error!(target: TARGET, service, operation, attempt, delay, error, trace_id)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::metrics::RetryMetrics;
    use coordination::Host as _;
    use metrics::Host as _;

    fn state(metrics: Option<RetryMetrics>) -> HostState {
        let backends = Arc::new(HostBackends {
            metrics,
            ..HostBackends::default()
        });
        let mut s = HostState::new(
            &crate::component::Sandbox::default(),
            backends.clone(),
            Arc::new(Shared::new("test")),
        );
        let scope = CallScope::new(&ricochet_core::RetryConfig::DEFAULT, Some(("svc", "op")));
        s.begin_call(&backends, scope, false);
        s
    }

    fn label(name: &str, value: &str) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }

    /// Issue 14, item 8, the component path: a guest's `acquire-slot` with a window of 0 or a
    /// fire time past 2^53 is refused by the coordinator's check before any backend sees it.
    #[test]
    fn acquire_slot_refuses_what_a_script_cannot_compute_exactly() {
        let mut s = state(None);
        for (delay_us, window_us) in [(0, 0), (9_007_199_254_740_993, 1), (i64::MAX as u64, 1)] {
            match s.acquire_slot("svc".into(), "op".into(), delay_us, window_us) {
                Err(types::CoordinationError::Backend(message)) => {
                    assert!(message.contains("window_us"), "{message}")
                }
                other => panic!("delay {delay_us}, window {window_us}: {other:?}"),
            }
        }
        assert!(s
            .acquire_slot("svc".into(), "op".into(), 0, 1_000_000)
            .is_ok());
    }

    #[test]
    fn idempotency_imports_claim_complete_and_release_through_the_store() {
        let mut s = state(None);
        let begin = |s: &mut HostState, fp: &str| {
            s.idempotency_begin("order-1".into(), fp.into(), 10_000)
                .unwrap()
        };
        assert!(matches!(begin(&mut s, "fp"), BeginOutcome::Started));
        assert!(matches!(begin(&mut s, "fp"), BeginOutcome::InProgress));
        assert!(matches!(begin(&mut s, "other"), BeginOutcome::Mismatch));
        s.idempotency_complete("order-1".into(), b"done".to_vec(), 60_000)
            .unwrap();
        match begin(&mut s, "fp") {
            BeginOutcome::Completed(v) => assert_eq!(v, b"done"),
            _ => panic!("expected the stored result"),
        }
        // A key this component never claimed cannot be completed; releasing it is a no-op.
        assert!(s.idempotency_complete("order-2".into(), vec![], 1).is_err());
        s.idempotency_fail("order-2".into()).unwrap();
        // A failed run releases the key for a retry.
        assert!(matches!(
            s.idempotency_begin("order-3".into(), "fp".into(), 10_000)
                .unwrap(),
            BeginOutcome::Started
        ));
        s.idempotency_fail("order-3".into()).unwrap();
        assert!(matches!(
            s.idempotency_begin("order-3".into(), "fp".into(), 10_000)
                .unwrap(),
            BeginOutcome::Started
        ));
    }

    #[test]
    fn known_metrics_reach_the_registry_and_the_rest_is_ignored_and_bounded() {
        let registry = prometheus::Registry::new();
        let m = RetryMetrics::register(&registry).unwrap();
        let mut s = state(Some(m.clone()));
        let so = || vec![label("service", "svc"), label("operation", "op")];
        // Labels in any order.
        s.counter_add(
            "retry_attempts_total".into(),
            vec![
                label("attempt", "2"),
                label("operation", "op"),
                label("service", "svc"),
            ],
            3,
        );
        assert_eq!(m.attempts.with_label_values(&["svc", "op", "2"]).get(), 3);
        s.histogram_observe("retry_duration_seconds".into(), so(), 0.25);
        assert_eq!(
            m.duration
                .with_label_values(&["svc", "op"])
                .get_sample_count(),
            1
        );
        let ignored = |s: &HostState| s.shared.stats.ignored_metric_calls.load(Ordering::Relaxed);
        s.counter_add("made_up_total".into(), so(), 1);
        s.counter_add("retry_attempts_total".into(), so(), 1); // a label missing
        let mut extra = so();
        extra.push(label("attempt", "1"));
        extra.push(label("pod", "a"));
        s.counter_add("retry_attempts_total".into(), extra, 1); // one too many
        s.histogram_observe("retry_duration_seconds".into(), so(), f64::NAN);
        assert_eq!(ignored(&s), 4);
        // At most MAX_GUEST_SERIES series per component.
        for i in 0..MAX_GUEST_SERIES + 10 {
            s.counter_add(
                "retry_failure_total".into(),
                vec![
                    label("service", &format!("s{i}")),
                    label("operation", "op"),
                    label("error_type", "x"),
                ],
                1,
            );
        }
        // Two series already exist (attempts, duration).
        assert_eq!(ignored(&s), 4 + 12);
    }
}
