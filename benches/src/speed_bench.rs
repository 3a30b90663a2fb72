//! Speed-layer benchmarks, each with its baseline in the same run:
//!
//! 1. Throughput: a pre-loaded topic (2 M events, 10 % re-sends) from Kafka
//!    (embedded mock cluster) into Redis counters, end to end; side by side,
//!    the Redis-side ceilings: the same script calls with pre-built arguments
//!    (no Kafka, no decoding), and a raw pipelined client doing the per-event
//!    Redis operations (HSETNX, 3 HINCRBY, PFADD).
//! 2. Freshness: counted-at minus received_at at a steady offered load,
//!    measured from outside: each record's produce time against the first
//!    time Redis's stored offset for its partition passes it (polled every 2 ms).
//! 3. Dedup memory: bytes of Redis memory per remembered event id at 1 M and
//!    10 M ids (`INFO memory`), for the bucketed layout and for plain
//!    `SET id NX EX` keys.
//!
//! Run with `scripts/bench speed`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use chrono::{NaiveDate, Utc};
use clap::Parser;
use counters::apply::{PartitionBatch, Record, Retention, SCRIPT};
use counters::keys::KeySpace;
use infra::kafka::EmbeddedKafka;
use infra::redis::RedisServer;
use loadgen::{GenConfig, Generator};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::{ReceivedEvent, RuleSet};
use speed::SpeedConfig;
use telemetry::ReadyFlag;
use testkit::redis::RedisCluster;
use tokio::sync::oneshot;

use benches::{machine, median, replace_section, spread};

#[derive(Debug, Parser)]
struct Args {
    /// Events pre-loaded for the throughput run.
    #[arg(long, default_value_t = 2_000_000)]
    events: u64,
    /// Throughput repetitions.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Offered load for the freshness run, events/s.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Duration of the freshness run, seconds.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Id counts for the memory run.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000_000u64, 10_000_000])]
    ids: Vec<u64>,
    /// Topic partitions. librdkafka's mock cluster keeps at most 5 MB or
    /// 100 000 records per partition (older ones are deleted), so a 2 M-event
    /// topic needs many partitions.
    #[arg(long, default_value_t = 64)]
    partitions: i32,
    /// Speed-layer batch size (records per batch over all partitions).
    #[arg(long, default_value_t = SpeedConfig::new("", "", "").batch_max)]
    batch: usize,
    /// Dedup buckets per partition per day, as a power of two.
    #[arg(long, default_value_t = 12)]
    bucket_bits: u32,
    /// Which parts to run.
    #[arg(long, value_delimiter = ',', default_values_t = [String::from("throughput"), String::from("freshness"), String::from("memory"), String::from("cluster")])]
    only: Vec<String>,
    /// Replace the speed section of this Markdown file with the results.
    #[arg(long)]
    write: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut sections = Vec::new();
    if args.only.iter().any(|o| o == "throughput") {
        sections.push(throughput(&args).await?);
    }
    if args.only.iter().any(|o| o == "freshness") {
        sections.push(freshness(&args).await?);
    }
    if args.only.iter().any(|o| o == "memory") {
        sections.push(memory(&args).await?);
    }
    // One Redis against a cluster has a section of its own, so either can
    // be rerun alone.
    let cluster_body = if args.only.iter().any(|o| o == "cluster") {
        Some(cluster(&args).await?)
    } else {
        None
    };
    if let Some(body) = &cluster_body {
        write(
            &args,
            "speed-cluster",
            "Speed layer on Redis Cluster",
            "scripts/bench speed --only cluster",
            body,
        )?;
    }
    if !sections.is_empty() {
        write(
            &args,
            "speed",
            "Speed layer",
            "scripts/bench speed",
            &sections.join("\n"),
        )?;
    }
    Ok(())
}

/// Prints `body`, and with `--write` puts it in BENCHMARKS.md's section
/// `name` under `title`, saying how it was run and on what.
fn write(args: &Args, name: &str, title: &str, command: &str, body: &str) -> anyhow::Result<()> {
    println!("{body}");
    if let Some(path) = &args.write {
        let section = format!(
            "<!-- {name}:begin -->\n## {title}\n\nRun: `{command}` (release build) on {}, {}; Redis {} on the same host (child `redis-server` processes, no persistence), Kafka = embedded librdkafka mock cluster, {} partitions.\n\n{body}<!-- {name}:end -->\n",
            machine(),
            Utc::now().format("%Y-%m-%d"),
            redis_version(),
            args.partitions
        );
        replace_section(path, name, &section)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn redis_version() -> String {
    std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .find_map(|w| w.strip_prefix("v=").map(str::to_owned))
        })
        .unwrap_or_else(|| "?".into())
}

