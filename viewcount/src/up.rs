//! `viewcount up`: the whole pipeline in one process on embedded defaults.
//!
//! Today that is ingest on an embedded mock-cluster Kafka; later layers join it
//! here as they are built. `--demo N` pushes N generated events through ingest
//! and reads the topic back to show what reached Kafka.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use infra::kafka::{EmbeddedKafka, read_topic};
use loadgen::{GenConfig, Generator, SendConfig, Truth};
use schemas::{CountingRules, ReceivedEvent, ValidationContext};
use telemetry::OpsBuilder;
use tokio::sync::oneshot;

use crate::ingest_cmd::IngestFlags;
use crate::util::shutdown_signal;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Kafka bootstrap servers; default: an embedded mock cluster on loopback.
    #[arg(long, env = "VIEWCOUNT_KAFKA")]
    kafka: Option<String>,
    /// The event topic.
    #[arg(long, env = "VIEWCOUNT_TOPIC", default_value = "view-events")]
    topic: String,
    /// Partitions of the topic when the embedded cluster creates it.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// HTTP listen address.
    #[arg(long, env = "VIEWCOUNT_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Send this many generated events through ingest at start, then show what
    /// reached Kafka.
    #[arg(long, value_name = "EVENTS", num_args = 0..=1, default_missing_value = "20000")]
    demo: Option<u64>,
    /// Stop after the demo instead of serving until Ctrl-C.
    #[arg(long, requires = "demo")]
    exit_after_demo: bool,
    #[command(flatten)]
    flags: IngestFlags,
}

pub(crate) async fn run(a: Args) -> anyhow::Result<()> {
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
            println!(
                "kafka: embedded mock cluster at {} (topic {:?}, {} partitions; in memory, gone when this process stops)",
                embedded.bootstrap_servers(),
                a.topic,
                a.partitions
            );
            embedded.bootstrap_servers().to_owned()
        }
    };

    let producer = Arc::new(a.flags.producer(&bootstrap, &a.topic)?);
    let mut ops = OpsBuilder::new();
    let ingest_metrics = ingest::server::register(&mut ops, &producer);
    let ops = ops.build();
    let app = ingest::server::router(a.flags.config()?, producer.clone(), ingest_metrics)
        .merge(ops.router())
        .fallback(ingest::server::not_found);

    let listener = tokio::net::TcpListener::bind(&a.listen).await.with_context(|| {
        format!(
            "cannot listen on {}; is another viewcount running? pick another with --listen / VIEWCOUNT_LISTEN",
            a.listen
        )
    })?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let served = ingest::server::serve(listener, app, ops, async move {
            let _ = stop_rx.await;
        })
        .await;
        if let Err(e) = producer.flush().await {
            tracing::warn!(error = %e, "producer flush on shutdown incomplete");
        }
        served
    });
    println!("ingest: http://{addr}/v1/events  (also /healthz /readyz /metrics)");

    let mut outcome = Ok(());
    if let Some(n) = a.demo {
        outcome = demo(&format!("http://{addr}"), &bootstrap, &a.topic, n).await;
    }
    if outcome.is_ok() && !a.exit_after_demo {
        println!(
            "\nup. Send events with:\n  curl -s -H 'content-type: application/json' http://{addr}/v1/events -d '{{\"event_id\":\"{}\",\"video_id\":\"v1\",\"user_id\":\"u1\",\"occurred_at\":\"{}\",\"watch_seconds\":42,\"revenue_eligible\":true}}'\nCtrl-C to stop.",
            uuid::Uuid::new_v4(),
            schemas::event::format_timestamp(&Utc::now())
        );
        shutdown_signal().await;
    }
    let _ = stop_tx.send(());
    server.await.context("ingest task")??;
    outcome
}

/// Sends `n` generated events through ingest, then reads the topic back and
/// checks it against the generator's truth.
async fn demo(base: &str, bootstrap: &str, topic: &str, n: u64) -> anyhow::Result<()> {
    let generator = Generator::new(GenConfig {
        events: n,
        ..GenConfig::default()
    })?;
    let mut truth = Truth::new(CountingRules::default());
    println!("\ndemo: sending {n} generated events (10% re-sends, 5% late, 2% invalid) ...");
    let cfg = SendConfig::new(format!("{base}/v1/events"));
    let report = loadgen::send(generator, &cfg, &mut truth, |_| {}).await?;
    println!("demo: {}", crate::gen_cmd::summary(&report));

    let (bs, t) = (bootstrap.to_owned(), topic.to_owned());
    let records =
        tokio::task::spawn_blocking(move || read_topic(&bs, &t, Duration::from_secs(60))).await??;
    let mut per_partition: BTreeMap<i32, u64> = BTreeMap::new();
    let mut from_kafka = Truth::new(CountingRules::default());
    let limits = ValidationContext::at(Utc::now());
    for r in &records {
        *per_partition.entry(r.partition).or_default() += 1;
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
    let mut top: Vec<(String, u64)> = BTreeMap::from_iter(truth.rows().into_iter().fold(
        BTreeMap::<String, u64>::new(),
        |mut m, r| {
            *m.entry(r.video_id).or_default() += r.views;
            m
        },
    ))
    .into_iter()
    .collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let top: Vec<String> = top
        .iter()
        .take(5)
        .map(|(v, n)| format!("{v}={n}"))
        .collect();
    println!(
        "check: every accepted event is in Kafka, keyed by video_id; views per video-hour match the generator's truth exactly ({} views, {} video-hours)\ntop videos: {}",
        truth.views(),
        truth.rows().len(),
        top.join(" ")
    );
    Ok(())
}
