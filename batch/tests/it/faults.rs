//! The archive under store faults: a store that fails its writes (a full
//! disk, too many open files, a dropped connection) stalls the archive
//! loudly instead of ending it, ingest watching it stops acknowledging, and
//! once the store works again everything is archived exactly once. A broker
//! that is down when the archive starts is waited for, not a reason to end.

use std::time::Duration;

use loadgen::Truth;
use schemas::RuleSet;
use serde_json::json;
use testkit::faults::{FaultyStore, Op};

use crate::harness::{Archive, Setup, expected};

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited 60 s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn one_event() -> Vec<serde_json::Value> {
    vec![json!({
        "event_id": uuid::Uuid::new_v4().to_string(),
        "video_id": "v-fault",
        "user_id": "u-fault",
        "occurred_at": schemas::event::format_timestamp(&chrono::Utc::now()),
        "watch_seconds": 40,
        "revenue_eligible": true,
    })]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_stalls_the_archive_loudly_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let local = store::layout::open(&format!("file://{}", dir.path().display())).unwrap();
    let faulty = FaultyStore::new(local);
    let s = Setup::on(faulty.clone(), dir).await;
    let mut truth = Truth::new(RuleSet::default());
    let archive: Archive = s.archive("archive");
    s.produce(1_500, 31, &mut truth).await;
    s.wait_archived().await;
    assert_eq!(archive.ready.get(), Ok(()));

    // Every write of the archive fails from now on, as on a full disk.
    faulty.fail(Op::Put, "raw/", 0, usize::MAX);
    faulty.fail(Op::Put, "archive/", 0, usize::MAX);
    s.produce(1_500, 32, &mut truth).await;
    let ready = archive.ready.clone();
    wait_for("the archive to say it cannot write", async || {
        ready.get().is_err()
    })
    .await;
    let why = archive.ready.get().unwrap_err();
    assert!(
        why.contains("cannot write to the store") && why.contains("injected fault"),
        "{why}"
    );
    // It keeps retrying (each failure counted), and holds on: the task is
    // alive and nothing more is recorded as archived.
    let metrics = archive.metrics.clone();
    wait_for("a retry", async || metrics.store_failures() >= 2).await;
    assert!(!archive.handle.is_finished());
    let archived_before = s.archived().await;
    assert!(archived_before < s.records().await);

    // Ingest watching the archive acknowledges nothing meanwhile.
    let gated = ingest::IngestConfig {
        keeper: Some(archive.ready.clone()),
        ..ingest::IngestConfig::default()
    };
    let records = s.records().await;
    let (status, retry_after, body) = s.post(gated.clone(), &one_event()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(body["error"]["code"], "archive_unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot write to the store"),
        "{body}"
    );
    assert_eq!(s.records().await, records, "nothing reached Kafka");

    // The store works again: the archive resumes by itself, ready again,
    // and ingest accepts.
    faulty.clear();
    s.wait_archived().await;
    let ready = archive.ready.clone();
    wait_for("the archive to be ready again", async || {
        ready.get().is_ok()
    })
    .await;
    let (status, _, body) = s.post(gated, &one_event()).await;
    assert_eq!(status, 202, "{body}");
    s.wait_archived().await;
    archive.stop().await;

    // Every record is archived exactly once, and batch equals the truth.
    let report = s.run_batch(&truth).await;
    assert_eq!(
        report.manifest.rows.input as i64,
        s.records().await,
        "every record in the archive once"
    );
    let mut views = s.views(&report).await;
    views.retain(|(video, _), _| video != "v-fault");
    testkit::assert_same_map(&views, &expected(&truth), "batch after the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_when_the_archive_starts_is_waited_for_not_an_exit() {
    let s = Setup::embedded().await;
    let cluster = s.kafka.embedded().expect("the embedded cluster");
    cluster.brokers_down().unwrap();
    let mut truth = Truth::new(RuleSet::default());
    let archive: Archive = s.archive("archive");
    let ready = archive.ready.clone();
    wait_for("the archive to say it cannot reach Kafka", async || {
        ready
            .get()
            .is_err_and(|why| why.contains("cannot reach Kafka"))
    })
    .await;
    // It retries (the first retry is 1 s after the first failure) and is
    // still running after it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!archive.handle.is_finished(), "the archive ended");
    assert!(
        archive.ready.get().is_err(),
        "ready without a broker: {:?}",
        archive.ready.get()
    );

    // The broker is back: the archive starts by itself and archives.
    cluster.brokers_up().unwrap();
    s.produce(500, 33, &mut truth).await;
    s.wait_archived().await;
    wait_for("the archive to be ready", async || ready.get().is_ok()).await;
    archive.stop().await;
    let report = s.run_batch(&truth).await;
    testkit::assert_same_map(&s.views(&report).await, &expected(&truth), "batch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failing_at_shutdown_is_an_error_not_a_silent_loss() {
    let dir = tempfile::tempdir().unwrap();
    let local = store::layout::open(&format!("file://{}", dir.path().display())).unwrap();
    let faulty = FaultyStore::new(local);
    let s = Setup::on(faulty.clone(), dir).await;
    let mut truth = Truth::new(RuleSet::default());
    let mut c = s.archive_config("archive");
    c.shutdown_retry = Duration::from_secs(2);
    let archive = s.archive_from(c);
    faulty.fail(Op::Put, "raw/", 0, usize::MAX);
    s.produce(500, 33, &mut truth).await;
    let ready = archive.ready.clone();
    wait_for("the archive to stall", async || {
        ready.get().is_err_and(|why| why.contains("cannot write"))
    })
    .await;
    // Asked to stop while the store still fails: it tries for its bounded
    // time, then stops with the error (the records stay in Kafka, uncommitted).
    let err = archive.stop_err().await;
    assert!(err.to_string().contains("injected fault"), "{err}");
    let why = ready.get().unwrap_err();
    assert!(why.starts_with("the archive stopped: "), "{why}");
    assert_eq!(s.archived().await, 0, "no progress past unwritten files");
}
