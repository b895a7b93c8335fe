//! Server delay headers: `Retry-After`, HTTP-date, `RateLimit` and `X-RateLimit-Reset`.
//!
//! Input: 8 bytes of `now` (µs since the epoch, little-endian), then the header value. Every
//! parser must answer without panicking, and what it answers must be consistent: a parsed date
//! written back as an IMF-fixdate or asctime reads as the same instant, a date's `Retry-After`
//! delay is exactly its distance from `now`, a number is read exactly (saturating), and the
//! dispatcher agrees with each parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ricochet_core::retry_after::{
    parse_http_date, parse_ratelimit, parse_retry_after, parse_server_delay,
    parse_x_ratelimit_reset, retry_after_seconds, ServerDelayHeader,
};
use ricochet_fuzz::http_date::{asctime, imf_fixdate, MAX_UNIX_SECS};

const US_PER_SEC: u64 = 1_000_000;

/// A string of ASCII digits as a number, saturating at `u64::MAX` (0 for none).
fn saturating_number(digits: &str) -> u64 {
    digits.bytes().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    })
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `X-RateLimit-Reset` read independently: `DIGITS [ "." DIGITS ]`, the fraction kept to the
/// µs, small values taken as delta seconds (see `parse_x_ratelimit_reset`).
fn x_ratelimit_reset_model(value: &str, now_us: u64) -> Option<u64> {
    let (whole, fraction) = match value.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (value, None),
    };
    if !all_digits(whole) || fraction.is_some_and(|f| !all_digits(f)) {
        return None;
    }
    let secs = saturating_number(whole);
    let fraction_us = fraction.map_or(0, |f| {
        let six: String = f.chars().chain(std::iter::repeat('0')).take(6).collect();
        saturating_number(&six)
    });
    let us = secs.saturating_mul(US_PER_SEC).saturating_add(fraction_us);
    Some(if secs < 1_000_000_000 {
        us
    } else {
        us.saturating_sub(now_us)
    })
}

fuzz_target!(|data: &[u8]| {
    let (now_bytes, value) = data.split_at(data.len().min(8));
    let mut now = [0u8; 8];
    now[..now_bytes.len()].copy_from_slice(now_bytes);
    let now_us = u64::from_le_bytes(now);
    let value = String::from_utf8_lossy(value);
    let v = value.as_ref();

    let retry_after = parse_retry_after(v, now_us);
    let date = parse_http_date(v, now_us);
    let ratelimit = parse_ratelimit(v);
    let x_reset = parse_x_ratelimit_reset(v, now_us);
    let _ = ServerDelayHeader::from_name(v);
    assert_eq!(
        parse_server_delay(ServerDelayHeader::RetryAfter, v, now_us),
        retry_after
    );
    assert_eq!(
        parse_server_delay(ServerDelayHeader::RateLimit, v, now_us),
        ratelimit
    );
    assert_eq!(
        parse_server_delay(ServerDelayHeader::XRateLimitReset, v, now_us),
        x_reset
    );

    // Optional whitespace is SP and HTAB only (RFC 9110 §5.6.3).
    let trimmed = v.trim_matches([' ', '\t']);
    if all_digits(trimmed) {
        // delay-seconds, and the earlier drafts' bare `RateLimit-Reset`.
        let want = saturating_number(trimmed).saturating_mul(US_PER_SEC);
        assert_eq!(retry_after, Some(want), "{v:?}");
        assert_eq!(ratelimit, Some(want), "{v:?}");
        assert_eq!(date, None, "a number is not a date: {v:?}");
    }
    match date {
        Some(secs) => {
            if secs <= MAX_UNIX_SECS {
                let imf = imf_fixdate(secs);
                assert_eq!(parse_http_date(&imf, now_us), Some(secs), "{v:?} -> {imf}");
                let asc = asctime(secs);
                assert_eq!(parse_http_date(&asc, now_us), Some(secs), "{v:?} -> {asc}");
            } else {
                // Past 9999 only by RFC 850's two-digit year, read against a `now` near 9950+.
                assert!(trimmed.contains('-'), "{v:?} -> {secs}");
            }
            let want = secs.saturating_mul(US_PER_SEC).saturating_sub(now_us);
            assert_eq!(retry_after, Some(want), "{v:?} at {now_us}");
        }
        None if !all_digits(trimmed) => {
            assert_eq!(retry_after, None, "neither a number nor a date: {v:?}");
        }
        None => {}
    }
    if let Some(delay_us) = retry_after {
        // What a server would send to ask for this delay reads back as at least the delay, and
        // less than a second more.
        let header = retry_after_seconds(delay_us).to_string();
        let back = parse_retry_after(&header, now_us).expect("delay-seconds parse");
        assert!(
            back >= delay_us && (back - delay_us < US_PER_SEC || back == u64::MAX),
            "{delay_us} -> {header} -> {back}"
        );
    }
    if let Some(delay_us) = ratelimit {
        assert!(
            delay_us % US_PER_SEC == 0 || delay_us == u64::MAX,
            "RateLimit counts whole seconds: {v:?} -> {delay_us}"
        );
    }
    assert_eq!(x_reset, x_ratelimit_reset_model(trimmed, now_us), "{v:?}");

    // Any instant a four-digit year can name round-trips through both fixed-width forms.
    let secs = now_us % (MAX_UNIX_SECS + 1);
    assert_eq!(parse_http_date(&imf_fixdate(secs), now_us), Some(secs));
    assert_eq!(parse_http_date(&asctime(secs), now_us), Some(secs));
});
