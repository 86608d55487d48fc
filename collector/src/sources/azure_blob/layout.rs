//! Where Azure Monitor's diagnostic settings put archives in a storage account, and what a
//! blob's name tells about it.
//!
//! ```text
//! resourceId=/SUBSCRIPTIONS/<sub>/RESOURCEGROUPS/<rg>/PROVIDERS/MICROSOFT.APIMANAGEMENT/SERVICE/<name>/y=2024/m=11/d=05/h=09/m=00/PT1H.json
//! └──────────────────────────────── service folder ──────────────────────────────────────────┘ └──── hour folder ────┘
//! ```
//!
//! Takes blob names and the clock; gives the service folder and the hour of a blob in that
//! layout, the hour folders worth listing between full listings, the folder to list for a
//! configured prefix, and whether `not_before` skips a blob. No I/O.

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Timelike, Utc};

/// A blob in the diagnostic-setting layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placed<'a> {
    /// Everything before the `y=YYYY` folder, without the `/` that ends it (empty when the
    /// name starts with `y=`).
    pub service: &'a str,
    /// Start of the blob's hour (UTC).
    pub hour: DateTime<Utc>,
}

/// The number after `key` in `segment` (`y=2024`), of 1 to `digits` ASCII digits.
fn number(segment: &str, key: &str, digits: usize) -> Option<u32> {
    let v = segment.strip_prefix(key)?;
    if v.is_empty() || v.len() > digits || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// The service folder and hour of `name` when it holds `y=YYYY/m=MM/d=DD/h=HH` folders (the
/// first such run of segments counts); `None` for a blob outside that layout.
pub(crate) fn place(name: &str) -> Option<Placed<'_>> {
    // (byte offset, segment)
    let mut segments: Vec<(usize, &str)> = Vec::new();
    let mut at = 0usize;
    for s in name.split('/') {
        segments.push((at, s));
        at = at.saturating_add(s.len()).saturating_add(1);
    }
    for (i, &(start, seg)) in segments.iter().enumerate() {
        // The year has all four digits; month, day and hour one or two.
        let Some(y) = number(seg, "y=", 4).filter(|_| seg.len() == 6) else {
            continue;
        };
        let part = |k: usize, key: &str| {
            segments
                .get(i.saturating_add(k))
                .and_then(|&(_, s)| number(s, key, 2))
        };
        let (Some(m), Some(d), Some(h)) = (part(1, "m="), part(2, "d="), part(3, "h=")) else {
            continue;
        };
        let Ok(year) = i32::try_from(y) else {
            continue;
        };
        let Some(hour) = NaiveDate::from_ymd_opt(year, m, d)
            .and_then(|date| date.and_hms_opt(h, 0, 0))
            .map(|t| t.and_utc())
        else {
            continue;
        };
        let service = if start == 0 {
            ""
        } else {
            name.get(..start.saturating_sub(1)).unwrap_or("")
        };
        return Some(Placed { service, hour });
    }
    None
}

/// The start of the hour `t` is in.
pub(crate) fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.date_naive()
        .and_hms_opt(t.hour(), 0, 0)
        .map_or(t, |h| h.and_utc())
}

/// True once the hour starting at `hour` is over at `now`.
pub(crate) fn hour_over(hour: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    hour.checked_add_signed(TimeDelta::hours(1))
        .is_some_and(|end| end <= now)
}

/// The hour folder `<service>/y=YYYY/m=MM/d=DD/h=HH` (without a trailing `/`).
pub(crate) fn hour_folder(service: &str, hour: DateTime<Utc>) -> String {
    let folder = format!(
        "y={:04}/m={:02}/d={:02}/h={:02}",
        hour.year(),
        hour.month(),
        hour.day(),
        hour.hour()
    );
    if service.is_empty() {
        folder
    } else {
        format!("{service}/{folder}")
    }
}

/// The hour folders listed between full listings: the previous and the current hour (UTC)
/// of every service folder seen. The previous hour is there because Azure Monitor still
/// appends to an hour's blob for a few minutes after the hour ends.
pub(crate) fn recent_folders<'a>(
    services: impl IntoIterator<Item = &'a str>,
    now: DateTime<Utc>,
) -> Vec<String> {
    let current = hour_of(now);
    let previous = current.checked_sub_signed(TimeDelta::hours(1));
    let mut out = Vec::new();
    for s in services {
        if let Some(p) = previous {
            out.push(hour_folder(s, p));
        }
        out.push(hour_folder(s, current));
    }
    out
}

/// The folder a full listing of `prefix` lists (names are then filtered by the whole
/// prefix): the prefix up to its last `/`; `None` for the whole container.
pub(crate) fn list_folder(prefix: &str) -> Option<&str> {
    let folder = match prefix.rfind('/') {
        Some(i) => prefix.get(..i)?,
        None => return None,
    };
    let folder = folder.trim_matches('/');
    (!folder.is_empty()).then_some(folder)
}

