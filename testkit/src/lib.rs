//! What integration tests and benchmarks stand on beside the production
//! infrastructure of the `infra` crate: real processes and brokers, never
//! fakes, started per test on free loopback ports.
//!
//! - [`kafka`]: a Kafka for one test ([`TestKafka`]): the external broker
//!   named by `VIEWCOUNT_TEST_KAFKA` when set and an embedded mock cluster
//!   otherwise; unique topic names so tests run in parallel; map
//!   comparisons that name the first difference.
//! - [`redis::RedisCluster`]: a Redis Cluster of child `redis-server`s with
//!   replicas, whose nodes can be killed.
//! - [`s3::S3Server`]: a child S3-compatible server (`moto`) with one
//!   bucket, stopped on drop.
//! - [`faults::FaultyStore`]: a real store whose chosen operations fail
//!   (a crash between two writes, a full disk, a dropped connection).

pub mod faults;
pub mod kafka;
pub mod redis;
pub mod s3;

pub use kafka::{TestKafka, assert_same_map, unique_name};

/// Errors starting a fixture.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The production half failed (a broker, a `redis-server`).
    #[error(transparent)]
    Infra(#[from] infra::Error),
    /// librdkafka refused an operation.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// `redis-server` or `redis-cli` is not installed.
    #[error(
        "redis-cli was not found on PATH; install it (Debian: `apt-get install -y redis-tools`)"
    )]
    RedisMissing,
    /// A Redis Cluster did not come up.
    #[error("redis cluster did not start: {0}")]
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
