//! Ground truth: what the counts must be, computed from the accepted events.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use schemas::fraud::{FraudRule, decide};
use schemas::rules::hour_bucket;
use schemas::{RULES_VERSION, RuleSet, ViewEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::patterns::Label;

/// Counts of one video in one UTC hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthRow {
    /// The video.
    pub video_id: String,
    /// Start of the UTC hour.
    pub hour: DateTime<Utc>,
    /// Distinct accepted events (first occurrence of each `event_id`).
    pub views: u64,
    /// Views that are billable (before the batch-only invalid-traffic
    /// rules: the speed layer's billable count).
    pub billable_views: u64,
    /// Of those, how many the batch's invalid-traffic rules remove
    /// ([`schemas::fraud::decide`]).
    #[serde(default)]
    pub fraud_filtered: u64,
    /// Sum of `watch_seconds` over views.
    pub watch_seconds: u64,
    /// Of `billable_views`, those of invalid traffic ([`Label::is_invalid`]):
    /// what perfect filtering would remove. Absent (0) without a labelled
    /// mix.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub invalid_billable_views: u64,
}

impl TruthRow {
    /// The row as the batch views table holds it: views, billable views
    /// after the invalid-traffic rules, views those rules removed, watch
    /// seconds.
    pub fn batch_counts(&self) -> [u64; 4] {
        [
            self.views,
            self.billable_views - self.fraud_filtered,
            self.fraud_filtered,
            self.watch_seconds,
        ]
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One label's events among the accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelTally {
    /// Accepted events, re-sends included.
    pub accepted_events: u64,
    /// Distinct events: views.
    pub views: u64,
    /// Billable views, before any fraud rule.
    pub billable_views: u64,
    /// Of those, the ones the invalid-traffic rules filter.
    #[serde(default)]
    pub filtered_views: u64,
    /// The filtered views by the rule they are attributed to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub filtered_by_rule: BTreeMap<String, u64>,
}

/// The truth file's top level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthFile {
    /// Counting rules version the truth was computed with.
    pub rules_version: u32,
    /// Accepted events, re-sends included.
    pub accepted_events: u64,
    /// Distinct accepted events: the total number of views.
    pub views: u64,
    /// Billable views in all.
    pub billable_views: u64,
    /// Per video per hour, sorted by video then hour.
    pub rows: Vec<TruthRow>,
    /// Per label name ([`Label::name`]), when the events had a labelled mix.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, LabelTally>,
}

/// Per (video, hour): views, billable views, watch seconds, invalid
/// billable views.
type Cell = (u64, u64, u64, u64);

/// Accumulates the truth from accepted events, in acceptance order.
#[derive(Debug, Default)]
pub struct Truth {
    rules: RuleSet,
    seen: HashSet<Uuid>,
    cells: BTreeMap<(String, DateTime<Utc>), Cell>,
    labels: BTreeMap<Label, LabelTally>,
    /// Every first sighting with its verified playback id, for the
    /// invalid-traffic rules, and its label.
    firsts: Vec<(ViewEvent, Option<String>)>,
    first_labels: Vec<Label>,
    accepted_events: u64,
}

impl Truth {
    /// An empty truth under `rules`.
    pub fn new(rules: RuleSet) -> Self {
        Self {
            rules,
            ..Self::default()
        }
    }

    /// Records one event that ingest accepted. A re-sent `event_id` is not a
    /// new view (first occurrence wins).
    pub fn record(&mut self, e: &ViewEvent) {
        self.record_labelled(e, Label::Organic);
    }

    /// Records one accepted event and what produced it.
    pub fn record_labelled(&mut self, e: &ViewEvent, label: Label) {
        self.record_played(e, label, None);
    }

