//! Server-supplied retry delays: `Retry-After`, `RateLimit` and `X-RateLimit-Reset`.
//!
//! A server that says how long to wait knows more than any backoff curve, so the engine honours
//! such a hint (and gives up when it exceeds the caller's cap). The engine reads no clock and owns
//! no heap, so these parsers take `now` as an argument, borrow the header bytes, and answer `None`
//! rather than panic on anything they do not understand: a bad header must fall back to the
//! engine's own backoff, never crash it. The delays are microseconds from `now` (only
//! [`parse_http_date`] answers in Unix seconds), and every step of arithmetic saturates or is
//! checked.
//!
//! Choices a caller should know about:
//! - HTTP-date is case-sensitive (RFC 9110 §5.6.7), so `sun, 06 nov 1994 …` and `… gmt` are
//!   rejected; only `GMT` is accepted as the zone.
//! - The day name must be a real one of the right form (`Sun` in IMF-fixdate and asctime,
//!   `Sunday` in RFC 850) but is not checked against the date: RFC 9110 §5.6.7 asks recipients
//!   to be robust, and the numbers carry the meaning.
//! - A second of `60` (leap second, RFC 9110 §5.6.7 "00:00:00 - 23:59:60") is accepted anywhere
//!   and read as `59`, so the instant stays inside the minute the server named.
//! - RFC 850's two-digit year is judged by whole years against the year of `now`: with `now` in
//!   2026, `76` is 2076 (exactly 50 years ahead) and `77` is 1977.
//! - Only optional whitespace (SP and HTAB, RFC 9110 §5.6.3) around the value is trimmed.
//! - A date is compared with the caller's `now`, not the response's `Date` field, so clock skew
//!   between client and server lands in the delay.

/// Microseconds in one second: the crate's unit of time.
const US_PER_SEC: u64 = 1_000_000;
/// Seconds in one civil day (Unix time ignores leap seconds).
const SECS_PER_DAY: u64 = 86_400;
/// Microseconds in one civil day.
const US_PER_DAY: u64 = SECS_PER_DAY * US_PER_SEC;
/// Below this an `X-RateLimit-Reset` value is taken as delta seconds: 10^9 seconds after the
/// epoch is September 2001, so a smaller value cannot be a reset time a live server means.
const X_RESET_EPOCH_CUTOFF_SECS: u64 = 1_000_000_000;

/// Which server header a delay hint came from; picks the parser in [`parse_server_delay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerDelayHeader {
    /// `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date. See [`parse_retry_after`].
    RetryAfter,
    /// `RateLimit` of draft-ietf-httpapi-ratelimit-headers, current list form or the older
    /// dictionary form, and the earlier drafts' `RateLimit-Reset` delta-seconds. See
    /// [`parse_ratelimit`].
    RateLimit,
    /// `X-RateLimit-Reset`: Unix epoch seconds (GitHub style), or delta seconds when small. See
    /// [`parse_x_ratelimit_reset`].
    XRateLimitReset,
}

impl ServerDelayHeader {
    /// Recognises a header name, ignoring ASCII case (field names are case-insensitive, RFC 9110
    /// §5.1). `Retry-After` → [`Self::RetryAfter`]; `RateLimit` and the earlier drafts'
    /// `RateLimit-Reset` → [`Self::RateLimit`]; `X-RateLimit-Reset` and Twitter's
    /// `X-Rate-Limit-Reset` → [`Self::XRateLimitReset`]. Anything else, including surrounding
    /// whitespace, is `None`.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        const NAMES: [(&str, ServerDelayHeader); 5] = [
            ("retry-after", ServerDelayHeader::RetryAfter),
            ("ratelimit", ServerDelayHeader::RateLimit),
            ("ratelimit-reset", ServerDelayHeader::RateLimit),
            ("x-ratelimit-reset", ServerDelayHeader::XRateLimitReset),
            ("x-rate-limit-reset", ServerDelayHeader::XRateLimitReset),
        ];
        NAMES
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|&(_, header)| header)
    }
}

/// Parses `value` as the header `header` names and returns the delay in µs from `now_unix_us`;
/// `None` when the value is malformed. `now_unix_us` is ignored for [`ServerDelayHeader::RateLimit`],
/// whose values are always relative.
#[must_use]
pub fn parse_server_delay(header: ServerDelayHeader, value: &str, now_unix_us: u64) -> Option<u64> {
    match header {
        ServerDelayHeader::RetryAfter => parse_retry_after(value, now_unix_us),
        ServerDelayHeader::RateLimit => parse_ratelimit(value),
        ServerDelayHeader::XRateLimitReset => parse_x_ratelimit_reset(value, now_unix_us),
    }
}

/// A delay header's value as a client library may hand it over when the server sent the field
/// more than once: its lines joined with `", "` (the Fetch API's `Headers.get`, Python's HTTP
/// libraries, RFC 9110 §5.3). Returns the longest delay among the members that parse by
/// `header`'s parser, so that a retry never comes sooner than any line asked; `None` when none
/// does.
///
/// A value that parses whole is read as it is — one HTTP-date holds a comma, and a `RateLimit`
/// value is a list its own parser reads whole (it is never split here). Otherwise the value is
/// split at its commas, a day name (`Sun`, `Sunday`) staying with the rest of its date:
/// `0, 1` is 1 s; `Sun, 06 Nov 1994 08:49:37 GMT, 5` is 5 s; `abc, 2` is 2 s.
#[must_use]
pub fn parse_server_delay_lines(
    header: ServerDelayHeader,
    value: &str,
    now_unix_us: u64,
) -> Option<u64> {
    if let Some(delay_us) = parse_server_delay(header, value, now_unix_us) {
        return Some(delay_us);
    }
    if header == ServerDelayHeader::RateLimit || !value.contains(',') {
        return None;
    }
    let mut longest: Option<u64> = None;
    let mut rest = value;
    loop {
        let (mut member, mut after) = match rest.split_once(',') {
            Some((member, after)) => (member, Some(after)),
            None => (rest, None),
        };
        let name = trim_ows(member);
        if DAY_NAMES.contains(&name) || DAY_NAMES_LONG.contains(&name) {
            // `Sun, 06 Nov …`: the member runs to the comma after the date.
            if let Some(date) = after {
                let date_len = date.find(',').unwrap_or(date.len());
                member = &rest[..member.len() + 1 + date_len];
                after = date.get(date_len + 1..).filter(|_| date_len < date.len());
            }
        }
        if let Some(delay_us) = parse_server_delay(header, member, now_unix_us) {
            longest = Some(longest.map_or(delay_us, |l| l.max(delay_us)));
        }
        match after {
            Some(next) => rest = next,
            None => return longest,
        }
    }
}

