//! `viewcount up`: the whole pipeline in one process on embedded defaults.
//!
//! Today that is ingest and the speed layer, on an embedded mock-cluster Kafka
//! and a child `redis-server`; later layers join here as they are built.
//! `--demo N` pushes N generated events through ingest, then shows what reached
//! Kafka and what the speed layer counted, each checked against the truth.

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
use crate::speed_cmd::SpeedFlags;
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
    /// Stop after the demo instead of serving until Ctrl-C.
    #[arg(long, requires = "demo")]
    exit_after_demo: bool,
    /// Object store URL; default with the embedded Kafka: a fresh
    /// file://$PWD/data/up-<time> per run (archive progress belongs to one
    /// Kafka cluster), else file://$PWD/data.
    #[arg(long, env = "VIEWCOUNT_STORE")]
    store: Option<String>,
    #[command(flatten)]
    ingest: IngestFlags,
    #[command(flatten)]
    speed: SpeedFlags,
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

    let producer = Arc::new(a.ingest.producer(&bootstrap, &a.topic)?);
    let speed_config = a.speed.config(&bootstrap, &a.topic, &redis_url, rules)?;
    let keys = KeySpace::new(&speed_config.key_prefix, speed_config.dedup_bucket_bits);
    let mut ops = OpsBuilder::new();
    let ingest_metrics = ingest::server::register(&mut ops, &producer);
    let speed_metrics = speed::Metrics::register(ops.registry());
    let speed_ready = ops.flag("redis");
    let archive_metrics = archive::ArchiveMetrics::register(ops.registry());
    let archive_ready = ops.flag("archive");
    let ops = ops.build();
    let app = ingest::server::router(a.ingest.config(rules), producer.clone(), ingest_metrics)
        .merge(ops.router())
        .fallback(telemetry::not_found);

    let listener = bind(&a.listen).await?;
    let addr = listener.local_addr()?;
    let stop = Stop::new();
    let server = tokio::spawn({
        let stop = stop.wait();
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
    println!("ingest: http://{addr}/v1/events  (also /healthz /readyz /metrics)");
    println!(
        "speed: consuming {:?} into Redis keys {}*",
        a.topic,
        keys.prefix()
    );

    let mut outcome = Ok(());
    if let Some(n) = a.demo {
        outcome = async {
            let base = format!("http://{addr}");
            let truth = demo(&base, &bootstrap, &a.topic, &redis_url, &keys, n, rules).await?;
            demo_batch(store.clone(), &store_url, &truth, &redis_url, &keys, rules).await
        }
        .await;
    }
    if outcome.is_ok() && !a.exit_after_demo {
        println!(
            "\nup. Send events with:\n  curl -s -H 'content-type: application/json' http://{addr}/v1/events -d '{{\"event_id\":\"{}\",\"video_id\":\"v1\",\"user_id\":\"u1\",\"occurred_at\":\"{}\",\"watch_seconds\":42,\"revenue_eligible\":true}}'\nCtrl-C to stop. Live totals every 5 s:",
            uuid::Uuid::new_v4(),
            schemas::event::format_timestamp(&Utc::now())
        );
        let live = async {
            let mut last = speed_metrics.snapshot();
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                let s = speed_metrics.snapshot();
                if s != last {
                    println!(
                        "speed: {} views counted (+{}), {} duplicates dropped ({} conflicting), {} dead-lettered",
                        s.counted,
                        s.counted - last.counted,
                        s.duplicates,
                        s.conflicts,
                        s.dead_lettered
                    );
                    last = s;
                }
            }
        };
        tokio::select! {
            () = shutdown_signal() => {},
            () = live => {},
        }
    }
    stop.stop();
    server.await.context("ingest task")??;
    speed_task.await.context("speed task")??;
    archive_task.await.context("archive task")??;
    outcome
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
    let mut top: BTreeMap<String, u64> = BTreeMap::new();
    for ((video, _), c) in &counted {
        *top.entry(video.clone()).or_default() += c.views;
    }
    let mut top: Vec<(String, u64)> = top.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let top: Vec<String> = top
        .iter()
        .take(5)
        .map(|(v, n)| format!("{v}={n}"))
        .collect();
    println!("top videos: {}", top.join(" "));
    Ok(truth)
}

/// Waits for the archive, runs batch over the demo's hours, and checks it
/// against the truth and against the speed layer.
async fn demo_batch(
    store: Arc<dyn object_store::ObjectStore>,
    store_url: &str,
    truth: &Truth,
    redis_url: &str,
    keys: &KeySpace,
    rules: RuleSet,
) -> anyhow::Result<()> {
    let rows = truth.rows();
    let (Some(from), Some(last)) = (
        rows.iter().map(|r| r.hour).min(),
        rows.iter().map(|r| r.hour).max(),
    ) else {
        return Ok(());
    };
    let to = last + chrono::Duration::hours(1);
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
    let opts = batch::run::RunOptions {
        // The demo's hours are still open: compute them anyway, to show.
        allow_incomplete: true,
        rules,
        ..batch::run::RunOptions::new(from, to)
    };
    println!(
        "\nbatch: recomputing [{from}, {to}) from the raw archive (hours still open, so --allow-incomplete) ..."
    );
    let report = crate::batch_cmd::run_with_progress(store.clone(), &opts).await?;
    crate::batch_cmd::print_summary(&report, false);
    let views = store::views::load_views(store.as_ref(), &report.manifest.run_id).await?;
    let want: store::ViewsTable = rows
        .iter()
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
        bail!("batch counts differ from the generator's truth");
    }
    println!(
        "check: batch equals the truth per video per hour (views, billable, fraud-filtered, watch seconds)"
    );
    demo_catalog(store.as_ref(), &views).await?;
    let mut conn = speed::conn::connect_reader(redis_url)
        .await
        .context("connecting to redis")?;
    let speed = speed::read::all_counts(&mut conn, keys).await?;
    let agree = views
        .iter()
        .filter(|(k, v)| {
            speed.get(*k).is_some_and(|c| {
                c.views == v[0] && c.billable_views == v[1] + v[2] && c.watch_seconds == v[3]
            })
        })
        .count();
    if agree != views.len() || speed.len() != views.len() {
        bail!(
            "speed and batch disagree on {} video-hours",
            views.len() - agree
        );
    }
    println!(
        "check: speed and batch agree on all {agree} video-hours (speed billable = batch billable + fraud-filtered)\nrerun it: viewcount batch run --store {store_url} --from {} --to {} --allow-incomplete",
        from.format("%Y-%m-%dT%H:%M:%SZ"),
        to.format("%Y-%m-%dT%H:%M:%SZ")
    );
    Ok(())
}

/// Puts the generated videos' catalog in force and shows which views it
/// attributes to creators; views of videos it leaves out are reported as
/// unattributed, never dropped.
async fn demo_catalog(
    store: &dyn object_store::ObjectStore,
    views: &store::ViewsTable,
) -> anyhow::Result<()> {
    let g = GenConfig::default();
    let (bytes, _, _) = crate::gen_cmd::catalog_csv(g.videos, g.seed)?;
    let (catalog, cur) = store::catalog::import(store, bytes.into()).await?;
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
        "catalog: {} ({} videos of {} creators) in force; of {total} batch views {attributed} are attributed to creators and {unattributed} unattributed (videos not in the catalog: {}{})",
        cur.path,
        cur.videos,
        cur.creators,
        shown.join(" "),
        if missing.len() > shown.len() {
            " ..."
        } else {
            ""
        }
    );
    Ok(())
}
