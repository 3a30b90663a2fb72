//! `viewcount up`: the whole product in one process on embedded defaults.
//!
//! Ingest and the serving API on one listener, the speed layer, the
//! archive and the scheduled batch (dirty runs), on an embedded
//! mock-cluster Kafka, a child `redis-server` and a local store, with the
//! demo catalog, a demo rate card, a dev ledger key and dev tokens.
//!
//! `--demo N` sends N generated events through ingest and checks every
//! layer against the generator's truth: Kafka, the speed layer, the
//! scheduled batch run, reconcile, the serving API (with a token), a
//! provisional statement (truth × rates) and the ledger. Then, unless
//! `--exit-after-demo`, traffic goes on at `--demo-rate` with a live summary
//! every few seconds until Ctrl-C, which stops in order: ingest first, then
//! everything acknowledged is archived and applied before the rest stops.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use infra::kafka::{EmbeddedKafka, read_topic};
use infra::redis::RedisServer;
use loadgen::{GenConfig, Generator, SendConfig, Truth};
use schemas::{ReceivedEvent, RuleSet, ValidationContext};
use speed::keys::KeySpace;
use telemetry::OpsBuilder;

use crate::ingest_cmd::IngestFlags;
use crate::serve_cmd::ServeFlags;
use crate::speed_cmd::SpeedFlags;
use crate::up_billing::{BillingFiles, demo_billing};
use crate::util::{RuleFlags, Stop, bind, shutdown_signal};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Kafka bootstrap servers; default: an embedded mock cluster on loopback.
    #[arg(long, env = "VIEWCOUNT_KAFKA")]
    kafka: Option<String>,
    /// The event topic.
    #[arg(long, env = "VIEWCOUNT_TOPIC", default_value = crate::util::DEFAULT_TOPIC)]
    topic: String,
    /// Partitions of the topic when the embedded cluster creates it.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Redis URL; default: a child redis-server on a free port, its data in a
    /// temporary directory (it lives as long as the embedded Kafka does).
    #[arg(long, env = "VIEWCOUNT_REDIS_URL")]
    redis_url: Option<String>,
    /// HTTP listen address (ingest and the operational endpoints).
    #[arg(long, env = "VIEWCOUNT_LISTEN", default_value = crate::util::DEFAULT_LISTEN)]
    listen: String,
    /// Send this many generated events through ingest at start, then show what
    /// reached Kafka and what the speed layer counted.
    #[arg(long, value_name = "EVENTS", num_args = 0..=1, default_missing_value = "20000")]
    demo: Option<u64>,
    /// Stop after the demo's checks instead of running until Ctrl-C.
    #[arg(long, requires = "demo")]
    exit_after_demo: bool,
    /// After the demo's checks, keep sending generated traffic (duplicates,
    /// late and invalid events included) at this many events per second
    /// (0: none, the numbers stay still).
    #[arg(long, default_value_t = 50.0, value_parser = parse_rate)]
    demo_rate: f64,
    /// Time between scheduled batch runs (dirty hours and new complete hours).
    #[arg(long, env = "VIEWCOUNT_BATCH_EVERY", default_value = "1m")]
    batch_every: humantime::Duration,
    /// Time between live summaries.
    #[arg(long, default_value = "5s")]
    summary_every: humantime::Duration,
    /// Object store URL; default with the embedded Kafka: a fresh
    /// file://$PWD/data/up-<time> per run (archive progress belongs to one
    /// Kafka cluster), else file://$PWD/data.
    #[arg(long, env = "VIEWCOUNT_STORE")]
    store: Option<String>,
    /// The tokens file of the serving API; default: dev tokens (admin,
    /// finance, one creator) made at start and printed, valid while it runs.
    #[arg(long, env = "VIEWCOUNT_TOKENS")]
    tokens: Option<std::path::PathBuf>,
    /// The ledger's signing key; default: a dev key kept beside a file://
    /// store (`<store dir>.dev-ledger.key`), made on first use.
    #[arg(long, env = "VIEWCOUNT_LEDGER_KEY")]
    ledger_key: Option<std::path::PathBuf>,
    /// The rate card the demo bills with; default: a demo card written
    /// beside a file:// store (`<store dir>.rates.toml`).
    #[arg(long)]
    rates: Option<std::path::PathBuf>,
    #[command(flatten)]
    ingest: IngestFlags,
    #[command(flatten)]
    speed: SpeedFlags,
    #[command(flatten)]
    serve: ServeFlags,
    #[command(flatten)]
    rules: RuleFlags,
}