/// Retry-After (RFC 9110 §10.2.3): delay-seconds (`1*DIGIT`) or an HTTP-date. Returns the delay
/// in µs from `now_unix_us` (0 when the date is in the past). `None` for garbage, negative
/// numbers, fractions, empty. Huge delay-seconds (more digits than fit) saturate to `u64::MAX` µs
/// rather than failing: the caller compares against its cap and gives up.
///
/// Surrounding SP/HTAB is ignored (`" 12 "` is 12 s); leading zeros are allowed.
#[must_use]
pub fn parse_retry_after(value: &str, now_unix_us: u64) -> Option<u64> {
    if let Some(secs) = digits_saturating(trim_ows(value)) {
        return Some(secs_to_us(secs));
    }
    let at = parse_http_date(value, now_unix_us)?;
    Some(secs_to_us(at).saturating_sub(now_unix_us))
}

/// The IETF `RateLimit` header (draft-ietf-httpapi-ratelimit-headers). Returns the delay in µs;
/// `None` for garbage.
///
/// Three shapes are understood:
/// - the current Structured Field list (RFC 9651), `"policy";r=0;t=30`, one item per quota
///   policy, `r` the remaining quota and `t` the seconds until it resets. If any item has `r=0`
///   the result is the largest `t` among those items: every exhausted quota has to reset before
///   a request can pass. Otherwise none is exhausted, and the result is the `t` of the first item
///   that has one, the conservative reading (wait for that window) that leaves the decision to the
///   caller's cap. Items whose `r` or `t` is not a non-negative integer are skipped.
/// - the older dictionary form `limit=10, remaining=0, reset=5`: the `reset` member.
/// - a bare `5`, the earlier drafts' separate `RateLimit-Reset` field (delta seconds).
///
/// A syntax error anywhere fails the whole value, as RFC 9651 §4.2 asks. The parser is more
/// lenient than RFC 9651 only about whitespace around `;` and `=`, and about integer length
/// (huge values saturate like `Retry-After`'s). Inner lists are not accepted. Several `RateLimit`
/// field lines must be joined with `", "` by the caller first (RFC 9110 §5.3).
#[must_use]
pub fn parse_ratelimit(value: &str) -> Option<u64> {
    let v = trim_ows(value);
    if let Some(secs) = digits_saturating(v) {
        return Some(secs_to_us(secs));
    }
    sf_ratelimit(Cursor::new(v)).map(secs_to_us)
}

/// `X-RateLimit-Reset` as Unix epoch seconds (GitHub style). Returns the delay in µs from
/// `now_unix_us` (0 if past); `None` for garbage (empty, signs, exponents, words).
///
/// Values below 10^9 (before September 2001, so clearly not a reset time some server means) are
/// delta seconds, as several APIs send them, and are returned as they are. A decimal fraction
/// (Discord sends `1470173023.123`) is accepted and kept to the microsecond.
#[must_use]
pub fn parse_x_ratelimit_reset(value: &str, now_unix_us: u64) -> Option<u64> {
    let mut c = Cursor::new(trim_ows(value));
    let secs = digits_saturating(c.take_while(|b| b.is_ascii_digit()))?;
    let frac_us = if c.eat(b".").is_some() {
        fraction_us(c.take_while(|b| b.is_ascii_digit()))?
    } else {
        0
    };
    c.end()?;
    let us = secs_to_us(secs).saturating_add(frac_us);
    if secs < X_RESET_EPOCH_CUTOFF_SECS {
        Some(us)
    } else {
        Some(us.saturating_sub(now_unix_us))
    }
}

/// Parses an HTTP-date in any of the three forms of RFC 9110 §5.6.7 (IMF-fixdate
/// `Sun, 06 Nov 1994 08:49:37 GMT`, obsolete RFC 850 `Sunday, 06-Nov-94 08:49:37 GMT`, asctime
/// `Sun Nov  6 08:49:37 1994`) into Unix seconds. `None` on anything malformed: an unknown day
/// name, a day out of range for the month (leap years included), hour > 23, minute > 59,
/// second > 60, a zone other than `GMT`, wrong case, trailing junk, a date before 1970.
///
/// A valid day name that does not match the date is accepted; second 60 is read as 59; RFC 850's
/// two-digit year is resolved against `now_unix_us` by the rule of RFC 9110 §5.6.7 (see the module
/// docs for all of these). Surrounding SP/HTAB is ignored.
#[must_use]
pub fn parse_http_date(value: &str, now_unix_us: u64) -> Option<u64> {
    let c = Cursor::new(trim_ows(value));
    imf_fixdate(c)
        .or_else(|| rfc850_date(c, now_unix_us))
        .or_else(|| asctime_date(c))?
        .to_unix()
}

/// The `delay-seconds` to send in a `Retry-After` that asks a client to wait at least `delay_us`:
/// whole seconds rounded up, so a client that obeys never comes back early (RFC 9110 §10.2.3 has
/// no fractions). The inverse of [`parse_retry_after`] on its `delay-seconds` form.
#[must_use]
pub const fn retry_after_seconds(delay_us: u64) -> u64 {
    delay_us.div_ceil(US_PER_SEC)
}

/// What a gRPC server's `grpc-retry-pushback-ms` asks for (gRPC proposal A6, "Pushback").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrpcPushback {
    /// Retry no sooner than this many µs from now (the value in ms, × 1000).
    RetryAfterUs(u64),
    /// Do not retry this call at all.
    DoNotRetry,
}

/// `grpc-retry-pushback-ms` (gRPC A6): an ASCII signed 32-bit integer of milliseconds. A
/// non-negative value is a delay; a negative one, or anything that is not such an integer
/// (empty, a fraction, a unit, a value beyond `i32`), is the server asking not to retry at all —
/// A6 reads malformed pushback as "do not retry", unlike `Retry-After`, whose garbage is
/// ignored. Surrounding SP/HTAB is ignored; leading zeros are accepted (A6 asks servers not to
/// send them, and a strict reading would turn a sloppy delay into a refusal).
#[must_use]
pub fn parse_grpc_pushback(value: &str) -> GrpcPushback {
    let bytes = trim_ows(value);
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    match digits_saturating(digits) {
        Some(ms) if ms <= i32::MAX as u64 && !(negative && ms > 0) => {
            GrpcPushback::RetryAfterUs(ms * 1000)
        }
        _ => GrpcPushback::DoNotRetry,
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers shared by every parser.

/// Whole seconds to µs, saturating.
fn secs_to_us(secs: u64) -> u64 {
    secs.saturating_mul(US_PER_SEC)
}

/// Strips optional whitespace, `OWS = *( SP / HTAB )` (RFC 9110 §5.6.3), from both ends.
fn trim_ows(s: &str) -> &[u8] {
    s.trim_matches(|ch| ch == ' ' || ch == '\t').as_bytes()
}

/// `1*DIGIT` as a number, saturating at `u64::MAX`; `None` if empty or not all digits.
fn digits_saturating(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit()
            .then(|| acc.saturating_mul(10).saturating_add(u64::from(b - b'0')))
    })
}

