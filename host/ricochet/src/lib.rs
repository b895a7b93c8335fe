//! # ricochet
//!
//! One retry policy that runs everywhere. Every decision — backoff and jitter, retry slots,
//! error categories, `Retry-After`, circuit breaker, retry budget — comes from `ricochet-core`, a
//! `no_std`, allocation-free engine whose schedule is bit for bit the same natively, in a
//! WebAssembly component and in the Envoy filter. This crate is where the core meets a tokio
//! service: the executor, `#[with_retry]`, error classification, policy files, and the fleet's
//! coordination and idempotency backends.
//!
//! ```no_run
//! use ricochet::{with_retry, RetryConfig, RetryPolicy};
//!
//! // The seed's direct form.
//! # async fn direct() -> Result<(), Box<dyn std::error::Error>> {
//! let policy = RetryPolicy::new(RetryConfig { max_attempts: 3, ..RetryConfig::default() })?;
//! let data = policy
//!     .execute_with_retry(|| async { Ok::<_, std::io::Error>("data") }, "stream", "data_fetch")
//!     .await?;
//! # Ok(()) }
//!
//! // The seed's decorator form.
//! #[with_retry(retry_config = RetryConfig::default(), retry_on = (std::io::Error,), service_name = "lake")]
//! async fn call_service() -> Result<String, std::io::Error> {
//!     Ok("data".to_string())
//! }
//! ```
//!
//! ricochet needs a tokio runtime with its time driver: the executor sleeps and bounds
//! attempts with `tokio::time`, and outside such a runtime tokio panics at the first timer a
//! call needs ([`executor`] says when that is). `max_elapsed` is measured on a monotonic clock
//! and bounds the whole call — retries, coordinated slots, each attempt and a token refresh.
//! Error text is scrubbed of URL credentials, secret query parameters and `Authorization`
//! values before it is logged ([`logging`]); add your own rules with
//! [`RetryPolicy::with_redactor`].
//!
//! # Modules
//!
//! - [`executor`]: [`RetryPolicy::execute_with_retry`] and its builders; `#[with_retry]`.
//! - [`classify`]: mapping errors (io, tokio, HTTP statuses, Redis) onto the seed's categories.
//! - [`config_file`] and [`reload`]: the seed's `retry_policies:` files with `extends`,
//!   `RETRY_*` environment overrides, and a policy that follows its file.
//! - [`coordination`] and [`idempotency`]: the seams for the fleet's slot coordinator and
//!   dedup store, with their in-memory defaults; [`idempotency`] also holds `execute_idempotent`.
//! - [`engine`]: the seam for what decides (the linked-in core, or a policy component).
//! - [`metrics`] and [`logging`]: the seed's Prometheus metrics and JSON log lines.
//! - [`redis`] (feature `redis`) and [`component`] (feature `component`): backends that plug
//!   into those seams from above.
//! - [`tower`], [`reqwest`] and [`grpc`] (features `tower`, `reqwest`, `tonic`): retries where
//!   a service makes its calls, with the rules in [`http`]; [`interop`] (feature `interop`):
//!   policies from and to Envoy and gRPC service configs.
//!
//! # Features
//!
//! | feature | default | what it adds | what it costs |
//! |---|---|---|---|
//! | `prometheus` | no | the seed's metrics on a prometheus registry ([`metrics`]) | `prometheus` (with `parking_lot`, `thiserror`): about a fifth of the default build |
//! | `yaml` | no | YAML policy files (the seed's format); JSON files need no feature | `serde_yaml_ng` |
//! | `redis` | no | [`redis`]: Redis and Redis Cluster coordination and idempotency, `rediss://` | `redis`, `rustls` (ring), `sha2` |
//! | `redis-layout` | no | [`redis_layout`]: the fleet's Redis key formulas and Lua scripts without a client (what another language's binding shares); implied by `redis` | `sha2` |
//! | `component` | no | [`component`]: policies as sandboxed `ricochet:retry` components | `wasmtime` (Cranelift): minutes of build |
//! | `opentelemetry` | no | log lines take `trace_id` from the current OpenTelemetry span | `opentelemetry` (the API crate) |
//! | `anyhow` | no | `#[with_retry(retry_on = …)]` also looks inside `anyhow::Error` | `anyhow` |
//! | `tower` | no | [`tower::RetryLayer`]: retries for any tower `Service<http::Request<B>>` (hyper client, …), bodies recorded up to a limit | `tower-service`, `tower-layer`, `http`, `http-body`, `bytes` |
//! | `reqwest` | no | [`reqwest::RetryMiddleware`]: the same retries as a `reqwest-middleware` middleware | `reqwest` (no TLS of its own), `reqwest-middleware`, `async-trait` |
//! | `tonic` | no | [`grpc`]: gRPC status codes onto the categories, `grpc-retry-pushback-ms`, `RetryLayer::grpc` for a tonic channel; implies `tower` | `tonic` without its transport |
//! | `interop` | no | [`interop`]: import Envoy route and gRPC service configs as policies, export a policy as an Envoy `retry_policy` (YAML input with `yaml`) | nothing |
//!
//! With default features a service pulls the core, tokio (`rt`, `time`, `sync`), serde and
//! serde_json, and tracing — no wasmtime, no CLI parser, no plotting, no HTTP server, and no
//! build script: nothing here needs a wasm toolchain. The seed's metrics are one feature away
//! (`features = ["prometheus"]`); they are not on by default because a service that exports its
//! metrics another way should not compile prometheus to retry a call.
//!
//! # Why one crate with features
//!
//! Like tokio and redis-rs, ricochet is one crate a service names, with each heavy capability
//! behind a feature, rather than a family of crates the service must keep in step. What keeps
//! it one crate without a tangle is the direction of its imports: the executor defines the seams
//! — [`PolicyEngine`](engine::PolicyEngine), [`Coordinator`](coordination::Coordinator),
//! [`IdempotencyStore`](idempotency::IdempotencyStore) — and never names an implementation
//! beyond the in-memory defaults; the Redis backends and the component host implement those
//! seams in their own feature-gated modules and are plugged in from above
//! (`with_coordinator`, `with_idempotency_store`, `with_engine`). Removing a feature removes a
//! module, never a branch inside the executor. The pieces that are not a library at all live in
//! their own crates: the `ricochet` command line (`ricochet-cli`), the policy component
//! (`ricochet-policy`, built for wasm32), and the `#[with_retry]` macro (`ricochet-macros`,
//! re-exported here as it must be a proc-macro crate).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

