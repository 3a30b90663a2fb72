//! What ingest accepts is exactly what Kafka holds, keyed by video_id.

use std::collections::BTreeMap;

use loadgen::{GenConfig, Generator, SendConfig, Truth};
use schemas::RuleSet;
use serde_json::{Value, json};

use crate::harness::{Ingest, event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_reads_back_exactly_the_accepted_events_with_their_keys() {
    let ing = Ingest::start().await;
    let generator = Generator::new(GenConfig {
        events: 3_000,
        invalid_ratio: 0.05,
        ..GenConfig::default()
    })
    .unwrap();
    let mut truth = Truth::new(RuleSet::default());
    let mut cfg = SendConfig::new(&ing.url);
    cfg.batch_size = 250;
    let report = loadgen::send(generator, &cfg, &mut truth, |_| {})
        .await
        .unwrap();
    assert_eq!(report.events, 3_000);
    assert!(
        report.rejected > 100,
        "invalid events were rejected: {report:?}"
    );

    let events = ing.events().await;
    // Exactly the accepted events: as many records as acceptances (no retries
    // happened against a healthy broker), and the same multiset of payloads.
    assert_eq!(report.retries, 0);
    assert_eq!(events.len() as u64, report.accepted);
    assert_eq!(events.len() as u64, truth.accepted_events());
    let mut from_kafka = Truth::new(RuleSet::default());
    for (rec, e) in &events {
        assert_eq!(
            rec.key.as_deref(),
            Some(e.event.video_id.as_bytes()),
            "keyed by video_id"
        );
        from_kafka.record(&e.event);
    }
    assert_eq!(from_kafka.rows(), truth.rows());

    // Same key, same partition: per-video order is kept.
    let mut partition_of: BTreeMap<String, i32> = BTreeMap::new();
    for (rec, e) in &events {
        let p = *partition_of
            .entry(e.event.video_id.clone())
            .or_insert(rec.partition);
        assert_eq!(
            p, rec.partition,
            "video {} spread over partitions",
            e.event.video_id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_batch_rejects_only_invalid_events_each_with_its_reason() {
    let ing = Ingest::start().await;
    let good = [event("a"), event("b"), event("c")];
    let mut bad_video = event("x");
    bad_video["video_id"] = json!("no spaces please");
    let mut two_faults = event("y");
    two_faults["watch_seconds"] = json!(-3);
    two_faults["country"] = json!("Narnia");
    let body = json!([good[0], bad_video, good[1], 42, two_faults, good[2]]);

    let (status, answer) = ing.post_json(&body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], 3);
    let rejected = answer["rejected"].as_array().unwrap();
    let by_index: BTreeMap<u64, &Value> = rejected
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r))
        .collect();
    assert_eq!(by_index.keys().copied().collect::<Vec<_>>(), [1, 3, 4]);
    assert_eq!(by_index[&1]["event_id"], bad_video["event_id"]);
    assert!(
        by_index[&1]["reason"]
            .as_str()
            .unwrap()
            .starts_with("video_id: ")
    );
    assert!(
        by_index[&3]["reason"]
            .as_str()
            .unwrap()
            .contains("must be a JSON object")
    );
    assert_eq!(by_index[&3]["event_id"], Value::Null);
    let fields: Vec<&str> = by_index[&4]["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["watch_seconds", "country"]);

    let ids: Vec<String> = ing
        .events()
        .await
        .into_iter()
        .map(|(_, e)| e.event.event_id.to_string())
        .collect();
    let mut want: Vec<String> = good
        .iter()
        .map(|g| g["event_id"].as_str().unwrap().to_owned())
        .collect();
    let mut got = ids.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_bodies_are_accepted_line_by_line() {
    let ing = Ingest::start().await;
    let a = event("nd1");
    let b = event("nd2");
    let body = format!("{a}\r\n\n{{broken\n{b}\n");
    let (status, answer) = ing.post("application/x-ndjson", body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], 2);
    assert_eq!(answer["rejected"][0]["index"], 1);
    assert!(
        answer["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("line 3 is not valid JSON")
    );
    assert_eq!(ing.records().await.len(), 2);
}

/// The caller's W3C `traceparent` continues through ingest: every record
/// of the request carries the same trace (with ingest's own span), and the
/// answer names it; a request without one starts a trace of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_trace_travels_in_every_record_header() {
    let ing = Ingest::start().await;
    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let body = json!([event("vTrace"), event("vTrace"),]);
    let r = reqwest::Client::new()
        .post(&ing.url)
        .header("traceparent", incoming)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let answered = r.headers()["traceparent"].to_str().unwrap().to_owned();
    let t = schemas::trace::TraceParent::parse(&answered).expect("a valid traceparent");
    assert_eq!(t.trace_id(), "0af7651916cd43dd8448eb211c80319c");
    assert_ne!(answered, incoming, "ingest adds its own span");
    // Without one (or with a malformed one), ingest starts a trace.
    let r = reqwest::Client::new()
        .post(&ing.url)
        .header("traceparent", "garbage")
        .json(&json!(event("vTrace")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let started = r.headers()["traceparent"].to_str().unwrap().to_owned();
    let started = schemas::trace::TraceParent::parse(&started).expect("a fresh trace");
    assert_ne!(started.trace_id(), t.trace_id());

    let records = ing.records().await;
    assert_eq!(records.len(), 3);
    let traces: Vec<String> = records
        .iter()
        .map(|r| {
            let (_, v) = r
                .headers
                .iter()
                .find(|(k, _)| k == "traceparent")
                .expect("every record carries a traceparent");
            schemas::trace::trace_id_of(Some(v)).expect("valid")
        })
        .collect();
    let of = |id: &str| traces.iter().filter(|t| *t == id).count();
    assert_eq!(of("0af7651916cd43dd8448eb211c80319c"), 2, "{traces:?}");
    assert_eq!(of(&started.trace_id()), 1, "{traces:?}");
}