/// The digits after a decimal point as µs, truncating past the sixth; `None` if empty.
fn fraction_us(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    let mut us = 0u64;
    let mut scale = US_PER_SEC;
    for &b in digits.iter().take(6) {
        if !b.is_ascii_digit() {
            return None;
        }
        scale /= 10;
        us += u64::from(b - b'0') * scale; // at most 999_999: cannot overflow
    }
    Some(us)
}

/// A read position over borrowed bytes. Every step goes through `get`/`split_*` so no input can
/// index out of bounds.
#[derive(Clone, Copy)]
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    /// Consumes `lit` exactly (case-sensitively) or fails without moving.
    fn eat(&mut self, lit: &[u8]) -> Option<()> {
        self.rest = self.rest.strip_prefix(lit)?;
        Some(())
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(head)
    }

    fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> &'a [u8] {
        let n = self
            .rest
            .iter()
            .position(|&b| !keep(b))
            .unwrap_or(self.rest.len());
        let (head, rest) = self.rest.split_at_checked(n).unwrap_or((self.rest, &[]));
        self.rest = rest;
        head
    }

    /// Exactly `n` ASCII digits (`n` ≤ 4 here, so no overflow is possible).
    fn digits(&mut self, n: usize) -> Option<u32> {
        self.take(n)?.iter().try_fold(0u32, |acc, &b| {
            if !b.is_ascii_digit() {
                return None;
            }
            acc.checked_mul(10)?.checked_add(u32::from(b - b'0'))
        })
    }

    fn skip_ows(&mut self) {
        self.take_while(|b| b == b' ' || b == b'\t');
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Succeeds only when nothing is left: no trailing junk.
    fn end(&self) -> Option<()> {
        self.is_empty().then_some(())
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP-date, RFC 9110 §5.6.7.

const MONTHS: [&[u8]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];
/// `day-name` of IMF-fixdate and asctime.
const DAY_NAMES: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
/// `day-name-l` of the obsolete RFC 850 form.
const DAY_NAMES_LONG: [&[u8]; 7] = [
    b"Monday",
    b"Tuesday",
    b"Wednesday",
    b"Thursday",
    b"Friday",
    b"Saturday",
    b"Sunday",
];

/// A broken-down UTC time as read from the text, not yet validated.
struct CivilTime {
    year: u64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl CivilTime {
    /// Validates the fields and converts to Unix seconds.
    fn to_unix(&self) -> Option<u64> {
        let valid = self.year >= 1970
            && (1..=12).contains(&self.month)
            && self.day >= 1
            && self.day <= days_in_month(self.year, self.month)
            && self.hour <= 23
            && self.minute <= 59
            && self.second <= 60;
        if !valid {
            return None;
        }
        // RFC 9110 §5.6.7 allows second 60 for a leap second; Unix time has none. Reading it as
        // 59 keeps the instant inside the minute the server named.
        let second = self.second.min(59);
        let time_of_day = u64::from(self.hour * 3600 + self.minute * 60 + second);
        days_from_civil(self.year, self.month, self.day)?
            .checked_mul(SECS_PER_DAY)?
            .checked_add(time_of_day)
    }
}

/// `IMF-fixdate = day-name "," SP date1 SP time-of-day SP GMT`, `date1 = day SP month SP year`.
fn imf_fixdate(mut c: Cursor<'_>) -> Option<CivilTime> {
    day_name(&mut c, &DAY_NAMES, 3)?;
    c.eat(b", ")?;
    let day = c.digits(2)?;
    c.eat(b" ")?;
    let month = month(&mut c)?;
    c.eat(b" ")?;
    let year = u64::from(c.digits(4)?);
    c.eat(b" ")?;
    let (hour, minute, second) = time_of_day(&mut c)?;
    c.eat(b" GMT")?;
    c.end()?;
    Some(CivilTime {
        year,
        month,
        day,
        hour,
        minute,
        second,
    })
}

/// `rfc850-date = day-name-l "," SP date2 SP time-of-day SP GMT`,
/// `date2 = day "-" month "-" 2DIGIT`.
fn rfc850_date(mut c: Cursor<'_>, now_unix_us: u64) -> Option<CivilTime> {
    let name = c.take_while(|b| b.is_ascii_alphabetic());
    DAY_NAMES_LONG.contains(&name).then_some(())?;
    c.eat(b", ")?;
    let day = c.digits(2)?;
    c.eat(b"-")?;
    let month = month(&mut c)?;
    c.eat(b"-")?;
    let year = two_digit_year(c.digits(2)?, now_unix_us);
    c.eat(b" ")?;
    let (hour, minute, second) = time_of_day(&mut c)?;
    c.eat(b" GMT")?;
    c.end()?;
    Some(CivilTime {
        year,
        month,
        day,
        hour,
        minute,
        second,
    })
}

/// `asctime-date = day-name SP date3 SP time-of-day SP year`,
/// `date3 = month SP ( 2DIGIT / ( SP DIGIT ) )`.
fn asctime_date(mut c: Cursor<'_>) -> Option<CivilTime> {
    day_name(&mut c, &DAY_NAMES, 3)?;
    c.eat(b" ")?;
    let month = month(&mut c)?;
    c.eat(b" ")?;
    let day = if c.eat(b" ").is_some() {
        c.digits(1)?
    } else {
        c.digits(2)?
    };
    c.eat(b" ")?;
    let (hour, minute, second) = time_of_day(&mut c)?;
    c.eat(b" ")?;
    let year = u64::from(c.digits(4)?);
    c.end()?;
    Some(CivilTime {
        year,
        month,
        day,
        hour,
        minute,
        second,
    })
}

/// A known day name of exactly `len` bytes. Whether it matches the date is not checked.
fn day_name(c: &mut Cursor<'_>, names: &[&[u8]], len: usize) -> Option<()> {
    let name = c.take(len)?;
    names.contains(&name).then_some(())
}

/// `month`, case-sensitive, as 1..=12.
fn month(c: &mut Cursor<'_>) -> Option<u32> {
    let name = c.take(3)?;
    (1u32..)
        .zip(MONTHS)
        .find(|&(_, known)| known == name)
        .map(|(number, _)| number)
}

/// `time-of-day = hour ":" minute ":" second`, each `2DIGIT`; ranges are checked by `to_unix`.
fn time_of_day(c: &mut Cursor<'_>) -> Option<(u32, u32, u32)> {
    let hour = c.digits(2)?;
    c.eat(b":")?;
    let minute = c.digits(2)?;
    c.eat(b":")?;
    let second = c.digits(2)?;
    Some((hour, minute, second))
}

/// RFC 9110 §5.6.7 two-digit year rule: a year that appears to be more than 50 years in the
/// future is the most recent past year with the same last two digits. Equivalently: the latest
/// year ending in `yy` that is at most 50 years after the current one. Judged by whole years.
fn two_digit_year(yy: u32, now_unix_us: u64) -> u64 {
    let (current, _, _) = civil_from_days(now_unix_us / US_PER_DAY);
    let latest = current + 50; // current ≤ ~585_000, so no overflow
    let back = (latest % 100 + 100 - u64::from(yy % 100)) % 100;
    latest - back // latest ≥ 2020 > back
}

fn is_leap_year(year: u64) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u64, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (`year` ≥ 1970, `month` 1..=12, `day`
/// valid), after Howard Hinnant's `days_from_civil`: count from 0000-03-01 so that the leap day
/// ends each year, split into 400-year eras of 146 097 days, and find the day within the era from
/// the year of era and a March-based day of year (153 days every 5 months).
fn days_from_civil(year: u64, month: u32, day: u32) -> Option<u64> {
    let year = if month <= 2 {
        year.checked_sub(1)?
    } else {
        year
    };
    let era = year / 400;
    let year_of_era = year % 400; // [0, 399]
    let march_month = u64::from(if month > 2 { month - 3 } else { month + 9 }); // [0, 11]
    let day_of_year = (153 * march_month + 2) / 5 + u64::from(day) - 1; // [0, 365]
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719 468 days lie between 0000-03-01 and 1970-01-01.
    era.checked_mul(146_097)?
        .checked_add(day_of_era)?
        .checked_sub(719_468)
}

/// Inverse of [`days_from_civil`] (Hinnant's `civil_from_days`) for days since 1970-01-01:
/// `(year, month, day)`. `days` ≤ `u64::MAX / US_PER_DAY` (about 2.1e8) in every caller, far from
/// any overflow.
fn civil_from_days(days: u64) -> (u64, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097; // [0, 146_096]
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_month = (5 * day_of_year + 2) / 153; // [0, 11]
    let day = (day_of_year - (153 * march_month + 2) / 5 + 1) as u32; // [1, 31]
    let month = (if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    }) as u32;
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

// ---------------------------------------------------------------------------------------------
// RateLimit: a small Structured Field reader (RFC 9651), enough for lists of items with
// parameters and for dictionaries of integers, without allocating.

/// A bare item (RFC 9651 §3.3.1–3.3.8), reduced to what the `RateLimit` fields need.
#[derive(Clone, Copy)]
enum Bare<'a> {
    /// A non-negative integer (saturated if it had too many digits).
    Int(u64),
    /// A token; its text, for dictionary keys written as `key=value`.
    Token(&'a [u8]),
    /// Anything else: string, negative integer, decimal, byte sequence, boolean, date.
    Other,
}

/// What the members seen so far say about the delay.
#[derive(Default)]
struct RateLimitSummary {
    /// Largest `t` among list items with `r=0`.
    exhausted_t: Option<u64>,
    /// `t` of the first list item that has a usable one.
    first_t: Option<u64>,
    /// `reset` member of the older dictionary form.
    reset: Option<u64>,
}

/// Reads `value` as a list (or dictionary) and picks the delay in seconds, per
/// [`parse_ratelimit`]. `None` on any syntax error or when nothing gives a delay.
fn sf_ratelimit(mut c: Cursor<'_>) -> Option<u64> {
    let mut summary = RateLimitSummary::default();
    loop {
        sf_member(&mut c, &mut summary)?;
        c.skip_ows();
        if c.is_empty() {
            break;
        }
        c.eat(b",")?;
        c.skip_ows();
        if c.is_empty() {
            return None; // trailing comma, RFC 9651 §4.2.1
        }
    }
    summary.exhausted_t.or(summary.first_t).or(summary.reset)
}

/// One list member (`item parameters`) or dictionary member (`key "=" item parameters`).
fn sf_member(c: &mut Cursor<'_>, summary: &mut RateLimitSummary) -> Option<()> {
    let mut reset = None;
    let mut is_list_item = true;
    if let Bare::Token(name) = sf_bare_item(c)? {
        let mut look = *c;
        look.skip_ows();
        if look.eat(b"=").is_some() {
            look.skip_ows();
            *c = look;
            is_list_item = false;
            let value = sf_bare_item(c)?;
            if name == b"reset" {
                reset = Some(value);
            }
        }
    }
    let (mut r, mut t) = (None, None);
    sf_parameters(c, |key, value| match key {
        b"r" => r = Some(value),
        b"t" => t = Some(value),
        _ => {}
    })?;

    if let Some(Bare::Int(secs)) = reset {
        summary.reset = Some(secs);
    }
    if !is_list_item {
        return Some(());
    }
    let Some(Bare::Int(t)) = t else {
        return Some(()); // no usable `t`: this item says nothing about time
    };
    match r {
        Some(Bare::Int(0)) => {
            summary.exhausted_t = Some(summary.exhausted_t.map_or(t, |seen| seen.max(t)));
        }
        Some(Bare::Int(_)) | None => {
            summary.first_t.get_or_insert(t);
        }
        Some(_) => {} // malformed `r`: skip the item
    }
    Some(())
}

/// `parameters = *( ";" *SP key [ "=" bare-item ] )` (RFC 9651 §3.1.2); a key without a value is
/// boolean true. Calls `each` for every parameter, later duplicates after earlier ones.
fn sf_parameters<'a>(c: &mut Cursor<'a>, mut each: impl FnMut(&'a [u8], Bare<'a>)) -> Option<()> {
    loop {
        let mut look = *c;
        look.skip_ows();
        if look.eat(b";").is_none() {
            return Some(());
        }
        look.skip_ows();
        *c = look;
        let key = sf_key(c)?;
        let mut look = *c;
        look.skip_ows();
        let value = if look.eat(b"=").is_some() {
            look.skip_ows();
            *c = look;
            sf_bare_item(c)?
        } else {
            Bare::Other
        };
        each(key, value);
    }
}

/// `key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )` (RFC 9651 §3.1.2).
fn sf_key<'a>(c: &mut Cursor<'a>) -> Option<&'a [u8]> {
    let first = c.peek()?;
    if !(first.is_ascii_lowercase() || first == b'*') {
        return None;
    }
    Some(c.take_while(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.' | b'*')
    }))
}

