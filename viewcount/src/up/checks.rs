//! What `viewcount up --demo` checks: every layer against the generator's
//! truth (Kafka, the speed layer, the scheduled batch run, reconcile, the
//! serving API with a token, a provisional statement, the ledger).

use crate::util::say;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use counters::keys::KeySpace;
use infra::kafka::read_topic;
use loadgen::{GenConfig, Generator, SendConfig, Truth};
use schemas::{ReceivedEvent, RuleSet, ValidationContext};

use super::summary::top_videos;

/// Sends the events of `generate` (its `events`, signed by its `signer`)
/// through ingest, then checks what reached Kafka and what the speed layer
/// counted against the generator's truth.
pub(super) async fn demo(
    base: &str,
    bootstrap: &str,
    topic: &str,
    redis_url: &str,
    keys: &KeySpace,
    generate: GenConfig,
    rules: RuleSet,
) -> anyhow::Result<Truth> {
    let n = generate.events;
    let generator = Generator::new(generate)?;
    let mut truth = Truth::new(rules);
    say!("\ndemo: sending {n} generated events (10% re-sends, 5% late, 2% invalid) ...");
    let cfg = SendConfig::new(format!("{base}/v1/events"));
    let report = loadgen::send(generator, &cfg, &mut truth, |_| {}).await?;
    say!("demo: {}", crate::gen_cmd::summary(&report));

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
    say!(
        "kafka: topic {topic:?} holds {} records [{}]: {} distinct events",
        records.len(),
        parts.join(" "),
        from_kafka.views()
    );
    if from_kafka.rows() != truth.rows() {
        bail!("what reached Kafka differs from what ingest accepted");
    }
    say!("check: every accepted event is in Kafka, keyed by video_id");

    // Wait for the speed layer to apply every record, then compare.
    let mut conn = counters::conn::connect_reader(redis_url)
        .await
        .context("connecting to redis")?;
    let partitions = per_partition.keys().max().map_or(0, |p| p + 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stored = counters::read::stored_offsets(&mut conn, keys, partitions).await?;
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
    let counted = counters::read::all_counts(&mut conn, keys).await?;
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
    say!(
        "speed: Redis holds {speed_views} views in {} video-hours: equal to the truth per video per hour (views, billable views, watch seconds)",
        counted.len()
    );
    say!("top videos: {}", top_videos(&counted));
    Ok(truth)
}

/// Waits for the archive, asks the scheduler for a dirty run (which
/// publishes every complete hour), and checks the published numbers
/// against the truth and, through reconcile, against the speed layer.
/// Returns the batch watermark.
pub(super) async fn demo_batch(
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
    say!(
        "\nbatch: the archive holds every record; a scheduled dirty run now computes every complete hour (the current one, and the last until 10 min past it, stay with the speed layer) ..."
    );
    tokio::time::timeout(Duration::from_secs(300), scheduler.run_now())
        .await
        .context("the scheduled batch run did not finish within 5 minutes")?
        .map_err(|e| anyhow::anyhow!("the scheduled batch run failed: {e}"))?;
    let Some(published) = store::state::current(store.as_ref()).await? else {
        say!("batch: no complete hour yet; serving answers from the speed layer alone");
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
        let manifest = published.manifest(store.as_ref(), run).await?;
        let table = store::views::load_views(store.as_ref(), &manifest).await?;
        views.extend(table.into_iter().filter(|((_, h), _)| hours.contains(h)));
    }
    say!(
        "batch: published state #{} from {} run(s); batch watermark {w}",
        published.seq,
        runs.len()
    );
    let want: store::ViewsTable = rows
        .iter()
        .filter(|r| r.hour < w)
        .map(|r| ((r.video_id.clone(), r.hour), r.batch_counts()))
        .collect();
    if views != want {
        let differ = want
            .iter()
            .filter(|(k, v)| views.get(*k) != Some(*v))
            .count()
            + views.keys().filter(|k| !want.contains_key(*k)).count();
        bail!("batch counts differ from the generator's truth in {differ} video-hours");
    }
    say!(
        "check: batch equals the truth in all {} video-hours before the watermark (views, billable, fraud-filtered, watch seconds)",
        views.len()
    );
    demo_attribution(store.as_ref(), &views).await?;
    let mut conn = counters::conn::connect_reader(redis_url)
        .await
        .context("connecting to redis")?;
    let speed: reconcile::SpeedTable = counters::read::all_counts(&mut conn, keys)
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
    say!(
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
pub(super) async fn demo_catalog(
    store: &dyn object_store::ObjectStore,
) -> anyhow::Result<store::catalog::Catalog> {
    if let Some(c) = store::catalog::current(store).await? {
        say!(
            "catalog: {} videos of {} creators in force",
            c.len(),
            c.creators()
        );
        return Ok(c);
    }
    let g = GenConfig::default();
    let (bytes, _, _) = crate::gen_cmd::catalog_csv(g.videos, g.seed)?;
    let (catalog, cur) = store::catalog::import(store, bytes.into()).await?;
    say!(
        "catalog: the demo's {} ({} videos of {} creators; a few videos left out, so their views are unattributed)",
        cur.path,
        cur.videos,
        cur.creators
    );
    Ok(catalog)
}

/// Shows which batch views the catalog in force attributes to creators;
/// views of videos it leaves out are reported as unattributed, never
/// dropped.
pub(super) async fn demo_attribution(
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
    say!(
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

/// Checks the API's answers against the truth: every creator's listing
/// (with the admin token), every unattributed video, and that a creator
/// token sees its own videos and nobody else's. A 429 is waited out as
/// `Retry-After` says, as any client should.
pub(super) async fn demo_serving(
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
    say!(
        "check: the serving API (bearer token) answers every one of {checked} videos equal to the truth ({} by creator listings, {} unattributed), {got_total} views in all, batch before the watermark {} and speed after it",
        checked - unattributed.len(),
        unattributed.len(),
        watermark.map_or("(none)".to_owned(), |w| w.to_string())
    );
    Ok(())
}
