//! `viewcount up --demo --exit-after-demo`, the README's main command, as a
//! newcomer runs it: every layer checked against the generator's truth
//! (Kafka, speed, the scheduled batch, reconcile, the serving API, a
//! provisional statement, the ledger), then an ordered stop that loses
//! nothing. Once on a local store, once on S3 (a moto server on loopback),
//! followed by `ledger verify` and `status` against what it left.

use std::process::{Command, Output};

use crate::text;

fn up(args: &[&str], env: &[(String, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_viewcount"))
        .arg("up")
        .args([
            "--demo",
            "4000",
            "--exit-after-demo",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("NO_COLOR", "1")
        .env_remove("VIEWCOUNT_STORE")
        .env_remove("VIEWCOUNT_KAFKA")
        .env_remove("VIEWCOUNT_REDIS_URL")
        .output()
        .expect("viewcount up runs")
}

fn viewcount(args: &[&str], env: &[(String, String)]) -> Output {
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    crate::run(args, &env)
}

/// The demo's checks, as printed.
fn assert_demo_passed(out: &Output) {
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "up failed:\n{stdout}\n{}",
        text(&out.stderr)
    );
    for line in [
        "check: every accepted event is in Kafka",
        "equal to the truth per video per hour",
        "check: batch equals the truth",
        "check: reconcile is clean",
        "check: the serving API (bearer token) answers every one of",
        "check: every line equals the truth's billable views × the rate in force",
        "check: ledger verifies",
        "demo: every check passed",
        "stopped: all",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
}

#[test]
fn up_demo_checks_every_layer_on_a_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}/store", dir.path().display());
    let out = up(&["--store", &store], &[]);
    assert_demo_passed(&out);
    // What it left verifies from the outside, and status reads it.
    let verify = viewcount(&["ledger", "verify", "--store", &store], &[]);
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    let status = viewcount(&["status", "--json", "--store", &store], &[]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(s["ledger"]["size"], 1, "{s:#}");
    assert!(s["batch"]["watermark"].is_string(), "{s:#}");
    assert!(s["batch"]["last_run"]["run_id"].is_string(), "{s:#}");
    assert_eq!(s["partitions"].as_array().map(Vec::len), Some(4), "{s:#}");

    // Everything it wrote is its owner's alone: statements, ledger, the
    // archive's events (user ids), the dev key.
    let root = dir.path().join("store");
    let mut seen = 0;
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&p).unwrap().permissions(),
            );
            assert_eq!(
                mode & 0o077,
                0,
                "{} is mode {:o}",
                p.display(),
                mode & 0o777
            );
            seen += 1;
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    assert!(seen > 20, "{seen} objects");
    assert!(root.join("statements").is_dir());
    let key = format!("{}.dev-ledger.key", root.display());
    // A signing key others can read is refused, with the fix.
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let refused = viewcount(
        &["ledger", "repair", "--store", &store, "--ledger-key", &key],
        &[],
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains(&format!("chmod 600 {key}")),
        "{}",
        text(&refused.stderr)
    );
}

#[test]
fn up_demo_runs_the_whole_product_on_s3() {
    let s3 = testkit::s3::S3Server::start("viewcount").expect("moto");
    let env = s3.vars();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ledger.key");
    let keygen = viewcount(&["ledger", "keygen", "--out", key.to_str().unwrap()], &[]);
    assert!(keygen.status.success(), "{}", text(&keygen.stderr));
    let rates = dir.path().join("rates.toml");
    std::fs::write(&rates, "currency = \"EUR\"\ndefault_cpm = \"3.10\"\n").unwrap();
    let store = s3.url("prod");

    // A non-local store has no place for a dev key and demo rates: refused, saying so.
    let refused = up(&["--store", &store], &env);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("pass --ledger-key and --rates"),
        "{}",
        text(&refused.stderr)
    );

    let out = up(
        &[
            "--store",
            &store,
            "--ledger-key",
            key.to_str().unwrap(),
            "--rates",
            rates.to_str().unwrap(),
        ],
        &env,
    );
    assert_demo_passed(&out);
    assert!(text(&out.stdout).contains("EUR"), "{}", text(&out.stdout));

    let pubkey = format!("{}.pub", key.display());
    let verify = viewcount(
        &["ledger", "verify", "--store", &store, "--pubkey", &pubkey],
        &env,
    );
    assert!(
        verify.status.success(),
        "{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
    let status = viewcount(&["status", "--json", "--store", &store], &env);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(s["ledger"]["size"], 1, "{s:#}");
    assert_eq!(
        s["dirty"]["dirty"].as_array().map(Vec::len),
        Some(0),
        "{s:#}"
    );
}

/// Ctrl-C while generated traffic flows: ingest stops first, everything
/// Kafka acknowledged reaches the archive and the speed layer, exit 0.
#[test]
fn ctrl_c_stops_in_order_and_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}/store", dir.path().display());
    let mut up = crate::Up::start(
        &[
            "--demo",
            "2000",
            "--demo-rate",
            "400",
            "--summary-every",
            "1s",
            "--store",
            &store,
        ],
        std::process::Stdio::null(),
    );
    up.until("the demo's checks", |l| l == "demo: every check passed");
    // Two summaries after the checks: traffic is flowing.
    for _ in 0..2 {
        up.until("a summary", |l| l.starts_with("events "));
    }
    up.signal("INT");
    let (status, lines) = up.wait(std::time::Duration::from_secs(180));
    assert!(status.success(), "{status}: {}", lines.join("\n"));
    // More records than the demo's 2000 events: the traffic after it
    // counted too, and the archive holds them all.
    let n = crate::assert_all_archived(&lines, &store);
    assert!(n > 2000, "{n}");
}

/// `up` killed with SIGKILL (no chance to stop anything) leaves no child
/// redis-server behind: the server dies with it.
#[test]
fn kill_9_of_up_leaves_no_redis_server_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}/store", dir.path().display());
    let mut up = crate::Up::start(
        &["--store", &store, "--require-signed-events", "false"],
        std::process::Stdio::null(),
    );
    up.addr();
    let pid = up.child.id();
    // Its children, from every thread's list.
    let children: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flat_map(|t| {
            // A thread that ended since the listing has none.
            let list = t
                .and_then(|t| std::fs::read_to_string(t.path().join("children")))
                .unwrap_or_default();
            list.split_whitespace()
                .map(|p| p.parse::<u32>().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    let comm = |p: u32| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
    let redis = *children
        .iter()
        .find(|&&p| comm(p).trim() == "redis-server")
        .unwrap_or_else(|| panic!("no child redis-server among {children:?}"));
    up.signal("KILL");
    // Gone, or a zombie its new parent has not reaped yet.
    let dead = || {
        std::fs::read_to_string(format!("/proc/{redis}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !dead() {
        if std::time::Instant::now() > deadline {
            let _ = std::process::Command::new("kill")
                .args(["-9", &redis.to_string()])
                .status();
            panic!("redis-server {redis} still ran 10 s after up was killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (status, _) = up.wait(std::time::Duration::from_secs(10));
    assert!(!status.success());
}
