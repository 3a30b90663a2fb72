//! The raw archive's Arrow schema (DESIGN §6): the event fields by their wire
//! names, plus `received_at`, `kafka_partition` and `kafka_offset`.
//!
//! Column names and types are a contract with outside SQL engines: timestamps
//! are `Timestamp(Microsecond, "UTC")`, counts are Int32, the offset Int64.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{
    DataType, Field, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::event::Device;
use crate::{Error, ReceivedEvent, Result, ViewEvent};

/// One archived record: the received event and where it sat in Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedEvent {
    /// The event and its receive time.
    pub received: ReceivedEvent,
    /// The Kafka partition it was read from.
    pub kafka_partition: i32,
    /// Its offset in that partition.
    pub kafka_offset: i64,
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

static RAW_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("video_id", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("session_id", DataType::Utf8, true),
        Field::new("occurred_at", ts(), false),
        Field::new("watch_seconds", DataType::Int32, false),
        Field::new("device", DataType::Utf8, false),
        Field::new("country", DataType::Utf8, true),
        Field::new("referrer", DataType::Utf8, true),
        Field::new("quality", DataType::Utf8, true),
        Field::new("revenue_eligible", DataType::Boolean, false),
        Field::new("ad_impressions", DataType::Int32, false),
        Field::new("schema_version", DataType::Int32, false),
        Field::new("received_at", ts(), false),
        Field::new("kafka_partition", DataType::Int32, false),
        Field::new("kafka_offset", DataType::Int64, false),
    ]))
});

/// The raw archive schema.
pub fn raw_schema() -> SchemaRef {
    RAW_SCHEMA.clone()
}

/// Builds one record batch, rows in the order given.
pub fn to_record_batch(rows: &[ArchivedEvent]) -> Result<RecordBatch> {
    let n = rows.len();
    let mut event_id = StringBuilder::with_capacity(n, n * 36);
    let mut video_id = StringBuilder::new();
    let mut user_id = StringBuilder::new();
    let mut session_id = StringBuilder::new();
    let mut occurred_at = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut watch_seconds = Int32Builder::with_capacity(n);
    let mut device = StringBuilder::new();
    let mut country = StringBuilder::new();
    let mut referrer = StringBuilder::new();
    let mut quality = StringBuilder::new();
    let mut revenue_eligible = BooleanBuilder::with_capacity(n);
    let mut ad_impressions = Int32Builder::with_capacity(n);
    let mut schema_version = Int32Builder::with_capacity(n);
    let mut received_at = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut kafka_partition = Int32Builder::with_capacity(n);
    let mut kafka_offset = Int64Builder::with_capacity(n);

    for row in rows {
        let e = &row.received.event;
        event_id.append_value(e.event_id.hyphenated().to_string());
        video_id.append_value(&e.video_id);
        user_id.append_value(&e.user_id);
        session_id.append_option(e.session_id.as_deref());
        occurred_at.append_value(e.occurred_at.timestamp_micros());
        watch_seconds.append_value(int32("watch_seconds", e.watch_seconds)?);
        device.append_value(e.device.as_str());
        country.append_option(e.country.as_deref());
        referrer.append_option(e.referrer.as_deref());
        quality.append_option(e.quality.as_deref());
        revenue_eligible.append_value(e.revenue_eligible);
        ad_impressions.append_value(int32("ad_impressions", e.ad_impressions)?);
        schema_version.append_value(int32("schema_version", e.schema_version)?);
        received_at.append_value(row.received.received_at.timestamp_micros());
        kafka_partition.append_value(row.kafka_partition);
        kafka_offset.append_value(row.kafka_offset);
    }

    let columns: Vec<ArrayRef> = vec![
        Arc::new(event_id.finish()),
        Arc::new(video_id.finish()),
        Arc::new(user_id.finish()),
        Arc::new(session_id.finish()),
        Arc::new(occurred_at.finish()),
        Arc::new(watch_seconds.finish()),
        Arc::new(device.finish()),
        Arc::new(country.finish()),
        Arc::new(referrer.finish()),
        Arc::new(quality.finish()),
        Arc::new(revenue_eligible.finish()),
        Arc::new(ad_impressions.finish()),
        Arc::new(schema_version.finish()),
        Arc::new(received_at.finish()),
        Arc::new(kafka_partition.finish()),
        Arc::new(kafka_offset.finish()),
    ];
    Ok(RecordBatch::try_new(raw_schema(), columns)?)
}

