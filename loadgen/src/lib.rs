//! Seeded synthetic view traffic for `viewcount gen`, tests and benchmarks.
//!
//! - [`Generator`]: an iterator of events with Zipf-skewed video popularity,
//!   exact re-sends (duplicates), late events and invalid events of every kind.
//!   The same [`GenConfig`] (seed and start time included) gives the same events.
//! - [`Mix`]: labelled traffic mixed in on request: patterns of invalid
//!   traffic (repeat loops, bot farms, impossible watch time, zero-engagement
//!   bursts) and organic hard cases (fans' bursts, shared household
//!   accounts, binges, classrooms, clips shared from one link, trending
//!   shorts without ads), every event carrying its [`Label`].
//! - [`Truth`]: the ground truth per video per hour (views, billable views,
//!   watch seconds), built from the events that were actually accepted, with the
//!   counting rules of [`schemas::rules`]; with labels, per label too.
//! - [`send`]: posts events to an ingest URL with bounded concurrency, retrying
//!   503s and connection failures, and feeds what was accepted into a [`Truth`].
//! - [`catalog()`]: a video catalog matching the generated videos (creators
//!   owning a Zipf-skewed number of them, a few left out: unattributed).

mod catalog;
mod generator;
mod patterns;
mod send;
mod truth;
mod vocab;

pub use catalog::{CatalogConfig, CatalogRow, catalog};
pub use generator::{GenConfig, GenEvent, Generator, InvalidKind, Kind};
pub use patterns::{Label, Mix};
pub use send::{SendConfig, SendReport, send};
pub use truth::{LabelTally, Truth, TruthFile, TruthRow};

/// Errors of the generator and sender.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range.
    #[error("invalid generator setting: {0}")]
    Config(String),
    /// A request kept failing after every retry.
    #[error("sending to {url} failed after {attempts} attempts: {last}")]
    SendFailed {
        /// The ingest URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// Ingest answered with a client error: the request itself is wrong.
    #[error("ingest refused the request with {status}: {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Response body.
        body: String,
    },
    /// Writing output failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
