//! The executor and the circuit breaker (issue 15):
//!
//! - a breaker that opens while a call is retrying ends that call like any other give-up —
//!   `MaxRetriesExceeded` with reason `circuit_open` and the last error, an ERROR line, a
//!   failure and a duration sample — and every refused call is counted;
//! - a half-open probe answered with a 404 does not keep the breaker open for the next call;
//! - a slow policy engine decides outside the policy's lock: calls of other services (and of
//!   its own) go on meanwhile, and no outcome recorded meanwhile is lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

use ricochet::engine::{DecideInput, EngineError, NativeEngine, PlannedRetry, PolicyEngine};
use ricochet::logging::{CapturedLines, SeedJsonLayer};
#[cfg(feature = "prometheus")]
use ricochet::metrics::RetryMetrics;
use ricochet::{
    Classification, ErrorCategory, GiveUpReason, HttpError, RetryConfig, RetryError, RetryPolicy,
};
use ricochet_core::breaker::BreakerConfig;

/// The log lines of this test binary. A global subscriber, installed by each test before it
/// logs anything: a thread-local one (`set_default`) can miss events when another test thread
/// registers a callsite at the same moment (tracing caches a callsite's interest).
fn captured() -> &'static CapturedLines {
    static LINES: OnceLock<CapturedLines> = OnceLock::new();
    LINES.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let lines = CapturedLines::default();
        let subscriber = tracing_subscriber::registry().with(SeedJsonLayer::new(lines.clone()));
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        lines
    })
}

#[cfg(feature = "prometheus")]
fn refused() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused")
}

fn breaker(failure_threshold: u32, cool_down: f64) -> Option<BreakerConfig> {
    Some(BreakerConfig {
        failure_threshold,
        failure_rate: 0.0,
        minimum_calls: 0,
        window: 60.0,
        cool_down,
        half_open_probes: 1,
    })
}

#[cfg(feature = "prometheus")]
fn counter(registry: &prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            })
        })
        .map(|m| {
            if name.ends_with("_seconds") {
                m.get_histogram().get_sample_count()
            } else {
                m.get_counter().get_value() as u64
            }
        })
        .sum()
}

#[cfg(feature = "prometheus")]
#[tokio::test(start_paused = true)]
async fn a_breaker_that_opens_during_a_retry_gives_up_with_the_last_error() {
    let lines = captured();
    let registry = prometheus::Registry::new();
    let metrics = RetryMetrics::register(&registry).unwrap();
    let sleeping = Arc::new(tokio::sync::Notify::new());
    let signal = sleeping.clone();
    let policy = Arc::new(
        RetryPolicy::new(RetryConfig {
            max_attempts: 3,
            jitter: false,
            coordination_enabled: false,
            circuit_breaker: breaker(2, 10.0),
            ..RetryConfig::default()
        })
        .unwrap()
        .with_metrics(metrics)
        .with_notify(move |_| signal.notify_one()),
    );

    // A fails once and sleeps before its retry; meanwhile B's failure opens the breaker.
    let a_calls = Arc::new(AtomicU32::new(0));
    let a = {
        let (policy, calls) = (policy.clone(), a_calls.clone());
        tokio::spawn(async move {
            policy
                .execute_with_retry(
                    || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        async { Err::<(), _>(refused()) }
                    },
                    "lake",
                    "fetch",
                )
                .await
        })
    };
    sleeping.notified().await;
    let b = policy
        .execute_with_retry(|| async { Err::<(), _>(refused()) }, "lake", "fetch")
        .await
        .unwrap_err();
    assert!(
        matches!(&b, RetryError::MaxRetriesExceeded(m) if m.reason == GiveUpReason::CircuitOpen && m.attempts == 1),
        "{b}"
    );

    let a = a.await.unwrap().unwrap_err();
    // Before the fix: `CircuitOpen { retry_after }` — "no call made" although A ran, its
    // error lost, and nothing counted or logged.
    let RetryError::MaxRetriesExceeded(m) = a else {
        panic!("{a}")
    };
    assert_eq!(m.reason, GiveUpReason::CircuitOpen);
    assert_eq!(m.attempts, 1);
    assert_eq!(a_calls.load(Ordering::SeqCst), 1);
    let ricochet::AttemptError::Failed(last) = m.last_error else {
        panic!("the last error is the operation's")
    };
    assert_eq!(last.kind(), std::io::ErrorKind::ConnectionRefused);

    // A first call the breaker refuses: no call made, and counted too.
    let c = policy
        .execute_with_retry(
            || async { panic!("a refused call is never made") as Result<(), std::io::Error> },
            "lake",
            "fetch",
        )
        .await
        .unwrap_err();
    assert!(matches!(c, RetryError::CircuitOpen { .. }), "{c}");

    let labels = [("service", "lake"), ("operation", "fetch")];
    assert_eq!(
        counter(&registry, "retry_circuit_rejected_total", &labels),
        2,
        "A's retry and C"
    );
    assert_eq!(
        counter(
            &registry,
            "retry_failure_total",
            &[("service", "lake"), ("error_type", "circuit_open")]
        ),
        3,
        "A, B and C ended because of the breaker"
    );
    assert_eq!(counter(&registry, "retry_duration_seconds", &labels), 3);
    assert_eq!(
        counter(&registry, "retry_attempts_total", &labels),
        2,
        "calls made: A's first and B's"
    );
    let errors: Vec<serde_json::Value> = lines
        .lines()
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["level"] == "ERROR" && l["operation"] == "fetch")
        .collect();
    assert_eq!(errors.len(), 2, "A and B gave up: {errors:?}");
    assert!(errors
        .iter()
        .all(|l| l["error"] == "connection refused" && l["attempt"] == 1));
}

