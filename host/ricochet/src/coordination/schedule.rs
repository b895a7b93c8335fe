//! Where a retry goes: a coordinated slot within a deadline, or a local one.
//!
//! [`schedule_retry`] is the one place the host turns a core decision's delay into a fire time.
//! It asks the coordinator for a ticket, lets the core resolve it (moving to the next window
//! while a window is full, up to the core's limit), and converts the fire time — which is on the
//! coordinator's clock — into a delay from now. Whatever goes wrong with the coordinator (a
//! timeout, a refused connection, a script error) costs the caller at most its deadline, for all
//! round trips together: it then takes the core's seeded fallback slot on the local clock and
//! counts the fallback.
//!
//! A call with a deadline passes the latest local instant its retry may fire
//! ([`schedule_retry_before`]). The core checks each slot against it ([`SlotRequest::latest_us`]),
//! re-based onto the coordinator's clock at each grant from the time left when the grant arrived —
//! so the round trip is on the safe side — and a slot past it gives up with `deadline`.
//!
//! [`SlotRequest::latest_us`]: ricochet_core::SlotRequest::latest_us

use std::time::Duration;

use tokio::time::Instant;

use ricochet_core::{GiveUpReason, Policy, SlotResolution};

use super::{wall_clock_us, CoordinationError, Coordinator};
use crate::metrics::RetryMetrics;

/// How long a coordination may take before the local fallback slot is used (DESIGN: 25 ms).
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
        /// `None` when the coordinator placed the retry; otherwise why the local fallback slot
        /// was used: `timeout`, `connection`, `backend` or `invalid`.
        fallback: Option<&'static str>,
    },
    /// Every window the retry could move to was full (`budget`), or the slot fires past the
    /// call's deadline (`deadline`).
    GiveUp(GiveUpReason),
}

/// Decides where a retry goes: asks `coordinator` for a ticket within `deadline`, resolves it
/// with the core (moving to the next window when one is full), or on timeout or error takes
/// `policy.fallback_ticket(seed, retry)` on the local clock and counts
/// `retry_coordination_fallback_total{service,operation,reason}`.
///
/// `deadline` bounds the whole coordination, window moves included. The returned delay is from
/// local now: the fire time on the coordinator's clock minus the coordinator's clock at the
/// grant, so it does not depend on how far the local clock is off. With
/// `coordination_enabled: false` the coordinator is not asked and `delay_us` comes back
/// unchanged (slot 0, no fallback).
#[allow(clippy::too_many_arguments)] // the executor's call site names each one
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
    schedule_retry_before(
        coordinator,
        policy,
        seed,
        retry,
        delay_us,
        service,
        operation,
        deadline,
        metrics,
        None,
    )
    .await
}

/// [`schedule_retry`] for a call that must fire its retry by `fire_by` (local, monotonic; `None`:
/// no deadline): a slot that would fire later gives up with [`GiveUpReason::Deadline`], as does
/// a full window whose successor starts later — whether the coordinator placed the retry or the
/// local fallback did.
#[allow(clippy::too_many_arguments)] // the executor's call site names each one
pub async fn schedule_retry_before(
    coordinator: &dyn Coordinator,
    policy: &Policy,
    seed: u64,
    retry: u32,
    delay_us: u64,
    service: &str,
    operation: &str,
    deadline: Duration,
    metrics: Option<&RetryMetrics>,
    fire_by: Option<Instant>,
) -> Scheduled {
    if !policy.coordination_enabled() {
        return Scheduled::FireIn {
            delay_us,
            slot: 0,
            fallback: None,
        };
    }
    let coordinated = coordinate(
        coordinator,
        policy,
        seed,
        retry,
        delay_us,
        service,
        operation,
        fire_by,
    );
    let reason = match tokio::time::timeout(deadline, coordinated).await {
        Ok(Ok(scheduled)) => return scheduled,
        Ok(Err(e)) => {
            tracing::debug!(
                service,
                operation,
                coordinator = coordinator.name(),
                error = %e,
                "coordination failed; taking a local slot"
            );
            e.reason()
        }
        Err(_) => {
            tracing::debug!(
                service,
                operation,
                coordinator = coordinator.name(),
                "coordination timed out; taking a local slot"
            );
            CoordinationError::Timeout.reason()
        }
    };
    if let Some(m) = metrics {
        m.coordination_fallback(service, operation, reason);
    }
    local_slot(policy, seed, retry, delay_us, reason, fire_by)
}

/// `fire_by` on a clock that reads `now_us` at this moment: the time left is measured now, after
/// whatever round trip produced `now_us`, so the result errs early, never late.
fn latest_on(now_us: u64, fire_by: Option<Instant>) -> Option<u64> {
    fire_by.map(|by| {
        let left = by.saturating_duration_since(Instant::now());
        now_us.saturating_add(u64::try_from(left.as_micros()).unwrap_or(u64::MAX))
    })
}

