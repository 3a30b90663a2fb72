//! Redis connections with timeouts chosen for the work each carries, and the
//! one backoff policy for waiting out an outage.
//!
//! The `redis` crate's defaults (1 s to connect, 500 ms per reply) suit small
//! commands on an idle server. Our work is not that: the applier sends one
//! Lua script per partition batch, up to the speed layer's `--speed-batch`
//! events, and a reader walks a whole keyspace with `SCAN`. On a loaded
//! two-core machine a large script can take well over 500 ms, and a reply
//! that times out is not a failed write (the script still runs to the end),
//! only a wasted retry; for a read it used to fail the whole command
//! (`redis: timed out`). So every connection here says what it waits for:
//!
//! - the applier: [`script_timeout`] of its batch size per reply, and every error
//!   retried with [`backoff`] until it succeeds or shutdown (the script is
//!   idempotent: it skips offsets it has applied);
//! - readers ([`connect_reader`]): [`READ_TIMEOUT`] per reply, connecting
//!   retried for [`CONNECT_PATIENCE`], and [`ReadRetry`] for the reads,
//!   which are always safe to repeat.
//!
//! Every connection goes to one server or to a Redis Cluster alike
//! ([`RedisClient`], [`RedisConn`]): the URL says which.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use redis::RedisError;
use redis::aio::{ConnectionLike as _, ConnectionManager, ConnectionManagerConfig};

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

/// A connection for reads (one server or a cluster, see [`RedisClient`]),
/// with [`READ_TIMEOUT`] per reply; connecting is retried for up to
/// [`CONNECT_PATIENCE`].
pub async fn connect_reader(url: &str) -> Result<RedisConn, RedisError> {
    let client = RedisClient::open(url)?;
    let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
    let mut delays = backoff(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        match client.connect(CONNECT_TIMEOUT, READ_TIMEOUT, 1).await {
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

/// Where the speed layer's Redis is: one server (`redis://host:port/`), or
/// a Redis Cluster (`redis+cluster://host:port,host:port,...`: any of its
/// nodes; the client learns the rest and follows failovers).
#[derive(Debug, Clone)]
pub enum RedisClient {
    /// One server.
    Single(redis::Client),
    /// A Redis Cluster.
    Cluster(Box<redis::cluster::ClusterClient>),
}

/// The scheme that names a Redis Cluster.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

impl RedisClient {
    /// Parses `url`: `redis://...` (or `rediss://`, `unix://`) for one
    /// server, `redis+cluster://[user:password@]host:port,host:port,...` for
    /// a cluster.
    pub fn open(url: &str) -> Result<Self, RedisError> {
        let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) else {
            return Ok(Self::Single(redis::Client::open(url)?));
        };
        let (auth, hosts) = match rest.rsplit_once('@') {
            Some((auth, hosts)) => (format!("{auth}@"), hosts),
            None => (String::new(), rest),
        };
        let nodes: Vec<String> = hosts
            .trim_end_matches('/')
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| format!("redis://{auth}{h}/"))
            .collect();
        if nodes.is_empty() {
            return Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a redis+cluster:// URL names no node",
                "give one or more host:port, comma-separated, like redis+cluster://10.0.0.1:7000,10.0.0.2:7000".to_owned(),
            )));
        }
        Ok(Self::Cluster(Box::new(
            redis::cluster::ClusterClientBuilder::new(nodes).build()?,
        )))
    }

    /// Whether this is a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// An async connection with these timeouts. One server: a connection
    /// manager (reconnects by itself) with `retries` reconnection attempts
    /// per command; a cluster: the cluster connection (follows slot moves
    /// and failovers by itself).
    pub async fn connect(
        &self,
        connect: Duration,
        response: Duration,
        retries: usize,
    ) -> Result<RedisConn, RedisError> {
        match self {
            Self::Single(c) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(connect))
                    .set_response_timeout(Some(response))
                    .set_number_of_retries(retries);
                Ok(RedisConn::Single(
                    ConnectionManager::new_with_config(c.clone(), config).await?,
                ))
            }
            Self::Cluster(c) => {
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(connect)
                    .set_response_timeout(response);
                Ok(RedisConn::Cluster(
                    c.get_async_connection_with_config(config).await?,
                ))
            }
        }
    }

    /// `GET` of each key, on a blocking connection made for the call (for
    /// librdkafka's callbacks, which are not async).
    pub fn get_blocking(
        &self,
        keys: &[String],
        timeout: Duration,
    ) -> Result<Vec<Option<i64>>, RedisError> {
        fn get_all(
            conn: &mut impl redis::ConnectionLike,
            keys: &[String],
        ) -> Result<Vec<Option<i64>>, RedisError> {
            keys.iter()
                .map(|k| redis::cmd("GET").arg(k).query(conn))
                .collect()
        }
        match self {
            Self::Single(c) => get_all(&mut c.get_connection_with_timeout(timeout)?, keys),
            Self::Cluster(c) => {
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout);
                get_all(&mut c.get_connection_with_config(config)?, keys)
            }
        }
    }
}

