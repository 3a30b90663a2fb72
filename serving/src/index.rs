//! The batch part of serving, in memory: for each video, its hours in order
//! and the running sums of its counts, so the totals of any `[from, to)`
//! are two binary searches and one subtraction, and a daily series is one
//! such lookup per day.
//!
//! Built from the published state: `CURRENT` names the state, the state
//! names the run that owns each hour, and each owning run's views file gives
//! the counts of the hours it owns (and only those: a run's file may hold
//! hours another run owns now). Memory is about 36 bytes per video-hour
//! (a `u32` hour and four `u64` running sums) plus a small cost per video,
//! and 44 bytes per video-hour where the invalid-traffic rules filtered
//! views (their per-rule running sums, from the runs' filtered tables);
//! [`BatchIndex::resident_bytes`] reports it.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use object_store::ObjectStore;
use schemas::fraud::FraudRule;

use crate::Result;

/// Counts of a video over some hours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Views.
    pub views: u64,
    /// Billable views after the invalid-traffic rules.
    pub billable_views: u64,
    /// Billable views the invalid-traffic rules removed.
    pub fraud_filtered: u64,
    /// Watch seconds.
    pub watch_seconds: u64,
    /// `fraud_filtered` by the rule that removed them, in
    /// [`FraudRule::ALL`] order.
    pub filtered_by_rule: ByRule,
}

/// Filtered views per rule, in [`FraudRule::ALL`] order.
pub type ByRule = [u64; FraudRule::ALL.len()];

impl Counts {
    fn from_arrays(a: [u64; 4], by_rule: ByRule) -> Self {
        Self {
            views: a[0],
            billable_views: a[1],
            fraud_filtered: a[2],
            watch_seconds: a[3],
            filtered_by_rule: by_rule,
        }
    }
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.views += o.views;
        self.billable_views += o.billable_views;
        self.fraud_filtered += o.fraud_filtered;
        self.watch_seconds += o.watch_seconds;
        for (x, y) in self.filtered_by_rule.iter_mut().zip(o.filtered_by_rule) {
            *x += y;
        }
    }
}

/// Hours since the epoch, the index's time unit.
fn hour_no(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(3600)
}

/// Hours, sorted, and running sums of `N` counts: `sums[i]` is the total
/// of the hours before `hours[i]` (so `sums` has one more entry).
#[derive(Debug, Clone)]
struct Sums<const N: usize> {
    hours: Vec<u32>,
    sums: Vec<[u64; N]>,
}

impl<const N: usize> Default for Sums<N> {
    fn default() -> Self {
        Self {
            hours: Vec::new(),
            sums: vec![[0; N]],
        }
    }
}

impl<const N: usize> Sums<N> {
    /// From counts per hour, in hour order.
    fn of(cells: BTreeMap<u32, [u64; N]>) -> Self {
        let mut v = Self {
            hours: Vec::with_capacity(cells.len()),
            sums: Vec::with_capacity(cells.len() + 1),
        };
        let mut acc = [0u64; N];
        v.sums.push(acc);
        for (h, c) in cells {
            for (x, y) in acc.iter_mut().zip(c) {
                *x += y;
            }
            v.hours.push(h);
            v.sums.push(acc);
        }
        v
    }

    /// Index of the first hour `>= h`.
    fn lower_bound(&self, h: i64) -> usize {
        let h = h.clamp(0, i64::from(u32::MAX) + 1);
        self.hours.partition_point(|&x| i64::from(x) < h)
    }

    fn range(&self, from: i64, to: i64) -> [u64; N] {
        let mut out = [0; N];
        if from >= to {
            return out;
        }
        let (a, b) = (self.lower_bound(from), self.lower_bound(to));
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.sums[b][i] - self.sums[a][i];
        }
        out
    }

    fn heap_bytes(&self) -> usize {
        self.hours.capacity() * std::mem::size_of::<u32>()
            + self.sums.capacity() * std::mem::size_of::<[u64; N]>()
    }
}

/// One video: its counts per hour, and (only the hours where views were
/// filtered) its filtered views by rule.
#[derive(Debug, Clone, Default)]
struct Video {
    counts: Sums<4>,
    filtered: Sums<{ FraudRule::ALL.len() }>,
}

