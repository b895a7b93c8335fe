//! A policy decision through the component host against the native core and against the
//! floor — an empty export on the same engine — in one run.
//!
//! ```text
//! cargo bench -p ricochet-tests --bench component
//! ```
//!
//! - `decision/*`: one decision after a failure, the `default` preset (proportional jitter,
//!   coordination on: the decision carries a slot request). `native` is `RetryState::on_failure`
//!   on a validated policy — what the native executor runs; `floor/<sandbox>` is
//!   `PolicyComponent::call_empty`, the `probe.empty` export (no arguments, no result) through
//!   the same pool, store reset and budget: what any call costs here; `wasm/<sandbox>` is
//!   `PolicyComponent::decide` (the guest's policy for the config found, state and failure
//!   lowered as scalars, the guest decides, the answer lifted); `engine/<sandbox>` is what the
//!   executor calls — `PolicyEngine::decide`, which adds the core-state conversions and the
//!   contract checks.
//! - `plan/*`: a whole schedule in one crossing, for 2 retries (`default`), 10, 100 and 999
//!   (the most `max_attempts` allows); criterion reports the time per schedule and the
//!   throughput in delays. `next-delay×n` asks for the same delays one call each.
//! - `load/*`: compiling + checking + pre-instantiating a component (`from_bytes`), and one
//!   instantiation from the `InstancePre`.
//!
//! Sandboxes: `unmetered` (memory and stack caps only), `fuel` (the default: 10 M units per
//! call), `epoch` (a 5 ms guest-time budget) and `fuel+epoch`. Under heavy load a time-metered
//! call can run past its budget (the machine, not the guest, was slow); such a call is counted
//! and reported at the end, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ricochet::component::{
    failure_to_wit, state_to_wit, wit, ComponentError, PolicyComponent, Sandbox,
};
use ricochet::engine::{DecideInput, PolicyEngine};
use ricochet_core::{ErrorCategory, Failure, Guards, RetryConfig, RetryState};

fn bytes() -> &'static [u8] {
    ricochet_test_support::guests::POLICY_COMPONENT
        .expect("the policy component was not built: install a wasm32 toolchain and rebuild")
}

fn sandboxes() -> [(&'static str, Sandbox); 4] {
    let epoch = Sandbox::DEFAULT_TIME_PER_CALL;
    [
        ("unmetered", Sandbox::unmetered()),
        ("fuel", Sandbox::default()),
        ("epoch", Sandbox::unmetered().with_time_per_call(epoch)),
        ("fuel+epoch", Sandbox::default().with_time_per_call(epoch)),
    ]
}

const NOW_US: u64 = 1_800_000_000_000_000;

/// Calls that failed (a time budget that expired under load): counted, reported at the end.
static FAILED_CALLS: AtomicU64 = AtomicU64::new(0);

/// The answer of a call, or `None` (counted) when it failed.
fn answered<T, E: std::fmt::Debug>(r: Result<Result<T, E>, ComponentError>) -> Option<T> {
    match r {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => panic!("the bench's config was refused: {e:?}"),
        Err(_) => {
            FAILED_CALLS.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

fn decision(c: &mut Criterion) {
    let config = RetryConfig::DEFAULT;
    let policy = config.validate().unwrap();
    let failure = Failure::new(ErrorCategory::ServiceUnavailable);
    let state = RetryState::new(0xDEC1DE, NOW_US - 1_000);
    let mut group = c.benchmark_group("decision");
    group.bench_function("native", |b| {
        b.iter(|| {
            let mut s = black_box(state);
            s.on_failure(&policy, black_box(failure), NOW_US, Guards::none())
        })
    });
    let wit_state = state_to_wit(&state);
    let wit_failure = failure_to_wit(failure);
    let no_guards = wit::Guards {
        breaker: None,
        budget: None,
    };
    for (name, sandbox) in sandboxes() {
        let component = PolicyComponent::from_bytes(bytes(), sandbox).unwrap();
        assert!(
            component.call_empty().unwrap_or(true),
            "the policy component exports no probe"
        );
        group.bench_function(BenchmarkId::new("floor", name), |b| {
            b.iter(|| answered(component.call_empty().map(Ok::<_, ()>)))
        });
        group.bench_function(BenchmarkId::new("wasm", name), |b| {
            b.iter(|| {
                answered(component.decide(
                    black_box(&config),
                    black_box(wit_state),
                    wit_failure,
                    NOW_US,
                    &no_guards,
                ))
            })
        });
        group.bench_function(BenchmarkId::new("engine", name), |b| {
            b.iter(|| {
                let mut s = black_box(state);
                let input = DecideInput {
                    config: &config,
                    policy: &policy,
                    failure,
                    now_us: NOW_US,
                    imports: None,
                };
                PolicyEngine::decide(&component, input, &mut s, Guards::none()).ok()
            })
        });
    }
    group.finish();
}

fn plan(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan");
    let component = PolicyComponent::from_bytes(bytes(), Sandbox::default()).unwrap();
    let unmetered = PolicyComponent::from_bytes(bytes(), Sandbox::unmetered()).unwrap();
    for retries in [2u32, 10, 100, 999] {
        let config = RetryConfig {
            max_attempts: retries + 1,
            ..RetryConfig::DEFAULT
        };
        let policy = config.validate().unwrap();
        group.throughput(Throughput::Elements(u64::from(retries)));
        group.bench_function(BenchmarkId::new("native", retries), |b| {
            b.iter(|| policy.plan(black_box(7)).collect::<Vec<_>>())
        });
        group.bench_function(BenchmarkId::new("wasm/fuel", retries), |b| {
            b.iter(|| answered(component.plan(black_box(&config), black_box(7))))
        });
        group.bench_function(BenchmarkId::new("wasm/unmetered", retries), |b| {
            b.iter(|| answered(unmetered.plan(black_box(&config), black_box(7))))
        });
        if retries <= 10 {
            group.bench_function(BenchmarkId::new("wasm/fuel/next-delay×n", retries), |b| {
                b.iter(|| {
                    let mut prev_us = 0;
                    for retry in 1..=retries {
                        prev_us =
                            answered(component.next_delay(&config, retry, 7, prev_us)).unwrap_or(0);
                    }
                    prev_us
                })
            });
        }
    }
    group.finish();
}

fn load(c: &mut Criterion) {
    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    group.bench_function("compile+check", |b| {
        b.iter(|| PolicyComponent::from_bytes(black_box(bytes()), Sandbox::default()).is_ok())
    });
    group.sample_size(50);
    for (name, sandbox) in sandboxes() {
        let component = PolicyComponent::from_bytes(bytes(), sandbox).unwrap();
        group.bench_function(BenchmarkId::new("instantiate", name), |b| {
            b.iter(|| {
                component.clear_idle();
                if component.prewarm().is_err() {
                    FAILED_CALLS.fetch_add(1, Ordering::Relaxed);
                }
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = decision, plan, load, report_failed_calls
}
criterion_main!(benches);

/// Says how many calls failed (a time budget that expired under load), if any did.
fn report_failed_calls(_: &mut Criterion) {
    let failed = FAILED_CALLS.load(Ordering::Relaxed);
    if failed > 0 {
        eprintln!(
            "note: {failed} component calls failed during the run (time budget expired under load); their iterations timed the failure path"
        );
    }
}
