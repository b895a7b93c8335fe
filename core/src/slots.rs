//! Retry slots: spreading a herd of retries evenly over a window.
//!
//! `slot_count` slots of `slot_width` form a window `W = slot_count * slot_width`. When many
//! callers retry one `(service, operation)` at about the same time, the coordinator hands out
//! tickets `0, 1, 2, …` for the window that holds their earliest fire time; ticket *k* fires at
//! `earliest + (k mod slot_count) * slot_width`, plus a jitter inside its slot. A herd of N lands
//! about N / slot_count per slot instead of in one spike. With `slot_capacity` set, tickets past
//! `slot_count * slot_capacity` move to the next window, at most [`MAX_WINDOW_MOVES`] times; then
//! the retry gives up with reason `budget`. When no coordinator answers, the host takes
//! [`Policy::fallback_ticket`]: a random slot drawn from the seed.

use crate::config::Policy;
use crate::decision::GiveUpReason;
use crate::rng::{stream, unit_interval};

/// How many times a retry may be pushed to a later window before it gives up.
pub const MAX_WINDOW_MOVES: u8 = 4;

/// What a retry asks the coordinator for: a ticket in the window holding `earliest_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotRequest {
    /// The earliest time the retry may fire (after its backoff delay), in the coordinator's clock.
    pub earliest_us: u64,
    /// The window index: `earliest_us / (slot_count * slot_width)`.
    pub window: u64,
    /// Which retry this is (1 = first), for the seeded draws.
    pub retry: u32,
    /// How many times this retry has already moved to a later window.
    pub moves: u8,
    /// The latest time the retry may fire, on the same clock as `earliest_us` (the call's
    /// deadline); `None` when the call has none. A host that re-bases the request on another
    /// clock (the coordinator's) must re-base this too.
    pub latest_us: Option<u64>,
}

/// Where a ticket puts a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotResolution {
    /// Fire at this time, in slot `slot` of the window.
    FireAt {
        /// When to fire, in the same clock as `earliest_us`.
        fire_at_us: u64,
        /// The slot index within the window.
        slot: u32,
    },
    /// The window is full: ask again with this request (the next window).
    NextWindow(SlotRequest),
    /// Give up: the slot fires past the request's `latest_us` (`Deadline`), or the retry moved
    /// too many times (`Budget`).
    GiveUp(GiveUpReason),
}

impl Policy {
    /// Length of one coordination window (at least 1 µs).
    #[inline]
    pub fn window_us(&self) -> u64 {
        // Saturating: validation bounds each factor, not their product (u32::MAX slots of up to
        // 2^53 µs).
        u64::from(self.slot_count)
            .saturating_mul(self.slot_width_us)
            .max(1)
    }

    /// The window that holds time `t_us`.
    #[inline]
    pub fn window_index(&self, t_us: u64) -> u64 {
        t_us / self.window_us()
    }

    /// The request for a retry that may fire no earlier than `earliest_us`, with no deadline.
    #[inline]
    pub fn slot_request(&self, earliest_us: u64, retry: u32) -> SlotRequest {
        SlotRequest {
            earliest_us,
            window: self.window_index(earliest_us),
            retry,
            moves: 0,
            latest_us: None,
        }
    }

    /// The request for a retry that may fire no earlier than `earliest_us` and no later than
    /// `latest_us` (`None`: no deadline), both on one clock.
    #[inline]
    pub fn slot_request_within(
        &self,
        earliest_us: u64,
        latest_us: Option<u64>,
        retry: u32,
    ) -> SlotRequest {
        SlotRequest {
            latest_us,
            ..self.slot_request(earliest_us, retry)
        }
    }

