//! `viewcount status [--json]`: the pipeline's health at a glance, for an
//! operator: consumer lag per consumer and partition, speed freshness,
//! archive progress, batch watermark and last run, dirty hours, ledger head.
//!
//! Lag is measured against the positions each consumer keeps itself (the
//! speed layer's offsets in Redis, the archive's progress in the store):
//! those are what it resumes from; Kafka's committed offsets are advisory.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use batch::run::RunOptions;
use chrono::{DateTime, Utc};
use counters::keys::KeySpace;
use object_store::ObjectStore;
use serde::Serialize;

use crate::batch_cmd::StoreFlag;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    store: StoreFlag,
    /// Kafka bootstrap servers, for consumer lag (left out without it).
    #[arg(long, env = "VIEWCOUNT_KAFKA")]
    kafka: Option<String>,
    /// The event topic.
    #[arg(long, env = "VIEWCOUNT_TOPIC", default_value = crate::util::DEFAULT_TOPIC)]
    topic: String,
    /// The speed layer's Redis, for its offsets and freshness (left out without it).
    #[arg(long, env = "VIEWCOUNT_REDIS_URL")]
    redis_url: Option<String>,
    /// Prefix of the speed layer's keys.
    #[arg(long, env = "VIEWCOUNT_REDIS_PREFIX", default_value = speed::defaults::KEY_PREFIX)]
    redis_prefix: String,
    /// Events for an hour received later than this after its end are late data.
    #[arg(long, env = "VIEWCOUNT_LATENESS", default_value_t = RunOptions::DEFAULT_LATENESS.to_std().unwrap_or_default().into())]
    lateness: humantime::Duration,
    #[command(flatten)]
    rules: crate::util::RuleFlags,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Everything `status` reports.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    pub(crate) at: DateTime<Utc>,
    pub(crate) store: String,
    /// Per partition: the topic's end and each consumer's position and lag.
    pub(crate) partitions: Vec<PartitionStatus>,
    pub(crate) archive: ArchiveStatus,
    /// `None` without `--redis-url`.
    pub(crate) speed: Option<SpeedStatus>,
    pub(crate) batch: BatchStatus,
    pub(crate) dirty: batch::dirty::Plan,
    pub(crate) ledger: LedgerStatus,
}