/// `bare-item` (RFC 9651 §3.3): integer, decimal, string, token, byte sequence, boolean, date or
/// display string.
fn sf_bare_item<'a>(c: &mut Cursor<'a>) -> Option<Bare<'a>> {
    match c.peek()? {
        b'-' | b'0'..=b'9' => sf_number(c),
        b'"' => sf_string(c).map(|()| Bare::Other),
        b'*' | b'A'..=b'Z' | b'a'..=b'z' => {
            // token = ( ALPHA / "*" ) *( tchar / ":" / "/" ), RFC 9651 §3.3.4
            Some(Bare::Token(
                c.take_while(|b| is_tchar(b) || b == b':' || b == b'/'),
            ))
        }
        b':' => {
            // byte sequence = ":" *(base64) ":", RFC 9651 §3.3.5
            c.bump();
            c.take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
            c.eat(b":").map(|()| Bare::Other)
        }
        b'?' => {
            // boolean = "?" ( "0" / "1" ), RFC 9651 §3.3.6
            c.bump();
            matches!(c.bump()?, b'0' | b'1').then_some(Bare::Other)
        }
        b'@' => {
            // date = "@" sf-integer, RFC 9651 §3.3.7
            c.bump();
            sf_number(c).map(|_| Bare::Other)
        }
        b'%' => {
            // display string = "%" DQUOTE *( unescaped / "\" / pct-encoded ) DQUOTE, §3.3.8;
            // only its extent matters here.
            c.bump();
            c.eat(b"\"")?;
            c.take_while(|b| b != b'"' && (0x20..=0x7e).contains(&b));
            c.eat(b"\"").map(|()| Bare::Other)
        }
        _ => None,
    }
}

