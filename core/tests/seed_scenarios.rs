//! The seed's unit scenarios, run against the public API the way a host drives it: a virtual
//! clock, one `RetryState` per logical call, `on_failure` / `on_success` after each attempt.
//! Then one scenario per way a call gives up, the coordination slots, and Retry-After headers
//! from RFC 9110 reaching a decision.
//!
//! Expected delays come from the formulas of the design document (see `common`), never from
//! the engine's own `next_delay`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use ricochet_core::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use ricochet_core::budget::{BudgetConfig, RetryBudget};
use ricochet_core::retry_after::parse_retry_after;
use ricochet_core::{
    unit_interval, Decision, ErrorCategory, Failure, GiveUpReason, Guards, JitterStrategy, Policy,
    RetryConfig, RetryState, RetryStateParts, SlotRequest, SlotResolution,
};

const PRESETS: [(&str, RetryConfig); 3] = [
    ("default", RetryConfig::DEFAULT),
    ("aggressive", RetryConfig::AGGRESSIVE),
    ("conservative", RetryConfig::CONSERVATIVE),
];

/// When every logical call of these scenarios starts, on the virtual clock.
const START_US: u64 = 1_000_000_000;
/// How long each attempt takes on the virtual clock.
const ATTEMPT_US: u64 = 2_500;

/// What a host sees of one logical call.
struct Run {
    /// Times the operation was invoked.
    invocations: u32,
    /// Each decision, with the time it was asked for.
    decisions: Vec<(u64, Decision)>,
    succeeded: bool,
    state: RetryState,
}

/// Drives one logical call: invokes `operation` (given the 1-based call number), reports the
/// outcome, sleeps the decided delay on a virtual clock, until a success or a give-up.
fn run(policy: &Policy, seed: u64, mut operation: impl FnMut(u32) -> Result<(), Failure>) -> Run {
    let mut state = RetryState::new(seed, START_US);
    let mut now_us = START_US;
    let mut decisions = Vec::new();
    let mut invocations = 0;
    loop {
        invocations += 1;
        assert!(invocations <= 1_000, "the engine never stopped");
        now_us += ATTEMPT_US;
        match operation(invocations) {
            Ok(()) => {
                state.on_success(now_us, Guards::none());
                return Run {
                    invocations,
                    decisions,
                    succeeded: true,
                    state,
                };
            }
            Err(failure) => {
                let decision = state.on_failure(policy, failure, now_us, Guards::none());
                decisions.push((now_us, decision));
                match decision {
                    Decision::Retry { delay_us, .. } => now_us += delay_us,
                    Decision::GiveUp { .. } => {
                        return Run {
                            invocations,
                            decisions,
                            succeeded: false,
                            state,
                        }
                    }
                }
            }
        }
    }
}

fn connection_error() -> Failure {
    Failure::new(ErrorCategory::Connection)
}

fn no_jitter(config: RetryConfig) -> RetryConfig {
    RetryConfig {
        jitter: false,
        ..config
    }
}

/// The delays of the `Retry` decisions, in order.
fn retry_delays(decisions: &[(u64, Decision)]) -> Vec<u64> {
    decisions
        .iter()
        .filter_map(|(_, d)| match d {
            Decision::Retry { delay_us, .. } => Some(*delay_us),
            Decision::GiveUp { .. } => None,
        })
        .collect()
}

fn reason(decision: Decision) -> Option<GiveUpReason> {
    match decision {
        Decision::GiveUp { reason } => Some(reason),
        Decision::Retry { .. } => None,
    }
}

#[test]
fn successful_operation_no_retries() {
    for (name, config) in PRESETS {
        let policy = config.validate().unwrap();
        let r = run(&policy, 11, |_| Ok(()));
        assert!(r.succeeded, "{name}");
        assert_eq!(r.invocations, 1, "{name}");
        assert_eq!(r.state.calls(), 1, "{name}");
        assert!(r.decisions.is_empty(), "{name}: {:?}", r.decisions);
    }
}

