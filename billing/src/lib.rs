//! Billing: creator payment statements from the authoritative batch numbers,
//! with exact decimal money, recorded in a tamper-evident audit ledger that
//! outsiders can verify with the public key alone (DESIGN §5.6, §5.7, §6).
//!
//! - [`rates`]: the rate card (TOML), every error naming its line.
//! - [`money`]: the one rounding rule (half-even to cents per line; totals
//!   are sums of rounded lines).
//! - [`statement`]: `billing report` and `billing finalize`: counting a month
//!   from the published batch runs, adjustments for finalized months, the
//!   statement files.
//! - [`earnings`]: a creator's statement figures and, until the period is
//!   final, an estimate, by the statement's money rule.
//! - [`ledger`]: the transparency log: create-only entries, RFC 6962 Merkle
//!   tree, signed C2SP checkpoints, `verify`, inclusion and consistency
//!   proofs.
//!
//! `billing explain`, a payout traced to the runs, raw files and event ids
//! behind it, is the `explain` crate: it needs the batch engine, which
//! billing (and serving, which reads statements and the ledger) does not.
//!
//! There is no floating point in this crate: money is `rust_decimal`, counts
//! are integers.
#![deny(clippy::float_arithmetic)]

pub mod earnings;
pub mod ledger;
pub mod money;
pub mod rates;
pub mod statement;

pub use ledger::{Ledger, LogKey};
pub use rates::RateCard;
pub use statement::{Period, ReportOptions};

use schemas::ErrorClass;

/// Errors of billing and the ledger.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag, file or argument is wrong; the message says what to do.
    #[error("{0}")]
    Input(String),
    /// The rate card was refused.
    #[error(transparent)]
    Rates(#[from] rates::RateError),
    /// The period cannot be billed yet (watermark short of end + grace).
    #[error("{0}")]
    NotReady(String),
    /// The ledger or a recorded file is not what was recorded.
    #[error("{0}")]
    Tampered(String),
    /// Reading published data failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The object store failed.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// Arrow failed building the statement table.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A bug: an invariant of this code broke.
    #[error("internal error (a bug): {0}")]
    Bug(String),
}

impl Error {
    /// What a caller can do about it.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Input(_) | Error::Rates(_) | Error::NotReady(_) => ErrorClass::Input,
            Error::Tampered(_) => ErrorClass::Corrupt,
            Error::Store(e) => e.class(),
            Error::ObjectStore(e) => store::store_error_class(e),
            Error::Arrow(_) | Error::Bug(_) => ErrorClass::Bug,
        }
    }
}

/// Billing's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
