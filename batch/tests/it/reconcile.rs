//! Speed vs batch: every difference explained; a tampered counter is not.

use std::time::Duration;

use chrono::{DurationRound, TimeDelta, Utc};
use counters::keys::KeySpace;
use infra::redis::RedisServer;
use loadgen::Truth;
use reconcile::{Cause, SpeedTable};
use redis::AsyncCommands;
use schemas::{ReceivedEvent, RuleSet, ValidationContext};
use serde_json::json;

use crate::harness::{PARTITIONS, Setup};

fn event(
    id: &str,
    video: &str,
    user: &str,
    at: chrono::DateTime<Utc>,
    received: chrono::DateTime<Utc>,
) -> ReceivedEvent {
    let e = schemas::parse_event(
        &json!({"event_id": id, "video_id": video, "user_id": user,
                "occurred_at": schemas::event::format_timestamp(&at),
                "watch_seconds": 60, "revenue_eligible": true}),
        &ValidationContext::at(received),
    )
    .unwrap();
    ReceivedEvent::new(e, received)
}

async fn speed_table(redis: &RedisServer, keys: &KeySpace) -> SpeedTable {
    let mut conn = counters::conn::connect_reader(&redis.url()).await.unwrap();
    counters::read::all_counts(&mut conn, keys)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, c)| (k, [c.views, c.billable_views, c.watch_seconds]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speed_and_batch_reconcile_with_every_difference_explained() {
    let s = Setup::new().await;
    let redis = RedisServer::start().unwrap();
    let mut truth = Truth::new(RuleSet::default());
    s.produce(3_000, 21, &mut truth).await;

    // Conflicting duplicates: the same id again, another payload, another
    // occurred-at day (another dedup hash), received later.
    let now = Utc::now();
    let hour = (now - chrono::Duration::hours(1))
        .duration_trunc(TimeDelta::hours(1))
        .unwrap();
    let mut extra = Vec::new();
    for i in 0..4 {
        let id = format!("44444444-4444-4444-8444-44444444444{i}");
        extra.push(event(&id, "vConflict", "u1", hour, now));
        extra.push(event(
            &id,
            "vConflict",
            "u2",
            hour - chrono::Duration::days(1),
            now + chrono::Duration::seconds(1),
        ));
    }
    // A fraud pattern: 14 billable views by one user of one video in an
    // hour (a repeat loop).
    for i in 0..14 {
        extra.push(event(
            &uuid::Uuid::new_v4().to_string(),
            "vBot",
            "bot",
            hour + chrono::Duration::minutes(i),
            now,
        ));
    }
    s.produce_events(&extra, &mut truth).await;

    let mut sc = speed::SpeedConfig::new(s.kafka.bootstrap_servers(), &s.topic, redis.url());
    sc.key_prefix = "rc:".into();
    let keys = KeySpace::new("rc:", sc.dedup_bucket_bits);
    let mut reg = prometheus_client::registry::Registry::default();
    let metrics = speed::Metrics::register(&mut reg);
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let speed_task = tokio::spawn(speed::run(
        sc,
        metrics,
        telemetry::ReadyFlag::new("t"),
        async move {
            let _ = rx.await;
        },
    ));
    let archive = s.archive("archive");
    s.wait_archived().await;
    archive.stop().await;
    let total: u64 = truth.accepted_events();
    let mut conn = counters::conn::connect_reader(&redis.url()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let applied: i64 = counters::read::stored_offsets(&mut conn, &keys, PARTITIONS)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.unwrap_or(0))
            .sum();
        if applied as u64 >= total {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "speed did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    speed_task.await.unwrap().unwrap();

    let report = s.run_batch(&truth).await;
    assert_eq!(
        report.manifest.rows.conflicting_ids, 4,
        "batch reports the conflicts"
    );
    let (from, to) = (report.manifest.from, report.manifest.to);
    let try_within = async |memory: batch::memory::Memory| {
        let speed = speed_table(&redis, &keys).await;
        let r = reconcile::reconcile(
            s.store.clone(),
            &speed,
            from,
            to,
            chrono::Duration::hours(48),
            &memory,
        )
        .await;
        (speed, r)
    };
    let reconcile_within = async |memory: batch::memory::Memory| {
        let (speed, r) = try_within(memory).await;
        (speed, r.unwrap())
    };
    let reconcile_now = async || reconcile_within(batch::memory::Memory::default()).await;
    let (speed, r) = reconcile_now().await;
    assert!(!r.has_unexplained(), "{:#?}", r.differences);
    // Under the smallest limit its read of the inputs spills: into the
    // spill directory given (a file there is an error naming it), and it
    // finds the same removed copies.
    let not_a_dir = tempfile::NamedTempFile::new().unwrap();
    let (_, refused) = try_within(batch::memory::Memory {
        limit: batch::memory::MIN_LIMIT,
        spill_dir: Some(not_a_dir.path().to_path_buf()),
    })
    .await;
    let refused = refused
        .expect_err("a spill directory that is a file")
        .to_string();
    assert!(
        refused.contains(&not_a_dir.path().display().to_string()),
        "{refused}"
    );
    let (_, spilled) = reconcile_within(batch::memory::Memory {
        limit: batch::memory::MIN_LIMIT,
        spill_dir: None,
    })
    .await;
    assert_eq!(
        serde_json::to_value(&spilled).unwrap(),
        serde_json::to_value(&r).unwrap()
    );
    let (by_cause, bot) =
        crate::harness::filtered_by_rule(s.store.as_ref(), &report.manifest, "vBot").await;
    assert_eq!(
        bot,
        [(schemas::fraud::FraudRule::RepeatLoop, 14)].into(),
        "14 billable views of one video by one user in an hour: a repeat loop"
    );
    for (cause, n) in &by_cause {
        assert_eq!(
            r.totals.get(cause),
            Some(n),
            "each filtered view under its rule"
        );
    }
    assert_eq!(
        r.totals.get(&Cause::ConflictingDuplicate),
        Some(&4),
        "{:#?}",
        r.differences
    );
    assert!(r.agreeing > 100);

    // A counter off by one has no cause.
    let (k, _) = speed.iter().next().unwrap();
    let day = k.1.date_naive();
    let field = format!("{}v", k.1.format("%H"));
    let mut tampered = false;
    for p in 0..PARTITIONS {
        let key = keys.counters(p, &k.0, day);
        if conn.exists::<_, bool>(&key).await.unwrap() {
            let _: i64 = conn.hincr(&key, &field, 1).await.unwrap();
            tampered = true;
            break;
        }
    }
    assert!(tampered);
    let (_, r) = reconcile_now().await;
    assert!(r.has_unexplained());
    assert_eq!(r.totals.get(&Cause::Unexplained), Some(&1));
}
