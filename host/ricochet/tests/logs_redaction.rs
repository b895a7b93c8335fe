//! What reaches the logs (issue 15): no secrets from error text, W3C trace ids, and the
//! operational warnings that used to be dropped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ricochet::logging::{CapturedLines, SeedJsonLayer};
use ricochet::reload::ReloadablePolicy;
use ricochet::{Classification, ErrorCategory, RetryConfig, RetryPolicy};
use serde_json::Value;

/// An error whose text carries what a careless client puts in one.
#[derive(Debug)]
struct Leaky;

impl std::fmt::Display for Leaky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "error sending request for url (https://svc:pa55word@api.example/v1/acct-4242?api_key=SECRET123&page=2): \
             Authorization: Bearer eyJtoken.abc.def rejected",
        )
    }
}

/// The log lines of this test binary. A global subscriber, installed by each test before it
/// logs anything: a thread-local one (`set_default`) can miss events when another test thread
/// registers a callsite at the same moment (tracing caches a callsite's interest). Each test
/// reads the lines of its own service.
fn captured() -> &'static CapturedLines {
    static LINES: OnceLock<CapturedLines> = OnceLock::new();
    LINES.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let lines = CapturedLines::default();
        let subscriber = tracing_subscriber::registry().with(SeedJsonLayer::new(lines.clone()));
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        lines
    })
}

/// The lines whose `key` is `value`.
fn lines_where(key: &str, value: &str) -> Vec<Value> {
    captured()
        .lines()
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l[key] == value)
        .collect()
}

async fn fail_twice(policy: &RetryPolicy, service: &str) {
    policy
        .execute_classified(
            || async { Err::<(), _>(Leaky) },
            service,
            "fetch",
            |_: &Leaky| Classification::new(ErrorCategory::ServiceUnavailable),
        )
        .await
        .unwrap_err();
}

const SECRETS: [&str; 3] = ["pa55word", "SECRET123", "eyJtoken"];

#[tokio::test(start_paused = true)]
async fn secrets_in_error_text_never_reach_a_line_or_the_notify_hook() {
    captured();
    let notified = Arc::new(Mutex::new(Vec::new()));
    let seen = notified.clone();
    let policy = RetryPolicy::new(RetryConfig {
        max_attempts: 2,
        ..RetryConfig::default()
    })
    .unwrap()
    .without_metrics()
    .with_notify(move |e| seen.lock().unwrap().push(e.error.to_string()));
    fail_twice(&policy, "scrubbed").await;
    let logged = lines_where("service", "scrubbed");
    assert_eq!(
        logged.len(),
        4,
        "WARNING, INFO, WARNING, ERROR: {logged:#?}"
    );
    for line in &logged {
        let error = line["error"].as_str().unwrap();
        for secret in SECRETS {
            assert!(!error.contains(secret), "{secret} in {error}");
        }
        // What is not secret stays readable.
        assert!(
            error.contains("https://***@api.example/v1/acct-4242?api_key=***&page=2"),
            "{error}"
        );
        assert!(error.contains("Bearer *** rejected"), "{error}");
    }
    let notified = notified.lock().unwrap();
    assert_eq!(notified.len(), 1);
    assert!(
        SECRETS.iter().all(|s| !notified[0].contains(s)),
        "{}",
        notified[0]
    );
}

#[tokio::test(start_paused = true)]
async fn a_redactor_of_the_caller_runs_after_the_default_scrubbing() {
    captured();
    let policy = RetryPolicy::new(RetryConfig {
        max_attempts: 2,
        ..RetryConfig::default()
    })
    .unwrap()
    .without_metrics()
    .with_redactor(|text| {
        assert!(
            !text.contains("SECRET123"),
            "the default scrubbing ran first"
        );
        text.replace("acct-4242", "acct-…")
    });
    fail_twice(&policy, "redacted").await;
    let logged = lines_where("service", "redacted");
    assert_eq!(logged.len(), 4);
    for line in logged {
        let error = line["error"].as_str().unwrap();
        assert!(!error.contains("4242"), "{error}");
        assert!(error.contains("/v1/acct-…?api_key=***"), "{error}");
    }
}

