//! Slot tickets from Redis (or Redis Cluster) in one round trip, on the server's clock.
//!
//! One Lua script reads the server's `TIME`, computes the window that holds `now + delay`,
//! `INCR`s that window's counter (`<prefix>:{<tag>}:slot:<window>`), gives the
//! counter an expiry on first use and returns the ticket, the window, the earliest fire time and
//! the server's time. Because the window comes from the server's clock, callers whose local
//! clocks disagree still share one herd window; the hash tag ([`operation_tag`](crate::redis_layout::operation_tag), a digest of
//! the service and operation) puts all of an operation's counters on one cluster slot, so the
//! script is cluster-safe whatever the names hold.
//!
//! Every answer also carries the server's time, which feeds a running estimate of
//! `server clock − local clock` (NTP style: the sample is taken at the middle of the round trip,
//! and the sample with the shortest round trip wins, refreshed every few seconds). That estimate
//! is [`Coordinator::now_us`] and the `retry_clock_offset_seconds` gauge.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use redis::Script;

use super::connection::{RedisConnection, RedisFailure};
use crate::coordination::{
    check_slot_request, wall_clock_us, BoxFuture, CoordinationError, Coordinator, SlotGrant,
};
use crate::metrics::RetryMetrics;

/// The slot script. `KEYS[1]` is the operation's key stem `<prefix>:{<tag>}:slot:` ([`operation_tag`](crate::redis_layout::operation_tag))
/// (declared so cluster routing and slot checks see it; the window's key only appends digits,
/// so it hashes to the same slot); `ARGV` = delay_us, window_us.
use crate::redis_layout::SLOT_SCRIPT;

/// How long the best clock sample is trusted before any newer one replaces it.
const CLOCK_SAMPLE_MAX_AGE_US: u64 = 5_000_000;

/// Slot coordinator on Redis or Redis Cluster.
pub struct RedisCoordinator {
    connection: RedisConnection,
    script: Script,
    clock: ClockEstimate,
    /// Simulated error of the local clock (tests of skew); 0 in production.
    local_skew_us: i64,
    metrics: Option<RetryMetrics>,
}

impl RedisCoordinator {
    /// A coordinator on `connection` (which may be shared with an idempotency store).
    pub fn new(connection: RedisConnection) -> Self {
        Self {
            connection,
            script: Script::new(SLOT_SCRIPT),
            clock: ClockEstimate::default(),
            local_skew_us: 0,
            metrics: None,
        }
    }

    /// Publishes the clock offset estimate on `metrics.clock_offset` (`retry_clock_offset_seconds`).
    pub fn with_metrics(mut self, metrics: RetryMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Pretends the local clock runs `skew_us` ahead (negative: behind) — for simulating skewed
    /// hosts in tests. The server's clock, and so the windows, are unaffected.
    pub fn with_local_clock_skew_us(mut self, skew_us: i64) -> Self {
        self.local_skew_us = skew_us;
        self
    }

    /// The connection (to share it with a [`RedisIdempotencyStore`](super::RedisIdempotencyStore)).
    pub fn connection(&self) -> &RedisConnection {
        &self.connection
    }

    /// Estimated server clock minus local clock, µs (0 until the first answer).
    pub fn clock_offset_us(&self) -> i64 {
        self.clock.offset_us.load(Ordering::Relaxed)
    }

    /// Measures the clock offset with `samples` `TIME` round trips now, instead of waiting for
    /// the first slot acquisitions. Also establishes the connection.
    pub async fn calibrate(&self, samples: u32) -> Result<i64, CoordinationError> {
        for _ in 0..samples.max(1) {
            let sent_us = self.local_now_us();
            let (secs, micros): (u64, u64) = self
                .connection
                .query(&redis::cmd("TIME"))
                .await
                .map_err(coordination_error)?;
            let received_us = self.local_now_us();
            self.observe_clock(sent_us, received_us, secs * 1_000_000 + micros);
        }
        Ok(self.clock_offset_us())
    }

    fn local_now_us(&self) -> u64 {
        wall_clock_us().saturating_add_signed(self.local_skew_us)
    }

    fn observe_clock(&self, sent_us: u64, received_us: u64, server_us: u64) {
        if let Some(offset_us) = self.clock.observe(sent_us, received_us, server_us) {
            if let Some(m) = &self.metrics {
                m.clock_offset(offset_us as f64 / 1e6);
            }
        }
    }

    fn slot_key_stem(&self, service: &str, operation: &str) -> String {
        crate::redis_layout::slot_key_stem(self.connection.key_prefix(), service, operation)
    }
}

impl Coordinator for RedisCoordinator {
    fn acquire_slot<'a>(
        &'a self,
        service: &'a str,
        operation: &'a str,
        delay_us: u64,
        window_us: u64,
    ) -> BoxFuture<'a, Result<SlotGrant, CoordinationError>> {
        Box::pin(async move {
            check_slot_request(self.now_us(), delay_us, window_us)?;
            let stem = self.slot_key_stem(service, operation);
            let mut invocation = self.script.key(stem);
            invocation.arg(delay_us).arg(window_us);
            let sent_us = self.local_now_us();
            let (ticket, window, earliest_us, now_us): (u64, u64, u64, u64) = self
                .connection
                .invoke(&invocation)
                .await
                .map_err(coordination_error)?;
            self.observe_clock(sent_us, self.local_now_us(), now_us);
            Ok(SlotGrant {
                ticket,
                window,
                earliest_us,
                now_us,
            })
        })
    }

    fn now_us(&self) -> u64 {
        self.local_now_us()
            .saturating_add_signed(self.clock_offset_us())
    }

    fn name(&self) -> &'static str {
        if self.connection.is_cluster() {
            "redis-cluster"
        } else {
            "redis"
        }
    }
}

