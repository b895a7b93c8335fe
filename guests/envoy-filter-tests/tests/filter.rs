//! The ricochet Envoy filter, run in a real proxy-wasm host (`proxy-wasm-host`), checked against
//! `ricochet-core` computing the same decisions natively.

use std::sync::Arc;

use proxy_wasm_host::abi::v0_2_1::types::{Action, LogLevel};
use proxy_wasm_host::abi::v0_2_1::SharedServices;
use ricochet_core::breaker::{Admission, BreakerConfig, BreakerState, CircuitBreaker};
use ricochet_core::budget::{BudgetConfig, RetryBudget};
use ricochet_core::retry_after::{parse_retry_after, retry_after_seconds};
use ricochet_core::{ErrorCategory, Failure, Guards, RetryConfig, RetryState};
use ricochet_envoy_filter_tests::{header, ManualClock, Proxy, RacingStore, T0_US};
use serde_json::{json, Value};

fn config(extra: Value) -> String {
    let mut base = json!({ "service": "payments", "operation": "charge" });
    let (Value::Object(b), Value::Object(e)) = (&mut base, extra) else {
        panic!("objects")
    };
    b.extend(e);
    base.to_string()
}

fn start(extra: Value) -> Proxy {
    let configuration = config(extra);
    match Proxy::start(&configuration) {
        Ok(p) => p,
        Err(r) => panic!("{configuration} refused: {:?} {:?}", r.error, r.logs),
    }
}

