//! A policy decision through the component host against the native core, in one run.
//!
//! ```text
//! cargo bench -p ricochet-tests --bench component
//! ```
//!
//! - `decision/*`: one decision after a failure, the `default` preset (proportional jitter,
//!   coordination on: the decision carries a slot request). `native` is `RetryState::on_failure`
//!   on a validated policy — what the native executor runs; `native+validate` also validates the
//!   config, which a stateless component call has to do every time; `wasm/<sandbox>` is
//!   `PolicyComponent::decide` (config and state lowered, guest validates and decides, the
//!   answer lifted); `engine/<sandbox>` is what the executor calls — `PolicyEngine::decide`,
//!   which adds the core-state conversions and the contract checks.
//! - `plan/*`: a whole schedule in one crossing, for 2 retries (`default`), 10, 100 and 999
//!   (the most `max_attempts` allows); criterion reports the time per schedule and the
//!   throughput in delays.
//! - `crossing/validate`: the cheapest export — the config in, nothing out — as the floor of
//!   any call that passes a config.
//! - `load/*`: compiling + checking + pre-instantiating a component (`from_bytes`), and one
//!   instantiation from the `InstancePre`.
//!
//! Sandboxes: `unmetered` (memory and stack caps only), `fuel` (the default: 10 M units per
//! call), `epoch` (a 5 ms guest-time budget) and `fuel+epoch`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ricochet::component::{failure_to_wit, state_to_wit, wit, PolicyComponent, Sandbox};
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
    group.bench_function("native+validate", |b| {
        b.iter(|| {
            let policy = black_box(&config).validate().unwrap();
            let mut s = black_box(state);
            s.on_failure(&policy, black_box(failure), NOW_US, Guards::none())
        })
    });
    {
        let component = PolicyComponent::from_bytes(bytes(), Sandbox::unmetered()).unwrap();
        group.bench_function("crossing/validate", |b| {
            b.iter(|| component.validate(black_box(&config)).unwrap().unwrap())
        });
    }
    let wit_state = state_to_wit(&state);
    let wit_failure = failure_to_wit(failure);
    let no_guards = wit::Guards {
        breaker: None,
        budget: None,
    };
    for (name, sandbox) in sandboxes() {
        let component = PolicyComponent::from_bytes(bytes(), sandbox).unwrap();
        group.bench_function(BenchmarkId::new("wasm", name), |b| {
            b.iter(|| {
                component
                    .decide(
                        black_box(&config),
                        black_box(wit_state),
                        wit_failure,
                        NOW_US,
                        &no_guards,
                    )
                    .unwrap()
                    .unwrap()
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
                PolicyEngine::decide(&component, input, &mut s, Guards::none()).unwrap()
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
            b.iter(|| {
                component
                    .plan(black_box(&config), black_box(7))
                    .unwrap()
                    .unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("wasm/unmetered", retries), |b| {
            b.iter(|| {
                unmetered
                    .plan(black_box(&config), black_box(7))
                    .unwrap()
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn load(c: &mut Criterion) {
    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    group.bench_function("compile+check", |b| {
        b.iter(|| PolicyComponent::from_bytes(black_box(bytes()), Sandbox::default()).unwrap())
    });
    group.sample_size(50);
    for (name, sandbox) in sandboxes() {
        let component = PolicyComponent::from_bytes(bytes(), sandbox).unwrap();
        group.bench_function(BenchmarkId::new("instantiate", name), |b| {
            b.iter(|| {
                component.clear_idle();
                component.prewarm().unwrap();
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
    targets = decision, plan, load
}
criterion_main!(benches);
