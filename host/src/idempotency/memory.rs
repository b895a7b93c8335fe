//! The embedded default idempotency store: one map in this process.
//!
//! Leases and TTLs run on the monotonic clock. Expired records are dropped when touched and,
//! every [`SWEEP_EVERY`] claims, in one pass over the map, so memory stays bounded by the keys
//! that are still live.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Begin, HolderToken, IdempotencyStore, StoreError};
use crate::coordination::BoxFuture;

/// Claims between two sweeps of expired records.
const SWEEP_EVERY: u64 = 1024;

/// Process-local idempotency store.
#[derive(Debug, Default)]
pub struct InMemoryIdempotencyStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    records: HashMap<String, Record>,
    claims_since_sweep: u64,
}

#[derive(Debug)]
struct Record {
    fingerprint: String,
    token_id: String,
    result: Option<Vec<u8>>,
    expires_at: Instant,
}

impl InMemoryIdempotencyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
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

    fn begin_now(&self, key: &str, fingerprint: &str, lease_ms: u64) -> Begin {
        let now = Instant::now();
        let mut state = self.lock();
        state.claims_since_sweep += 1;
        if state.claims_since_sweep >= SWEEP_EVERY {
            state.claims_since_sweep = 0;
            state.records.retain(|_, r| r.expires_at > now);
        }
        if let Some(r) = state.records.get(key).filter(|r| r.expires_at > now) {
            return if r.fingerprint != fingerprint {
                Begin::Mismatch
            } else if let Some(result) = &r.result {
                Begin::Completed(result.clone())
            } else {
                Begin::InProgress {
                    lease_remaining_ms: r.expires_at.duration_since(now).as_millis() as u64,
                }
            };
        }
        let token = HolderToken::new(fingerprint.to_string());
        state.records.insert(
            key.to_string(),
            Record {
                fingerprint: fingerprint.to_string(),
                token_id: token.id().to_string(),
                result: None,
                expires_at: now + Duration::from_millis(lease_ms),
            },
        );
        Begin::Started(token)
    }

    /// Applies `change` to the live record `token` holds; `Ok(false)` when the key is absent
    /// (or expired), `NotHolder` when someone else holds or completed it.
    fn with_held<F>(&self, key: &str, token: &HolderToken, change: F) -> Result<bool, StoreError>
    where
        F: FnOnce(&mut HashMap<String, Record>, Instant),
    {
        let now = Instant::now();
        let mut state = self.lock();
        match state.records.get(key).filter(|r| r.expires_at > now) {
            None => Ok(false),
            Some(r) if r.result.is_none() && r.token_id == token.id() => {
                change(&mut state.records, now);
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
        let record = |now: Instant| Record {
            fingerprint: token.fingerprint().to_string(),
            token_id: token.id().to_string(),
            result: Some(result.to_vec()),
            expires_at: now + Duration::from_millis(ttl_ms),
        };
        let held = self.with_held(key, token, |records, now| {
            records.insert(key.to_string(), record(now));
        })?;
        if !held {
            // The lease ran out but nobody took over: this run is still the only one.
            self.lock()
                .records
                .insert(key.to_string(), record(Instant::now()));
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
        Box::pin(std::future::ready(Ok(self.begin_now(
            key,
            fingerprint,
            lease_ms,
        ))))
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
        let released = self.with_held(key, token, |records, _| {
            records.remove(key);
        });
        Box::pin(std::future::ready(released.map(|_| ())))
    }

    fn renew<'a>(
        &'a self,
        key: &'a str,
        token: &'a HolderToken,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let renewed = self.with_held(key, token, |records, now| {
            if let Some(r) = records.get_mut(key) {
                r.expires_at = now + Duration::from_millis(lease_ms);
            }
        });
        Box::pin(std::future::ready(match renewed {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err(StoreError::NotHolder),
        }))
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
