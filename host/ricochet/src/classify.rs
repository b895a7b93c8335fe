//! Classification: mapping a host error onto the core's categories.
//!
//! The core never sees an error type, only an [`ErrorCategory`] and an optional server delay.
//! [`Classify`] is implemented here for `std::io::Error` (by kind), tokio's `Elapsed`,
//! `redis::RedisError` (by its own retry hints) and [`HttpError`] (status and headers); users
//! implement it for their own errors.
//!
//! # HTTP
//!
//! The retryable statuses are listed, not a range: AWS's standard retry mode retries 500, 502,
//! 503 and 504 (and throttling), Envoy's `gateway-error` 502, 503 and 504. Any other 5xx — 501
//! Not Implemented, 505 HTTP Version Not Supported, 507 Insufficient Storage, 511 Network
//! Authentication Required, a 599 from some proxy — is a definite answer that a retry will
//! not change.
//!
//! | status | category | retried by default |
//! |---|---|---|
//! | 429, and 503 with a delay header | `RateLimited`, with the server's `Retry-After`, `RateLimit` or `X-RateLimit-Reset` delay | yes |
//! | 500, 502, 504, a bare 503 | `ServiceUnavailable` | yes |
//! | 425 Too Early (RFC 8470: resend after the handshake) | `ServiceUnavailable` | yes |
//! | 408 | `Timeout` | yes |
//! | 401 | `AuthExpired` | once, after a token refresh |
//! | 403, 407, 511 | `Authentication` | no |
//! | 404, 410 | `ResourceNotFound` | no |
//! | 400, 413, 414, 415, 422, 431, 501, 505 | `Validation` | no |
//! | 409 and every other status | `BusinessLogic` | no |
//!
//! # I/O errors
//!
//! An `io::Error` is classified by what it wraps first: an `io::Error::other(HttpError …)` is
//! the `HttpError`'s category, whatever its kind (as [`classify_any`] finds it). Otherwise by
//! kind: time-outs are `Timeout`; refused, reset, aborted, broken or unreachable connections
//! are `Connection`; `ResourceBusy` is `ServiceUnavailable`; `PermissionDenied` is
//! `Authentication`; `NotFound` is `ResourceNotFound`; invalid input or data is `Validation`;
//! everything else — a full disk (`StorageFull`) and an exceeded quota (`QuotaExceeded`)
//! alike, which no retry within seconds frees — is `BusinessLogic`.
//!
//! # Redis (feature `redis`)
//!
//! Time-outs are `Timeout`; refused or dropped connections and other I/O failures are
//! `Connection` — except an I/O `PermissionDenied`, which is `Authentication`. Credentials the
//! server refuses (`NOAUTH`, `WRONGPASS`, a failed `AUTH`) and a command the ACL forbids
//! (`NOPERM`) are `Authentication`. A server that is busy (`BUSY`: a script running, `LOADING`,
//! `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`) is `ServiceUnavailable`, as are redirections the
//! client did not follow (`MOVED`, `ASK`) and `READONLY` after a fail-over. Every other server
//! error (`ERR`, `WRONGTYPE`, `NOSCRIPT`, …) and client-side error is `BusinessLogic`.

use std::fmt;
use std::io;
use std::time::Duration;

use ricochet_core::http::{classify_response, DelayHeaders};
use ricochet_core::retry_after::ServerDelayHeader;
use ricochet_core::ErrorCategory;

use crate::coordination::wall_clock_us;

/// What an error means to the retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    /// The category.
    pub category: ErrorCategory,
    /// The delay the server asked for, if any.
    pub server_delay: Option<Duration>,
    /// This failure must not be retried, whatever its category: the server said so (a gRPC
    /// pushback of "do not retry"), or the request cannot be sent again (its body was not
    /// kept). The category still counts as it is (the breaker and the budget see a
    /// `ServiceUnavailableError` as one), and the call gives up at once as on a
    /// non-retryable error.
    pub do_not_retry: bool,
}

impl Classification {
    /// A category with no server delay.
    pub const fn new(category: ErrorCategory) -> Self {
        Self {
            category,
            server_delay: None,
            do_not_retry: false,
        }
    }

