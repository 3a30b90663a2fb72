//! Crashes and outages: exact counts afterwards, recovery without help.

use std::time::Duration;

use infra::redis::{RedisOptions, RedisServer};

use crate::harness::Setup;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_the_consumer_mid_stream_and_restarting_is_exact() {
    let s = Setup::new().await;
    let truth = s.produce_generated(20_000, 5).await;
    let mut c = s.config();
    c.batch_max = 50;
    let run = s.start(c.clone());
    // Abort at an arbitrary point once some batches have been applied.
    let total = s.topic_size().await;
    s.wait_applied(total / 10 + 1).await;
    run.handle.abort();
    let _ = run.handle.await;
    let applied_at_crash = s.applied().await;
    assert!(applied_at_crash < total, "crashed mid-stream");

    let run = s.start(c);
    s.wait_caught_up(Duration::from_secs(90)).await;
    s.assert_exact(&truth).await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_stream_is_exact_and_recovers_alone() {
    let mut s = Setup::with_redis(RedisOptions {
        appendonly: true,
        ..RedisOptions::default()
    })
    .await;
    let truth = s.produce_generated(20_000, 6).await;
    let mut c = s.config();
    c.batch_max = 100;
    let run = s.start(c);
    let total = s.topic_size().await;
    s.wait_applied(total / 5).await;
    // kill -9: whatever Redis had not fsynced to its AOF is lost.
    let (dir, port) = (s.server().dir().to_path_buf(), s.server().port());
    s.server().kill();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while run.ready.get().is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "readiness reports the outage"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let restarted = RedisServer::start_with(RedisOptions {
        appendonly: true,
        dir: Some(dir),
        port: Some(port),
        ..RedisOptions::default()
    })
    .expect("redis restarts on its data");
    // Keep the first server's temp dir alive: swap the handle in.
    let old = std::mem::replace(s.server(), restarted);
    s.wait_caught_up(Duration::from_secs(120)).await;
    s.assert_exact(&truth).await;
    assert!(run.ready.get().is_ok(), "recovered by itself");
    assert!(run.metric("viewcount_speed_redis_errors_total") > 0.0);
    run.stop().await;
    drop(old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_losing_its_recent_writes_is_repaired_by_rewinding() {
    let mut s = Setup::new().await;
    let truth = s.produce_generated(20_000, 7).await;
    let mut c = s.config();
    c.batch_max = 100;
    let run = s.start(c);
    let total = s.topic_size().await;
    s.wait_applied(total / 5).await;
    // Snapshot now, let the consumer move on, then bring Redis back from the
    // snapshot: Redis is behind the consumer's position.
    let mut conn = s.redis_conn().await;
    let _: () = redis::cmd("SAVE").query_async(&mut conn).await.unwrap();
    let snapshot = tempfile_dir();
    std::fs::copy(s.server().dir().join("dump.rdb"), snapshot.join("dump.rdb")).unwrap();
    let at_snapshot = s.applied().await;
    s.wait_applied(at_snapshot + total / 10).await;
    let port = s.server().port();
    s.server().kill();
    let restored = RedisServer::start_with(RedisOptions {
        appendonly: false,
        dir: Some(snapshot.clone()),
        port: Some(port),
        ..RedisOptions::default()
    })
    .expect("redis restarts from the snapshot");
    let old = std::mem::replace(s.server(), restored);
    s.wait_caught_up(Duration::from_secs(120)).await;
    s.assert_exact(&truth).await;
    assert!(
        run.metric("viewcount_speed_rewinds_total") > 0.0,
        "the consumer rewound"
    );
    run.stop().await;
    drop(old);
    let _ = std::fs::remove_dir_all(snapshot);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(testkit::unique_name("redis-snapshot"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A reader started before Redis is up waits for it (within its patience)
/// instead of failing: the first run of `up` on a slow machine raced this.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_wait_for_redis_to_come_up() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/");
    let reader = tokio::spawn(async move { counters::conn::connect_reader(&url).await });
    // Refused connections for a while: the reader keeps trying.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!reader.is_finished(), "gave up while Redis was down");
    let _redis = RedisServer::start_with(RedisOptions {
        port: Some(port),
        ..RedisOptions::default()
    })
    .expect("redis on the chosen port");
    let mut conn = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("connects once Redis is up")
        .unwrap()
        .expect("a connection");
    let keys = counters::keys::KeySpace::new("t:", 4);
    let offsets = counters::read::stored_offsets(&mut conn, &keys, 2)
        .await
        .unwrap();
    assert_eq!(offsets, vec![None, None]);
}
