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