    /// A category with the delay the server asked for.
    pub const fn with_server_delay(category: ErrorCategory, delay: Option<Duration>) -> Self {
        Self {
            category,
            server_delay: delay,
            do_not_retry: false,
        }
    }

    /// The same failure, not to be retried (see [`do_not_retry`](Self::do_not_retry)).
    #[must_use]
    pub const fn final_failure(mut self) -> Self {
        self.do_not_retry = true;
        self
    }
}

impl From<ErrorCategory> for Classification {
    fn from(category: ErrorCategory) -> Self {
        Self::new(category)
    }
}

/// Maps an error onto the core's categories.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not implement `ricochet::Classify`: ricochet cannot tell which of its errors to retry",
    label = "this error type is not classified",
    note = "with `#[with_retry]`, list the error types to retry: `#[with_retry(retry_on = (std::io::Error, MyError), …)]` (this also works for `Box<dyn Error>` and `anyhow::Error`)",
    note = "or implement `ricochet::Classify` for your error type, or call `RetryPolicy::execute_classified` with a classifier"
)]
pub trait Classify {
    /// The category of this error, and the server's delay if it sent one.
    fn classify(&self) -> Classification;
}

impl Classify for io::Error {
    fn classify(&self) -> Classification {
        if let Some(inner) = self.get_ref() {
            if let Some(known) = classify_known(inner) {
                return known;
            }
        }
        Classification::new(io_kind_category(self.kind()))
    }
}

/// The category of an I/O error kind (see the module docs).
fn io_kind_category(kind: io::ErrorKind) -> ErrorCategory {
    {
        use io::ErrorKind as K;
        match kind {
            K::TimedOut | K::WouldBlock => ErrorCategory::Timeout,
            K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::BrokenPipe
            | K::UnexpectedEof
            | K::Interrupted
            | K::AddrNotAvailable
            | K::NetworkUnreachable
            | K::HostUnreachable
            | K::NetworkDown => ErrorCategory::Connection,
            K::PermissionDenied => ErrorCategory::Authentication,
            K::NotFound => ErrorCategory::ResourceNotFound,
            K::InvalidInput | K::InvalidData => ErrorCategory::Validation,
            K::ResourceBusy => ErrorCategory::ServiceUnavailable,
            // StorageFull, QuotaExceeded and the rest: nothing a retry soon would change.
            _ => ErrorCategory::BusinessLogic,
        }
    }
}

impl Classify for tokio::time::error::Elapsed {
    fn classify(&self) -> Classification {
        Classification::new(ErrorCategory::Timeout)
    }
}

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
impl Classify for redis::RedisError {
    fn classify(&self) -> Classification {
        use redis::{ErrorKind as K, ServerErrorKind as S};
        use std::error::Error;
        // An I/O failure is kept behind an `Arc` in the error's source.
        let io_kind = self
            .source()
            .and_then(|e| {
                e.downcast_ref::<io::Error>().or_else(|| {
                    e.downcast_ref::<std::sync::Arc<dyn Error + Send + Sync>>()
                        .and_then(|inner| inner.downcast_ref::<io::Error>())
                })
            })
            .map(io::Error::kind);
        let category = if self.is_timeout() {
            ErrorCategory::Timeout
        } else if io_kind == Some(io::ErrorKind::PermissionDenied) {
            ErrorCategory::Authentication
        } else if self.is_connection_refusal() || self.is_connection_dropped() || self.is_io_error()
        {
            ErrorCategory::Connection
        } else {
            match self.kind() {
                K::AuthenticationFailed | K::Server(S::NoPerm) => ErrorCategory::Authentication,
                K::Server(
                    S::BusyLoading
                    | S::TryAgain
                    | S::ClusterDown
                    | S::MasterDown
                    | S::Moved
                    | S::Ask
                    | S::ReadOnly,
                ) => ErrorCategory::ServiceUnavailable,
                // Codes the client does not know by name.
                _ => match self.code() {
                    Some("NOAUTH" | "WRONGPASS" | "NOPERM") => ErrorCategory::Authentication,
                    Some("BUSY" | "LOADING" | "MASTERDOWN" | "TRYAGAIN" | "CLUSTERDOWN") => {
                        ErrorCategory::ServiceUnavailable
                    }
                    _ => ErrorCategory::BusinessLogic,
                },
            }
        };
        Classification::new(category)
    }
}

