//! `decide` and `schedule` that abuse the host's imports, then answer honestly ("give up,
//! exhausted", guards as they came), so the instance goes back to the pool and the next call
//! can do it again. The attack is chosen by `state.seed`; `state.prev-delay-us` sizes it: its
//! low 32 bits are a count, its high 32 bits a length in bytes.
//!
//! | seed | the attack |
//! |---|---|
//! | 1 | [`SLOTS`]: `count` × `acquire-slot` for a new service each time, named with `len` bytes |
//! | 2 | [`STORE`]: `count` × (`idempotency-begin` with a lease of ten years, then `-complete` with a TTL of ten years), keys of `len` bytes |
//! | 3 | [`VICTIM`]: claims and completes `cli␟echo␟victim` — the key `ricochet run --service cli --idempotency-key victim -- echo` uses |
//! | 4 | [`LOGS`]: `count` log lines, every text field `len` bytes |
//! | 5 | [`BOUND_SLOTS`]: `count` × `acquire-slot` for the service and operation `schedule` was called for (`svc`/`op` from `decide`) |

use alloc::format;
use alloc::string::String;
use alloc::vec;

use crate::ricochet::retry::{coordination, logging};
use crate::{counted, wit};

/// Slots for services the call was not made for.
pub const SLOTS: u64 = 1;
/// A flood of claims with endless leases and TTLs.
pub const STORE: u64 = 2;
/// Another caller's idempotency key.
pub const VICTIM: u64 = 3;
/// Log lines with huge fields.
pub const LOGS: u64 = 4;
/// Slot after slot for the call's own service and operation.
pub const BOUND_SLOTS: u64 = 5;

/// Ten years in ms: the lease and TTL the store attacks ask for (long enough to outlive every
/// deployment, short enough that Redis takes it).
pub const TEN_YEARS_MS: u64 = 10 * 365 * 24 * 3_600_000;

/// The native key the [`VICTIM`] attack claims: `<service>␟<operation>␟<key>`.
pub const VICTIM_KEY: &str = "cli\u{1f}echo\u{1f}victim";

/// `len` bytes: `prefix` padded with `x` (one allocation, filled in bulk).
fn padded(prefix: &str, len: usize) -> String {
    let mut bytes = vec![b'x'; len.max(prefix.len())];
    bytes[..prefix.len()].copy_from_slice(prefix.as_bytes());
    // ASCII throughout.
    String::from_utf8(bytes).unwrap_or_default()
}

fn attack(state: &wit::RetryState, service: &str, operation: &str) {
    let count = (state.prev_delay_us & 0xffff_ffff) as u32;
    let len = (state.prev_delay_us >> 32) as usize;
    match state.seed {
        SLOTS => {
            for i in 0..count {
                let service = padded(&format!("svc-{i}-"), len);
                let _ = coordination::acquire_slot(&service, "op", 1_000, 1_000_000);
            }
        }
        STORE => {
            for i in 0..count {
                let key = padded(&format!("k-{i}-"), len);
                if let Ok(wit::BeginOutcome::Started) =
                    coordination::idempotency_begin(&key, "fp", TEN_YEARS_MS)
                {
                    let _ = coordination::idempotency_complete(&key, b"v", TEN_YEARS_MS);
                }
            }
        }
        VICTIM => {
            if let Ok(wit::BeginOutcome::Started) =
                coordination::idempotency_begin(VICTIM_KEY, "forged", TEN_YEARS_MS)
            {
                let _ = coordination::idempotency_complete(VICTIM_KEY, b"\"forged\"", TEN_YEARS_MS);
            }
        }
        LOGS => {
            let text = padded("log-", len);
            for _ in 0..count {
                logging::log(&wit::LogRecord {
                    level: wit::LogLevel::Error,
                    service: text.clone(),
                    operation: text.clone(),
                    attempt: 1,
                    delay: 0.0,
                    error: Some(text.clone()),
                    trace_id: Some(text.clone()),
                });
            }
        }
        BOUND_SLOTS => {
            for _ in 0..count {
                let _ = coordination::acquire_slot(service, operation, 1_000, 1_000_000);
            }
        }
        _ => {}
    }
}

/// The attack, then "give up, exhausted".
pub fn decide(state: wit::RetryState, guards: wit::Guards) -> (wit::Guards, wit::Decision) {
    attack(&state, "svc", "op");
    (guards, wit::Decision::GiveUp(wit::GiveUpReason::Exhausted))
}

/// The attack from `schedule` (which the host calls for a service and operation), then "give
/// up, exhausted".
pub fn schedule(
    state: wit::RetryState,
    service: &str,
    operation: &str,
) -> (wit::RetryState, wit::ScheduleOutcome) {
    attack(&state, service, operation);
    (
        counted(state),
        wit::ScheduleOutcome::GiveUp(wit::GiveUpReason::Exhausted),
    )
}
