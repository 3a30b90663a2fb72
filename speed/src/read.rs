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
/// (video, hour). Uses `SCAN`: for tests, reconciliation and tooling.
/// Retried whole after a transient error ([`crate::conn::ReadRetry`]).
pub async fn all_counts<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
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

async fn all_counts_once<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &KeySpace,
) -> Result<BTreeMap<(String, DateTime<Utc>), Counts>> {
    let mut names: Vec<String> = Vec::new();
    {
        let mut it: redis::AsyncIter<'_, String> = conn
            .scan_match::<_, String>(keys.counters_pattern())
            .await?;
        while let Some(k) = futures::StreamExt::next(&mut it).await {
            names.push(k?);
        }
    }
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

/// One video's counts per hour in `[from, to)`, summed over `partitions`,
/// read directly (no `SCAN`): one `HGETALL` per partition and day, all in
/// one pipeline, so one round trip. Hours with no data are absent. The
/// video id must be a valid one (it becomes part of a key). Retried after a
/// transient error.
pub async fn video_counts<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &KeySpace,
    video: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    partitions: i32,
) -> Result<BTreeMap<DateTime<Utc>, Counts>> {
    schemas::validate::check_video_id(video).map_err(|v| crate::Error::BadInput(v.to_string()))?;
    let mut days: Vec<NaiveDate> = Vec::new();
    let mut day = from.date_naive();
    while to > day.and_time(chrono::NaiveTime::MIN).and_utc() {
        days.push(day);
        let Some(next) = day.succ_opt() else { break };
        day = next;
    }
    if days.is_empty() || partitions <= 0 {
        return Ok(BTreeMap::new());
    }
    let mut pipe = redis::pipe();
    for p in 0..partitions {
        for d in &days {
            pipe.hgetall(keys.counters(p, video, *d));
        }
    }
    let mut retry = crate::conn::ReadRetry::new();
    let replies: Vec<BTreeMap<String, u64>> = loop {
        match pipe.query_async(conn).await {
            Err(e) if retry.should(&e) => retry.wait(&e).await,
            r => break r?,
        }
    };
    let mut by_key: BTreeMap<(String, DateTime<Utc>), Counts> = BTreeMap::new();
    for (i, fields) in replies.iter().enumerate() {
        add_fields(&mut by_key, video, days[i % days.len()], fields);
    }
    Ok(by_key
        .into_iter()
        .map(|((_, h), c)| (h, c))
        .filter(|(h, _)| from <= *h && *h < to)
        .collect())
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
