//! Timestamps in every form gateway and flow logs write them, to UTC nanoseconds.
//!
//! Takes text (or a JSON number) and the input's time zone; gives nanoseconds since the Unix
//! epoch. Accepted: ISO-8601 with 0 to 9 fractional digits and `Z` or an offset; zone-less
//! ISO and `yyyy-MM-dd HH:mm:ss,SSS` (log4j) read in the input's zone (UTC unless the user
//! names one); `MM-dd HH:mm:ss` (CloudHub pattern, no year: the most recent such time not in
//! the future); `M/d/yyyy h:mm:ss[.fffffff] AM/PM` (.NET) and `M/d/yyyy, h:mm:ss[.fff]
//! AM/PM` (Azure portal exports; both with 0 to 9 fractional digits), `M/d/yyyy HH:mm:ss`;
//! `M/d/yyyy[,] h:mm AM/PM` (no seconds); `d/M/yyyy, HH:mm:ss[.fff]` and
//! `d.M.yyyy[,] HH:mm:ss[.fff]` (portal exports in other locales: a comma before a 24-hour
//! time means day first); `dd/MM/yyyy HH:mm:ss.SSS` when the day cannot be a month; epoch
//! seconds or milliseconds as numbers or digit strings.

use chrono::{DateTime, Datelike, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// The zone that zone-less times of one input are read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Zone {
    /// UTC (the default).
    #[default]
    Utc,
    /// A named IANA zone (e.g. `Europe/Dublin`).
    Named(Tz),
}

impl Zone {
    /// Parses an IANA zone name (`UTC` included).
    ///
    /// # Errors
    /// The name is not a known zone.
    pub fn parse(name: &str) -> Result<Self, String> {
        let name = name.trim();
        if name.eq_ignore_ascii_case("utc") || name == "Z" {
            return Ok(Zone::Utc);
        }
        name.parse::<Tz>().map(Zone::Named).map_err(|_| {
            format!("unknown time zone {name:?} (use an IANA name such as Europe/Dublin)")
        })
    }

    /// A zone-less time read in this zone, in nanoseconds (the earlier of an ambiguous
    /// local time; `None` for one that does not exist).
    pub fn local(self, t: NaiveDateTime) -> Option<i64> {
        let dt = match self {
            Zone::Utc => Utc.from_utc_datetime(&t),
            Zone::Named(tz) => tz.from_local_datetime(&t).earliest()?.with_timezone(&Utc),
        };
        dt.timestamp_nanos_opt()
    }
}

/// One day in nanoseconds.
pub const DAY_NS: i64 = 86_400_000_000_000;

/// The plausible range of event times: a record timed outside it is refused (its neighbours
/// are kept), so that one absurd timestamp cannot reach the partitioning, the correlator's
/// minute arithmetic or the dashboards. Configured by `limits.min_event_time` and
/// `limits.max_event_time_ahead`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    /// Earliest accepted time (ns since the epoch). Default 0 (1970-01-01T00:00:00Z).
    pub min_ns: i64,
    /// How far past "now" a time may lie (ns). Default one day.
    pub max_ahead_ns: i64,
}

impl Default for TimeWindow {
    fn default() -> Self {
        Self {
            min_ns: 0,
            max_ahead_ns: DAY_NS,
        }
    }
}

impl TimeWindow {
    /// The latest accepted time at `now_ns`.
    pub fn max_at(&self, now_ns: i64) -> i64 {
        now_ns.saturating_add(self.max_ahead_ns)
    }

    /// Whether `t` lies in the window at `now_ns`.
    pub fn contains(&self, t: i64, now_ns: i64) -> bool {
        t >= self.min_ns && t <= self.max_at(now_ns)
    }

    /// `t` when it lies in the window, else why not (naming `what`).
    ///
    /// # Errors
    /// The time is before the earliest or after the latest accepted time.
    pub fn check(&self, what: &str, t: i64, now_ns: i64) -> Result<i64, String> {
        if self.contains(t, now_ns) {
            return Ok(t);
        }
        let shown = |ns: i64| {
            DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        };
        Err(format!(
            "{what} {} is outside the accepted event-time window {} .. {} \
             (limits.min_event_time, limits.max_event_time_ahead)",
            shown(t),
            shown(self.min_ns),
            shown(self.max_at(now_ns)),
        ))
    }
}

