//! Inputs that made a fuzz target (`tests/fuzz`) fail, kept so that the answer they get stays the
//! answer. See RELIABILITY.md, "Fuzzing".

use ricochet_core::retry_after::{parse_http_date, parse_retry_after};

/// `server_delay` (`tests/fuzz/regressions/server_delay/rfc850-year-11188`): an RFC 850 date
/// read when `now` is in the year 11159. Its two-digit year `88` is 11188 by the rule of RFC 9110
/// §5.6.7 (the latest year ending in 88 at most 50 years ahead of `now`). The target expected
/// every date before the year 10000, which only the four-digit forms promise: the check was
/// wrong and the parser right, and this pins the parser's answer.
#[test]
fn an_rfc850_year_follows_now_past_9999() {
    let now_us = 0x0406_449C_4F85_8000; // 11159-07-26
    let value = "Sunday, 06-Nov-88 08:49:37 GMT";
    let secs = 290_918_767_777; // 11188-11-06T08:49:37Z
    assert_eq!(parse_http_date(value, now_us), Some(secs));
    assert_eq!(
        parse_retry_after(value, now_us),
        Some(secs * 1_000_000 - now_us)
    );
}
