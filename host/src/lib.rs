//! # ricochet-host
//!
//! The native side of ricochet: everything `ricochet-core` refuses to do — clocks, I/O, state
//! shared between calls — plus a wasmtime host that runs any `ricochet:retry` policy component
//! with the same backends, and the `ricochet` CLI.
//!
//! - [`component`]: load a policy component, supply its imports, call its exports, sandboxed.
//! - [`config_file`]: the seed's `retry_policies:` YAML/JSON format, with `extends`.
//! - [`engine`]: one interface over the native core and a component, so every caller can use either.
//! - [`guests`]: the components built with this crate (when the wasm toolchain was available).

pub mod component;
pub mod config_file;
pub mod engine;

/// Components built by `build.rs` and embedded in this crate.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}
