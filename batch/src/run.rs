//! `viewcount batch run --from --to`: the authoritative recomputation.
//!
//! 1. Plan: clamp the range to complete hours (archive watermark), list the
//!    raw files of every *day* the range touches (the fraud cap counts per UTC
//!    day, so an hour needs its day's earlier hours), checksum them. The run id
//!    is a hash of the inputs, range, rules and code version: the same inputs
//!    give the same id and the same output path, so reruns are idempotent.
//! 2. Compute with DataFusion: re-validate every row with the `schemas` rules
//!    (a UDF), keep the first occurrence of each `event_id` (earliest
//!    `received_at`, then lowest partition and offset), apply the fraud cap,
//!    and aggregate per video per hour; sketches of unique viewers are built
//!    from the distinct (video, hour, user) rows.
//! 3. Write `views/run=<id>/part-0.parquet` sorted by (video, hour) with fixed
//!    writer settings (same rows → same bytes), then the manifest, then
//!    publish (see [`crate::publish`]).

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanArray, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{
    DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use chrono::{DateTime, Duration, DurationRound, TimeDelta, Utc};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::{ParquetReadOptions, SessionConfig};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use schemas::{CountingRules, RULES_VERSION, ValidationContext};
use serde::{Deserialize, Serialize};

use crate::publish::{self, Published};
use crate::sketch::Sketch;
use crate::{Error, Result, progress, store};

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
    let mut inputs = Vec::with_capacity(inputs_meta.len());
    for (i, m) in inputs_meta.iter().enumerate() {
        progress("checksumming inputs", i as u64, inputs_meta.len() as u64);
        let bytes = store.get(&m.location).await?.bytes().await?;
        inputs.push(Input {
            path: m.location.to_string(),
            size: bytes.len() as u64,
            sha256: store::sha256(&bytes),
        });
    }
    progress(
        "checksumming inputs",
        inputs.len() as u64,
        inputs.len() as u64,
    );
    let run_id = run_id(opts.from, to, &opts.rules, &inputs);

    let mut manifest = Manifest {
        run_id: run_id.clone(),
        from: opts.from,
        to,
        skipped_incomplete_to,
        rules_version: RULES_VERSION,
        rules: opts.rules,
        code_version: CODE_VERSION.into(),
        archive_watermark,
        inputs,
        outputs: Vec::new(),
        rows: Rows::default(),
        started_at,
        seconds: 0.0,
    };
    if opts.dry_run {
        manifest.outputs.push(Output {
            path: store::views_file(&run_id).to_string(),
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
    let (batch, rows) =
        compute(store.clone(), &manifest.inputs, opts.from, to, &opts.rules).await?;
    progress("computing", 1, 1);
    let bytes = store::parquet_bytes(views_schema(), &[batch])?;
    let out_path = store::views_file(&run_id);
    let output = Output {
        path: out_path.to_string(),
        size: bytes.len() as u64,
        sha256: store::sha256(&bytes),
        rows: rows.output,
    };
    store::put(store.as_ref(), &out_path, bytes).await?;
    manifest.outputs.push(output);
    manifest.rows = rows;
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

/// The payload columns: what makes two copies of an event_id the same event.
const PAYLOAD_COLUMNS: &str = "video_id, user_id, session_id, occurred_at, watch_seconds, device, country, referrer, quality, revenue_eligible, ad_impressions";

/// `vc_payload_fp(payload columns)`: a 64-bit FNV-1a over the values (nulls
/// and lengths marked), to spot conflicting duplicates without keeping the
/// payloads.
fn payload_fp_udf() -> datafusion::logical_expr::ScalarUDF {
    let raw = schemas::raw_schema();
    let types: Vec<DataType> = PAYLOAD_COLUMNS
        .split(", ")
        .filter_map(|c| raw.field_with_name(c).ok().map(|f| f.data_type().clone()))
        .collect();
    create_udf(
        "vc_payload_fp",
        types,
        DataType::UInt64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let n = arrays.first().map_or(0, |a| a.len());
            let mut out = arrow::array::UInt64Builder::with_capacity(n);
            for i in 0..n {
                let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                let mut feed = |bytes: &[u8]| {
                    for &b in bytes.iter().chain(&(bytes.len() as u32).to_be_bytes()) {
                        h ^= u64::from(b);
                        h = h.wrapping_mul(0x0000_0100_0000_01b3);
                    }
                };
                for a in &arrays {
                    if a.is_null(i) {
                        feed(&[0xff]);
                        continue;
                    }
                    match a.data_type() {
                        DataType::Utf8 => feed(a.as_string::<i32>().value(i).as_bytes()),
                        DataType::Int32 => feed(
                            &a.as_primitive::<arrow::datatypes::Int32Type>()
                                .value(i)
                                .to_be_bytes(),
                        ),
                        DataType::Boolean => feed(&[u8::from(a.as_boolean().value(i))]),
                        DataType::Timestamp(..) => feed(
                            &a.as_primitive::<TimestampMicrosecondType>()
                                .value(i)
                                .to_be_bytes(),
                        ),
                        _ => feed(&[0xfe]),
                    }
                }
                out.append_value(h);
            }
            Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
        }),
    )
}

const RAW_COLUMNS: &str = "event_id, video_id, user_id, session_id, occurred_at, watch_seconds, device, country, referrer, quality, revenue_eligible, ad_impressions, schema_version, received_at, kafka_partition, kafka_offset";

/// The re-validation UDF: true when a raw row passes the `schemas` rules
/// (time windows relative to its own `received_at`).
fn valid_udf() -> datafusion::logical_expr::ScalarUDF {
    let schema = schemas::raw_schema();
    let types: Vec<DataType> = schema
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    create_udf(
        "vc_valid",
        types,
        DataType::Boolean,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let n = arrays.first().map_or(0, |a| a.len());
            // Rebuild the batch under the raw schema, with nullability relaxed
            // to what the reader produced.
            let fields: Vec<Field> = schemas::raw_schema()
                .fields()
                .iter()
                .zip(&arrays)
                .map(|(f, a)| {
                    Field::new(
                        f.name(),
                        f.data_type().clone(),
                        a.null_count() > 0 || f.is_nullable(),
                    )
                })
                .collect();
            let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?;
            let verdicts: BooleanArray = match schemas::archive::from_record_batch(&batch) {
                Ok(rows) => rows
                    .iter()
                    .map(|r| {
                        Some(
                            schemas::validate(
                                &r.received.event,
                                &ValidationContext::at(r.received.received_at),
                            )
                            .is_ok(),
                        )
                    })
                    .collect(),
                // Undecodable rows (nulls in required columns, bad UUIDs...)
                // are invalid as a whole batch would be; judge row by row.
                Err(_) => (0..n)
                    .map(|i| {
                        let one = batch.slice(i, 1);
                        Some(schemas::archive::from_record_batch(&one).is_ok_and(|r| {
                            r.iter().all(|r| {
                                schemas::validate(
                                    &r.received.event,
                                    &ValidationContext::at(r.received.received_at),
                                )
                                .is_ok()
                            })
                        }))
                    })
                    .collect(),
            };
            Ok(ColumnarValue::Array(Arc::new(verdicts) as ArrayRef))
        }),
    )
}