const NAIVE_FORMATS: &[&str] = &[
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%m/%d/%Y %I:%M:%S%.f %p",
    "%m/%d/%Y, %I:%M:%S%.f %p",
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y, %I:%M %p",
    "%m/%d/%Y %H:%M:%S%.f",
    // Portal exports in other locales: day first, 24-hour, a comma after the date.
    "%d/%m/%Y, %H:%M:%S%.f",
    "%d.%m.%Y, %H:%M:%S%.f",
    "%d.%m.%Y %H:%M:%S%.f",
];

/// Epoch seconds or milliseconds (by magnitude) to nanoseconds.
pub fn from_epoch(v: f64) -> Option<i64> {
    if !v.is_finite() || !(0.0..9.2e18).contains(&v) {
        return None;
    }
    // Rounded to the microsecond: a double has no more precision for today's epoch ms.
    let us = if v < 1e11 {
        v * 1e6
    } else if v < 1e14 {
        v * 1e3
    } else if v < 1e17 {
        v
    } else {
        return Some(v as i64);
    };
    Some((us.round() as i64).saturating_mul(1000))
}

/// Parses a timestamp; `now_ns` resolves the year of year-less times.
pub fn parse(text: &str, zone: Zone, now_ns: i64) -> Option<i64> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    if t.bytes().all(|b| b.is_ascii_digit()) && t.len() >= 9 {
        return from_epoch(t.parse::<f64>().ok()?);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return dt.with_timezone(&Utc).timestamp_nanos_opt();
    }
    // log4j writes a comma before the milliseconds.
    let t = t.replace(',', ".").replace(". ", ", ");
    let t = t.as_str();
    if let Ok(dt) = DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f %z") {
        return dt.with_timezone(&Utc).timestamp_nanos_opt();
    }
    for f in NAIVE_FORMATS {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, f) {
            return zone.local(n);
        }
    }
    // Day first, when the first number cannot be a month.
    if let Ok(n) = NaiveDateTime::parse_from_str(t, "%d/%m/%Y %H:%M:%S%.f")
        && t.split('/')
            .next()
            .and_then(|d| d.parse::<u32>().ok())
            .is_some_and(|d| d > 12)
    {
        return zone.local(n);
    }
    // No year (CloudHub `[MM-dd HH:mm:ss]`): the latest such time that is not in the future.
    let now = DateTime::from_timestamp_nanos(now_ns);
    for year in [now.year(), now.year() - 1] {
        let with_year = format!("{year}-{t}");
        if let Ok(n) = NaiveDateTime::parse_from_str(&with_year, "%Y-%m-%d %H:%M:%S%.f")
            && let Some(ns) = zone.local(n)
            && ns <= now_ns.saturating_add(DAY_NS)
        {
            return Some(ns);
        }
    }
    None
}

