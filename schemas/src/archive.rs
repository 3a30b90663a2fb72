//! The raw archive's Arrow schema (DESIGN §6): the event fields by their wire
//! names, plus `received_at`, `kafka_partition` and `kafka_offset`, then
//! (since schema version 2) `playback_token` and ingest's verdict on it,
//! `playback` and `playback_id`. Files written before those three columns
//! existed read as events whose playback was not checked.
//!
//! Column names and types are a contract with outside SQL engines: timestamps
//! are `Timestamp(Microsecond, "UTC")`, counts are Int32, the offset Int64.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBuilder, Int32Array, Int32Builder, Int64Array,
    Int64Builder, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{
    DataType, Field, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::event::{Device, Playback};
use crate::validate::{Fields, ValidationContext};
use crate::{Error, ReceivedEvent, Result, RuleSet, ViewEvent};

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
        Field::new("playback_token", DataType::Utf8, true),
        Field::new("playback", DataType::Utf8, true),
        Field::new("playback_id", DataType::Utf8, true),
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
    let mut playback_token = StringBuilder::new();
    let mut playback = StringBuilder::new();
    let mut playback_id = StringBuilder::new();

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
        playback_token.append_option(e.playback_token.as_deref());
        playback.append_option(row.received.playback.as_wire());
        playback_id.append_option(row.received.playback.playback_id());
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
        Arc::new(playback_token.finish()),
        Arc::new(playback.finish()),
        Arc::new(playback_id.finish()),
    ];
    Ok(RecordBatch::try_new(raw_schema(), columns)?)
}

/// Typed views of a batch's raw-archive columns (found by name, so a batch may
/// carry extra columns such as Hive partition keys).
#[derive(Debug, Clone, Copy)]
pub struct RawColumns<'a> {
    /// `event_id`.
    pub event_id: &'a StringArray,
    /// `video_id`.
    pub video_id: &'a StringArray,
    /// `user_id`.
    pub user_id: &'a StringArray,
    /// `session_id`.
    pub session_id: &'a StringArray,
    /// `occurred_at`.
    pub occurred_at: &'a TimestampMicrosecondArray,
    /// `watch_seconds`.
    pub watch_seconds: &'a Int32Array,
    /// `device`.
    pub device: &'a StringArray,
    /// `country`.
    pub country: &'a StringArray,
    /// `referrer`.
    pub referrer: &'a StringArray,
    /// `quality`.
    pub quality: &'a StringArray,
    /// `revenue_eligible`.
    pub revenue_eligible: &'a BooleanArray,
    /// `ad_impressions`.
    pub ad_impressions: &'a Int32Array,
    /// `schema_version`.
    pub schema_version: &'a Int32Array,
    /// `received_at`.
    pub received_at: &'a TimestampMicrosecondArray,
    /// `kafka_partition`.
    pub kafka_partition: &'a Int32Array,
    /// `kafka_offset`.
    pub kafka_offset: &'a Int64Array,
    /// `playback_token` (`None`: a file from before the column).
    pub playback_token: Option<&'a StringArray>,
    /// `playback` (`None`: a file from before the column).
    pub playback: Option<&'a StringArray>,
    /// `playback_id` (`None`: a file from before the column).
    pub playback_id: Option<&'a StringArray>,
}

impl<'a> RawColumns<'a> {
    /// The columns of `batch`; an error names a missing or mistyped column.
    pub fn new(batch: &'a RecordBatch) -> Result<Self> {
        fn typed<'b, T: 'static>(
            batch: &'b RecordBatch,
            name: &str,
            kind: &str,
            cast: impl Fn(&'b ArrayRef) -> Option<&'b T>,
        ) -> Result<&'b T> {
            let col = batch
                .column_by_name(name)
                .ok_or_else(|| Error::ArchiveSchema(format!("column {name:?} is missing")))?;
            cast(col).ok_or_else(|| Error::ArchiveSchema(format!("column {name:?} is not {kind}")))
        }
        let s = |name| typed(batch, name, "Utf8", |a| a.as_string_opt::<i32>());
        // A column added after the first files were written: absent in those.
        let later = |name| match batch.column_by_name(name) {
            None => Ok(None),
            Some(_) => s(name).map(Some),
        };
        let i = |name| typed(batch, name, "Int32", |a| a.as_primitive_opt::<Int32Type>());
        let t = |name| {
            typed(batch, name, "Timestamp(Microsecond)", |a| {
                a.as_primitive_opt::<TimestampMicrosecondType>()
            })
        };
        Ok(Self {
            event_id: s("event_id")?,
            video_id: s("video_id")?,
            user_id: s("user_id")?,
            session_id: s("session_id")?,
            occurred_at: t("occurred_at")?,
            watch_seconds: i("watch_seconds")?,
            device: s("device")?,
            country: s("country")?,
            referrer: s("referrer")?,
            quality: s("quality")?,
            revenue_eligible: typed(batch, "revenue_eligible", "Boolean", |a| a.as_boolean_opt())?,
            ad_impressions: i("ad_impressions")?,
            schema_version: i("schema_version")?,
            received_at: t("received_at")?,
            kafka_partition: i("kafka_partition")?,
            kafka_offset: typed(batch, "kafka_offset", "Int64", |a| {
                a.as_primitive_opt::<Int64Type>()
            })?,
            playback_token: later("playback_token")?,
            playback: later("playback")?,
            playback_id: later("playback_id")?,
        })
    }

