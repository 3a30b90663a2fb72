//! Ingest's request body decoding and event validation, on arbitrary bytes.
//!
//! The first byte picks the body format (JSON or NDJSON); the rest is the
//! body. Beyond "never panics", every accepted event must satisfy what the
//! other layers rely on:
//! - it validates, and its canonical JSON parses back to the same event;
//! - the Kafka record form (`ReceivedEvent` JSON) round-trips under the
//!   same limits (so the speed layer and archive accept what ingest did);
//! - the archive's column-wise verdict agrees (so batch counts it);
//! - a rejection names at least one violation.

#![no_main]

use libfuzzer_sys::fuzz_target;
use schemas::archive::{ArchivedEvent, to_record_batch, valid_rows};
use schemas::dedup::Payload;
use schemas::wire::{BodyFormat, decode_body};
use schemas::{ReceivedEvent, RuleSet, ValidationContext, parse_event, validate};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let format = if selector & 1 == 0 {
        BodyFormat::Json
    } else {
        BodyFormat::Ndjson
    };
    let Ok(slots) = decode_body(format, body, 10_000) else {
        return;
    };
    let rules = RuleSet::default();
    let received_at = chrono::DateTime::from_timestamp(1_763_640_000, 0).expect("fixed time");
    let ctx = ValidationContext::new(received_at, &rules);
    for value in slots.into_iter().flatten() {
        match parse_event(&value, &ctx) {
            Ok(event) => {
                assert!(validate(&event, &ctx).is_ok(), "accepted but invalid: {event:?}");
                let again = parse_event(&event.to_json_value(), &ctx)
                    .expect("an accepted event's canonical JSON is accepted");
                assert_eq!(again, event, "canonical JSON round trip");
                let received = ReceivedEvent::new(event, received_at);
                let record = ReceivedEvent::from_json_bytes(&received.to_json_bytes(), &ctx)
                    .expect("the Kafka record of an accepted event decodes");
                assert_eq!(record, received, "Kafka record round trip");
                let _ = Payload::of(&received.event).fingerprint();
                let batch = to_record_batch(&[ArchivedEvent {
                    received,
                    kafka_partition: 0,
                    kafka_offset: 0,
                }])
                .expect("an accepted event fits the archive schema");
                let verdicts = valid_rows(&batch, &rules).expect("archive columns read back");
                assert!(verdicts.value(0), "archive verdict disagrees with ingest");
            }
            Err(rejection) => {
                assert!(!rejection.violations.is_empty(), "a rejection names a violation");
                let _ = rejection.to_string();
            }
        }
    }
});
