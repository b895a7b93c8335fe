//! What the Python package shares with the Rust services: error categories and the HTTP status
//! table, server delay headers, `traceparent`, and the Redis layer — key formulas and Lua scripts.
//!
//! The scripts and the key formulas are the Rust host's own (`ricochet::redis_layout`, the
//! `redis-layout` feature: no Redis client), handed to redis-py, so one fleet runs one copy of
//! each; `tests/test_fleet.py` also checks them against the keys the `ricochet` binary writes.

use std::collections::HashMap;

use pyo3::prelude::*;
use ricochet::classify::{Classify, HttpError};
use ricochet::redis_layout;
use ricochet_core::retry_after::{
    parse_server_delay as core_parse_server_delay, ServerDelayHeader,
};
use ricochet_core::ErrorCategory;

/// `(name, snake_name, retryable_by_default)` for each category, in the core's order (the
/// index is what `RetryState.on_failure` takes).
#[pyfunction]
fn categories() -> Vec<(&'static str, &'static str, bool)> {
    ErrorCategory::ALL
        .iter()
        .map(|c| (c.name(), c.snake_name(), c.retryable_by_default()))
        .collect()
}

/// A failed HTTP response as the Rust host classifies it: `(category_index, server_delay_us)`.
/// `headers` are `(name, value)` pairs; the delay headers (`Retry-After`, `RateLimit`,
/// `X-RateLimit-Reset`) are picked out and parsed by the core.
#[pyfunction]
fn classify_http(status: u16, headers: Vec<(String, String)>) -> (usize, Option<u64>) {
    let error = HttpError::from_headers(
        status,
        headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
    );
    let c = error.classify();
    let index = ErrorCategory::ALL
        .iter()
        .position(|x| *x == c.category)
        .unwrap_or(0);
    (
        index,
        c.server_delay
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
    )
}

/// A server delay header's value as µs from `now_unix_us`; `None` for an unknown header name or
/// a malformed value.
#[pyfunction]
fn parse_server_delay(name: &str, value: &str, now_unix_us: u64) -> Option<u64> {
    ServerDelayHeader::from_name(name).and_then(|h| core_parse_server_delay(h, value, now_unix_us))
}

/// The trace id of a W3C `traceparent`, if valid.
#[pyfunction]
fn trace_id_from_traceparent(traceparent: &str) -> Option<String> {
    ricochet::logging::trace_id_from_traceparent(traceparent)
}

/// SHA-256 of `text`, 64 lowercase hex digits.
#[pyfunction]
fn sha256_hex(text: &str) -> String {
    redis_layout::sha256_hex(text.as_bytes())
}

/// The stem of an operation's slot counters, as `RedisCoordinator` builds it.
#[pyfunction]
fn slot_key_stem(prefix: &str, service: &str, operation: &str) -> String {
    redis_layout::slot_key_stem(prefix, service, operation)
}

/// The Redis key of an idempotency record: the caller's key scoped by service and operation (as
/// `execute_idempotent` does), hashed (as `RedisIdempotencyStore::record_key` does).
#[pyfunction]
fn idempotency_record_key(prefix: &str, service: &str, operation: &str, key: &str) -> String {
    redis_layout::record_key(
        prefix,
        &redis_layout::scoped_idempotency_key(service, operation, key),
    )
}

/// The Lua scripts of the Rust host, by name: `slot`, `begin`, `complete`, `fail`, `renew`.
fn scripts() -> HashMap<&'static str, &'static str> {
    HashMap::from([
        ("slot", redis_layout::SLOT_SCRIPT),
        ("begin", redis_layout::BEGIN_SCRIPT),
        ("complete", redis_layout::COMPLETE_SCRIPT),
        ("fail", redis_layout::FAIL_SCRIPT),
        ("renew", redis_layout::RENEW_SCRIPT),
    ])
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(categories, m)?)?;
    m.add_function(wrap_pyfunction!(classify_http, m)?)?;
    m.add_function(wrap_pyfunction!(parse_server_delay, m)?)?;
    m.add_function(wrap_pyfunction!(trace_id_from_traceparent, m)?)?;
    m.add_function(wrap_pyfunction!(sha256_hex, m)?)?;
    m.add_function(wrap_pyfunction!(slot_key_stem, m)?)?;
    m.add_function(wrap_pyfunction!(idempotency_record_key, m)?)?;
    m.add("SCRIPTS", scripts())?;
    Ok(())
}