pub(crate) async fn run(a: Args) -> anyhow::Result<()> {
    // One rule set for every layer this process runs.
    let rules = a.rules.rules()?;
    let embedded;
    let bootstrap = match &a.kafka {
        Some(b) => {
            println!(
                "kafka: external broker {b}, topic {:?} (must exist)",
                a.topic
            );
            b.clone()
        }
        None => {
            embedded = EmbeddedKafka::start(1).context("starting the embedded Kafka")?;
            embedded
                .create_topic(&a.topic, a.partitions)
                .context("creating the event topic")?;
            let dlq = a
                .speed
                .dlq_topic
                .clone()
                .unwrap_or(format!("{}-dlq", a.topic));
            embedded
                .create_topic(&dlq, 1)
                .context("creating the dead-letter topic")?;
            println!(
                "kafka: embedded mock cluster at {} (topics {:?} with {} partitions and {dlq:?}; in memory, gone when this process stops)",
                embedded.bootstrap_servers(),
                a.topic,
                a.partitions
            );
            embedded.bootstrap_servers().to_owned()
        }
    };
    let child_redis;
    let redis_url = match &a.redis_url {
        Some(u) => {
            println!("redis: {u}");
            u.clone()
        }
        None => {
            child_redis = RedisServer::start().context("starting a child redis-server")?;
            println!(
                "redis: child redis-server at {} (data in {}; removed when this process stops)",
                child_redis.url(),
                child_redis.dir().display()
            );
            child_redis.url()
        }
    };

    let store_url = match (&a.store, &a.kafka) {
        (Some(u), _) => u.clone(),
        (None, Some(_)) => store::layout::default_url(),
        (None, None) => format!(
            "{}/up-{}",
            store::layout::default_url(),
            Utc::now().format("%Y%m%dT%H%M%S")
        ),
    };
    let store = store::open(&store_url)?;
    println!("store: {store_url} (raw archive, batch views, manifests)");
    let catalog = demo_catalog(store.as_ref()).await?;
    let billing_files = BillingFiles::prepare(&store_url, a.ledger_key.clone(), a.rates.clone())?;

    let producer = Arc::new(a.ingest.producer(&bootstrap, &a.topic)?);
    let speed_config = a.speed.config(&bootstrap, &a.topic, &redis_url, rules)?;
    let speed_dedup_window = speed_config.dedup_window;
    let keys = KeySpace::new(&speed_config.key_prefix, speed_config.dedup_bucket_bits);
    let mut ops = OpsBuilder::new();
    let ingest_metrics = ingest::server::register(&mut ops, &producer);
    let ingest_metrics_view = ingest_metrics.clone();
    let speed_metrics = speed::Metrics::register(ops.registry());
    let speed_ready = ops.flag("redis");
    let archive_metrics = archive::ArchiveMetrics::register(ops.registry());
    let archive_ready = ops.flag("archive");
    let batch_metrics = batch::schedule::Metrics::register(ops.registry());
    // Stopping is ordered: the HTTP server (no new acknowledgements) first,
    // the pipeline once it has everything acknowledged.
    let stop_http = Stop::new();
    let stop = Stop::new();
    let serving_metrics = serving::metrics::Metrics::register(ops.registry());
    let (tokens, dev) = match &a.tokens {
        Some(path) => (
            serving::source::TokensFile::open(path.clone(), serving_metrics.clone())
                .map_err(anyhow::Error::msg)?,
            None,
        ),
        None => {
            let dev = DevTokens::new(&catalog)?;
            (
                serving::source::TokensFile::fixed(dev.tokens()?, serving_metrics.clone()),
                Some(dev),
            )
        }
    };
    let mut serve_options = a.serve.options(
        &redis_url,
        &speed_config.key_prefix,
        a.tokens.clone().unwrap_or_default(),
    );
    serve_options.api.rates = Some(billing_files.rate_card()?);
    let serving = serving::Serving::start_with(
        &mut ops,
        store.clone(),
        serve_options,
        Arc::new(tokens),
        serving_metrics,
        telemetry::cancel_on(stop.wait()),
    )
    .await?;
    let ops = ops.build();
    let app = ingest::server::router(a.ingest.config(rules), producer.clone(), ingest_metrics)
        .merge(serving.router.clone())
        .merge(ops.router())
        .fallback(telemetry::not_found);

    let listener = bind(&a.listen).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn({
        let stop = stop_http.wait();
        async move {
            let served = telemetry::serve(listener, app, ops, stop).await;
            if let Err(e) = producer.flush().await {
                tracing::warn!(error = %e, "producer flush on shutdown incomplete");
            }
            served
        }
    });
    let speed_task = tokio::spawn(speed::run(
        speed_config,
        speed_metrics.clone(),
        speed_ready,
        stop.wait(),
    ));
    let mut archive_config = archive::ArchiveConfig::new(&bootstrap, &a.topic);
    archive_config.flush_interval = Duration::from_secs(2);
    archive_config.rules = rules;
    let archive_task = tokio::spawn(archive::run(
        archive_config,
        store.clone(),
        archive_metrics,
        archive_ready,
        stop.wait(),
    ));
    let now = Utc::now();
    let scheduler = batch::schedule::Scheduler::new(
        store.clone(),
        batch::run::RunOptions {
            rules,
            ..batch::run::RunOptions::new(now, now)
        },
        a.batch_every.into(),
        batch_metrics,
    );
    let scheduler_task = tokio::spawn(scheduler.clone().run(stop.wait()));
    println!("ingest: http://{addr}/v1/events  (also /healthz /readyz /metrics)");
    println!(
        "serve: http://{addr}/v1/videos/{{video_id}}/views and the rest of the API: http://{addr}/openapi.json"
    );
    match &dev {
        Some(dev) => dev.print(&format!("http://{addr}")),
        None => println!(
            "serve: tokens from {}",
            a.tokens
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
        ),
    }
    println!(
        "speed: consuming {:?} into Redis keys {}*",
        a.topic,
        keys.prefix()
    );
    println!(
        "batch: a dirty run every {} (hours with late data, and new complete hours); see them with: viewcount status --store {store_url}",
        a.batch_every
    );

    let base = format!("http://{addr}");
    let mut outcome = Ok(());
    if let Some(n) = a.demo {
        outcome = async {
            let demo_truth = demo(&base, &bootstrap, &a.topic, &redis_url, &keys, n, rules).await?;
            let w = demo_batch(
                store.clone(),
                &scheduler,
                &demo_truth,
                &redis_url,
                &keys,
                speed_dedup_window,
            )
            .await?;
            if let Some(dev) = &dev {
                serving.source.refresh().await?;
                let w = serving.source.snapshot().index.watermark();
                demo_serving(&base, &dev.admin, &demo_truth, &catalog, w).await?;
            }
            if let Some(w) = w {
                demo_billing(
                    store.clone(),
                    &store_url,
                    &billing_files,
                    &demo_truth,
                    &catalog,
                    w,
                )
                .await?;
            }
            println!("\ndemo: every check passed");
            Ok::<(), anyhow::Error>(())
        }
        .await;
    }
    if outcome.is_ok() && !a.exit_after_demo {
        let traffic = match a.demo {
            Some(_) if a.demo_rate > 0.0 => {
                println!(
                    "\nup. Generated traffic goes on at {} events/s (duplicates, late and invalid ones included); send your own with:",
                    a.demo_rate
                );
                Some(tokio::spawn(demo_traffic(base.clone(), a.demo_rate)))
            }
            _ => {
                println!("\nup. Send events with:");
                None
            }
        };
        println!(
            "  curl -s -H 'content-type: application/json' {base}/v1/events -d '{{\"event_id\":\"{}\",\"video_id\":\"v1\",\"user_id\":\"u1\",\"occurred_at\":\"{}\",\"watch_seconds\":42,\"revenue_eligible\":true}}'\nCtrl-C to stop. A summary every {}:",
            uuid::Uuid::new_v4(),
            schemas::event::format_timestamp(&Utc::now()),
            a.summary_every
        );
        let live = Live {
            store: store.clone(),
            store_url: &store_url,
            redis_url: &redis_url,
            keys: &keys,
            ingest: &ingest_metrics_view,
            speed: &speed_metrics,
            scheduler: &scheduler,
        };
        tokio::select! {
            () = shutdown_signal() => {},
            () = live.run(a.summary_every.into()) => {},
        }
        if let Some(t) = traffic {
            t.abort();
        }
        println!(
            "\nstopping: ingest first, then everything it acknowledged into the archive and the speed layer ..."
        );
    }
    // Ordered stop: no new acknowledgements, then every acknowledged
    // record archived and applied, then the rest.
    stop_http.stop();
    server.await.context("ingest task")??;
    let drained = drain(store.as_ref(), &bootstrap, &a.topic, &redis_url, &keys).await;
    stop.stop();
    speed_task.await.context("speed task")??;
    archive_task.await.context("archive task")??;
    scheduler_task.await.context("batch scheduler task")?;
    match &drained {
        Ok(n) => println!(
            "stopped: all {n} records in Kafka are archived in {store_url} and applied by the speed layer"
        ),
        Err(e) => eprintln!("stopping: {e:#}"),
    }
    outcome.and(drained.map(|_| ()))
}