/// Valid received events with 10 % exact re-sends. Popularity is only mildly
/// skewed (Zipf 0.5) so no partition outgrows the mock cluster's 5 MB.
fn events(n: u64, seed: u64) -> anyhow::Result<Vec<ReceivedEvent>> {
    let g = Generator::new(GenConfig {
        events: n,
        seed,
        invalid_ratio: 0.0,
        duplicate_ratio: 0.10,
        videos: 10_000,
        users: 200_000,
        zipf_exponent: 0.5,
        ..GenConfig::default()
    })?;
    Ok(g.accepted_at(Utc::now()))
}

fn producer(bootstrap: &str) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()?)
}

async fn preload(p: &FutureProducer, topic: &str, evs: &[ReceivedEvent]) -> anyhow::Result<()> {
    for chunk in evs.chunks(100_000) {
        let payloads: Vec<Vec<u8>> = chunk.iter().map(ReceivedEvent::to_json_bytes).collect();
        let futs: Vec<_> = chunk
            .iter()
            .zip(&payloads)
            .map(|(e, b)| {
                p.send_result(FutureRecord::to(topic).key(&e.event.video_id).payload(b))
                    .map_err(|(e, _)| e)
            })
            .collect::<Result<_, _>>()?;
        for f in futures::future::join_all(futs).await {
            f?.map_err(|(e, _)| e)?;
        }
    }
    Ok(())
}

struct SpeedRun {
    metrics: speed::Metrics,
    stop: oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<speed::Result<()>>,
}

