//! Reading the speed layer's counters back.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use redis::AsyncCommands;
use redis::aio::ConnectionLike;

use crate::Result;
use crate::keys::KeySpace;

/// Counts of one video in one UTC hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Views.
    pub views: u64,
    /// Billable views (no fraud cap in the speed layer).
    pub billable_views: u64,
    /// Watch seconds.
    pub watch_seconds: u64,
}

/// Every counter in Redis under `keys`, summed over partitions, by
/// (video, hour). Uses `SCAN` (on a cluster, of every master): for tests,
/// reconciliation and tooling. Retried whole after a transient error
/// ([`crate::conn::ReadRetry`]).
pub async fn all_counts(
    conn: &mut crate::conn::RedisConn,
    keys: &KeySpace,
) -> Result<BTreeMap<(String, DateTime<Utc>), Counts>> {
    let mut retry = crate::conn::ReadRetry::new();
    loop {
        match all_counts_once(conn, keys).await {
            Err(crate::Error::Redis(e)) if retry.should(&e) => retry.wait(&e).await,
            r => return r,
        }
    }
}

async fn all_counts_once(
    conn: &mut crate::conn::RedisConn,
    keys: &KeySpace,
) -> Result<BTreeMap<(String, DateTime<Utc>), Counts>> {
    let names = crate::conn::scan_keys(conn, &keys.counters_pattern()).await?;
    let mut out: BTreeMap<(String, DateTime<Utc>), Counts> = BTreeMap::new();
    for name in names {
        let Some((_, video, day)) = keys.parse_counters(&name) else {
            continue;
        };
        let fields: BTreeMap<String, u64> = conn.hgetall(&name).await?;
        add_fields(&mut out, &video, day, &fields);
    }
    Ok(out)
}

fn add_fields(
    out: &mut BTreeMap<(String, DateTime<Utc>), Counts>,
    video: &str,
    day: NaiveDate,
    fields: &BTreeMap<String, u64>,
) {
    for (f, v) in fields {
        let (hh, kind) = f.split_at(f.len().saturating_sub(1));
        let Ok(hour) = hh.parse::<u32>() else {
            continue;
        };
        let Some(t) = day.and_hms_opt(hour, 0, 0) else {
            continue;
        };
        let c = out.entry((video.to_owned(), t.and_utc())).or_default();
        match kind {
            "v" => c.views += v,
            "b" => c.billable_views += v,
            "w" => c.watch_seconds += v,
            _ => {}
        }
    }
}

/// The topic's partition count as the speed layer recorded it (`None`
/// before it first ran). Retried after a transient error.
pub async fn stored_partitions<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &KeySpace,
) -> Result<Option<i32>> {
    let mut retry = crate::conn::ReadRetry::new();
    loop {
        match conn
            .hget::<_, _, Option<i32>>(keys.meta(), "partitions")
            .await
        {
            Err(e) if retry.should(&e) => retry.wait(&e).await,
            r => return Ok(r?),
        }
    }
}

/// The UTC days whose counters hold hours of `[from, to)`.
fn days_of(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<NaiveDate> {
    let mut days: Vec<NaiveDate> = Vec::new();
    let mut day = from.date_naive();
    while to > day.and_time(chrono::NaiveTime::MIN).and_utc() {
        days.push(day);
        let Some(next) = day.succ_opt() else { break };
        day = next;
    }
    days
}

/// One video's counts per hour in `[from, to)`, summed over `partitions`,
/// read directly (no `SCAN`) in one round trip ([`videos_once`]). Hours
/// with no data are absent. Retried after a transient error.
pub async fn video_counts<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &KeySpace,
    video: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    partitions: i32,
) -> Result<BTreeMap<DateTime<Utc>, Counts>> {
    let mut retry = crate::conn::ReadRetry::new();
    loop {
        match videos_once(conn, keys, &[video], from, to, partitions, false).await {
            Err(crate::Error::Redis(e)) if retry.should(&e) => retry.wait(&e).await,
            r => return r.map(|mut read| read.hours.pop().unwrap_or_default()),
        }
    }
}

/// What [`videos_once`] read.
#[derive(Debug, Clone, Default)]
pub struct VideosRead {
    /// Per video asked for, in order: its counts per hour of the range,
    /// summed over partitions (hours with no data absent).
    pub hours: Vec<BTreeMap<DateTime<Utc>, Counts>>,
    /// Per partition: the newest `received_at` it has applied (see
    /// [`applied_at`]).
    pub applied_at: Vec<Option<DateTime<Utc>>>,
    /// Per video, when asked for: the HyperLogLog estimate of its distinct
    /// viewers over the whole UTC days that hold the range (the speed
    /// layer keeps viewers per day, not per hour).
    pub viewers: Option<Vec<u64>>,
}

