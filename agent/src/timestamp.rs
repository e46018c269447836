//! RFC 3339 timestamps in UTC with microseconds (`2026-12-01T09:30:05.123456Z`), from
//! [`SystemTime`], for the `time` field of every output line (docs/events.md). Pure: the clock is
//! read by the caller.
use std::time::{SystemTime, UNIX_EPOCH};

/// `t` as RFC 3339 UTC with six fractional digits. Times before 1970 (a clock set wrong) are
/// written as the epoch rather than failing: the line matters more than its stamp.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both fit: day in 1..=31, month in 1..=12.
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(secs: u64, micros: u32) -> String {
        rfc3339(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros.into()))
    }

    #[test]
    fn the_epoch_and_known_instants() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        // date -u -d @951782400: the leap day of a year divisible by 400.
        assert_eq!(at(951_782_400, 1), "2000-02-29T00:00:00.000001Z");
        // date -u -d @1709251199: the last second of 2024-02-29.
        assert_eq!(at(1_709_251_199, 999_999), "2024-02-29T23:59:59.999999Z");
        // date -u -d @4102444800: 2100 is not a leap year.
        assert_eq!(at(4_102_444_800 - 1, 0), "2099-12-31T23:59:59.000000Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
        assert_eq!(at(1_796_203_805, 123_456), "2026-12-02T09:30:05.123456Z");
    }

    fn days_in_month(y: i64, m: u32) -> u32 {
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        [
            31,
            if leap { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ][m as usize - 1]
    }

    #[test]
    fn every_day_of_four_centuries_follows_the_previous_one() {
        let mut prev = civil_from_days(-1);
        for d in 0..146_097 {
            let (y, m, day) = civil_from_days(d);
            let next_day = (prev.0, prev.1, prev.2 + 1) == (y, m, day);
            let last = prev.2 == days_in_month(prev.0, prev.1);
            let next_month = last && (prev.0, prev.1 + 1) == (y, m) && day == 1;
            let next_year = last && prev.0 + 1 == y && (prev.1, m, day) == (12, 1, 1);
            assert!(
                next_day || next_month || next_year,
                "{prev:?} -> {y}-{m}-{day}"
            );
            prev = (y, m, day);
        }
    }

    #[test]
    fn before_the_epoch_is_the_epoch() {
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000000Z"
        );
    }
}