/// `Sat, 28 Nov 2026 HH:MM:SS GMT` for a Unix second on the tests' day.
fn imf_fixdate(unix_secs: u64) -> String {
    let t0 = T0_US / 1_000_000;
    let s = unix_secs
        .checked_sub(t0)
        .filter(|s| *s < 86_400)
        .expect("on 2026-11-28");
    format!(
        "Sat, 28 Nov 2026 {:02}:{:02}:{:02} GMT",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

// ---------------------------------------------------------------------------------------------
// Request headers from the policy.

#[test]
fn request_headers_come_from_the_default_preset() {
    let mut proxy = start(json!({ "policy": "default" }));
    let call = proxy.call(200, &[]);
    assert_eq!(call.local_reply, None);
    assert_eq!(call.request_header("x-envoy-max-retries"), Some("2"));
    assert_eq!(
        call.request_header("x-envoy-retry-on"),
        Some("connect-failure,refused-stream,reset,retriable-status-codes")
    );
    assert_eq!(
        call.request_header("x-envoy-retriable-status-codes"),
        Some("429,502,503,504")
    );
    assert_eq!(
        call.request_header("x-envoy-upstream-rq-per-try-timeout-ms"),
        None
    );
    // Untouched headers pass through.
    assert_eq!(call.request_header(":path"), Some("/charge"));
}

#[test]
fn request_headers_come_from_an_inline_config() {
    let mut proxy = start(json!({
        "policy": "aggressive",
        "config": { "max_attempts": 6, "retry_on": ["TimeoutError"] },
        "statuses": { "429": "RateLimited", "503": "ServiceUnavailableError", "504": "TimeoutError",
                      "404": "ResourceNotFoundError" },
        "attempt_timeout_ms": 250
    }));
    // A client's own retry headers are replaced (or removed) by the policy's.
    let pending = proxy.request(&[
        ("x-envoy-max-retries", "99"),
        ("x-envoy-retry-on", "5xx"),
        ("x-envoy-upstream-rq-per-try-timeout-ms", "1"),
    ]);
    assert_eq!(pending.action, Action::Continue);
    assert_eq!(pending.request_header("x-envoy-max-retries"), Some("5"));
    // TimeoutError is Envoy's `reset`; RateLimited is always retried; 503 and 404 are not.
    assert_eq!(
        pending.request_header("x-envoy-retry-on"),
        Some("reset,retriable-status-codes")
    );
    assert_eq!(
        pending.request_header("x-envoy-retriable-status-codes"),
        Some("429,504")
    );
    assert_eq!(
        pending.request_header("x-envoy-upstream-rq-per-try-timeout-ms"),
        Some("250")
    );
    let headers = &pending.upstream_request;
    assert_eq!(
        headers
            .iter()
            .filter(|(k, _)| k == "x-envoy-max-retries")
            .count(),
        1
    );
    proxy.respond(pending, 200, &[]);

    // The `extends` of an inline config names its preset as well as `policy` does.
    let mut proxy = start(json!({ "config": { "extends": "conservative" } }));
    assert_eq!(
        proxy.call(200, &[]).request_header("x-envoy-max-retries"),
        Some("1")
    );
}

#[test]
fn a_policy_that_retries_nothing_sets_max_retries_zero() {
    let mut proxy = start(json!({
        "config": { "retry_on": [] },
        "statuses": { "404": "ResourceNotFoundError" }
    }));
    let call = proxy.call(200, &[("x-envoy-retry-on", "5xx")]);
    assert_eq!(call.request_header("x-envoy-max-retries"), Some("0"));
    assert_eq!(call.request_header("x-envoy-retry-on"), None);
    assert_eq!(call.request_header("x-envoy-retriable-status-codes"), None);
}

// ---------------------------------------------------------------------------------------------
// Circuit breaker.

fn breaker_config(probes: u32) -> Value {
    json!({
        "policy": "default",
        "circuit_breaker": { "failure_threshold": 3, "failure_rate": 0.0, "minimum_calls": 0,
                             "window": 10.0, "cool_down": 30.0, "half_open_probes": probes }
    })
}

#[test]
fn circuit_opens_after_the_configured_failures_and_answers_503_with_the_cool_down_left() {
    let mut proxy = start(breaker_config(1));
    for _ in 0..2 {
        let call = proxy.call(503, &[("retry-after", "1")]);
        assert_eq!(call.local_reply, None);
        proxy.advance_ms(100);
    }
    // The third consecutive failure opens it, for 30 s from now.
    let opened_at = proxy.now_us();
    let call = proxy.call(502, &[]);
    assert_eq!(call.local_reply, None);

    let pending = proxy.request(&[]);
    assert_eq!(
        pending.action,
        Action::Pause,
        "the request must not reach the upstream"
    );
    let reply = pending.local_reply.clone().expect("a local reply");
    assert_eq!(reply.status, 503);
    assert_eq!(header(&reply.headers, "retry-after"), Some("30"));
    assert!(reply.body.contains("payments"), "{}", reply.body);
    // Envoy runs the local reply through the encoder filters: it is not an outcome.
    let key = proxy.guards_key().expect("guards");
    let before = proxy.shared_data(&key);
    let response = proxy.respond(pending, 0, &[]);
    assert_eq!(header(&response, "retry-after"), Some("30"));
    assert_eq!(proxy.shared_data(&key), before);

    // Later, the cool-down left, rounded up to whole seconds: 30 − 12.3 = 17.7 → 18.
    proxy.clock.set_us(opened_at + 12_300_000);
    let call = proxy.call(200, &[]);
    let reply = call.local_reply.expect("still open");
    assert_eq!(header(&reply.headers, "retry-after"), Some("18"));
    proxy.clock.set_us(opened_at + 29_000_001);
    let reply = proxy.call(200, &[]).local_reply.expect("still open");
    assert_eq!(header(&reply.headers, "retry-after"), Some("1"));

    // A second worker shares the breaker: it rejects too.
    let mut other = proxy.worker();
    assert!(other.call(200, &[]).local_reply.is_some());
}

#[test]
fn half_open_probe_closes_the_circuit() {
    let mut proxy = start(breaker_config(1));
    for _ in 0..3 {
        proxy.call(503, &[]);
    }
    assert!(proxy.call(200, &[]).local_reply.is_some());
    proxy.advance_ms(30_000);

    // The first request after the cool-down is the probe: one call, no retries.
    let probe = proxy.request(&[]);
    assert_eq!(probe.local_reply, None);
    assert_eq!(probe.request_header("x-envoy-max-retries"), Some("0"));
    // While it is out, others are turned away until it is presumed lost (one cool-down).
    proxy.advance_ms(1_000);
    let other = proxy.request(&[]);
    let reply = other
        .local_reply
        .clone()
        .expect("rejected while the probe is out");
    assert_eq!(header(&reply.headers, "retry-after"), Some("29"));
    proxy.respond(other, 0, &[]);

    // The probe succeeds: closed again, with the policy's retries.
    proxy.respond(probe, 200, &[]);
    let call = proxy.call(200, &[]);
    assert_eq!(call.local_reply, None);
    assert_eq!(call.request_header("x-envoy-max-retries"), Some("2"));
}

#[test]
fn a_failed_probe_opens_the_circuit_again() {
    let mut proxy = start(breaker_config(1));
    for _ in 0..3 {
        proxy.call(503, &[]);
    }
    proxy.advance_ms(30_000);
    let probe = proxy.call(503, &[]);
    assert_eq!(probe.local_reply, None);
    // A fresh cool-down from the probe's failure; the 503 tells the client so.
    assert_eq!(probe.response_header("retry-after"), Some("30"));
    proxy.advance_ms(10_000);
    let reply = proxy.call(200, &[]).local_reply.expect("open again");
    assert_eq!(header(&reply.headers, "retry-after"), Some("20"));
}

// ---------------------------------------------------------------------------------------------
// Retry budget.

#[test]
fn budget_exhaustion_sets_max_retries_zero() {
    let mut proxy = start(json!({
        "policy": "default",
        "retry_budget": { "max_tokens": 4, "token_ratio": 0.5 },
        "include_attempt_count_in_response": true
    }));
    let key = proxy.guards_key().expect("guards");
    // 4 tokens; retries only while more than 2 are left.
    assert_eq!(
        proxy.call(503, &[]).request_header("x-envoy-max-retries"),
        Some("2")
    );
    assert_eq!(
        proxy.call(200, &[]).request_header("x-envoy-max-retries"),
        Some("2")
    );
    // Envoy says it made 2 calls: two failed attempts. 4 − 1 + 0.5 − 2 = 1.5 tokens.
    proxy.call(503, &[("x-envoy-attempt-count", "2")]);
    let call = proxy.call(200, &[]);
    assert_eq!(call.request_header("x-envoy-max-retries"), Some("0"));
    // Successes refill it: 1.5 + 0.5 (the call above) + 0.5 = 2.5 > 2.
    assert_eq!(
        proxy.call(200, &[]).request_header("x-envoy-max-retries"),
        Some("0")
    );
    assert_eq!(
        proxy.call(200, &[]).request_header("x-envoy-max-retries"),
        Some("2")
    );
    // Statuses that are not transient failures (404 → ResourceNotFoundError is not mapped by
    // default, so it is a success) never spend tokens.
    assert_eq!(
        proxy.call(404, &[]).request_header("x-envoy-max-retries"),
        Some("2")
    );

    let stored =
        RetryBudget::from_bytes(&proxy.shared_data(&key).expect("stored")).expect("a budget");
    assert_eq!(stored.tokens_milli(), 3_500);
}

// ---------------------------------------------------------------------------------------------
// Retry-After for clients.

#[test]
fn retry_after_http_date_becomes_seconds_and_valid_seconds_are_kept() {
    let mut proxy = start(json!({ "policy": "default" }));
    let now_s = proxy.now_us() / 1_000_000;
    let in_two_minutes = imf_fixdate(now_s + 120);
    let call = proxy.call(503, &[("retry-after", &in_two_minutes)]);
    assert_eq!(call.response_header("retry-after"), Some("120"));
    // The other two HTTP-date forms, and a date in the past.
    let call = proxy.call(429, &[("retry-after", "Saturday, 28-Nov-26 00:00:45 GMT")]);
    assert_eq!(call.response_header("retry-after"), Some("45"));
    let call = proxy.call(429, &[("retry-after", "Sat Nov 28 00:01:00 2026")]);
    assert_eq!(call.response_header("retry-after"), Some("60"));
    let call = proxy.call(503, &[("retry-after", "Fri, 27 Nov 2026 23:00:00 GMT")]);
    assert_eq!(call.response_header("retry-after"), Some("0"));
    // delay-seconds stay exactly as the upstream wrote them.
    for kept in ["17", "007", "0"] {
        let call = proxy.call(429, &[("retry-after", kept)]);
        assert_eq!(call.response_header("retry-after"), Some(kept));
    }
    // Other statuses are left alone, whatever they carry.
    let call = proxy.call(502, &[("retry-after", &in_two_minutes)]);
    assert_eq!(
        call.response_header("retry-after"),
        Some(in_two_minutes.as_str())
    );
    assert_eq!(proxy.call(500, &[]).response_header("retry-after"), None);
    assert_eq!(proxy.call(200, &[]).response_header("retry-after"), None);
}

#[test]
fn missing_or_invalid_retry_after_is_computed_by_the_policy() {
    let mut proxy = start(json!({
        "config": { "initial_delay": 2.5, "max_delay": 60.0, "jitter_factor": 0.5 }
    }));
    let policy = RetryConfig {
        initial_delay: 2.5,
        max_delay: 60.0,
        jitter_factor: 0.5,
        ..RetryConfig::DEFAULT
    }
    .validate()
    .expect("valid");
    let mut seen = std::collections::BTreeSet::new();
    for (i, upstream) in [
        None,
        Some("soon"),
        Some("-1"),
        Some("1.5"),
        None,
        None,
        None,
        None,
    ]
    .into_iter()
    .enumerate()
    {
        proxy.advance_ms(1_234 * i as u64 + 7);
        let pending = proxy.request(&[]);
        let seed = pending.started_ns ^ u64::from(pending.context.get());
        let status = if i % 2 == 0 { 429 } else { 503 };
        let headers: Vec<(&str, &str)> = upstream.map(|v| ("retry-after", v)).into_iter().collect();
        let response = proxy.respond(pending, status, &headers);
        let expected = retry_after_seconds(policy.next_delay(1, seed, 0).delay_us).to_string();
        assert_eq!(
            header(&response, "retry-after"),
            Some(expected.as_str()),
            "{upstream:?}"
        );
        assert_eq!(
            response.iter().filter(|(k, _)| k == "retry-after").count(),
            1
        );
        seen.insert(expected);
    }
    // 2.5 s ± 50 %: jitter really moved it, so the seed really is the one above.
    assert!(seen.len() > 1, "{seen:?}");
}

// ---------------------------------------------------------------------------------------------
// Invalid configuration.

#[test]
fn invalid_configuration_is_rejected_and_the_log_names_the_field() {
    let cases: Vec<(String, &str)> = vec![
        (
            config(json!({ "config": { "jitter_factor": 1.5 } })),
            "config.jitter_factor",
        ),
        (
            config(json!({ "config": { "max_attempts": 0 } })),
            "config.max_attempts",
        ),
        (
            config(json!({ "config": { "max_attempts": "three" } })),
            "config.max_attempts",
        ),
        (
            config(json!({ "config": { "initial_delay": 20.0 } })),
            "config.initial_delay",
        ),
        (
            config(json!({ "config": { "max_attempt": 3 } })),
            "max_attempt",
        ),
        (config(json!({ "policy": "reckless" })), "policy"),
        (
            config(json!({ "policy": "default", "config": { "extends": "aggressive" } })),
            "config.extends",
        ),
        (
            config(json!({ "statuses": { "5O3": "ServiceUnavailableError" } })),
            "statuses.5O3",
        ),
        (
            config(json!({ "statuses": { "503": "Teapot" } })),
            "statuses.503",
        ),
        (
            config(json!({ "attempt_timeout_ms": 0 })),
            "attempt_timeout_ms",
        ),
        (
            config(json!({ "attempt_timeout_ms": -5 })),
            "attempt_timeout_ms",
        ),
        (
            config(
                json!({ "circuit_breaker": { "failure_threshold": 3, "failure_rate": 0.5,
                "minimum_calls": 1, "window": 10.0, "cool_down": 0.0, "half_open_probes": 1 } }),
            ),
            "circuit_breaker.cool_down",
        ),
        (
            config(json!({ "circuit_breaker": { "failure_threshold": 3 } })),
            "circuit_breaker",
        ),
        (
            config(json!({ "retry_budget": { "max_tokens": 0, "token_ratio": 0.1 } })),
            "retry_budget.max_tokens",
        ),
        (
            config(
                json!({ "retry_budget": { "max_tokens": 5, "token_ratio": 0.1 },
                           "config": { "retry_budget": { "max_tokens": 5, "token_ratio": 0.1 } } }),
            ),
            "retry_budget",
        ),
        (json!({ "operation": "charge" }).to_string(), "service"),
        (json!({ "service": "payments" }).to_string(), "operation"),
        (config(json!({ "surprise": true })), "surprise"),
        ("{\"service\": ".to_string(), "EOF"),
        (String::new(), "empty"),
    ];
    for (configuration, field) in cases {
        let refused = match Proxy::start(&configuration) {
            Ok(_) => panic!("{configuration} was accepted"),
            Err(r) => r,
        };
        assert!(
            refused.error.is_none(),
            "{configuration}: {:?}",
            refused.error
        );
        let errors: Vec<&String> = refused
            .logs
            .iter()
            .filter(|(level, _)| *level == LogLevel::Error)
            .map(|(_, line)| line)
            .collect();
        assert_eq!(errors.len(), 1, "{configuration}: {:?}", refused.logs);
        assert!(
            errors[0].contains("invalid plugin configuration") && errors[0].contains(field),
            "{configuration}: `{}` does not name `{field}`",
            errors[0]
        );
    }
}

#[test]
fn the_error_line_reads_as_documented() {
    let refused = match Proxy::start(&config(json!({ "config": { "jitter_factor": 1.5 } }))) {
        Ok(_) => panic!("accepted"),
        Err(r) => r,
    };
    assert_eq!(
        refused.logs,
        vec![(
            LogLevel::Error,
            "ricochet: invalid plugin configuration: field `config.jitter_factor`: \
             jitter_factor must be within [0.0, 1.0], got 1.5"
                .to_string()
        )]
    );
}

#[test]
fn a_valid_configuration_is_logged_once() {
    let proxy = start(json!({ "policy": "conservative" }));
    let lines = proxy.logs.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].0, LogLevel::Info);
    assert!(lines[0].1.contains("payments/charge"), "{}", lines[0].1);
}

