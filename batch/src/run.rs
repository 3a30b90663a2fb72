//! `viewcount batch run --from --to`: the authoritative recomputation.
//!
//! 1. Plan: clamp the range to complete hours (archive watermark), list the
//!    raw files of every *day* the range touches (the fraud cap counts per UTC
//!    day, so an hour needs its day's earlier hours), checksum them. The run id
//!    is a hash of the inputs, range, rules and code version: the same inputs
//!    give the same id and the same output path, so reruns are idempotent.
//! 2. Compute with an [`Engine`]: re-validate every row with the `schemas`
//!    rules, keep the first copy of each `event_id` (earliest `received_at`,
//!    then lowest partition and offset), apply the fraud cap, and aggregate
//!    per video per hour with sketches of unique viewers. The native engine
//!    ([`crate::count`]) reads each input once, checksumming and counting the
//!    same bytes; the SQL engine ([`crate::sql`]) states the same rules in
//!    DataFusion SQL and gives byte-identical output.
//! 3. Write `views/run=<id>/part-0.parquet` sorted by (video, hour) with fixed
//!    writer settings (same rows → same bytes), then the manifest, then
//!    publish (see [`crate::publish`]).

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use arrow::array::{
    ArrayRef, AsArray, BinaryBuilder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{
    DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use chrono::{DateTime, Duration, DurationRound, TimeDelta, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use schemas::{CountingRules, RULES_VERSION};
use serde::{Deserialize, Serialize};

use crate::publish::{self, Published};
use crate::{Error, Result, count, progress, sql, store};

/// Code version recorded in manifests.
pub const CODE_VERSION: &str = env!("CARGO_PKG_VERSION");

static VIEWS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("video_id", DataType::Utf8, false),
        Field::new(
            "hour",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("views", DataType::Int64, false),
        Field::new("billable_views", DataType::Int64, false),
        Field::new("fraud_filtered", DataType::Int64, false),
        Field::new("watch_seconds", DataType::Int64, false),
        Field::new("unique_viewers_sketch", DataType::Binary, false),
    ]))
});

/// The views schema (DESIGN §6 column names).
pub fn views_schema() -> SchemaRef {
    VIEWS_SCHEMA.clone()
}

/// How a run computes (both give byte-identical output).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The native engine ([`crate::count`]): one read of each input, hash
    /// tables, all cores. The default.
    #[default]
    Native,
    /// The rules as DataFusion SQL ([`crate::sql`]): the executable
    /// specification, for cross-checking a run.
    Sql,
}

impl Engine {
    /// `native` or `sql`.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Native => "native",
            Engine::Sql => "sql",
        }
    }

    /// Parses `native` or `sql`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "native" => Ok(Engine::Native),
            "sql" => Ok(Engine::Sql),
            other => Err(Error::Input(format!(
                "unknown engine {other:?}: use native (the default) or sql"
            ))),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// First hour (inclusive).
    pub from: DateTime<Utc>,
    /// End (exclusive).
    pub to: DateTime<Utc>,
    /// Counting rules.
    pub rules: CountingRules,
    /// Allowed lateness for the archive watermark.
    pub lateness: Duration,
    /// Compute hours past the archive watermark too (they are not complete;
    /// for tests and backfills of closed archives).
    pub allow_incomplete: bool,
    /// Plan only: say what would be read and written.
    pub dry_run: bool,
    /// How to compute.
    pub engine: Engine,
}

impl RunOptions {
    /// Allowed lateness unless configured: 10 minutes.
    pub const DEFAULT_LATENESS: Duration = Duration::minutes(10);

    /// Hours `[from, to)` with the default rules and lateness, complete hours
    /// only, computed and published by the native engine.
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        Self {
            from,
            to,
            rules: CountingRules::default(),
            lateness: Self::DEFAULT_LATENESS,
            allow_incomplete: false,
            dry_run: false,
            engine: Engine::default(),
        }
    }
}

