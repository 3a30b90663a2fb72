//! Real infrastructure, started in-process or as child processes: what
//! `viewcount up` runs on embedded defaults and what every integration test
//! stands on. Nothing here is a fake.
//!
//! - [`kafka::EmbeddedKafka`]: librdkafka's mock cluster, a real Kafka-protocol
//!   broker on a loopback port, owned by a thread of its own (the mock handle is
//!   not `Send`), with fault injection (brokers down/up).
//! - [`redis::RedisServer`]: a child `redis-server` on a free port with a
//!   temporary directory, stopped on drop.
//! - [`s3::S3Server`]: a child S3-compatible server (`moto`) on a free port
//!   with one bucket, stopped on drop.
//! - [`test`]: what tests share: a Kafka that is the external broker named by
//!   `VIEWCOUNT_TEST_KAFKA` when set and an embedded one otherwise, and unique
//!   topic names so tests run in parallel.

pub mod kafka;
pub mod redis;
pub mod s3;
pub mod test;

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
    /// The S3 server did not come up.
    #[error("S3 server (moto) did not start: {0}")]
    S3Start(String),
    /// Any other I/O failure.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
