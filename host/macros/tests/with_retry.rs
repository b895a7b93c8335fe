//! The behaviour of `#[with_retry]`: retries, classification, labels, and what the body sees.
//!
//! Every test uses its own `service_name`, so the process-wide metrics it reads are its own.
#![allow(clippy::unwrap_used)]

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use ricochet::metrics::RetryMetrics;
use ricochet::{with_retry, RetryConfig, RetryError};

/// Tiny delays and no coordination: a retry costs about a millisecond.
const FAST: RetryConfig = RetryConfig {
    max_attempts: 5,
    initial_delay: 0.001,
    max_delay: 0.01,
    coordination_enabled: false,
    ..RetryConfig::DEFAULT
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "connection reset")
}

fn attempts_counted(service: &str, operation: &str, attempt: &str) -> u64 {
    RetryMetrics::default_registry()
        .expect("the prometheus feature is on")
        .attempts
        .with_label_values(&[service, operation, attempt])
        .get()
}

/// An error no `retry_on` below lists.
#[derive(Debug)]
struct Rejected;

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("rejected")
    }
}

impl std::error::Error for Rejected {}

#[with_retry(retry_config = FAST, retry_on = (std::io::Error, tokio::time::error::Elapsed), service_name = "macro-success")]
async fn flaky(calls: &AtomicU32, failures: u32) -> Result<String, BoxError> {
    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
    if n <= failures {
        return Err(reset().into());
    }
    Ok(format!("ok after {n}"))
}

