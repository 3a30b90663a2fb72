//! The object store as the layers share it: its layout, and readers of what
//! batch publishes — the published state, views, run manifests, archive
//! progress and viewer sketches. Serving and billing depend on this crate
//! alone for stored data, so it has neither Kafka nor DataFusion in it.
//!
//! - [`layout`]: opening a store, every path of DESIGN §6, JSON and Parquet
//!   helpers with fixed encodings.
//! - [`state`]: the published state (`CURRENT` → `published/<seq>.json`) and
//!   the batch watermark.
//! - [`manifest`]: a run's manifest (`runs/<id>.json`).
//! - [`views`]: the views table (`views/run=<id>/part-0.parquet`): its schema,
//!   building and reading it.
//! - [`progress`]: archive progress and the archive watermark.
//! - [`sketch`]: the unique-viewer HyperLogLog with a fixed byte format.
//! - [`catalog`]: the video catalog (video → creator, title) in force.
//! - [`secret`]: the rule for files holding secrets (owner-only).

pub mod catalog;
pub mod filtered;
pub mod layout;
pub mod manifest;
pub mod progress;
pub mod secret;
pub mod sketch;
pub mod state;
pub mod views;

pub use layout::{open, open_with};
pub use manifest::Manifest;
pub use state::Published;
pub use views::ViewsTable;

use schemas::ErrorClass;

/// Errors reading or writing the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting (store URL, path) is unusable.
    #[error("{0}")]
    Config(String),
    /// Stored data is not what this code wrote.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// Arrow failed building a table.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A catalog file was refused (nothing imported).
    #[error(transparent)]
    Catalog(#[from] catalog::LineError),
    /// A Parquet file could not be written or read.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

impl Error {
    /// What a caller can do about it.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Config(_) | Error::Catalog(_) => ErrorClass::Input,
            Error::Corrupt(_) | Error::Parquet(_) => ErrorClass::Corrupt,
            Error::Store(e) => store_error_class(e),
            Error::Arrow(_) => ErrorClass::Bug,
        }
    }
}

/// The class of an object store failure: a missing or clashing object is
/// about the data; anything else (I/O, network, throttling) may pass.
pub fn store_error_class(e: &object_store::Error) -> ErrorClass {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } | E::AlreadyExists { .. } | E::Precondition { .. } => {
            ErrorClass::Corrupt
        }
        E::InvalidPath { .. } | E::NotSupported { .. } | E::NotImplemented { .. } => {
            ErrorClass::Input
        }
        _ => ErrorClass::Unavailable,
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
