//! `viewcount up` when a store write fails under it (here the archive's
//! progress object cannot be replaced, as on a full disk or with no file
//! descriptors left): the archive holds what it has and retries, `/readyz`
//! fails naming it, the summary says so, ingest answers 503 with
//! `Retry-After` and acknowledges nothing; once the store works again it
//! resumes by itself and the ordered stop still archives every record.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::{Up, assert_all_archived, http};

fn event() -> String {
    format!(
        r#"{{"event_id":"{}","video_id":"v-probe","user_id":"u-probe","occurred_at":"{}","watch_seconds":40,"revenue_eligible":true}}"#,
        uuid::Uuid::new_v4(),
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
    )
}

/// POSTs one valid event to `up` at `addr`.
fn post_probe(addr: &str) -> crate::Answer {
    http(
        addr,
        "POST",
        "/v1/events",
        &["Content-Type: application/json"],
        &event(),
    )
    .expect("up answers")
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done() {
        assert!(Instant::now() < deadline, "waited 90 s for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_store_write_failing_in_up_stops_acknowledging_until_it_works_again() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = format!("file://{}", root.display());
    let mut up = Up::start(
        &[
            "--demo",
            "1000",
            "--demo-rate",
            "100",
            "--summary-every",
            "1s",
            "--store",
            &store,
        ],
        Stdio::null(),
    );
    let addr = up.addr();
    up.until("the demo's checks", |l| l == "demo: every check passed");

    // The fault: partition 0's progress object cannot be written any more.
    let progress = root.join("archive/progress/p0000.json");
    std::fs::remove_file(&progress).unwrap();
    std::fs::create_dir(&progress).unwrap();

    let not_ready = up.until("the archive failing in the summary", |l| {
        l.starts_with("NOT READY archive: the archive cannot write to the store")
    });
    let readyz = http(&addr, "GET", "/readyz", &[], "").unwrap();
    assert_eq!(readyz.status, 503, "{}", readyz.body);
    assert!(
        readyz
            .body
            .contains("the archive cannot write to the store"),
        "{}",
        readyz.body
    );
    let posted = post_probe(&addr);
    assert_eq!(posted.status, 503, "{}", posted.body);
    assert!(posted.head.contains("retry-after: 1"), "{}", posted.head);
    assert!(
        posted.body.contains("archive_unavailable"),
        "{}",
        posted.body
    );
    let metrics = http(&addr, "GET", "/metrics", &[], "").unwrap();
    let failures: f64 = metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix("viewcount_archive_store_failures_total "))
        .unwrap_or_else(|| panic!("no store failure count in:\n{}", metrics.body))
        .parse()
        .unwrap();
    assert!(failures >= 1.0, "{not_ready}");

    // The store works again: up resumes by itself.
    std::fs::remove_dir(&progress).unwrap();
    wait_until("/readyz to pass again", || {
        http(&addr, "GET", "/readyz", &[], "").is_some_and(|a| a.status == 200)
    });
    let posted = post_probe(&addr);
    assert_eq!(posted.status, 202, "{}", posted.body);

    // The ordered stop archives every record Kafka holds.
    up.signal("INT");
    let (status, lines) = up.wait(Duration::from_secs(180));
    assert!(status.success(), "{status}: {}", lines.join("\n"));
    assert_all_archived(&lines, &store);
}
