//! The Redis key layout of the speed layer, free of I/O.
//!
//! Every key carries the hash tag `{p<partition>}` of the Kafka partition whose
//! events write it, so the one script that applies a partition's batch touches
//! keys of a single Redis Cluster slot. A video's events all sit in one
//! partition (the topic is keyed by `video_id`), so its counters are written
//! under one tag; readers sum over every partition's tag, which also keeps
//! counts right if the topic is ever repartitioned.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P{pN}:off` | string | next Kafka offset of partition N to apply |
//! | `P{pN}:dd:YYYYMMDD:BUCKET` | hash | remembered event ids of that occurred-at day: field = id bytes 2..16, value = 4-byte payload fingerprint |
//! | `P{pN}:c:VIDEO:YYYYMMDD` | hash | counters of the video's day: `HHv` views, `HHb` billable, `HHw` watch seconds |
//! | `P{pN}:u:VIDEO:YYYYMMDD` | HyperLogLog | the video's viewers that UTC day |
//! | `Pmeta` | hash | `partitions`: the topic's partition count |
//!
//! `P` is the configured prefix (default `vc:`). Dedup hashes are bucketed by
//! the id's leading bits so each stays a small listpack (about 20 bytes per
//! remembered id instead of ~90 for a key per id).

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

/// Names the keys under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpace {
    prefix: String,
    bucket_bits: u32,
}

impl KeySpace {
    /// Keys under `prefix`, with `2^bucket_bits` dedup buckets per day.
    pub fn new(prefix: impl Into<String>, bucket_bits: u32) -> Self {
        Self {
            prefix: prefix.into(),
            bucket_bits: bucket_bits.clamp(1, 24),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Offset key of `partition`.
    pub fn offset(&self, partition: i32) -> String {
        format!("{}{{p{partition}}}:off", self.prefix)
    }

    /// Key of the newest `received_at` (µs since the epoch) `partition` has
    /// applied, written by the script with the offset: how fresh the
    /// partition's counters are.
    pub fn applied_at(&self, partition: i32) -> String {
        format!("{}{{p{partition}}}:at", self.prefix)
    }

    /// Dedup hash of `id` for events that occurred on `day`, and the field the
    /// id takes in it.
    pub fn dedup(&self, partition: i32, day: NaiveDate, id: &Uuid) -> (String, Vec<u8>) {
        let b = id.as_bytes();
        let lead = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let bucket = lead >> (32 - self.bucket_bits);
        // Bytes 0..2 are implied by the bucket (bucket_bits >= 16) or kept in
        // the field (fewer bits): keep them when the bucket does not pin them.
        let from = if self.bucket_bits >= 16 { 2 } else { 0 };
        (
            format!(
                "{}{{p{partition}}}:dd:{}:{bucket:x}",
                self.prefix,
                day.format("%Y%m%d")
            ),
            b[from..].to_vec(),
        )
    }

    /// Counter hash of `video` for `day`.
    pub fn counters(&self, partition: i32, video: &str, day: NaiveDate) -> String {
        format!(
            "{}{{p{partition}}}:c:{video}:{}",
            self.prefix,
            day.format("%Y%m%d")
        )
    }

    /// Viewer HyperLogLog of `video` for `day`.
    pub fn viewers(&self, partition: i32, video: &str, day: NaiveDate) -> String {
        format!(
            "{}{{p{partition}}}:u:{video}:{}",
            self.prefix,
            day.format("%Y%m%d")
        )
    }

    /// Pattern matching every counter hash.
    pub fn counters_pattern(&self) -> String {
        format!("{}{{p*}}:c:*", self.prefix)
    }

    /// Parses a counter key back into (partition, video, day).
    pub fn parse_counters(&self, key: &str) -> Option<(i32, String, NaiveDate)> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix("{p")?;
        let (p, rest) = rest.split_once("}:c:")?;
        let (video, day) = rest.rsplit_once(':')?;
        Some((
            p.parse().ok()?,
            video.to_owned(),
            NaiveDate::parse_from_str(day, "%Y%m%d").ok()?,
        ))
    }

    /// The metadata hash.
    pub fn meta(&self) -> String {
        format!("{}meta", self.prefix)
    }
}

/// Counter field names for an hour of the day.
pub fn hour_fields(hour: u32) -> [String; 3] {
    [
        format!("{hour:02}v"),
        format!("{hour:02}b"),
        format!("{hour:02}w"),
    ]
}

/// End of the UTC day of `t` (the next midnight).
pub fn day_end(day: NaiveDate) -> DateTime<Utc> {
    let next = day.succ_opt().unwrap_or(day);
    next.and_hms_opt(0, 0, 0)
        .map(|n| n.and_utc())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_partition_tag_and_parse_back() {
        let ks = KeySpace::new("vc:", 17);
        let day = NaiveDate::from_ymd_opt(2026, 11, 21).unwrap();
        let id = Uuid::parse_str("8f14e45f-ceea-4e7a-9f3b-2c1d5e6a7b8c").unwrap();
        let (dk, field) = ks.dedup(3, day, &id);
        assert_eq!(
            dk,
            format!("vc:{{p3}}:dd:20261121:{:x}", 0x8f14e45fu32 >> 15)
        );
        assert_eq!(field.len(), 14);
        let ck = ks.counters(3, "v_1", day);
        assert_eq!(ck, "vc:{p3}:c:v_1:20261121");
        assert_eq!(ks.parse_counters(&ck), Some((3, "v_1".into(), day)));
        assert!(ks.offset(3).contains("{p3}") && ks.viewers(3, "v", day).contains("{p3}"));
        assert_eq!(hour_fields(7), ["07v", "07b", "07w"]);
        assert_eq!(day_end(day).to_rfc3339(), "2026-11-22T00:00:00+00:00");
    }

    #[test]
    fn bucket_and_field_identify_the_id() {
        let ks = KeySpace::new("x:", 17);
        let day = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let a = Uuid::from_bytes([1; 16]);
        let mut bb = [1u8; 16];
        bb[0] = 2;
        let b = Uuid::from_bytes(bb);
        assert_ne!(ks.dedup(0, day, &a), ks.dedup(0, day, &b));
    }
}
