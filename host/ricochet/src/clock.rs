//! Clocks the executor reads. The core is pure; the host decides what "now" is.
//!
//! [`SystemClock`] is the wall clock (µs since the Unix epoch), the default. [`TokioClock`]
//! follows tokio's clock, so tests with `tokio::time::pause()` see deadlines move with the
//! paused, auto-advancing time.

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

/// tokio's clock (respects `tokio::time::pause`), as µs since the clock was made, plus a base.
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

impl Clock for TokioClock {
    fn now_us(&self) -> u64 {
        self.base_us
            .saturating_add(self.origin.elapsed().as_micros() as u64)
    }
}

/// A shared clock.
pub type SharedClock = Arc<dyn Clock>;
