//! The idempotency store on Redis or Redis Cluster.
//!
//! One string per key, `<prefix>:idem:<sha256(key)>` — the caller's key never reaches Redis in
//! clear, and neither does the payload fingerprint (also SHA-256). The value has a fixed layout
//! that the scripts read with `string.sub`:
//!
//! | bytes | content |
//! |---|---|
//! | 1 | state: `P` in progress, `C` completed |
//! | 2–65 | fingerprint, SHA-256 hex |
//! | 66–97 | holder token, 32 hex digits |
//! | 98– | the serialized result (completed only) |
//!
//! The key's expiry is the lease while in progress and the TTL once completed, so a crashed
//! holder's claim disappears by itself. A claim of a new key is one `SET NX PX`; every other
//! transition is one script, so each is atomic and (almost always) one round trip.

use std::fmt;

use redis::{Script, Value};

use super::{RedisConnection, RedisFailure};
use crate::coordination::BoxFuture;
use crate::idempotency::{Begin, HolderToken, IdempotencyStore, StoreError, MAX_EXPIRY_MS};
use crate::redis_layout::{
    sha256_hex, BEGIN_SCRIPT as BEGIN, COMPLETE_SCRIPT as COMPLETE, FAIL_SCRIPT as FAIL,
    RENEW_SCRIPT as RENEW,
};

/// Idempotency records on Redis or Redis Cluster.
pub struct RedisIdempotencyStore {
    connection: RedisConnection,
    begin: Script,
    complete: Script,
    fail: Script,
    renew: Script,
}

impl RedisIdempotencyStore {
    /// A store on `connection` (which may be shared with a coordinator).
    pub fn new(connection: RedisConnection) -> Self {
        Self {
            connection,
            begin: Script::new(BEGIN),
            complete: Script::new(COMPLETE),
            fail: Script::new(FAIL),
            renew: Script::new(RENEW),
        }
    }

    /// The Redis key that holds `key`'s record.
    pub fn record_key(&self, key: &str) -> String {
        crate::redis_layout::record_key(self.connection.key_prefix(), key)
    }

    async fn claim(
        &self,
        record_key: &str,
        token: &HolderToken,
        lease_ms: u64,
    ) -> Result<Begin, StoreError> {
        // The common case — a new key — is one plain `SET NX PX`, the cheapest claim there
        // is; anything else (or a key that expired in between) goes through the script.
        let mut claim = Vec::with_capacity(1 + 64 + 32);
        claim.push(b'P');
        claim.extend_from_slice(token.fingerprint().as_bytes());
        claim.extend_from_slice(token.id().as_bytes());
        let mut set = redis::cmd("SET");
        set.arg(record_key)
            .arg(claim)
            .arg("NX")
            .arg("PX")
            .arg(lease_ms.clamp(1, MAX_EXPIRY_MS));
        let claimed: Value = self.connection.query(&set).await.map_err(store_error)?;
        if matches!(claimed, Value::Okay | Value::SimpleString(_)) {
            return Ok(Begin::Started(token.clone()));
        }
        let mut call = self.begin.key(record_key);
        call.arg(token.fingerprint())
            .arg(token.id())
            .arg(lease_ms.clamp(1, MAX_EXPIRY_MS));
        let reply: Vec<Value> = self.connection.invoke(&call).await.map_err(store_error)?;
        match reply.as_slice() {
            [Value::Int(0)] => Ok(Begin::Started(token.clone())),
            [Value::Int(1), Value::BulkString(result)] => Ok(Begin::Completed(result.clone())),
            [Value::Int(2), Value::Int(pttl)] => Ok(Begin::InProgress {
                lease_remaining_ms: (*pttl).max(0) as u64,
            }),
            [Value::Int(3)] => Ok(Begin::Mismatch),
            other => Err(StoreError::Backend(format!(
                "unexpected reply to begin: {other:?}"
            ))),
        }
    }
}

/// A claim sent but not answered: dropped armed, it releases the claim from a task of its own.
struct PendingClaim {
    release: Option<(RedisConnection, Script, String, String)>,
}

/// Bound on a release sent for a claim nobody waits for any more.
const RELEASE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

impl Drop for PendingClaim {
    fn drop(&mut self) {
        let Some((connection, fail, record_key, token_id)) = self.release.take() else {
            return;
        };
        // Outside a runtime (one shutting down) the claim expires with its lease.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut call = fail.key(record_key);
                call.arg(token_id);
                // Queued behind the claim on the same connection, so it lands after it.
                let released = connection.invoke::<i64>(&call);
                let _ = tokio::time::timeout(RELEASE_DEADLINE, released).await;
            });
        }
    }
}

impl IdempotencyStore for RedisIdempotencyStore {
    fn begin<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a str,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Begin, StoreError>> {
        Box::pin(async move {
            let token = HolderToken::new(sha256_hex(fingerprint.as_bytes()));
            let record_key = self.record_key(key);
            // The token exists before anything is sent. If this future is dropped before the
            // answer (the caller's store deadline passed while Redis was busy) or the answer
            // is lost, the claim may still land with nobody to release it — every duplicate
            // would wait out the whole lease. The guard then sends a release for this token.
            let mut pending = PendingClaim {
                release: Some((
                    self.connection.clone(),
                    self.fail.clone(),
                    record_key.clone(),
                    token.id().to_string(),
                )),
            };
            let begun = self.claim(&record_key, &token, lease_ms).await;
            if begun.is_ok() {
                pending.release = None;
            }
            begun
        })
    }

    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a HolderToken,
        result: &'a [u8],
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut call = self.complete.key(self.record_key(key));
            call.arg(token.fingerprint())
                .arg(token.id())
                .arg(result)
                .arg(ttl_ms.clamp(1, MAX_EXPIRY_MS));
            holder_reply(self.connection.invoke(&call).await)
        })
    }

    fn fail<'a>(
        &'a self,
        key: &'a str,
        token: &'a HolderToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut call = self.fail.key(self.record_key(key));
            call.arg(token.id());
            holder_reply(self.connection.invoke(&call).await)
        })
    }

    fn renew<'a>(
        &'a self,
        key: &'a str,
        token: &'a HolderToken,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut call = self.renew.key(self.record_key(key));
            call.arg(token.id()).arg(lease_ms.clamp(1, MAX_EXPIRY_MS));
            holder_reply(self.connection.invoke(&call).await)
        })
    }

    fn name(&self) -> &'static str {
        if self.connection.is_cluster() {
            "redis-cluster"
        } else {
            "redis"
        }
    }
}

impl fmt::Debug for RedisIdempotencyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisIdempotencyStore")
            .field("connection", &self.connection)
            .finish()
    }
}

fn holder_reply(reply: Result<i64, RedisFailure>) -> Result<(), StoreError> {
    match reply.map_err(store_error)? {
        1 => Ok(()),
        _ => Err(StoreError::NotHolder),
    }
}

fn store_error(failure: RedisFailure) -> StoreError {
    match failure {
        RedisFailure::Connection(e) => StoreError::Connection(e),
        RedisFailure::Backend(e) => StoreError::Backend(e),
    }
}
