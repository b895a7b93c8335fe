//! The decision engine: arbitrary configs, then arbitrary sequences of outcomes and clock steps
//! through `RetryState::on_failure` / `on_success` with a shared circuit breaker and retry budget.
//!
//! Nothing may panic (overflow checks are on), and after every step:
//! - a retry's delay is at most `max_delay`, unless the server asked for a delay (at most
//!   `max_retry_after`), which the delay then is at least and exceeds `max_delay` only to honour;
//! - a call retries only while it has made fewer than `max_attempts` calls, and gives up as
//!   `exhausted` once it has made them; a give-up ends the call (and exhaustion is final);
//! - every give-up reason is one the inputs justify, and every retry respects the deadline, the
//!   breaker and the budget; without a server delay, the retries follow the policy's `plan`;
//! - decisions are pure (the same inputs give the same decision and the same new state);
//! - the state, the breaker and the budget survive their byte encodings, and a breaker or budget
//!   read from arbitrary bytes is accepted only in its canonical encoding;
//! - slot tickets resolve into the window's slots, or move on and finally give up.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ricochet_core::breaker::{BreakerState, CircuitBreaker};
use ricochet_core::budget::RetryBudget;
use ricochet_core::{
    Decision, ErrorCategory, Failure, GiveUpReason, Guards, JitterStrategy, Policy, RetryConfig,
    RetryState, SlotRequest, SlotResolution,
};
use ricochet_fuzz::config::FuzzConfig;
use ricochet_fuzz::scenario::{Outcome, Step};

/// Events looked at per input: enough to open and close a breaker, drain and refill a budget.
const MAX_EVENTS: usize = 256;

#[derive(Debug, Arbitrary)]
struct Input {
    config: FuzzConfig,
    seed: u64,
    start_us: u64,
    /// `(offset, byte)` written into the fresh breaker's encoding before it is read back.
    breaker_pokes: Vec<(u8, u8)>,
    /// `(offset, byte)` written into the fresh budget's encoding before it is read back.
    budget_pokes: Vec<(u8, u8)>,
    events: Vec<Event>,
}

#[derive(Debug, Arbitrary)]
struct Event {
    step: Step,
    outcome: Outcome,
    /// The coordinator's ticket, should this attempt be retried with coordination.
    ticket: u64,
}

/// Writes `pokes` into `bytes`, at offsets taken modulo its length.
fn poke<const N: usize>(mut bytes: [u8; N], pokes: &[(u8, u8)]) -> [u8; N] {
    for &(at, value) in pokes.iter().take(8) {
        bytes[usize::from(at) % N] = value;
    }
    bytes
}

/// The schedule of `seed`: its length, its bounds, and agreement with `next_delay`.
fn check_plan(config: &RetryConfig, policy: &Policy, seed: u64) -> Vec<u64> {
    let max_us = policy.max_delay_us();
    let mut delays = Vec::new();
    let mut prev_delay_us = 0;
    let mut prev_base_us = 0;
    for (i, r) in policy.plan(seed).enumerate() {
        assert_eq!(r.retry as usize, i + 1);
        assert_eq!(r.base_delay_us, policy.base_delay_us(r.retry));
        assert!(r.base_delay_us <= max_us && r.delay_us <= max_us, "{r:?}");
        assert!(
            r.base_delay_us >= prev_base_us,
            "the base delay shrank: {prev_base_us} then {r:?}"
        );
        let next = policy.next_delay(r.retry, seed, prev_delay_us);
        assert_eq!((next.base_us, next.delay_us), (r.base_delay_us, r.delay_us));
        let (base, delay) = (r.base_delay_us as f64, r.delay_us as f64);
        let factor = config.jitter_factor;
        match policy.strategy() {
            JitterStrategy::None => assert_eq!(r.delay_us, r.base_delay_us),
            JitterStrategy::Proportional => assert!(
                delay >= base * (1.0 - factor) - 1.0 && delay <= base * (1.0 + factor) + 1.0,
                "{r:?} factor {factor}"
            ),
            JitterStrategy::Full => assert!(r.delay_us <= r.base_delay_us, "{r:?}"),
            JitterStrategy::Equal => {
                assert!(
                    delay + 1.0 >= base / 2.0 && r.delay_us <= r.base_delay_us,
                    "{r:?}"
                )
            }
            JitterStrategy::Decorrelated => {
                assert!(r.delay_us >= policy.initial_delay_us(), "{r:?}")
            }
        }
        prev_delay_us = r.delay_us;
        prev_base_us = r.base_delay_us;
        delays.push(r.delay_us);
    }
    assert_eq!(delays.len(), policy.max_attempts() as usize - 1);
    delays
}

