//! The serving layer (DESIGN §5.4, §6): creators' and finance's questions
//! answered over HTTP by merging authoritative batch counts for hours
//! before the batch watermark `W` with fresh speed counts from `W` on,
//! every answer saying which part came from where and how fresh it is.
//!
//! - [`split`]: the merge rule: `[from, to)` becomes a batch part
//!   `[from, min(to, W))` and a speed part `[max(from, W), to)`, so every
//!   hour is counted exactly once, whatever `W` is.
//! - [`index`]: the batch part in memory: per video, hour-sorted prefix sums,
//!   so the totals of any range cost two binary searches.
//! - [`source`]: the index and the catalog as one snapshot, reloaded when
//!   the published state or the catalog changes and swapped whole; the
//!   tokens file, reloaded when it changes.
//! - [`speed_part`]: the speed layer's counters for a request, in one
//!   Redis round trip, or "unavailable" (never an error) when Redis is not
//!   answering.
//! - [`tokens`]: bearer tokens (hashes only, compared in constant time),
//!   roles and the creator scope.
//! - [`api`]: the routes by family (views, live streams, statements and
//!   the ledger, the dashboard), authentication, per-token rate limits and
//!   the OpenAPI document.
//! - [`service`]: `viewcount serve`: all of it on one listener.

pub mod api;
pub mod index;
pub mod metrics;
pub mod service;
pub mod source;
pub mod speed_part;
pub mod split;
pub mod tokens;

pub use index::{BatchIndex, Counts};
pub use service::{ServeOptions, Serving};
pub use split::{Parts, split};

/// Errors of the serving layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the published state failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A setting is unusable (e.g. the tokens file).
    #[error("{0}")]
    Config(String),
    /// The listener failed.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
