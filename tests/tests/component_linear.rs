//! A third-party policy — `guests/linear-policy`, linear backoff written without
//! `ricochet-core` — runs in the same host: its own math comes out of `plan` and out of the
//! executor, and its imports reach the host's clock, coordinator, metrics and JSON log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ricochet_test_support as support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ricochet::component::{failure_to_wit, state_to_wit, wit, PolicyComponent, Sandbox};
use ricochet::coordination::{wall_clock_us, InMemoryCoordinator};
use ricochet::engine::{NativeEngine, PolicyEngine};
use ricochet::logging::{CapturedLines, SeedJsonLayer};
use ricochet::metrics::RetryMetrics;
use ricochet::{Classification, RetryError, RetryPolicy};
use ricochet_core::{ErrorCategory, Failure, RetryConfig, RetryState};
use support::guest;

fn linear() -> PolicyComponent {
    let bytes = guest(
        ricochet_test_support::guests::LINEAR_POLICY_COMPONENT,
        "linear policy",
    );
    PolicyComponent::from_bytes(bytes, Sandbox::default()).unwrap()
}

/// Six attempts, no jitter, no coordination: 100 ms steps.
const STEADY: RetryConfig = RetryConfig {
    max_attempts: 6,
    jitter: false,
    coordination_enabled: false,
    ..RetryConfig::DEFAULT
};

#[test]
fn its_plan_is_linear_where_the_core_is_exponential() {
    let delays = |engine: &dyn PolicyEngine, config: &RetryConfig, seed| -> Vec<u64> {
        engine
            .plan(config, seed)
            .unwrap()
            .iter()
            .map(|r| r.delay_us)
            .collect()
    };
    let component = linear();
    assert_eq!(
        delays(&component, &STEADY, 1),
        [100_000, 200_000, 300_000, 400_000, 500_000]
    );
    assert_eq!(
        delays(&NativeEngine, &STEADY, 1),
        [100_000, 200_000, 400_000, 800_000, 1_600_000]
    );
    // Capped by max_delay.
    let capped = RetryConfig {
        max_delay: 0.25,
        ..STEADY
    };
    assert_eq!(
        delays(&component, &capped, 1),
        [100_000, 200_000, 250_000, 250_000, 250_000]
    );
    // Jittered: within the upper half of each step, the same for the same seed.
    let jittered = RetryConfig {
        jitter: true,
        ..STEADY
    };
    for seed in 0..200 {
        let a = delays(&component, &jittered, seed);
        assert_eq!(a, delays(&component, &jittered, seed));
        for (n, d) in a.iter().enumerate() {
            let step = 100_000 * (n as u64 + 1);
            assert!((step / 2..=step).contains(d), "seed {seed}: {a:?}");
        }
    }
    // Its own validation, its own words.
    let error = component
        .validate(&RetryConfig {
            initial_delay: -1.0,
            ..STEADY
        })
        .unwrap()
        .unwrap_err();
    assert_eq!(error.field, "initial_delay");
    assert!(error.message.contains("-1"), "{}", error.message);
}

#[tokio::test(start_paused = true)]
async fn it_drives_the_executor() {
    let registry = prometheus::Registry::new();
    let metrics = RetryMetrics::register(&registry).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = events.clone();
    let policy = RetryPolicy::from_component(STEADY, linear())
        .unwrap()
        .with_metrics(metrics.clone())
        .with_notify(move |event| e.lock().unwrap().push(event.backoff));
    assert_eq!(policy.engine_name(), "wasm");
    let calls = Mutex::new(0u32);
    let result = policy
        .execute_classified(
            || {
                let mut n = calls.lock().unwrap();
                *n += 1;
                std::future::ready(if *n < 5 { Err("busy") } else { Ok(*n) })
            },
            "lake",
            "fetch",
            |_: &&str| Classification::new(ErrorCategory::ServiceUnavailable),
        )
        .await;
    assert_eq!(result.unwrap(), 5);
    let backoffs: Vec<u128> = events
        .lock()
        .unwrap()
        .iter()
        .map(Duration::as_millis)
        .collect();
    assert_eq!(backoffs, [100, 200, 300, 400]);
    assert_eq!(
        metrics
            .success
            .with_label_values(&["lake", "fetch", "5"])
            .get(),
        1
    );
    // It gives up where its own rules say so: a non-retryable category at once …
    let result = policy
        .execute_classified(
            || std::future::ready(Err::<(), _>("bad request")),
            "lake",
            "fetch",
            |_: &&str| Classification::new(ErrorCategory::Validation),
        )
        .await;
    assert!(matches!(result, Err(RetryError::NonRetryable(_))));
    // … and after max_attempts calls.
    let result = policy
        .execute_classified(
            || std::future::ready(Err::<(), _>("down")),
            "lake",
            "fetch",
            |_: &&str| Classification::new(ErrorCategory::Connection),
        )
        .await;
    match result {
        Err(RetryError::MaxRetriesExceeded(m)) => assert_eq!(m.attempts, 6),
        other => panic!("{other:?}"),
    }
    let fallbacks: f64 = registry
        .gather()
        .iter()
        .filter(|f| f.name() == "retry_policy_fallback_total")
        .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value()))
        .sum();
    assert_eq!(
        fallbacks, 0.0,
        "the linear policy never needed the native one"
    );
}

