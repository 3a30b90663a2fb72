//! One rule set for every layer (DESIGN §4): with limits far from the
//! defaults, an event is accepted by ingest ⇔ counted by the speed layer ⇔
//! counted by batch, at each limit's edges; and a consumer started with
//! narrower limits than ingest's stops rather than drop accepted views.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use counters::keys::KeySpace;
use infra::redis::RedisServer;
use loadgen::Truth;
use schemas::RuleSet;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::harness::{PARTITIONS, Setup, expected};

/// Every limit moved away from its default, in both directions.
fn rules() -> RuleSet {
    RuleSet {
        max_future_seconds: 10 * 60,
        late_horizon_seconds: 60 * 24 * 3600,
        billable_min_watch_seconds: 45,
        fraud_cap_per_user_video_day: 3,
        // Above the cap, so the cap is what the 5 views below meet.
        repeat_loop_views: 6,
        ..RuleSet::default()
    }
}

/// One probe: an event `offset` from the moment ingest receives it. The edge
/// cases sit a minute inside or outside a limit (the request takes well
/// under a minute, so ingest's verdict is certain); batch and speed judge
/// against the recorded `received_at`, so theirs is too.
struct Probe {
    video: &'static str,
    user: &'static str,
    offset: chrono::Duration,
    watch: u32,
    accepted: bool,
}

fn probes() -> Vec<Probe> {
    let (d, m) = (chrono::Duration::days, chrono::Duration::minutes);
    let p = |video, offset, watch, accepted| Probe {
        video,
        user: "u1",
        offset,
        watch,
        accepted,
    };
    let mut v = vec![
        // Late horizon 60 d: inside, outside, and 45 d (the default, 30 d,
        // would reject it: the case of an ingest-only --late-horizon).
        p("vLateIn", -d(60) + m(1), 60, true),
        p("vLateOut", -d(60) - m(1), 60, false),
        p("vLate45d", -d(45), 60, true),
        // Max future 10 min, and 7 min (the default, 5 min, would reject).
        p("vFutureIn", m(10) - m(1), 60, true),
        p("vFutureOut", m(10) + m(1), 60, false),
        p("vFuture7m", m(7), 60, true),
        // Billable from 45 s (the default is 30).
        p("vWatch44", -m(30), 44, true),
        p("vWatch45", -m(30), 45, true),
    ];
    // Fraud cap 3 (the default is 10): 5 billable views of one user.
    for i in 0..5 {
        v.push(Probe {
            video: "vCap",
            user: "bot",
            offset: -m(40) + m(i),
            watch: 60,
            accepted: true,
        });
    }
    v
}

/// Runs ingest with `rules` on a free port and posts `body` in one
/// request. Returns the response's status and body.
async fn post(s: &Setup, rules: RuleSet, body: Vec<Value>) -> (u16, Value) {
    let config = ingest::IngestConfig {
        rules,
        ..ingest::IngestConfig::default()
    };
    let (status, _, body) = s.post(config, &body).await;
    (status, body)
}

fn body(probes: &[Probe], sent: DateTime<Utc>) -> Vec<Value> {
    probes
        .iter()
        .map(|p| {
            json!({
                "event_id": uuid::Uuid::new_v4().to_string(),
                "video_id": p.video,
                "user_id": p.user,
                "occurred_at": schemas::event::format_timestamp(&(sent + p.offset)),
                "watch_seconds": p.watch,
                "revenue_eligible": true,
            })
        })
        .collect()
}

/// The indexes of the events the response rejected.
fn rejected(body: &Value) -> Vec<usize> {
    body["rejected"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["index"].as_u64())
                .map(|i| i as usize)
                .collect()
        })
        .unwrap_or_default()
}

struct Speed {
    task: tokio::task::JoinHandle<speed::Result<()>>,
    stop: oneshot::Sender<()>,
}

