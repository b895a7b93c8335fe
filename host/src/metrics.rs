//! The seed's metrics, exactly: names, labels and buckets, on a `prometheus` registry.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `retry_attempts_total` | counter | service, operation, attempt |
//! | `retry_success_total` | counter | service, operation, attempts_needed |
//! | `retry_failure_total` | counter | service, operation, error_type |
//! | `retry_duration_seconds` | histogram (0.1, 0.5, 1, 2, 5, 10) | service, operation |
//! | `retry_coordination_fallback_total` | counter | service, operation, reason |
//! | `retry_policy_fallback_total` | counter | service, operation, reason |
//! | `retry_clock_offset_seconds` | gauge | — |
//!
//! `retry_attempts_total` counts every call made (attempt 1 is the first call);
//! `retry_success_total` and `retry_failure_total` count logical operations once, when they
//! end; `error_type` is the error category of the last attempt (or the give-up reason for
//! reasons that are not errors), never free text, so label cardinality is bounded:
//! `attempt ≤ max_attempts`, `error_type` from a fixed list.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

/// The seed's histogram buckets for `retry_duration_seconds`.
pub const DURATION_BUCKETS: [f64; 6] = [0.1, 0.5, 1.0, 2.0, 5.0, 10.0];

/// The retry metrics, registered on one registry.
#[derive(Clone, Debug)]
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
    /// `retry_policy_fallback_total{service,operation,reason}`: a policy component failed and
    /// the native policy of the same config decided instead.
    pub policy_fallback: IntCounterVec,
    /// `retry_clock_offset_seconds`: coordinator clock minus local clock.
    pub clock_offset: Gauge,
    /// The series every call touches (`attempt="1"`, `attempts_needed="1"`, the duration), per
    /// service and operation, so the first-try-success path skips prometheus's label hashing.
    first_try: Arc<RwLock<FirstTryCache>>,
}

/// First-try series by service, then operation.
type FirstTryCache = HashMap<Box<str>, HashMap<Box<str>, Arc<FirstTry>>>;

/// The series of one `(service, operation)` that a first-try success touches.
#[derive(Clone, Debug)]
pub struct FirstTry {
    /// `retry_attempts_total{attempt="1"}`.
    pub attempt: IntCounter,
    /// `retry_success_total{attempts_needed="1"}`.
    pub success: IntCounter,
    /// `retry_duration_seconds`.
    pub duration: Histogram,
}

impl RetryMetrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let attempts = counter(
            "retry_attempts_total",
            "Calls made, by attempt number (1 = first call).",
            &["service", "operation", "attempt"],
        )?;
        let success = counter(
            "retry_success_total",
            "Operations that succeeded, by attempts needed.",
            &["service", "operation", "attempts_needed"],
        )?;
        let failure = counter(
            "retry_failure_total",
            "Operations that failed for good, by error type.",
            &["service", "operation", "error_type"],
        )?;
        let coordination_fallback = counter(
            "retry_coordination_fallback_total",
            "Retries that took a local slot because the coordinator did not answer in time.",
            &["service", "operation", "reason"],
        )?;
        let policy_fallback = counter(
            "retry_policy_fallback_total",
            "Decisions made by the native policy because the policy component failed.",
            &["service", "operation", "reason"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "retry_duration_seconds",
                "Duration of whole operations, retries included.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["service", "operation"],
        )?;
        registry.register(Box::new(duration.clone()))?;
        let clock_offset = Gauge::new(
            "retry_clock_offset_seconds",
            "Estimated coordinator clock minus local clock, seconds.",
        )?;
        registry.register(Box::new(clock_offset.clone()))?;
        Ok(Self {
            attempts,
            success,
            failure,
            duration,
            coordination_fallback,
            policy_fallback,
            clock_offset,
            first_try: Arc::default(),
        })
    }

    /// The first-try series of `(service, operation)`, cached after the first call.
    pub fn first_try(&self, service: &str, operation: &str) -> Arc<FirstTry> {
        if let Ok(map) = self.first_try.read() {
            if let Some(ft) = map.get(service).and_then(|ops| ops.get(operation)) {
                return ft.clone();
            }
        }
        let ft = Arc::new(FirstTry {
            attempt: self.attempts.with_label_values(&[service, operation, "1"]),
            success: self.success.with_label_values(&[service, operation, "1"]),
            duration: self.duration.with_label_values(&[service, operation]),
        });
        if let Ok(mut map) = self.first_try.write() {
            map.entry(service.into())
                .or_default()
                .insert(operation.into(), ft.clone());
        }
        ft
    }

    /// The metrics on prometheus's default registry (registered once per process).
    pub fn global() -> &'static RetryMetrics {
        static GLOBAL: OnceLock<RetryMetrics> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            #[allow(clippy::expect_used)]
            RetryMetrics::register(prometheus::default_registry())
                .expect("ricochet's metric names are registered once, by this function only")
        })
    }
}

/// Renders a registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    let encoder = prometheus::TextEncoder::new();
    if encoder.encode_utf8(&registry.gather(), &mut out).is_err() {
        out.clear();
    }
    out
}
