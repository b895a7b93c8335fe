//! An application that registered one of ricochet's metric names on prometheus's default
//! registry itself (issue 15, bug 4). Before the reorganisation `RetryPolicy::new` registered
//! every metric there with `expect` and panicked — even when followed by `.without_metrics()`,
//! and so did every `#[with_retry]` function's first call. Now the metrics register on first
//! use, per name: the application keeps its own collector, ricochet's other series are still
//! exported, and one warning names the metric that is not.
//!
//! A test binary of its own: it changes the process-wide default registry.
#![cfg(feature = "prometheus")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

use ricochet::logging::{CapturedLines, SeedJsonLayer};
use ricochet::{with_retry, RetryConfig, RetryPolicy};

const FAST: RetryConfig = RetryConfig {
    max_attempts: 3,
    initial_delay: 0.001,
    max_delay: 0.002,
    coordination_enabled: false,
    ..RetryConfig::DEFAULT
};

#[with_retry(retry_config = FAST, retry_on = (std::io::Error,), service_name = "registry-macro")]
async fn flaky(calls: &AtomicU32) -> Result<u32, io::Error> {
    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(io::Error::from(io::ErrorKind::ConnectionReset));
    }
    Ok(7)
}

fn exported(name: &str, service: &str) -> Vec<String> {
    let text = ricochet::metrics::render(prometheus::default_registry());
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(&format!("service=\"{service}\"")))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn the_application_s_own_metric_of_the_same_name_is_left_alone() {
    let lines = CapturedLines::default();
    let _logs = tracing::subscriber::set_default({
        use tracing_subscriber::layer::SubscriberExt;
        tracing_subscriber::registry().with(SeedJsonLayer::new(lines.clone()))
    });
    // The application's own `retry_attempts_total`, with labels of its own.
    let mine = prometheus::IntCounterVec::new(
        prometheus::Opts::new("retry_attempts_total", "the application's own"),
        &["job"],
    )
    .unwrap();
    prometheus::register(Box::new(mine.clone())).unwrap();
    mine.with_label_values(&["nightly"]).inc_by(41);

    // Building a policy never touches the registry; neither does one without metrics.
    let quiet = RetryPolicy::new(FAST).unwrap().without_metrics();
    let policy = RetryPolicy::new(FAST).unwrap();

    let calls = AtomicU32::new(0);
    let value = quiet
        .execute_with_retry(
            || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        Err(io::Error::from(io::ErrorKind::ConnectionReset))
                    } else {
                        Ok(n)
                    }
                }
            },
            "registry-quiet",
            "op",
        )
        .await
        .unwrap();
    assert_eq!(value, 1);

    let calls = AtomicU32::new(0);
    let value = policy
        .execute_with_retry(
            || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        Err(io::Error::from(io::ErrorKind::ConnectionReset))
                    } else {
                        Ok(n)
                    }
                }
            },
            "registry-direct",
            "op",
        )
        .await
        .unwrap();
    assert_eq!(value, 1);
    let calls = AtomicU32::new(0);
    assert_eq!(flaky(&calls).await.unwrap(), 7);

    // The application's metric is intact and still its own.
    assert_eq!(mine.with_label_values(&["nightly"]).get(), 41);
    let text = ricochet::metrics::render(prometheus::default_registry());
    assert!(
        text.contains("retry_attempts_total{job=\"nightly\"} 41"),
        "{text}"
    );
    // ricochet's other series are exported, for both the direct and the macro path.
    for service in ["registry-direct", "registry-macro"] {
        assert!(
            exported("retry_success_total", service)
                .iter()
                .any(|l| l.contains("attempts_needed=\"2\"") && l.ends_with(" 1")),
            "{service}: {text}"
        );
        assert!(
            !exported("retry_duration_seconds_count", service).is_empty(),
            "{service}: {text}"
        );
    }
    assert!(exported("retry_success_total", "registry-quiet").is_empty());
    // One warning, naming the metric that is not exported, as an operational line.
    let warnings: Vec<serde_json::Value> = lines
        .lines()
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l.get("target").is_some())
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert_eq!(warnings[0]["level"], "WARNING");
    assert_eq!(warnings[0]["metric"], "retry_attempts_total");
}
