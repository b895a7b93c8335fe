//! The `Retry-After` a client gets with a 429 or a 503: when to come back.
//!
//! An upstream that said when is believed: a valid `Retry-After` is kept, and an HTTP-date is
//! turned into delay-seconds against the proxy's clock (clients' clocks are worse). A missing or
//! invalid one is replaced by the policy's first backoff delay — or by the rest of the circuit
//! breaker's cool-down when that is longer, since the filter answers 503 itself until then.
//! Parsing and the rounding to whole seconds are `ricochet-core`'s.

use ricochet_core::breaker::BreakerState;
use ricochet_core::retry_after::{parse_http_date, parse_retry_after, retry_after_seconds};
use ricochet_core::Policy;

/// The statuses whose `Retry-After` the filter keeps or adds.
pub const PUSHBACK_STATUSES: [u16; 2] = [429, 503];

/// What to do with the response's `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    /// It is valid delay-seconds: leave it.
    Keep,
    /// Set it to these delay-seconds.
    Set(u64),
}

/// The delay the filter asks for when the upstream did not: the policy's delay before the first
/// retry for `seed`, or the breaker's remaining cool-down if that is longer.
pub fn policy_delay_us(
    policy: &Policy,
    seed: u64,
    breaker: Option<BreakerState>,
    now_us: u64,
) -> u64 {
    let backoff_us = policy.next_delay(1, seed, 0).delay_us;
    match breaker {
        Some(BreakerState::Open { until_us }) => backoff_us.max(until_us.saturating_sub(now_us)),
        _ => backoff_us,
    }
}

/// What to do with `existing` (the upstream's `Retry-After`, if any) at `now_unix_us`, given the
/// delay the filter would ask for itself.
pub fn edit(existing: Option<&str>, now_unix_us: u64, policy_delay_us: u64) -> Edit {
    let Some(value) = existing else {
        return Edit::Set(retry_after_seconds(policy_delay_us));
    };
    match parse_retry_after(value, now_unix_us) {
        None => Edit::Set(retry_after_seconds(policy_delay_us)),
        Some(delay_us) if parse_http_date(value, now_unix_us).is_some() => {
            Edit::Set(retry_after_seconds(delay_us))
        }
        Some(_) => Edit::Keep,
    }
}
