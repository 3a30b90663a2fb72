//! The native engine and the SQL engine (the rules as DataFusion SQL) give
//! byte-identical output and the same row counts, and both equal the truth,
//! on an archive with every hard case: exact re-sends, conflicting copies
//! (some received before the original), the same Kafka record archived twice,
//! invalid rows, late events, a fraud pattern, and events whose playback
//! token verified, did not, or was never checked.

use std::collections::BTreeMap;
use std::sync::Arc;

use batch::run::{Engine, RunOptions, RunReport};
use chrono::Duration;
use loadgen::{GenConfig, Generator, Truth};
use object_store::ObjectStore;
use schemas::fraud::FraudRule;
use schemas::rules::hour_bucket;
use schemas::{ArchivedEvent, Playback, RuleSet, ValidationContext};

use crate::hard_cases::{archive, days, write, write_without_playback};
use crate::harness::expected;

async fn run(store: Arc<dyn ObjectStore>, engine: Engine) -> RunReport {
    let (from, to) = days();
    let opts = RunOptions {
        allow_incomplete: true,
        compute: crate::harness::compute(engine),
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

/// The native engine in memory, the SQL engine and the native engine
/// spilling at the smallest limit, over `store`: the same run id, bytes and
/// row counts. Returns the native run's manifest.
async fn three_engines_agree(store: &Arc<dyn ObjectStore>) -> store::manifest::Manifest {
    let native = run(store.clone(), Engine::Native).await.manifest;
    let sql = run(store.clone(), Engine::Sql).await.manifest;
    let spill = tempfile::tempdir().unwrap();
    let spilled_run = run_within(store.clone(), batch::memory::MIN_LIMIT, spill.path())
        .await
        .manifest;
    assert!(spilled(&spilled_run) > 0, "the smallest limit spills");
    for other in [&sql, &spilled_run] {
        assert_eq!(native.run_id, other.run_id);
        assert_eq!(
            native.outputs, other.outputs,
            "views or filtered bytes differ ({:?})",
            other.engine
        );
        assert_eq!(native.rows, other.rows);
    }
    native
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
        // Reconcile's read and dedup: the same copies removed either way.
        let copies = |limit: u64| {
            let store = store.clone();
            let inputs = memory.inputs.clone();
            let spill = spill.path().to_path_buf();
            async move {
                let memory = batch::memory::Memory {
                    limit,
                    spill_dir: Some(spill),
                };
                let rules = RuleSet::default();
                batch::run::removed_copies(store, &inputs, &rules, Duration::minutes(10), &memory)
                    .await
                    .unwrap()
            }
        };
        let (in_memory, spilled_copies) = (copies(1 << 30).await, copies(limit).await);
        // (The generated rows' re-sends all come within the window.)
        assert!(
            !in_memory.is_empty() || name != "hard cases",
            "{name}: conflicting and late copies are removed"
        );
        assert_eq!(
            spilled_copies, in_memory,
            "{name}: reconcile's removed copies"
        );
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
    let mut a = archive();
    a.rows = with_playbacks(&a.rows);
    a.rearchived = with_playbacks(&a.rearchived);
    let verdicts =
        |p: fn(&Playback) -> bool| a.rows.iter().filter(|r| p(&r.received.playback)).count();
    assert!(
        verdicts(|p| matches!(p, Playback::Verified { .. })) > 10
            && verdicts(|p| matches!(p, Playback::Unverified { .. })) > 10
            && verdicts(|p| *p == Playback::Unchecked) > 10,
        "every kind of verdict is in the archive"
    );
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
    let (_, fraud) = crate::harness::filtered_by_rule(store.as_ref(), &native, "vFraud").await;
    assert_eq!(
        fraud,
        [(FraudRule::RepeatLoop, 24), (FraudRule::DailyCap, 1)].into(),
        "25 billable views of one user 5 minutes apart: two hours of 12 (repeat loops) and the 25th past the daily cap"
    );

    valid.sort_by_key(|r| (r.received.received_at, r.kafka_partition, r.kafka_offset));
    let mut truth = Truth::new(RuleSet::default());
    for r in &valid {
        truth.record(&r.received.event);
    }
    assert_eq!(r.duplicates, (valid.len() - payloads.len()) as u64);
    let got = store::views::load_views(store.as_ref(), &native)
        .await
        .unwrap();
    testkit::assert_same_map(&got, &expected(&truth), "batch output");
}

/// Raw files written before the archive had `playback_token`, `playback`
/// and `playback_id` read as events whose playback was never checked: both
/// engines count them exactly as the same rows written with those columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_from_before_the_playback_columns_count_the_same_in_both_engines() {
    let a = archive();
    let mut seen = Vec::new();
    for old in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = store::layout::open(&format!("file://{}", dir.path().display())).unwrap();
        if old {
            write_without_playback(store.as_ref(), &a.rows, 0).await;
            write_without_playback(store.as_ref(), &a.rearchived, 1_000_000).await;
        } else {
            write(store.as_ref(), &a.rows, 0).await;
            write(store.as_ref(), &a.rearchived, 1_000_000).await;
        }
        for engine in [Engine::Native, Engine::Sql] {
            let m = run(store.clone(), engine).await.manifest;
            let bytes: Vec<String> = m.outputs.iter().map(|o| o.sha256.clone()).collect();
            seen.push((old, engine, format!("{:?}", m.rows), bytes));
        }
    }
    for (old, engine, rows, bytes) in &seen[1..] {
        assert_eq!(
            (rows, bytes),
            (&seen[0].2, &seen[0].3),
            "old files: {old}, {engine:?}"
        );
    }
}

