//! Calendar dates of unix times, in UTC (pure), and the clock ([`unix_now`]).

/// The `(year, month, day, hour, minute, second)` of `unix` seconds, in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`).
pub fn fields(unix: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, secs / 3600, secs % 3600 / 60, secs % 60)
}

/// `YYYY-MM-DD HH:MM:SS UTC` for unix seconds.
pub fn date_time(unix: i64) -> String {
    let (year, month, day, hour, minute, second) = fields(unix);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02} UTC")
}

/// Returns the current time in unix seconds (0 before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_across_leap_days() {
        assert_eq!(date_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(date_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(date_time(1_709_251_199), "2024-02-29 23:59:59 UTC");
    }
}
