//! Graceful shutdown under load loses no event that was answered 202.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Ingest, event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_loses_no_acknowledged_event() {
    let mut ing = Ingest::start().await;
    let url = ing.url.clone();

    // 8 clients each send 100-event requests in a loop until the server goes away.
    let mut clients = Vec::new();
    for c in 0..8 {
        let url = url.clone();
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut acked: Vec<String> = Vec::new();
            let mut answered_503 = 0;
            for _ in 0..10_000 {
                let batch: Vec<Value> = (0..100)
                    .map(|i| event(&format!("c{c}-{}", i % 7)))
                    .collect();
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(json!(batch).to_string())
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let body: Value = r.json().await.unwrap();
                        assert_eq!(body["accepted"], 100);
                        acked.extend(
                            batch
                                .iter()
                                .map(|e| e["event_id"].as_str().unwrap().to_owned()),
                        );
                    }
                    Ok(r) if r.status().as_u16() == 503 => answered_503 += 1,
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    // Connection refused or closed: the server has stopped.
                    Err(_) => break,
                }
            }
            (acked, answered_503)
        }));
    }

    // Let load build, then shut down while requests are in flight.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = ing
            .client
            .get(format!("{}/metrics", ing.base))
            .send()
            .await
            .unwrap();
        let text = r.text().await.unwrap();
        let accepted = text
            .lines()
            .find_map(|l| l.strip_prefix("viewcount_ingest_events_accepted_total "))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if accepted >= 5_000 || tokio::time::Instant::now() > deadline {
            break;
        }
    }
    ing.stop().await;

    let mut acked = BTreeSet::new();
    for c in clients {
        let (ids, _) = c.await.unwrap();
        acked.extend(ids);
    }
    assert!(
        acked.len() >= 5_000,
        "load was running: {} acked",
        acked.len()
    );

    let in_kafka: BTreeSet<String> = ing
        .events()
        .await
        .into_iter()
        .map(|(_, e)| e.event.event_id.to_string())
        .collect();
    let lost: Vec<&String> = acked.difference(&in_kafka).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events missing from Kafka, e.g. {:?}",
        lost.len(),
        lost.first()
    );
}
