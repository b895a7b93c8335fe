//! The fleet's layout on Redis (feature `redis-layout`, implied by `redis`): the key formulas and
//! the Lua scripts, without a Redis client.
//!
//! Every host that joins a fleet — the Rust backends in [`crate::redis`], the Python package's
//! redis-py backends — builds its keys with these functions and runs these scripts, so a Python
//! service and a Rust service retrying the same operation share one slot window, and a key
//! completed by one is replayed by the other. This module is the one source of both.

use sha2::{Digest, Sha256};

/// The slot script. `KEYS[1]` is the operation's key stem ([`slot_key_stem`]); `ARGV` =
/// delay_us, window_us. Returns `{ticket, window, earliest_us, now_us}` on the server's clock.
pub const SLOT_SCRIPT: &str = include_str!("redis/scripts/slot.lua");
/// Claim an idempotency record. `KEYS[1]` record; `ARGV` = fingerprint, token, lease_ms.
/// Returns `{0}` started, `{1, result}` completed, `{2, pttl}` in progress, `{3}` mismatch.
pub const BEGIN_SCRIPT: &str = include_str!("redis/scripts/begin.lua");
/// Store a result. `KEYS[1]` record; `ARGV` = fingerprint, token, result, ttl_ms.
/// Returns 1 stored, 0 not holder.
pub const COMPLETE_SCRIPT: &str = include_str!("redis/scripts/complete.lua");
/// Release a claim. `KEYS[1]` record; `ARGV` = token. Returns 1 released (or absent), 0 not holder.
pub const FAIL_SCRIPT: &str = include_str!("redis/scripts/fail.lua");
/// Extend a claim. `KEYS[1]` record; `ARGV` = token, lease_ms. Returns 1 renewed, 0 not holder.
pub const RENEW_SCRIPT: &str = include_str!("redis/scripts/renew.lua");

/// Lowercase hex of the SHA-256 of `bytes` (64 digits).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// The hash tag of an operation's slot keys: 32 hex digits of the SHA-256 of
/// `escape(service) 0x1F escape(operation)`, where `escape` puts a `\` before every `\` and
/// 0x1F. Built from the names, never made of them: a name holding `}` or `{` cannot end the
/// tag early (an empty tag hashed each window's key to its own Cluster slot, and the script
/// failed with "non local key"), and `("a:b", "c")` and `("a", "b:c")` get different tags.
pub fn operation_tag(service: &str, operation: &str) -> String {
    fn escape(name: &str, out: &mut Vec<u8>) {
        for b in name.bytes() {
            if b == b'\\' || b == 0x1f {
                out.push(b'\\');
            }
            out.push(b);
        }
    }
    let mut encoded = Vec::with_capacity(service.len() + operation.len() + 1);
    escape(service, &mut encoded);
    encoded.push(0x1f);
    escape(operation, &mut encoded);
    let mut tag = sha256_hex(&encoded);
    tag.truncate(32);
    tag
}

/// The stem of an operation's slot counters, `<prefix>:{<tag>}:slot:` ([`operation_tag`]); the
/// slot script appends the window's index, which keeps every window on the stem's Cluster slot.
pub fn slot_key_stem(prefix: &str, service: &str, operation: &str) -> String {
    format!("{prefix}:{{{}}}:slot:", operation_tag(service, operation))
}

pub use crate::idempotency::scoped_key as scoped_idempotency_key;

/// The Redis key of an idempotency record for a store key (hashed: any length, any bytes).
pub fn record_key(prefix: &str, store_key: &str) -> String {
    format!("{prefix}:idem:{}", sha256_hex(store_key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_unambiguously() {
        assert_ne!(operation_tag("a:b", "c"), operation_tag("a", "b:c"));
        assert_ne!(
            operation_tag("a\u{1f}b", "c"),
            operation_tag("a", "b\u{1f}c")
        );
        assert_ne!(
            operation_tag("a\\", "\u{1f}b"),
            operation_tag("a\\\u{1f}", "b")
        );
        let stem = slot_key_stem("ricochet", "}", "{}");
        assert_eq!(stem.len(), "ricochet:{}:slot:".len() + 32);
        assert!(stem.starts_with("ricochet:{") && stem.ends_with("}:slot:"));
        assert_eq!(&stem[10..42], operation_tag("}", "{}"));
    }

    #[test]
    fn record_keys_are_hashed_to_64_hex_digits() {
        let key = record_key(
            "p",
            &scoped_idempotency_key("orders", "submit", &"x".repeat(10_000)),
        );
        assert_eq!(key.len(), "p:idem:".len() + 64);
        assert!(key["p:idem:".len()..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
