//! `viewcount up` when a store write fails under it (here the archive's
//! progress object cannot be replaced, as on a full disk or with no file
//! descriptors left): the archive holds what it has and retries, `/readyz`
//! fails naming it, the summary says so, ingest answers 503 with
//! `Retry-After` and acknowledges nothing; once the store works again it
//! resumes by itself and the ordered stop still archives every record.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::http;

fn event() -> String {
    format!(
        r#"{{"event_id":"{}","video_id":"v-probe","user_id":"u-probe","occurred_at":"{}","watch_seconds":40,"revenue_eligible":true}}"#,
        uuid::Uuid::new_v4(),
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
    )
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_viewcount"))
        .args(["up", "--demo", "1000", "--demo-rate", "100"])
        .args(["--summary-every", "1s", "--listen", "127.0.0.1:0"])
        .args(["--store", &store])
        .env("NO_COLOR", "1")
        .env_remove("VIEWCOUNT_KAFKA")
        .env_remove("VIEWCOUNT_REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            if tx.send(l.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut next_until = |what: &str, pred: &dyn Fn(&str) -> bool| -> String {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(l) => {
                    seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(_) => panic!("no {what} in:\n{}", seen.join("\n")),
            }
        }
    };
    let ingest = next_until("ingest line", &|l| l.starts_with("ingest: http://"));
    let addr = ingest["ingest: http://".len()..]
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    next_until("the demo's checks", &|l| l == "demo: every check passed");

    // The fault: partition 0's progress object cannot be written any more.
    let progress = root.join("archive/progress/p0000.json");
    std::fs::remove_file(&progress).unwrap();
    std::fs::create_dir(&progress).unwrap();

    let not_ready = next_until("the archive failing in the summary", &|l| {
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
    let posted = http(
        &addr,
        "POST",
        "/v1/events",
        &["Content-Type: application/json"],
        &event(),
    )
    .unwrap();
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
    let posted = http(
        &addr,
        "POST",
        "/v1/events",
        &["Content-Type: application/json"],
        &event(),
    )
    .unwrap();
    assert_eq!(posted.status, 202, "{}", posted.body);

    // The ordered stop archives every record Kafka holds.
    assert!(
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let stopped = next_until("the ordered stop", &|l| l.starts_with("stopped: all "));
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert!(status.success(), "{status}: {stopped}");
    let n: u64 = stopped["stopped: all ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let out = crate::run(&["status", "--json", "--store", &store], &[]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let archived: u64 = s["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["archive_offset"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(archived, n, "{s:#}");
}
