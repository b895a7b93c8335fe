//! gRPC: status codes onto the seed's categories, and server pushback as gRPC A6 says.
//!
//! | code | category | retried by default |
//! |---|---|---|
//! | `UNAVAILABLE` (14) | `ServiceUnavailableError` | yes |
//! | `DEADLINE_EXCEEDED` (4) | `TimeoutError` | yes |
//! | `RESOURCE_EXHAUSTED` (8) | `RateLimitExceededError` | yes |
//! | `UNAUTHENTICATED` (16) | `AuthExpired` | once, after a token refresh |
//! | `PERMISSION_DENIED` (7) | `AuthenticationError` | no |
//! | `INVALID_ARGUMENT` (3), `OUT_OF_RANGE` (11) | `ValidationError` | no |
//! | `NOT_FOUND` (5) | `ResourceNotFoundError` | no |
//! | `CANCELLED` (1), `UNKNOWN` (2), `ALREADY_EXISTS` (6), `FAILED_PRECONDITION` (9), `ABORTED` (10), `UNIMPLEMENTED` (12), `INTERNAL` (13), `DATA_LOSS` (15) | `BusinessLogicError` | no |
//!
//! Only codes that say the server did not do the work are retried by default (A6: "only status
//! codes that indicate the service did not process the request should be retried"); an error of
//! the channel itself (no status: the connection failed) is a `ConnectionError`. Each retried
//! category holds a single code, so a service config's `retryableStatusCodes` maps onto a
//! policy's `retry_on` exactly ([`crate::interop`]); the codes that share `BusinessLogicError`
//! are the ones A6 and Google's AIP-194 advise against retrying.
//!
//! `RESOURCE_EXHAUSTED` is the seed's `RateLimitExceededError`, not `RateLimited`: the core
//! always retries `RateLimited`, while A6 lets the service config decide whether
//! `RESOURCE_EXHAUSTED` is retried.
//!
//! # Pushback
//!
//! `grpc-retry-pushback-ms` (read by the core's [`parse_grpc_pushback`]): a non-negative value is
//! the server's delay (the core takes it when it is longer than its own backoff, and gives up
//! when it is longer than `max_retry_after`); a negative or malformed one means *do not retry
//! this call*, whatever its code. Every line of it is read: one that says "do not retry" holds
//! over the others, else the longest delay. A6 also resets the backoff after a pushback; ricochet's
//! schedule goes on.
//!
//! # With tonic (feature `tonic`)
//!
//! - `tonic::Status` implements [`Classify`](crate::Classify): wrap a generated client's call in
//!   `RetryPolicy::execute_with_retry`.
//! - [`RetryLayer::grpc`](crate::tower::RetryLayer::grpc) retries whole calls on a tonic
//!   `Channel`: every call is a `POST`, and all are retried (putting the layer on the channel
//!   is the opt-in, as a `retryPolicy` is in A6); the request body is recorded up to the body
//!   limit, so a client stream longer than that is sent once. A call is retried only on a
//!   Trailers-Only answer (a status in the response headers): once the server sent headers the
//!   call is committed (A6), and its final status comes to the caller in the trailers.

use ricochet_core::ErrorCategory;

#[cfg(feature = "tonic")]
pub use ricochet_core::retry_after::parse_grpc_pushback;

/// The response metadata key of gRPC A6 server pushback.
pub const PUSHBACK_HEADER: &str = "grpc-retry-pushback-ms";

/// Every gRPC status code: its name as service configs spell it, its number, and its category
/// (`None` for `OK`).
pub const CODES: [(&str, i32, Option<ErrorCategory>); 17] = [
    ("OK", 0, None),
    ("CANCELLED", 1, Some(ErrorCategory::BusinessLogic)),
    ("UNKNOWN", 2, Some(ErrorCategory::BusinessLogic)),
    ("INVALID_ARGUMENT", 3, Some(ErrorCategory::Validation)),
    ("DEADLINE_EXCEEDED", 4, Some(ErrorCategory::Timeout)),
    ("NOT_FOUND", 5, Some(ErrorCategory::ResourceNotFound)),
    ("ALREADY_EXISTS", 6, Some(ErrorCategory::BusinessLogic)),
    ("PERMISSION_DENIED", 7, Some(ErrorCategory::Authentication)),
    (
        "RESOURCE_EXHAUSTED",
        8,
        Some(ErrorCategory::RateLimitExceeded),
    ),
    ("FAILED_PRECONDITION", 9, Some(ErrorCategory::BusinessLogic)),
    ("ABORTED", 10, Some(ErrorCategory::BusinessLogic)),
    ("OUT_OF_RANGE", 11, Some(ErrorCategory::Validation)),
    ("UNIMPLEMENTED", 12, Some(ErrorCategory::BusinessLogic)),
    ("INTERNAL", 13, Some(ErrorCategory::BusinessLogic)),
    ("UNAVAILABLE", 14, Some(ErrorCategory::ServiceUnavailable)),
    ("DATA_LOSS", 15, Some(ErrorCategory::BusinessLogic)),
    ("UNAUTHENTICATED", 16, Some(ErrorCategory::AuthExpired)),
];