#[test]
fn success_after_retries() {
    let seed = 7;
    for config in [RetryConfig::DEFAULT, no_jitter(RetryConfig::DEFAULT)] {
        let policy = config.validate().unwrap();
        let r = run(&policy, seed, |call| {
            if call <= 2 {
                Err(connection_error())
            } else {
                Ok(())
            }
        });
        assert!(r.succeeded);
        assert_eq!(r.invocations, 3);
        assert_eq!(r.state.calls(), 3);

        let expected = common::schedule_us(&config, policy.strategy(), seed);
        assert_eq!(retry_delays(&r.decisions), expected);
        if !config.jitter {
            assert_eq!(expected, [100_000, 200_000]);
        }
        // Coordination is on in every preset: each retry first asks for a slot in the window
        // that holds its fire time (1 s windows).
        for (i, &(now_us, decision)) in r.decisions.iter().enumerate() {
            let earliest_us = now_us + expected[i];
            let want = Decision::Retry {
                delay_us: expected[i],
                slot_request: Some(SlotRequest {
                    earliest_us,
                    window: earliest_us / 1_000_000,
                    retry: i as u32 + 1,
                    moves: 0,
                    latest_us: None,
                }),
            };
            assert_eq!(decision, want, "retry {}", i + 1);
        }
    }
}

#[test]
fn max_retries_exceeded() {
    let transient = [
        ErrorCategory::Connection,
        ErrorCategory::Timeout,
        ErrorCategory::ServiceUnavailable,
        ErrorCategory::RateLimitExceeded,
        ErrorCategory::RateLimited,
    ];
    for (name, config) in PRESETS {
        let policy = config.validate().unwrap();
        for category in transient {
            let r = run(&policy, 3, |_| Err(Failure::new(category)));
            assert!(!r.succeeded);
            assert_eq!(r.invocations, config.max_attempts, "{name} {category}");
            assert_eq!(r.state.calls(), config.max_attempts, "{name} {category}");
            let (last, retries) = r.decisions.split_last().unwrap();
            assert_eq!(
                reason(last.1),
                Some(GiveUpReason::Exhausted),
                "{name} {category}"
            );
            assert_eq!(retries.len() as u32, config.max_attempts - 1);
            assert_eq!(
                retry_delays(retries),
                common::schedule_us(&config, JitterStrategy::Proportional, 3),
                "{name} {category}"
            );
        }
    }
}

#[test]
fn backoff_timing_verification() {
    // Base 2 from 100 ms, capped at 10 s at the 8th retry: every base is exact in f64.
    let config = RetryConfig {
        max_attempts: 10,
        initial_delay: 0.1,
        max_delay: 10.0,
        exponential_base: 2.0,
        jitter_factor: 0.1,
        ..RetryConfig::DEFAULT
    };
    let bases: [u64; 9] = [
        100_000, 200_000, 400_000, 800_000, 1_600_000, 3_200_000, 6_400_000, 10_000_000, 10_000_000,
    ];

    // Derived by hand from the formulas, each term written out, for seed 42.
    let seed = 42;
    let u: Vec<f64> = (1..=9).map(|n| unit_interval(seed, n)).collect();
    let f = config.jitter_factor;
    let mut by_hand: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    by_hand.insert("none", bases.to_vec());
    by_hand.insert(
        "proportional",
        // Clamped to max_delay: the 9th retry (base 10 s, u > 0.5) hits the cap.
        (0..9)
            .map(|i| (bases[i] as f64 * (1.0 + f * (2.0 * u[i] - 1.0))).min(10_000_000.0) as u64)
            .collect(),
    );
    by_hand.insert(
        "full",
        (0..9).map(|i| (bases[i] as f64 * u[i]) as u64).collect(),
    );
    by_hand.insert(
        "equal",
        (0..9)
            .map(|i| (bases[i] as f64 / 2.0 + u[i] * (bases[i] as f64 / 2.0)) as u64)
            .collect(),
    );
    let mut prev = 100_000.0_f64;
    by_hand.insert(
        "decorrelated",
        (0..9)
            .map(|i| {
                let d = (100_000.0 + u[i] * (3.0 * prev - 100_000.0)).min(10_000_000.0) as u64;
                prev = d as f64;
                d
            })
            .collect(),
    );
    // The same schedules pinned as numbers: a change in the generator, the conversion or the
    // formulas shows up here even if it changed the oracle too.
    let pinned: [(&str, [u64; 9]); 5] = [
        ("none", bases),
        (
            "proportional",
            [
                93_198, 191_144, 387_535, 726_084, 1_717_832, 3_019_779, 6_784_808, 9_679_862,
                10_000_000,
            ],
        ),
        (
            "full",
            [
                15_991, 55_720, 137_676, 30_424, 1_389_164, 698_896, 5_124_044, 3_399_310,
                6_184_820,
            ],
        ),
        (
            "equal",
            [
                57_995, 127_860, 268_838, 415_212, 1_494_582, 1_949_448, 5_762_022, 6_699_655,
                8_092_410,
            ],
        ),
        (
            "decorrelated",
            [
                131_982, 182_450, 253_973, 125_172, 339_210, 300_415, 741_502, 822_185, 1_563_671,
            ],
        ),
    ];

    for strategy in JitterStrategy::ALL {
        let name = strategy.name();
        let policy = RetryConfig {
            strategy,
            jitter: strategy != JitterStrategy::None,
            ..config
        }
        .validate()
        .unwrap();
        assert_eq!(policy.strategy(), strategy);
        for (n, &base) in bases.iter().enumerate() {
            assert_eq!(
                policy.base_delay_us(n as u32 + 1),
                base,
                "base before retry {}",
                n + 1
            );
        }
        let planned: Vec<u64> = policy.plan(seed).map(|r| r.delay_us).collect();
        assert_eq!(planned, by_hand[name], "{name}, seed {seed}");
        let pinned_here = pinned.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(planned, pinned_here, "{name}, seed {seed}");

        // Other seeds, against the shared oracle; the decisions give the same delays as `plan`.
        for seed in [0, 1, 0xDEAD_BEEF, u64::MAX] {
            let planned: Vec<u64> = policy.plan(seed).map(|r| r.delay_us).collect();
            assert_eq!(
                planned,
                common::schedule_us(&config, strategy, seed),
                "{name}, {seed}"
            );
            let r = run(&policy, seed, |_| Err(connection_error()));
            assert_eq!(retry_delays(&r.decisions), planned, "{name}, seed {seed}");
        }
    }

    // The presets without jitter.
    let presets: [(RetryConfig, &[u64]); 3] = [
        (RetryConfig::DEFAULT, &[100_000, 200_000]),
        (RetryConfig::AGGRESSIVE, &[50_000, 75_000, 112_500, 168_750]),
        (RetryConfig::CONSERVATIVE, &[500_000]),
    ];
    for (preset, want) in presets {
        let policy = no_jitter(preset).validate().unwrap();
        let planned: Vec<u64> = policy.plan(99).map(|r| r.delay_us).collect();
        assert_eq!(planned, want);
        assert_eq!(common::schedule_us(&preset, JitterStrategy::None, 99), want);
    }
}

