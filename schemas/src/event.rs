//! The event types. They can only be built from JSON through
//! [`parse_event`](crate::parse_event), so a value of these types is always valid.

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use uuid::Uuid;

pub use crate::time::{format_timestamp, truncate_to_micros};

/// The newest schema version this code understands: 1, and 2, which adds
/// `playback_token`.
pub const SCHEMA_VERSION: u32 = 2;
/// The oldest schema version this code understands.
pub const MIN_SCHEMA_VERSION: u32 = 1;
/// The first schema version with `playback_token`.
pub const PLAYBACK_TOKEN_VERSION: u32 = 2;

/// One view of a video, as a player reports it (DESIGN §3, v1 and v2).
///
/// Timestamps are held at microsecond precision (the archive's precision);
/// finer digits are dropped when parsing. `event_id` is held as a UUID and
/// written back in lowercase hyphenated form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ViewEvent {
    /// The dedup key: the same view sent twice carries the same id.
    pub event_id: Uuid,
    /// `^[A-Za-z0-9_-]{1,64}$`.
    pub video_id: String,
    /// 1..=128 characters.
    pub user_id: String,
    /// At most 128 characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// When the view happened; its UTC hour is the counting bucket.
    #[serde(serialize_with = "rfc3339")]
    pub occurred_at: DateTime<Utc>,
    /// 0..=86400.
    pub watch_seconds: u32,
    /// Defaults to `other`.
    pub device: Device,
    /// ISO 3166-1 alpha-2, uppercase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// At most 256 characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
    /// At most 256 characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<String>,
    /// Whether the view may earn the creator money.
    pub revenue_eligible: bool,
    /// 0..=1000, default 0.
    pub ad_impressions: u32,
    /// [`MIN_SCHEMA_VERSION`] to [`SCHEMA_VERSION`]; 1 when absent.
    pub schema_version: u32,
    /// The signed playback token of the playback this view belongs to
    /// (schema version 2; at most 1024 bytes). Ingest verifies it
    /// ([`Playback`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playback_token: Option<String>,
}

/// What ingest found of an event's playback token. An event whose playback
/// could not be verified is kept (without `--require-signed-events`) but
/// never billable: [`ReceivedEvent::with_playback`] records it with
/// `revenue_eligible` false.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Playback {
    /// Received before ingest checked tokens (archived by an earlier
    /// version): its own `revenue_eligible` decides, as it did then.
    #[default]
    Unchecked,
    /// The token verified: the platform started this playback of this video.
    Verified {
        /// The token's playback id.
        playback_id: String,
    },
    /// No token (`unsigned`), or one that did not verify (`invalid:<why>`,
    /// the token error's code).
    Unverified {
        /// `unsigned` or `invalid:<code>`.
        reason: String,
    },
}

impl Playback {
    /// The archive's and Kafka's `playback` value: `verified`, `unsigned`,
    /// `invalid:<code>`; `None` for [`Playback::Unchecked`].
    pub fn as_wire(&self) -> Option<&str> {
        match self {
            Playback::Unchecked => None,
            Playback::Verified { .. } => Some("verified"),
            Playback::Unverified { reason } => Some(reason),
        }
    }

    /// The playback id of a verified token.
    pub fn playback_id(&self) -> Option<&str> {
        match self {
            Playback::Verified { playback_id } => Some(playback_id),
            _ => None,
        }
    }

    /// Reads the wire form back (`playback`, `playback_id`); `Err` names
    /// what is wrong.
    pub fn from_wire(playback: Option<&str>, playback_id: Option<&str>) -> Result<Self, String> {
        match (playback, playback_id) {
            (None, None) => Ok(Playback::Unchecked),
            (Some("verified"), Some(id)) if !id.is_empty() => Ok(Playback::Verified {
                playback_id: id.to_owned(),
            }),
            (Some(r), None) if r == "unsigned" || r.starts_with("invalid:") => {
                Ok(Playback::Unverified {
                    reason: r.to_owned(),
                })
            }
            (p, id) => Err(format!(
                "playback {p:?} with playback_id {id:?} is not a verdict ingest writes"
            )),
        }
    }
}

