//! The one atomic Redis script per partition batch (DESIGN §5.2).
//!
//! [`PartitionBatch::build`] is pure: it turns a partition's decoded records
//! into the script's KEYS and ARGV. The script then, atomically:
//! 1. reads the partition's stored next offset and skips every record below it
//!    (a replay, or a batch of a consumer that lost the partition in a
//!    rebalance: fencing by offset makes either harmless);
//! 2. for each remaining record, `HSETNX`es its id into the dedup hash of its
//!    occurred-at day; on first sight it adds the record's counts to per-key
//!    totals and its user to the day's HyperLogLog; on a repeat it compares
//!    payload fingerprints to spot conflicting duplicates;
//! 3. applies the totals (one `HINCRBY` per field touched), the HyperLogLog
//!    adds, the key expiries, and stores the batch's next offset.
//!
//! Redis runs a script to completion before anything else and replicates and
//! persists its effects as one unit, so counters and offsets never disagree:
//! a crash at any point either applied the whole batch or none of it.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Timelike, Utc};
use schemas::rules::day_bucket;
use schemas::{ReceivedEvent, RuleSet};

use crate::keys::{KeySpace, day_end};

/// The script. KEYS[1] is the offset key, KEYS[2] the applied-at key,
/// KEYS[3..] the distinct data keys; ARGV[1] = record count n, ARGV[2] = the
/// batch's first offset, ARGV[3] = its next offset, ARGV[4] = 1 to accept a
/// gap, ARGV[5..5+k-1] = expiry (unix seconds, `+` first when it extends the
/// day's usual one) per data key, then 10 values per record:
/// offset, dedup key index, id field, fingerprint, counter key index, hour
/// ("HH"), billable (0/1), watch seconds, viewer key index, user id;
/// last, the newest `received_at` (µs) among the records.
pub const SCRIPT: &str = r#"
local stored = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = tonumber(ARGV[1])
-- A batch that starts past the stored offset would skip records (Redis lost
-- its last writes, e.g. a crash before fsync, or the consumer was moved past
-- them): apply nothing, let the consumer rewind to the stored offset. No key
-- yet means offset 0, so a first batch past 0 is a gap too.
if tonumber(ARGV[2]) > stored and ARGV[4] ~= '1' then
  return {0, 0, 0, 0, stored, 1}
