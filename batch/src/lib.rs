//! The batch layer: the authoritative counts that money is paid on.
//!
//! - [`run`]: `viewcount batch run`, the recomputation: re-validate, dedup by
//!   `event_id` (the winner rule of [`schemas::dedup`]), the invalid-traffic
//!   rules, per video per hour counts and viewer sketches; deterministic
//!   output and a manifest. Computed by [`count`], the native engine, or by
//!   another engine behind the [`run::Compute`] trait: the SQL
//!   specification (crate `batch-sql`, DataFusion) and a Ballista cluster
//!   (crate `batch-cluster`) plug in there, so this crate, and everything
//!   that only runs or reads the native batch, builds without DataFusion.
//! - [`evidence`]: the events behind the counts: every billable view of
//!   some videos as the native engine decides it, with the rule that
//!   removed it (billing's explain).
//! - [`memory`]: `--memory-limit`, and the peak memory and spill each run
//!   records; spill files are the private `spill` module, the rows both
//!   hold the private `rows` module.
//! - [`dirty`]: which hours the scheduled run (`batch run --dirty`) recomputes.
//! - [`schedule`]: the dirty run at a fixed interval (`batch schedule`, `up`).
//! - [`publish`]: how runs compose into the published state and `CURRENT`.
//!
//! The store's layout and the formats this crate writes (views, manifests,
//! published state, sketches) belong to the `store` crate, which serving and
//! billing read without this crate; the archive service is the `archive`
//! crate and reconciliation the `reconcile` crate.

pub mod count;
pub mod dirty;
pub mod evidence;
pub mod memory;
pub mod publish;
mod rows;
pub mod run;
pub mod schedule;
mod spill;

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
    /// Arrow failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The event contract refused a batch.
    #[error("{0}")]
    Schema(#[from] schemas::Error),
    /// Spilling to local disk failed.
    #[error("spill: {0}")]
    Spill(String),
    /// Another engine ([`run::Compute`]) failed; it classed the failure.
    #[error("{engine} engine: {message}")]
    Engine {
        /// Which engine.
        engine: &'static str,
        /// What failed, and what to do.
        message: String,
        /// How a caller treats it.
        class: ErrorClass,
    },
}

impl Error {
    /// What a caller can do about it.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Input(_) => ErrorClass::Input,
            Error::Corrupt(_) | Error::Schema(_) => ErrorClass::Corrupt,
            Error::Bug(_) | Error::Arrow(_) => ErrorClass::Bug,
            Error::Store(e) => e.class(),
            Error::Spill(_) => ErrorClass::Unavailable,
            Error::Engine { class, .. } => *class,
            Error::ObjectStore(e) => store::store_error_class(e),
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
