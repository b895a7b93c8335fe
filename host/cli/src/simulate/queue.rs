//! The event queue: a radix heap, because simulated time never goes backwards.
//!
//! Every event is pushed at or after the time of the last one popped (a call is scheduled from
//! the present into the future), so a monotone priority queue suffices. A radix heap keeps events
//! in 65 buckets by the highest bit in which their time differs from the last popped time; a pop
//! that empties bucket 0 redistributes the next non-empty bucket, and each event moves down at
//! most 64 times. Measured on an `occ` run of 10 000 clients, its pops take a third of the time of
//! `std`'s `BinaryHeap`, whose sift-downs were the largest cost of a run.
//!
//! Events due at the same microsecond come out last-in first-out: deterministic, which is all a
//! run needs.

/// A monotone priority queue of `(time_us, client)`.
#[derive(Debug)]
pub(super) struct EventQueue {
    /// Bucket 0 holds events due at `last_us`; bucket `i > 0` those whose time first differs
    /// from `last_us` in bit `i - 1`.
    buckets: [Vec<(u64, u32)>; 65],
    last_us: u64,
}

impl EventQueue {
    pub(super) fn new() -> Self {
        Self {
            buckets: std::array::from_fn(|_| Vec::new()),
            last_us: 0,
        }
    }

    fn bucket(&self, at_us: u64) -> usize {
        (u64::BITS - (at_us ^ self.last_us).leading_zeros()) as usize
    }

    /// Adds an event. Times before the last popped one are treated as due now.
    pub(super) fn push(&mut self, at_us: u64, client: u32) {
        let at_us = at_us.max(self.last_us);
        let bucket = self.bucket(at_us);
        self.buckets[bucket].push((at_us, client));
    }

    /// Takes the earliest event.
    pub(super) fn pop(&mut self) -> Option<(u64, u32)> {
        if self.buckets[0].is_empty() {
            let next = self.buckets.iter().position(|b| !b.is_empty())?;
            let mut moving = std::mem::take(&mut self.buckets[next]);
            self.last_us = moving.iter().map(|e| e.0).min()?;
            // All of them differ from the new minimum only below bit `next - 1`: they move down.
            for (at_us, client) in moving.drain(..) {
                let bucket = self.bucket(at_us);
                self.buckets[bucket].push((at_us, client));
            }
            // Keep the allocation for the next time this bucket fills.
            self.buckets[next] = moving;
        }
        self.buckets[0].pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ricochet_core::unit_interval;

    #[test]
    fn pops_in_time_order_while_events_keep_arriving() {
        let mut queue = EventQueue::new();
        for client in 0..1000u32 {
            queue.push((unit_interval(1, u64::from(client)) * 1e6) as u64, client);
        }
        let mut now = 0;
        let mut popped = 0;
        let mut counter = 0;
        while let Some((at, client)) = queue.pop() {
            assert!(at >= now, "{at} after {now}");
            now = at;
            popped += 1;
            // Half of the events schedule a follow-up, some of them due right now.
            if client % 2 == 0 && popped < 20_000 {
                counter += 1;
                let later = (unit_interval(2, counter) * 3e5) as u64 * u64::from(counter % 3 != 0);
                queue.push(now + later, client);
            }
        }
        assert!(popped >= 20_000);
    }
}