end
local nkeys = #KEYS - 2
local base = 5 + nkeys
local counted, dups, conflicts, skipped = 0, 0, 0, 0
local incr = {}
local users = {}
local touched = {}
for i = 0, n - 1 do
  local a = base + i * 10
  if tonumber(ARGV[a]) < stored then
    skipped = skipped + 1
  else
    local dk = tonumber(ARGV[a + 1])
    touched[dk] = true
    if redis.call('HSETNX', KEYS[dk], ARGV[a + 2], ARGV[a + 3]) == 1 then
      counted = counted + 1
      local ck = tonumber(ARGV[a + 4])
      local hh = ARGV[a + 5]
      local t = incr[ck]
      if not t then t = {}; incr[ck] = t end
      t[hh .. 'v'] = (t[hh .. 'v'] or 0) + 1
      t[hh .. 'b'] = (t[hh .. 'b'] or 0) + tonumber(ARGV[a + 6])
      t[hh .. 'w'] = (t[hh .. 'w'] or 0) + tonumber(ARGV[a + 7])
      local uk = tonumber(ARGV[a + 8])
      local u = users[uk]
      if not u then u = {}; users[uk] = u end
      u[#u + 1] = ARGV[a + 9]
    else
      dups = dups + 1
      if redis.call('HGET', KEYS[dk], ARGV[a + 2]) ~= ARGV[a + 3] then
        conflicts = conflicts + 1
      end
    end
  end
end
for k, fields in pairs(incr) do
  touched[k] = true
  for f, d in pairs(fields) do
    if d ~= 0 then redis.call('HINCRBY', KEYS[k], f, d) end
  end
end
for k, list in pairs(users) do
  touched[k] = true
  for s = 1, #list, 500 do
    redis.call('PFADD', KEYS[k], unpack(list, s, math.min(s + 499, #list)))
  end
end
-- Expiry: set once when a key is new (NX); a '+' marks a key that a late
-- record needs kept longer than its day's usual expiry (GT extends it).
for k, _ in pairs(touched) do
  local at = ARGV[5 + k - 3]
  if string.sub(at, 1, 1) == '+' then
    at = string.sub(at, 2)
    redis.call('EXPIREAT', KEYS[k], at, 'NX')
    redis.call('EXPIREAT', KEYS[k], at, 'GT')
  else
    redis.call('EXPIREAT', KEYS[k], at, 'NX')
  end
end
local next_offset = tonumber(ARGV[3])
if next_offset > stored then redis.call('SET', KEYS[1], ARGV[3]) end
-- Freshness, with the offset in the same atomic step: the newest receipt
-- time this partition has applied (never moved back by a replay).
local newest = tonumber(ARGV[base + n * 10])
if n > 0 and newest > tonumber(redis.call('GET', KEYS[2]) or '0') then
  redis.call('SET', KEYS[2], ARGV[base + n * 10])
end
return {counted, dups, conflicts, skipped, math.max(stored, next_offset), 0}
"#;

/// What the script did with a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// First sightings: counted as views.
    pub counted: u64,
    /// Ids already remembered: dropped.
    pub duplicates: u64,
    /// Of those, how many carried a different payload than the first.
    pub conflicts: u64,
    /// Records below the stored offset: already applied, skipped.
    pub skipped: u64,
    /// The partition's stored next offset after the call.
    pub stored: i64,
    /// `Some(stored)` when the batch was refused because it starts past the
    /// stored offset: the consumer must rewind to `stored`.
    pub gap_at: Option<i64>,
}

impl Applied {
    /// From the script's reply.
    pub fn from_reply(r: &[i64]) -> Option<Self> {
        let v = |i: usize| r.get(i).and_then(|&x| u64::try_from(x).ok());
        let stored = *r.get(4)?;
        Some(Self {
            counted: v(0)?,
            duplicates: v(1)?,
            conflicts: v(2)?,
            skipped: v(3)?,
            stored,
            gap_at: (*r.get(5)? == 1).then_some(stored),
        })
    }
}

/// Retention settings that decide key expiries.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// An id is remembered at least this long after it was received.
    pub dedup_window: Duration,
    /// Counters and viewer sketches live this long after their day ends.
    pub counters: Duration,
}

/// One record of a partition, decoded.
#[derive(Debug, Clone)]
pub struct Record {
    /// Kafka offset.
    pub offset: i64,
    /// The event.
    pub event: ReceivedEvent,
}

/// The script invocation for one partition's records. ARGV lives in one
/// buffer (`args` yields the slices): a batch has ten values per record, and
/// a buffer each would dominate the cost of building it.
#[derive(Debug, Clone)]
pub struct PartitionBatch {
    /// KEYS.
    pub keys: Vec<String>,
    buf: Vec<u8>,
    ends: Vec<usize>,
}

/// Appends ARGV values to one buffer.
struct ArgWriter<'a> {
    buf: &'a mut Vec<u8>,
    ends: &'a mut Vec<usize>,
}

impl ArgWriter<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
        self.ends.push(self.buf.len());
    }

    fn num(&mut self, n: impl std::fmt::Display) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = write!(self.buf, "{n}");
        self.ends.push(self.buf.len());
    }
}

