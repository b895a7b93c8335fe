//! `execute_idempotent`: the executor with an idempotency key.
//!
//! A call claims `(service, operation, key)` in the policy's idempotency store, runs the
//! operation with the policy's retries while renewing its lease, stores the JSON-serialized
//! result for the policy's `idempotency_ttl`, and returns it. A duplicate of a completed call
//! gets the stored result without running anything; a duplicate of a running call waits for
//! it (up to [`IdempotencyOptions::wait`]) and then gets its result — or, if the holder failed
//! or vanished, runs the operation itself.
//!
//! # When the store is unreachable
//!
//! Deduplication is an optimisation of a call that would succeed anyway, so a store that is
//! down or slower than [`IdempotencyOptions::store_deadline`] never fails a call: the operation
//! runs *without* deduplication ([`Origin::Unguarded`]) and
//! `retry_idempotency_fallback_total{service,operation,reason}` counts it. If the store fails
//! only after the claim (when storing the result or releasing a failed claim), the call's own
//! outcome stands and a task of its own keeps resending the result (or the release) until the
//! store answers or the lease ends — so a failover does not leave the claim in progress for
//! duplicates to wait on; a result that could not be stored at once comes back as
//! [`Origin::Unrecorded`], since a duplicate may still run the operation again. A call dropped
//! by its caller releases its claim; a result above [`IdempotencyOptions::max_result_bytes`]
//! is not sent (`Unrecorded`, claim released). Operations that must never run twice, even
//! while Redis is down, should check the outcome's [`Origin`] or refuse to run unguarded in
//! `op` itself.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{scoped_key, Begin, HolderToken, IdempotencyStore, StoreError};
use crate::classify::Classify;
use crate::executor::{RetryError, RetryPolicy};

/// How an idempotent call treats its lease, duplicates and the store.
///
/// # Default
///
/// - `lease`: 30 s (renewed every third of it while the operation runs)
/// - `wait`: 30 s for a duplicate to wait on a running call
/// - `store_deadline`: 100 ms per store round trip
/// - `ttl`: `None` — the policy's `idempotency_ttl`
/// - `max_result_bytes`: [`DEFAULT_MAX_RESULT_BYTES`] (1 MiB)
///
/// A lease or TTL longer than [`MAX_EXPIRY_MS`](super::MAX_EXPIRY_MS) (100 years) is shortened to it.
///
/// Unguarded and unrecorded calls are counted in `retry_idempotency_fallback_total` on the
/// policy's metrics.
#[derive(Debug, Clone)]
pub struct IdempotencyOptions {
    /// How long a claim lasts without renewal: the time after which a crashed holder's call
    /// may be taken over.
    pub lease: Duration,
    /// How long a duplicate waits for a running call before giving up with
    /// [`IdempotencyError::InProgress`] (`Duration::ZERO`: do not wait).
    pub wait: Duration,
    /// Bound on each store round trip; past it the store counts as unreachable.
    pub store_deadline: Duration,
    /// How long a completed result is kept (default: the policy's `idempotency_ttl`).
    pub ttl: Option<Duration>,
    /// The largest serialized result that is stored. A larger one is returned as
    /// [`Origin::Unrecorded`] (counted with reason `result_too_large`) and its claim released:
    /// Redis closes a connection sent a value past its `proto-max-bulk-len` (512 MiB by default,
    /// often set lower), and a value of megabytes holds every command queued behind it on the
    /// shared connection past its deadline.
    pub max_result_bytes: usize,
}

/// Default [`IdempotencyOptions::max_result_bytes`]: 1 MiB.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 1 << 20;

impl Default for IdempotencyOptions {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            wait: Duration::from_secs(30),
            store_deadline: Duration::from_millis(100),
            ttl: None,
            max_result_bytes: DEFAULT_MAX_RESULT_BYTES,
        }
    }
}