    /// Where ticket `ticket` (0, 1, 2, … handed out for `request.window`) puts the retry.
    ///
    /// Gives up with [`GiveUpReason::Deadline`] when the slot would fire after
    /// `request.latest_us`, or the window is full and the next one starts after it; with
    /// [`GiveUpReason::Budget`] when the window is full and the retry has moved
    /// `MAX_WINDOW_MOVES` (4) times.
    pub fn resolve_ticket(&self, request: &SlotRequest, ticket: u64, seed: u64) -> SlotResolution {
        let slots = u64::from(self.slot_count.max(1));
        let too_late = |t_us: u64| request.latest_us.is_some_and(|latest| t_us > latest);
        if let Some(capacity) = self.slot_capacity {
            if ticket >= slots.saturating_mul(u64::from(capacity)) {
                let window = request.window.saturating_add(1);
                let earliest_us = window
                    .saturating_mul(self.window_us())
                    .max(request.earliest_us);
                if too_late(earliest_us) {
                    return SlotResolution::GiveUp(GiveUpReason::Deadline);
                }
                if request.moves >= MAX_WINDOW_MOVES {
                    return SlotResolution::GiveUp(GiveUpReason::Budget);
                }
                return SlotResolution::NextWindow(SlotRequest {
                    earliest_us,
                    window,
                    retry: request.retry,
                    moves: request.moves + 1,
                    latest_us: request.latest_us,
                });
            }
        }
        let slot = ticket % slots;
        let u = unit_interval(seed, stream::SLOT_JITTER + u64::from(request.retry));
        let inside = (u * self.slot_width_us as f64) as u64;
        let fire_at_us = request
            .earliest_us
            .saturating_add(slot.saturating_mul(self.slot_width_us))
            .saturating_add(inside);
        if too_late(fire_at_us) {
            return SlotResolution::GiveUp(GiveUpReason::Deadline);
        }
        SlotResolution::FireAt {
            fire_at_us,
            slot: slot as u32,
        }
    }

    /// The local fallback when no coordinator answers: a ticket for a random slot, drawn from the
    /// seed (uniform over `0..slot_count`).
    #[inline]
    pub fn fallback_ticket(&self, seed: u64, retry: u32) -> u64 {
        let u = unit_interval(seed, stream::SLOT + u64::from(retry));
        let slots = u64::from(self.slot_count.max(1));
        ((u * slots as f64) as u64).min(slots - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RetryConfig;

    #[test]
    fn a_herd_spreads_evenly_over_the_slots() {
        let p = RetryConfig::DEFAULT.validate().expect("valid");
        let req = p.slot_request(5_000_000, 1);
        let mut per_slot = [0u32; 10];
        for ticket in 0..1000 {
            match p.resolve_ticket(&req, ticket, ticket) {
                SlotResolution::FireAt { fire_at_us, slot } => {
                    per_slot[slot as usize] += 1;
                    let lo = 5_000_000 + u64::from(slot) * 100_000;
                    assert!((lo..lo + 100_000).contains(&fire_at_us));
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(per_slot.iter().all(|&n| n == 100), "{per_slot:?}");
    }

    #[test]
    fn full_windows_move_on_then_give_up() {
        let c = RetryConfig {
            slot_capacity: Some(2),
            ..RetryConfig::DEFAULT
        };
        let p = c.validate().expect("valid");
        let mut req = p.slot_request(1_050_000, 1);
        assert_eq!(req.window, 1);
        assert!(matches!(
            p.resolve_ticket(&req, 19, 0),
            SlotResolution::FireAt { .. }
        ));
        for moves in 1..=MAX_WINDOW_MOVES {
            match p.resolve_ticket(&req, 20, 0) {
                SlotResolution::NextWindow(next) => {
                    assert_eq!(next.window, req.window + 1);
                    assert_eq!(next.moves, moves);
                    assert_eq!(next.earliest_us, next.window * 1_000_000);
                    req = next;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            p.resolve_ticket(&req, 20, 0),
            SlotResolution::GiveUp(GiveUpReason::Budget)
        );
    }

    #[test]
    fn fallback_tickets_cover_every_slot() {
        let p = RetryConfig::AGGRESSIVE.validate().expect("valid");
        let mut seen = [0u32; 20];
        for seed in 0..10_000 {
            seen[p.fallback_ticket(seed, 1) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 350 && n < 650), "{seen:?}");
    }
}
