//! The JSON shapes of the views answers (DESIGN §6 names their fields):
//! a total with its batch and speed parts, series points, creator rows.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::index::Counts;

/// The rules that removed views, by name, with how many.
pub(crate) fn by_rule_names(c: &Counts) -> BTreeMap<&'static str, u64> {
    schemas::fraud::FraudRule::ALL
        .iter()
        .zip(c.filtered_by_rule)
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (r.name(), n))
        .collect()
}

/// The batch part of an answer: hours `[from, to)` before the watermark.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchPart {
    pub(crate) views: u64,
    /// Billable views after the invalid-traffic rules: what is paid.
    pub(crate) billable_views: u64,
    /// Billable views the invalid-traffic rules removed (not paid).
    pub(crate) fraud_filtered: u64,
    /// `fraud_filtered` by the rule that removed them (`token_replay`,
    /// `impossible_watch`, `repeat_loop`, `zero_engagement`, `bot_farm`,
    /// `daily_cap`, `metronome`; only rules that removed any). The README
    /// describes each rule.
    pub(crate) filtered_by_rule: BTreeMap<&'static str, u64>,
    pub(crate) watch_seconds: u64,
    /// End of the batch part: `min(to, W)` (never before `from`).
    #[schema(value_type = String, format = DateTime)]
    pub(crate) to: DateTime<Utc>,
    /// Sequence number of the published state answered from (`null`:
    /// nothing published yet).
    pub(crate) seq: Option<u64>,
}

/// Whether the speed part could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SpeedStatus {
    /// Read (or nothing to read: the range ends before `W`).
    Ok,
    /// Redis did not answer: the answer holds batch alone.
    Unavailable,
}

/// The speed part of an answer: hours `[from, to)` from the watermark on.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpeedPart {
    pub(crate) status: SpeedStatus,
    pub(crate) views: u64,
    pub(crate) billable_views: u64,
    pub(crate) watch_seconds: u64,
    /// Start of the speed part: `max(from, W)` (never after `to`).
    #[schema(value_type = String, format = DateTime)]
    pub(crate) from: DateTime<Utc>,
    /// Every speed count includes all events received up to this many
    /// seconds ago (`null`: nothing applied yet, or not read).
    pub(crate) freshness_seconds: Option<f64>,
    /// Distinct viewers in the speed part, where the speed layer keeps
    /// them (only in a video's totals).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) unique_viewers: Option<UniqueViewers>,
}

/// A HyperLogLog estimate of distinct viewers. The speed layer keeps them
/// per UTC day, so the estimate covers the whole days `[from, to)` that
/// hold the speed part. It is never added to another distinct count.
#[derive(Debug, Serialize, ToSchema)]
pub struct UniqueViewers {
    pub(crate) estimate: u64,
    #[schema(value_type = String, format = DateTime)]
    pub(crate) from: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub(crate) to: DateTime<Utc>,
}

/// A video's views over `[from, to)`.
#[derive(Debug, Serialize, ToSchema)]
pub struct VideoViews {
    pub(crate) video_id: String,
    /// Owner by the catalog in force (`null`: unattributed).
    pub(crate) creator_id: Option<String>,
    pub(crate) title: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub(crate) from: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub(crate) to: DateTime<Utc>,
    pub(crate) views: u64,
    pub(crate) billable_views: u64,
    pub(crate) watch_seconds: u64,
    /// True when any hour of the range came from the speed layer (the
    /// numbers may still change).
    pub(crate) provisional: bool,
    /// The batch watermark `W` (`null`: nothing published yet).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub(crate) watermark: Option<DateTime<Utc>>,
    pub(crate) batch: BatchPart,
    pub(crate) speed: SpeedPart,
    /// Anything the numbers do not include, in words.
    pub(crate) warnings: Vec<String>,
}

/// Where a series point's counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PointSource {
    /// Every hour before `W`.
    Batch,
    /// Every hour from `W` on.
    Speed,
    /// A day that `W` cuts.
    Mixed,
}

/// One step of a series.
#[derive(Debug, Serialize, ToSchema)]
pub struct Point {
    #[schema(value_type = String, format = DateTime)]
    pub(crate) start: DateTime<Utc>,
    pub(crate) views: u64,
    pub(crate) billable_views: u64,
    pub(crate) watch_seconds: u64,
    pub(crate) source: PointSource,
}

/// The state of the speed part of a series.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpeedState {
    pub(crate) status: SpeedStatus,
    pub(crate) freshness_seconds: Option<f64>,
}

/// Views per hour or per day.
#[derive(Debug, Serialize, ToSchema)]
pub struct Series {
    /// The video (video series) or `null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) video_id: Option<String>,
    /// The owner (video series) or the creator (creator series).
    pub(crate) creator_id: Option<String>,
    /// `hour` or `day`.
    pub(crate) granularity: String,
    #[schema(value_type = String, format = DateTime)]
    pub(crate) from: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub(crate) to: DateTime<Utc>,
    pub(crate) provisional: bool,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub(crate) watermark: Option<DateTime<Utc>>,
    pub(crate) speed: SpeedState,
    pub(crate) points: Vec<Point>,
    pub(crate) warnings: Vec<String>,
}

/// One video of a creator listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatorRow {
    pub(crate) video_id: String,
    pub(crate) title: String,
    pub(crate) views: u64,
    pub(crate) billable_views: u64,
    pub(crate) watch_seconds: u64,
    /// Views from the speed part (included in `views`).
    pub(crate) speed_views: u64,
    /// Billable views of the batch part the invalid-traffic rules removed
    /// (the speed part is not filtered yet).
    pub(crate) fraud_filtered: u64,
    /// `fraud_filtered` by rule, as in [`BatchPart`].
    pub(crate) filtered_by_rule: BTreeMap<&'static str, u64>,
}

/// A creator's videos over `[from, to)`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatorViews {
    pub(crate) creator_id: String,
    #[schema(value_type = String, format = DateTime)]
    pub(crate) from: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub(crate) to: DateTime<Utc>,
    /// Totals over all the creator's videos (not only the rows shown).
    pub(crate) views: u64,
    pub(crate) billable_views: u64,
    pub(crate) watch_seconds: u64,
    pub(crate) provisional: bool,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub(crate) watermark: Option<DateTime<Utc>>,
    pub(crate) batch: BatchPart,
    pub(crate) speed: SpeedPart,
    /// Videos the catalog gives the creator.
    pub(crate) videos: usize,
    /// The first `limit` videos by `sort`.
    pub(crate) rows: Vec<CreatorRow>,
    pub(crate) warnings: Vec<String>,
}

/// A video's catalog entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct VideoEntry {
    pub(crate) video_id: String,
    pub(crate) creator_id: String,
    pub(crate) title: String,
}