#[allow(clippy::too_many_arguments)]
async fn coordinate(
    coordinator: &dyn Coordinator,
    policy: &Policy,
    seed: u64,
    retry: u32,
    delay_us: u64,
    service: &str,
    operation: &str,
    fire_by: Option<Instant>,
) -> Result<Scheduled, CoordinationError> {
    let window_us = policy.window_us();
    let mut grant = coordinator
        .acquire_slot(service, operation, delay_us, window_us)
        .await?;
    let mut moves = 0;
    loop {
        let latest_us = latest_on(grant.now_us, fire_by);
        let mut request = policy.slot_request_within(grant.earliest_us, latest_us, retry);
        if request.window != grant.window {
            return Err(CoordinationError::Backend(format!(
                "coordinator put {} µs in window {}, expected {}",
                grant.earliest_us, grant.window, request.window
            )));
        }
        request.moves = moves;
        match policy.resolve_ticket(&request, grant.ticket, seed) {
            SlotResolution::FireAt { fire_at_us, slot } => {
                return Ok(Scheduled::FireIn {
                    delay_us: fire_at_us.saturating_sub(grant.now_us),
                    slot,
                    fallback: None,
                });
            }
            SlotResolution::NextWindow(next) => {
                // Asking for the next window's start from the last grant's "now" lands in that
                // window: the coordinator's clock has only moved forward since.
                moves = next.moves;
                let delay_us = next.earliest_us.saturating_sub(grant.now_us);
                grant = coordinator
                    .acquire_slot(service, operation, delay_us, window_us)
                    .await?;
            }
            SlotResolution::GiveUp(reason) => return Ok(Scheduled::GiveUp(reason)),
        }
    }
}

