//! HTTP-dates written from Unix seconds, independently of the parser in `ricochet-core`, so a
//! parsed date can be written back and read again.
//!
//! The calendar arithmetic walks years and months one by one: slower than the parser's
//! era-based conversion, but too simple to share a mistake with it.

/// Years 1970..=9999: the range a four-digit HTTP-date year can name.
pub const MAX_UNIX_SECS: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
/// 1970-01-01 was a Thursday.
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

fn is_leap(year: u64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn month_days(year: u64, month: usize) -> u64 {
    match month {
        1 if is_leap(year) => 29,
        1 => 28,
        3 | 5 | 8 | 10 => 30,
        _ => 31,
    }
}

/// The broken-down UTC time of `secs` (at most [`MAX_UNIX_SECS`]): year, month index (0 =
/// January), day, hour, minute, second, weekday name.
fn civil(secs: u64) -> (u64, usize, u64, u64, u64, u64, &'static str) {
    let mut days = secs / 86_400;
    let weekday = WEEKDAYS[(days % 7) as usize];
    // Every 400 Gregorian years hold exactly 146 097 days, whichever year they start from.
    let mut year = 1970 + 400 * (days / 146_097);
    days %= 146_097;
    loop {
        let in_year = if is_leap(year) { 366 } else { 365 };
        if days < in_year {
            break;
        }
        days -= in_year;
        year += 1;
    }
    let mut month = 0;
    while days >= month_days(year, month) {
        days -= month_days(year, month);
        month += 1;
    }
    let t = secs % 86_400;
    (
        year,
        month,
        days + 1,
        t / 3600,
        t / 60 % 60,
        t % 60,
        weekday,
    )
}

/// `secs` as an IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn imf_fixdate(secs: u64) -> String {
    let (y, mo, d, h, mi, s, wd) = civil(secs);
    format!(
        "{wd}, {d:02} {} {y:04} {h:02}:{mi:02}:{s:02} GMT",
        MONTHS[mo]
    )
}

/// `secs` as an asctime date, `Sun Nov  6 08:49:37 1994`.
pub fn asctime(secs: u64) -> String {
    let (y, mo, d, h, mi, s, wd) = civil(secs);
    format!("{wd} {} {d:>2} {h:02}:{mi:02}:{s:02} {y:04}", MONTHS[mo])
}