impl fmt::Debug for RedisCoordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCoordinator")
            .field("connection", &self.connection)
            .field("clock_offset_us", &self.clock_offset_us())
            .finish()
    }
}

pub(crate) fn coordination_error(failure: RedisFailure) -> CoordinationError {
    match failure {
        RedisFailure::Connection(e) => CoordinationError::Connection(e),
        RedisFailure::Backend(e) => CoordinationError::Backend(e),
    }
}

/// Running estimate of server clock minus local clock.
#[derive(Default)]
struct ClockEstimate {
    offset_us: AtomicI64,
    best: Mutex<Option<ClockSample>>,
}

#[derive(Clone, Copy)]
struct ClockSample {
    round_trip_us: u64,
    taken_at_us: u64,
}

impl ClockEstimate {
    /// Takes one round trip's sample; returns the new offset if the estimate changed.
    fn observe(&self, sent_us: u64, received_us: u64, server_us: u64) -> Option<i64> {
        let round_trip_us = received_us.saturating_sub(sent_us);
        // The server read its clock somewhere in the round trip; assume the middle (RTT/2).
        let local_mid_us = sent_us + round_trip_us / 2;
        let offset_us = server_us as i64 - local_mid_us as i64;
        // A busy lock means another sample is being taken right now: skipping this one is fine.
        let mut best = self.best.try_lock().ok()?;
        let better = match *best {
            None => true,
            Some(b) => {
                round_trip_us <= b.round_trip_us
                    || received_us.saturating_sub(b.taken_at_us) > CLOCK_SAMPLE_MAX_AGE_US
            }
        };
        if !better {
            return None;
        }
        *best = Some(ClockSample {
            round_trip_us,
            taken_at_us: received_us,
        });
        self.offset_us.store(offset_us, Ordering::Relaxed);
        Some(offset_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shortest_round_trip_wins_until_it_is_stale() {
        let c = ClockEstimate::default();
        // Server 300 ms ahead, seen through a 2 ms round trip.
        assert_eq!(c.observe(1_000_000, 1_002_000, 1_301_000), Some(300_000));
        // A slower round trip does not replace it…
        assert_eq!(c.observe(1_100_000, 1_140_000, 1_420_000), None);
        // …a faster one does…
        assert_eq!(c.observe(1_200_000, 1_201_000, 1_500_600), Some(300_100));
        // …and so does any sample once the best is stale.
        assert_eq!(c.observe(9_000_000, 9_040_000, 9_320_000), Some(300_000));
    }
}
