//! CEL timestamps and durations: RFC 3339 text, Go duration text, and the calendar
//! accessors (`getDayOfWeek()`...) in UTC.
//!
//! Ranges are CEL's: timestamps from year 1 to year 9999, durations up to ±315,576,000,000
//! seconds (10,000 years). Every operation checks them; nothing here can overflow.

use std::fmt;

/// Seconds of CEL's largest duration (10,000 years).
const MAX_DURATION_SECS: i128 = 315_576_000_000;
const NANOS: i128 = 1_000_000_000;
/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z in Unix seconds.
const MIN_TS: i64 = -62_135_596_800;
const MAX_TS: i64 = 253_402_300_799;

/// A point in time, UTC, with nanosecond precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    secs: i64,
    nanos: u32,
}

/// A signed span of time in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(i128);

impl Timestamp {
    /// From Unix seconds and nanoseconds (None outside years 1..=9999).
    pub fn from_unix(secs: i64, nanos: u32) -> Option<Self> {
        ((MIN_TS..=MAX_TS).contains(&secs) && nanos < 1_000_000_000).then_some(Self { secs, nanos })
    }
    pub fn unix_secs(self) -> i64 {
        self.secs
    }
    fn total_nanos(self) -> i128 {
        i128::from(self.secs) * NANOS + i128::from(self.nanos)
    }
    fn from_total_nanos(n: i128) -> Option<Self> {
        let secs = i64::try_from(n.div_euclid(NANOS)).ok()?;
        let nanos = u32::try_from(n.rem_euclid(NANOS)).ok()?;
        Self::from_unix(secs, nanos)
    }
    pub fn checked_add(self, d: Duration) -> Option<Self> {
        Self::from_total_nanos(self.total_nanos().checked_add(d.0)?)
    }
    pub fn checked_sub(self, d: Duration) -> Option<Self> {
        Self::from_total_nanos(self.total_nanos().checked_sub(d.0)?)
    }
    pub fn since(self, other: Timestamp) -> Option<Duration> {
        Duration::from_nanos(self.total_nanos() - other.total_nanos())
    }

    /// RFC 3339 (`2023-01-01T10:00:20.021-05:00`, `...Z`), what `timestamp('...')` accepts.
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() < 20 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
            return None;
        }
        if !matches!(b.get(10), Some(b'T' | b't'))
            || b.get(13) != Some(&b':')
            || b.get(16) != Some(&b':')
        {
            return None;
        }
        let num = |from: usize, to: usize| -> Option<i64> {
            let part = b.get(from..to)?;
            if !part.iter().all(u8::is_ascii_digit) {
                return None;
            }
            part.iter()
                .try_fold(0i64, |acc, d| Some(acc * 10 + i64::from(d - b'0')))
        };
        let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
        let (hour, min, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return None;
        }
        if hour > 23 || min > 59 || sec > 59 {
            return None;
        }
        let mut i = 19;
        let mut nanos: u32 = 0;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                if i - start < 9 {
                    nanos = nanos * 10 + u32::from(b[i] - b'0');
                }
                i += 1;
            }
            let digits = i - start;
            if digits == 0 {
                return None;
            }
            for _ in digits..9 {
                nanos *= 10;
            }
        }
        let offset = match b.get(i..)? {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let digits = [*h1, *h2, *m1, *m2];
                if !digits.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                let h = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
                let m = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
                if h > 23 || m > 59 {
                    return None;
                }
                let o = h * 3600 + m * 60;
                if *sign == b'-' {
                    -o
                } else {
                    o
                }
            }
            _ => return None,
        };
        let secs =
            days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec - offset;
        Self::from_unix(secs, nanos)
    }

    /// Calendar fields in UTC: (year, month 1-12, day 1-31, day of week 0=Sunday, day of year 0-365).
    fn civil(self) -> (i64, i64, i64, i64, i64) {
        let days = self.secs.div_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        // 1970-01-01 was a Thursday (4).
        let dow = (days + 4).rem_euclid(7);
        let doy = days - days_from_civil(y, 1, 1);
        (y, m, d, dow, doy)
    }
    fn second_of_day(self) -> i64 {
        self.secs.rem_euclid(86_400)
    }

    /// A CEL timestamp accessor by name (`getDayOfWeek` ...), in UTC.
    pub fn field(self, name: &str) -> Option<i64> {
        let (y, m, d, dow, doy) = self.civil();
        Some(match name {
            "getFullYear" => y,
            "getMonth" => m - 1,
            "getDate" => d,
            "getDayOfMonth" => d - 1,
            "getDayOfWeek" => dow,
            "getDayOfYear" => doy,
            "getHours" => self.second_of_day() / 3600,
            "getMinutes" => self.second_of_day() % 3600 / 60,
            "getSeconds" => self.second_of_day() % 60,
            "getMilliseconds" => i64::from(self.nanos / 1_000_000),
            _ => return None,
        })
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC, fractional seconds only when present (as cel-go prints).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d, _, _) = self.civil();
        let s = self.second_of_day();
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            s / 3600,
            s % 3600 / 60,
            s % 60
        )?;
        if self.nanos != 0 {
            let frac = format!("{:09}", self.nanos);
            write!(f, ".{}", frac.trim_end_matches('0'))?;
        }
        f.write_str("Z")
    }
}

impl Duration {
    pub fn from_nanos(n: i128) -> Option<Self> {
        (n.abs() <= MAX_DURATION_SECS * NANOS).then_some(Self(n))
    }
    pub fn checked_add(self, o: Duration) -> Option<Self> {
        Self::from_nanos(self.0.checked_add(o.0)?)
    }
    pub fn checked_sub(self, o: Duration) -> Option<Self> {
        Self::from_nanos(self.0.checked_sub(o.0)?)
    }
    pub fn checked_neg(self) -> Option<Self> {
        Self::from_nanos(self.0.checked_neg()?)
    }

