//! The seed's integration scenarios against a real HTTP server on loopback, plus the exact
//! metrics and log lines a scripted run produces.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ricochet::logging::{CapturedLines, SeedJsonLayer};
use ricochet::metrics::{render, RetryMetrics};
use ricochet::{JitterStrategy, RetryConfig, RetryError, RetryPolicy};
use ricochet_cli::flaky::{get, FlakyServer, Reply};

fn config(max_attempts: u32, initial_delay: f64) -> RetryConfig {
    RetryConfig {
        max_attempts,
        initial_delay,
        jitter: false,
        strategy: JitterStrategy::None,
        coordination_enabled: false,
        ..RetryConfig::default()
    }
}

/// Attempt start times, recorded by the operation itself.
fn recorder() -> (Arc<Mutex<Vec<Instant>>>, impl Fn() + Clone) {
    let times = Arc::new(Mutex::new(Vec::new()));
    let t = times.clone();
    (times, move || t.lock().unwrap().push(Instant::now()))
}

#[tokio::test]
async fn service_temporary_unavailable() {
    let server = FlakyServer::start(|n, _| {
        if n < 2 {
            Reply::Status(503)
        } else {
            Reply::Ok("fresh".into())
        }
    })
    .await
    .unwrap();
    let policy = RetryPolicy::new(config(4, 0.01)).unwrap().without_metrics();
    let addr = server.addr();
    let body = policy
        .execute_with_retry(|| get(addr, "/data"), "lake", "fetch")
        .await
        .unwrap();
    assert_eq!(body, "fresh");
    assert_eq!(
        server.stats().requests.load(Ordering::Relaxed),
        3,
        "success after two retries"
    );
}

#[tokio::test]
async fn network_timeout() {
    // Every request answers after 2 s; each attempt times out after 50 ms. The gaps between
    // attempt starts are timeout + backoff: 50 + 100, 50 + 200, 50 + 400 ms.
    let server = FlakyServer::start(|_, _| Reply::Slow(Duration::from_secs(2), "late".into()))
        .await
        .unwrap();
    let policy = RetryPolicy::new(config(4, 0.1))
        .unwrap()
        .without_metrics()
        .with_attempt_timeout(Duration::from_millis(50));
    let (times, mark) = recorder();
    let addr = server.addr();
    let err = policy
        .execute_with_retry(
            || {
                mark();
                get(addr, "/slow")
            },
            "lake",
            "fetch",
        )
        .await
        .unwrap_err();
    let RetryError::MaxRetriesExceeded(m) = err else {
        panic!("{err}")
    };
    assert_eq!(m.attempts, 4);
    assert!(matches!(m.last_error, ricochet::AttemptError::TimedOut(_)));
    let times = times.lock().unwrap();
    let gaps: Vec<u128> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    for (gap, backoff) in gaps.iter().zip([100u128, 200, 400]) {
        let expected = 50 + backoff;
        assert!(
            *gap >= expected && *gap < expected + 150,
            "gaps {gaps:?}: expected about {expected} ms"
        );
    }
    assert!(
        gaps[2] > gaps[1] && gaps[1] > gaps[0],
        "exponential backoff is visible: {gaps:?}"
    );
}