impl PartitionBatch {
    /// Builds the invocation. The batch covers offsets `[first_offset,
    /// next_offset)` (records that went to the dead-letter topic included);
    /// `allow_gap` accepts a first offset past the stored one (records the
    /// broker no longer has).
    pub fn build(
        ks: &KeySpace,
        partition: i32,
        records: &[Record],
        (first_offset, next_offset): (i64, i64),
        allow_gap: bool,
        rules: &RuleSet,
        retention: &Retention,
    ) -> Self {
        let mut keys = vec![ks.offset(partition), ks.applied_at(partition)];
        // Per data key: (usual expiry of its day, expiry this batch needs).
        let mut expiry: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
        let mut dedup_index: HashMap<String, usize> = HashMap::new();
        // (counter key, viewer key) indices per (video, day).
        let mut video_index: HashMap<(&str, chrono::NaiveDate), (usize, usize)> = HashMap::new();
        fn push_key(
            keys: &mut Vec<String>,
            expiry: &mut Vec<(DateTime<Utc>, DateTime<Utc>)>,
            k: String,
            e: (DateTime<Utc>, DateTime<Utc>),
        ) -> usize {
            keys.push(k);
            expiry.push(e);
            keys.len() // Lua is 1-based
        }
        let mut per_record: Vec<u8> = Vec::with_capacity(records.len() * 96);
        let mut per_ends: Vec<usize> = Vec::with_capacity(records.len() * 10);
        let mut w = ArgWriter {
            buf: &mut per_record,
            ends: &mut per_ends,
        };
        for r in records {
            let e = &r.event.event;
            let day = day_bucket(e.occurred_at).date_naive();
            let end = day_end(day);
            let (dk, field) = ks.dedup(partition, day, &e.event_id);
            let usual = end + retention.dedup_window;
            let need = end.max(r.event.received_at) + retention.dedup_window;
            let dki = match dedup_index.get(&dk) {
                Some(&i) => i,
                None => {
                    let i = push_key(&mut keys, &mut expiry, dk.clone(), (usual, need));
                    dedup_index.insert(dk, i);
                    i
                }
            };
            // Data keys start at KEYS[3].
            let slot = &mut expiry[dki - 3].1;
            *slot = (*slot).max(need);
            let counters = end + retention.counters;
            let (cki, uki) = *video_index
                .entry((e.video_id.as_str(), day))
                .or_insert_with(|| {
                    (
                        push_key(
                            &mut keys,
                            &mut expiry,
                            ks.counters(partition, &e.video_id, day),
                            (counters, counters),
                        ),
                        push_key(
                            &mut keys,
                            &mut expiry,
                            ks.viewers(partition, &e.video_id, day),
                            (counters, counters),
                        ),
                    )
                });
            w.num(r.offset);
            w.num(dki);
            w.bytes(&field);
            w.bytes(&fingerprint(&r.event));
            w.num(cki);
            w.num(format_args!("{:02}", e.occurred_at.hour()));
            w.bytes(if rules.is_billable(e) { b"1" } else { b"0" });
            w.num(e.watch_seconds);
            w.num(uki);
            w.bytes(e.user_id.as_bytes());
        }
        let mut buf = Vec::with_capacity(per_record.len() + 64 + expiry.len() * 12);
        let mut ends = Vec::with_capacity(per_ends.len() + 4 + expiry.len());
        let mut w = ArgWriter {
            buf: &mut buf,
            ends: &mut ends,
        };
        w.num(records.len());
        w.num(first_offset);
        w.num(next_offset);
        w.bytes(if allow_gap { b"1" } else { b"0" });
        for (usual, need) in &expiry {
            if need > usual {
                w.num(format_args!("+{}", need.timestamp()));
            } else {
                w.num(usual.timestamp());
            }
        }
        let base = buf.len();
        buf.extend_from_slice(&per_record);
        ends.extend(per_ends.iter().map(|e| e + base));
        let newest = records
            .iter()
            .map(|r| r.event.received_at.timestamp_micros())
            .max()
            .unwrap_or(0);
        ArgWriter {
            buf: &mut buf,
            ends: &mut ends,
        }
        .num(newest);
        Self { keys, buf, ends }
    }

