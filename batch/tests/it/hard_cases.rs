//! An archive with every hard case: exact re-sends, conflicting copies
//! (some received before the original, some in another day), the same Kafka
//! record archived twice, invalid rows, late events and a fraud pattern.
//! Self-contained (no `crate::` paths), so the `viewcount` crate's cluster
//! test includes this file too.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, DurationRound, TimeDelta, Utc};
use loadgen::{GenConfig, Generator};
use object_store::ObjectStore;
use schemas::archive::to_record_batch;
use schemas::rules::hour_bucket;
use schemas::{ArchivedEvent, ReceivedEvent};

pub(crate) fn now() -> DateTime<Utc> {
    "2026-11-21T12:00:00Z".parse().unwrap()
}

/// Every archived row, and how many rows of each hard case went in.
pub(crate) struct Archive {
    pub(crate) rows: Vec<ArchivedEvent>,
    /// Rows written a second time into another file (at-least-once archive).
    pub(crate) rearchived: Vec<ArchivedEvent>,
    pub(crate) invalid: u64,
    pub(crate) conflicting_ids: u64,
}

pub(crate) fn archive() -> Archive {
    let gen_now = now();
    let events = Generator::new(GenConfig {
        events: 6_000,
        seed: 41,
        videos: 40,
        users: 300,
        duplicate_ratio: 0.1,
        late_ratio: 0.05,
        invalid_ratio: 0.0,
        start: (gen_now - Duration::hours(30))
            .duration_trunc(TimeDelta::hours(1))
            .unwrap(),
        span: Duration::hours(28),
        now: gen_now,
        ..GenConfig::default()
    })
    .unwrap()
    .accepted_at(gen_now);
    let mut received: Vec<ReceivedEvent> = Vec::new();
    let mut t = gen_now - Duration::minutes(10);
    let stamp = |e: schemas::ViewEvent, at: DateTime<Utc>| ReceivedEvent::new(e, at);
    for e in events {
        t += Duration::milliseconds(1);
        received.push(stamp(e.event, t));
    }
    // A fraud pattern: one user, one video, 25 billable views 5 minutes
    // apart (12 in each of two hours: repeat loops; the 25th in a third hour,
    // past the daily cap).
    let fraud_hour = (gen_now - Duration::hours(5))
        .duration_trunc(TimeDelta::hours(1))
        .unwrap();
    for i in 0..25 {
        let mut e = received[i].event.clone();
        e.event_id = uuid::Uuid::from_u128(0xf00d_0000 + i as u128);
        e.video_id = "vFraud".into();
        e.user_id = "bot-7".into();
        e.occurred_at = fraud_hour + Duration::minutes(i as i64 * 5);
        e.watch_seconds = 45;
        e.revenue_eligible = true;
        received.push(stamp(e, gen_now - Duration::minutes(1)));
    }
    // Conflicting copies: another payload under the same id, half of them
    // received before the original (so they win), some in another day.
    let mut conflicting_ids = 0;
    for i in (100..700).step_by(12) {
        let orig = received[i].clone();
        let mut e = orig.event.clone();
        e.watch_seconds = (e.watch_seconds + 17) % 86_400;
        if i % 24 == 4 {
            e.video_id = format!("{}x", e.video_id);
            e.occurred_at -= Duration::days(1);
        }
        let at = if i % 24 == 4 {
            orig.received_at - Duration::seconds(3)
        } else {
            orig.received_at + Duration::seconds(3)
        };
        received.push(stamp(e, at));
        conflicting_ids += 1;
    }
    // Invalid rows (the archive holds what an older, laxer ingest let in).
    let mut invalid = 0;
    for (k, i) in (800..1_000).step_by(20).enumerate() {
        let mut r = received[i].clone();
        r.event.event_id = uuid::Uuid::from_u128(0xbad0_0000 + k as u128);
        match k % 3 {
            0 => r.event.watch_seconds = 86_401,
            1 => r.event.country = Some("us".into()),
            _ => r.event.occurred_at = r.received_at + Duration::minutes(6),
        }
        received.push(r);
        invalid += 1;
    }
    // Invalid copies of events that also have a conflicting copy in another
    // partition (i ≡ 4 mod 24 above), received first and in a third
    // partition: a dedup that forgot validity would make them the winners
    // and lose track of the conflict.
    for i in (100..300).step_by(48) {
        let mut r = received[i].clone();
        r.event.video_id = format!("{}yy", r.event.video_id);
        r.event.watch_seconds = 86_401;
        // Before the conflicting copy too (3 s before the original).
        r.received_at -= Duration::seconds(5);
        received.push(r);
        invalid += 1;
    }
    // Kafka positions: partition by video, offsets in receive order. (Only
    // the run's days: a run reads nothing else.)
    let (from, to) = days();
    received.retain(|r| r.event.occurred_at >= from && r.event.occurred_at < to);
    received.sort_by_key(|r| r.received_at);
    let mut offsets = [0i64; 4];
    let rows: Vec<ArchivedEvent> = received
        .into_iter()
        .map(|r| {
            let p = (r.event.video_id.len() % 4) as i32;
            offsets[p as usize] += 1;
            ArchivedEvent {
                received: r,
                kafka_partition: p,
                kafka_offset: offsets[p as usize],
            }
        })
        .collect();
    // (Not the invalid early copies: `invalid` counts each once.)
    let rearchived = rows
        .iter()
        .step_by(50)
        .filter(|r| !r.received.event.video_id.ends_with("yy"))
        .cloned()
        .collect();
    Archive {
        rows,
        rearchived,
        invalid,
        conflicting_ids,
    }
}