/// One input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    /// Object path.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Hex SHA-256.
    pub sha256: String,
}

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// Object path.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Hex SHA-256.
    pub sha256: String,
    /// Rows.
    pub rows: u64,
}

/// Row counts of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rows {
    /// Rows read from the archive (whole days).
    pub input: u64,
    /// Rows failing re-validation (dropped).
    pub invalid: u64,
    /// Rows removed as re-sends of an earlier `event_id`.
    pub duplicates: u64,
    /// Event ids seen with more than one payload (the earliest received wins).
    pub conflicting_ids: u64,
    /// Views counted in the run's hours.
    pub views: u64,
    /// Billable views after the fraud cap.
    pub billable_views: u64,
    /// Billable views removed by the fraud cap.
    pub fraud_filtered: u64,
    /// Output rows (video-hours).
    pub output: u64,
}

/// A run's manifest (`runs/<id>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Run id: hash of inputs, range, rules and code version.
    pub run_id: String,
    /// Hours computed: `[from, to)`.
    pub from: DateTime<Utc>,
    /// End (exclusive).
    pub to: DateTime<Utc>,
    /// Hours requested but not complete (skipped).
    pub skipped_incomplete_to: Option<DateTime<Utc>>,
    /// Counting rules version.
    pub rules_version: u32,
    /// Counting rules.
    pub rules: CountingRules,
    /// Code version.
    pub code_version: String,
    /// The engine that computed the run (not part of the run id: both
    /// engines give the same output).
    #[serde(default)]
    pub engine: Engine,
    /// Archive watermark when the run started.
    pub archive_watermark: Option<DateTime<Utc>>,
    /// Inputs, sorted by path.
    pub inputs: Vec<Input>,
    /// Outputs.
    pub outputs: Vec<Output>,
    /// Row counts.
    pub rows: Rows,
    /// When it ran (not part of the run id).
    pub started_at: DateTime<Utc>,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Wall time of each step, in seconds, in the order they ran
    /// (`planning`, `reading` (fetch, checksum, decode, validate, dedup),
    /// `counting` (fraud cap, aggregation), `writing`).
    #[serde(default)]
    pub steps: Vec<(String, f64)>,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The manifest (for a dry run: the plan, outputs empty).
    pub manifest: Manifest,
    /// The published state after the run (None for a dry run).
    pub published: Option<Published>,
}

/// Reports progress: called with a step name and (done, total) units.
pub type ProgressFn<'a> = &'a (dyn Fn(&str, u64, u64) + Send + Sync);

