//! Signed playback tokens at ingest: a valid token is recorded verified with
//! its playback id; with tokens required an unsigned, expired, wrongly
//! signed or another video's token is rejected with the reason; without,
//! such an event is kept but recorded never billable, and says why.

use std::sync::Arc;

use chrono::{Duration, Utc};
use ingest::PlaybackPolicy;
use playback::{Keyring, PlaybackSigner};
use schemas::Playback;
use serde_json::{Value, json};

use crate::harness::{Ingest, event};

fn signer(kid: &str, seed: u8) -> PlaybackSigner {
    PlaybackSigner::from_seed(kid, [seed; 32]).unwrap()
}

/// `event(video)` as schema version 2 with `token`.
fn signed(video: &str, token: &str) -> Value {
    let mut e = event(video);
    e["schema_version"] = json!(2);
    e["playback_token"] = json!(token);
    e
}

async fn start(required: bool) -> Ingest {
    let keys = Arc::new(Keyring::of(&[&signer("k1", 1)]));
    Ingest::start_with(move |c, _| {
        c.playback = PlaybackPolicy::Verify { keys, required };
    })
    .await
}

/// The events that should fail, each with the words its reason must hold.
fn bad_events() -> Vec<(&'static str, Value, &'static str)> {
    let (good, other) = (signer("k1", 1), signer("k1", 2));
    let now = Utc::now();
    let ttl = Duration::hours(1);
    vec![
        ("unsigned", event("v-a"), "is missing"),
        (
            "expired",
            signed(
                "v-a",
                &good.issue("v-a", "p2", now - Duration::hours(3), ttl),
            ),
            "valid from",
        ),
        (
            "wrong key",
            signed("v-a", &other.issue("v-a", "p3", now, ttl)),
            "does not verify",
        ),
        (
            "unknown key",
            signed("v-a", &signer("k9", 1).issue("v-a", "p4", now, ttl)),
            "--playback-keys",
        ),
        (
            "another video's",
            signed("v-a", &good.issue("v-b", "p5", now, ttl)),
            "issued for video",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_required_only_valid_ones_are_accepted_and_each_refusal_says_why() {
    let ing = start(true).await;
    let token = signer("k1", 1).issue("v-a", "pb-1", Utc::now(), Duration::hours(1));
    let (status, body) = ing.post_json(&signed("v-a", &token)).await;
    assert_eq!(status, 202, "{body}");

    for (what, e, why) in bad_events() {
        let (status, body) = ing.post_json(&e).await;
        assert_eq!(status, 422, "{what}: {body}");
        let rejected = &body["rejected"][0];
        assert_eq!(
            rejected["violations"][0]["field"], "playback_token",
            "{what}: {body}"
        );
        assert_eq!(rejected["violations"][0]["rule"], "signature", "{what}");
        let reason = rejected["reason"].as_str().unwrap();
        assert!(reason.contains(why), "{what}: {reason}");
    }
    // A token with a version-1 event is refused for its version, at parse.
    let mut v1 = signed("v-a", &token);
    v1["schema_version"] = json!(1);
    let (status, body) = ing.post_json(&v1).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("needs schema_version 2"),
        "{body}"
    );

    // Only the valid event reached Kafka, verified, billable as sent.
    let events = ing.events().await;
    assert_eq!(events.len(), 1);
    let e = &events[0].1;
    assert_eq!(
        e.playback,
        Playback::Verified {
            playback_id: "pb-1".into()
        }
    );
    assert!(e.event.revenue_eligible);
    assert_eq!(e.event.playback_token.as_deref(), Some(token.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_requirement_bad_events_are_kept_but_never_billable() {
    let ing = start(false).await;
    let bad = bad_events();
    let events: Vec<Value> = bad.iter().map(|(_, e, _)| e.clone()).collect();
    let (status, body) = ing.post_json(&Value::Array(events)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], bad.len(), "{body}");

    let mut got: Vec<(String, bool)> = ing
        .events()
        .await
        .into_iter()
        .map(|(_, e)| {
            let Playback::Unverified { reason } = &e.playback else {
                panic!("{:?} recorded {:?}", e.event.event_id, e.playback);
            };
            (reason.clone(), e.event.revenue_eligible)
        })
        .collect();
    got.sort();
    let want = [
        "invalid:bad_signature",
        "invalid:expired",
        "invalid:unknown_key",
        "invalid:wrong_video",
        "unsigned",
    ];
    assert_eq!(
        got,
        want.map(|r| (r.to_owned(), false)).to_vec(),
        "every one kept, none eligible"
    );
}

/// A large request (validated off the runtime's workers) with one token
/// replayed 100 times, 100 distinct playbacks and 100 unsigned events:
/// every copy of the replayed token verifies with its one playback id
/// (ingest holds no state: the batch rule `token_replay` judges replays),
/// every distinct one with its own, and the unsigned are refused by index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_request_verifies_each_token_and_leaves_replays_to_batch() {
    let ing = start(true).await;
    let good = signer("k1", 1);
    let now = Utc::now();
    let ttl = Duration::hours(1);
    let leaked = good.issue("v-a", "pb-leaked", now, ttl);
    let mut body: Vec<Value> = (0..100).map(|_| signed("v-a", &leaked)).collect();
    body.extend((0..100).map(|i| signed("v-a", &good.issue("v-a", &format!("pb-{i}"), now, ttl))));
    body.extend((0..100).map(|_| event("v-a")));
    let (status, resp) = ing.post_json(&Value::Array(body)).await;
    assert_eq!(status, 202, "{resp}");
    assert_eq!(resp["accepted"], 200, "{resp}");
    let refused: Vec<u64> = resp["rejected_indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap())
        .collect();
    assert_eq!(refused, (200..300).collect::<Vec<u64>>());

    let mut by_playback: std::collections::BTreeMap<String, usize> = Default::default();
    for (_, e) in ing.events().await {
        let Playback::Verified { playback_id } = &e.playback else {
            panic!("{:?} recorded {:?}", e.event.event_id, e.playback);
        };
        assert!(e.event.revenue_eligible);
        *by_playback.entry(playback_id.clone()).or_default() += 1;
    }
    assert_eq!(by_playback.len(), 101);
    assert_eq!(by_playback["pb-leaked"], 100);
    assert!(
        by_playback
            .iter()
            .all(|(id, n)| id == "pb-leaked" || *n == 1)
    );
}
