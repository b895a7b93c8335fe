//! The embedded default idempotency store: one map in this process.
//!
//! Leases and TTLs run on the monotonic clock. Expired records are dropped when touched and,
//! every [`SWEEP_EVERY`] claims, in one pass over the map, so memory stays bounded by the keys
//! that are still live — and by a record cap ([`DEFAULT_MAX_RECORDS`]): a claim that finds the store full evicts the oldest completed results first (a
//! duplicate of an evicted key runs again), and is refused as a backend error (the call then
//! runs unguarded and is counted) only when every record is a call still in progress.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Begin, HolderToken, IdempotencyStore, StoreError};
use crate::coordination::BoxFuture;

/// Claims between two sweeps of expired records.
const SWEEP_EVERY: u64 = 1024;

/// Records kept at most by [`InMemoryIdempotencyStore::new`]. In the soak bench (small keys and
/// results) a full store took about 35 MiB of heap, about 50 MiB once evictions had made the
/// map's table double.
pub const DEFAULT_MAX_RECORDS: usize = 100_000;

/// Process-local idempotency store.
#[derive(Debug)]
pub struct InMemoryIdempotencyStore {
    state: Mutex<State>,
}

impl Default for InMemoryIdempotencyStore {
    fn default() -> Self {
        Self::with_max_records(DEFAULT_MAX_RECORDS)
    }
}

#[derive(Debug, Default)]
struct State {
    records: HashMap<String, Record>,
    /// Completed records, oldest first (entries whose record has gone or changed are skipped).
    completed: VecDeque<(Instant, String)>,
    max_records: usize,
    claims_since_sweep: u64,
    evicted: u64,
}

#[derive(Debug)]
struct Record {
    fingerprint: String,
    token_id: String,
    result: Option<Vec<u8>>,
    expires_at: Instant,
}

impl InMemoryIdempotencyStore {
    /// An empty store that keeps at most [`DEFAULT_MAX_RECORDS`] records.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that keeps at most `max_records` records (at least 1).
    pub fn with_max_records(max_records: usize) -> Self {
        Self {
            state: Mutex::new(State {
                max_records: max_records.max(1),
                ..State::default()
            }),
        }
    }

    /// Completed results evicted so far to stay within the record cap.
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }

    /// Live records (in progress or completed).
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.lock()
            .records
            .values()
            .filter(|r| r.expires_at > now)
            .count()
    }

    /// Whether no record is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn begin_now(&self, key: &str, fingerprint: &str, lease_ms: u64) -> Result<Begin, StoreError> {
        let now = Instant::now();
        let mut state = self.lock();
        state.claims_since_sweep += 1;
        if state.claims_since_sweep >= SWEEP_EVERY {
            state.claims_since_sweep = 0;
            state.records.retain(|_, r| r.expires_at > now);
            state.completed.retain(|(expires_at, _)| *expires_at > now);
        }
        if let Some(r) = state.records.get(key).filter(|r| r.expires_at > now) {
            return Ok(if r.fingerprint != fingerprint {
                Begin::Mismatch
            } else if let Some(result) = &r.result {
                Begin::Completed(result.clone())
            } else {
                Begin::InProgress {
                    lease_remaining_ms: r.expires_at.duration_since(now).as_millis() as u64,
                }
            });
        }
        if !state.records.contains_key(key) {
            state.make_room(now)?;
        }
        let token = HolderToken::new(fingerprint.to_string());
        state.records.insert(
            key.to_string(),
            Record {
                fingerprint: fingerprint.to_string(),
                token_id: token.id().to_string(),
                result: None,
                expires_at: now + expiry(lease_ms),
            },
        );
        Ok(Begin::Started(token))
    }

    /// Applies `change` to the live record `token` holds, under the caller's lock; `Ok(false)`
    /// when the key is absent (or expired), `NotHolder` when someone else holds or completed it.
    fn with_held<F>(
        state: &mut State,
        key: &str,
        token: &HolderToken,
        now: Instant,
        change: F,
    ) -> Result<bool, StoreError>
    where
        F: FnOnce(&mut HashMap<String, Record>),
    {
        match state.records.get(key).filter(|r| r.expires_at > now) {
            None => Ok(false),
            Some(r) if r.result.is_none() && r.token_id == token.id() => {
                change(&mut state.records);
                Ok(true)
            }
            Some(_) => Err(StoreError::NotHolder),
        }
    }

    fn complete_now(
        &self,
        key: &str,
        token: &HolderToken,
        result: &[u8],
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        // The check and the write under one lock: a takeover can never land between them (it
        // did, and was overwritten, when they took the lock twice).
        let now = Instant::now();
        let mut state = self.lock();
        let record = Record {
            fingerprint: token.fingerprint().to_string(),
            token_id: token.id().to_string(),
            result: Some(result.to_vec()),
            expires_at: now + expiry(ttl_ms),
        };
        let expires_at = record.expires_at;
        let mut record = Some(record);
        let held = Self::with_held(&mut state, key, token, now, |records| {
            if let Some(record) = record.take() {
                records.insert(key.to_string(), record);
            }
        })?;
        if let (false, Some(record)) = (held, record) {
            // The lease ran out but nobody took over: this run is still the only one.
            if !state.records.contains_key(key) {
                state.make_room(now)?;
            }
            state.records.insert(key.to_string(), record);
        }
        state.completed.push_back((expires_at, key.to_string()));
        Ok(())
    }
}

