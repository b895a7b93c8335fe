//! Hostile guests — a loop that never returns, an allocation bomb, an explicit trap — each end
//! in their typed error within their budget, and the host keeps serving: the very next call,
//! on a good component or on a fresh instance of the same one, succeeds. Through the executor a
//! failing component costs nothing but a counted fallback to the native decision.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ricochet_test_support as support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ricochet::component::{ComponentError, PolicyComponent, Sandbox};
use ricochet::metrics::RetryMetrics;
use ricochet::{Classification, RetryError, RetryPolicy};
use ricochet_core::{ErrorCategory, RetryConfig};
use support::guest;

const STOPPED_WITHIN: Duration = Duration::from_millis(100);

fn good() -> PolicyComponent {
    PolicyComponent::from_bytes(
        guest(ricochet_test_support::guests::POLICY_COMPONENT, "policy"),
        Sandbox::default(),
    )
    .unwrap()
}

fn spin(sandbox: Sandbox) -> PolicyComponent {
    let bytes = guest(
        ricochet_test_support::guests::HOSTILE_SPIN_COMPONENT,
        "hostile spin",
    );
    PolicyComponent::from_bytes(bytes, sandbox).unwrap()
}

fn hog(sandbox: Sandbox) -> PolicyComponent {
    let bytes = guest(
        ricochet_test_support::guests::HOSTILE_HOG_COMPONENT,
        "hostile hog",
    );
    PolicyComponent::from_bytes(bytes, sandbox).unwrap()
}

fn trap(sandbox: Sandbox) -> PolicyComponent {
    let bytes = guest(
        ricochet_test_support::guests::HOSTILE_TRAP_COMPONENT,
        "hostile trap",
    );
    PolicyComponent::from_bytes(bytes, sandbox).unwrap()
}

/// Calls `plan` on `c`, returning the error and how long it took.
fn failing_plan(c: &PolicyComponent) -> (ComponentError, Duration) {
    let started = Instant::now();
    let error = c
        .plan(&RetryConfig::DEFAULT, 7)
        .expect_err("a hostile guest cannot return a plan");
    (error, started.elapsed())
}

/// After a failure (with no idle instance left): a good component answers, and the hostile one
/// answers `validate` (which it implements honestly) on a fresh instance.
fn host_keeps_serving(hostile: &PolicyComponent) {
    let before = hostile.instances_created();
    assert!(hostile.validate(&RetryConfig::DEFAULT).unwrap().is_ok());
    assert_eq!(
        hostile.instances_created(),
        before + 1,
        "the failed instance must not be reused"
    );
    let plan = good().plan(&RetryConfig::DEFAULT, 7).unwrap().unwrap();
    assert_eq!(plan.len(), 2);
}

#[test]
fn a_loop_is_stopped_by_fuel_within_100_ms() {
    let hostile = spin(Sandbox::default());
    let (error, took) = failing_plan(&hostile);
    assert_eq!(
        error,
        ComponentError::OutOfFuel {
            fuel_per_call: Sandbox::DEFAULT_FUEL_PER_CALL
        }
    );
    assert!(took <= STOPPED_WITHIN, "stopped after {took:?}");
    assert_eq!(error.reason(), "out_of_fuel");
    host_keeps_serving(&hostile);
}

#[test]
fn a_loop_is_stopped_by_its_time_budget_within_100_ms() {
    let budget = Duration::from_millis(5);
    let hostile = spin(Sandbox::unmetered().with_time_per_call(budget));
    for _ in 0..3 {
        let (error, took) = failing_plan(&hostile);
        assert_eq!(error, ComponentError::TimedOut { budget });
        assert!(
            took >= budget && took <= STOPPED_WITHIN,
            "stopped after {took:?}"
        );
    }
    host_keeps_serving(&hostile);
}

#[test]
fn a_loop_with_fuel_and_time_stops_at_whichever_comes_first() {
    let hostile = spin(Sandbox::default().with_time_per_call(Duration::from_millis(5)));
    let (error, took) = failing_plan(&hostile);
    assert!(
        matches!(
            error,
            ComponentError::OutOfFuel { .. } | ComponentError::TimedOut { .. }
        ),
        "{error:?}"
    );
    assert!(took <= STOPPED_WITHIN, "stopped after {took:?}");
    host_keeps_serving(&hostile);
}

