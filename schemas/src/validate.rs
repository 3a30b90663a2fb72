//! The one validation function of DESIGN §3.
//!
//! [`parse_event`] turns loosely typed JSON into a [`ViewEvent`] or a
//! [`Rejection`] listing every violated rule; [`validate`] re-checks a typed event
//! (as read back from the archive) against the same per-field checks.
//!
//! Tolerant reader: fields this version does not know are ignored. Optional
//! fields may be absent or `null`. The two time-window rules are relative to the
//! receive time in [`ValidationContext`], so re-validating later with the
//! recorded `received_at` gives the same verdict.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::country::is_iso_country;
use crate::event::{
    Device, MIN_SCHEMA_VERSION, PLAYBACK_TOKEN_VERSION, Playback, ReceivedEvent, SCHEMA_VERSION,
    ViewEvent,
};
use crate::rules::RuleSet;
pub use crate::time::parse_timestamp;
use crate::time::truncate_for_message;

/// Largest `watch_seconds`: one day.
pub const MAX_WATCH_SECONDS: u32 = 86_400;
/// Largest `ad_impressions`.
pub const MAX_AD_IMPRESSIONS: u32 = 1_000;
/// Longest `video_id`, in characters.
pub const MAX_VIDEO_ID_CHARS: usize = 64;
/// Longest `user_id` and `session_id`, in characters.
pub const MAX_USER_ID_CHARS: usize = 128;
/// Longest `referrer` and `quality`, in characters.
pub const MAX_TEXT_CHARS: usize = 256;
/// Longest `playback_token`, in bytes.
pub const MAX_PLAYBACK_TOKEN_BYTES: usize = 1024;

/// What validation is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidationContext {
    /// When the event was received; the time-window rules are relative to it.
    pub received_at: DateTime<Utc>,
    /// `occurred_at` may be at most this far after `received_at`.
    pub max_future: Duration,
    /// `occurred_at` may be at most this far before `received_at`.
    pub late_horizon: Duration,
}

impl ValidationContext {
    /// The default rule set's limits, relative to `received_at`.
    pub fn at(received_at: DateTime<Utc>) -> Self {
        Self::new(received_at, &RuleSet::default())
    }

    /// The limits of `rules`, relative to `received_at`.
    pub fn new(received_at: DateTime<Utc>, rules: &RuleSet) -> Self {
        Self {
            received_at,
            max_future: rules.max_future(),
            late_horizon: rules.late_horizon(),
        }
    }
}

/// Which kind of rule a field broke; with the field it names a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// The event itself is not a JSON object.
    NotAnObject,
    /// A required field is absent or null.
    Required,
    /// The JSON type is wrong (string vs number vs boolean).
    Type,
    /// The text does not have the required shape.
    Format,
    /// A number is out of range.
    Range,
    /// A text is too long or empty.
    Length,
    /// A value is not one of the allowed ones.
    Enum,
    /// `occurred_at` is too far in the future.
    Future,
    /// `occurred_at` is older than the late-data horizon.
    TooOld,
    /// `playback_token` is missing where ingest requires one, or does not
    /// verify (ingest's check, not the event's own form).
    Signature,
}

impl Rule {
    /// Short stable name, used in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::NotAnObject => "not_an_object",
            Rule::Required => "required",
            Rule::Type => "type",
            Rule::Format => "format",
            Rule::Range => "range",
            Rule::Length => "length",
            Rule::Enum => "enum",
            Rule::Future => "future",
            Rule::TooOld => "too_old",
            Rule::Signature => "signature",
        }
    }
}

/// One broken rule: which field, which rule, and a sentence for a client developer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field name as on the wire (`event` when the whole value is wrong).
    pub field: &'static str,
    /// The kind of rule.
    pub rule: Rule,
    /// What is wrong and what is expected.
    pub message: String,
}

impl Violation {
    /// A violation of `rule` by `field`, saying what is wrong and expected.
    pub fn new(field: &'static str, rule: Rule, message: impl Into<String>) -> Self {
        Self {
            field,
            rule,
            message: message.into(),
        }
    }

