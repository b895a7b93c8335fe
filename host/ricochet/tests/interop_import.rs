//! Envoy route configs and gRPC service configs imported as ricochet policies, through the
//! policy file and back; unsupported fields named; a policy exported as an Envoy retry_policy.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use ricochet::config_file::PolicyFile;
use ricochet::interop::{
    export_envoy, import_envoy, import_grpc_service_config, Document, Imported,
};
use ricochet_core::{CategorySet, ErrorCategory as C, JitterStrategy, RetryConfig};

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data")
        .join(path)
}

fn document(path: &str) -> Document {
    let file = data(path);
    let text = std::fs::read_to_string(&file).unwrap();
    Document::parse(&file.display().to_string(), &text).unwrap()
}

/// Writes the import as a policy file, loads it as `ricochet check` would, and returns the
/// resolved policies: what a user of the file gets.
fn through_policy_file(imported: &Imported) -> PolicyFile {
    let text = imported.to_policy_file();
    let file = PolicyFile::parse(Path::new("imported.yaml"), &text)
        .unwrap_or_else(|e| panic!("the written policy file does not load: {e}\n{text}"));
    for (name, p) in &imported.policies {
        assert_eq!(
            file.get(name).unwrap(),
            p.config.apply(RetryConfig::default()),
            "{name} did not round-trip"
        );
    }
    assert_eq!(file.policies().len(), imported.policies.len());
    file
}

fn set(categories: &[C]) -> CategorySet {
    categories
        .iter()
        .fold(CategorySet::EMPTY, |s, &c| s.with(c))
}

fn has_note(imported: &Imported, fragment: &str) -> bool {
    imported
        .notes
        .iter()
        .any(|n| n.to_string().contains(fragment))
}

#[test]
fn a_bare_envoy_retry_policy() {
    let imported = import_envoy(&document("envoy/retry-policy.yaml")).unwrap();
    let file = through_policy_file(&imported);
    let p = file.get("envoy").unwrap();
    assert_eq!(p.max_attempts, 4, "num_retries 3 + the first call");
    assert_eq!((p.initial_delay, p.max_delay), (0.1, 2.0));
    assert_eq!(p.exponential_base, 2.0);
    assert_eq!(p.strategy, JitterStrategy::Full);
    // 503 is throttling to ricochet when it says when to come back: RateLimited is in too.
    assert_eq!(
        p.retry_on,
        set(&[
            C::ServiceUnavailable,
            C::Timeout,
            C::Connection,
            C::RateLimited
        ])
    );
    assert_eq!(p.max_retry_after, 60.0, "ricochet's default stays");
    assert_eq!(
        imported.policies["envoy"].attempt_timeout,
        Some(Duration::from_millis(500))
    );
    assert!(
        has_note(&imported, "per_try_timeout 0.5s"),
        "{:?}",
        imported.notes
    );
    assert!(
        has_note(&imported, "also retries these transient failures"),
        "500 is ServiceUnavailable too"
    );
    assert!(
        imported.to_policy_file().contains("# note: "),
        "notes are written into the file"
    );
}

#[test]
fn rate_limited_retries_with_reset_headers() {
    let imported = import_envoy(&document("envoy/rate-limited.yaml")).unwrap();
    let p = through_policy_file(&imported).get("envoy").unwrap();
    assert_eq!(p.max_attempts, 6);
    assert_eq!(p.max_retry_after, 300.0, "max_interval");
    assert_eq!(
        p.retry_on,
        set(&[C::RateLimited]),
        "429 and 503 are throttling"
    );
    assert_eq!(
        (p.initial_delay, p.max_delay),
        (0.025, 0.25),
        "Envoy's default back-off"
    );
}