    /// Records one accepted event, what produced it, and the playback id
    /// ingest verified its token with (`None`: unsigned or not checked),
    /// which the replay rule reads.
    pub fn record_played(&mut self, e: &ViewEvent, label: Label, playback_id: Option<&str>) {
        self.accepted_events += 1;
        let tally = self.labels.entry(label).or_default();
        tally.accepted_events += 1;
        if !self.seen.insert(e.event_id) {
            return;
        }
        let billable = self.rules.is_billable(e);
        tally.views += 1;
        tally.billable_views += u64::from(billable);
        let cell = self
            .cells
            .entry((e.video_id.clone(), hour_bucket(e.occurred_at)))
            .or_default();
        cell.0 += 1;
        cell.1 += u64::from(billable);
        cell.2 += u64::from(e.watch_seconds);
        cell.3 += u64::from(billable && label.is_invalid());
        self.firsts
            .push((e.clone(), playback_id.map(str::to_owned)));
        self.first_labels.push(label);
    }

    /// The rule that filters each first sighting, if any.
    fn decisions(&self) -> Vec<Option<FraudRule>> {
        decide(&self.rules, &self.firsts)
    }

    /// Filtered views per (video, hour).
    fn fraud(&self, decisions: &[Option<FraudRule>]) -> BTreeMap<(String, DateTime<Utc>), u64> {
        let mut out: BTreeMap<(String, DateTime<Utc>), u64> = BTreeMap::new();
        for ((e, _), d) in self.firsts.iter().zip(decisions) {
            if d.is_some() {
                *out.entry((e.video_id.clone(), hour_bucket(e.occurred_at)))
                    .or_default() += 1;
            }
        }
        out
    }

    /// Accepted events, re-sends included.
    pub fn accepted_events(&self) -> u64 {
        self.accepted_events
    }

    /// Distinct events: total views.
    pub fn views(&self) -> u64 {
        self.seen.len() as u64
    }

    /// Rows sorted by video, then hour.
    pub fn rows(&self) -> Vec<TruthRow> {
        self.rows_with(&self.decisions())
    }

    fn rows_with(&self, decisions: &[Option<FraudRule>]) -> Vec<TruthRow> {
        let fraud = self.fraud(decisions);
        self.cells
            .iter()
            .map(
                |((video_id, hour), &(views, billable_views, watch_seconds, invalid))| TruthRow {
                    video_id: video_id.clone(),
                    hour: *hour,
                    views,
                    billable_views,
                    fraud_filtered: fraud.get(&(video_id.clone(), *hour)).copied().unwrap_or(0),
                    watch_seconds,
                    invalid_billable_views: invalid,
                },
            )
            .collect()
    }

    /// Per label, its events and what `rules` filter of them (the same
    /// events decided by another rule set, e.g. v1's cap alone, to compare).
    pub fn labels_under(&self, rules: &RuleSet) -> BTreeMap<Label, LabelTally> {
        self.labels_with(&decide(rules, &self.firsts))
    }

    fn labels_with(&self, decisions: &[Option<FraudRule>]) -> BTreeMap<Label, LabelTally> {
        let mut labels = self.labels.clone();
        for (label, d) in self.first_labels.iter().zip(decisions) {
            if let Some(rule) = d {
                let t = labels.entry(*label).or_default();
                t.filtered_views += 1;
                *t.filtered_by_rule
                    .entry(rule.name().to_owned())
                    .or_default() += 1;
            }
        }
        labels
    }