    /// `field.rule`, a low-cardinality label for metrics.
    pub fn code(&self) -> String {
        format!("{}.{}", self.field, self.rule.as_str())
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every rule an event broke, in field order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The violations, at least one.
    pub violations: Vec<Violation>,
}

impl Rejection {
    /// Whether any violation names `field`.
    pub fn names(&self, field: &str) -> bool {
        self.violations.iter().any(|v| v.field == field)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.violations.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Rejection {}

/// Parses and validates one event. Returns the typed event, or every violated rule.
pub fn parse_event(value: &Value, ctx: &ValidationContext) -> Result<ViewEvent, Rejection> {
    let Value::Object(obj) = value else {
        return Err(Rejection {
            violations: vec![Violation::new(
                "event",
                Rule::NotAnObject,
                format!("must be a JSON object, got {}", json_kind(value)),
            )],
        });
    };
    let mut out = Vec::new();
    let mut r = Reader { obj, out: &mut out };

    let event_id = r
        .string("event_id", true)
        .and_then(|s| r.check(check_event_id(s)));
    let video_id = r
        .string("video_id", true)
        .and_then(|s| r.check(check_video_id(s).map(|()| s.to_owned())));
    let user_id = r
        .string("user_id", true)
        .and_then(|s| r.check(check_user_id(s).map(|()| s.to_owned())));
    let session_id = r
        .string("session_id", false)
        .and_then(|s| r.check(check_session_id(s).map(|()| s.to_owned())));
    let occurred_at = r.string("occurred_at", true).and_then(|s| {
        r.check(
            parse_timestamp(s)
                .map_err(|why| Violation::new("occurred_at", Rule::Format, why))
                .and_then(|t| check_occurred_at(t, ctx).map(|()| t)),
        )
    });
    let watch_seconds = r.integer("watch_seconds", true, 0, MAX_WATCH_SECONDS);
    let device = r
        .string("device", false)
        .and_then(|s| r.check(parse_device(s)));
    let country = r
        .string("country", false)
        .and_then(|s| r.check(check_country(s).map(|()| s.to_owned())));
    let referrer = r
        .string("referrer", false)
        .and_then(|s| r.check(check_text("referrer", s).map(|()| s.to_owned())));
    let quality = r
        .string("quality", false)
        .and_then(|s| r.check(check_text("quality", s).map(|()| s.to_owned())));
    let revenue_eligible = r.boolean("revenue_eligible");
    let ad_impressions = r.integer("ad_impressions", false, 0, MAX_AD_IMPRESSIONS);
    let schema_version = r
        .integer("schema_version", false, 0, u32::MAX)
        .and_then(|v| r.check(check_schema_version(v.into()).map(|()| v)));
    // A token is judged against the event's version when that is a valid
    // one (absent: 1); a broken version is its own violation.
    let version_given = obj.get("schema_version").is_some_and(|v| !v.is_null());
    let playback_token = r.string("playback_token", false).and_then(|s| {
        let version = match schema_version {
            Some(v) => i64::from(v),
            None if version_given => i64::from(SCHEMA_VERSION),
            None => i64::from(MIN_SCHEMA_VERSION),
        };
        r.check(check_playback_token(Some(s), version).map(|()| s.to_owned()))
    });

    match (
        event_id,
        video_id,
        user_id,
        occurred_at,
        watch_seconds,
        revenue_eligible,
    ) {
        (Some(event_id), Some(video_id), Some(user_id), Some(occurred_at), Some(w), Some(rev))
            if out.is_empty() =>
        {
            Ok(ViewEvent {
                event_id,
                video_id,
                user_id,
                session_id,
                occurred_at,
                watch_seconds: w,
                device: device.unwrap_or_default(),
                country,
                referrer,
                quality,
                revenue_eligible: rev,
                ad_impressions: ad_impressions.unwrap_or(0),
                schema_version: schema_version.unwrap_or(MIN_SCHEMA_VERSION),
                playback_token,
            })
        }
        _ => Err(Rejection { violations: out }),
    }
}

/// The fields the per-field rules look at, borrowed: what [`validate`] checks
/// of a typed event, and what the batch layer checks of an archived row
/// without building one (`archive::RawColumns`, with the `arrow` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields<'a> {
    /// `video_id`.
    pub video_id: &'a str,
    /// `user_id`.
    pub user_id: &'a str,
    /// `session_id`.
    pub session_id: Option<&'a str>,
    /// `occurred_at`.
    pub occurred_at: DateTime<Utc>,
    /// `watch_seconds` (wide, so a negative archived value is a range violation).
    pub watch_seconds: i64,
    /// `country`.
    pub country: Option<&'a str>,
    /// `referrer`.
    pub referrer: Option<&'a str>,
    /// `quality`.
    pub quality: Option<&'a str>,
    /// `ad_impressions`.
    pub ad_impressions: i64,
    /// `schema_version`.
    pub schema_version: i64,
    /// `playback_token`.
    pub playback_token: Option<&'a str>,
}

impl<'a> Fields<'a> {
    /// The fields of a typed event.
    pub fn of(event: &'a ViewEvent) -> Self {
        Self {
            video_id: &event.video_id,
            user_id: &event.user_id,
            session_id: event.session_id.as_deref(),
            occurred_at: event.occurred_at,
            watch_seconds: event.watch_seconds.into(),
            country: event.country.as_deref(),
            referrer: event.referrer.as_deref(),
            quality: event.quality.as_deref(),
            ad_impressions: event.ad_impressions.into(),
            schema_version: event.schema_version.into(),
            playback_token: event.playback_token.as_deref(),
        }
    }

