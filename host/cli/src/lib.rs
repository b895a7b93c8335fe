//! The `ricochet` command line, as a library for the binary, its tests and its benches.
//!
//! Not an API: a service depends on the `ricochet` crate. This crate holds what only the command
//! line needs — argument parsing, the demo and its flaky HTTP service, the herd simulator and its
//! SVG plots — and the policy component embedded at build time for `--engine wasm`.

pub mod cli;
pub mod demo;
pub mod flaky;
pub mod interop;
pub mod plan;
pub mod run;
pub mod sim;
pub mod simulate;

/// Components embedded by `build.rs` (when a wasm toolchain was available).
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}