#[test]
fn a_whole_bootstrap_gives_one_policy_per_retry_policy() {
    let imported = import_envoy(&document("envoy/bootstrap.yaml")).unwrap();
    let file = through_policy_file(&imported);
    let names: Vec<&String> = imported.policies.keys().collect();
    assert_eq!(names, ["api", "api//reports", "api/orders", "grpc//"]);
    let orders = file.get("api/orders").unwrap();
    assert_eq!(orders.max_attempts, 5);
    assert_eq!(
        orders.max_elapsed,
        Some(10.0),
        "the route's timeout covers the retries"
    );
    assert_eq!((orders.initial_delay, orders.max_delay), (0.05, 1.0));
    assert_eq!(
        imported.policies["api/orders"].attempt_timeout,
        Some(Duration::from_secs(2))
    );
    assert_eq!(
        orders.retry_on,
        set(&[
            C::Connection,
            C::Timeout,
            C::ServiceUnavailable,
            C::RateLimited
        ])
    );
    assert_eq!(
        file.get("api//reports").unwrap().max_elapsed,
        None,
        "timeout 0s: none"
    );
    let vhost = file.get("api").unwrap();
    assert_eq!(vhost.max_attempts, 3);
    let grpc = file.get("grpc//").unwrap();
    assert_eq!(
        grpc.retry_on,
        set(&[
            C::ServiceUnavailable,
            C::Connection,
            C::RateLimitExceeded,
            C::Timeout
        ])
    );
    assert_eq!(
        (grpc.initial_delay, grpc.max_delay),
        (0.1, 1.0),
        "max_interval: 10 × base"
    );
}

#[test]
fn a_route_configuration_in_json() {
    let imported = import_envoy(&document("envoy/route-config.json")).unwrap();
    let file = through_policy_file(&imported);
    let p = file.get("payments/charge").unwrap();
    assert_eq!(p.max_attempts, 3);
    assert_eq!(p.max_elapsed, Some(30.0));
    assert_eq!(p.max_retry_after, 60.0);
    assert_eq!((p.initial_delay, p.max_delay), (0.25, 4.0));
    assert_eq!(
        imported.policies["payments/charge"].attempt_timeout,
        Some(Duration::from_millis(3500)),
        "{{seconds, nanos}}"
    );
}

#[test]
fn the_envoy_filters_own_example_imports() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guests/envoy-filter/envoy.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let imported = import_envoy(&Document::parse("envoy.yaml", &text).unwrap()).unwrap();
    let p = through_policy_file(&imported).get("payments//").unwrap();
    assert_eq!(
        (p.initial_delay, p.max_delay, p.max_retry_after),
        (0.1, 10.0, 60.0)
    );
    assert_eq!(p.max_elapsed, Some(15.0));
    assert!(
        has_note(&imported, "no retry_on"),
        "the filter sets it per request"
    );
}

#[test]
fn unsupported_envoy_fields_are_named_with_their_lines() {
    let doc = document("envoy/unsupported.yaml");
    let errors = import_envoy(&doc).unwrap_err();
    let text = errors.to_string();
    for (field, line) in [
        ("hedge_policy", 5),
        ("retriable-headers", 13),
        ("retry_host_predicate", 14),
        ("host_selection_retry_max_attempts", 16),
        ("retriable_headers", 17),
        ("sometimes", 24),
    ] {
        let error = errors
            .0
            .iter()
            .find(|e| e.to_string().contains(field))
            .unwrap_or_else(|| panic!("{field} not named in:\n{text}"));
        assert_eq!(error.line, Some(line), "{field}: {error}");
        assert!(error.to_string().contains("unsupported.yaml:"), "{error}");
    }
    // retriable-4xx is 409, a BusinessLogicError: importing it would retry 402, 405, …
    assert!(
        text.contains("BusinessLogicErrors would also retry 400")
            || text.contains("would also retry 402"),
        "{text}"
    );
}

#[test]
fn the_a6_example_service_config() {
    let imported = import_grpc_service_config(&document("grpc/a6-service-config.json")).unwrap();
    let p = through_policy_file(&imported)
        .get("EchoService/Echo")
        .unwrap();
    assert_eq!(p.max_attempts, 4);
    assert_eq!(
        (p.initial_delay, p.max_delay, p.exponential_base),
        (0.1, 1.0, 2.0)
    );
    assert_eq!(
        p.strategy,
        JitterStrategy::Full,
        "A6: random(0, min(initial·mult^(n−1), max))"
    );
    assert_eq!(p.retry_on, set(&[C::ServiceUnavailable, C::Connection]));
    let budget = p.retry_budget.unwrap();
    assert_eq!((budget.max_tokens, budget.token_ratio), (10, 0.1));
    assert!(
        has_note(&imported, "loadBalancingPolicy"),
        "{:?}",
        imported.notes
    );
}

