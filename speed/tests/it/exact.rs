//! Counters equal the ground truth, and stay equal on replay.

use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;

use crate::harness::{PARTITIONS, Setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_stream_with_duplicates_and_late_events_is_counted_exactly() {
    let s = Setup::new().await;
    let truth = s.produce_generated(20_000, 1).await;
    assert!(
        truth.accepted_events() > truth.views() + 1_000,
        "the stream has re-sends"
    );
    let run = s.start(s.config());
    s.wait_caught_up(Duration::from_secs(60)).await;
    s.assert_exact(&truth).await;
    assert_eq!(
        run.metric("viewcount_speed_counted_total") as u64,
        truth.views()
    );
    assert_eq!(
        run.metric("viewcount_speed_duplicates_total") as u64,
        truth.accepted_events() - truth.views()
    );
    assert!(run.ready.get().is_ok());
    assert!(run.metric("viewcount_speed_freshness_seconds_count") > 0.0);
    run.stop().await;

    // One video's hours read directly (what serving does) equal the same
    // video's hours in the full scan, for ranges cutting through days.
    let mut conn = s.redis_conn().await;
    let keys = s.keys();
    let partitions = counters::read::stored_partitions(&mut conn, &keys)
        .await
        .unwrap()
        .expect("the speed layer records the partition count");
    assert_eq!(partitions, PARTITIONS);
    let all = s.counts().await;
    let hours: Vec<DateTime<Utc>> = all.keys().map(|(_, h)| *h).collect();
    let (first, last) = (*hours.iter().min().unwrap(), *hours.iter().max().unwrap());
    for video in ["v00001", "v00002", "v00050"] {
        for (from, to) in [
            (first, last + chrono::Duration::hours(1)),
            (
                first + chrono::Duration::hours(5),
                last - chrono::Duration::hours(3),
            ),
            (last, last + chrono::Duration::days(2)),
        ] {
            let direct =
                counters::read::video_counts(&mut conn, &keys, video, from, to, partitions)
                    .await
                    .unwrap();
            let scanned: std::collections::BTreeMap<DateTime<Utc>, counters::Counts> = all
                .iter()
                .filter(|((v, h), _)| v == video && from <= *h && *h < to)
                .map(|((_, h), c)| (*h, *c))
                .collect();
            assert_eq!(direct, scanned, "{video} [{from}, {to})");
        }
    }
    // Freshness: each partition's applied-at is at least the newest
    // received_at among its records (written with its offset) and, since an
    // idle caught-up partition's heartbeat moves it on to "now", never
    // later than now.
    let (bootstrap, topic) = (s.kafka.bootstrap_servers().to_owned(), s.topic.clone());
    let records = tokio::task::spawn_blocking(move || {
        infra::kafka::read_topic(&bootstrap, &topic, Duration::from_secs(30))
    })
    .await
    .unwrap()
    .unwrap();
    let mut newest = vec![None; PARTITIONS as usize];
    for r in &records {
        let e = schemas::ReceivedEvent::from_json_bytes(
            r.payload.as_deref().unwrap(),
            &schemas::ValidationContext::at(Utc::now()),
        )
        .unwrap();
        let slot = &mut newest[r.partition as usize];
        *slot = (*slot).max(Some(e.received_at));
    }
    let applied = counters::read::applied_at(&mut conn, &keys, PARTITIONS)
        .await
        .unwrap();
    let now = Utc::now();
    for (p, (at, received)) in applied.iter().zip(&newest).enumerate() {
        let (Some(at), Some(received)) = (at, received) else {
            panic!("partition {p}: applied-at {at:?}, newest received {received:?}");
        };
        assert!(
            received <= at && *at <= now,
            "partition {p}: applied-at {at} must lie in [newest received {received}, now {now}]"
        );
    }
    let err = counters::read::video_counts(&mut conn, &keys, "v1}:c:x", first, last, partitions)
        .await
        .unwrap_err();
    assert!(matches!(err, counters::Error::BadInput(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_whole_topic_changes_nothing() {
    let s = Setup::new().await;
    let mut truth = s.produce_generated(5_000, 2).await;
    let run = s.start(s.config());
    s.wait_caught_up(Duration::from_secs(60)).await;
    run.stop().await;
    s.assert_exact(&truth).await;

    // 1. A new consumer group (committed offsets gone): resumes from Redis's
    //    offsets, reads nothing again. New events sent after it starts show
    //    it is running and assigned: they, and only they, are read.
    let mut c = s.config();
    c.group_id = "speed-replay-1".into();
    let run = s.start(c);
    let (records_before, views_before) = (s.topic_size().await, truth.views());
    s.produce_generated_into(50, 22, &mut truth).await;
    let new_records = s.topic_size().await - records_before;
    assert!(new_records > 0);
    s.wait_caught_up(Duration::from_secs(60)).await;
    assert_eq!(
        run.metric("viewcount_speed_counted_total") as u64,
        truth.views() - views_before
    );
    // It resumed at Redis's offsets: only the new records were read (reading
    // from the start would be harmless but would show up as replayed ones).
    assert_eq!(
        run.metric("viewcount_speed_consumed_total") as i64,
        new_records
    );
    assert_eq!(run.metric("viewcount_speed_replayed_total"), 0.0);
    run.stop().await;
    s.assert_exact(&truth).await;

    // 2. Offsets in Redis gone too: every record is read again and the dedup
    //    window drops every one of them.
    let mut conn = s.redis_conn().await;
    for p in 0..PARTITIONS {
        let _: () = conn.del(s.keys().offset(p)).await.unwrap();
    }
    let mut c = s.config();
    c.group_id = "speed-replay-2".into();
    let run = s.start(c);
    s.wait_caught_up(Duration::from_secs(60)).await;
    assert_eq!(run.metric("viewcount_speed_counted_total"), 0.0);
    assert_eq!(
        run.metric("viewcount_speed_duplicates_total") as u64,
        truth.accepted_events()
    );
    run.stop().await;
    s.assert_exact(&truth).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_joining_mid_stream_neither_drops_nor_double_counts() {
    let s = Setup::new().await;
    let mut truth = loadgen::Truth::new(schemas::RuleSet::default());
    s.produce_generated_into(8_000, 3, &mut truth).await;
    let mut c = s.config();
    c.batch_max = 200;
    let a = s.start(c.clone());
    // Let `a` get going, then add `b` while more events arrive. (A variant
    // that kept producing until `b` had counted something once came up
    // short by a few late views of one video under a loaded CI run; see the
    // 2026-11-25 note on issue 9. It is kept out of CI until understood.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = s.start(c);
    s.produce_generated_into(8_000, 4, &mut truth).await;
    s.wait_caught_up(Duration::from_secs(90)).await;
    s.assert_exact(&truth).await;
    let counted_a = a.metric("viewcount_speed_counted_total");
    let counted_b = b.metric("viewcount_speed_counted_total");
    assert_eq!((counted_a + counted_b) as u64, truth.views());
    assert!(counted_b > 0.0, "the second instance took partitions over");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_caught_up_partitions_report_their_counters_fresh() {
    let s = Setup::new().await;
    let _truth = s.produce_generated(500, 5).await;
    let running = s.start(s.config());
    s.wait_caught_up(Duration::from_secs(60)).await;
    // Every record was received before this; nothing arrives after it.
    let caught_up = chrono::Utc::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut conn = s.redis_conn().await;
    let at = counters::read::applied_at(&mut conn, &s.keys(), PARTITIONS)
        .await
        .unwrap();
    assert!(at.iter().any(Option::is_some), "{at:?}");
    for (p, t) in at.iter().enumerate() {
        if let Some(t) = t {
            assert!(
                *t >= caught_up,
                "partition {p}: applied-at {t} is older than {caught_up}, though nothing was left to apply"
            );
        }
    }
    running.stop().await;
}