/// Where an idempotent call's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// This call ran the operation and stored its result.
    Ran,
    /// An earlier call's stored result; the operation did not run.
    Replayed,
    /// The store was unreachable: the operation ran without deduplication.
    Unguarded,
    /// This call held the key and ran the operation, but its result could not be stored (the
    /// store failed or timed out afterwards, the lease was lost to another caller, or the value
    /// did not serialize): a duplicate that arrives once the claim has expired runs the
    /// operation again. Counted like an unguarded run.
    Unrecorded,
}

/// The value of an idempotent call, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<T> {
    /// The operation's result.
    pub value: T,
    /// Whether it ran here, was replayed, or ran unguarded.
    pub origin: Origin,
}

/// Why an idempotent call returned no value.
#[derive(Debug)]
#[non_exhaustive]
pub enum IdempotencyError<E> {
    /// The operation failed (after the policy's retries); its claim was released.
    Operation(RetryError<E>),
    /// Another call with this key is still running after [`IdempotencyOptions::wait`].
    InProgress,
    /// The key was used with a different payload fingerprint.
    Mismatch,
    /// The stored result does not deserialize as the requested type.
    StoredResult(String),
}

impl<E: fmt::Display> fmt::Display for IdempotencyError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Operation(e) => e.fmt(f),
            Self::InProgress => {
                f.write_str("another call with this idempotency key is still in progress")
            }
            Self::Mismatch => f.write_str("idempotency key reused with a different payload"),
            Self::StoredResult(e) => {
                write!(f, "stored result does not match the requested type: {e}")
            }
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for IdempotencyError<E> {}

impl RetryPolicy {
    /// Runs `op` (with this policy's retries) at most once per `(service, operation, key)`, with
    /// the default [`IdempotencyOptions`]; `fingerprint` identifies the payload.
    ///
    /// - First call: claims the key, runs `op` while renewing the lease, stores the
    ///   JSON-serialized result for `idempotency_ttl` and returns it ([`Origin::Ran`]).
    /// - Duplicate of a completed call: the stored result, `op` not run ([`Origin::Replayed`]).
    /// - Duplicate of a running call: waits for it (up to [`IdempotencyOptions::wait`]), then
    ///   gets its result — or runs `op` itself if that call failed or its holder vanished.
    /// - Same key, other fingerprint: [`IdempotencyError::Mismatch`].
    /// - `op` fails for good: the claim is released (a later call may run) and the error returned.
    ///
    /// # When the store is unreachable
    ///
    /// A store that is down or slower than [`IdempotencyOptions::store_deadline`] never fails a
    /// call that would succeed: `op` runs without deduplication ([`Origin::Unguarded`]) and
    /// `retry_idempotency_fallback_total{service,operation,reason}` counts it. If the store
    /// fails after the claim (storing the result, releasing a failed claim), the call's own
    /// outcome stands and the result (or release) is resent in the background until the store
    /// answers or the lease ends; a result not stored at once is [`Origin::Unrecorded`].
    pub async fn execute_idempotent<T, E, F, Fut>(
        &self,
        key: &str,
        fingerprint: &str,
        op: F,
        service: &str,
        operation: &str,
    ) -> Result<Outcome<T>, IdempotencyError<E>>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Classify + fmt::Display,
    {
        self.execute_idempotent_with(
            &IdempotencyOptions::default(),
            key,
            fingerprint,
            op,
            service,
            operation,
        )
        .await
    }

