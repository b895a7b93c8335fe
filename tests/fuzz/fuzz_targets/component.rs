//! The component boundary: the policy component (`ricochet-core` compiled to wasm, behind WIT)
//! and the native core must give identical answers for any input.
//!
//! For an arbitrary config, seed, starting state, guard bytes and sequence of failures and
//! clock steps: `validate` agrees (the same field and message), `plan` is the same schedule,
//! `next-delay` the same delay, and every `decide` the same decision, new state and guard bytes
//! as `RetryState::on_failure` natively, with the guards read back the way the guest reads them
//! (its bytes if they decode, else fresh). A trap or an exhausted sandbox is a failure too.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ricochet_core::breaker::CircuitBreaker;
use ricochet_core::budget::RetryBudget;
use ricochet_core::{Decision, Guards, RetryState, RetryStateParts};
use ricochet_fuzz::config::FuzzConfig;
use ricochet_fuzz::scenario::{FuzzFailure, Step};
use ricochet::component::{
    decision_from_wit, failure_to_wit, state_to_wit, wit, PolicyComponent, Sandbox,
};

/// Decisions per input: a call of up to 8 attempts, each one crossing the boundary.
const MAX_FAILURES: usize = 8;

#[derive(Debug, Arbitrary)]
struct Input {
    config: FuzzConfig,
    seed: u64,
    start_us: u64,
    /// `None`: a new call; else the calls made, the previous delay and whether the one auth
    /// retry was used (a host may hand over any state).
    state: Option<(u32, u64, bool)>,
    breaker: GuardBytes,
    budget: GuardBytes,
    /// `next-delay`'s retry number and previous delay.
    next_delay: (u32, u64),
    failures: Vec<(Step, FuzzFailure)>,
}

/// The guard bytes handed to the first `decide`.
#[derive(Debug, Arbitrary)]
enum GuardBytes {
    /// None: start fresh.
    Absent,
    /// The fresh guard's encoding with a few bytes changed (often still decodable).
    Poked(Vec<(u8, u8)>),
    /// Any bytes.
    Raw(Vec<u8>),
}

impl GuardBytes {
    fn get(&self, fresh: Option<&[u8]>) -> Option<Vec<u8>> {
        match self {
            Self::Absent => None,
            Self::Poked(pokes) => fresh.map(|f| {
                let mut bytes = f.to_vec();
                for &(at, value) in pokes.iter().take(8) {
                    let at = usize::from(at) % bytes.len();
                    bytes[at] = value;
                }
                bytes
            }),
            Self::Raw(bytes) => Some(bytes.clone()),
        }
    }
}

fn component() -> &'static PolicyComponent {
    static COMPONENT: OnceLock<PolicyComponent> = OnceLock::new();
    COMPONENT.get_or_init(|| {
        let bytes = ricochet_test_support::guests::POLICY_COMPONENT
            .expect("the policy component was not built (see README: wasm toolchain)");
        PolicyComponent::from_bytes(bytes, Sandbox::default()).expect("load the policy component")
    })
}

/// Unwraps a component call: a trap, fuel or memory failure is a finding.
macro_rules! call {
    ($e:expr) => {
        match $e {
            Ok(answer) => answer,
            Err(e) => panic!("component call failed: {e} ({})", e.reason()),
        }
    };
}

fuzz_target!(|input: Input| {
    let wasm = component();
    let config = input.config.get();

    let native = config.validate();
    let validated = call!(wasm.validate(&config));
    let policy = match (native, validated) {
        (Ok(policy), Ok(())) => policy,
        (Err(e), Err(w)) => {
            assert_eq!((w.field.as_str(), w.message), (e.field(), e.to_string()));
            // Every export refuses the config with the same error.
            let planned = call!(wasm.plan(&config, input.seed));
            assert_eq!(
                planned.map(|_| ()).map_err(|w| w.field),
                Err(e.field().into())
            );
            return;
        }
        (native, component) => panic!("validate: native {native:?}, component {component:?}"),
    };

    let native_plan: Vec<_> = policy
        .plan(input.seed)
        .map(|r| (r.retry, r.base_delay_us, r.delay_us))
        .collect();
    let wasm_plan: Vec<_> = call!(wasm.plan(&config, input.seed))
        .expect("a valid config")
        .into_iter()
        .map(|r| (r.retry, r.base_delay_us, r.delay_us))
        .collect();
    assert_eq!(native_plan, wasm_plan, "plan");

    let (retry, prev_delay_us) = input.next_delay;
    assert_eq!(
        call!(wasm.next_delay(&config, retry, input.seed, prev_delay_us)).expect("a valid config"),
        policy.next_delay(retry, input.seed, prev_delay_us).delay_us,
        "next-delay"
    );

    let mut native_state = match input.state {
        None => RetryState::new(input.seed, input.start_us),
        Some((calls, prev_delay_us, auth_retried)) => RetryState::from_parts(RetryStateParts {
            seed: input.seed,
            started_us: input.start_us,
            prev_delay_us,
            calls,
            auth_retried,
        }),
    };
    let fresh_breaker = policy.breaker().map(CircuitBreaker::new);
    let fresh_budget = policy
        .budget()
        .map(|b| RetryBudget::new(b).expect("a validated budget"));
    let mut guards = wit::Guards {
        breaker: input
            .breaker
            .get(fresh_breaker.map(|b| b.to_bytes().to_vec()).as_deref()),
        budget: input
            .budget
            .get(fresh_budget.map(|b| b.to_bytes().to_vec()).as_deref()),
    };
    // The guest's reading of the guard bytes: its own bytes if they decode, else fresh.
    let mut breaker = fresh_breaker.map(|fresh| {
        guards
            .breaker
            .as_deref()
            .and_then(CircuitBreaker::from_bytes)
            .unwrap_or(fresh)
    });
    let mut budget = fresh_budget.map(|fresh| {
        guards
            .budget
            .as_deref()
            .and_then(RetryBudget::from_bytes)
            .unwrap_or(fresh)
    });

    // The host's state: the guest decides, the host moves it by the core's rule.
    let mut host_state = native_state;
    let mut now_us = input.start_us;
    let mut advised_us = 0;
    for (step, failure) in input.failures.iter().take(MAX_FAILURES) {
        now_us = step.apply(now_us, advised_us);
        let failure = failure.get(policy.max_retry_after_us());
        let expected = native_state.on_failure(
            &policy,
            failure,
            now_us,
            Guards {
                breaker: breaker.as_mut(),
                budget: budget.as_mut(),
            },
        );
        let (next_guards, decision) = call!(wasm.decide(
            &config,
            state_to_wit(&host_state),
            failure_to_wit(failure),
            now_us,
            &guards
        ))
        .expect("a valid config");
        let decision = decision_from_wit(decision, &policy, &host_state, now_us);
        assert_eq!(decision, expected, "decision at {now_us}");
        host_state.record_failure(failure.category, &decision);
        assert_eq!(host_state, native_state, "state at {now_us}");
        assert_eq!(
            next_guards.breaker,
            breaker.map(|b| b.to_bytes().to_vec()),
            "breaker at {now_us}"
        );
        assert_eq!(
            next_guards.budget,
            budget.map(|b| b.to_bytes().to_vec()),
            "budget at {now_us}"
        );
        guards = next_guards;
        match expected {
            Decision::Retry { delay_us, .. } => advised_us = delay_us,
            Decision::GiveUp { .. } => break,
        }
    }
});
