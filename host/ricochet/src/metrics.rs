//! The seed's metrics, exactly: names, labels and buckets, on a `prometheus` registry
//! (feature `prometheus`).
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `retry_attempts_total` | counter | service, operation, attempt |
//! | `retry_success_total` | counter | service, operation, attempts_needed |
//! | `retry_failure_total` | counter | service, operation, error_type |
//! | `retry_duration_seconds` | histogram (0.1, 0.5, 1, 2, 5, 10) | service, operation |
//! | `retry_coordination_fallback_total` | counter | service, operation, reason |
//! | `retry_circuit_rejected_total` | counter | service, operation |
//! | `retry_policy_fallback_total` | counter | service, operation, reason |
//! | `retry_idempotency_fallback_total` | counter | service, operation, reason |
//! | `retry_clock_offset_seconds` | gauge | — |
//!
//! `retry_attempts_total` counts every call made (attempt 1 is the first call);
//! `retry_success_total` and `retry_failure_total` count logical operations once, when they
//! end; `error_type` is the error category of the last attempt (or the give-up reason for
//! reasons that are not errors, e.g. `circuit_open`, `deadline`), never free text.
//! `retry_circuit_rejected_total` counts the calls a circuit breaker refused; an operation that
//! ends because of it — whether its first call was refused or a retry was — also counts once in
//! `retry_failure_total{error_type="circuit_open"}`, so an alert on failures sees it.
//!
//! # Cardinality
//!
//! The labels ricochet chooses are bounded: `attempt ≤ max_attempts`, `error_type` and `reason`
//! come from fixed lists. **`service` and `operation` are not**: they are the caller's strings,
//! and each distinct pair is a new series on the registry (and a new breaker and budget when the
//! policy has them). Keep them to names fixed in code (`#[with_retry]` makes them literals),
//! never request data such as a URL or a user id. To keep the first-try path free of label
//! hashing, the series of the first [`MAX_FIRST_TRY_CACHE`] pairs are cached; further pairs are
//! still recorded, through prometheus's own lookup, so a runaway label costs the registry, not
//! this cache.
//!
//! # Which registry
//!
//! A library emits; the application decides where. [`RetryPolicy::with_metrics`] takes metrics
//! registered on the application's registry ([`RetryMetrics::register`]). Without it, a policy
//! uses [`RetryMetrics::default_registry`]: registered on prometheus's default registry the first
//! time a policy records something — and never a panic: a name the application registered there
//! already is left to the application (ricochet's series of that name are then not exported) and
//! one warning says so.
//!
//! Without the `prometheus` feature, [`RetryMetrics`] cannot be made and nothing is recorded.
//!
//! [`RetryPolicy::with_metrics`]: crate::RetryPolicy::with_metrics

#[cfg(feature = "prometheus")]
pub use enabled::*;

#[cfg(not(feature = "prometheus"))]
pub use disabled::*;

/// The seed's histogram buckets for `retry_duration_seconds`.
pub const DURATION_BUCKETS: [f64; 6] = [0.1, 0.5, 1.0, 2.0, 5.0, 10.0];

/// How many `(service, operation)` pairs keep their first-try series cached.
pub const MAX_FIRST_TRY_CACHE: usize = 1024;

#[cfg(feature = "prometheus")]
mod enabled {
    use std::collections::HashMap;
    use std::sync::{Arc, OnceLock, RwLock};

    use prometheus::core::Collector;
    use prometheus::{
        Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
    };

    use super::{DURATION_BUCKETS, MAX_FIRST_TRY_CACHE};

    /// The retry metrics, registered on one registry.
    #[derive(Clone, Debug)]
    #[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
    pub struct RetryMetrics {
        /// `retry_attempts_total{service,operation,attempt}`.
        pub attempts: IntCounterVec,
        /// `retry_success_total{service,operation,attempts_needed}`.
        pub success: IntCounterVec,
        /// `retry_failure_total{service,operation,error_type}`.
        pub failure: IntCounterVec,
        /// `retry_duration_seconds{service,operation}`.
        pub duration: HistogramVec,
        /// `retry_coordination_fallback_total{service,operation,reason}`.
        pub coordination_fallback: IntCounterVec,
        /// `retry_circuit_rejected_total{service,operation}`: calls a circuit breaker refused.
        pub circuit_rejected: IntCounterVec,
        /// `retry_policy_fallback_total{service,operation,reason}`: a policy component failed
        /// and the native policy of the same config decided instead.
        pub policy_fallback: IntCounterVec,
        /// `retry_idempotency_fallback_total{service,operation,reason}`: idempotent calls that
        /// ran without deduplication (`reason`: `timeout`, `connection`, `backend`), or whose
        /// result could not be stored (`store_<…>`, `lease_lost`, `serialize`, `result_too_large`).
        pub idempotency_fallback: IntCounterVec,
        /// `retry_clock_offset_seconds`: coordinator clock minus local clock.
        pub clock_offset: Gauge,
        /// The series every call touches (`attempt="1"`, `attempts_needed="1"`, the duration),
        /// per service and operation, so the first-try-success path skips prometheus's label
        /// hashing.
        first_try: Arc<RwLock<FirstTryCache>>,
    }

