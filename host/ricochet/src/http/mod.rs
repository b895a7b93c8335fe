//! What the HTTP integrations share: which requests are retried, what a response means, and
//! how a body is kept for the next attempt.
//!
//! [`RetryLayer`](crate::tower::RetryLayer) (feature `tower`) and
//! [`RetryMiddleware`](crate::reqwest::RetryMiddleware) (feature `reqwest`) are thin adapters
//! over [`RetryPolicy::execute_classified`]: every attempt is one call of the executor's
//! operation, so the breaker, the budget, the retry slots, the metrics and the JSON log lines are
//! the executor's own. This module decides only what the executor cannot know about HTTP.
//!
//! # Which requests are retried
//!
//! A retry sends a request again, so only requests that may safely arrive twice are retried
//! (RFC 9110 §9.2.2): `GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE` and `TRACE`. `POST` and `PATCH`
//! are retried only when they carry an `Idempotency-Key` header (the IETF httpapi draft: the
//! server deduplicates by it) that is one field line, not blank and visible ASCII (a key of
//! other bytes, or two keys, is no key), or when the caller opts in with
//! `retry_non_idempotent()`. Any
//! other method (`CONNECT`, extensions) is never retried. A request that is not retried goes
//! straight to the inner service, once, untouched: no body recording, no delay, no metrics —
//! as tower's `Retry` does when its policy declines to clone a request.
//!
//! # What a response means
//!
//! - `2xx` and `3xx`: success.
//! - `4xx` and `5xx`: a failure, classified by [`HttpError`] (statuses onto the seed's
//!   categories; `Retry-After`, `RateLimit` (or `RateLimit-Reset`) and `X-RateLimit-Reset` (or
//!   `X-Rate-Limit-Reset`) read by the core's parsers).
//!   Delay header values that are not UTF-8 or longer than [`MAX_DELAY_HEADER_BYTES`] count as
//!   absent, except a longer one of digits only: delay-seconds beyond any cap, which gives up. Every line of a delay header is read: `RateLimit` lines are joined into one list,
//!   and of repeated `Retry-After` (or `X-RateLimit-Reset`) lines the longest delay holds.
//! - A gRPC response (`content-type: application/grpc…`, feature `tonic`) carrying a non-zero
//!   `grpc-status` in its headers — a Trailers-Only answer — is classified by its code (see
//!   [`crate::grpc`]), with `grpc-retry-pushback-ms` as the server's delay; a gRPC response
//!   without one has committed to an answer (gRPC A6) and is a success here.
//! - An error of the inner service (no response at all) is classified by the `std::io::Error`
//!   in its source chain when there is one (a refused connection is a `ConnectionError`, a
//!   timeout a `TimeoutError`), and as a `ConnectionError` otherwise: no response arrived.
//!
//! # What the caller gets back
//!
//! The last response, whatever its status: like tower's `Retry`, an HTTP error status is a
//! response, not an error, so the caller reads its status and body as it would without the
//! retries. Errors are the inner service's last error, an attempt that timed out, or a circuit
//! that was open before any call was made ([`CallError`]).
//!
//! # Bodies
//!
//! See [`ReplayBody`]: recorded while the first attempt sends it, up to a limit
//! ([`DEFAULT_BODY_LIMIT`], 64 KiB); a body that did not fit, failed, or was still being sent
//! when the failure arrived is not sent again, and the failure is final.
//!
//! # Timeouts
//!
//! Give the per-attempt timeout to the layer or middleware (`attempt_timeout`), not to the
//! policy: the integration's own timer knows whether the body can be sent again after a
//! timed-out attempt, and it also ends an attempt when the policy's `max_elapsed` runs out, so
//! the total deadline holds even for a hanging upstream. A timed-out attempt is a
//! `TimeoutError`.
//!
//! # Failures that must not be retried
//!
//! Some failures must not be retried although their category is retryable: a `503` whose request
//! body could not be kept, a gRPC pushback that says "do not retry". Their classification is
//! [`final_failure`](Classification::final_failure): the category stays true (the breaker and
//! the budget count a `ServiceUnavailableError` or a `TimeoutError` as one, and so does
//! `retry_failure_total{error_type}`), and the executor gives up at once, as on a non-retryable
//! error; a `debug` event names the reason.
//!
//! # Idempotency keys and a store
//!
//! Given an idempotency store, a request with an `Idempotency-Key` is also deduplicated by it:
//! see [`idempotency`].