/// `rows` as an ingest checking playback tokens records them, chosen by
/// event id so every copy of an event gets the same: a third verified (the
/// version-1 ones get a token and version 2), a seventh unverified (never
/// billable), the rest unchecked (archived before tokens); the fraud
/// pattern's video as it is.
fn with_playbacks(rows: &[ArchivedEvent]) -> Vec<ArchivedEvent> {
    let signer = playback::PlaybackSigner::from_seed("k1", [3; 32]).unwrap();
    rows.iter()
        .cloned()
        .map(|mut r| {
            let e = &mut r.received.event;
            if e.video_id == "vFraud" {
                // The fraud pattern stays as it is pinned below.
                return r;
            }
            let verdict = match e.event_id.as_u128() % 21 {
                0..=6 if e.schema_version == 1 => {
                    let id = format!("pb-{}", e.event_id);
                    e.schema_version = 2;
                    e.playback_token =
                        Some(signer.issue(&e.video_id, &id, e.occurred_at, Duration::hours(1)));
                    Playback::Verified { playback_id: id }
                }
                7..=9 => Playback::Unverified {
                    reason: "invalid:expired".into(),
                },
                _ => Playback::Unchecked,
            };
            r.received = r.received.with_playback(verdict);
            r
        })
        .collect()
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
    let batch_views: u64 = store::views::load_views(store.as_ref(), &report.manifest)
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
    let r = reconcile::reconcile(
        store.clone(),
        &speed,
        from,
        to,
        Duration::hours(48),
        &batch::memory::Memory::default(),
    )
    .await
    .unwrap();
    assert!(!r.has_unexplained(), "{:#?}", r.differences);
    assert_eq!(
        r.totals.get(&reconcile::Cause::ConflictingDuplicate),
        Some(&(speed_views - batch_views)),
        "every extra speed view is one conflicting copy: {:#?}",
        r.totals
    );
    // Every filtered view is explained under its rule.
    let (by_cause, _) =
        crate::harness::filtered_by_rule(store.as_ref(), &report.manifest, "vFraud").await;
    assert!(
        by_cause[&reconcile::Cause::RepeatLoop] >= 24,
        "{by_cause:?}"
    );
    for (cause, n) in &by_cause {
        assert_eq!(r.totals.get(cause), Some(n), "{cause:?}");
    }
    assert!(r.agreeing > 100, "{}", r.agreeing);
}