    /// First-try series by service, then operation, and how many pairs that is.
    #[derive(Debug, Default)]
    struct FirstTryCache {
        by_service: HashMap<Box<str>, SeriesByOperation, NameHash>,
        pairs: usize,
    }

    /// One service's first-try series, by operation.
    type SeriesByOperation = HashMap<Box<str>, Arc<FirstTry>, NameHash>;

    /// FNV-1a (64-bit) for the first-try cache: its keys are a few short names from the
    /// application's own code (at most [`MAX_FIRST_TRY_CACHE`] pairs), looked up on every call,
    /// where std's SipHash cost more than the two counters and the histogram it finds.
    type NameHash = std::hash::BuildHasherDefault<Fnv1a>;

    /// The FNV-1a hash state.
    #[derive(Debug, Clone, Copy)]
    struct Fnv1a(u64);

    impl Default for Fnv1a {
        fn default() -> Self {
            Self(0xcbf2_9ce4_8422_2325)
        }
    }

    impl std::hash::Hasher for Fnv1a {
        fn write(&mut self, bytes: &[u8]) {
            for &b in bytes {
                self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }

        fn finish(&self) -> u64 {
            self.0
        }
    }

    /// The series of one `(service, operation)` that a first-try success touches.
    #[derive(Clone, Debug)]
    pub struct FirstTry {
        attempt: IntCounter,
        success: IntCounter,
        duration: Histogram,
    }

    impl FirstTry {
        /// Counts the first call.
        pub(crate) fn attempt(&self) {
            self.attempt.inc();
        }

        /// Records a success on the first call.
        pub(crate) fn success(&self, elapsed_s: f64) {
            self.success.inc();
            self.duration.observe(elapsed_s);
        }

        /// Records the duration of an operation that ended after retries.
        pub(crate) fn duration(&self, elapsed_s: f64) {
            self.duration.observe(elapsed_s);
        }
    }

    impl RetryMetrics {
        /// The metrics, not registered anywhere yet.
        fn unregistered() -> Result<Self, prometheus::Error> {
            let counter = |name: &str, help: &str, labels: &[&str]| {
                IntCounterVec::new(Opts::new(name, help), labels)
            };
            let ops = |extra: &'static str| ["service", "operation", extra];
            Ok(Self {
                attempts: counter(
                    "retry_attempts_total",
                    "Calls made, by attempt number (1 = first call).",
                    &ops("attempt"),
                )?,
                success: counter(
                    "retry_success_total",
                    "Operations that succeeded, by attempts needed.",
                    &ops("attempts_needed"),
                )?,
                failure: counter(
                    "retry_failure_total",
                    "Operations that failed for good, by error type.",
                    &ops("error_type"),
                )?,
                coordination_fallback: counter(
                    "retry_coordination_fallback_total",
                    "Retries that took a local slot because the coordinator did not answer in time.",
                    &ops("reason"),
                )?,
                circuit_rejected: IntCounterVec::new(
                    Opts::new(
                        "retry_circuit_rejected_total",
                        "Calls a circuit breaker refused (no call was made).",
                    ),
                    &["service", "operation"],
                )?,
                policy_fallback: counter(
                    "retry_policy_fallback_total",
                    "Decisions made by the native policy because the policy component failed.",
                    &ops("reason"),
                )?,
                idempotency_fallback: counter(
                    "retry_idempotency_fallback_total",
                    "Idempotent calls that ran without deduplication or could not record their result.",
                    &ops("reason"),
                )?,
                duration: HistogramVec::new(
                    HistogramOpts::new(
                        "retry_duration_seconds",
                        "Duration of whole operations, retries included.",
                    )
                    .buckets(DURATION_BUCKETS.to_vec()),
                    &["service", "operation"],
                )?,
                clock_offset: Gauge::new(
                    "retry_clock_offset_seconds",
                    "Estimated coordinator clock minus local clock, seconds.",
                )?,
                first_try: Arc::default(),
            })
        }

