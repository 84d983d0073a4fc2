use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};
use std::str::FromStr;

/// A budget period. Windows are calendar-aligned in UTC; weeks start on Monday (ISO 8601).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Hour,
    Day,
    Week,
    Month,
    Year,
    Lifetime,
}

impl Period {
    pub fn name(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
            Self::Year => "year",
            Self::Lifetime => "lifetime",
        }
    }

    /// The window containing `now`: `[start, end)`. Lifetime has no bounds (start 0, end None).
    pub fn window(self, now: DateTime<Utc>) -> (i64, Option<i64>) {
        let date = now.date_naive();
        let midnight =
            |d: NaiveDate| Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("valid time"));
        let (start, end) = match self {
            Self::Lifetime => return (0, None),
            Self::Hour => {
                let s = midnight(date) + Duration::hours(i64::from(now.hour()));
                (s, s + Duration::hours(1))
            }
            Self::Day => {
                let s = midnight(date);
                (s, s + Duration::days(1))
            }
            Self::Week => {
                let s = midnight(date)
                    - Duration::days(i64::from(date.weekday().num_days_from_monday()));
                (s, s + Duration::days(7))
            }
            Self::Month => {
                let first = date.with_day(1).expect("day 1 exists");
                let next = if first.month() == 12 {
                    NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
                } else {
                    NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
                }
                .expect("first of next month exists");
                (midnight(first), midnight(next))
            }
            Self::Year => {
                let first = NaiveDate::from_ymd_opt(date.year(), 1, 1).expect("Jan 1 exists");
                let next = NaiveDate::from_ymd_opt(date.year() + 1, 1, 1).expect("Jan 1 exists");
                (midnight(first), midnight(next))
            }
        };
        (start.timestamp_millis(), Some(end.timestamp_millis()))
    }
}

impl FromStr for Period {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "hour" => Self::Hour,
            "day" => Self::Day,
            "week" => Self::Week,
            "month" => Self::Month,
            "year" => Self::Year,
            "lifetime" => Self::Lifetime,
            other => {
                return Err(format!(
                    "unknown period {other:?}; use hour, day, week, month, year or lifetime"
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn ms(s: &str) -> i64 {
        at(s).timestamp_millis()
    }

    #[test]
    fn windows_are_calendar_aligned_in_utc() {
        let now = at("2026-11-18T13:45:10Z"); // a Wednesday
        assert_eq!(
            Period::Hour.window(now),
            (ms("2026-11-18T13:00:00Z"), Some(ms("2026-11-18T14:00:00Z")))
        );
        assert_eq!(
            Period::Day.window(now),
            (ms("2026-11-18T00:00:00Z"), Some(ms("2026-11-19T00:00:00Z")))
        );
        assert_eq!(
            Period::Week.window(now),
            (ms("2026-11-16T00:00:00Z"), Some(ms("2026-11-23T00:00:00Z")))
        );
        assert_eq!(
            Period::Month.window(now),
            (ms("2026-11-01T00:00:00Z"), Some(ms("2026-12-01T00:00:00Z")))
        );
        assert_eq!(
            Period::Year.window(now),
            (ms("2026-01-01T00:00:00Z"), Some(ms("2027-01-01T00:00:00Z")))
        );
        assert_eq!(Period::Lifetime.window(now), (0, None));
    }

    #[test]
    fn december_rolls_into_the_next_year_and_the_boundary_belongs_to_the_new_window() {
        let now = at("2026-12-31T23:59:59.999Z");
        assert_eq!(
            Period::Month.window(now).1,
            Some(ms("2027-01-01T00:00:00Z"))
        );
        let next = at("2027-01-01T00:00:00Z");
        assert_eq!(Period::Day.window(next).0, ms("2027-01-01T00:00:00Z"));
    }
}
