//! The SQL engine: the counting rules as DataFusion SQL over the raw Parquet.
//!
//! The same semantics as the native engine ([`crate::count`]), written as
//! the window queries an analyst would write (and the ones DuckDB or Spark
//! run over the same files). It is the executable specification: a test
//! holds its output byte-identical to the native engine's, and a data
//! engineer can cross-check any run with `batch run --engine sql`. It is
//! slower (window functions over every row), which is why it is not the
//! default.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use chrono::{DateTime, Utc};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use futures::TryStreamExt;
use object_store::ObjectStore;
use schemas::RuleSet;
use schemas::archive::RawColumns;

use crate::Result;
use schemas::dedup::{SQL_COPY_ORDER, SQL_EVENT_KEY};
use store::manifest::{Input, Rows};
use store::sketch::Sketch;
use store::views::{ViewRow, views_batch};

/// A UDF over every raw column (in schema order) computing one value per row
/// from [`RawColumns`].
fn raw_udf(
    name: &str,
    out: DataType,
    per_batch: impl Fn(&RawColumns<'_>) -> ArrayRef + Send + Sync + 'static,
) -> ScalarUDF {
    let types: Vec<DataType> = schemas::raw_schema()
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    create_udf(
        name,
        types,
        out,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            // Rebuild the batch under the raw schema, nullability relaxed to
            // what the reader produced.
            let fields: Vec<Field> = schemas::raw_schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect();
            let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?;
            let cols = RawColumns::new(&batch)
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            Ok(ColumnarValue::Array(per_batch(&cols)))
        }),
    )
}

/// `vc_valid(raw columns)`: the row passes re-validation under `rules`.
pub fn valid_udf(rules: RuleSet) -> ScalarUDF {
    raw_udf("vc_valid", DataType::Boolean, move |c| {
        Arc::new(c.verdicts(&rules))
    })
}

/// `vc_payload_fp(raw columns)`: the payload fingerprint of
/// [`schemas::dedup::Payload`]; null for rows invalid under `rules`.
pub fn payload_fp_udf(rules: RuleSet) -> ScalarUDF {
    raw_udf("vc_payload_fp", DataType::UInt64, move |c| {
        let mut scratch = Vec::with_capacity(256);
        Arc::new(
            (0..c.len())
                .map(|i| {
                    c.is_valid(i, &rules)
                        .then(|| c.payload(i).fingerprint_with(&mut scratch))
                })
                .collect::<UInt64Array>(),
        )
    })
}

/// The columns every UDF over raw rows takes, in schema order.
pub const RAW_COLUMNS: &str = "event_id, video_id, user_id, session_id, occurred_at, watch_seconds, device, country, referrer, quality, revenue_eligible, ad_impressions, schema_version, received_at, kafka_partition, kafka_offset";
/// The fraud cap's numbering: each (user, video, UTC day)'s billable views
/// in (occurred_at, event_id) order; past the cap they are filtered.
const CAPPED: &str = "capped AS (SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id, video_id, date_trunc('day', occurred_at), billable ORDER BY occurred_at, event_id) AS brn FROM firsts)";

/// One pass over the raw rows: re-validate, fingerprint payloads, number
/// each event id's copies (the UUID's value is the key, so case does not
/// matter). Materialized once as the table `ranked`; returns the `firsts`
/// CTE (the winning copy of each event, with its billable flag).
async fn rank(ctx: &datafusion::prelude::SessionContext, rules: &RuleSet) -> Result<String> {
    let ranked_sql = format!(
        "SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY {SQL_COPY_ORDER}) AS occ
         FROM (SELECT {SQL_EVENT_KEY} AS event_id, video_id, user_id, occurred_at, watch_seconds, revenue_eligible,
                      received_at, kafka_partition, kafka_offset, vc_payload_fp({RAW_COLUMNS}) AS fp
               FROM raw WHERE vc_valid({RAW_COLUMNS}))"
    );
    let ranked = ctx.sql(&ranked_sql).await?.cache().await?;
    ctx.register_table("ranked", ranked.into_view())?;
    Ok(format!(
        "firsts AS (SELECT video_id, user_id, occurred_at, watch_seconds, event_id,
                           (revenue_eligible AND watch_seconds >= {min}) AS billable
                    FROM ranked WHERE occ = 1)",
        min = rules.billable_min_watch_seconds
    ))
}

/// A billable view as the rules decide it: which event, and whether the
/// fraud cap filtered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillableEvent {
    /// The event id (lower case).
    pub event_id: String,
    /// The video.
    pub video_id: String,
    /// `occurred_at`, microseconds since the epoch.
    pub occurred_at_us: i64,
    /// Filtered by the fraud cap (not paid).
    pub fraud_filtered: bool,
}