/// Every invalid-traffic rule of rules v2 on labelled traffic (each
/// pattern and organic hard case of `viewcount gen --fraud-ratio`): the
/// native engine in memory, the native engine spilling and the SQL engine
/// write the same bytes (the views and the filtered table), equal to the
/// truth ([`schemas::fraud::decide`]), and every rule catches views.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_traffic_rule_is_the_same_in_both_engines_and_the_truth() {
    let mut truth = Truth::new(RuleSet::default());
    // Rules v2's impossible-watch form (the hour limit), as a v2 manifest
    // re-decides: the same in both engines and the reference.
    let v2 = RuleSet {
        impossible_watch_seconds: 4 * 3600,
        impossible_watch_devices: 0,
        ..RuleSet::default()
    };
    let mut truth_v2 = Truth::new(v2);
    let mut rows = Vec::new();
    for (row, label) in crate::hard_cases::labelled() {
        let (event, playback) = (&row.received.event, row.received.playback.playback_id());
        truth.record_played(event, label, playback);
        truth_v2.record_played(event, label, playback);
        rows.push(row);
    }
    let dir = tempfile::tempdir().unwrap();
    let store = store::layout::open(&format!("file://{}", dir.path().display())).unwrap();
    write(store.as_ref(), &rows, 0).await;

    let native = three_engines_agree(&store).await;
    let got = store::views::load_views(store.as_ref(), &native)
        .await
        .unwrap();
    testkit::assert_same_map(&got, &expected(&truth), "batch output");

    // The filtered table, by rule, is the truth's attribution.
    let filtered = store::filtered::load_filtered(store.as_ref(), &native)
        .await
        .unwrap();
    let mut by_rule: BTreeMap<String, u64> = BTreeMap::new();
    for f in &filtered {
        *by_rule.entry(f.rule.name().to_owned()).or_default() += f.views as u64;
    }
    let file = truth.to_file();
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for tally in file.labels.values() {
        for (rule, n) in &tally.filtered_by_rule {
            *want.entry(rule.clone()).or_default() += n;
        }
    }
    assert_eq!(by_rule, want, "filtered views by rule");
    let (from, to) = days();
    let with_v2 = |engine: Engine| {
        let store = store.clone();
        async move {
            let opts = RunOptions {
                allow_incomplete: true,
                rules: v2,
                compute: crate::harness::compute(engine),
                ..RunOptions::new(from, to)
            };
            batch::run::run(store, &opts, &|_, _, _| {})
                .await
                .unwrap()
                .manifest
        }
    };
    let (native_v2, sql_v2) = (with_v2(Engine::Native).await, with_v2(Engine::Sql).await);
    assert_eq!(
        native_v2.outputs, sql_v2.outputs,
        "rules v2: the same bytes"
    );
    testkit::assert_same_map(
        &store::views::load_views(store.as_ref(), &native_v2)
            .await
            .unwrap(),
        &expected(&truth_v2),
        "rules v2 batch output",
    );
    let v2_filtered = store::filtered::load_filtered(store.as_ref(), &native_v2)
        .await
        .unwrap();
    assert!(
        v2_filtered
            .iter()
            .any(|f| f.rule == FraudRule::ImpossibleWatch && f.views > 0),
        "the hour limit catches views"
    );
    for rule in FraudRule::ALL {
        assert!(
            by_rule.get(rule.name()).copied().unwrap_or(0) > 0,
            "{rule} caught nothing: {by_rule:?}"
        );
    }
    assert_eq!(
        by_rule.values().sum::<u64>(),
        native.rows.fraud_filtered,
        "the filtered table sums to fraud_filtered"
    );

    // The events behind the counts (billing explain's evidence): the native
    // engine's list, in memory and spilling, is the SQL specification's,
    // and adds up to the run's billable and filtered views of those videos.
    let videos: Vec<String> = got
        .keys()
        .map(|(v, _)| v.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .take(40)
        .collect();
    let (from, to) = (native.from, native.to);
    let evidence = |memory: batch::memory::Memory| {
        let (store, inputs, videos) = (store.clone(), native.inputs.clone(), videos.clone());
        async move {
            batch::evidence::billable_events(
                store,
                &inputs,
                &videos,
                from,
                to,
                &native.rules,
                &memory,
            )
            .await
            .unwrap()
        }
    };
    let in_memory = evidence(batch::memory::Memory::default()).await;
    let spill = tempfile::tempdir().unwrap();
    let spilling = evidence(batch::memory::Memory {
        limit: batch::memory::MIN_LIMIT,
        spill_dir: Some(spill.path().to_owned()),
    })
    .await;
    let by_sql = batch_sql::sql::billable_events(
        store.clone(),
        &native.inputs,
        &videos,
        from,
        to,
        &native.rules,
    )
    .await
    .unwrap();
    assert_eq!(
        in_memory, by_sql,
        "native evidence differs from the SQL specification's"
    );
    assert_eq!(
        spilling, by_sql,
        "spilled evidence differs from the SQL specification's"
    );
    let (mut billable, mut filtered) = (0u64, 0u64);
    for ((v, _), c) in &got {
        if videos.contains(v) {
            billable += c[1];
            filtered += c[2];
        }
    }
    let caught = in_memory.iter().filter(|e| e.filtered_by.is_some()).count() as u64;
    assert_eq!(
        (in_memory.len() as u64 - caught, caught),
        (billable, filtered),
        "the evidence holds each billable and filtered view once"
    );
    assert!(
        caught > 0 && billable > 0,
        "{billable} billable, {caught} filtered"
    );
}

