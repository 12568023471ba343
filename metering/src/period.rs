//! Billing periods: UTC calendar months.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A billing period: the UTC calendar month containing an event's `ended_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    year: i32,
    /// 1–12.
    month: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("period must be YYYY-MM, got {0:?}")]
pub struct ParsePeriodError(String);

impl Period {
    pub fn new(year: i32, month: u32) -> Option<Period> {
        ((1..=12).contains(&month) && (1970..=9999).contains(&year))
            .then_some(Period { year, month })
    }

    /// The period containing an instant.
    pub fn containing(at: DateTime<Utc>) -> Period {
        Period { year: at.year(), month: at.month() }
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn month(self) -> u32 {
        self.month
    }

    /// The first instant of the period.
    pub fn start(self) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(self.year, self.month, 1, 0, 0, 0).single().expect("valid month start")
    }

    /// The first instant after the period (the next period's start).
    pub fn end(self) -> DateTime<Utc> {
        self.next().start()
    }

    pub fn next(self) -> Period {
        if self.month == 12 {
            Period { year: self.year + 1, month: 1 }
        } else {
            Period { year: self.year, month: self.month + 1 }
        }
    }

    pub fn prev(self) -> Period {
        if self.month == 1 {
            Period { year: self.year - 1, month: 12 }
        } else {
            Period { year: self.year, month: self.month - 1 }
        }
    }

    /// The instant the period closes: its end plus the grace. An event that arrives at or after
    /// this instant is late for this period.
    pub fn closes_at(self, grace: Duration) -> DateTime<Utc> {
        self.end() + grace
    }

    pub fn first_day(self) -> NaiveDate {
        self.start().date_naive()
    }

    pub fn last_day(self) -> NaiveDate {
        self.end().date_naive().pred_opt().expect("a month has a last day")
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Period {
    type Err = ParsePeriodError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParsePeriodError(s.to_string());
        let (y, m) = s.split_once('-').ok_or_else(err)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(err());
        }
        let year = y.parse().map_err(|_| err())?;
        let month = m.parse().map_err(|_| err())?;
        Period::new(year, month).ok_or_else(err)
    }
}

impl Serialize for Period {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn months_and_edges() {
        let p = Period::containing(at("2026-12-31T23:59:59.999Z"));
        assert_eq!(p.to_string(), "2026-12");
        assert_eq!(p.end(), at("2027-01-01T00:00:00Z"));
        assert_eq!(Period::containing(at("2027-01-01T00:00:00Z")), p.next());
        assert_eq!(p.next().prev(), p);
        assert_eq!(p.closes_at(Duration::hours(48)), at("2027-01-03T00:00:00Z"));
        assert_eq!("2026-02".parse::<Period>().unwrap().last_day().to_string(), "2026-02-28");
        assert!("2026-13".parse::<Period>().is_err());
        assert!("2026-1".parse::<Period>().is_err());
        assert!("nope".parse::<Period>().is_err());
    }
}