/// `--demo-rate`: a finite, non-negative number of events per second.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a rate: give events per second, like 50 (0: no traffic after the demo)"
        )),
    }
}

/// Generated traffic at `rate` events per second until aborted: current
/// views, with the generator's share of re-sends, late (1 to 72 hours old,
/// so the scheduled batch has dirty hours to heal) and invalid events.
async fn demo_traffic(base: String, rate: f64) {
    let chunk = Duration::from_secs(5);
    let mut cfg = SendConfig::new(format!("{base}/v1/events"));
    cfg.rate = Some(rate);
    cfg.batch_size = 100;
    for seed in 1_000u64.. {
        let now = Utc::now();
        let span = chrono::Duration::from_std(chunk).unwrap_or_default();
        let generator = Generator::new(GenConfig {
            events: ((rate * chunk.as_secs_f64()).ceil() as u64).max(1),
            seed,
            start: now - span,
            span,
            now,
            ..GenConfig::default()
        });
        let sent = match generator {
            Ok(g) => {
                let mut truth = Truth::new(RuleSet::default());
                loadgen::send(g, &cfg, &mut truth, |_| {}).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "demo traffic: sending failed; trying again in 5 s");
            tokio::time::sleep(chunk).await;
        }
    }
}

/// The live summary of `up`.
struct Live<'a> {
    store: Arc<dyn object_store::ObjectStore>,
    store_url: &'a str,
    redis_url: &'a str,
    keys: &'a KeySpace,
    ingest: &'a ingest::metrics::Metrics,
    speed: &'a speed::Metrics,
    scheduler: &'a batch::schedule::Scheduler,
}

