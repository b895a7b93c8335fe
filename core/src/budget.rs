//! Retry budget: the retry throttling of gRPC proposal A6.
//!
//! # Why budgets and not max retries?
//!
//! A cap on attempts per request bounds what one request may cost, not what all of them cost
//! together. When a dependency goes down every request fails, and every one retries up to its
//! cap: a cap of 3 multiplies the load on the thing that is already failing by four, just when it
//! can least take it. A budget caps retries as a share of the traffic instead. Successes earn
//! tokens, failures spend them, and retries are allowed only while the bucket is more than half
//! full: in a healthy period retries flow freely, and in an outage they stop after a handful of
//! failures, whatever each request's own cap says.
//!
//! # Semantics
//!
//! Exactly A6's: the token count starts at `max_tokens`; every failed attempt takes one token
//! (never below zero), every success adds `token_ratio` (never above `max_tokens`), and a retry is
//! allowed only while the count is strictly greater than `max_tokens / 2`. With `max_tokens = 10`
//! and `token_ratio = 0.1`, five failures in a row from full throttle retries, and it then takes
//! more than one success per failure to let them through again.
//!
//! What counts as a failure is the caller's call; A6 counts an attempt that ended in a retryable
//! status or with server pushback. Successes are completed calls that were not failures.
//!
//! # Representation
//!
//! A6 keeps `token_ratio` to three decimal places, so tokens are held as integer *milli-tokens*:
//! the arithmetic is exact, and a budget evolves identically on x86-64, aarch64 and wasm32.
//! [`RetryBudget`] is a 12-byte `Copy` value with no clock and no pointers; a host shares it
//! between workers by storing [`RetryBudget::to_bytes`] in any shared slot (a proxy-wasm filter's
//! shared data, an atomic cell, a Redis key) and reading it back with
//! [`RetryBudget::from_bytes`]. The encoding carries the configuration with the count, so a stored
//! budget is self-contained.

use core::fmt;

/// The largest `max_tokens` A6 allows.
const MAX_TOKENS_LIMIT: u32 = 1000;
/// Milli-tokens per token.
const MILLI: u32 = 1000;
/// The smallest `token_ratio` that survives being kept to three decimal places.
const MIN_TOKEN_RATIO: f64 = 0.001;
/// The largest `token_ratio` accepted: one success then refills even the largest bucket.
const MAX_TOKEN_RATIO: f64 = 1000.0;
/// The leading byte of the current [`RetryBudget::to_bytes`] layout.
const ENCODING_VERSION: u8 = 1;

/// How a [`RetryBudget`] earns and spends tokens, as written in configuration.
///
/// Check it with [`BudgetConfig::validate`], or build the budget directly with
/// [`RetryBudget::new`], which validates it.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct BudgetConfig {
    /// The size of the bucket, and the count it starts at: within `[1, 1000]`, as in A6.
    pub max_tokens: u32,
    /// Tokens earned by each success: finite and within `[0.001, 1000]`. Kept to three decimal
    /// places (rounded to the nearest thousandth), as A6 does.
    pub token_ratio: f64,
}

impl BudgetConfig {
    /// Checks every field, naming the first one out of range.
    ///
    /// # Errors
    ///
    /// [`BudgetError::MaxTokens`] if `max_tokens` is outside `[1, 1000]`;
    /// [`BudgetError::TokenRatio`] if `token_ratio` is NaN, infinite or outside
    /// `[0.001, 1000]`.
    pub fn validate(&self) -> Result<(), BudgetError> {
        if !(1..=MAX_TOKENS_LIMIT).contains(&self.max_tokens) {
            return Err(BudgetError::MaxTokens {
                value: self.max_tokens,
            });
        }
        // `contains` is false for NaN, and the closed range excludes both infinities.
        if !(MIN_TOKEN_RATIO..=MAX_TOKEN_RATIO).contains(&self.token_ratio) {
            return Err(BudgetError::TokenRatio {
                value: self.token_ratio,
            });
        }
        Ok(())
    }
}

