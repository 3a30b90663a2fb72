//! The merge rule at work: one request's videos and range, split at the
//! watermark into batch hours (the index) and speed hours (Redis, in one
//! round trip), with what neither part covers said in warnings.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use schemas::rules::day_bucket;

use super::answers::{BatchPart, SpeedPart, SpeedStatus, UniqueViewers, by_rule_names};
use super::app::App;
use super::params::next_day;
use crate::index::Counts;
use crate::source::{Snapshot, now};
use crate::speed_part::{SpeedRead, freshness};
use crate::split::split;

/// The batch and speed parts of one range for some videos, from one
/// snapshot and one Redis round trip.
pub(crate) struct Merged {
    pub(crate) from: DateTime<Utc>,
    pub(crate) to: DateTime<Utc>,
    pub(crate) watermark: Option<DateTime<Utc>>,
    pub(crate) seq: Option<u64>,
    /// The speed part's range, if not empty.
    pub(crate) speed_range: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Per video.
    pub(crate) batch: Vec<Counts>,
    /// Per video, per hour of the speed part.
    pub(crate) speed_hours: Vec<BTreeMap<DateTime<Utc>, counters::Counts>>,
    pub(crate) status: SpeedStatus,
    pub(crate) freshness: Option<f64>,
    pub(crate) viewers: Option<(Vec<u64>, DateTime<Utc>, DateTime<Utc>)>,
    pub(crate) warnings: Vec<String>,
}

impl Merged {
    pub(crate) fn speed_total(&self, i: usize) -> counters::Counts {
        let mut c = counters::Counts::default();
        for h in self.speed_hours[i].values() {
            c.views += h.views;
            c.billable_views += h.billable_views;
            c.watch_seconds += h.watch_seconds;
        }
        c
    }

    pub(crate) fn provisional(&self) -> bool {
        self.speed_range.is_some()
    }

    pub(crate) fn batch_part(&self, c: Counts) -> BatchPart {
        BatchPart {
            views: c.views,
            billable_views: c.billable_views,
            fraud_filtered: c.fraud_filtered,
            filtered_by_rule: by_rule_names(&c),
            watch_seconds: c.watch_seconds,
            to: self
                .watermark
                .map_or(self.from, |w| w.clamp(self.from, self.to)),
            seq: self.seq,
        }
    }

    pub(crate) fn speed_part(
        &self,
        c: counters::Counts,
        viewers: Option<UniqueViewers>,
    ) -> SpeedPart {
        SpeedPart {
            status: self.status,
            views: c.views,
            billable_views: c.billable_views,
            watch_seconds: c.watch_seconds,
            from: self
                .watermark
                .map_or(self.from, |w| w.clamp(self.from, self.to)),
            freshness_seconds: self.freshness,
            unique_viewers: viewers,
        }
    }
}

pub(crate) fn add(a: Counts, b: counters::Counts) -> (u64, u64, u64) {
    (
        a.views + b.views,
        a.billable_views + b.billable_views,
        a.watch_seconds + b.watch_seconds,
    )
}

impl App {
    /// Merges `videos` over `[from, to)` from `snap` and the speed layer.
    pub(crate) async fn merge(
        &self,
        snap: &Snapshot,
        videos: &[&str],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        viewers: bool,
    ) -> Merged {
        let w = snap.index.watermark();
        let parts = split(from, to, w);
        let batch = videos
            .iter()
            .map(|v| match parts.batch {
                Some((a, b)) => snap.index.totals(v, a, b),
                None => Counts::default(),
            })
            .collect();
        let mut m = Merged {
            from,
            to,
            watermark: w,
            seq: snap.index.seq(),
            speed_range: parts.speed,
            batch,
            speed_hours: vec![BTreeMap::new(); videos.len()],
            status: SpeedStatus::Ok,
            freshness: None,
            viewers: None,
            warnings: Vec::new(),
        };
        let Some((sf, st)) = parts.speed else {
            return m;
        };
        let now = now();
        // The speed layer keeps counters for a limited time, and nothing
        // is counted far in the future: read only the days that can hold
        // data, and say what neither layer covers.
        let floor = day_bucket(now - counters::defaults::COUNTER_RETENTION);
        let read_from = sf.max(floor);
        let read_to = st.min(next_day(now) + TimeDelta::days(1));
        if sf < floor {
            m.warnings.push(format!(
                "hours from {sf} to {} are after the batch watermark and older than the speed layer keeps ({} days): they are not counted until a batch run covers them",
                floor.min(st),
                counters::defaults::COUNTER_RETENTION.num_days()
            ));
        }
        if read_from >= read_to {
            return m;
        }
        match self.speed.read(videos, read_from, read_to, viewers).await {
            SpeedRead::Ok(r) => {
                m.freshness = freshness(&r.applied_at, now);
                m.viewers = r.viewers.map(|v| {
                    (
                        v,
                        day_bucket(read_from),
                        next_day(read_to - TimeDelta::seconds(1)),
                    )
                });
                m.speed_hours = r.hours;
                let unfiltered: u64 = m
                    .speed_hours
                    .iter()
                    .flat_map(|h| h.values())
                    .map(|c| c.billable_views)
                    .sum();
                if unfiltered > 0 {
                    m.warnings.push(format!(
                        "the {unfiltered} billable views from {sf} on come from the speed layer: provisional, and not yet filtered for invalid traffic (batch decides them when it covers those hours)"
                    ));
                }
            }
            SpeedRead::Unavailable(why) => {
                self.metrics.speed_unavailable(&why);
                m.status = SpeedStatus::Unavailable;
                m.warnings.push(format!(
                    "the speed layer (Redis) did not answer ({why}): hours from {sf} on are not included; retry shortly"
                ));
            }
        }
        m
    }
}
