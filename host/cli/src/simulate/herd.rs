//! The clients and the event queue: each client is a core [`RetryState`], and for `slots` one
//! in-sim coordinator counts tickets per window as the real ones do.
//!
//! Every client has at most one pending event (its next call, or in `occ` its next write), so
//! the queue holds `(time_us, client)` pairs.

use std::collections::HashMap;

use ricochet_core::{
    unit_interval, Decision, ErrorCategory, Failure, Guards, Policy, RetryState, SlotResolution,
};

use super::queue::EventQueue;

/// A rejected or conflicting call is retried like a 503.
const FAILURE: Failure = Failure::new(ErrorCategory::ServiceUnavailable);

/// Streams of [`stream_seed`], so the clients' jitter seeds and the network's draws never overlap.
pub(super) mod stream {
    /// The jitter seed of client i.
    pub const CLIENT: u64 = 0;
    /// The network delays of client i's messages.
    pub const NETWORK: u64 = 1 << 32;
}

/// A 64-bit seed for item `index` of `stream`, derived from the run's seed by the core's counter
/// RNG.
pub(super) fn stream_seed(seed: u64, stream: u64, index: u32) -> u64 {
    // unit_interval is a multiple of 2^-53 below 1: scaled by 2^64 it is an exact u64.
    (unit_interval(seed, stream + u64::from(index)) * 18_446_744_073_709_551_616.0) as u64
}

/// The herd: one retry state per client, the coordinator's ticket counters, the pending calls.
pub(super) struct Herd {
    policy: Policy,
    clients: Vec<RetryState>,
    /// Next ticket per window index, like the coordinator's key per `(service, operation, window)`.
    tickets: HashMap<u64, u64>,
    queue: EventQueue,
}

impl Herd {
    /// `clients` clients, all starting at t = 0, with seeds derived from `seed`.
    pub(super) fn new(policy: Policy, clients: u32, seed: u64) -> Self {
        Self {
            policy,
            clients: (0..clients)
                .map(|i| RetryState::new(stream_seed(seed, stream::CLIENT, i), 0))
                .collect(),
            tickets: HashMap::new(),
            queue: EventQueue::new(),
        }
    }

    /// The policy every client runs.
    pub(super) fn policy(&self) -> &Policy {
        &self.policy
    }

    /// How many clients.
    pub(super) fn len(&self) -> u32 {
        self.clients.len() as u32
    }

    /// Calls `client` made before the one in flight (0 while its first call is in flight).
    pub(super) fn calls_before(&self, client: u32) -> u32 {
        self.clients[client as usize].calls()
    }

    /// Puts `client`'s next event at `at_us`.
    pub(super) fn schedule(&mut self, client: u32, at_us: u64) {
        self.queue.push(at_us, client);
    }

    /// The earliest pending event.
    pub(super) fn next_event(&mut self) -> Option<(u64, u32)> {
        self.queue.pop()
    }

    /// `client`'s call succeeded at `now_us`.
    pub(super) fn succeed(&mut self, client: u32, now_us: u64) {
        self.clients[client as usize].on_success(now_us, Guards::none());
    }

    /// `client`'s call failed at `now_us`: when does its next call start, if at all?
    ///
    /// The core decides the delay; when coordinated, the retry takes the next ticket of the
    /// window holding its earliest fire time and the core turns the ticket into a fire time
    /// (moving to the next window when one is full), as `coordination::schedule_retry` does.
    pub(super) fn retry_at(&mut self, client: u32, now_us: u64) -> Option<u64> {
        let state = &mut self.clients[client as usize];
        let decision = state.on_failure(&self.policy, FAILURE, now_us, Guards::none());
        let (delay_us, slot_request) = match decision {
            Decision::Retry {
                delay_us,
                slot_request,
            } => (delay_us, slot_request),
            Decision::GiveUp { .. } => return None,
        };
        let Some(mut request) = slot_request else {
            return Some(now_us.saturating_add(delay_us));
        };
        loop {
            let next = self.tickets.entry(request.window).or_insert(0);
            let ticket = *next;
            *next += 1;
            match self.policy.resolve_ticket(&request, ticket, state.seed()) {
                SlotResolution::FireAt { fire_at_us, .. } => return Some(fire_at_us),
                SlotResolution::NextWindow(later) => request = later,
                SlotResolution::GiveUp(_) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ricochet_core::RetryConfig;

    #[test]
    fn a_coordinated_herd_fills_the_slots_of_its_window_evenly() {
        let policy = RetryConfig::DEFAULT.validate().expect("valid");
        let mut herd = Herd::new(policy, 1000, 3);
        let slot_us = policy.slot_width_us();
        let mut per_bucket = [0u32; 13];
        for client in 0..1000 {
            let at = herd.retry_at(client, 0).expect("first retry");
            per_bucket[(at / slot_us) as usize] += 1;
        }
        // One window's tickets: 100 per slot. Without slots all 1000 would fire at 90..110 ms.
        assert_eq!(herd.tickets.get(&0), Some(&1000));
        let peak = per_bucket.iter().max().copied().unwrap_or(0);
        assert!(peak <= 150, "{per_bucket:?}");
        assert!(
            per_bucket[1..=10].iter().all(|&n| n >= 50),
            "{per_bucket:?}"
        );
    }

    #[test]
    fn an_uncoordinated_retry_fires_after_the_cores_delay() {
        let config = RetryConfig {
            coordination_enabled: false,
            jitter: false,
            ..RetryConfig::DEFAULT
        };
        let mut herd = Herd::new(config.validate().expect("valid"), 1, 0);
        assert_eq!(herd.retry_at(0, 5), Some(100_005));
        assert_eq!(herd.retry_at(0, 100_005), Some(300_005));
        assert_eq!(herd.retry_at(0, 300_005), None, "3 calls made: exhausted");
        assert!(herd.tickets.is_empty());
    }
}