/// Reads rows back from a batch with the raw archive schema (columns by name,
/// so a reader tolerates extra columns such as Hive partition keys).
///
/// This decodes types only; callers that need the counting guarantees
/// re-validate each event with [`crate::validate`].
pub fn from_record_batch(batch: &RecordBatch) -> Result<Vec<ArchivedEvent>> {
    let col = |name: &str| -> Result<&ArrayRef> {
        batch
            .column_by_name(name)
            .ok_or_else(|| Error::ArchiveSchema(format!("column {name:?} is missing")))
    };
    let strings = |name: &str| -> Result<_> {
        col(name)?
            .as_string_opt::<i32>()
            .ok_or_else(|| Error::ArchiveSchema(format!("column {name:?} is not Utf8")))
    };
    let i32s = |name: &str| -> Result<_> {
        col(name)?
            .as_primitive_opt::<Int32Type>()
            .ok_or_else(|| Error::ArchiveSchema(format!("column {name:?} is not Int32")))
    };
    let times = |name: &str| -> Result<_> {
        col(name)?
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| {
                Error::ArchiveSchema(format!("column {name:?} is not Timestamp(Microsecond)"))
            })
    };
    let event_id = strings("event_id")?;
    let video_id = strings("video_id")?;
    let user_id = strings("user_id")?;
    let session_id = strings("session_id")?;
    let occurred_at = times("occurred_at")?;
    let watch_seconds = i32s("watch_seconds")?;
    let device = strings("device")?;
    let country = strings("country")?;
    let referrer = strings("referrer")?;
    let quality = strings("quality")?;
    let revenue_eligible = col("revenue_eligible")?
        .as_boolean_opt()
        .ok_or_else(|| Error::ArchiveSchema("column \"revenue_eligible\" is not Boolean".into()))?;
    let ad_impressions = i32s("ad_impressions")?;
    let schema_version = i32s("schema_version")?;
    let received_at = times("received_at")?;
    let kafka_partition = i32s("kafka_partition")?;
    let kafka_offset = col("kafka_offset")?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| Error::ArchiveSchema("column \"kafka_offset\" is not Int64".into()))?;

    let opt =
        |a: &arrow::array::StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_owned());
    let micros = |v: i64, name: &str, i: usize| -> Result<DateTime<Utc>> {
        DateTime::from_timestamp_micros(v)
            .ok_or_else(|| Error::ArchiveSchema(format!("{name} out of range in row {i}")))
    };
    let uint = |v: i32, name: &str, i: usize| -> Result<u32> {
        u32::try_from(v).map_err(|_| Error::ArchiveSchema(format!("{name} negative in row {i}")))
    };

    (0..batch.num_rows())
        .map(|i| {
            let event = ViewEvent {
                event_id: Uuid::try_parse(event_id.value(i)).map_err(|e| {
                    Error::ArchiveSchema(format!("event_id in row {i} is not a UUID: {e}"))
                })?,
                video_id: video_id.value(i).to_owned(),
                user_id: user_id.value(i).to_owned(),
                session_id: opt(session_id, i),
                occurred_at: micros(occurred_at.value(i), "occurred_at", i)?,
                watch_seconds: uint(watch_seconds.value(i), "watch_seconds", i)?,
                device: Device::from_wire(device.value(i))
                    .ok_or_else(|| Error::ArchiveSchema(format!("unknown device in row {i}")))?,
                country: opt(country, i),
                referrer: opt(referrer, i),
                quality: opt(quality, i),
                revenue_eligible: revenue_eligible.value(i),
                ad_impressions: uint(ad_impressions.value(i), "ad_impressions", i)?,
                schema_version: uint(schema_version.value(i), "schema_version", i)?,
            };
            Ok(ArchivedEvent {
                received: ReceivedEvent {
                    event,
                    received_at: micros(received_at.value(i), "received_at", i)?,
                },
                kafka_partition: kafka_partition.value(i),
                kafka_offset: kafka_offset.value(i),
            })
        })
        .collect()
}

fn int32(name: &str, v: u32) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::ArchiveSchema(format!("{name} {v} does not fit Int32")))
}