fn start_speed(s: &Setup, redis: &RedisServer, rules: RuleSet) -> Speed {
    let mut sc = speed::SpeedConfig::new(s.kafka.bootstrap_servers(), &s.topic, redis.url());
    sc.rules = rules;
    sc.key_prefix = "rules:".into();
    // Counters of a 60-day-old hour must outlive the test (by default they
    // expire 35 days after their day: serving reads such hours from batch).
    sc.counter_retention = chrono::Duration::days(90);
    let mut reg = prometheus_client::registry::Registry::default();
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(speed::run(
        sc,
        speed::Metrics::register(&mut reg),
        telemetry::ReadyFlag::new("t"),
        async move {
            let _ = rx.await;
        },
    ));
    Speed { task, stop }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_by_ingest_iff_counted_by_speed_iff_counted_by_batch_at_every_edge() {
    let s = Setup::new().await;
    let redis = RedisServer::start().unwrap();
    let rules = rules();
    let probes = probes();
    let sent = Utc::now();
    let (status, resp) = post(&s, rules, body(&probes, sent)).await;

    // Ingest: exactly the probes inside the limits, whatever the defaults say.
    let want_rejected: Vec<usize> = (0..probes.len()).filter(|&i| !probes[i].accepted).collect();
    assert_eq!(rejected(&resp), want_rejected, "{resp:#}");
    assert_eq!(status, 202, "{resp:#}");
    let accepted = probes.len() - want_rejected.len();
    assert_eq!(resp["accepted"].as_u64(), Some(accepted as u64), "{resp:#}");

    // What ingest accepted, as each layer must count it under `rules`. The
    // records in Kafka carry the received_at ingest stamped: read it back.
    let received = s.received(&rules).await;
    assert_eq!(received.len(), accepted);
    let mut truth = Truth::new(rules);
    for e in &received {
        truth.record(&e.event);
    }
    let want = expected(&truth);
    let by_video = |video: &str| -> [u64; 4] {
        want.iter()
            .filter(|((v, _), _)| v == video)
            .fold([0; 4], |mut acc, (_, c)| {
                for (a, x) in acc.iter_mut().zip(c) {
                    *a += x;
                }
                acc
            })
    };
    // The truth itself follows the moved limits (not the defaults).
    assert_eq!(by_video("vWatch44")[..2], [1, 0]);
    assert_eq!(by_video("vWatch45")[..2], [1, 1]);
    assert_eq!(by_video("vCap")[..3], [5, 3, 2], "cap 3, not 10");
    assert_eq!(by_video("vLate45d")[0], 1);
    assert_eq!(by_video("vFuture7m")[0], 1);

    // Speed: the same views, billable before the cap, watch seconds.
    let speed = start_speed(&s, &redis, rules);
    let keys = KeySpace::new("rules:", 16);
    let mut conn = counters::conn::connect_reader(&redis.url()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while counters::read::stored_offsets(&mut conn, &keys, PARTITIONS)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.unwrap_or(0))
        .sum::<i64>()
        < accepted as i64
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "speed did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = speed.stop.send(());
    speed.task.await.unwrap().unwrap();
    let got: BTreeMap<_, _> = counters::read::all_counts(&mut conn, &keys)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, c)| (k, [c.views, c.billable_views, c.watch_seconds]))
        .collect();
    let want_speed: BTreeMap<_, _> = want
        .iter()
        .map(|(k, c)| (k.clone(), [c[0], c[1] + c[2], c[3]]))
        .collect();
    testkit::assert_same_map(&got, &want_speed, "speed counts");

    // Archive and batch, under the same rules.
    let archive = s.archive_with("archive", rules);
    s.wait_archived().await;
    archive.stop().await;
    let day = chrono::TimeDelta::days(1);
    use chrono::DurationRound;
    let from = (sent - chrono::Duration::days(61))
        .duration_trunc(day)
        .unwrap();
    let to = (sent + chrono::Duration::days(1))
        .duration_trunc(day)
        .unwrap()
        + day;
    let opts = batch::run::RunOptions {
        allow_incomplete: true,
        rules,
        ..batch::run::RunOptions::new(from, to)
    };
    let report = batch::run::run(s.store.clone(), &opts, &|_, _, _| {})
        .await
        .expect("batch run");
    assert_eq!(
        report.manifest.rows.invalid, 0,
        "batch rejects nothing ingest accepted"
    );
    assert_eq!(
        report.manifest.rules, rules,
        "the manifest records the rule set"
    );
    testkit::assert_same_map(&s.views(&report).await, &want, "batch views");
    // The SQL engine (the rules as SQL) honours the same rule set.
    let sql = batch::run::run(
        s.store.clone(),
        &batch::run::RunOptions {
            compute: crate::harness::compute(batch::run::Engine::Sql),
            ..opts.clone()
        },
        &|_, _, _| {},
    )
    .await
    .expect("SQL engine run");
    assert_eq!(sql.manifest.rows, report.manifest.rows);
    assert_eq!(sql.manifest.outputs, report.manifest.outputs);

    // The same archive, counted under narrower rules: refused, not
    // silently smaller.
    let narrow = batch::run::RunOptions {
        rules: RuleSet::default(),
        ..opts
    };
    let err = batch::run::run(s.store.clone(), &narrow, &|_, _, _| {})
        .await
        .expect_err("a run narrower than the archive's rules is refused");
    assert!(err.to_string().contains("late"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_with_narrower_limits_than_ingest_stop_instead_of_dropping_views() {
    let s = Setup::new().await;
    let redis = RedisServer::start().unwrap();
    let sent = Utc::now();
    let probes = probes();
    let (status, _) = post(&s, rules(), body(&probes, sent)).await;
    assert_eq!(status, 202);

    // Speed on the defaults: stops at the first record, applies nothing.
    let speed = start_speed(&s, &redis, RuleSet::default());
    let err = tokio::time::timeout(Duration::from_secs(60), speed.task)
        .await
        .expect("speed stops by itself")
        .unwrap()
        .expect_err("speed refuses records accepted under wider limits");
    assert!(
        matches!(err, speed::Error::RulesNarrowerThanIngest { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("--late-horizon"), "{err}");
    drop(speed.stop);
    let mut conn = counters::conn::connect_reader(&redis.url()).await.unwrap();
    let keys = KeySpace::new("rules:", 16);
    assert!(
        counters::read::all_counts(&mut conn, &keys)
            .await
            .unwrap()
            .is_empty(),
        "nothing counted under the wrong rules"
    );

    // Archive on the defaults: stops too, archives nothing.
    let archive = s.archive_with("archive", RuleSet::default());
    let ready = archive.ready.clone();
    let err = archive
        .join(Duration::from_secs(60))
        .await
        .expect_err("archive refuses records accepted under wider limits");
    assert!(
        matches!(err, archive::Error::RulesNarrowerThanIngest { .. }),
        "{err}"
    );
    let (_, progress) = store::progress::load(s.store.as_ref()).await.unwrap();
    assert!(progress.iter().all(|p| p.next_offset == 0), "{progress:?}");
    // And says so where it is watched.
    let why = ready.get().expect_err("a stopped archive is not ready");
    assert!(why.starts_with("the archive stopped: "), "{why}");
}