/// An async connection to one Redis or a Redis Cluster; commands and
/// pipelines work on both. On a cluster a pipeline is split by the hash
/// slot of each command's key (every key of the speed layer carries its
/// partition's hash tag, so the split is by partition), the parts are sent
/// at once, and the replies come back in the pipeline's order.
#[derive(Clone)]
pub enum RedisConn {
    /// One server.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(redis::cluster_async::ClusterConnection),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "RedisConn::Single",
            Self::Cluster(_) => "RedisConn::Cluster",
        })
    }
}

impl redis::aio::ConnectionLike for RedisConn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            // A transaction must go whole (its keys in one slot, or Redis
            // refuses it).
            Self::Cluster(c) => {
                if pipeline.is_transaction() {
                    c.req_packed_commands(pipeline, offset, count)
                } else {
                    Box::pin(split_by_slot(c.clone(), pipeline, offset, count))
                }
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Runs a pipeline on a cluster as one pipeline per hash slot, at once.
async fn split_by_slot(
    conn: redis::cluster_async::ClusterConnection,
    pipeline: &redis::Pipeline,
    offset: usize,
    count: usize,
) -> Result<Vec<redis::Value>, RedisError> {
    let mut parts: Vec<(Option<u16>, redis::Pipeline, Vec<usize>)> = Vec::new();
    for (i, cmd) in pipeline.cmd_iter().enumerate() {
        let slot = command_key(cmd).map(key_slot);
        let at = match parts
            .iter()
            .position(|(s, _, _)| *s == slot && slot.is_some())
        {
            Some(at) => at,
            None => {
                parts.push((slot, redis::pipe(), Vec::new()));
                parts.len() - 1
            }
        };
        parts[at].1.add_command(cmd.clone());
        parts[at].2.push(i);
    }
    let sent = parts.iter().map(|(_, part, _)| {
        let mut conn = conn.clone();
        async move { conn.req_packed_commands(part, 0, part.len()).await }
    });
    let replies = futures::future::try_join_all(sent).await?;
    let mut out: Vec<Option<redis::Value>> = vec![None; pipeline.len()];
    for ((_, _, indices), values) in parts.iter().zip(replies) {
        for (&i, v) in indices.iter().zip(values) {
            out[i] = Some(v);
        }
    }
    Ok(out
        .into_iter()
        .map(|v| v.unwrap_or(redis::Value::Nil))
        .skip(offset)
        .take(count)
        .collect())
}

/// The key a command is routed by: its first key (`EVAL`/`EVALSHA`: the
/// first of `KEYS`), or none.
fn command_key(cmd: &redis::Cmd) -> Option<Vec<u8>> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .map(|a| match a {
            redis::Arg::Simple(b) => b,
            _ => &b"0"[..],
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    let key = match name.as_slice() {
        b"EVAL" | b"EVALSHA" => {
            let keys: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            if keys == 0 {
                return None;
            }
            args.get(3)?
        }
        b"PING" | b"INFO" | b"SCAN" | b"DBSIZE" => return None,
        _ => args.get(1)?,
    };
    Some(key.to_vec())
}

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag
/// (the part between the first `{` and the next `}`, if not empty) or of
/// the whole key, mod 16384.
pub fn key_slot(key: impl AsRef<[u8]>) -> u16 {
    let key = key.as_ref();
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16_xmodem(tagged.unwrap_or(key)) % 16384
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Every key matching `pattern`, by `SCAN`: on a cluster, on every master
/// (a cluster routes `SCAN` nowhere by itself).
pub async fn scan_keys(conn: &mut RedisConn, pattern: &str) -> Result<Vec<String>, RedisError> {
    match conn {
        RedisConn::Single(c) => {
            use redis::AsyncCommands as _;
            let mut it: redis::AsyncIter<'_, String> = c.scan_match(pattern).await?;
            let mut out = Vec::new();
            while let Some(k) = futures::StreamExt::next(&mut it).await {
                out.push(k?);
            }
            Ok(out)
        }
        RedisConn::Cluster(c) => {
            use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
            let mut out = Vec::new();
            for (host, port) in cluster_masters(c).await? {
                let mut cursor = 0u64;
                loop {
                    let mut cmd = redis::cmd("SCAN");
                    cmd.arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000);
                    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port,
                    });
                    let reply = c.route_command(cmd, route).await?;
                    let (next, keys): (u64, Vec<String>) = redis::from_redis_value(reply)?;
                    out.extend(keys);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            Ok(out)
        }
    }
}

/// The masters of a cluster, from `CLUSTER SLOTS`: (host, port).
async fn cluster_masters(
    c: &mut redis::cluster_async::ClusterConnection,
) -> Result<Vec<(String, u16)>, RedisError> {
    let slots = c
        .req_packed_command(redis::cmd("CLUSTER").arg("SLOTS"))
        .await?;
    // [[start, end, [host, port, id, ...], replicas...], ...]
    let ranges: Vec<Vec<redis::Value>> = redis::from_redis_value(slots)?;
    let mut masters: Vec<(String, u16)> = Vec::new();
    for range in ranges {
        let Some(master) = range.into_iter().nth(2) else {
            continue;
        };
        let node: Vec<redis::Value> = redis::from_redis_value(master)?;
        let mut it = node.into_iter();
        let (Some(host), Some(port)) = (it.next(), it.next()) else {
            continue;
        };
        let host: String = redis::from_redis_value(host)?;
        let port: u16 = redis::from_redis_value(port)?;
        if !masters.contains(&(host.clone(), port)) {
            masters.push((host, port));
        }
    }
    Ok(masters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_are_redis_clusters() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31c3);
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("bar"), 5061);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("foo{}{bar}"), key_slot("foo{}{bar}".as_bytes()));
        assert_ne!(
            key_slot("foo{}{bar}"),
            key_slot("bar"),
            "an empty tag hashes the whole key"
        );
        assert_eq!(key_slot("foo{{bar}}zap"), key_slot("{bar"));
        let keys = crate::keys::KeySpace::new("vc:", 16);
        assert_eq!(key_slot(keys.offset(3)), key_slot("p3"));
    }

    #[test]
    fn commands_route_by_their_first_key() {
        let mut get = redis::cmd("GET");
        get.arg("vc:{p1}:off");
        assert_eq!(command_key(&get), Some(b"vc:{p1}:off".to_vec()));
        let mut eval = redis::cmd("EVALSHA");
        eval.arg("abc").arg(2).arg("k1").arg("k2").arg("argv");
        assert_eq!(command_key(&eval), Some(b"k1".to_vec()));
        let mut none = redis::cmd("EVAL");
        none.arg("return 1").arg(0);
        assert_eq!(command_key(&none), None);
        assert_eq!(command_key(&redis::cmd("PING")), None);
    }

    #[test]
    fn cluster_urls_name_every_node() {
        let c = RedisClient::open("redis+cluster://127.0.0.1:7000,127.0.0.1:7001/").unwrap();
        assert!(c.is_cluster());
        assert!(
            !RedisClient::open("redis://127.0.0.1:6379/")
                .unwrap()
                .is_cluster()
        );
        let e = RedisClient::open("redis+cluster://").unwrap_err();
        assert!(e.to_string().contains("host:port"), "{e}");
    }
}
