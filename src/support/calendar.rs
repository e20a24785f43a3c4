//! Calendar arithmetic: fixed time windows (`second` … `year`, the units of KrakenD quota
//! limits) aligned to UTC calendar boundaries (a `day` window starts at 00:00 UTC, a `month`
//! on the 1st, a `week` on Monday), and civil dates from day counts (AWS SigV4 dates).

/// The unit of a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Unit {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "second" => Unit::Second,
            "minute" => Unit::Minute,
            "hour" => Unit::Hour,
            "day" => Unit::Day,
            "week" => Unit::Week,
            "month" => Unit::Month,
            "year" => Unit::Year,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
            Unit::Year => "year",
        }
    }

    /// The window containing `now` (Unix seconds): `[start, end)`.
    pub fn window(self, now: u64) -> (u64, u64) {
        let fixed = |len: u64| {
            let start = now - now % len;
            (start, start + len)
        };
        match self {
            Unit::Second => fixed(1),
            Unit::Minute => fixed(60),
            Unit::Hour => fixed(3600),
            Unit::Day => fixed(86_400),
            Unit::Week => {
                // 1970-01-01 was a Thursday: Monday-aligned weeks start 3 days earlier.
                let shifted = now + 3 * 86_400;
                let start = shifted - shifted % (7 * 86_400);
                (start - 3 * 86_400, start + 4 * 86_400)
            }
            Unit::Month | Unit::Year => {
                let (y, m, _) = civil_from_days((now / 86_400) as i64);
                let (start, end) = if self == Unit::Month {
                    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                    (days_from_civil(y, m, 1), days_from_civil(ny, nm, 1))
                } else {
                    (days_from_civil(y, 1, 1), days_from_civil(y + 1, 1, 1))
                };
                (start.max(0) as u64 * 86_400, end.max(0) as u64 * 86_400)
            }
        }
    }
}

/// Civil date (year, month 1-12, day 1-31) from days since 1970-01-01 (proleptic
/// Gregorian; Howard Hinnant's era-based algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (inverse of `civil_from_days`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-25T09:10:34Z, a Wednesday.
    const NOW: u64 = 1_795_597_834;

    #[test]
    fn windows_align_to_utc_calendar() {
        assert_eq!(Unit::Minute.window(NOW), (1_795_597_800, 1_795_597_860));
        assert_eq!(Unit::Day.window(NOW), (1_795_564_800, 1_795_651_200));
        // Monday 2026-11-23 .. Monday 2026-11-30
        assert_eq!(Unit::Week.window(NOW), (1_795_392_000, 1_795_996_800));
        // 2026-11-01 .. 2026-12-01
        assert_eq!(Unit::Month.window(NOW), (1_793_491_200, 1_796_083_200));
        // 2026-01-01 .. 2027-01-01
        assert_eq!(Unit::Year.window(NOW), (1_767_225_600, 1_798_761_600));
        let (s, e) = Unit::Month.window(1_796_083_199);
        assert_eq!((s, e), (1_793_491_200, 1_796_083_200));
        assert_eq!(Unit::Month.window(1_796_083_200).0, 1_796_083_200);
    }

    #[test]
    fn days_from_civil_inverts_civil_from_days() {
        for days in [-1000i64, 0, 59, 60, 365, 11_016, 20_782, 40_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn units_parse() {
        assert_eq!(Unit::parse("week"), Some(Unit::Week));
        assert_eq!(Unit::parse("fortnight"), None);
    }
}