fn start_speed(bootstrap: &str, topic: &str, redis_url: &str, args: &Args) -> SpeedRun {
    let mut c = SpeedConfig::new(bootstrap, topic, redis_url);
    c.batch_max = args.batch;
    c.dedup_bucket_bits = args.bucket_bits;
    c.session_timeout = Duration::from_secs(6);
    let mut reg = prometheus_client::registry::Registry::default();
    let metrics = speed::Metrics::register(&mut reg);
    let (stop, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(speed::run(
        c,
        metrics.clone(),
        ReadyFlag::new("bench"),
        async move {
            let _ = rx.await;
        },
    ));
    SpeedRun {
        metrics,
        stop,
        handle,
    }
}

async fn stored_total(
    conn: &mut counters::conn::RedisConn,
    keys: &KeySpace,
    partitions: i32,
) -> i64 {
    counters::read::stored_offsets(conn, keys, partitions)
        .await
        .map(|v| v.into_iter().map(|o| o.unwrap_or(0)).sum())
        .unwrap_or(0)
}

async fn throughput(args: &Args) -> anyhow::Result<String> {
    eprintln!("throughput: generating {} events ...", args.events);
    let evs = events(args.events, 1)?;
    let distinct = evs
        .iter()
        .map(|e| e.event.event_id)
        .collect::<std::collections::HashSet<_>>()
        .len() as u64;
    let keys = KeySpace::new("vc:", args.bucket_bits);
    let (mut e2e, mut script, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 1..=args.reps {
        let redis = RedisServer::start()?;
        let rate = end_to_end(args, &evs, distinct, &keys, &redis.url()).await?;
        drop(redis);
        eprintln!("rep {rep}: end to end {rate:.0} events/s");
        e2e.push(rate);

        // Ceiling 1: the same script, pre-built arguments, straight to Redis.
        let redis = RedisServer::start()?;
        let rate = script_only(&redis, &keys, &evs, args.partitions, args.batch).await?;
        eprintln!("rep {rep}: script only {rate:.0} events/s");
        script.push(rate);

        // Ceiling 2: raw pipelined per-event operations.
        let redis = RedisServer::start()?;
        let rate = raw_pipelined(&redis, &keys, &evs).await?;
        eprintln!("rep {rep}: raw pipelined {rate:.0} events/s");
        raw.push(rate);
    }
    let row = |name: &str, v: &[f64]| {
        let (lo, hi) = spread(v);
        format!("| {name} | {:.0} | {lo:.0} | {hi:.0} |\n", median(v))
    };
    let m = median(&e2e);
    Ok(format!(
        "### Throughput\n\n{} events pre-loaded (10 % exact re-sends, 10 000 videos with Zipf 0.5 popularity, 200 000 users), batches of up to {} records; {} reps, interleaved. End to end is timed from the first applied batch to the last (consumer-group join excluded).\n\n| path | median events/s | min | max |\n|---|---|---|---|\n{}{}{}\nTarget: >= 100 000 events/s end to end. Measured: {m:.0} — {}.\n",
        evs.len(),
        args.batch,
        args.reps,
        row("Kafka → speed layer → Redis (end to end)", &e2e),
        row("ceiling: same script calls, pre-built, no Kafka", &script),
        row(
            "ceiling: raw pipelined HSETNX + 3×HINCRBY + PFADD per event",
            &raw
        ),
        if m >= 100_000.0 { "met" } else { "NOT met" }
    ))
}

/// Kafka → speed → the Redis at `url`, for `evs` pre-loaded: events/s from
/// the first applied batch (group join excluded) to the last, checked
/// against the `distinct` views the events hold.
async fn end_to_end(
    args: &Args,
    evs: &[ReceivedEvent],
    distinct: u64,
    keys: &KeySpace,
    url: &str,
) -> anyhow::Result<f64> {
    let kafka = EmbeddedKafka::start(1)?;
    kafka.create_topic("bench", args.partitions)?;
    kafka.create_topic("bench-dlq", 1)?;
    let p = producer(kafka.bootstrap_servers())?;
    preload(&p, "bench", evs).await?;
    let mut conn = counters::conn::connect_reader(url).await?;
    let run = start_speed(kafka.bootstrap_servers(), "bench", url, args);
    let (t0, base) = loop {
        let s = stored_total(&mut conn, keys, args.partitions).await;
        if s > 0 {
            break (Instant::now(), s);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    while stored_total(&mut conn, keys, args.partitions).await < evs.len() as i64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = (evs.len() as f64 - base as f64) / t0.elapsed().as_secs_f64();
    let snap = run.metrics.snapshot();
    let _ = run.stop.send(());
    let _ = run.handle.await;
    // The figure only counts if the counts are right.
    let counted: u64 = counters::read::all_counts(&mut conn, keys)
        .await?
        .values()
        .map(|c| c.views)
        .sum();
    if counted != distinct {
        bail!("end to end counted {counted} views, expected {distinct} ({snap:?})");
    }
    Ok(rate)
}

/// One Redis against a three-master Redis Cluster (no replicas: on one
/// machine they would only take CPU from the masters), alternated: end to
/// end events/s, and freshness at the freshness phase's rate.
async fn cluster(args: &Args) -> anyhow::Result<String> {
    eprintln!("cluster: generating {} events ...", args.events);
    let evs = events(args.events, 1)?;
    let distinct = evs
        .iter()
        .map(|e| e.event.event_id)
        .collect::<std::collections::HashSet<_>>()
        .len() as u64;
    let keys = KeySpace::new("vc:", args.bucket_bits);
    let (mut one, mut three) = (Vec::new(), Vec::new());
    for rep in 1..=args.reps {
        let redis = RedisServer::start()?;
        let rate = end_to_end(args, &evs, distinct, &keys, &redis.url()).await?;
        drop(redis);
        eprintln!("rep {rep}: one Redis {rate:.0} events/s");
        one.push(rate);
        let cluster = RedisCluster::start(3, 0)?;
        let rate = end_to_end(args, &evs, distinct, &keys, &cluster.url()).await?;
        drop(cluster);
        eprintln!("rep {rep}: three masters {rate:.0} events/s");
        three.push(rate);
    }
    let redis = RedisServer::start()?;
    let (one_lat, _) = freshness_run(args, &redis.url()).await?;
    drop(redis);
    let cluster = RedisCluster::start(3, 0)?;
    let (three_lat, offered) = freshness_run(args, &cluster.url()).await?;
    drop(cluster);
    let row = |name: &str, v: &[f64], lat: &[f64]| {
        let (lo, hi) = spread(v);
        format!(
            "| {name} | {:.0} | {lo:.0} | {hi:.0} | {:.0} |\n",
            median(v),
            quantile(lat, 0.99)
        )
    };
    let (m1, m3) = (median(&one), median(&three));
    Ok(format!(
        "### One Redis and a Redis Cluster\n\nEnd to end as above ({} events, {} partitions, {} reps alternated), and freshness at an offered {offered:.0} events/s for {} s, against one `redis-server` and against a three-master Redis Cluster (`redis+cluster://`, no replicas) of `redis-server` processes on the same host.\n\n| Redis | median events/s | min | max | freshness p99 ms |\n|---|---|---|---|---|\n{}{}\nOn this 2-core machine the cluster carried {:.2}× one server's rate: one redis-server runs every script on one core, three masters spread them over both (shared with the speed layer and Kafka, so this is not a scaling measurement). Each master applies the scripts of the partitions whose slots it owns: {:.0} events/s per master here. N masters with a core each, and at least N × as many partitions as speed instances need, would carry up to about N × the one-server rate ({:.0} events/s here), until Kafka or the speed consumers bind (more speed instances join the same consumer group). Freshness p99 stays under the 1 s target on both; it is higher on the cluster, where three Redis processes compete for the 2 cores with the rest.\n",
        evs.len(),
        args.partitions,
        args.reps,
        args.seconds,
        row("one redis-server", &one, &one_lat),
        row("Redis Cluster, 3 masters", &three, &three_lat),
        m3 / m1,
        m3 / 3.0,
        m1
    ))
}

/// `q` quantile of `v` (sorted), in ms.
fn quantile(v: &[f64], q: f64) -> f64 {
    v.get(((v.len().max(1) - 1) as f64 * q) as usize)
        .copied()
        .unwrap_or(0.0)
        * 1000.0
}

fn group_by_partition(evs: &[ReceivedEvent], partitions: i32) -> BTreeMap<i32, Vec<Record>> {
    // Any stable assignment will do for the ceiling: the same video, the same partition.
    let mut out: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    for e in evs {
        let h = e
            .event
            .video_id
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        let p = (h % partitions as u32) as i32;
        let v = out.entry(p).or_default();
        let offset = v.len() as i64;
        v.push(Record {
            offset,
            event: e.clone(),
        });
    }
    out
}

async fn script_only(
    redis: &RedisServer,
    keys: &KeySpace,
    evs: &[ReceivedEvent],
    partitions: i32,
    batch: usize,
) -> anyhow::Result<f64> {
    let mut conn = redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await?;
    let retention = Retention {
        dedup_window: speed::defaults::DEDUP_WINDOW,
        counters: speed::defaults::COUNTER_RETENTION,
    };
    let rules = RuleSet::default();
    let mut calls = Vec::new();
    for (p, recs) in group_by_partition(evs, partitions) {
        for chunk in recs.chunks((batch / partitions as usize).max(1)) {
            let first = chunk[0].offset;
            let next = chunk[chunk.len() - 1].offset + 1;
            calls.push(PartitionBatch::build(
                keys,
                p,
                chunk,
                (first, next),
                false,
                &rules,
                &retention,
            ));
        }
    }
    let script = redis::Script::new(SCRIPT);
    let started = Instant::now();
    for c in &calls {
        let mut inv = script.prepare_invoke();
        for k in &c.keys {
            inv.key(k);
        }
        for a in c.args() {
            inv.arg(a);
        }
        let _: Vec<i64> = inv.invoke_async(&mut conn).await?;
    }
    Ok(evs.len() as f64 / started.elapsed().as_secs_f64())
}

async fn raw_pipelined(
    redis: &RedisServer,
    keys: &KeySpace,
    evs: &[ReceivedEvent],
) -> anyhow::Result<f64> {
    let mut conn = redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await?;
    let rules = RuleSet::default();
    let started = Instant::now();
    for chunk in evs.chunks(2_000) {
        let mut pipe = redis::pipe();
        for e in chunk {
            let ev = &e.event;
            let day = ev.occurred_at.date_naive();
            let (dk, field) = keys.dedup(0, day, &ev.event_id);
            let ck = keys.counters(0, &ev.video_id, day);
            let hh = ev.occurred_at.format("%H").to_string();
            pipe.cmd("HSETNX")
                .arg(&dk)
                .arg(field)
                .arg(&counters::apply::fingerprint(e)[..])
                .ignore();
            pipe.cmd("HINCRBY")
                .arg(&ck)
                .arg(format!("{hh}v"))
                .arg(1)
                .ignore();
            pipe.cmd("HINCRBY")
                .arg(&ck)
                .arg(format!("{hh}b"))
                .arg(u8::from(rules.is_billable(ev)))
                .ignore();
            pipe.cmd("HINCRBY")
                .arg(&ck)
                .arg(format!("{hh}w"))
                .arg(ev.watch_seconds)
                .ignore();
            pipe.cmd("PFADD")
                .arg(keys.viewers(0, &ev.video_id, day))
                .arg(&ev.user_id)
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await?;
    }
    Ok(evs.len() as f64 / started.elapsed().as_secs_f64())
}

async fn freshness(args: &Args) -> anyhow::Result<String> {
    eprintln!(
        "freshness: {} events/s for {} s ...",
        args.rate, args.seconds
    );
    let redis = RedisServer::start()?;
    let (lat, offered) = freshness_run(args, &redis.url()).await?;
    let q = |p: f64| quantile(&lat, p);
    let p99 = q(0.99);
    Ok(format!(
        "### Freshness\n\n{} events at an offered {:.0} events/s (paced in 20 ms ticks) for {} s; counted-at is the first 2 ms poll at which Redis's stored offset for the record's partition has passed it; received-at is just before the produce call. So this includes Kafka produce and consume latency, batching (up to 20 ms wait) and the script.\n\n| percentile | ms |\n|---|---|\n| p50 | {:.1} |\n| p90 | {:.1} |\n| p99 | {:.1} |\n| max | {:.1} |\n\nTarget: p99 < 1 s. Measured: {:.0} ms — {}.\n",
        lat.len(),
        offered,
        args.seconds,
        q(0.5),
        q(0.9),
        p99,
        q(1.0),
        p99,
        if p99 < 1000.0 { "met" } else { "NOT met" }
    ))
}

/// Paced traffic through Kafka and speed into the Redis at `url`: each
/// record's seconds from produce to counted (sorted), and the offered rate.
async fn freshness_run(args: &Args, url: &str) -> anyhow::Result<(Vec<f64>, f64)> {
    let total = args.rate * args.seconds;
    let evs = events(total, 2)?;
    let kafka = EmbeddedKafka::start(1)?;
    kafka.create_topic("fresh", args.partitions)?;
    kafka.create_topic("fresh-dlq", 1)?;
    let keys = KeySpace::new("vc:", args.bucket_bits);
    let run = start_speed(kafka.bootstrap_servers(), "fresh", url, args);
    let p = Arc::new(producer(kafka.bootstrap_servers())?);
    // Let the group settle with a trickle before measuring.
    let warm = events(100, 3)?;
    preload(&p, "fresh", &warm).await?;
    let mut conn = counters::conn::connect_reader(url).await?;
    while stored_total(&mut conn, &keys, args.partitions).await < warm.len() as i64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Poller: for each partition, (time, stored offset) samples.
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let partitions = args.partitions;
    let poll_keys = keys.clone();
    let poller = tokio::spawn(async move {
        let mut samples: Vec<(Instant, Vec<i64>)> = Vec::new();
        loop {
            let v = counters::read::stored_offsets(&mut conn, &poll_keys, partitions)
                .await
                .map(|v| v.into_iter().map(|o| o.unwrap_or(0)).collect())
                .unwrap_or_default();
            samples.push((Instant::now(), v));
            tokio::select! {
                _ = &mut stop_rx => break,
                () = tokio::time::sleep(Duration::from_millis(2)) => {}
            }
        }
        samples
    });

    let tick = Duration::from_millis(20);
    let per_tick = (args.rate as usize * 20 / 1000).max(1);
    let started = tokio::time::Instant::now();
    let mut sent: Vec<(i32, i64, Instant)> = Vec::with_capacity(evs.len());
    let mut pending = Vec::new();
    for (i, chunk) in evs.chunks(per_tick).enumerate() {
        tokio::time::sleep_until(started + tick * i as u32).await;
        for e in chunk {
            let mut e = e.clone();
            e.received_at = Utc::now();
            let payload = e.to_json_bytes();
            let at = Instant::now();
            let f = p
                .send_result(
                    FutureRecord::to("fresh")
                        .key(&e.event.video_id)
                        .payload(&payload),
                )
                .map_err(|(e, _)| e)?;
            pending.push((f, at));
        }
    }
    for (f, at) in pending {
        let (partition, offset) = match f.await? {
            Ok(d) => (d.partition, d.offset),
            Err((e, _)) => bail!("produce failed: {e}"),
        };
        sent.push((partition, offset, at));
    }
    let offered = evs.len() as f64 / started.elapsed().as_secs_f64();
    // Wait for the last record, then stop polling.
    let want: i64 = sent.len() as i64 + warm.len() as i64;
    let mut c2 = counters::conn::connect_reader(url).await?;
    while stored_total(&mut c2, &keys, args.partitions).await < want {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(());
    let samples = poller.await?;
    let _ = run.stop.send(());
    let _ = run.handle.await;

    let mut lat: Vec<f64> = Vec::with_capacity(sent.len());
    for (partition, offset, at) in &sent {
        let i = samples
            .partition_point(|(_, v)| v.get(*partition as usize).copied().unwrap_or(0) <= *offset);
        if let Some((t, _)) = samples.get(i) {
            lat.push(t.saturating_duration_since(*at).as_secs_f64());
        }
    }
    lat.sort_by(f64::total_cmp);
    Ok((lat, offered))
}

async fn memory(args: &Args) -> anyhow::Result<String> {
    let keys = KeySpace::new("vc:", 17);
    let day = NaiveDate::from_ymd_opt(2026, 11, 21).unwrap_or_default();
    let mut rows = String::new();
    let mut at_max = 0.0;
    for &n in &args.ids {
        eprintln!("memory: {n} ids ...");
        let bucketed = fill(&keys, n, day, true).await?;
        let plain = fill(&keys, n.min(2_000_000), day, false).await?;
        rows.push_str(&format!(
            "| {n} | {bucketed:.1} | {plain:.1}{} |\n",
            if n > 2_000_000 { " (at 2 M)" } else { "" }
        ));
        at_max = bucketed;
    }
    Ok(format!(
        "### Dedup memory\n\n`used_memory` growth of a fresh Redis divided by the number of remembered ids (random v4 UUIDs, one occurred-at day, 2^17 buckets: the speed layer's own key layout and 4-byte payload fingerprints), next to one `SET <uuid> 1 NX EX 172800` key per id.\n\n| ids | bucketed hashes, bytes/id | plain SET NX EX keys, bytes/id |\n|---|---|---|\n{rows}\nTarget: <= 32 bytes per id at 10 M ids. Measured: {at_max:.1} — {}.\n",
        if at_max <= 32.0 { "met" } else { "NOT met" }
    ))
}

async fn fill(keys: &KeySpace, n: u64, day: NaiveDate, bucketed: bool) -> anyhow::Result<f64> {
    use rand::{Rng, SeedableRng};
    let redis = RedisServer::start()?;
    // 10 000-command pipelines: a slow machine can take longer than the
    // client's default response timeout to answer one.
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(120)));
    let mut conn = redis::Client::open(redis.url())?
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let used = |info: String| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let before: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(n);
    let mut left = n;
    while left > 0 {
        let k = left.min(10_000);
        let mut pipe = redis::pipe();
        for _ in 0..k {
            let id = uuid::Builder::from_random_bytes(rng.random()).into_uuid();
            if bucketed {
                let (dk, field) = keys.dedup(0, day, &id);
                pipe.cmd("HSETNX")
                    .arg(dk)
                    .arg(field)
                    .arg(&[1u8, 2, 3, 4][..])
                    .ignore();
            } else {
                pipe.cmd("SET")
                    .arg(id.hyphenated().to_string())
                    .arg(1)
                    .arg("NX")
                    .arg("EX")
                    .arg(172_800)
                    .ignore();
            }
        }
        let () = pipe.query_async(&mut conn).await?;
        left -= k;
    }
    if bucketed {
        // The speed layer sets one expiry per dedup hash.
        let _: () = redis::cmd("EVAL")
            .arg("for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('EXPIRE', k, 172800) end")
            .arg(0)
            .arg(format!("{}*:dd:*", keys.prefix()))
            .query_async(&mut conn)
            .await?;
    }
    let after: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await?;
    Ok((used(after) - used(before)) as f64 / n as f64)
}
