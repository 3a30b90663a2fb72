//! The merge rule against the generator's truth: hours before the
//! watermark from batch, from it on from the speed layer, each exactly once,
//! while the watermark moves and Redis comes and goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use schemas::rules::day_bucket;
use serving::api::ApiConfig;

use crate::world::{World, q, totals};

fn unlimited() -> ApiConfig {
    ApiConfig {
        rate_per_second: None,
        ..ApiConfig::default()
    }
}

/// The hour by which about half the views have happened: a watermark with
/// data on both sides.
fn middle(w: &World) -> DateTime<Utc> {
    let mut hours: Vec<(DateTime<Utc>, u64)> = Vec::new();
    for r in w.truth.rows() {
        hours.push((r.hour, r.views));
    }
    hours.sort();
    let total: u64 = hours.iter().map(|h| h.1).sum();
    let mut acc = 0;
    for (h, v) in &hours {
        acc += v;
        if acc * 2 >= total {
            return *h;
        }
    }
    w.end
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_equal_the_truth_on_both_sides_of_the_watermark() {
    let w = World::new(4_000, 11).await;
    let wm = middle(&w);
    assert!(w.first < wm && wm < w.end, "data on both sides of {wm}");
    w.publish(w.first, wm).await;
    let s = w.serve(unlimited()).await;
    s.reload().await;
    let admin = w.secrets.admin.as_str();

    let ranges = [
        (w.first, w.end),
        (w.first, wm),
        (wm, w.end),
        (wm - TimeDelta::hours(1), wm + TimeDelta::hours(1)),
        (wm - TimeDelta::hours(3), wm - TimeDelta::hours(1)),
        (wm + TimeDelta::hours(1), w.end + TimeDelta::hours(5)),
    ];
    for video in [&w.video_a, &w.video_b, &w.unattributed] {
        for (from, to) in ranges {
            let a = s
                .ok(
                    &format!("/v1/videos/{video}/views?from={}&to={}", q(from), q(to)),
                    admin,
                )
                .await;
            let want = w.expected(&[video], from, to, Some(wm));
            assert_eq!(totals(&a), want, "{video} [{from}, {to}): {a}");
            assert_eq!(a["watermark"], serde_json::json!(q(wm)));
            assert_eq!(a["provisional"], serde_json::json!(to > wm), "{a}");
            assert_eq!(a["batch"]["to"], serde_json::json!(q(to.min(wm).max(from))));
            assert_eq!(
                a["speed"]["from"],
                serde_json::json!(q(from.max(wm).min(to)))
            );
            assert_eq!(a["speed"]["status"], "ok");
            let b = &a["batch"];
            let sp = &a["speed"];
            assert_eq!(
                b["views"].as_u64().unwrap() + sp["views"].as_u64().unwrap(),
                want[0],
                "the parts add up to the total"
            );
            if to > wm {
                assert!(sp["freshness_seconds"].as_f64().is_some(), "{a}");
            }
            // The speed part's billable views say they are unfiltered.
            let unfiltered = a["warnings"].as_array().unwrap().iter().any(|x| {
                x.as_str()
                    .unwrap()
                    .contains("not yet filtered for invalid traffic")
            });
            assert_eq!(
                unfiltered,
                sp["billable_views"].as_u64().unwrap() > 0,
                "{a}"
            );
        }
    }
    // All time, with defaults, equals the truth.
    let a = s
        .ok(&format!("/v1/videos/{}/views", w.video_a), admin)
        .await;
    assert_eq!(
        totals(&a),
        w.expected(&[&w.video_a], w.first, w.end, Some(wm))
    );
    assert_eq!(a["creator_id"], serde_json::json!(w.creator_a));
    assert!(
        a["speed"]["unique_viewers"]["estimate"].as_u64().unwrap() > 0,
        "the speed part's distinct viewers: {a}"
    );
    let u = s
        .ok(&format!("/v1/videos/{}/views", w.unattributed), admin)
        .await;
    assert!(u["creator_id"].is_null(), "unattributed: {u}");
    assert_eq!(
        totals(&u),
        w.expected(&[&w.unattributed], w.first, w.end, Some(wm))
    );

    // Hourly series around the watermark: each hour from its one part.
    let (from, to) = (wm - TimeDelta::hours(3), wm + TimeDelta::hours(3));
    let series = s
        .ok(
            &format!(
                "/v1/videos/{}/series?granularity=hour&from={}&to={}",
                w.video_a,
                q(from),
                q(to)
            ),
            admin,
        )
        .await;
    let points = series["points"].as_array().unwrap();
    assert_eq!(points.len(), 6);
    for (i, p) in points.iter().enumerate() {
        let h = from + TimeDelta::hours(i as i64);
        assert_eq!(p["start"], serde_json::json!(q(h)));
        assert_eq!(
            totals(p),
            w.expected(&[&w.video_a], h, h + TimeDelta::hours(1), Some(wm)),
            "hour {h}"
        );
        assert_eq!(
            p["source"],
            if h < wm { "batch" } else { "speed" },
            "hour {h}"
        );
    }
    // Daily series over every day with data: the days sum to the total.
    let (dfrom, dto) = (
        day_bucket(w.first),
        day_bucket(w.end - TimeDelta::hours(1)) + TimeDelta::days(1),
    );
    let daily = s
        .ok(
            &format!(
                "/v1/videos/{}/series?granularity=day&from={}&to={}",
                w.video_a,
                q(dfrom),
                q(dto)
            ),
            admin,
        )
        .await;
    let mut sum = [0u64; 3];
    for p in daily["points"].as_array().unwrap() {
        let start: DateTime<Utc> = p["start"].as_str().unwrap().parse().unwrap();
        let want = w.expected(&[&w.video_a], start, start + TimeDelta::days(1), Some(wm));
        assert_eq!(totals(p), want, "day {start}");
        for (a, b) in sum.iter_mut().zip(want) {
            *a += b;
        }
        if start < wm && wm < start + TimeDelta::days(1) && wm != start {
            assert_eq!(p["source"], "mixed", "the day the watermark cuts");
        }
    }
    assert_eq!(sum, w.expected(&[&w.video_a], w.first, w.end, Some(wm)));

    // The creator listing: every video of the creator, totals that add up.
    let listing = s
        .ok(
            &format!("/v1/creators/{}/views?limit=10000", w.creator_a),
            admin,
        )
        .await;
    let videos: Vec<&str> = w
        .catalog
        .videos_of(&w.creator_a)
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(listing["videos"], serde_json::json!(videos.len()));
    let rows = listing["rows"].as_array().unwrap();
    assert_eq!(rows.len(), videos.len());
    for r in rows {
        let v = r["video_id"].as_str().unwrap();
        assert_eq!(totals(r), w.expected(&[v], w.first, w.end, Some(wm)), "{v}");
    }
    let views: Vec<u64> = rows.iter().map(|r| r["views"].as_u64().unwrap()).collect();
    assert!(
        views.windows(2).all(|p| p[0] >= p[1]),
        "sorted by views: {views:?}"
    );
    assert_eq!(
        totals(&listing),
        w.expected(&videos, w.first, w.end, Some(wm))
    );
    let top = s
        .ok(
            &format!("/v1/creators/{}/views?limit=1&sort=video_id", w.creator_a),
            admin,
        )
        .await;
    assert_eq!(top["rows"].as_array().unwrap().len(), 1);
    let mut sorted = videos.clone();
    sorted.sort();
    assert_eq!(top["rows"][0]["video_id"], serde_json::json!(sorted[0]));

    // The creator series adds the creator's videos up per hour.
    let cs = s
        .ok(
            &format!(
                "/v1/creators/{}/series?from={}&to={}",
                w.creator_a,
                q(from),
                q(to)
            ),
            admin,
        )
        .await;
    for (i, p) in cs["points"].as_array().unwrap().iter().enumerate() {
        let h = from + TimeDelta::hours(i as i64);
        assert_eq!(
            totals(p),
            w.expected(&videos, h, h + TimeDelta::hours(1), Some(wm))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_hour_is_lost_or_counted_twice_while_the_watermark_moves() {
    let w = World::new(3_000, 12).await;
    let wm = middle(&w);
    // Publishes at up to five watermarks between the first hour and the end
    // (fewer when the data's hours are few, e.g. just after the hour turns).
    let mut steps: Vec<DateTime<Utc>> = [-2, -1, 0, 1]
        .into_iter()
        .map(|d| wm + TimeDelta::hours(d))
        .chain([w.end])
        .filter(|h| w.first < *h && *h <= w.end)
        .collect();
    steps.dedup();
    assert!(steps.len() >= 3, "three watermarks at least: {steps:?}");
    w.publish(w.first, steps[0]).await;
    let s = Arc::new(w.serve(unlimited()).await);
    s.reload().await;
    let path = format!(
        "/v1/videos/{}/views?from={}&to={}",
        w.video_a,
        q(w.first),
        q(w.end)
    );
    let all = w.expected(&[&w.video_a], w.first, w.end, None);
    let done = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(AtomicUsize::new(0));
    let w = Arc::new(w);
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (s, w, done, answers, path) = (
            s.clone(),
            w.clone(),
            done.clone(),
            answers.clone(),
            path.clone(),
        );
        readers.push(tokio::spawn(async move {
            let mut seen = std::collections::BTreeSet::new();
            while !done.load(Ordering::Relaxed) {
                let a = s.ok(&path, &w.secrets.admin).await;
                let at: DateTime<Utc> = a["watermark"].as_str().unwrap().parse().unwrap();
                // Views and watch time do not depend on the watermark;
                // billable does (the fraud cap applies in batch only).
                let want = w.expected(&[&w.video_a], w.first, w.end, Some(at));
                assert_eq!(totals(&a), want, "answer at watermark {at}: {a}");
                assert_eq!([want[0], want[2]], [all[0], all[2]]);
                seen.insert(at);
                answers.fetch_add(1, Ordering::Relaxed);
            }
            seen
        }));
    }
    for pair in steps.windows(2) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        w.publish(pair[0], pair[1]).await;
        // The reload loop (every 200 ms) picks it up while readers read.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while s.source.snapshot().index.watermark() != Some(pair[1]) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "reload to {}",
                pair[1]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    done.store(true, Ordering::Relaxed);
    let mut seen = std::collections::BTreeSet::new();
    for r in readers {
        seen.extend(r.await.unwrap());
    }
    assert!(
        seen.len() >= 3,
        "readers saw the watermark move through {seen:?} in {} answers",
        answers.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_answers_from_batch_alone_and_readyz_says_degraded() {
    let mut w = World::new(2_000, 13).await;
    let wm = middle(&w);
    w.publish(w.first, wm).await;
    let s = Arc::new(w.serve(unlimited()).await);
    s.reload().await;
    let path = format!(
        "/v1/videos/{}/views?from={}&to={}",
        w.video_a,
        q(w.first),
        q(w.end)
    );
    let (status, _, ready) = s.get("/readyz", None).await;
    assert_eq!(
        (status, &ready["ready"]),
        (200, &serde_json::json!(true)),
        "{ready}"
    );
    assert!(ready.get("degraded").is_none(), "{ready}");

    // Readers keep asking while Redis dies: never a 5xx.
    let done = Arc::new(AtomicBool::new(false));
    let admin = w.secrets.admin.clone();
    let reader = {
        let (s, done, path) = (s.clone(), done.clone(), path.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                let (status, _, body) = s.get(&path, Some(&admin)).await;
                assert_eq!(status, 200, "{body}");
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    w.redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    done.store(true, Ordering::Relaxed);
    assert!(reader.await.unwrap() > 0);

    let a = s.ok(&path, &w.secrets.admin).await;
    assert_eq!(a["speed"]["status"], "unavailable", "{a}");
    assert_eq!(
        totals(&a),
        w.expected(&[&w.video_a], w.first, wm, Some(wm)),
        "batch alone"
    );
    assert_eq!(a["speed"]["views"], 0);
    let warnings = a["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|x| x.as_str().unwrap().contains("did not answer")),
        "{a}"
    );
    let (status, _, ready) = s.get("/readyz", None).await;
    assert_eq!(status, 200, "still ready: batch answers: {ready}");
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert!(ready["degraded"]["redis"].is_string(), "{ready}");
}

/// A published run whose views file no longer hashes to what its manifest
/// records is refused at reload: the last good state keeps serving,
/// `/readyz` says degraded naming the file, and once the file is restored
/// the new state is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_run_is_refused_and_the_last_good_state_keeps_serving() {
    use object_store::ObjectStoreExt;
    let w = World::new(2_000, 17).await;
    let wm = middle(&w);
    w.publish(w.first, wm).await;
    let s = w.serve(unlimited()).await;
    s.reload().await;
    let good_seq = s.source.snapshot().index.seq();
    w.publish(wm, w.end).await;
    let state = store::state::current(w.store.as_ref())
        .await
        .unwrap()
        .unwrap();
    let path = store::layout::views_file(&state.hours[&wm]);
    let original = w.store.get(&path).await.unwrap().bytes().await.unwrap();
    let mut damaged = original.to_vec();
    let i = damaged.len() / 2;
    damaged[i] ^= 0x01;
    store::layout::put(w.store.as_ref(), &path, damaged.into())
        .await
        .unwrap();

    let err = s.source.refresh().await.unwrap_err().to_string();
    assert!(
        err.contains("corrupt") && err.contains(path.as_ref()),
        "{err}"
    );
    assert_eq!(
        s.source.snapshot().index.seq(),
        good_seq,
        "the last good state serves"
    );
    let a = s
        .ok(
            &format!(
                "/v1/videos/{}/views?from={}&to={}",
                w.video_a,
                q(w.first),
                q(w.end)
            ),
            &w.secrets.admin,
        )
        .await;
    assert_eq!(a["watermark"], serde_json::json!(wm), "{a}");
    let (status, _, ready) = s.get("/readyz", None).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert!(ready.to_string().contains(path.as_ref()), "{ready}");

    store::layout::put(w.store.as_ref(), &path, original)
        .await
        .unwrap();
    s.reload().await;
    assert_eq!(s.source.snapshot().index.seq(), Some(state.seq));
    let (_, _, ready) = s.get("/readyz", None).await;
    assert!(ready.get("degraded").is_none(), "{ready}");
}