/// Runs the batch job.
pub async fn run(
    store: Arc<dyn ObjectStore>,
    opts: &RunOptions,
    progress: ProgressFn<'_>,
) -> Result<RunReport> {
    let started_at = Utc::now();
    let clock = Instant::now();
    let hour = TimeDelta::hours(1);
    if opts.from.duration_trunc(hour).ok() != Some(opts.from)
        || opts.to.duration_trunc(hour).ok() != Some(opts.to)
    {
        return Err(Error::Input(format!(
            "--from and --to must be whole UTC hours (like 2026-11-21T13:00:00Z), got {} and {}",
            opts.from, opts.to
        )));
    }
    if opts.from >= opts.to {
        return Err(Error::Input(format!(
            "--from ({}) must be before --to ({})",
            opts.from, opts.to
        )));
    }
    let archive_watermark = progress::archive_watermark(store.as_ref(), opts.lateness).await?;
    let to = if opts.allow_incomplete {
        opts.to
    } else {
        match archive_watermark {
            None => {
                return Err(Error::Input(
                    "the archive has not recorded progress for every partition yet, so no hour is known complete; run `viewcount archive` (or pass --allow-incomplete)".into(),
                ));
            }
            Some(w) if w <= opts.from => {
                return Err(Error::Input(format!(
                    "no complete hour in the range: the archive watermark is {w} (allowed lateness {} min); wait, or pass --allow-incomplete",
                    opts.lateness.num_minutes()
                )));
            }
            Some(w) => opts.to.min(w),
        }
    };
    let skipped_incomplete_to = (to < opts.to).then_some(opts.to);

    // Plan: every raw file of every day the range touches.
    let day = TimeDelta::days(1);
    let first_day = opts
        .from
        .duration_trunc(day)
        .map_err(|e| Error::Input(e.to_string()))?;
    let mut inputs_meta = Vec::new();
    let mut d = first_day;
    while d < to {
        let prefix = Path::from(format!("raw/dt={}", d.date_naive().format("%Y-%m-%d")));
        let mut listed: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
        inputs_meta.append(&mut listed);
        d += day;
    }
    inputs_meta.retain(|m| m.location.as_ref().ends_with(".parquet"));
    inputs_meta.sort_by(|a, b| a.location.cmp(&b.location));

    let mut manifest = Manifest {
        run_id: String::new(),
        from: opts.from,
        to,
        skipped_incomplete_to,
        rules_version: RULES_VERSION,
        rules: opts.rules,
        code_version: CODE_VERSION.into(),
        engine: opts.engine,
        archive_watermark,
        inputs: Vec::new(),
        outputs: Vec::new(),
        rows: Rows::default(),
        started_at,
        seconds: 0.0,
        steps: Vec::new(),
    };
    let mut step_clock = Instant::now();
    let step = |manifest: &mut Manifest, clock: &mut Instant, name: &str| {
        manifest
            .steps
            .push((name.to_owned(), clock.elapsed().as_secs_f64()));
        *clock = Instant::now();
    };
    step(&mut manifest, &mut step_clock, "planning");
    let (from_us, to_us) = (opts.from.timestamp_micros(), to.timestamp_micros());
    let views = if opts.dry_run || opts.engine == Engine::Sql {
        manifest.inputs = checksum(store.as_ref(), &inputs_meta, progress).await?;
        if opts.dry_run {
            manifest.run_id = run_id(opts.from, to, &opts.rules, &manifest.inputs);
            manifest.outputs.push(Output {
                path: store::views_file(&manifest.run_id).to_string(),
                size: 0,
                sha256: String::new(),
                rows: 0,
            });
            return Ok(RunReport {
                manifest,
                published: None,
            });
        }
        progress("computing", 0, 1);
        let (views, rows) =
            sql::compute(store.clone(), &manifest.inputs, opts.from, to, &opts.rules).await?;
        progress("computing", 1, 1);
        manifest.rows = rows;
        step(&mut manifest, &mut step_clock, "computing");
        views
    } else {
        // The native engine runs on its own threads; progress comes back
        // through a channel so the caller's callback stays on this task.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (rules, files) = (opts.rules, inputs_meta.clone());
        let task = tokio::task::spawn_blocking({
            let store = store.clone();
            move || count::count(store, &files, from_us, to_us, &rules, &tx)
        });
        while let Some((step, done, total)) = rx.recv().await {
            progress(step, done, total);
        }
        let counted = task
            .await
            .map_err(|e| Error::Input(format!("the counting engine failed: {e}")))??;
        manifest.inputs = counted.inputs;
        manifest.rows = counted.rows;
        manifest.steps.extend(counted.steps);
        step_clock = Instant::now();
        counted.views
    };
    let run_id = run_id(opts.from, to, &opts.rules, &manifest.inputs);
    manifest.run_id = run_id.clone();
    let bytes = store::parquet_bytes(views_schema(), &[views])?;
    let out_path = store::views_file(&run_id);
    manifest.outputs.push(Output {
        path: out_path.to_string(),
        size: bytes.len() as u64,
        sha256: store::sha256(&bytes),
        rows: manifest.rows.output,
    });
    store::put(store.as_ref(), &out_path, bytes).await?;
    step(&mut manifest, &mut step_clock, "writing");
    manifest.seconds = clock.elapsed().as_secs_f64();
    store::put_json(store.as_ref(), &store::manifest(&run_id), &manifest).await?;
    progress("publishing", 0, 1);
    let published = publish::publish(store.as_ref(), &run_id, opts.from, to).await?;
    progress("publishing", 1, 1);
    Ok(RunReport {
        manifest,
        published: Some(published),
    })
}