/// Follows a ticket through full windows to a slot (or a give-up).
fn check_slots(policy: &Policy, request: SlotRequest, ticket: u64, seed: u64) {
    let slots = u64::from(policy.slot_count().max(1));
    assert!(policy.fallback_ticket(seed, request.retry) < slots);
    let mut request = request;
    for _ in 0..16 {
        match policy.resolve_ticket(&request, ticket, seed) {
            SlotResolution::FireAt { fire_at_us, slot } => {
                assert_eq!(u64::from(slot), ticket % slots);
                let width = policy.slot_width_us();
                let slot_start = request
                    .earliest_us
                    .saturating_add(u64::from(slot).saturating_mul(width));
                assert!(
                    fire_at_us >= slot_start && fire_at_us <= slot_start.saturating_add(width),
                    "{request:?} ticket {ticket} -> {fire_at_us} in slot {slot}"
                );
                // A slot never fires past the call's deadline.
                assert!(request.latest_us.is_none_or(|latest| fire_at_us <= latest));
                return;
            }
            SlotResolution::NextWindow(next) => {
                assert!(policy.slot_capacity().is_some(), "{request:?}");
                assert_eq!(next.moves, request.moves + 1);
                assert_eq!(next.window, request.window.saturating_add(1));
                assert_eq!(next.retry, request.retry);
                assert!(next.earliest_us >= request.earliest_us);
                assert_eq!(next.latest_us, request.latest_us);
                assert!(request.latest_us.is_none_or(|latest| next.earliest_us <= latest));
                request = next;
            }
            SlotResolution::GiveUp(GiveUpReason::Deadline) => {
                // Only a request with a deadline gives up for it.
                assert!(request.latest_us.is_some(), "{request:?}");
                return;
            }
            SlotResolution::GiveUp(reason) => {
                assert_eq!(reason, GiveUpReason::Budget);
                assert!(request.moves > 0, "gave up without moving: {request:?}");
                return;
            }
        }
    }
    panic!("ticket {ticket} never settled: {request:?}");
}

/// Whether the core is meant to retry `failure` at all (its documented category rules).
fn retryable(policy: &Policy, failure: &Failure, auth_retried: bool) -> bool {
    match failure.category {
        ErrorCategory::AuthExpired => failure.token_refreshed && !auth_retried,
        ErrorCategory::RateLimited => true,
        other => policy.retry_on().contains(other),
    }
}

