//! Redis and Redis Cluster backends (feature `redis`): the fleet's slot coordinator and
//! idempotency store on one shared, self-healing connection.
//!
//! - [`RedisConnection`]: opened from [`RedisSettings`] (a `redis://`/`rediss://` URL, or
//!   `cluster:` and a list of node URLs); never needs the server to open, reconnects by itself,
//!   and scrubs passwords from every error and `Debug` output.
//! - [`RedisCoordinator`]: slot tickets in one round trip, on the server's clock
//!   (a [`Coordinator`](crate::coordination::Coordinator)).
//! - [`RedisIdempotencyStore`]: in-progress claims with leases and completed results under
//!   SHA-256-hashed keys (an [`IdempotencyStore`](crate::idempotency::IdempotencyStore)).
//!
//! Both implement the executor's seams and are plugged in from above:
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use ricochet::redis::{RedisConnection, RedisCoordinator, RedisIdempotencyStore, RedisSettings};
//! use ricochet::{RetryConfig, RetryPolicy};
//!
//! let conn = RedisConnection::open(&RedisSettings::parse("redis://127.0.0.1:6379"))?;
//! let policy = RetryPolicy::new(RetryConfig::default())?
//!     .with_coordinator(Arc::new(RedisCoordinator::new(conn.clone())))
//!     .with_idempotency_store(Arc::new(RedisIdempotencyStore::new(conn)));
//! # Ok(()) }
//! ```

mod connection;
mod coordinator;
mod store;

pub use crate::redis_layout::operation_tag;
pub(crate) use connection::RedisFailure;
pub use connection::{
    redact_url, RedisConnection, RedisSettings, RedisSetupError, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_KEY_PREFIX, RECONNECT_AFTER_MISSES, RECONNECT_AFTER_SILENCE,
};
pub use coordinator::RedisCoordinator;
pub use store::RedisIdempotencyStore;
