//! Hostile upstreams and clients against the filter, in a real proxy-wasm host: headers that are
//! not UTF-8, an upstream that claims Envoy retried it, client headers that would override the
//! policy, and two plugin configurations for one service.

use std::sync::Arc;

use proxy_wasm_host::abi::v0_2_1::InMemoryStore;
use ricochet_envoy_filter_tests::{header, ManualClock, Proxy, T0_US};
use serde_json::{json, Value};

fn start(configuration: Value) -> Proxy {
    let text = configuration.to_string();
    Proxy::start(&text).unwrap_or_else(|r| panic!("{text} refused: {:?} {:?}", r.error, r.logs))
}

/// `pay/charge` with a breaker that opens after `threshold` consecutive failures (30 s), and a
/// budget; `extra` fields laid over it.
fn guarded(threshold: u32, extra: Value) -> Value {
    let mut c = json!({
        "service": "pay",
        "operation": "charge",
        "policy": "default",
        "circuit_breaker": { "failure_threshold": threshold, "failure_rate": 0.0,
                             "minimum_calls": 0, "window": 10.0, "cool_down": 30.0,
                             "half_open_probes": 1 },
        "retry_budget": { "max_tokens": 100, "token_ratio": 0.1 }
    });
    if let (Value::Object(c), Value::Object(e)) = (&mut c, extra) {
        c.extend(e);
    }
    c
}

/// Whether the next request is refused with the filter's own 503 (circuit open).
fn circuit_open(proxy: &mut Proxy) -> bool {
    let pending = proxy.request(&[]);
    let open = pending.local_reply.is_some();
    proxy.respond(pending, 200, &[]);
    open
}

/// Responses an upstream may send, each with one header the filter reads in bytes that are
/// not UTF-8 (or not a status at all).
const HOSTILE_RESPONSES: [(&str, &[(&[u8], &[u8])]); 6] = [
    (
        "retry-after: 1\\xE9",
        &[(b":status", b"503"), (b"retry-after", b"1\xE9")],
    ),
    (
        "retry-after: \\xFF\\xFE",
        &[(b":status", b"429"), (b"retry-after", b"\xFF\xFE")],
    ),
    (
        "x-envoy-attempt-count: \\xFF",
        &[(b":status", b"503"), (b"x-envoy-attempt-count", b"\xFF")],
    ),
    (
        "x-envoy-attempt-count: 2\\xC3",
        &[(b":status", b"503"), (b"x-envoy-attempt-count", b"2\xC3")],
    ),
    (":status: 50\\xFF", &[(b":status", b"50\xFF")]),
    (
        ":status: \\xC0\\x80 with retry-after: \\x80",
        &[(b":status", b"\xC0\x80"), (b"retry-after", b"\x80")],
    ),
];

/// The reviewer's crash: a 503 with `retry-after: 1\xE9` panicked the filter (the SDK's
/// `String::from_utf8(..).unwrap()`), and every later request on that VM trapped too. Every
/// header the filter reads is now read as bytes; what is not UTF-8 is "no such value".
#[test]
fn headers_that_are_not_utf8_neither_crash_the_filter_nor_the_next_request() {
    for attempt_count in [false, true] {
        let trust = if attempt_count {
            json!({ "include_attempt_count_in_response": true })
        } else {
            json!({})
        };
        let mut proxy = start(guarded(3, trust));
        for (what, headers) in HOSTILE_RESPONSES {
            let pending = proxy.request(&[]);
            assert_eq!(pending.local_reply, None, "{what}");
            let response = proxy.respond_bytes(pending, headers);
            // A 429 or 503 gets a Retry-After the filter computed itself, in delay-seconds;
            // another (or an unreadable) status is left alone.
            let pushback = headers
                .iter()
                .any(|(k, v)| *k == b":status" && (*v == b"503" || *v == b"429"));
            if pushback {
                let value = header(&response, "retry-after").unwrap_or_default();
                assert!(
                    !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()),
                    "{what}: retry-after {value:?}"
                );
            }
            // The next exchange on the same VM works.
            let next = proxy.call(200, &[]);
            assert_eq!(next.local_reply, None, "{what}: the next request");
            assert_eq!(next.request_header("x-envoy-max-retries"), Some("2"));
        }
        // The failures still counted (the unreadable attempt counts as one attempt, the
        // unreadable statuses as no failure): three 503s in a row open the breaker.
        for _ in 0..3 {
            let pending = proxy.request(&[]);
            proxy.respond_bytes(pending, HOSTILE_RESPONSES[2].1);
        }
        assert!(
            circuit_open(&mut proxy),
            "attempt count read: {attempt_count}"
        );
    }
}

/// A client may send anything too: request headers that are not UTF-8 are replaced or passed
/// through untouched, never read.
#[test]
fn request_headers_that_are_not_utf8_are_replaced_or_left_alone() {
    let mut proxy = start(guarded(3, json!({})));
    let pending = proxy.request_bytes(&[
        (b"x-envoy-max-retries", b"\xFF"),
        (b"x-envoy-retry-on", b"5xx\xC3"),
        (b"x-request-id", b"\xE9\xE9"),
    ]);
    assert_eq!(pending.request_header("x-envoy-max-retries"), Some("2"));
    assert_eq!(
        pending.request_header("x-envoy-retry-on"),
        Some("connect-failure,refused-stream,reset,retriable-status-codes")
    );
    proxy.respond(pending, 200, &[]);
    assert_eq!(proxy.call(200, &[]).local_reply, None);
}