mod bounded;
pub mod classify;
pub mod clock;
pub mod config_file;
pub mod coordination;
pub mod engine;
mod entropy;
pub mod executor;
pub mod idempotency;
pub mod logging;
pub mod metrics;
pub mod reload;

#[cfg(feature = "component")]
#[cfg_attr(docsrs, doc(cfg(feature = "component")))]
pub mod component;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
#[cfg(feature = "redis-layout")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis-layout")))]
pub mod redis_layout;

#[cfg(any(feature = "tonic", feature = "interop"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "tonic", feature = "interop"))))]
pub mod grpc;
#[cfg(any(feature = "tower", feature = "reqwest"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "tower", feature = "reqwest"))))]
pub mod http;
#[cfg(feature = "interop")]
#[cfg_attr(docsrs, doc(cfg(feature = "interop")))]
pub mod interop;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod reqwest;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;

pub use classify::{Classification, Classify, HttpError};
pub use executor::{AttemptError, MaxRetriesExceeded, RetryError, RetryEvent, RetryPolicy};
pub use ricochet_core::{ErrorCategory, GiveUpReason, JitterStrategy, RetryConfig};
pub use ricochet_macros::with_retry;

/// What `#[with_retry]`'s generated code calls; not an API.
#[doc(hidden)]
pub mod __private {

    /// The attribute's `retry_config` did not validate (reported once, when the policy is built).
    pub fn invalid_config(service: &str, operation: &str, error: &ricochet_core::ConfigError) {
        tracing::error!(
            target: "ricochet::with_retry",
            service,
            operation,
            %error,
            "#[with_retry]: invalid retry_config; every call runs once, without retries"
        );
    }

    /// One call ran once, without retries, because the attribute's config is invalid.
    pub fn ran_without_policy(service: &str, operation: &str) {
        if let Some(m) = crate::metrics::RetryMetrics::default_registry() {
            m.policy_fallback(service, operation, "invalid_config");
        }
    }
}

/// The README's Rust examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
