//! Redis connections with timeouts chosen for the work each carries, and the
//! one backoff policy for waiting out an outage.
//!
//! The `redis` crate's defaults (1 s to connect, 500 ms per reply) suit small
//! commands on an idle server. Our work is not that: the applier sends one
//! Lua script per partition batch, up to [`crate::SpeedConfig::batch_max`]
//! events, and a reader walks a whole keyspace with `SCAN`. On a loaded
//! two-core machine a large script can take well over 500 ms, and a reply
//! that times out is not a failed write (the script still runs to the end),
//! only a wasted retry; for a read it used to fail the whole command
//! (`redis: timed out`). So every connection here says what it waits for:
//!
//! - the applier: [`script_timeout`] of its batch size, and every error
//!   retried with [`backoff`] until it succeeds or shutdown (the script is
//!   idempotent: it skips offsets it has applied);
//! - readers ([`connect_reader`]): [`READ_TIMEOUT`] per reply, connecting
//!   retried for [`CONNECT_PATIENCE`], and [`ReadRetry`] for the reads,
//!   which are always safe to repeat.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use redis::aio::{ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, RedisError};

/// Longest wait for one TCP connect and handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait for one reply to a read (`GET`, one `SCAN` page, one
/// `HGETALL` of a video-day hash).
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a reader keeps trying to connect before it reports Redis
/// unavailable.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(30);

/// Longest wait for the reply to one partition batch's script of up to
/// `batch_max` events: a floor for a busy server plus 1 ms per event
/// (the script itself runs at a few µs per event; the margin is for a
/// machine that is doing other work).
pub fn script_timeout(batch_max: usize) -> Duration {
    Duration::from_secs(10) + Duration::from_millis(batch_max as u64)
}

/// The applier's connection settings for batches of up to `batch_max`.
pub fn applier_config(batch_max: usize) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(script_timeout(batch_max)))
}

/// Exponential backoff from `min`, capped at `max`, with jitter, never
/// giving up: the one policy for waiting out Redis and Kafka outages.
pub fn backoff(min: Duration, max: Duration) -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Whether `e` is worth trying again: the server was unreachable, dropped
/// the connection, was loading or busy, or did not answer in time (the
/// `redis` crate's own judgement, plus timeouts).
pub fn is_transient(e: &RedisError) -> bool {
    e.is_timeout() || !matches!(e.retry_method(), redis::RetryMethod::NoRetry)
}

/// A connection for reads, with [`READ_TIMEOUT`] per reply; connecting is
/// retried for up to [`CONNECT_PATIENCE`].
pub async fn connect_reader(url: &str) -> Result<MultiplexedConnection, RedisError> {
    let client = redis::Client::open(url)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(READ_TIMEOUT));
    let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
    let mut delays = backoff(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(c) => return Ok(c),
            Err(e) if is_transient(&e) && tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "redis: cannot connect yet; retrying");
                tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(2))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Repeating a read after a transient error, for up to
/// [`CONNECT_PATIENCE`]. Only for reads: they change nothing, so a second
/// try is always safe.
///
/// ```ignore
/// let mut retry = ReadRetry::new();
/// loop {
///     match read(conn).await {
///         Err(Error::Redis(e)) if retry.should(&e) => retry.wait(&e).await,
///         r => return r,
///     }
/// }
/// ```
#[derive(Debug)]
pub struct ReadRetry {
    deadline: tokio::time::Instant,
    delays: ExponentialBackoff,
}

impl ReadRetry {
    /// A fresh budget of [`CONNECT_PATIENCE`] from now.
    pub fn new() -> Self {
        Self {
            deadline: tokio::time::Instant::now() + CONNECT_PATIENCE,
            delays: backoff(Duration::from_millis(50), Duration::from_secs(2)),
        }
    }

    /// Whether to try again after `e`: transient and within the budget.
    pub fn should(&self, e: &RedisError) -> bool {
        is_transient(e) && tokio::time::Instant::now() < self.deadline
    }

    /// Logs `e` and sleeps the next backoff delay.
    pub async fn wait(&mut self, e: &RedisError) {
        tracing::warn!(error = %e, "redis: read failed; retrying");
        tokio::time::sleep(self.delays.next().unwrap_or(Duration::from_secs(2))).await;
    }
}

impl Default for ReadRetry {
    fn default() -> Self {
        Self::new()
    }
}