/// Reads every input once to checksum it (dry runs and the SQL engine, which
/// reads the files again itself).
async fn checksum(
    store: &dyn ObjectStore,
    metas: &[ObjectMeta],
    progress: ProgressFn<'_>,
) -> Result<Vec<Input>> {
    let mut inputs = Vec::with_capacity(metas.len());
    for (i, m) in metas.iter().enumerate() {
        progress("checksumming inputs", i as u64, metas.len() as u64);
        let bytes = store.get(&m.location).await?.bytes().await?;
        inputs.push(Input {
            path: m.location.to_string(),
            size: bytes.len() as u64,
            sha256: store::sha256(&bytes),
        });
    }
    progress(
        "checksumming inputs",
        metas.len() as u64,
        metas.len() as u64,
    );
    Ok(inputs)
}

/// One row of the views table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ViewRow<'a> {
    pub video_id: &'a str,
    pub hour_us: i64,
    pub views: i64,
    pub billable_views: i64,
    pub fraud_filtered: i64,
    pub watch_seconds: i64,
    pub sketch: Vec<u8>,
}

/// The views table of `rows` (already in output order).
pub(crate) fn views_batch<'a>(rows: impl Iterator<Item = ViewRow<'a>>) -> Result<RecordBatch> {
    let mut video = StringBuilder::new();
    let mut hour = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let (mut views, mut billable, mut fraud, mut watch) = (
        Int64Builder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
    );
    let mut sketch = BinaryBuilder::new();
    for r in rows {
        video.append_value(r.video_id);
        hour.append_value(r.hour_us);
        views.append_value(r.views);
        billable.append_value(r.billable_views);
        fraud.append_value(r.fraud_filtered);
        watch.append_value(r.watch_seconds);
        sketch.append_value(r.sketch);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(video.finish()),
        Arc::new(hour.finish()),
        Arc::new(views.finish()),
        Arc::new(billable.finish()),
        Arc::new(fraud.finish()),
        Arc::new(watch.finish()),
        Arc::new(sketch.finish()),
    ];
    Ok(RecordBatch::try_new(views_schema(), columns)?)
}

/// The run id: a hash of what determines the output.
fn run_id(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    rules: &CountingRules,
    inputs: &[Input],
) -> String {
    let canonical = serde_json::json!({
        "from": from, "to": to, "rules_version": RULES_VERSION, "rules": rules,
        "code_version": CODE_VERSION, "inputs": inputs,
    });
    store::sha256(canonical.to_string().as_bytes())[..16].to_owned()
}

/// Counts by (video, hour): `[views, billable_views, fraud_filtered, watch_seconds]`.
pub type ViewsTable = BTreeMap<(String, DateTime<Utc>), [u64; 4]>;

/// Reads a run's views file from the store.
pub async fn load_views(store: &dyn ObjectStore, run_id: &str) -> Result<ViewsTable> {
    read_views(store.get(&store::views_file(run_id)).await?.bytes().await?)
}

/// Reads a views file back.
pub fn read_views(bytes: bytes::Bytes) -> Result<ViewsTable> {
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    let mut out = BTreeMap::new();
    for b in reader {
        let b = b?;
        let v = b.column(0).as_string::<i32>();
        let h = b.column(1).as_primitive::<TimestampMicrosecondType>();
        let n: Vec<_> = (2..6)
            .map(|c| b.column(c).as_primitive::<Int64Type>())
            .collect();
        for i in 0..b.num_rows() {
            let t = DateTime::from_timestamp_micros(h.value(i))
                .ok_or_else(|| Error::Corrupt("hour out of range in a views file".into()))?;
            out.insert(
                (v.value(i).to_owned(), t),
                [0, 1, 2, 3].map(|c| n[c].value(i) as u64),
            );
        }
    }
    Ok(out)
}