/// A lease or TTL in ms as a duration, at most [`MAX_EXPIRY_MS`](super::MAX_EXPIRY_MS) (an
/// `Instant` plus `u64::MAX` ms would overflow).
fn expiry(ms: u64) -> Duration {
    Duration::from_millis(ms.clamp(1, super::MAX_EXPIRY_MS))
}

impl State {
    /// Frees a place for one more record: drops the oldest completed results (expired or not)
    /// while the store is full, then every expired record; refuses only when every record left
    /// is a call still in progress within its lease.
    fn make_room(&mut self, now: Instant) -> Result<(), StoreError> {
        while self.records.len() >= self.max_records {
            let Some((expires_at, key)) = self.completed.pop_front() else {
                // Expired claims (holders that vanished) are not in the eviction order: sweep
                // them before refusing, or a store of dead claims refuses until the next sweep.
                self.records.retain(|_, r| r.expires_at > now);
                if self.records.len() < self.max_records {
                    return Ok(());
                }
                return Err(StoreError::Backend(format!(
                    "in-memory idempotency store is full: {} calls in progress (max_records {})",
                    self.records.len(),
                    self.max_records
                )));
            };
            let current = self
                .records
                .get(&key)
                .is_some_and(|r| r.result.is_some() && r.expires_at == expires_at);
            if current {
                self.records.remove(&key);
                self.evicted += 1;
            }
        }
        Ok(())
    }
}

impl IdempotencyStore for InMemoryIdempotencyStore {
    fn begin<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a str,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Begin, StoreError>> {
        Box::pin(std::future::ready(self.begin_now(
            key,
            fingerprint,
            lease_ms,
        )))
    }

    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a HolderToken,
        result: &'a [u8],
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(std::future::ready(
            self.complete_now(key, token, result, ttl_ms),
        ))
    }

    fn fail<'a>(
        &'a self,
        key: &'a str,
        token: &'a HolderToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut state = self.lock();
        let released = Self::with_held(&mut state, key, token, Instant::now(), |records| {
            records.remove(key);
        });
        drop(state);
        Box::pin(std::future::ready(released.map(|_| ())))
    }

    fn renew<'a>(
        &'a self,
        key: &'a str,
        token: &'a HolderToken,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let now = Instant::now();
        let mut state = self.lock();
        let renewed = Self::with_held(&mut state, key, token, now, |records| {
            if let Some(r) = records.get_mut(key) {
                r.expires_at = now + expiry(lease_ms);
            }
        });
        drop(state);
        Box::pin(std::future::ready(match renewed {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err(StoreError::NotHolder),
        }))
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(store: &InMemoryIdempotencyStore, key: &str, result: &[u8]) {
        let Ok(Begin::Started(token)) = store.begin_now(key, "fp", 10_000) else {
            panic!("{key} was not claimed");
        };
        assert_eq!(store.complete_now(key, &token, result, 60_000), Ok(()));
    }

    #[test]
    fn a_full_store_evicts_the_oldest_completed_result_first() {
        let store = InMemoryIdempotencyStore::with_max_records(3);
        for key in ["a", "b", "c"] {
            run(&store, key, key.as_bytes());
        }
        run(&store, "d", b"d");
        assert_eq!(store.evicted(), 1);
        assert_eq!(store.len(), 3);
        // `a` went: a duplicate of it runs again; the others still replay.
        assert!(matches!(
            store.begin_now("a", "fp", 10_000),
            Ok(Begin::Started(_))
        ));
        assert_eq!(store.evicted(), 2, "claiming `a` again evicted `b`");
        assert_eq!(
            store.begin_now("c", "fp", 10_000),
            Ok(Begin::Completed(b"c".to_vec()))
        );
        assert_eq!(
            store.begin_now("d", "fp", 10_000),
            Ok(Begin::Completed(b"d".to_vec()))
        );
    }

    #[test]
    fn a_store_full_of_calls_in_progress_refuses_a_new_claim_with_a_clear_error() {
        let store = InMemoryIdempotencyStore::with_max_records(2);
        for key in ["a", "b"] {
            assert!(matches!(
                store.begin_now(key, "fp", 10_000),
                Ok(Begin::Started(_))
            ));
        }
        match store.begin_now("c", "fp", 10_000) {
            Err(StoreError::Backend(message)) => assert!(
                message.contains("full") && message.contains("max_records 2"),
                "{message}"
            ),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // A key already held is answered as usual.
        assert!(matches!(
            store.begin_now("a", "fp", 10_000),
            Ok(Begin::InProgress { .. })
        ));
    }

    #[test]
    fn a_re_completed_key_is_evicted_once_and_stale_entries_are_skipped() {
        let store = InMemoryIdempotencyStore::with_max_records(2);
        run(&store, "a", b"1");
        // `a` is completed twice (its first record dropped in between, as a sweep would): the
        // first entry in the eviction order is stale and must be skipped, not counted.
        store.lock().records.remove("a");
        run(&store, "a", b"2");
        run(&store, "b", b"b");
        run(&store, "c", b"c");
        assert_eq!(store.evicted(), 1, "only the live `a` record was evicted");
        assert_eq!(store.len(), 2);
    }
}
