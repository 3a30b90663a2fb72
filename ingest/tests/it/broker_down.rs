//! Broker down: 503 with Retry-After, and nothing reported accepted that Kafka
//! did not acknowledge.

use std::time::Duration;

use serde_json::json;
use testkit::TestKafka;

use crate::harness::{Ingest, event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_answers_503_and_accepts_nothing_falsely() {
    // A broker this test can take down, even when the others run on an
    // external one.
    let kafka = TestKafka::start_embedded().expect("embedded kafka");
    let ing = Ingest::start_on(kafka, |_, p| p.delivery_timeout = Duration::from_secs(2)).await;
    let cluster = ing.kafka.embedded().expect("an embedded cluster");

    let before = event("up-before");
    let (s, _) = ing.post_json(&before).await;
    assert_eq!(s, 202);

    cluster.brokers_down().unwrap();
    let during = [event("down-1"), event("down-2")];
    let r = ing
        .client
        .post(&ing.url)
        .header("content-type", "application/json")
        .body(json!(during).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "kafka_unavailable");
    assert!(
        body.get("accepted").is_none(),
        "a 503 reports nothing accepted: {body}"
    );
    let ready = ing
        .client
        .get(format!("{}/readyz", ing.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);

    cluster.brokers_up().unwrap();
    // The client retries as told; now it is accepted, and only once counted.
    let mut status = 0;
    for _ in 0..20 {
        let (s, _) = ing.post_json(&json!(during)).await;
        status = s;
        if s == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(status, 202, "ingest recovers once the broker is back");

    let records = ing.events().await;
    let ids: std::collections::BTreeSet<String> = records
        .iter()
        .map(|(_, e)| e.event.event_id.to_string())
        .collect();
    // Everything answered 202 is in Kafka; the 503'd attempt added nothing the
    // client was told was accepted (any copy from it is a duplicate by event_id).
    for e in std::iter::once(&before).chain(during.iter()) {
        assert!(ids.contains(e["event_id"].as_str().unwrap()));
    }
    assert_eq!(ids.len(), 3);
}
