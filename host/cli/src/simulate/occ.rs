//! The `occ` model: the AWS "Exponential Backoff And Jitter" study's optimistic concurrency.
//!
//! One row with a version. A client's attempt is four messages, each delayed by |N(10 ms, 2 ms)|:
//! the read request, the read response (carrying the version), the conditional write, and the
//! write response. The write commits only if no other write committed since the client's read;
//! otherwise the client backs off and starts over with a new read. As in the study, `calls`
//! counts writes.
//!
//! Only the write is an event: a read changes nothing, and whether a commit fell between a read
//! at `read_us` and the write being processed now is simply `last_commit_us > read_us`, because
//! events are processed in time order. One heap entry per attempt keeps N = 10 000 fast.

use super::herd::{stream, stream_seed, Herd};
use super::tally::Tally;
use ricochet_core::unit_interval;

/// Mean one-way network delay (the study's 10 ms).
const NET_MEAN_US: f64 = 10_000.0;
/// Standard deviation of the network delay (the study's 2 ms).
const NET_SD_US: f64 = 2_000.0;

/// The four message delays of attempt `attempt` (0 = first call) of the client whose network
/// stream is `net_seed`: read request, read response, write request, write response.
///
/// Box-Muller on the counter RNG, both outputs used: two pairs per attempt. Like the core's
/// jitter, the delays of attempt *n* are a pure function of `(seed, n)`.
fn attempt_delays_us(net_seed: u64, attempt: u32) -> [u64; 4] {
    let first = 4 * u64::from(attempt);
    let mut out = [0; 4];
    for pair in 0..2 {
        let counter = first + 2 * pair;
        // 1 - u is in (0, 1], so the logarithm is finite.
        let radius = libm::sqrt(-2.0 * libm::log(1.0 - unit_interval(net_seed, counter)));
        let (sin, cos) =
            libm::sincos(2.0 * core::f64::consts::PI * unit_interval(net_seed, counter + 1));
        for (slot, z) in [(2 * pair, radius * cos), (2 * pair + 1, radius * sin)] {
            // Rounded to whole µs with basic operations only (libm's round is a slow path).
            out[slot as usize] = (libm::fabs(NET_MEAN_US + NET_SD_US * z) + 0.5) as u64;
        }
    }
    out
}

/// What the server knows of one client's attempt in flight.
#[derive(Clone, Copy, Default)]
struct InFlight {
    /// When its read reached the row.
    read_us: u64,
    /// How long the write's response takes to reach the client.
    reply_us: u64,
}

/// The server's view of the clients' attempts in flight.
struct Row {
    net_seeds: Vec<u64>,
    in_flight: Vec<InFlight>,
    last_commit_us: Option<u64>,
}

impl Row {
    /// Sends attempt `attempt` of `client` at `send_us`; its write is the event.
    fn start(&mut self, herd: &mut Herd, client: u32, attempt: u32, send_us: u64) {
        let [to_read, read_back, to_write, write_back] =
            attempt_delays_us(self.net_seeds[client as usize], attempt);
        let read_us = send_us.saturating_add(to_read);
        self.in_flight[client as usize] = InFlight {
            read_us,
            reply_us: write_back,
        };
        herd.schedule(client, read_us.saturating_add(read_back + to_write));
    }
}

/// Runs the herd to the end: every client commits or gives up.
pub(super) fn run(herd: &mut Herd, tally: &mut Tally<'_>, seed: u64) {
    let clients = herd.len();
    let mut row = Row {
        net_seeds: (0..clients)
            .map(|c| stream_seed(seed, stream::NETWORK, c))
            .collect(),
        in_flight: vec![InFlight::default(); clients as usize],
        last_commit_us: None,
    };
    for client in 0..clients {
        row.start(herd, client, 0, 0);
    }
    while let Some((write_us, client)) = herd.next_event() {
        let attempt = herd.calls_before(client);
        tally.call(write_us, attempt > 0);
        let InFlight { read_us, reply_us } = row.in_flight[client as usize];
        let answered_us = write_us.saturating_add(reply_us);
        // A commit at the very microsecond of the read is taken to be visible to it.
        if row
            .last_commit_us
            .is_none_or(|commit_us| commit_us <= read_us)
        {
            row.last_commit_us = Some(write_us);
            herd.succeed(client, answered_us);
            tally.success(answered_us);
        } else {
            match herd.retry_at(client, answered_us) {
                Some(send_us) => row.start(herd, client, attempt + 1, send_us),
                None => tally.give_up(answered_us),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_delays_have_the_studys_mean_and_spread() {
        let n = 20_000u32;
        let draws: Vec<f64> = (0..n)
            .flat_map(|a| attempt_delays_us(42, a))
            .map(|d| d as f64)
            .collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / draws.len() as f64;
        assert!((mean - 10_000.0).abs() < 50.0, "mean {mean}");
        assert!((var.sqrt() - 2_000.0).abs() < 50.0, "sd {}", var.sqrt());
        assert_eq!(attempt_delays_us(42, 3), attempt_delays_us(42, 3));
    }
}
