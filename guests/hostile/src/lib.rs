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
//! one it wants. Without a feature the misbehaving methods answer "give up" (or nothing), so a
//! native `cargo clippy` of the workspace type-checks the crate without building a weapon.
//! `create` accepts every config, so a policy can be installed: the trouble starts at the first
//! method call.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

wit_bindgen::generate!({ path: "../../wit", world: "policy" });

use exports::ricochet::retry::retry_policy as exported;
use ricochet::retry::types as wit;

/// The state after one more call, all else kept: what an honest answer starts from.
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
fn misbehave() {
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
}

/// The `policy` resource: whatever config it was given, kept for the forger's lies.
struct Policy {
    #[cfg_attr(not(feature = "forger"), allow(dead_code))]
    config: wit::RetryConfig,
}

impl exported::Guest for Hostile {
    type Policy = Policy;
}

impl exported::GuestPolicy for Policy {
    /// Accepts every config, so the policy can be installed; the trouble starts at the first
    /// real call.
    fn create(config: wit::RetryConfig) -> Result<exported::Policy, wit::ConfigError> {
        Ok(exported::Policy::new(Policy { config }))
    }

    fn next_delay(&self, _: u32, _: u64, _: u64) -> u64 {
        misbehave();
        0
    }

    fn plan(&self, _: u64) -> Vec<wit::PlannedRetry> {
        misbehave();
        Vec::new()
    }

    fn decide(&self, state: wit::RetryState, failure: wit::Failure, now_us: u64) -> wit::Decision {
        let none = wit::Guards {
            breaker: None,
            budget: None,
        };
        decide(self, state, failure, now_us, none).1
    }

    fn decide_guarded(
        &self,
        state: wit::RetryState,
        failure: wit::Failure,
        now_us: u64,
        guards: wit::Guards,
    ) -> exported::GuardedDecision {
        let (guards, decision) = decide(self, state, failure, now_us, guards);
        exported::GuardedDecision { guards, decision }
    }

    fn resolve_ticket(&self, _: wit::SlotRequest, _: u64, _: u64) -> Option<u64> {
        misbehave();
        None
    }

    fn schedule(
        &self,
        service: String,
        operation: String,
        state: wit::RetryState,
        failure: wit::Failure,
    ) -> exported::Scheduled {
        let (state, outcome) = schedule(state, service, operation, failure);
        exported::Scheduled { state, outcome }
    }
}

type Decided = (wit::Guards, wit::Decision);
type Scheduled = (wit::RetryState, wit::ScheduleOutcome);

#[cfg(feature = "forger")]
fn decide(
    policy: &Policy,
    state: wit::RetryState,
    failure: wit::Failure,
    _: u64,
    guards: wit::Guards,
) -> Decided {
    forger::decide(&policy.config, state, &failure, guards)
}

#[cfg(feature = "intruder")]
fn decide(
    _: &Policy,
    state: wit::RetryState,
    _: wit::Failure,
    _: u64,
    guards: wit::Guards,
) -> Decided {
    intruder::decide(state, guards)
}

#[cfg(not(any(feature = "forger", feature = "intruder")))]
fn decide(_: &Policy, _: wit::RetryState, _: wit::Failure, _: u64, guards: wit::Guards) -> Decided {
    misbehave();
    (guards, wit::Decision::GiveUp(wit::GiveUpReason::Exhausted))
}

#[cfg(feature = "intruder")]
fn schedule(
    state: wit::RetryState,
    service: String,
    operation: String,
    _: wit::Failure,
) -> Scheduled {
    intruder::schedule(state, &service, &operation)
}

#[cfg(not(feature = "intruder"))]
fn schedule(state: wit::RetryState, _: String, _: String, _: wit::Failure) -> Scheduled {
    misbehave();
    (
        counted(state),
        wit::ScheduleOutcome::GiveUp(wit::GiveUpReason::Exhausted),
    )
}
