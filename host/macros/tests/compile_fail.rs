//! Misuse of `#[with_retry]` is a compile error that says what is wrong (tests/ui/*.stderr).
//!
//! Regenerate the expected output with `TRYBUILD=overwrite cargo test -p ricochet-macros
//! --test compile_fail`, then read every `.stderr`: the message must be clear on its own.

#[test]
fn misuse_is_reported_clearly() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