/// The billable views of `videos` occurring in `[from, to)` that a run over
/// `inputs` with `rules` decides, each event once: the evidence behind a
/// statement line. Sorted by video, occurred_at, event id.
pub async fn billable_events(
    store: Arc<dyn ObjectStore>,
    inputs: &[Input],
    videos: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    rules: &RuleSet,
) -> Result<Vec<BillableEvent>> {
    if inputs.is_empty() || videos.is_empty() {
        return Ok(Vec::new());
    }
    let ctx = crate::session::raw_session(store, inputs.iter().map(|i| i.path.as_str())).await?;
    ctx.register_udf(valid_udf(*rules));
    ctx.register_udf(payload_fp_udf(*rules));
    let firsts = rank(&ctx, rules).await?;
    let list = videos
        .iter()
        .map(|v| format!("'{}'", v.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "WITH {firsts}, {CAPPED}
         SELECT event_id, video_id, CAST(occurred_at AS BIGINT) AS occurred_us, brn > {cap} AS filtered
         FROM capped
         WHERE billable AND video_id IN ({list})
           AND CAST(occurred_at AS BIGINT) >= {from_us} AND CAST(occurred_at AS BIGINT) < {to_us}
         ORDER BY video_id, occurred_at, event_id",
        cap = rules.fraud_cap_per_user_video_day,
        from_us = from.timestamp_micros(),
        to_us = to.timestamp_micros(),
    );
    let mut out = Vec::new();
    let mut stream = ctx.sql(&sql).await?.execute_stream().await?;
    while let Some(b) = stream.try_next().await? {
        let id = b.column(0).as_string::<i32>();
        let v = b.column(1).as_string::<i32>();
        let t = b.column(2).as_primitive::<Int64Type>();
        let f = b.column(3).as_boolean();
        for i in 0..b.num_rows() {
            out.push(BillableEvent {
                event_id: id.value(i).to_owned(),
                video_id: v.value(i).to_owned(),
                occurred_at_us: t.value(i),
                fraud_filtered: f.value(i),
            });
        }
    }
    Ok(out)
}

/// Counts hours `[from, to)` of `inputs` with `rules`.
pub(crate) async fn compute(
    store: Arc<dyn ObjectStore>,
    inputs: &[Input],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    rules: &RuleSet,
) -> Result<(RecordBatch, Rows)> {
    let mut rows = Rows::default();
    if inputs.is_empty() {
        return Ok((views_batch(std::iter::empty())?, rows));
    }
    let ctx = crate::session::raw_session(store, inputs.iter().map(|i| i.path.as_str())).await?;
    ctx.register_udf(valid_udf(*rules));
    ctx.register_udf(payload_fp_udf(*rules));

    let (from_us, to_us) = (from.timestamp_micros(), to.timestamp_micros());
    let firsts = rank(&ctx, rules).await?;
    let counts_sql = format!(
        "WITH {firsts},
         {CAPPED}
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
    let mut sketches: std::collections::BTreeMap<(String, i64), Sketch> = Default::default();
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
    let mut out = Vec::new();
    for b in &batches {
        let v = b.column(0).as_string::<i32>();
        let h = b.column(1).as_primitive::<Int64Type>();
        let n: Vec<_> = (2..6)
            .map(|c| b.column(c).as_primitive::<Int64Type>())
            .collect();
        for i in 0..b.num_rows() {
            let sketch = sketches
                .get(&(v.value(i).to_owned(), h.value(i)))
                .map(Sketch::to_bytes)
                .unwrap_or_else(|| Sketch::default().to_bytes());
            out.push(ViewRow {
                video_id: v.value(i),
                hour_us: h.value(i),
                views: n[0].value(i),
                billable_views: n[1].value(i),
                fraud_filtered: n[2].value(i),
                watch_seconds: n[3].value(i),
                sketch,
            });
            rows.views += n[0].value(i) as u64;
            rows.billable_views += n[1].value(i) as u64;
            rows.fraud_filtered += n[2].value(i) as u64;
            rows.output += 1;
        }
    }
    let views = views_batch(out.into_iter())?;

    let stats = ctx.sql(stats_sql).await?.collect().await?;
    if let Some(b) = stats.first() {
        let get = |c: usize| b.column(c).as_primitive::<Int64Type>().value(0) as u64;
        rows.input = get(0);
        rows.invalid = get(0) - get(1);
        rows.duplicates = get(1) - get(2);
        rows.conflicting_ids = get(3);
    }
    Ok((views, rows))
}