/// The chi-square statistic of `samples` (each in `[0, 1)`) against 20 equiprobable bins.
fn chi_square_20_bins(samples: impl Iterator<Item = f64>) -> (f64, usize) {
    let mut bins = [0u64; 20];
    let mut n = 0;
    for v in samples {
        assert!(
            (0.0..1.0).contains(&v),
            "normalised sample {v} outside [0, 1)"
        );
        bins[(v * 20.0) as usize] += 1;
        n += 1;
    }
    let expected = n as f64 / 20.0;
    let stat = bins
        .iter()
        .map(|&o| (o as f64 - expected).powi(2) / expected)
        .sum();
    (stat, n)
}

/// χ²(0.999) with 19 degrees of freedom (20 bins): a correct generator fails one run in 1000.
const CHI2_19_DF_0_999: f64 = 43.82;

#[test]
fn jitter_distribution_check() {
    const N: u64 = 100_000;
    // Base 1: every retry has the same base, 10 s, far from the 100 s cap, so both the seed and
    // the counter can vary and the µs truncation is negligible against 20 bins.
    let config = RetryConfig {
        max_attempts: 1_000,
        initial_delay: 10.0,
        max_delay: 100.0,
        exponential_base: 1.0,
        jitter_factor: 0.5,
        ..RetryConfig::DEFAULT
    };
    let base = 10_000_000.0;
    for strategy in JitterStrategy::ALL {
        let policy = RetryConfig { strategy, ..config }.validate().unwrap();
        // Each delay mapped back to the uniform draw its formula started from.
        let normalise = |d: u64| -> f64 {
            let d = d as f64;
            match strategy {
                JitterStrategy::None => 0.0,
                JitterStrategy::Proportional => (d - base * (1.0 - 0.5)) / (2.0 * 0.5 * base),
                JitterStrategy::Full => d / base,
                JitterStrategy::Equal => (d - base / 2.0) / (base / 2.0),
                // At the first retry: uniform in [initial, 3 * initial).
                JitterStrategy::Decorrelated => (d - base) / (2.0 * base),
            }
        };
        // Many seeds at the first retry, then one seed over many retry numbers.
        let by_seed = (0..N).map(|seed| policy.next_delay(1, seed, 0).delay_us);
        let by_retry = (1..=N as u32).map(|retry| policy.next_delay(retry, 0x5EED, 0).delay_us);
        if strategy == JitterStrategy::None {
            assert!(by_seed.chain(by_retry).all(|d| d == 10_000_000));
            continue;
        }
        for (what, stat_n) in [
            ("seeds", chi_square_20_bins(by_seed.map(normalise))),
            ("retries", chi_square_20_bins(by_retry.map(normalise))),
        ] {
            let (stat, n) = stat_n;
            assert_eq!(n as u64, N);
            assert!(
                stat < CHI2_19_DF_0_999,
                "{} over {what}: chi-square {stat:.2} >= {CHI2_19_DF_0_999}",
                strategy.name()
            );
        }
    }
}

