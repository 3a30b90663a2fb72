//! How far the archive has got, and the watermark that follows from it.
//!
//! Per partition the archive records `next_offset` (everything below it is in
//! the archive) and `complete_through`: every record of the partition
//! *received* at or before that instant is archived. An event-hour H is
//! complete when every partition's `complete_through` is at or past
//! `H end + allowed lateness`: events for H received later than that are late
//! data, which make H dirty again when they are archived.

use chrono::{DateTime, Duration, DurationRound, TimeDelta, Utc};
use object_store::ObjectStore;
use schemas::RuleSet;
use serde::{Deserialize, Serialize};

use crate::{Result, layout};

/// One partition's archive progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// Kafka partition.
    pub partition: i32,
    /// Every record below this offset is archived.
    pub next_offset: i64,
    /// Every record of the partition received at or before this is archived.
    pub complete_through: DateTime<Utc>,
}

/// The archive's metadata (`archive/meta.json`): where its records come from
/// and the rules it re-validated them with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveMeta {
    /// The event topic.
    pub topic: String,
    /// Its partition count.
    pub partitions: i32,
    /// The Kafka cluster's id: progress offsets mean something only in the
    /// cluster they were read from.
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// The rule set the archive last ran with.
    #[serde(default)]
    pub rules: Option<RuleSet>,
}

impl ArchiveMeta {
    /// Whether this archive may continue one recorded as `old`: the same
    /// topic of the same Kafka cluster. Offsets from another cluster would
    /// skip or mislabel records silently, so that is an error naming both.
    pub fn check_same_source(&self, old: &ArchiveMeta) -> Result<(), String> {
        if old.topic != self.topic {
            return Err(format!(
                "this store archives topic {:?}, not {:?}; use another --store for another topic",
                old.topic, self.topic
            ));
        }
        if let (Some(was), Some(now)) = (&old.cluster_id, &self.cluster_id)
            && was != now
        {
            return Err(format!(
                "this store was archived from Kafka cluster {was:?}, but the broker is cluster {now:?}; \
                 its progress offsets mean nothing there: point --kafka at the original cluster, or use a new --store"
            ));
        }
        Ok(())
    }
}

/// The end of the last complete event-hour: the largest hour boundary `W` with
/// `W + lateness <= complete_through` for every partition. `None` while any
/// partition has no progress yet.
pub fn watermark(
    partitions: i32,
    progress: &[Progress],
    lateness: Duration,
) -> Option<DateTime<Utc>> {
    let mut min: Option<DateTime<Utc>> = None;
    for p in 0..partitions {
        let c = progress.iter().find(|x| x.partition == p)?.complete_through;
        min = Some(min.map_or(c, |m| m.min(c)));
    }
    let t = min? - lateness;
    t.duration_trunc(TimeDelta::hours(1)).ok()
}

/// Reads the archive's metadata and every partition's progress.
pub async fn load(store: &dyn ObjectStore) -> Result<(Option<ArchiveMeta>, Vec<Progress>)> {
    let meta: Option<ArchiveMeta> = layout::get_json(store, &layout::archive_meta()).await?;
    let mut out = Vec::new();
    if let Some(m) = &meta {
        for p in 0..m.partitions {
            if let Some(pr) = layout::get_json::<Progress>(store, &layout::progress(p)).await? {
                out.push(pr);
            }
        }
    }
    Ok((meta, out))
}

/// The archive watermark now, with `lateness`.
pub async fn archive_watermark(
    store: &dyn ObjectStore,
    lateness: Duration,
) -> Result<Option<DateTime<Utc>>> {
    let (meta, progress) = load(store).await?;
    Ok(meta.and_then(|m| watermark(m.partitions, &progress, lateness)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(partition: i32, t: &str) -> Progress {
        Progress {
            partition,
            next_offset: 0,
            complete_through: t.parse().unwrap(),
        }
    }

    #[test]
    fn watermark_is_the_slowest_partition_minus_lateness_floored_to_the_hour() {
        let l = Duration::minutes(10);
        let prog = [p(0, "2026-11-21T14:09:59Z"), p(1, "2026-11-21T15:30:00Z")];
        // 14:09:59 - 10 min = 13:59:59 -> hour 13 is not complete yet.
        assert_eq!(
            watermark(2, &prog, l).unwrap().to_rfc3339(),
            "2026-11-21T13:00:00+00:00"
        );
        let prog = [p(0, "2026-11-21T14:10:00Z"), p(1, "2026-11-21T15:30:00Z")];
        assert_eq!(
            watermark(2, &prog, l).unwrap().to_rfc3339(),
            "2026-11-21T14:00:00+00:00"
        );
    }

    #[test]
    fn a_store_from_another_cluster_or_topic_is_refused() {
        let meta = |topic: &str, cluster: Option<&str>| ArchiveMeta {
            topic: topic.into(),
            partitions: 4,
            cluster_id: cluster.map(Into::into),
            rules: None,
        };
        let old = meta("view-events", Some("abc"));
        assert_eq!(
            meta("view-events", Some("abc")).check_same_source(&old),
            Ok(())
        );
        let err = meta("view-events", Some("xyz"))
            .check_same_source(&old)
            .unwrap_err();
        assert!(err.contains("\"abc\"") && err.contains("\"xyz\""), "{err}");
        assert!(meta("other", Some("abc")).check_same_source(&old).is_err());
        // Stores written before cluster ids were recorded carry on.
        assert_eq!(
            meta("view-events", Some("abc")).check_same_source(&meta("view-events", None)),
            Ok(())
        );
    }

    #[test]
    fn no_watermark_until_every_partition_reported() {
        let prog = [p(0, "2026-11-21T14:10:00Z")];
        assert_eq!(watermark(2, &prog, Duration::zero()), None);
    }
}
