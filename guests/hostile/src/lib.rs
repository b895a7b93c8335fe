//! Hostile policies for the host's sandbox tests: components of the right world that accept any
//! config and then misbehave on every other call, one way per Cargo feature (tests/support/build.rs
//! builds each):
//!
//! - `spin`: a loop that never returns (stopped by the fuel or time budget);
//! - `hog`: reserves 1 MiB blocks until memory runs out (stopped by the memory cap);
//! - `trap`: executes `unreachable` (an explicit trap);
//! - `forger`: `decide` answers within the sandbox but against the contract — forged guard
//!   state, delays past the config's bounds, retries the config forbids (see [`forger`]);
//! - `intruder`: `decide` and `schedule` abuse the imports — slots for services it was not
//!   called for, floods of store calls with endless leases, another caller's idempotency key,
//!   megabyte log lines (see [`intruder`]).
//!
//! `forger` and `intruder` pick what they do from the call's own inputs (`state.seed`, and
//! `state.prev-delay-us` for sizes), so one build carries every variant and a test names the
//! one it wants. Without a feature the misbehaving exports return a config error, so a native
//! `cargo clippy` of the workspace type-checks the crate without building a weapon.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::string::{String, ToString};
use alloc::vec::Vec;

wit_bindgen::generate!({ path: "../../wit", world: "policy" });

use exports::ricochet::retry::retry_policy::Guest;
use ricochet::retry::types as wit;

/// The state after one more call, all else kept: what an honest answer starts from.
#[cfg(any(feature = "forger", feature = "intruder"))]
fn counted(mut state: wit::RetryState) -> wit::RetryState {
    state.calls = state.calls.saturating_add(1);
    state
}

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(feature = "forger")]
pub mod forger;
#[cfg(feature = "intruder")]
pub mod intruder;

struct Hostile;

#[cfg(target_arch = "wasm32")]
export!(Hostile);

/// Does the one bad thing this build was made for; returns only in a harmless build.
fn misbehave() -> wit::ConfigError {
    #[cfg(feature = "spin")]
    {
        let mut n = 0u64;
        loop {
            n = core::hint::black_box(n.wrapping_add(1));
        }
    }
    #[cfg(feature = "hog")]
    {
        // Reserved, never written: the guest's memory grows by 1 MiB per turn at no cost in
        // fuel, so the memory cap (not the fuel) is what stops it.
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(core::hint::black_box(Vec::with_capacity(1 << 20)));
        }
    }
    #[cfg(all(feature = "trap", target_arch = "wasm32"))]
    {
        core::arch::wasm32::unreachable()
    }
    #[allow(unreachable_code)]
    wit::ConfigError {
        field: "policy".to_string(),
        message: "hostile test policy built without a behaviour".to_string(),
    }
}

impl Guest for Hostile {
    /// Accepts every config, so the policy can be installed; the trouble starts at the first
    /// real call.
    fn validate(_: wit::RetryConfig) -> Result<(), wit::ConfigError> {
        Ok(())
    }

    fn next_delay(_: wit::RetryConfig, _: u32, _: u64, _: u64) -> Result<u64, wit::ConfigError> {
        Err(misbehave())
    }

    fn plan(_: wit::RetryConfig, _: u64) -> Result<Vec<wit::PlannedRetry>, wit::ConfigError> {
        Err(misbehave())
    }

    fn decide(
        config: wit::RetryConfig,
        state: wit::RetryState,
        failure: wit::Failure,
        now_us: u64,
        guards: wit::Guards,
    ) -> Result<(wit::RetryState, wit::Guards, wit::Decision), wit::ConfigError> {
        decide(config, state, failure, now_us, guards)
    }

    fn resolve_ticket(
        _: wit::RetryConfig,
        _: wit::SlotRequest,
        _: u64,
        _: u64,
    ) -> Result<Option<u64>, wit::ConfigError> {
        Err(misbehave())
    }

    fn schedule(
        config: wit::RetryConfig,
        service: String,
        operation: String,
        state: wit::RetryState,
        failure: wit::Failure,
    ) -> Result<(wit::RetryState, wit::ScheduleOutcome), wit::ConfigError> {
        schedule(config, service, operation, state, failure)
    }
}

type Decided = Result<(wit::RetryState, wit::Guards, wit::Decision), wit::ConfigError>;
type Scheduled = Result<(wit::RetryState, wit::ScheduleOutcome), wit::ConfigError>;

#[cfg(feature = "forger")]
fn decide(
    config: wit::RetryConfig,
    state: wit::RetryState,
    failure: wit::Failure,
    _: u64,
    guards: wit::Guards,
) -> Decided {
    Ok(forger::decide(&config, state, &failure, guards))
}

#[cfg(feature = "intruder")]
fn decide(
    _: wit::RetryConfig,
    state: wit::RetryState,
    _: wit::Failure,
    _: u64,
    guards: wit::Guards,
) -> Decided {
    Ok(intruder::decide(state, guards))
}

#[cfg(not(any(feature = "forger", feature = "intruder")))]
fn decide(
    _: wit::RetryConfig,
    _: wit::RetryState,
    _: wit::Failure,
    _: u64,
    _: wit::Guards,
) -> Decided {
    Err(misbehave())
}

#[cfg(feature = "intruder")]
fn schedule(
    _: wit::RetryConfig,
    service: String,
    operation: String,
    state: wit::RetryState,
    _: wit::Failure,
) -> Scheduled {
    Ok(intruder::schedule(state, &service, &operation))
}

#[cfg(not(feature = "intruder"))]
fn schedule(
    _: wit::RetryConfig,
    _: String,
    _: String,
    _: wit::RetryState,
    _: wit::Failure,
) -> Scheduled {
    Err(misbehave())
}