#[test]
fn a_service_wide_config_with_timeouts() {
    let imported = import_grpc_service_config(&document("grpc/echo-service-config.json")).unwrap();
    let p = through_policy_file(&imported)
        .get("grpc.examples.echo.Echo")
        .unwrap();
    assert_eq!(p.exponential_base, 1.5);
    assert_eq!(
        p.max_elapsed,
        Some(5.0),
        "the deadline covers every attempt"
    );
    assert_eq!(
        p.retry_on,
        set(&[C::ServiceUnavailable, C::Connection, C::RateLimitExceeded])
    );
    assert_eq!(
        imported.policies["grpc.examples.echo.Echo"].attempt_timeout,
        Some(Duration::from_secs(1))
    );
    assert!(has_note(&imported, "waitForReady"));
}

#[test]
fn several_method_configs_a_default_and_numeric_codes() {
    let imported = import_grpc_service_config(&document("grpc/multi-method.json")).unwrap();
    let file = through_policy_file(&imported);
    let names: Vec<&String> = imported.policies.keys().collect();
    assert_eq!(
        names,
        [
            "grpc-default",
            "shop.Inventory/Release",
            "shop.Inventory/Reserve"
        ]
    );
    assert_eq!(file.get("grpc-default").unwrap().max_attempts, 3);
    let reserve = file.get("shop.Inventory/Reserve").unwrap();
    assert_eq!(reserve.max_attempts, 7);
    assert_eq!(reserve.max_elapsed, Some(3.0));
    assert_eq!(
        reserve.retry_on,
        set(&[C::ServiceUnavailable, C::Connection, C::Timeout])
    );
    assert_eq!(reserve.retry_budget.unwrap().max_tokens, 100);
    assert!(has_note(&imported, "gRPC clients cap maxAttempts at 5"));
    assert!(has_note(&imported, "no retryPolicy"), "shop.Audit has none");
}

#[test]
fn hedging_and_lumped_codes_are_errors() {
    let errors = import_grpc_service_config(&document("grpc/unsupported.json")).unwrap_err();
    let text = errors.to_string();
    assert!(
        text.contains("hedgingPolicy: ricochet does not hedge"),
        "{text}"
    );
    assert!(
        text.contains("ABORTED") || text.contains("BusinessLogicError"),
        "{text}"
    );
    assert!(
        text.contains("INTERNAL"),
        "the codes ABORTED would drag in are named: {text}"
    );
    assert!(
        text.contains("max_tokens must be"),
        "maxTokens 5000 is beyond A6's 1000: {text}"
    );
    let hedging = errors
        .0
        .iter()
        .find(|e| e.path.ends_with("hedgingPolicy"))
        .unwrap();
    assert_eq!(hedging.line, Some(5));
}

