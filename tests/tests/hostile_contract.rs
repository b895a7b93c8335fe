//! A component that answers within the sandbox but against the contract — forged guard state,
//! delays the config does not allow, retries it forbids — is caught by the host's checks: the
//! answer is refused as `invalid_decision`, the shared breaker and budget stay as they were,
//! and the native policy decides instead. The liar is `guests/hostile` built with `forger`
//! (the lie chosen by `state.seed`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ricochet_test_support as support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ricochet::component::{PolicyComponent, Sandbox};
use ricochet::engine::{DecideInput, EngineError, PolicyEngine};
use ricochet::metrics::RetryMetrics;
use ricochet::{Classification, RetryError, RetryPolicy};
use ricochet_core::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use ricochet_core::budget::{BudgetConfig, RetryBudget};
use ricochet_core::{
    Decision, ErrorCategory, Failure, Guards, RetryConfig, RetryState, RetryStateParts,
};
use support::guest;

mod hostile;
use hostile::forger::*;

const NOW_US: u64 = 1_800_000_000_000_000;

fn forger() -> PolicyComponent {
    let bytes = guest(
        ricochet_test_support::guests::HOSTILE_FORGER_COMPONENT,
        "hostile forger",
    );
    PolicyComponent::from_bytes(bytes, Sandbox::default()).unwrap()
}

fn honest() -> PolicyComponent {
    let bytes = guest(ricochet_test_support::guests::POLICY_COMPONENT, "policy");
    PolicyComponent::from_bytes(bytes, Sandbox::default()).unwrap()
}

/// A breaker that opens after 50 consecutive failures, and a budget of 10 tokens.
fn guarded_config() -> RetryConfig {
    RetryConfig {
        circuit_breaker: Some(BreakerConfig {
            failure_threshold: 50,
            failure_rate: 0.0,
            minimum_calls: 1,
            window: 10.0,
            cool_down: 30.0,
            half_open_probes: 1,
        }),
        retry_budget: Some(BudgetConfig {
            max_tokens: 10,
            token_ratio: 0.1,
        }),
        ..RetryConfig::DEFAULT
    }
}

/// The guards of `config` as a few calls left them: a fresh breaker, a budget three tokens down.
fn used_guards(config: &RetryConfig) -> (Option<CircuitBreaker>, Option<RetryBudget>) {
    let policy = config.validate().unwrap();
    let breaker = policy.breaker().map(CircuitBreaker::new);
    let budget = policy.budget().map(|b| {
        let mut budget = RetryBudget::new(b).unwrap();
        for _ in 0..3 {
            budget.on_failure();
        }
        budget
    });
    (breaker, budget)
}

/// One `decide` through the engine seam (with the host's checks) on `state` and the
/// [`used_guards`] of `config`, after a failure at [`NOW_US`]; the guards as they are afterwards.
fn decide(
    engine: &dyn PolicyEngine,
    config: &RetryConfig,
    state: &mut RetryState,
    failure: Failure,
) -> (
    Result<Decision, EngineError>,
    Option<CircuitBreaker>,
    Option<RetryBudget>,
) {
    let policy = config.validate().unwrap();
    let (mut breaker, mut budget) = used_guards(config);
    let input = DecideInput {
        config,
        policy: &policy,
        failure,
        now_us: NOW_US,
        imports: None,
    };
    let guards = Guards {
        breaker: breaker.as_mut(),
        budget: budget.as_mut(),
    };
    let answer = engine.decide(input, state, guards);
    (answer, breaker, budget)
}

fn state(seed: u64) -> RetryState {
    RetryState::new(seed, NOW_US - 1_000)
}

fn assert_refused(answer: &Result<Decision, EngineError>, what: &str) {
    match answer {
        Err(EngineError::InvalidDecision(message)) => eprintln!("{what}: refused: {message}"),
        other => panic!("{what}: the lie was accepted: {other:?}"),
    }
}