#[test]
fn non_retryable_categories_give_up_at_once() {
    let policy = RetryConfig::DEFAULT.validate().unwrap();
    for category in [
        ErrorCategory::Authentication,
        ErrorCategory::Validation,
        ErrorCategory::ResourceNotFound,
        ErrorCategory::BusinessLogic,
        ErrorCategory::AuthExpired, // without a token refresh
    ] {
        let r = run(&policy, 1, |_| Err(Failure::new(category)));
        assert_eq!(r.invocations, 1, "{category}");
        assert_eq!(r.decisions.len(), 1);
        assert_eq!(
            reason(r.decisions[0].1),
            Some(GiveUpReason::NonRetryable),
            "{category}"
        );
    }
    // A category left out of `retry_on` is not retried either.
    let narrow = RetryConfig {
        retry_on: ricochet_core::CategorySet::EMPTY.with(ErrorCategory::Timeout),
        ..RetryConfig::DEFAULT
    }
    .validate()
    .unwrap();
    let r = run(&narrow, 1, |_| Err(connection_error()));
    assert_eq!(reason(r.decisions[0].1), Some(GiveUpReason::NonRetryable));
    let r = run(&narrow, 1, |_| Err(Failure::new(ErrorCategory::Timeout)));
    assert_eq!(
        reason(r.decisions.last().unwrap().1),
        Some(GiveUpReason::Exhausted)
    );
}

#[test]
fn auth_expired_is_retried_once_only_after_a_token_refresh() {
    let policy = no_jitter(RetryConfig {
        max_attempts: 5,
        ..RetryConfig::DEFAULT
    })
    .validate()
    .unwrap();
    let expired = Failure::new(ErrorCategory::AuthExpired);
    let refreshed = expired.with_token_refreshed();

    // Refreshed: one retry, then a second expiry (even refreshed again) gives up.
    let r = run(&policy, 1, |_| Err(refreshed));
    assert_eq!(r.invocations, 2);
    assert_eq!(retry_delays(&r.decisions), [100_000]);
    assert_eq!(reason(r.decisions[1].1), Some(GiveUpReason::NonRetryable));

    // Not refreshed: no retry at all.
    let r = run(&policy, 1, |_| Err(expired));
    assert_eq!(r.invocations, 1);
    assert_eq!(reason(r.decisions[0].1), Some(GiveUpReason::NonRetryable));

    // Other failures around the one auth retry are retried as usual.
    let r = run(&policy, 1, |call| match call {
        2 => Err(refreshed),
        5 => Ok(()),
        _ => Err(connection_error()),
    });
    assert!(r.succeeded);
    assert_eq!(
        retry_delays(&r.decisions),
        [100_000, 200_000, 400_000, 800_000]
    );

    // The one retry survives a trip through plain fields (e.g. a WIT record).
    let mut state = RetryState::new(1, 0);
    assert!(matches!(
        state.on_failure(&policy, refreshed, 0, Guards::none()),
        Decision::Retry { .. }
    ));
    let parts = state.to_parts();
    assert_eq!(
        parts,
        RetryStateParts {
            seed: 1,
            started_us: 0,
            prev_delay_us: 100_000,
            calls: 1,
            auth_retried: true
        }
    );
    let mut state = RetryState::from_parts(parts);
    let d = state.on_failure(&policy, refreshed, 200_000, Guards::none());
    assert_eq!(reason(d), Some(GiveUpReason::NonRetryable));
}