    /// [`execute_idempotent`](Self::execute_idempotent) with explicit options.
    pub async fn execute_idempotent_with<T, E, F, Fut>(
        &self,
        options: &IdempotencyOptions,
        key: &str,
        fingerprint: &str,
        op: F,
        service: &str,
        operation: &str,
    ) -> Result<Outcome<T>, IdempotencyError<E>>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Classify + fmt::Display,
    {
        let call = Call {
            policy: self,
            options,
            store: self.idempotency_store(),
            service,
            operation,
        };
        let key = scoped_key(service, operation, key);
        let token = match call.claim(&key, fingerprint).await {
            Ok(Claimed::Started(token)) => token,
            Ok(Claimed::Completed(bytes)) => {
                return serde_json::from_slice(&bytes)
                    .map(|value| Outcome {
                        value,
                        origin: Origin::Replayed,
                    })
                    .map_err(|e| IdempotencyError::StoredResult(e.to_string()));
            }
            Ok(Claimed::Mismatch) => return Err(IdempotencyError::Mismatch),
            Ok(Claimed::InProgress) => return Err(IdempotencyError::InProgress),
            Err(e) => {
                tracing::warn!(service, operation, store = call.store.name(), error = %e, "idempotency store unreachable; running without deduplication");
                let value = self
                    .execute_with_retry(op, service, operation)
                    .await
                    .map_err(IdempotencyError::Operation)?;
                return Ok(Outcome {
                    value,
                    origin: Origin::Unguarded,
                });
            }
        };
        // From here on the claim is ours: if this future is dropped (the caller gave up on it)
        // before it completes or releases the claim, the guard releases it.
        let mut claim = call.guard(&key, &token);
        let run = self.execute_with_retry(op, service, operation);
        let result = call.renewing(&key, &token, run).await;
        let outcome = match result {
            Ok(value) => {
                let origin = if call.record(&key, &token, &value).await {
                    Origin::Ran
                } else {
                    Origin::Unrecorded
                };
                Ok(Outcome { value, origin })
            }
            Err(e) => {
                call.release(&key, &token).await;
                Err(IdempotencyError::Operation(e))
            }
        };
        claim.disarm();
        outcome
    }
}

/// What claiming a key found (the store answered).
pub(crate) enum Claimed {
    /// The key is ours: run, then complete or release it.
    Started(HolderToken),
    /// An earlier call's stored result.
    Completed(Vec<u8>),
    /// The key was used with another payload.
    Mismatch,
    /// Another call holds the key and did not finish within [`IdempotencyOptions::wait`].
    InProgress,
}

/// One idempotent call's view of the store: the claim (waiting on a running duplicate), the
/// lease renewed beside the work, the result stored or the claim released — each bounded by the
/// store deadline, and resent in the background when the store does not answer. Used by
/// `execute_idempotent` and by the HTTP integrations' `Idempotency-Key`.
pub(crate) struct Call<'a> {
    pub policy: &'a RetryPolicy,
    pub options: &'a IdempotencyOptions,
    pub store: &'a Arc<dyn IdempotencyStore>,
    pub service: &'a str,
    pub operation: &'a str,
}

