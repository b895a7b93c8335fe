//! Component vs native *through the executor*: for random configs, seeds and outcome sequences,
//! `RetryPolicy` with the policy component makes exactly the decisions the native one makes —
//! every sleep, every slot request to the coordinator, every give-up reason, the circuit
//! breaker and the retry budget carried across calls — and never falls back.
//!
//! Time is tokio's paused clock and the coordinator a deterministic one on the same clock, so
//! the two runs of a case see the same timeline to the microsecond.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ricochet_test_support as support;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ricochet::clock::TokioClock;
use ricochet::component::{PolicyComponent, Sandbox};
use ricochet::coordination::{BoxFuture, CoordinationError, Coordinator, SlotGrant};
use ricochet::metrics::RetryMetrics;
use ricochet::{Classification, RetryError, RetryPolicy};
use ricochet_core::{ErrorCategory, RetryConfig};
use support::{guest, random_config, Gen};

const BASE_US: u64 = 1_800_000_000_000_000;

fn component() -> PolicyComponent {
    static LOADED: OnceLock<PolicyComponent> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let bytes = guest(ricochet_test_support::guests::POLICY_COMPONENT, "policy");
            PolicyComponent::from_bytes(bytes, Sandbox::default()).unwrap()
        })
        .clone()
}

/// Tickets per (service, operation, window) on tokio's (paused) clock; records every grant.
struct ScriptedCoordinator {
    clock: TokioClock,
    windows: Mutex<HashMap<(String, u64), u64>>,
    grants: Mutex<Vec<(u64, u64, u64)>>,
}

impl Coordinator for ScriptedCoordinator {
    fn acquire_slot<'a>(
        &'a self,
        service: &'a str,
        _operation: &'a str,
        delay_us: u64,
        window_us: u64,
    ) -> BoxFuture<'a, Result<SlotGrant, CoordinationError>> {
        use ricochet::clock::Clock;
        let now_us = self.clock.now_us();
        let earliest_us = now_us + delay_us;
        let window = earliest_us / window_us;
        let mut windows = self.windows.lock().unwrap();
        let next = windows.entry((service.to_string(), window)).or_insert(0);
        let ticket = *next;
        *next += 1;
        self.grants
            .lock()
            .unwrap()
            .push((delay_us, window_us, ticket));
        Box::pin(std::future::ready(Ok(SlotGrant {
            ticket,
            window,
            earliest_us,
            now_us,
        })))
    }

    fn now_us(&self) -> u64 {
        use ricochet::clock::Clock;
        self.clock.now_us()
    }

    fn name(&self) -> &'static str {
        "scripted"
    }
}

/// One failed attempt of the script.
#[derive(Debug, Clone, Copy)]
struct Scripted {
    category: ErrorCategory,
    server_delay_ms: Option<u64>,
}

impl fmt::Display for Scripted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "scripted {}", self.category.name())
    }
}

/// A case: the outcome of every attempt of every logical call, the pauses between calls, and
/// whether a token refresh succeeds.
struct Case {
    config: RetryConfig,
    seed: u64,
    calls: Vec<Vec<Option<Scripted>>>,
    pauses_ms: Vec<u64>,
    refresh: bool,
}

fn random_case(g: &mut Gen) -> Case {
    let config = random_config(g);
    let n = 1 + g.below(4) as usize;
    let calls = (0..n)
        .map(|_| {
            (0..1 + g.below(9))
                .map(|_| {
                    (!g.chance(6)).then(|| Scripted {
                        category: ErrorCategory::ALL[g.below(10) as usize],
                        server_delay_ms: g.chance(3).then(|| g.below(40_000)),
                    })
                })
                .collect()
        })
        .collect();
    Case {
        config,
        seed: g.next(),
        calls,
        pauses_ms: (0..n).map(|_| g.below(2_000)).collect(),
        refresh: g.chance(2),
    }
}

/// Everything the executor did in one run of a case.
#[derive(Debug, PartialEq, Eq, Default)]
struct Trace {
    /// (call, attempt, delay, backoff) before every sleep.
    sleeps: Vec<(usize, u32, Duration, Duration)>,
    /// (delay asked for, window, ticket) of every slot acquisition.
    grants: Vec<(u64, u64, u64)>,
    /// How each call ended.
    results: Vec<String>,
    /// `retry_policy_fallback_total`, summed.
    policy_fallbacks: u64,
}

