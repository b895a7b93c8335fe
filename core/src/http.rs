//! What an HTTP response means for a retry: the category of its status, and the server's delay
//! from its headers.
//!
//! Every host that makes HTTP requests asks the same questions, so the answers live here once:
//! the native host's `HttpError` and the JavaScript package's `retryFetch` (through the
//! component's `http` interface) both call [`classify_response`].
//!
//! The retryable statuses are listed, not a range: AWS's standard retry mode retries 500, 502,
//! 503 and 504 (and throttling), Envoy's `gateway-error` 502, 503 and 504. Any other 5xx — 501
//! Not Implemented, 505 HTTP Version Not Supported, 507 Insufficient Storage, 511 Network
//! Authentication Required, a 599 from some proxy — is a definite answer that a retry will not
//! change.
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

use crate::retry_after::{parse_server_delay_lines, ServerDelayHeader};
use crate::{ErrorCategory, Failure};

/// The category of a failed response's status (see the module docs for the table). A 503 is
/// `RateLimited` here; [`classify_response`] makes a 503 without a delay header
/// `ServiceUnavailable`.
#[must_use]
pub const fn status_category(status: u16) -> ErrorCategory {
    match status {
        429 | 503 => ErrorCategory::RateLimited,
        500 | 502 | 504 | 425 => ErrorCategory::ServiceUnavailable,
        408 => ErrorCategory::Timeout,
        401 => ErrorCategory::AuthExpired,
        403 | 407 | 511 => ErrorCategory::Authentication,
        404 | 410 => ErrorCategory::ResourceNotFound,
        400 | 413 | 414 | 415 | 422 | 431 | 501 | 505 => ErrorCategory::Validation,
        _ => ErrorCategory::BusinessLogic,
    }
}

/// The delay headers of one response, as the server sent them (`None`: absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DelayHeaders<'a> {
    /// `Retry-After`.
    pub retry_after: Option<&'a str>,
    /// `RateLimit` (or the earlier drafts' `RateLimit-Reset`).
    pub ratelimit: Option<&'a str>,
    /// `X-RateLimit-Reset` (or `X-Rate-Limit-Reset`).
    pub x_ratelimit_reset: Option<&'a str>,
}

impl DelayHeaders<'_> {
    /// The server's delay in µs from `now_unix_us`, from the first header that parses (garbage
    /// counts as absent). A value joined from several lines (`0, 1`) is read by
    /// [`parse_server_delay_lines`]: its longest delay.
    #[must_use]
    pub fn server_delay_us(&self, now_unix_us: u64) -> Option<u64> {
        [
            (ServerDelayHeader::RetryAfter, self.retry_after),
            (ServerDelayHeader::RateLimit, self.ratelimit),
            (ServerDelayHeader::XRateLimitReset, self.x_ratelimit_reset),
        ]
        .into_iter()
        .find_map(|(h, v)| v.and_then(|v| parse_server_delay_lines(h, v, now_unix_us)))
    }
}

/// The failure a response stands for: `None` for a status below 400 (not a failure); otherwise
/// its category, with the server's delay when it is throttling (429, or a 503 with a delay
/// header — a 503 that says nothing about when to come back is an outage).
#[must_use]
pub fn classify_response(
    status: u16,
    headers: DelayHeaders<'_>,
    now_unix_us: u64,
) -> Option<Failure> {
    if status < 400 {
        return None;
    }
    let category = status_category(status);
    if category != ErrorCategory::RateLimited {
        return Some(Failure::new(category));
    }
    match headers.server_delay_us(now_unix_us) {
        Some(delay_us) => Some(Failure::new(category).with_server_delay_us(delay_us)),
        None if status == 503 => Some(Failure::new(ErrorCategory::ServiceUnavailable)),
        None => Some(Failure::new(category)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const NOW_US: u64 = 784_111_777_000_000; // Sun, 06 Nov 1994 08:49:37 GMT

    #[test]
    fn successes_are_not_failures() {
        for status in [200, 204, 301, 399] {
            assert_eq!(
                classify_response(status, DelayHeaders::default(), NOW_US),
                None
            );
        }
    }

    #[test]
    fn throttling_carries_the_servers_delay_in_every_date_form() {
        for date in [
            "Sun, 06 Nov 1994 08:49:39 GMT",
            "Sunday, 06-Nov-94 08:49:39 GMT",
            "Sun Nov  6 08:49:39 1994",
        ] {
            let headers = DelayHeaders {
                retry_after: Some(date),
                ..DelayHeaders::default()
            };
            let f = classify_response(429, headers, NOW_US).unwrap();
            assert_eq!(f.category, ErrorCategory::RateLimited);
            assert_eq!(f.server_delay_us, Some(2_000_000), "{date}");
        }
    }

    #[test]
    fn a_bare_503_is_an_outage_and_one_with_a_delay_is_throttling() {
        let bare = classify_response(503, DelayHeaders::default(), NOW_US).unwrap();
        assert_eq!(bare, Failure::new(ErrorCategory::ServiceUnavailable));
        let headers = DelayHeaders {
            ratelimit: Some("\"q\";r=0;t=3"),
            ..DelayHeaders::default()
        };
        let told = classify_response(503, headers, NOW_US).unwrap();
        assert_eq!(
            told,
            Failure::new(ErrorCategory::RateLimited).with_server_delay_us(3_000_000)
        );
    }

    #[test]
    fn garbage_delay_headers_count_as_absent() {
        let headers = DelayHeaders {
            retry_after: Some("soon"),
            x_ratelimit_reset: Some("5"),
            ..DelayHeaders::default()
        };
        let f = classify_response(429, headers, NOW_US).unwrap();
        assert_eq!(f.server_delay_us, Some(5_000_000));
    }

    #[test]
    fn statuses_map_to_the_documented_categories() {
        use ErrorCategory as C;
        for (status, category) in [
            (400, C::Validation),
            (401, C::AuthExpired),
            (403, C::Authentication),
            (404, C::ResourceNotFound),
            (408, C::Timeout),
            (409, C::BusinessLogic),
            (425, C::ServiceUnavailable),
            (500, C::ServiceUnavailable),
            (501, C::Validation),
            (502, C::ServiceUnavailable),
            (504, C::ServiceUnavailable),
            (599, C::BusinessLogic),
        ] {
            assert_eq!(
                classify_response(status, DelayHeaders::default(), NOW_US),
                Some(Failure::new(category)),
                "{status}"
            );
        }
    }
}
