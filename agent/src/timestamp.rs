//! RFC 3339 timestamps in UTC with microseconds (`2026-12-01T09:30:05.123456Z`), from
//! [`SystemTime`], for the `time` field of every output line (docs/events.md). Pure: the clock is
//! read by the caller.
use std::time::{SystemTime, UNIX_EPOCH};

use jiff::Timestamp;

/// `t` as RFC 3339 UTC with six fractional digits. Times before 1970 (a clock set wrong) are
/// written as the epoch rather than failing: the line matters more than its stamp.
pub fn rfc3339(t: SystemTime) -> String {
    let t = t.max(UNIX_EPOCH);
    // Only past jiff's range (year 9999) does this fail: the latest instant it has then.
    let ts = Timestamp::try_from(t).unwrap_or(Timestamp::MAX);
    format!("{ts:.6}")
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

    #[test]
    fn nanoseconds_are_cut_not_rounded() {
        let t = UNIX_EPOCH + Duration::new(59, 999_999_999);
        assert_eq!(rfc3339(t), "1970-01-01T00:00:59.999999Z");
    }

    #[test]
    fn before_the_epoch_is_the_epoch() {
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000000Z"
        );
    }
}
