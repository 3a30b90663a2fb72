//! Every bad request gets its own status and a message saying what to do.

use serde_json::json;

use crate::harness::{Ingest, event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_precise_statuses_and_nothing_is_produced() {
    let ing = Ingest::start_with(|c, _| {
        c.max_body_bytes = 64 * 1024;
        c.max_events = 10;
    })
    .await;

    let (s, b) = ing.post("application/json", "[{\"event_id\": ").await;
    assert_eq!(s, 400);
    assert_eq!(b["error"]["code"], "unparseable_body");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 1 column"),
        "{b}"
    );

    let (s, b) = ing.post("application/json", "[]").await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("unparseable_body"))
    );

    let (s, b) = ing.post("text/plain", event("v").to_string()).await;
    assert_eq!(s, 415);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("application/x-ndjson")
    );

    let many = json!((0..11).map(|_| event("v")).collect::<Vec<_>>());
    let (s, b) = ing.post_json(&many).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (413, Some("too_many_events"))
    );

    let big = json!([{"padding": "x".repeat(70 * 1024)}]);
    let (s, b) = ing.post_json(&big).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (413, Some("body_too_large")),
        "{b}"
    );

    let mut bad = event("v");
    bad["watch_seconds"] = json!("long");
    let (s, b) = ing.post_json(&json!([bad, {"nope": 1}])).await;
    assert_eq!(s, 422);
    assert_eq!(b["error"]["code"], "no_valid_events");
    assert_eq!(b["accepted"], 0);
    assert_eq!(b["rejected"].as_array().unwrap().len(), 2);

    let r = ing
        .client
        .get(format!("{}/v1/nothing", ing.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    assert!(
        ing.records().await.is_empty(),
        "no bad request produced anything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let ing = Ingest::start().await;
    let get = |path: &str| ing.client.get(format!("{}{path}", ing.base)).send();
    assert_eq!(get("/healthz").await.unwrap().status().as_u16(), 200);
    assert_eq!(get("/readyz").await.unwrap().status().as_u16(), 200);

    let mut bad = event("v");
    bad["device"] = json!("fridge");
    let (s, _) = ing.post_json(&json!([event("v"), event("w"), bad])).await;
    assert_eq!(s, 202);

    let text = get("/metrics").await.unwrap().text().await.unwrap();
    for line in [
        "viewcount_ingest_http_requests_total{status=\"202\"} 1",
        "viewcount_ingest_events_accepted_total 2",
        "viewcount_ingest_events_rejected_total 1",
        "viewcount_ingest_rejections_total{reason=\"device.enum\"} 1",
        "viewcount_ingest_produce_ack_seconds_count 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    // librdkafka counts a message in flight until its delivery report is
    // served, a moment after the 202 on a busy machine: the gauge drains.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = get("/metrics").await.unwrap().text().await.unwrap();
        if text
            .lines()
            .any(|l| l == "viewcount_ingest_producer_queue_depth 0")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the producer queue never drained:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_get_bounded_answers_naming_what_is_wrong() {
    let ing = Ingest::start().await;

    // 10 000 empty objects (30 KB): every one listed made a 7.5 MB answer.
    let empties = format!("[{}]", vec!["{}"; 10_000].join(","));
    let r = ing
        .client
        .post(format!("{}/v1/events", ing.base))
        .header("content-type", "application/json")
        .body(empties)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let bytes = r.bytes().await.unwrap();
    assert!(bytes.len() < 64 * 1024, "{} bytes", bytes.len());
    let b: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(b["rejected"].as_array().unwrap().len(), 20);
    assert_eq!(b["rejected_total"], 10_000);
    let all: Vec<u64> = b["rejected_indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap())
        .collect();
    assert_eq!(
        all,
        (0..10_000).collect::<Vec<u64>>(),
        "every index, in order"
    );
    assert_eq!(b["rejected_by_rule"]["event_id.required"], 10_000, "{b}");
    assert_eq!(b["rejected_by_rule"]["video_id.required"], 10_000, "{b}");

    // One key twice in an event: refused, naming it.
    let e = event("v").to_string();
    let twice = format!("[{},{}]", e, e.replacen('{', r#"{"video_id":"other","#, 1));
    let (s, b) = ing.post("application/json", twice).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains(r#"the key "video_id" appears twice"#),
        "{b}"
    );

    // Placeholder ids and invisible characters are rejected with a reason.
    let cases = [
        (
            "event_id",
            json!("00000000-0000-0000-0000-000000000000"),
            "nil UUID",
        ),
        (
            "event_id",
            json!("ffffffff-ffff-ffff-ffff-ffffffffffff"),
            "max UUID",
        ),
        ("user_id", json!("u\u{0}1"), "U+0000"),
        ("user_id", json!("admin\u{202e}"), "U+202E"),
        ("referrer", json!("https://a.example/\u{2066}"), "U+2066"),
    ];
    for (field, value, says) in cases {
        let mut bad = event("v");
        bad[field] = value;
        let (s, b) = ing.post_json(&json!([bad])).await;
        assert_eq!(s, 422, "{b}");
        let v = &b["rejected"][0]["violations"][0];
        assert_eq!(v["field"], field, "{b}");
        assert!(v["message"].as_str().unwrap().contains(says), "{b}");
    }
    assert!(ing.records().await.is_empty(), "nothing was produced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_too_slowly_is_a_408_naming_the_deadline_and_nothing_is_produced() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ing = Ingest::start_with(|c, _| {
        c.http.body_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    let addr = ing.base.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let e = event("v").to_string();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        e.len()
    );
    // The head and half the body, then nothing.
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&e.as_bytes()[..e.len() / 2]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        s.read_to_end(&mut answer),
    )
    .await
    .expect("answered and closed")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(ing.records().await.is_empty(), "nothing was produced");
}