#[tokio::test]
async fn rate_limit_exceeded() {
    // Seconds form: the server asks for 1 s, far more than the 10 ms backoff; the wait respects it.
    let server = FlakyServer::start(|n, _| {
        if n == 0 {
            Reply::RetryAfter(429, "1".into())
        } else {
            Reply::Ok("ok".into())
        }
    })
    .await
    .unwrap();
    let policy = RetryPolicy::new(config(3, 0.01)).unwrap().without_metrics();
    let (times, mark) = recorder();
    let addr = server.addr();
    policy
        .execute_with_retry(
            || {
                mark();
                get(addr, "/limited")
            },
            "lake",
            "fetch",
        )
        .await
        .unwrap();
    let gap = {
        let t = times.lock().unwrap();
        t[1] - t[0]
    };
    assert!(
        gap >= Duration::from_secs(1) && gap < Duration::from_millis(1500),
        "waited {gap:?}"
    );

    // HTTP-date form: a date 2 s ahead (1-second resolution, so the wait is between 1 and 2 s).
    let at = std::time::SystemTime::now() + Duration::from_secs(2);
    let date = httpdate(at);
    let server = FlakyServer::start(move |n, _| {
        if n == 0 {
            Reply::RetryAfter(503, date.clone())
        } else {
            Reply::Ok("ok".into())
        }
    })
    .await
    .unwrap();
    let (times, mark) = recorder();
    let addr = server.addr();
    policy
        .execute_with_retry(
            || {
                mark();
                get(addr, "/limited")
            },
            "lake",
            "fetch",
        )
        .await
        .unwrap();
    let gap = {
        let t = times.lock().unwrap();
        t[1] - t[0]
    };
    assert!(
        gap >= Duration::from_millis(900) && gap < Duration::from_millis(2500),
        "waited {gap:?}"
    );

    // A Retry-After beyond max_retry_after gives up instead of sleeping for an hour.
    let server = FlakyServer::start(|_, _| Reply::RetryAfter(429, "3600".into()))
        .await
        .unwrap();
    let addr = server.addr();
    let started = Instant::now();
    let err = policy
        .execute_with_retry(|| get(addr, "/limited"), "lake", "fetch")
        .await
        .unwrap_err();
    let RetryError::MaxRetriesExceeded(m) = err else {
        panic!("{err}")
    };
    assert_eq!(m.reason, ricochet::GiveUpReason::RetryAfterTooLong);
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// IMF-fixdate for a time (test helper; the parser under test is core's).
fn httpdate(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let rfc = ricochet::logging::rfc3339(secs * 1_000_000);
    // rfc = YYYY-MM-DDTHH:MM:SS.000000Z
    let (y, m, d) = (&rfc[0..4], &rfc[5..7], &rfc[8..10]);
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let weekday = days[((secs / 86_400) % 7) as usize];
    format!(
        "{weekday}, {d} {} {y} {} GMT",
        months[m.parse::<usize>().unwrap() - 1],
        &rfc[11..19]
    )
}

#[tokio::test]
async fn metrics_and_logs_match_the_seed_exactly() {
    let registry = prometheus::Registry::new();
    let metrics = RetryMetrics::register(&registry).unwrap();
    let lines = CapturedLines::default();
    let subscriber = {
        use tracing_subscriber::layer::SubscriberExt;
        tracing_subscriber::registry().with(SeedJsonLayer::new(lines.clone()))
    };
    let _anchor = ricochet_test_support::interest_anchor(); // see its docs
    let _guard = tracing::subscriber::set_default(subscriber);

    // Scripted: /a fails twice then succeeds; /b always 502 (3 attempts, exhausted); /c is 404.
    let server = FlakyServer::start(|_, path| match path {
        "/a" => Reply::Status(503),
        "/b" => Reply::Status(502),
        _ => Reply::Status(404),
    })
    .await
    .unwrap();
    let ok_server = FlakyServer::start(|_, _| Reply::Ok("ok".into()))
        .await
        .unwrap();
    let policy = RetryPolicy::new(config(3, 0.001))
        .unwrap()
        .with_metrics(metrics);
    let (bad, good) = (server.addr(), ok_server.addr());
    let mut a_calls = 0;
    policy
        .execute_with_retry(
            || {
                a_calls += 1;
                if a_calls < 3 {
                    get(bad, "/a")
                } else {
                    get(good, "/a")
                }
            },
            "lake",
            "fetch",
        )
        .await
        .unwrap();
    ricochet::logging::with_traceparent(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        async {
            policy
                .execute_with_retry(|| get(bad, "/b"), "lake", "fetch")
                .await
                .unwrap_err();
        },
    )
    .await;
    policy
        .execute_with_retry(|| get(bad, "/c"), "lake", "lookup")
        .await
        .unwrap_err();

    let text = render(&registry);
    for line in [
        r#"retry_attempts_total{attempt="1",operation="fetch",service="lake"} 2"#,
        r#"retry_attempts_total{attempt="2",operation="fetch",service="lake"} 2"#,
        r#"retry_attempts_total{attempt="3",operation="fetch",service="lake"} 2"#,
        r#"retry_attempts_total{attempt="1",operation="lookup",service="lake"} 1"#,
        r#"retry_success_total{attempts_needed="3",operation="fetch",service="lake"} 1"#,
        r#"retry_failure_total{error_type="ServiceUnavailableError",operation="fetch",service="lake"} 1"#,
        r#"retry_failure_total{error_type="ResourceNotFoundError",operation="lookup",service="lake"} 1"#,
        r#"retry_duration_seconds_count{operation="fetch",service="lake"} 2"#,
        r#"retry_duration_seconds_bucket{operation="fetch",service="lake",le="0.1"} 2"#,
        r#"retry_duration_seconds_bucket{operation="fetch",service="lake",le="10"} 2"#,
        r#"retry_duration_seconds_bucket{operation="lookup",service="lake",le="+Inf"} 1"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
    let buckets: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("retry_duration_seconds_bucket{operation=\"lookup\""))
        .collect();
    assert_eq!(
        buckets.len(),
        7,
        "buckets 0.1, 0.5, 1, 2, 5, 10, +Inf: {buckets:?}"
    );

    let lines = lines.lines();
    // /a: 2 × (WARNING + INFO); /b: 3 × WARNING + 2 × INFO + ERROR; /c: WARNING + ERROR.
    assert_eq!(lines.len(), 4 + 6 + 2, "{lines:#?}");
    let keys = [
        "attempt",
        "delay",
        "error",
        "level",
        "operation",
        "service",
        "timestamp",
        "trace_id",
    ];
    let mut levels = Vec::new();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let obj = v.as_object().unwrap();
        let mut got: Vec<&str> = obj.keys().map(String::as_str).collect();
        got.sort_unstable();
        assert_eq!(got, keys, "{line}");
        assert_eq!(obj["service"], "lake");
        assert!(obj["attempt"].as_u64().unwrap() >= 1);
        assert!(obj["delay"].as_f64().unwrap() >= 0.0);
        assert!(obj["timestamp"].as_str().unwrap().ends_with('Z'));
        levels.push(obj["level"].as_str().unwrap().to_string());
    }
    assert_eq!(levels.iter().filter(|l| *l == "WARNING").count(), 6);
    assert_eq!(levels.iter().filter(|l| *l == "INFO").count(), 4);
    assert_eq!(levels.iter().filter(|l| *l == "ERROR").count(), 2);
    let b_lines: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("4bf92f3577b34da6a3ce929d0e0e4736"))
        .collect();
    assert_eq!(
        b_lines.len(),
        6,
        "the caller's traceparent is the trace_id of every /b line"
    );
    // Other operations get one fresh trace id each, shared by all their lines.
    let ids: std::collections::BTreeSet<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["trace_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
}
