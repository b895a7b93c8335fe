//! What ricochet's tests share, in the manner of wasmtime's `crates/test-programs`:
//!
//! - [`guests`]: every component the tests load — the policy, the third-party linear policy and
//!   the hostile ones — built by `build.rs` (`RICOCHET_REQUIRE_GUESTS=1` makes a missing wasm
//!   toolchain a build error, as the test command sets it).
//! - [`redis`]: real `redis-server` processes on free loopback ports (single, TLS, password,
//!   3-node cluster), killed on drop, with `kill -9`, restart, `SIGSTOP`/`SIGCONT`.
//! - [`proxy`]: a loopback TCP proxy that can black-hole the links it carries.
//! - [`conformance`]: the coordinator and idempotency-store contract, one suite for every backend.
//! - [`gen`]: a deterministic generator and random valid configs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::should_implement_trait,
    missing_docs
)]

pub mod conformance;
pub mod gen;
pub mod proxy;
pub mod redis;

pub use gen::{guest, random_config, Gen};
pub use proxy::TcpProxy;
pub use redis::{free_port, port_open, single, unique_prefix, RedisCluster, RedisServer};

/// The guests built for the tests (`None` where no wasm toolchain was found).
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// A dispatcher that records nothing, to hold while a test captures events with a thread-local
/// subscriber (`set_default`, `with_default`).
///
/// tracing caches each callsite's interest once, for the whole process, and while just one
/// dispatcher is registered it asks only the default of the thread that reaches the callsite
/// first (tokio-rs/tracing#3611): a sibling test without a subscriber that reaches a log line
/// first makes it silent for the capturing test too. With two registered, every one is asked.
pub fn interest_anchor() -> tracing::Dispatch {
    tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default())
}
