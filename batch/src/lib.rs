//! The batch layer: the authoritative counts that money is paid on.
//!
//! - [`run`]: `viewcount batch run`, the recomputation: re-validate, dedup by
//!   `event_id` (the winner rule of [`schemas::dedup`]), fraud cap, per video
//!   per hour counts and viewer sketches; deterministic output and a
//!   manifest. Computed by [`count`] (the native engine) or [`sql`] (the
//!   same rules as DataFusion SQL; byte-identical output), here or on a
//!   Ballista cluster ([`cluster`]).
//! - [`memory`]: `--memory-limit`, and the peak memory and spill each run
//!   records; spill files are the private `spill` module.
//! - [`dirty`]: which hours the scheduled run (`batch run --dirty`) recomputes.
//! - [`schedule`]: the dirty run at a fixed interval (`batch schedule`, `up`).
//! - [`publish`]: how runs compose into the published state and `CURRENT`.
//! - [`cluster`]: `batch scheduler` and `batch executor`, the Ballista
//!   processes the SQL engine runs on with `--engine ballista`.
//! - [`session`]: DataFusion over the store's raw files (the SQL engine and
//!   billing's evidence).
//!
//! The store's layout and the formats this crate writes (views, manifests,
//! published state, sketches) belong to the `store` crate, which serving and
//! billing read without DataFusion; the archive service is the `archive`
//! crate and reconciliation the `reconcile` crate.

pub mod cluster;
pub mod count;
pub mod dirty;
pub mod memory;
pub mod publish;
pub mod run;
pub mod schedule;
pub mod session;
mod spill;
pub mod sql;

use schemas::ErrorClass;

/// Errors of the batch layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request cannot be carried out as asked (flags, range, state).
    #[error("{0}")]
    Input(String),
    /// Stored data is not what this code wrote.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// This code is wrong.
    #[error("bug: {0}")]
    Bug(String),
    /// Reading or writing the store's formats failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The object store failed.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// DataFusion failed.
    #[error("datafusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// Arrow failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The event contract refused a batch.
    #[error("{0}")]
    Schema(#[from] schemas::Error),
    /// Spilling to local disk failed.
    #[error("spill: {0}")]
    Spill(String),
    /// A Ballista scheduler or executor failed.
    #[error("ballista: {0}")]
    Cluster(String),
}

impl Error {
    /// What a caller can do about it.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Input(_) => ErrorClass::Input,
            Error::Corrupt(_) | Error::Schema(_) => ErrorClass::Corrupt,
            Error::Bug(_) | Error::Arrow(_) => ErrorClass::Bug,
            Error::DataFusion(e) => datafusion_error_class(e),
            Error::Store(e) => e.class(),
            Error::Spill(_) | Error::Cluster(_) => ErrorClass::Unavailable,
            Error::ObjectStore(e) => store::store_error_class(e),
        }
    }
}

/// The class of a DataFusion failure by its root cause: reading a file
/// that is not Parquet (or does not decode) is the data's fault, an object
/// store or I/O failure may pass, our own UDFs report what they found, and
/// anything else (a plan error, an internal error) is ours.
pub fn datafusion_error_class(e: &datafusion::error::DataFusionError) -> ErrorClass {
    use datafusion::error::DataFusionError as E;
    match e.find_root() {
        E::ParquetError(_) => ErrorClass::Corrupt,
        E::ObjectStore(e) => store::store_error_class(e),
        E::IoError(_) | E::ResourcesExhausted(_) => ErrorClass::Unavailable,
        E::External(inner) => match inner.downcast_ref::<schemas::Error>() {
            Some(_) => ErrorClass::Corrupt,
            None => ErrorClass::Bug,
        },
        _ => ErrorClass::Bug,
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