/// Reads `videos`' counters for `[from, to)` and every partition's
/// applied-at time in **one** pipeline, so the counts and the freshness
/// come from one moment: one `HGETALL` per video, partition and day, one
/// `GET` per partition and, with `viewers`, one `PFCOUNT` per video and
/// partition over its viewer sets of the days. Not retried: a caller
/// answering a person decides how long to wait. Every video id must be a
/// valid one (it becomes part of a key): [`crate::Error::BadInput`] if not.
///
/// On Redis Cluster ([`crate::conn::RedisConn`]) the pipeline goes out as
/// one per partition (hash slot), at once.
pub async fn videos_once<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &KeySpace,
    videos: &[&str],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    partitions: i32,
    viewers: bool,
) -> Result<VideosRead> {
    for v in videos {
        schemas::validate::check_video_id(v).map_err(|e| crate::Error::BadInput(e.to_string()))?;
    }
    let days = if partitions > 0 {
        days_of(from, to)
    } else {
        Vec::new()
    };
    let parts = partitions.max(0);
    let mut pipe = redis::pipe();
    for v in videos {
        for p in 0..parts {
            for d in &days {
                pipe.hgetall(keys.counters(p, v, *d));
            }
        }
    }
    for p in 0..parts {
        pipe.get(keys.applied_at(p));
    }
    let count_viewers = viewers && !days.is_empty();
    // Per partition: a multi-key PFCOUNT must stay in one hash slot on a
    // cluster. A video's events are in one partition (the topic is keyed by
    // video), so the sum over partitions is the union; only after the topic
    // is repartitioned could a viewer seen in two partitions count twice.
    if count_viewers {
        for v in videos {
            for p in 0..parts {
                let mut cmd = redis::cmd("PFCOUNT");
                for d in &days {
                    cmd.arg(keys.viewers(p, v, *d));
                }
                pipe.add_command(cmd);
            }
        }
    }
    let replies: Vec<redis::Value> = if pipe.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(conn).await?
    };
    let mut it = replies.into_iter();
    let mut next = || {
        it.next().ok_or_else(|| {
            crate::Error::Redis(redis::RedisError::from((
                redis::ErrorKind::Client,
                "pipeline answered fewer replies than it sent",
            )))
        })
    };
    let per_video = days.len() * parts as usize;
    let mut out = VideosRead::default();
    for v in videos {
        let mut by_key: BTreeMap<(String, DateTime<Utc>), Counts> = BTreeMap::new();
        for i in 0..per_video {
            let fields: BTreeMap<String, u64> =
                redis::from_redis_value(next()?).map_err(redis::RedisError::from)?;
            add_fields(&mut by_key, v, days[i % days.len()], &fields);
        }
        out.hours.push(
            by_key
                .into_iter()
                .map(|((_, h), c)| (h, c))
                .filter(|(h, _)| from <= *h && *h < to)
                .collect(),
        );
    }
    for _ in 0..parts {
        let us: Option<i64> = redis::from_redis_value(next()?).map_err(redis::RedisError::from)?;
        out.applied_at
            .push(us.and_then(DateTime::from_timestamp_micros));
    }
    if count_viewers {
        let mut counts = Vec::with_capacity(videos.len());
        for _ in videos {
            let mut count = 0u64;
            for _ in 0..parts {
                let n: u64 = redis::from_redis_value(next()?).map_err(redis::RedisError::from)?;
                count += n;
            }
            counts.push(count);
        }
        out.viewers = Some(counts);
    } else if viewers {
        out.viewers = Some(vec![0; videos.len()]);
    }
    Ok(out)
}

/// The newest `received_at` each of `partitions` has applied (`None`:
/// nothing yet), stored by the script atomically with the offset: the speed
/// counters hold every record of the partition received up to then.
pub async fn applied_at<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &KeySpace,
    partitions: i32,
) -> Result<Vec<Option<DateTime<Utc>>>> {
    let mut pipe = redis::pipe();
    for p in 0..partitions {
        pipe.get(keys.applied_at(p));
    }
    let mut retry = crate::conn::ReadRetry::new();
    let raw: Vec<Option<i64>> = loop {
        match pipe.query_async(conn).await {
            Err(e) if retry.should(&e) => retry.wait(&e).await,
            r => break r?,
        }
    };
    Ok(raw
        .into_iter()
        .map(|us| us.and_then(DateTime::from_timestamp_micros))
        .collect())
}

/// The stored next offset of each of `partitions` (None: nothing applied
/// yet). Retried after a transient error.
pub async fn stored_offsets<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &KeySpace,
    partitions: i32,
) -> Result<Vec<Option<i64>>> {
    let mut retry = crate::conn::ReadRetry::new();
    'again: loop {
        let mut out = Vec::new();
        for p in 0..partitions {
            match conn.get(keys.offset(p)).await {
                Ok(v) => out.push(v),
                Err(e) if retry.should(&e) => {
                    retry.wait(&e).await;
                    continue 'again;
                }
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(out);
    }
}