impl Call<'_> {
    fn lease_ms(&self) -> u64 {
        clamped_ms(self.options.lease)
    }

    /// Claims `key` for a call with this fingerprint, polling (with backoff, never past the wait
    /// limit nor much past the holder's lease) while another call holds it. A store that does
    /// not answer is counted and returned as the error: the caller runs without deduplication.
    pub async fn claim(&self, key: &str, fingerprint: &str) -> Result<Claimed, StoreError> {
        let lease_ms = self.lease_ms();
        let waited_since = Instant::now();
        let mut poll = Duration::from_millis(5);
        loop {
            match self
                .bounded(self.store.begin(key, fingerprint, lease_ms))
                .await
            {
                Ok(Begin::Started(token)) => return Ok(Claimed::Started(token)),
                Ok(Begin::Completed(bytes)) => return Ok(Claimed::Completed(bytes)),
                Ok(Begin::Mismatch) => return Ok(Claimed::Mismatch),
                Ok(Begin::InProgress { lease_remaining_ms }) => {
                    let waited = waited_since.elapsed();
                    if waited >= self.options.wait {
                        return Ok(Claimed::InProgress);
                    }
                    let nap = poll
                        .min(self.options.wait - waited)
                        .min(Duration::from_millis(lease_remaining_ms.max(1)));
                    tokio::time::sleep(nap).await;
                    poll = (poll * 2).min(Duration::from_millis(100));
                }
                Err(e) => {
                    self.count(e.reason());
                    return Err(e);
                }
            }
        }
    }

    /// A guard that releases the claim if it is dropped armed (the call was cancelled).
    pub fn guard(&self, key: &str, token: &HolderToken) -> ClaimGuard {
        ClaimGuard::new(self.store, key, token, self.options.lease)
    }

    /// A store call within the store deadline.
    async fn bounded<R>(
        &self,
        f: impl Future<Output = Result<R, StoreError>>,
    ) -> Result<R, StoreError> {
        tokio::time::timeout(self.options.store_deadline, f)
            .await
            .unwrap_or(Err(StoreError::Timeout))
    }

    /// Releases the claim; if the store does not answer, keeps trying in the background.
    pub async fn release(&self, key: &str, token: &HolderToken) {
        if let Err(e) = self.bounded(self.store.fail(key, token)).await {
            if !matches!(e, StoreError::NotHolder) {
                tracing::warn!(service = self.service, operation = self.operation, error = %e, "could not release the idempotency key; retrying in the background");
                self.settle_later(key, token, Settle::Release);
            }
        }
    }

    /// Keeps sending `settle` from a task of its own until the store answers or the claim's
    /// lease is over. A holder's `complete` or `fail` that met a failover (the master gone, its
    /// replica not yet promoted) otherwise left the claim — replicated before the master died —
    /// in progress for the whole lease: every duplicate waited for it (22 s past the end of a
    /// 12 s demo, issue 14 item 12). Storing a result late is safe: only the holder's token may.
    fn settle_later(&self, key: &str, token: &HolderToken, settle: Settle) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.store.clone();
        let (key, token) = (key.to_string(), token.clone());
        let deadline = self.options.store_deadline;
        let until = tokio::time::Instant::now() + self.options.lease.min(MAX_SETTLE_TIME);
        runtime.spawn(settle_until(store, key, token, settle, deadline, until));
    }

    pub fn count(&self, reason: &str) {
        if let Some(m) = self.policy.metrics() {
            m.idempotency_fallback(self.service, self.operation, reason);
        }
    }

    /// Runs `work`, renewing the lease every third of it meanwhile.
    pub async fn renewing<F: Future>(&self, key: &str, token: &HolderToken, work: F) -> F::Output {
        let mut run = std::pin::pin!(work);
        let lease_ms = self.lease_ms();
        let period = Duration::from_millis((lease_ms / 3).max(1));
        // Renewals run beside the operation, never in its place: while a renewal waits for a
        // slow store, the operation keeps being polled.
        let mut renewals = std::pin::pin!(async {
            let mut renew_at = tokio::time::Instant::now() + period;
            loop {
                tokio::time::sleep_until(renew_at).await;
                renew_at += period;
                if let Err(e) = self.bounded(self.store.renew(key, token, lease_ms)).await {
                    // Keep running: the result is still stored if nobody took over.
                    tracing::warn!(service = self.service, operation = self.operation, error = %e, "could not renew the idempotency lease");
                }
            }
        });
        std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = run.as_mut().poll(cx) {
                return Poll::Ready(result);
            }
            // Never ready: it renews until the operation ends and is dropped with it.
            let _ = renewals.as_mut().poll(cx);
            Poll::Pending
        })
        .await
    }

    /// Stores the result; whether it was stored. Failures are logged and counted, never
    /// returned.
    async fn record<T: Serialize>(&self, key: &str, token: &HolderToken, value: &T) -> bool {
        match serde_json::to_vec(value) {
            Ok(bytes) => self.record_bytes(key, token, bytes).await,
            Err(e) => {
                self.count("serialize");
                tracing::warn!(service = self.service, operation = self.operation, error = %e, "result not serializable; releasing the idempotency key");
                self.release(key, token).await;
                false
            }
        }
    }

    /// Stores an encoded result (at most [`IdempotencyOptions::max_result_bytes`]; a larger one
    /// releases the claim); whether it was stored. A store that does not answer gets it again
    /// from a task of its own within the lease.
    pub async fn record_bytes(&self, key: &str, token: &HolderToken, bytes: Vec<u8>) -> bool {
        if bytes.len() > self.options.max_result_bytes {
            self.count("result_too_large");
            tracing::warn!(
                service = self.service,
                operation = self.operation,
                bytes = bytes.len(),
                max_result_bytes = self.options.max_result_bytes,
                "result too large to store; releasing the idempotency key"
            );
            self.release(key, token).await;
            return false;
        }
        let ttl_ms = match self.options.ttl {
            Some(ttl) => clamped_ms(ttl),
            None => self.policy.policy().idempotency_ttl_us() / 1000,
        };
        let ttl_ms = ttl_ms.max(1);
        match self
            .bounded(self.store.complete(key, token, &bytes, ttl_ms))
            .await
        {
            Ok(()) => true,
            Err(StoreError::NotHolder) => {
                self.count("lease_lost");
                tracing::warn!(service = self.service, operation = self.operation, "idempotency lease expired and another caller took over: the operation may have run twice (lease too short?)");
                false
            }
            Err(e) => {
                self.count(match e {
                    StoreError::Timeout => "store_timeout",
                    StoreError::Connection(_) => "store_connection",
                    _ => "store_backend",
                });
                tracing::warn!(service = self.service, operation = self.operation, error = %e, "could not store the idempotent result; retrying in the background");
                self.settle_later(key, token, Settle::Complete { bytes, ttl_ms });
                false
            }
        }
    }
}

