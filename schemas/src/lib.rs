//! The viewcount event contract, shared by every layer and free of I/O.
//!
//! - [`event`]: [`ViewEvent`] v1 as clients send it, and [`ReceivedEvent`], the
//!   same event stamped with `received_at` as it travels through Kafka.
//! - [`validate`]: the one validation function, [`parse_event`], used by ingest and
//!   again by every consumer (defence in depth). It reports *every* violated rule,
//!   each naming the field.
//! - [`rules`]: [`RuleSet`], the one set of validation limits and counting
//!   parameters every layer takes, the stateless counting helpers of DESIGN
//!   §4 (hour bucket, billable predicate) and [`RULES_VERSION`].
//! - [`fraud`]: the invalid-traffic rules (rules v2), named and decided once:
//!   [`fraud::FraudRule`] and the reference [`fraud::decide`].
//! - [`time`]: timestamps in canonical form (UTC, µs, RFC 3339), shared by
//!   the event types and validation.
//! - [`archive`] (cargo feature `arrow`): the Arrow schema of the raw
//!   archive and conversions between events and record batches. Only the
//!   crates that read or write the archive turn it on, so the others (ingest,
//!   the speed layer, the generator, the fuzzer) build without Arrow.
//! - [`class`]: [`ErrorClass`], how callers treat a failure (input,
//!   unavailable, corrupt, bug); every crate's error maps to one.
//! - [`dedup`]: the dedup rule once: the payload fingerprint (XXH3 over a
//!   canonical encoding) and the order that picks the winning copy.
//! - [`wire`]: `POST /v1/events` body formats (JSON object, JSON array,
//!   NDJSON) split into per-event slots; fuzzed (`fuzz/`).
//!
//! `view_event.schema.json` beside this crate is the same contract as a JSON
//! Schema document for client developers; a test keeps the two in agreement.

#[cfg(feature = "arrow")]
pub mod archive;
pub mod class;
mod country;
pub mod dedup;
pub mod event;
pub mod fraud;
pub mod rules;
pub mod time;
pub mod trace;
pub mod validate;
pub mod wire;

#[cfg(feature = "arrow")]
pub use archive::{ArchivedEvent, raw_schema};
pub use class::ErrorClass;
pub use event::{Device, Playback, ReceivedEvent, ViewEvent};
pub use rules::{RULES_VERSION, RuleSet};
pub use validate::{Fields, Rejection, Rule, ValidationContext, Violation, parse_event, validate};

/// Errors of this crate that are not validation verdicts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A record batch did not have the raw archive's shape.
    #[error("record batch does not match the raw archive schema: {0}")]
    ArchiveSchema(String),
    /// Arrow refused to build a batch.
    #[cfg(feature = "arrow")]
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A Kafka payload was not a JSON object with a valid `received_at`.
    #[error("undecodable event record: {0}")]
    Decode(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
