//! One pipeline with data on both sides of the watermark, and a serving
//! API over it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use archive::{ArchiveConfig, ArchiveMetrics};
use chrono::{DateTime, TimeDelta, Utc};
use counters::keys::KeySpace;
use infra::redis::RedisServer;
use ingest::{EventProducer, ProducerConfig};
use loadgen::{GenConfig, Generator, Truth};
use object_store::ObjectStore;
use serving::api::ApiConfig;
use serving::metrics::Metrics;
use serving::source::TokensFile;
use serving::speed_part::SpeedConfig;
use serving::tokens::{Role, new_token};
use serving::{ServeOptions, Serving};
use telemetry::{OpsBuilder, ReadyFlag};
use testkit::{TestKafka, unique_name};
use tokio_util::sync::CancellationToken;

pub(crate) const PARTITIONS: i32 = 3;

/// Who holds which secret.
#[derive(Debug, Clone)]
pub(crate) struct Secrets {
    pub(crate) admin: String,
    pub(crate) finance: String,
    /// Creator A owns `video_a`.
    pub(crate) creator_a: String,
    /// Creator B owns `video_b`.
    pub(crate) creator_b: String,
}

pub(crate) struct World {
    pub(crate) kafka: TestKafka,
    pub(crate) topic: String,
    _dir: tempfile::TempDir,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) redis: RedisServer,
    pub(crate) prefix: String,
    pub(crate) producer: EventProducer,
    pub(crate) truth: Truth,
    pub(crate) catalog: store::catalog::Catalog,
    /// The first hour with data and the end of the last.
    pub(crate) first: DateTime<Utc>,
    pub(crate) end: DateTime<Utc>,
    pub(crate) secrets: Secrets,
    pub(crate) creator_a: String,
    pub(crate) creator_b: String,
    pub(crate) video_a: String,
    pub(crate) video_b: String,
    /// A video with views that the catalog leaves out.
    pub(crate) unattributed: String,
    pub(crate) cancel: CancellationToken,
    pub(crate) speed_stop: Option<tokio::sync::oneshot::Sender<()>>,
    speed: Option<tokio::task::JoinHandle<speed::Result<()>>>,
}

