//! A store with an archive, batch runs over it, a catalog, a rate card and
//! a ledger key; and the expected statement, computed independently of the
//! billing crate.

use std::collections::BTreeMap;
use std::sync::Arc;

use billing::LogKey;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use loadgen::{CatalogRow, GenConfig, Generator, Truth};
use object_store::ObjectStore;
use schemas::archive::to_record_batch;
use schemas::rules::hour_bucket;
use schemas::{ArchivedEvent, ReceivedEvent, RuleSet};

pub(crate) fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// The test rate card: 2.50 by default; `creator-0001` earns 4.125 from
/// 2026-10-30 (mid-month, so its videos get two lines).
pub(crate) const RATES: &str = r#"currency = "USD"
default_cpm = "2.50"

[[override]]
creator_id = "creator-0001"
cpm = "4.125"
effective_from = 2026-10-30
"#;

pub(crate) struct World {
    _dir: tempfile::TempDir,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) key: LogKey,
    pub(crate) truth: Truth,
    pub(crate) catalog: Vec<CatalogRow>,
    next_offset: i64,
}

impl World {
    pub(crate) async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = store::layout::open(&format!("file://{}", dir.path().display())).unwrap();
        let (_, key) = LogKey::generate("test.local/ledger").unwrap();
        let catalog = loadgen::catalog(&loadgen::CatalogConfig {
            left_out_every: 7,
            ..loadgen::CatalogConfig::for_videos(40, 7)
        })
        .unwrap();
        let csv = store::catalog::to_csv(
            catalog
                .iter()
                .map(|r| [r.video_id.as_str(), r.creator_id.as_str(), r.title.as_str()]),
        );
        store::catalog::import(store.as_ref(), csv.into())
            .await
            .unwrap();
        Self {
            _dir: dir,
            store,
            key,
            truth: Truth::new(RuleSet::default()),
            catalog,
            next_offset: 0,
        }
    }

    /// Archives `events` generated events occurring in `[start, start +
    /// span)`, received at `now` (few users, so the fraud cap bites).
    pub(crate) async fn archive(
        &mut self,
        events: u64,
        seed: u64,
        start: DateTime<Utc>,
        span: Duration,
        now: DateTime<Utc>,
    ) {
        let events = Generator::new(GenConfig {
            events,
            seed,
            videos: 40,
            users: 15,
            start,
            span,
            late_ratio: 0.0,
            now,
            ..GenConfig::default()
        })
        .unwrap()
        .accepted_at(now);
        self.write(&events).await;
    }

    /// Adds `video_id` to the catalog as `creator`'s (and imports it again).
    pub(crate) async fn add_video(&mut self, video_id: &str, creator: &str) {
        self.catalog.push(CatalogRow {
            video_id: video_id.into(),
            creator_id: creator.into(),
            title: format!("{video_id} (added)"),
        });
        let csv = store::catalog::to_csv(
            self.catalog
                .iter()
                .map(|r| [r.video_id.as_str(), r.creator_id.as_str(), r.title.as_str()]),
        );
        store::catalog::import(self.store.as_ref(), csv.into())
            .await
            .unwrap();
    }

    /// Archives these events as one partition's next offsets.
    pub(crate) async fn write(&mut self, events: &[ReceivedEvent]) {
        let mut files: BTreeMap<DateTime<Utc>, Vec<ArchivedEvent>> = BTreeMap::new();
        for e in events {
            self.truth.record(&e.event);
            files
                .entry(hour_bucket(e.event.occurred_at))
                .or_default()
                .push(ArchivedEvent {
                    received: e.clone(),
                    kafka_partition: 0,
                    kafka_offset: self.next_offset,
                });
            self.next_offset += 1;
        }
        for (hour, rows) in files {
            let first = rows[0].kafka_offset;
            let last = rows[rows.len() - 1].kafka_offset;
            let bytes = store::layout::parquet_bytes(
                schemas::raw_schema(),
                &[to_record_batch(&rows).unwrap()],
            )
            .unwrap();
            store::layout::put(
                self.store.as_ref(),
                &store::layout::raw_file(hour, 0, first, last),
                bytes,
            )
            .await
            .unwrap();
        }
    }

    /// Runs and publishes the batch over `[from, to)`.
    pub(crate) async fn batch(&self, from: DateTime<Utc>, to: DateTime<Utc>) {
        let opts = batch::run::RunOptions {
            allow_incomplete: true,
            ..batch::run::RunOptions::new(from, to)
        };
        batch::run::run(self.store.clone(), &opts, &|_, _, _| {})
            .await
            .expect("batch run");
    }

    /// What the statement of the month starting `first` must say, from the
    /// generator's truth, the catalog and the rate card written out again
    /// here: (creator, video, cpm in millionths) → (billable views, cents).
    pub(crate) fn expected(&self, first: NaiveDate) -> BTreeMap<(String, String, i64), (i64, i64)> {
        let creators: BTreeMap<&str, &str> = self
            .catalog
            .iter()
            .map(|r| (r.video_id.as_str(), r.creator_id.as_str()))
            .collect();
        let override_from = NaiveDate::from_ymd_opt(2026, 10, 30).unwrap();
        let mut views: BTreeMap<(String, String, i64), i64> = BTreeMap::new();
        for r in self.truth.rows() {
            let day = r.hour.date_naive();
            if (day.year(), day.month()) != (first.year(), first.month()) {
                continue;
            }
            let Some(creator) = creators.get(r.video_id.as_str()) else {
                continue;
            };
            let billable = (r.billable_views - r.fraud_filtered) as i64;
            if billable == 0 {
                continue;
            }
            let cpm_micro = if *creator == "creator-0001" && day >= override_from {
                4_125_000
            } else {
                2_500_000
            };
            *views
                .entry((creator.to_string(), r.video_id.clone(), cpm_micro))
                .or_default() += billable;
        }
        views
            .into_iter()
            .map(|(k, v)| {
                let cents = half_even_div(i128::from(v) * i128::from(k.2), 10_000_000);
                (k, (v, cents))
            })
            .collect()
    }

    /// The truth's filtered views in October of `creator`'s videos that
    /// `keep` keeps.
    pub(crate) fn october_filtered(&self, creator: &str, keep: impl Fn(&str) -> bool) -> u64 {
        let mine: std::collections::BTreeSet<&str> = self
            .catalog
            .iter()
            .filter(|r| r.creator_id == creator)
            .map(|r| r.video_id.as_str())
            .collect();
        self.truth
            .rows()
            .iter()
            .filter(|r| {
                r.hour.date_naive().month() == 10
                    && mine.contains(r.video_id.as_str())
                    && keep(&r.video_id)
            })
            .map(|r| r.fraud_filtered)
            .sum()
    }

    /// Billable views of unattributed videos in the month.
    pub(crate) fn expected_unattributed(&self, first: NaiveDate) -> BTreeMap<String, i64> {
        let known: std::collections::BTreeSet<&str> =
            self.catalog.iter().map(|r| r.video_id.as_str()).collect();
        let mut out: BTreeMap<String, i64> = BTreeMap::new();
        for r in self.truth.rows() {
            let day = r.hour.date_naive();
            if (day.year(), day.month()) != (first.year(), first.month())
                || known.contains(r.video_id.as_str())
            {
                continue;
            }
            let b = (r.billable_views - r.fraud_filtered) as i64;
            if b > 0 {
                *out.entry(r.video_id.clone()).or_default() += b;
            }
        }
        out
    }
}

