//! Batch-layer benchmark: `batch run` over a day of 10 M and of 100 M events
//! (wall time, rows/s, peak RSS, bytes spilled) with the default memory
//! limit and, side by side in the same invocation, DuckDB (Python package)
//! running the same dedup + daily cap + per video-hour aggregation over the
//! same Parquet files under the same memory limit. The smallest size also
//! runs ours under the largest size's memory per event, so that it spills
//! as the largest does: the scaling target compares an in-memory run with
//! a spilled one, and this splits that ratio into going out of core and
//! scaling within one mode. Both count with rules v1 (the daily cap
//! alone: DuckDB's query; rules v2's cost is `fraud-bench`'s to measure).
//!
//! `batch-bench --ballista` instead runs the first size on three engines:
//! the native engine, the SQL specification in this process, and the same
//! SQL on a Ballista scheduler with two executor processes (one core each)
//! on loopback; its section is `batch-ballista`.
//!
//! `batch-bench` prepares each archive once (kept in `--dir`/`<events>`),
//! then alternates the two engines `--reps` times per size. Each measurement
//! runs in a child process (this binary with `measure-batch`, or `python3`)
//! so peak RSS is its own. Run with `scripts/bench batch`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use clap::{Parser, Subcommand};
use loadgen::{GenConfig, Generator};
use schemas::ValidationContext;

use benches::{Archiver, machine, measured, median, peak_rss_mib, replace_section, spread};

#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Events of each archive (duplicates included), one day each.
    #[arg(long, value_delimiter = ',', default_value = "10000000,100000000")]
    events: Vec<u64>,
    /// Memory limit of both engines (default: `batch run`'s default).
    #[arg(long, value_parser = batch::memory::parse_size)]
    memory_limit: Option<u64>,
    /// Where the archive is kept between runs.
    #[arg(long, default_value = "/tmp/viewcount-batch-bench")]
    dir: PathBuf,
    /// Measurements per engine, alternated.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Replace the batch section of this Markdown file with the results.
    #[arg(long)]
    write: Option<PathBuf>,
    /// Compare the engines on the first size instead: native, SQL here,
    /// SQL on Ballista with two executors.
    #[arg(long)]
    ballista: bool,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// (internal) one batch run in this process; prints JSON.
    MeasureBatch {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        memory_limit: u64,
        #[arg(long)]
        from: DateTime<Utc>,
        #[arg(long)]
        to: DateTime<Utc>,
        #[arg(long, default_value = "native")]
        engine: String,
        #[arg(long)]
        ballista: Option<String>,
        /// Count with rules v1 (the daily cap alone): what DuckDB's query
        /// and the Ballista engine compute.
        #[arg(long)]
        rules_v1: bool,
    },
    /// (internal) a Ballista scheduler or executor over the store in `dir`.
    Node {
        #[arg(long)]
        dir: PathBuf,
        /// The scheduler's port.
        #[arg(long)]
        port: u16,
        /// Run an executor with these flight and gRPC ports, else the scheduler.
        #[arg(long, num_args = 2)]
        executor: Option<Vec<u16>>,
        #[arg(long)]
        memory_limit: u64,
    },
    /// (internal) reconcile's scan of the inputs of the run in `dir` (the
    /// copies dedup removed); prints JSON.
    MeasureReconcile {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        memory_limit: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.cmd {
        Some(Cmd::MeasureBatch {
            dir,
            memory_limit,
            from,
            to,
            engine,
            ballista,
            rules_v1,
        }) => {
            let engine = batch::run::Engine::parse(&engine)?;
            let rules = if rules_v1 {
                schemas::RuleSet {
                    impossible_watch_seconds: 0,
                    impossible_watch_devices: 0,
                    repeat_loop_views: 0,
                    zero_engagement_views: 0,
                    bot_farm_accounts: 0,
                    token_replay_views: 0,
                    metronome_views: 0,
                    ..schemas::RuleSet::default()
                }
            } else {
                schemas::RuleSet::default()
            };
            rt.block_on(measure_batch(
                &dir,
                memory_limit,
                from,
                to,
                engine,
                ballista,
                rules,
            ))
        }
        Some(Cmd::Node {
            dir,
            port,
            executor,
            memory_limit,
        }) => rt.block_on(node(&dir, port, executor, memory_limit)),
        Some(Cmd::MeasureReconcile { dir, memory_limit }) => {
            rt.block_on(measure_reconcile(&dir, memory_limit))
        }
        None => rt.block_on(run(args)),
    }
}

