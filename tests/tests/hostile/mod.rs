//! What the hostile-guest tests share: components written in WAT, and the attacks of
//! `guests/hostile` by the seed that selects them.
#![allow(dead_code)] // each test binary uses its own part

use ricochet::component::{state_to_wit, wit};
use ricochet_core::{RetryState, RetryStateParts};
use wit_parser::Resolve;

/// The real world's WIT.
pub const RETRY_WIT: &str = include_str!("../../../wit/retry.wit");

/// The functions of `retry-policy`'s `policy` resource: name, core signature, and what the
/// function does unless a test says otherwise. `create` answers `ok` with a handle from the
/// component's `[resource-new]policy` (written at the return area, 16); the rest execute
/// `unreachable`. Parameters past the canonical ABI's 16 flat values arrive as one pointer
/// (`$args`); results wider than one value go back through a pointer (the return area at 16).
pub const FUNCTIONS: [(&str, &str, &str); 7] = [
    (
        "[static]policy.create",
        "(param $args i32) (result i32)",
        "(i32.store (i32.const 16) (i32.const 0)) (i32.store (i32.const 20) (call $new (i32.const 1))) (i32.const 16)",
    ),
    (
        "[method]policy.next-delay",
        "(param $self i32) (param $retry i32) (param $seed i64) (param $prev i64) (result i64)",
        "unreachable",
    ),
    (
        "[method]policy.plan",
        "(param $self i32) (param $seed i64) (result i32)",
        "unreachable",
    ),
    (
        "[method]policy.decide",
        "(param i32 i64 i64 i64 i32 i32 i32 i32 i64 i32 i64) (result i32)",
        "unreachable",
    ),
    (
        "[method]policy.decide-guarded",
        "(param $args i32) (result i32)",
        "unreachable",
    ),
    (
        "[method]policy.resolve-ticket",
        "(param i32 i64 i64 i32 i32 i64 i64) (result i32)",
        "unreachable",
    ),
    (
        "[method]policy.schedule",
        "(param i32 i32 i32 i32 i32 i64 i64 i64 i32 i32 i32 i32 i64 i32) (result i32)",
        "unreachable",
    ),
];

/// A core module for the `policy` world: a bump allocator (reset by every export call), a
/// zeroed return area at 16, one table of `table_min` elements, `extra` items, and `bodies`
/// for the functions it names (`create`, `next-delay`, `plan`, …: the name after the dot; the
/// rest do what [`FUNCTIONS`] says).
pub fn policy_module(table_min: u32, extra: &str, bodies: &[(&str, &str)]) -> String {
    let mut exports = String::new();
    for (name, signature, default) in FUNCTIONS {
        let short = name.rsplit('.').next().unwrap_or(name);
        let body = bodies
            .iter()
            .find(|(n, _)| *n == short)
            .map_or(default, |(_, b)| b);
        exports.push_str(&format!(
            "(func (export \"ricochet:retry/retry-policy@0.2.0#{name}\") {signature}\n  (global.set $bump (i32.const 1024))\n  {body})\n"
        ));
    }
    format!(
        r#"(module
  (import "[export]ricochet:retry/retry-policy@0.2.0" "[resource-new]policy" (func $new (param i32) (result i32)))
  (memory (export "memory") 1)
  (table $t {table_min} funcref)
  (global $bump (mut i32) (i32.const 1024))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $at i32)
    (local.set $at (i32.and (i32.add (global.get $bump) (i32.sub (local.get 2) (i32.const 1)))
                            (i32.sub (i32.const 0) (local.get 2))))
    (global.set $bump (i32.add (local.get $at) (local.get 3)))
    (local.get $at))
  (func (export "ricochet:retry/retry-policy@0.2.0#[dtor]policy") (param i32))
  {extra}
  {exports})"#
    )
}

/// `wat` as a component of the `policy` world.
pub fn component(wat: &str) -> Vec<u8> {
    let mut module = wat::parse_str(wat).unwrap();
    let mut resolve = Resolve::default();
    let package = resolve.push_source("retry.wit", RETRY_WIT).unwrap();
    let world = resolve.select_world(&[package], Some("policy")).unwrap();
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .unwrap();
    wit_component::ComponentEncoder::default()
        .module(&module)
        .unwrap()
        .validate(true)
        .encode()
        .unwrap()
}

/// `bytes` as a WAT string's contents, every byte escaped.
pub fn wat_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// The attacks of `guests/hostile/src/intruder.rs` (feature `intruder`), by seed.
pub mod intruder {
    /// `count` × `acquire-slot` for a new service each time, named with `len` bytes.
    pub const SLOTS: u64 = 1;
    /// `count` × (claim with a lease of ten years, complete with a TTL of ten years).
    pub const STORE: u64 = 2;
    /// Claims and completes `cli␟echo␟victim`.
    pub const VICTIM: u64 = 3;
    /// `count` log lines, every text field `len` bytes.
    pub const LOGS: u64 = 4;
    /// `count` × `acquire-slot` for the call's own service and operation.
    pub const BOUND_SLOTS: u64 = 5;
}

/// The lies of `guests/hostile/src/forger.rs` (feature `forger`), by seed.
pub mod forger {
    pub const BREAKER_OPEN_FOREVER: u64 = 10;
    pub const BREAKER_DROPPED: u64 = 11;
    pub const BREAKER_RECONFIGURED: u64 = 12;
    pub const BUDGET_REFILLED: u64 = 13;
    pub const BUDGET_DROPPED: u64 = 14;
    pub const LONG_DELAY: u64 = 20;
    pub const NON_RETRYABLE: u64 = 21;
    pub const PAST_DEADLINE: u64 = 22;
    pub const IGNORES_SERVER_DELAY: u64 = 25;
}

/// The state that makes the intruder run `attack` `count` times with texts of `len` bytes
/// (`state.seed` picks the attack, `state.prev-delay-us` sizes it).
pub fn attack(attack: u64, count: u32, len: u32) -> wit::RetryState {
    state_to_wit(&RetryState::from_parts(RetryStateParts {
        seed: attack,
        prev_delay_us: (u64::from(len) << 32) | u64::from(count),
        ..RetryState::new(0, 0).to_parts()
    }))
}
