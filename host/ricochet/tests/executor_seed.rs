//! The seed's unit scenarios for the executor, by name, on tokio's paused clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ricochet::{GiveUpReason, JitterStrategy, RetryConfig, RetryError, RetryPolicy};

fn quiet(config: RetryConfig) -> RetryPolicy {
    RetryPolicy::new(config).unwrap().without_metrics()
}

fn uncoordinated(config: RetryConfig) -> RetryConfig {
    RetryConfig {
        coordination_enabled: false,
        ..config
    }
}

fn refused() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused")
}

#[tokio::test(start_paused = true)]
async fn successful_operation_no_retries() {
    let calls = AtomicU32::new(0);
    let policy = quiet(RetryConfig::default());
    let started = tokio::time::Instant::now();
    let value = policy
        .execute_with_retry(
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, io::Error>(42)
            },
            "stream",
            "data_fetch",
        )
        .await
        .unwrap();
    assert_eq!(value, 42);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "no sleep on first-try success"
    );
}

#[tokio::test(start_paused = true)]
async fn success_after_retries() {
    let calls = AtomicU32::new(0);
    let policy = quiet(RetryConfig {
        max_attempts: 5,
        ..RetryConfig::default()
    });
    let value = policy
        .execute_with_retry(
            || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                    Err(refused())
                } else {
                    Ok("data")
                }
            },
            "stream",
            "data_fetch",
        )
        .await
        .unwrap();
    assert_eq!(value, "data");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn max_retries_exceeded() {
    for preset in RetryConfig::PRESET_NAMES {
        let config = RetryConfig::preset(preset).unwrap();
        let calls = AtomicU32::new(0);
        let err = quiet(config)
            .execute_with_retry(
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err::<(), _>(refused())
                },
                "stream",
                "data_fetch",
            )
            .await
            .unwrap_err();
        let RetryError::MaxRetriesExceeded(m) = err else {
            panic!("{preset}: {err}")
        };
        assert_eq!(m.attempts, config.max_attempts, "{preset}");
        assert_eq!(m.reason, GiveUpReason::Exhausted);
        assert_eq!(calls.load(Ordering::SeqCst), config.max_attempts);
        let last = m.last_error.into_error().unwrap();
        assert_eq!(last.kind(), io::ErrorKind::ConnectionRefused);
    }
    // A non-retryable error comes back at once, as itself.
    let calls = AtomicU32::new(0);
    let err = quiet(RetryConfig::default())
        .execute_with_retry(
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(io::Error::new(io::ErrorKind::InvalidInput, "bad request"))
            },
            "stream",
            "data_fetch",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RetryError::NonRetryable(ref e) if e.kind() == io::ErrorKind::InvalidInput),
        "{err}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn backoff_timing_verification() {
    for strategy in JitterStrategy::ALL {
        for seed in [1_u64, 7, 2026] {
            let config = uncoordinated(RetryConfig {
                max_attempts: 6,
                strategy,
                ..RetryConfig::default()
            });
            let expected: Vec<Duration> = config
                .validate()
                .unwrap()
                .plan(seed)
                .map(|r| Duration::from_micros(r.delay_us))
                .collect();
            let slept = Arc::new(Mutex::new(Vec::new()));
            let record = slept.clone();
            let policy = quiet(config)
                .with_seed(seed)
                .with_notify(move |e| record.lock().unwrap().push(e.delay));
            let started = tokio::time::Instant::now();
            let _ = policy
                .execute_with_retry(|| async { Err::<(), _>(refused()) }, "lake", "fetch")
                .await;
            let slept = slept.lock().unwrap().clone();
            assert_eq!(
                slept, expected,
                "{strategy:?} seed {seed}: the executor sleeps the core's schedule"
            );
            // And it really slept that long (tokio's timer rounds each sleep up to the millisecond).
            let total: Duration = expected.iter().sum();
            let elapsed = started.elapsed();
            assert!(
                elapsed >= total && elapsed <= total + Duration::from_millis(expected.len() as u64),
                "{elapsed:?} vs {total:?}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn jitter_distribution_check() {
    // The first retry's delay with the seed's proportional jitter is base * (1 + f * u), u
    // uniform in [-1, 1): bin u over 20 000 executions (random seed per call) and test
    // uniformity with chi-square (10 bins, df 9, critical value 27.88 at p = 0.001).
    let config = uncoordinated(RetryConfig {
        max_attempts: 2,
        ..RetryConfig::default()
    });
    let delays = Arc::new(Mutex::new(Vec::new()));
    let record = delays.clone();
    let policy = quiet(config).with_notify(move |e| record.lock().unwrap().push(e.delay));
    for _ in 0..20_000 {
        let _ = policy
            .execute_with_retry(|| async { Err::<(), _>(refused()) }, "lake", "fetch")
            .await;
    }
    let delays = delays.lock().unwrap();
    assert_eq!(delays.len(), 20_000);
    let mut bins = [0u32; 10];
    for d in delays.iter() {
        let u = (d.as_micros() as f64 / 100_000.0 - 1.0) / 0.1;
        assert!((-1.0..1.0).contains(&u), "u = {u}");
        bins[((u + 1.0) / 2.0 * 10.0) as usize] += 1;
    }
    let expected = 2_000.0;
    let chi2: f64 = bins
        .iter()
        .map(|&o| (o as f64 - expected).powi(2) / expected)
        .sum();
    assert!(chi2 < 27.88, "chi-square {chi2} over bins {bins:?}");
}

#[tokio::test(start_paused = true)]
async fn auth_failures_retry_once_only_after_a_token_refresh() {
    use ricochet::HttpError;
    let expired = || async { Err::<(), _>(HttpError::status(401)) };
    // No refresh hook: the 401 comes back at once.
    let calls = AtomicU32::new(0);
    let err = quiet(RetryConfig::default())
        .execute_with_retry(
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                expired()
            },
            "lake",
            "fetch",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RetryError::NonRetryable(_)), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // The hook refreshes: one retry, which succeeds.
    let refreshes = Arc::new(AtomicU32::new(0));
    let r = refreshes.clone();
    let policy = quiet(RetryConfig::default()).with_token_refresh(move || {
        let r = r.clone();
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            true
        }
    });
    let calls = AtomicU32::new(0);
    policy
        .execute_with_retry(
            || async {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(HttpError::status(401))
                } else {
                    Ok(())
                }
            },
            "lake",
            "fetch",
        )
        .await
        .unwrap();
    assert_eq!(
        (
            calls.load(Ordering::SeqCst),
            refreshes.load(Ordering::SeqCst)
        ),
        (2, 1)
    );

    // Still 401 after the refresh: no second auth retry.
    let calls = AtomicU32::new(0);
    let err = policy
        .execute_with_retry(
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                expired()
            },
            "lake",
            "fetch",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RetryError::NonRetryable(_)), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // The hook says it could not refresh: returned at once.
    let policy = quiet(RetryConfig::default()).with_token_refresh(|| async { false });
    let calls = AtomicU32::new(0);
    policy
        .execute_with_retry(
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                expired()
            },
            "lake",
            "fetch",
        )
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