async fn measure_batch(
    dir: &Path,
    limit: u64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    engine: batch::run::Engine,
    ballista: Option<String>,
    rules: schemas::RuleSet,
) -> anyhow::Result<()> {
    let store = store::open(&format!("file://{}", dir.display()))?;
    let compute: Option<Arc<dyn batch::run::Compute>> = match (engine, ballista) {
        (batch::run::Engine::Native, None) => None,
        (batch::run::Engine::Sql, None) => Some(Arc::new(batch_sql::Sql)),
        (batch::run::Engine::Ballista, Some(url)) => Some(Arc::new(batch_cluster::Ballista::new(
            &url,
            std::time::Duration::from_secs(120),
        )?)),
        (engine, url) => bail!(
            "engine {} with scheduler {url:?}: the ballista engine (only) takes --ballista",
            engine.as_str()
        ),
    };
    let opts = batch::run::RunOptions {
        allow_incomplete: true,
        compute,
        rules,
        memory: bench_memory(dir, limit)?,
        ..batch::run::RunOptions::new(from, to)
    };
    let t = Instant::now();
    let report = batch::run::run(store, &opts, &|_, _, _| {}).await?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"seconds": secs, "rss_mib": peak_rss_mib(),
            "rows": report.manifest.rows.input, "output": report.manifest.rows.output,
            "views": report.manifest.rows.views, "steps": report.manifest.steps,
            "sha256": report.manifest.outputs.first().map(|o| o.sha256.clone()),
            "spilled": report.manifest.steps.iter().filter_map(|s| s.spilled_bytes).sum::<u64>()})
    );
    Ok(())
}

/// A cluster process for `--ballista`: runs until killed.
async fn node(dir: &Path, port: u16, executor: Option<Vec<u16>>, limit: u64) -> anyhow::Result<()> {
    let store = store::open(&format!("file://{}", dir.display()))?;
    match executor.as_deref() {
        Some(&[flight_port, grpc_port]) => {
            batch_cluster::run_executor(
                batch_cluster::ExecutorOptions {
                    scheduler: ("127.0.0.1".into(), port),
                    bind_host: "127.0.0.1".into(),
                    external_host: "127.0.0.1".into(),
                    flight_port,
                    grpc_port,
                    vcores: 1,
                    work_dir: dir.join(format!("executor-{flight_port}")),
                    memory_limit: Some(limit),
                },
                store,
            )
            .await?
        }
        Some(_) => bail!("--executor takes the flight and the gRPC port"),
        None => {
            batch_cluster::run_scheduler(
                batch_cluster::SchedulerOptions {
                    bind: ([127, 0, 0, 1], port).into(),
                    external_host: "127.0.0.1".into(),
                },
                store,
            )
            .await?
        }
    }
    Ok(())
}

async fn measure_reconcile(dir: &Path, limit: u64) -> anyhow::Result<()> {
    let store = store::open(&format!("file://{}", dir.display()))?;
    let run = std::fs::read_dir(dir.join("runs"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .context("no run to reconcile")?;
    let manifest: store::Manifest = serde_json::from_slice(&std::fs::read(run)?)?;
    let memory = bench_memory(dir, limit)?;
    let t = Instant::now();
    let removed = batch::run::removed_copies(
        store,
        &manifest.inputs,
        &manifest.rules,
        chrono::Duration::hours(48),
        &memory,
    )
    .await?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"seconds": secs, "rss_mib": peak_rss_mib(), "video_hours": removed.len()})
    );
    Ok(())
}

