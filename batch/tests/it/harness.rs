//! A topic, an object store, an archive to run.

use std::sync::Arc;
use std::time::Duration;

use archive::{ArchiveConfig, ArchiveMetrics};
use batch::run::{RunOptions, RunReport};
use chrono::{DateTime, Utc};
use ingest::{EventProducer, ProducerConfig};
use loadgen::{GenConfig, Generator, Truth};
use object_store::ObjectStore;
use schemas::ReceivedEvent;
use telemetry::ReadyFlag;
use testkit::TestKafka;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub(crate) const PARTITIONS: i32 = 3;

pub(crate) struct Setup {
    pub(crate) kafka: TestKafka,
    pub(crate) topic: String,
    /// Keeps the store directory alive for the test.
    _dir: tempfile::TempDir,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) producer: EventProducer,
}

pub(crate) struct Archive {
    pub(crate) handle: JoinHandle<archive::Result<()>>,
    stop: Option<oneshot::Sender<()>>,
    /// Its readiness, as `/readyz` shows it.
    pub(crate) ready: ReadyFlag,
    pub(crate) metrics: ArchiveMetrics,
}

impl Archive {
    pub(crate) async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.handle)
            .await
            .expect("join")
            .expect("archive run");
    }

    /// Asks the archive to stop and returns the error it stops with.
    pub(crate) async fn stop_err(mut self) -> archive::Error {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.handle)
            .await
            .expect("join")
            .expect_err("the archive stops with an error")
    }

    /// Waits for the archive to stop by itself (without asking it to).
    pub(crate) async fn join(mut self, timeout: Duration) -> archive::Result<()> {
        let r = tokio::time::timeout(timeout, &mut self.handle)
            .await
            .expect("the archive stops by itself")
            .expect("join");
        drop(self.stop.take());
        r
    }
}