async fn compute(
    store: Arc<dyn ObjectStore>,
    inputs: &[Input],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    rules: &CountingRules,
) -> Result<(RecordBatch, Rows)> {
    let mut rows = Rows::default();
    if inputs.is_empty() {
        return Ok((empty_views()?, rows));
    }
    let config = SessionConfig::new()
        .with_target_partitions(std::thread::available_parallelism().map_or(2, |n| n.get()));
    let ctx = SessionContext::new_with_config(config);
    let url = url::Url::parse(store::DATAFUSION_URL).map_err(|e| Error::Config(e.to_string()))?;
    ctx.register_object_store(&url, store);
    ctx.register_udf(valid_udf());
    ctx.register_udf(payload_fp_udf());
    let paths: Vec<String> = inputs
        .iter()
        .map(|i| format!("{}{}", store::DATAFUSION_URL, i.path))
        .collect();
    let raw = ctx
        .read_parquet(
            paths,
            ParquetReadOptions::default().schema(&schemas::raw_schema()),
        )
        .await?;
    ctx.register_table("raw", raw.into_view())?;

    let (from_us, to_us) = (from.timestamp_micros(), to.timestamp_micros());
    // One pass over the raw rows: re-validate, number each event_id's copies,
    // fingerprint payloads. Materialized once; every later query reads it.
    let ranked_sql = format!(
        "SELECT event_id, video_id, user_id, occurred_at, watch_seconds, revenue_eligible,
                vc_payload_fp({PAYLOAD_COLUMNS}) AS fp,
                ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY received_at, kafka_partition, kafka_offset) AS occ
         FROM raw WHERE vc_valid({RAW_COLUMNS})"
    );
    let ranked = ctx.sql(&ranked_sql).await?.cache().await?;
    ctx.register_table("ranked", ranked.into_view())?;
    let firsts = format!(
        "firsts AS (SELECT video_id, user_id, occurred_at, watch_seconds, event_id,
                           (revenue_eligible AND watch_seconds >= {min}) AS billable
                    FROM ranked WHERE occ = 1)",
        min = rules.billable_min_watch_seconds
    );
    let counts_sql = format!(
        "WITH {firsts},
         capped AS (SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id, video_id, date_trunc('day', occurred_at), billable ORDER BY occurred_at, event_id) AS brn FROM firsts)
         SELECT video_id, CAST(date_trunc('hour', occurred_at) AS BIGINT) AS hour_us,
                COUNT(*) AS views,
                SUM(CASE WHEN billable AND brn <= {cap} THEN 1 ELSE 0 END) AS billable_views,
                SUM(CASE WHEN billable AND brn > {cap} THEN 1 ELSE 0 END) AS fraud_filtered,
                SUM(CAST(watch_seconds AS BIGINT)) AS watch_seconds
         FROM capped
         WHERE CAST(occurred_at AS BIGINT) >= {from_us} AND CAST(occurred_at AS BIGINT) < {to_us}
         GROUP BY video_id, CAST(date_trunc('hour', occurred_at) AS BIGINT)
         ORDER BY video_id, hour_us",
        cap = rules.fraud_cap_per_user_video_day
    );
    let viewers_sql = format!(
        "WITH {firsts}
         SELECT video_id, CAST(date_trunc('hour', occurred_at) AS BIGINT) AS hour_us, user_id
         FROM firsts
         WHERE CAST(occurred_at AS BIGINT) >= {from_us} AND CAST(occurred_at AS BIGINT) < {to_us}
         GROUP BY 1, 2, 3"
    );
    let stats_sql = "SELECT (SELECT COUNT(*) FROM raw) AS input,
                (SELECT COUNT(*) FROM ranked) AS valid,
                (SELECT COUNT(*) FROM ranked WHERE occ = 1) AS firsts,
                (SELECT COUNT(DISTINCT d.event_id) FROM ranked d JOIN ranked f ON d.event_id = f.event_id
                 WHERE d.occ > 1 AND f.occ = 1 AND d.fp <> f.fp) AS conflicting";

    // Unique viewers per (video, hour).
    let mut sketches: BTreeMap<(String, i64), Sketch> = BTreeMap::new();
    let mut stream = ctx.sql(&viewers_sql).await?.execute_stream().await?;
    while let Some(b) = stream.try_next().await? {
        let v = b.column(0).as_string::<i32>();
        let h = b.column(1).as_primitive::<Int64Type>();
        let u = b.column(2).as_string::<i32>();
        for i in 0..b.num_rows() {
            sketches
                .entry((v.value(i).to_owned(), h.value(i)))
                .or_default()
                .insert(u.value(i).as_bytes());
        }
    }

    let batches = ctx.sql(&counts_sql).await?.collect().await?;
    let mut video = StringBuilder::new();
    let mut hour = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let (mut views, mut billable, mut fraud, mut watch) = (
        Int64Builder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
    );
    let mut sketch = BinaryBuilder::new();
    for b in &batches {
        let v = b.column(0).as_string::<i32>();
        let h = b.column(1).as_primitive::<Int64Type>();
        let cols: Vec<_> = (2..6)
            .map(|c| b.column(c).as_primitive::<Int64Type>())
            .collect();
        for i in 0..b.num_rows() {
            video.append_value(v.value(i));
            hour.append_value(h.value(i));
            views.append_value(cols[0].value(i));
            billable.append_value(cols[1].value(i));
            fraud.append_value(cols[2].value(i));
            watch.append_value(cols[3].value(i));
            let s = sketches
                .get(&(v.value(i).to_owned(), h.value(i)))
                .map(Sketch::to_bytes)
                .unwrap_or_else(|| Sketch::default().to_bytes());
            sketch.append_value(s);
            rows.views += cols[0].value(i) as u64;
            rows.billable_views += cols[1].value(i) as u64;
            rows.fraud_filtered += cols[2].value(i) as u64;
            rows.output += 1;
        }
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
    let out = RecordBatch::try_new(views_schema(), columns)?;

    let stats = ctx.sql(stats_sql).await?.collect().await?;
    if let Some(b) = stats.first() {
        let get = |c: usize| b.column(c).as_primitive::<Int64Type>().value(0) as u64;
        rows.input = get(0);
        rows.invalid = get(0) - get(1);
        rows.duplicates = get(1) - get(2);
        rows.conflicting_ids = get(3);
    }
    Ok((out, rows))
}

fn empty_views() -> Result<RecordBatch> {
    Ok(RecordBatch::new_empty(views_schema()))
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
