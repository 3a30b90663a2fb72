//! Ingest throughput: events/s answered 202 (after broker ack) for requests of
//! 1, 100 and 1 000 events, and of 1 000 events each with a signed playback
//! token that ingest verifies (Ed25519), against the embedded mock-cluster
//! Kafka, with the ceiling measured side by side in the same run: the same
//! events produced directly with rdkafka (same producer settings) from this
//! process.
//!
//! Run with `scripts/bench` (release build). `--write BENCHMARKS.md` replaces the
//! ingest section of that file with the figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use chrono::Utc;
use clap::Parser;
use futures::StreamExt;
use infra::kafka::EmbeddedKafka;
use ingest::{EventProducer, IngestConfig, PlaybackPolicy, ProducerConfig};
use loadgen::{GenConfig, Generator};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::{ReceivedEvent, ValidationContext};
use serde_json::Value;
use tokio::sync::oneshot;

use benches::{machine, median, replace_section};

#[derive(Debug, Parser)]
struct Args {
    /// Measurements per scenario; scenarios are interleaved round by round.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Events per measurement for 100- and 1000-event requests and the ceiling.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Events per measurement for 1-event requests (each is an HTTP round trip).
    #[arg(long, default_value_t = 20_000)]
    single_events: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Topic partitions.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Replace the ingest section of this Markdown file with the results.
    #[arg(long)]
    write: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Scenario {
    Ceiling,
    Ingest(usize),
    /// Requests of this many events, every one signed and verified.
    Signed(usize),
}

impl Scenario {
    fn label(self) -> String {
        match self {
            Scenario::Ceiling => "direct rdkafka produce (ceiling)".into(),
            Scenario::Ingest(n) => format!("ingest, {n}-event requests"),
            Scenario::Signed(n) => {
                format!("ingest, {n}-event requests, signed tokens verified")
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let events = make_events(args.events, None)?;
    let signer = Arc::new(playback::PlaybackSigner::from_seed("bench", [7; 32])?);
    let keys = Arc::new(playback::Keyring::of(&[&signer]));
    let signed = make_events(args.events, Some(signer))?;
    let scenarios = [
        Scenario::Ceiling,
        Scenario::Ingest(1),
        Scenario::Ingest(100),
        Scenario::Ingest(1000),
        Scenario::Signed(1000),
    ];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); scenarios.len()];
    for rep in 1..=args.reps {
        for (i, s) in scenarios.iter().enumerate() {
            let n = match s {
                Scenario::Ingest(1) => args.single_events,
                _ => args.events,
            };
            let input = match s {
                Scenario::Signed(_) => &signed[..n],
                _ => &events[..n],
            };
            let rate = measure(*s, input, &keys, &args).await?;
            eprintln!(
                "rep {rep}/{}: {:<36} {:>10.0} events/s",
                args.reps,
                s.label(),
                rate
            );
            results[i].push(rate);
        }
    }

    let ceiling = median(&results[0]);
    let mut table = String::from(
        "| scenario | events per run | median events/s | min | max | % of ceiling |\n|---|---|---|---|---|---|\n",
    );
    for (s, r) in scenarios.iter().zip(&results) {
        let n = match s {
            Scenario::Ingest(1) => args.single_events,
            _ => args.events,
        };
        let m = median(r);
        table.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} % |\n",
            s.label(),
            n,
            m,
            r.iter().copied().fold(f64::INFINITY, f64::min),
            r.iter().copied().fold(0.0, f64::max),
            100.0 * m / ceiling
        ));
    }
    let ratio = median(&results[3]) / ceiling;
    let verdict = format!(
        "Target: 1 000-event requests reach >= 50 % of the ceiling. Measured: {:.0} % — {}. \
         Signed and verified, 1 000-event requests run at {:.0} % of the unsigned rate in the same run.",
        100.0 * ratio,
        if ratio >= 0.5 { "met" } else { "NOT met" },
        100.0 * median(&results[4]) / median(&results[3]),
    );
    println!("\n{table}\n{verdict}");

    if let Some(path) = &args.write {
        let section = format!(
            "<!-- ingest:begin -->\n## Ingest throughput\n\nRun: `scripts/bench` ({} reps per scenario, interleaved; {} requests in flight; topic of {} partitions on the embedded librdkafka mock cluster, 1 broker; producer idempotent, acks=all, lz4; release build). Measured {} on {}.\n\nEach ingest run starts a fresh cluster and ingest server in this process, warms up with one request, then times from the first request to the last 202 (every event acknowledged by the broker). Request bodies are serialized before timing. The ceiling produces the same records (key, payload, limits header) with rdkafka directly (same producer settings), from enqueue of the first to acknowledgement of the last. In the signed scenario every event carries its own Ed25519 playback token (one playback per view, as the generator signs) and ingest runs with tokens required, so each event costs one signature verification (off the runtime's workers for requests of more than 8 events).\n\n{table}\n{verdict}\n<!-- ingest:end -->\n",
            args.reps,
            args.concurrency,
            args.partitions,
            Utc::now().format("%Y-%m-%d"),
            machine()
        );
        replace_section(path, "ingest", &section)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Valid, distinct events (no duplicates, no invalid ones), each with its
/// own signed playback token if `signer` is given.
fn make_events(
    n: usize,
    signer: Option<Arc<playback::PlaybackSigner>>,
) -> anyhow::Result<Vec<Value>> {
    let g = Generator::new(GenConfig {
        signer,
        events: n as u64,
        duplicate_ratio: 0.0,
        invalid_ratio: 0.0,
        late_ratio: 0.0,
        videos: 10_000,
        users: 100_000,
        ..GenConfig::default()
    })?;
    Ok(g.map(|e| e.value).collect())
}

async fn measure(
    s: Scenario,
    events: &[Value],
    keys: &Arc<playback::Keyring>,
    args: &Args,
) -> anyhow::Result<f64> {
    let kafka = EmbeddedKafka::start(1)?;
    kafka.create_topic("bench", args.partitions)?;
    let pc = ProducerConfig::new(kafka.bootstrap_servers(), "bench");
    let rate = match s {
        Scenario::Ceiling => ceiling(&pc, events).await?,
        Scenario::Ingest(size) => {
            through_ingest(
                &pc,
                events,
                size,
                args.concurrency,
                PlaybackPolicy::Unchecked,
            )
            .await?
        }
        Scenario::Signed(size) => {
            let policy = PlaybackPolicy::Verify {
                keys: keys.clone(),
                required: true,
            };
            through_ingest(&pc, events, size, args.concurrency, policy).await?
        }
    };
    drop(kafka);
    Ok(rate)
}

async fn ceiling(pc: &ProducerConfig, events: &[Value]) -> anyhow::Result<f64> {
    let producer: FutureProducer = pc.client_config().create()?;
    let ctx = ValidationContext::at(Utc::now());
    let received: Vec<ReceivedEvent> = events
        .iter()
        .map(|v| schemas::parse_event(v, &ctx).map(|e| ReceivedEvent::new(e, Utc::now())))
        .collect::<Result<_, _>>()?;
    let payloads: Vec<(String, Vec<u8>)> = received
        .iter()
        .map(|e| (e.event.video_id.clone(), e.to_json_bytes()))
        .collect();
    // The same records ingest produces: key, payload and the acceptance
    // limits header every consumer checks.
    let limits = schemas::RuleSet::default().limits_header();
    let limits_header = || {
        OwnedHeaders::new_with_capacity(1).insert(Header {
            key: schemas::rules::LIMITS_HEADER,
            value: Some(limits.as_str()),
        })
    };
    // Warm-up: connection and producer id.
    producer
        .send(
            FutureRecord::to("bench")
                .key(&payloads[0].0)
                .payload(&payloads[0].1),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    let started = Instant::now();
    let mut pending = Vec::with_capacity(payloads.len());
    for (key, payload) in &payloads {
        loop {
            let record = FutureRecord::to("bench")
                .key(key)
                .payload(payload)
                .headers(limits_header());
            match producer.send_result(record) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err((e, _)) => {
                    if !matches!(
                        e,
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull
                        )
                    ) {
                        bail!("produce failed: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    for f in futures::future::join_all(pending).await {
        f?.map_err(|(e, _)| e)?;
    }
    Ok(payloads.len() as f64 / started.elapsed().as_secs_f64())
}

async fn through_ingest(
    pc: &ProducerConfig,
    events: &[Value],
    size: usize,
    concurrency: usize,
    playback: PlaybackPolicy,
) -> anyhow::Result<f64> {
    let producer = Arc::new(EventProducer::new(pc)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/events", listener.local_addr()?);
    let (stop, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(ingest::run(
        listener,
        IngestConfig {
            playback,
            ..IngestConfig::default()
        },
        producer,
        async move {
            let _ = rx.await;
        },
    ));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let bodies: Vec<Bytes> = events
        .chunks(size)
        .map(|c| Bytes::from(serde_json::to_vec(c).unwrap_or_default()))
        .collect();
    // Warm-up: connection, producer id, first metadata.
    post(&client, &url, bodies[0].clone()).await?;

    let started = Instant::now();
    let mut answers = futures::stream::iter(bodies.iter().cloned())
        .map(|b| post(&client, &url, b))
        .buffer_unordered(concurrency);
    let mut accepted = 0usize;
    while let Some(n) = answers.next().await {
        accepted += n?;
    }
    let elapsed = started.elapsed();
    if accepted != events.len() {
        bail!("only {accepted} of {} events were accepted", events.len());
    }
    let _ = stop.send(());
    server.await??;
    Ok(accepted as f64 / elapsed.as_secs_f64())
}

async fn post(client: &reqwest::Client, url: &str, body: Bytes) -> anyhow::Result<usize> {
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = r.status();
    let v: Value = r.json().await?;
    if status.as_u16() != 202 {
        bail!("ingest answered {status}: {v}");
    }
    Ok(v["accepted"].as_u64().unwrap_or(0) as usize)
}