/// The core's seeded fallback slot, on the local clock.
fn local_slot(
    policy: &Policy,
    seed: u64,
    retry: u32,
    delay_us: u64,
    reason: &'static str,
    fire_by: Option<Instant>,
) -> Scheduled {
    let now_us = wall_clock_us();
    let request = policy.slot_request_within(
        now_us.saturating_add(delay_us),
        latest_on(now_us, fire_by),
        retry,
    );
    let ticket = policy.fallback_ticket(seed, retry);
    match policy.resolve_ticket(&request, ticket, seed) {
        SlotResolution::FireAt { fire_at_us, slot } => Scheduled::FireIn {
            delay_us: fire_at_us.saturating_sub(now_us),
            slot,
            fallback: Some(reason),
        },
        SlotResolution::GiveUp(reason) => Scheduled::GiveUp(reason),
        // A fallback ticket is below slot_count, so within any capacity (≥ 1); should the core
        // ever say otherwise, the plain backoff delay is still a safe retry.
        SlotResolution::NextWindow(_) => Scheduled::FireIn {
            delay_us,
            slot: ticket as u32,
            fallback: Some(reason),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordination::{BoxFuture, InMemoryCoordinator, SlotGrant};
    use ricochet_core::RetryConfig;

    #[cfg(feature = "prometheus")]
    struct Broken;
    #[cfg(feature = "prometheus")]
    impl Coordinator for Broken {
        fn acquire_slot<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: u64,
            _: u64,
        ) -> BoxFuture<'a, Result<SlotGrant, CoordinationError>> {
            Box::pin(async { Err(CoordinationError::Connection("refused".into())) })
        }
        fn now_us(&self) -> u64 {
            wall_clock_us()
        }
        fn name(&self) -> &'static str {
            "broken"
        }
    }

    struct Silent;
    impl Coordinator for Silent {
        fn acquire_slot<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: u64,
            _: u64,
        ) -> BoxFuture<'a, Result<SlotGrant, CoordinationError>> {
            Box::pin(std::future::pending())
        }
        fn now_us(&self) -> u64 {
            wall_clock_us()
        }
        fn name(&self) -> &'static str {
            "silent"
        }
    }

    fn policy(capacity: Option<u32>) -> Policy {
        RetryConfig {
            slot_capacity: capacity,
            ..RetryConfig::DEFAULT
        }
        .validate()
        .expect("valid")
    }

    const DEADLINE: Duration = DEFAULT_COORDINATION_DEADLINE;

    #[tokio::test]
    async fn tickets_fill_the_slots_in_order() {
        let c = InMemoryCoordinator::new();
        let p = policy(None);
        for ticket in 0..25u32 {
            match schedule_retry(&c, &p, 7, 1, 200_000, "s", "o", DEADLINE, None).await {
                Scheduled::FireIn {
                    delay_us,
                    slot,
                    fallback: None,
                } => {
                    assert_eq!(slot, ticket % 10);
                    let lo = 200_000 + u64::from(slot) * 100_000;
                    assert!(
                        (lo..lo + 100_000).contains(&delay_us),
                        "{ticket}: {delay_us}"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn full_windows_move_on_and_finally_give_up() {
        let c = InMemoryCoordinator::new();
        let p = policy(Some(1));
        // 10 slots × capacity 1: the 11th retry moves to the next window (a later fire time).
        let mut last = 0;
        for _ in 0..50 {
            match schedule_retry(&c, &p, 1, 1, 0, "s", "o", DEADLINE, None).await {
                Scheduled::FireIn {
                    delay_us,
                    fallback: None,
                    ..
                } => last = last.max(delay_us),
                other => panic!("{other:?}"),
            }
        }
        // 50 retries need 5 windows of 1 s, so the last fires in the 4th window after the
        // current one: more than 3 s from now whatever the phase of now within its window.
        assert!(last > 3_000_000, "50 retries fill 5 windows: {last}");
        assert_eq!(
            schedule_retry(&c, &p, 1, 1, 0, "s", "o", DEADLINE, None).await,
            Scheduled::GiveUp(GiveUpReason::Budget)
        );
    }

    #[cfg(feature = "prometheus")]
    #[tokio::test]
    async fn errors_and_silence_fall_back_and_count() {
        let registry = prometheus::Registry::new();
        let metrics = RetryMetrics::register(&registry).expect("register");
        let p = policy(None);
        let started = std::time::Instant::now();
        let deadline = Duration::from_millis(20);
        for (c, reason) in [
            (&Broken as &dyn Coordinator, "connection"),
            (&Silent, "timeout"),
        ] {
            match schedule_retry(c, &p, 3, 2, 100_000, "svc", "op", deadline, Some(&metrics)).await
            {
                Scheduled::FireIn {
                    delay_us,
                    slot,
                    fallback,
                } => {
                    assert_eq!(fallback, Some(reason));
                    assert_eq!(u64::from(slot), p.fallback_ticket(3, 2));
                    let lo = 100_000 + u64::from(slot) * 100_000;
                    assert!((lo..lo + 100_000).contains(&delay_us));
                }
                other => panic!("{other:?}"),
            }
            let counted = metrics
                .coordination_fallback
                .with_label_values(&["svc", "op", reason])
                .get();
            assert_eq!(counted, 1);
        }
        assert!(started.elapsed() < Duration::from_millis(500));
    }

    #[tokio::test]
    async fn a_slot_past_the_call_s_deadline_gives_up_with_deadline() {
        let p = policy(None);
        // 0.45 s left, a 100 ms backoff: slots 0–2 (and maybe 3) fit, slots 4–9 do not.
        let fire_by = Some(Instant::now() + Duration::from_millis(450));
        let c = InMemoryCoordinator::new();
        let (mut placed, mut refused) = (0, 0);
        for _ in 0..10 {
            let s = schedule_retry_before(&c, &p, 7, 1, 100_000, "s", "o", DEADLINE, None, fire_by)
                .await;
            match s {
                Scheduled::FireIn { delay_us, .. } => {
                    assert!(delay_us <= 450_000, "{delay_us}");
                    placed += 1;
                }
                Scheduled::GiveUp(reason) => {
                    assert_eq!(reason, GiveUpReason::Deadline);
                    refused += 1;
                }
            }
        }
        // Ten tickets of one window (unless the calls straddle a window boundary, which only
        // restarts the count): the later slots are refused.
        assert!(
            placed >= 3 && refused >= 1,
            "{placed} placed, {refused} refused"
        );
        // The local fallback slot is held to the same deadline.
        for seed in 0..50 {
            match schedule_retry_before(
                &Silent,
                &p,
                seed,
                1,
                100_000,
                "s",
                "o",
                Duration::from_millis(1),
                None,
                fire_by,
            )
            .await
            {
                Scheduled::FireIn {
                    delay_us, fallback, ..
                } => {
                    assert_eq!(fallback, Some("timeout"));
                    assert!(delay_us <= 450_000, "{delay_us}");
                }
                Scheduled::GiveUp(reason) => assert_eq!(reason, GiveUpReason::Deadline),
            }
        }
        // Without a deadline nothing gives up.
        let c = InMemoryCoordinator::new();
        for _ in 0..10 {
            assert!(matches!(
                schedule_retry(&c, &p, 7, 1, 100_000, "s", "o", DEADLINE, None).await,
                Scheduled::FireIn { .. }
            ));
        }
    }

    #[tokio::test]
    async fn disabled_coordination_is_not_asked() {
        let p = RetryConfig {
            coordination_enabled: false,
            ..RetryConfig::DEFAULT
        }
        .validate()
        .expect("valid");
        assert_eq!(
            schedule_retry(
                &Silent,
                &p,
                0,
                1,
                123,
                "s",
                "o",
                Duration::from_secs(60),
                None
            )
            .await,
            Scheduled::FireIn {
                delay_us: 123,
                slot: 0,
                fallback: None
            }
        );
    }
}
