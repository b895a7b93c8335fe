//! Randomness for seeds and ids — jitter seeds, W3C trace ids, idempotency holder tokens —
//! without a dependency: std's `RandomState` is keyed from the operating system once per
//! process and per thread, and hashing a counter and the clock through it gives values that are
//! unique and unpredictable enough for these uses. Never for secrets.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// 64 random bits.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u64(crate::coordination::wall_clock_us());
    h.finish()
}

/// A new W3C trace id: 32 lowercase hex digits, never all zeros.
pub(crate) fn new_trace_id() -> String {
    let (hi, lo) = (random_u64(), random_u64() | 1);
    format!("{hi:016x}{lo:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_are_w3c_and_distinct() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_trace_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            assert!(crate::logging::trace_id_from_traceparent(&format!(
                "00-{id}-00f067aa0ba902b7-01"
            ))
            .is_some());
        }
    }
}