// ---------------------------------------------------------------------------------------------
// Shared data: every worker sees one state, and no update is lost.

fn guards_config() -> Value {
    json!({
        "policy": "default",
        // Both triggers off: the breaker never opens, but counts every outcome in its window.
        "circuit_breaker": { "failure_threshold": 0, "failure_rate": 0.0, "minimum_calls": 0,
                             "window": 60.0, "cool_down": 1.0, "half_open_probes": 1 },
        "retry_budget": { "max_tokens": 1000, "token_ratio": 0.001 }
    })
}

fn stored_guards(bytes: &[u8]) -> (CircuitBreaker, RetryBudget) {
    let (b, r) = bytes.split_at(CircuitBreaker::ENCODED_LEN);
    (
        CircuitBreaker::from_bytes(b).expect("a breaker"),
        RetryBudget::from_bytes(r).expect("a budget"),
    )
}

#[test]
fn a_write_that_loses_the_cas_race_is_redone_and_loses_nothing() {
    let clock = Arc::new(ManualClock::default());
    clock.set_us(T0_US);
    let store = Arc::new(RacingStore::default());
    let mut proxy =
        Proxy::start_on(&config(guards_config()), clock.clone(), store.clone()).expect("starts");
    assert_eq!(store.writes(), 1, "configuration writes fresh guards");
    let key = proxy.guards_key().expect("guards");
    let interloper_key = key.clone();

    // Just before the filter stores the outcome of its next response, another worker records
    // two failures of its own (by ricochet-core, natively) and wins the race.
    let now = clock.now_us();
    store.before_write(2, move |inner, call| {
        let stored = inner
            .get_shared_data(call, b"", interloper_key.as_bytes())
            .expect("stored");
        let (mut breaker, mut budget) = stored_guards(&stored.bytes);
        for _ in 0..2 {
            breaker.record(false, now);
            budget.on_failure();
        }
        let mut bytes = breaker.to_bytes().to_vec();
        bytes.extend_from_slice(&budget.to_bytes());
        inner
            .set_shared_data(
                call,
                b"",
                interloper_key.as_bytes(),
                &bytes,
                Some(stored.cas.get()),
            )
            .expect("the interloper wins");
    });
    proxy.call(503, &[]);
    assert_eq!(
        store.cas_mismatches(),
        1,
        "the filter's first write lost the race"
    );
    let (breaker, budget) = stored_guards(&proxy.shared_data(&key).expect("stored"));
    assert_eq!(
        breaker.window_counts(now),
        (3, 3),
        "both workers' failures are counted"
    );
    assert_eq!(budget.tokens_milli(), 997_000);
}

