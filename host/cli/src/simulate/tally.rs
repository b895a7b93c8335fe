//! Counting what the server saw, per slot-width bucket, and turning it into a [`SimResult`].

use super::SimResult;

/// Calls, retries and completions per bucket, and who is done.
pub(super) struct Tally<'a> {
    bucket_us: u64,
    calls: u64,
    /// Calls per bucket.
    arrivals: Vec<u64>,
    /// Retries per bucket (first calls excluded), for `peak_per_slot`.
    retries: Vec<u64>,
    /// Successes per bucket.
    successes: Vec<u64>,
    gave_up: u64,
    done: u64,
    last_done_us: u64,
    progress: Option<&'a dyn Fn(u64)>,
    progress_every: u64,
}

fn bump(counts: &mut Vec<u64>, bucket: usize) {
    if counts.len() <= bucket {
        counts.resize(bucket + 1, 0);
    }
    counts[bucket] += 1;
}

impl<'a> Tally<'a> {
    pub(super) fn new(bucket_us: u64, clients: u32, progress: Option<&'a dyn Fn(u64)>) -> Self {
        Self {
            bucket_us: bucket_us.max(1),
            calls: 0,
            arrivals: Vec::new(),
            retries: Vec::new(),
            successes: Vec::new(),
            gave_up: 0,
            done: 0,
            last_done_us: 0,
            progress,
            progress_every: (u64::from(clients) / 100).max(1),
        }
    }

    fn bucket(&self, t_us: u64) -> usize {
        (t_us / self.bucket_us) as usize
    }

    /// A call arrives at the server at `t_us`; `retry` is false for a client's first call.
    pub(super) fn call(&mut self, t_us: u64, retry: bool) {
        let bucket = self.bucket(t_us);
        self.calls += 1;
        bump(&mut self.arrivals, bucket);
        if retry {
            bump(&mut self.retries, bucket);
        }
    }

    /// A client learns at `t_us` that its call succeeded.
    pub(super) fn success(&mut self, t_us: u64) {
        let bucket = self.bucket(t_us);
        bump(&mut self.successes, bucket);
        self.client_done(t_us);
    }

    /// A client gives up at `t_us`.
    pub(super) fn give_up(&mut self, t_us: u64) {
        self.gave_up += 1;
        self.client_done(t_us);
    }

    fn client_done(&mut self, t_us: u64) {
        self.done += 1;
        self.last_done_us = self.last_done_us.max(t_us);
        if let Some(progress) = self.progress {
            if self.done.is_multiple_of(self.progress_every) {
                progress(self.done);
            }
        }
    }

    pub(super) fn finish(self, strategy: &'static str, clients: u32) -> SimResult {
        if let Some(progress) = self.progress {
            if !self.done.is_multiple_of(self.progress_every) || self.done == 0 {
                progress(self.done);
            }
        }
        let bucket_s = self.bucket_us as f64 / 1e6;
        let buckets = self.arrivals.len().max(self.successes.len());
        let arrivals = (0..buckets)
            .map(|b| {
                (
                    b as f64 * bucket_s,
                    self.arrivals.get(b).copied().unwrap_or(0),
                )
            })
            .collect();
        let mut succeeded = 0;
        let completions = (0..buckets)
            .map(|b| {
                succeeded += self.successes.get(b).copied().unwrap_or(0);
                ((b + 1) as f64 * bucket_s, succeeded)
            })
            .collect();
        SimResult {
            strategy,
            clients,
            calls: self.calls,
            completion_s: self.last_done_us as f64 / 1e6,
            peak_per_slot: self.retries.iter().copied().max().unwrap_or(0),
            gave_up: self.gave_up,
            bucket_s,
            arrivals,
            completions,
        }
    }
}
