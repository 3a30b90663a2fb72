//! Benchmark harnesses (load harnesses with one-command runners in
//! `scripts/bench`). Figures go to `BENCHMARKS.md`; nothing here asserts on
//! wall-clock time.
//!
//! - `ingest-bench`: ingest throughput vs the direct-produce ceiling.
//! - `speed-bench`: speed-layer throughput vs Redis-side ceilings, freshness
//!   under steady load, dedup memory per remembered id.
//! - `batch-bench`: the batch job's throughput vs DuckDB over the same
//!   archive.
//! - `serve-bench`: the serving API's latency under open-loop load vs the
//!   `/healthz` floor, the batch index's memory, a reload under load.
//! - `billing-bench`: a month's report over a million video-hours, `ledger
//!   verify` over ten thousand entries, proof checks, each beside a floor.
//!
//! - `fraud-bench`: the invalid-traffic rules' recall and false positives
//!   per pattern on a labelled month, and rules v2's batch time beside v1's.
//!
//! This library holds what the harnesses share: statistics, machine facts,
//! writing raw archive files and rewriting their section of `BENCHMARKS.md`.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use schemas::ArchivedEvent;
use schemas::archive::to_record_batch;

/// Raw archive rows by (hour, Kafka partition), as the archive files them.
type RawBuffer = BTreeMap<(DateTime<Utc>, i32), Vec<ArchivedEvent>>;

/// Kafka partitions of a prepared archive.
const PARTITIONS: u32 = 8;

/// Writes generated events into a store as the archive would: partitioned
/// by video, offsets in arrival order, one raw file per (hour, partition)
/// chunk, flushed every million events.
pub struct Archiver {
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    received_at: DateTime<Utc>,
    offsets: [i64; PARTITIONS as usize],
    buf: RawBuffer,
    hours: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Events written so far.
    pub events: u64,
    /// Files written so far.
    pub files: usize,
}

impl Archiver {
    /// Events received at `received_at`, into `store`.
    pub fn new(
        store: std::sync::Arc<dyn object_store::ObjectStore>,
        received_at: DateTime<Utc>,
    ) -> Self {
        Self {
            store,
            received_at,
            offsets: [0; PARTITIONS as usize],
            buf: RawBuffer::new(),
            hours: None,
            events: 0,
            files: 0,
        }
    }

