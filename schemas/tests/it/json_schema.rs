//! The checked-in JSON Schema and the Rust validator agree.
//!
//! The schema cannot express the two receive-time-relative rules on
//! `occurred_at`; every example here keeps `occurred_at` inside that window, so
//! the two must give the same verdict on all of them.

use std::sync::LazyLock;

use proptest::prelude::*;
use schemas::parse_event;
use serde_json::{Value, json};

use crate::strategies::{ctx, mutate, mutation, valid_event};

static VALIDATOR: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let text = include_str!("../../view_event.schema.json");
    let schema: Value = serde_json::from_str(text).expect("schema is JSON");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("schema compiles")
});

fn agree(v: &Value) -> Result<bool, String> {
    let rust = parse_event(v, &ctx()).is_ok();
    let schema = VALIDATOR.is_valid(v);
    if rust == schema {
        Ok(rust)
    } else {
        Err(format!(
            "rust says {rust}, JSON Schema says {schema}, for {v}"
        ))
    }
}

/// Hand-picked edge cases: (expected validity, example).
fn corpus() -> Vec<(bool, Value)> {
    let base = json!({
        "event_id": "8f14e45f-ceea-4e7a-9f3b-2c1d5e6a7b8c",
        "video_id": "abc_DEF-123",
        "user_id": "user-1",
        "occurred_at": "2026-11-21T12:00:00Z",
        "watch_seconds": 45,
        "revenue_eligible": false,
    });
    let with = |k: &str, v: Value| {
        let mut e = base.clone();
        e[k] = v;
        e
    };
    vec![
        (true, base.clone()),
        (
            true,
            with("event_id", json!("8F14E45F-CEEA-4E7A-9F3B-2C1D5E6A7B8C")),
        ),
        (
            true,
            with("occurred_at", json!("2026-11-21T14:00:00.123456789+02:00")),
        ),
        (true, with("occurred_at", json!("2026-11-21t12:00:00z"))),
        (true, with("watch_seconds", json!(0))),
        (true, with("watch_seconds", json!(86_400))),
        (true, with("watch_seconds", json!(30.0))),
        (true, with("device", Value::Null)),
        (true, with("device", json!("console"))),
        (true, with("country", json!("AX"))),
        (true, with("session_id", json!(""))),
        (true, with("referrer", json!("ü".repeat(256)))),
        (true, with("ad_impressions", json!(1000))),
        (true, with("schema_version", json!(1))),
        (true, with("unknown_field", json!({"nested": true}))),
        (true, with("user_id", json!("😀".repeat(128)))),
        (false, json!([])),
        (false, json!("event")),
        (false, json!(null)),
        (false, json!({})),
        (
            false,
            with("event_id", json!("{8f14e45f-ceea-4e7a-9f3b-2c1d5e6a7b8c}")),
        ),
        (false, with("video_id", json!("a".repeat(65)))),
        (false, with("video_id", json!("a\n"))),
        (false, with("user_id", json!("😀".repeat(129)))),
        (false, with("occurred_at", json!("2026-11-21T12:00:00"))),
        (false, with("occurred_at", json!("2026-11-21"))),
        (false, with("occurred_at", json!("2026-13-01T00:00:00Z"))),
        (false, with("watch_seconds", json!(45.5))),
        (false, with("watch_seconds", json!(true))),
        (false, with("device", json!(""))),
        (false, with("country", json!("GB "))),
        (false, json!(0)),
        (false, with("ad_impressions", json!(1e6))),
        (false, with("schema_version", json!(0))),
        (false, with("revenue_eligible", json!("false"))),
    ]
}

#[test]
fn corpus_verdicts_agree_and_are_as_expected() {
    for (expected, example) in corpus() {
        let verdict = agree(&example).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(verdict, expected, "unexpected verdict for {example}");
    }
}

proptest! {
    #[test]
    fn generated_valid_events_pass_both(e in valid_event()) {
        let v = e.to_json_value();
        prop_assert_eq!(agree(&v), Ok(true));
    }

    #[test]
    fn generated_mutations_fail_both(e in valid_event(), (field, value) in mutation()) {
        let v = mutate(&e, field, value);
        prop_assert_eq!(agree(&v), Ok(false));
    }
}

#[test]
fn text_fields_state_the_one_text_pattern() {
    let schema: Value = serde_json::from_str(include_str!("../../view_event.schema.json")).unwrap();
    for field in ["user_id", "session_id", "referrer", "quality"] {
        assert_eq!(
            schema["properties"][field]["pattern"],
            schemas::validate::TEXT_PATTERN,
            "{field}"
        );
    }
}
