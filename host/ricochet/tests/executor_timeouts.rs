//! A timed-out attempt is the seed's `TimeoutError`: in the JSON log lines' `error` and in
//! `retry_failure_total{error_type}`, when the executor's own attempt timeout cuts it.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ricochet::logging::{CapturedLines, SeedJsonLayer};
use ricochet::metrics::RetryMetrics;
use ricochet::{RetryConfig, RetryError, RetryPolicy};
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(start_paused = true)]
async fn attempt_timeouts_are_timeout_errors_in_logs_and_metrics() {
    let lines = CapturedLines::default();
    let subscriber = tracing_subscriber::registry().with(SeedJsonLayer::new(lines.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);
    let registry = prometheus::Registry::new();
    let policy = RetryPolicy::new(RetryConfig {
        max_attempts: 2,
        initial_delay: 0.01,
        max_delay: 0.01,
        coordination_enabled: false,
        ..RetryConfig::default()
    })
    .unwrap()
    .with_metrics(RetryMetrics::register(&registry).unwrap())
    .with_attempt_timeout(Duration::from_millis(50));
    let result = policy
        .execute_with_retry(
            || async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok::<(), std::io::Error>(())
            },
            "lake",
            "fetch",
        )
        .await;
    match result {
        Err(RetryError::MaxRetriesExceeded(m)) => {
            assert_eq!(m.attempts, 2);
            assert!(m.last_error.into_error().is_none(), "timed out, no error");
        }
        other => panic!("expected MaxRetriesExceeded, got {other:?}"),
    }
    let logged: Vec<serde_json::Value> = lines
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let levels: Vec<&str> = logged
        .iter()
        .map(|l| l["level"].as_str().unwrap())
        .collect();
    assert_eq!(levels, ["WARNING", "INFO", "WARNING", "ERROR"]);
    for line in &logged {
        assert_eq!(
            line["error"], "TimeoutError: attempt timed out after 0.050s",
            "{line}"
        );
    }
    let error_types: Vec<String> = registry
        .gather()
        .iter()
        .filter(|f| f.name() == "retry_failure_total")
        .flat_map(|f| f.get_metric().iter())
        .flat_map(|m| m.get_label().iter())
        .filter(|l| l.name() == "error_type")
        .map(|l| l.value().to_string())
        .collect();
    assert_eq!(error_types, ["TimeoutError"]);
}
