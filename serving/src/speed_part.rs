//! The speed part of an answer: the speed layer's Redis counters for the
//! hours from the watermark on, read in one pipelined round trip per
//! request, with how fresh they are.
//!
//! Serving answers people, so it waits for Redis [`SpeedConfig::timeout`]
//! and no longer: a Redis that is down or slow makes the answer come from
//! batch alone with `speed.status = "unavailable"`, never an error. The
//! connection is re-established in the background.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use chrono::{DateTime, Utc};
use counters::conn::{RedisClient, RedisConn};
use counters::keys::KeySpace;
use counters::read::VideosRead;
use tokio_util::sync::CancellationToken;

/// Where and how to read the speed layer.
#[derive(Debug, Clone)]
pub struct SpeedConfig {
    /// Redis URL.
    pub url: String,
    /// The speed layer's key prefix.
    pub prefix: String,
    /// Longest wait for Redis on a request before answering without it.
    pub timeout: Duration,
}

impl SpeedConfig {
    /// Default [`Self::timeout`].
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

    /// Reads `url` under the speed layer's default prefix.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: counters::defaults::KEY_PREFIX.to_owned(),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

/// What a read of the speed layer gave.
#[derive(Debug, Clone)]
pub enum SpeedRead {
    /// The counters, per video asked for.
    Ok(VideosRead),
    /// Redis did not answer in time or failed; why.
    Unavailable(String),
}

/// The speed layer as serving reads it.
#[derive(Debug)]
pub struct SpeedSource {
    config: SpeedConfig,
    keys: KeySpace,
    conn: ArcSwapOption<RedisConn>,
    /// The topic's partition count as the speed layer recorded it (0:
    /// not known yet).
    partitions: AtomicI32,
}

impl SpeedSource {
    /// A source that connects in the background ([`SpeedSource::run`]).
    pub fn new(config: SpeedConfig) -> Self {
        let keys = KeySpace::new(config.prefix.clone(), counters::defaults::DEDUP_BUCKET_BITS);
        Self {
            config,
            keys,
            conn: ArcSwapOption::empty(),
            partitions: AtomicI32::new(0),
        }
    }

    async fn connect(&self) -> Result<(), String> {
        let client = RedisClient::open(&self.config.url).map_err(|e| e.to_string())?;
        let conn = client
            .connect(
                self.config.timeout.max(Duration::from_secs(1)),
                self.config.timeout,
                2,
            )
            .await
            .map_err(|e| e.to_string())?;
        self.conn.store(Some(Arc::new(conn)));
        tracing::info!("serving: connected to Redis");
        Ok(())
    }

    /// Connects if not connected and rereads the partition count.
    pub async fn refresh(&self) -> Result<(), String> {
        if self.conn.load().is_none() {
            self.connect().await?;
        }
        let Some(conn) = self.conn.load_full() else {
            return Err("not connected".into());
        };
        let mut c = (*conn).clone();
        let read = counters::read::stored_partitions(&mut c, &self.keys);
        match tokio::time::timeout(self.config.timeout, read).await {
            Ok(Ok(Some(n))) => {
                self.partitions.store(n, Ordering::Relaxed);
                Ok(())
            }
            Ok(Ok(None)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "Redis did not answer within {:?}",
                self.config.timeout
            )),
        }
    }

    /// For `/readyz`: whether Redis answers a `PING` in time.
    pub async fn ping(&self) -> Result<(), String> {
        let Some(conn) = self.conn.load_full() else {
            return Err(format!(
                "not connected to Redis at {}; answering from batch alone",
                redact(&self.config.url)
            ));
        };
        let mut c = (*conn).clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut c);
        match tokio::time::timeout(self.config.timeout, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("Redis: {e}; answering from batch alone")),
            Err(_) => Err(format!(
                "Redis did not answer within {:?}; answering from batch alone",
                self.config.timeout
            )),
        }
    }

    /// Reads `videos` over `[from, to)` (each must be a valid video id).
    pub async fn read(
        &self,
        videos: &[&str],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        viewers: bool,
    ) -> SpeedRead {
        let Some(conn) = self.conn.load_full() else {
            return SpeedRead::Unavailable("not connected to Redis".into());
        };
        let mut partitions = self.partitions.load(Ordering::Relaxed);
        if partitions == 0 {
            // Not known yet: the speed layer may have started since.
            let _ = self.refresh().await;
            partitions = self.partitions.load(Ordering::Relaxed);
        }
        let mut c = (*conn).clone();
        let read =
            counters::read::videos_once(&mut c, &self.keys, videos, from, to, partitions, viewers);
        match tokio::time::timeout(self.config.timeout, read).await {
            Ok(Ok(r)) => SpeedRead::Ok(r),
            Ok(Err(e)) => SpeedRead::Unavailable(e.to_string()),
            Err(_) => SpeedRead::Unavailable(format!(
                "Redis did not answer within {:?}",
                self.config.timeout
            )),
        }
    }

    /// Keeps the connection and the partition count current until
    /// `cancel`.
    pub async fn run(self: Arc<Self>, every: Duration, cancel: CancellationToken) {
        let mut failing = false;
        loop {
            match self.refresh().await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, url = %redact(&self.config.url), "serving: Redis unavailable; answering from batch alone until it is back");
                }
                Err(_) => {}
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}

/// `url` without a password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

/// How stale the speed counters may be: every partition's counters hold
/// every record received up to `now - freshness`. Partitions that never
/// applied anything hold nothing to be stale about. `None` when no
/// partition has applied anything.
pub fn freshness(applied_at: &[Option<DateTime<Utc>>], now: DateTime<Utc>) -> Option<f64> {
    applied_at
        .iter()
        .flatten()
        .min()
        .map(|oldest| (now - *oldest).as_seconds_f64().max(0.0))
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    #[test]
    fn freshness_is_the_stalest_partition() {
        let now = Utc::now();
        let at = [
            Some(now - TimeDelta::seconds(2)),
            None,
            Some(now - TimeDelta::seconds(9)),
        ];
        assert_eq!(freshness(&at, now), Some(9.0));
        assert_eq!(freshness(&[None, None], now), None);
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("redis://:s3cret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
