//! The filtered table (`filtered/run=<id>/part-0.parquet`): per video, UTC
//! hour and invalid-traffic rule ([`schemas::fraud`]), the billable views
//! the rule filtered. Per video-hour its `filtered_views` sum to the views
//! table's `fraud_filtered`; video-hours where nothing was filtered have no
//! rows. Batch writes it beside the views table, for outside engines,
//! reconcile, billing and serving to say why views were removed.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, AsArray, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{
    DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use chrono::{DateTime, Utc};
use object_store::ObjectStore;
use schemas::fraud::FraudRule;

use crate::manifest::Manifest;
use crate::{Error, Result, layout};

static FILTERED_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("video_id", DataType::Utf8, false),
        Field::new(
            "hour",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("rule", DataType::Utf8, false),
        Field::new("filtered_views", DataType::Int64, false),
    ]))
});

/// The filtered table's schema.
pub fn filtered_schema() -> SchemaRef {
    FILTERED_SCHEMA.clone()
}

/// One row of the filtered table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FilteredRow {
    /// `video_id`.
    pub video_id: String,
    /// `hour`, in microseconds since the epoch.
    pub hour_us: i64,
    /// `rule` ([`FraudRule::name`]).
    pub rule: FraudRule,
    /// `filtered_views`.
    pub views: i64,
}

/// The filtered table of `rows` (in output order: video, hour, rule).
pub fn filtered_batch(rows: &[FilteredRow]) -> Result<RecordBatch> {
    let mut video = StringBuilder::new();
    let mut hour = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut rule = StringBuilder::new();
    let mut views = Int64Builder::new();
    for r in rows {
        video.append_value(&r.video_id);
        hour.append_value(r.hour_us);
        rule.append_value(r.rule.name());
        views.append_value(r.views);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(video.finish()),
        Arc::new(hour.finish()),
        Arc::new(rule.finish()),
        Arc::new(views.finish()),
    ];
    Ok(RecordBatch::try_new(filtered_schema(), columns)?)
}

/// Reads a run's filtered file, checked against the SHA-256 its manifest
/// records; a run made before the file existed (rules v1) lists none, and
/// reads as empty.
pub async fn load_filtered(
    store: &dyn ObjectStore,
    manifest: &Manifest,
) -> Result<Vec<FilteredRow>> {
    let path = layout::filtered_file(&manifest.run_id);
    match manifest.read_output(store, &path).await? {
        Some(bytes) => read_filtered(bytes).map_err(|e| Error::Corrupt(format!("{path}: {e}"))),
        None => Ok(Vec::new()),
    }
}

/// A run's filtered views by (video, hour): each rule that removed views
/// there, with how many.
pub type ByVideoHour = BTreeMap<(String, DateTime<Utc>), Vec<(FraudRule, u64)>>;

/// [`load_filtered`], grouped by (video, hour).
pub async fn load_by_video_hour(
    store: &dyn ObjectStore,
    manifest: &Manifest,
) -> Result<ByVideoHour> {
    let mut out = ByVideoHour::new();
    let run_id = &manifest.run_id;
    for f in load_filtered(store, manifest).await? {
        let hour = DateTime::<Utc>::from_timestamp_micros(f.hour_us).ok_or_else(|| {
            Error::Corrupt(format!(
                "the filtered file of run {run_id} has an hour out of range: {}",
                f.hour_us
            ))
        })?;
        out.entry((f.video_id, hour))
            .or_default()
            .push((f.rule, f.views.max(0).unsigned_abs()));
    }
    Ok(out)
}

/// Reads a filtered file back: a column missing or of another type, a null
/// or an unknown rule is an error naming it.
pub fn read_filtered(bytes: bytes::Bytes) -> Result<Vec<FilteredRow>> {
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    let mut out = Vec::new();
    for b in reader {
        let b = b?;
        let schema = filtered_schema();
        let column = |name: &str| layout::checked_column(&b, &schema, name, "the filtered file");
        let v = column("video_id")?.as_string::<i32>();
        let h = column("hour")?.as_primitive::<TimestampMicrosecondType>();
        let r = column("rule")?.as_string::<i32>();
        let n = column("filtered_views")?.as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let rule = FraudRule::from_name(r.value(i)).ok_or_else(|| {
                Error::Corrupt(format!(
                    "the filtered file names rule {:?}, which this version does not know",
                    r.value(i)
                ))
            })?;
            out.push(FilteredRow {
                video_id: v.value(i).to_owned(),
                hour_us: h.value(i),
                rule,
                views: n.value(i),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_a_bad_rule_is_named() {
        let rows = vec![
            FilteredRow {
                video_id: "v1".into(),
                hour_us: 3_600_000_000,
                rule: FraudRule::RepeatLoop,
                views: 7,
            },
            FilteredRow {
                video_id: "v1".into(),
                hour_us: 3_600_000_000,
                rule: FraudRule::DailyCap,
                views: 2,
            },
        ];
        let bytes =
            layout::parquet_bytes(filtered_schema(), &[filtered_batch(&rows).unwrap()]).unwrap();
        assert_eq!(read_filtered(bytes).unwrap(), rows);

        let mut bad = filtered_batch(&rows).unwrap();
        let mut cols = bad.columns().to_vec();
        cols[2] = Arc::new(arrow::array::StringArray::from(vec!["nope", "daily_cap"]));
        bad = RecordBatch::try_new(filtered_schema(), cols).unwrap();
        let err =
            read_filtered(layout::parquet_bytes(filtered_schema(), &[bad]).unwrap()).unwrap_err();
        assert!(err.to_string().contains("\"nope\""), "{err}");
    }
}