/// A [`BudgetConfig`] field out of range. [`fmt::Display`] names the field and the value, for
/// example `retry_budget.max_tokens must be within [1, 1000], got 0`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum BudgetError {
    /// `max_tokens` is outside `[1, 1000]`.
    MaxTokens {
        /// The rejected value.
        value: u32,
    },
    /// `token_ratio` is NaN, infinite or outside `[0.001, 1000]`.
    TokenRatio {
        /// The rejected value.
        value: f64,
    },
}

impl BudgetError {
    /// The configuration path of the offending field, such as `retry_budget.token_ratio`.
    pub fn field(&self) -> &'static str {
        match self {
            BudgetError::MaxTokens { .. } => "retry_budget.max_tokens",
            BudgetError::TokenRatio { .. } => "retry_budget.token_ratio",
        }
    }
}

impl fmt::Display for BudgetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BudgetError::MaxTokens { value } => write!(
                f,
                "{} must be within [1, {MAX_TOKENS_LIMIT}], got {value}",
                self.field()
            ),
            BudgetError::TokenRatio { value } => write!(
                f,
                "{} must be within [{MIN_TOKEN_RATIO}, {MAX_TOKEN_RATIO}], got {value}",
                self.field()
            ),
        }
    }
}

impl core::error::Error for BudgetError {}

/// An A6 retry budget: a token bucket that successes refill and failures drain.
///
/// Invariants: `1 <= max_tokens <= 1000`, `1 <= token_ratio_milli <= 1_000_000` and
/// `0 <= tokens_milli <= max_tokens * 1000`. Both constructors, [`RetryBudget::new`] and
/// [`RetryBudget::from_bytes`], enforce them, and no method can break them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetryBudget {
    tokens_milli: u32,
    max_milli: u32,
    ratio_milli: u32,
}

const _: () = assert!(core::mem::size_of::<RetryBudget>() <= 16);

impl RetryBudget {
    /// The length of [`RetryBudget::to_bytes`]: a version byte, then `max_tokens`,
    /// `token_ratio_milli` and `tokens_milli` as little-endian `u32`s.
    pub const ENCODED_LEN: usize = 13;

    /// A full budget (`max_tokens` tokens) for `config`.
    ///
    /// # Errors
    ///
    /// The first out-of-range field, as [`BudgetConfig::validate`] reports it.
    pub fn new(config: BudgetConfig) -> Result<Self, BudgetError> {
        config.validate()?;
        let max_milli = config.max_tokens * MILLI;
        // In range after validation: the product is within [1, 1_000_000.5), and `as` saturates.
        let ratio_milli = ((config.token_ratio * f64::from(MILLI) + 0.5) as u32).max(1);
        Ok(RetryBudget {
            tokens_milli: max_milli,
            max_milli,
            ratio_milli,
        })
    }

    /// Records a successful call: adds `token_ratio`, up to `max_tokens`.
    pub fn on_success(&mut self) {
        self.tokens_milli = self
            .tokens_milli
            .saturating_add(self.ratio_milli)
            .min(self.max_milli);
    }

    /// Records a failed attempt: takes one token, down to zero.
    pub fn on_failure(&mut self) {
        self.tokens_milli = self.tokens_milli.saturating_sub(MILLI);
    }

    /// Whether a retry may go out now: only while more than `max_tokens / 2` tokens are left.
    pub fn can_retry(&self) -> bool {
        u64::from(self.tokens_milli) * 2 > u64::from(self.max_milli)
    }

    /// The tokens left, in thousandths of a token: within `[0, max_tokens * 1000]`.
    pub fn tokens_milli(&self) -> u32 {
        self.tokens_milli
    }

    /// The size of the bucket, in whole tokens.
    pub fn max_tokens(&self) -> u32 {
        self.max_milli / MILLI
    }

    /// Tokens earned by each success, in thousandths of a token.
    pub fn token_ratio_milli(&self) -> u32 {
        self.ratio_milli
    }