impl World {
    /// `n` generated events through Kafka into speed and the archive, all
    /// applied and archived; the catalog imported; nothing published.
    pub(crate) async fn new(n: u64, seed: u64) -> Self {
        let kafka = TestKafka::start_embedded().expect("kafka");
        let topic = kafka.topic("serving-it", PARTITIONS).await.expect("topic");
        kafka
            .embedded()
            .expect("embedded")
            .create_topic(&format!("{topic}-dlq"), 1)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = store::layout::open(&format!("file://{}", dir.path().display())).unwrap();
        let redis = RedisServer::start().expect("redis-server");
        let producer =
            EventProducer::new(&ProducerConfig::new(kafka.bootstrap_servers(), &topic)).unwrap();
        let g = GenConfig {
            events: n,
            seed,
            ..GenConfig::default()
        };
        let rows = loadgen::catalog(&loadgen::CatalogConfig::for_videos(g.videos, seed)).unwrap();
        let csv = store::catalog::to_csv(
            rows.iter()
                .map(|r| [r.video_id.as_str(), r.creator_id.as_str(), r.title.as_str()]),
        );
        let (catalog, _) = store::catalog::import(store.as_ref(), csv.into())
            .await
            .unwrap();
        let events = Generator::new(g).unwrap().accepted_at(Utc::now());
        let mut truth = Truth::new(schemas::RuleSet::default());
        for chunk in events.chunks(1000) {
            producer
                .produce_all(chunk, &schemas::RuleSet::default())
                .await
                .expect("produced");
            for e in chunk {
                truth.record(&e.event);
            }
        }
        let hours: Vec<DateTime<Utc>> = truth.rows().iter().map(|r| r.hour).collect();
        let first = *hours.iter().min().unwrap();
        let end = *hours.iter().max().unwrap() + TimeDelta::hours(1);

        // Videos by views, to pick owners with data.
        let mut per_video: BTreeMap<String, u64> = BTreeMap::new();
        for r in truth.rows() {
            *per_video.entry(r.video_id.clone()).or_default() += r.views;
        }
        let mut by_views: Vec<(&String, &u64)> = per_video.iter().collect();
        by_views.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let video_a = by_views
            .iter()
            .find(|(v, _)| catalog.creator_of(v).is_some())
            .map(|(v, _)| (*v).clone())
            .unwrap();
        let creator_a = catalog.creator_of(&video_a).unwrap().to_owned();
        let video_b = by_views
            .iter()
            .find(|(v, _)| catalog.creator_of(v).is_some_and(|c| c != creator_a))
            .map(|(v, _)| (*v).clone())
            .unwrap();
        let creator_b = catalog.creator_of(&video_b).unwrap().to_owned();
        let unattributed = by_views
            .iter()
            .find(|(v, _)| catalog.creator_of(v).is_none())
            .map(|(v, _)| (*v).clone())
            .expect("the generated catalog leaves some viewed videos out");

        let (admin, t1) = new_token("admin", Role::Admin, None).unwrap();
        let (finance, t2) = new_token("finance", Role::Finance, None).unwrap();
        let (ca, t3) = new_token("creator-a", Role::Creator, Some(&creator_a)).unwrap();
        let (cb, t4) = new_token("creator-b", Role::Creator, Some(&creator_b)).unwrap();
        let tokens = dir.path().join("tokens.toml");
        std::fs::write(&tokens, t1 + &t2 + &t3 + &t4).unwrap();
        // It holds secrets: owner-only, or serving refuses it.
        std::fs::set_permissions(&tokens, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();

        let mut w = Self {
            kafka,
            topic,
            _dir: dir,
            store,
            redis,
            prefix: format!("{}:", unique_name("s")),
            producer,
            truth,
            catalog,
            first,
            end,
            secrets: Secrets {
                admin,
                finance,
                creator_a: ca,
                creator_b: cb,
            },
            creator_a,
            creator_b,
            video_a,
            video_b,
            unattributed,
            cancel: CancellationToken::new(),
            speed_stop: None,
            speed: None,
        };
        w.start_speed();
        w.archive_all().await;
        w.wait_speed().await;
        w
    }

    pub(crate) fn tokens_path(&self) -> std::path::PathBuf {
        self._dir.path().join("tokens.toml")
    }

    fn start_speed(&mut self) {
        let mut c = speed::SpeedConfig::new(
            self.kafka.bootstrap_servers(),
            &self.topic,
            self.redis.url(),
        );
        c.key_prefix = self.prefix.clone();
        c.max_backoff = Duration::from_millis(500);
        let metrics =
            speed::Metrics::register(&mut prometheus_client::registry::Registry::default());
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        self.speed = Some(tokio::spawn(speed::run(
            c,
            metrics,
            ReadyFlag::new("test"),
            async move {
                let _ = rx.await;
            },
        )));
        self.speed_stop = Some(stop);
    }

    /// Runs the archive until it holds every record of the topic.
    pub(crate) async fn archive_all(&self) {
        let mut c = ArchiveConfig::new(self.kafka.bootstrap_servers(), &self.topic);
        c.group_id = unique_name("archive");
        c.flush_interval = Duration::from_millis(300);
        let metrics =
            ArchiveMetrics::register(&mut prometheus_client::registry::Registry::default());
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(archive::run(
            c,
            self.store.clone(),
            metrics,
            ReadyFlag::new("test"),
            async move {
                let _ = rx.await;
            },
        ));
        let high = self.high().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let (_, progress) = store::progress::load(self.store.as_ref()).await.unwrap();
            let done = (0..PARTITIONS).all(|p| {
                progress
                    .iter()
                    .find(|x| x.partition == p)
                    .is_some_and(|x| x.next_offset >= high[p as usize])
            });
            if done {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "archive did not catch up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = stop.send(());
        handle.await.unwrap().unwrap();
    }

    async fn high(&self) -> Vec<i64> {
        self.kafka
            .high_watermarks(&self.topic, PARTITIONS)
            .await
            .expect("watermarks")
    }

    /// Waits until the speed layer has applied every record of the topic.
    pub(crate) async fn wait_speed(&self) {
        let high = self.high().await;
        let mut conn = counters::conn::connect_reader(&self.redis.url())
            .await
            .unwrap();
        let keys = self.keys();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let stored = counters::read::stored_offsets(&mut conn, &keys, PARTITIONS)
                .await
                .unwrap();
            if (0..PARTITIONS as usize).all(|p| stored[p].unwrap_or(0) >= high[p]) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "speed did not catch up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn keys(&self) -> KeySpace {
        KeySpace::new(&self.prefix, speed::defaults::DEDUP_BUCKET_BITS)
    }

    /// Recomputes and publishes `[from, to)`.
    pub(crate) async fn publish(&self, from: DateTime<Utc>, to: DateTime<Utc>) {
        let opts = batch::run::RunOptions {
            allow_incomplete: true,
            ..batch::run::RunOptions::new(from, to)
        };
        batch::run::run(self.store.clone(), &opts, &|_, _, _| {})
            .await
            .expect("batch run");
    }

    /// A serving API on a free loopback port; its base URL.
    pub(crate) async fn serve(&self, api: ApiConfig) -> Served {
        self.serve_with(api, &self.redis.url()).await
    }

    pub(crate) async fn serve_with(&self, api: ApiConfig, redis_url: &str) -> Served {
        let mut speed = SpeedConfig::new(redis_url);
        speed.prefix = self.prefix.clone();
        let options = ServeOptions {
            api,
            speed,
            tokens: self.tokens_path(),
            reload_every: Duration::from_millis(200),
            http: telemetry::http::Limits::default(),
        };
        let mut ops = OpsBuilder::new();
        let metrics = Metrics::register(ops.registry());
        let tokens = Arc::new(TokensFile::open(options.tokens.clone(), metrics.clone()).unwrap());
        let cancel = self.cancel.child_token();
        let serving = Serving::start_with(
            &mut ops,
            self.store.clone(),
            options,
            tokens,
            metrics,
            cancel.clone(),
        )
        .await
        .unwrap();
        let ops = ops.build();
        let paths = serving.paths.clone();
        let app = serving
            .router
            .merge(ops.router())
            .fallback(telemetry::not_found);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let c = cancel.clone();
        tokio::spawn(telemetry::serve(listener, app, ops, async move {
            c.cancelled().await
        }));
        Served {
            base,
            client: reqwest::Client::new(),
            source: serving.source,
            paths,
            cancel,
        }
    }

    /// Expected (views, billable, watch seconds) of `videos` over
    /// `[from, to)` with the watermark `w`: batch billable (after the
    /// fraud cap) before `w`, speed billable from it on.
    pub(crate) fn expected(
        &self,
        videos: &[&str],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        w: Option<DateTime<Utc>>,
    ) -> [u64; 3] {
        let mut out = [0u64; 3];
        for r in self.truth.rows() {
            if !videos.contains(&r.video_id.as_str()) || r.hour < from || r.hour >= to {
                continue;
            }
            let batch = w.is_some_and(|w| r.hour < w);
            out[0] += r.views;
            out[1] += if batch {
                r.billable_views - r.fraud_filtered
            } else {
                r.billable_views
            };
            out[2] += r.watch_seconds;
        }
        out
    }
}

impl Drop for World {
    /// Stops serving, then the speed layer, and waits for it while the
    /// broker is still up: a consumer dropped after its broker is gone
    /// can wait forever to leave its group.
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(s) = self.speed_stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.speed.take() {
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    let _ = tokio::time::timeout(Duration::from_secs(30), h).await;
                });
            });
        }
    }
}