    /// The truth as written by `viewcount gen --truth`.
    pub fn to_file(&self) -> TruthFile {
        let decisions = self.decisions();
        let rows = self.rows_with(&decisions);
        let labels = self.labels_with(&decisions);
        TruthFile {
            rules_version: RULES_VERSION,
            accepted_events: self.accepted_events,
            views: self.views(),
            billable_views: rows.iter().map(|r| r.billable_views).sum(),
            rows,
            labels: if labels.keys().any(|l| *l != Label::Organic) {
                labels
                    .iter()
                    .map(|(l, t)| (l.name().to_owned(), t.clone()))
                    .collect()
            } else {
                BTreeMap::new()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resends_count_once_and_billable_follows_rules() {
        let ctx = schemas::ValidationContext::at("2026-11-21T13:00:00Z".parse().unwrap());
        let ev = |id: &str, watch: u32, rev: bool| {
            schemas::parse_event(
                &json!({"event_id": id, "video_id": "v1", "user_id": "u",
                        "occurred_at": "2026-11-21T12:10:00Z", "watch_seconds": watch,
                        "revenue_eligible": rev}),
                &ctx,
            )
            .unwrap()
        };
        let mut t = Truth::new(RuleSet::default());
        let a = ev("8f14e45f-ceea-4e7a-9f3b-2c1d5e6a7b8c", 30, true);
        t.record(&a);
        t.record(&a);
        t.record(&ev("8f14e45f-ceea-4e7a-9f3b-2c1d5e6a7b8d", 29, true));
        t.record(&ev("8f14e45f-ceea-4e7a-9f3b-2c1d5e6a7b8e", 300, false));
        let f = t.to_file();
        assert_eq!(f.accepted_events, 4);
        assert_eq!(f.views, 3);
        assert_eq!(f.billable_views, 1);
        assert_eq!(f.rows.len(), 1);
        assert_eq!(f.rows[0].watch_seconds, 359);
    }

    #[test]
    fn labels_are_tallied_and_invalid_billable_views_kept_per_video_hour() {
        let ctx = schemas::ValidationContext::at("2026-11-21T13:00:00Z".parse().unwrap());
        let ev = |n: u32, watch: u32| {
            schemas::parse_event(
                &json!({"event_id": format!("8f14e45f-ceea-4e7a-9f3b-2c1d5e6a{n:04x}"),
                        "video_id": "v1", "user_id": "u", "occurred_at": "2026-11-21T12:10:00Z",
                        "watch_seconds": watch, "revenue_eligible": true}),
                &ctx,
            )
            .unwrap()
        };
        let mut plain = Truth::new(RuleSet::default());
        plain.record(&ev(1, 60));
        let file = plain.to_file();
        assert!(file.labels.is_empty(), "no mix: the file is as before");
        assert!(
            !serde_json::to_string(&file)
                .unwrap()
                .contains("invalid_billable")
        );

        let mut t = Truth::new(RuleSet::default());
        t.record_labelled(&ev(1, 60), Label::Organic);
        t.record_labelled(&ev(2, 60), Label::BotFarm);
        t.record_labelled(&ev(2, 60), Label::BotFarm);
        t.record_labelled(&ev(3, 10), Label::BotFarm);
        t.record_labelled(&ev(4, 60), Label::Fans);
        let f = t.to_file();
        assert_eq!(f.rows.len(), 1);
        assert_eq!(f.rows[0].billable_views, 3);
        assert_eq!(
            f.rows[0].invalid_billable_views, 1,
            "the farm's one billable view"
        );
        let farm = &f.labels["bot_farm"];
        assert_eq!(
            (farm.accepted_events, farm.views, farm.billable_views),
            (3, 2, 1)
        );
        assert_eq!(f.labels["organic_fans"].billable_views, 1);
        assert_eq!(f.labels["organic"].views, 1);
        let back: TruthFile = serde_json::from_slice(&serde_json::to_vec(&f).unwrap()).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn fraud_cap_filters_the_latest_billable_views_of_a_day() {
        let ctx = schemas::ValidationContext::at("2026-11-21T14:00:00Z".parse().unwrap());
        let mut t = Truth::new(RuleSet::default());
        for i in 0..13u32 {
            let e = schemas::parse_event(
                &json!({"event_id": format!("8f14e45f-ceea-4e7a-9f3b-2c1d5e6a{i:04x}"),
                        "video_id": "v1", "user_id": "u",
                        // Hourly, at irregular minutes (on the hour,
                        // every hour, would be a metronome's beats).
                        "occurred_at": format!("2026-11-21T{:02}:{:02}:00Z", 1 + i, i * 37 % 60),
                        "watch_seconds": 60, "revenue_eligible": true}),
                &ctx,
            )
            .unwrap();
            t.record(&e);
        }
        let rows = t.rows();
        let fraud: u64 = rows.iter().map(|r| r.fraud_filtered).sum();
        assert_eq!(fraud, 3, "13 billable views, cap 10");
        // The three latest hours (11:00 to 13:00) carry them.
        assert_eq!(rows.iter().filter(|r| r.fraud_filtered == 1).count(), 3);
        assert_eq!(rows[10].fraud_filtered, 1);
        assert_eq!(rows[9].fraud_filtered, 0);
        assert_eq!(rows.last().unwrap().fraud_filtered, 1);
    }
}
