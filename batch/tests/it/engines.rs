//! The native engine and the SQL engine (the rules as DataFusion SQL) give
//! byte-identical output and the same row counts, and both equal the truth,
//! on an archive with every hard case: exact re-sends, conflicting copies
//! (some received before the original), the same Kafka record archived twice,
//! invalid rows, late events and a fraud pattern.

use std::collections::BTreeMap;
use std::sync::Arc;

use batch::run::{Engine, RunOptions, RunReport};
use chrono::{DateTime, Duration, DurationRound, TimeDelta, Utc};
use loadgen::{GenConfig, Generator, Truth};
use object_store::ObjectStore;
use schemas::rules::hour_bucket;
use schemas::{ArchivedEvent, ReceivedEvent, RuleSet, ValidationContext};

use crate::harness::{expected, write};

fn now() -> DateTime<Utc> {
    "2026-11-21T12:00:00Z".parse().unwrap()
}

/// Every archived row, and how many rows of each hard case went in.
struct Archive {
    rows: Vec<ArchivedEvent>,
    /// Rows written a second time into another file (at-least-once archive).
    rearchived: Vec<ArchivedEvent>,
    invalid: u64,
    conflicting_ids: u64,
}

fn archive() -> Archive {
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
    // A fraud pattern: one user, one video, 25 billable views in a day.
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
fn days() -> (DateTime<Utc>, DateTime<Utc>) {
    let day = TimeDelta::days(1);
    (
        (now() - Duration::days(3)).duration_trunc(day).unwrap(),
        (now() + day).duration_trunc(day).unwrap(),
    )
}

async fn run(store: Arc<dyn ObjectStore>, engine: Engine) -> RunReport {
    let (from, to) = days();
    let opts = RunOptions {
        allow_incomplete: true,
        engine,
        ..RunOptions::new(from, to)
    };
    batch::run::run(store, &opts, &|_, _, _| {}).await.unwrap()
}

/// A native run of `days()` within `limit` bytes, spilling under `spill`.
async fn run_within(store: Arc<dyn ObjectStore>, limit: u64, spill: &std::path::Path) -> RunReport {
    let (from, to) = days();
    let opts = RunOptions {
        allow_incomplete: true,
        memory: batch::memory::Memory {
            limit,
            spill_dir: Some(spill.to_path_buf()),
        },
        ..RunOptions::new(from, to)
    };
    batch::run::run(store, &opts, &|_, _, _| {}).await.unwrap()
}

/// Bytes spilled over a run's steps.
fn spilled(m: &store::manifest::Manifest) -> u64 {
    m.steps.iter().filter_map(|s| s.spilled_bytes).sum()
}

/// With the smallest memory limit the native engine spills every row to
/// disk and reads it back by partition; the run id, the output's bytes and
/// every row count are those of the run in memory, and the spill files are
/// gone afterwards. On the hard cases, and on 120 000 rows (enough that the
/// first spill splits each shard further).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_memory_limit_spills_and_gives_the_same_bytes() {
    let spill = tempfile::tempdir().unwrap();
    let hard = tempfile::tempdir().unwrap();
    let hard_store = store::layout::open(&format!("file://{}", hard.path().display())).unwrap();
    let a = archive();
    write(hard_store.as_ref(), &a.rows, 0).await;
    write(hard_store.as_ref(), &a.rearchived, 1_000_000).await;

    let big = tempfile::tempdir().unwrap();
    let big_store = store::layout::open(&format!("file://{}", big.path().display())).unwrap();
    let (from, to) = days();
    let events = Generator::new(GenConfig {
        events: 120_000,
        seed: 7,
        videos: 50,
        users: 400,
        duplicate_ratio: 0.05,
        start: from,
        span: to - from - Duration::hours(1),
        now: to,
        ..GenConfig::default()
    })
    .unwrap()
    .accepted_at(to);
    let rows: Vec<ArchivedEvent> = events
        .into_iter()
        .enumerate()
        .map(|(n, received)| ArchivedEvent {
            kafka_partition: (received.event.video_id.len() % 3) as i32,
            kafka_offset: n as i64,
            received,
        })
        .collect();
    write(big_store.as_ref(), &rows, 0).await;

    for (name, store) in [("hard cases", hard_store), ("120 000 rows", big_store)] {
        let memory = run(store.clone(), Engine::Native).await.manifest;
        assert_eq!(spilled(&memory), 0, "{name}: the default limit holds it");
        let limit = batch::memory::MIN_LIMIT;
        let spilling = run_within(store.clone(), limit, spill.path())
            .await
            .manifest;
        assert!(
            spilled(&spilling) > 0,
            "{name}: a {limit}-byte limit spills: {:?}",
            spilling.steps
        );
        assert_eq!(spilling.run_id, memory.run_id, "{name}: run id");
        assert_eq!(spilling.inputs, memory.inputs, "{name}: inputs");
        assert_eq!(spilling.outputs, memory.outputs, "{name}: output bytes");
        assert_eq!(spilling.rows, memory.rows, "{name}: row counts");
        assert!(
            memory.rows.duplicates > 0 && memory.rows.fraud_filtered > 0,
            "{name}: {:?}",
            memory.rows
        );
        let names: Vec<&str> = spilling.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "planning",
                "reading",
                "deduplicating",
                "counting",
                "writing"
            ]
        );
        for s in &spilling.steps[1..4] {
            assert!(
                s.peak_rss_bytes.is_some_and(|b| b > 0) && s.memory_bytes.is_some(),
                "{name}: {s:?}"
            );
        }
        assert_eq!(
            std::fs::read_dir(spill.path()).unwrap().count(),
            0,
            "{name}: the run's spill directory is removed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_and_sql_engines_agree_byte_for_byte_and_with_the_truth() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::layout::open(&format!("file://{}", dir.path().display())).unwrap();
    let a = archive();
    write(store.as_ref(), &a.rows, 0).await;
    write(store.as_ref(), &a.rearchived, 1_000_000).await;

    let native = run(store.clone(), Engine::Native).await.manifest;
    let sql = run(store.clone(), Engine::Sql).await.manifest;
    assert_eq!(
        native.run_id, sql.run_id,
        "the engine is not part of the run id"
    );
    assert_eq!(native.inputs, sql.inputs);
    assert_eq!(
        native.outputs, sql.outputs,
        "outputs differ between engines"
    );
    assert_eq!(native.rows, sql.rows, "row counts differ between engines");

    // The truth: valid rows in (received_at, partition, offset) order, first
    // copy of each id wins.
    let all: Vec<&ArchivedEvent> = a.rows.iter().chain(&a.rearchived).collect();
    let mut valid: Vec<&ArchivedEvent> = all
        .iter()
        .copied()
        .filter(|r| {
            schemas::validate(
                &r.received.event,
                &ValidationContext::at(r.received.received_at),
            )
            .is_ok()
        })
        .collect();
    let mut payloads: BTreeMap<uuid::Uuid, std::collections::HashSet<String>> = BTreeMap::new();
    for r in &valid {
        payloads
            .entry(r.received.event.event_id)
            .or_default()
            .insert(r.received.event.to_json_value().to_string());
    }
    let r = &native.rows;
    assert_eq!(r.input, all.len() as u64);
    assert_eq!(r.invalid, a.invalid);
    assert_eq!(r.invalid, (all.len() - valid.len()) as u64);
    let conflicting = payloads.values().filter(|p| p.len() > 1).count() as u64;
    assert!(
        conflicting + 3 >= a.conflicting_ids,
        "the archive keeps most conflicts"
    );
    assert_eq!(r.conflicting_ids, conflicting);
    assert_eq!(
        r.fraud_filtered, 15,
        "25 billable views of one user, cap 10"
    );

    valid.sort_by_key(|r| (r.received.received_at, r.kafka_partition, r.kafka_offset));
    let mut truth = Truth::new(RuleSet::default());
    for r in &valid {
        truth.record(&r.received.event);
    }
    assert_eq!(r.duplicates, (valid.len() - payloads.len()) as u64);
    let got = store::views::load_views(store.as_ref(), &native.run_id)
        .await
        .unwrap();
    infra::test::assert_same_map(&got, &expected(&truth), "batch output");
}