    /// The budget, configuration included, as [`RetryBudget::ENCODED_LEN`] bytes: version `1`,
    /// then `max_tokens`, `token_ratio_milli` and `tokens_milli` as little-endian `u32`s.
    pub fn to_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        let mut w = Writer::new(&mut out);
        w.u8(ENCODING_VERSION);
        w.u32(self.max_tokens());
        w.u32(self.ratio_milli);
        w.u32(self.tokens_milli);
        out
    }

    /// Reads back what [`RetryBudget::to_bytes`] wrote.
    ///
    /// `None` if `bytes` is not exactly [`RetryBudget::ENCODED_LEN`] long, starts with an unknown
    /// version, or holds a value no budget can have (`max_tokens` outside `[1, 1000]`, a zero or
    /// too large ratio, more tokens than `max_tokens`). Every accepted input round-trips: its
    /// `to_bytes` is the same bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::ENCODED_LEN {
            return None;
        }
        let mut r = Reader(bytes);
        if r.u8()? != ENCODING_VERSION {
            return None;
        }
        let max_tokens = r.u32()?;
        let ratio_milli = r.u32()?;
        let tokens_milli = r.u32()?;
        if !(1..=MAX_TOKENS_LIMIT).contains(&max_tokens) {
            return None;
        }
        let max_milli = max_tokens * MILLI;
        let max_ratio_milli = MAX_TOKENS_LIMIT * MILLI;
        if !(1..=max_ratio_milli).contains(&ratio_milli) || tokens_milli > max_milli {
            return None;
        }
        Some(RetryBudget {
            tokens_milli,
            max_milli,
            ratio_milli,
        })
    }
}

/// Fills a byte buffer front to back, little-endian.
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    fn put(&mut self, bytes: &[u8]) {
        let end = self.pos + bytes.len();
        // The layout is fixed and sized by ENCODED_LEN; the tests check every byte is written.
        if let Some(dst) = self.buf.get_mut(self.pos..end) {
            dst.copy_from_slice(bytes);
        }
        self.pos = end;
    }

    fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }

    fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }
}