#[test]
fn deadline_via_max_elapsed() {
    let policy = no_jitter(RetryConfig {
        max_elapsed: Some(0.25),
        ..RetryConfig::DEFAULT
    })
    .validate()
    .unwrap();
    let mut state = RetryState::new(5, 0);
    // Fires at 110 ms, inside the 250 ms budget.
    let d = state.on_failure(&policy, connection_error(), 10_000, Guards::none());
    assert!(
        matches!(
            d,
            Decision::Retry {
                delay_us: 100_000,
                ..
            }
        ),
        "{d:?}"
    );
    // Would fire at 150 + 200 = 350 ms: past it.
    let mut late = state;
    let d = late.on_failure(&policy, connection_error(), 150_000, Guards::none());
    assert_eq!(reason(d), Some(GiveUpReason::Deadline));
    // Firing exactly at the deadline is still within it.
    let d = state.on_failure(&policy, connection_error(), 50_000, Guards::none());
    assert!(
        matches!(
            d,
            Decision::Retry {
                delay_us: 200_000,
                ..
            }
        ),
        "{d:?}"
    );

    // The deadline counts from the call's start, not from the clock's origin.
    let mut state = RetryState::new(5, START_US);
    let d = state.on_failure(
        &policy,
        connection_error(),
        START_US + 140_000,
        Guards::none(),
    );
    assert!(matches!(d, Decision::Retry { .. }), "{d:?}");
    let d = state.on_failure(
        &policy,
        connection_error(),
        START_US + 242_500,
        Guards::none(),
    );
    assert_eq!(reason(d), Some(GiveUpReason::Deadline));
}

fn breaker_config(failure_threshold: u32, cool_down: f64) -> BreakerConfig {
    BreakerConfig {
        failure_threshold,
        failure_rate: 0.0,
        minimum_calls: 0,
        window: 10.0,
        cool_down,
        half_open_probes: 1,
    }
}

fn with_breaker(breaker: &mut CircuitBreaker) -> Guards<'_> {
    Guards {
        breaker: Some(breaker),
        budget: None,
    }
}

#[test]
fn circuit_open_gives_up_while_the_breaker_outlasts_the_delay() {
    for (cool_down, expect_open) in [(5.0, true), (0.15, false)] {
        let policy = no_jitter(RetryConfig {
            max_attempts: 5,
            circuit_breaker: Some(breaker_config(2, cool_down)),
            ..RetryConfig::DEFAULT
        })
        .validate()
        .unwrap();
        let mut breaker = CircuitBreaker::new(policy.breaker().unwrap());
        let mut state = RetryState::new(9, 0);

        let d = state.on_failure(
            &policy,
            connection_error(),
            1_000,
            with_breaker(&mut breaker),
        );
        assert!(
            matches!(
                d,
                Decision::Retry {
                    delay_us: 100_000,
                    ..
                }
            ),
            "{d:?}"
        );
        assert_eq!(breaker.state(1_000), BreakerState::Closed);

        // The second failure in a row opens the breaker at 101 ms for `cool_down`; the retry
        // would fire at 301 ms.
        let d = state.on_failure(
            &policy,
            connection_error(),
            101_000,
            with_breaker(&mut breaker),
        );
        let until_us = 101_000 + policy.breaker().unwrap().cool_down_us();
        assert_eq!(breaker.state(101_000), BreakerState::Open { until_us });
        if expect_open {
            assert_eq!(reason(d), Some(GiveUpReason::CircuitOpen));
        } else {
            // Open, but half-open again by the time the retry fires: retry.
            assert!(
                matches!(
                    d,
                    Decision::Retry {
                        delay_us: 200_000,
                        ..
                    }
                ),
                "{d:?}"
            );
        }
    }

    // A request the server rejected says nothing about its health: not counted.
    let policy = RetryConfig {
        circuit_breaker: Some(breaker_config(1, 5.0)),
        ..RetryConfig::DEFAULT
    }
    .validate()
    .unwrap();
    let mut breaker = CircuitBreaker::new(policy.breaker().unwrap());
    let mut state = RetryState::new(9, 0);
    let d = state.on_failure(
        &policy,
        Failure::new(ErrorCategory::Validation),
        0,
        Guards {
            breaker: Some(&mut breaker),
            budget: None,
        },
    );
    assert_eq!(reason(d), Some(GiveUpReason::NonRetryable));
    assert_eq!(breaker.state(0), BreakerState::Closed);
}