#[test]
fn forged_guards_are_refused_and_leave_the_shared_guards_as_they_were() {
    let config = guarded_config();
    let (breaker_before, budget_before) = used_guards(&config);
    let liar = forger();
    for (lie, what) in [
        (BREAKER_OPEN_FOREVER, "breaker open until u64::MAX"),
        (BREAKER_DROPPED, "breaker dropped"),
        (BREAKER_RECONFIGURED, "breaker with a threshold of 1"),
        (BUDGET_REFILLED, "budget refilled"),
        (BUDGET_DROPPED, "budget dropped"),
    ] {
        let mut s = state(lie);
        let before = s;
        let failure = Failure::new(ErrorCategory::ServiceUnavailable);
        let (answer, breaker, budget) = decide(&liar, &config, &mut s, failure);
        assert_refused(&answer, what);
        assert_eq!(answer.unwrap_err().reason(), "invalid_decision");
        assert_eq!(s, before, "{what}: the state was touched");
        assert_eq!(breaker, breaker_before, "{what}: the breaker was touched");
        assert_eq!(budget, budget_before, "{what}: the budget was touched");
    }
}

#[test]
fn guards_moved_by_exactly_one_failure_or_not_at_all_are_accepted() {
    let config = guarded_config();
    // The core's own transition, through the honest component, for a transient failure ...
    let mut s = state(1);
    let failure = Failure::new(ErrorCategory::ServiceUnavailable);
    let (answer, breaker, budget) = decide(&honest(), &config, &mut s, failure);
    assert!(matches!(answer, Ok(Decision::Retry { .. })), "{answer:?}");
    assert_eq!(budget.unwrap().tokens_milli(), 6_000);
    assert_eq!(breaker.unwrap().window_counts(NOW_US), (1, 1));
    // ... and guards returned as they came, by a policy that keeps none (the forger's honest
    // answer: give up, guards untouched).
    let mut s = state(0);
    let (answer, breaker, budget) = decide(&forger(), &config, &mut s, failure);
    assert!(matches!(answer, Ok(Decision::GiveUp { .. })), "{answer:?}");
    assert_eq!(budget.unwrap().tokens_milli(), 7_000);
    assert_eq!(breaker.unwrap().window_counts(NOW_US), (0, 0));
}

