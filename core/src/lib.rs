//! # ricochet-core
//!
//! The retry policy engine of ricochet, written once and run everywhere: linked natively into the
//! host, compiled into a WebAssembly component, and inside a proxy-wasm filter.
//!
//! It is *sans-IO* in the sense of rustls or quinn-proto: it never sleeps, never reads a clock,
//! never talks to Redis and never allocates. The caller passes the time in (`now_us`), the outcome
//! of the last attempt, and — when coordinated — the slot ticket it got from the fleet; the core
//! returns a [`Decision`]. Everything effectful lives in the host or behind WIT imports.
//!
//! Time is integer microseconds (`u64`) everywhere. Config is written in seconds (`f64`) as in the
//! seed document and converted once, by [`RetryConfig::validate`], into a [`Policy`].
//!
//! Every transcendental function comes from `libm`, and integer powers are done by repeated
//! squaring with IEEE basic operations only, so a schedule is bit-identical on x86-64, aarch64
//! and wasm32.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod backoff;
pub mod breaker;
pub mod budget;
mod category;
mod config;
mod decision;
pub mod http;
mod name;
pub mod retry_after;
mod rng;
mod slots;

pub use backoff::{plan, Delay, Plan, PlannedRetry};
pub use category::{CategorySet, ErrorCategory, UnknownCategory};
pub use config::{ConfigError, JitterStrategy, PartialRetryConfig, Policy, RetryConfig};
pub use decision::{Decision, Failure, GiveUpReason, Guards, RetryState, RetryStateParts};
pub use name::{NameTooLong, PolicyName};
pub use rng::unit_interval;
pub use slots::{SlotRequest, SlotResolution};