#[test]
fn budget_spent_gives_up() {
    // A6: 10 tokens, 0.1 per success; retries only while more than 5 tokens are left.
    let budget_config = BudgetConfig {
        max_tokens: 10,
        token_ratio: 0.1,
    };
    let policy = RetryConfig {
        max_attempts: 10,
        retry_budget: Some(budget_config),
        ..RetryConfig::DEFAULT
    }
    .validate()
    .unwrap();
    let mut budget = RetryBudget::new(policy.budget().unwrap()).unwrap();
    let mut state = RetryState::new(4, 0);
    let decide = |state: &mut RetryState, budget: &mut RetryBudget| {
        state.on_failure(
            &policy,
            connection_error(),
            0,
            Guards {
                breaker: None,
                budget: Some(budget),
            },
        )
    };
    for failure in 1..=4 {
        let d = decide(&mut state, &mut budget);
        assert!(
            matches!(d, Decision::Retry { .. }),
            "failure {failure}: {d:?}"
        );
    }
    assert_eq!(
        reason(decide(&mut state, &mut budget)),
        Some(GiveUpReason::Budget)
    );
    assert_eq!(budget.tokens_milli(), 5_000);

    // Ten successes (of other calls) earn one token: a failure then leaves exactly 5, which is
    // not more than half. Eleven more earn 1.1: a failure leaves 5.1, and the retry goes out.
    for _ in 0..10 {
        RetryState::new(0, 0).on_success(
            0,
            Guards {
                breaker: None,
                budget: Some(&mut budget),
            },
        );
    }
    let mut fresh = RetryState::new(5, 0);
    assert_eq!(
        reason(decide(&mut fresh, &mut budget)),
        Some(GiveUpReason::Budget)
    );
    for _ in 0..11 {
        RetryState::new(0, 0).on_success(
            0,
            Guards {
                breaker: None,
                budget: Some(&mut budget),
            },
        );
    }
    let d = decide(&mut RetryState::new(6, 0), &mut budget);
    assert!(matches!(d, Decision::Retry { .. }), "{d:?}");
}

#[test]
fn retry_after_too_long_gives_up() {
    let policy = RetryConfig::DEFAULT.validate().unwrap();
    assert_eq!(policy.max_retry_after_us(), 60_000_000);
    let throttled = Failure::new(ErrorCategory::RateLimited);
    for (server_us, want) in [
        (60_000_001, Some(GiveUpReason::RetryAfterTooLong)),
        (u64::MAX, Some(GiveUpReason::RetryAfterTooLong)),
        (60_000_000, None),
    ] {
        let d = RetryState::new(1, 0).on_failure(
            &policy,
            throttled.with_server_delay_us(server_us),
            0,
            Guards::none(),
        );
        assert_eq!(reason(d), want, "{server_us}");
        if want.is_none() {
            // Accepted, and longer than max_delay (10 s): the server's word wins.
            assert!(
                matches!(
                    d,
                    Decision::Retry {
                        delay_us: 60_000_000,
                        ..
                    }
                ),
                "{d:?}"
            );
        }
    }
}

#[test]
fn longer_server_delay_wins_and_is_not_shortened_by_jitter() {
    for strategy in JitterStrategy::ALL {
        let policy = RetryConfig {
            strategy,
            ..RetryConfig::DEFAULT
        }
        .validate()
        .unwrap();
        for seed in 0..2_000 {
            for server_us in [300_000, 10_000_001, 30_000_000] {
                let mut state = RetryState::new(seed, 0);
                let failure =
                    Failure::new(ErrorCategory::RateLimited).with_server_delay_us(server_us);
                let d = state.on_failure(&policy, failure, 0, Guards::none());
                assert!(
                    matches!(d, Decision::Retry { delay_us, .. } if delay_us == server_us),
                    "{} seed {seed}: {d:?}",
                    strategy.name()
                );
            }
        }
    }
}

#[test]
fn shorter_server_delay_does_not_shorten_the_computed_delay() {
    for strategy in JitterStrategy::ALL {
        let config = RetryConfig {
            strategy,
            ..RetryConfig::DEFAULT
        };
        let policy = config.validate().unwrap();
        for seed in 0..2_000 {
            let computed = common::delay_us(&config, strategy, 1, seed, 0);
            for server_us in [0, 1, computed / 2, computed] {
                let failure =
                    Failure::new(ErrorCategory::ServiceUnavailable).with_server_delay_us(server_us);
                let d = RetryState::new(seed, 0).on_failure(&policy, failure, 0, Guards::none());
                assert!(
                    matches!(d, Decision::Retry { delay_us, .. } if delay_us == computed),
                    "{} seed {seed} server {server_us}: {d:?}",
                    strategy.name()
                );
            }
        }
    }
}

