//! Round trips and rejection of every mutation.

use proptest::prelude::*;
use schemas::archive::{from_record_batch, to_record_batch};
use schemas::{ArchivedEvent, ReceivedEvent, parse_event, validate};

use crate::strategies::{ctx, mutate, mutation, received_at, valid_event};

proptest! {
    #[test]
    fn json_round_trip_is_lossless(e in valid_event()) {
        let json = e.to_json_value();
        let parsed = parse_event(&json, &ctx()).map_err(|r| TestCaseError::fail(r.to_string()))?;
        prop_assert_eq!(&parsed, &e);
        prop_assert_eq!(parsed.to_json_value(), json);
        prop_assert!(validate(&parsed, &ctx()).is_ok());
    }

    #[test]
    fn kafka_payload_round_trip_is_lossless(e in valid_event()) {
        let r = ReceivedEvent::new(e, received_at());
        let back = ReceivedEvent::from_json_bytes(&r.to_json_bytes(), &ctx())
            .map_err(|err| TestCaseError::fail(err.to_string()))?;
        prop_assert_eq!(back, r);
    }

    #[test]
    fn arrow_round_trip_is_lossless(events in proptest::collection::vec(valid_event(), 0..20)) {
        let rows: Vec<ArchivedEvent> = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| ArchivedEvent {
                received: ReceivedEvent::new(e, received_at()),
                kafka_partition: (i % 3) as i32,
                kafka_offset: i as i64 * 7,
            })
            .collect();
        let batch = to_record_batch(&rows).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(batch.schema(), schemas::raw_schema());
        let back = from_record_batch(&batch).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, rows);
    }

    #[test]
    fn any_rule_breaking_mutation_is_rejected_naming_its_field(
        e in valid_event(),
        (field, value) in mutation(),
    ) {
        let bad = mutate(&e, field, value);
        match parse_event(&bad, &ctx()) {
            Ok(_) => prop_assert!(false, "accepted a broken {field}: {bad}"),
            Err(r) => {
                prop_assert!(r.names(field), "rejection {r} does not name {field}");
                prop_assert_eq!(r.violations.len(), 1, "one broken rule, one violation: {}", r);
            }
        }
    }
}
