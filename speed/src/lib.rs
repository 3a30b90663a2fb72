//! The speed layer: view counts in Redis within seconds, effectively once.
//!
//! - [`consumer`]: the Kafka consumer group: batches of up to N records or T
//!   ms, re-validation with [`schemas::parse_event`], poison records to the
//!   dead-letter topic, Redis outages waited out with backoff, resumption from
//!   the offsets stored in Redis.
//! - [`metrics`]: telemetry, one function per notable event.
//!
//! What it writes to Redis, and how (the key layout, the one atomic Lua
//! script per partition batch, connections and reads), is the `counters`
//! crate, which serving and reconcile read without Kafka.
//!
//! Why it is exact: a record is applied only by the script, which skips
//! offsets below the partition's stored offset (replays, rebalance overlap),
//! refuses batches that start past it (Redis lost its last writes: the
//! consumer rewinds), and counts an id only on its first `HSETNX` in the dedup
//! window. Kafka commits are advisory, for lag tools.

pub mod consumer;
pub mod metrics;

use std::time::Duration;

pub use consumer::run;
pub use metrics::Metrics;

/// The defaults of [`SpeedConfig`], written once: the binary's flags take
/// theirs from here (the key layout's from [`counters::defaults`]).
pub mod defaults {
    use std::time::Duration;

    pub use counters::defaults::{COUNTER_RETENTION, DEDUP_BUCKET_BITS, DEDUP_WINDOW, KEY_PREFIX};

    /// Consumer group.
    pub const GROUP: &str = "speed";
    /// Most records per batch.
    pub const BATCH_MAX: usize = 20_000;
    /// Longest wait to fill a batch.
    pub const BATCH_WAIT: Duration = Duration::from_millis(20);
}

/// Speed-layer settings; defaults in [`SpeedConfig::new`] (from [`defaults`]).
#[derive(Debug, Clone)]
pub struct SpeedConfig {
    /// Kafka bootstrap servers.
    pub bootstrap_servers: String,
    /// The event topic.
    pub topic: String,
    /// Consumer group.
    pub group_id: String,
    /// Where undecodable or invalid records go.
    pub dlq_topic: String,
    /// Redis URL.
    pub redis_url: String,
    /// Prefix of every key (lets deployments and tests share a Redis).
    pub key_prefix: String,
    /// `2^bits` dedup hashes per partition per day. Size it so each hash holds
    /// about 30-100 ids at peak (under Redis's 128-entry listpack limit):
    /// bits ≈ log2(peak ids per partition per day / 64). 16 suits up to ~6 M
    /// ids per partition per day.
    pub dedup_bucket_bits: u32,
    /// Most records per batch.
    pub batch_max: usize,
    /// Longest wait to fill a batch after its first record.
    pub batch_wait: Duration,
    /// An event id is remembered at least this long after it was received.
    pub dedup_window: chrono::Duration,
    /// Counters live this long after their day ends.
    pub counter_retention: chrono::Duration,
    /// The one rule set: re-validation limits and counting rules. It must
    /// accept at least what ingest accepted (checked on every record's
    /// `vc-limits` header: the layer stops rather than drop accepted views).
    pub rules: schemas::RuleSet,
    /// Cap of the retry backoff while Redis or the DLQ is down.
    pub max_backoff: Duration,
    /// How often librdkafka reports statistics (lag metrics).
    pub stats_interval: Duration,
    /// Kafka group session timeout: how soon a crashed instance's partitions
    /// move to the others.
    pub session_timeout: Duration,
    /// Static group membership (`group.instance.id`): the same id after a
    /// restart takes the partitions back at once (DESIGN §7). `None`: a
    /// dynamic member.
    pub instance_id: Option<String>,
}

impl SpeedConfig {
    /// Defaults for the given broker, topic and Redis.
    pub fn new(
        bootstrap_servers: impl Into<String>,
        topic: impl Into<String>,
        redis_url: impl Into<String>,
    ) -> Self {
        let topic = topic.into();
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            dlq_topic: format!("{topic}-dlq"),
            topic,
            group_id: defaults::GROUP.into(),
            redis_url: redis_url.into(),
            key_prefix: defaults::KEY_PREFIX.into(),
            dedup_bucket_bits: defaults::DEDUP_BUCKET_BITS,
            batch_max: defaults::BATCH_MAX,
            batch_wait: defaults::BATCH_WAIT,
            dedup_window: defaults::DEDUP_WINDOW,
            counter_retention: defaults::COUNTER_RETENTION,
            rules: schemas::RuleSet::default(),
            max_backoff: Duration::from_secs(5),
            stats_interval: Duration::from_secs(5),
            session_timeout: Duration::from_secs(10),
            instance_id: None,
        }
    }
}

/// Errors of the speed layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is unusable.
    #[error("speed config: {0}")]
    Config(String),
    /// The Kafka client could not be created.
    #[error("kafka: {0}")]
    Kafka(rdkafka::error::KafkaError),
    /// A Redis read failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A caller's value cannot name a key (e.g. a malformed video id).
    #[error("{0}")]
    BadInput(String),
    /// Shutdown came before the service was up.
    #[error("stopped before start-up finished")]
    Stopped,
    /// A record was accepted by ingest under wider limits than this layer's:
    /// the layer stops (nothing past the record is applied) until it runs
    /// with the same rules.
    #[error("speed layer {0}")]
    RulesNarrowerThanIngest(#[from] infra::kafka::NarrowerThanIngest),
}

impl Error {
    /// What a caller can do about it.
    pub fn class(&self) -> schemas::ErrorClass {
        use schemas::ErrorClass;
        match self {
            Error::Config(_) | Error::BadInput(_) | Error::RulesNarrowerThanIngest { .. } => {
                ErrorClass::Input
            }
            Error::Kafka(e) => infra::kafka::error_class(e),
            Error::Redis(_) => ErrorClass::Unavailable,
            Error::Stopped => ErrorClass::Unavailable,
        }
    }
}

impl From<counters::Error> for Error {
    fn from(e: counters::Error) -> Self {
        match e {
            counters::Error::Redis(e) => Error::Redis(e),
            counters::Error::BadInput(m) => Error::BadInput(m),
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
