//! Ingest's request body decoding and event validation, on arbitrary bytes.
//!
//! The first byte picks the body format (JSON or NDJSON); the rest is the
//! body. Beyond "never panics", every accepted event must satisfy what the
//! other layers rely on:
//! - it validates, and its canonical JSON parses back to the same event;
//! - the Kafka record form (`ReceivedEvent` JSON) round-trips under the
//!   same limits (so the speed layer and archive accept what ingest did);
//! - it fits the archive's columns: timestamps at microsecond precision,
//!   counts within Int32 (so the archive keeps it exactly and batch, which
//!   re-validates the archived row with the same per-field rules, counts
//!   it; the column-wise verdict itself is held to `validate` by a property
//!   test in `schemas`, which builds with Arrow: this target does not);
//! - a rejection names at least one violation.

#![no_main]

use libfuzzer_sys::fuzz_target;
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
                let e = &received.event;
                for (name, t) in [("occurred_at", e.occurred_at), ("received_at", received.received_at)] {
                    let us = t.timestamp_micros();
                    assert_eq!(
                        chrono::DateTime::from_timestamp_micros(us),
                        Some(t),
                        "{name} is not at the archive's microsecond precision"
                    );
                }
                for (name, v) in [
                    ("watch_seconds", e.watch_seconds),
                    ("ad_impressions", e.ad_impressions),
                    ("schema_version", e.schema_version),
                ] {
                    assert!(i32::try_from(v).is_ok(), "{name} {v} does not fit the archive's Int32");
                }
            }
            Err(rejection) => {
                assert!(!rejection.violations.is_empty(), "a rejection names a violation");
                let _ = rejection.to_string();
            }
        }
    }
});
