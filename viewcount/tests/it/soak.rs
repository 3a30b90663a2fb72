//! The production topology under a nemesis: `ingest`, `speed`, `archive`,
//! `batch schedule` and `serve` as separate `viewcount` processes on
//! loopback, a Kafka-protocol broker in a process of their own (this test's:
//! librdkafka's mock cluster), a real `redis-server` with its AOF and a local
//! store. Generated traffic (re-sends, late and invalid events) flows while
//! every few seconds a random service (or Redis) is killed with SIGKILL and
//! restarted, or frozen with SIGSTOP and thawed. After a settle: speed equals
//! the truth, batch equals the truth, a statement equals the truth × the
//! rates, `ledger verify --deep` passes. Nothing acknowledged is lost,
//! nothing is counted twice.
//!
//! `VIEWCOUNT_SOAK_SECONDS` sets how long the faults go on (default 180:
//! the short run `scripts/test` does; `scripts/soak --minutes N` runs it
//! longer), `VIEWCOUNT_SOAK_REPORT` a file for the report.
//! `VIEWCOUNT_SOAK_TANSU` names a `tansu` binary (`scripts/soak --broker
//! tansu` installs one from crates.io): the broker is then that process, an
//! Apache-Kafka-compatible broker that is not librdkafka's, on its SQLite
//! storage, and the nemesis kills (-9) and freezes it too
//! (`VIEWCOUNT_SOAK_BROKER_FAULTS=stop`: freezes only).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use infra::kafka::EmbeddedKafka;
use infra::redis::{RedisOptions, RedisServer};
use loadgen::{GenConfig, Generator, SendConfig, Truth};
use schemas::RuleSet;

use crate::{http, run, text};

const TOPIC: &str = "view-events";
const PARTITIONS: i32 = 4;
const RATE: f64 = 150.0;
const CPM: &str = "2.50";

/// How a process shows it is ready.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// A `viewcount` service: `/readyz` on `--listen 127.0.0.1:port`.
    Readyz,
    /// The broker: the topic's high watermarks answer on `127.0.0.1:port`.
    Kafka,
}

/// One process of the topology: how to start it, and the process if running.
struct Service {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    probe: Probe,
    /// Where `/readyz` (or the broker) is.
    port: u16,
    /// Its working directory (the broker's holds its database).
    cwd: Option<PathBuf>,
    log: PathBuf,
    /// The broker's log, for a service that talks to it: a broker that
    /// panicked inside (and so answers nothing) explains a service that
    /// never gets ready, and the soak says so instead of timing out.
    broker_log: Option<PathBuf>,
    child: Option<Child>,
    frozen: bool,
}

impl Service {
    fn start(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        if self.probe == Probe::Readyz {
            cmd.args(["--listen", &format!("127.0.0.1:{}", self.port)]);
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        let child = cmd
            .env("NO_COLOR", "1")
            .env("VIEWCOUNT_LOG_FORMAT", "json")
            .env_remove("VIEWCOUNT_STORE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{} ({}) starts: {e}", self.name, self.program.display()));
        self.child = Some(child);
        self.frozen = false;
    }

    fn signal(&self, signal: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &c.id().to_string()])
                .status();
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn ready(&self) -> bool {
        let at = format!("127.0.0.1:{}", self.port);
        match self.probe {
            Probe::Readyz => http(&at, "GET", "/readyz", &[], "").is_some_and(|a| a.status == 200),
            Probe::Kafka => {
                infra::kafka::high_watermarks(&at, TOPIC, PARTITIONS, Duration::from_secs(3))
                    .is_ok()
            }
        }
    }

    /// Waits until `/readyz` answers 200: how long that took.
    fn wait_ready(&mut self) -> Duration {
        let t = Instant::now();
        while !self.ready() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("{} exited with {status}:\n{}", self.name, tail(&self.log));
            }
            let watched = self
                .broker_log
                .iter()
                .chain((self.probe == Probe::Kafka).then_some(&self.log));
            for log in watched {
                if let Some(panic) = panicked(log) {
                    panic!(
                        "{} not ready: the broker panicked inside ({panic}), a defect of the broker, not of viewcount; it answers nothing since:\n{}",
                        self.name,
                        tail(log)
                    );
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(180),
                "{} not ready after 180 s:\n{}",
                self.name,
                tail(&self.log)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        t.elapsed()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.frozen {
            self.signal("CONT");
        }
        self.kill9();
    }
}

