//! The embedded default coordinator: process-local tickets, no network.
//!
//! Same contract as Redis — a counter per `(service, operation, window)` that lives while its
//! window can still be asked for, plus one window of grace — so a single process gets the same
//! herd spreading with nothing to run. A window is dropped only once it is past (as Redis lets
//! its counter expire), never because newer ones opened: a retry 60 s out and one 1 s out hold
//! counters in windows 60 apart, and both must keep counting. Memory stays bounded by two caps:
//! [`MAX_OPERATIONS`] pairs and [`MAX_WINDOWS_PER_OPERATION`] live windows each; past them, the
//! expired windows are swept and, if that frees nothing, the acquisition is refused (the caller
//! takes its local fallback slot and counts it), never a ticket handed out twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::{
    check_slot_request, wall_clock_us, BoxFuture, CoordinationError, Coordinator, SlotGrant,
};

/// The most `(service, operation)` pairs with live windows (operation names are caller
/// strings: without a cap, a stream of new names would grow the map for ever).
pub const MAX_OPERATIONS: usize = 10_000;

/// The most live windows one operation keeps (retries spread over at most this many windows
/// ahead: 4 096 windows of 1 s cover an hour of Retry-After).
pub const MAX_WINDOWS_PER_OPERATION: usize = 4_096;

/// Live windows of one `(service, operation)`: window index → (next ticket, expiry µs).
type Windows = BTreeMap<u64, (u64, u64)>;

/// Process-local slot coordinator.
#[derive(Debug)]
pub struct InMemoryCoordinator {
    windows: Mutex<HashMap<(String, String), Windows>>,
    offset_us: i64,
    max_operations: usize,
    max_windows: usize,
}

impl Default for InMemoryCoordinator {
    fn default() -> Self {
        Self {
            windows: Mutex::default(),
            offset_us: 0,
            max_operations: MAX_OPERATIONS,
            max_windows: MAX_WINDOWS_PER_OPERATION,
        }
    }
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

    /// The same coordinator with other caps than [`MAX_OPERATIONS`] and
    /// [`MAX_WINDOWS_PER_OPERATION`] (each at least 1).
    pub fn with_limits(mut self, max_operations: usize, max_windows_per_operation: usize) -> Self {
        self.max_operations = max_operations.max(1);
        self.max_windows = max_windows_per_operation.max(1);
        self
    }

    /// `(service, operation)` pairs currently holding live windows.
    pub fn operations(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Windows>> {
        match self.windows.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn take_ticket(
        &self,
        service: &str,
        operation: &str,
        window: u64,
        expires_us: u64,
        now_us: u64,
    ) -> Result<u64, CoordinationError> {
        let mut map = self.lock();
        let pair = (service.to_string(), operation.to_string());
        if !map.contains_key(&pair) && map.len() >= self.max_operations {
            map.retain(|_, windows| {
                windows.retain(|_, (_, expiry)| *expiry > now_us);
                !windows.is_empty()
            });
            if map.len() >= self.max_operations {
                return Err(CoordinationError::Backend(format!(
                    "in-memory coordinator is full: {} operations with live windows (max_operations {})",
                    map.len(),
                    self.max_operations
                )));
            }
        }
        let windows = map.entry(pair).or_default();
        if let Some((next, _)) = windows.get_mut(&window) {
            *next += 1;
            return Ok(*next - 1);
        }
        if windows.len() >= self.max_windows {
            windows.retain(|_, (_, expiry)| *expiry > now_us);
            if windows.len() >= self.max_windows {
                return Err(CoordinationError::Backend(format!(
                    "in-memory coordinator: {service}/{operation} has {} live windows (max_windows_per_operation {})",
                    windows.len(),
                    self.max_windows
                )));
            }
        }
        windows.insert(window, (1, expires_us));
        Ok(0)
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
        let grant = check_slot_request(now_us, delay_us, window_us).and_then(|()| {
            let earliest_us = now_us + delay_us;
            let window = earliest_us / window_us;
            // As the Redis script: the counter lives while its window can still be asked
            // for, plus one window of grace.
            let expires_us = (window + 2) * window_us;
            let ticket = self.take_ticket(service, operation, window, expires_us, now_us)?;
            Ok(SlotGrant {
                ticket,
                window,
                earliest_us,
                now_us,
            })
        });
        Box::pin(std::future::ready(grant))
    }

    fn now_us(&self) -> u64 {
        wall_clock_us().saturating_add_signed(self.offset_us)
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = 1_000_000;

    fn ticket(c: &InMemoryCoordinator, service: &str, windows_ahead: u64) -> u64 {
        let now = c.now_us();
        let window = now / W + windows_ahead;
        c.take_ticket(service, "op", window, (window + 2) * W, now)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn past_windows_are_swept_and_the_map_stays_bounded() {
        let c = InMemoryCoordinator::new().with_limits(3, 2);
        let now = c.now_us();
        for (i, service) in ["a", "b", "c"].iter().enumerate() {
            // Windows that expired a while ago.
            c.take_ticket(service, "op", i as u64, 1, now)
                .expect("room for three");
        }
        assert_eq!(c.operations(), 3);
        // A fourth operation sweeps the three past ones instead of being refused.
        assert_eq!(ticket(&c, "d", 0), 0);
        assert_eq!(c.operations(), 1);
        for service in ["e", "f"] {
            assert_eq!(ticket(&c, service, 0), 0);
        }
        let refused = c
            .take_ticket("g", "op", 0, u64::MAX, now)
            .expect_err("three live operations");
        assert!(
            refused.to_string().contains("max_operations 3"),
            "{refused}"
        );
        // Per operation: two live windows, a third is refused, never a window evicted.
        assert_eq!(ticket(&c, "d", 5), 0);
        let refused = c
            .take_ticket("d", "op", 9, u64::MAX, now)
            .expect_err("two live windows");
        assert!(
            refused.to_string().contains("max_windows_per_operation 2"),
            "{refused}"
        );
        assert_eq!(ticket(&c, "d", 0), 1);
        assert_eq!(ticket(&c, "d", 5), 1);
    }
}