impl Live<'_> {
    /// Prints a summary every `every`, forever.
    async fn run(&self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        let mut verified: Option<(u64, String)> = None;
        loop {
            tick.tick().await;
            match self.summary(&mut verified).await {
                Ok(text) => println!("{text}"),
                Err(e) => println!("[summary unavailable: {e:#}]"),
            }
        }
    }

    /// One summary; `verified` caches the ledger check by size.
    async fn summary(&self, verified: &mut Option<(u64, String)>) -> anyhow::Result<String> {
        use std::fmt::Write;
        let now = Utc::now();
        let opts = batch::run::RunOptions::new(now, now);
        let status = crate::status_cmd::gather(&crate::status_cmd::Sources {
            store: self.store.clone(),
            store_url: self.store_url,
            kafka: None,
            redis: Some((self.redis_url, self.keys)),
            opts: &opts,
        })
        .await?;
        let (accepted, rejected) = self.ingest.totals();
        let sp = self.speed.snapshot();
        let mut o = String::new();
        let _ = writeln!(
            o,
            "── {} ──\nevents   {} in: {accepted} accepted, {rejected} rejected",
            now.format("%H:%M:%S"),
            accepted + rejected
        );
        let _ = writeln!(
            o,
            "speed    {} views counted, {} duplicates dropped ({} conflicting), {} dead-lettered; freshness {}",
            sp.counted,
            sp.duplicates,
            sp.conflicts,
            sp.dead_lettered,
            status
                .speed
                .as_ref()
                .and_then(|s| s.freshness_seconds)
                .map_or("-".to_owned(), |f| format!("{f:.1} s"))
        );
        let rounds = self.scheduler.rounds();
        let last = status
            .batch
            .last_run
            .as_ref()
            .map_or("none yet".to_owned(), |r| {
                format!(
                    "{} [{}, {}) in {:.2} s",
                    r.run_id,
                    r.from.format("%d %H:%M"),
                    r.to.format("%d %H:%M"),
                    r.seconds
                )
            });
        let _ = writeln!(
            o,
            "batch    watermark {}, last run {last}; {} scheduled round(s){}; dirty hours pending: {}",
            status.batch.watermark.map_or("none".to_owned(), |w| w
                .format("%Y-%m-%dT%H:%MZ")
                .to_string()),
            rounds.finished,
            rounds
                .last_error
                .as_deref()
                .map_or(String::new(), |e| format!(" (last failed: {e})")),
            status.dirty.dirty.len()
        );
        let mut conn = speed::conn::connect_reader(self.redis_url).await?;
        let counted = speed::read::all_counts(&mut conn, self.keys).await?;
        let _ = writeln!(o, "top      {}", top_videos(&counted));
        let ledger = billing::ledger::Ledger::new(self.store.clone());
        let size = status.ledger.size;
        if verified.as_ref().is_none_or(|(n, _)| *n != size) {
            let result = match ledger.verify(None, None).await {
                Ok(v) => format!(
                    "verifies ({} entries, {} files re-hashed)",
                    v.entries, v.files
                ),
                Err(e) => format!("DOES NOT VERIFY: {e}"),
            };
            *verified = Some((size, result));
        }
        let log = ledger.read().await?;
        let statement = log
            .entries
            .iter()
            .rev()
            .find(|e| e.kind == billing::ledger::Kind::Statement)
            .map_or("none yet".to_owned(), |e| {
                format!(
                    "{} {}{}: {} {} to {} creators (entry {})",
                    e.period,
                    &e.statement_id[..e.statement_id.len().min(12)],
                    if e.provisional { " PROVISIONAL" } else { "" },
                    e.totals.amount,
                    e.totals.currency,
                    e.totals.creators,
                    e.seq
                )
            });
        let _ = write!(
            o,
            "billing  latest statement {statement}; ledger {}",
            verified.as_ref().map_or("", |(_, r)| r.as_str())
        );
        Ok(o)
    }
}

