//! `serve-bench`: the serving API under open-loop load.
//!
//! Builds a published state of `--videos` videos over `--days` days with
//! Zipf-shaped presence (popular videos every hour, the tail sparse), a
//! catalog with one creator of 100 videos, and speed counters in a real
//! `redis-server` for the hours after the watermark; serves it in-process
//! and offers requests at a fixed rate (each scheduled at its own instant and
//! timed from it, so a slow server cannot slow the offered load and hide its
//! own latency). Side by side in each repetition: `/healthz` (the floor: the
//! same server, client and load with nothing to compute), video totals, a
//! creator listing of 100 videos, and video totals while the whole state is
//! reloaded.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use clap::Parser;
use counters::keys::KeySpace;
use infra::redis::RedisServer;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serving::api::ApiConfig;
use serving::metrics::Metrics;
use serving::source::TokensFile;
use serving::speed_part::SpeedConfig;
use serving::tokens::{Role, Tokens, new_token};
use serving::{ServeOptions, Serving};
use store::views::{ViewRow, views_batch};
use telemetry::OpsBuilder;
use tokio_util::sync::CancellationToken;

use benches::{machine, median, replace_section, spread};

#[derive(Debug, Parser)]
struct Args {
    /// Videos in the published state.
    #[arg(long, default_value_t = 10_000)]
    videos: u32,
    /// Days of published hours.
    #[arg(long, default_value_t = 90)]
    days: i64,
    /// Offered load of the totals and floor runs, requests/s.
    #[arg(long, default_value_t = 5_000)]
    rate: u64,
    /// Offered load of the creator-listing run, requests/s.
    #[arg(long, default_value_t = 500)]
    listing_rate: u64,
    /// Seconds per measured run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Repetitions (each runs every kind once, side by side).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Replace the serve section of this Markdown file with the results.
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

const PARTITIONS: i32 = 4;
const CREATOR: &str = "bench-creator";

/// One measured run.
struct Run {
    achieved: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    errors: u64,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = store::layout::open(&format!("file://{}", dir.path().display()))?;
    let now = Utc::now();
    let this_hour = schemas::rules::hour_bucket(now);
    let w = this_hour - TimeDelta::hours(3);
    let first = w - TimeDelta::days(args.days);
    let video_hours = build_state(store.as_ref(), &args, first, w).await?;
    eprintln!(
        "published {video_hours} video-hours of {} videos",
        args.videos
    );

    let redis = RedisServer::start()?;
    let keys = KeySpace::new(
        speed::defaults::KEY_PREFIX,
        speed::defaults::DEDUP_BUCKET_BITS,
    );
    build_speed(
        &redis.url(),
        &keys,
        &args,
        w,
        this_hour + TimeDelta::hours(1),
    )
    .await?;