/// An HTTP response that failed: its status and the headers that carry a server delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The status code.
    pub status: u16,
    /// `Retry-After`, if present.
    pub retry_after: Option<String>,
    /// `RateLimit`, if present.
    pub ratelimit: Option<String>,
    /// `X-RateLimit-Reset`, if present.
    pub x_ratelimit_reset: Option<String>,
}

impl HttpError {
    /// A failed response with no delay headers.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
            ratelimit: None,
            x_ratelimit_reset: None,
        }
    }

    /// A failed response, picking the delay headers out of `(name, value)` pairs. A header
    /// given more than once (a client library that hands over each field line, as aiohttp's
    /// `CIMultiDict` does) has its values joined with `", "`, which the core reads as a list: the
    /// longest delay holds, so a retry never comes sooner than any line asked.
    pub fn from_headers<'a>(
        status: u16,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let mut e = Self::status(status);
        for (name, value) in headers {
            let slot = match ServerDelayHeader::from_name(name) {
                Some(ServerDelayHeader::RetryAfter) => &mut e.retry_after,
                Some(ServerDelayHeader::RateLimit) => &mut e.ratelimit,
                Some(ServerDelayHeader::XRateLimitReset) => &mut e.x_ratelimit_reset,
                None => continue,
            };
            match slot {
                Some(joined) => {
                    joined.push_str(", ");
                    joined.push_str(value);
                }
                None => *slot = Some(value.to_string()),
            }
        }
        e
    }

    /// The server's delay, from the first delay header that parses (garbage counts as absent).
    pub fn server_delay(&self) -> Option<Duration> {
        DelayHeaders {
            retry_after: self.retry_after.as_deref(),
            ratelimit: self.ratelimit.as_deref(),
            x_ratelimit_reset: self.x_ratelimit_reset.as_deref(),
        }
        .server_delay_us(wall_clock_us())
        .map(Duration::from_micros)
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(r) = &self.retry_after {
            write!(f, " (Retry-After: {r})")?;
        }
        Ok(())
    }
}

impl std::error::Error for HttpError {}

/// The category of an HTTP status (see the module docs for the table; the core's
/// [`status_category`](ricochet_core::http::status_category)). A 503 is `RateLimited` here;
/// [`HttpError::classify`] makes a 503 without a delay header `ServiceUnavailable`.
pub fn http_status_category(status: u16) -> ErrorCategory {
    ricochet_core::http::status_category(status)
}

impl Classify for HttpError {
    fn classify(&self) -> Classification {
        let headers = DelayHeaders {
            retry_after: self.retry_after.as_deref(),
            ratelimit: self.ratelimit.as_deref(),
            x_ratelimit_reset: self.x_ratelimit_reset.as_deref(),
        };
        // The core's rule (one source with the component's `http` interface); a status below
        // 400 that reached an `HttpError` is some failure the table does not name.
        match classify_response(self.status, headers, wall_clock_us()) {
            Some(f) => Classification::with_server_delay(
                f.category,
                f.server_delay_us.map(Duration::from_micros),
            ),
            None => Classification::new(http_status_category(self.status)),
        }
    }
}

impl<E: Classify + ?Sized> Classify for Box<E> {
    fn classify(&self) -> Classification {
        (**self).classify()
    }
}

