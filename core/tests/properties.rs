//! Properties of the engine over random configs, seeds and failure sequences.
//!
//! The give-up reasons are checked against an oracle written from the check order documented in
//! `core/src/decision.rs` (category, attempt limit, server delay, deadline, breaker, budget),
//! with its own models of the breaker's consecutive-failure trigger and of the A6 budget. It
//! takes the jittered delay from `next_delay`, whose formulas `seed_scenarios.rs` checks by hand.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

use ricochet_core::breaker::{BreakerConfig, CircuitBreaker};
use ricochet_core::budget::{BudgetConfig, RetryBudget};
use ricochet_core::{
    CategorySet, Decision, ErrorCategory, Failure, GiveUpReason, Guards, JitterStrategy, Policy,
    RetryConfig, RetryState, SlotRequest, SlotResolution,
};

/// Largest duration a config accepts, in seconds (2⁵³ µs).
const MAX_SECONDS: f64 = 9_007_199_254.740_992;

/// A duration in seconds: zero, small, everyday or up to the largest accepted.
fn seconds() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        0.0..0.01,
        0.0..100.0,
        0.0..=MAX_SECONDS,
        Just(MAX_SECONDS),
    ]
}

fn jitter_strategy() -> impl Strategy<Value = JitterStrategy> {
    prop::sample::select(JitterStrategy::ALL.to_vec())
}

fn category() -> impl Strategy<Value = ErrorCategory> {
    prop::sample::select(ErrorCategory::ALL.to_vec())
}

prop_compose! {
    fn breaker_config()(
        failure_threshold in 0u32..10,
        failure_rate in 0.0..=1.0,
        minimum_calls in 0u32..20,
        window in 0.001..=86_400.0,
        cool_down in 0.001..=86_400.0,
        half_open_probes in 1u32..5,
    ) -> BreakerConfig {
        BreakerConfig { failure_threshold, failure_rate, minimum_calls, window, cool_down, half_open_probes }
    }
}

prop_compose! {
    fn budget_config()(max_tokens in 1u32..=1000, ratio_milli in 1u32..=1_000_000) -> BudgetConfig {
        BudgetConfig { max_tokens, token_ratio: f64::from(ratio_milli) / 1000.0 }
    }
}

prop_compose! {
    /// Any config that `validate` must accept, extremes included.
    fn valid_config()(
        max_attempts in prop_oneof![1u32..=10, 1u32..=1000],
        delays in (seconds(), seconds()),
        exponential_base in prop_oneof![
            Just(1.0),
            Just(1.0 + f64::EPSILON),
            1.0..1.0001,
            1.0..3.0,
            1.0..1e6,
        ],
        jitter in any::<bool>(),
        jitter_factor in prop_oneof![Just(0.0), Just(1.0), 0.0..=1.0],
        coordination_enabled in any::<bool>(),
        slot_count in prop_oneof![1u32..=100, 1u32..=u32::MAX],
        slot_width in prop_oneof![1e-6..1.0, 1e-6..=MAX_SECONDS],
        idempotency_ttl in seconds(),
        strategy in jitter_strategy(),
        max_elapsed in prop::option::of(seconds()),
        max_retry_after in seconds(),
        slot_capacity in prop::option::of(prop_oneof![1u32..=4, 1u32..=u32::MAX]),
        retry_on_bits in any::<u16>(),
        circuit_breaker in prop::option::of(breaker_config()),
        retry_budget in prop::option::of(budget_config()),
    ) -> RetryConfig {
        RetryConfig {
            max_attempts,
            initial_delay: delays.0.min(delays.1),
            max_delay: delays.0.max(delays.1),
            exponential_base,
            jitter,
            jitter_factor,
            slot_count,
            slot_width,
            coordination_enabled,
            idempotency_ttl,
            strategy,
            max_elapsed,
            max_retry_after,
            slot_capacity,
            retry_on: CategorySet::from_bits(retry_on_bits),
            circuit_breaker,
            retry_budget,
        }
    }
}

