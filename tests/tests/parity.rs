//! Native core vs the policy component: the same numbers, integer for integer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ricochet_test_support as support;

use ricochet::component::{
    category_to_wit, decision_from_wit, state_to_wit, wit, PolicyComponent, Sandbox,
};
use ricochet_core::{
    Decision, ErrorCategory, Failure, Guards, JitterStrategy, RetryConfig, RetryState,
};
use support::{random_config, Gen};

fn component() -> PolicyComponent {
    let bytes = ricochet_test_support::guests::POLICY_COMPONENT.expect(
        "the policy component was not built: install a wasm32 toolchain (see README) and rebuild",
    );
    PolicyComponent::from_bytes(bytes, Sandbox::default()).unwrap()
}

#[test]
fn plans_match_for_every_preset_and_1000_seeds() {
    let wasm = component();
    let mut compared = 0;
    for name in RetryConfig::PRESET_NAMES {
        for strategy in JitterStrategy::ALL {
            let config = RetryConfig {
                strategy,
                ..RetryConfig::preset(name).unwrap()
            };
            let policy = config.validate().unwrap();
            let seeds: Box<dyn Iterator<Item = u64>> = if strategy == JitterStrategy::Proportional {
                Box::new((0..1000).chain([u64::MAX, 1 << 63, 0xDEAD_BEEF]))
            } else {
                Box::new((0..200).map(|s| s * 7919))
            };
            for seed in seeds {
                let native: Vec<_> = policy
                    .plan(seed)
                    .map(|r| (r.retry, r.base_delay_us, r.delay_us))
                    .collect();
                let component: Vec<_> = wasm
                    .plan(&config, seed)
                    .unwrap()
                    .unwrap()
                    .into_iter()
                    .map(|r| (r.retry, r.base_delay_us, r.delay_us))
                    .collect();
                assert_eq!(native, component, "{name} {strategy:?} seed {seed}");
                assert_eq!(native.len() as u32, config.max_attempts - 1);
                compared += 1;
            }
        }
    }
    assert!(compared >= 3 * 1000);
}

#[test]
fn validation_errors_match() {
    let wasm = component();
    let bad = [
        RetryConfig {
            jitter_factor: 1.5,
            ..RetryConfig::DEFAULT
        },
        RetryConfig {
            max_attempts: 0,
            ..RetryConfig::DEFAULT
        },
        RetryConfig {
            initial_delay: f64::NAN,
            ..RetryConfig::DEFAULT
        },
        RetryConfig {
            exponential_base: 0.5,
            ..RetryConfig::DEFAULT
        },
        RetryConfig {
            initial_delay: 11.0,
            ..RetryConfig::DEFAULT
        },
        RetryConfig {
            slot_count: 0,
            ..RetryConfig::DEFAULT
        },
        RetryConfig {
            max_delay: -1.0,
            ..RetryConfig::DEFAULT
        },
    ];
    for config in bad {
        let native = config.validate().unwrap_err();
        let component = wasm.validate(&config).unwrap().unwrap_err();
        assert_eq!(component.field, native.field());
        assert_eq!(component.message, native.to_string());
    }
    assert!(wasm.validate(&RetryConfig::AGGRESSIVE).unwrap().is_ok());
}

/// A decision as comparable plain values: (kind, delay, slot request, give-up reason).
type Compared = (
    u8,
    u64,
    Option<(u64, u64, u32)>,
    Option<ricochet_core::GiveUpReason>,
);

fn decision_to_tuple(d: Decision) -> Compared {
    match d {
        Decision::Retry {
            delay_us,
            slot_request,
        } => (
            0,
            delay_us,
            slot_request.map(|r| (r.earliest_us, r.window, r.retry)),
            None,
        ),
        Decision::GiveUp { reason } => (1, 0, None, Some(reason)),
    }
}

#[test]
fn decisions_match_over_10_000_random_outcome_sequences() {
    let wasm = component();
    let mut g = Gen(2026);
    let mut decisions = 0;
    for case in 0..10_000u64 {
        let config = random_config(&mut g);
        let policy = config.validate().unwrap();
        let seed = g.next();
        let mut now_us = 1_700_000_000_000_000 + g.below(1_000_000_000);
        let mut native = RetryState::new(seed, now_us);
        let mut breaker = policy
            .breaker()
            .map(ricochet_core::breaker::CircuitBreaker::new);
        let mut budget = policy
            .budget()
            .map(|b| ricochet_core::budget::RetryBudget::new(b).unwrap());
        // The host's state: the guest decides, the host moves it by the core's rule.
        let mut state = RetryState::new(seed, now_us);
        // A host that keeps guards hands them in from the first call (empty: start fresh), and
        // `decide-guarded` moves them; without any, the all-scalar `decide` runs.
        let mut guards = wit::Guards {
            breaker: policy.breaker().map(|_| Vec::new()),
            budget: policy.budget().map(|_| Vec::new()),
        };
        loop {
            let category = ErrorCategory::ALL[g.below(10) as usize];
            let mut failure = Failure::new(category);
            if g.below(3) == 0 {
                failure = failure.with_server_delay_us(g.below(40_000_000));
            }
            if g.below(2) == 0 {
                failure = failure.with_token_refreshed();
            }
            let expected = native.on_failure(
                &policy,
                failure,
                now_us,
                Guards {
                    breaker: breaker.as_mut(),
                    budget: budget.as_mut(),
                },
            );
            let wit_failure = wit::Failure {
                category: category_to_wit(category),
                server_delay_us: failure.server_delay_us,
                token_refreshed: failure.token_refreshed,
            };
            let (next_guards, got) = wasm
                .decide(&config, state_to_wit(&state), wit_failure, now_us, &guards)
                .unwrap()
                .unwrap();
            let got = decision_from_wit(got, &policy, &state, now_us);
            assert_eq!(
                decision_to_tuple(expected),
                decision_to_tuple(got),
                "case {case}, {config:?}"
            );
            assert_eq!(
                next_guards.breaker,
                breaker.map(|b| b.to_bytes().to_vec()),
                "case {case}"
            );
            assert_eq!(
                next_guards.budget,
                budget.map(|b| b.to_bytes().to_vec()),
                "case {case}"
            );
            state.record_failure(category, &got);
            assert_eq!(state, native, "case {case}");
            guards = next_guards;
            decisions += 1;
            match expected {
                Decision::Retry { delay_us, .. } => now_us += delay_us + g.below(50_000),
                Decision::GiveUp { .. } => break,
            }
        }
    }
    assert!(decisions >= 10_000);
}
