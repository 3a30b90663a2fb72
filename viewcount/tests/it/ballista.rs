//! The batch on a Ballista cluster of real processes: `viewcount batch
//! scheduler` and two `viewcount batch executor`s on loopback, and `viewcount
//! batch run --engine ballista` against them, with the default rules, on the
//! archive with every hard case (duplicates, conflicting copies, invalid
//! rows, the fraud pattern) and on labelled traffic in which every rule
//! catches views. The runs give the native engine's run id, bytes and row
//! counts.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use crate::text;
use std::time::{Duration, Instant};

#[path = "../../../batch/tests/it/hard_cases.rs"]
mod hard_cases;

fn viewcount(args: &[&str], store: &str) -> Output {
    crate::run(args, &[("VIEWCOUNT_STORE", store.to_owned())])
}

/// A cluster process, killed when dropped; its log is a file.
struct Node {
    child: Child,
    log: std::path::PathBuf,
}

impl Node {
    fn start(args: &[String], store: &str, log: std::path::PathBuf) -> Node {
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_viewcount"))
            .args(args)
            .env("VIEWCOUNT_STORE", store)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("viewcount starts");
        Node { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `node`'s log says `what`, failing with the log if it exits
/// or a minute passes.
fn wait_for(node: &mut Node, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !node.log().contains(what) {
        if let Ok(Some(status)) = node.child.try_wait() {
            panic!("exited ({status}) before {what:?}:\n{}", node.log());
        }
        assert!(
            Instant::now() < deadline,
            "no {what:?} after 60 s:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run_args<'a>(from: &'a str, to: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "batch",
        "run",
        "--from",
        from,
        "--to",
        to,
        "--allow-incomplete",
        "--json",
    ];
    args.extend_from_slice(extra);
    args
}

fn manifest(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "batch run failed:\n{}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the manifest is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ballista_with_two_executor_processes_gives_the_native_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let url = |name: &str| format!("file://{}", dir.path().join(name).display());
    let (native_url, cluster_url) = (url("native"), url("cluster"));
    // The hard cases, and beside them labelled traffic in which every rule
    // catches views (one store: every process of a cluster opens the same).
    let a = hard_cases::archive();
    let labelled: Vec<_> = hard_cases::labelled().into_iter().map(|(r, _)| r).collect();
    for store in [&native_url, &cluster_url] {
        let store = store::layout::open(store).unwrap();
        hard_cases::write(store.as_ref(), &a.rows, 0).await;
        hard_cases::write(store.as_ref(), &a.rearchived, 1_000_000).await;
        hard_cases::write(store.as_ref(), &labelled, 2_000_000).await;
    }
    let (from, to) = hard_cases::days();
    let (from, to) = (from.to_rfc3339(), to.to_rfc3339());

    let native = manifest(&viewcount(&run_args(&from, &to, &[]), &native_url));

    let port = || infra::redis::free_port().unwrap().to_string();
    let scheduler_port = port();
    let scheduler_url = format!("df://127.0.0.1:{scheduler_port}");
    let mut scheduler = Node::start(
        &[
            "batch".into(),
            "scheduler".into(),
            "--bind".into(),
            format!("127.0.0.1:{scheduler_port}"),
        ],
        &cluster_url,
        dir.path().join("scheduler.log"),
    );
    wait_for(&mut scheduler, "listening on");

    // With no executor registered, a run fails after --ballista-wait
    // instead of queueing for ever.
    let out = viewcount(
        &run_args(
            &from,
            &to,
            &[
                "--engine",
                "ballista",
                "--ballista",
                &scheduler_url,
                "--ballista-wait",
                "2s",
            ],
        ),
        &cluster_url,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("ran no task within 2s")
            && text(&out.stderr).contains("viewcount batch executor --scheduler"),
        "{}",
        text(&out.stderr)
    );
    let mut executors: Vec<Node> = (0..2)
        .map(|i| {
            Node::start(
                &[
                    "batch".into(),
                    "executor".into(),
                    "--scheduler".into(),
                    scheduler_url.clone(),
                    "--flight-port".into(),
                    port(),
                    "--grpc-port".into(),
                    port(),
                    "--vcores".into(),
                    "2".into(),
                    "--work-dir".into(),
                    dir.path().join(format!("work-{i}")).display().to_string(),
                ],
                &cluster_url,
                dir.path().join(format!("executor-{i}.log")),
            )
        })
        .collect();
    for e in &mut executors {
        wait_for(e, "Connected to scheduler");
    }

    let cluster = manifest(&viewcount(
        &run_args(
            &from,
            &to,
            &["--engine", "ballista", "--ballista", &scheduler_url],
        ),
        &cluster_url,
    ));
    // Every rule caught views, on the cluster as natively.
    let parsed: store::manifest::Manifest =
        serde_json::from_value(cluster.clone()).expect("a run manifest");
    let store = store::layout::open(&cluster_url).unwrap();
    let filtered = store::filtered::load_filtered(store.as_ref(), &parsed)
        .await
        .unwrap();
    for rule in schemas::fraud::FraudRule::ALL {
        let caught: i64 = filtered
            .iter()
            .filter(|f| f.rule == rule)
            .map(|f| f.views)
            .sum();
        assert!(caught > 0, "on the cluster, {rule} caught nothing");
    }
    assert_eq!(cluster["engine"], "ballista");
    assert_eq!(native["engine"], "native");
    assert_eq!(
        cluster["run_id"], native["run_id"],
        "the engine is not part of the run id"
    );
    assert_eq!(cluster["inputs"], native["inputs"]);
    assert_eq!(
        cluster["outputs"], native["outputs"],
        "the views file's bytes differ between Ballista and the native engine"
    );
    assert_eq!(cluster["rows"], native["rows"], "row counts differ");
    let rows = &native["rows"];
    assert_eq!(rows["invalid"], a.invalid);
    assert!(rows["duplicates"].as_u64().unwrap() > 500, "{rows}");
    assert!(
        rows["conflicting_ids"].as_u64().unwrap() + 3 >= a.conflicting_ids,
        "{rows}"
    );
    // The file itself, as written by each run.
    let path = cluster["outputs"][0]["path"].as_str().unwrap();
    let read =
        |store: &str| std::fs::read(Path::new(&store["file://".len()..]).join(path)).unwrap();
    assert_eq!(read(&cluster_url), read(&native_url));

    // The job's stages ran on both executors.
    for (i, e) in executors.iter().enumerate() {
        assert!(
            e.log().contains("Finished task"),
            "executor {i} ran no task:\n{}",
            e.log()
        );
    }

    // A scheduler nobody listens on is a clear error, not a hang.
    let dead = format!("df://127.0.0.1:{}", port());
    let out = viewcount(
        &run_args(&from, &to, &["--engine", "ballista", "--ballista", &dead]),
        &cluster_url,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!("the run on the scheduler at {dead} failed"))
            && text(&out.stderr).contains("viewcount batch scheduler"),
        "{}",
        text(&out.stderr)
    );
    let out = viewcount(
        &run_args(&from, &to, &["--engine", "ballista"]),
        &cluster_url,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--ballista df://HOST:PORT"),
        "{}",
        text(&out.stderr)
    );

    // A wildcard bind names no machine for the others to reach.
    for args in [
        &["batch", "executor", "--bind-host", "0.0.0.0"][..],
        &["batch", "scheduler", "--bind", "0.0.0.0:0"][..],
    ] {
        let out = viewcount(args, &cluster_url);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            text(&out.stderr).contains("give --external-host"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}