/// The reviewer's attack, through the executor: a threshold-50 breaker, one failure, and the
/// component answers "open until u64::MAX". The executor used to store it: the service was
/// refused for ~584 000 years. Now the native policy decides on the untouched breaker.
#[tokio::test(start_paused = true)]
async fn a_breaker_forged_open_for_ever_does_not_close_the_service() {
    let registry = prometheus::Registry::new();
    let metrics = RetryMetrics::register(&registry).unwrap();
    let policy = RetryPolicy::new(RetryConfig {
        max_attempts: 2,
        ..guarded_config()
    })
    .unwrap()
    .with_metrics(metrics.clone())
    .with_seed(BREAKER_OPEN_FOREVER)
    .with_component(forger())
    .unwrap();
    let runs = AtomicU32::new(0);
    let call = || async {
        policy
            .execute_classified(
                || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    std::future::ready(Err::<(), _>("down"))
                },
                "pay",
                "charge",
                |_: &&str| Classification::new(ErrorCategory::ServiceUnavailable),
            )
            .await
    };
    match call().await {
        Err(RetryError::MaxRetriesExceeded(m)) => assert_eq!(m.attempts, 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2, "the native policy retried");
    // The next call reaches the service: two failures of fifty do not open the circuit.
    match call().await {
        Err(RetryError::CircuitOpen { retry_after }) => {
            panic!("the forged breaker closed the service for {retry_after:?}")
        }
        Err(RetryError::MaxRetriesExceeded(_)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    assert_eq!(
        metrics
            .policy_fallback
            .with_label_values(&["pay", "charge", "invalid_decision"])
            .get(),
        4,
        "every decision was refused and counted"
    );
}

#[test]
fn delays_and_retries_the_config_does_not_allow_are_refused() {
    let liar = forger();
    let timeout = Failure::new(ErrorCategory::Timeout);
    // `max_delay` 1 s, `max_retry_after` 60 s, no server delay: the reviewer's 60 s retry.
    let short = RetryConfig {
        initial_delay: 0.1,
        max_delay: 1.0,
        max_retry_after: 60.0,
        ..RetryConfig::DEFAULT
    };
    let auth_used = RetryState::from_parts(RetryStateParts {
        auth_retried: true,
        ..state(0).to_parts()
    });
    let with_seed = |s: RetryState, seed: u64| {
        RetryState::from_parts(RetryStateParts {
            seed,
            ..s.to_parts()
        })
    };
    let deadline = RetryConfig {
        max_elapsed: Some(0.5),
        ..short
    };
    let cases: [(&str, RetryConfig, RetryState, Failure); 7] = [
        (
            "60 s retry, max_delay 1 s, no server delay",
            short,
            state(LONG_DELAY),
            timeout,
        ),
        (
            "60 s retry, max_delay 1 s, the server asked for 5 s",
            short,
            state(LONG_DELAY),
            timeout.with_server_delay_us(5_000_000),
        ),
        (
            "retry of a validation error",
            short,
            state(NON_RETRYABLE),
            Failure::new(ErrorCategory::Validation),
        ),
        (
            "second auth retry",
            short,
            with_seed(auth_used, NON_RETRYABLE),
            Failure::new(ErrorCategory::AuthExpired).with_token_refreshed(),
        ),
        (
            "retry of a server delay past max_retry_after",
            short,
            state(NON_RETRYABLE),
            timeout.with_server_delay_us(61_000_000),
        ),
        (
            "retry past max_elapsed",
            deadline,
            state(PAST_DEADLINE),
            timeout,
        ),
        (
            "retry sooner than the server asked",
            short,
            state(IGNORES_SERVER_DELAY),
            timeout.with_server_delay_us(2_000_000),
        ),
    ];
    for (what, config, start, failure) in cases {
        let mut s = start;
        let (answer, _, _) = decide(&liar, &config, &mut s, failure);
        assert_refused(&answer, what);
        assert_eq!(s, start, "{what}: the state was touched");
        // The same inputs through the honest component are accepted.
        let mut s = with_seed(start, 7);
        let (answer, _, _) = decide(&honest(), &config, &mut s, failure);
        assert!(
            answer.is_ok(),
            "{what}: the honest policy was refused: {answer:?}"
        );
    }
}

/// Through the executor: `max_delay` 1 s and a component that asks for 60 s. The executor used
/// to sleep 60 s; now it sleeps the native delay and counts the refusal.
#[tokio::test(start_paused = true)]
async fn the_executor_never_sleeps_longer_than_the_config_allows() {
    let registry = prometheus::Registry::new();
    let metrics = RetryMetrics::register(&registry).unwrap();
    let config = RetryConfig {
        max_attempts: 3,
        initial_delay: 0.1,
        max_delay: 1.0,
        max_retry_after: 60.0,
        ..RetryConfig::DEFAULT
    };
    let backoffs = Arc::new(Mutex::new(Vec::new()));
    let b = backoffs.clone();
    let policy = RetryPolicy::new(config)
        .unwrap()
        .with_metrics(metrics.clone())
        .with_seed(LONG_DELAY)
        .with_notify(move |e| b.lock().unwrap().push(e.backoff))
        .with_component(forger())
        .unwrap();
    let result = policy
        .execute_classified(
            || std::future::ready(Err::<(), _>("busy")),
            "svc",
            "op",
            |_: &&str| Classification::new(ErrorCategory::ServiceUnavailable),
        )
        .await;
    assert!(matches!(result, Err(RetryError::MaxRetriesExceeded(_))));
    let backoffs = backoffs.lock().unwrap().clone();
    assert_eq!(backoffs.len(), 2);
    for backoff in backoffs {
        assert!(backoff <= Duration::from_secs(1), "slept {backoff:?}");
    }
    assert_eq!(
        metrics
            .policy_fallback
            .with_label_values(&["svc", "op", "invalid_decision"])
            .get(),
        3
    );
}

#[test]
fn a_breaker_opened_by_the_core_is_accepted() {
    // The check is "at most one failure", not "never open": the honest component opening a
    // threshold-1 breaker is the core's own transition.
    let config = RetryConfig {
        circuit_breaker: Some(BreakerConfig {
            failure_threshold: 1,
            ..guarded_config().circuit_breaker.unwrap()
        }),
        ..guarded_config()
    };
    let mut s = state(3);
    let (answer, breaker, _) = decide(
        &honest(),
        &config,
        &mut s,
        Failure::new(ErrorCategory::Connection),
    );
    assert!(answer.is_ok(), "{answer:?}");
    assert_eq!(
        breaker.unwrap().state(NOW_US),
        BreakerState::Open {
            until_us: NOW_US + 30_000_000
        }
    );
}
