//! The embedded default coordinator: process-local tickets, no network.
//!
//! Same contract as Redis — a counter per `(service, operation, window)` — so a single process
//! gets the same herd spreading with nothing to run. Old windows are dropped as new ones open,
//! so memory stays bounded by the number of operations.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::{wall_clock_us, BoxFuture, CoordinationError, Coordinator, SlotGrant};

/// Windows kept per operation (older ones are long past).
const WINDOWS_KEPT: usize = 16;

/// Open windows of one `(service, operation)`: `(window index, next ticket)`, oldest first.
type Windows = VecDeque<(u64, u64)>;

/// Process-local slot coordinator.
#[derive(Debug, Default)]
pub struct InMemoryCoordinator {
    windows: Mutex<HashMap<(String, String), Windows>>,
    offset_us: i64,
}

impl InMemoryCoordinator {
    /// A coordinator on the local clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// A coordinator whose clock runs `offset_us` ahead of (or, negative, behind) the local one —
    /// for simulating skew in tests.
    pub fn with_clock_offset_us(offset_us: i64) -> Self {
        Self {
            offset_us,
            ..Self::default()
        }
    }

    fn take_ticket(&self, service: &str, operation: &str, window: u64) -> u64 {
        let mut map = match self.windows.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let windows = map
            .entry((service.to_string(), operation.to_string()))
            .or_default();
        if let Some((_, next)) = windows.iter_mut().find(|(w, _)| *w == window) {
            *next += 1;
            return *next - 1;
        }
        if windows.len() >= WINDOWS_KEPT {
            windows.pop_front();
        }
        windows.push_back((window, 1));
        0
    }
}

impl Coordinator for InMemoryCoordinator {
    fn acquire_slot<'a>(
        &'a self,
        service: &'a str,
        operation: &'a str,
        delay_us: u64,
        window_us: u64,
    ) -> BoxFuture<'a, Result<SlotGrant, CoordinationError>> {
        let now_us = self.now_us();
        let earliest_us = now_us.saturating_add(delay_us);
        let window = earliest_us / window_us.max(1);
        let ticket = self.take_ticket(service, operation, window);
        Box::pin(std::future::ready(Ok(SlotGrant {
            ticket,
            window,
            earliest_us,
            now_us,
        })))
    }

    fn now_us(&self) -> u64 {
        wall_clock_us().saturating_add_signed(self.offset_us)
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