pub mod body;
pub mod idempotency;

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};
use ricochet_core::retry_after::{parse_server_delay, ServerDelayHeader};
use ricochet_core::ErrorCategory;

use crate::bounded::Timed;
use crate::classify::{Classification, Classify, HttpError};
use crate::coordination::wall_clock_us;
use crate::executor::{AttemptError, RetryError, RetryPolicy};
use crate::metrics::{FirstTry, RetryMetrics};

pub use body::{BodyTape, ReplayBody, DEFAULT_BODY_LIMIT};
pub use idempotency::{IdempotencyRefusal, IdempotentBody, DEFAULT_MAX_STORED_RESPONSE};

use idempotency::Deduplication;

/// The request header that makes a `POST` or `PATCH` retryable (IETF httpapi
/// `Idempotency-Key`).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Longest delay header value that is read: a real `Retry-After` is under 30 bytes. A longer
/// value of digits only is read too (as more seconds than any cap allows).
pub const MAX_DELAY_HEADER_BYTES: usize = 256;

/// Why a call through a retrying HTTP client returned no response.
#[derive(Debug)]
#[non_exhaustive]
pub enum CallError<E> {
    /// The inner service's (or client's) error from the last attempt.
    Inner(E),
    /// The last attempt ran past the per-attempt timeout.
    TimedOut(Duration),
    /// The circuit breaker was open: no request was sent.
    CircuitOpen {
        /// How long until the breaker lets a probe through.
        retry_after: Duration,
    },
    /// A request could not be made: a retry was due but the body could not be sent again
    /// (only when the *policy's* own attempt timeout, `RetryPolicy::with_attempt_timeout`,
    /// ended an attempt while its body was still being sent; the integration's
    /// `attempt_timeout` ends such a call with [`CallError::TimedOut`] instead), or the body
    /// failed while it was read ahead for an idempotency fingerprint.
    NotSent {
        /// Why.
        reason: &'static str,
    },
    /// A request with an `Idempotency-Key` that the idempotency store refused to send: the key
    /// was used for another request, or a request with it is still running.
    Idempotency(IdempotencyRefusal),
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inner(e) => e.fmt(f),
            Self::TimedOut(d) => write!(
                f,
                "TimeoutError: attempt timed out after {:.3}s",
                d.as_secs_f64()
            ),
            Self::CircuitOpen { retry_after } => write!(
                f,
                "circuit open: no request sent, retry after {:.3}s",
                retry_after.as_secs_f64()
            ),
            Self::NotSent { reason } => write!(f, "retry not sent: {reason}"),
            Self::Idempotency(refusal) => refusal.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Inner(e) => Some(e),
            Self::Idempotency(refusal) => Some(refusal),
            _ => None,
        }
    }
}

/// How the metrics and log lines name the operation of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationName {
    /// The same name for every request.
    Fixed(String),
    /// The request's method (`GET`, `POST`, …): the default for HTTP, bounded in number.
    Method,
    /// The request's path: the default for gRPC, where it names the method
    /// (`/grpc.health.v1.Health/Check`). Do not use it for HTTP paths with ids in them: every
    /// distinct path becomes a metric series.
    Path,
}

/// The settings every HTTP integration shares.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub policy: RetryPolicy,
    pub service: String,
    pub operation: OperationName,
    pub body_limit: usize,
    pub attempt_timeout: Option<Duration>,
    pub retry_non_idempotent: bool,
    /// gRPC over HTTP/2 sends every call as a `POST`; the caller opted in by putting the layer
    /// on a gRPC channel, as a `retryPolicy` in a service config does in A6.
    pub any_method: bool,
    /// The idempotency store that `Idempotency-Key`s key, when one is set, and its options.
    pub dedup: Deduplication,
    /// The first-try series of the operations this layer names, found once.
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    // the layer's first attempt; reqwest's is the executor's
    pub first_tries: FirstTries,
}