impl Setup {
    pub(crate) async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = store::layout::open(&format!("file://{}", dir.path().display())).unwrap();
        Self::on(store, dir).await
    }

    /// A topic and producer over `store` (the directory is kept alive only).
    pub(crate) async fn on(store: Arc<dyn ObjectStore>, dir: tempfile::TempDir) -> Self {
        Self::with_kafka(TestKafka::start().expect("kafka"), store, dir).await
    }

    /// A topic on librdkafka's mock cluster, whatever broker the tests are
    /// configured with: for tests that take the broker down.
    pub(crate) async fn embedded() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = store::layout::open(&format!("file://{}", dir.path().display())).unwrap();
        let kafka = TestKafka::start_embedded().expect("embedded kafka");
        Self::with_kafka(kafka, store, dir).await
    }

    async fn with_kafka(
        kafka: TestKafka,
        store: Arc<dyn ObjectStore>,
        dir: tempfile::TempDir,
    ) -> Self {
        let topic = kafka.topic("batch-it", PARTITIONS).await.expect("topic");
        let producer =
            EventProducer::new(&ProducerConfig::new(kafka.bootstrap_servers(), &topic)).unwrap();
        Self {
            kafka,
            topic,
            _dir: dir,
            store,
            producer,
        }
    }

    /// The store's directory.
    pub(crate) fn root(&self) -> std::path::PathBuf {
        self._dir.path().to_path_buf()
    }

    pub(crate) fn archive(&self, group: &str) -> Archive {
        self.archive_with(group, schemas::RuleSet::default())
    }

    /// An archive running with `rules`.
    pub(crate) fn archive_with(&self, group: &str, rules: schemas::RuleSet) -> Archive {
        let mut c = self.archive_config(group);
        c.rules = rules;
        self.archive_from(c)
    }

    /// The tests' archive settings: frequent, small flushes.
    pub(crate) fn archive_config(&self, group: &str) -> ArchiveConfig {
        let mut c = ArchiveConfig::new(self.kafka.bootstrap_servers(), &self.topic);
        c.group_id = group.into();
        c.flush_interval = Duration::from_millis(500);
        c.flush_rows = 2_000;
        c
    }

    /// An archive running with `c`.
    pub(crate) fn archive_from(&self, c: ArchiveConfig) -> Archive {
        let mut reg = prometheus_client::registry::Registry::default();
        let metrics = ArchiveMetrics::register(&mut reg);
        let ready = ReadyFlag::new("test");
        let (stop, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(archive::run(
            c,
            self.store.clone(),
            metrics.clone(),
            ready.clone(),
            async move {
                let _ = rx.await;
            },
        ));
        Archive {
            handle,
            stop: Some(stop),
            ready,
            metrics,
        }
    }

    /// Records archived so far (sum of the progress offsets).
    pub(crate) async fn archived(&self) -> i64 {
        let (_, progress) = store::progress::load(self.store.as_ref()).await.unwrap();
        progress.iter().map(|p| p.next_offset).sum()
    }

    /// Produces generated events (what ingest would accept), adding to `truth`.
    pub(crate) async fn produce(&self, n: u64, seed: u64, truth: &mut Truth) {
        let events = Generator::new(GenConfig {
            events: n,
            seed,
            ..GenConfig::default()
        })
        .unwrap()
        .accepted_at(Utc::now());
        self.produce_events(&events, truth).await;
    }

    pub(crate) async fn produce_events(&self, events: &[ReceivedEvent], truth: &mut Truth) {
        for chunk in events.chunks(1000) {
            self.producer
                .produce_all(chunk, &schemas::RuleSet::default())
                .await
                .expect("produced");
            for e in chunk {
                truth.record(&e.event);
            }
        }
    }

    /// Runs ingest with `config` on a free port into the topic and posts
    /// `body` in one request: the status, `Retry-After` and body.
    pub(crate) async fn post(
        &self,
        config: ingest::IngestConfig,
        body: &[serde_json::Value],
    ) -> (u16, Option<String>, serde_json::Value) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/events", listener.local_addr().unwrap());
        let producer = Arc::new(
            EventProducer::new(&ProducerConfig::new(
                self.kafka.bootstrap_servers(),
                &self.topic,
            ))
            .unwrap(),
        );
        let (stop, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(ingest::server::run(
            listener,
            config,
            producer,
            async move {
                let _ = rx.await;
            },
        ));
        let resp = reqwest::Client::new()
            .post(&url)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: serde_json::Value = resp.json().await.unwrap();
        let _ = stop.send(());
        server.await.unwrap().unwrap();
        (status, retry_after, body)
    }

    /// Every record in the topic, decoded as the consumers decode it under
    /// `rules` (each must be valid under them).
    pub(crate) async fn received(&self, rules: &schemas::RuleSet) -> Vec<schemas::ReceivedEvent> {
        let (bootstrap, topic) = (
            self.kafka.bootstrap_servers().to_owned(),
            self.topic.clone(),
        );
        let records = tokio::task::spawn_blocking(move || {
            infra::kafka::read_topic(&bootstrap, &topic, Duration::from_secs(30))
        })
        .await
        .unwrap()
        .expect("records");
        let ctx = schemas::ValidationContext::new(Utc::now(), rules);
        records
            .iter()
            .map(|r| {
                schemas::ReceivedEvent::from_json_bytes(
                    r.payload.as_deref().unwrap_or_default(),
                    &ctx,
                )
                .expect("every accepted record is valid under the same rules")
            })
            .collect()
    }

    /// Records in the topic.
    pub(crate) async fn records(&self) -> i64 {
        self.kafka
            .high_watermarks(&self.topic, PARTITIONS)
            .await
            .expect("watermarks")
            .iter()
            .sum()
    }

    /// Waits until the archive's progress covers every record in the topic.
    pub(crate) async fn wait_archived(&self) {
        let high = self
            .kafka
            .high_watermarks(&self.topic, PARTITIONS)
            .await
            .expect("watermarks");
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
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "archive did not catch up: {progress:?} vs {high:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs batch over every hour the truth has, ignoring the watermark.
    pub(crate) async fn run_batch(&self, truth: &Truth) -> RunReport {
        let rows = truth.rows();
        let from = rows.iter().map(|r| r.hour).min().unwrap();
        let to = rows.iter().map(|r| r.hour).max().unwrap() + chrono::Duration::hours(1);
        self.run_range(from, to).await
    }

    pub(crate) async fn run_range(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> RunReport {
        let opts = RunOptions {
            allow_incomplete: true,
            ..RunOptions::new(from, to)
        };
        batch::run::run(self.store.clone(), &opts, &|_, _, _| {})
            .await
            .expect("batch run")
    }

    pub(crate) async fn views(&self, report: &RunReport) -> store::ViewsTable {
        store::views::load_views(self.store.as_ref(), &report.manifest)
            .await
            .unwrap()
    }
}

/// The truth as batch must report it: (views, billable after the cap,
/// fraud-filtered, watch seconds) per (video, hour).
pub(crate) fn expected(truth: &Truth) -> store::ViewsTable {
    truth
        .rows()
        .into_iter()
        .map(|r| ((r.video_id.clone(), r.hour), r.batch_counts()))
        .collect()
}

/// A run's filtered views: per rule over every row (as reconcile's causes),
/// and per rule for the rows of `video`.
pub(crate) async fn filtered_by_rule(
    store: &dyn object_store::ObjectStore,
    run: &store::Manifest,
    video: &str,
) -> (
    std::collections::BTreeMap<reconcile::Cause, u64>,
    std::collections::BTreeMap<schemas::fraud::FraudRule, u64>,
) {
    let mut all = std::collections::BTreeMap::new();
    let mut of_video = std::collections::BTreeMap::new();
    for f in store::filtered::load_filtered(store, run).await.unwrap() {
        *all.entry(reconcile::Cause::filtered_by(f.rule))
            .or_default() += f.views as u64;
        if f.video_id == video {
            *of_video.entry(f.rule).or_default() += f.views as u64;
        }
    }
    (all, of_video)
}

/// The engine `engine` names, as `RunOptions::compute` takes it: the native
/// engine is `None`, the SQL specification `batch_sql::Sql`.
pub(crate) fn compute(engine: batch::run::Engine) -> Option<Arc<dyn batch::run::Compute>> {
    match engine {
        batch::run::Engine::Native => None,
        batch::run::Engine::Sql => Some(Arc::new(batch_sql::Sql)),
        other => panic!("no {} engine in these tests", other.as_str()),
    }
}