#[tokio::test]
async fn success_after_failures_of_a_listed_type() {
    let calls = AtomicU32::new(0);
    let value = flaky(&calls, 2).await.unwrap();
    assert_eq!(value, "ok after 3");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn retries_run_out_with_max_retries_exceeded() {
    let calls = AtomicU32::new(0);
    match flaky(&calls, u32::MAX).await {
        Err(RetryError::MaxRetriesExceeded(m)) => {
            assert_eq!(m.attempts, 5);
            let last = m.last_error.into_error().unwrap();
            assert!(last.downcast_ref::<io::Error>().is_some(), "{last}");
        }
        other => panic!("expected MaxRetriesExceeded, got {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[with_retry(retry_config = FAST, retry_on = (std::io::Error, tokio::time::error::Elapsed), service_name = "macro-elapsed")]
async fn times_out_then_succeeds(calls: &AtomicU32) -> Result<u32, BoxError> {
    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
        // `?` converts `Elapsed` into the declared `Box<dyn Error>`, as in an ordinary fn.
        tokio::time::timeout(std::time::Duration::ZERO, std::future::pending::<()>()).await?;
    }
    Ok(7)
}

#[tokio::test]
async fn a_listed_type_inside_a_box_is_retried_and_question_mark_converts() {
    let calls = AtomicU32::new(0);
    assert_eq!(times_out_then_succeeds(&calls).await.unwrap(), 7);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[with_retry(retry_config = FAST, retry_on = (std::io::Error,), service_name = "macro-unlisted")]
async fn rejects(calls: &AtomicU32) -> Result<(), BoxError> {
    calls.fetch_add(1, Ordering::SeqCst);
    Err(Box::new(Rejected))
}

#[tokio::test]
async fn an_unlisted_error_is_returned_after_one_call() {
    let calls = AtomicU32::new(0);
    match rejects(&calls).await {
        Err(RetryError::NonRetryable(e)) => assert!(e.is::<Rejected>()),
        other => panic!("expected NonRetryable, got {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let failed = RetryMetrics::default_registry()
        .expect("the prometheus feature is on")
        .failure
        .with_label_values(&["macro-unlisted", "rejects", "BusinessLogicError"])
        .get();
    assert_eq!(
        failed, 1,
        "an unlisted error is counted as non-retryable business logic"
    );
}

#[with_retry(retry_config = FAST, retry_on = std::io::Error, service_name = "macro-not-found")]
async fn not_found_is_listed(calls: &AtomicU32) -> Result<(), io::Error> {
    calls.fetch_add(1, Ordering::SeqCst);
    Err(io::Error::new(io::ErrorKind::NotFound, "gone"))
}

#[tokio::test]
async fn a_listed_type_is_retried_even_when_its_kind_is_not() {
    // io::ErrorKind::NotFound classifies as ResourceNotFound, which the policy does not retry;
    // listing io::Error overrides that (as ServiceUnavailable).
    let calls = AtomicU32::new(0);
    let err = not_found_is_listed(&calls).await.unwrap_err();
    assert!(
        matches!(err, RetryError::MaxRetriesExceeded(ref m) if m.attempts == 5),
        "{err:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[with_retry(retry_config = FAST, service_name = "macro-classify")]
async fn classified(calls: &AtomicU32, kind: io::ErrorKind) -> Result<u32, io::Error> {
    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
    if n < 3 {
        return Err(io::Error::new(kind, "failed"));
    }
    Ok(n)
}

#[tokio::test]
async fn without_retry_on_the_classify_trait_decides() {
    let calls = AtomicU32::new(0);
    assert_eq!(
        classified(&calls, io::ErrorKind::ConnectionRefused)
            .await
            .unwrap(),
        3
    );
    let calls = AtomicU32::new(0);
    let err = classified(&calls, io::ErrorKind::PermissionDenied)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RetryError::NonRetryable(ref e) if e.kind() == io::ErrorKind::PermissionDenied),
        "{err:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[with_retry(retry_config = FAST, retry_on = (std::io::Error,), service_name = "macro-op-default")]
async fn fetch_report(calls: &AtomicU32) -> Result<(), io::Error> {
    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(reset());
    }
    Ok(())
}

#[with_retry(retry_config = FAST, retry_on = (std::io::Error,), service_name = "macro-op-named", operation_name = "nightly_export")]
async fn export(calls: &AtomicU32) -> Result<(), io::Error> {
    calls.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[tokio::test]
async fn operation_name_defaults_to_the_function_name() {
    let calls = AtomicU32::new(0);
    fetch_report(&calls).await.unwrap();
    assert_eq!(attempts_counted("macro-op-default", "fetch_report", "1"), 1);
    assert_eq!(attempts_counted("macro-op-default", "fetch_report", "2"), 1);
    export(&calls).await.unwrap();
    assert_eq!(attempts_counted("macro-op-named", "nightly_export", "1"), 1);
    assert_eq!(attempts_counted("macro-op-named", "export", "1"), 0);
}

struct Lake {
    calls: AtomicU32,
    prefix: String,
}

impl Lake {
    #[with_retry(retry_config = FAST, retry_on = (std::io::Error,), service_name = "macro-method")]
    async fn get(&self, key: &str, version: u32) -> Result<String, io::Error> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < 2 {
            return Err(reset());
        }
        Ok(format!("{}/{key}@{version}", self.prefix))
    }

    #[with_retry(retry_config = FAST, retry_on = (std::io::Error,), service_name = "macro-method")]
    async fn get_generic<'a, K: AsRef<str> + Clone>(
        &'a self,
        key: K,
    ) -> Result<&'a str, io::Error> {
        if key.as_ref().is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty key"));
        }
        Ok(self.prefix.as_str())
    }
}

#[tokio::test]
async fn methods_with_ref_self_work() {
    let lake = Lake {
        calls: AtomicU32::new(0),
        prefix: "s3://lake".to_string(),
    };
    assert_eq!(lake.get("k", 2).await.unwrap(), "s3://lake/k@2");
    assert_eq!(lake.calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        lake.get_generic(String::from("k")).await.unwrap(),
        "s3://lake"
    );
}

#[derive(Clone, Debug, PartialEq)]
struct Request {
    path: String,
    tags: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
#[with_retry(retry_config = FAST, retry_on = (std::io::Error,), service_name = "macro-args")]
async fn consume_args(
    seen: &Mutex<Vec<String>>,
    id: u32,
    name: String,
    request: Request,
    (low, high): (u32, u32),
    mut budget: u32,
    label: &str,
    _: u8,
) -> Result<String, io::Error> {
    budget -= 1;
    // Moves `name` and `request` out: each attempt has its own clones.
    let line = format!(
        "{id} {name} {} {} {low}-{high} {budget} {label}",
        request.path,
        request.tags.len()
    );
    let owned: Request = request;
    drop(owned);
    let mut seen = seen.lock().unwrap();
    seen.push(line.clone());
    if seen.len() < 3 {
        return Err(reset());
    }
    Ok(name)
}

#[tokio::test]
async fn arguments_are_reused_across_attempts() {
    let seen = Mutex::new(Vec::new());
    let request = Request {
        path: "/v1/items".to_string(),
        tags: vec!["a".to_string(), "b".to_string()],
    };
    let name = consume_args(&seen, 7, "alice".to_string(), request, (1, 9), 10, "eu", 0)
        .await
        .unwrap();
    assert_eq!(name, "alice");
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), 3);
    for line in &seen {
        assert_eq!(
            line, "7 alice /v1/items 2 1-9 9 eu",
            "every attempt sees the original values"
        );
    }
}

#[with_retry(retry_config = FAST, retry_on = (std::io::Error,), service_name = "macro-generic")]
async fn echo<T: Clone + Send>(value: T, calls: &AtomicU32) -> Result<T, io::Error> {
    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(reset());
    }
    Ok(value)
}

#[tokio::test]
async fn generic_functions_work() {
    let calls = AtomicU32::new(0);
    assert_eq!(echo(vec![1, 2, 3], &calls).await.unwrap(), vec![1, 2, 3]);
    let calls = AtomicU32::new(0);
    assert_eq!(echo("str", &calls).await.unwrap(), "str");
}

static INVALID_CALLS: AtomicU32 = AtomicU32::new(0);

#[with_retry(
    retry_config = RetryConfig { max_attempts: 0, ..FAST },
    retry_on = (std::io::Error,),
    service_name = "macro-invalid-config",
)]
async fn invalid_config(fail: bool) -> Result<u32, io::Error> {
    INVALID_CALLS.fetch_add(1, Ordering::SeqCst);
    if fail {
        return Err(reset());
    }
    Ok(1)
}

