//! Reloading a policy file (issue 15): a file polled mid-write is not applied until it holds,
//! `watch(Duration::ZERO)` does not panic its task, and a reload that leaves the circuit breaker
//! and retry budget config alone leaves their state alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ricochet::reload::ReloadablePolicy;
use ricochet::{GiveUpReason, RetryConfig, RetryError, RetryPolicy};

fn template() -> RetryPolicy {
    RetryPolicy::new(RetryConfig::default())
        .unwrap()
        .without_metrics()
}

/// Rewrites `path` in place (same inode), as an editor or `cp` does.
fn write_in_place(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
}

fn attempts(max_attempts: u32, pad: usize) -> String {
    format!(
        r#"{{"retry_policies": {{"default": {{"max_attempts": {max_attempts}}}}}}}{}"#,
        " ".repeat(pad)
    )
}

#[test]
fn a_file_polled_mid_write_is_applied_only_once_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policies.json");
    std::fs::write(&path, attempts(4, 0)).unwrap();
    let r = ReloadablePolicy::load(&path, "default", &template()).unwrap();
    assert!(!r.reload_if_changed().unwrap(), "nothing changed");

    // A poll lands half way through an in-place write: what is there parses (`max_attempts: 1`
    // of what will be `max_attempts: 10`). Before the fix this poll loaded it.
    write_in_place(&path, &attempts(1, 0));
    assert!(!r.reload_if_changed().unwrap(), "a change is only noted");
    assert_eq!(r.current().config().max_attempts, 4);
    // The writer finishes before the next poll: that version is noted in turn…
    write_in_place(&path, &attempts(10, 8));
    assert!(!r.reload_if_changed().unwrap());
    assert_eq!(r.current().config().max_attempts, 4);
    // …and applied once a poll finds it unchanged. The half-written one never was.
    assert!(r.reload_if_changed().unwrap());
    assert_eq!(r.current().config().max_attempts, 10);
    assert!(!r.reload_if_changed().unwrap());

    // A broken file is reported once, then the old policy stays without further errors.
    write_in_place(
        &path,
        "{\"retry_policies\": {\"default\": {\"jitter_factor\": 3}}}",
    );
    assert!(!r.reload_if_changed().unwrap());
    let e = r.reload_if_changed().unwrap_err().to_string();
    assert!(e.contains("jitter_factor"), "{e}");
    assert!(!r.reload_if_changed().unwrap());
    assert_eq!(r.current().config().max_attempts, 10);
}

#[tokio::test]
async fn watch_with_a_zero_period_polls_instead_of_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policies.json");
    std::fs::write(&path, attempts(4, 0)).unwrap();
    let r = Arc::new(ReloadablePolicy::load(&path, "default", &template()).unwrap());
    // Before the fix: tokio's `interval` panicked ("`period` must be non-zero") in the task.
    let handle = r.watch(Duration::ZERO);
    // A rename into place, as a careful deployer does.
    let next = dir.path().join("next.json");
    std::fs::write(&next, attempts(6, 0)).unwrap();
    std::fs::rename(&next, &path).unwrap();
    let mut polls = 0;
    while r.current().config().max_attempts != 6 {
        assert!(
            !handle.is_finished(),
            "the watcher ended: {:?}",
            handle.await
        );
        polls += 1;
        assert!(polls < 1_000, "never reloaded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!handle.is_finished());
    handle.abort();
}

fn guarded(initial_delay: f64, cool_down: f64) -> String {
    let common = format!(
        r#""max_attempts": 5, "initial_delay": {initial_delay}, "max_delay": 0.1, "coordination_enabled": false"#
    );
    format!(
        r#"{{"retry_policies": {{
            "breaker": {{ {common},
                "circuit_breaker": {{"failure_threshold": 2, "failure_rate": 0, "minimum_calls": 0,
                                     "window": 60, "cool_down": {cool_down}, "half_open_probes": 1}} }},
            "budget": {{ {common}, "retry_budget": {{"max_tokens": 4, "token_ratio": 0.1}} }}
        }}}}"#
    )
}

async fn failing_call(policy: &RetryPolicy) -> RetryError<io::Error> {
    policy
        .execute_with_retry(
            || async { Err::<(), _>(io::Error::from(io::ErrorKind::ConnectionRefused)) },
            "svc",
            "op",
        )
        .await
        .unwrap_err()
}

#[tokio::test]
async fn breaker_and_budget_survive_a_reload_that_does_not_change_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policies.json");
    std::fs::write(&path, guarded(0.001, 60.0)).unwrap();
    let breaker = ReloadablePolicy::load(&path, "breaker", &template()).unwrap();
    let budget = ReloadablePolicy::load(&path, "budget", &template()).unwrap();

    // Budget: 4 tokens, retries while more than 2 are left. The first call spends 2 and stops.
    let e = failing_call(&budget.current()).await;
    assert!(
        matches!(&e, RetryError::MaxRetriesExceeded(m) if m.attempts == 2 && m.reason == GiveUpReason::Budget),
        "{e}"
    );
    // Breaker: two failures in a row open it for a minute.
    let e = failing_call(&breaker.current()).await;
    assert!(matches!(e, RetryError::MaxRetriesExceeded(_)), "{e}");
    assert!(matches!(
        failing_call(&breaker.current()).await,
        RetryError::CircuitOpen { .. }
    ));

    // A reload that changes the backoff only.
    std::fs::write(&path, guarded(0.002, 60.0)).unwrap();
    breaker.reload().unwrap();
    budget.reload().unwrap();
    assert_eq!(breaker.current().config().initial_delay, 0.002);
    // Before the fix both started fresh: the breaker let the call through and the budget
    // allowed a retry again.
    let e = failing_call(&breaker.current()).await;
    assert!(
        matches!(e, RetryError::CircuitOpen { .. }),
        "the breaker is still open: {e}"
    );
    let e = failing_call(&budget.current()).await;
    assert!(
        matches!(&e, RetryError::MaxRetriesExceeded(m) if m.attempts == 1 && m.reason == GiveUpReason::Budget),
        "the budget is still spent: {e}"
    );

    // A reload that changes the breaker's config: that breaker starts fresh.
    std::fs::write(&path, guarded(0.002, 30.0)).unwrap();
    breaker.reload().unwrap();
    let e = failing_call(&breaker.current()).await;
    assert!(
        matches!(&e, RetryError::MaxRetriesExceeded(m) if m.attempts == 2),
        "a fresh breaker lets the call through: {e}"
    );
}