/// The run's range: whole days around `now`.
pub(crate) fn days() -> (DateTime<Utc>, DateTime<Utc>) {
    let day = TimeDelta::days(1);
    (
        (now() - Duration::days(3)).duration_trunc(day).unwrap(),
        (now() + day).duration_trunc(day).unwrap(),
    )
}

/// Writes `rows` as raw archive files, one per (hour, partition), as the
/// archive would; `tag` moves the files' names apart (a second archiving).
pub(crate) async fn write(store: &dyn ObjectStore, rows: &[ArchivedEvent], tag: i64) {
    write_columns(store, rows, tag, schemas::raw_schema().fields().len()).await;
}

/// [`write`] as an archive from before `playback_token`, `playback` and
/// `playback_id` wrote its files: without those three last columns.
#[allow(
    dead_code,
    reason = "batch's engine tests use it; viewcount's Ballista test includes this file and does not"
)]
pub(crate) async fn write_without_playback(
    store: &dyn ObjectStore,
    rows: &[ArchivedEvent],
    tag: i64,
) {
    write_columns(store, rows, tag, schemas::raw_schema().fields().len() - 3).await;
}

/// The rows' raw files, with the raw schema's first `columns` columns.
async fn write_columns(store: &dyn ObjectStore, rows: &[ArchivedEvent], tag: i64, columns: usize) {
    let mut files: BTreeMap<(DateTime<Utc>, i32), Vec<ArchivedEvent>> = BTreeMap::new();
    for r in rows {
        files
            .entry((hour_bucket(r.received.event.occurred_at), r.kafka_partition))
            .or_default()
            .push(r.clone());
    }
    for ((hour, p), rows) in files {
        let first = rows[0].kafka_offset;
        let last = rows[rows.len() - 1].kafka_offset + tag;
        let batch = to_record_batch(&rows)
            .unwrap()
            .project(&(0..columns).collect::<Vec<_>>())
            .unwrap();
        let bytes = store::layout::parquet_bytes(batch.schema(), &[batch]).unwrap();
        store::layout::put(store, &store::layout::raw_file(hour, p, first, last), bytes)
            .await
            .unwrap();
    }
}

/// Labelled traffic in which every invalid-traffic rule catches views: a
/// day of generated traffic (a fifth of it invalid patterns, a fifth
/// organic hard cases, re-sends), in which every 400th event, when
/// billable, has its playback token replayed four more times under fresh
/// event ids and invented users (the generator's labels know no replays:
/// these are hand-made, labelled with the original). Each archived row
/// (partitioned by video, offsets in acceptance order, so the first copy of
/// an id wins in batch as in a truth) with its label; a replayed row's
/// playback is verified.
pub(crate) fn labelled() -> Vec<(ArchivedEvent, loadgen::Label)> {
    use schemas::{Playback, RuleSet, ValidationContext};
    let gen_now = now();
    let generator = Generator::new(GenConfig {
        events: 12_000,
        seed: 14,
        videos: 300,
        users: 5_000,
        duplicate_ratio: 0.05,
        late_ratio: 0.0,
        invalid_ratio: 0.0,
        start: hour_bucket(gen_now - Duration::hours(26)),
        span: Duration::hours(24),
        now: gen_now,
        mix: loadgen::Mix {
            fraud_ratio: 0.2,
            hard_case_ratio: 0.2,
            ..loadgen::Mix::default()
        },
        ..GenConfig::default()
    })
    .unwrap();
    let ctx = ValidationContext::at(gen_now);
    let mut offsets = [0i64; 4];
    let mut rows = Vec::new();
    let mut push = |event: schemas::ViewEvent, playback: Playback, label| {
        let p = (event.video_id.len() + event.video_id.as_bytes()[5] as usize) % 4;
        offsets[p] += 1;
        rows.push((
            ArchivedEvent {
                received: ReceivedEvent::new(event, gen_now).with_playback(playback),
                kafka_partition: p as i32,
                kafka_offset: offsets[p],
            },
            label,
        ));
    };
    let mut replays = 0u128;
    for (n, e) in generator.enumerate() {
        let Ok(event) = schemas::parse_event(&e.value, &ctx) else {
            continue;
        };
        if n % 400 != 7 || !RuleSet::default().is_billable(&event) {
            push(event, Playback::Unchecked, e.label);
            continue;
        }
        let playback_id = format!("pb-replayed-{n}");
        for j in 0..5u32 {
            let copy = if j == 0 {
                event.clone()
            } else {
                replays += 1;
                schemas::ViewEvent {
                    event_id: uuid::Uuid::from_u128(0x7e9_1a7 << 64 | replays),
                    user_id: format!("invented-{n}-{j}"),
                    occurred_at: event.occurred_at + Duration::seconds(i64::from(j) * 90),
                    ..event.clone()
                }
            };
            let verified = Playback::Verified {
                playback_id: playback_id.clone(),
            };
            push(copy, verified, e.label);
        }
    }
    assert!(replays >= 40, "{replays} replays");
    rows
}