/// The soak's directory (store, logs, Redis AOF, the broker's database):
/// removed after a pass, kept and named after a failure, since its logs are
/// what explains the failure.
struct SoakDir(Option<tempfile::TempDir>);

impl SoakDir {
    fn path(&self) -> &Path {
        self.0.as_ref().expect("the soak directory").path()
    }
}

impl Drop for SoakDir {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take().filter(|_| std::thread::panicking()) {
            eprintln!(
                "soak failed: its logs and store are kept in {}",
                dir.keep().display()
            );
        }
    }
}

/// Runs `viewcount ARGS`, which must succeed: its stdout.
fn cli(args: &[&str]) -> String {
    let out = run(args, &[]);
    assert!(
        out.status.success(),
        "viewcount {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The first panic a process wrote to its log, if any; for tansu also its
/// storage task having stopped (every request then fails `UnableToSend`,
/// sometimes with no panic printed before).
fn panicked(log: &Path) -> Option<String> {
    let t = text(&std::fs::read(log).unwrap_or_default());
    let mut lines = t.lines();
    if lines.position(|l| l.contains("panicked at")).is_some() {
        return Some(lines.next().unwrap_or("").trim().to_owned());
    }
    t.lines()
        .find(|l| l.contains("err=Storage(UnableToSend)"))
        .map(|_| "its storage task stopped: every request fails UnableToSend".to_owned())
}

fn tail(p: &Path) -> String {
    let t = text(&std::fs::read(p).unwrap_or_default());
    let lines: Vec<&str> = t.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn free_port() -> u16 {
    infra::redis::free_port().unwrap()
}

/// A small deterministic generator of choices (splitmix64).
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

/// Traffic at [`RATE`] events a second until `stop`, every request retried
/// until ingest acknowledges it (so the truth is exactly what was
/// acknowledged, whatever is killed meanwhile).
fn traffic(
    url: String,
    signer: Arc<playback::PlaybackSigner>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Truth> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut truth = Truth::new(RuleSet::default());
            let mut cfg = SendConfig::new(url);
            cfg.rate = Some(RATE);
            cfg.batch_size = 25;
            cfg.concurrency = 2;
            cfg.max_attempts = u32::MAX;
            let span = Duration::from_secs(2);
            for seed in 50_000u64.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let started = tokio::time::Instant::now();
                let now = Utc::now();
                let s = chrono::Duration::from_std(span).unwrap();
                let g = Generator::new(GenConfig {
                    events: (RATE * span.as_secs_f64()) as u64,
                    seed,
                    start: now - s,
                    span: s,
                    now,
                    signer: Some(signer.clone()),
                    ..GenConfig::default()
                })
                .unwrap();
                loadgen::send(g, &cfg, &mut truth, |_| {})
                    .await
                    .expect("every request is acknowledged in the end");
                tokio::time::sleep_until(started + span).await;
            }
            truth
        })
    })
}

