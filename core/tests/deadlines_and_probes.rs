//! Two findings of the executor review (issue 15), decided by the core so that every host —
//! native, the policy component, the Envoy filter — inherits the fix:
//!
//! - a coordinated retry's *slot* is checked against the call's deadline, not only its backoff
//!   delay (a herd spreads over a whole window, so the slot could land most of a window late);
//! - a half-open breaker's probe that gets a rejected request back (404, validation, …) hands the
//!   probe back, so the next call probes instead of being turned away for a cool-down.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use ricochet_core::breaker::{Admission, BreakerConfig, BreakerState, CircuitBreaker};
use ricochet_core::{
    Decision, ErrorCategory, Failure, GiveUpReason, Guards, Policy, RetryConfig, RetryState,
    SlotRequest, SlotResolution,
};

/// 10 slots of 100 ms (a 1 s window), a 100 ms first delay without jitter, 0.5 s to finish.
fn half_second() -> Policy {
    RetryConfig {
        max_attempts: 5,
        jitter: false,
        max_elapsed: Some(0.5),
        ..RetryConfig::DEFAULT
    }
    .validate()
    .unwrap()
}

fn slot_request(decision: Decision) -> SlotRequest {
    match decision {
        Decision::Retry {
            slot_request: Some(r),
            ..
        } => r,
        other => panic!("expected a coordinated retry, got {other:?}"),
    }
}

#[test]
fn a_coordinated_retry_carries_the_deadline() {
    let policy = half_second();
    let mut state = RetryState::new(1, 2_000_000);
    let d = state.on_failure(
        &policy,
        Failure::new(ErrorCategory::Connection),
        2_000_000,
        Guards::none(),
    );
    let r = slot_request(d);
    assert_eq!(r.earliest_us, 2_100_000);
    assert_eq!(r.latest_us, Some(2_500_000));
    // No max_elapsed: no deadline on the slot either.
    let open = RetryConfig::DEFAULT.validate().unwrap();
    let d = RetryState::new(1, 0).on_failure(
        &open,
        Failure::new(ErrorCategory::Connection),
        0,
        Guards::none(),
    );
    assert_eq!(slot_request(d).latest_us, None);
}

#[test]
fn a_slot_past_the_deadline_gives_up_with_deadline() {
    let policy = half_second();
    let mut state = RetryState::new(7, 0);
    let request = slot_request(state.on_failure(
        &policy,
        Failure::new(ErrorCategory::Connection),
        0,
        Guards::none(),
    ));
    // Slot k starts at 100 ms + k × 100 ms: slots 0–3 fire before 0.5 s, 5–9 after it (slot 4
    // starts exactly at the deadline and fires after it unless its jitter inside the slot is 0).
    let mut fired = 0;
    for ticket in 0..10u64 {
        match policy.resolve_ticket(&request, ticket, 7) {
            SlotResolution::FireAt { fire_at_us, slot } => {
                assert!(
                    fire_at_us <= 500_000,
                    "ticket {ticket} fires at {fire_at_us}"
                );
                assert_eq!(u64::from(slot), ticket);
                fired += 1;
            }
            SlotResolution::GiveUp(reason) => {
                assert_eq!(reason, GiveUpReason::Deadline, "ticket {ticket}");
                assert!(ticket >= 4, "ticket {ticket} fits before the deadline");
            }
            other => panic!("ticket {ticket}: {other:?}"),
        }
    }
    assert!((4..=5).contains(&fired), "{fired} of 10 slots fit in 0.5 s");
    // Without the deadline (as before the fix) the last slot fires almost a second late.
    let unbounded = SlotRequest {
        latest_us: None,
        ..request
    };
    match policy.resolve_ticket(&unbounded, 9, 7) {
        SlotResolution::FireAt { fire_at_us, .. } => assert!(fire_at_us >= 1_000_000),
        other => panic!("{other:?}"),
    }
    // The seeded local fallback goes through the same check.
    for seed in 0..200 {
        let ticket = policy.fallback_ticket(seed, 1);
        match policy.resolve_ticket(&request, ticket, seed) {
            SlotResolution::FireAt { fire_at_us, .. } => assert!(fire_at_us <= 500_000),
            SlotResolution::GiveUp(GiveUpReason::Deadline) => assert!(ticket >= 4),
            other => panic!("seed {seed}: {other:?}"),
        }
    }
}