/// Waits until the archive and the speed layer hold every record the topic
/// has (after ingest stopped, that is everything acknowledged); the number
/// of records.
async fn drain(
    store: &dyn object_store::ObjectStore,
    bootstrap: &str,
    topic: &str,
    redis_url: &str,
    keys: &KeySpace,
) -> anyhow::Result<i64> {
    let (meta, _) = store::progress::load(store).await?;
    let Some(partitions) = meta.map(|m| m.partitions) else {
        return Ok(0);
    };
    let (b, t) = (bootstrap.to_owned(), topic.to_owned());
    let ends = tokio::task::spawn_blocking(move || {
        infra::kafka::high_watermarks(&b, &t, partitions, Duration::from_secs(10))
    })
    .await??;
    let total: i64 = ends.iter().sum();
    let mut conn = speed::conn::connect_reader(redis_url)
        .await
        .context("connecting to redis")?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, progress) = store::progress::load(store).await?;
        let applied = speed::read::stored_offsets(&mut conn, keys, partitions).await?;
        let behind: Vec<String> = (0..partitions)
            .filter_map(|p| {
                let end = ends[p as usize];
                let archived = progress
                    .iter()
                    .find(|x| x.partition == p)
                    .map_or(0, |x| x.next_offset);
                let speed = applied.get(p as usize).copied().flatten().unwrap_or(0);
                (archived < end || speed < end).then(|| {
                    format!("partition {p}: end {end}, archived {archived}, applied {speed}")
                })
            })
            .collect();
        if behind.is_empty() {
            return Ok(total);
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "after 120 s the archive or the speed layer still lacks acknowledged records ({}); the embedded Kafka holds them only while this process runs",
                behind.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends `n` generated events through ingest, then checks what reached Kafka
/// and what the speed layer counted against the generator's truth.
async fn demo(
    base: &str,
    bootstrap: &str,
    topic: &str,
    redis_url: &str,
    keys: &KeySpace,
    n: u64,
    rules: RuleSet,
) -> anyhow::Result<Truth> {
    let generator = Generator::new(GenConfig {
        events: n,
        ..GenConfig::default()
    })?;
    let mut truth = Truth::new(rules);
    println!("\ndemo: sending {n} generated events (10% re-sends, 5% late, 2% invalid) ...");
    let cfg = SendConfig::new(format!("{base}/v1/events"));
    let report = loadgen::send(generator, &cfg, &mut truth, |_| {}).await?;
    println!("demo: {}", crate::gen_cmd::summary(&report));

    let (bs, t) = (bootstrap.to_owned(), topic.to_owned());
    let records =
        tokio::task::spawn_blocking(move || read_topic(&bs, &t, Duration::from_secs(60))).await??;
    let mut per_partition: BTreeMap<i32, i64> = BTreeMap::new();
    let mut from_kafka = Truth::new(rules);
    let limits = ValidationContext::new(Utc::now(), &rules);
    for r in &records {
        let next = per_partition.entry(r.partition).or_default();
        *next = (*next).max(r.offset + 1);
        let payload = r.payload.as_deref().unwrap_or_default();
        let e = ReceivedEvent::from_json_bytes(payload, &limits)
            .with_context(|| format!("record {}@{} is unreadable", r.partition, r.offset))?;
        if r.key.as_deref() != Some(e.event.video_id.as_bytes()) {
            bail!(
                "record {}@{} is not keyed by its video_id",
                r.partition,
                r.offset
            );
        }
        from_kafka.record(&e.event);
    }
    let parts: Vec<String> = per_partition
        .iter()
        .map(|(p, n)| format!("p{p}={n}"))
        .collect();
    println!(
        "kafka: topic {topic:?} holds {} records [{}]: {} distinct events",
        records.len(),
        parts.join(" "),
        from_kafka.views()
    );
    if from_kafka.rows() != truth.rows() {
        bail!("what reached Kafka differs from what ingest accepted");
    }
    println!("check: every accepted event is in Kafka, keyed by video_id");

    // Wait for the speed layer to apply every record, then compare.
    let mut conn = speed::conn::connect_reader(redis_url)
        .await
        .context("connecting to redis")?;
    let partitions = per_partition.keys().max().map_or(0, |p| p + 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stored = speed::read::stored_offsets(&mut conn, keys, partitions).await?;
        let caught_up = per_partition
            .iter()
            .all(|(p, next)| stored.get(*p as usize).copied().flatten() >= Some(*next));
        if caught_up {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the speed layer did not catch up within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counted = speed::read::all_counts(&mut conn, keys).await?;
    let mismatches = truth
        .rows()
        .iter()
        .filter(|r| {
            counted.get(&(r.video_id.clone(), r.hour)).is_none_or(|c| {
                (c.views, c.billable_views, c.watch_seconds)
                    != (r.views, r.billable_views, r.watch_seconds)
            })
        })
        .count();
    let speed_views: u64 = counted.values().map(|c| c.views).sum();
    if mismatches > 0 || counted.len() != truth.rows().len() {
        bail!("speed layer counts differ from the truth in {mismatches} video-hours");
    }
    println!(
        "speed: Redis holds {speed_views} views in {} video-hours: equal to the truth per video per hour (views, billable views, watch seconds)",
        counted.len()
    );
    println!("top videos: {}", top_videos(&counted));
    Ok(truth)
}

/// The five most viewed videos in the speed layer's counters, `v=views`.
fn top_videos<H>(counted: &BTreeMap<(String, H), speed::read::Counts>) -> String {
    let mut per_video: BTreeMap<&str, u64> = BTreeMap::new();
    for ((video, _), c) in counted {
        *per_video.entry(video).or_default() += c.views;
    }
    let mut top: Vec<(&str, u64)> = per_video.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let top: Vec<String> = top
        .iter()
        .take(5)
        .map(|(v, n)| format!("{v}={n}"))
        .collect();
    top.join(" ")
}

/// Waits for the archive, asks the scheduler for a dirty run (which
/// publishes every complete hour), and checks the published numbers
/// against the truth and, through reconcile, against the speed layer.
/// Returns the batch watermark.
async fn demo_batch(
    store: Arc<dyn object_store::ObjectStore>,
    scheduler: &batch::schedule::Scheduler,
    truth: &Truth,
    redis_url: &str,
    keys: &KeySpace,
    dedup_window: chrono::Duration,
) -> anyhow::Result<Option<chrono::DateTime<Utc>>> {
    let rows = truth.rows();
    let Some(from) = rows.iter().map(|r| r.hour).min() else {
        return Ok(None);
    };
    // The archive flushes every 2 s; wait until it has every record.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, progress) = store::progress::load(store.as_ref()).await?;
        let archived: i64 = progress.iter().map(|p| p.next_offset).sum();
        if archived >= truth.accepted_events() as i64 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the archive did not catch up within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "\nbatch: the archive holds every record; a scheduled dirty run now computes every complete hour (the current one, and the last until 10 min past it, stay with the speed layer) ..."
    );
    tokio::time::timeout(Duration::from_secs(300), scheduler.run_now())
        .await
        .context("the scheduled batch run did not finish within 5 minutes")?
        .map_err(|e| anyhow::anyhow!("the scheduled batch run failed: {e}"))?;
    let Some(published) = store::state::current(store.as_ref()).await? else {
        println!("batch: no complete hour yet; serving answers from the speed layer alone");
        return Ok(None);
    };
    let Some(w) = published.watermark else {
        return Ok(None);
    };
    if let Some(plan) = scheduler.rounds().last_plan {
        crate::batch_cmd::print_plan(&plan);
    }
    let mut runs: BTreeMap<&str, Vec<chrono::DateTime<Utc>>> = BTreeMap::new();
    for (h, run) in &published.hours {
        runs.entry(run.as_str()).or_default().push(*h);
    }
    let mut views = store::ViewsTable::new();
    for (run, hours) in &runs {
        let table = store::views::load_views(store.as_ref(), run).await?;
        views.extend(table.into_iter().filter(|((_, h), _)| hours.contains(h)));
    }
    println!(
        "batch: published state #{} from {} run(s); batch watermark {w}",
        published.seq,
        runs.len()
    );
    let want: store::ViewsTable = rows
        .iter()
        .filter(|r| r.hour < w)
        .map(|r| {
            (
                (r.video_id.clone(), r.hour),
                [
                    r.views,
                    r.billable_views - r.fraud_filtered,
                    r.fraud_filtered,
                    r.watch_seconds,
                ],
            )
        })
        .collect();
    if views != want {
        let differ = want
            .iter()
            .filter(|(k, v)| views.get(*k) != Some(*v))
            .count()
            + views.keys().filter(|k| !want.contains_key(*k)).count();
        bail!("batch counts differ from the generator's truth in {differ} video-hours");
    }
    println!(
        "check: batch equals the truth in all {} video-hours before the watermark (views, billable, fraud-filtered, watch seconds)",
        views.len()
    );
    demo_attribution(store.as_ref(), &views).await?;
    let mut conn = speed::conn::connect_reader(redis_url)
        .await
        .context("connecting to redis")?;
    let speed: reconcile::SpeedTable = speed::read::all_counts(&mut conn, keys)
        .await?
        .into_iter()
        .map(|(k, c)| (k, [c.views, c.billable_views, c.watch_seconds]))
        .collect();
    let r = reconcile::reconcile(
        store.clone(),
        &speed,
        from,
        w,
        dedup_window,
        &batch::memory::Memory::default(),
    )
    .await?;
    if r.has_unexplained() {
        bail!(
            "reconcile: speed and batch differ without a known cause: {:?}",
            r.totals
        );
    }
    let causes: Vec<String> = r.totals.iter().map(|(c, n)| format!("{c:?}={n}")).collect();
    println!(
        "check: reconcile is clean: {} of {} video-hours agree, every other difference explained ({})",
        r.agreeing,
        r.video_hours,
        if causes.is_empty() {
            "none".to_owned()
        } else {
            causes.join(" ")
        }
    );
    Ok(Some(w))
}

/// Puts the generated videos' catalog in force, unless the store has one.
async fn demo_catalog(
    store: &dyn object_store::ObjectStore,
) -> anyhow::Result<store::catalog::Catalog> {
    if let Some(c) = store::catalog::current(store).await? {
        println!(
            "catalog: {} videos of {} creators in force",
            c.len(),
            c.creators()
        );
        return Ok(c);
    }
    let g = GenConfig::default();
    let (bytes, _, _) = crate::gen_cmd::catalog_csv(g.videos, g.seed)?;
    let (catalog, cur) = store::catalog::import(store, bytes.into()).await?;
    println!(
        "catalog: the demo's {} ({} videos of {} creators; a few videos left out, so their views are unattributed)",
        cur.path, cur.videos, cur.creators
    );
    Ok(catalog)
}

/// Shows which batch views the catalog in force attributes to creators;
/// views of videos it leaves out are reported as unattributed, never
/// dropped.
async fn demo_attribution(
    store: &dyn object_store::ObjectStore,
    views: &store::ViewsTable,
) -> anyhow::Result<()> {
    let Some(catalog) = store::catalog::current(store).await? else {
        return Ok(());
    };
    let (mut attributed, mut unattributed) = (0u64, 0u64);
    let mut missing: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for ((video, _), v) in views {
        match catalog.creator_of(video) {
            Some(_) => attributed += v[0],
            None => {
                unattributed += v[0];
                missing.insert(video);
            }
        }
    }
    let total = attributed + unattributed;
    let shown: Vec<&str> = missing.iter().copied().take(5).collect();
    println!(
        "catalog: of {total} batch views {attributed} are attributed to creators and {unattributed} unattributed (videos not in the catalog: {}{})",
        shown.join(" "),
        if missing.len() > shown.len() {
            " ..."
        } else {
            ""
        }
    );
    Ok(())
}

/// Tokens made at start when no tokens file is given: valid while this
/// process runs, printed once.
struct DevTokens {
    admin: String,
    finance: String,
    creator: Option<(String, String)>,
    tables: String,
}

impl DevTokens {
    fn new(catalog: &store::catalog::Catalog) -> anyhow::Result<Self> {
        use serving::tokens::{Role, new_token};
        let (admin, t1) = new_token("dev-admin", Role::Admin, None)?;
        let (finance, t2) = new_token("dev-finance", Role::Finance, None)?;
        let mut tables = t1 + &t2;
        // The creator of the most viewed video the catalog attributes.
        let creator = (0..catalog.len() as u32)
            .map(loadgen::Generator::video_id)
            .find_map(|v| catalog.creator_of(&v).map(str::to_owned));
        let creator = match creator {
            Some(c) => {
                let (secret, t) = new_token(&format!("dev-creator-{c}"), Role::Creator, Some(&c))?;
                tables.push_str(&t);
                Some((c, secret))
            }
            None => None,
        };
        Ok(Self {
            admin,
            finance,
            creator,
            tables,
        })
    }

    fn tokens(&self) -> anyhow::Result<serving::tokens::Tokens> {
        Ok(serving::tokens::Tokens::parse(&self.tables)?)
    }

    fn print(&self, base: &str) {
        println!(
            "serve: dev tokens (valid while this runs; use --tokens FILE for real ones):\n  admin    {}\n  finance  {}",
            self.admin, self.finance
        );
        if let Some((c, secret)) = &self.creator {
            println!(
                "  creator {c}  {secret}\n  e.g. curl -s -H 'Authorization: Bearer {secret}' {base}/v1/creators/{c}/views"
            );
        }
    }
}

/// Checks the API's answers against the truth: every creator's listing
/// (with the admin token), every unattributed video, and that a creator
/// token sees its own videos and nobody else's. A 429 is waited out as
/// `Retry-After` says, as any client should.
async fn demo_serving(
    base: &str,
    token: &str,
    truth: &Truth,
    catalog: &store::catalog::Catalog,
    watermark: Option<chrono::DateTime<Utc>>,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let get = |path: String| {
        let client = client.clone();
        let url = format!("{base}{path}");
        let token = token.to_owned();
        async move {
            loop {
                let r = client.get(&url).bearer_auth(&token).send().await?;
                if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    let wait = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(1);
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                    continue;
                }
                if !r.status().is_success() {
                    bail!(
                        "GET {url}: {} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    );
                }
                return Ok::<serde_json::Value, anyhow::Error>(r.json().await?);
            }
        }
    };
    // Per video: views, batch billable (after the fraud cap), watch seconds.
    let mut want: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    for r in truth.rows() {
        let w = want.entry(r.video_id.clone()).or_default();
        w[0] += r.views;
        // Batch hours are billable after the fraud cap; speed hours before.
        w[1] += if watermark.is_some_and(|w| r.hour < w) {
            r.billable_views - r.fraud_filtered
        } else {
            r.billable_views
        };
        w[2] += r.watch_seconds;
    }
    let mut creators: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut unattributed = Vec::new();
    for v in want.keys() {
        match catalog.creator_of(v) {
            Some(c) => creators.entry(c).or_default().push(v),
            None => unattributed.push(v.as_str()),
        }
    }
    let mut checked = 0usize;
    let mut got_total = 0u64;
    for (creator, videos) in &creators {
        let answer = get(format!("/v1/creators/{creator}/views?limit=10000")).await?;
        let rows = answer["rows"].as_array().cloned().unwrap_or_default();
        for row in &rows {
            let v = row["video_id"].as_str().unwrap_or_default();
            let got = [
                row["views"].as_u64().unwrap_or(0),
                row["billable_views"].as_u64().unwrap_or(0),
                row["watch_seconds"].as_u64().unwrap_or(0),
            ];
            let expected = want.get(v).copied().unwrap_or_default();
            if got != expected {
                bail!(
                    "serving answers {got:?} for {v} (creator {creator}); the truth is {expected:?}"
                );
            }
            got_total += got[0];
        }
        checked += videos.len();
    }
    for v in &unattributed {
        let answer = get(format!("/v1/videos/{v}/views")).await?;
        if !answer["creator_id"].is_null() {
            bail!(
                "serving attributes {v} to {}, the catalog does not",
                answer["creator_id"]
            );
        }
        let got = [
            answer["views"].as_u64().unwrap_or(0),
            answer["billable_views"].as_u64().unwrap_or(0),
            answer["watch_seconds"].as_u64().unwrap_or(0),
        ];
        if got != want[*v] {
            bail!(
                "serving answers {got:?} for unattributed {v}; the truth is {:?}",
                want[*v]
            );
        }
        got_total += got[0];
        checked += 1;
    }
    if got_total != truth.views() {
        bail!(
            "serving's answers sum to {got_total} views; the truth is {}",
            truth.views()
        );
    }
    println!(
        "check: the serving API (bearer token) answers every one of {checked} videos equal to the truth ({} by creator listings, {} unattributed), {got_total} views in all, batch before the watermark {} and speed after it",
        checked - unattributed.len(),
        unattributed.len(),
        watermark.map_or("(none)".to_owned(), |w| w.to_string())
    );
    Ok(())
}
