//! From a backoff delay to a slot: ask the coordinator within a deadline, resolve the ticket with
//! the core, or fall back to the core's local slot: what the executor does for every coordinated
//! retry.

use std::time::Duration;

use ricochet_core::{GiveUpReason, Policy, SlotResolution};

use super::{CoordinationError, Coordinator};
use crate::metrics::RetryMetrics;

/// How long a coordination call may take before the local fallback slot is used (DESIGN: 25 ms).
pub const DEFAULT_COORDINATION_DEADLINE: Duration = Duration::from_millis(25);

/// Where a retry goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduled {
    /// Fire after `delay_us` from local now.
    FireIn {
        /// Delay from now.
        delay_us: u64,
        /// The slot within the window.
        slot: u32,
        /// `Some(reason)` when the coordinator did not answer and the local slot was used.
        fallback: Option<&'static str>,
    },
    /// Every window the retry could move to was full.
    GiveUp(GiveUpReason),
}

/// Decides where a retry goes: asks `coordinator` for a ticket within `deadline`, resolves it with
/// the core (moving to the next window when one is full), or on timeout or error takes
/// `policy.fallback_ticket(seed, retry)` on the local clock and counts
/// `retry_coordination_fallback_total{service,operation,reason}`.
#[allow(clippy::too_many_arguments)]
pub async fn schedule_retry(
    coordinator: &dyn Coordinator,
    policy: &Policy,
    seed: u64,
    retry: u32,
    delay_us: u64,
    service: &str,
    operation: &str,
    deadline: Duration,
    metrics: Option<&RetryMetrics>,
) -> Scheduled {
    let window_us = policy.window_us();
    let mut ask_delay_us = delay_us;
    let mut moves = 0u8;
    loop {
        let answer = tokio::time::timeout(
            deadline,
            coordinator.acquire_slot(service, operation, ask_delay_us, window_us),
        )
        .await
        .unwrap_or(Err(CoordinationError::Timeout));
        let grant = match answer {
            Ok(grant) => grant,
            Err(e) => {
                if let Some(m) = metrics {
                    m.coordination_fallback
                        .with_label_values(&[service, operation, e.reason()])
                        .inc();
                }
                let now_us = super::wall_clock_us();
                let mut request = policy.slot_request(now_us.saturating_add(delay_us), retry);
                request.moves = moves;
                let ticket = policy.fallback_ticket(seed, retry);
                return match policy.resolve_ticket(&request, ticket, seed) {
                    SlotResolution::FireAt { fire_at_us, slot } => Scheduled::FireIn {
                        delay_us: fire_at_us.saturating_sub(now_us),
                        slot,
                        fallback: Some(e.reason()),
                    },
                    // A fallback ticket is below slot_count, so it always fits; keep the plain delay.
                    _ => Scheduled::FireIn {
                        delay_us,
                        slot: 0,
                        fallback: Some(e.reason()),
                    },
                };
            }
        };
        let mut request = policy.slot_request(grant.earliest_us, retry);
        request.window = grant.window;
        request.moves = moves;
        match policy.resolve_ticket(&request, grant.ticket, seed) {
            SlotResolution::FireAt { fire_at_us, slot } => {
                return Scheduled::FireIn {
                    delay_us: fire_at_us.saturating_sub(grant.now_us),
                    slot,
                    fallback: None,
                };
            }
            SlotResolution::NextWindow(next) => {
                moves = next.moves;
                ask_delay_us = next.earliest_us.saturating_sub(grant.now_us);
            }
            SlotResolution::GiveUp(reason) => return Scheduled::GiveUp(reason),
        }
    }
}
