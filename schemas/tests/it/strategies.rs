//! proptest strategies: valid events, and mutations that each break one rule.

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use schemas::{Device, ValidationContext, ViewEvent};
use serde_json::{Value, json};

pub(crate) fn received_at() -> DateTime<Utc> {
    "2026-11-21T13:00:00Z".parse().unwrap()
}

pub(crate) fn ctx() -> ValidationContext {
    ValidationContext::at(received_at())
}

const COUNTRIES: [&str; 6] = ["US", "GB", "DE", "AQ", "ZW", "AX"];

fn opt_text(max: usize) -> impl Strategy<Value = Option<String>> {
    proptest::option::of(proptest::string::string_regex(&format!("\\PC{{0,{max}}}")).unwrap())
}

prop_compose! {
    pub(crate) fn valid_event()(
        id in any::<[u8; 16]>(),
        video_id in "[A-Za-z0-9_-]{1,64}",
        user_id in "\\PC{1,128}",
        session_id in opt_text(128),
        // From the late horizon's edge to 5 minutes ahead, at microsecond precision.
        offset_us in -(30 * 86_400 * 1_000_000i64)..=(5 * 60 * 1_000_000i64),
        watch_seconds in 0u32..=86_400,
        device in proptest::sample::select(Device::ALL.to_vec()),
        country in proptest::option::of(proptest::sample::select(COUNTRIES.to_vec())),
        referrer in opt_text(256),
        quality in opt_text(256),
        (revenue_eligible, playback_token) in (
            any::<bool>(),
            proptest::option::of("[A-Za-z0-9._-]{1,300}"),
        ),
        ad_impressions in 0u32..=1000,
    ) -> ViewEvent {
        ViewEvent {
            event_id: uuid::Builder::from_random_bytes(id).into_uuid(),
            video_id,
            user_id,
            session_id,
            occurred_at: received_at() + Duration::microseconds(offset_us),
            watch_seconds,
            device,
            country: country.map(str::to_owned),
            referrer,
            quality,
            revenue_eligible,
            ad_impressions,
            // A token's form needs schema version 2.
            schema_version: if playback_token.is_some() { 2 } else { 1 },
            playback_token,
        }
    }
}

/// Each mutation breaks exactly one rule of a valid event's JSON and names the
/// field a validator must report.
pub(crate) fn mutation() -> impl Strategy<Value = (&'static str, Value)> {
    let s = |field: &'static str, v: Value| Just((field, v));
    prop_oneof![
        s("event_id", Value::Null),
        s("event_id", json!("8f14e45fceea4e7a9f3b2c1d5e6a7b8c")),
        s("event_id", json!(12)),
        s("event_id", json!("00000000-0000-0000-0000-000000000000")),
        s("event_id", json!("FFFFFFFF-ffff-FFFF-ffff-FFFFFFFFFFFF")),
        s("user_id", json!("user\u{0}1")),
        s("user_id", json!("admin\u{202e}1nimda")),
        s("session_id", json!("s\n1")),
        s("referrer", json!("https://a.example/\u{2066}x")),
        s("quality", json!("720p\u{85}")),
        s("video_id", json!("")),
        s("video_id", json!("a".repeat(65))),
        s("video_id", json!("with space")),
        s("video_id", json!("é")),
        s("user_id", json!("")),
        s("user_id", json!("ü".repeat(129))),
        s("user_id", Value::Null),
        s("session_id", json!("s".repeat(129))),
        s("session_id", json!(7)),
        s("occurred_at", json!("2026-11-21 12:00:00Z")),
        s("occurred_at", json!("2026-11-21T12:00:00")),
        s("occurred_at", json!("yesterday")),
        s("occurred_at", json!(1_700_000_000)),
        s("watch_seconds", json!(-1)),
        s("watch_seconds", json!(86_401)),
        s("watch_seconds", json!(1.5)),
        s("watch_seconds", json!("30")),
        s("watch_seconds", Value::Null),
        s("device", json!("toaster")),
        s("device", json!("Web")),
        s("country", json!("us")),
        s("country", json!("XX")),
        s("country", json!("USA")),
        s("referrer", json!("r".repeat(257))),
        s("quality", json!(["720p"])),
        s("revenue_eligible", json!("true")),
        s("revenue_eligible", json!(1)),
        s("revenue_eligible", Value::Null),
        s("ad_impressions", json!(1001)),
        s("ad_impressions", json!(-3)),
        s("schema_version", json!(3)),
        s("schema_version", json!("1")),
    ]
}

/// `event` with `field` set to `value` (null meaning: removed, for required
/// fields; null itself for optional ones is allowed and not a mutation here).
pub(crate) fn mutate(event: &ViewEvent, field: &str, value: Value) -> Value {
    let mut v = event.to_json_value();
    let obj = v.as_object_mut().unwrap();
    if value.is_null() {
        obj.remove(field);
    } else {
        obj.insert(field.to_owned(), value);
    }
    v
}