#[derive(Debug, Serialize)]
pub(crate) struct PartitionStatus {
    pub(crate) partition: i32,
    /// The topic's high watermark (`None` without `--kafka`).
    pub(crate) end_offset: Option<i64>,
    pub(crate) speed_offset: Option<i64>,
    pub(crate) speed_lag: Option<i64>,
    pub(crate) archive_offset: Option<i64>,
    pub(crate) archive_lag: Option<i64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ArchiveStatus {
    pub(crate) topic: Option<String>,
    /// Every record received up to this instant is archived (slowest partition).
    pub(crate) complete_through: Option<DateTime<Utc>>,
    /// Hours before this are complete.
    pub(crate) watermark: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct SpeedStatus {
    /// Seconds since the stalest partition's newest applied receipt.
    pub(crate) freshness_seconds: Option<f64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct BatchStatus {
    pub(crate) watermark: Option<DateTime<Utc>>,
    pub(crate) published_seq: Option<u64>,
    pub(crate) published_at: Option<DateTime<Utc>>,
    pub(crate) last_run: Option<LastRun>,
}

#[derive(Debug, Serialize)]
pub(crate) struct LastRun {
    pub(crate) run_id: String,
    pub(crate) from: DateTime<Utc>,
    pub(crate) to: DateTime<Utc>,
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) seconds: f64,
    pub(crate) views: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct LedgerStatus {
    /// Entries (the latest checkpoint's tree size).
    pub(crate) size: u64,
    /// The latest checkpoint's origin and root hash (base64).
    pub(crate) origin: Option<String>,
    pub(crate) root: Option<String>,
}

/// Where to look.
pub(crate) struct Sources<'a> {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) store_url: &'a str,
    pub(crate) kafka: Option<(&'a str, &'a str)>,
    pub(crate) redis: Option<(&'a str, &'a KeySpace)>,
    pub(crate) opts: &'a RunOptions,
}

/// Gathers the status.
pub(crate) async fn gather(s: &Sources<'_>) -> anyhow::Result<Status> {
    let store = s.store.as_ref();
    let (meta, progress) = store::progress::load(store).await?;
    let partitions = meta.as_ref().map_or(0, |m| m.partitions);
    let dirty = batch::dirty::plan(store, s.opts).await?;
    let published = store::state::current(store).await?;
    let last_run = match &published {
        Some(p) => last_run(store, p).await?,
        None => None,
    };
    let ends = match s.kafka {
        Some((bootstrap, topic)) => {
            let (b, t) = (bootstrap.to_owned(), topic.to_owned());
            let n = partitions.max(1);
            Some(
                tokio::task::spawn_blocking(move || {
                    infra::kafka::high_watermarks(&b, &t, n, Duration::from_secs(10))
                })
                .await?
                .with_context(|| {
                    format!("reading the end offsets of {topic:?} from {bootstrap}")
                })?,
            )
        }
        None => None,
    };
    let (speed, speed_offsets) = match s.redis {
        Some((url, keys)) => {
            let mut conn = counters::conn::connect_reader(url)
                .await
                .with_context(|| format!("connecting to redis at {url}"))?;
            let n = counters::read::stored_partitions(&mut conn, keys)
                .await?
                .unwrap_or(partitions);
            let applied = counters::read::applied_at(&mut conn, keys, n).await?;
            let offsets = counters::read::stored_offsets(&mut conn, keys, n).await?;
            (
                Some(SpeedStatus {
                    freshness_seconds: serving::speed_part::freshness(&applied, Utc::now()),
                }),
                offsets,
            )
        }
        None => (None, Vec::new()),
    };
    let n = partitions
        .max(ends.as_ref().map_or(0, |e| e.len() as i32))
        .max(speed_offsets.len() as i32);
    let partitions = (0..n)
        .map(|p| {
            let end = ends.as_ref().and_then(|e| e.get(p as usize).copied());
            let speed_offset = speed_offsets.get(p as usize).copied().flatten();
            let archive_offset = progress
                .iter()
                .find(|x| x.partition == p)
                .map(|x| x.next_offset);
            let lag = |pos: Option<i64>| end.map(|e| (e - pos.unwrap_or(0)).max(0));
            PartitionStatus {
                partition: p,
                end_offset: end,
                speed_offset,
                speed_lag: if s.redis.is_some() {
                    lag(speed_offset)
                } else {
                    None
                },
                archive_offset,
                archive_lag: lag(archive_offset),
            }
        })
        .collect();
    let checkpoint = billing::ledger::Ledger::new(s.store.clone())
        .latest_checkpoint()
        .await?;
    let ledger = match checkpoint {
        Some(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let mut lines = text.lines();
            LedgerStatus {
                origin: lines.next().map(str::to_owned),
                size: lines.next().and_then(|l| l.parse().ok()).unwrap_or(0),
                root: lines.next().map(str::to_owned),
            }
        }
        None => LedgerStatus {
            size: 0,
            origin: None,
            root: None,
        },
    };
    Ok(Status {
        at: Utc::now(),
        store: s.store_url.to_owned(),
        partitions,
        archive: ArchiveStatus {
            topic: meta.map(|m| m.topic),
            complete_through: progress.iter().map(|p| p.complete_through).min(),
            watermark: dirty.archive_watermark,
        },
        speed,
        batch: BatchStatus {
            watermark: published.as_ref().and_then(|p| p.watermark),
            published_seq: published.as_ref().map(|p| p.seq),
            published_at: published.as_ref().map(|p| p.published_at),
            last_run,
        },
        dirty,
        ledger,
    })
}

/// The run that made the latest published state: the one owning hours it
/// did not own in the state before.
async fn last_run(
    store: &dyn ObjectStore,
    p: &store::state::Published,
) -> anyhow::Result<Option<LastRun>> {
    let before: Option<store::state::Published> = match p.seq {
        1 => None,
        seq => store::layout::get_json(store, &store::layout::published(seq - 1)).await?,
    };
    let changed = p.hours.iter().find(|(h, run)| {
        before
            .as_ref()
            .is_none_or(|b| b.hours.get(*h) != Some(*run))
    });
    let Some((_, run_id)) = changed else {
        return Ok(None);
    };
    let m = Some(p.manifest(store, run_id).await?);
    Ok(m.map(|m| LastRun {
        run_id: m.run_id,
        from: m.from,
        to: m.to,
        started_at: m.started_at,
        seconds: m.seconds,
        views: m.rows.views,
    }))
}

pub(crate) async fn run(a: Args) -> anyhow::Result<()> {
    let url = a.store.url();
    let store = store::open(&url)?;
    let now = Utc::now();
    let opts = RunOptions {
        rules: a.rules.rules()?,
        lateness: chrono::Duration::from_std(a.lateness.into())
            .context("--lateness is out of range")?,
        ..RunOptions::new(now, now)
    };
    let keys = KeySpace::new(&a.redis_prefix, speed::defaults::DEDUP_BUCKET_BITS);
    let status = gather(&Sources {
        store,
        store_url: &url,
        kafka: a.kafka.as_deref().map(|k| (k, a.topic.as_str())),
        redis: a.redis_url.as_deref().map(|u| (u, &keys)),
        opts: &opts,
    })
    .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status));
    }
    Ok(())
}