#[test]
fn under_kills_and_freezes_nothing_acknowledged_is_lost_or_counted_twice() {
    let seconds: u64 = std::env::var("VIEWCOUNT_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    let dir = SoakDir(Some(tempfile::tempdir().unwrap()));
    let root = dir.path().join("store");
    let store = format!("file://{}", root.display());
    // The broker: librdkafka's mock cluster in this process, or tansu as a
    // process of its own that the nemesis also kills and freezes.
    let mut embedded = None;
    let mut broker = None;
    let bootstrap = match std::env::var_os("VIEWCOUNT_SOAK_TANSU") {
        None => {
            let kafka = EmbeddedKafka::start(1).unwrap();
            kafka.create_topic(TOPIC, PARTITIONS).unwrap();
            kafka.create_topic(&format!("{TOPIC}-dlq"), 1).unwrap();
            let bootstrap = kafka.bootstrap_servers().to_owned();
            embedded = Some(kafka);
            bootstrap
        }
        Some(tansu) => {
            let b = start_tansu(PathBuf::from(tansu), dir.path());
            let bootstrap = format!("127.0.0.1:{}", b.port);
            broker = Some(b);
            bootstrap
        }
    };
    // VIEWCOUNT_SOAK_BROKER_FAULTS=stop: the broker is only frozen, never
    // killed (tansu 0.6's SQLite storage can panic on an idempotent
    // producer's batch after a kill -9 restart; BENCHMARKS.md).
    let broker_kills = match std::env::var("VIEWCOUNT_SOAK_BROKER_FAULTS").as_deref() {
        Err(_) | Ok("kill,stop" | "stop,kill") => true,
        Ok("stop") => false,
        Ok(other) => {
            panic!("VIEWCOUNT_SOAK_BROKER_FAULTS={other}: use kill,stop (default) or stop")
        }
    };
    let broker_kind = if embedded.is_some() {
        "librdkafka's mock cluster (in the test's process; no broker faults)"
    } else {
        if broker_kills {
            "tansu 0.6 (SQLite storage, its own process; killed and frozen too; ingest without the idempotent producer)"
        } else {
            "tansu 0.6 (SQLite storage, its own process; frozen too, never killed; ingest without the idempotent producer)"
        }
    };
    let redis_dir = dir.path().join("redis");
    std::fs::create_dir(&redis_dir).unwrap();
    let redis_opts = RedisOptions {
        appendonly: true,
        dir: Some(redis_dir),
        port: Some(free_port()),
        ..RedisOptions::default()
    };
    let mut redis = Some(RedisServer::start_with(redis_opts.clone()).unwrap());
    let redis_url = redis.as_ref().unwrap().url();

    // The catalog (every generated video has a creator), a rate card, a
    // ledger key and a tokens file.
    let videos = GenConfig::default().videos;
    let mut csv = String::from("video_id,creator_id,title\n");
    let attributed: std::collections::BTreeSet<String> =
        (0..videos).map(Generator::video_id).collect();
    for (rank, v) in attributed.iter().enumerate() {
        csv.push_str(&format!("{v},creator-{:03},Video {rank}\n", rank % 7));
    }
    let catalog = dir.path().join("catalog.csv");
    std::fs::write(&catalog, csv).unwrap();
    cli(&[
        "catalog",
        "import",
        catalog.to_str().unwrap(),
        "--store",
        &store,
    ]);
    let rates = dir.path().join("rates.toml");
    std::fs::write(
        &rates,
        format!("currency = \"EUR\"\ndefault_cpm = \"{CPM}\"\n"),
    )
    .unwrap();
    let key = dir.path().join("ledger.key");
    cli(&["ledger", "keygen", "--out", key.to_str().unwrap()]);
    let tokens = dir.path().join("tokens.toml");
    let tokens = tokens.to_str().unwrap();
    let created = cli(&[
        "token", "create", "--role", "admin", "--name", "soak", "--tokens", tokens,
    ]);
    let admin = created.lines().next().unwrap().trim().to_owned();
    // The player service's key: ingest requires signed events (the
    // default) and the traffic is signed with it.
    let playback_key = dir.path().join("playback.key");
    cli(&[
        "token",
        "playback-keygen",
        "--key-id",
        "soak",
        "--out",
        playback_key.to_str().unwrap(),
    ]);
    let signer = Arc::new(
        playback::PlaybackSigner::parse(&std::fs::read_to_string(&playback_key).unwrap()).unwrap(),
    );
    let playback_keys = format!("{}.pub", playback_key.display());

    let service = |name: &'static str, args: &[&str]| Service {
        name,
        program: PathBuf::from(env!("CARGO_BIN_EXE_viewcount")),
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        probe: Probe::Readyz,
        port: free_port(),
        cwd: None,
        log: dir.path().join(format!("{name}.log")),
        broker_log: broker
            .as_ref()
            .filter(|_| ["ingest", "speed", "archive"].contains(&name))
            .map(|b| b.log.clone()),
        child: None,
        frozen: false,
    };
    let mut services = vec![
        // On tansu, without the idempotent producer: tansu 0.6 panics when
        // one bumps its epoch after a timeout (BENCHMARKS.md), and the
        // copies the producer's retries then write are removed by the
        // event_id dedup, which this soak checks.
        service(
            "ingest",
            &[
                "ingest",
                "--kafka",
                &bootstrap,
                "--kafka-idempotence",
                if broker.is_some() { "false" } else { "true" },
                "--playback-keys",
                &playback_keys,
            ],
        ),
        service(
            "speed",
            &["speed", "--kafka", &bootstrap, "--redis-url", &redis_url],
        ),
        service(
            "archive",
            &[
                "archive",
                "--kafka",
                &bootstrap,
                "--store",
                &store,
                "--flush-interval",
                "1s",
            ],
        ),
        service(
            "batch",
            &["batch", "schedule", "--store", &store, "--every", "5s"],
        ),
        service(
            "serve",
            &[
                "serve",
                "--store",
                &store,
                "--redis-url",
                &redis_url,
                "--tokens",
                tokens,
                "--rate-limit",
                "0",
            ],
        ),
    ];
    for s in &mut services {
        s.start();
    }
    for s in &mut services {
        s.wait_ready();
    }
    let ingest_url = format!("http://127.0.0.1:{}/v1/events", services[0].port);
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(ingest_url, signer, stop.clone());

    // The nemesis: a fault every 2 to 5 s.
    let mut dice = Dice(0x005e_ed0f_fa17 ^ seconds);
    let mut faults: BTreeMap<String, (u32, Duration)> = BTreeMap::new();
    let mut note = |kind: String, recovery: Duration| {
        let f = faults.entry(kind).or_default();
        f.0 += 1;
        f.1 = f.1.max(recovery);
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(2_000 + 1_000 * dice.below(4)));
        // A broker that failed inside fails the soak at once, named as the
        // broker's defect (it would otherwise stall whatever waits on it).
        if let Some(b) = &broker
            && let Some(why) = panicked(&b.log)
        {
            panic!(
                "after {} s of faults the broker failed inside ({why}), a defect of the broker, not of viewcount:\n{}",
                started.elapsed().as_secs(),
                tail(&b.log)
            );
        }
        let targets = services.len() + 1 + usize::from(broker.is_some());
        let which = dice.below(targets as u64) as usize;
        let pause = Duration::from_millis(300 + 300 * dice.below(6));
        if let Some(b) = broker.as_mut().filter(|_| which == services.len() + 1) {
            // The broker: killed and restarted on its database, or frozen.
            // Recovered when it answers again and every service that talks
            // to it is ready.
            let kind = if !broker_kills || dice.below(3) == 0 {
                b.signal("STOP");
                b.frozen = true;
                std::thread::sleep(pause);
                b.signal("CONT");
                b.frozen = false;
                "broker SIGSTOP"
            } else {
                b.kill9();
                std::thread::sleep(pause);
                b.start();
                "broker kill -9"
            };
            let mut recovery = b.wait_ready();
            for s in &mut services[..3] {
                recovery += s.wait_ready();
            }
            note(kind.into(), recovery);
            continue;
        }
        if which == services.len() {
            // Redis: killed and restarted on its AOF.
            redis.take().unwrap().kill();
            std::thread::sleep(pause);
            let t = Instant::now();
            redis = Some(RedisServer::start_with(redis_opts.clone()).unwrap());
            let recovery = t.elapsed() + services[1].wait_ready();
            note("redis kill -9".into(), recovery);
            continue;
        }
        let s = &mut services[which];
        if dice.below(3) == 0 {
            s.signal("STOP");
            s.frozen = true;
            std::thread::sleep(pause);
            s.signal("CONT");
            s.frozen = false;
            let recovery = s.wait_ready();
            note(format!("{} SIGSTOP", s.name), recovery);
        } else {
            s.kill9();
            std::thread::sleep(pause);
            s.start();
            let recovery = s.wait_ready();
            note(format!("{} kill -9", s.name), recovery);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let truth = load.join().expect("the traffic thread");
    let total_faults: u32 = faults.values().map(|f| f.0).sum();

    // Settle: the archive and the speed layer hold every record Kafka has.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let ends =
        infra::kafka::high_watermarks(&bootstrap, TOPIC, PARTITIONS, Duration::from_secs(10))
            .unwrap();
    let records: i64 = ends.iter().sum();
    let object_store = store::open(&store).unwrap();
    let keys = counters::keys::KeySpace::new(
        speed::defaults::KEY_PREFIX,
        speed::defaults::DEDUP_BUCKET_BITS,
    );
    let settle = Instant::now();
    rt.block_on(async {
        let mut conn = counters::conn::connect_reader(&redis_url).await.unwrap();
        loop {
            let (_, progress) = store::progress::load(object_store.as_ref()).await.unwrap();
            let applied = counters::read::stored_offsets(&mut conn, &keys, PARTITIONS)
                .await
                .unwrap();
            let behind = (0..PARTITIONS).any(|p| {
                let end = ends[p as usize];
                let archived = progress
                    .iter()
                    .find(|x| x.partition == p)
                    .map_or(0, |x| x.next_offset);
                archived < end || applied[p as usize].unwrap_or(0) < end
            });
            if !behind {
                break;
            }
            assert!(
                settle.elapsed() < Duration::from_secs(180),
                "not settled after 180 s: {progress:?} {applied:?} vs {ends:?}\nspeed:\n{}\narchive:\n{}",
                tail(&services[1].log),
                tail(&services[2].log)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let settled_in = settle.elapsed();

    // Serving answers the truth (batch up to its watermark, speed after).
    let mut per_video: BTreeMap<String, u64> = BTreeMap::new();
    for r in truth.rows() {
        *per_video.entry(r.video_id).or_default() += r.views;
    }
    let serve = format!("127.0.0.1:{}", services[4].port);
    let auth = format!("Authorization: Bearer {admin}");
    let deadline = Instant::now() + Duration::from_secs(60);
    for (video, want) in per_video.iter().take(5) {
        loop {
            let a = http(
                &serve,
                "GET",
                &format!("/v1/videos/{video}/views"),
                &[&auth],
                "",
            )
            .unwrap();
            let got: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
            if a.status == 200 && got["views"].as_u64() == Some(*want) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "serving {video}: {} {} (want {want} views)",
                a.status,
                a.body
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    drop(services);

    // Speed = truth.
    let want_speed: BTreeMap<(String, chrono::DateTime<Utc>), counters::Counts> = truth
        .rows()
        .into_iter()
        .map(|r| {
            (
                (r.video_id, r.hour),
                counters::Counts {
                    views: r.views,
                    billable_views: r.billable_views,
                    watch_seconds: r.watch_seconds,
                },
            )
        })
        .collect();
    let got_speed = rt.block_on(async {
        let mut conn = counters::conn::connect_reader(&redis_url).await.unwrap();
        counters::read::all_counts(&mut conn, &keys).await.unwrap()
    });
    testkit::assert_same_map(&got_speed, &want_speed, "speed after the faults");

    // Batch = truth, over every hour the traffic touched.
    let rows = truth.rows();
    let from = rows.iter().map(|r| r.hour).min().unwrap();
    let to = rows.iter().map(|r| r.hour).max().unwrap() + chrono::Duration::hours(1);
    let report = rt
        .block_on(batch::run::run(
            object_store.clone(),
            &batch::run::RunOptions {
                allow_incomplete: true,
                ..batch::run::RunOptions::new(from, to)
            },
            &|_, _, _| {},
        ))
        .unwrap();
    let views = rt
        .block_on(store::views::load_views(
            object_store.as_ref(),
            &report.manifest,
        ))
        .unwrap();
    let want_batch: store::ViewsTable = rows
        .iter()
        .map(|r| ((r.video_id.clone(), r.hour), r.batch_counts()))
        .collect();
    testkit::assert_same_map(&views, &want_batch, "batch after the faults");
    let re_archived = report.manifest.rows.input as i64 - records;
    assert!(
        re_archived >= 0,
        "the archive lost {} records",
        -re_archived
    );

    // A statement = truth × rates, line by line, and the ledger verifies
    // down to the raw files.
    let now = Utc::now();
    let period = billing::statement::Period::parse(&now.format("%Y-%m").to_string()).unwrap();
    let ledger_key = billing::ledger::LogKey::from_file(&key).unwrap();
    let issued = rt
        .block_on(billing::statement::report(
            object_store.clone(),
            &ledger_key,
            &std::fs::read(&rates).unwrap(),
            &billing::statement::ReportOptions {
                period,
                provisional: true,
                grace: billing::statement::ReportOptions::DEFAULT_GRACE,
                operator: "soak".into(),
            },
        ))
        .unwrap();
    let cpm: rust_decimal::Decimal = CPM.parse().unwrap();
    let mut want_lines: BTreeMap<String, i64> = BTreeMap::new();
    // Only videos the catalog attributes are paid (the traffic's patterns
    // also view others).
    for r in rows
        .iter()
        .filter(|r| r.hour >= period.start() && r.hour < period.end())
        .filter(|r| attributed.contains(&r.video_id))
    {
        let billable = (r.billable_views - r.fraud_filtered) as i64;
        if billable > 0 {
            *want_lines.entry(r.video_id.clone()).or_default() += billable;
        }
    }
    let got_lines: BTreeMap<String, i64> = issued
        .statement
        .lines
        .iter()
        .filter(|l| l.kind == billing::statement::LineKind::Views)
        .map(|l| {
            assert_eq!(l.cpm, Some(cpm), "{l:?}");
            (l.video_id.clone(), l.billable_views)
        })
        .collect();
    testkit::assert_same_map(&got_lines, &want_lines, "statement lines");
    let want_amounts: Vec<rust_decimal::Decimal> = want_lines
        .values()
        .map(|v| billing::money::line_amount(*v, cpm).unwrap())
        .collect();
    assert_eq!(
        Some(issued.statement.total()),
        billing::money::sum(&want_amounts),
        "the statement's total is the truth's rounded lines"
    );
    let verify = run(
        &[
            "ledger",
            "verify",
            "--deep",
            "--store",
            &store,
            "--pubkey",
            &format!("{}.pub", key.display()),
        ],
        &[],
    );
    assert!(
        verify.status.success(),
        "{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );

    drop(broker);
    drop(embedded);
    let mut report_text = format!(
        "soak: {seconds} s of faults on {broker_kind}, {total_faults} faults; {} events acknowledged ({} records in Kafka), lost 0, doubled 0 (speed, batch and the statement equal the truth); {re_archived} records re-archived after kills (removed by batch's dedup); settled in {:.1} s\nfault kind                 count  slowest recovery\n",
        truth.accepted_events(),
        records,
        settled_in.as_secs_f64()
    );
    for (kind, (n, slowest)) in &faults {
        report_text.push_str(&format!(
            "{kind:<26} {n:>5}  {:>6.1} s\n",
            slowest.as_secs_f64()
        ));
    }
    println!("{report_text}");
    if let Ok(p) = std::env::var("VIEWCOUNT_SOAK_REPORT") {
        std::fs::write(p, &report_text).unwrap();
    }
    assert!(
        total_faults >= (seconds / 6) as u32,
        "only {total_faults} faults in {seconds} s"
    );
}

/// Starts `tansu` (0.6) as the soak's broker: its SQLite database in a
/// directory of `dir`, listening on a free loopback port, with the topics
/// created through the Kafka admin API once it answers.
fn start_tansu(program: PathBuf, dir: &Path) -> Service {
    let home = dir.join("tansu");
    std::fs::create_dir(&home).unwrap();
    let port = free_port();
    let listener = format!("tcp://127.0.0.1:{port}");
    let mut b = Service {
        name: "broker",
        program,
        args: [
            "broker",
            "--cluster-id",
            "viewcount-soak",
            "--listener-url",
            &listener,
            "--advertised-listener-url",
            &listener,
            "--storage-engine",
            "sqlite://tansu.db",
        ]
        .map(str::to_owned)
        .to_vec(),
        probe: Probe::Kafka,
        port,
        cwd: Some(home),
        log: dir.join("broker.log"),
        broker_log: None,
        child: None,
        frozen: false,
    };
    b.start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bootstrap = format!("127.0.0.1:{port}");
    let t = Instant::now();
    for (topic, partitions) in [(TOPIC.to_owned(), PARTITIONS), (format!("{TOPIC}-dlq"), 1)] {
        while let Err(e) = rt.block_on(testkit::kafka::create_topic(&bootstrap, &topic, partitions))
        {
            if let Some(Ok(Some(status))) = b.child.as_mut().map(Child::try_wait) {
                panic!("tansu exited with {status}:\n{}", tail(&b.log));
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "tansu did not create {topic} in 60 s ({e}):\n{}",
                tail(&b.log)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    b.wait_ready();
    b
}