    /// Every per-field rule, in field order. Allocates only for a violation.
    fn checks(&self, ctx: &ValidationContext) -> [Result<(), Violation>; 11] {
        [
            check_video_id(self.video_id),
            check_user_id(self.user_id),
            self.session_id.map_or(Ok(()), check_session_id),
            check_occurred_at(self.occurred_at, ctx),
            check_range(
                "watch_seconds",
                self.watch_seconds.into(),
                0,
                MAX_WATCH_SECONDS,
            )
            .map(drop),
            self.country.map_or(Ok(()), check_country),
            self.referrer.map_or(Ok(()), |s| check_text("referrer", s)),
            self.quality.map_or(Ok(()), |s| check_text("quality", s)),
            check_range(
                "ad_impressions",
                self.ad_impressions.into(),
                0,
                MAX_AD_IMPRESSIONS,
            )
            .map(drop),
            check_schema_version(self.schema_version),
            check_playback_token(self.playback_token, self.schema_version),
        ]
    }

    /// Whether every rule holds (the batch layer's per-row verdict).
    pub fn is_valid(&self, ctx: &ValidationContext) -> bool {
        self.checks(ctx).iter().all(Result::is_ok)
    }

    /// Every violated rule.
    pub fn validate(&self, ctx: &ValidationContext) -> Result<(), Rejection> {
        let violations: Vec<Violation> = self
            .checks(ctx)
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if violations.is_empty() {
            Ok(())
        } else {
            Err(Rejection { violations })
        }
    }
}

/// Re-checks a typed event (e.g. read back from the archive) with the same rules
/// [`parse_event`] applies.
pub fn validate(event: &ViewEvent, ctx: &ValidationContext) -> Result<(), Rejection> {
    Fields::of(event).validate(ctx)
}

struct Reader<'a> {
    obj: &'a Map<String, Value>,
    out: &'a mut Vec<Violation>,
}

impl<'a> Reader<'a> {
    fn check<T>(&mut self, r: Result<T, Violation>) -> Option<T> {
        r.map_err(|v| self.out.push(v)).ok()
    }