        fn collectors(&self) -> [Box<dyn Collector>; 9] {
            [
                Box::new(self.attempts.clone()),
                Box::new(self.success.clone()),
                Box::new(self.failure.clone()),
                Box::new(self.duration.clone()),
                Box::new(self.coordination_fallback.clone()),
                Box::new(self.circuit_rejected.clone()),
                Box::new(self.policy_fallback.clone()),
                Box::new(self.idempotency_fallback.clone()),
                Box::new(self.clock_offset.clone()),
            ]
        }

        /// Creates the metrics and registers them on `registry`; fails (registering nothing)
        /// if the registry holds one of their names already.
        pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
            let metrics = Self::unregistered()?;
            for (registered, collector) in metrics.collectors().into_iter().enumerate() {
                if let Err(e) = registry.register(collector) {
                    for done in metrics.collectors().into_iter().take(registered) {
                        let _ = registry.unregister(done);
                    }
                    return Err(e);
                }
            }
            Ok(metrics)
        }

        /// The metrics on prometheus's default registry, registered the first time this is
        /// called. A name the application registered there already keeps the application's
        /// collector: ricochet's series of that name still count but are not exported, and one
        /// warning says so. `None` only if the metrics cannot be made at all.
        pub fn default_registry() -> Option<&'static RetryMetrics> {
            static DEFAULT: OnceLock<Option<RetryMetrics>> = OnceLock::new();
            DEFAULT
                .get_or_init(|| {
                    let metrics = Self::unregistered().ok()?;
                    let registry = prometheus::default_registry();
                    for collector in metrics.collectors() {
                        let name = collector
                            .desc()
                            .first()
                            .map(|d| d.fq_name.clone())
                            .unwrap_or_default();
                        if let Err(e) = registry.register(collector) {
                            tracing::warn!(
                                metric = name.as_str(),
                                error = %e,
                                "ricochet's metric is not exported: prometheus's default registry \
                                 holds this name already (use RetryPolicy::with_metrics with a \
                                 registry of your own)"
                            );
                        }
                    }
                    Some(metrics)
                })
                .as_ref()
        }

        /// The first-try series of `(service, operation)`, cached after the first call while
        /// fewer than [`MAX_FIRST_TRY_CACHE`] pairs are.
        pub(crate) fn first_try(&self, service: &str, operation: &str) -> Arc<FirstTry> {
            if let Ok(cache) = self.first_try.read() {
                if let Some(ft) = cache
                    .by_service
                    .get(service)
                    .and_then(|ops| ops.get(operation))
                {
                    return ft.clone();
                }
            }
            let ft = Arc::new(FirstTry {
                attempt: self.attempts.with_label_values(&[service, operation, "1"]),
                success: self.success.with_label_values(&[service, operation, "1"]),
                duration: self.duration.with_label_values(&[service, operation]),
            });
            if let Ok(mut cache) = self.first_try.write() {
                if cache.pairs < MAX_FIRST_TRY_CACHE {
                    let ops = cache.by_service.entry(service.into()).or_default();
                    if ops.insert(operation.into(), ft.clone()).is_none() {
                        cache.pairs += 1;
                    }
                }
            }
            ft
        }

        /// Pairs whose first-try series are cached (at most [`MAX_FIRST_TRY_CACHE`]).
        pub fn first_try_cached(&self) -> usize {
            self.first_try.read().map_or(0, |cache| cache.pairs)
        }

        /// Counts a call the circuit breaker refused.
        pub(crate) fn circuit_rejected(&self, service: &str, operation: &str) {
            self.circuit_rejected
                .with_label_values(&[service, operation])
                .inc();
        }

        /// Counts call number `attempt` (> 1; the first goes through [`FirstTry`]).
        pub(crate) fn attempt(&self, service: &str, operation: &str, attempt: u32) {
            self.attempts
                .with_label_values(&[service, operation, attempt_label(attempt)])
                .inc();
        }

        /// Counts a success that needed `attempts` calls (> 1).
        pub(crate) fn success(&self, service: &str, operation: &str, attempts: u32) {
            self.success
                .with_label_values(&[service, operation, attempt_label(attempts)])
                .inc();
        }

        /// Counts an operation that failed for good, and its duration.
        pub(crate) fn failure(
            &self,
            service: &str,
            operation: &str,
            error_type: &str,
            elapsed_s: f64,
        ) {
            self.failure
                .with_label_values(&[service, operation, error_type])
                .inc();
            self.duration
                .with_label_values(&[service, operation])
                .observe(elapsed_s);
        }

        /// Counts a decision the native policy made because the engine failed.
        pub(crate) fn policy_fallback(&self, service: &str, operation: &str, reason: &str) {
            self.policy_fallback
                .with_label_values(&[service, operation, reason])
                .inc();
        }