/// The published batch counts, indexed for range queries.
#[derive(Debug, Clone, Default)]
pub struct BatchIndex {
    videos: HashMap<String, Video>,
    watermark: Option<DateTime<Utc>>,
    seq: Option<u64>,
    video_hours: usize,
}

impl BatchIndex {
    /// Builds the index from `(video, hour, [views, billable, fraud
    /// filtered, watch seconds])` rows in any order; `watermark` is the
    /// published batch watermark `W`. Hours before the epoch are out of
    /// the index's range and refused by the store long before this.
    pub fn build<'a>(
        rows: impl IntoIterator<Item = (&'a str, DateTime<Utc>, [u64; 4])>,
        watermark: Option<DateTime<Utc>>,
        seq: Option<u64>,
    ) -> Self {
        let mut per_video: HashMap<String, BTreeMap<u32, [u64; 4]>> = HashMap::new();
        for (video, hour, c) in rows {
            let Ok(h) = u32::try_from(hour_no(hour)) else {
                continue;
            };
            let cell = per_video
                .entry(video.to_owned())
                .or_default()
                .entry(h)
                .or_default();
            for (x, y) in cell.iter_mut().zip(c) {
                *x += y;
            }
        }
        let mut video_hours = 0;
        let videos = per_video
            .into_iter()
            .map(|(id, hours)| {
                video_hours += hours.len();
                (
                    id,
                    Video {
                        counts: Sums::of(hours),
                        filtered: Sums::default(),
                    },
                )
            })
            .collect();
        Self {
            videos,
            watermark,
            seq,
            video_hours,
        }
    }

    /// Adds the filtered views by rule: `(video, hour, rule, views)` rows
    /// in any order (those of a video the index does not have are
    /// ignored: a filtered view is a view of the views table).
    pub fn with_filtered<'a>(
        mut self,
        rows: impl IntoIterator<Item = (&'a str, DateTime<Utc>, FraudRule, u64)>,
    ) -> Self {
        let mut per_video: HashMap<&str, BTreeMap<u32, ByRule>> = HashMap::new();
        for (video, hour, rule, n) in rows {
            let Ok(h) = u32::try_from(hour_no(hour)) else {
                continue;
            };
            per_video.entry(video).or_default().entry(h).or_default()[rule.index()] += n;
        }
        for (video, hours) in per_video {
            if let Some(v) = self.videos.get_mut(video) {
                v.filtered = Sums::of(hours);
            }
        }
        self
    }

    /// Loads the published state in force (`None` when nothing is
    /// published yet): each hour's counts from the run that owns it.
    pub async fn load(store: &dyn ObjectStore) -> Result<Option<Self>> {
        match store::state::current(store).await? {
            Some(state) => Ok(Some(Self::load_state(store, &state).await?)),
            None => Ok(None),
        }
    }

    /// Loads the published state `state`: each hour's counts from the run
    /// that owns it.
    pub async fn load_state(
        store: &dyn ObjectStore,
        state: &store::state::Published,
    ) -> Result<Self> {
        let mut runs: Vec<&String> = state.hours.values().collect();
        runs.sort();
        runs.dedup();
        let mut rows: Vec<(String, DateTime<Utc>, [u64; 4])> = Vec::new();
        let mut filtered: Vec<(String, DateTime<Utc>, FraudRule, u64)> = Vec::new();
        for run in runs {
            let manifest = state.manifest(store, run).await?;
            for ((video, hour), c) in store::views::load_views(store, &manifest).await? {
                if state.hours.get(&hour) == Some(run) {
                    rows.push((video, hour, c));
                }
            }
            // A run from before rules v2 has no filtered table: its
            // filtered views were all the daily cap's.
            for ((video, hour), rules) in
                store::filtered::load_by_video_hour(store, &manifest).await?
            {
                if state.hours.get(&hour) == Some(run) {
                    for (rule, n) in rules {
                        filtered.push((video.clone(), hour, rule, n));
                    }
                }
            }
        }
        Ok(Self::build(
            rows.iter().map(|(v, h, c)| (v.as_str(), *h, *c)),
            state.watermark,
            Some(state.seq),
        )
        .with_filtered(filtered.iter().map(|(v, h, r, n)| (v.as_str(), *h, *r, *n))))
    }

