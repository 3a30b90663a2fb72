//! In-place validation of archived rows ([`RawColumns::is_valid`]) gives the
//! verdict of decoding each row and validating the event.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{Field, Schema};
use chrono::Duration;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use schemas::archive::{to_record_batch, valid_rows};
use schemas::{ArchivedEvent, ReceivedEvent, RuleSet, ViewEvent, validate};

use crate::strategies::{ctx, received_at, valid_event};

/// Typed mutations, each breaking one per-field rule of an event.
fn break_rule(e: &mut ViewEvent, kind: u8) {
    let at = received_at();
    match kind % 13 {
        0 => e.video_id = String::new(),
        1 => e.video_id = "with space".into(),
        2 => e.video_id = "v".repeat(65),
        3 => e.user_id = String::new(),
        4 => e.user_id = "ü".repeat(129),
        5 => e.session_id = Some("s".repeat(129)),
        6 => e.occurred_at = at + Duration::minutes(5) + Duration::microseconds(1),
        7 => e.occurred_at = at - Duration::days(30) - Duration::microseconds(1),
        8 => e.watch_seconds = 86_401,
        9 => e.country = Some("us".into()),
        10 => e.referrer = Some("r".repeat(257)),
        11 => e.ad_impressions = 1_001,
        _ => e.schema_version = 3,
    }
}

fn batch_of(events: &[ViewEvent]) -> RecordBatch {
    let rows: Vec<ArchivedEvent> = events
        .iter()
        .enumerate()
        .map(|(i, e)| ArchivedEvent {
            received: ReceivedEvent::new(e.clone(), received_at()),
            kafka_partition: 0,
            kafka_offset: i as i64,
        })
        .collect();
    to_record_batch(&rows).unwrap()
}

proptest! {
    #[test]
    fn column_verdicts_equal_event_verdicts(
        mut events in proptest::collection::vec(valid_event(), 1..12),
        breaks in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
    ) {
        for (row, kind) in breaks {
            let i = row.index(events.len());
            break_rule(&mut events[i], kind);
        }
        let verdicts = valid_rows(&batch_of(&events), &RuleSet::default()).unwrap();
        for (i, e) in events.iter().enumerate() {
            prop_assert_eq!(verdicts.value(i), validate(e, &ctx()).is_ok(), "row {}: {:?}", i, e);
        }
    }
}

/// `batch` with column `name` replaced (every field nullable, as a reader of a
/// foreign file may produce).
fn with_column(batch: &RecordBatch, name: &str, col: ArrayRef) -> RecordBatch {
    let schema = batch.schema();
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    let mut cols = batch.columns().to_vec();
    cols[schema.index_of(name).unwrap()] = col;
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

#[test]
fn arrow_level_breakage_is_invalid_and_optional_nulls_are_not() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let event = valid_event().new_tree(&mut runner).unwrap().current();
    let good = batch_of(&[event.clone(), event]);
    assert_eq!(
        valid_rows(&good, &RuleSet::default()).unwrap(),
        BooleanArray::from(vec![true, true])
    );

    let first_null = BooleanArray::from(vec![true, false]);
    for (name, _) in schemas::raw_schema()
        .fields()
        .iter()
        .map(|f| (f.name(), ()))
    {
        let col = arrow::compute::nullif(good.column_by_name(name).unwrap(), &first_null).unwrap();
        let optional = [
            "session_id",
            "country",
            "referrer",
            "quality",
            "playback_token",
            "playback",
            "playback_id",
        ]
        .contains(&name.as_str());
        let verdicts = valid_rows(&with_column(&good, name, col), &RuleSet::default()).unwrap();
        assert_eq!(verdicts.value(0), optional, "null {name}");
        assert!(verdicts.value(1), "row without the null, {name}");
    }
    let strings = |a: &str, b: &str| -> ArrayRef { Arc::new(StringArray::from(vec![a, b])) };
    let id = good
        .column_by_name("event_id")
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .value(1)
        .to_owned();
    for bad_id in ["not-a-uuid", &id.replace('-', ""), &format!("{{{id}}}")] {
        let v = valid_rows(
            &with_column(&good, "event_id", strings(bad_id, &id)),
            &RuleSet::default(),
        )
        .unwrap();
        assert!(!v.value(0) && v.value(1), "event_id {bad_id:?}");
    }
    let v = valid_rows(
        &with_column(&good, "device", strings("toaster", "web")),
        &RuleSet::default(),
    )
    .unwrap();
    assert!(!v.value(0) && v.value(1));
    let v = valid_rows(
        &with_column(
            &good,
            "watch_seconds",
            Arc::new(Int32Array::from(vec![-1, 0])),
        ),
        &RuleSet::default(),
    )
    .unwrap();
    assert!(!v.value(0) && v.value(1));

    let missing = good.project(&[0, 1, 2]).unwrap();
    let err = valid_rows(&missing, &RuleSet::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("session_id"), "{err}");
}