#[tokio::test(start_paused = true)]
async fn a_probe_answered_with_404_lets_the_next_healthy_call_through() {
    captured();
    let policy = RetryPolicy::new(RetryConfig {
        max_attempts: 1,
        circuit_breaker: breaker(1, 0.3),
        ..RetryConfig::default()
    })
    .unwrap()
    .without_metrics();
    let e = policy
        .execute_with_retry(
            || async { Err::<(), _>(HttpError::status(503)) },
            "lake",
            "get",
        )
        .await
        .unwrap_err();
    assert!(matches!(e, RetryError::MaxRetriesExceeded(_)), "{e}");
    assert!(matches!(
        policy
            .execute_with_retry(|| async { Ok::<_, HttpError>(()) }, "lake", "get")
            .await,
        Err(RetryError::CircuitOpen { .. })
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The probe: the dependency answers, with a 404.
    let e = policy
        .execute_with_retry(
            || async { Err::<(), _>(HttpError::status(404)) },
            "lake",
            "get",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, RetryError::NonRetryable(ref h) if h.status == 404),
        "{e}"
    );
    // Before the fix: "circuit open: no call made, retry after 0.300s".
    let ok = policy
        .execute_with_retry(|| async { Ok::<_, HttpError>("fine") }, "lake", "get")
        .await;
    assert_eq!(ok.unwrap(), "fine");
}

/// The native core, except that the first `TimeoutError` it is asked about blocks until the
/// test opens the gate (or 20 s pass: what a policy held up by the lock would come to).
struct GatedEngine {
    entered: Mutex<Option<mpsc::Sender<()>>>,
    gate: Mutex<mpsc::Receiver<()>>,
    opened_by_test: AtomicBool,
}

impl PolicyEngine for GatedEngine {
    fn name(&self) -> &'static str {
        "gated"
    }
    fn validate(&self, config: &RetryConfig) -> Result<(), EngineError> {
        NativeEngine.validate(config)
    }
    fn plan(&self, config: &RetryConfig, seed: u64) -> Result<Vec<PlannedRetry>, EngineError> {
        NativeEngine.plan(config, seed)
    }
    fn decide(
        &self,
        input: DecideInput<'_>,
        state: &mut ricochet_core::RetryState,
        guards: ricochet_core::Guards<'_>,
    ) -> Result<ricochet_core::Decision, EngineError> {
        if input.failure.category == ErrorCategory::Timeout {
            if let Some(entered) = self.entered.lock().unwrap().take() {
                entered.send(()).unwrap();
                let opened = self
                    .gate
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(20))
                    .is_ok();
                self.opened_by_test.store(opened, Ordering::SeqCst);
            }
        }
        NativeEngine.decide(input, state, guards)
    }
}

