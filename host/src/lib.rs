//! # ricochet-host
//!
//! The native side of ricochet: everything `ricochet-core` refuses to do — clocks, I/O, state
//! shared between calls — plus a wasmtime host that runs any `ricochet:retry` policy component
//! with the same backends, and the `ricochet` CLI.
//!
//! - [`component`]: load a policy component, supply its imports, call its exports, sandboxed.
//! - [`config_file`]: the seed's `retry_policies:` YAML/JSON format, with `extends`.
//! - [`engine`]: one interface over the native core and a component, so every caller can use either.
//! - [`executor`]: [`RetryPolicy::execute_with_retry`], the seed's direct usage.
//! - [`classify`]: mapping errors (io, tokio, redis, HTTP) onto the core's categories.
//! - [`coordination`] and [`idempotency`]: the fleet's slot coordinator and dedup store,
//!   in memory (the embedded default) or on Redis.
//! - [`metrics`] and [`logging`]: the seed's Prometheus metrics and JSON log lines.
//! - [`guests`]: the components built with this crate (when the wasm toolchain was available).

pub mod classify;
pub mod clock;
pub mod component;
pub mod config_file;
pub mod coordination;
pub mod engine;
pub mod executor;
pub mod flaky;
pub mod idempotency;
pub mod logging;
pub mod metrics;
pub mod reload;
pub mod simulate;

/// Components built by `build.rs` and embedded in this crate.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

pub use classify::{Classification, Classify, HttpError};
pub use executor::{AttemptError, MaxRetriesExceeded, RetryError, RetryEvent, RetryPolicy};
pub use ricochet_core::{ErrorCategory, GiveUpReason, JitterStrategy, RetryConfig};
pub use ricochet_macros::with_retry;

/// The README's Rust examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
