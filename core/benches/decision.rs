//! What one retry decision costs, and how a schedule compares with backon's.
//!
//! - `next_delay/default`: one jittered exponential delay of the `default` preset (proportional
//!   jitter, the seed's ±10 %).
//! - `decision/on_failure`: one whole `on_failure` call as a host makes it: a category check
//!   against `retry_on`, the attempt limit, a server delay, the `max_elapsed` deadline, the slot
//!   request of a coordinated policy and an A6 retry budget.
//! - `schedule/{ricochet,backon}/N`: N jittered delays of the same exponential curve (100 ms,
//!   factor 2, capped at 10 s) from ricochet's `plan` and from backon's `ExponentialBuilder`
//!   (`with_jitter`, seeded, so neither side asks the OS for entropy). Throughput is per delay.
//!
//! Run with `cargo bench -p ricochet-core --bench decision`; see BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ricochet_core::budget::{BudgetConfig, RetryBudget};
use ricochet_core::{Decision, ErrorCategory, Failure, Guards, RetryConfig, RetryState};

fn next_delay(c: &mut Criterion) {
    let policy = RetryConfig::DEFAULT
        .validate()
        .expect("the default preset is valid");
    let mut group = c.benchmark_group("next_delay");
    group.throughput(Throughput::Elements(1));
    group.bench_function("default", |b| {
        let mut seed = 0_u64;
        b.iter(|| {
            seed = seed.wrapping_add(1);
            black_box(&policy).next_delay(black_box(2), black_box(seed), black_box(0))
        });
    });
    group.finish();
}

fn decision(c: &mut Criterion) {
    let config = RetryConfig {
        max_attempts: 5,
        max_elapsed: Some(30.0),
        retry_budget: Some(BudgetConfig {
            max_tokens: 10,
            token_ratio: 0.1,
        }),
        ..RetryConfig::DEFAULT
    };
    let policy = config.validate().expect("valid");
    let budget = RetryBudget::new(policy.budget().expect("set")).expect("valid");
    // The second failure of a call, with a Retry-After shorter than the computed delay.
    let mut state = RetryState::new(42, 1_000_000);
    let first = state.on_failure(
        &policy,
        Failure::new(ErrorCategory::Timeout),
        1_010_000,
        Guards::none(),
    );
    assert!(matches!(first, Decision::Retry { .. }), "{first:?}");
    let failure = Failure::new(ErrorCategory::ServiceUnavailable).with_server_delay_us(50_000);
    let now_us = 1_200_000;

    // Check once that the measured path is the full one: every check passed, a retry decided.
    let mut probe = (state, budget);
    let d = probe.0.on_failure(
        &policy,
        failure,
        now_us,
        Guards {
            breaker: None,
            budget: Some(&mut probe.1),
        },
    );
    assert!(
        matches!(
            d,
            Decision::Retry {
                slot_request: Some(_),
                ..
            }
        ),
        "{d:?}"
    );

    let mut group = c.benchmark_group("decision");
    group.throughput(Throughput::Elements(1));
    group.bench_function("on_failure", |b| {
        b.iter(|| {
            // Fresh copies each time (40 + 12 bytes), so every iteration takes the same path.
            let mut state = black_box(state);
            let mut budget = black_box(budget);
            let guards = Guards {
                breaker: None,
                budget: Some(&mut budget),
            };
            black_box(state.on_failure(
                black_box(&policy),
                black_box(failure),
                black_box(now_us),
                guards,
            ))
        });
    });
    group.finish();
}

fn schedule(c: &mut Criterion) {
    let mut group = c.benchmark_group("schedule");
    // 2 delays: the default preset (3 attempts); 10 delays: a longer curve that reaches the cap.
    for delays in [2_usize, 10] {
        let policy = RetryConfig {
            max_attempts: delays as u32 + 1,
            ..RetryConfig::DEFAULT
        }
        .validate()
        .expect("valid");
        let backon = ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(100))
            .with_factor(2.0)
            .with_max_delay(Duration::from_secs(10))
            .with_max_times(delays)
            .with_jitter()
            .with_jitter_seed(42);
        assert_eq!(policy.plan(42).count(), delays);
        assert_eq!(backon.build().count(), delays);

        group.throughput(Throughput::Elements(delays as u64));
        group.bench_with_input(
            BenchmarkId::new("ricochet", delays),
            &policy,
            |b, policy| {
                let mut seed = 0_u64;
                b.iter(|| {
                    seed = seed.wrapping_add(1);
                    let mut total_us = 0_u64;
                    for retry in black_box(policy).plan(black_box(seed)) {
                        total_us += retry.delay_us;
                    }
                    black_box(total_us)
                });
            },
        );
        group.bench_with_input(BenchmarkId::new("backon", delays), &backon, |b, backon| {
            let mut seed = 0_u64;
            b.iter(|| {
                seed = seed.wrapping_add(1);
                let mut total = Duration::ZERO;
                for delay in black_box(*backon).with_jitter_seed(seed).build() {
                    total += delay;
                }
                black_box(total)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, next_delay, decision, schedule);
criterion_main!(benches);