#[test]
fn an_allocation_bomb_hits_the_memory_cap() {
    for cap in [Sandbox::DEFAULT_MAX_MEMORY_BYTES, 4 << 20] {
        let hostile = hog(Sandbox::default().with_max_memory_bytes(cap));
        let (error, took) = failing_plan(&hostile);
        match error {
            ComponentError::MemoryLimit(m) => {
                assert_eq!(m.limit_bytes, cap);
                assert!(m.requested_bytes > cap);
            }
            other => panic!("expected the memory cap, got {other:?}"),
        }
        assert!(took <= Duration::from_secs(1), "took {took:?}");
        host_keeps_serving(&hostile);
    }
}

#[test]
fn an_explicit_trap_is_reported_as_a_trap() {
    let hostile = trap(Sandbox::default());
    let (error, _) = failing_plan(&hostile);
    match &error {
        ComponentError::Trap(message) => assert!(message.contains("unreachable"), "{message}"),
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_eq!(error.reason(), "trap");
    host_keeps_serving(&hostile);
}

#[test]
fn every_export_of_a_hostile_guest_fails_typed_and_the_next_call_succeeds() {
    let good = good();
    let config = RetryConfig::DEFAULT;
    for hostile in [
        spin(Sandbox::default()),
        hog(Sandbox::default()),
        trap(Sandbox::default()),
    ] {
        let state = ricochet::component::state_to_wit(&ricochet_core::RetryState::new(1, 0));
        let failure = ricochet::component::failure_to_wit(ricochet_core::Failure::new(
            ErrorCategory::Timeout,
        ));
        let guards = ricochet::component::wit::Guards {
            breaker: None,
            budget: None,
        };
        let errors = [
            hostile.next_delay(&config, 1, 1, 0).err(),
            hostile.plan(&config, 1).err(),
            hostile.decide(&config, state, failure, 0, &guards).err(),
            hostile.schedule(&config, "s", "o", state, failure).err(),
        ];
        for error in errors {
            assert!(error.is_some(), "a hostile export returned");
            assert!(good.plan(&config, 1).unwrap().is_ok());
        }
    }
}

/// The executor with a hostile component makes the native decisions, counting each fallback.
#[tokio::test(start_paused = true)]
async fn the_executor_falls_back_to_the_native_policy_and_counts_it() {
    let config = RetryConfig {
        max_attempts: 4,
        ..RetryConfig::DEFAULT
    };
    let run = |component: Option<PolicyComponent>| async move {
        let registry = prometheus::Registry::new();
        let metrics = RetryMetrics::register(&registry).unwrap();
        let sleeps = Arc::new(Mutex::new(Vec::new()));
        let s = sleeps.clone();
        let mut policy = RetryPolicy::new(config)
            .unwrap()
            .with_metrics(metrics.clone())
            .with_seed(42)
            .with_notify(move |e| s.lock().unwrap().push(e.backoff));
        if let Some(c) = component {
            policy = policy.with_component(c).unwrap();
        }
        let result = policy
            .execute_classified(
                || std::future::ready(Err::<(), _>("down")),
                "svc",
                "op",
                |_: &&str| Classification::new(ErrorCategory::ServiceUnavailable),
            )
            .await;
        let attempts = match result {
            Err(RetryError::MaxRetriesExceeded(m)) => m.attempts,
            other => panic!("{other:?}"),
        };
        let sleeps = sleeps.lock().unwrap().clone();
        (attempts, sleeps, metrics)
    };
    let (attempts, native, _) = run(None).await;
    assert_eq!(attempts, 4);
    for (hostile, reason) in [
        (spin(Sandbox::default()), "out_of_fuel"),
        (hog(Sandbox::default()), "memory"),
        (trap(Sandbox::default()), "trap"),
    ] {
        let (attempts, sleeps, metrics) = run(Some(hostile)).await;
        assert_eq!(attempts, 4, "{reason}");
        assert_eq!(
            sleeps, native,
            "{reason}: the native policy decides instead"
        );
        assert_eq!(
            metrics
                .policy_fallback
                .with_label_values(&["svc", "op", reason])
                .get(),
            4,
            "{reason}: one fallback per decision"
        );
    }
}