    /// Go duration text, what `duration('...')` accepts: `1h1m`, `1.5h`, `-30s`, `100ms`,
    /// `2us`, `10ns` (also `µs`); `0` alone.
    pub fn parse(s: &str) -> Option<Self> {
        let (neg, mut rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        if rest == "0" {
            return Some(Self(0));
        }
        if rest.is_empty() {
            return None;
        }
        let mut total: i128 = 0;
        while !rest.is_empty() {
            let int_end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let int_part = &rest[..int_end];
            rest = &rest[int_end..];
            let mut frac_part = "";
            if let Some(r) = rest.strip_prefix('.') {
                let fe = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
                frac_part = &r[..fe];
                rest = &r[fe..];
            }
            if int_part.is_empty() && frac_part.is_empty() {
                return None;
            }
            let unit_end = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit: i128 = match &rest[..unit_end] {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => NANOS,
                "m" => 60 * NANOS,
                "h" => 3600 * NANOS,
                _ => return None,
            };
            rest = &rest[unit_end..];
            let whole: i128 = if int_part.is_empty() {
                0
            } else {
                int_part.parse().ok()?
            };
            let mut v = whole.checked_mul(unit)?;
            // Fractional digits, at most 18 kept (beyond that they cannot change a nanosecond
            // count of a unit ≤ 1h).
            let mut scale = unit;
            for d in frac_part.bytes().take(18) {
                scale /= 10;
                v = v.checked_add(i128::from(d - b'0') * scale)?;
            }
            total = total.checked_add(v)?;
            if total > MAX_DURATION_SECS * NANOS {
                return None;
            }
        }
        Self::from_nanos(if neg { -total } else { total })
    }

    /// A CEL duration accessor (`getHours()` ...): the whole span in that unit, truncated.
    pub fn field(self, name: &str) -> Option<i64> {
        let v = match name {
            "getHours" => self.0 / (3600 * NANOS),
            "getMinutes" => self.0 / (60 * NANOS),
            "getSeconds" => self.0 / NANOS,
            "getMilliseconds" => self.0 / 1_000_000,
            _ => return None,
        };
        i64::try_from(v).ok()
    }
    pub fn whole_seconds(self) -> i64 {
        // |self.0| ≤ 3.2e20 ns, so seconds fit.
        i64::try_from(self.0 / NANOS).unwrap_or(0)
    }
}

impl fmt::Display for Duration {
    /// Seconds with a fraction when needed (`3600s`, `1.5s`), as CEL prints durations.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let (s, n) = (abs / NANOS as u128, abs % NANOS as u128);
        if n == 0 {
            write!(f, "{sign}{s}s")
        } else {
            let frac = format!("{n:09}");
            write!(f, "{sign}{s}.{}s", frac.trim_end_matches('0'))
        }
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (era arithmetic on 400-year cycles).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip_and_fields() {
        let t = Timestamp::parse("2023-01-01T10:00:20.021-05:00").unwrap();
        assert_eq!(t.to_string(), "2023-01-01T15:00:20.021Z");
        assert_eq!(t.field("getDayOfWeek"), Some(0)); // a Sunday
        assert_eq!(t.field("getHours"), Some(15));
        assert_eq!(t.field("getMonth"), Some(0));
        assert_eq!(t.field("getDayOfYear"), Some(0));
        assert_eq!(t.field("getMilliseconds"), Some(21));
        let leap = Timestamp::parse("2024-02-29T23:59:59Z").unwrap();
        assert_eq!(leap.field("getDate"), Some(29));
        assert_eq!(leap.field("getDayOfWeek"), Some(4)); // a Thursday
        assert_eq!(leap.field("getDayOfYear"), Some(59));
        assert_eq!(
            Timestamp::parse("1970-01-01T00:00:00Z")
                .unwrap()
                .unix_secs(),
            0
        );
        assert_eq!(
            Timestamp::parse("0001-01-01T00:00:00Z")
                .unwrap()
                .unix_secs(),
            MIN_TS
        );
        assert_eq!(
            Timestamp::parse("9999-12-31T23:59:59Z")
                .unwrap()
                .unix_secs(),
            MAX_TS
        );
    }

    #[test]
    fn bad_timestamps_refused() {
        for s in [
            "",
            "2023-02-29T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-01-01 00:00:00Z",
            "2023-01-01T24:00:00Z",
            "2023-01-01T00:00:00",
            "2023-01-01T00:00:00.Z",
            "2023-01-01T00:00:00+5:00",
            "0000-12-31T23:59:59Z",
            "+023-01-01T00:00:00Z",
        ] {
            assert_eq!(Timestamp::parse(s), None, "{s}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(Duration::parse("1h1m").unwrap().to_string(), "3660s");
        assert_eq!(
            Duration::parse("1.5h").unwrap().field("getMinutes"),
            Some(90)
        );
        assert_eq!(Duration::parse("-30s").unwrap().to_string(), "-30s");
        assert_eq!(Duration::parse("100ms").unwrap().to_string(), "0.1s");
        assert_eq!(Duration::parse("0").unwrap().to_string(), "0s");
        for s in [
            "",
            "1",
            "1x",
            "h",
            ".h",
            "99999999999999999999999999h",
            "1h-1m",
        ] {
            assert_eq!(Duration::parse(s), None, "{s}");
        }
        let t = Timestamp::parse("9999-12-31T23:59:59Z").unwrap();
        assert_eq!(t.checked_add(Duration::parse("1s").unwrap()), None);
    }
}
