//! What happens to a call: attempt outcomes, server delays and the clock between attempts.

use arbitrary::Arbitrary;
use ricochet_core::{ErrorCategory, Failure};

/// How the clock moves before an attempt is reported. The core takes the time as an argument,
/// so it must cope with any of these, backwards and saturated included.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Step {
    /// Exactly the delay the last decision asked for (what a well-behaved host does).
    AsAdvised,
    /// The advised delay plus up to about 71 minutes.
    Late(u32),
    /// Forward by a little: up to about 71 minutes.
    Forward(u32),
    /// Forward by any amount (saturating at the end of time).
    Jump(u64),
    /// Backwards by up to about 71 minutes (a clock that was corrected).
    Back(u32),
    /// To any instant.
    At(u64),
}

impl Step {
    /// The time after this step from `now_us`, when the last decision advised `advised_us`.
    pub fn apply(self, now_us: u64, advised_us: u64) -> u64 {
        match self {
            Self::AsAdvised => now_us.saturating_add(advised_us),
            Self::Late(us) => now_us
                .saturating_add(advised_us)
                .saturating_add(u64::from(us)),
            Self::Forward(us) => now_us.saturating_add(u64::from(us)),
            Self::Jump(us) => now_us.saturating_add(us),
            Self::Back(us) => now_us.saturating_sub(u64::from(us)),
            Self::At(t) => t,
        }
    }
}

/// A server-requested delay (`Retry-After` and friends), relative to the policy's cap.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum ServerDelay {
    /// Up to about 71 minutes.
    Micros(u32),
    /// Exactly `max_retry_after` (honoured).
    AtCap,
    /// One microsecond over `max_retry_after` (refused).
    OverCap,
    /// Any value.
    Any(u64),
}

impl ServerDelay {
    /// The delay in µs, for a policy whose `max_retry_after` is `cap_us`.
    pub fn get(self, cap_us: u64) -> u64 {
        match self {
            Self::Micros(us) => u64::from(us),
            Self::AtCap => cap_us,
            Self::OverCap => cap_us.saturating_add(1),
            Self::Any(us) => us,
        }
    }
}

/// One failed attempt.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct FuzzFailure {
    category: u8,
    server_delay: Option<ServerDelay>,
    token_refreshed: bool,
}

impl FuzzFailure {
    /// The failure, for a policy whose `max_retry_after` is `cap_us`.
    pub fn get(&self, cap_us: u64) -> Failure {
        Failure {
            category: ErrorCategory::ALL[usize::from(self.category) % ErrorCategory::ALL.len()],
            server_delay_us: self.server_delay.map(|d| d.get(cap_us)),
            token_refreshed: self.token_refreshed,
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Outcome {
    /// It succeeded: the logical call is over.
    Success,
    /// It failed.
    Failure(FuzzFailure),
}