    let (secret, table) = new_token("bench", Role::Admin, None)?;
    let mut ops = OpsBuilder::new();
    let metrics = Metrics::register(ops.registry());
    let tokens = Arc::new(TokensFile::fixed(Tokens::parse(&table)?, metrics.clone()));
    let cancel = CancellationToken::new();
    let options = ServeOptions {
        api: ApiConfig {
            rate_per_second: None,
            ..ApiConfig::default()
        },
        speed: SpeedConfig::new(redis.url()),
        tokens: Default::default(),
        reload_every: Duration::from_millis(500),
        http: telemetry::http::Limits::default(),
    };
    let load_started = Instant::now();
    let serving = Serving::start_with(
        &mut ops,
        store.clone(),
        options,
        tokens,
        metrics,
        cancel.clone(),
    )
    .await?;
    let load_seconds = load_started.elapsed().as_secs_f64();
    let index = serving.source.snapshot().index.clone();
    let bytes_per = index.resident_bytes() as f64 / index.video_hours().max(1) as f64;
    eprintln!(
        "index: {} video-hours, {:.1} bytes each, loaded in {load_seconds:.1} s",
        index.video_hours(),
        bytes_per
    );
    drop(index);
    let ops = ops.build();
    let app = serving.router.merge(ops.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let c = cancel.clone();
    tokio::spawn(telemetry::serve(listener, app, ops, async move {
        c.cancelled().await
    }));

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()?;
    let auth = format!("Bearer {secret}");
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let zipf = rand_distr::Zipf::new(f64::from(args.videos), 1.0)?;
    let videos: Vec<String> = (0..4096)
        .map(|_| format!("b{:05}", rng.sample(zipf) as u32 - 1))
        .collect();
    let totals_paths: Arc<Vec<String>> = Arc::new(
        videos
            .iter()
            .map(|v| format!("/v1/videos/{v}/views"))
            .collect(),
    );
    let floor_paths = Arc::new(vec!["/healthz".to_owned()]);
    let listing_paths = Arc::new(vec![format!("/v1/creators/{CREATOR}/views?limit=100")]);
    // Warm-up.
    offer(&client, &base, &auth, &totals_paths, args.rate, 2).await;

    let mut results: BTreeMap<&str, Vec<Run>> = BTreeMap::new();
    for rep in 0..args.reps {
        eprintln!("repetition {}", rep + 1);
        let floor = offer(&client, &base, &auth, &floor_paths, args.rate, args.seconds).await;
        results.entry("floor").or_default().push(floor);
        let totals = offer(
            &client,
            &base,
            &auth,
            &totals_paths,
            args.rate,
            args.seconds,
        )
        .await;
        results.entry("totals").or_default().push(totals);
        let listing = offer(
            &client,
            &base,
            &auth,
            &listing_paths,
            args.listing_rate,
            args.seconds,
        )
        .await;
        results.entry("listing").or_default().push(listing);
        // The whole state reloaded under load: a new published state with
        // every hour, which serving loads beside the old one and swaps in.
        let before = serving.source.snapshot().index.seq();
        let (s, republish) = (store.clone(), (first, w));
        let reload = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let m = store::manifest::load(s.as_ref(), "bench-run", None, "the benchmark").await?;
            let sha = store::layout::sha256(&store::layout::json_bytes(&m)?);
            anyhow::Ok(
                batch::publish::publish(s.as_ref(), "bench-run", &sha, republish.0, republish.1)
                    .await?,
            )
        });
        let during = offer(
            &client,
            &base,
            &auth,
            &totals_paths,
            args.rate,
            args.seconds,
        )
        .await;
        reload.await??;
        let after = serving.source.snapshot().index.seq();
        anyhow::ensure!(
            after > before,
            "the reload did not land during the run ({before:?} → {after:?})"
        );
        results.entry("reload").or_default().push(during);
    }
    cancel.cancel();