/// A duration in whole ms within `[1, MAX_EXPIRY_MS]` (`as u64` on `as_millis` would wrap a
/// `Duration::MAX` around to a short lease).
fn clamped_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, super::MAX_EXPIRY_MS)
}

/// Releases a claim whose call was dropped before it could complete or release it (a caller's
/// timeout, a cancelled request): without it the key stayed in progress for the whole lease,
/// and every duplicate waited for it. The release is sent from a task of its own.
pub(crate) struct ClaimGuard {
    armed: Option<(Arc<dyn IdempotencyStore>, String, HolderToken)>,
    lease: Duration,
}

impl ClaimGuard {
    fn new(
        store: &Arc<dyn IdempotencyStore>,
        key: &str,
        token: &HolderToken,
        lease: Duration,
    ) -> Self {
        Self {
            armed: Some((store.clone(), key.to_string(), token.clone())),
            lease,
        }
    }

    pub fn disarm(&mut self) {
        self.armed = None;
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        let Some((store, key, token)) = self.armed.take() else {
            return;
        };
        // Outside a runtime (a runtime shutting down) the claim expires with its lease.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let until = tokio::time::Instant::now() + self.lease.min(MAX_SETTLE_TIME);
            runtime.spawn(async move {
                match tokio::time::timeout(RELEASE_DEADLINE, store.fail(&key, &token)).await {
                    Ok(Ok(())) | Ok(Err(StoreError::NotHolder)) => {}
                    // Not answered (a failover, a frozen server): keep trying within the lease.
                    _ => {
                        settle_until(store, key, token, Settle::Release, RELEASE_DEADLINE, until)
                            .await
                    }
                }
            });
        }
    }
}

/// Bound on a release sent after the call has gone.
const RELEASE_DEADLINE: Duration = Duration::from_secs(1);

/// The longest a background `complete` or `fail` keeps trying (at most the lease).
const MAX_SETTLE_TIME: Duration = Duration::from_secs(60);

/// What a holder still owes the store.
enum Settle {
    Complete { bytes: Vec<u8>, ttl_ms: u64 },
    Release,
}

/// Sends `settle` every 50–500 ms (doubling) until the store answers — done, or `NotHolder`:
/// someone else has the key now — or `until`.
async fn settle_until(
    store: Arc<dyn IdempotencyStore>,
    key: String,
    token: HolderToken,
    settle: Settle,
    deadline: Duration,
    until: tokio::time::Instant,
) {
    let mut pause = Duration::from_millis(50);
    while tokio::time::Instant::now() + pause < until {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
        let sent = match &settle {
            Settle::Complete { bytes, ttl_ms } => {
                tokio::time::timeout(deadline, store.complete(&key, &token, bytes, *ttl_ms)).await
            }
            Settle::Release => tokio::time::timeout(deadline, store.fail(&key, &token)).await,
        };
        match sent {
            Ok(Ok(())) | Ok(Err(StoreError::NotHolder)) => return,
            _ => {}
        }
    }
}