fn t(x: Option<DateTime<Utc>>) -> String {
    x.map_or("none".to_owned(), |t| {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    })
}

fn n(x: Option<i64>) -> String {
    x.map_or("-".to_owned(), |v| v.to_string())
}

/// The status as text.
pub(crate) fn render(s: &Status) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "store    {}  (at {})", s.store, t(Some(s.at)));
    let _ = writeln!(
        o,
        "archive  topic {}, complete through {}, watermark {}",
        s.archive.topic.as_deref().unwrap_or("none"),
        t(s.archive.complete_through),
        t(s.archive.watermark)
    );
    match &s.speed {
        Some(sp) => {
            let _ = writeln!(
                o,
                "speed    freshness {}",
                sp.freshness_seconds
                    .map_or("none (nothing applied yet)".to_owned(), |f| format!(
                        "{f:.1} s"
                    ))
            );
        }
        None => {
            let _ = writeln!(o, "speed    (give --redis-url for offsets and freshness)");
        }
    }
    if !s.partitions.is_empty() {
        let _ = writeln!(
            o,
            "lag      {:>9} {:>12} {:>12} {:>9} {:>12} {:>9}",
            "partition", "end", "speed at", "speed lag", "archive at", "arch. lag"
        );
        for p in &s.partitions {
            let _ = writeln!(
                o,
                "         {:>9} {:>12} {:>12} {:>9} {:>12} {:>9}",
                p.partition,
                n(p.end_offset),
                n(p.speed_offset),
                n(p.speed_lag),
                n(p.archive_offset),
                n(p.archive_lag)
            );
        }
    }
    let _ = writeln!(
        o,
        "batch    watermark {}, published state #{} at {}",
        t(s.batch.watermark),
        s.batch
            .published_seq
            .map_or("none".to_owned(), |x| x.to_string()),
        t(s.batch.published_at)
    );
    if let Some(r) = &s.batch.last_run {
        let _ = writeln!(
            o,
            "         last run {} [{}, {}) started {} took {:.2} s, {} views",
            r.run_id,
            t(Some(r.from)),
            t(Some(r.to)),
            t(Some(r.started_at)),
            r.seconds,
            r.views
        );
    }
    let _ = writeln!(
        o,
        "dirty    {} hour(s) with late or uncovered data, {} new complete hour(s): {} run(s) pending",
        s.dirty.dirty.len(),
        s.dirty.new_hours,
        s.dirty.runs.len()
    );
    for d in s.dirty.dirty.iter().take(crate::batch_cmd::SHOWN) {
        let _ = writeln!(o, "         {}  {}", t(Some(d.hour)), d.why);
    }
    if s.dirty.dirty.len() > crate::batch_cmd::SHOWN {
        let _ = writeln!(
            o,
            "         ... and {} more (--json lists them all)",
            s.dirty.dirty.len() - crate::batch_cmd::SHOWN
        );
    }
    let _ = writeln!(
        o,
        "ledger   {} entries; checkpoint {} root {}",
        s.ledger.size,
        s.ledger.origin.as_deref().unwrap_or("none"),
        s.ledger.root.as_deref().unwrap_or("-")
    );
    o
}