    let row = |name: &str, what: &str, rate: u64| {
        let runs = &results[name];
        let p = |f: fn(&Run) -> f64| {
            let v: Vec<f64> = runs.iter().map(f).collect();
            let (lo, hi) = spread(&v);
            format!("{:.2} ({:.2}–{:.2})", median(&v), lo, hi)
        };
        let errors: u64 = runs.iter().map(|r| r.errors).sum();
        format!(
            "| {what} | {rate} | {} | {} | {} | {} | {errors} |\n",
            p(|r| r.achieved),
            p(|r| r.p50),
            p(|r| r.p99),
            p(|r| r.p999),
        )
    };
    let floor_p99 = median(&results["floor"].iter().map(|r| r.p99).collect::<Vec<_>>());
    let totals_p99 = median(&results["totals"].iter().map(|r| r.p99).collect::<Vec<_>>());
    let body = format!(
        "{video_hours} batch video-hours of {} videos over {} days (Zipf presence: the top videos every hour, the tail sparse), speed counters for the {} hours after the watermark in Redis, a creator with 100 videos. Open-loop load (each request timed from its scheduled instant), {} s per run, {} repetitions; median (min–max) over repetitions; latencies in ms.\n\n\
| request | offered req/s | achieved req/s | p50 | p99 | p99.9 | errors |\n|---|---|---|---|---|---|---|\n{}{}{}{}\n\
- Video totals p99 / floor p99: **{:.2}×** (target ≤ 3×; target p99 < 5 ms at 5 000 req/s).\n\
- Batch index: **{bytes_per:.1} bytes per video-hour** resident (target ≤ 48), loaded in {load_seconds:.1} s.\n\
- Reload: each repetition publishes a new state of every hour mid-run; the index is rebuilt beside the old one and swapped (the reload row).\n",
        args.videos,
        args.days,
        4,
        args.seconds,
        args.reps,
        row("floor", "`/healthz` (floor)", args.rate),
        row("totals", "video totals", args.rate),
        row("listing", "creator listing, 100 videos", args.listing_rate),
        row("reload", "video totals during a full reload", args.rate),
        totals_p99 / floor_p99.max(1e-9),
    );
    println!("{body}");
    if let Some(path) = &args.write {
        let section = format!(
            "<!-- serve:begin -->\n## Serving\n\nRun: `scripts/bench serve` (release build) on {}, {}; server, load generator (reqwest, in the same process) and Redis (child `redis-server`) on the same host.\n\n{body}<!-- serve:end -->\n",
            machine(),
            Utc::now().format("%Y-%m-%d"),
        );
        replace_section(path, "serve", &section)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Offers `rate` requests/s for `seconds`, cycling through `paths`.
async fn offer(
    client: &reqwest::Client,
    base: &str,
    auth: &str,
    paths: &Arc<Vec<String>>,
    rate: u64,
    seconds: u64,
) -> Run {
    let n = rate * seconds;
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<f64>>();
    for i in 0..n {
        let at = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(at).await;
        let req = client
            .get(format!("{base}{}", paths[(i as usize) % paths.len()]))
            .header("authorization", auth);
        let tx = tx.clone();
        tokio::spawn(async move {
            let ok = match req.send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            let took = tokio::time::Instant::now().duration_since(at).as_secs_f64() * 1000.0;
            let _ = tx.send(ok.then_some(took));
        });
    }
    drop(tx);
    let mut lat = Vec::with_capacity(n as usize);
    let mut errors = 0;
    while let Some(r) = rx.recv().await {
        match r {
            Some(ms) => lat.push(ms),
            None => errors += 1,
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Run {
        achieved: lat.len() as f64 / elapsed,
        p50: q(0.50),
        p99: q(0.99),
        p999: q(0.999),
        errors,
    }
}

/// Writes one run's views of `[first, w)` and publishes it with a catalog;
/// returns the video-hours written.
async fn build_state(
    store: &dyn object_store::ObjectStore,
    args: &Args,
    first: DateTime<Utc>,
    w: DateTime<Utc>,
) -> anyhow::Result<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let hours = (w - first).num_hours();
    let ids: Vec<String> = (0..args.videos).map(|v| format!("b{v:05}")).collect();
    let mut rows: Vec<(u32, i64)> = Vec::new();
    for (rank, _) in ids.iter().enumerate() {
        // Presence per hour: 1 for the top 200, then 200 / rank.
        let p = (200.0 / (rank as f64 + 1.0)).min(1.0);
        for h in 0..hours {
            if p >= 1.0 || rng.random::<f64>() < p {
                rows.push((rank as u32, h));
            }
        }
    }
    let first_us = first.timestamp_micros();
    let mut batches = Vec::new();
    for chunk in rows.chunks(500_000) {
        batches.push(views_batch(chunk.iter().map(|&(v, h)| {
            let views = 1 + (1000 / (i64::from(v) + 1));
            ViewRow {
                video_id: &ids[v as usize],
                hour_us: first_us + h * 3_600_000_000,
                views,
                billable_views: views / 2,
                fraud_filtered: 0,
                watch_seconds: views * 40,
                sketch: Vec::new(),
            }
        }))?);
    }
    let sha = store::views::put_run(store, "bench-run", &batches, first, w).await?;
    batch::publish::publish(store, "bench-run", &sha, first, w).await?;
    // The catalog: the bench creator owns 100 videos across the ranks; the
    // rest belong to 99 others.
    let owner = |v: usize| {
        if v.is_multiple_of((args.videos as usize / 100).max(1)) {
            CREATOR.to_owned()
        } else {
            format!("c{:02}", v % 99)
        }
    };
    let csv = store::catalog::to_csv(
        ids.iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), owner(i)))
            .collect::<Vec<_>>()
            .iter()
            .map(|(id, c)| [id.as_str(), c.as_str(), "a benchmark video"]),
    );
    store::catalog::import(store, csv.into()).await?;
    Ok(rows.len())
}

/// Speed counters for every video present in the hours `[w, end)`.
async fn build_speed(
    url: &str,
    keys: &KeySpace,
    args: &Args,
    w: DateTime<Utc>,
    end: DateTime<Utc>,
) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut pipe = redis::pipe();
    let mut h = w;
    while h < end {
        for v in 0..args.videos.min(2_000) {
            let id = format!("b{v:05}");
            let p = (v % PARTITIONS as u32) as i32;
            let field = format!("{:02}", chrono::Timelike::hour(&h));
            let key = keys.counters(p, &id, h.date_naive());
            pipe.hincr(&key, format!("{field}v"), 3)
                .ignore()
                .hincr(&key, format!("{field}b"), 2)
                .ignore()
                .hincr(&key, format!("{field}w"), 120)
                .ignore();
        }
        h += TimeDelta::hours(1);
    }
    for p in 0..PARTITIONS {
        pipe.set(keys.applied_at(p), Utc::now().timestamp_micros())
            .ignore();
    }
    pipe.hset(keys.meta(), "partitions", PARTITIONS).ignore();
    let () = pipe.query_async(&mut conn).await?;
    Ok(())
}