#[tokio::test(start_paused = true)]
async fn fresh_trace_ids_are_w3c() {
    captured();
    let policy = RetryPolicy::new(RetryConfig {
        max_attempts: 2,
        ..RetryConfig::default()
    })
    .unwrap()
    .without_metrics();
    fail_twice(&policy, "traced").await;
    fail_twice(&policy, "traced").await;
    let ids: std::collections::BTreeSet<String> = lines_where("service", "traced")
        .iter()
        .map(|l| l["trace_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "one per logical call: {ids:?}");
    for id in &ids {
        assert_eq!(id.len(), 32, "{id}");
        assert!(
            id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "{id} is not 32 lowercase hex digits"
        );
        assert!(id.bytes().any(|b| b != b'0'));
    }
}

#[tokio::test]
async fn operational_warnings_get_lines_of_their_own() {
    let lines = captured();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policies.json");
    std::fs::write(
        &path,
        r#"{"retry_policies": {"default": {"max_attempts": 4}}}"#,
    )
    .unwrap();
    let template = RetryPolicy::new(RetryConfig::default())
        .unwrap()
        .without_metrics();
    let r = Arc::new(ReloadablePolicy::load(&path, "default", &template).unwrap());
    let watcher = r.watch(Duration::from_millis(10));
    // A rejected reload, whose error quotes a URL with a password.
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"retry_policies": {"default": {"max_attempts": "https://ops:hunter2@cfg.example/"}}}"#,
    )
    .unwrap();
    std::fs::rename(&bad, &path).unwrap();
    let mut polls = 0;
    let line = loop {
        let found = lines_where("target", "ricochet::reload")
            .into_iter()
            .find(|l| l["file"] == path.display().to_string());
        if let Some(line) = found {
            break line;
        }
        polls += 1;
        assert!(
            polls < 500,
            "no line for the rejected reload: {:?}",
            lines.lines()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    watcher.abort();
    // Before the fix the seed layer dropped every target but `ricochet`: nothing was written.
    assert_eq!(line["level"], "ERROR");
    assert_eq!(
        line["message"],
        "policy reload rejected; keeping the previous policy"
    );
    assert_eq!(line["file"], path.display().to_string());
    let error = line["error"].as_str().unwrap();
    // serde quotes the value it rejects; the password in it is scrubbed.
    assert!(error.contains("invalid type"), "{error}");
    assert!(error.contains("https://***@cfg.example/"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
    assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(r.current().config().max_attempts, 4, "the old policy stays");

    // Turned off, or below the level shown: nothing.
    let quiet = CapturedLines::default();
    let _inner = tracing::subscriber::set_default({
        use tracing_subscriber::layer::SubscriberExt;
        tracing_subscriber::registry().with(SeedJsonLayer::new(quiet.clone()).operational(None))
    });
    tracing::error!(target: "ricochet::reload", "not rendered");
    let _info = tracing::subscriber::set_default({
        use tracing_subscriber::layer::SubscriberExt;
        tracing_subscriber::registry().with(SeedJsonLayer::new(quiet.clone()))
    });
    tracing::info!(target: "ricochet::reload", "below WARN: not rendered");
    tracing::warn!(target: "someone_else", "not ricochet's: not rendered");
    assert!(quiet.lines().is_empty(), "{:?}", quiet.lines());
}

#[test]
fn lines_written_by_concurrent_calls_never_interleave() {
    captured();
    // Before the fix a line went out in several writes (`writeln!`), so a writer without a lock
    // of its own (a file, this capture) got fragments of lines from different threads mixed.
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                for attempt in 0..200u32 {
                    tracing::warn!(
                        target: "ricochet",
                        service = "interleaved",
                        operation = "op",
                        attempt,
                        delay = 0.0_f64,
                        error = format!("thread {t} with a long enough error text {}", "x".repeat(200)).as_str(),
                        trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = captured().lines();
    for line in &all {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "a line mixed with another: {line}"
        );
    }
    assert_eq!(lines_where("service", "interleaved").len(), 8 * 200);
}