#[tokio::test]
async fn an_invalid_config_runs_the_body_once_without_retries() {
    let err = invalid_config(true).await.unwrap_err();
    assert!(
        matches!(err, RetryError::NonRetryable(ref e) if e.kind() == io::ErrorKind::ConnectionReset),
        "{err:?}"
    );
    assert_eq!(
        INVALID_CALLS.load(Ordering::SeqCst),
        1,
        "a retryable error is not retried"
    );
    assert_eq!(invalid_config(false).await.unwrap(), 1);
    let fallbacks = RetryMetrics::default_registry()
        .expect("the prometheus feature is on")
        .policy_fallback
        .with_label_values(&["macro-invalid-config", "invalid_config", "invalid_config"])
        .get();
    assert_eq!(fallbacks, 2, "each call on the invalid config is counted");
}

// The README's example, as a new service would copy it.
mod readme {
    use ricochet::{with_retry, RetryConfig};

    #[with_retry(
        retry_config = RetryConfig { max_attempts: 3, ..RetryConfig::default() },
        retry_on = (std::io::Error,),
        service_name = "lake",
    )]
    pub async fn call_service() -> Result<String, std::io::Error> {
        Ok("data".to_string())
    }
}

#[tokio::test]
async fn the_readme_example_compiles_and_runs() {
    assert_eq!(readme::call_service().await.unwrap(), "data");
}

#[with_retry(retry_config = FAST, retry_on = (std::io::Error,), service_name = "macro-spawn")]
async fn owned_args(path: String, calls: std::sync::Arc<AtomicU32>) -> Result<usize, io::Error> {
    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
        return Err(reset());
    }
    Ok(path.len())
}

#[tokio::test]
async fn the_generated_future_can_be_spawned() {
    let calls = std::sync::Arc::new(AtomicU32::new(0));
    let task = tokio::spawn(owned_args("/x".to_string(), calls.clone()));
    assert_eq!(task.await.unwrap().unwrap(), 2);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[allow(clippy::needless_return)]
#[with_retry(retry_config = FAST, service_name = "macro-early-return")]
async fn returns_early(calls: &AtomicU32) -> Result<u32, io::Error> {
    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(reset());
    }
    return Ok(5);
}

#[tokio::test]
async fn return_in_the_body_ends_the_attempt() {
    let calls = AtomicU32::new(0);
    assert_eq!(returns_early(&calls).await.unwrap(), 5);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// `-> Result<impl Trait, E>`: the `impl Trait` is left to inference inside the expansion
/// (naming it there was error E0562), and `?` still converts into `E`.
#[with_retry(retry_config = FAST, service_name = "macro-impl-trait")]
async fn displayable(calls: &AtomicU32, text: &str) -> Result<impl std::fmt::Display, io::Error> {
    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
        Err(reset())?;
    }
    let n: u32 = text
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(format!("#{n}"))
}

#[tokio::test]
async fn an_impl_trait_ok_type_works() {
    let calls = AtomicU32::new(0);
    let shown = displayable(&calls, "42").await.unwrap();
    assert_eq!(shown.to_string(), "#42");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// What `retry_config` may still read: constants, `Self`'s associated constants, and struct
/// fields that happen to share an argument's name.
struct Tuned;

impl Tuned {
    const RETRY: RetryConfig = RetryConfig {
        max_attempts: 2,
        ..FAST
    };

    #[with_retry(retry_config = Self::RETRY, retry_on = (std::io::Error,), service_name = "macro-self-const")]
    async fn get(&self, calls: &AtomicU32) -> Result<u32, io::Error> {
        calls.fetch_add(1, Ordering::SeqCst);
        Err(reset())
    }
}

#[with_retry(
    retry_config = RetryConfig { max_attempts: 2, ..FAST },
    retry_on = (std::io::Error,),
    service_name = "macro-field-named-like-an-argument"
)]
async fn same_name(max_attempts: u32, calls: &AtomicU32) -> Result<u32, io::Error> {
    calls.fetch_add(1, Ordering::SeqCst);
    if max_attempts > 0 {
        return Err(reset());
    }
    Ok(0)
}

#[tokio::test]
async fn constant_configs_still_compile_and_apply() {
    let calls = AtomicU32::new(0);
    let err = Tuned.get(&calls).await.unwrap_err();
    assert!(
        matches!(err, RetryError::MaxRetriesExceeded(ref m) if m.attempts == 2),
        "{err}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let calls = AtomicU32::new(0);
    let err = same_name(9, &calls).await.unwrap_err();
    assert!(
        matches!(err, RetryError::MaxRetriesExceeded(ref m) if m.attempts == 2),
        "{err}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
