//! Real infrastructure that services and `viewcount up` run on, started
//! in-process or as child processes. Nothing here is a fake; the fixtures
//! only tests use (a Kafka per test, a Redis Cluster, an S3 server) are the
//! `testkit` crate, built on this one.
//!
//! - [`kafka`]: librdkafka's mock cluster ([`kafka::EmbeddedKafka`], a real
//!   Kafka-protocol broker on a loopback port, owned by a thread of its own
//!   since the mock handle is not `Send`, with fault injection), the
//!   consumer configuration and record headers speed and archive share, the
//!   class of a Kafka error, and reading a topic's ends and records.
//! - [`redis::RedisServer`]: a child `redis-server` on a free port with a
//!   temporary directory, stopped on drop.

pub mod kafka;
pub mod redis;

/// Errors starting or driving infrastructure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// librdkafka refused an operation.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The embedded broker thread is gone.
    #[error("the embedded Kafka cluster has stopped")]
    KafkaStopped,
    /// `redis-server` is not installed.
    #[error(
        "redis-server was not found on PATH; install it (Debian: `apt-get install -y redis-server`) or set VIEWCOUNT_REDIS_URL"
    )]
    RedisMissing,
    /// `redis-server` did not come up.
    #[error("redis-server did not start: {0}")]
    RedisStart(String),
    /// Any other I/O failure.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