    /// ARGV, in order.
    pub fn args(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.ends.iter().scan(0, move |start, &end| {
            let s = &self.buf[*start..end];
            *start = end;
            Some(s)
        })
    }
}

/// A 4-byte fingerprint of the event's payload: the low 32 bits of
/// [`schemas::dedup::Payload::fingerprint`], the one definition batch and
/// reconcile use too. Equal for exact re-sends, different (with high
/// probability) for conflicting ones.
pub fn fingerprint(e: &ReceivedEvent) -> [u8; 4] {
    (schemas::dedup::Payload::of(&e.event).fingerprint() as u32).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(offset: i64, id: &str, video: &str, watch: u32) -> Record {
        let now: DateTime<Utc> = "2026-11-21T13:30:00Z".parse().unwrap();
        let e = schemas::parse_event(
            &json!({"event_id": id, "video_id": video, "user_id": "u1",
                    "occurred_at": "2026-11-21T13:10:00Z", "watch_seconds": watch,
                    "revenue_eligible": true}),
            &schemas::ValidationContext::at(now),
        )
        .unwrap();
        Record {
            offset,
            event: ReceivedEvent::new(e, now),
        }
    }

    #[test]
    fn keys_are_shared_and_args_line_up() {
        let ks = KeySpace::new("t:", 17);
        let r = [
            rec(10, "8f14e45f-ceea-4e7a-9f3b-2c1d5e6a7b8c", "a", 40),
            rec(11, "8f14e45f-ceea-4e7a-9f3b-2c1d5e6a7b8c", "a", 40),
            rec(12, "1f14e45f-ceea-4e7a-9f3b-2c1d5e6a7b8c", "a", 10),
        ];
        let ret = Retention {
            dedup_window: Duration::hours(48),
            counters: Duration::days(35),
        };
        let b = PartitionBatch::build(&ks, 2, &r, (10, 13), false, &RuleSet::default(), &ret);
        // offset key + applied-at key + 2 dedup hashes + one counter hash +
        // one viewer sketch.
        assert_eq!(b.keys.len(), 6, "{:?}", b.keys);
        assert!(b.keys.iter().all(|k| k.contains("{p2}")));
        assert_eq!(b.keys[1], ks.applied_at(2));
        let nkeys = b.keys.len() - 2;
        let args: Vec<&[u8]> = b.args().collect();
        assert_eq!(args.len(), 4 + nkeys + 3 * 10 + 1);
        // The record's data key indices point past the two fixed keys.
        assert!(b.keys[2].contains(":dd:"), "{:?}", b.keys);
        let newest = r
            .iter()
            .map(|x| x.event.received_at.timestamp_micros())
            .max()
            .unwrap();
        assert_eq!(args[args.len() - 1], newest.to_string().as_bytes());
        assert_eq!(args[0], b"3");
        assert_eq!(args[1], b"10");
        assert_eq!(args[2], b"13");
        assert_eq!(args[3], b"0");
        let rec0 = &args[4 + nkeys..];
        assert_eq!(rec0[0], b"10");
        assert_eq!(rec0[5], b"13");
        assert_eq!(rec0[6], b"1");
        assert_eq!(rec0[9], b"u1");
        // The third record is not billable (10 s).
        assert_eq!(args[4 + nkeys + 20 + 6], b"0");
    }

    #[test]
    fn fingerprint_ignores_receive_time_but_not_payload() {
        let a = rec(1, "8f14e45f-ceea-4e7a-9f3b-2c1d5e6a7b8c", "a", 40);
        let mut b = a.clone();
        b.event.received_at += Duration::seconds(5);
        assert_eq!(fingerprint(&a.event), fingerprint(&b.event));
        b.event.event.watch_seconds = 41;
        assert_ne!(fingerprint(&a.event), fingerprint(&b.event));
    }
}