/// Every check of `on_failure` set to fire at once, then relaxed one by one in the documented
/// order: each step uncovers the next reason, and the last one retries.
#[test]
fn every_give_up_reason_in_check_order() {
    let policy = no_jitter(RetryConfig {
        max_attempts: 2,
        max_elapsed: Some(1.0),
        circuit_breaker: Some(breaker_config(1, 100.0)),
        retry_budget: Some(BudgetConfig {
            max_tokens: 1,
            token_ratio: 1.0,
        }),
        ..RetryConfig::DEFAULT
    })
    .validate()
    .unwrap();
    let mut reasons = Vec::new();
    for relaxed in 0..=6 {
        let category = if relaxed < 1 {
            ErrorCategory::Validation
        } else {
            ErrorCategory::RateLimited
        };
        let calls = if relaxed < 2 { 1 } else { 0 };
        let mut state = RetryState::from_parts(RetryStateParts {
            calls,
            ..Default::default()
        });
        let mut failure = Failure::new(category);
        if relaxed < 3 {
            failure = failure.with_server_delay_us(61_000_000);
        }
        let now_us = if relaxed < 4 { 2_000_000 } else { 0 };
        let mut breaker = CircuitBreaker::new(policy.breaker().unwrap());
        let mut budget = RetryBudget::new(policy.budget().unwrap()).unwrap();
        let guards = Guards {
            breaker: (relaxed < 5).then_some(&mut breaker),
            budget: (relaxed < 6).then_some(&mut budget),
        };
        let d = state.on_failure(&policy, failure, now_us, guards);
        match reason(d) {
            Some(r) => reasons.push(r),
            None => assert_eq!(relaxed, 6, "retried too early: {d:?}"),
        }
    }
    assert_eq!(
        reasons,
        [
            GiveUpReason::NonRetryable,
            GiveUpReason::Exhausted,
            GiveUpReason::RetryAfterTooLong,
            GiveUpReason::Deadline,
            GiveUpReason::CircuitOpen,
            GiveUpReason::Budget,
        ]
    );
    let all: BTreeSet<&str> = GiveUpReason::ALL.iter().map(|r| r.name()).collect();
    let seen: BTreeSet<&str> = reasons.iter().map(|r| r.name()).collect();
    assert_eq!(seen, all, "a reason has no scenario");
}

#[test]
fn slot_capacity_moves_a_herd_to_next_windows() {
    // 10 slots of 100 ms, one retry per slot per window; at most 4 moves to later windows.
    let policy = no_jitter(RetryConfig {
        slot_capacity: Some(1),
        ..RetryConfig::DEFAULT
    })
    .validate()
    .unwrap();
    let failed_at_us = 5_000_000;
    let mut next_ticket: BTreeMap<u64, u64> = BTreeMap::new();
    let mut fired: BTreeMap<u64, BTreeSet<u32>> = BTreeMap::new();
    let mut gave_up = 0;
    for seed in 0..60 {
        let d = RetryState::new(seed, 0).on_failure(
            &policy,
            connection_error(),
            failed_at_us,
            Guards::none(),
        );
        let Decision::Retry {
            delay_us: 100_000,
            slot_request: Some(mut request),
        } = d
        else {
            panic!("{d:?}");
        };
        assert_eq!((request.earliest_us, request.window), (5_100_000, 5));
        loop {
            // The coordinator: tickets 0, 1, 2, … per window.
            let counter = next_ticket.entry(request.window).or_insert(0);
            let ticket = *counter;
            *counter += 1;
            match policy.resolve_ticket(&request, ticket, seed) {
                SlotResolution::FireAt { fire_at_us, slot } => {
                    let lo = request.earliest_us + u64::from(slot) * 100_000;
                    assert!(
                        (lo..lo + 100_000).contains(&fire_at_us),
                        "{fire_at_us} {slot}"
                    );
                    assert!(
                        fired.entry(request.window).or_default().insert(slot),
                        "slot reused"
                    );
                    break;
                }
                SlotResolution::NextWindow(next) => {
                    assert_eq!(next.window, request.window + 1);
                    assert_eq!(next.moves, request.moves + 1);
                    assert_eq!(next.retry, 1);
                    assert_eq!(next.earliest_us, next.window * 1_000_000);
                    request = next;
                }
                SlotResolution::GiveUp(reason) => {
                    assert_eq!(reason, GiveUpReason::Budget);
                    assert_eq!(request.moves, 4);
                    gave_up += 1;
                    break;
                }
            }
        }
    }
    // Windows 5..=9 each hold one retry in each of their 10 slots; the last 10 give up.
    assert_eq!(fired.keys().copied().collect::<Vec<_>>(), [5, 6, 7, 8, 9]);
    assert!(fired.values().all(|slots| slots.len() == 10));
    assert_eq!(gave_up, 10);

    // Without a coordinator, the local fallback ticket lands in a slot of the first window.
    let request = policy.slot_request(5_100_000, 1);
    for seed in 0..100 {
        let ticket = policy.fallback_ticket(seed, 1);
        assert!(ticket < 10);
        assert!(matches!(
            policy.resolve_ticket(&request, ticket, seed),
            SlotResolution::FireAt { .. }
        ));
    }
}