proptest! {
    #[test]
    fn delays_stay_within_max_delay_and_their_strategy_band(
        config in valid_config(),
        seed in any::<u64>(),
    ) {
        let policy = config.validate().unwrap();
        let max = policy.max_delay_us();
        let initial = policy.initial_delay_us();
        let f = config.jitter_factor;
        let mut prev = 0;
        let mut count = 0;
        for r in policy.plan(seed) {
            count += 1;
            let (base, d) = (r.base_delay_us, r.delay_us);
            prop_assert_eq!(base, policy.base_delay_us(r.retry));
            prop_assert!(base <= max && d <= max, "{:?} over max {}", r, max);
            let b = base as f64;
            // One µs of slack for rounding at the edges of each band.
            let (lo, hi) = match policy.strategy() {
                JitterStrategy::None => (b, b),
                JitterStrategy::Proportional => (b * (1.0 - f) - 1.0, b * (1.0 + f) + 1.0),
                JitterStrategy::Full => (0.0, b),
                JitterStrategy::Equal => (b / 2.0 - 1.0, b),
                JitterStrategy::Decorrelated => {
                    let p = if prev == 0 { initial } else { prev };
                    (initial as f64, (3 * p) as f64)
                }
            };
            let d_f = d as f64;
            prop_assert!(
                d_f >= lo.min(max as f64) && d_f <= hi.min(max as f64),
                "{:?} retry {}: {} not in [{}, {}]", policy.strategy(), r.retry, d, lo, hi
            );
            prev = d;
        }
        prop_assert_eq!(count, config.max_attempts - 1);
    }

    #[test]
    fn server_delays_win_only_when_longer_and_accepted(
        config in valid_config(),
        seed in any::<u64>(),
        calls_before in 0u32..10,
        prev_delay_us in any::<u64>(),
        server_us in prop_oneof![0u64..1_000_000, 0u64..100_000_000, any::<u64>()],
    ) {
        // No deadline, no guards: only the attempt limit and the server delay can stop it.
        let config = RetryConfig { max_elapsed: None, ..config };
        let policy = config.validate().unwrap();
        let parts = ricochet_core::RetryStateParts {
            seed, started_us: 0, prev_delay_us, calls: calls_before, auth_retried: false,
        };
        let mut state = RetryState::from_parts(parts);
        let failure = Failure::new(ErrorCategory::RateLimited).with_server_delay_us(server_us);
        let decision = state.on_failure(&policy, failure, 0, Guards::none());
        let retry = calls_before + 1;
        let computed = policy.next_delay(retry, seed, prev_delay_us).delay_us;
        if retry >= policy.max_attempts() {
            prop_assert_eq!(decision, Decision::GiveUp { reason: GiveUpReason::Exhausted });
        } else if server_us > policy.max_retry_after_us() {
            prop_assert_eq!(decision, Decision::GiveUp { reason: GiveUpReason::RetryAfterTooLong });
        } else {
            let Decision::Retry { delay_us, .. } = decision else {
                return Err(TestCaseError::fail(format!("{decision:?}")));
            };
            prop_assert_eq!(delay_us, computed.max(server_us));
            prop_assert!(delay_us <= policy.max_delay_us().max(server_us));
            prop_assert!(computed <= policy.max_delay_us());
        }
    }

    #[test]
    fn base_delays_are_non_decreasing_in_retry(config in valid_config()) {
        let policy = config.validate().unwrap();
        prop_assert_eq!(policy.base_delay_us(1), policy.initial_delay_us());
        let retries = (1..=64).chain([100, 999, 1000, 65_536, u32::MAX - 1, u32::MAX]);
        let mut last = 0;
        for retry in retries {
            let base = policy.base_delay_us(retry);
            prop_assert!(base >= last, "retry {}: {} < {}", retry, base, last);
            prop_assert!(base <= policy.max_delay_us());
            last = base;
        }
    }

    #[test]
    fn decorrelated_stays_between_initial_and_three_times_previous(
        config in valid_config(),
        seed in any::<u64>(),
    ) {
        let config = RetryConfig { jitter: true, strategy: JitterStrategy::Decorrelated, ..config };
        let policy = config.validate().unwrap();
        let (initial, max) = (policy.initial_delay_us(), policy.max_delay_us());
        let mut prev = initial;
        for r in policy.plan(seed) {
            prop_assert!(r.delay_us >= initial, "{:?} below {}", r, initial);
            prop_assert!(r.delay_us <= max.min(3 * prev), "{:?} above min({}, 3 * {})", r, max, prev);
            prev = r.delay_us;
        }
    }

    #[test]
    fn same_seed_same_schedule(config in valid_config(), seed in any::<u64>()) {
        let policy = config.validate().unwrap();
        let once: Vec<_> = policy.plan(seed).collect();
        let again: Vec<_> = policy.plan(seed).collect();
        prop_assert_eq!(&once, &again);
        // The decisions of a call that keeps failing follow the same schedule (RateLimited is
        // always retryable; only the deadline may cut it short).
        let mut state = RetryState::new(seed, 0);
        let mut now = 0u64;
        for planned in &once {
            match state.on_failure(&policy, Failure::new(ErrorCategory::RateLimited), now, Guards::none()) {
                Decision::Retry { delay_us, .. } => {
                    prop_assert_eq!(delay_us, planned.delay_us);
                    now = now.saturating_add(delay_us);
                }
                Decision::GiveUp { reason } => {
                    prop_assert_eq!(reason, GiveUpReason::Deadline);
                    return Ok(());
                }
            }
        }
        let last = state.on_failure(&policy, Failure::new(ErrorCategory::RateLimited), now, Guards::none());
        prop_assert_eq!(last, Decision::GiveUp { reason: GiveUpReason::Exhausted });
    }

    #[test]
    fn random_valid_configs_never_panic(
        config in valid_config(),
        seed in any::<u64>(),
        retry in any::<u32>(),
        prev_delay_us in any::<u64>(),
        started_us in any::<u64>(),
        now_us in any::<u64>(),
        calls in any::<u32>(),
        category in category(),
        server_delay_us in prop::option::of(any::<u64>()),
        token_refreshed in any::<bool>(),
        ticket in prop_oneof![0u64..100, any::<u64>()],
        moves in 0u8..=8,
    ) {
        let policy = config.validate().unwrap();
        prop_assert_eq!(policy.plan(seed).count() as u32, config.max_attempts - 1);
        let d = policy.next_delay(retry, seed, prev_delay_us);
        prop_assert!(d.delay_us <= policy.max_delay_us() && d.base_us <= policy.max_delay_us());

        let mut breaker = policy.breaker().map(CircuitBreaker::new);
        let mut budget = policy.budget().map(|b| RetryBudget::new(b).unwrap());
        let parts = ricochet_core::RetryStateParts {
            seed, started_us, prev_delay_us, calls, auth_retried: token_refreshed,
        };
        let mut state = RetryState::from_parts(parts);
        let failure = Failure { category, server_delay_us, token_refreshed };
        let guards = Guards { breaker: breaker.as_mut(), budget: budget.as_mut() };
        let decision = state.on_failure(&policy, failure, now_us, guards);
        if let Decision::Retry { slot_request, .. } = decision {
            prop_assert_eq!(slot_request.is_some(), policy.coordination_enabled());
        }
        state.on_success(now_us, Guards { breaker: breaker.as_mut(), budget: budget.as_mut() });

        let request = SlotRequest { moves, ..policy.slot_request(now_us, retry) };
        prop_assert!(request.window <= now_us);
        match policy.resolve_ticket(&request, ticket, seed) {
            SlotResolution::FireAt { fire_at_us, slot } => {
                prop_assert!(fire_at_us >= request.earliest_us);
                prop_assert!(slot < policy.slot_count().max(1));
            }
            SlotResolution::NextWindow(next) => {
                prop_assert!(policy.slot_capacity().is_some());
                prop_assert_eq!(next.moves, moves + 1);
                prop_assert!(next.earliest_us >= request.earliest_us);
            }
            SlotResolution::GiveUp(reason) => prop_assert_eq!(reason, GiveUpReason::Budget),
        }
        prop_assert!(policy.fallback_ticket(seed, retry) < u64::from(policy.slot_count().max(1)));
    }

    #[test]
    fn validate_never_panics_and_names_the_field(
        max_attempts in any::<u32>(),
        initial_delay in any::<f64>(),
        max_delay in any::<f64>(),
        exponential_base in any::<f64>(),
        jitter_factor in any::<f64>(),
        slot_count in any::<u32>(),
        slot_width in any::<f64>(),
        idempotency_ttl in any::<f64>(),
        max_retry_after in any::<f64>(),
    ) {
        let config = RetryConfig {
            max_attempts, initial_delay, max_delay, exponential_base, jitter_factor, slot_count,
            slot_width, idempotency_ttl, max_retry_after, ..RetryConfig::DEFAULT
        };
        match config.validate() {
            Ok(policy) => {
                prop_assert!(policy.initial_delay_us() <= policy.max_delay_us());
                prop_assert!(policy.max_attempts() >= 1);
            }
            Err(e) => {
                let message = e.to_string();
                prop_assert!(message.contains(e.field()), "{}", message);
            }
        }
    }

    #[test]
    fn every_give_up_has_the_oracles_reason(scenario in scenario()) {
        check_against_oracle(&scenario)?;
    }
}

