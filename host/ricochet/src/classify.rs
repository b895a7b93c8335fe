//! Classification: mapping a host error onto the core's categories.
//!
//! The core never sees an error type, only an [`ErrorCategory`] and an optional server delay.
//! [`Classify`] is implemented here for `std::io::Error` (by kind), tokio's `Elapsed`,
//! `redis::RedisError` (by its own retry hints) and [`HttpError`] (status and headers); users
//! implement it for their own errors.
//!
//! HTTP follows the usual conventions: 429, and 503 with a delay header, are throttling
//! (`RateLimited`, with the server's `Retry-After`, `RateLimit` or `X-RateLimit-Reset` delay);
//! 500, 502, 504 and a bare 503 are `ServiceUnavailable`; 408 is `Timeout`; 401 is `AuthExpired` (retried once after a token
//! refresh); 403 `Authentication`; 404 and 410 `ResourceNotFound`; 400 and 422 `Validation`;
//! 409 and other 4xx `BusinessLogic`.

use std::fmt;
use std::io;
use std::time::Duration;

use ricochet_core::retry_after::{parse_server_delay, ServerDelayHeader};
use ricochet_core::ErrorCategory;

use crate::coordination::wall_clock_us;

/// What an error means to the retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    /// The category.
    pub category: ErrorCategory,
    /// The delay the server asked for, if any.
    pub server_delay: Option<Duration>,
}

impl Classification {
    /// A category with no server delay.
    pub const fn new(category: ErrorCategory) -> Self {
        Self {
            category,
            server_delay: None,
        }
    }
}

impl From<ErrorCategory> for Classification {
    fn from(category: ErrorCategory) -> Self {
        Self::new(category)
    }
}

/// Maps an error onto the core's categories.
pub trait Classify {
    /// The category of this error, and the server's delay if it sent one.
    fn classify(&self) -> Classification;
}

impl Classify for io::Error {
    fn classify(&self) -> Classification {
        use io::ErrorKind as K;
        let category = match self.kind() {
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
            K::ResourceBusy | K::QuotaExceeded => ErrorCategory::ServiceUnavailable,
            _ => ErrorCategory::BusinessLogic,
        };
        Classification::new(category)
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
        let category = if self.is_timeout() {
            ErrorCategory::Timeout
        } else if self.is_connection_refusal() || self.is_connection_dropped() || self.is_io_error()
        {
            ErrorCategory::Connection
        } else if self.kind() == redis::ErrorKind::AuthenticationFailed {
            ErrorCategory::Authentication
        } else if matches!(self.retry_method(), redis::RetryMethod::NoRetry) {
            ErrorCategory::BusinessLogic
        } else {
            ErrorCategory::ServiceUnavailable
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

    /// A failed response, picking the delay headers out of `(name, value)` pairs.
    pub fn from_headers<'a>(
        status: u16,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let mut e = Self::status(status);
        for (name, value) in headers {
            match ServerDelayHeader::from_name(name) {
                Some(ServerDelayHeader::RetryAfter) => e.retry_after = Some(value.to_string()),
                Some(ServerDelayHeader::RateLimit) => e.ratelimit = Some(value.to_string()),
                Some(ServerDelayHeader::XRateLimitReset) => {
                    e.x_ratelimit_reset = Some(value.to_string())
                }
                None => {}
            }
        }
        e
    }

    /// The server's delay, from the first delay header that parses (garbage counts as absent).
    pub fn server_delay(&self) -> Option<Duration> {
        let now = wall_clock_us();
        [
            (ServerDelayHeader::RetryAfter, &self.retry_after),
            (ServerDelayHeader::RateLimit, &self.ratelimit),
            (ServerDelayHeader::XRateLimitReset, &self.x_ratelimit_reset),
        ]
        .into_iter()
        .find_map(|(h, v)| v.as_deref().and_then(|v| parse_server_delay(h, v, now)))
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

/// The category of an HTTP status (see the module docs for the table).
pub fn http_status_category(status: u16) -> ErrorCategory {
    match status {
        429 | 503 => ErrorCategory::RateLimited,
        500 | 502 | 504 => ErrorCategory::ServiceUnavailable,
        408 => ErrorCategory::Timeout,
        401 => ErrorCategory::AuthExpired,
        403 => ErrorCategory::Authentication,
        404 | 410 => ErrorCategory::ResourceNotFound,
        400 | 422 => ErrorCategory::Validation,
        s if s >= 500 => ErrorCategory::ServiceUnavailable,
        _ => ErrorCategory::BusinessLogic,
    }
}

impl Classify for HttpError {
    fn classify(&self) -> Classification {
        let category = http_status_category(self.status);
        if category != ErrorCategory::RateLimited {
            return Classification::new(category);
        }
        let server_delay = self.server_delay();
        // A 503 that says nothing about when to come back is an outage, not throttling.
        if self.status == 503 && server_delay.is_none() {
            return Classification::new(ErrorCategory::ServiceUnavailable);
        }
        Classification {
            category,
            server_delay,
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
    fn known(e: &(dyn std::error::Error + 'static)) -> Option<Classification> {
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
            if let Some(inner) = io.get_ref() {
                if let Some(c) = known(inner) {
                    return Some(c);
                }
            }
            return Some(io.classify());
        }
        None
    }
    if let Some(e) = e.downcast_ref::<io::Error>() {
        return known(e);
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