#[test]
fn a_full_window_whose_successor_starts_past_the_deadline_gives_up_with_deadline() {
    let policy = RetryConfig {
        slot_capacity: Some(1),
        ..RetryConfig::DEFAULT
    }
    .validate()
    .unwrap();
    // Window 1 is [1 s, 2 s); the deadline is 1.9 s: ticket 10 would move to window 2.
    let request = policy.slot_request_within(1_050_000, Some(1_900_000), 1);
    assert_eq!(
        policy.resolve_ticket(&request, 10, 0),
        SlotResolution::GiveUp(GiveUpReason::Deadline)
    );
    // With room in the next window, the move keeps the deadline.
    let request = policy.slot_request_within(1_050_000, Some(2_500_000), 1);
    match policy.resolve_ticket(&request, 10, 0) {
        SlotResolution::NextWindow(next) => {
            assert_eq!(next.earliest_us, 2_000_000);
            assert_eq!(next.latest_us, Some(2_500_000));
            assert_eq!(next.moves, 1);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn time_left_and_whether_a_refresh_can_be_followed() {
    let policy = half_second();
    let state = RetryState::new(0, 1_000);
    assert_eq!(state.time_left_us(&policy, 1_000), Some(500_000));
    assert_eq!(state.time_left_us(&policy, 401_000), Some(100_000));
    assert_eq!(state.time_left_us(&policy, 501_000), Some(0));
    assert_eq!(state.time_left_us(&policy, u64::MAX), Some(0));
    let open = RetryConfig::DEFAULT.validate().unwrap();
    assert_eq!(state.time_left_us(&open, 1_000), None);

    // max_attempts 2: a refresh after the first call can be followed, not after the second;
    // and only once per call.
    let two = RetryConfig {
        max_attempts: 2,
        ..RetryConfig::DEFAULT
    }
    .validate()
    .unwrap();
    let mut state = RetryState::new(0, 0);
    assert!(state.may_retry_auth(&two));
    let expired = Failure::new(ErrorCategory::AuthExpired).with_token_refreshed();
    assert!(matches!(
        state.on_failure(&two, expired, 0, Guards::none()),
        Decision::Retry { .. }
    ));
    assert!(
        !state.may_retry_auth(&two),
        "the call's last attempt is next"
    );
    let five = RetryConfig {
        max_attempts: 5,
        ..RetryConfig::DEFAULT
    }
    .validate()
    .unwrap();
    let mut state = RetryState::new(0, 0);
    let _ = state.on_failure(&five, expired, 0, Guards::none());
    assert!(!state.may_retry_auth(&five), "the one auth retry is used");
}

fn probing_breaker(policy: &Policy, at_us: u64) -> CircuitBreaker {
    let mut breaker = CircuitBreaker::new(policy.breaker().unwrap());
    for _ in 0..policy.breaker().unwrap().failure_threshold() {
        breaker.record(false, 0);
    }
    assert!(matches!(breaker.state(0), BreakerState::Open { .. }));
    assert_eq!(breaker.admit(at_us), Admission::Probe);
    breaker
}

#[test]
fn a_probe_answered_with_a_rejection_hands_the_probe_back() {
    let policy = RetryConfig {
        circuit_breaker: Some(BreakerConfig {
            failure_threshold: 1,
            failure_rate: 0.0,
            minimum_calls: 0,
            window: 10.0,
            cool_down: 0.3,
            half_open_probes: 1,
        }),
        ..RetryConfig::DEFAULT
    }
    .validate()
    .unwrap();
    for category in [
        ErrorCategory::ResourceNotFound,
        ErrorCategory::Validation,
        ErrorCategory::BusinessLogic,
        ErrorCategory::Authentication,
    ] {
        let mut breaker = probing_breaker(&policy, 300_000);
        let d = RetryState::new(1, 300_000).on_failure(
            &policy,
            Failure::new(category),
            300_010,
            Guards {
                breaker: Some(&mut breaker),
                budget: None,
            },
        );
        assert_eq!(
            d,
            Decision::GiveUp {
                reason: GiveUpReason::NonRetryable
            },
            "{category}"
        );
        // Before: the probe stayed outstanding and this call was "circuit open … 0.300 s".
        assert_eq!(
            breaker.admit(300_020),
            Admission::Probe,
            "{category}: the next call probes"
        );
        let mut healthy = RetryState::new(2, 300_020);
        healthy.on_success(
            300_030,
            Guards {
                breaker: Some(&mut breaker),
                budget: None,
            },
        );
        assert_eq!(breaker.state(300_030), BreakerState::Closed, "{category}");
    }
    // A transient failure of the probe still re-opens it.
    let mut breaker = probing_breaker(&policy, 300_000);
    let _ = RetryState::new(1, 300_000).on_failure(
        &policy,
        Failure::new(ErrorCategory::Timeout),
        300_010,
        Guards {
            breaker: Some(&mut breaker),
            budget: None,
        },
    );
    assert!(matches!(breaker.state(300_010), BreakerState::Open { .. }));
}

#[test]
fn report_to_guards_is_what_on_failure_does_to_them() {
    let policy = RetryConfig {
        circuit_breaker: Some(BreakerConfig {
            failure_threshold: 2,
            failure_rate: 0.0,
            minimum_calls: 0,
            window: 10.0,
            cool_down: 1.0,
            half_open_probes: 1,
        }),
        retry_budget: Some(ricochet_core::budget::BudgetConfig {
            max_tokens: 10,
            token_ratio: 0.1,
        }),
        ..RetryConfig::DEFAULT
    }
    .validate()
    .unwrap();
    for category in ErrorCategory::ALL {
        for refreshed in [false, true] {
            let mut failure = Failure::new(category);
            failure.token_refreshed = refreshed;
            let mut b1 = probing_breaker(&policy, 1_000_000);
            let mut b2 = b1;
            let mut g1 = ricochet_core::budget::RetryBudget::new(policy.budget().unwrap()).unwrap();
            let mut g2 = g1;
            let state = RetryState::new(3, 0);
            state.report_to_guards(
                &policy,
                failure,
                1_000_010,
                Guards {
                    breaker: Some(&mut b1),
                    budget: Some(&mut g1),
                },
            );
            let mut decided = state;
            let _ = decided.on_failure(
                &policy,
                failure,
                1_000_010,
                Guards {
                    breaker: Some(&mut b2),
                    budget: Some(&mut g2),
                },
            );
            assert_eq!((b1, g1), (b2, g2), "{category} refreshed={refreshed}");
        }
    }
}

proptest! {
    /// Whatever the config, seed, start and ticket, a coordinated retry never fires past the
    /// call's deadline: the slot gives up instead.
    #[test]
    fn no_slot_fires_past_the_deadline(
        slot_count in 1u32..40,
        slot_width_ms in 1u64..400,
        initial_ms in 1u64..500,
        max_elapsed_ms in 1u64..3_000,
        capacity in prop::option::of(1u32..4),
        seed: u64,
        started_us in 0u64..(1 << 50),
        elapsed_us in 0u64..3_000_000,
        tickets in prop::collection::vec(0u64..200, 1..8),
    ) {
        let policy = RetryConfig {
            max_attempts: 10,
            initial_delay: initial_ms as f64 / 1e3,
            slot_count,
            slot_width: slot_width_ms as f64 / 1e3,
            max_elapsed: Some(max_elapsed_ms as f64 / 1e3),
            slot_capacity: capacity,
            ..RetryConfig::DEFAULT
        }
        .validate()
        .unwrap();
        let deadline_us = started_us + max_elapsed_ms * 1_000;
        let now_us = started_us + elapsed_us;
        let mut state = RetryState::new(seed, started_us);
        let d = state.on_failure(&policy, Failure::new(ErrorCategory::Timeout), now_us, Guards::none());
        let Decision::Retry { slot_request: Some(mut request), .. } = d else {
            return Ok(());
        };
        prop_assert_eq!(request.latest_us, Some(deadline_us));
        for ticket in tickets {
            match policy.resolve_ticket(&request, ticket, seed) {
                SlotResolution::FireAt { fire_at_us, .. } => {
                    prop_assert!(fire_at_us <= deadline_us);
                    break;
                }
                SlotResolution::NextWindow(next) => {
                    prop_assert!(next.earliest_us <= deadline_us);
                    prop_assert_eq!(next.latest_us, Some(deadline_us));
                    request = next;
                }
                SlotResolution::GiveUp(_) => break,
            }
        }
    }
}

proptest! {
    /// A host given only a decision's delay (a policy component's `decide`) rebuilds what
    /// `on_failure` returns and where it leaves the state, with `retry_after` and
    /// `record_failure`: the slot request and the bookkeeping are the core's, whoever decided.
    #[test]
    fn retry_after_and_record_failure_are_what_on_failure_does(
        coordinated: bool,
        max_elapsed_ms in prop::option::of(1u64..5_000),
        category_index in 0usize..ErrorCategory::ALL.len(),
        refreshed: bool,
        auth_retried_before: bool,
        server_delay_us in prop::option::of(0u64..3_000_000),
        seed: u64,
        started_us in 0u64..(1 << 50),
        elapsed_us in 0u64..3_000_000,
        failures_before in 0u32..4,
    ) {
        let policy = RetryConfig {
            max_attempts: 5,
            coordination_enabled: coordinated,
            max_elapsed: max_elapsed_ms.map(|ms| ms as f64 / 1e3),
            ..RetryConfig::DEFAULT
        }
        .validate()
        .unwrap();
        let now_us = started_us + elapsed_us;
        // A state some failures in (an auth failure first, when the auth retry is to be used).
        let mut state = RetryState::new(seed, started_us);
        for i in 0..failures_before {
            let mut earlier = Failure::new(if i == 0 && auth_retried_before {
                ErrorCategory::AuthExpired
            } else {
                ErrorCategory::Connection
            });
            earlier.token_refreshed = true;
            let _ = state.on_failure(&policy, earlier, started_us, Guards::none());
        }
        let mut failure = Failure::new(ErrorCategory::ALL[category_index]);
        failure.token_refreshed = refreshed;
        failure.server_delay_us = server_delay_us;
        let before = state;
        let decision = state.on_failure(&policy, failure, now_us, Guards::none());
        if let Decision::Retry { delay_us, .. } = decision {
            prop_assert_eq!(before.retry_after(&policy, now_us, delay_us), decision);
        }
        let mut rebuilt = before;
        rebuilt.record_failure(failure.category, &decision);
        prop_assert_eq!(rebuilt, state);
    }
}