/// A running API.
pub(crate) struct Served {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    pub(crate) source: Arc<serving::source::Source>,
    pub(crate) paths: Vec<&'static str>,
    pub(crate) cancel: CancellationToken,
}

impl Served {
    /// GET `path` with `token` (none: no Authorization header): status,
    /// headers and JSON body (Null if not JSON).
    pub(crate) async fn get(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// The `/metrics` text.
    pub(crate) async fn metrics(&self) -> String {
        let r = self.client.get(format!("{}/metrics", self.base)).send();
        r.await.unwrap().text().await.unwrap()
    }

    /// GET `path` with `token`, expecting 200.
    pub(crate) async fn ok(&self, path: &str, token: &str) -> serde_json::Value {
        let (status, _, body) = self.get(path, Some(token)).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Reloads now and waits until the published state `seq` is served.
    pub(crate) async fn reload(&self) {
        self.source.refresh().await.expect("reload");
    }
}

/// `[views, billable_views, watch_seconds]` of an answer.
pub(crate) fn totals(v: &serde_json::Value) -> [u64; 3] {
    [
        v["views"].as_u64().expect("views"),
        v["billable_views"].as_u64().expect("billable_views"),
        v["watch_seconds"].as_u64().expect("watch_seconds"),
    ]
}

/// An RFC 3339 hour for a query string.
pub(crate) fn q(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// n / d rounded half to even (n, d ≥ 0).
pub(crate) fn half_even(n: i64, d: i64) -> i64 {
    let (q, r) = (n / d, n % d);
    match (2 * r).cmp(&d) {
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal if q % 2 == 1 => q + 1,
        _ => q,
    }
}
