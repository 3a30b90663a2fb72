//! Poison records go to the dead-letter topic; conflicting duplicates are reported.

use std::time::Duration;

use chrono::Utc;
use rdkafka::ClientConfig;
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::{ReceivedEvent, ValidationContext};
use serde_json::json;

use crate::harness::Setup;

fn event(id: &str, video: &str, watch: u32) -> ReceivedEvent {
    let now = Utc::now();
    let e = schemas::parse_event(
        &json!({"event_id": id, "video_id": video, "user_id": "u1",
                "occurred_at": schemas::event::format_timestamp(&now),
                "watch_seconds": watch, "revenue_eligible": true}),
        &ValidationContext::at(now),
    )
    .unwrap();
    ReceivedEvent::new(e, now)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_dead_lettered_and_neighbours_counted() {
    let s = Setup::new().await;
    let raw: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", s.kafka.bootstrap_servers())
        .create()
        .unwrap();
    let good1 = event("11111111-1111-4111-8111-111111111111", "pv", 40);
    let good2 = event("22222222-2222-4222-8222-222222222222", "pv", 40);
    let mut bad_event = good1.to_json_bytes();
    // Valid JSON, invalid event (watch_seconds out of range).
    let mut v: serde_json::Value = serde_json::from_slice(&bad_event).unwrap();
    v["watch_seconds"] = json!(999_999);
    bad_event = serde_json::to_vec(&v).unwrap();
    let payloads: Vec<Vec<u8>> = vec![
        good1.to_json_bytes(),
        b"\xff\xfe not json".to_vec(),
        bad_event,
        b"{\"event_id\": 1}".to_vec(),
        good2.to_json_bytes(),
    ];
    // The unreadable record came through ingest with a trace: the trace
    // goes on with it into the dead-letter topic.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for (i, p) in payloads.iter().enumerate() {
        let mut record = FutureRecord::to(&s.topic).key("pv").payload(p);
        if i == 1 {
            record = record.headers(rdkafka::message::OwnedHeaders::new().insert(
                rdkafka::message::Header {
                    key: schemas::trace::TRACE_HEADER,
                    value: Some(traceparent),
                },
            ));
        }
        raw.send(record, Duration::from_secs(10)).await.unwrap();
    }
    let run = s.start(s.config());
    s.wait_caught_up(Duration::from_secs(60)).await;
    let counts = s.counts().await;
    let views: u64 = counts.values().map(|c| c.views).sum();
    assert_eq!(views, 2, "both valid neighbours counted");
    assert_eq!(run.metric("viewcount_speed_dead_lettered_total") as u64, 3);

    let dlq = format!("{}-dlq", s.topic);
    let b = s.kafka.bootstrap_servers().to_owned();
    let records = tokio::task::spawn_blocking(move || {
        infra::kafka::read_topic(&b, &dlq, Duration::from_secs(20)).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].payload.as_deref(), Some(&payloads[1][..]));
    assert_eq!(records[1].payload.as_deref(), Some(&payloads[2][..]));
    run.stop().await;

    // Headers carry the reason and the source position.
    let b = s.kafka.bootstrap_servers().to_owned();
    let dlq = format!("{}-dlq", s.topic);
    let headers = tokio::task::spawn_blocking(move || dlq_headers(&b, &dlq))
        .await
        .unwrap();
    assert_eq!(headers.len(), 3);
    assert!(
        headers[1]
            .iter()
            .any(|(k, v)| k == "reason" && v.contains("watch_seconds")),
        "{headers:?}"
    );
    assert!(
        headers[0]
            .iter()
            .any(|(k, v)| k == "source_offset" && v == "1"),
        "{headers:?}"
    );
    assert!(headers[0].iter().any(|(k, _)| k == "source_partition"));
    assert!(
        headers[0].iter().any(|(k, v)| k == "traceparent"
            && v == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        "{headers:?}"
    );
    assert!(
        !headers[1].iter().any(|(k, _)| k == "traceparent"),
        "no trace where none came in: {headers:?}"
    );
}

fn dlq_headers(bootstrap: &str, topic: &str) -> Vec<Vec<(String, String)>> {
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", testkit::unique_name("dlq"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while out.len() < 3 && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let hs = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| {
                            (
                                x.key.to_owned(),
                                String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(hs);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_duplicates_keep_the_first_and_are_reported() {
    let s = Setup::new().await;
    let id = "33333333-3333-4333-8333-333333333333";
    let first = event(id, "cv", 100);
    let exact_resend = first.clone();
    let conflicting = event(id, "cv", 5);
    s.producer
        .produce_all(
            &[first, exact_resend, conflicting],
            &schemas::RuleSet::default(),
        )
        .await
        .unwrap();
    let run = s.start(s.config());
    s.wait_caught_up(Duration::from_secs(60)).await;
    let counts = s.counts().await;
    assert_eq!(counts.len(), 1);
    let c = counts.values().next().unwrap();
    assert_eq!(
        (c.views, c.watch_seconds),
        (1, 100),
        "the first occurrence wins"
    );
    assert_eq!(run.metric("viewcount_speed_duplicates_total"), 2.0);
    assert_eq!(
        run.metric("viewcount_speed_conflicting_duplicates_total"),
        1.0
    );
    run.stop().await;
}
