//! Archive + batch end to end.

use chrono::{Duration, DurationRound, TimeDelta, Utc};
use loadgen::Truth;
use schemas::{ReceivedEvent, RuleSet, ValidationContext};
use serde_json::json;

use crate::harness::{Setup, expected};

/// A fraud pattern: one user watching one video 25 times (billable) in an hour.
fn fraud_events() -> Vec<ReceivedEvent> {
    let now = Utc::now();
    let hour = (now - Duration::hours(2))
        .duration_trunc(TimeDelta::hours(1))
        .unwrap();
    let ctx = ValidationContext::at(now);
    (0..25)
        .map(|i| {
            let e = schemas::parse_event(
                &json!({"event_id": uuid::Uuid::new_v4().to_string(), "video_id": "vFraud",
                        "user_id": "bot-7", "occurred_at": schemas::event::format_timestamp(&(hour + Duration::minutes(i))),
                        "watch_seconds": 45, "revenue_eligible": true}),
                &ctx,
            )
            .unwrap();
            ReceivedEvent::new(e, now)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_counts_equal_the_truth_with_duplicates_late_events_and_fraud() {
    let s = Setup::new().await;
    let mut truth = Truth::new(RuleSet::default());
    s.produce(6_000, 11, &mut truth).await;
    let fraud = fraud_events();
    s.produce_events(&fraud, &mut truth).await;
    // Exact re-sends of part of the fraud pattern, too.
    s.produce_events(&fraud[..5], &mut truth).await;
    let archive = s.archive("archive");
    s.wait_archived().await;
    archive.stop().await;

    let report = s.run_batch(&truth).await;
    let want = expected(&truth);
    testkit::assert_same_map(&s.views(&report).await, &want, "batch output");
    let fraud_total: u64 = want.values().map(|v| v[2]).sum();
    assert_eq!(report.manifest.rows.fraud_filtered, fraud_total);
    // (The generated traffic's own filtered views depend on where its
    // times fall in the hour: only the fraud pattern's are pinned.)
    let (_, fraud) =
        crate::harness::filtered_by_rule(s.store.as_ref(), &report.manifest, "vFraud").await;
    assert_eq!(
        fraud,
        [(schemas::fraud::FraudRule::RepeatLoop, 25)].into(),
        "25 billable views of one video by one user in an hour: a repeat loop"
    );
    assert_eq!(report.manifest.rows.views, truth.views());
    assert_eq!(
        report.manifest.rows.duplicates,
        truth.accepted_events() - truth.views()
    );
    assert!(report.published.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reruns_are_byte_identical_and_idempotent() {
    let s = Setup::new().await;
    let mut truth = Truth::new(RuleSet::default());
    s.produce(3_000, 12, &mut truth).await;
    let archive = s.archive("archive");
    s.wait_archived().await;
    archive.stop().await;

    let a = s.run_batch(&truth).await;
    let b = s.run_batch(&truth).await;
    assert_eq!(
        a.manifest.run_id, b.manifest.run_id,
        "same inputs, same run id"
    );
    assert_eq!(
        a.manifest.outputs, b.manifest.outputs,
        "same bytes (sha256 and size)"
    );
    let (pa, pb) = (a.published.unwrap(), b.published.unwrap());
    assert_eq!(pa.hours, pb.hours);
    assert_eq!(pb.seq, pa.seq + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_aborted_mid_stream_and_restarted_loses_nothing() {
    let s = Setup::new().await;
    let mut truth = Truth::new(RuleSet::default());
    s.produce(8_000, 13, &mut truth).await;
    let total = truth.accepted_events() as i64;
    // Small flushes, so there is a "mid-stream" to land in.
    let mut c = s.archive_config("archive");
    c.flush_rows = 1_000;
    // The killed member holds its partitions until its session times out.
    c.session_timeout = std::time::Duration::from_secs(3);
    let archive = s.archive_from(c.clone());
    // Kill it (no final flush) as soon as some, but not all, is archived.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while s.archived().await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "nothing archived");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    archive.handle.abort();
    let _ = archive.handle.await;
    let at_abort = s.archived().await;
    assert!(
        0 < at_abort && at_abort < total,
        "the abort came mid-stream: {at_abort} of {total} records archived"
    );
    let archive = s.archive_from(c);
    s.wait_archived().await;
    archive.stop().await;
    let report = s.run_batch(&truth).await;
    testkit::assert_same_map(&s.views(&report).await, &expected(&truth), "batch output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_of_a_sub_range_composes_with_the_published_state() {
    let s = Setup::new().await;
    let mut truth = Truth::new(RuleSet::default());
    s.produce(3_000, 14, &mut truth).await;
    let archive = s.archive("archive");
    s.wait_archived().await;
    archive.stop().await;
    let all = s.run_batch(&truth).await;
    let published = all.published.clone().unwrap();
    let first = *published.hours.keys().next().unwrap();
    // Recompute one hour: it changes owner, the rest keep theirs.
    let one = s.run_range(first, first + Duration::hours(1)).await;
    let after = one.published.clone().unwrap();
    assert_eq!(after.hours[&first], one.manifest.run_id);
    let others_kept = after
        .hours
        .iter()
        .filter(|(h, _)| **h != first)
        .all(|(_, r)| *r == all.manifest.run_id);
    assert!(others_kept);
    assert_eq!(after.watermark, published.watermark);
    // The backfilled hour has the same numbers.
    let full = s.views(&all).await;
    let part = s.views(&one).await;
    for (k, v) in &part {
        assert_eq!(full.get(k), Some(v));
    }
}