#[test]
fn concurrent_workers_lose_no_update() {
    const PER_WORKER: u32 = 150;
    let clock = Arc::new(ManualClock::default());
    clock.set_us(T0_US);
    // Reads pause, so the workers' read–modify–write cycles really overlap.
    let store = Arc::new(RacingStore::with_read_pause(
        std::time::Duration::from_micros(200),
    ));
    let first = Proxy::start_on(&config(guards_config()), clock, store.clone()).expect("starts");
    let workers: Vec<Proxy> = (0..3).map(|_| first.worker()).collect();
    let now = first.now_us();
    let threads: Vec<_> = workers
        .into_iter()
        .map(|mut proxy| {
            std::thread::spawn(move || {
                for i in 0..PER_WORKER {
                    // Failures, with a success every tenth call.
                    proxy.call(if i % 10 == 9 { 200 } else { 503 }, &[]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("worker");
    }
    let calls = 3 * u64::from(PER_WORKER);
    let successes = calls / 10;
    let key = first.guards_key().expect("guards");
    let (breaker, budget) = stored_guards(&first.shared_data(&key).expect("stored"));
    assert_eq!(breaker.window_counts(now), (calls, calls - successes));
    // Start full; −1 per failure, +0.001 per success while not full.
    let mut expected = RetryBudget::new(BudgetConfig {
        max_tokens: 1000,
        token_ratio: 0.001,
    })
    .expect("valid");
    for _ in 0..calls - successes {
        expected.on_failure();
    }
    for _ in 0..successes {
        expected.on_success();
    }
    assert_eq!(budget.tokens_milli(), expected.tokens_milli());
    assert!(
        store.cas_mismatches() > 0,
        "the workers never raced: the test proved nothing"
    );
}

#[test]
fn guards_stored_under_another_configuration_are_replaced() {
    let mut proxy = start(guards_config());
    let key = proxy.guards_key().expect("guards");
    proxy.call(503, &[]);
    let (_, budget) = stored_guards(&proxy.shared_data(&key).expect("stored"));
    assert_eq!(budget.tokens_milli(), 999_000);
    // The same service reconfigured with another budget keeps its guards under another key,
    // and starts afresh.
    let mut changed = guards_config();
    changed["retry_budget"] = json!({ "max_tokens": 10, "token_ratio": 0.5 });
    let other = Proxy::start_on(&config(changed), proxy.clock.clone(), proxy.shared.clone())
        .expect("starts");
    let other_key = other.guards_key().expect("guards");
    assert_ne!(other_key, key);
    let (_, budget) = stored_guards(&other.shared_data(&other_key).expect("stored"));
    assert_eq!((budget.max_tokens(), budget.tokens_milli()), (10, 10_000));
    // Guards of another configuration found under this one's key (another version of the
    // filter, a hash collision) are replaced by fresh ones rather than misread.
    proxy.set_shared_data(&key, &other.shared_data(&other_key).expect("stored"));
    proxy.call(503, &[]);
    let (_, budget) = stored_guards(&proxy.shared_data(&key).expect("stored"));
    assert_eq!(
        (budget.max_tokens(), budget.tokens_milli()),
        (1000, 999_000)
    );
}

// ---------------------------------------------------------------------------------------------
// Parity: the filter's decisions are ricochet-core's.

/// A small deterministic generator for the scenario (SplitMix64).
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn decisions_agree_with_ricochet_core_computed_natively() {
    let retry_config = RetryConfig {
        max_attempts: 4,
        initial_delay: 0.5,
        max_delay: 8.0,
        jitter_factor: 0.3,
        circuit_breaker: Some(BreakerConfig {
            failure_threshold: 4,
            failure_rate: 0.6,
            minimum_calls: 5,
            window: 10.0,
            cool_down: 5.0,
            half_open_probes: 2,
        }),
        retry_budget: Some(BudgetConfig {
            max_tokens: 8,
            token_ratio: 0.5,
        }),
        ..RetryConfig::DEFAULT
    };
    let policy = retry_config.validate().expect("valid");
    let statuses = [
        (429, ErrorCategory::RateLimited),
        (500, ErrorCategory::ServiceUnavailable),
        (503, ErrorCategory::ServiceUnavailable),
        (404, ErrorCategory::ResourceNotFound),
        (401, ErrorCategory::Authentication),
    ];
    let configuration = config(json!({
        "config": { "max_attempts": 4, "initial_delay": 0.5, "max_delay": 8.0, "jitter_factor": 0.3 },
        "circuit_breaker": { "failure_threshold": 4, "failure_rate": 0.6, "minimum_calls": 5,
                             "window": 10.0, "cool_down": 5.0, "half_open_probes": 2 },
        "retry_budget": { "max_tokens": 8, "token_ratio": 0.5 },
        "include_attempt_count_in_response": true,
        "statuses": { "429": "RateLimited", "500": "ServiceUnavailableError",
                      "503": "ServiceUnavailableError", "404": "ResourceNotFoundError",
                      "401": "AuthenticationError" }
    }));
    let first = Proxy::start(&configuration).expect("starts");
    let key = first.guards_key().expect("guards");
    let mut workers = [first.worker(), first.worker()];
    drop(first);

    let mut breaker = CircuitBreaker::new(policy.breaker().expect("breaker"));
    let mut budget = RetryBudget::new(policy.budget().expect("budget")).expect("budget");
    let mut dice = Dice(2026);
    let (mut local_replies, mut probes, mut throttled, mut computed) = (0, 0, 0, 0);

    for step in 0..400 {
        let w = dice.below(2) as usize;
        let proxy = &mut workers[w];
        proxy.advance_ms(dice.below(1_800));
        let now = proxy.now_us();
        let pending = proxy.request(&[]);
        let seed = pending.started_ns ^ u64::from(pending.context.get());
        let started_us = pending.started_ns / 1_000;

        // The request, natively.
        let admission = breaker.admit(now);
        match admission {
            Admission::Rejected { retry_after_us } => {
                local_replies += 1;
                let reply = pending
                    .local_reply
                    .clone()
                    .unwrap_or_else(|| panic!("step {step}: expected a local reply"));
                assert_eq!(reply.status, 503, "step {step}");
                let expected = retry_after_seconds(retry_after_us).to_string();
                assert_eq!(
                    header(&reply.headers, "retry-after"),
                    Some(expected.as_str()),
                    "step {step}"
                );
                proxy.respond(pending, 0, &[]);
                continue;
            }
            Admission::Probe => probes += 1,
            Admission::Allowed => {}
        }
        assert_eq!(pending.local_reply, None, "step {step}: {admission:?}");
        let max_retries = if admission == Admission::Probe || !budget.can_retry() {
            if admission != Admission::Probe {
                throttled += 1;
            }
            0
        } else {
            policy.max_attempts() - 1
        };
        assert_eq!(
            pending.request_header("x-envoy-max-retries"),
            Some(max_retries.to_string().as_str()),
            "step {step}"
        );

        // Sometimes the client goes away before the response (a lost probe, for the breaker).
        if dice.below(12) == 0 {
            proxy.abandon(pending);
            continue;
        }

        // The response.
        proxy.advance_ms(dice.below(400));
        let now = proxy.now_us();
        let status = [200, 200, 200, 200, 503, 503, 429, 500, 404, 401][dice.below(10) as usize];
        let attempts = 1 + dice.below(u64::from(max_retries) + 1) as u32;
        let date = imf_fixdate(now / 1_000_000 + 7);
        let retry_after = match dice.below(4) {
            0 => None,
            1 => Some("3".to_string()),
            2 => Some(date),
            _ => Some("later".to_string()),
        };
        let attempts_text = attempts.to_string();
        let mut headers = vec![("x-envoy-attempt-count", attempts_text.as_str())];
        if let Some(v) = &retry_after {
            headers.push(("retry-after", v.as_str()));
        }
        let response = proxy.respond(pending, status, &headers);

        for _ in 1..attempts {
            breaker.record(false, now);
            budget.on_failure();
        }
        let mut call = RetryState::new(seed, started_us);
        let guards = Guards {
            breaker: Some(&mut breaker),
            budget: Some(&mut budget),
        };
        match statuses.iter().find(|(s, _)| *s == status) {
            Some(&(_, category)) => {
                let _ = call.on_failure(&policy, Failure::new(category), now, guards);
            }
            None => call.on_success(now, guards),
        }
        if status == 429 || status == 503 {
            let valid = retry_after
                .as_deref()
                .and_then(|v| parse_retry_after(v, now).map(|us| (v, us)));
            let expected = match valid {
                Some(("3", _)) => "3".to_string(),
                Some((_, us)) => retry_after_seconds(us).to_string(),
                None => {
                    computed += 1;
                    let mut us = policy.next_delay(1, seed, 0).delay_us;
                    if let BreakerState::Open { until_us } = breaker.state(now) {
                        us = us.max(until_us - now);
                    }
                    retry_after_seconds(us).to_string()
                }
            };
            assert_eq!(
                header(&response, "retry-after"),
                Some(expected.as_str()),
                "step {step}"
            );
        } else {
            assert_eq!(
                header(&response, "retry-after"),
                retry_after.as_deref(),
                "step {step}: left alone"
            );
        }

        // The shared state is byte for byte the native one.
        let mut native = breaker.to_bytes().to_vec();
        native.extend_from_slice(&budget.to_bytes());
        assert_eq!(proxy.shared_data(&key), Some(native), "step {step}");
    }
    // The scenario really went through every path.
    assert!(local_replies > 10, "{local_replies} local replies");
    assert!(probes > 3, "{probes} probes");
    assert!(throttled > 10, "{throttled} throttled");
    assert!(computed > 10, "{computed} computed Retry-After");
}

// ---------------------------------------------------------------------------------------------
// The example envoy.yaml and the size budget.

#[test]
fn envoy_yaml_names_the_filter_file_and_a_valid_plugin_configuration() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../envoy-filter/envoy.yaml");
    let text = std::fs::read_to_string(path).expect("envoy.yaml");
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("envoy.yaml is YAML");

    // Walk every HTTP filter of every listener.
    let listeners = doc["static_resources"]["listeners"]
        .as_sequence()
        .expect("listeners");
    let mut wasm = Vec::new();
    for listener in listeners {
        for chain in listener["filter_chains"]
            .as_sequence()
            .expect("filter_chains")
        {
            for filter in chain["filters"].as_sequence().expect("filters") {
                let hcm = &filter["typed_config"];
                let http_filters = hcm["http_filters"].as_sequence().expect("http_filters");
                let last = http_filters.last().expect("a router");
                assert_eq!(
                    last["typed_config"]["@type"].as_str(),
                    Some("type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"),
                    "the router comes last"
                );
                wasm.extend(http_filters.iter().filter(|f| {
                    f["typed_config"]["@type"].as_str()
                        == Some("type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm")
                }));
            }
        }
    }
    assert_eq!(wasm.len(), 1, "one wasm filter");
    let plugin = &wasm[0]["typed_config"]["config"];
    let file = plugin["vm_config"]["code"]["local"]["filename"]
        .as_str()
        .expect("filename");
    assert!(file.ends_with("/ricochet_envoy_filter.wasm"), "{file}");
    assert_eq!(
        plugin["vm_config"]["runtime"].as_str(),
        Some("envoy.wasm.runtime.v8")
    );
    let configuration = &plugin["configuration"];
    assert_eq!(
        configuration["@type"].as_str(),
        Some("type.googleapis.com/google.protobuf.StringValue")
    );
    let json = configuration["value"]
        .as_str()
        .expect("the plugin configuration");
    // The very configuration of the example starts the filter.
    let mut proxy = Proxy::start(json).unwrap_or_else(|r| panic!("{json}: {:?}", r.logs));
    let call = proxy.call(200, &[]);
    assert!(call.request_header("x-envoy-max-retries").is_some());
    // And the virtual host asks Envoy for the attempt count the filter reads, and the plugin
    // configuration says so (without it the filter ignores the header).
    assert!(text.contains("include_attempt_count_in_response: true"));
    assert!(json.contains("\"include_attempt_count_in_response\": true"));
}

#[test]
fn the_filter_is_within_the_size_budget() {
    let size = ricochet_envoy_filter_tests::filter_size();
    assert!(size <= 256 * 1024, "{size} bytes");
}
