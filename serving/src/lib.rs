//! The serving layer (DESIGN §5.4), being built (issue 9): creators' queries
//! answered by merging authoritative batch counts for hours before the batch
//! watermark `W` with fresh speed counts from `W` on, saying which part came
//! from where.
//!
//! Built so far, free of I/O but for loading:
//! - [`split`]: the merge rule: `[from, to)` becomes a batch part
//!   `[from, min(to, W))` and a speed part `[max(from, W), to)`, so every
//!   hour is counted exactly once, whatever `W` is.
//! - [`index`]: the batch part in memory: per video, hour-sorted prefix sums,
//!   so the totals of any range cost two binary searches; loaded from the
//!   published state (`CURRENT` → state → each owning run's views).
//! - [`tokens`]: bearer tokens from the tokens file (hashes only, compared
//!   in constant time), roles and the creator scope.
//!
//! Not yet: the HTTP API (with auth enforcement and rate limits), hot
//! reload and the dashboard.

pub mod index;
pub mod split;
pub mod tokens;

pub use index::{BatchIndex, Counts};
pub use split::{Parts, split};

/// Errors of the serving layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the published state failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