    /// Row `i`'s `playback_token`.
    pub fn playback_token(&self, i: usize) -> Option<&'a str> {
        self.playback_token
            .and_then(|a| a.is_valid(i).then(|| a.value(i)))
    }

    /// Row `i`'s playback id, if ingest verified its token (`playback` is
    /// `verified`); `None` for any other verdict, or a file from before.
    pub fn verified_playback_id(&self, i: usize) -> Option<&'a str> {
        let (verdict, id) = (self.playback?, self.playback_id?);
        (verdict.is_valid(i) && verdict.value(i) == "verified" && id.is_valid(i))
            .then(|| id.value(i))
    }

    /// Row `i`'s behavioural fingerprint ([`crate::fraud::fingerprint`]):
    /// device, country, referrer and quality.
    pub fn print(&self, i: usize, scratch: &mut Vec<u8>) -> u64 {
        fn opt(a: &StringArray, i: usize) -> Option<&str> {
            a.is_valid(i).then(|| a.value(i))
        }
        crate::fraud::fingerprint_with(
            self.device.value(i),
            opt(self.country, i),
            opt(self.referrer, i),
            opt(self.quality, i),
            scratch,
        )
    }

    /// Row `i`'s payload (for [`crate::dedup::Payload::fingerprint`]); the
    /// row must have its required columns (e.g. it [`Self::is_valid`]).
    pub fn payload(&self, i: usize) -> crate::dedup::Payload<'a> {
        fn opt(a: &StringArray, i: usize) -> Option<&str> {
            a.is_valid(i).then(|| a.value(i))
        }
        crate::dedup::Payload {
            video_id: self.video_id.value(i),
            user_id: self.user_id.value(i),
            session_id: opt(self.session_id, i),
            occurred_at_us: self.occurred_at.value(i),
            watch_seconds: self.watch_seconds.value(i).into(),
            device: self.device.value(i),
            country: opt(self.country, i),
            referrer: opt(self.referrer, i),
            quality: opt(self.quality, i),
            revenue_eligible: self.revenue_eligible.value(i),
            ad_impressions: self.ad_impressions.value(i).into(),
            schema_version: self.schema_version.value(i).into(),
            playback_token: self.playback_token(i),
        }
    }

    /// Row `i`'s place in the winner order ([`crate::dedup::CopyOrder`]).
    pub fn copy_order(&self, i: usize, fingerprint: u64) -> crate::dedup::CopyOrder {
        crate::dedup::CopyOrder {
            received_at_us: self.received_at.value(i),
            partition: self.kafka_partition.value(i),
            offset: self.kafka_offset.value(i),
            fingerprint,
        }
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.event_id.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i`'s event id, when it is a valid one (hyphenated UUID).
    pub fn event_id(&self, i: usize) -> Option<Uuid> {
        let s = self.event_id.is_valid(i).then(|| self.event_id.value(i))?;
        Uuid::try_parse(s).ok().filter(|_| s.len() == 36)
    }

    /// Whether row `i` is a valid event under `rules`: every required
    /// column present, a hyphenated UUID, a known device, and every rule of
    /// [`crate::validate`] with `rules`' limits relative to the row's own
    /// `received_at`. The same verdict as decoding the row and validating
    /// the event, without building one.
    pub fn is_valid(&self, i: usize, rules: &RuleSet) -> bool {
        self.valid_event_id(i, rules).is_some()
    }

    /// The validity of every row ([`Self::is_valid`]).
    pub fn verdicts(&self, rules: &RuleSet) -> BooleanArray {
        (0..self.len())
            .map(|i| Some(self.is_valid(i, rules)))
            .collect()
    }

    /// Row `i`'s event id if the row is a valid event ([`Self::is_valid`]).
    pub fn valid_event_id(&self, i: usize, rules: &RuleSet) -> Option<Uuid> {
        let required_present = self.video_id.is_valid(i)
            && self.user_id.is_valid(i)
            && self.occurred_at.is_valid(i)
            && self.watch_seconds.is_valid(i)
            && self.device.is_valid(i)
            && self.revenue_eligible.is_valid(i)
            && self.ad_impressions.is_valid(i)
            && self.schema_version.is_valid(i)
            && self.received_at.is_valid(i)
            && self.kafka_partition.is_valid(i)
            && self.kafka_offset.is_valid(i);
        if !required_present || Device::from_wire(self.device.value(i)).is_none() {
            return None;
        }
        let id = self.event_id(i)?;
        let occurred_at = DateTime::from_timestamp_micros(self.occurred_at.value(i))?;
        let received_at = DateTime::from_timestamp_micros(self.received_at.value(i))?;
        let opt = |a: &'a StringArray| a.is_valid(i).then(|| a.value(i));
        Fields {
            video_id: self.video_id.value(i),
            user_id: self.user_id.value(i),
            session_id: opt(self.session_id),
            occurred_at,
            watch_seconds: self.watch_seconds.value(i).into(),
            country: opt(self.country),
            referrer: opt(self.referrer),
            quality: opt(self.quality),
            ad_impressions: self.ad_impressions.value(i).into(),
            schema_version: self.schema_version.value(i).into(),
            playback_token: self.playback_token(i),
        }
        .is_valid(&ValidationContext::new(received_at, rules))
        .then_some(id)
    }
}

/// The validity of every row of a raw batch under `rules`
/// ([`RawColumns::is_valid`]).
pub fn valid_rows(batch: &RecordBatch, rules: &RuleSet) -> Result<BooleanArray> {
    Ok(RawColumns::new(batch)?.verdicts(rules))
}

/// Reads rows back from a batch with the raw archive schema (columns by name,
/// so a reader tolerates extra columns such as Hive partition keys).
///
/// This decodes types only; callers that need the counting guarantees
/// re-validate each event with [`crate::validate`] (or check rows in place
/// with [`RawColumns::is_valid`]).
pub fn from_record_batch(batch: &RecordBatch) -> Result<Vec<ArchivedEvent>> {
    let c = RawColumns::new(batch)?;
    let opt = |a: &StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_owned());
    let micros = |v: i64, name: &str, i: usize| -> Result<DateTime<Utc>> {
        DateTime::from_timestamp_micros(v)
            .ok_or_else(|| Error::ArchiveSchema(format!("{name} out of range in row {i}")))
    };
    let uint = |v: i32, name: &str, i: usize| -> Result<u32> {
        u32::try_from(v).map_err(|_| Error::ArchiveSchema(format!("{name} negative in row {i}")))
    };

    (0..c.len())
        .map(|i| {
            let event = ViewEvent {
                event_id: Uuid::try_parse(c.event_id.value(i)).map_err(|e| {
                    Error::ArchiveSchema(format!("event_id in row {i} is not a UUID: {e}"))
                })?,
                video_id: c.video_id.value(i).to_owned(),
                user_id: c.user_id.value(i).to_owned(),
                session_id: opt(c.session_id, i),
                occurred_at: micros(c.occurred_at.value(i), "occurred_at", i)?,
                watch_seconds: uint(c.watch_seconds.value(i), "watch_seconds", i)?,
                device: Device::from_wire(c.device.value(i))
                    .ok_or_else(|| Error::ArchiveSchema(format!("unknown device in row {i}")))?,
                country: opt(c.country, i),
                referrer: opt(c.referrer, i),
                quality: opt(c.quality, i),
                revenue_eligible: c.revenue_eligible.value(i),
                ad_impressions: uint(c.ad_impressions.value(i), "ad_impressions", i)?,
                schema_version: uint(c.schema_version.value(i), "schema_version", i)?,
                playback_token: c.playback_token(i).map(str::to_owned),
            };
            fn text(a: Option<&StringArray>, i: usize) -> Option<&str> {
                a.and_then(|a| a.is_valid(i).then(|| a.value(i)))
            }
            let playback = Playback::from_wire(text(c.playback, i), text(c.playback_id, i))
                .map_err(|why| Error::ArchiveSchema(format!("row {i}: {why}")))?;
            Ok(ArchivedEvent {
                received: ReceivedEvent {
                    event,
                    received_at: micros(c.received_at.value(i), "received_at", i)?,
                    playback,
                },
                kafka_partition: c.kafka_partition.value(i),
                kafka_offset: c.kafka_offset.value(i),
            })
        })
        .collect()
}

fn int32(name: &str, v: u32) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::ArchiveSchema(format!("{name} {v} does not fit Int32")))
}
