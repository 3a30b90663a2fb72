//! The dedup rule of DESIGN §4, written once for every layer: what makes two
//! copies of an `event_id` the same event ([`Payload::fingerprint`]), and
//! which copy wins ([`CopyOrder`]). The speed layer's script compares
//! fingerprints, both batch engines and reconcile rank copies by
//! [`CopyOrder`] (the SQL forms are [`SQL_EVENT_KEY`] and
//! [`SQL_COPY_ORDER`]), so "duplicate", "conflicting" and "winner" mean the
//! same thing everywhere.
//!
//! The fingerprint is XXH3-64 (a specified, versioned hash whose output is
//! fixed across versions, platforms and processes) with
//! [`FINGERPRINT_SEED`] over a canonical encoding of the payload: the
//! fields in [`Payload`]'s order, a string as its byte length (u32 LE) then
//! its bytes, an absent optional string as length `u32::MAX`, integers as
//! little-endian i64, booleans as one byte; `playback_token` last, and only
//! when present (so events without one keep their earlier fingerprints).
//! Golden values in the tests pin
//! it: changing any of this changes what counts as a conflicting copy.

use uuid::Uuid;

use crate::event::ViewEvent;

/// Seed of the payload fingerprint (`"vcfp"`).
pub const FINGERPRINT_SEED: u64 = 0x7663_6670;

/// The SQL key copies are grouped by: the UUID's value, whatever its case.
pub const SQL_EVENT_KEY: &str = "lower(event_id)";

/// The SQL `ORDER BY` that ranks copies, first = winner: the columns of
/// [`CopyOrder`], with `fp` the payload fingerprint column.
pub const SQL_COPY_ORDER: &str = "received_at, kafka_partition, kafka_offset, fp";

/// What a copy of an event says, apart from its id and receipt: two copies
/// with equal payloads are one event sent twice; with different payloads
/// they are a *conflicting* duplicate (the winner counts, the other is
/// reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload<'a> {
    /// `video_id`.
    pub video_id: &'a str,
    /// `user_id`.
    pub user_id: &'a str,
    /// `session_id`.
    pub session_id: Option<&'a str>,
    /// `occurred_at`, microseconds since the epoch.
    pub occurred_at_us: i64,
    /// `watch_seconds`.
    pub watch_seconds: i64,
    /// `device`, by its wire name.
    pub device: &'a str,
    /// `country`.
    pub country: Option<&'a str>,
    /// `referrer`.
    pub referrer: Option<&'a str>,
    /// `quality`.
    pub quality: Option<&'a str>,
    /// `revenue_eligible`.
    pub revenue_eligible: bool,
    /// `ad_impressions`.
    pub ad_impressions: i64,
    /// `schema_version`.
    pub schema_version: i64,
    /// `playback_token`.
    pub playback_token: Option<&'a str>,
}

impl<'a> Payload<'a> {
    /// The payload of a typed event.
    pub fn of(e: &'a ViewEvent) -> Self {
        Self {
            video_id: &e.video_id,
            user_id: &e.user_id,
            session_id: e.session_id.as_deref(),
            occurred_at_us: e.occurred_at.timestamp_micros(),
            watch_seconds: e.watch_seconds.into(),
            device: e.device.as_str(),
            country: e.country.as_deref(),
            referrer: e.referrer.as_deref(),
            quality: e.quality.as_deref(),
            revenue_eligible: e.revenue_eligible,
            ad_impressions: e.ad_impressions.into(),
            schema_version: e.schema_version.into(),
            playback_token: e.playback_token.as_deref(),
        }
    }

    /// The canonical encoding (see the module doc), appended to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        fn text(out: &mut Vec<u8>, s: Option<&str>) {
            match s {
                Some(s) => {
                    // Field lengths are bounded by validation far below u32.
                    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
                None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
            }
        }
        text(out, Some(self.video_id));
        text(out, Some(self.user_id));
        text(out, self.session_id);
        out.extend_from_slice(&self.occurred_at_us.to_le_bytes());
        out.extend_from_slice(&self.watch_seconds.to_le_bytes());
        text(out, Some(self.device));
        text(out, self.country);
        text(out, self.referrer);
        text(out, self.quality);
        out.push(u8::from(self.revenue_eligible));
        out.extend_from_slice(&self.ad_impressions.to_le_bytes());
        out.extend_from_slice(&self.schema_version.to_le_bytes());
        // Appended only when present, so every event without a token keeps
        // the fingerprint it had before tokens existed (recorded state and
        // conflict reports stay comparable across the upgrade).
        if self.playback_token.is_some() {
            text(out, self.playback_token);
        }
    }

    /// The payload fingerprint, using `scratch` for the encoding (so a hot
    /// loop allocates once).
    pub fn fingerprint_with(&self, scratch: &mut Vec<u8>) -> u64 {
        scratch.clear();
        self.encode(scratch);
        xxhash_rust::xxh3::xxh3_64_with_seed(scratch, FINGERPRINT_SEED)
    }

    /// The payload fingerprint.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint_with(&mut Vec::with_capacity(128))
    }
}