#[test]
fn retry_state_fits_in_64_bytes() {
    fn is_copy<T: Copy>() {}
    is_copy::<RetryState>();
    assert!(
        std::mem::size_of::<RetryState>() <= 64,
        "{}",
        std::mem::size_of::<RetryState>()
    );
}

/// Found by `random_valid_configs_never_panic`: validation bounds `slot_count` and `slot_width`
/// one by one, so their product (the window) overflowed `u64` and panicked in debug builds.
#[test]
fn huge_coordination_windows_saturate_instead_of_overflowing() {
    let config = RetryConfig {
        slot_count: u32::MAX,
        slot_width: MAX_SECONDS,
        ..RetryConfig::DEFAULT
    };
    let policy = config.validate().unwrap();
    assert_eq!(policy.window_us(), u64::MAX);
    let request = policy.slot_request(5_000_000, 1);
    assert_eq!(request.window, 0);
    let last_slot = u64::from(u32::MAX) - 1;
    assert_eq!(
        policy.resolve_ticket(&request, last_slot, 7),
        SlotResolution::FireAt {
            fire_at_us: u64::MAX,
            slot: u32::MAX - 1
        }
    );
    let d = RetryState::new(7, 0).on_failure(
        &policy,
        Failure::new(ErrorCategory::Timeout),
        0,
        Guards::none(),
    );
    assert!(
        matches!(
            d,
            Decision::Retry {
                slot_request: Some(SlotRequest { window: 0, .. }),
                ..
            }
        ),
        "{d:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The oracle.

/// One thing that happens to the service: an attempt fails or succeeds, `gap_us` after the
/// previous event (plus any delay the engine asked the caller to sleep).
#[derive(Debug, Clone, Copy)]
enum Event {
    Fail {
        gap_us: u64,
        category: ErrorCategory,
        server_delay_us: Option<u64>,
        token_refreshed: bool,
    },
    Succeed {
        gap_us: u64,
    },
}

/// A service's history: logical calls one after another, sharing one breaker and one budget.
#[derive(Debug, Clone)]
struct Scenario {
    config: RetryConfig,
    events: Vec<Event>,
}

fn event() -> impl Strategy<Value = Event> {
    let failure = (
        0u64..3_000_000,
        // Mostly retryable, so that calls run long enough to meet every check.
        prop_oneof![
            6 => prop::sample::select(vec![
                ErrorCategory::Connection,
                ErrorCategory::Timeout,
                ErrorCategory::RateLimited,
            ]),
            2 => Just(ErrorCategory::AuthExpired),
            2 => category(),
        ],
        prop::option::weighted(0.3, prop_oneof![0u64..2_000_000, 0u64..20_000_000]),
        prop::bool::weighted(0.7),
    )
        .prop_map(
            |(gap_us, category, server_delay_us, token_refreshed)| Event::Fail {
                gap_us,
                category,
                server_delay_us,
                token_refreshed,
            },
        );
    prop_oneof![5 => failure, 1 => (0u64..3_000_000).prop_map(|gap_us| Event::Succeed { gap_us })]
}

prop_compose! {
    /// Configs on the scale of the events, so that every reason can fire.
    fn oracle_config()(
        max_attempts in 1u32..8,
        initial_ms in 0u64..500,
        extra_ms in 0u64..10_000,
        exponential_base in 1.0..3.0,
        jitter in any::<bool>(),
        jitter_factor in 0.0..=1.0,
        strategy in jitter_strategy(),
        coordination_enabled in any::<bool>(),
        slot_count in 1u32..30,
        slot_width_ms in 1u64..500,
        max_elapsed_ms in prop::option::of(0u64..30_000),
        max_retry_after_ms in 0u64..10_000,
        retry_on_bits in any::<u16>(),
        breaker in prop::option::of((1u32..5, 1u64..20_000)),
        budget in prop::option::of((1u32..20, 1u32..2_000)),
    ) -> RetryConfig {
        RetryConfig {
            max_attempts,
            initial_delay: initial_ms as f64 / 1e3,
            max_delay: (initial_ms + extra_ms) as f64 / 1e3,
            exponential_base,
            jitter,
            jitter_factor,
            slot_count,
            slot_width: slot_width_ms as f64 / 1e3,
            coordination_enabled,
            strategy,
            max_elapsed: max_elapsed_ms.map(|ms| ms as f64 / 1e3),
            max_retry_after: max_retry_after_ms as f64 / 1e3,
            retry_on: CategorySet::from_bits(retry_on_bits),
            // The oracle models the consecutive-failure trigger only: the rate trigger is off.
            circuit_breaker: breaker.map(|(failure_threshold, cool_down_ms)| BreakerConfig {
                failure_threshold,
                failure_rate: 0.0,
                minimum_calls: 0,
                window: 10.0,
                cool_down: cool_down_ms as f64 / 1e3,
                half_open_probes: 1,
            }),
            retry_budget: budget.map(|(max_tokens, ratio_milli)| BudgetConfig {
                max_tokens,
                token_ratio: f64::from(ratio_milli) / 1e3,
            }),
            ..RetryConfig::DEFAULT
        }
    }
}

prop_compose! {
    fn scenario()(config in oracle_config(), events in prop::collection::vec(event(), 1..60)) -> Scenario {
        Scenario { config, events }
    }
}

/// The breaker as far as the oracle drives it: outcomes are recorded, `admit` is never asked.
/// Closed, it counts consecutive failures and opens at the threshold; open, it ignores outcomes
/// and reads as open until its cool-down ends.
struct BreakerModel {
    threshold: u32,
    cool_down_us: u64,
    consecutive: u32,
    open_until_us: Option<u64>,
}

impl BreakerModel {
    fn record(&mut self, success: bool, now_us: u64) {
        if self.open_until_us.is_some() {
            return;
        }
        if success {
            self.consecutive = 0;
        } else {
            self.consecutive += 1;
            if self.consecutive >= self.threshold {
                self.open_until_us = Some(now_us + self.cool_down_us);
            }
        }
    }

    /// Whether the breaker is still open at `t_us`.
    fn open_at(&self, t_us: u64) -> bool {
        self.open_until_us.is_some_and(|until| t_us < until)
    }
}

/// gRPC A6 in milli-tokens.
struct BudgetModel {
    tokens_milli: u32,
    max_milli: u32,
    ratio_milli: u32,
}

impl BudgetModel {
    fn on_failure(&mut self) {
        self.tokens_milli = self.tokens_milli.saturating_sub(1000);
    }
    fn on_success(&mut self) {
        self.tokens_milli = (self.tokens_milli + self.ratio_milli).min(self.max_milli);
    }
    fn can_retry(&self) -> bool {
        self.tokens_milli * 2 > self.max_milli
    }
}

/// One logical call as the oracle sees it.
struct CallModel {
    seed: u64,
    started_us: u64,
    calls: u32,
    auth_retried: bool,
    prev_delay_us: u64,
}

/// What the engine should decide, by the documented order of checks.
#[allow(clippy::too_many_arguments)]
fn oracle_decision(
    config: &RetryConfig,
    policy: &Policy,
    call: &mut CallModel,
    breaker: &mut Option<BreakerModel>,
    budget: &mut Option<BudgetModel>,
    category: ErrorCategory,
    server_delay_us: Option<u64>,
    token_refreshed: bool,
    now_us: u64,
) -> Decision {
    call.calls += 1;
    let retry_on = config.retry_on;
    let retryable = match category {
        ErrorCategory::AuthExpired => token_refreshed && !call.auth_retried,
        ErrorCategory::RateLimited => true,
        other => retry_on.contains(other),
    };
    // A failure counts against the service when it is one the policy retries.
    if retryable || retry_on.contains(category) {
        if let Some(b) = breaker.as_mut() {
            b.record(false, now_us);
        }
        if let Some(b) = budget.as_mut() {
            b.on_failure();
        }
    }
    let give_up = |reason| Decision::GiveUp { reason };
    // 1. the category
    if !retryable {
        return give_up(GiveUpReason::NonRetryable);
    }
    // 2. the attempt limit: max_attempts counts every call
    if call.calls >= config.max_attempts {
        return give_up(GiveUpReason::Exhausted);
    }
    // 3. the server's delay: capped, and it replaces a shorter computed delay
    let mut delay_us = policy
        .next_delay(call.calls, call.seed, call.prev_delay_us)
        .delay_us;
    if let Some(server_us) = server_delay_us {
        if server_us > (config.max_retry_after * 1e3).round() as u64 * 1000 {
            return give_up(GiveUpReason::RetryAfterTooLong);
        }
        delay_us = delay_us.max(server_us);
    }
    let fire_at_us = now_us + delay_us;
    // 4. the total deadline
    let deadline_us = config
        .max_elapsed
        .map(|max_elapsed| call.started_us + (max_elapsed * 1e3).round() as u64 * 1000);
    if deadline_us.is_some_and(|deadline_us| fire_at_us > deadline_us) {
        return give_up(GiveUpReason::Deadline);
    }
    // 5. the breaker, if it is still open when the retry would fire
    if breaker.as_ref().is_some_and(|b| b.open_at(fire_at_us)) {
        return give_up(GiveUpReason::CircuitOpen);
    }
    // 6. the budget
    if budget.as_ref().is_some_and(|b| !b.can_retry()) {
        return give_up(GiveUpReason::Budget);
    }
    if category == ErrorCategory::AuthExpired {
        call.auth_retried = true;
    }
    call.prev_delay_us = delay_us;
    let slot_request = config.coordination_enabled.then(|| {
        let window_us =
            u64::from(config.slot_count) * (config.slot_width * 1e3).round() as u64 * 1000;
        SlotRequest {
            earliest_us: fire_at_us,
            window: fire_at_us / window_us,
            retry: call.calls,
            moves: 0,
            latest_us: deadline_us,
        }
    });
    Decision::Retry {
        delay_us,
        slot_request,
    }
}

/// Runs `scenario` through the engine and the oracle side by side; returns the give-up reasons.
fn check_against_oracle(scenario: &Scenario) -> Result<Vec<GiveUpReason>, TestCaseError> {
    let config = &scenario.config;
    let policy = config.validate().unwrap();
    let mut breaker = policy.breaker().map(CircuitBreaker::new);
    let mut budget = policy.budget().map(|b| RetryBudget::new(b).unwrap());
    let mut breaker_model = config.circuit_breaker.map(|b| BreakerModel {
        threshold: b.failure_threshold,
        cool_down_us: (b.cool_down * 1e3).round() as u64 * 1000,
        consecutive: 0,
        open_until_us: None,
    });
    let mut budget_model = config.retry_budget.map(|b| BudgetModel {
        tokens_milli: b.max_tokens * 1000,
        max_milli: b.max_tokens * 1000,
        ratio_milli: (b.token_ratio * 1e3).round() as u32,
    });

    let mut now_us = 1_000_000;
    let mut seed = 0;
    let new_call = |seed: u64, now_us: u64| {
        (
            RetryState::new(seed, now_us),
            CallModel {
                seed,
                started_us: now_us,
                calls: 0,
                auth_retried: false,
                prev_delay_us: 0,
            },
        )
    };
    let (mut state, mut model) = new_call(seed, now_us);
    let mut reasons = Vec::new();
    for (i, event) in scenario.events.iter().enumerate() {
        let mut next_call = false;
        match *event {
            Event::Succeed { gap_us } => {
                now_us += gap_us;
                state.on_success(
                    now_us,
                    Guards {
                        breaker: breaker.as_mut(),
                        budget: budget.as_mut(),
                    },
                );
                if let Some(b) = breaker_model.as_mut() {
                    b.record(true, now_us);
                }
                if let Some(b) = budget_model.as_mut() {
                    b.on_success();
                }
                next_call = true;
            }
            Event::Fail {
                gap_us,
                category,
                server_delay_us,
                token_refreshed,
            } => {
                now_us += gap_us;
                let failure = Failure {
                    category,
                    server_delay_us,
                    token_refreshed,
                };
                let guards = Guards {
                    breaker: breaker.as_mut(),
                    budget: budget.as_mut(),
                };
                let got = state.on_failure(&policy, failure, now_us, guards);
                let want = oracle_decision(
                    config,
                    &policy,
                    &mut model,
                    &mut breaker_model,
                    &mut budget_model,
                    category,
                    server_delay_us,
                    token_refreshed,
                    now_us,
                );
                prop_assert_eq!(got, want, "event {}: {:?}", i, event);
                prop_assert_eq!(state.calls(), model.calls);
                match got {
                    Decision::Retry { delay_us, .. } => now_us += delay_us,
                    Decision::GiveUp { reason } => {
                        reasons.push(reason);
                        next_call = true;
                    }
                }
            }
        }
        if next_call {
            seed += 1;
            (state, model) = new_call(seed, now_us);
        }
        if let (Some(b), Some(m)) = (&budget, &budget_model) {
            prop_assert_eq!(b.tokens_milli(), m.tokens_milli);
        }
    }
    Ok(reasons)
}

/// The generated scenarios do reach every reason: the oracle test is not vacuous.
#[test]
fn oracle_scenarios_reach_every_reason() {
    let mut runner = TestRunner::deterministic();
    let strategy = scenario();
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..2_000 {
        let scenario = strategy.new_tree(&mut runner).unwrap().current();
        let reasons = check_against_oracle(&scenario).unwrap();
        for r in reasons {
            *seen.entry(r.name()).or_insert(0u32) += 1;
        }
    }
    for reason in GiveUpReason::ALL {
        assert!(
            seen.get(reason.name()).copied().unwrap_or(0) >= 100,
            "{reason} rarely reached: {seen:?}"
        );
    }
}