/// n / d rounded half to even, in integers.
pub(crate) fn half_even_div(n: i128, d: i128) -> i64 {
    let (q, r) = (n.div_euclid(d), n.rem_euclid(d));
    let q = match (2 * r).cmp(&d) {
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal if q % 2 != 0 => q + 1,
        _ => q,
    };
    q as i64
}

/// Parses a statement CSV into (creator, video, cpm millionths) → (views, cents), plus kind/reference.
pub(crate) fn parse_csv(bytes: &[u8]) -> Vec<(String, String, i64, i64, i64, String, String)> {
    let mut r = csv::Reader::from_reader(bytes);
    assert_eq!(
        r.headers().unwrap().iter().collect::<Vec<_>>(),
        billing::statement::CSV_HEADER
    );
    r.records()
        .map(|row| {
            let row = row.unwrap();
            let micro = |s: &str| -> i64 {
                if s.is_empty() {
                    return 0;
                }
                let (i, f) = s.split_once('.').unwrap_or((s, ""));
                let f = format!("{f:0<6}");
                i.parse::<i64>().unwrap() * 1_000_000 + f.parse::<i64>().unwrap()
            };
            let cents = |s: &str| -> i64 {
                if s.is_empty() {
                    return 0;
                }
                let neg = s.starts_with('-');
                let s = s.trim_start_matches('-');
                let (i, f) = s.split_once('.').unwrap();
                assert_eq!(f.len(), 2, "amount {s} has two decimals");
                let v = i.parse::<i64>().unwrap() * 100 + f.parse::<i64>().unwrap();
                if neg { -v } else { v }
            };
            (
                row[0].to_owned(),
                row[1].to_owned(),
                micro(&row[4]),
                row[3].parse().unwrap(),
                cents(&row[5]),
                row[7].to_owned(),
                row[8].to_owned(),
            )
        })
        .collect()
}
