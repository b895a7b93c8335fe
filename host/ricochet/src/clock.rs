//! Clocks the executor reads. The core is pure; the host decides what "now" is.
//!
//! What the executor's clock times is relative: `max_elapsed` from the first call, a breaker's
//! cool-down, a budget's window. So the default is [`TokioClock`], a monotonic clock: tokio's
//! `Instant` is std's, which never jumps, so an NTP step or a resumed VM can neither cut a
//! call's deadline short nor stretch it, nor open or close a breaker early. It also follows
//! `tokio::time::pause()`, so tests with a paused clock see deadlines move with the paused,
//! auto-advancing time. [`SystemClock`] is the wall clock (µs since the Unix epoch), for a host
//! that wants its deadlines on the wall (e.g. to compare them across processes).

use std::sync::Arc;

/// A source of "now" in microseconds.
pub trait Clock: Send + Sync + 'static {
    /// Now, µs.
    fn now_us(&self) -> u64;
}

/// The wall clock, µs since the Unix epoch.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> u64 {
        crate::coordination::wall_clock_us()
    }
}

/// tokio's clock, monotonic (and following `tokio::time::pause`), as µs since the clock was
/// made, plus a base: the executor's default, starting at 0.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
    base_us: u64,
}

impl TokioClock {
    /// A clock that reads `base_us` now and advances with tokio's time.
    pub fn starting_at(base_us: u64) -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            base_us,
        }
    }
}

impl Default for TokioClock {
    /// A clock that reads 0 now.
    fn default() -> Self {
        Self::starting_at(0)
    }
}

impl Clock for TokioClock {
    fn now_us(&self) -> u64 {
        self.base_us
            .saturating_add(self.origin.elapsed().as_micros() as u64)
    }
}

/// A shared clock.
pub type SharedClock = Arc<dyn Clock>;