    /// The field's value; `None` when absent or null (a violation if required).
    fn present(&mut self, field: &'static str, required: bool) -> Option<&'a Value> {
        match self.obj.get(field) {
            None | Some(Value::Null) => {
                if required {
                    self.out.push(Violation::new(
                        field,
                        Rule::Required,
                        "is required but missing",
                    ));
                }
                None
            }
            Some(v) => Some(v),
        }
    }

    fn string(&mut self, field: &'static str, required: bool) -> Option<&'a str> {
        match self.present(field, required)? {
            Value::String(s) => Some(s),
            other => {
                self.out.push(Violation::new(
                    field,
                    Rule::Type,
                    format!("must be a string, got {}", json_kind(other)),
                ));
                None
            }
        }
    }

    fn boolean(&mut self, field: &'static str) -> Option<bool> {
        match self.present(field, true)? {
            Value::Bool(b) => Some(*b),
            other => {
                self.out.push(Violation::new(
                    field,
                    Rule::Type,
                    format!("must be true or false, got {}", json_kind(other)),
                ));
                None
            }
        }
    }

    /// An integer in `min..=max`. JSON numbers with a zero fraction (`30.0`)
    /// count as integers, as in JSON Schema.
    fn integer(&mut self, field: &'static str, required: bool, min: u32, max: u32) -> Option<u32> {
        let v = self.present(field, required)?;
        let n = match v {
            Value::Number(n) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 1e30)
                        .map(|f| f as i128)
                }),
            _ => None,
        };
        match n {
            Some(n) => self.check(check_range(field, n, min, max)),
            None => {
                self.out.push(Violation::new(
                    field,
                    Rule::Type,
                    format!("must be a whole number, got {}", json_kind(v)),
                ));
                None
            }
        }
    }
}

fn check_range(field: &'static str, n: i128, min: u32, max: u32) -> Result<u32, Violation> {
    if n < i128::from(min) || n > i128::from(max) {
        Err(Violation::new(
            field,
            Rule::Range,
            format!("must be from {min} to {max}, got {n}"),
        ))
    } else {
        Ok(n as u32)
    }
}

fn check_event_id(s: &str) -> Result<Uuid, Violation> {
    // Only the 36-character hyphenated form, as the JSON Schema says.
    match Uuid::try_parse(s) {
        Ok(u) if s.len() == 36 && (u.is_nil() || u.is_max()) => Err(Violation::new(
            "event_id",
            Rule::Format,
            format!(
                "must not be the {} UUID {s:?}: it is a placeholder, not the id of one view; give each view a random (v4) UUID",
                if u.is_nil() { "nil" } else { "max" }
            ),
        )),
        Ok(u) if s.len() == 36 => Ok(u),
        _ => Err(Violation::new(
            "event_id",
            Rule::Format,
            format!(
                "must be a UUID like \"8f14e45f-ceea-4e7a-9f3b-2c1d5e6a7b8c\", got {:?}",
                truncate_for_message(s)
            ),
        )),
    }
}

/// The one id rule of video and creator ids (DESIGN §3, §6), as the regular
/// expression the JSON Schema, the OpenAPI document and test generators
/// state: [`is_id`] is the code that applies it.
pub const ID_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";

/// Whether `s` is a video or creator id ([`ID_PATTERN`]: 1 to
/// [`MAX_VIDEO_ID_CHARS`] characters of A-Z, a-z, 0-9, `_` or `-`).
pub fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_VIDEO_ID_CHARS
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What [`is_id`] refuses, in words, for the field `field`.
pub fn id_rule(field: &str, s: &str) -> String {
    format!(
        "{field} must be 1 to {MAX_VIDEO_ID_CHARS} characters of A-Z, a-z, 0-9, '_' or '-', got {:?}",
        truncate_for_message(s)
    )
}

/// The `video_id` rule alone (for other files that name videos, such as
/// the catalog).
pub fn check_video_id(s: &str) -> Result<(), Violation> {
    if !is_id(s) {
        return Err(Violation::new(
            "video_id",
            Rule::Format,
            format!(
                "must be 1 to {MAX_VIDEO_ID_CHARS} characters of A-Z, a-z, 0-9, '_' or '-', got {:?}",
                truncate_for_message(s)
            ),
        ));
    }
    Ok(())
}

