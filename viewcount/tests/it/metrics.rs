//! Every service's `/metrics` passes `promtool check metrics` (the
//! Prometheus project's own linter): each of `viewcount ingest`, `speed`,
//! `archive`, `serve` and `batch schedule` is started as a deployment runs
//! it (against a real Kafka-protocol broker on loopback and a real
//! `redis-server`), and `up`, which serves them all on one listener.

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use infra::kafka::EmbeddedKafka;
use infra::redis::RedisServer;

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        crate::stop_child(&mut self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(args: &[&str], store: &str) -> (Service, u16) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_viewcount"))
        .args(args)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("VIEWCOUNT_STORE", store)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("viewcount starts");
    (Service(child), port)
}

/// `GET /metrics` as `promtool` and `curl` would ask (classic text format).
fn scrape(port: u16, service: &mut Service) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = service.0.try_wait() {
            panic!("the service exited with {status}");
        }
        if let Some(a) = crate::http(
            &format!("127.0.0.1:{port}"),
            "GET",
            "/metrics",
            &["Accept: text/plain"],
            "",
        ) && a.status == 200
        {
            assert!(a.head.contains("text/plain; version=0.0.4"), "{}", a.head);
            return a.body;
        }
        assert!(Instant::now() < deadline, "no /metrics on port {port}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn promtool(name: &str, text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian: apt-get install prometheus; scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics on {name}:\n{}{}\n--- metrics:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_service_passes_promtool_check_metrics() {
    let kafka = EmbeddedKafka::start(1).expect("kafka");
    kafka.create_topic("view-events", 2).unwrap();
    kafka.create_topic("view-events-dlq", 1).unwrap();
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}/store", dir.path().display());
    let tokens = dir.path().join("tokens.toml");
    let made = Command::new(env!("CARGO_BIN_EXE_viewcount"))
        .args(["token", "create", "--role", "admin", "--name", "ops"])
        .args(["--tokens", tokens.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let bootstrap = kafka.bootstrap_servers();
    let redis_url = redis.url();
    let services: [(&str, Vec<&str>, &[&str]); 6] = [
        (
            "ingest",
            vec![
                "ingest",
                "--kafka",
                bootstrap,
                "--require-signed-events",
                "false",
            ],
            &[
                "viewcount_ingest_events_accepted_total",
                "viewcount_ingest_produce_ack_seconds_bucket",
            ],
        ),
        (
            "speed",
            vec!["speed", "--kafka", bootstrap, "--redis-url", &redis_url],
            &[
                "viewcount_speed_counted_total",
                "viewcount_speed_script_seconds_bucket",
            ],
        ),
        (
            "archive",
            vec!["archive", "--kafka", bootstrap],
            &["viewcount_archive_records_total"],
        ),
        (
            "serve",
            vec![
                "serve",
                "--redis-url",
                &redis_url,
                "--tokens",
                tokens.to_str().unwrap(),
            ],
            &[
                "viewcount_serving_index_rows",
                "viewcount_serving_watermark_seconds",
            ],
        ),
        (
            "batch schedule",
            vec!["batch", "schedule", "--every", "1h"],
            &[
                "viewcount_batch_scheduled_runs_total",
                "viewcount_batch_dirty_pending",
            ],
        ),
        (
            "up",
            vec!["up", "--demo", "500", "--summary-every", "1h"],
            &[
                "viewcount_ingest_events_accepted_total",
                "viewcount_speed_counted_total",
                "viewcount_archive_records_total",
                "viewcount_serving_index_rows",
                "viewcount_batch_scheduled_runs_total",
            ],
        ),
    ];
    for (name, args, families) in services {
        let store = if name == "up" {
            format!("file://{}/up", dir.path().display())
        } else {
            store.clone()
        };
        let (mut service, port) = start(&args, &store);
        let mut text = scrape(port, &mut service);
        if name == "up" {
            // Labelled families appear with their first sample: wait for the
            // demo's traffic to give every family the dashboard queries one.
            let deadline = Instant::now() + Duration::from_secs(90);
            while let Err(missing) = dashboard_queries_served_metrics(&text) {
                assert!(Instant::now() < deadline, "{missing}\n{text}");
                std::thread::sleep(Duration::from_millis(500));
                text = scrape(port, &mut service);
            }
        }
        for f in families {
            assert!(text.contains(f), "{name}: no {f} in:\n{text}");
        }
        promtool(name, &text);
    }
}

/// Every metric the Grafana dashboard (deploy/) queries is one the product
/// serves: a family `up` declares (histogram series included).
fn dashboard_queries_served_metrics(text: &str) -> Result<(), String> {
    let mut served = std::collections::BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split(' ');
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        served.insert(name.to_owned());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                served.insert(format!("{name}{suffix}"));
            }
        }
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/dashboards/viewcount.json"
    );
    let dashboard = std::fs::read_to_string(path).expect("the Grafana dashboard");
    let mut queried = 0;
    for (i, _) in dashboard.match_indices("viewcount_") {
        let name: String = dashboard[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !served.contains(&name) {
            return Err(format!(
                "the dashboard queries {name}, which viewcount does not serve"
            ));
        }
        queried += 1;
    }
    assert!(queried >= 8, "the dashboard queries {queried} metrics");
    Ok(())
}