/// The category of a status code; codes outside 0–16 are `UNKNOWN` (gRPC's rule), `OK` is `None`.
pub fn code_category(code: i32) -> Option<ErrorCategory> {
    match CODES.iter().find(|(_, n, _)| *n == code) {
        Some((_, _, category)) => *category,
        None => Some(ErrorCategory::BusinessLogic),
    }
}

/// The name of a status code (`UNAVAILABLE`), or `None` outside 0–16.
pub fn code_name(code: i32) -> Option<&'static str> {
    CODES
        .iter()
        .find(|(_, n, _)| *n == code)
        .map(|(name, _, _)| *name)
}

/// A status code by the name a service config gives it: upper case (`UNAVAILABLE`), as the
/// JSON mapping of `google.rpc.Code` spells it, or its number.
pub fn code_from_name(name: &str) -> Option<i32> {
    CODES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, code, _)| *code)
}

#[cfg(feature = "tonic")]
mod with_tonic {
    use std::time::Duration;

    use http::HeaderMap;
    use ricochet_core::retry_after::{parse_grpc_pushback, GrpcPushback};
    use ricochet_core::ErrorCategory;

    use super::{code_category, code_name, PUSHBACK_HEADER};
    use crate::classify::{Classification, Classify};
    use crate::http::{ResponseFailure, MAX_DELAY_HEADER_BYTES};

    /// What the pushback lines of one answer ask for, `None` when there are none. Every line
    /// is read: one that says "do not retry" holds over the others, else the longest delay.
    fn pushback<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Option<GrpcPushback> {
        lines.map(pushback_line).reduce(|a, b| match (a, b) {
            (GrpcPushback::RetryAfterUs(a), GrpcPushback::RetryAfterUs(b)) => {
                GrpcPushback::RetryAfterUs(a.max(b))
            }
            _ => GrpcPushback::DoNotRetry,
        })
    }

    /// One pushback line. Not UTF-8 (or absurdly long) is malformed, and malformed pushback
    /// means "do not retry".
    fn pushback_line(raw: &[u8]) -> GrpcPushback {
        match std::str::from_utf8(raw) {
            Ok(value) if raw.len() <= MAX_DELAY_HEADER_BYTES => parse_grpc_pushback(value),
            _ => GrpcPushback::DoNotRetry,
        }
    }

    /// A status and its pushback onto a classification.
    fn classify_code(code: i32, pushback: Option<GrpcPushback>) -> Classification {
        let category = code_category(code).unwrap_or(ErrorCategory::BusinessLogic);
        let class = Classification::new(category);
        match pushback {
            None => class,
            Some(GrpcPushback::RetryAfterUs(us)) => {
                Classification::with_server_delay(category, Some(Duration::from_micros(us)))
            }
            Some(GrpcPushback::DoNotRetry) => class.final_failure(),
        }
    }

    impl Classify for tonic::Status {
        fn classify(&self) -> Classification {
            let lines = self.metadata().get_all(PUSHBACK_HEADER);
            let pushback = pushback(lines.iter().map(|v| v.as_encoded_bytes()));
            classify_code(self.code() as i32, pushback)
        }
    }

    /// A gRPC response head: `None` when it is not gRPC (HTTP rules apply), `Some(None)` for a
    /// success (or a committed call), `Some(Some(_))` for a Trailers-Only failure.
    pub(crate) fn classify_grpc_headers(
        status: http::StatusCode,
        headers: &HeaderMap,
    ) -> Option<Option<ResponseFailure>> {
        let is_grpc = headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
        if !is_grpc || status != http::StatusCode::OK {
            return None;
        }
        let mut statuses = headers.get_all("grpc-status").iter();
        let Some(raw) = statuses.next() else {
            return Some(None);
        };
        // gRPC: a status that is not a number is UNKNOWN; so are two statuses, which no
        // reading can choose between (the call may have succeeded).
        let code = std::str::from_utf8(raw.as_bytes())
            .ok()
            .and_then(|s| s.parse::<i32>().ok())
            .filter(|_| statuses.next().is_none())
            .unwrap_or(2);
        if code == 0 {
            return Some(None);
        }
        let lines = headers.get_all(PUSHBACK_HEADER);
        let class = classify_code(code, pushback(lines.iter().map(|v| v.as_bytes())));
        let mut summary = format!("gRPC {}", code_name(code).unwrap_or("UNKNOWN"));
        if let Some(p) = headers.get(PUSHBACK_HEADER).map(|v| v.as_bytes()) {
            let shown = String::from_utf8_lossy(&p[..p.len().min(32)]);
            summary.push_str(&format!(" ({PUSHBACK_HEADER}: {shown})"));
        }
        Some(Some(ResponseFailure { class, summary }))
    }
}

#[cfg(feature = "tonic")]
pub(crate) use with_tonic::classify_grpc_headers;