/// The first-try series ([`FirstTry`]) of the operations a layer or middleware names, kept so
/// that a call finds them without the metrics' own map (a read lock and two hashed lookups):
/// one per standard method when the method names the operation, one for a fixed name; a
/// path names too many to keep.
///
/// A copy starts empty: the settings it is copied into may name operations otherwise.
#[derive(Default)]
pub(crate) struct FirstTries([OnceLock<Arc<FirstTry>>; 9]);

impl FirstTries {
    /// The slot of `method`'s operation under `naming`, when there is one.
    #[inline]
    #[cfg_attr(not(feature = "tower"), allow(dead_code))] // the layer's first attempt; reqwest's is the executor's
    fn slot(naming: &OperationName, method: &Method) -> Option<usize> {
        match naming {
            OperationName::Fixed(_) => Some(0),
            OperationName::Path => None,
            OperationName::Method => [
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::DELETE,
                Method::HEAD,
                Method::OPTIONS,
                Method::CONNECT,
                Method::PATCH,
                Method::TRACE,
            ]
            .iter()
            .position(|m| m == method),
        }
    }
}

impl Clone for FirstTries {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl fmt::Debug for FirstTries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kept = self.0.iter().filter(|s| s.get().is_some()).count();
        f.debug_struct("FirstTries").field("kept", &kept).finish()
    }
}

impl Settings {
    pub fn new(policy: RetryPolicy, service: impl Into<String>) -> Self {
        Self {
            policy,
            service: service.into(),
            operation: OperationName::Method,
            body_limit: DEFAULT_BODY_LIMIT,
            attempt_timeout: None,
            retry_non_idempotent: false,
            any_method: false,
            dedup: Deduplication::default(),
            first_tries: FirstTries::default(),
        }
    }

    /// Whether a request with this method and these headers may be retried.
    #[inline]
    pub fn retries(&self, method: &Method, headers: &HeaderMap) -> bool {
        if self.any_method {
            return true;
        }
        const IDEMPOTENT: [Method; 6] = [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
            Method::TRACE,
        ];
        if IDEMPOTENT.contains(method) {
            return true;
        }
        (method == Method::POST || method == Method::PATCH)
            && (self.retry_non_idempotent || idempotency::usable_key(headers).is_some())
    }

    /// The first-try series of `operation` (the name of a request with `method`), from
    /// `metrics`: kept after the first call when the operation is one [`FirstTries`] keeps.
    /// The metrics are the policy's, the same for every call of these settings.
    #[inline]
    #[cfg_attr(not(feature = "tower"), allow(dead_code))] // the layer's first attempt; reqwest's is the executor's
    pub fn first_try(
        &self,
        metrics: &RetryMetrics,
        method: &Method,
        service: &str,
        operation: &str,
    ) -> Arc<FirstTry> {
        match FirstTries::slot(&self.operation, method) {
            Some(slot) => self.first_tries.0[slot]
                .get_or_init(|| metrics.first_try(service, operation))
                .clone(),
            None => metrics.first_try(service, operation),
        }
    }

    /// The operation name of a request.
    #[inline]
    pub fn operation<'a>(&'a self, method: &'a Method, path: &'a str) -> &'a str {
        self.operation_with(method, || path)
    }

    /// The operation name of a request whose path is read only when it names the operation.
    #[inline]
    pub fn operation_with<'a>(
        &'a self,
        method: &'a Method,
        path: impl FnOnce() -> &'a str,
    ) -> &'a str {
        match &self.operation {
            OperationName::Fixed(name) => name,
            OperationName::Method => method.as_str(),
            OperationName::Path => path(),
        }
    }
}

/// A failed response: what it means to the policy, and how the log line shows it.
#[derive(Debug, Clone)]
pub(crate) struct ResponseFailure {
    pub class: Classification,
    pub summary: String,
}

/// Whether a response is a failure, and what kind. `None` for a success.
#[inline]
pub(crate) fn classify_response(
    status: StatusCode,
    headers: &HeaderMap,
) -> Option<ResponseFailure> {
    #[cfg(feature = "tonic")]
    if let Some(failure) = crate::grpc::classify_grpc_headers(status, headers) {
        return failure;
    }
    if !(status.is_client_error() || status.is_server_error()) {
        return None;
    }
    classify_error_status(status, headers)
}