/// The device class of a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// A browser.
    Web,
    /// A phone or tablet app.
    Mobile,
    /// A TV app.
    Tv,
    /// A games console.
    Console,
    /// Anything else, and the default when absent.
    #[default]
    Other,
}

impl Device {
    /// Every device, in wire order.
    pub const ALL: [Device; 5] = [
        Device::Web,
        Device::Mobile,
        Device::Tv,
        Device::Console,
        Device::Other,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Web => "web",
            Device::Mobile => "mobile",
            Device::Tv => "tv",
            Device::Console => "console",
            Device::Other => "other",
        }
    }

    /// Parses a wire name (exact, lowercase).
    pub fn from_wire(s: &str) -> Option<Device> {
        Device::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// A [`ViewEvent`] stamped by ingest with the time it was received. This is the
/// JSON object written to Kafka: the event's fields plus `received_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedEvent {
    /// The event as validated at ingest.
    pub event: ViewEvent,
    /// When ingest received it (microsecond precision, UTC).
    pub received_at: DateTime<Utc>,
    /// What ingest found of its playback token.
    pub playback: Playback,
}

// Written by hand rather than with `#[serde(flatten)]`, which goes through an
// intermediate map and costs a third of ingest's per-event CPU.
impl Serialize for ReceivedEvent {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let e = &self.event;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("event_id", &e.event_id)?;
        m.serialize_entry("video_id", &e.video_id)?;
        m.serialize_entry("user_id", &e.user_id)?;
        if let Some(v) = &e.session_id {
            m.serialize_entry("session_id", v)?;
        }
        m.serialize_entry("occurred_at", &format_timestamp(&e.occurred_at))?;
        m.serialize_entry("watch_seconds", &e.watch_seconds)?;
        m.serialize_entry("device", &e.device)?;
        if let Some(v) = &e.country {
            m.serialize_entry("country", v)?;
        }
        if let Some(v) = &e.referrer {
            m.serialize_entry("referrer", v)?;
        }
        if let Some(v) = &e.quality {
            m.serialize_entry("quality", v)?;
        }
        m.serialize_entry("revenue_eligible", &e.revenue_eligible)?;
        m.serialize_entry("ad_impressions", &e.ad_impressions)?;
        m.serialize_entry("schema_version", &e.schema_version)?;
        if let Some(v) = &e.playback_token {
            m.serialize_entry("playback_token", v)?;
        }
        m.serialize_entry("received_at", &format_timestamp(&self.received_at))?;
        if let Some(v) = self.playback.as_wire() {
            m.serialize_entry("playback", v)?;
        }
        if let Some(v) = self.playback.playback_id() {
            m.serialize_entry("playback_id", v)?;
        }
        m.end()
    }
}

impl ReceivedEvent {
    /// Stamps `event` as received at `received_at` (truncated to microseconds).
    /// Its playback is [`Playback::Unchecked`] until
    /// [`ReceivedEvent::with_playback`].
    pub fn new(event: ViewEvent, received_at: DateTime<Utc>) -> Self {
        Self {
            event,
            received_at: truncate_to_micros(received_at),
            playback: Playback::Unchecked,
        }
    }

    /// Records what ingest found of the event's playback token. The one
    /// place that makes an unverified playback never billable: its
    /// `revenue_eligible` is recorded false (the `playback` verdict says
    /// why), so every layer that counts billable views, speed and both batch
    /// engines, leaves it out without a rule of its own.
    pub fn with_playback(mut self, playback: Playback) -> Self {
        if matches!(playback, Playback::Unverified { .. }) {
            self.event.revenue_eligible = false;
        }
        self.playback = playback;
        self
    }

    /// The Kafka payload: compact JSON.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        // Serializing these plain fields cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl ViewEvent {
    /// The event as a JSON object (canonical form).
    pub fn to_json_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Object(Map::new()))
    }
}

fn rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&format_timestamp(t))
}
