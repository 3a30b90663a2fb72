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
//!
//! This module wires the services together and stops them; what the demo
//! checks is [`checks`], the live summary [`summary`], the dev ledger key
//! and rate card [`billing_files`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use counters::keys::KeySpace;
use infra::kafka::EmbeddedKafka;
use infra::redis::RedisServer;
use telemetry::OpsBuilder;

use crate::ingest_cmd::IngestFlags;
use crate::serve_cmd::ServeFlags;
use crate::speed_cmd::SpeedFlags;
use crate::util::{HttpFlags, RuleFlags, Stop, bind, say, signals};
use billing_files::BillingFiles;
use billing_files::demo_billing;
use checks::{demo, demo_batch, demo_catalog, demo_serving};
use dev_tokens::DevTokens;
use summary::{Live, demo_traffic};

mod billing_files;
mod checks;
mod dev_tokens;
mod summary;

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
    http: HttpFlags,
    #[command(flatten)]
    instance: crate::util::InstanceFlag,
    #[command(flatten)]
    rules: RuleFlags,
}

pub(crate) async fn run(a: Args) -> anyhow::Result<()> {
    // One rule set for every layer this process runs.
    let rules = a.rules.rules()?;
    let demo_key = match a.demo {
        Some(_) => Some(Arc::new(playback::PlaybackSigner::generate("demo")?)),
        None => None,
    };
    let embedded;
    let bootstrap = match &a.kafka {
        Some(b) => {
            say!(
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
            say!(
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
            say!("redis: {u}");
            u.clone()
        }
        None => {
            // Its own random password (never printed) and protected mode:
            // another local user cannot read or write the counters. Started
            // from the main thread, it dies with this process even when
            // that is killed with SIGKILL.
            child_redis = RedisServer::start_with(infra::redis::RedisOptions {
                password: Some(infra::redis::RedisOptions::random_password()),
                die_with_parent: true,
                ..infra::redis::RedisOptions::default()
            })
            .context("starting a child redis-server")?;
            say!(
                "redis: child redis-server at {} (password-protected; data in {}; removed when this process stops)",
                child_redis.shown_url(),
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
    say!("store: {store_url} (raw archive, batch views, manifests)");
    let catalog = demo_catalog(store.as_ref()).await?;
    let billing_files = BillingFiles::prepare(&store_url, a.ledger_key.clone(), a.rates.clone())?;

    let producer = Arc::new(a.ingest.producer(&bootstrap, &a.topic)?);
    let mut speed_config = a.speed.config(&bootstrap, &a.topic, &redis_url, rules)?;
    speed_config.instance_id = Some(a.instance.id("speed", false));
    let speed_dedup_window = speed_config.dedup_window;
    let keys = KeySpace::new(&speed_config.key_prefix, speed_config.dedup_bucket_bits);
    let mut ops = OpsBuilder::new();
    let ingest_metrics = ingest::server::register(&mut ops, &producer);
    let ingest_metrics_view = ingest_metrics.clone();
    let speed_metrics = speed::Metrics::register(ops.registry());
    // "speed", not "redis": serving's degrading Redis check has that name.
    let speed_ready = ops.flag("speed");
    let archive_metrics = archive::ArchiveMetrics::register(ops.registry());
    let archive_ready = ops.flag("archive");
    let batch_metrics = batch::schedule::Metrics::register(ops.registry());
    let scheduler_ready = ops.flag("scheduler");
    scheduler_ready.set_ready();
    // Every long-running task is watched: one that ends on an error or a
    // panic fails /readyz naming it, is logged and counted.
    let supervisor = telemetry::supervise::Supervisor::register(&mut ops);
    // Stopping is ordered: the HTTP server (no new acknowledgements) first,
    // the pipeline once it has everything acknowledged.
    let stop_http = Stop::new();
    let stop = Stop::new();
    // A second signal while stopping: close the connections left at once.
    let hurry = Stop::new();
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
        // Live streams end as soon as the HTTP server starts to drain.
        telemetry::cancel_on(stop_http.wait()),
    )
    .await?;
    let ops = ops.build();
    let ops_view = ops.clone();
    // Nothing is acknowledged that the archive cannot keep: the embedded
    // Kafka holds records only in memory.
    // The demo signs its own traffic as a player service would, with a key
    // of this process; events sent by hand are kept (unverified, never
    // billable) unless --require-signed-events.
    let mut ingest_config = a
        .ingest
        .config(rules, demo_key.as_deref(), a.demo.is_none())?;
    ingest_config.keeper = Some(archive_ready.clone());
    let app = ingest::server::router(ingest_config, producer.clone(), ingest_metrics)
        .merge(serving.router.clone())
        .merge(ops.router())
        .fallback(telemetry::not_found);

    let listener = bind(&a.listen).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn({
        let (stop, hurry, limits) = (stop_http.wait(), hurry.wait(), a.http.limits());
        async move {
            let served = telemetry::http::serve(listener, app, ops, limits, stop, hurry).await;
            if let Err(e) = producer.flush().await {
                tracing::warn!(error = %e, "producer flush on shutdown incomplete");
            }
            served
        }
    });
    let speed_task = supervisor.spawn(
        "speed",
        speed_ready.clone(),
        speed::run(
            speed_config,
            speed_metrics.clone(),
            speed_ready,
            stop.wait(),
        ),
    );
    let mut archive_config = archive::ArchiveConfig::new(&bootstrap, &a.topic);
    archive_config.flush_interval = Duration::from_secs(2);
    archive_config.rules = rules;
    archive_config.instance_id = Some(a.instance.id("archive", false));
    let archive_task = supervisor.spawn(
        "archive",
        archive_ready.clone(),
        archive::run(
            archive_config,
            store.clone(),
            archive_metrics,
            archive_ready,
            stop.wait(),
        ),
    );
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
    let scheduler_task = supervisor.spawn("scheduler", scheduler_ready, {
        let (scheduler, stop) = (scheduler.clone(), stop.wait());
        async move {
            scheduler.run(stop).await;
            Ok::<(), std::convert::Infallible>(())
        }
    });
    say!("ingest: http://{addr}/v1/events  (also /healthz /readyz /metrics)");
    say!(
        "serve: http://{addr}/v1/videos/{{video_id}}/views and the rest of the API: http://{addr}/openapi.json"
    );
    match &dev {
        Some(dev) => dev.print(&format!("http://{addr}")),
        None => say!(
            "serve: tokens from {}",
            a.tokens
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
        ),
    }
    say!(
        "speed: consuming {:?} into Redis keys {}*",
        a.topic,
        keys.prefix()
    );
    say!(
        "batch: a dirty run every {} (hours with late data, and new complete hours); see them with: viewcount status --store {store_url}",
        a.batch_every
    );

    let base = format!("http://{addr}");
    let mut outcome = Ok(());
    if let Some(n) = a.demo {
        outcome = async {
            let demo_truth = demo(
                &base,
                &bootstrap,
                &a.topic,
                &redis_url,
                &keys,
                loadgen::GenConfig {
                    events: n,
                    signer: demo_key.clone(),
                    ..loadgen::GenConfig::default()
                },
                rules,
            )
            .await?;
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
            say!("\ndemo: every check passed");
            Ok::<(), anyhow::Error>(())
        }
        .await;
    }
    if outcome.is_ok() && !a.exit_after_demo {
        let traffic = match a.demo {
            Some(_) if a.demo_rate > 0.0 => {
                say!(
                    "\nup. Generated traffic goes on at {} events/s (duplicates, late and invalid ones included); send your own with:",
                    a.demo_rate
                );
                Some(tokio::spawn(demo_traffic(
                    base.clone(),
                    a.demo_rate,
                    demo_key.clone(),
                )))
            }
            _ => {
                say!("\nup. Send events with:");
                None
            }
        };
        say!(
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
            ops: ops_view,
        };
        let mut signalled = signals();
        tokio::select! {
            _ = signalled.wait_for(|n| *n >= 1) => {},
            () = live.run(a.summary_every.into()) => {},
        }
        tokio::spawn(async move {
            let _ = signalled.wait_for(|n| *n >= 2).await;
            eprintln!(
                "second signal: closing the open connections now; everything acknowledged is still archived (a third signal exits at once, losing what the embedded Kafka holds unarchived)"
            );
            hurry.stop();
            let _ = signalled.wait_for(|n| *n >= 3).await;
            eprintln!("third signal: exiting now");
            std::process::exit(130);
        });
        if let Some(t) = traffic {
            t.abort();
        }
        say!(
            "\nstopping: ingest first, then everything it acknowledged into the archive and the speed layer ..."
        );
    }
    // Ordered stop: no new acknowledgements, then every acknowledged
    // record archived and applied, then the rest.
    stop_http.stop();
    server.await.context("ingest task")??;
    let drained = drain(store.as_ref(), &bootstrap, &a.topic, &redis_url, &keys).await;
    supervisor.stopping();
    stop.stop();
    speed_task.await.context("speed task")??;
    archive_task.await.context("archive task")??;
    let Ok(()) = scheduler_task.await.context("batch scheduler task")?;
    match &drained {
        Ok(n) => say!(
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
    let mut conn = counters::conn::connect_reader(redis_url)
        .await
        .context("connecting to redis")?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, progress) = store::progress::load(store).await?;
        let applied = counters::read::stored_offsets(&mut conn, keys, partitions).await?;
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
