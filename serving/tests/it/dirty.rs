//! Late data healed on schedule (DESIGN §5.3): a late event for a published
//! hour makes that hour dirty; the next scheduled round recomputes its day
//! (the rules' reach: the rest of it for the daily cap, all of it for the
//! impossible-watch concurrency), nothing else; serving and reconcile then
//! show it.

use std::collections::BTreeMap;

use batch::dirty::{PendingHour, Why};
use batch::run::RunOptions;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use schemas::{ReceivedEvent, RuleSet, ValidationContext};
use serde_json::json;
use serving::api::ApiConfig;

use crate::world::World;

fn opts() -> RunOptions {
    let now = Utc::now();
    RunOptions::new(now, now)
}

async fn owners(w: &World) -> BTreeMap<DateTime<Utc>, String> {
    store::state::current(w.store.as_ref())
        .await
        .unwrap()
        .expect("published")
        .hours
}

async fn reconcile(w: &World, from: DateTime<Utc>, to: DateTime<Utc>) -> reconcile::Report {
    let mut conn = counters::conn::connect_reader(&w.redis.url())
        .await
        .unwrap();
    let speed: reconcile::SpeedTable = counters::read::all_counts(&mut conn, &w.keys())
        .await
        .unwrap()
        .into_iter()
        .map(|(k, c)| (k, [c.views, c.billable_views, c.watch_seconds]))
        .collect();
    reconcile::reconcile(
        w.store.clone(),
        &speed,
        from,
        to,
        TimeDelta::hours(48),
        &batch::memory::Memory::default(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_event_dirties_its_hour_and_the_next_scheduled_round_heals_only_that() {
    let mut w = World::new(3_000, 61).await;
    let metrics = batch::schedule::Metrics::default();

    // First round: nothing published yet, so every complete hour is new.
    let (plan, reports) = batch::schedule::round(w.store.clone(), &opts(), &metrics)
        .await
        .unwrap();
    assert!(plan.dirty.is_empty(), "{plan:#?}");
    let aw = plan.archive_watermark.expect("the archive completed hours");
    assert!(plan.new_hours >= 24, "{plan:#?}");
    assert!(!reports.is_empty());
    for (from, to) in &plan.runs {
        assert_eq!(
            from.date_naive(),
            (*to - TimeDelta::hours(1)).date_naive(),
            "each run stays within one UTC day"
        );
    }
    let published = store::state::current(w.store.as_ref())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        published.watermark,
        Some(aw),
        "the watermark reached the archive's"
    );
    let again = batch::dirty::plan(w.store.as_ref(), &opts()).await.unwrap();
    assert!(again.dirty.is_empty(), "nothing is left to do: {again:#?}");
    let before = owners(&w).await;

    // A late view of video A for a published hour mid-day, received now.
    let late_hour = (aw - TimeDelta::hours(30))
        .duration_trunc(TimeDelta::days(1))
        .unwrap()
        + TimeDelta::hours(9);
    assert!(before.contains_key(&late_hour), "{late_hour} is published");
    let now = Utc::now();
    let event = ReceivedEvent::new(
        schemas::parse_event(
            &json!({"event_id": uuid::Uuid::new_v4().to_string(), "video_id": w.video_a,
                    "user_id": "late-viewer", "occurred_at": schemas::event::format_timestamp(&(late_hour + TimeDelta::minutes(7))),
                    "watch_seconds": 95, "revenue_eligible": true}),
            &ValidationContext::at(now),
        )
        .unwrap(),
        now,
    );
    w.producer
        .produce_all(std::slice::from_ref(&event), &RuleSet::default())
        .await
        .unwrap();
    w.truth.record(&event.event);
    w.archive_all().await;
    w.wait_speed().await;

    // Speed counted it; batch has not: reconcile shows the gap.
    let gap = reconcile(&w, late_hour, late_hour + TimeDelta::hours(1)).await;
    assert!(
        gap.differences.iter().any(|d| d.video_id == w.video_a
            && d.hour == late_hour
            && d.speed_views == d.batch_views + 1),
        "{:#?}",
        gap.differences
    );

    // The hour is dirty, and only it.
    let plan = batch::dirty::plan(w.store.as_ref(), &opts()).await.unwrap();
    assert_eq!(
        plan.dirty,
        [PendingHour {
            hour: late_hour,
            why: Why::LateData { files: 1 }
        }]
    );
    let day_start = late_hour.duration_trunc(TimeDelta::days(1)).unwrap();
    let day_end = day_start + TimeDelta::days(1);
    // The recompute starts at the hour (the cap and the replay rule reach
    // only later hours of the day), or at the day's start when a late view
    // can change earlier hours' decisions (impossible watch's concurrency,
    // on by default).
    let from = if RuleSet::default().late_views_reach_back() {
        day_start
    } else {
        late_hour
    };
    // If the archive watermark moved on meanwhile (an hour boundary passed),
    // the newly complete hours come after, as new hours.
    let aw_now = plan.archive_watermark.unwrap();
    assert_eq!(plan.runs[0], (from, day_end.min(aw_now)), "{plan:#?}");
    assert!(
        plan.runs[1..].iter().all(|(from, _)| *from >= aw),
        "besides the dirty day only new hours: {plan:#?}"
    );

    // The scheduler's next round recomputes it (with its day).
    let stop = tokio_util::sync::CancellationToken::new();
    let scheduler = batch::schedule::Scheduler::new(
        w.store.clone(),
        opts(),
        std::time::Duration::from_millis(200),
        metrics.clone(),
    );
    let sched = tokio::spawn(scheduler.clone().run({
        let stop = stop.clone();
        async move { stop.cancelled().await }
    }));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while owners(&w).await.get(&late_hour) == before.get(&late_hour) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the scheduler did not recompute the dirty hour"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    stop.cancel();
    sched.await.unwrap();

    let after = owners(&w).await;
    let new_run = after[&late_hour].clone();
    for (hour, run) in &after {
        if *hour >= from && *hour < day_end.min(aw_now) {
            assert_eq!(run, &new_run, "{hour} recomputed with its day");
        } else if before.contains_key(hour) {
            assert_eq!(Some(run), before.get(hour), "{hour} was not recomputed");
        }
    }
    let healed = batch::dirty::plan(w.store.as_ref(), &opts()).await.unwrap();
    assert!(healed.dirty.is_empty(), "{healed:#?}");

    // Reconcile agrees on the hour now, and serving shows the late view.
    let r = reconcile(&w, late_hour, late_hour + TimeDelta::hours(1)).await;
    assert!(
        !r.differences
            .iter()
            .any(|d| d.video_id == w.video_a && d.hour == late_hour),
        "{:#?}",
        r.differences
    );
    assert!(!r.has_unexplained(), "{:#?}", r.differences);
    let api = w.serve(ApiConfig::default()).await;
    api.source.refresh().await.unwrap();
    let watermark = api.source.snapshot().index.watermark();
    assert!(watermark >= Some(aw), "{watermark:?}");
    let path = format!(
        "/v1/videos/{}/views?from={}&to={}",
        w.video_a,
        late_hour.format("%Y-%m-%dT%H:%M:%SZ"),
        (late_hour + TimeDelta::hours(1)).format("%Y-%m-%dT%H:%M:%SZ")
    );
    let (status, _, body) = api.get(&path, Some(&w.secrets.admin)).await;
    assert_eq!(status, 200, "{body}");
    let want = w.expected(
        &[w.video_a.as_str()],
        late_hour,
        late_hour + TimeDelta::hours(1),
        watermark,
    );
    assert_eq!(body["views"], want[0], "{body}");
    assert_eq!(
        body["batch"]["views"], want[0],
        "all of it from batch: {body}"
    );
    assert_eq!(body["billable_views"], want[1], "{body}");
}
