//! A signed playback token replayed: ingest verifies every copy (each is a
//! valid token, and ingest holds no state), records each with the same
//! playback id, and batch's `token_replay` rule pays the playback's first
//! three views of the day only, in both engines, whatever users the copies
//! claim; a token that is not replayed, and unsigned traffic, are untouched.

use std::sync::Arc;

use chrono::Utc;
use ingest::PlaybackPolicy;
use loadgen::Truth;
use playback::{Keyring, PlaybackSigner};
use schemas::fraud::FraudRule;
use schemas::{Playback, RuleSet};
use serde_json::{Value, json};

use crate::harness::{Setup, expected};

/// A view `minutes` into the hour before last (so every view of the test
/// is in one UTC hour and day, whenever it runs).
fn view(video: &str, user: &str, minutes: i64, token: Option<&str>) -> Value {
    let occurred = base() + chrono::Duration::minutes(minutes);
    let mut e = json!({
        "event_id": uuid::Uuid::new_v4().to_string(),
        "video_id": video,
        "user_id": user,
        "occurred_at": schemas::event::format_timestamp(&occurred),
        "watch_seconds": 60,
        "revenue_eligible": true,
    });
    if let Some(t) = token {
        e["schema_version"] = json!(2);
        e["playback_token"] = json!(t);
    }
    e
}

fn base() -> chrono::DateTime<Utc> {
    schemas::rules::hour_bucket(Utc::now() - chrono::Duration::hours(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_token_is_paid_three_views_a_day_in_both_engines() {
    let s = Setup::new().await;
    let signer = PlaybackSigner::from_seed("k1", [7; 32]).unwrap();
    let (issued, ttl) = (base(), chrono::Duration::hours(6));
    let replayed = signer.issue("vReplay", "pb-leaked", issued, ttl);
    let honest = signer.issue("vHonest", "pb-once", issued, ttl);
    // Six copies of one token, each a fresh event id and an invented user,
    // a minute apart (within the token's validity); one honest playback;
    // two unsigned views (kept unverified: never billable).
    let mut body: Vec<Value> = (0..6)
        .map(|i| view("vReplay", &format!("invented-{i}"), 10 + i, Some(&replayed)))
        .collect();
    body.push(view("vHonest", "alice", 10, Some(&honest)));
    body.push(view("vUnsigned", "bob", 10, None));
    body.push(view("vUnsigned", "carol", 11, None));
    let keys = Arc::new(Keyring::of(&[&signer]));
    let config = ingest::IngestConfig {
        playback: PlaybackPolicy::Verify {
            keys,
            required: false,
        },
        ..ingest::IngestConfig::default()
    };
    let (status, _, resp) = s.post(config, &body).await;
    assert_eq!(status, 202, "{resp}");
    assert_eq!(resp["accepted"], 9, "ingest refuses no replay: {resp}");

    // Every copy is recorded verified, with the one playback id.
    let rules = RuleSet::default();
    let received = s.received(&rules).await;
    assert_eq!(received.len(), 9);
    let mut truth = Truth::new(rules);
    let mut leaked = 0;
    for e in &received {
        if e.event.video_id == "vReplay" {
            assert_eq!(
                e.playback,
                Playback::Verified {
                    playback_id: "pb-leaked".into()
                }
            );
            leaked += 1;
        }
        truth.record_played(&e.event, loadgen::Label::Organic, e.playback.playback_id());
    }
    assert_eq!(leaked, 6);

    let archive = s.archive_with("archive", rules);
    s.wait_archived().await;
    archive.stop().await;
    let native = s.run_batch(&truth).await;
    let sql = batch::run::run(
        s.store.clone(),
        &batch::run::RunOptions {
            allow_incomplete: true,
            compute: crate::harness::compute(batch::run::Engine::Sql),
            ..batch::run::RunOptions::new(native.manifest.from, native.manifest.to)
        },
        &|_, _, _| {},
    )
    .await
    .expect("SQL engine run");
    assert_eq!(sql.manifest.outputs, native.manifest.outputs, "same bytes");
    assert_eq!(sql.manifest.rows, native.manifest.rows);

    let got = s.views(&native).await;
    testkit::assert_same_map(&got, &expected(&truth), "batch views");
    let sum = |video: &str| -> [u64; 4] {
        got.iter()
            .filter(|((v, _), _)| v == video)
            .fold([0; 4], |mut acc, (_, c)| {
                for (a, x) in acc.iter_mut().zip(c) {
                    *a += x;
                }
                acc
            })
    };
    // [views, billable after the rules, filtered, watch seconds]
    assert_eq!(sum("vReplay")[..3], [6, 3, 3], "three paid, three replays");
    assert_eq!(sum("vHonest")[..3], [1, 1, 0]);
    assert_eq!(
        sum("vUnsigned")[..3],
        [2, 0, 0],
        "unverified: never billable"
    );
    let filtered = store::filtered::load_filtered(s.store.as_ref(), &native.manifest)
        .await
        .unwrap();
    let rules_seen: Vec<(String, FraudRule, i64)> = filtered
        .iter()
        .map(|f| (f.video_id.clone(), f.rule, f.views))
        .collect();
    let replays: i64 = rules_seen
        .iter()
        .filter(|(v, r, _)| v == "vReplay" && *r == FraudRule::TokenReplay)
        .map(|x| x.2)
        .sum();
    assert_eq!(replays, 3, "{rules_seen:?}");

    // With the rule off, the same archive pays all six.
    let off = batch::run::run(
        s.store.clone(),
        &batch::run::RunOptions {
            allow_incomplete: true,
            rules: RuleSet {
                token_replay_views: 0,
                ..rules
            },
            ..batch::run::RunOptions::new(native.manifest.from, native.manifest.to)
        },
        &|_, _, _| {},
    )
    .await
    .expect("batch run without the replay rule");
    assert_ne!(off.manifest.run_id, native.manifest.run_id);
    let paid: u64 = s
        .views(&off)
        .await
        .iter()
        .filter(|((v, _), _)| v == "vReplay")
        .map(|(_, c)| c[1])
        .sum();
    assert_eq!(paid, 6);
}