const DUCKDB: &str = r#"
import json, resource, sys, time, duckdb
root, limit = sys.argv[1], int(sys.argv[2])
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
con.execute(f"SET memory_limit = '{limit // (1 << 20)}MiB'")
con.execute(f"SET temp_directory = '{root}/duckdb-spill'")
t = time.time()
rows, out, views = con.execute(f"""
WITH raw AS (SELECT * FROM read_parquet('{root}/raw/*/*/*.parquet')),
ranked AS (SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY received_at, kafka_partition, kafka_offset) AS occ FROM raw),
firsts AS (SELECT video_id, user_id, occurred_at, watch_seconds, event_id,
                  (revenue_eligible AND watch_seconds >= 30) AS billable FROM ranked WHERE occ = 1),
capped AS (SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id, video_id, date_trunc('day', occurred_at), billable
                                        ORDER BY occurred_at, event_id) AS brn FROM firsts),
agg AS (SELECT video_id, date_trunc('hour', occurred_at) AS hour, COUNT(*) AS views,
               SUM(CASE WHEN billable AND brn <= 10 THEN 1 ELSE 0 END) AS billable_views,
               SUM(CASE WHEN billable AND brn > 10 THEN 1 ELSE 0 END) AS fraud_filtered,
               SUM(watch_seconds) AS watch_seconds, approx_count_distinct(user_id) AS viewers
        FROM capped GROUP BY 1, 2 ORDER BY 1, 2)
SELECT (SELECT COUNT(*) FROM raw), COUNT(*), SUM(views) FROM agg""").fetchone()
secs = time.time() - t
print(json.dumps({"seconds": secs, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rows": rows, "output": out, "views": int(views)}))
"#;

/// Writes the archive: events by (hour, partition) into Parquet files.
async fn prepare(dir: &Path, n: u64) -> anyhow::Result<(DateTime<Utc>, DateTime<Utc>)> {
    let marker = dir.join(format!("prepared-{n}.json"));
    if let Ok(s) = std::fs::read_to_string(&marker) {
        let v: serde_json::Value = serde_json::from_str(&s)?;
        let from = v["from"].as_str().context("marker")?.parse()?;
        let to = v["to"].as_str().context("marker")?.parse()?;
        eprintln!("archive already prepared in {}", dir.display());
        return Ok((from, to));
    }
    let _ = std::fs::remove_dir_all(dir);
    let store = store::open(&format!("file://{}", dir.display()))?;
    let now = Utc::now();
    let span = chrono::Duration::hours(24);
    let g = Generator::new(GenConfig {
        events: n,
        seed: 9,
        videos: 20_000,
        users: 500_000,
        invalid_ratio: 0.0,
        duplicate_ratio: 0.10,
        late_ratio: 0.05,
        start: (now - span).duration_trunc(TimeDelta::hours(1))?,
        span: chrono::Duration::hours(23),
        now,
        ..GenConfig::default()
    })?;
    let ctx = ValidationContext::at(now);
    let mut archive = Archiver::new(store, now);
    for e in g {
        if let Ok(ev) = schemas::parse_event(&e.value, &ctx) {
            archive.push(ev).await?;
        }
    }
    let (from, to) = archive.finish().await?;
    let files = archive.files;
    std::fs::write(
        &marker,
        serde_json::json!({"from": from, "to": to, "files": files}).to_string(),
    )?;
    Ok((from, to))
}

/// Removes a run's outputs, so each batch run starts from the bare archive.
fn clean(dir: &Path) {
    for sub in [
        "views",
        "runs",
        "published",
        "CURRENT",
        "spill",
        "duckdb-spill",
    ] {
        let p = dir.join(sub);
        let _ = std::fs::remove_dir_all(&p);
        let _ = std::fs::remove_file(&p);
    }
}

/// A child process killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Child {
    /// The process's peak RSS so far (VmHWM), MiB.
    fn peak_rss_mib(&self) -> f64 {
        telemetry::process::peak_rss_of(self.0.id()).map_or(0.0, |b| b as f64 / 1048576.0)
    }
}

/// Waits until something listens on `port` (the process started) or fails.
fn wait_listening(port: u16, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.0.try_wait()? {
            bail!("the {what} exited ({status})");
        }
        if Instant::now() > deadline {
            bail!("the {what} is not listening on {port} after 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
}

/// `--ballista`: the native engine, the SQL specification in one process,
/// and the same SQL on a scheduler with two executors (one core and half
/// the memory limit each), `reps` times alternated. The section's text.
async fn engines(
    args: &Args,
    dir: &Path,
    events: u64,
    limit: u64,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    let free = || infra::redis::free_port().context("no free port on loopback");
    let port = free()?;
    let node = |extra: &[String], limit: u64| -> anyhow::Result<Child> {
        Ok(Child(
            Command::new(&exe)
                .args(["node", "--dir"])
                .arg(dir)
                .args(["--port", &port.to_string()])
                .args(["--memory-limit", &limit.to_string()])
                .args(extra)
                .stdout(std::process::Stdio::null())
                .spawn()?,
        ))
    };
    let mut scheduler = node(&[], limit)?;
    wait_listening(port, &mut scheduler, "scheduler")?;
    let mut executors = Vec::new();
    for _ in 0..2 {
        let (flight, grpc) = (free()?, free()?);
        let mut e = node(
            &["--executor".into(), flight.to_string(), grpc.to_string()],
            limit / 2,
        )?;
        // The flight service starts once the executor has registered.
        wait_listening(flight, &mut e, "executor")?;
        executors.push(e);
    }
    let url = format!("df://127.0.0.1:{port}");
    let kinds: [(&str, &str, Option<&str>); 3] = [
        ("native engine", "native", None),
        ("SQL specification, one process", "sql", None),
        (
            "SQL on Ballista, 2 executors × 1 core",
            "ballista",
            Some(&url),
        ),
    ];
    let mut results: Vec<Vec<serde_json::Value>> = vec![Vec::new(); kinds.len()];
    for rep in 1..=args.reps {
        for (k, (name, engine, ballista)) in kinds.iter().enumerate() {
            clean(dir);
            let mut cmd = Command::new(&exe);
            cmd.args(["measure-batch", "--dir"])
                .arg(dir)
                .args(["--memory-limit", &limit.to_string()])
                .args(["--from", &from.to_rfc3339(), "--to", &to.to_rfc3339()])
                .args(["--engine", engine, "--rules-v1"]);
            if let Some(url) = ballista {
                cmd.args(["--ballista", url]);
            }
            let mut v = measured(&mut cmd, name)?;
            if ballista.is_some() {
                // The work's memory is the executors' (their peak so far).
                let rss: f64 = executors.iter().map(Child::peak_rss_mib).sum();
                v["executors_rss_mib"] = rss.into();
            }
            eprintln!("rep {rep}: {name} {v}");
            results[k].push(v);
        }
    }
    drop(executors);
    drop(scheduler);
    for (k, (name, _, _)) in kinds.iter().enumerate().skip(1) {
        if results[k][0]["sha256"] != results[0][0]["sha256"] {
            bail!(
                "{name} wrote other bytes than the native engine: {} vs {}",
                results[k][0],
                results[0][0]
            );
        }
    }
    let f = |v: &[serde_json::Value], k: &str| -> Vec<f64> {
        v.iter().map(|x| x[k].as_f64().unwrap_or(0.0)).collect()
    };
    let rows = results[0][0]["rows"].as_f64().unwrap_or(0.0);
    let native = median(&f(&results[0], "seconds"));
    let mut table = String::new();
    for (k, (name, _, ballista)) in kinds.iter().enumerate() {
        let s = f(&results[k], "seconds");
        let (lo, hi) = spread(&s);
        let rss = if ballista.is_some() {
            format!(
                "{:.0} client + {:.0} executors",
                median(&f(&results[k], "rss_mib")),
                f(&results[k], "executors_rss_mib")
                    .into_iter()
                    .fold(0.0, f64::max)
            )
        } else {
            format!("{:.0}", median(&f(&results[k], "rss_mib")))
        };
        table += &format!(
            "| {name} | {:.1} | {lo:.1} | {hi:.1} | {:.0} | {:.2}× | {rss} |\n",
            median(&s),
            rows / median(&s),
            median(&s) / native,
        );
    }
    Ok(format!(
        "{rows} raw rows of the {events}-event day of the batch benchmark (same files); {} reps, alternated, each run in its own process; the scheduler and both executors stay up between runs. All three wrote the same bytes (sha256 of the views file checked). Executors' memory limit: {} each.\n\n| engine | median s | min s | max s | rows/s | × native | peak RSS MiB |\n|---|---|---|---|---|---|---|\n{table}",
        args.reps,
        batch::memory::human(limit / 2),
    ))
}

/// A measurement's memory: `limit`, spilling under `dir`/spill.
fn bench_memory(dir: &Path, limit: u64) -> anyhow::Result<batch::memory::Memory> {
    std::fs::create_dir_all(dir.join("spill"))?;
    Ok(batch::memory::Memory {
        limit,
        spill_dir: Some(dir.join("spill")),
    })
}

/// The `steps` of the run with the median time, as `name s, ...`.
fn median_steps(runs: &[serde_json::Value]) -> String {
    let mut by_time: Vec<&serde_json::Value> = runs.iter().collect();
    by_time.sort_by(|a, b| {
        a["seconds"]
            .as_f64()
            .partial_cmp(&b["seconds"].as_f64())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let Some(mid) = by_time.get(by_time.len() / 2) else {
        return String::new();
    };
    mid["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .filter_map(|s| {
                    let mut text =
                        format!("{} {:.2} s", s["name"].as_str()?, s["seconds"].as_f64()?);
                    if let Some(rss) = s["peak_rss_bytes"].as_f64() {
                        text += &format!(
                            " (peak RSS {:.0} MiB, spilled {:.0} MiB)",
                            rss / 1048576.0,
                            s["spilled_bytes"].as_f64().unwrap_or(0.0) / 1048576.0
                        );
                    }
                    Some(text)
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

async fn run(args: Args) -> anyhow::Result<()> {
    let limit = args
        .memory_limit
        .unwrap_or_else(batch::memory::default_limit);
    // Every archive first, then every measurement: preparing is slow and
    // need not run on a quiet machine, measuring must.
    let mut prepared = Vec::new();
    let sizes = if args.ballista {
        &args.events[..1]
    } else {
        &args.events[..]
    };
    for &n in sizes {
        let dir = args.dir.join(n.to_string());
        let range = prepare(&dir, n).await?;
        prepared.push((n, dir, range));
    }
    if args.ballista {
        let (n, dir, range) = prepared.first().context("no --events")?;
        let body = engines(&args, dir, *n, limit, *range).await?;
        println!("{body}");
        if let Some(path) = &args.write {
            let section = format!(
                "<!-- batch-ballista:begin -->\n## Batch on Ballista\n\nRun: `scripts/bench batch --ballista` (release build) on {}, {}.\n\n{body}<!-- batch-ballista:end -->\n",
                machine(),
                Utc::now().format("%Y-%m-%d")
            );
            replace_section(path, "batch-ballista", &section)?;
            eprintln!("wrote {}", path.display());
        }
        return Ok(());
    }
    let mut sections = Vec::new();
    let mut seconds_at = Vec::new();
    // The smallest size also runs with the largest's memory per event, so
    // it spills as the largest does: scaling within one mode, beside the
    // in-memory run (the time of going out of core).
    let largest = prepared.iter().map(|(n, ..)| *n).max().unwrap_or(0);
    let mut spilled_small = None;
    for (i, (n, dir, range)) in prepared.iter().enumerate() {
        let same_share =
            (i == 0 && largest > *n).then(|| (limit as f64 * *n as f64 / largest as f64) as u64);
        let (section, seconds, spilled) = size(&args, dir, *n, limit, same_share, *range).await?;
        sections.push(section);
        seconds_at.push((*n, seconds));
        spilled_small = spilled_small.or(spilled);
    }
    let scaling = match (seconds_at.first(), seconds_at.last()) {
        (Some(&(n0, t0)), Some(&(n1, t1))) if n1 > n0 => {
            let factor = n1 as f64 / n0 as f64;
            let ratio = t1 / t0;
            let mut text = format!(
                "\nScaling: {n1} events took {ratio:.1}× the time of {n0} ({factor:.0}× the events); target ≤ {:.0}× — {}.\n",
                factor * 1.1,
                if ratio <= factor * 1.1 {
                    "met"
                } else {
                    "NOT met"
                }
            );
            if let Some(s0) = spilled_small {
                text += &format!(
                    "\nThe same split into going out of core and scaling: {n0} events under {factor:.0}× less memory (spilling as {n1} do) took {:.2}× their in-memory time; {n1} events took {:.1}× that spilled time.\n",
                    s0 / t0,
                    t1 / s0
                );
            }
            text
        }
        _ => String::new(),
    };
    let body = format!(
        "Memory limit of both engines: {} (`batch run`'s default on this machine: a quarter of its memory); our spill files and DuckDB's temp directory on the same local disk.\n\n{}{scaling}",
        batch::memory::human(limit),
        sections.join("\n")
    );
    println!("{body}");
    if let Some(path) = &args.write {
        let section = format!(
            "<!-- batch:begin -->\n## Batch layer\n\nRun: `scripts/bench batch` (release build) on {}, {}.\n\n{body}<!-- batch:end -->\n",
            machine(),
            Utc::now().format("%Y-%m-%d")
        );
        replace_section(path, "batch", &section)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// One archive size: `reps` alternated runs of each engine, and of ours
/// under `small_limit` too if given. Returns the section's text, our median
/// seconds, and under `small_limit`.
async fn size(
    args: &Args,
    dir: &Path,
    events: u64,
    limit: u64,
    small_limit: Option<u64>,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> anyhow::Result<(String, f64, Option<f64>)> {
    let exe = std::env::current_exe()?;
    let ours_under = |limit: u64| {
        // Each batch run starts from an archive without earlier outputs.
        clean(dir);
        measured(
            Command::new(&exe)
                .args(["measure-batch", "--dir"])
                .arg(dir)
                .args(["--memory-limit", &limit.to_string()])
                .args(["--from", &from.to_rfc3339(), "--to", &to.to_rfc3339()])
                .arg("--rules-v1"),
            "batch run",
        )
    };
    let mut ours: Vec<serde_json::Value> = Vec::new();
    let mut small: Vec<serde_json::Value> = Vec::new();
    let mut duck: Vec<serde_json::Value> = Vec::new();
    let mut recon: Vec<serde_json::Value> = Vec::new();
    for rep in 1..=args.reps {
        let v = ours_under(limit)?;
        eprintln!("rep {rep}: viewcount batch {v}");
        ours.push(v);
        if let Some(small_limit) = small_limit {
            let v = ours_under(small_limit)?;
            eprintln!("rep {rep}: viewcount batch, smaller limit {v}");
            if v["sha256"] != ours[0]["sha256"] {
                bail!(
                    "a spilled run wrote other bytes than an in-memory run: {v} vs {}",
                    ours[0]
                );
            }
            small.push(v);
        }
        let v = measured(
            Command::new(&exe)
                .args(["measure-reconcile", "--dir"])
                .arg(dir)
                .args(["--memory-limit", &limit.to_string()]),
            "reconcile scan",
        )?;
        eprintln!("rep {rep}: reconcile scan {v}");
        recon.push(v);
        let v = measured(
            Command::new("python3")
                .arg("-c")
                .arg(DUCKDB)
                .arg(dir)
                .arg(limit.to_string()),
            "duckdb (pip install duckdb)",
        )?;
        eprintln!("rep {rep}: duckdb {v}");
        duck.push(v);
    }
    if ours[0]["views"] != duck[0]["views"] || ours[0]["output"] != duck[0]["output"] {
        bail!(
            "the engines disagree: ours {} vs duckdb {}",
            ours[0],
            duck[0]
        );
    }
    let f = |v: &[serde_json::Value], k: &str| -> Vec<f64> {
        v.iter().map(|x| x[k].as_f64().unwrap_or(0.0)).collect()
    };
    let rows = ours[0]["rows"].as_f64().unwrap_or(0.0);
    let row = |name: &str, v: &[serde_json::Value], spill: Option<f64>| {
        let s = f(v, "seconds");
        let (lo, hi) = spread(&s);
        let rss = f(v, "rss_mib");
        format!(
            "| {name} | {:.1} | {lo:.1} | {hi:.1} | {:.0} | {:.0} | {} |\n",
            median(&s),
            rows / median(&s),
            median(&rss),
            spill.map_or("(not reported)".to_owned(), |b| format!(
                "{:.0}",
                b / 1048576.0
            ))
        )
    };
    let ours_s = median(&f(&ours, "seconds"));
    let ratio = ours_s / median(&f(&duck, "seconds"));
    let rss_gib = median(&f(&ours, "rss_mib")) / 1024.0;
    let body = format!(
        "### {events} events\n\n{} raw rows ({events} events generated: 10 % exact re-sends, 5 % late; 20 000 videos, 500 000 users) in Parquet files by hour and partition; {} reps, alternated, each in its own process. Both engines dedup by event_id (earliest received), apply the fraud cap per user/video/day and aggregate per video-hour with a distinct-viewer estimate; ours also re-validates every row (all 16 columns, where DuckDB reads the 9 it needs), checksums every input and output, builds byte-stable HyperLogLog sketches, and writes Parquet + manifest + published state. Both produced {} video-hours and {} views.\n\n| engine | median s | min s | max s | rows/s | peak RSS MiB | spilled MiB |\n|---|---|---|---|---|---|---|\n{}{}{}{}\nTime: {ratio:.2}× DuckDB's (target ≤ 1.0×) — {}. Peak RSS {rss_gib:.1} GiB (target ≤ 6 GB) — {}. Reconcile's scan took {:.2}× the batch run's time (target: about 1×).\n\nSteps of our median run (from its manifest): {}.\n",
        rows,
        args.reps,
        ours[0]["output"],
        ours[0]["views"],
        row(
            "viewcount batch run (native engine)",
            &ours,
            Some(median(&f(&ours, "spilled")))
        ),
        small_limit.map_or(String::new(), |l| row(
            &format!(
                "the same run under {} (spills as the largest size does)",
                batch::memory::human(l)
            ),
            &small,
            Some(median(&f(&small, "spilled")))
        )),
        row("DuckDB (same SQL semantics)", &duck, None),
        row(
            "reconcile's scan of the run's inputs (same read and dedup)",
            &recon,
            None
        ),
        if ratio <= 1.0 { "met" } else { "NOT met" },
        if rss_gib * 1.073_741_824 <= 6.0 {
            "met"
        } else {
            "NOT met"
        },
        median(&f(&recon, "seconds")) / ours_s,
        median_steps(&ours)
    );
    let small_s = (!small.is_empty()).then(|| median(&f(&small, "seconds")));
    Ok((body, ours_s, small_s))
}