/// An error that says which category it is.
#[derive(Debug, Clone, Copy)]
struct Failing(ErrorCategory);

impl std::fmt::Display for Failing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.name())
    }
}

async fn call(
    policy: &RetryPolicy,
    service: &str,
    failures: u32,
    category: ErrorCategory,
) -> Result<u32, RetryError<Failing>> {
    let calls = AtomicU32::new(0);
    policy
        .execute_classified(
            || {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    if n <= failures {
                        Err(Failing(category))
                    } else {
                        Ok(n)
                    }
                }
            },
            service,
            "op",
            |e: &Failing| Classification::new(e.0),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_engine_holds_up_no_other_call_and_loses_no_outcome() {
    captured();
    let (entered_tx, entered_rx) = mpsc::channel();
    let (gate_tx, gate_rx) = mpsc::channel();
    let engine = Arc::new(GatedEngine {
        entered: Mutex::new(Some(entered_tx)),
        gate: Mutex::new(gate_rx),
        opened_by_test: AtomicBool::new(false),
    });
    let config = RetryConfig {
        max_attempts: 3,
        initial_delay: 0.001,
        max_delay: 0.002,
        coordination_enabled: false,
        circuit_breaker: breaker(3, 60.0),
        ..RetryConfig::default()
    };
    let policy = Arc::new(
        RetryPolicy::new(config)
            .unwrap()
            .without_metrics()
            .with_engine(engine.clone())
            .unwrap(),
    );
    // The same breakers (same guard config), one attempt per call.
    let once = Arc::new(
        policy
            .with_config(RetryConfig {
                max_attempts: 1,
                ..config
            })
            .unwrap(),
    );

    // X: its first failure's decision blocks inside the engine.
    let x = {
        let policy = policy.clone();
        tokio::spawn(async move { call(&policy, "slow", u32::MAX, ErrorCategory::Timeout).await })
    };
    tokio::task::spawn_blocking(move || entered_rx.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("X reached the engine");

    // Meanwhile: other services fail once and succeed, and two calls of X's own service fail.
    let mut others = Vec::new();
    for service in ["a", "b", "c", "d", "e", "f"] {
        let policy = policy.clone();
        others.push(tokio::spawn(async move {
            call(&policy, service, 1, ErrorCategory::Connection).await
        }));
    }
    for _ in 0..2 {
        let once = once.clone();
        others.push(tokio::spawn(async move {
            call(&once, "slow", 1, ErrorCategory::Connection).await
        }));
    }
    let finished = tokio::time::timeout(Duration::from_secs(10), async {
        let mut results = Vec::new();
        for t in others {
            results.push(t.await.unwrap());
        }
        results
    })
    .await;
    gate_tx.send(()).unwrap();
    // Before the fix every one of them waited on the policy's lock, held by X's decision.
    let results = finished.expect("calls were held up while the engine decided for X");
    for r in &results[..6] {
        assert_eq!(r.as_ref().unwrap(), &2, "{r:?}");
    }
    for r in &results[6..] {
        let e = r.as_ref().unwrap_err();
        assert!(
            matches!(e, RetryError::MaxRetriesExceeded(m) if m.reason == GiveUpReason::Exhausted),
            "{e}"
        );
    }
    let x = x.await.unwrap().unwrap_err();
    assert!(engine.opened_by_test.load(Ordering::SeqCst));
    // X's failure was reported to the breaker as it was *after* the two others: three in a row
    // open it (a copy written back over them would have left one). X's retry is refused.
    assert!(
        matches!(&x, RetryError::MaxRetriesExceeded(m) if m.reason == GiveUpReason::CircuitOpen && m.attempts == 1),
        "{x}"
    );
    let z = call(&policy, "slow", 0, ErrorCategory::Connection).await;
    assert!(matches!(z, Err(RetryError::CircuitOpen { .. })), "{z:?}");
    // The other services' breakers saw a failure and a success each: closed.
    assert_eq!(
        call(&policy, "a", 0, ErrorCategory::Connection)
            .await
            .unwrap(),
        1
    );
}