/// A `4xx` or `5xx` response classified, its delay headers read by the core's parsers.
///
/// Every line of a delay header is read, not only the first: `RateLimit` is a list, so its
/// lines are one value joined with `", "` (RFC 9110 §5.3), and of several lines of a field
/// that holds one value (`Retry-After`, `X-RateLimit-Reset`) the longest delay holds, so
/// that a retry never comes sooner than any of them asked. The other names the core knows
/// are read too: the earlier drafts' `RateLimit-Reset` (when there is no `RateLimit`) and
/// Twitter's `X-Rate-Limit-Reset`.
fn classify_error_status(status: StatusCode, headers: &HeaderMap) -> Option<ResponseFailure> {
    // A long value of digits only is delay-seconds all the same (the core saturates it, and
    // it is beyond any cap): the server asked for longer than anything, not for nothing.
    let readable = |v: &http::HeaderValue| {
        v.len() <= MAX_DELAY_HEADER_BYTES
            || v.as_bytes().trim_ascii().iter().all(u8::is_ascii_digit)
    };
    let lines = |name: &'static str| {
        headers
            .get_all(name)
            .iter()
            .filter(|v| readable(v))
            .filter_map(|v| v.to_str().ok())
    };
    let now_us = wall_clock_us();
    let longest = |names: &[&'static str], header: ServerDelayHeader| {
        names
            .iter()
            .flat_map(|&name| lines(name))
            .max_by_key(|v| parse_server_delay(header, v, now_us))
            .map(str::to_owned)
    };
    let ratelimit = lines("ratelimit").collect::<Vec<_>>().join(", ");
    let ratelimit = if ratelimit.is_empty() {
        longest(&["ratelimit-reset"], ServerDelayHeader::RateLimit)
    } else {
        Some(ratelimit)
    };
    let delay_headers = [
        (
            "retry-after",
            longest(&["retry-after"], ServerDelayHeader::RetryAfter),
        ),
        ("ratelimit", ratelimit),
        (
            "x-ratelimit-reset",
            longest(
                &["x-ratelimit-reset", "x-rate-limit-reset"],
                ServerDelayHeader::XRateLimitReset,
            ),
        ),
    ];
    let error = HttpError::from_headers(
        status.as_u16(),
        delay_headers
            .iter()
            .filter_map(|(name, value)| Some((*name, value.as_deref()?))),
    );
    Some(ResponseFailure {
        class: error.classify(),
        summary: error.to_string(),
    })
}

/// An error with no response: the `io::Error` in its source chain decides, else it is a
/// connection failure (nothing came back).
pub(crate) fn classify_transport(error: &(dyn std::error::Error + 'static)) -> Classification {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.classify();
        }
        if e.is::<tokio::time::error::Elapsed>() {
            return Classification::new(ErrorCategory::Timeout);
        }
        next = e.source();
    }
    Classification::new(ErrorCategory::Connection)
}

/// `class`, made final when `not_retried` says why it must not be retried.
pub(crate) fn settle(
    class: Classification,
    not_retried: Option<&'static str>,
    service: &str,
    operation: &str,
) -> Classification {
    match not_retried {
        None => class,
        Some(reason) => {
            tracing::debug!(target: "ricochet::http", service, operation, reason, "failure not retried");
            class.final_failure()
        }
    }
}

/// The time an attempt may take: the attempt timeout, cut to what is left of the policy's
/// `max_elapsed` (so a hanging upstream cannot hold a call past its deadline).
///
/// The deadline is on tokio's clock, as the attempts' timers and the policy's default clock
/// are (the same as std's, except that it follows `tokio::time::pause()`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttemptClock {
    timeout: Option<Duration>,
    /// When `max_elapsed` runs out, from when the call started.
    deadline: Option<tokio::time::Instant>,
}

impl AttemptClock {
    /// The clock of a call starting now; the clock is read only when there is a `max_elapsed`.
    #[inline]
    #[cfg_attr(not(feature = "reqwest"), allow(dead_code))] // the middleware's; the layer's calls start with their labels
    pub fn start(timeout: Option<Duration>, policy: &ricochet_core::Policy) -> Self {
        Self {
            timeout,
            deadline: policy
                .max_elapsed_us()
                .and_then(|us| tokio::time::Instant::now().checked_add(Duration::from_micros(us))),
        }
    }