    /// Archives one event.
    pub async fn push(&mut self, ev: schemas::ViewEvent) -> anyhow::Result<()> {
        let h = ev
            .video_id
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        let p = (h % PARTITIONS) as i32;
        let hour = schemas::rules::hour_bucket(ev.occurred_at);
        self.hours = Some(
            self.hours
                .map_or((hour, hour), |(lo, hi)| (lo.min(hour), hi.max(hour))),
        );
        let off = self.offsets[p as usize];
        self.offsets[p as usize] += 1;
        self.buf.entry((hour, p)).or_default().push(ArchivedEvent {
            received: schemas::ReceivedEvent::new(ev, self.received_at),
            kafka_partition: p,
            kafka_offset: off,
        });
        self.events += 1;
        if self.events.is_multiple_of(1_000_000) {
            self.flush().await?;
            eprintln!("prepared {} events", self.events);
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        for ((hour, p), rows) in std::mem::take(&mut self.buf) {
            let first = rows.first().map_or(0, |r| r.kafka_offset);
            let last = rows.last().map_or(0, |r| r.kafka_offset);
            let bytes =
                store::layout::parquet_bytes(schemas::raw_schema(), &[to_record_batch(&rows)?])?;
            store::layout::put(
                self.store.as_ref(),
                &store::layout::raw_file(hour, p, first, last),
                bytes,
            )
            .await?;
            self.files += 1;
        }
        Ok(())
    }

    /// Writes what is left; the whole UTC days the events occurred in.
    pub async fn finish(&mut self) -> anyhow::Result<(DateTime<Utc>, DateTime<Utc>)> {
        use anyhow::Context;
        use chrono::{DurationRound, TimeDelta};
        self.flush().await?;
        let (lo, hi) = self.hours.context("no events")?;
        let day = TimeDelta::days(1);
        Ok((lo.duration_trunc(day)?, (hi + day).duration_trunc(day)?))
    }
}

/// Runs a measurement in its own process (so its peak RSS is its own);
/// the JSON it prints.
pub fn measured(cmd: &mut std::process::Command, what: &str) -> anyhow::Result<serde_json::Value> {
    let out = cmd.output()?;
    if !out.status.success() {
        anyhow::bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The median of `v` (0 when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// (min, max) of `v`.
pub fn spread(v: &[f64]) -> (f64, f64) {
    (
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(0.0, f64::max),
    )
}

/// Peak resident set of this process (`VmHWM`), in MiB: measured in a
/// child process per operation, it is that operation's own.
pub fn peak_rss_mib() -> f64 {
    telemetry::process::peak_rss().map_or(0.0, |b| b as f64 / 1048576.0)
}

/// "N cores (CPU model)".
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} cores ({model})")
}

/// Rules v2 as they stood, for comparing against: impossible watch by the
/// hour limit (not concurrency), no replay rule, no metronome, bot farms
/// of any watch time and any share of their crowd.
pub fn rules_v2() -> schemas::RuleSet {
    schemas::RuleSet {
        impossible_watch_seconds: 4 * 3600,
        impossible_watch_devices: 0,
        token_replay_views: 0,
        metronome_views: 0,
        bot_farm_max_watch_seconds: 0,
        bot_farm_share_percent: 0,
        ..schemas::RuleSet::default()
    }
}

/// The labelled month of the invalid-traffic benchmarks: four weeks of
/// generated traffic ending an hour before `now`, 5 % re-sends, `fraud` and
/// `hard` shares of invalid patterns and organic hard cases.
pub fn labelled_month(
    now: DateTime<Utc>,
    events: u64,
    users: u32,
    videos: u32,
    fraud: f64,
    hard: f64,
) -> anyhow::Result<loadgen::GenConfig> {
    use chrono::{Duration, DurationRound, TimeDelta};
    let start =
        (now - Duration::days(28) - Duration::hours(1)).duration_trunc(TimeDelta::hours(1))?;
    Ok(loadgen::GenConfig {
        events,
        seed: 17,
        videos,
        users,
        invalid_ratio: 0.0,
        duplicate_ratio: 0.05,
        late_ratio: 0.0,
        start,
        span: Duration::days(28),
        now,
        mix: loadgen::Mix {
            fraud_ratio: fraud,
            hard_case_ratio: hard,
            ..loadgen::Mix::default()
        },
        ..loadgen::GenConfig::default()
    })
}

/// Replaces the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->`
/// (markers included) in `path` with `section`, or appends it.
pub fn replace_section(path: &Path, name: &str, section: &str) -> std::io::Result<()> {
    let (b, e) = (
        format!("<!-- {name}:begin -->"),
        format!("<!-- {name}:end -->"),
    );
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let new = match (old.find(&b), old.find(&e)) {
        (Some(i), Some(j)) if i < j => {
            let end = (j + e.len() + 1).min(old.len());
            format!("{}{}{}", &old[..i], section, &old[end..])
        }
        _ => format!("{}\n\n{}", old.trim_end(), section),
    };
    std::fs::write(path, new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(spread(&[3.0, 1.0, 2.0]), (1.0, 3.0));
    }

    #[test]
    fn sections_are_replaced_in_place() {
        let dir = std::env::temp_dir().join(format!("bench-md-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("B.md");
        std::fs::write(&p, "# B\n\n<!-- a:begin -->\nold\n<!-- a:end -->\ntail\n").unwrap();
        replace_section(&p, "a", "<!-- a:begin -->\nnew\n<!-- a:end -->\n").unwrap();
        replace_section(&p, "b", "<!-- b:begin -->\nb\n<!-- b:end -->\n").unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            s,
            "# B\n\n<!-- a:begin -->\nnew\n<!-- a:end -->\ntail\n\n<!-- b:begin -->\nb\n<!-- b:end -->\n"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