/// Where a copy sits in the order that picks the winner: the copy received
/// first wins, then the lowest Kafka partition and offset; equal on all
/// three means the same Kafka record archived twice, and the fingerprint
/// settles even that, so the winner never depends on read order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CopyOrder {
    /// `received_at`, microseconds since the epoch.
    pub received_at_us: i64,
    /// `kafka_partition`.
    pub partition: i32,
    /// `kafka_offset`.
    pub offset: i64,
    /// [`Payload::fingerprint`].
    pub fingerprint: u64,
}

/// The dedup key of an event id: its UUID value (`A1...` and `a1...` are one
/// id), as the 128-bit pair the native engine hashes.
pub fn event_key(id: Uuid) -> [u64; 2] {
    let (hi, lo) = id.as_u64_pair();
    [hi, lo]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> Payload<'static> {
        Payload {
            video_id: "v1",
            user_id: "u1",
            session_id: None,
            occurred_at_us: 1_763_730_000_000_000,
            watch_seconds: 42,
            device: "web",
            country: Some("US"),
            referrer: None,
            quality: Some("1080p"),
            revenue_eligible: true,
            ad_impressions: 0,
            schema_version: 1,
            playback_token: None,
        }
    }

    /// Pinned: a dependency bump or an edit that changes the encoding or the
    /// hash fails here, loudly, instead of silently turning exact re-sends
    /// stored under the old fingerprint into conflicting duplicates.
    #[test]
    fn golden_fingerprints() {
        let p = payload();
        let mut buf = Vec::new();
        p.encode(&mut buf);
        // len 2 "v1" | len 2 "u1" | session absent | occurred_at µs LE |
        // watch 42 | len 3 "web" | len 2 "US" | referrer absent |
        // len 5 "1080p" | eligible | ad_impressions 0 | schema_version 1
        assert_eq!(
            hex(&buf),
            "020000007631020000007531ffffffff003421641a4406002a00000000000000\
             03000000776562020000005553ffffffff0500000031303830700100000000000000\
             000100000000000000"
        );
        assert_eq!(p.fingerprint(), GOLDEN_FP);
        let absent_vs_empty = Payload {
            session_id: Some(""),
            ..p
        };
        assert_ne!(absent_vs_empty.fingerprint(), p.fingerprint());
        // A token is appended after the fields of version 1.
        let signed = Payload {
            schema_version: 2,
            playback_token: Some("vpt1"),
            ..p
        };
        let mut with = Vec::new();
        signed.encode(&mut with);
        assert!(hex(&with).ends_with("02000000000000000400000076707431"));
    }

    /// The same value as Python's `xxhash.xxh3_64_intdigest(encoding,
    /// seed=0x76636670)`: an independent implementation agrees.
    const GOLDEN_FP: u64 = 14_041_971_905_678_517_964;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn every_field_is_in_the_fingerprint() {
        let p = payload();
        let variants = [
            Payload {
                video_id: "v2",
                ..p
            },
            Payload { user_id: "u2", ..p },
            Payload {
                session_id: Some("s"),
                ..p
            },
            Payload {
                occurred_at_us: p.occurred_at_us + 1,
                ..p
            },
            Payload {
                watch_seconds: 43,
                ..p
            },
            Payload { device: "tv", ..p },
            Payload { country: None, ..p },
            Payload {
                referrer: Some("x"),
                ..p
            },
            Payload {
                quality: Some("720p"),
                ..p
            },
            Payload {
                revenue_eligible: false,
                ..p
            },
            Payload {
                ad_impressions: 1,
                ..p
            },
            Payload {
                schema_version: 2,
                ..p
            },
            Payload {
                playback_token: Some("vpt1.k.a.b"),
                ..p
            },
        ];
        for v in variants {
            assert_ne!(v.fingerprint(), p.fingerprint(), "{v:?}");
        }
    }

    #[test]
    fn the_first_received_copy_wins() {
        let a = CopyOrder {
            received_at_us: 1,
            partition: 9,
            offset: 9,
            fingerprint: 9,
        };
        let b = CopyOrder {
            received_at_us: 2,
            partition: 0,
            offset: 0,
            fingerprint: 0,
        };
        assert!(a < b);
        let c = CopyOrder { partition: 0, ..a };
        assert!(c < a);
    }
}