/// `sf-integer` / `sf-decimal` (RFC 9651 §3.3.1–3.3.2). Only a non-negative integer is kept;
/// longer than the RFC's 15 digits saturates instead of failing.
fn sf_number<'a>(c: &mut Cursor<'a>) -> Option<Bare<'a>> {
    let negative = c.eat(b"-").is_some();
    let value = digits_saturating(c.take_while(|b| b.is_ascii_digit()))?;
    if c.eat(b".").is_some() {
        digits_saturating(c.take_while(|b| b.is_ascii_digit()))?;
        return Some(Bare::Other);
    }
    Some(if negative && value != 0 {
        Bare::Other
    } else {
        Bare::Int(value)
    })
}

/// `sf-string = DQUOTE *( unescaped / "%" / bs-escaped ) DQUOTE` (RFC 9651 §3.3.3): printable
/// ASCII, with only `\"` and `\\` as escapes.
fn sf_string(c: &mut Cursor<'_>) -> Option<()> {
    c.eat(b"\"")?;
    loop {
        match c.bump()? {
            b'"' => return Some(()),
            b'\\' => {
                if !matches!(c.bump()?, b'"' | b'\\') {
                    return None;
                }
            }
            0x20..=0x7e => {}
            _ => return None,
        }
    }
}

/// `tchar` of RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn grpc_pushback_is_a_delay_or_a_refusal() {
        use super::GrpcPushback::{DoNotRetry, RetryAfterUs};
        assert_eq!(parse_grpc_pushback("250"), RetryAfterUs(250_000));
        assert_eq!(parse_grpc_pushback(" 0\t"), RetryAfterUs(0));
        assert_eq!(parse_grpc_pushback("007"), RetryAfterUs(7_000));
        assert_eq!(
            parse_grpc_pushback("2147483647"),
            RetryAfterUs(2_147_483_647_000)
        );
        assert_eq!(parse_grpc_pushback("-0"), RetryAfterUs(0));
        for refusal in [
            "-1",
            "-2147483648",
            "2147483648",
            "99999999999999999999999",
            "",
            " ",
            "1.5",
            "1s",
            "+1",
            "--1",
            "0x10",
            "1 2",
            "\u{0661}",
        ] {
            assert_eq!(parse_grpc_pushback(refusal), DoNotRetry, "{refusal:?}");
        }
    }

    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::format;
    use std::string::String;

    /// 2026-11-28T00:00:00Z, the fixed "now" of these tests.
    const NOW_SECS: u64 = 1_795_824_000;
    const NOW: u64 = NOW_SECS * US_PER_SEC;
    /// RFC 9110 §5.6.7's example instant, 1994-11-06T08:49:37Z.
    const RFC_EXAMPLE: u64 = 784_111_777;

    const WEEKDAYS_FROM_THURSDAY: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTH_NAMES: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];

    /// Test-only formatter: Unix seconds to IMF-fixdate (1970-01-01 was a Thursday).
    fn imf_fixdate_of(secs: u64) -> String {
        let days = secs / SECS_PER_DAY;
        let (year, month, day) = civil_from_days(days);
        let rem = secs % SECS_PER_DAY;
        format!(
            "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
            WEEKDAYS_FROM_THURSDAY[(days % 7) as usize],
            day,
            MONTH_NAMES[month as usize - 1],
            year,
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )
    }

    /// Test-only formatter: Unix seconds to asctime, day padded with a space.
    fn asctime_of(secs: u64) -> String {
        let days = secs / SECS_PER_DAY;
        let (year, month, day) = civil_from_days(days);
        let rem = secs % SECS_PER_DAY;
        format!(
            "{} {} {:>2} {:02}:{:02}:{:02} {:04}",
            WEEKDAYS_FROM_THURSDAY[(days % 7) as usize],
            MONTH_NAMES[month as usize - 1],
            day,
            rem / 3600,
            rem / 60 % 60,
            rem % 60,
            year
        )
    }

    /// Test-only formatter: Unix seconds to RFC 850 with a two-digit year.
    fn rfc850_of(secs: u64) -> String {
        const LONG: [&str; 7] = [
            "Thursday",
            "Friday",
            "Saturday",
            "Sunday",
            "Monday",
            "Tuesday",
            "Wednesday",
        ];
        let days = secs / SECS_PER_DAY;
        let (year, month, day) = civil_from_days(days);
        let rem = secs % SECS_PER_DAY;
        format!(
            "{}, {:02}-{}-{:02} {:02}:{:02}:{:02} GMT",
            LONG[(days % 7) as usize],
            day,
            MONTH_NAMES[month as usize - 1],
            year % 100,
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )
    }

    #[test]
    fn rfc9110_examples_all_three_forms() {
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse_http_date(form, NOW), Some(RFC_EXAMPLE), "{form}");
        }
        assert_eq!(imf_fixdate_of(RFC_EXAMPLE), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(rfc850_of(RFC_EXAMPLE), "Sunday, 06-Nov-94 08:49:37 GMT");
        assert_eq!(asctime_of(RFC_EXAMPLE), "Sun Nov  6 08:49:37 1994");
    }

    #[test]
    fn fixed_now_is_what_the_tests_claim() {
        assert_eq!(civil_from_days(NOW_SECS / SECS_PER_DAY), (2026, 11, 28));
        assert_eq!(days_from_civil(2026, 11, 28), Some(NOW_SECS / SECS_PER_DAY));
        assert_eq!(days_from_civil(1970, 1, 1), Some(0));
    }

    #[test]
    fn optional_whitespace_around_the_date_is_tolerated() {
        assert_eq!(
            parse_http_date(" \tSun, 06 Nov 1994 08:49:37 GMT \t", NOW),
            Some(RFC_EXAMPLE)
        );
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT\r\n", NOW),
            None
        );
        assert_eq!(parse_http_date("Sun,  06 Nov 1994 08:49:37 GMT", NOW), None);
    }

    #[test]
    fn two_digit_year_fifty_year_rule() {
        // now = 2026: "76" is 2076, exactly 50 years ahead, so it stays in the future.
        assert_eq!(
            parse_http_date("Thursday, 31-Dec-76 23:59:59 GMT", NOW),
            Some(3_376_684_799)
        );
        // "77" as 2077 would be 51 years ahead: it is 1977.
        assert_eq!(
            parse_http_date("Saturday, 01-Jan-77 00:00:00 GMT", NOW),
            Some(220_924_800)
        );
        assert_eq!(
            parse_http_date("Saturday, 01-Jan-00 00:00:00 GMT", NOW),
            Some(946_684_800)
        );
        assert_eq!(two_digit_year(26, NOW), 2026);
        assert_eq!(two_digit_year(94, NOW), 1994);
        assert_eq!(two_digit_year(99, NOW), 1999);
        // now = 2080: "30" is 2130 (50 ahead), "31" is 2031.
        let now_2080 = 3_484_425_600 * US_PER_SEC;
        assert_eq!(
            parse_http_date("Sunday, 01-Jan-30 00:00:00 GMT", now_2080),
            Some(5_049_129_600)
        );
        assert_eq!(
            parse_http_date("Wednesday, 01-Jan-31 00:00:00 GMT", now_2080),
            Some(1_924_992_000)
        );
        // now = 1970: "50" is 1950, before the epoch.
        assert_eq!(parse_http_date("Sunday, 01-Jan-50 00:00:00 GMT", 0), None);
        assert_eq!(
            parse_http_date("Thursday, 01-Jan-70 00:00:00 GMT", 0),
            Some(0)
        );
        // A clock at the end of time does not overflow.
        assert_eq!(
            parse_http_date("Thursday, 01-Jan-70 00:00:00 GMT", u64::MAX).map(|_| ()),
            Some(())
        );
    }

    #[test]
    fn leap_days_and_month_lengths() {
        assert_eq!(
            parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT", NOW),
            Some(1_709_164_800)
        );
        assert_eq!(parse_http_date("Wed, 29 Feb 2023 00:00:00 GMT", NOW), None);
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2000 12:00:00 GMT", NOW),
            Some(951_825_600)
        );
        assert_eq!(parse_http_date("Mon, 29 Feb 2100 00:00:00 GMT", NOW), None);
        assert_eq!(parse_http_date("Thu, 31 Apr 2025 00:00:00 GMT", NOW), None);
        assert_eq!(parse_http_date("Thu, 00 Apr 2025 00:00:00 GMT", NOW), None);
        assert!(parse_http_date("Wed, 31 Dec 2025 00:00:00 GMT", NOW).is_some());
        assert_eq!(
            parse_http_date("Fri, 31 Dec 9999 23:59:59 GMT", NOW),
            Some(253_402_300_799)
        );
    }

    #[test]
    fn time_of_day_ranges_and_leap_second() {
        let at = |t: &str| parse_http_date(&format!("Sun, 06 Nov 1994 {t} GMT"), NOW);
        assert_eq!(at("23:59:59"), Some(784_166_399));
        assert_eq!(
            at("23:59:60"),
            Some(784_166_399),
            "leap second is read as :59"
        );
        assert_eq!(at("23:59:61"), None);
        assert_eq!(at("24:00:00"), None);
        assert_eq!(at("23:60:00"), None);
        assert_eq!(at("8:49:37"), None);
        assert_eq!(at("08:49"), None);
    }

    #[test]
    fn epoch_boundary() {
        assert_eq!(
            parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT", NOW),
            Some(0)
        );
        assert_eq!(parse_http_date("Wed, 31 Dec 1969 23:59:59 GMT", NOW), None);
        assert_eq!(parse_http_date("Wed Dec 31 23:59:59 1969", NOW), None);
    }

    #[test]
    fn day_names_must_be_known_but_may_mismatch() {
        // 1994-11-06 was a Sunday; a wrong but valid name is accepted.
        assert_eq!(
            parse_http_date("Mon, 06 Nov 1994 08:49:37 GMT", NOW),
            Some(RFC_EXAMPLE)
        );
        assert_eq!(
            parse_http_date("Friday, 06-Nov-94 08:49:37 GMT", NOW),
            Some(RFC_EXAMPLE)
        );
        assert_eq!(
            parse_http_date("Tue Nov  6 08:49:37 1994", NOW),
            Some(RFC_EXAMPLE)
        );
        for bad in [
            "Sux, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06 Nov 1994 08:49:37 GMT", // long name in IMF-fixdate
            "Sun, 06-Nov-94 08:49:37 GMT",      // short name in RFC 850
            "Sundae, 06-Nov-94 08:49:37 GMT",
            "06 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_http_date(bad, NOW), None, "{bad}");
        }
    }

    #[test]
    fn http_date_garbage_table() {
        for bad in [
            "",
            " ",
            "abc",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 nov 1994 08:49:37 GMT", // lowercase month: HTTP-date is case-sensitive
            "sun, 06 Nov 1994 08:49:37 GMT", // lowercase day name
            "Sun, 06 NOV 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 gmt",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 08:49:37",       // missing GMT
            "Sun, 06 Nov 1994 08:49:37 GMT x", // trailing junk
            "Sun, 06 Nov 1994 08:49:37 GMTx",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun, 06 Nov 19944 08:49:37 GMT",
            "Sun, 06 Xyz 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 +0000",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37",
            "Sun Nov 6 08:49:37 1994", // asctime needs two spaces before a 1-digit day
            "Sun Nov  6 08:49:37 1994 GMT",
            "Sun Nov  6 08:49:37 94",
            "Sun Nov 31 08:49:37 1994",
            "1994-11-06T08:49:37Z",
            "784111777",
            "Sun, 06 Nov 1994 08:49:37 GMT\u{e9}",
            "Sun, \u{ff10}6 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_http_date(bad, NOW), None, "{bad:?}");
        }
        assert_eq!(
            parse_http_date("Sun Nov 06 08:49:37 1994", NOW),
            Some(RFC_EXAMPLE)
        );
    }

    #[test]
    fn joined_lines_read_their_longest_member() {
        let s = |secs: u64| Some(secs * US_PER_SEC);
        let ra = ServerDelayHeader::RetryAfter;
        let x = ServerDelayHeader::XRateLimitReset;
        let later = "Sat, 28 Nov 2026 00:00:10 GMT"; // NOW + 10 s
        let rfc850 = "Saturday, 28-Nov-26 00:00:20 GMT"; // NOW + 20 s
        let cases: [(ServerDelayHeader, &str, Option<u64>); 15] = [
            (ra, "0, 1", s(1)),
            (ra, "1, 0", s(1)),
            (ra, " 3 ,\t2 ", s(3)),
            (ra, "abc, 2", s(2)),
            (ra, "2, -5, 1.5", s(2)),
            (ra, later, s(10)),
            (ra, "Sat, 28 Nov 2026 00:00:10 GMT, 5", s(10)),
            (ra, "5, Sat, 28 Nov 2026 00:00:10 GMT", s(10)),
            (ra, "Sun, 06 Nov 1994 08:49:37 GMT, 5", s(5)), // gone by: 0
            (
                ra,
                "Sat, 28 Nov 2026 00:00:10 GMT, Saturday, 28-Nov-26 00:00:20 GMT",
                s(20),
            ),
            (ra, "Sat, 28 Nov 2026 00:00:10 GMT, Sat", s(10)),
            (ra, ",, ,", None),
            (ra, "Sun,Sun,Sun, GMT", None),
            (x, "5, 10", s(10)),
            (ServerDelayHeader::RateLimit, "abc, 2", None),
        ];
        for (header, value, want) in cases {
            assert_eq!(
                parse_server_delay_lines(header, value, NOW),
                want,
                "{value:?}"
            );
        }
        assert_eq!(parse_server_delay_lines(ra, rfc850, NOW), s(20));
        // One value reads as the single-value parser reads it.
        for value in [
            "12",
            " 7 ",
            "",
            "abc",
            "-5",
            later,
            rfc850,
            "Sat Nov 28 00:00:10 2026",
        ] {
            assert_eq!(
                parse_server_delay_lines(ra, value, NOW),
                parse_retry_after(value, NOW),
                "{value:?}"
            );
        }
    }

    #[test]
    fn retry_after_table() {
        let s = |secs: u64| Some(secs * US_PER_SEC);
        let cases: [(&str, Option<u64>); 20] = [
            ("0", s(0)),
            ("12", s(12)),
            (" 12 ", s(12)),
            ("\t12", s(12)),
            ("007", s(7)),
            ("120", s(120)),
            ("", None),
            ("   ", None),
            ("abc", None),
            ("-5", None),
            ("+5", None),
            ("1.5", None),
            ("1e3", None),
            ("12abc", None),
            ("12 13", None),
            ("1_000", None),
            ("0x10", None),
            ("\u{0661}\u{0662}", None), // Arabic-Indic digits are not DIGIT
            ("99999999999999999999999", Some(u64::MAX)),
            ("18446744073710", Some(u64::MAX)), // fits in seconds, not in µs
        ];
        for (value, want) in cases {
            assert_eq!(parse_retry_after(value, NOW), want, "{value:?}");
        }
        assert_eq!(
            parse_retry_after("18446744073709", 0),
            Some(18_446_744_073_709 * US_PER_SEC)
        );
        assert_eq!(
            parse_retry_after("18446744073", 0),
            Some(18_446_744_073 * US_PER_SEC)
        );
    }

    #[test]
    fn retry_after_seconds_rounds_up_and_round_trips() {
        assert_eq!(retry_after_seconds(0), 0);
        assert_eq!(retry_after_seconds(1), 1);
        assert_eq!(retry_after_seconds(999_999), 1);
        assert_eq!(retry_after_seconds(1_000_000), 1);
        assert_eq!(retry_after_seconds(1_000_001), 2);
        assert_eq!(retry_after_seconds(u64::MAX), u64::MAX / US_PER_SEC + 1);
        for secs in [0u64, 1, 7, 3_600, 1 << 40] {
            let header = format!("{}", retry_after_seconds(secs * US_PER_SEC));
            assert_eq!(parse_retry_after(&header, NOW), Some(secs * US_PER_SEC));
        }
    }

    #[test]
    fn retry_after_dates() {
        // Past date: no wait.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", NOW),
            Some(0)
        );
        // Future date, with a `now` that has a sub-second part.
        let now = NOW + 250_000;
        assert_eq!(
            parse_retry_after("Sat, 28 Nov 2026 00:01:00 GMT", now),
            Some(60 * US_PER_SEC - 250_000)
        );
        assert_eq!(
            parse_retry_after(" Sat Nov 28 00:00:30 2026 ", NOW),
            Some(30 * US_PER_SEC)
        );
        assert_eq!(
            parse_retry_after("Saturday, 28-Nov-26 00:00:05 GMT", NOW),
            Some(5 * US_PER_SEC)
        );
        assert_eq!(
            parse_retry_after("Sat, 28 Nov 2026 00:00:00 GMT", NOW),
            Some(0)
        );
        assert_eq!(
            parse_retry_after("Sun, 32 Nov 1994 08:49:37 GMT", NOW),
            None
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", 0),
            Some(253_402_300_799 * US_PER_SEC)
        );
    }

    #[test]
    fn ratelimit_current_list_form() {
        let s = |secs: u64| Some(secs * US_PER_SEC);
        assert_eq!(parse_ratelimit("\"policy\";r=0;t=30"), s(30));
        assert_eq!(parse_ratelimit("default;r=0;t=7"), s(7));
        assert_eq!(parse_ratelimit(" \"p\";r=0;t=3;pk=:YWJjZA==: "), s(3));
        // Several policies: the largest t among the exhausted ones.
        assert_eq!(
            parse_ratelimit("\"a\";r=5;t=10, \"b\";r=0;t=40, \"c\";r=0;t=20"),
            s(40)
        );
        assert_eq!(parse_ratelimit("\"a\";r=0;t=10,\"b\";r=0;t=2"), s(10));
        // None exhausted: the first item's t.
        assert_eq!(parse_ratelimit("\"a\";r=5;t=10, \"b\";r=3;t=4"), s(10));
        assert_eq!(parse_ratelimit("\"a\";r=5, \"b\";t=4"), s(4));
        // Parameter order and unknown parameters do not matter; later duplicates win.
        assert_eq!(
            parse_ratelimit("\"a\";t=9;x=?1;q=0.5;r=0;d=@1700000000"),
            s(9)
        );
        assert_eq!(parse_ratelimit("\"a\";t=1;t=2"), s(2));
        // Commas and escapes inside strings are not separators.
        assert_eq!(parse_ratelimit("\"a,b\\\"c\";r=0;t=9"), s(9));
        assert_eq!(parse_ratelimit("\"a\"; r=0; t=8"), s(8));
        // A malformed r or t skips the item, not the field.
        assert_eq!(parse_ratelimit("\"a\";r=0;t=-1, \"b\";r=0;t=6"), s(6));
        assert_eq!(parse_ratelimit("\"a\";r=-1;t=5, \"b\";r=2;t=6"), s(6));
        assert_eq!(
            parse_ratelimit("\"a\";r=0;t=99999999999999999999999"),
            Some(u64::MAX)
        );
    }

    #[test]
    fn ratelimit_older_forms() {
        let s = |secs: u64| Some(secs * US_PER_SEC);
        assert_eq!(parse_ratelimit("limit=10, remaining=0, reset=5"), s(5));
        assert_eq!(parse_ratelimit("reset=5,limit=10,remaining=3"), s(5));
        assert_eq!(
            parse_ratelimit("limit=100;w=60, remaining=0, reset=17"),
            s(17)
        );
        assert_eq!(parse_ratelimit("5"), s(5));
        assert_eq!(parse_ratelimit(" 0 "), s(0));
    }

    #[test]
    fn ratelimit_garbage_table() {
        for bad in [
            "",
            " ",
            "abc",
            "-5",
            "1.5",
            "\"policy\"",
            "\"policy\";r=0",
            "\"policy\";r=0;t=1.5",
            "\"policy\";r=0;t=-1",
            "\"policy\";r=0;t=abc",
            "\"policy\";r=0;t=30,",
            "\"policy\";r=0;t=30,,\"b\";t=1",
            "\"unterminated;r=0;t=1",
            "\"policy\";R=0;T=30",
            "\"policy\";r=0;t=30 junk",
            "\"bad\\escape\";r=0;t=1",
            "(\"inner\" \"list\");t=1",
            "limit=10, remaining=0",
            "limit=10, remaining=0, reset=-5",
            "limit=10, remaining=0, reset=",
            "Reset=5",
            "reset=5=6",
            "\"p\";t=:YWJj",
            "\"p\";t=?2",
            "\"p\";r=0;t=30\u{e9}",
        ] {
            assert_eq!(parse_ratelimit(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn x_ratelimit_reset_epoch_and_delta() {
        // GitHub style: epoch seconds.
        let in_a_minute = format!("{}", NOW_SECS + 60);
        assert_eq!(
            parse_x_ratelimit_reset(&in_a_minute, NOW),
            Some(60 * US_PER_SEC)
        );
        assert_eq!(parse_x_ratelimit_reset("1700000000", NOW), Some(0)); // past
        assert_eq!(parse_x_ratelimit_reset("1000000000", NOW), Some(0)); // cutoff: epoch
                                                                         // Small values: delta seconds.
        assert_eq!(parse_x_ratelimit_reset("30", NOW), Some(30 * US_PER_SEC));
        assert_eq!(parse_x_ratelimit_reset(" 0 ", NOW), Some(0));
        assert_eq!(
            parse_x_ratelimit_reset("999999999", NOW),
            Some(999_999_999 * US_PER_SEC)
        );
        // Fractions, Discord style, kept to the µs.
        assert_eq!(parse_x_ratelimit_reset("1.5", NOW), Some(1_500_000));
        assert_eq!(parse_x_ratelimit_reset("0.1234567", NOW), Some(123_456));
        let frac = format!("{}.250", NOW_SECS + 2);
        assert_eq!(parse_x_ratelimit_reset(&frac, NOW), Some(2_250_000));
        assert_eq!(
            parse_x_ratelimit_reset("99999999999999999999999", NOW),
            Some(u64::MAX - NOW)
        );
        for bad in [
            "",
            "abc",
            "-1",
            "+1",
            "1e9",
            "1.",
            ".5",
            "1.5.5",
            "12abc",
            "1 2",
            "Sun, 06 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_x_ratelimit_reset(bad, NOW), None, "{bad:?}");
        }
    }

    #[test]
    fn header_names_and_dispatch() {
        use ServerDelayHeader::*;
        assert_eq!(
            ServerDelayHeader::from_name("Retry-After"),
            Some(RetryAfter)
        );
        assert_eq!(
            ServerDelayHeader::from_name("RETRY-AFTER"),
            Some(RetryAfter)
        );
        assert_eq!(ServerDelayHeader::from_name("ratelimit"), Some(RateLimit));
        assert_eq!(
            ServerDelayHeader::from_name("RateLimit-Reset"),
            Some(RateLimit)
        );
        assert_eq!(
            ServerDelayHeader::from_name("X-RateLimit-Reset"),
            Some(XRateLimitReset)
        );
        assert_eq!(
            ServerDelayHeader::from_name("x-rate-limit-reset"),
            Some(XRateLimitReset)
        );
        for other in [
            "",
            "Retry-After ",
            "RateLimit-Policy",
            "X-RateLimit-Remaining",
            "Date",
        ] {
            assert_eq!(ServerDelayHeader::from_name(other), None, "{other:?}");
        }
        assert_eq!(
            parse_server_delay(RetryAfter, "3", NOW),
            Some(3 * US_PER_SEC)
        );
        assert_eq!(
            parse_server_delay(RateLimit, "\"p\";r=0;t=4", NOW),
            Some(4 * US_PER_SEC)
        );
        let epoch = format!("{}", NOW_SECS + 5);
        assert_eq!(
            parse_server_delay(XRateLimitReset, &epoch, NOW),
            Some(5 * US_PER_SEC)
        );
        assert_eq!(parse_server_delay(RetryAfter, "soon", NOW), None);
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_strings(value in any::<String>(), now in any::<u64>()) {
            let _ = parse_retry_after(&value, now);
            let _ = parse_http_date(&value, now);
            let _ = parse_ratelimit(&value);
            let _ = parse_x_ratelimit_reset(&value, now);
            let _ = ServerDelayHeader::from_name(&value);
        }

        #[test]
        fn never_panics_on_header_shaped_strings(
            value in "[A-Za-z0-9 ,:;=\"\\\\.*?@%()+/-]{0,48}",
            now in any::<u64>(),
        ) {
            let _ = parse_retry_after(&value, now);
            let _ = parse_ratelimit(&value);
            let _ = parse_x_ratelimit_reset(&value, now);
        }

        #[test]
        fn imf_fixdate_round_trips(secs in 0u64..=253_402_300_799, now in any::<u64>()) {
            let text = imf_fixdate_of(secs);
            prop_assert_eq!(parse_http_date(&text, now), Some(secs), "{}", text);
        }

        #[test]
        fn asctime_round_trips(secs in 0u64..=253_402_300_799) {
            let text = asctime_of(secs);
            prop_assert_eq!(parse_http_date(&text, NOW), Some(secs), "{}", text);
        }

        #[test]
        fn rfc850_round_trips_within_the_window(
            // 1977-01-01 ..= 2076-12-31, the century the rule picks when now is in 2026.
            secs in 220_924_800u64..=3_376_684_799,
        ) {
            let text = rfc850_of(secs);
            prop_assert_eq!(parse_http_date(&text, NOW), Some(secs), "{}", text);
        }

        #[test]
        fn retry_after_future_date_is_exact_delay(ahead in 0u64..=10_000_000, sub in 0u64..US_PER_SEC) {
            let now = NOW + sub;
            let text = imf_fixdate_of(NOW_SECS + ahead);
            prop_assert_eq!(parse_retry_after(&text, now), Some((ahead * US_PER_SEC).saturating_sub(sub)));
        }

        #[test]
        fn delay_seconds_round_trip(secs in any::<u64>()) {
            let text = format!("{secs}");
            prop_assert_eq!(parse_retry_after(&text, NOW), Some(secs.saturating_mul(US_PER_SEC)));
        }

        #[test]
        fn civil_conversion_is_a_bijection(days in 0u64..=u64::MAX / US_PER_DAY) {
            let (y, m, d) = civil_from_days(days);
            prop_assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
            prop_assert_eq!(days_from_civil(y, m, d), Some(days));
        }
    }
}
