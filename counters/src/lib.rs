//! The speed layer's Redis counters: what the speed layer writes and
//! serving, reconcile and `status` read, with no Kafka in sight.
//!
//! - [`keys`]: the Redis key layout (hash-tagged per Kafka partition, so it
//!   works on Redis Cluster), free of I/O.
//! - [`apply`]: the one atomic Lua script per partition batch, and the pure
//!   code that builds its arguments. Dedup by `event_id`, counter increments,
//!   viewer HyperLogLogs and the partition's consumed offset change together
//!   or not at all (DESIGN §5.2).
//! - [`conn`]: Redis connections (one server, or a Redis Cluster from a
//!   `redis+cluster://` URL) with timeouts sized for their work, and the one
//!   backoff policy for outages.
//! - [`read`]: reading the counters back (serving, reconcile, status, tests).
//!
//! The Kafka consumer that drives [`apply`] is the `speed` crate.

pub mod apply;
pub mod conn;
pub mod keys;
pub mod read;

pub use read::Counts;

/// The key layout's defaults, written once: the speed layer's flags and
/// serving's take theirs from here.
pub mod defaults {
    /// Prefix of every key.
    pub const KEY_PREFIX: &str = "vc:";
    /// `2^bits` dedup hashes per partition per day.
    pub const DEDUP_BUCKET_BITS: u32 = 16;
    /// How long an event id is remembered after its receipt.
    pub const DEDUP_WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(48);
    /// How long counters live after their day ends.
    pub const COUNTER_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(35);
}

/// Errors reading the counters.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Redis read failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A caller's value cannot name a key (e.g. a malformed video id).
    #[error("{0}")]
    BadInput(String),
}

impl Error {
    /// What a caller can do about it.
    pub fn class(&self) -> schemas::ErrorClass {
        match self {
            Error::Redis(_) => schemas::ErrorClass::Unavailable,
            Error::BadInput(_) => schemas::ErrorClass::Input,
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
