//! Counting rules v1 (DESIGN §4): the stateless parts, shared by speed and batch.
//!
//! Dedup (first occurrence of an `event_id` wins) and the batch-only fraud cap
//! need state and live in their layers; the constants they use are here so that
//! one version number covers them all.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::ViewEvent;

/// Version of the counting rules. Bump it whenever any rule below changes
/// meaning; batch manifests record it so old runs stay explainable.
pub const RULES_VERSION: u32 = 1;

/// The configurable parameters of the counting rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountingRules {
    /// A view is billable when revenue-eligible and watched at least this long.
    pub billable_min_watch_seconds: u32,
    /// Batch only: at most this many billable views per (user, video, UTC day).
    pub fraud_cap_per_user_video_day: u32,
}

impl Default for CountingRules {
    fn default() -> Self {
        Self {
            billable_min_watch_seconds: 30,
            fraud_cap_per_user_video_day: 10,
        }
    }
}

impl CountingRules {
    /// Whether a (first-seen) view is billable, before the fraud cap.
    pub fn is_billable(&self, event: &ViewEvent) -> bool {
        event.revenue_eligible && event.watch_seconds >= self.billable_min_watch_seconds
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
}
