//! Ingest: `POST /v1/events` over HTTP into Kafka, durable before it answers.
//!
//! - body formats (JSON object, JSON array, NDJSON) are decoded by [`schemas::wire`].
//! - [`producer`]: the idempotent, acks=all producer; an event is reported
//!   accepted only after the broker acknowledged it (DESIGN §5.1).
//! - [`server`]: the axum router and [`server::run`], which takes its listener
//!   and a shutdown future so tests run many instances in one process.
//! - [`metrics`]: Prometheus metrics, each paired with its log line.
//!
//! Each event is validated alone with [`schemas::parse_event`]; a bad event is
//! rejected with its reasons and never fails its neighbours (DESIGN §5.8).
//! Its signed playback token is then checked ([`PlaybackPolicy`]): a view
//! the platform's player service did not start is rejected, or kept and
//! never billable.

pub mod metrics;
pub mod producer;
pub mod server;

pub use producer::{EventProducer, ProducerConfig};
pub use server::{IngestConfig, PlaybackPolicy, run};

/// Errors of the ingest service (not of single requests: those are HTTP answers).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kafka client could not be created (bad configuration).
    #[error("kafka producer: {0}")]
    Kafka(rdkafka::error::KafkaError),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// What a caller can do about it.
    pub fn class(&self) -> schemas::ErrorClass {
        match self {
            Error::Kafka(e) => infra::kafka::error_class(e),
            Error::Io(_) => schemas::ErrorClass::Unavailable,
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
