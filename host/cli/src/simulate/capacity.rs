//! The `capacity` model: a server that serves `capacity` calls per bucket and rejects the rest.
//!
//! The bucket is the policy's `slot_width`, so "per slot" in the results and the server's budget
//! speak of the same interval. Calls are answered at once (no network delay): what matters here
//! is when the herd arrives, not how long a round trip takes.

use super::herd::Herd;
use super::tally::Tally;

/// Runs the herd to the end: every client succeeds or gives up.
pub(super) fn run(herd: &mut Herd, tally: &mut Tally<'_>, capacity: u64) {
    let bucket_us = herd.policy().slot_width_us().max(1);
    for client in 0..herd.len() {
        herd.schedule(client, 0);
    }
    let mut bucket = 0;
    let mut served = 0;
    while let Some((now_us, client)) = herd.next_event() {
        if now_us / bucket_us != bucket {
            bucket = now_us / bucket_us;
            served = 0;
        }
        tally.call(now_us, herd.calls_before(client) > 0);
        if served < capacity {
            served += 1;
            herd.succeed(client, now_us);
            tally.success(now_us);
        } else {
            match herd.retry_at(client, now_us) {
                Some(at_us) => herd.schedule(client, at_us),
                None => tally.give_up(now_us),
            }
        }
    }
}