/// What the speed layer counts from these rows: each Kafka record once, in
/// partition and offset order; valid rows only; an id counted once per
/// (partition, occurred-at day), its first copy there; no fraud cap.
fn speed_counts(rows: &[&ArchivedEvent]) -> reconcile::SpeedTable {
    let mut ordered: Vec<&ArchivedEvent> = rows.to_vec();
    ordered.sort_by_key(|r| (r.kafka_partition, r.kafka_offset));
    ordered.dedup_by_key(|r| (r.kafka_partition, r.kafka_offset));
    let rules = RuleSet::default();
    let mut seen = std::collections::HashSet::new();
    let mut out = reconcile::SpeedTable::new();
    for r in ordered {
        let e = &r.received.event;
        if schemas::validate(e, &ValidationContext::at(r.received.received_at)).is_err() {
            continue;
        }
        let day = schemas::rules::day_bucket(e.occurred_at);
        if !seen.insert((r.kafka_partition, day, e.event_id)) {
            continue;
        }
        let c = out
            .entry((e.video_id.clone(), hour_bucket(e.occurred_at)))
            .or_default();
        c[0] += 1;
        c[1] += u64::from(rules.is_billable(e));
        c[2] += u64::from(e.watch_seconds);
    }
    out
}

/// Reconcile's dedup is batch's: on the archive with every hard case, each
/// view speed counted beyond batch is explained as a conflicting duplicate,
/// each billable view batch dropped as fraud, and nothing else differs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_explains_speed_against_batch_on_the_same_archive() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::layout::open(&format!("file://{}", dir.path().display())).unwrap();
    let a = archive();
    write(store.as_ref(), &a.rows, 0).await;
    write(store.as_ref(), &a.rearchived, 1_000_000).await;
    let report = run(store.clone(), Engine::Native).await;
    let batch_views: u64 = store::views::load_views(store.as_ref(), &report.manifest.run_id)
        .await
        .unwrap()
        .values()
        .map(|v| v[0])
        .sum();

    let all: Vec<&ArchivedEvent> = a.rows.iter().chain(&a.rearchived).collect();
    let speed = speed_counts(&all);
    let speed_views: u64 = speed.values().map(|v| v[0]).sum();
    assert!(
        speed_views > batch_views,
        "conflicting copies in other partitions or days count again in speed"
    );
    let (from, to) = days();
    let r = reconcile::reconcile(store.clone(), &speed, from, to, Duration::hours(48))
        .await
        .unwrap();
    assert!(!r.has_unexplained(), "{:#?}", r.differences);
    assert_eq!(
        r.totals.get(&reconcile::Cause::ConflictingDuplicate),
        Some(&(speed_views - batch_views)),
        "every extra speed view is one conflicting copy: {:#?}",
        r.totals
    );
    assert_eq!(r.totals.get(&reconcile::Cause::FraudFiltered), Some(&15));
    assert!(r.agreeing > 100, "{}", r.agreeing);
}