#[test]
fn hostile_documents_are_errors_not_panics() {
    for (name, text) in [
        ("a.json", "{"),
        ("a.json", "[1, 2, 3]"),
        ("a.json", r#"{"retry_on": 5, "num_retries": -1}"#),
        ("a.json", r#"{"retry_on": "5xx", "num_retries": 1e300}"#),
        ("a.json", r#"{"retry_on": "5xx", "per_try_timeout": "-1s"}"#),
        (
            "a.json",
            r#"{"retry_on": "5xx", "per_try_timeout": "1e9999s"}"#,
        ),
        (
            "a.json",
            r#"{"retry_on": "5xx", "retry_back_off": {"base_interval": "0s"}}"#,
        ),
        (
            "a.json",
            r#"{"retry_on": "5xx", "retry_back_off": {"base_interval": "2s", "max_interval": "1s"}}"#,
        ),
        (
            "a.json",
            r#"{"retry_on": "5xx", "retriable_status_codes": [999]}"#,
        ),
        ("a.json", r#"{"retry_on": "5xx", "num_retries": 5000}"#),
        ("a.yaml", "retry_on: [5xx]"),
        ("a.yaml", "\u{0}\u{1}"),
    ] {
        let result = Document::parse(name, text).and_then(|d| import_envoy(&d));
        let errors = result.expect_err(text);
        assert!(!errors.0.is_empty());
    }
    let huge = "x".repeat(2 << 20);
    assert!(Document::parse("big.yaml", &huge).is_err());
    for text in [
        r#"{"methodConfig": [{"name": [{"service": "s"}], "retryPolicy": {"maxAttempts": 1, "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#,
        r#"{"methodConfig": [{"name": [{"service": "s"}], "retryPolicy": {"maxAttempts": 3, "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": 0.5, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#,
        r#"{"methodConfig": [{"name": [{"service": "s"}], "retryPolicy": {"maxAttempts": 3, "initialBackoff": "2s", "maxBackoff": "1s", "backoffMultiplier": 2, "retryableStatusCodes": ["NOPE"]}}]}"#,
        r#"{"methodConfig": [{"name": [{"service": "s"}], "retryPolicy": {"maxAttempts": 3}}]}"#,
        r#"{"methodConfig": [{"name": [{"method": "m"}], "retryPolicy": {}}]}"#,
    ] {
        let errors = Document::parse("c.json", text)
            .and_then(|d| import_grpc_service_config(&d))
            .expect_err(text);
        assert!(!errors.0.is_empty());
    }
}

#[test]
fn strict_turns_notes_into_errors() {
    let imported = import_envoy(&document("envoy/retry-policy.yaml")).unwrap();
    let errors = imported.strict().unwrap_err();
    assert!(
        errors.to_string().contains("not exact: per_try_timeout"),
        "{errors}"
    );
}

#[test]
fn an_exported_policy_imports_back_to_the_same_retries() {
    let config = RetryConfig {
        max_attempts: 5,
        initial_delay: 0.2,
        max_delay: 3.0,
        max_retry_after: 45.0,
        strategy: JitterStrategy::Full,
        ..RetryConfig::default()
    };
    let export = export_envoy(&config, Some(Duration::from_millis(1500))).unwrap();
    let rp = &export.retry_policy;
    assert_eq!(rp["num_retries"], 4);
    assert_eq!(rp["retry_back_off"]["base_interval"], "0.2s");
    assert_eq!(rp["retry_back_off"]["max_interval"], "3s");
    assert_eq!(rp["rate_limited_retry_back_off"]["max_interval"], "45s");
    assert_eq!(rp["per_try_timeout"], "1.5s");
    let codes: Vec<u64> = rp["retriable_status_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    for status in [429, 500, 502, 503, 504] {
        assert!(codes.contains(&status), "{status} in {codes:?}");
    }
    for status in [400, 401, 404, 409] {
        assert!(!codes.contains(&status), "{status} in {codes:?}");
    }
    assert!(export
        .notes
        .iter()
        .any(|n| n.path == "coordination_enabled"));

    let text = serde_json::to_string(rp).unwrap();
    let imported = import_envoy(&Document::parse("exported.json", &text).unwrap()).unwrap();
    let back = through_policy_file(&imported).get("envoy").unwrap();
    assert_eq!(back.max_attempts, config.max_attempts);
    assert_eq!((back.initial_delay, back.max_delay), (0.2, 3.0));
    assert_eq!(back.max_retry_after, 45.0);
    assert_eq!(back.strategy, JitterStrategy::Full);
    assert_eq!(back.retry_on, config.retry_on, "the same categories");
    assert_eq!(
        imported.policies["envoy"].attempt_timeout,
        Some(Duration::from_millis(1500))
    );
}

#[test]
fn export_refuses_what_envoy_cannot_take() {
    let zero = RetryConfig {
        initial_delay: 0.0,
        ..RetryConfig::default()
    };
    let error = export_envoy(&zero, None).unwrap_err().to_string();
    assert!(
        error.contains("initial_delay") && error.contains("base_interval"),
        "{error}"
    );
    let invalid = RetryConfig {
        jitter_factor: 1.5,
        ..RetryConfig::default()
    };
    let error = export_envoy(&invalid, None).unwrap_err().to_string();
    assert!(error.contains("jitter_factor"), "{error}");
    let strict = export_envoy(&RetryConfig::default(), None)
        .unwrap()
        .strict();
    assert!(
        strict.is_err(),
        "the default policy's slots and jitter are notes"
    );
}

fn envoy_error(name: &str, text: &str) -> String {
    Document::parse(name, text)
        .and_then(|d| import_envoy(&d))
        .expect_err(text)
        .to_string()
}

fn grpc_error(name: &str, text: &str) -> String {
    Document::parse(name, text)
        .and_then(|d| import_grpc_service_config(&d))
        .expect_err(text)
        .to_string()
}

/// A gRPC service config with one retry policy for service `s`, `fields` added to it.
fn retry_policy_with(fields: &str) -> String {
    format!(
        r#"{{"methodConfig": [{{"name": [{{"service": "s"}}], "retryPolicy": {{"initialBackoff": "1s", "maxBackoff": "2s", "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"], {fields}}}}}]}}"#
    )
}

#[test]
fn a_key_given_twice_is_an_error_naming_it() {
    // Neither the first nor the last value may win quietly.
    let error = envoy_error(
        "r.json",
        r#"{"retry_on": "5xx", "num_retries": 3, "num_retries": 0}"#,
    );
    assert!(
        error.contains("duplicate") && error.contains("num_retries"),
        "{error}"
    );
    let error = grpc_error(
        "c.yaml",
        "methodConfig:\n- name: [{service: s}]\n  retryPolicy:\n    maxAttempts: 3\n    maxAttempts: 9\n    initialBackoff: 1s\n    maxBackoff: 2s\n    backoffMultiplier: 2\n    retryableStatusCodes: [UNAVAILABLE]\n",
    );
    assert!(
        error.contains("duplicate") && error.contains("maxAttempts"),
        "{error}"
    );
    assert!(
        error.starts_with("c.yaml:4") && error.contains("methodConfig[0].retryPolicy"),
        "the map's line and path: {error}"
    );
}

#[test]
fn out_of_range_numbers_are_named_as_given() {
    // 2^32 attempts is not "fewer than 2"; 2^40 tokens is not u32::MAX.
    let error = grpc_error("c.json", &retry_policy_with(r#""maxAttempts": 4294967296"#));
    assert!(
        error.contains("maxAttempts: 4294967296") && !error.contains("at least 2"),
        "{error}"
    );
    let throttled = format!(
        r#"{{"retryThrottling": {{"maxTokens": 1099511627776, "tokenRatio": 0.1}}, {}"#,
        &retry_policy_with(r#""maxAttempts": 3"#)[1..]
    );
    let error = grpc_error("c.json", &throttled);
    assert!(error.contains("1099511627776"), "{error}");
    assert!(!error.contains("4294967295"), "{error}");
}

#[test]
fn a_method_named_by_two_method_configs_is_an_error() {
    // gRPC rejects a service config that names a method twice, whether or not the first
    // entry has a retryPolicy: importing the second would retry what gRPC never runs.
    let text = r#"{"methodConfig": [
        {"name": [{"service": "s", "method": "M"}], "timeout": "1s"},
        {"name": [{"service": "s", "method": "M"}], "retryPolicy": {"maxAttempts": 3, "initialBackoff": "1s", "maxBackoff": "2s", "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}
    ]}"#;
    let error = grpc_error("c.json", text);
    assert!(
        error.contains("s/M") && error.contains("two methodConfigs"),
        "{error}"
    );
}

#[test]
fn durations_finer_than_a_nanosecond_are_errors() {
    // Protobuf JSON durations carry at most nine fractional digits: a tenth digit is not a
    // duration, and must not quietly become zero (no timeout at all) or lose its tail.
    let error = envoy_error(
        "r.json",
        r#"{"retry_on": "5xx", "per_try_timeout": "0.0000000001s"}"#,
    );
    assert!(
        error.contains("per_try_timeout") && error.contains("0.0000000001s"),
        "{error}"
    );
    for (field, text) in [
        (
            "timeout",
            r#"{"methodConfig": [{"name": [{"service": "s"}], "timeout": "0.0000000001s", "retryPolicy": {"maxAttempts": 3, "initialBackoff": "1s", "maxBackoff": "2s", "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#.to_string(),
        ),
        (
            "perAttemptRecvTimeout",
            retry_policy_with(r#""maxAttempts": 3, "perAttemptRecvTimeout": "1.0000000001s""#),
        ),
    ] {
        let error = grpc_error("c.json", &text);
        assert!(
            error.contains(field) && error.contains("0000000001s"),
            "{error}"
        );
    }
}

#[test]
fn a_token_ratio_with_more_than_three_decimals_is_an_error() {
    // A6: "Up to 3 decimal places are supported"; a gRPC client would not use 0.1234.
    let throttled = |ratio: &str| {
        format!(
            r#"{{"retryThrottling": {{"maxTokens": 10, "tokenRatio": {ratio}}}, {}"#,
            &retry_policy_with(r#""maxAttempts": 3"#)[1..]
        )
    };
    let error = grpc_error("c.json", &throttled("0.1234"));
    assert!(
        error.contains("tokenRatio") && error.contains("0.1234"),
        "{error}"
    );
    for ratio in ["0.1", "0.123", "2.5"] {
        let doc = Document::parse("c.json", &throttled(ratio)).unwrap();
        let imported = import_grpc_service_config(&doc).unwrap();
        let budget = imported.policies["s"].config.retry_budget.unwrap();
        assert_eq!(budget.token_ratio.to_string(), ratio);
    }
}

#[test]
fn keys_with_line_breaks_stay_inside_the_comments() {
    // A path or note holding a line break must not end its comment in the policy file.
    let text = "virtual_hosts:\n- name: v\n  routes:\n  - match: {prefix: /}\n    \"x\\nretry_policies: {}\\n\\u2028y\": {retry_policy: {retry_on: 5xx}}\n";
    let imported = import_envoy(&Document::parse("r.yaml", text).unwrap()).unwrap();
    let file = through_policy_file(&imported);
    assert_eq!(file.get("v//").unwrap().max_attempts, 2);
}

#[test]
fn a_bad_field_is_reported_once_not_also_as_missing() {
    // The field is there; what is wrong is its value, and that is all the error says.
    let error = grpc_error("c.json", &retry_policy_with(r#""maxAttempts": 1"#));
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(error.contains("maxAttempts: 1: A6 requires"), "{error}");
    let throttled = format!(
        r#"{{"retryThrottling": {{"maxTokens": -1, "tokenRatio": 0.1}}, {}"#,
        &retry_policy_with(r#""maxAttempts": 3"#)[1..]
    );
    let error = grpc_error("c.json", &throttled);
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(error.contains("retryThrottling.maxTokens"), "{error}");
}

#[test]
fn export_never_rounds_a_positive_duration_to_zero() {
    // Envoy reads `0s` as "none" (a per-try timeout) or refuses it (a base interval): a
    // positive value is written to the nanosecond, and never as zero.
    let config = RetryConfig {
        initial_delay: 0.0000001,
        max_delay: 0.0000001,
        ..RetryConfig::default()
    };
    let export = export_envoy(&config, Some(Duration::from_nanos(1))).unwrap();
    let rp = &export.retry_policy;
    assert_eq!(rp["retry_back_off"]["base_interval"], "0.0000001s");
    assert_eq!(rp["retry_back_off"]["max_interval"], "0.0000001s");
    assert_eq!(rp["per_try_timeout"], "0.000000001s");
    let text = serde_json::to_string(rp).unwrap();
    let back = import_envoy(&Document::parse("exported.json", &text).unwrap()).unwrap();
    assert_eq!(
        back.policies["envoy"].attempt_timeout,
        Some(Duration::from_nanos(1))
    );
}

#[test]
fn a_megabyte_of_bad_keys_is_answered_at_once() {
    // Each error's line is found by reading the document: every one of 100 000 of them took
    // minutes. The first hundred are described, the rest counted.
    let mut text = String::from("retry_on: 5xx\n");
    let mut keys = 0;
    while text.len() < ricochet::interop::MAX_DOCUMENT_BYTES - 32 {
        text.push_str(&format!("k{keys}: 1\n"));
        keys += 1;
    }
    let started = std::time::Instant::now();
    let errors = Document::parse("keys.yaml", &text)
        .and_then(|d| import_envoy(&d))
        .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(errors.0.len(), ricochet::interop::MAX_SHOWN_ERRORS + 1);
    assert_eq!(errors.0[0].line, Some(2), "{}", errors.0[0]);
    assert!(errors.0[0]
        .message
        .contains("unknown retry_policy field `k0`"));
    let last = errors.0.last().unwrap().to_string();
    assert!(
        last.contains(&format!("and {} more errors", keys - 100)),
        "{last}"
    );
    // A hang guard, not a performance target: well under a second now, minutes before.
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
}

#[test]
fn a_megabyte_of_routes_of_one_name_is_answered_at_once() {
    // Each policy of a name already taken tried every suffix before its own: 15 000 routes
    // named alike took 17 s in release.
    let mut text = String::from(r#"{"virtual_hosts": [{"name": "v", "routes": ["#);
    let mut routes = 0;
    while text.len() < ricochet::interop::MAX_DOCUMENT_BYTES - 200 {
        if routes > 0 {
            text.push(',');
        }
        text.push_str(
            r#"{"name": "r", "match": {}, "route": {"retry_policy": {"retry_on": "5xx"}}}"#,
        );
        routes += 1;
    }
    text.push_str("]}]}");
    let started = std::time::Instant::now();
    let imported = import_envoy(&Document::parse("routes.json", &text).unwrap()).unwrap();
    let elapsed = started.elapsed();
    assert_eq!(imported.policies.len(), routes);
    assert!(imported.policies.contains_key("v/r"));
    assert!(imported.policies.contains_key(&format!("v/r#{routes}")));
    // A hang guard, not a performance target (the machine may be loaded): about a second in
    // a test build, 41-52 s before.
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
}

#[test]
fn errors_and_notes_print_no_raw_control_characters() {
    // A key of the document is part of a path and of a message: on a terminal, `ESC[2J` would
    // clear the screen and a line break would forge a line of the report.
    let text = "{\"retry_on\": \"5xx\", \"\\u001b[2J\\nfake: line\": 1}";
    let errors = Document::parse("r.json", text)
        .and_then(|d| import_envoy(&d))
        .unwrap_err();
    let shown = errors.to_string();
    assert!(!shown.chars().any(char::is_control), "{shown:?}");
    assert!(shown.contains("\\u{1b}[2J\\nfake: line"), "{shown}");
    let text = "virtual_hosts:\n- name: v\n  routes:\n  - match: {prefix: /}\n    \"\\e[31m\\u202e\": {retry_policy: {retry_on: 5xx}}\n";
    let imported = import_envoy(&Document::parse("r.yaml", text).unwrap()).unwrap();
    for note in &imported.notes {
        let shown = note.to_string();
        assert!(
            !shown.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "{shown:?}"
        );
    }
}

#[test]
fn a_status_below_400_that_envoy_retries_is_a_note() {
    // Envoy retries any listed status, a 302 too; to ricochet it is a success. Fewer retries
    // than the source are a note, never a silent drop.
    let text = r#"{"retry_on": "retriable-status-codes", "retriable_status_codes": [302, 503]}"#;
    let imported = import_envoy(&Document::parse("r.json", text).unwrap()).unwrap();
    assert!(
        imported
            .notes
            .iter()
            .any(|n| n.message.contains("302") && n.message.contains("ricochet does not")),
        "{:?}",
        imported.notes
    );
}

#[test]
fn an_authentication_failure_retried_by_the_source_is_a_note() {
    // gRPC retries a listed UNAUTHENTICATED (Envoy a listed 401) up to every attempt; ricochet
    // retries it once, and only after a token refresh: a translation that is not exact.
    let doc = Document::parse(
        "c.json",
        r#"{"methodConfig": [{"name": [{"service": "s"}], "retryPolicy": {"maxAttempts": 3, "initialBackoff": "1s", "maxBackoff": "2s", "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE", "UNAUTHENTICATED"]}}]}"#,
    )
    .unwrap();
    let imported = import_grpc_service_config(&doc).unwrap();
    assert!(has_note(&imported, "token refresh"), "{:?}", imported.notes);
    let doc = Document::parse(
        "r.json",
        r#"{"retry_on": "retriable-status-codes", "retriable_status_codes": [401, 503]}"#,
    )
    .unwrap();
    let imported = import_envoy(&doc).unwrap();
    assert!(has_note(&imported, "token refresh"), "{:?}", imported.notes);
}

#[test]
fn absurd_values_are_errors_naming_their_field() {
    // Each error names the field it is about (and, where it is one, the value).
    for (fields, named) in [
        (r#""maxAttempts": 0"#, "maxAttempts: 0"),
        (r#""maxAttempts": 3.5"#, "maxAttempts: 3.5"),
        (r#""maxAttempts": "three""#, "maxAttempts: \"three\""),
        (
            r#""maxAttempts": 3, "perAttemptRecvTimeout": "-0s""#,
            "\"-0s\"",
        ),
        (
            r#""maxAttempts": 3, "perAttemptRecvTimeout": "1e30s""#,
            "\"1e30s\"",
        ),
        (
            r#""maxAttempts": 3, "perAttemptRecvTimeout": "5""#,
            "\"5\" is not a duration",
        ),
        (
            r#""maxAttempts": 3, "perAttemptRecvTimeout": 5"#,
            "perAttemptRecvTimeout: expected a duration",
        ),
        (
            r#""maxAttempts": 3, "hedge": true"#,
            "unknown retryPolicy field `hedge`",
        ),
    ] {
        let error = grpc_error("c.json", &retry_policy_with(fields));
        assert!(error.contains(named), "{fields}: {error}");
    }
    let base = |multiplier: &str| {
        format!(
            r#"{{"methodConfig": [{{"name": [{{"service": "s"}}], "retryPolicy": {{"maxAttempts": 3, "initialBackoff": "1s", "maxBackoff": "2s", "backoffMultiplier": {multiplier}, "retryableStatusCodes": ["UNAVAILABLE"]}}}}]}}"#
        )
    };
    for multiplier in ["0", "-2", "\"2\"", "null"] {
        let error = grpc_error("c.json", &base(multiplier));
        assert!(error.contains("backoffMultiplier"), "{multiplier}: {error}");
    }
    let yaml = "methodConfig:\n- name: [{service: s}]\n  retryPolicy: {maxAttempts: .nan, initialBackoff: 1s, maxBackoff: 2s, backoffMultiplier: .inf, retryableStatusCodes: [UNAVAILABLE]}\n";
    let error = grpc_error("c.yaml", yaml);
    assert!(
        error.contains("maxAttempts: NaN") && error.contains("backoffMultiplier: inf"),
        "{error}"
    );
    // Nesting past the parsers' depth, and YAML aliases that multiply: errors, not a stack
    // overflow or a billion nodes.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(grpc_error("c.json", &deep).contains("recursion limit"));
    assert!(grpc_error("c.yaml", &deep).contains("recursion limit"));
    let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (name, prev) in ["b", "c", "d", "e", "f", "g", "h", "i"]
        .iter()
        .zip(["a", "b", "c", "d", "e", "f", "g", "h"])
    {
        laughs.push_str(&format!(
            "{name}: &{name} [{}]\n",
            vec![format!("*{prev}"); 10].join(", ")
        ));
    }
    assert!(grpc_error("c.yaml", &laughs).contains("repetition limit"));
}