async fn run(case: &Case, component: Option<PolicyComponent>) -> Trace {
    let registry = prometheus::Registry::new();
    let metrics = RetryMetrics::register(&registry).unwrap();
    let coordinator = Arc::new(ScriptedCoordinator {
        clock: TokioClock::starting_at(BASE_US),
        windows: Mutex::default(),
        grants: Mutex::default(),
    });
    let sleeps = Arc::new(Mutex::new(Vec::new()));
    let call_index = Arc::new(Mutex::new(0usize));
    let (s, c) = (sleeps.clone(), call_index.clone());
    let refresh = case.refresh;
    let mut policy = RetryPolicy::new(case.config)
        .unwrap()
        .with_clock(TokioClock::starting_at(BASE_US))
        .with_coordinator(coordinator.clone())
        .with_metrics(metrics)
        .with_seed(case.seed)
        .with_token_refresh(move || async move { refresh })
        .with_notify(move |e| {
            let call = *c.lock().unwrap();
            s.lock()
                .unwrap()
                .push((call, e.attempt, e.delay, e.backoff));
        });
    if let Some(component) = component {
        policy = policy.with_component(component).unwrap();
        assert_eq!(policy.engine_name(), "wasm");
    }
    let mut results = Vec::new();
    for (i, script) in case.calls.iter().enumerate() {
        *call_index.lock().unwrap() = i;
        tokio::time::sleep(Duration::from_millis(case.pauses_ms[i])).await;
        let attempt = Mutex::new(0usize);
        let result = policy
            .execute_classified(
                || {
                    let mut n = attempt.lock().unwrap();
                    let outcome = script.get(*n).copied().flatten();
                    *n += 1;
                    std::future::ready(match outcome {
                        Some(failure) => Err(failure),
                        None => Ok(*n),
                    })
                },
                "svc",
                "op",
                |e: &Scripted| {
                    Classification::with_server_delay(
                        e.category,
                        e.server_delay_ms.map(Duration::from_millis),
                    )
                },
            )
            .await;
        results.push(match result {
            Ok(attempts) => format!("ok after {attempts}"),
            Err(RetryError::MaxRetriesExceeded(m)) => {
                format!("gave up after {}: {}", m.attempts, m.reason)
            }
            Err(RetryError::NonRetryable(e)) => format!("non-retryable {e}"),
            Err(RetryError::CircuitOpen { retry_after }) => {
                format!("circuit open for {retry_after:?}")
            }
        });
    }
    let policy_fallbacks = registry
        .gather()
        .iter()
        .filter(|f| f.name() == "retry_policy_fallback_total")
        .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value()))
        .sum::<f64>() as u64;
    let grants = coordinator.grants.lock().unwrap().clone();
    let sleeps = sleeps.lock().unwrap().clone();
    Trace {
        sleeps,
        grants,
        results,
        policy_fallbacks,
    }
}

#[tokio::test(start_paused = true)]
async fn the_executor_decides_the_same_with_the_component_for_2000_random_cases() {
    let wasm = component();
    let mut g = Gen(0x5EED_2026);
    let mut endings = BTreeSet::new();
    let (mut sleeps, mut grants) = (0, 0);
    for i in 0..2000 {
        let case = random_case(&mut g);
        let native = run(&case, None).await;
        let component = run(&case, Some(wasm.clone())).await;
        assert_eq!(
            component.policy_fallbacks, 0,
            "case {i}: the component failed"
        );
        assert_eq!(native, component, "case {i}: {:?}", case.config);
        sleeps += native.sleeps.len();
        grants += native.grants.len();
        for r in &native.results {
            endings.insert(match r.split_once(": ") {
                Some((_, reason)) => reason.to_string(),
                None => r.split(' ').next().unwrap_or("").to_string(),
            });
        }
    }
    eprintln!("{sleeps} retries and {grants} slot acquisitions compared; endings {endings:?}");
    assert!(sleeps > 1000, "only {sleeps} retries compared");
    assert!(grants > 400, "only {grants} coordinated retries compared");
    for ending in [
        "ok",
        "non-retryable",
        "circuit",
        "exhausted",
        "deadline",
        "budget",
        "retry_after_too_long",
    ] {
        assert!(
            endings.contains(ending),
            "no case ended in {ending}: {endings:?}"
        );
    }
}
