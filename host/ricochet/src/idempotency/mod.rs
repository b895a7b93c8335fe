//! Idempotency: run a logical operation once, however often it is retried or duplicated.
//!
//! A key moves `absent → in_progress (lease) → completed (result, ttl)`. A duplicate of a
//! completed operation gets the stored result without running it again; a duplicate while one
//! is in progress gets [`Begin::InProgress`]; a failed run releases the key so a retry may run;
//! an expired lease (its holder crashed) can be taken over; the same key with a different
//! payload fingerprint is [`Begin::Mismatch`]. The same semantics run in memory (the embedded
//! default) and on Redis, checked by one conformance suite.
//!
//! Every claim comes with a [`HolderToken`], and only the current holder may complete, fail or
//! renew: a holder whose lease expired while it was still working (a long GC pause, a
//! partition) cannot overwrite or release the claim of the caller that took over. If its lease
//! expired and nobody took over, its result is still stored — nobody else ran the operation.
//!
//! [`RetryPolicy::execute_idempotent`](crate::RetryPolicy::execute_idempotent) ties a store to
//! the executor: it claims the key, runs the operation with retries while renewing the lease,
//! and stores the serialized result; an unreachable store never fails a call.

use std::fmt;

use crate::coordination::BoxFuture;

mod execute;
mod memory;
#[cfg(any(feature = "tower", feature = "reqwest"))]
pub(crate) use execute::{Call, ClaimGuard, Claimed};
pub use execute::{
    IdempotencyError, IdempotencyOptions, Origin, Outcome, DEFAULT_MAX_RESULT_BYTES,
};
pub use memory::{InMemoryIdempotencyStore, DEFAULT_MAX_RECORDS};

/// The store key `execute_idempotent` uses for a caller's `key`: scoped by service and operation
/// (joined by 0x1F), so two operations that happen to share a request id never replay each
/// other's results. Stores hash it (the Redis store by SHA-256), so any
/// length and any bytes are fine.
pub fn scoped_key(service: &str, operation: &str, key: &str) -> String {
    format!("{service}\u{1f}{operation}\u{1f}{key}")
}

/// The longest lease or TTL a store keeps, ms (100 years): longer ones are shortened to it.
///
/// Redis refuses an expiry past `i64` milliseconds from now (`invalid expire time`, or `value
/// is not an integer or out of range` for `u64::MAX`), which left the record in progress, and an
/// in-memory `Instant` plus `u64::MAX` ms overflows; every store clamps to this instead.
pub const MAX_EXPIRY_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Proof that the caller holds a key: handed out by [`IdempotencyStore::begin`], required by
/// `complete`, `fail` and `renew`. Opaque; only a store makes one.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HolderToken {
    /// 32 lowercase hex digits, unique per claim.
    id: String,
    /// The fingerprint as the store keeps it (so a late `complete` can record it).
    fingerprint: String,
}

impl HolderToken {
    /// A fresh token: 64 random bits drawn once per process, then a counter — unique across
    /// processes and claims without a system call per claim.
    pub(crate) fn new(fingerprint: String) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::OnceLock;
        static PROCESS: OnceLock<u64> = OnceLock::new();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let process = *PROCESS.get_or_init(crate::entropy::random_u64);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self {
            id: format!("{process:016x}{n:016x}"),
            fingerprint,
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

impl fmt::Debug for HolderToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HolderToken").field(&self.id).finish()
    }
}

/// What `begin` found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Begin {
    /// The caller now holds the key (with a lease) and must run the operation, then
    /// `complete` or `fail` with this token.
    Started(HolderToken),
    /// Already completed: the stored, serialized result.
    Completed(Vec<u8>),
    /// Another holder is running it and its lease has not expired.
    InProgress {
        /// How long the current lease still runs (it may be renewed).
        lease_remaining_ms: u64,
    },
    /// The key was used with a different payload fingerprint.
    Mismatch,
}

/// Why the store could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// No answer within the deadline.
    Timeout,
    /// The backend could not be reached. Never holds credentials.
    Connection(String),
    /// The backend answered with an error.
    Backend(String),
    /// The token no longer holds the key: its lease expired and another caller took over (or
    /// completed it).
    NotHolder,
}

impl StoreError {
    /// A short label: `timeout`, `connection`, `backend` or `not_holder`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connection(_) => "connection",
            Self::Backend(_) => "backend",
            Self::NotHolder => "not_holder",
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("idempotency store did not answer within its deadline"),
            Self::Connection(e) => write!(f, "idempotency store unreachable: {e}"),
            Self::Backend(e) => write!(f, "idempotency store error: {e}"),
            Self::NotHolder => f.write_str("the idempotency lease was lost to another caller"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Records which logical operations ran and what they returned.
///
/// Each method is one atomic transition (one round trip on Redis).
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key` for `lease_ms` unless it is completed, held, or used with another
    /// fingerprint. An absent key or an expired lease is claimed.
    fn begin<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a str,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Begin, StoreError>>;

    /// Stores the result of the operation `token` ran, kept for `ttl_ms`. Also succeeds when
    /// the lease expired and nobody took over; fails with [`StoreError::NotHolder`] when
    /// another caller holds or completed the key.
    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a HolderToken,
        result: &'a [u8],
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Releases the key after a failed run, so a retry may run. Releasing an absent key is a
    /// no-op; a key held by another token is left alone ([`StoreError::NotHolder`]).
    fn fail<'a>(
        &'a self,
        key: &'a str,
        token: &'a HolderToken,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Extends the lease of a holder that is still working to `lease_ms` from now;
    /// [`StoreError::NotHolder`] when the lease already went.
    fn renew<'a>(
        &'a self,
        key: &'a str,
        token: &'a HolderToken,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// A short name for logs: `memory`, `redis`, `redis-cluster`.
    fn name(&self) -> &'static str;
}