#[test]
fn retry_after_rfc9110_examples_reach_a_decision() {
    // RFC 9110 §10.2.3: `Retry-After: Fri, 31 Dec 1999 23:59:59 GMT` and `Retry-After: 120`.
    let y2k_eve_s: u64 = 946_684_799;
    // RFC 9110 §5.6.7: the same instant in the three HTTP-date forms.
    let rfc_example_s: u64 = 784_111_777;

    let policy = RetryConfig::DEFAULT.validate().unwrap();
    let lenient = RetryConfig {
        max_retry_after: 300.0,
        ..RetryConfig::DEFAULT
    }
    .validate()
    .unwrap();
    let decide = |policy: &Policy, header: &str, now_s: u64| {
        let server = parse_retry_after(header, now_s * 1_000_000);
        let mut failure = Failure::new(ErrorCategory::RateLimited);
        if let Some(us) = server {
            failure = failure.with_server_delay_us(us);
        }
        RetryState::new(1, 0).on_failure(policy, failure, 0, Guards::none())
    };
    let retry_after = |d: Decision| match d {
        Decision::Retry { delay_us, .. } => delay_us,
        other => panic!("{other:?}"),
    };

    // 120 s: over the default 60 s cap, within a 300 s one.
    assert_eq!(
        reason(decide(&policy, "120", y2k_eve_s)),
        Some(GiveUpReason::RetryAfterTooLong)
    );
    assert_eq!(retry_after(decide(&lenient, "120", y2k_eve_s)), 120_000_000);

    // The date, 30 s ahead of our clock.
    let d = decide(&policy, "Fri, 31 Dec 1999 23:59:59 GMT", y2k_eve_s - 30);
    assert_eq!(retry_after(d), 30_000_000);

    for form in [
        "Sun, 06 Nov 1994 08:49:37 GMT",  // IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT", // obsolete RFC 850
        "Sun Nov  6 08:49:37 1994",       // ANSI C asctime()
    ] {
        assert_eq!(
            retry_after(decide(&policy, form, rfc_example_s - 45)),
            45_000_000,
            "{form}"
        );
        // Two hours ahead: past the cap.
        let d = decide(&policy, form, rfc_example_s - 7_200);
        assert_eq!(reason(d), Some(GiveUpReason::RetryAfterTooLong), "{form}");
        // Already past: the server asks for nothing, the computed backoff stands.
        let d = decide(&policy, form, rfc_example_s + 10);
        assert_eq!(
            retry_after(d),
            common::delay_us(&RetryConfig::DEFAULT, JitterStrategy::Proportional, 1, 1, 0)
        );
    }

    // A header the parser does not understand falls back to the computed backoff.
    for garbage in ["soon", "-5", "1.5", "", "sun, 06 nov 1994 08:49:37 gmt"] {
        assert_eq!(
            parse_retry_after(garbage, rfc_example_s * 1_000_000),
            None,
            "{garbage:?}"
        );
        let d = decide(&policy, garbage, rfc_example_s);
        assert_eq!(
            retry_after(d),
            common::delay_us(&RetryConfig::DEFAULT, JitterStrategy::Proportional, 1, 1, 0)
        );
    }
}