fuzz_target!(|input: Input| {
    let config = input.config.get();
    let Ok(policy) = config.validate() else {
        return;
    };
    let mut plan = check_plan(&config, &policy, input.seed);

    let mut breaker = policy.breaker().map(CircuitBreaker::new);
    if let Some(b) = &mut breaker {
        if !input.breaker_pokes.is_empty() {
            let bytes = poke(b.to_bytes(), &input.breaker_pokes);
            if let Some(read) = CircuitBreaker::from_bytes(&bytes) {
                assert_eq!(
                    read.to_bytes(),
                    bytes,
                    "a non-canonical breaker was accepted"
                );
                *b = read;
            }
        }
    }
    let mut budget = policy
        .budget()
        .map(|c| RetryBudget::new(c).expect("a validated budget"));
    if let Some(b) = &mut budget {
        if !input.budget_pokes.is_empty() {
            let bytes = poke(b.to_bytes(), &input.budget_pokes);
            if let Some(read) = RetryBudget::from_bytes(&bytes) {
                assert_eq!(
                    read.to_bytes(),
                    bytes,
                    "a non-canonical budget was accepted"
                );
                *b = read;
            }
        }
    }

    let mut now_us = input.start_us;
    let mut state = RetryState::new(input.seed, now_us);
    // A new call (after a success or a give-up) has its own seed, hence its own plan.
    let new_call = |i: usize, now_us: u64| {
        let state = RetryState::new(input.seed.wrapping_add(i as u64 + 1), now_us);
        let plan: Vec<u64> = policy.plan(state.seed()).map(|r| r.delay_us).collect();
        (state, plan)
    };
    let mut server_delay_seen = false;
    let mut advised_us = 0;
    for (i, event) in input.events.iter().take(MAX_EVENTS).enumerate() {
        now_us = event.step.apply(now_us, advised_us);
        advised_us = 0;
        let before = state;
        let failure = match event.outcome {
            Outcome::Success => {
                let tokens = budget.map(|b| b.tokens_milli());
                state.on_success(
                    now_us,
                    Guards {
                        breaker: breaker.as_mut(),
                        budget: budget.as_mut(),
                    },
                );
                assert_eq!(state.calls(), before.calls().saturating_add(1));
                if let (Some(b), Some(tokens)) = (budget, tokens) {
                    assert!(b.tokens_milli() >= tokens, "a success spent tokens");
                }
                // The call is over; the next attempt starts another one.
                (state, plan) = new_call(i, now_us);
                server_delay_seen = false;
                None
            }
            Outcome::Failure(f) => Some(f.get(policy.max_retry_after_us())),
        };
        if let Some(failure) = failure {
            let (breaker_before, budget_before) = (breaker, budget);
            let decision = state.on_failure(
                &policy,
                failure,
                now_us,
                Guards {
                    breaker: breaker.as_mut(),
                    budget: budget.as_mut(),
                },
            );

            // Pure: the same inputs give the same decision and the same new state.
            let (mut again, mut breaker_again, mut budget_again) =
                (before, breaker_before, budget_before);
            let repeated = again.on_failure(
                &policy,
                failure,
                now_us,
                Guards {
                    breaker: breaker_again.as_mut(),
                    budget: budget_again.as_mut(),
                },
            );
            assert_eq!(
                (repeated, again, breaker_again, budget_again),
                (decision, state, breaker, budget)
            );

            assert_eq!(state.calls(), before.calls().saturating_add(1));
            assert_eq!(state.seed(), before.seed());
            assert_eq!(state.started_us(), before.started_us());
            assert!(state.calls() <= policy.max_attempts(), "{state:?}");
            let auth_retried = before.to_parts().auth_retried;
            let retryable = retryable(&policy, &failure, auth_retried);
            if retryable && state.calls() >= policy.max_attempts() {
                assert_eq!(
                    decision,
                    Decision::GiveUp {
                        reason: GiveUpReason::Exhausted
                    }
                );
            }
            match decision {
                Decision::Retry {
                    delay_us,
                    slot_request,
                } => {
                    assert!(retryable, "{failure:?} retried");
                    assert!(state.calls() < policy.max_attempts());
                    match failure.server_delay_us {
                        Some(server_us) => {
                            assert!(server_us <= policy.max_retry_after_us());
                            assert!(delay_us >= server_us, "{delay_us} < server's {server_us}");
                            assert!(
                                delay_us <= policy.max_delay_us().max(server_us),
                                "{delay_us} past max_delay and the server's {server_us}"
                            );
                        }
                        None => assert!(delay_us <= policy.max_delay_us(), "{delay_us}"),
                    }
                    server_delay_seen |= failure.server_delay_us.is_some();
                    if !server_delay_seen {
                        let planned = plan[state.calls() as usize - 1];
                        assert_eq!(delay_us, planned, "retry {} left the plan", state.calls());
                    }
                    let fire_at_us = now_us.saturating_add(delay_us);
                    if let Some(max_elapsed_us) = policy.max_elapsed_us() {
                        assert!(fire_at_us <= state.started_us().saturating_add(max_elapsed_us));
                    }
                    if let Some(b) = &breaker {
                        if let BreakerState::Open { until_us } = b.state(now_us) {
                            assert!(until_us <= fire_at_us, "retried into an open circuit");
                        }
                    }
                    if let Some(b) = &budget {
                        assert!(b.can_retry(), "retried with the budget spent");
                    }
                    if failure.category == ErrorCategory::AuthExpired {
                        assert!(state.to_parts().auth_retried);
                    }
                    assert_eq!(slot_request.is_some(), policy.coordination_enabled());
                    if let Some(request) = slot_request {
                        assert_eq!(request.earliest_us, fire_at_us);
                        assert_eq!(request.window, policy.window_index(fire_at_us));
                        assert_eq!(request.retry, state.calls());
                        assert_eq!(request.moves, 0);
                        check_slots(&policy, request, event.ticket, state.seed());
                    }
                    advised_us = delay_us;
                }
                Decision::GiveUp { reason } => {
                    match reason {
                        GiveUpReason::Exhausted => {
                            assert!(retryable && state.calls() >= policy.max_attempts());
                            // Final: no later failure of this call is retried.
                            let mut after = state;
                            let rate_limited = Failure::new(ErrorCategory::RateLimited);
                            assert_eq!(
                                after.on_failure(&policy, rate_limited, now_us, Guards::none()),
                                decision
                            );
                        }
                        GiveUpReason::NonRetryable => assert!(!retryable, "{failure:?}"),
                        GiveUpReason::RetryAfterTooLong => assert!(failure
                            .server_delay_us
                            .is_some_and(|s| s > policy.max_retry_after_us())),
                        GiveUpReason::Deadline => assert!(policy.max_elapsed_us().is_some()),
                        GiveUpReason::CircuitOpen => assert!(breaker
                            .is_some_and(|b| matches!(b.state(now_us), BreakerState::Open { .. }))),
                        GiveUpReason::Budget => {
                            assert!(budget.is_some_and(|b| !b.can_retry()))
                        }
                        other => panic!("unknown reason {other:?}"),
                    }
                    // A give-up ends the call; the next attempt starts another one.
                    (state, plan) = new_call(i, now_us);
                    server_delay_seen = false;
                }
            }
        }

        assert_eq!(RetryState::from_parts(state.to_parts()), state);
        if let Some(b) = &breaker {
            assert_eq!(CircuitBreaker::from_bytes(&b.to_bytes()), Some(*b));
            let (calls, failures) = b.window_counts(now_us);
            assert!(failures <= calls);
        }
        if let Some(b) = &budget {
            assert_eq!(RetryBudget::from_bytes(&b.to_bytes()), Some(*b));
            assert!(b.tokens_milli() <= b.max_tokens() * 1000);
        }
    }
});