/// A .NET `TimeSpan` text (`[d.]hh:mm:ss[.fffffff]`) in milliseconds.
pub fn timespan_ms(text: &str) -> Option<f64> {
    let t = text.trim();
    let (days, rest) = match t.split_once('.') {
        Some((d, r)) if !d.contains(':') => (d.parse::<f64>().ok()?, r),
        _ => (0.0, t),
    };
    let mut parts = rest.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some(((days * 24.0 + h) * 60.0 + m) * 60_000.0 + s * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    }

    #[test]
    fn every_documented_form() {
        let now = utc("2024-11-06T00:00:00Z");
        let z = Zone::Utc;
        let want = utc("2024-11-05T09:14:03.1274512Z");
        assert_eq!(parse("2024-11-05T09:14:03.1274512Z", z, now), Some(want));
        assert_eq!(
            parse("2024-11-05T09:14:03Z", z, now),
            Some(utc("2024-11-05T09:14:03Z"))
        );
        assert_eq!(
            parse("2024-11-05 09:14:03,139", z, now),
            Some(utc("2024-11-05T09:14:03.139Z"))
        );
        assert_eq!(
            parse("2024-11-05T09:14:03.139", z, now),
            Some(utc("2024-11-05T09:14:03.139Z"))
        );
        assert_eq!(
            parse("11-05 09:14:03", z, now),
            Some(utc("2024-11-05T09:14:03Z"))
        );
        assert_eq!(
            parse("3/14/2024 9:05:01 AM", z, now),
            Some(utc("2024-03-14T09:05:01Z"))
        );
        assert_eq!(
            parse("11/5/2024, 9:15:37.204 AM", z, now),
            Some(utc("2024-11-05T09:15:37.204Z"))
        );
        assert_eq!(
            parse("25/12/2024 18:30:00.250", z, now),
            Some(utc("2024-12-25T18:30:00.25Z"))
        );
        assert_eq!(
            parse("1730798043139", z, now),
            Some(utc("2024-11-05T09:14:03.139Z"))
        );
        let dublin = Zone::parse("Europe/Dublin").unwrap();
        // Summer time: Dublin is UTC+1.
        assert_eq!(
            parse("2024-07-01 10:00:00,000", dublin, now),
            Some(utc("2024-07-01T09:00:00Z"))
        );
        assert_eq!(parse("not a time", z, now), None);
        assert!(Zone::parse("Mars/Olympus").is_err());
        assert_eq!(timespan_ms("00:00:00.1840000"), Some(184.0));
        assert_eq!(timespan_ms("1.00:00:01"), Some(86_401_000.0));
    }

    /// Azure portal exports write `M/d/yyyy, h:mm:ss.fff AM/PM` (a comma after the date),
    /// with 0 to 7 fractional digits.
    #[test]
    fn portal_export_times() {
        let now = utc("2024-11-07T00:00:00Z");
        let z = Zone::Utc;
        for (text, want) in [
            ("11/6/2024, 2:04:55.301 PM", "2024-11-06T14:04:55.301Z"),
            ("11/6/2024, 2:04:55 PM", "2024-11-06T14:04:55Z"),
            ("11/6/2024, 2:04:55.5 PM", "2024-11-06T14:04:55.5Z"),
            (
                "11/6/2024, 2:04:55.3014512 PM",
                "2024-11-06T14:04:55.3014512Z",
            ),
            ("11/06/2024, 02:04:55.301 pm", "2024-11-06T14:04:55.301Z"),
            ("11/6/2024, 12:00:00.000 AM", "2024-11-06T00:00:00Z"),
            ("11/6/2024, 12:30:00 PM", "2024-11-06T12:30:00Z"),
            ("1/2/2024, 9:05:01.042 AM", "2024-01-02T09:05:01.042Z"),
            ("2024-11-06T14:04:55.301Z", "2024-11-06T14:04:55.301Z"),
        ] {
            assert_eq!(parse(text, z, now), Some(utc(want)), "{text}");
        }
        // Read in the input's zone when the export's column is not UTC.
        let dublin = Zone::parse("Europe/Dublin").unwrap();
        assert_eq!(
            parse("7/1/2024, 10:00:00.250 AM", dublin, now),
            Some(utc("2024-07-01T09:00:00.25Z"))
        );
        // Other locales: a comma before a 24-hour time is day first.
        for (text, want) in [
            ("11/6/2024, 2:04:55.301", "2024-06-11T02:04:55.301Z"),
            ("06/11/2024, 14:04:55.301", "2024-11-06T14:04:55.301Z"),
            ("13/11/2024, 14:04:55.301", "2024-11-13T14:04:55.301Z"),
            ("6.11.2024, 14:04:55", "2024-11-06T14:04:55Z"),
            ("6.11.2024 14:04:55.3", "2024-11-06T14:04:55.3Z"),
            ("11/6/2024, 2:04 PM", "2024-11-06T14:04:00Z"),
        ] {
            assert_eq!(parse(text, z, now), Some(utc(want)), "{text}");
        }
        assert_eq!(parse("13/6/2024, 2:04:55 PM", z, now), None);
    }

    #[test]
    fn window_refuses_absurd_times_with_a_reason() {
        let now = utc("2026-12-04T00:00:00Z");
        let w = TimeWindow::default();
        assert_eq!(w.check("time", now, now), Ok(now));
        assert!(w.check("time", now + DAY_NS, now).is_ok());
        let e = w.check("startTimeUnixNano", i64::MAX, now).unwrap_err();
        assert!(e.contains("startTimeUnixNano 2262-04-11T23:47:16"), "{e}");
        assert!(e.contains("outside the accepted event-time window"), "{e}");
        assert!(w.check("time", -1, now).is_err());
        // The year-2262 APIM time parses, and the window refuses it.
        let t = parse("2262-04-11T23:47:10Z", Zone::Utc, now).unwrap();
        assert!(!w.contains(t, now));
        // No overflow at the edges.
        assert!(w.contains(i64::MAX - 1, i64::MAX));
        assert!(!w.contains(i64::MIN, i64::MAX));
    }
}