        /// Counts a retry that took a local slot.
        pub(crate) fn coordination_fallback(&self, service: &str, operation: &str, reason: &str) {
            self.coordination_fallback
                .with_label_values(&[service, operation, reason])
                .inc();
        }

        /// Counts an idempotent call that ran unguarded or could not record its result.
        pub(crate) fn idempotency_fallback(&self, service: &str, operation: &str, reason: &str) {
            self.idempotency_fallback
                .with_label_values(&[service, operation, reason])
                .inc();
        }

        /// Sets the estimated coordinator clock offset.
        #[cfg_attr(not(feature = "redis"), allow(dead_code))]
        pub(crate) fn clock_offset(&self, seconds: f64) {
            self.clock_offset.set(seconds);
        }
    }

    /// `attempt` as a label value without allocating for the usual range.
    fn attempt_label(attempt: u32) -> &'static str {
        const LABELS: [&str; 21] = [
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
            "16", "17", "18", "19", "20",
        ];
        match LABELS.get(attempt as usize) {
            Some(l) => l,
            // Beyond 20 attempts: leak one string per distinct number (bounded by MAX_ATTEMPTS).
            None => leaked_label(attempt),
        }
    }

    fn leaked_label(attempt: u32) -> &'static str {
        use std::sync::Mutex;
        static MORE: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
        let mut more = MORE.lock().unwrap_or_else(|p| p.into_inner());
        let index = attempt as usize - 21;
        while more.len() <= index {
            let n = 21 + more.len();
            more.push(Box::leak(n.to_string().into_boxed_str()));
        }
        more[index]
    }

    /// Renders a registry in the Prometheus text format.
    #[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
    pub fn render(registry: &Registry) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if encoder.encode_utf8(&registry.gather(), &mut out).is_err() {
            out.clear();
        }
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_first_try_cache_is_bounded_and_every_pair_still_counts() {
            let registry = Registry::new();
            let m = RetryMetrics::register(&registry).expect("register");
            let extra = 100;
            for i in 0..MAX_FIRST_TRY_CACHE + extra {
                let op = format!("op{i}");
                m.first_try("svc", &op).attempt();
                // A second call finds the cached series, or makes it again past the cap.
                m.first_try("svc", &op).attempt();
            }
            assert_eq!(m.first_try_cached(), MAX_FIRST_TRY_CACHE);
            for i in [0, MAX_FIRST_TRY_CACHE - 1, MAX_FIRST_TRY_CACHE + extra - 1] {
                let op = format!("op{i}");
                assert_eq!(m.attempts.with_label_values(&["svc", &op, "1"]).get(), 2);
            }
        }
    }
}

#[cfg(not(feature = "prometheus"))]
mod disabled {
    use std::sync::Arc;

    /// The seed's metrics; without the `prometheus` feature there are none, and this type has
    /// no values (every policy records nothing).
    #[derive(Clone, Debug)]
    pub enum RetryMetrics {}

    /// The series a first-try success touches (none without the `prometheus` feature).
    #[derive(Clone, Debug)]
    pub enum FirstTry {}

    impl FirstTry {
        pub(crate) fn attempt(&self) {
            match *self {}
        }
        pub(crate) fn success(&self, _: f64) {
            match *self {}
        }
        pub(crate) fn duration(&self, _: f64) {
            match *self {}
        }
    }

    impl RetryMetrics {
        /// Without the `prometheus` feature: none.
        pub fn default_registry() -> Option<&'static RetryMetrics> {
            None
        }
        pub(crate) fn first_try(&self, _: &str, _: &str) -> Arc<FirstTry> {
            match *self {}
        }
        pub(crate) fn attempt(&self, _: &str, _: &str, _: u32) {
            match *self {}
        }
        pub(crate) fn success(&self, _: &str, _: &str, _: u32) {
            match *self {}
        }
        pub(crate) fn failure(&self, _: &str, _: &str, _: &str, _: f64) {
            match *self {}
        }
        pub(crate) fn policy_fallback(&self, _: &str, _: &str, _: &str) {
            match *self {}
        }
        pub(crate) fn circuit_rejected(&self, _: &str, _: &str) {
            match *self {}
        }
        pub(crate) fn coordination_fallback(&self, _: &str, _: &str, _: &str) {
            match *self {}
        }
        pub(crate) fn idempotency_fallback(&self, _: &str, _: &str, _: &str) {
            match *self {}
        }
        #[cfg_attr(not(feature = "redis"), allow(dead_code))]
        pub(crate) fn clock_offset(&self, _: f64) {
            match *self {}
        }
    }
}