#[tokio::test(start_paused = true)]
async fn coordinated_its_retries_get_slots_from_the_host() {
    let config = RetryConfig {
        coordination_enabled: true,
        ..STEADY
    };
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = events.clone();
    let policy = RetryPolicy::from_component(config, linear())
        .unwrap()
        .with_seed(3)
        .with_notify(move |event| e.lock().unwrap().push((event.backoff, event.delay)));
    let _ = policy
        .execute_classified(
            || std::future::ready(Err::<(), _>("down")),
            "lake",
            "slotted",
            |_: &&str| Classification::new(ErrorCategory::Timeout),
        )
        .await;
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 5);
    for (n, (backoff, delay)) in events.iter().enumerate() {
        assert_eq!(backoff.as_millis(), 100 * (n as u128 + 1));
        // The slot (and the jitter inside it) comes on top, within one window of 1 s.
        assert!(delay >= backoff && *delay < *backoff + Duration::from_secs(1));
    }
}

#[test]
fn its_imports_reach_the_hosts_clock_coordinator_metrics_and_log() {
    let registry = prometheus::Registry::new();
    let metrics = RetryMetrics::register(&registry).unwrap();
    let component = linear();
    // A coordinator clock 1 ms into a fresh 1 s window, so that the test's tickets share one.
    let offset_us = 1_000 - (wall_clock_us() % 1_000_000) as i64;
    let component = component
        .with_coordinator(Arc::new(InMemoryCoordinator::with_clock_offset_us(
            offset_us,
        )))
        .with_metrics(Some(metrics.clone()));
    let config = RetryConfig {
        max_attempts: 3,
        coordination_enabled: true,
        ..STEADY
    };
    let logs = CapturedLines::default();
    let subscriber = {
        use tracing_subscriber::layer::SubscriberExt;
        tracing_subscriber::registry().with(SeedJsonLayer::new(logs.clone()))
    };
    let failure = failure_to_wit(Failure::new(ErrorCategory::ServiceUnavailable));
    let mut state = state_to_wit(&RetryState::new(9, 0));
    let mut outcomes = Vec::new();
    let _anchor = ricochet_test_support::interest_anchor(); // see its docs
    tracing::subscriber::with_default(subscriber, || {
        for _ in 0..3 {
            let (next, outcome) = component
                .schedule(&config, "lake", "fetch", state, failure)
                .unwrap()
                .unwrap();
            state = next;
            outcomes.push(outcome);
        }
    });
    // Tickets 0 and 1 of the coordinator's window: slots 0 and 1, then exhausted.
    match &outcomes[..] {
        [wit::ScheduleOutcome::Retry(a), wit::ScheduleOutcome::Retry(b), wit::ScheduleOutcome::GiveUp(wit::GiveUpReason::Exhausted)] =>
        {
            assert_eq!((a.slot, a.fallback), (0, false));
            assert_eq!((b.slot, b.fallback), (1, false));
            assert_eq!(a.delay_us, 100_000);
            assert_eq!(b.delay_us, 200_000 + 100_000);
        }
        other => panic!("{other:?}"),
    }
    // The log: the seed's JSON lines, INFO for a retry and ERROR for the give-up.
    let lines = logs.lines();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["level"], "INFO");
    assert_eq!(first["service"], "lake");
    assert_eq!(first["operation"], "fetch");
    assert_eq!(first["attempt"], 1);
    assert_eq!(first["delay"], 0.1);
    assert_eq!(first["error"], "ServiceUnavailableError");
    assert!(first["trace_id"].as_str().is_some_and(|t| !t.is_empty()));
    let last: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
    assert_eq!(last["level"], "ERROR");
    // Metrics: the seed's name reached the registry; its own name was ignored and counted.
    assert_eq!(
        metrics
            .failure
            .with_label_values(&["lake", "fetch", "exhausted"])
            .get(),
        1
    );
    assert!(
        !ricochet::metrics::render(&registry).contains("linear_policy"),
        "unknown metric names stay out of the registry"
    );
    assert_eq!(
        component
            .import_stats()
            .ignored_metric_calls
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
}
