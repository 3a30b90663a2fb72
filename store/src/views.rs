//! The views table (`views/run=<id>/part-0.parquet`, DESIGN §6): per video
//! per UTC hour `views`, `billable_views`, `fraud_filtered`, `watch_seconds`
//! and `unique_viewers_sketch`. Batch builds it; serving, billing and
//! reconcile read it.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, AsArray, BinaryBuilder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{
    DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use chrono::{DateTime, Utc};
use object_store::ObjectStore;

use crate::manifest::Manifest;
use crate::{Error, Result, layout};

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

/// One row of the views table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewRow<'a> {
    /// `video_id`.
    pub video_id: &'a str,
    /// `hour`, in microseconds since the epoch.
    pub hour_us: i64,
    /// `views`.
    pub views: i64,
    /// `billable_views`.
    pub billable_views: i64,
    /// `fraud_filtered`.
    pub fraud_filtered: i64,
    /// `watch_seconds`.
    pub watch_seconds: i64,
    /// `unique_viewers_sketch` ([`crate::sketch::Sketch::to_bytes`]).
    pub sketch: Vec<u8>,
}

/// The views table of `rows` (already in output order).
pub fn views_batch<'a>(rows: impl Iterator<Item = ViewRow<'a>>) -> Result<RecordBatch> {
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

/// Counts by (video, hour): `[views, billable_views, fraud_filtered, watch_seconds]`.
pub type ViewsTable = BTreeMap<(String, DateTime<Utc>), [u64; 4]>;

/// Reads a run's views file, checked against the SHA-256 its manifest
/// records: the only way to read a run's counts from the store.
pub async fn load_views(store: &dyn ObjectStore, manifest: &Manifest) -> Result<ViewsTable> {
    let path = layout::views_file(&manifest.run_id);
    let bytes = manifest.read_output(store, &path).await?.ok_or_else(|| {
        Error::Corrupt(format!(
            "run {}'s manifest lists no views file {path}",
            manifest.run_id
        ))
    })?;
    read_views(bytes).map_err(|e| Error::Corrupt(format!("{path}: {e}")))
}

/// Writes `batches` (views-schema rows) as the only output of run `run_id`
/// over `[from, to)`, with a manifest that vouches for it, and returns the
/// manifest's SHA-256 (what a published state records). For tests and
/// benchmarks that make a run by hand; batch writes its own.
pub async fn put_run(
    store: &dyn ObjectStore,
    run_id: &str,
    batches: &[RecordBatch],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<String> {
    let bytes = layout::parquet_bytes(views_schema(), batches)?;
    let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
    let mut m = Manifest::new(run_id, from, to);
    m.outputs
        .push(crate::manifest::put_output(store, &layout::views_file(run_id), bytes, rows).await?);
    layout::put_json(store, &layout::manifest(run_id), &m).await
}

/// Reads a views file back. A file whose columns are not the views schema's
/// (by name and type) is an error naming the column, never a panic.
pub fn read_views(bytes: bytes::Bytes) -> Result<ViewsTable> {
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    let mut out = BTreeMap::new();
    for b in reader {
        let b = b?;
        let schema = views_schema();
        let column = |name: &str| layout::checked_column(&b, &schema, name, "the views file");
        let v = column("video_id")?.as_string::<i32>();
        let h = column("hour")?.as_primitive::<TimestampMicrosecondType>();
        let n = [
            column("views")?.as_primitive::<Int64Type>(),
            column("billable_views")?.as_primitive::<Int64Type>(),
            column("fraud_filtered")?.as_primitive::<Int64Type>(),
            column("watch_seconds")?.as_primitive::<Int64Type>(),
        ];
        for i in 0..b.num_rows() {
            let t = DateTime::from_timestamp_micros(h.value(i))
                .ok_or_else(|| Error::Corrupt("hour out of range in a views file".into()))?;
            let counts = n.map(|c| u64::try_from(c.value(i)));
            let [Ok(a), Ok(b), Ok(c), Ok(d)] = counts else {
                return Err(Error::Corrupt(format!(
                    "negative count for {} at {t} in a views file",
                    v.value(i)
                )));
            };
            out.insert((v.value(i).to_owned(), t), [a, b, c, d]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int32Array, StringArray};

    use super::*;

    #[test]
    fn a_views_file_with_the_wrong_column_types_is_an_error_not_a_panic() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("video_id", DataType::Utf8, false),
            Field::new("hour", DataType::Int32, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["v1"])),
                Arc::new(Int32Array::from(vec![7])),
            ],
        )
        .unwrap();
        let bytes = layout::parquet_bytes(schema, &[batch]).unwrap();
        let err = read_views(bytes).unwrap_err().to_string();
        assert!(err.contains("\"hour\"") && err.contains("Int32"), "{err}");
    }

    #[test]
    fn views_round_trip() {
        let rows = [ViewRow {
            video_id: "v1",
            hour_us: 1_763_730_000_000_000,
            views: 3,
            billable_views: 2,
            fraud_filtered: 1,
            watch_seconds: 90,
            sketch: vec![1, 2],
        }];
        let batch = views_batch(rows.into_iter()).unwrap();
        let bytes = layout::parquet_bytes(views_schema(), &[batch]).unwrap();
        let table = read_views(bytes).unwrap();
        let hour = DateTime::from_timestamp_micros(1_763_730_000_000_000).unwrap();
        assert_eq!(table[&("v1".to_owned(), hour)], [3, 2, 1, 90]);
    }
}