fn check_len(field: &'static str, s: &str, min: usize, max: usize) -> Result<(), Violation> {
    // Characters never outnumber bytes: count them only when the bytes do
    // not already settle it.
    if s.len() <= max && (min == 0 || (min == 1 && !s.is_empty())) {
        return Ok(());
    }
    let n = s.chars().count();
    if n < min || n > max {
        let expect = if min == 0 {
            format!("at most {max} characters")
        } else {
            format!("{min} to {max} characters")
        };
        return Err(Violation::new(
            field,
            Rule::Length,
            format!("must be {expect}, got {n}"),
        ));
    }
    Ok(())
}

fn check_user_id(s: &str) -> Result<(), Violation> {
    check_len("user_id", s, 1, MAX_USER_ID_CHARS)?;
    check_printable("user_id", s)
}

fn check_session_id(s: &str) -> Result<(), Violation> {
    check_len("session_id", s, 0, MAX_USER_ID_CHARS)?;
    check_printable("session_id", s)
}

fn check_text(field: &'static str, s: &str) -> Result<(), Violation> {
    check_len(field, s, 0, MAX_TEXT_CHARS)?;
    check_printable(field, s)
}

/// Whether `c` may not appear in an event's text: a control character
/// (C0, DEL, C1) or a bidirectional mark, embedding, override or isolate,
/// which can make one id display as another (the JSON Schema's
/// [`TEXT_PATTERN`]).
pub fn is_forbidden_char(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{61c}' | '\u{200e}' | '\u{200f}'
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The JSON Schema pattern of text fields: no [`is_forbidden_char`].
pub const TEXT_PATTERN: &str =
    "^[^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069]*$";

fn check_printable(field: &'static str, s: &str) -> Result<(), Violation> {
    match s.chars().enumerate().find(|(_, c)| is_forbidden_char(*c)) {
        None => Ok(()),
        Some((at, c)) => Err(Violation::new(
            field,
            Rule::Format,
            format!(
                "must not contain control or bidirectional-formatting characters, got U+{:04X} at character {at}",
                u32::from(c)
            ),
        )),
    }
}

fn check_occurred_at(t: DateTime<Utc>, ctx: &ValidationContext) -> Result<(), Violation> {
    if t > ctx.received_at + ctx.max_future {
        return Err(Violation::new(
            "occurred_at",
            Rule::Future,
            format!(
                "is more than {} minutes after the time it was received ({}); check the player's clock",
                ctx.max_future.num_minutes(),
                crate::event::format_timestamp(&ctx.received_at)
            ),
        ));
    }
    if t < ctx.received_at - ctx.late_horizon {
        return Err(Violation::new(
            "occurred_at",
            Rule::TooOld,
            format!(
                "is more than {} days before the time it was received ({}); events older than the late-data horizon are not counted",
                ctx.late_horizon.num_days(),
                crate::event::format_timestamp(&ctx.received_at)
            ),
        ));
    }
    Ok(())
}

fn parse_device(s: &str) -> Result<Device, Violation> {
    Device::from_wire(s).ok_or_else(|| {
        Violation::new(
            "device",
            Rule::Enum,
            format!(
                "must be one of web, mobile, tv, console, other, got {:?}",
                truncate_for_message(s)
            ),
        )
    })
}

fn check_country(s: &str) -> Result<(), Violation> {
    if is_iso_country(s) {
        Ok(())
    } else {
        Err(Violation::new(
            "country",
            Rule::Enum,
            format!(
                "must be an ISO 3166-1 alpha-2 code in uppercase, like \"US\", got {:?}",
                truncate_for_message(s)
            ),
        ))
    }
}

fn check_schema_version(v: i64) -> Result<(), Violation> {
    if (i64::from(MIN_SCHEMA_VERSION)..=i64::from(SCHEMA_VERSION)).contains(&v) {
        Ok(())
    } else {
        Err(Violation::new(
            "schema_version",
            Rule::Enum,
            format!(
                "must be {MIN_SCHEMA_VERSION} to {SCHEMA_VERSION} (the versions this server understands), got {v}"
            ),
        ))
    }
}

/// A token's form only (its signature is ingest's to check): schema version
/// 2 or later, at most [`MAX_PLAYBACK_TOKEN_BYTES`].
fn check_playback_token(token: Option<&str>, version: i64) -> Result<(), Violation> {
    let Some(token) = token else {
        return Ok(());
    };
    if version < i64::from(PLAYBACK_TOKEN_VERSION) {
        return Err(Violation::new(
            "playback_token",
            Rule::Format,
            format!(
                "needs schema_version {PLAYBACK_TOKEN_VERSION} or later (this event says {version}); send \"schema_version\": {PLAYBACK_TOKEN_VERSION} with it"
            ),
        ));
    }
    if token.is_empty() || token.len() > MAX_PLAYBACK_TOKEN_BYTES {
        return Err(Violation::new(
            "playback_token",
            Rule::Length,
            format!(
                "must be 1 to {MAX_PLAYBACK_TOKEN_BYTES} characters, got {}",
                token.chars().count()
            ),
        ));
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(Violation::new(
            "playback_token",
            Rule::Format,
            "may hold only A-Z, a-z, 0-9, '.', '_' and '-' (a token as the player service signed it)",
        ));
    }
    Ok(())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Decoding the Kafka record form here, not in `event`: it validates, and
/// the event types do not depend on validation.
impl ReceivedEvent {
    /// Decodes and re-validates a Kafka payload written by [`Self::to_json_bytes`].
    ///
    /// `received_at` must be present; the event is validated against it with
    /// `limits` (the time-window rules are relative to `received_at`, so
    /// re-validation gives the same verdict at any later time).
    pub fn from_json_bytes(bytes: &[u8], limits: &ValidationContext) -> crate::Result<Self> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| crate::Error::Decode(format!("not JSON: {e}")))?;
        let Value::Object(mut map) = value else {
            return Err(crate::Error::Decode("not a JSON object".into()));
        };
        let received_at = match map.remove("received_at") {
            Some(Value::String(s)) => parse_timestamp(&s)
                .map_err(|why| crate::Error::Decode(format!("received_at {why}")))?,
            Some(_) => return Err(crate::Error::Decode("received_at is not a string".into())),
            None => return Err(crate::Error::Decode("received_at is missing".into())),
        };
        let mut text = |field: &str| match map.remove(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(crate::Error::Decode(format!("{field} is not a string"))),
        };
        let (playback, playback_id) = (text("playback")?, text("playback_id")?);
        let playback = Playback::from_wire(playback.as_deref(), playback_id.as_deref())
            .map_err(crate::Error::Decode)?;
        let ctx = ValidationContext {
            received_at,
            ..*limits
        };
        let event = parse_event(&Value::Object(map), &ctx)
            .map_err(|r| crate::Error::Decode(format!("invalid event: {r}")))?;
        // Through with_playback, so an unverified record is never billable
        // whatever its revenue_eligible says.
        Ok(Self::new(event, received_at).with_playback(playback))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> ValidationContext {
        ValidationContext::at("2026-11-21T13:00:00Z".parse().unwrap())
    }

    fn good() -> Value {
        json!({
            "event_id": "8f14e45f-ceea-4e7a-9f3b-2c1d5e6a7b8c",
            "video_id": "vid_1",
            "user_id": "u1",
            "occurred_at": "2026-11-21T12:59:00Z",
            "watch_seconds": 45,
            "revenue_eligible": true,
        })
    }

    /// A Kafka record is decoded through `with_playback`: one marked
    /// unverified is never billable whatever its revenue_eligible says, and
    /// a verdict ingest never writes is refused.
    #[test]
    fn a_record_marked_unverified_decodes_never_billable() {
        let mut v = good();
        v["received_at"] = json!("2026-11-21T13:00:00Z");
        v["playback"] = json!("invalid:expired");
        let bytes = serde_json::to_vec(&v).unwrap();
        let e = ReceivedEvent::from_json_bytes(&bytes, &ctx()).unwrap();
        assert!(!e.event.revenue_eligible);
        assert_eq!(
            e.playback,
            Playback::Unverified {
                reason: "invalid:expired".into()
            }
        );
        // Written back, it reads the same.
        let again = ReceivedEvent::from_json_bytes(&e.to_json_bytes(), &ctx()).unwrap();
        assert_eq!(again, e);
        v["playback"] = json!("trusted");
        let bytes = serde_json::to_vec(&v).unwrap();
        assert!(ReceivedEvent::from_json_bytes(&bytes, &ctx()).is_err());
    }

    #[test]
    fn minimal_event_gets_defaults() {
        let e = parse_event(&good(), &ctx()).unwrap();
        assert_eq!(e.device, Device::Other);
        assert_eq!(e.ad_impressions, 0);
        assert_eq!(e.schema_version, 1);
        assert_eq!(e.session_id, None);
    }

    #[test]
    fn unknown_fields_and_nulls_are_tolerated() {
        let mut v = good();
        v["flavour"] = json!("vanilla");
        v["country"] = Value::Null;
        v["watch_seconds"] = json!(45.0);
        assert!(parse_event(&v, &ctx()).is_ok());
    }

    #[test]
    fn reports_every_violation_with_its_field() {
        let v = json!({
            "event_id": "nope",
            "video_id": "has space",
            "user_id": "",
            "occurred_at": "yesterday",
            "watch_seconds": -1,
            "device": "toaster",
            "country": "us",
            "revenue_eligible": "yes",
            "ad_impressions": 1001,
            "schema_version": 3,
        });
        let r = parse_event(&v, &ctx()).unwrap_err();
        let fields: Vec<_> = r.violations.iter().map(|v| v.field).collect();
        assert_eq!(
            fields,
            [
                "event_id",
                "video_id",
                "user_id",
                "occurred_at",
                "watch_seconds",
                "device",
                "country",
                "revenue_eligible",
                "ad_impressions",
                "schema_version"
            ]
        );
        assert!(
            r.to_string()
                .contains("watch_seconds: must be from 0 to 86400, got -1")
        );
    }

    #[test]
    fn time_window_is_relative_to_receive_time() {
        let mut v = good();
        v["occurred_at"] = json!("2026-11-21T13:05:00Z");
        assert!(
            parse_event(&v, &ctx()).is_ok(),
            "exactly 5 minutes ahead is allowed"
        );
        v["occurred_at"] = json!("2026-11-21T13:05:00.000001Z");
        let r = parse_event(&v, &ctx()).unwrap_err();
        assert_eq!(r.violations[0].rule, Rule::Future);
        v["occurred_at"] = json!("2026-10-22T12:59:59Z");
        let r = parse_event(&v, &ctx()).unwrap_err();
        assert_eq!(r.violations[0].rule, Rule::TooOld);
    }

    #[test]
    fn offsets_are_normalised_to_utc_micros() {
        let mut v = good();
        v["occurred_at"] = json!("2026-11-21T14:59:00.123456789+02:00");
        let e = parse_event(&v, &ctx()).unwrap();
        assert_eq!(
            crate::event::format_timestamp(&e.occurred_at),
            "2026-11-21T12:59:00.123456Z"
        );
    }

    #[test]
    fn non_objects_are_rejected_alone() {
        let r = parse_event(&json!([1]), &ctx()).unwrap_err();
        assert_eq!(r.violations[0].rule, Rule::NotAnObject);
    }

    #[test]
    fn validate_agrees_with_parse_on_typed_events() {
        let mut e = parse_event(&good(), &ctx()).unwrap();
        assert!(validate(&e, &ctx()).is_ok());
        e.watch_seconds = 90_000;
        e.video_id = String::new();
        let r = validate(&e, &ctx()).unwrap_err();
        assert!(r.names("watch_seconds") && r.names("video_id"));
    }
}