/// True when `name` (a blob or a folder) lies inside `folder`, a folder without its trailing
/// `/` (`""`: the container's root, which holds everything).
pub(crate) fn within(name: &str, folder: &str) -> bool {
    folder.is_empty()
        || name
            .strip_prefix(folder)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// True when `not_before` skips a blob: by the hour in its path when it has one (skipped
/// when that whole hour ended at or before `not_before`), else by its last change.
pub(crate) fn skipped(
    hour: Option<DateTime<Utc>>,
    last_modified: DateTime<Utc>,
    not_before: Option<DateTime<Utc>>,
) -> bool {
    let Some(nb) = not_before else {
        return false;
    };
    match hour {
        Some(h) => h
            .checked_add_signed(TimeDelta::hours(1))
            .is_some_and(|end| end <= nb),
        None => last_modified < nb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const SVC: &str = "resourceId=/SUBSCRIPTIONS/0000-11/RESOURCEGROUPS/RG-1/PROVIDERS/MICROSOFT.APIMANAGEMENT/SERVICE/CONTOSO-APIM";

    #[test]
    fn the_diagnostic_layout_gives_service_and_hour() {
        let name = format!("{SVC}/y=2024/m=11/d=05/h=09/m=00/PT1H.json");
        let p = place(&name).unwrap();
        assert_eq!(p.service, SVC);
        assert_eq!(p.hour, t("2024-11-05T09:00:00Z"));
        // Without the minute folder, and at the container's root.
        let p = place("y=2024/m=1/d=2/h=3/PT1H.json").unwrap();
        assert_eq!(p.service, "");
        assert_eq!(p.hour, t("2024-01-02T03:00:00Z"));
        let p = place("x/y=2024/m=02/d=29/h=23").unwrap();
        assert_eq!((p.service, p.hour), ("x", t("2024-02-29T23:00:00Z")));
    }

    #[test]
    fn names_outside_the_layout_have_no_hour() {
        for name in [
            "logs/app.log",
            "x/y=2024/m=13/d=01/h=00/PT1H.json",
            "x/y=2023/m=02/d=29/h=00/PT1H.json",
            "x/y=2024/m=01/d=01/h=24/PT1H.json",
            "x/y=24/m=01/d=01/PT1H.json",
            "x/y=2024/m=01/d=01/hh=00/PT1H.json",
            "x/y=abcd/m=01/d=01/h=00/PT1H.json",
            "",
        ] {
            assert_eq!(place(name), None, "{name}");
        }
    }

    #[test]
    fn recent_folders_are_the_previous_and_current_hour_across_midnight_and_months() {
        let got = recent_folders(["s1", "s2"], t("2024-11-01T00:30:00Z"));
        assert_eq!(
            got,
            vec![
                "s1/y=2024/m=10/d=31/h=23",
                "s1/y=2024/m=11/d=01/h=00",
                "s2/y=2024/m=10/d=31/h=23",
                "s2/y=2024/m=11/d=01/h=00",
            ]
        );
        let got = recent_folders([""], t("2025-01-01T00:00:00Z"));
        assert_eq!(got, vec!["y=2024/m=12/d=31/h=23", "y=2025/m=01/d=01/h=00"]);
        assert!(recent_folders([""; 0], t("2025-01-01T00:00:00Z")).is_empty());
        // A listed folder places its blobs back in the same service and hour.
        let name = format!(
            "{}/m=00/PT1H.json",
            hour_folder(SVC, t("2024-11-05T09:00:00Z"))
        );
        let p = place(&name).unwrap();
        assert_eq!((p.service, p.hour), (SVC, t("2024-11-05T09:00:00Z")));
    }

    #[test]
    fn hours_end_and_not_before_skips_whole_hours_only() {
        let h = t("2024-11-05T09:00:00Z");
        assert!(!hour_over(h, t("2024-11-05T09:59:59Z")));
        assert!(hour_over(h, t("2024-11-05T10:00:00Z")));
        assert_eq!(hour_of(t("2024-11-05T09:41:07.5Z")), h);
        let lm = t("2024-11-05T10:02:00Z");
        assert!(!skipped(Some(h), lm, None));
        assert!(skipped(Some(h), lm, Some(t("2024-11-05T10:00:00Z"))));
        assert!(!skipped(Some(h), lm, Some(t("2024-11-05T09:30:00Z"))));
        assert!(skipped(None, lm, Some(t("2024-11-05T11:00:00Z"))));
        assert!(!skipped(None, lm, Some(t("2024-11-05T10:00:00Z"))));
    }

    #[test]
    fn the_listed_folder_of_a_prefix() {
        assert_eq!(list_folder(""), None);
        assert_eq!(list_folder("resourceId="), None);
        assert_eq!(
            list_folder("resourceId=/SUBSCRIPTIONS/"),
            Some("resourceId=/SUBSCRIPTIONS")
        );
        assert_eq!(
            list_folder("resourceId=/SUBSCRIPTIONS/AB"),
            Some("resourceId=/SUBSCRIPTIONS")
        );
        assert_eq!(list_folder("/logs/"), Some("logs"));
    }

    #[test]
    fn names_within_a_folder() {
        assert!(within("x/y.json", "x"));
        assert!(within("x/a/b", "x/a"));
        assert!(within("anything", ""));
        assert!(!within("x", "x"));
        assert!(!within("xy/z", "x"));
        assert!(!within("y/x/z", "x"));
    }
}
