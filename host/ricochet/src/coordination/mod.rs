//! Fleet-wide retry coordination: slot tickets from a shared coordinator.
//!
//! A [`Coordinator`] hands out tickets `0, 1, 2, …` per `(service, operation, window)`; the core
//! turns a ticket into a fire time (`Policy::resolve_ticket`). The coordinator owns the clock
//! the window is computed on — Redis uses the server's `TIME`, so callers with skewed clocks
//! still share one herd window — and so it is asked for a *delay* from now, not an absolute time.
//!
//! Calls are bounded: [`schedule_retry`] gives each acquisition a deadline and, on timeout
//! or error, takes the core's local fallback slot and counts it in
//! `retry_coordination_fallback_total`. Coordination degrades; a retry never blocks or fails
//! because of it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

mod memory;
mod schedule;
pub use memory::{InMemoryCoordinator, MAX_OPERATIONS, MAX_WINDOWS_PER_OPERATION};
pub use schedule::{
    schedule_retry, schedule_retry_before, Scheduled, DEFAULT_COORDINATION_DEADLINE,
};

/// A boxed, sendable future (the trait is object-safe so a policy can hold `Arc<dyn Coordinator>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A ticket for one window, and the coordinator's clock when it was handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotGrant {
    /// 0, 1, 2, … within `window`.
    pub ticket: u64,
    /// The window index: `earliest_us / window_us`.
    pub window: u64,
    /// The earliest fire time on the coordinator's clock: its `now_us + delay_us`.
    pub earliest_us: u64,
    /// The coordinator's clock when it answered.
    pub now_us: u64,
}

/// Why the coordinator could not answer (the `reason` label of the fallback counter).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoordinationError {
    /// No answer within the deadline.
    Timeout,
    /// The backend could not be reached (connection refused, reset, …). Never holds credentials.
    Connection(String),
    /// The backend answered with an error (script error, wrong type, …).
    Backend(String),
    /// The request cannot be answered exactly: a window of 0 µs, or a fire time that leaves
    /// the integers a Redis script computes exactly ([`check_slot_request`]).
    Invalid(String),
}

impl CoordinationError {
    /// The `reason` label: `timeout`, `connection`, `backend` or `invalid`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connection(_) => "connection",
            Self::Backend(_) => "backend",
            Self::Invalid(_) => "invalid",
        }
    }
}

impl fmt::Display for CoordinationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("coordinator did not answer within its deadline"),
            Self::Connection(e) => write!(f, "coordinator unreachable: {e}"),
            Self::Backend(e) => write!(f, "coordinator error: {e}"),
            Self::Invalid(e) => write!(f, "invalid slot request: {e}"),
        }
    }
}

impl std::error::Error for CoordinationError {}

/// Hands out slot tickets.
pub trait Coordinator: Send + Sync + 'static {
    /// A ticket in the window holding `now + delay_us` (on the coordinator's clock) for
    /// `(service, operation)`, with windows of `window_us`. One round trip.
    fn acquire_slot<'a>(
        &'a self,
        service: &'a str,
        operation: &'a str,
        delay_us: u64,
        window_us: u64,
    ) -> BoxFuture<'a, Result<SlotGrant, CoordinationError>>;

    /// The coordinator's clock, as best known locally: local wall clock plus the estimated offset.
    fn now_us(&self) -> u64;

    /// A short name for logs: `memory`, `redis`, `redis-cluster`.
    fn name(&self) -> &'static str;
}

/// Fire times and window ends a coordinator computes must stay below this: 2^53, the last
/// integer a Lua number (a double) holds exactly.
pub const MAX_SLOT_TIME_US: u64 = 1 << 53;

/// Refuses a slot request no coordinator can answer exactly, before it reaches a backend:
/// `window_us == 0` (a division by zero; on Redis a counter left with no expiry), or
/// `now_us + delay_us + 2 * window_us >= 2^53` (the script's arithmetic rounds past 2^53: a delay
/// of 9007199254740993 gave a wrong window; `i64::MAX` a negative one and a counter kept for
/// 290 000 years). Every coordinator calls it — the native executor's and a component's
/// `acquire-slot` go through the same ones.
pub fn check_slot_request(
    now_us: u64,
    delay_us: u64,
    window_us: u64,
) -> Result<(), CoordinationError> {
    if window_us == 0 {
        return Err(CoordinationError::Invalid(
            "window_us must be at least 1, got 0".into(),
        ));
    }
    let end_us = window_us
        .checked_mul(2)
        .and_then(|w| w.checked_add(delay_us))
        .and_then(|t| t.checked_add(now_us));
    match end_us {
        Some(end_us) if end_us < MAX_SLOT_TIME_US => Ok(()),
        _ => Err(CoordinationError::Invalid(format!(
            "now_us + delay_us + 2 * window_us must be below 2^53 ({MAX_SLOT_TIME_US}), got \
             now_us {now_us}, delay_us {delay_us}, window_us {window_us}"
        ))),
    }
}

/// The local wall clock, µs since the Unix epoch.
pub fn wall_clock_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