/// Classifies an error of unknown type by looking for the types this module knows —
/// directly, inside a `Box<dyn Error>`, or as the source of an `io::Error` — for errors that do
/// not implement [`Classify`] (the `retry_on` list of `#[with_retry]`).
pub fn classify_any(e: &(dyn std::any::Any + 'static)) -> Option<Classification> {
    let known = classify_known;
    if let Some(e) = e.downcast_ref::<io::Error>() {
        return Some(e.classify());
    }
    if let Some(e) = e.downcast_ref::<HttpError>() {
        return Some(e.classify());
    }
    if let Some(e) = e.downcast_ref::<tokio::time::error::Elapsed>() {
        return Some(e.classify());
    }
    #[cfg(feature = "redis")]
    if let Some(e) = e.downcast_ref::<redis::RedisError>() {
        return Some(e.classify());
    }
    if let Some(e) = e.downcast_ref::<Box<dyn std::error::Error + Send + Sync>>() {
        return known(e.as_ref());
    }
    if let Some(e) = e.downcast_ref::<Box<dyn std::error::Error>>() {
        return known(e.as_ref());
    }
    #[cfg(feature = "anyhow")]
    if let Some(e) = e.downcast_ref::<anyhow::Error>() {
        return known(e.as_ref());
    }
    None
}

/// The classification of an error of a type this module knows (an `io::Error` by what it
/// wraps, then by kind); `None` for any other type.
fn classify_known(e: &(dyn std::error::Error + 'static)) -> Option<Classification> {
    if let Some(e) = e.downcast_ref::<HttpError>() {
        return Some(e.classify());
    }
    if let Some(e) = e.downcast_ref::<tokio::time::error::Elapsed>() {
        return Some(e.classify());
    }
    #[cfg(feature = "redis")]
    if let Some(e) = e.downcast_ref::<redis::RedisError>() {
        return Some(e.classify());
    }
    if let Some(io) = e.downcast_ref::<io::Error>() {
        return Some(io.classify());
    }
    None
}

/// Whether `e` is a `T` — directly, inside a `Box<dyn Error>` or `anyhow::Error`, or as the
/// source of an `io::Error`. Used by `#[with_retry(retry_on = (…))]`.
pub fn is_error_type<T: std::error::Error + 'static>(e: &(dyn std::any::Any + 'static)) -> bool {
    fn inside<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
        e.is::<T>()
            || e.downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inside::<T>(inner))
    }
    if e.is::<T>() {
        return true;
    }
    if let Some(io) = e.downcast_ref::<io::Error>() {
        return io.get_ref().is_some_and(|inner| inside::<T>(inner));
    }
    if let Some(b) = e.downcast_ref::<Box<dyn std::error::Error + Send + Sync>>() {
        return inside::<T>(b.as_ref());
    }
    if let Some(b) = e.downcast_ref::<Box<dyn std::error::Error>>() {
        return inside::<T>(b.as_ref());
    }
    #[cfg(feature = "anyhow")]
    if let Some(a) = e.downcast_ref::<anyhow::Error>() {
        return inside::<T>(a.as_ref());
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_map_to_the_documented_categories() {
        let table = [
            (429, ErrorCategory::RateLimited),
            (503, ErrorCategory::ServiceUnavailable),
            (500, ErrorCategory::ServiceUnavailable),
            (502, ErrorCategory::ServiceUnavailable),
            (504, ErrorCategory::ServiceUnavailable),
            (400, ErrorCategory::Validation),
            (404, ErrorCategory::ResourceNotFound),
            (409, ErrorCategory::BusinessLogic),
            (422, ErrorCategory::Validation),
            (401, ErrorCategory::AuthExpired),
        ];
        for (status, category) in table {
            assert_eq!(
                HttpError::status(status).classify().category,
                category,
                "{status}"
            );
        }
    }

    #[test]
    fn only_the_listed_5xx_are_retried_and_425_is() {
        let retried = |status: u16| {
            ricochet_core::CategorySet::SEED_RETRYABLE
                .contains(HttpError::status(status).classify().category)
        };
        for status in [500, 502, 503, 504, 425, 408, 429] {
            assert!(retried(status), "{status} is retried");
        }
        // A definite answer that a retry will not change (before: every s >= 500 was retried).
        for status in [
            501, 505, 506, 507, 508, 510, 511, 599, 400, 404, 409, 413, 422,
        ] {
            assert!(!retried(status), "{status} is not retried");
        }
        let table = [
            (501, ErrorCategory::Validation),
            (505, ErrorCategory::Validation),
            (511, ErrorCategory::Authentication),
            (407, ErrorCategory::Authentication),
            (507, ErrorCategory::BusinessLogic),
            (599, ErrorCategory::BusinessLogic),
            (425, ErrorCategory::ServiceUnavailable),
            (0, ErrorCategory::BusinessLogic),
            (u16::MAX, ErrorCategory::BusinessLogic),
        ];
        for (status, category) in table {
            assert_eq!(
                HttpError::status(status).classify().category,
                category,
                "{status}"
            );
        }
    }

    #[test]
    fn an_io_error_is_classified_by_what_it_wraps_then_by_kind() {
        // Before: `io::Error::other(HttpError 503)` was BusinessLogic (kind Other).
        let wrapped = io::Error::other(HttpError::status(503));
        assert_eq!(
            wrapped.classify().category,
            ErrorCategory::ServiceUnavailable
        );
        assert_eq!(
            classify_any(&wrapped).map(|c| c.category),
            Some(wrapped.classify().category),
            "classify_any and Classify agree"
        );
        let throttled = io::Error::other(HttpError::from_headers(429, [("Retry-After", "2")]));
        assert_eq!(
            throttled.classify(),
            Classification::with_server_delay(
                ErrorCategory::RateLimited,
                Some(Duration::from_secs(2))
            )
        );
        // Nested twice, and under a kind that says otherwise.
        let nested = io::Error::new(
            io::ErrorKind::InvalidData,
            io::Error::other(HttpError::status(404)),
        );
        assert_eq!(nested.classify().category, ErrorCategory::ResourceNotFound);
        // Wrapping a type this module does not know: the kind decides.
        let opaque = io::Error::new(io::ErrorKind::ConnectionReset, "peer went away");
        assert_eq!(opaque.classify().category, ErrorCategory::Connection);
        // A full disk and an exceeded quota agree: neither frees up within a retry.
        assert_eq!(
            io::Error::from(io::ErrorKind::StorageFull)
                .classify()
                .category,
            io::Error::from(io::ErrorKind::QuotaExceeded)
                .classify()
                .category
        );
        assert_eq!(
            io::Error::from(io::ErrorKind::QuotaExceeded)
                .classify()
                .category,
            ErrorCategory::BusinessLogic
        );
        assert_eq!(
            io::Error::from(io::ErrorKind::ResourceBusy)
                .classify()
                .category,
            ErrorCategory::ServiceUnavailable
        );
    }

    #[test]
    fn retry_after_seconds_and_dates_become_server_delays() {
        let e = HttpError::from_headers(429, [("Retry-After", "3")]);
        assert_eq!(e.classify().server_delay, Some(Duration::from_secs(3)));
        let e = HttpError::from_headers(503, [("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]);
        assert_eq!(
            e.classify().server_delay,
            Some(Duration::ZERO),
            "a past date means now"
        );
        let e = HttpError::from_headers(503, [("Retry-After", "soon")]);
        assert_eq!(e.classify().server_delay, None, "garbage is absent");
        let e = HttpError::from_headers(500, [("Retry-After", "3")]);
        assert_eq!(
            e.classify().server_delay,
            None,
            "only throttling carries a delay"
        );
    }

    #[test]
    fn a_delay_header_given_line_by_line_takes_its_longest_line() {
        for lines in [
            [("Retry-After", "1"), ("retry-after", "0")],
            [("Retry-After", "0"), ("retry-after", "1")],
        ] {
            let e = HttpError::from_headers(429, lines);
            assert_eq!(
                e.classify().server_delay,
                Some(Duration::from_secs(1)),
                "{lines:?}"
            );
        }
        let e = HttpError::from_headers(
            429,
            [("X-RateLimit-Reset", "5"), ("x-ratelimit-reset", "2")],
        );
        assert_eq!(e.classify().server_delay, Some(Duration::from_secs(5)));
        let e = HttpError::from_headers(429, [("Retry-After", "soon"), ("Retry-After", "2")]);
        assert_eq!(
            e.classify().server_delay,
            Some(Duration::from_secs(2)),
            "a bad line is skipped"
        );
    }

    #[test]
    fn io_errors_by_kind_and_nested_types_are_found() {
        let e = io::Error::new(io::ErrorKind::ConnectionRefused, "nope");
        assert_eq!(e.classify().category, ErrorCategory::Connection);
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(HttpError::status(502));
        assert_eq!(
            classify_any(&boxed).map(|c| c.category),
            Some(ErrorCategory::ServiceUnavailable)
        );
        assert!(is_error_type::<HttpError>(&boxed));
        assert!(!is_error_type::<io::Error>(&boxed));
        let wrapped = io::Error::other(HttpError::status(404));
        assert!(is_error_type::<HttpError>(&wrapped));
        assert_eq!(
            classify_any(&wrapped).map(|c| c.category),
            Some(ErrorCategory::ResourceNotFound)
        );
    }
}
