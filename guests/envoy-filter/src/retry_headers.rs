//! The request headers that make Envoy's router retry by our policy.
//!
//! Envoy does the retrying; the policy decides how often and on what:
//!
//! - `x-envoy-max-retries`: `max_attempts − 1` (the policy counts the first call, Envoy does not),
//!   or 0 when nothing is retried.
//! - `x-envoy-retry-on`: Envoy's conditions for the categories the policy retries — a
//!   `ConnectionError` is `connect-failure,refused-stream,reset`, a `TimeoutError` is `reset`
//!   (Envoy's name for "no response": disconnect, reset or per-try timeout), and any mapped
//!   status whose category is retried is `retriable-status-codes`.
//! - `x-envoy-retriable-status-codes`: those statuses.
//! - `x-envoy-upstream-rq-per-try-timeout-ms`: `attempt_timeout_ms`, when configured.
//!
//! Whether a category is retried is asked of `ricochet-core` itself: a first failure of that
//! category must not be given up as non-retryable. So the filter never keeps its own list
//! (`RateLimited` is always retried, `AuthExpired` never here: Envoy cannot refresh a token).

use std::string::String;
use std::vec::Vec;

use ricochet_core::{Decision, ErrorCategory, Failure, GiveUpReason, Guards, Policy, RetryState};

/// The header values, worked out once per configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryHeaders {
    /// `x-envoy-max-retries` while the budget allows retries.
    pub max_retries: u32,
    /// `x-envoy-retry-on`; empty when nothing is retried.
    pub retry_on: String,
    /// `x-envoy-retriable-status-codes`; empty when no status is retried.
    pub retriable_status_codes: String,
    /// `x-envoy-upstream-rq-per-try-timeout-ms`, when configured.
    pub per_try_timeout_ms: Option<String>,
}

/// Envoy's retry conditions for one category (statuses aside).
fn transport_conditions(category: ErrorCategory) -> &'static [&'static str] {
    match category {
        ErrorCategory::Connection => &["connect-failure", "refused-stream", "reset"],
        ErrorCategory::Timeout => &["reset"],
        _ => &[],
    }
}

/// Whether `policy` retries a first failure of `category`, as the core decides it.
pub fn retries(policy: &Policy, category: ErrorCategory) -> bool {
    let decision =
        RetryState::new(0, 0).on_failure(policy, Failure::new(category), 0, Guards::none());
    decision
        != Decision::GiveUp {
            reason: GiveUpReason::NonRetryable,
        }
}

impl RetryHeaders {
    /// The headers for `policy`, with upstream `statuses` mapped to categories.
    pub fn new(
        policy: &Policy,
        statuses: &[(u16, ErrorCategory)],
        attempt_timeout_ms: Option<u64>,
    ) -> Self {
        let mut conditions: Vec<&str> = Vec::new();
        for category in ErrorCategory::ALL {
            if retries(policy, category) {
                for c in transport_conditions(category) {
                    if !conditions.contains(c) {
                        conditions.push(c);
                    }
                }
            }
        }
        let codes: Vec<String> = statuses
            .iter()
            .filter(|&&(_, category)| retries(policy, category))
            .map(|(status, _)| status.to_string())
            .collect();
        if !codes.is_empty() {
            conditions.push("retriable-status-codes");
        }
        let max_retries = if conditions.is_empty() {
            0
        } else {
            policy.max_attempts() - 1
        };
        RetryHeaders {
            max_retries,
            retry_on: conditions.join(","),
            retriable_status_codes: codes.join(","),
            per_try_timeout_ms: attempt_timeout_ms.map(|ms| ms.to_string()),
        }
    }
}
