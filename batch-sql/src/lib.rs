//! The counting rules as DataFusion SQL: the batch layer's executable
//! specification, and the engine `batch run --engine sql` (here) and
//! `--engine ballista` (crate `batch-cluster`) plan.
//!
//! - [`functions`]: the rules' functions (re-validation, payload
//!   fingerprint, behavioural fingerprint, user hash, viewer sketch),
//!   registered by every process that plans or runs the SQL.
//! - [`sql`]: the one query that counts a run, and `billable_events`, the
//!   SQL form of [`batch::evidence::billable_events`].
//! - [`session`]: DataFusion over the store: the raw files as the table
//!   `raw`, under one URL every process of a cluster resolves alike.
//! - [`Sql`]: the engine as a [`batch::run::Compute`], which `batch run`
//!   takes without knowing DataFusion.
//!
//! This is the only crate below the binary, with `batch-cluster`, that
//! links DataFusion; `scripts/test` fails if another gains it.

pub mod functions;
pub mod session;
pub mod sql;

use std::sync::Arc;

use batch::memory::Memory;
use batch::run::{Computed, Engine};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use object_store::ObjectStore;
use schemas::{ErrorClass, RuleSet};

/// Errors of the SQL engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request cannot be carried out as asked.
    #[error("{0}")]
    Input(String),
    /// This code is wrong.
    #[error("bug: {0}")]
    Bug(String),
    /// DataFusion failed.
    #[error("datafusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// Arrow failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Reading or writing the store's formats failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl Error {
    /// What a caller can do about it.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Input(_) => ErrorClass::Input,
            Error::Bug(_) | Error::Arrow(_) => ErrorClass::Bug,
            Error::DataFusion(e) => datafusion_error_class(e),
            Error::Store(e) => e.class(),
        }
    }

    /// As a batch error, named for the engine that failed.
    pub fn into_batch(self, engine: Engine) -> batch::Error {
        match self {
            Error::Input(m) => batch::Error::Input(m),
            other => batch::Error::Engine {
                engine: engine.as_str(),
                class: other.class(),
                message: other.to_string(),
            },
        }
    }
}

impl From<Error> for batch::Error {
    fn from(e: Error) -> Self {
        e.into_batch(Engine::Sql)
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

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

/// The SQL specification in this process (`batch run --engine sql`): a
/// DataFusion session over the run's inputs, its operators sharing the
/// run's memory limit and spilling to its spill directory.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sql;

impl batch::run::Compute for Sql {
    fn engine(&self) -> Engine {
        Engine::Sql
    }

    fn compute<'a>(
        &'a self,
        store: Arc<dyn ObjectStore>,
        paths: Vec<String>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        rules: &'a RuleSet,
        memory: &'a Memory,
    ) -> BoxFuture<'a, batch::Result<Computed>> {
        Box::pin(async move {
            let ctx = session::raw_session(store, paths.iter().map(String::as_str), memory).await?;
            Ok(sql::compute(&ctx, from, to, rules).await?)
        })
    }
}