/// Consumes a byte slice front to back, little-endian.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&v, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(v)
    }

    fn u32(&mut self) -> Option<u32> {
        let (v, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_le_bytes(*v))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::string::ToString;
    use std::vec::Vec;

    fn budget(max_tokens: u32, token_ratio: f64) -> RetryBudget {
        RetryBudget::new(BudgetConfig {
            max_tokens,
            token_ratio,
        })
        .unwrap()
    }

    #[test]
    fn starts_full() {
        let b = budget(10, 0.1);
        assert_eq!(b.tokens_milli(), 10_000);
        assert_eq!(b.max_tokens(), 10);
        assert_eq!(b.token_ratio_milli(), 100);
        assert!(b.can_retry());
    }

    #[test]
    fn a6_example() {
        // max_tokens 10, token_ratio 0.1: retries throttle once the count is at or below 5.
        let mut b = budget(10, 0.1);
        for expected in [9_000, 8_000, 7_000, 6_000] {
            b.on_failure();
            assert_eq!(b.tokens_milli(), expected);
            assert!(b.can_retry());
        }
        b.on_failure();
        assert_eq!(b.tokens_milli(), 5_000);
        assert!(!b.can_retry(), "5 is not more than 10 / 2");

        // Each success refills exactly 0.1 of a token.
        b.on_success();
        assert_eq!(b.tokens_milli(), 5_100);
        assert!(b.can_retry());
        b.on_failure();
        assert_eq!(b.tokens_milli(), 4_100);
        assert!(!b.can_retry());
        for _ in 0..9 {
            b.on_success();
        }
        assert_eq!(b.tokens_milli(), 5_000);
        assert!(!b.can_retry());
        b.on_success();
        assert_eq!(b.tokens_milli(), 5_100);
        assert!(b.can_retry());
    }

    #[test]
    fn odd_max_tokens_halves_exactly() {
        // max_tokens 5: the threshold is 2.5 tokens, so 3 allows retries and 2 does not.
        let mut b = budget(5, 0.5);
        b.on_failure();
        b.on_failure();
        assert_eq!(b.tokens_milli(), 3_000);
        assert!(b.can_retry());
        b.on_success();
        assert!(b.can_retry());
        b.on_failure();
        b.on_failure();
        assert_eq!(b.tokens_milli(), 1_500);
        assert!(!b.can_retry());
        b.on_success();
        b.on_success();
        assert_eq!(b.tokens_milli(), 2_500);
        assert!(!b.can_retry(), "2.5 is not more than 2.5");
        b.on_success();
        assert!(b.can_retry());
    }

    #[test]
    fn floors_at_zero_and_caps_at_max() {
        let mut b = budget(3, 0.25);
        for _ in 0..10 {
            b.on_failure();
        }
        assert_eq!(b.tokens_milli(), 0);
        assert!(!b.can_retry());
        for _ in 0..100 {
            b.on_success();
        }
        assert_eq!(b.tokens_milli(), 3_000);

        let mut big = budget(1000, 1000.0);
        big.on_failure();
        big.on_success();
        assert_eq!(big.tokens_milli(), 1_000_000);
    }

    #[test]
    fn max_tokens_one_never_retries_after_a_failure() {
        let mut b = budget(1, 1.0);
        assert!(b.can_retry());
        b.on_failure();
        assert!(!b.can_retry());
        b.on_success();
        assert!(b.can_retry());
    }

    #[test]
    fn token_ratio_kept_to_three_decimals() {
        assert_eq!(budget(10, 0.001).token_ratio_milli(), 1);
        assert_eq!(budget(10, 0.57).token_ratio_milli(), 570);
        assert_eq!(budget(10, 0.0014).token_ratio_milli(), 1);
        assert_eq!(budget(10, 1.2345).token_ratio_milli(), 1235);
        assert_eq!(budget(10, 1000.0).token_ratio_milli(), 1_000_000);
    }

    #[test]
    fn validation_names_the_field() {
        let ok = BudgetConfig {
            max_tokens: 10,
            token_ratio: 0.1,
        };
        assert_eq!(ok.validate(), Ok(()));
        assert!(BudgetConfig {
            max_tokens: 1,
            ..ok
        }
        .validate()
        .is_ok());
        assert!(BudgetConfig {
            max_tokens: 1000,
            ..ok
        }
        .validate()
        .is_ok());

        let e = BudgetConfig {
            max_tokens: 0,
            ..ok
        }
        .validate()
        .unwrap_err();
        assert_eq!(e, BudgetError::MaxTokens { value: 0 });
        assert_eq!(e.field(), "retry_budget.max_tokens");
        assert_eq!(
            e.to_string(),
            "retry_budget.max_tokens must be within [1, 1000], got 0"
        );
        let e = BudgetConfig {
            max_tokens: 1001,
            ..ok
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "retry_budget.max_tokens must be within [1, 1000], got 1001"
        );

        for bad in [
            0.0,
            -0.1,
            0.0009,
            1000.5,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            let e = BudgetConfig {
                token_ratio: bad,
                ..ok
            }
            .validate()
            .unwrap_err();
            assert_eq!(e.field(), "retry_budget.token_ratio");
            assert!(matches!(e, BudgetError::TokenRatio { .. }), "{bad}");
        }
        let e = BudgetConfig {
            token_ratio: -0.5,
            ..ok
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "retry_budget.token_ratio must be within [0.001, 1000], got -0.5"
        );
        let e = BudgetConfig {
            token_ratio: f64::NAN,
            ..ok
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "retry_budget.token_ratio must be within [0.001, 1000], got NaN"
        );
        // `new` reports the same error.
        assert_eq!(
            RetryBudget::new(BudgetConfig {
                max_tokens: 0,
                ..ok
            }),
            Err(BudgetError::MaxTokens { value: 0 })
        );
    }

    #[test]
    fn bytes_layout_and_round_trip() {
        let mut b = budget(10, 0.1);
        b.on_failure();
        b.on_success();
        let bytes = b.to_bytes();
        assert_eq!(
            bytes,
            [1, 10, 0, 0, 0, 100, 0, 0, 0, 0x8c, 0x23, 0, 0],
            "9.1 tokens are 9100 = 0x238c milli-tokens"
        );
        assert_eq!(RetryBudget::from_bytes(&bytes), Some(b));
    }

    #[test]
    fn from_bytes_rejects_malformed() {
        let good = budget(10, 0.1).to_bytes();
        assert_eq!(RetryBudget::from_bytes(&good[..12]), None);
        let mut long = [0u8; 14];
        long[..13].copy_from_slice(&good);
        assert_eq!(RetryBudget::from_bytes(&long), None);
        assert_eq!(RetryBudget::from_bytes(&[]), None);

        let patched = |i: usize, v: &[u8]| {
            let mut b = good;
            b[i..i + v.len()].copy_from_slice(v);
            RetryBudget::from_bytes(&b)
        };
        assert_eq!(patched(0, &[2]), None, "unknown version");
        assert_eq!(patched(1, &0u32.to_le_bytes()), None, "max_tokens 0");
        assert_eq!(patched(1, &1001u32.to_le_bytes()), None, "max_tokens 1001");
        assert_eq!(patched(5, &0u32.to_le_bytes()), None, "ratio 0");
        assert_eq!(
            patched(5, &1_000_001u32.to_le_bytes()),
            None,
            "ratio too big"
        );
        assert_eq!(patched(9, &10_001u32.to_le_bytes()), None, "over max");
        assert!(patched(9, &0u32.to_le_bytes()).is_some(), "empty is fine");
    }

    #[derive(Debug, Clone, Copy)]
    enum Op {
        Success,
        Failure,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![Just(Op::Success), Just(Op::Failure)]
    }

    proptest! {
        #[test]
        fn tokens_stay_in_bounds_and_match_exact_model(
            max_tokens in 1u32..=1000,
            ratio_milli in 1u32..=1_000_000,
            ops in proptest::collection::vec(op(), 0..300),
        ) {
            let mut b = RetryBudget::new(BudgetConfig {
                max_tokens,
                token_ratio: f64::from(ratio_milli) / 1000.0,
            }).unwrap();
            prop_assert_eq!(b.token_ratio_milli(), ratio_milli);
            // The model in i64 milli-tokens, clamped by hand.
            let max = i64::from(max_tokens) * 1000;
            let mut model = max;
            for op in ops {
                match op {
                    Op::Success => { b.on_success(); model = (model + i64::from(ratio_milli)).min(max); }
                    Op::Failure => { b.on_failure(); model = (model - 1000).max(0); }
                }
                prop_assert_eq!(i64::from(b.tokens_milli()), model);
                prop_assert!(b.tokens_milli() <= max_tokens * 1000);
                prop_assert_eq!(b.can_retry(), 2 * model > max);
                prop_assert_eq!(RetryBudget::from_bytes(&b.to_bytes()), Some(b));
            }
        }

        #[test]
        fn validate_never_panics_and_new_agrees(max_tokens: u32, token_ratio: f64) {
            let config = BudgetConfig { max_tokens, token_ratio };
            match (config.validate(), RetryBudget::new(config)) {
                (Ok(()), Ok(b)) => {
                    prop_assert!((1..=1000).contains(&b.max_tokens()));
                    prop_assert!((1..=1_000_000).contains(&b.token_ratio_milli()));
                    prop_assert_eq!(b.tokens_milli(), b.max_tokens() * 1000);
                }
                (Err(e), Err(f)) => prop_assert_eq!(e, f),
                (v, n) => prop_assert!(false, "validate {:?} but new {:?}", v, n),
            }
        }

        #[test]
        fn from_bytes_never_panics_and_accepts_only_canonical(
            bytes in proptest::collection::vec(any::<u8>(), 0..20),
            tail in proptest::collection::vec(any::<u8>(), 12),
        ) {
            if let Some(b) = RetryBudget::from_bytes(&bytes) {
                prop_assert_eq!(&b.to_bytes()[..], &bytes[..]);
            }
            // Versioned inputs of the right length reach the field checks.
            let mut versioned: Vec<u8> = std::vec![1];
            versioned.extend_from_slice(&tail);
            if let Some(b) = RetryBudget::from_bytes(&versioned) {
                prop_assert_eq!(&b.to_bytes()[..], &versioned[..]);
                prop_assert!(b.tokens_milli() <= b.max_tokens() * 1000);
            }
        }
    }
}