/// Without `include_attempt_count_in_response` nothing says Envoy set `x-envoy-attempt-count`:
/// it is the upstream's word. One 200 carrying `10` used to count as nine failures and open a
/// threshold-5 breaker.
#[test]
fn the_upstreams_attempt_count_counts_only_when_envoy_is_said_to_set_it() {
    // Ten attempts allowed, so a claimed count of 10 is not clamped away.
    let ten = json!({ "max_attempts": 10 });
    let mut proxy = start(guarded(5, json!({ "config": ten })));
    proxy.call(200, &[("x-envoy-attempt-count", "10")]);
    assert!(!circuit_open(&mut proxy), "a 200 opened the breaker");
    // A 503 is one failure, whatever count it claims: four in a row leave it closed.
    for _ in 0..4 {
        proxy.call(503, &[("x-envoy-attempt-count", "10")]);
    }
    assert!(
        !circuit_open(&mut proxy),
        "four 503s opened a threshold-5 breaker"
    );

    // Configured to trust it (Envoy's `include_attempt_count_in_response: true` on the route,
    // which overwrites whatever the upstream sent), the count is Envoy's: nine failed
    // attempts before the 200.
    let mut proxy = start(guarded(
        5,
        json!({ "config": ten, "include_attempt_count_in_response": true }),
    ));
    proxy.call(200, &[("x-envoy-attempt-count", "10")]);
    assert!(circuit_open(&mut proxy));
}

/// Envoy honours more per-request retry headers than the three the filter sets: a client's
/// `x-envoy-retry-grpc-on` adds retry conditions, `x-envoy-hedge-on-per-try-timeout` sends a
/// second request while the first is still out, `x-envoy-retriable-header-names` adds
/// conditions on response headers. The filter owns them all: they are removed.
#[test]
fn client_headers_that_would_override_the_policy_are_removed() {
    let mut proxy = start(guarded(5, json!({})));
    let pending = proxy.request(&[
        (
            "x-envoy-retry-grpc-on",
            "cancelled,unavailable,resource-exhausted",
        ),
        ("x-envoy-hedge-on-per-try-timeout", "true"),
        ("x-envoy-retriable-header-names", "x-upstream-busy"),
        ("x-envoy-max-retries", "99"),
        ("x-envoy-retry-on", "5xx,gateway-error"),
        ("x-envoy-retriable-status-codes", "400,401,404"),
        ("x-envoy-upstream-rq-per-try-timeout-ms", "1"),
        ("x-request-id", "kept"),
    ]);
    for removed in [
        "x-envoy-retry-grpc-on",
        "x-envoy-hedge-on-per-try-timeout",
        "x-envoy-retriable-header-names",
        "x-envoy-upstream-rq-per-try-timeout-ms",
    ] {
        assert_eq!(pending.request_header(removed), None, "{removed}");
    }
    assert_eq!(pending.request_header("x-envoy-max-retries"), Some("2"));
    assert_eq!(
        pending.request_header("x-envoy-retriable-status-codes"),
        Some("429,502,503,504")
    );
    assert_eq!(pending.request_header("x-request-id"), Some("kept"));
}

/// Two plugin configurations for one service (another listener, another route) used to share
/// one shared-data key: each write replaced the other's guards as "another configuration", so
/// neither breaker ever opened — thresholds 3 and 4 on `pay`, 40 alternating 503s, 0 circuit-open
/// replies (37 with one plugin). The key now carries a hash of the guard configuration.
#[test]
fn two_plugins_for_one_service_keep_their_own_guards() {
    let clock = Arc::new(ManualClock::default());
    clock.set_us(T0_US);
    let store = Arc::new(InMemoryStore::new());
    let open = |threshold| {
        Proxy::start_on(
            &guarded(threshold, json!({})).to_string(),
            clock.clone(),
            store.clone(),
        )
        .expect("starts")
    };
    let mut plugins = [open(3), open(4)];
    let mut refused = [0, 0];
    for i in 0..40 {
        let p = i % 2;
        let call = plugins[p].call(503, &[]);
        refused[p] += usize::from(call.local_reply.is_some());
    }
    // Each breaker opens at its own threshold: 20 − 3 and 20 − 4 calls refused.
    assert_eq!(refused, [17, 16]);
    let keys: Vec<_> = plugins.iter().map(|p| p.guards_key()).collect();
    assert!(keys[0].is_some() && keys[0] != keys[1], "{keys:?}");

    // The same configuration on another worker (or listener) still shares the breaker.
    let mut other_worker = plugins[0].worker();
    assert_eq!(other_worker.guards_key(), keys[0]);
    assert!(circuit_open(&mut other_worker));
}