/// The held-out suite (crate `heldout`: patterns written apart from the
/// rules and never tuned on) counts the same in the native engine, in
/// memory and spilling, and the SQL specification, and equals the reference
/// decision: so the held-out figures of BENCHMARKS.md, computed with the
/// reference, are the batch job's. Verified playbacks as ingest records
/// them; unsigned views unverified (never billable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_held_out_suite_is_the_same_in_both_engines_and_the_reference() {
    let (from, _) = days();
    let cfg = heldout::SuiteConfig {
        seed: 77,
        start: from,
        days: 3,
        videos: 120,
        organic_users: 3_000,
        organic_views: 6_000,
        episodes_per_pattern: 2,
    };
    let received = crate::hard_cases::now();
    let mut truth = Truth::new(RuleSet::default());
    let mut rows = Vec::new();
    let mut patterns = std::collections::BTreeSet::new();
    for (i, v) in heldout::generate(&cfg).into_iter().enumerate() {
        // Only what ingest would take by then (the suite runs past `now`).
        if v.event.occurred_at > received {
            continue;
        }
        patterns.insert(v.pattern);
        let playback = match &v.playback_id {
            Some(id) => Playback::Verified {
                playback_id: id.clone(),
            },
            None => Playback::Unverified {
                reason: "unsigned".into(),
            },
        };
        let r = schemas::ReceivedEvent::new(v.event, received).with_playback(playback);
        truth.record_played(&r.event, loadgen::Label::Organic, r.playback.playback_id());
        rows.push(ArchivedEvent {
            received: r,
            kafka_partition: (i % 4) as i32,
            kafka_offset: (i / 4) as i64,
        });
    }
    assert!(patterns.len() >= 12, "{patterns:?}");
    let dir = tempfile::tempdir().unwrap();
    let store = store::layout::open(&format!("file://{}", dir.path().display())).unwrap();
    write(store.as_ref(), &rows, 0).await;

    let native = three_engines_agree(&store).await;
    assert!(native.rows.fraud_filtered > 0);
    let got = store::views::load_views(store.as_ref(), &native)
        .await
        .unwrap();
    testkit::assert_same_map(&got, &expected(&truth), "held-out batch output");
}
