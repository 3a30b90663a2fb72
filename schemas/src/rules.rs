//! Counting rules v1 (DESIGN §4) and the one rule set: the stateless parts,
//! shared by ingest, speed, archive and batch.
//!
//! Dedup (first occurrence of an `event_id` wins) and the batch-only fraud cap
//! need state and live in their layers; the constants they use are here so that
//! one version number covers them all.

use chrono::{DateTime, Duration, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::ViewEvent;

/// Version of the counting rules. Bump it whenever any rule below changes
/// meaning; batch manifests record it so old runs stay explainable.
pub const RULES_VERSION: u32 = 1;

/// Every configurable parameter of validation and counting, in one place.
///
/// Ingest, speed, archive and batch all take this one value (the binary's
/// flags build it once, with the same names and `VIEWCOUNT_*` variables for
/// every command), so no configuration can make one layer accept what another
/// rejects. Ingest stamps the acceptance limits it used on every Kafka record
/// ([`LIMITS_HEADER`]); a consumer whose limits are narrower refuses to run
/// rather than drop accepted views ([`RuleSet::check_limits_header`]). Batch
/// manifests record the whole set and the run id hashes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleSet {
    /// `occurred_at` may be at most this many seconds after `received_at`.
    pub max_future_seconds: u32,
    /// `occurred_at` may be at most this many seconds before `received_at`
    /// (the late-data horizon).
    pub late_horizon_seconds: u32,
    /// A view is billable when revenue-eligible and watched at least this long.
    pub billable_min_watch_seconds: u32,
    /// Batch only: at most this many billable views per (user, video, UTC day).
    pub fraud_cap_per_user_video_day: u32,
}

/// The Kafka record header in which ingest states the acceptance limits it
/// validated the record with: `late_horizon_seconds,max_future_seconds`.
pub const LIMITS_HEADER: &str = "vc-limits";

impl Default for RuleSet {
    fn default() -> Self {
        Self {
            max_future_seconds: 5 * 60,
            late_horizon_seconds: 30 * 24 * 3600,
            billable_min_watch_seconds: 30,
            fraud_cap_per_user_video_day: 10,
        }
    }
}

impl RuleSet {
    /// Whether a (first-seen) view is billable, before the fraud cap.
    pub fn is_billable(&self, event: &ViewEvent) -> bool {
        event.revenue_eligible && event.watch_seconds >= self.billable_min_watch_seconds
    }

    /// How far in the future of its receipt an event may have occurred.
    pub fn max_future(&self) -> Duration {
        Duration::seconds(self.max_future_seconds.into())
    }

    /// How far in the past of its receipt an event may have occurred.
    pub fn late_horizon(&self) -> Duration {
        Duration::seconds(self.late_horizon_seconds.into())
    }

    /// The value of [`LIMITS_HEADER`] for records accepted under this set.
    pub fn limits_header(&self) -> String {
        format!("{},{}", self.late_horizon_seconds, self.max_future_seconds)
    }

    /// Checks a record's [`LIMITS_HEADER`] against this set: a consumer must
    /// accept at least what ingest accepted, else it would silently drop
    /// accepted views. `Err` names both sides and what to change.
    pub fn check_limits_header(&self, header: &[u8]) -> Result<(), String> {
        let parsed = std::str::from_utf8(header).ok().and_then(|s| {
            let (h, f) = s.split_once(',')?;
            Some((h.parse::<u32>().ok()?, f.parse::<u32>().ok()?))
        });
        let Some((horizon, future)) = parsed else {
            return Err(format!(
                "record header {LIMITS_HEADER}={:?} is not `late_horizon_seconds,max_future_seconds`",
                String::from_utf8_lossy(header)
            ));
        };
        if horizon > self.late_horizon_seconds || future > self.max_future_seconds {
            return Err(format!(
                "ingest accepted this record with a late horizon of {horizon} s and a max future of {future} s, \
                 but this layer runs with {} s and {} s, so it would drop views ingest answered 202 for; \
                 start every layer with the same --late-horizon and --max-future (VIEWCOUNT_LATE_HORIZON, VIEWCOUNT_MAX_FUTURE)",
                self.late_horizon_seconds, self.max_future_seconds
            ));
        }
        Ok(())
    }
}

/// The counting bucket: the start of the UTC hour of `t`.
pub fn hour_bucket(t: DateTime<Utc>) -> DateTime<Utc> {
    // Rounding a valid UTC time down to the hour cannot overflow.
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

/// The start of the UTC day of `t` (the fraud cap's window).
pub fn day_bucket(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::days(1)).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_truncate_in_utc() {
        let t: DateTime<Utc> = "2026-11-21T13:59:59.999999Z".parse().unwrap();
        assert_eq!(hour_bucket(t).to_rfc3339(), "2026-11-21T13:00:00+00:00");
        assert_eq!(day_bucket(t).to_rfc3339(), "2026-11-21T00:00:00+00:00");
    }

    #[test]
    fn a_consumer_must_accept_at_least_what_ingest_accepted() {
        let ingest = RuleSet {
            late_horizon_seconds: 60 * 86_400,
            ..RuleSet::default()
        };
        let header = ingest.limits_header();
        assert_eq!(ingest.check_limits_header(header.as_bytes()), Ok(()));
        let narrow = RuleSet::default();
        let err = narrow.check_limits_header(header.as_bytes()).unwrap_err();
        assert!(
            err.contains("5184000 s") && err.contains("--late-horizon"),
            "{err}"
        );
        // Wider consumers are fine (widen consumers first, then ingest).
        assert_eq!(
            ingest.check_limits_header(narrow.limits_header().as_bytes()),
            Ok(())
        );
        assert!(narrow.check_limits_header(b"junk").is_err());
    }
}
