//! The batch layer: the authoritative counts that money is paid on.
//!
//! - [`archive`]: `viewcount archive`, Kafka → raw Parquet by event hour, with
//!   per-partition progress that defines which hours are complete.
//! - [`progress`]: archive progress and the watermark that follows from it.
//! - [`run`]: `viewcount batch run`, the recomputation: re-validate, dedup by
//!   `event_id` (earliest received wins), fraud cap, per video per hour counts
//!   and viewer sketches; deterministic output and a manifest. Computed by
//!   [`count`] (the native engine) or [`sql`] (the same rules as DataFusion
//!   SQL; byte-identical output).
//! - [`publish`]: how runs compose into the published state and `CURRENT`.
//! - [`reconcile`]: speed vs batch per video-hour, each difference with its cause.
//! - [`sketch`]: the unique-viewer HyperLogLog with a fixed byte format.
//! - [`store`]: the object store and its layout.

pub mod archive;
pub mod count;
pub mod progress;
pub mod publish;
pub mod reconcile;
pub mod run;
pub mod sketch;
pub mod sql;
pub mod store;

/// Errors of the batch layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is unusable.
    #[error("{0}")]
    Config(String),
    /// The request cannot be carried out as asked.
    #[error("{0}")]
    Input(String),
    /// Stored data is not what this code wrote.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// DataFusion failed.
    #[error("datafusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// Arrow failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Parquet failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// The event contract refused a batch.
    #[error("{0}")]
    Schema(#[from] schemas::Error),
    /// Kafka failed.
    #[error("kafka: {0}")]
    Kafka(rdkafka::error::KafkaError),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