    /// The clock of a call that started at `started` (`None`: its start was not read, for
    /// nothing reads it without a `max_elapsed`; with one, the call starts now).
    #[inline]
    #[cfg_attr(not(feature = "tower"), allow(dead_code))] // the layer's first attempt; reqwest's is the executor's
    pub fn since(
        timeout: Option<Duration>,
        policy: &ricochet_core::Policy,
        started: Option<tokio::time::Instant>,
    ) -> Self {
        Self {
            timeout,
            deadline: policy.max_elapsed_us().and_then(|us| {
                started
                    .unwrap_or_else(tokio::time::Instant::now)
                    .checked_add(Duration::from_micros(us))
            }),
        }
    }

    /// The limit for an attempt starting now; `None` for none.
    #[inline]
    pub fn limit(&self) -> Option<Duration> {
        let left = self
            .deadline
            .map(|deadline| deadline.saturating_duration_since(tokio::time::Instant::now()));
        match (self.timeout, left) {
            (Some(t), Some(l)) => Some(t.min(l)),
            (t, l) => t.or(l),
        }
    }

    /// Runs `attempt` within the limit from now.
    pub fn bound<F: std::future::Future>(self, attempt: F) -> TimedAttempt<F> {
        TimedAttempt {
            inner: Timed::new(attempt, self.limit()),
        }
    }
}

pin_project_lite::pin_project! {
    /// An attempt within its time: one that runs out is [`Failed::TimedOut`].
    pub(crate) struct TimedAttempt<F> {
        #[pin]
        inner: Timed<F>,
    }
}

impl<F, T, R, E> std::future::Future for TimedAttempt<F>
where
    F: std::future::Future<Output = Result<T, Failed<R, E>>>,
{
    type Output = Result<T, Failed<R, E>>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.project()
            .inner
            .poll(cx)
            .map(|r| r.unwrap_or_else(|limit| Err(Failed::TimedOut(limit))))
    }
}

/// One failed attempt, as the executor sees it.
pub(crate) enum Failed<R, E> {
    /// A response that is a failure; returned as it is when it is the last.
    Response {
        response: R,
        failure: ResponseFailure,
    },
    /// No response: the inner service's error.
    Transport(E),
    /// No response within the attempt's time.
    TimedOut(Duration),
    /// The request could not be made again (see [`CallError::NotSent`]).
    NotSent(&'static str),
}

impl<R, E: fmt::Display> fmt::Display for Failed<R, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Response { failure, .. } => f.write_str(&failure.summary),
            Self::Transport(e) => e.fmt(f),
            Self::TimedOut(d) => write!(
                f,
                "TimeoutError: attempt timed out after {:.3}s",
                d.as_secs_f64()
            ),
            Self::NotSent(reason) => write!(f, "retry not sent: {reason}"),
        }
    }
}

impl<R, E: std::error::Error + 'static> Failed<R, E> {
    /// The classification, before the replay check.
    pub fn classification(&self) -> Classification {
        match self {
            Self::Response { failure, .. } => failure.class,
            Self::Transport(e) => classify_transport(e),
            Self::TimedOut(_) => Classification::new(ErrorCategory::Timeout),
            Self::NotSent(_) => Classification::new(ErrorCategory::Connection),
        }
    }
}

/// The executor's answer as the HTTP caller gets it: the last response, or an error.
pub(crate) fn finish<R, E>(
    outcome: Result<R, RetryError<Failed<R, E>>>,
) -> Result<R, CallError<E>> {
    let last = match outcome {
        Ok(response) => return Ok(response),
        Err(RetryError::NonRetryable(failed)) => failed,
        Err(RetryError::MaxRetriesExceeded(m)) => match m.last_error {
            AttemptError::Failed(failed) => failed,
            AttemptError::TimedOut(d) => return Err(CallError::TimedOut(d)),
        },
        Err(RetryError::CircuitOpen { retry_after }) => {
            return Err(CallError::CircuitOpen { retry_after })
        }
    };
    match last {
        Failed::Response { response, .. } => Ok(response),
        Failed::Transport(e) => Err(CallError::Inner(e)),
        Failed::TimedOut(d) => Err(CallError::TimedOut(d)),
        Failed::NotSent(reason) => Err(CallError::NotSent { reason }),
    }
}
