//! A topic, a Redis and speed instances to run against them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use counters::Counts;
use counters::keys::KeySpace;
use infra::redis::{RedisOptions, RedisServer};
use ingest::{EventProducer, ProducerConfig};
use loadgen::{GenConfig, Generator, Truth};
use prometheus_client::registry::Registry;
use schemas::RuleSet;
use speed::SpeedConfig;
use telemetry::ReadyFlag;
use testkit::{TestKafka, unique_name};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub(crate) const PARTITIONS: i32 = 4;

pub(crate) struct Setup {
    pub(crate) kafka: TestKafka,
    pub(crate) topic: String,
    /// The one Redis server (none when on a cluster).
    redis: Option<RedisServer>,
    /// Where speed's Redis is: the server's URL, or a cluster's.
    url: String,
    pub(crate) prefix: String,
    pub(crate) producer: Arc<EventProducer>,
}

pub(crate) struct Running {
    pub(crate) handle: JoinHandle<speed::Result<()>>,
    stop: Option<oneshot::Sender<()>>,
    pub(crate) ready: ReadyFlag,
    pub(crate) registry: Arc<Registry>,
}

impl Running {
    pub(crate) async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), &mut self.handle)
            .await
            .expect("speed stops within a minute")
            .expect("join")
            .expect("speed run");
    }

    pub(crate) fn metric(&self, name: &str) -> f64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Setup {
    pub(crate) async fn new() -> Self {
        Self::with_redis(RedisOptions::default()).await
    }

    pub(crate) async fn with_redis(opts: RedisOptions) -> Self {
        let redis = RedisServer::start_with(opts).expect("redis-server");
        let url = redis.url();
        Self::on(Some(redis), url).await
    }

    /// Against the Redis (or Redis Cluster) at `url`, which the test runs.
    pub(crate) async fn with_url(url: String) -> Self {
        Self::on(None, url).await
    }

    async fn on(redis: Option<RedisServer>, url: String) -> Self {
        // Embedded always: the tests create the dead-letter topic themselves.
        let kafka = TestKafka::start_embedded().expect("kafka");
        let topic = kafka.topic("speed-it", PARTITIONS).await.expect("topic");
        kafka
            .embedded()
            .expect("an embedded cluster")
            .create_topic(&format!("{topic}-dlq"), 1)
            .unwrap();
        let producer = Arc::new(
            EventProducer::new(&ProducerConfig::new(kafka.bootstrap_servers(), &topic)).unwrap(),
        );
        Self {
            kafka,
            topic,
            redis,
            url,
            prefix: format!("{}:", unique_name("t")),
            producer,
        }
    }

    pub(crate) fn config(&self) -> SpeedConfig {
        let mut c = SpeedConfig::new(
            self.kafka.bootstrap_servers(),
            &self.topic,
            self.url.clone(),
        );
        c.key_prefix = self.prefix.clone();
        c.max_backoff = Duration::from_millis(500);
        c.stats_interval = Duration::from_millis(500);
        c
    }

    pub(crate) fn keys(&self) -> KeySpace {
        KeySpace::new(&self.prefix, 17)
    }

    pub(crate) fn start(&self, config: SpeedConfig) -> Running {
        let mut registry = Registry::with_prefix("viewcount");
        let metrics = speed::Metrics::register(&mut registry);
        let registry = Arc::new(registry);
        let ready = ReadyFlag::new("starting");
        let (stop, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(speed::run(config, metrics, ready.clone(), async move {
            let _ = rx.await;
        }));
        Running {
            handle,
            stop: Some(stop),
            ready,
            registry,
        }
    }

    /// Generates `n` events, keeps those ingest would accept, produces them
    /// through the real producer and returns the truth.
    pub(crate) async fn produce_generated(&self, n: u64, seed: u64) -> Truth {
        let mut truth = Truth::new(RuleSet::default());
        self.produce_generated_into(n, seed, &mut truth).await;
        truth
    }

    /// As [`Self::produce_generated`], adding to `truth`.
    pub(crate) async fn produce_generated_into(&self, n: u64, seed: u64, truth: &mut Truth) {
        let events = Generator::new(GenConfig {
            events: n,
            seed,
            ..GenConfig::default()
        })
        .unwrap()
        .accepted_at(Utc::now());
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

    /// Records in the topic now (sum of high watermarks).
    pub(crate) async fn topic_size(&self) -> i64 {
        let high = self.kafka.high_watermarks(&self.topic, PARTITIONS).await;
        high.expect("watermarks").into_iter().sum()
    }

    /// The one Redis server (a test on a cluster has none).
    pub(crate) fn server(&mut self) -> &mut RedisServer {
        self.redis.as_mut().expect("a test with one Redis server")
    }

    pub(crate) async fn redis_conn(&self) -> counters::conn::RedisConn {
        counters::conn::connect_reader(&self.url).await.unwrap()
    }

    /// Sum of the offsets stored in Redis.
    pub(crate) async fn applied(&self) -> i64 {
        let Ok(client) = counters::conn::RedisClient::open(&self.url) else {
            return -1;
        };
        let timeout = Duration::from_secs(2);
        let Ok(mut conn) = client.connect(timeout, timeout, 0).await else {
            return -1;
        };
        match counters::read::stored_offsets(&mut conn, &self.keys(), PARTITIONS).await {
            Ok(v) => v.into_iter().map(|o| o.unwrap_or(0)).sum(),
            Err(_) => -1,
        }
    }

    /// Waits (up to a minute) until at least `n` records are applied.
    pub(crate) async fn wait_applied(&self, n: i64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.applied().await;
            if got >= n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "speed applied only {got} of the {n} records waited for"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until Redis's stored offsets cover every record in the topic.
    pub(crate) async fn wait_caught_up(&self, timeout: Duration) {
        let want = self.topic_size().await;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.applied().await;
            if got == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "speed did not catch up: applied {got} of {want} records"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) async fn counts(&self) -> BTreeMap<(String, DateTime<Utc>), Counts> {
        let mut conn = self.redis_conn().await;
        counters::read::all_counts(&mut conn, &self.keys())
            .await
            .unwrap()
    }

    /// Asserts Redis holds exactly the truth, per video per hour.
    pub(crate) async fn assert_exact(&self, truth: &Truth) {
        let got = self.counts().await;
        let want: BTreeMap<(String, DateTime<Utc>), Counts> = truth
            .rows()
            .into_iter()
            .map(|r| {
                (
                    (r.video_id, r.hour),
                    Counts {
                        views: r.views,
                        billable_views: r.billable_views,
                        watch_seconds: r.watch_seconds,
                    },
                )
            })
            .collect();
        testkit::assert_same_map(&got, &want, "Redis counters");
        let total: u64 = got.values().map(|c| c.views).sum();
        assert_eq!(total, truth.views());
    }
}
