//! Timestamps in the contract's canonical form: UTC, microsecond precision,
//! RFC 3339. Shared by the event types and validation (neither depends on
//! the other for these).

use chrono::{DateTime, SecondsFormat, Utc};

/// Drops sub-microsecond digits: the archive stores microseconds.
pub fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// RFC 3339 with `Z` and only as many fractional digits as needed.
pub fn format_timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Parses an RFC 3339 timestamp (`T` separator, explicit offset) into UTC at
/// microsecond precision. The error says what was expected.
pub fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, String> {
    let shape_ok = s.len() >= 20 && matches!(s.as_bytes()[10], b'T' | b't');
    match DateTime::parse_from_rfc3339(s) {
        Ok(t) if shape_ok => Ok(truncate_to_micros(t.with_timezone(&Utc))),
        _ => Err(format!(
            "must be an RFC 3339 timestamp with a time zone, like \"2026-11-21T13:05:00Z\", got {:?}",
            truncate_for_message(s)
        )),
    }
}

/// A UTC instant given by a person: RFC 3339 (`2026-11-21T13:00:00Z`), or
/// a bare date (`2026-11-21`) meaning its midnight UTC. The error says
/// which forms are accepted.
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            format!(
                "{:?} is neither an RFC 3339 time (2026-11-21T13:00:00Z) nor a date (2026-11-21)",
                truncate_for_message(s)
            )
        })
}

/// Like [`parse_instant`], and the instant must start an hour (counts are
/// kept per hour, so a range inside one cannot be answered exactly).
pub fn parse_hour(s: &str) -> Result<DateTime<Utc>, String> {
    let t = parse_instant(s)?;
    if t.timestamp().rem_euclid(3600) != 0 || t.timestamp_subsec_nanos() != 0 {
        return Err(format!(
            "{:?} is not the start of an hour; counts are kept per hour, so give a time like 2026-11-21T13:00:00Z",
            truncate_for_message(s)
        ));
    }
    Ok(t)
}

/// `s`, cut to 80 characters for an error message: keeps messages short
/// when a client sends a huge value.
pub(crate) fn truncate_for_message(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_are_rfc3339_or_dates_on_the_hour() {
        let h = parse_hour("2026-11-21T13:00:00Z").unwrap();
        assert_eq!(h.to_rfc3339(), "2026-11-21T13:00:00+00:00");
        assert_eq!(
            parse_hour("2026-11-21T14:00:00+01:00").unwrap(),
            h,
            "an offset is converted to UTC"
        );
        assert_eq!(
            parse_hour("2026-11-21").unwrap().to_rfc3339(),
            "2026-11-21T00:00:00+00:00"
        );
        let e = parse_hour("2026-11-21T13:30:00Z").unwrap_err();
        assert!(e.contains("not the start of an hour"), "{e}");
        let e = parse_hour("2026-11-21T13:00:00.5Z").unwrap_err();
        assert!(e.contains("not the start of an hour"), "{e}");
        let e = parse_hour("yesterday").unwrap_err();
        assert!(e.contains("neither an RFC 3339 time"), "{e}");
    }
}
