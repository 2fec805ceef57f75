//! Time as governance sees it: milliseconds since the Unix epoch, budget periods on the UTC
//! calendar, RFC 3339 instants in config, and OpenAI's way of writing a reset delay.

use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, Time};

const DAY_MS: u64 = 86_400_000;

/// A budget period, on UTC calendar boundaries (weeks start on Monday).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Period {
    Day,
    Week,
    Month,
    Lifetime,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Lifetime => "lifetime",
        }
    }

    /// The index of the period holding `now_ms`: days or weeks since the epoch, months since
    /// January 1970, 0 for lifetime. Distinct periods have distinct indexes.
    pub fn index(self, now_ms: u64) -> u64 {
        let days = now_ms / DAY_MS;
        match self {
            Period::Day => days,
            // 1970-01-01 was a Thursday: shifting by 3 days puts week boundaries on Mondays.
            Period::Week => (days + 3) / 7,
            Period::Month => {
                let (year, month) = year_month(now_ms);
                (year.saturating_sub(1970) as u64) * 12 + u64::from(u8::from(month)) - 1
            }
            Period::Lifetime => 0,
        }
    }

    /// When the period holding `now_ms` ends (`None` for lifetime).
    pub fn end_ms(self, now_ms: u64) -> Option<u64> {
        let days = now_ms / DAY_MS;
        match self {
            Period::Day => Some((days + 1) * DAY_MS),
            Period::Week => Some(((days + 3) / 7 + 1) * 7 * DAY_MS - 3 * DAY_MS),
            Period::Month => {
                let (year, month) = year_month(now_ms);
                let (y, m) = if month == Month::December { (year + 1, Month::January) } else { (year, month.next()) };
                let start = Date::from_calendar_date(y, m, 1).ok()?.with_time(Time::MIDNIGHT).assume_utc();
                u64::try_from(start.unix_timestamp()).ok().map(|s| s * 1000)
            }
            Period::Lifetime => None,
        }
    }

    /// The date (`YYYY-MM-DD`) the period holding `now_ms` starts on (for the ledger and alerts).
    pub fn start_date(self, now_ms: u64) -> String {
        let days = now_ms / DAY_MS;
        let start_days = match self {
            Period::Day => days,
            // The Monday that starts the week (the first week, cut by the epoch, starts on it).
            Period::Week => ((days + 3) / 7 * 7).saturating_sub(3),
            Period::Month => {
                let (year, month) = year_month(now_ms);
                return format!("{year:04}-{:02}-01", u8::from(month));
            }
            Period::Lifetime => return "lifetime".into(),
        };
        date_of_ms(start_days * DAY_MS)
    }
}

fn utc(now_ms: u64) -> OffsetDateTime {
    let secs = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn year_month(now_ms: u64) -> (i32, Month) {
    let t = utc(now_ms);
    (t.year(), t.month())
}

/// `YYYY-MM-DD` of an instant (UTC).
pub fn date_of_ms(ms: u64) -> String {
    let t = utc(ms);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// Parses an RFC 3339 instant (`2027-01-01T00:00:00Z`, `2027-01-01T09:00:00+09:00`) or a date
/// (`2027-01-01`, meaning its UTC midnight) into milliseconds since the epoch.
pub fn parse_instant(text: &str) -> Result<u64, String> {
    // A bare date is its UTC midnight.
    let full = if text.len() == 10 { format!("{text}T00:00:00Z") } else { text.to_string() };
    let t = OffsetDateTime::parse(&full, &Rfc3339)
        .map_err(|e| format!("{text:?} is not an RFC 3339 instant such as 2027-01-01T00:00:00Z ({e})"))?;
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms).map_err(|_| format!("{text:?} is before 1970"))
}

/// Formats an instant as RFC 3339 (UTC).
pub fn format_instant(ms: u64) -> String {
    let t = utc(ms);
    t.format(&Rfc3339).unwrap_or_else(|_| ms.to_string())
}

/// A delay the way OpenAI's `x-ratelimit-reset-*` headers write it: `20ms`, `1s`, `6m0s`, `1h2m3s`.
pub fn format_reset(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = ms.div_ceil(1000);
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> u64 {
        parse_instant(text).unwrap()
    }

    #[test]
    fn parses_instants_and_dates() {
        assert_eq!(at("1970-01-01T00:00:01Z"), 1000);
        assert_eq!(at("2027-01-01T09:00:00+09:00"), at("2027-01-01T00:00:00Z"));
        assert_eq!(at("2027-01-01"), at("2027-01-01T00:00:00Z"));
        assert!(parse_instant("tomorrow").unwrap_err().contains("RFC 3339"));
        assert!(parse_instant("1969-12-31T00:00:00Z").is_err());
        assert_eq!(format_instant(at("2026-11-27T10:11:12Z")), "2026-11-27T10:11:12Z");
    }

    #[test]
    fn days_change_at_utc_midnight() {
        let d = Period::Day;
        assert_eq!(d.index(at("2026-11-27T23:59:59Z")) + 1, d.index(at("2026-11-28T00:00:00Z")));
        assert_eq!(d.end_ms(at("2026-11-27T12:00:00Z")), Some(at("2026-11-28T00:00:00Z")));
        assert_eq!(d.start_date(at("2026-11-27T12:00:00Z")), "2026-11-27");
    }

    #[test]
    fn weeks_start_on_monday() {
        let w = Period::Week;
        // 2026-11-23 is a Monday.
        let monday = at("2026-11-23T00:00:00Z");
        assert_eq!(w.index(monday - 1) + 1, w.index(monday));
        assert_eq!(w.index(monday), w.index(at("2026-11-29T23:59:59Z")));
        assert_eq!(w.end_ms(at("2026-11-27T12:00:00Z")), Some(at("2026-11-30T00:00:00Z")));
        assert_eq!(w.start_date(at("2026-11-27T12:00:00Z")), "2026-11-23");
        assert_eq!(w.start_date(at("1970-01-02T00:00:00Z")), "1970-01-01");
    }

    #[test]
    fn months_follow_the_calendar() {
        let m = Period::Month;
        assert_eq!(m.index(at("1970-01-31T00:00:00Z")), 0);
        assert_eq!(m.index(at("1970-02-01T00:00:00Z")), 1);
        assert_eq!(m.index(at("2026-12-31T23:59:59Z")) + 1, m.index(at("2027-01-01T00:00:00Z")));
        assert_eq!(m.end_ms(at("2026-12-15T00:00:00Z")), Some(at("2027-01-01T00:00:00Z")));
        assert_eq!(m.end_ms(at("2028-02-10T00:00:00Z")), Some(at("2028-03-01T00:00:00Z")));
        assert_eq!(m.start_date(at("2026-11-27T12:00:00Z")), "2026-11-01");
        assert_eq!(Period::Lifetime.end_ms(at("2026-11-27T12:00:00Z")), None);
    }

    #[test]
    fn resets_are_written_like_openai() {
        assert_eq!(format_reset(20), "20ms");
        assert_eq!(format_reset(1000), "1s");
        assert_eq!(format_reset(1001), "2s");
        assert_eq!(format_reset(360_000), "6m0s");
        assert_eq!(format_reset(3_723_000), "1h2m3s");
    }
}