    /// The batch watermark `W` the index was built at.
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        self.watermark
    }

    /// The published state's sequence number, if loaded from one.
    pub fn seq(&self) -> Option<u64> {
        self.seq
    }

    /// Whether the index has any hour of `video`.
    pub fn has_video(&self, video: &str) -> bool {
        self.videos.contains_key(video)
    }

    /// Totals of `video` over `[from, to)` (zero for an unknown video).
    pub fn totals(&self, video: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Counts {
        let Some(v) = self.videos.get(video) else {
            return Counts::default();
        };
        let (from, to) = (hour_no(from), hour_no(to));
        let mut c = Counts::from_arrays(v.counts.range(from, to), v.filtered.range(from, to));
        // Filtered views of a run without a filtered table (rules v1)
        // were the daily cap's.
        let by_rule: u64 = c.filtered_by_rule.iter().sum();
        c.filtered_by_rule[FraudRule::DailyCap.index()] += c.fraud_filtered.saturating_sub(by_rule);
        c
    }

    /// Totals of `video` per step of `step` hours (1: hourly, 24: daily)
    /// from `from`, the last step cut at `to`.
    pub fn series(
        &self,
        video: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step: TimeDelta,
    ) -> Vec<(DateTime<Utc>, Counts)> {
        let mut out = Vec::new();
        if step <= TimeDelta::zero() {
            return out;
        }
        let mut at = from;
        while at < to {
            let next = (at + step).min(to);
            out.push((at, self.totals(video, at, next)));
            at = next;
        }
        out
    }

    /// Number of videos.
    pub fn videos(&self) -> usize {
        self.videos.len()
    }

    /// Number of (video, hour) cells.
    pub fn video_hours(&self) -> usize {
        self.video_hours
    }

    /// Approximate heap bytes held: the per-hour arrays at their capacity,
    /// video ids and the map's slots.
    pub fn resident_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(String, Video)>() + 1;
        self.videos.capacity() * slot
            + self
                .videos
                .iter()
                .map(|(id, v)| id.capacity() + v.counts.heap_bytes() + v.filtered.heap_bytes())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    fn hour(h: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(h * 3600, 0).single().unwrap()
    }

    type Rows = Vec<(String, i64, [u64; 4])>;

    fn index(rows: &Rows) -> BatchIndex {
        BatchIndex::build(
            rows.iter().map(|(v, h, c)| (v.as_str(), hour(*h), *c)),
            None,
            None,
        )
    }

    fn brute(rows: &Rows, video: &str, from: i64, to: i64) -> Counts {
        let mut c = [0u64; 4];
        for (v, h, x) in rows {
            if v == video && from <= *h && *h < to {
                for (a, b) in c.iter_mut().zip(x) {
                    *a += b;
                }
            }
        }
        // Without a filtered table, filtered views are the daily cap's.
        let mut by_rule = ByRule::default();
        by_rule[FraudRule::DailyCap.index()] = c[2];
        Counts::from_arrays(c, by_rule)
    }

    fn rows() -> impl Strategy<Value = Rows> {
        proptest::collection::vec(
            (
                prop_oneof![
                    Just("a".to_owned()),
                    Just("b".to_owned()),
                    Just("c".to_owned())
                ],
                400_000i64..400_200,
                proptest::array::uniform4(0u64..1_000),
            ),
            0..200,
        )
    }

    proptest! {
        /// Any range's totals equal the sum of its rows, repeated rows of an
        /// hour added up.
        #[test]
        fn range_totals_equal_the_rows_in_range(
            rows in rows(), from in 399_990i64..400_210, len in 0i64..250,
        ) {
            let idx = index(&rows);
            for v in ["a", "b", "c", "zzz"] {
                prop_assert_eq!(
                    idx.totals(v, hour(from), hour(from + len)),
                    brute(&rows, v, from, from + len)
                );
            }
        }

        /// A daily series adds up to the range's totals, day by day.
        #[test]
        fn daily_series_partition_the_range(rows in rows(), from in 399_990i64..400_210, len in 0i64..250) {
            let idx = index(&rows);
            let series = idx.series("a", hour(from), hour(from + len), TimeDelta::hours(24));
            let mut sum = [0u64; 4];
            for (at, c) in &series {
                let end = (*at + TimeDelta::hours(24)).min(hour(from + len));
                prop_assert_eq!(*c, brute(&rows, "a", hour_no(*at), hour_no(end)));
                sum[0] += c.views;
            }
            prop_assert_eq!(sum[0], brute(&rows, "a", from, from + len).views);
        }
    }

    #[test]
    fn filtered_views_by_rule_add_up_over_a_range() {
        let rows: Rows = vec![
            ("a".into(), 400_000, [10, 4, 6, 100]),
            ("a".into(), 400_001, [10, 9, 1, 100]),
            ("a".into(), 400_002, [10, 8, 2, 100]),
        ];
        let idx = index(&rows).with_filtered([
            ("a", hour(400_000), FraudRule::BotFarm, 5),
            ("a", hour(400_000), FraudRule::DailyCap, 1),
            ("a", hour(400_001), FraudRule::RepeatLoop, 1),
            ("a", hour(400_002), FraudRule::BotFarm, 2),
            ("gone", hour(400_002), FraudRule::BotFarm, 2),
        ]);
        let by = |from, to| idx.totals("a", hour(from), hour(to)).filtered_by_rule;
        let rule = |r: FraudRule, n: u64| {
            let mut b = ByRule::default();
            b[r.index()] = n;
            b
        };
        assert_eq!(by(400_001, 400_002), rule(FraudRule::RepeatLoop, 1));
        let all = by(400_000, 400_003);
        assert_eq!(all[FraudRule::BotFarm.index()], 7);
        assert_eq!(all.iter().sum::<u64>(), 9, "the range's fraud_filtered");
        assert_eq!(
            idx.totals("gone", hour(0), hour(500_000)),
            Counts::default()
        );
    }

    #[test]
    fn memory_is_about_36_bytes_per_video_hour() {
        let rows: Rows = (0..1_000)
            .flat_map(|v| (0..200).map(move |h| (format!("v{v:05}"), 400_000 + h, [1, 1, 0, 30])))
            .collect();
        let idx = index(&rows);
        assert_eq!((idx.videos(), idx.video_hours()), (1_000, 200_000));
        let per = idx.resident_bytes() as f64 / idx.video_hours() as f64;
        assert!((36.0..40.0).contains(&per), "{per} bytes per video-hour");
    }

    #[tokio::test]
    async fn loads_each_hour_from_the_run_that_owns_it() {
        use store::views::{ViewRow, views_batch};
        let dir = tempfile::tempdir().unwrap();
        let s = store::layout::open(&format!("file://{}", dir.path().display())).unwrap();
        assert!(BatchIndex::load(s.as_ref()).await.unwrap().is_none());
        let write = |run: &'static str, rows: Vec<(i64, i64)>| {
            let s = s.clone();
            async move {
                let batch = views_batch(rows.iter().map(|&(h, views)| ViewRow {
                    video_id: "v1",
                    hour_us: hour(h).timestamp_micros(),
                    views,
                    billable_views: views,
                    fraud_filtered: 0,
                    watch_seconds: views * 10,
                    sketch: store::sketch::Sketch::default().to_bytes(),
                }))
                .unwrap();
                let sha =
                    store::views::put_run(s.as_ref(), run, &[batch], hour(400_000), hour(400_003))
                        .await
                        .unwrap();
                (run.to_owned(), sha)
            }
        };
        // run1 counted hours 0..3 with 5 views each; run2 recounted hour 1
        // with 7. The state says hour 1 is run2's: 5 + 7 + 5, not 5+5+5+7.
        let manifests = [
            write("run1", vec![(400_000, 5), (400_001, 5), (400_002, 5)]).await,
            write("run2", vec![(400_001, 7)]).await,
        ]
        .into();
        let state = store::state::Published {
            seq: 1,
            hours: [(400_000, "run1"), (400_001, "run2"), (400_002, "run1")]
                .into_iter()
                .map(|(h, r)| (hour(h), r.to_owned()))
                .collect(),
            watermark: Some(hour(400_003)),
            published_at: hour(400_010),
            manifests,
            prev_sha256: None,
        };
        store::layout::put_json(s.as_ref(), &store::layout::published(1), &state)
            .await
            .unwrap();
        let idx = BatchIndex::load(s.as_ref()).await.unwrap().unwrap();
        assert_eq!(idx.watermark(), Some(hour(400_003)));
        assert_eq!(idx.seq(), Some(1));
        let c = idx.totals("v1", hour(400_000), hour(400_003));
        assert_eq!((c.views, c.watch_seconds), (17, 170));
        assert_eq!(idx.totals("v1", hour(400_001), hour(400_002)).views, 7);
    }
}
