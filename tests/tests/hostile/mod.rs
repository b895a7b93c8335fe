//! What the hostile-guest tests share: components written in WAT, and the attacks of
//! `guests/hostile` by the seed that selects them.
#![allow(dead_code)] // each test binary uses its own part

use ricochet::component::{state_to_wit, wit};
use ricochet_core::{RetryState, RetryStateParts};
use wit_parser::Resolve;

/// The real world's WIT.
pub const RETRY_WIT: &str = include_str!("../../../wit/retry.wit");

/// The six exports of `retry-policy`, each `(param i32) (result i32)` in the core module.
pub const EXPORTS: [&str; 6] = [
    "validate",
    "next-delay",
    "plan",
    "decide",
    "resolve-ticket",
    "schedule",
];

/// A core module for the `policy` world: a bump allocator (reset by every export call), a
/// zeroed return area at 16 (so `validate` answers `ok`), one table of `table_min` elements,
/// `extra` items, and `bodies` for the exports it names (the rest execute `unreachable`).
pub fn policy_module(table_min: u32, extra: &str, bodies: &[(&str, &str)]) -> String {
    let mut exports = String::new();
    for name in EXPORTS {
        let body = bodies
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("unreachable", |(_, b)| b);
        exports.push_str(&format!(
            "(func (export \"ricochet:retry/retry-policy@0.1.0#{name}\") (param $args i32) (result i32)\n  (global.set $bump (i32.const 1024))\n  {body})\n"
        ));
    }
    format!(
        r#"(module
  (memory (export "memory") 1)
  (table $t {table_min} funcref)
  (global $bump (mut i32) (i32.const 1024))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $at i32)
    (local.set $at (i32.and (i32.add (global.get $bump) (i32.sub (local.get 2) (i32.const 1)))
                            (i32.sub (i32.const 0) (local.get 2))))
    (global.set $bump (i32.add (local.get $at) (local.get 3)))
    (local.get $at))
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
    pub const FORGED_PREV_DELAY: u64 = 23;
    pub const AUTH_RESET: u64 = 24;
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
