//! `decide` answers that fit the world's types but break its contract — each one an attack a
//! reviewer made on the host. The lie is chosen by `state.seed`; any other seed gives an honest
//! "give up, exhausted" with the guards as they came.
//!
//! | seed | the lie |
//! |---|---|
//! | 10 | [`BREAKER_OPEN_FOREVER`]: the breaker comes back open until `u64::MAX` µs (~584 000 years) |
//! | 11 | [`BREAKER_DROPPED`]: the breaker went in, `none` comes back (the failure is dropped) |
//! | 12 | [`BREAKER_RECONFIGURED`]: the breaker comes back with a failure threshold of 1 |
//! | 13 | [`BUDGET_REFILLED`]: the retry budget comes back full |
//! | 14 | [`BUDGET_DROPPED`]: the budget went in, `none` comes back |
//! | 20 | [`LONG_DELAY`]: a retry after `max(max_delay, max_retry_after)`, server delay or not |
//! | 21 | [`NON_RETRYABLE`]: a retry whatever the category |
//! | 22 | [`PAST_DEADLINE`]: a retry after `max_delay`, whatever `max_elapsed` says |
//! | 25 | [`IGNORES_SERVER_DELAY`]: a retry after 0 µs, whatever the server asked |

use alloc::vec::Vec;

use crate::wit;

/// The breaker comes back open until `u64::MAX` µs.
pub const BREAKER_OPEN_FOREVER: u64 = 10;
/// `none` comes back for the breaker.
pub const BREAKER_DROPPED: u64 = 11;
/// The breaker comes back with a failure threshold of 1.
pub const BREAKER_RECONFIGURED: u64 = 12;
/// The budget comes back full.
pub const BUDGET_REFILLED: u64 = 13;
/// `none` comes back for the budget.
pub const BUDGET_DROPPED: u64 = 14;
/// A retry after `max(max_delay, max_retry_after)`.
pub const LONG_DELAY: u64 = 20;
/// A retry whatever the category.
pub const NON_RETRYABLE: u64 = 21;
/// A retry after `max_delay`, whatever `max_elapsed` says.
pub const PAST_DEADLINE: u64 = 22;
/// A retry after 0 µs, whatever the server asked.
pub const IGNORES_SERVER_DELAY: u64 = 25;

// Offsets in the core's encodings (ricochet-core `CircuitBreaker::to_bytes`, `RetryBudget::to_bytes`).
/// The breaker's `failure_threshold` (u32, after the version byte).
const BREAKER_THRESHOLD: usize = 1;
/// The breaker's state tag, then `until_us` (u64) and two u32s.
const BREAKER_STATE: usize = 33;
/// The budget's `max_tokens` (u32) and `tokens_milli` (u32).
const BUDGET_MAX_TOKENS: usize = 1;
const BUDGET_TOKENS: usize = 9;

fn micros(seconds: f64) -> u64 {
    (seconds * 1e6) as u64
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// The lie `state.seed` names.
pub fn decide(
    config: &wit::RetryConfig,
    state: wit::RetryState,
    failure: &wit::Failure,
    mut guards: wit::Guards,
) -> (wit::Guards, wit::Decision) {
    let exhausted = wit::Decision::GiveUp(wit::GiveUpReason::Exhausted);
    let edit = |bytes: &mut Option<Vec<u8>>, f: &dyn Fn(&mut Vec<u8>)| {
        if let Some(b) = bytes.as_mut() {
            f(b);
        }
    };
    match state.seed {
        BREAKER_OPEN_FOREVER => {
            edit(&mut guards.breaker, &|b| {
                b[BREAKER_STATE] = 1;
                b[BREAKER_STATE + 1..BREAKER_STATE + 9].copy_from_slice(&u64::MAX.to_le_bytes());
                b[BREAKER_STATE + 9..BREAKER_STATE + 17].fill(0);
            });
            (guards, exhausted)
        }
        BREAKER_DROPPED => {
            guards.breaker = None;
            (guards, exhausted)
        }
        BREAKER_RECONFIGURED => {
            edit(&mut guards.breaker, &|b| put_u32(b, BREAKER_THRESHOLD, 1));
            (guards, exhausted)
        }
        BUDGET_REFILLED => {
            edit(&mut guards.budget, &|b| {
                let max = u32::from_le_bytes([
                    b[BUDGET_MAX_TOKENS],
                    b[BUDGET_MAX_TOKENS + 1],
                    b[BUDGET_MAX_TOKENS + 2],
                    b[BUDGET_MAX_TOKENS + 3],
                ]);
                put_u32(b, BUDGET_TOKENS, max * 1000);
            });
            (guards, exhausted)
        }
        BUDGET_DROPPED => {
            guards.budget = None;
            (guards, exhausted)
        }
        lie @ (LONG_DELAY | NON_RETRYABLE | PAST_DEADLINE | IGNORES_SERVER_DELAY) => {
            // A retry that is honest in every other respect.
            let server_us = failure.server_delay_us.unwrap_or(0);
            let delay_us = match lie {
                LONG_DELAY => micros(config.max_delay).max(micros(config.max_retry_after)),
                PAST_DEADLINE => micros(config.max_delay),
                IGNORES_SERVER_DELAY => 0,
                _ => micros(config.initial_delay).max(server_us),
            };
            (guards, wit::Decision::Retry(delay_us))
        }
        _ => (guards, exhausted),
    }
}
