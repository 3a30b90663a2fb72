//! The published state: which run owns each hour, and the batch watermark.
//! Written by `batch` (see `batch::publish`), read by everything after it.
//!
//! The published state (`published/<seq>.json`) maps every hour to the run
//! that owns it; a run publishes by copying the current state, pointing its
//! hours at itself, writing the new state create-only (a concurrent publisher
//! loses the race and retries on top of the winner), and then replacing
//! `CURRENT`, one small object, in one write. Readers read `CURRENT`, then the
//! state it names, then each hour's run: they never see half a publish.
//!
//! Every link of that chain is checked by hash as it is read: `CURRENT`
//! records the SHA-256 of the state it names, each state that of the state
//! before it (so the states a crashed publisher left past `CURRENT` are
//! checked link by link) and of the manifest of every run it names, and a
//! manifest that of each output file ([`crate::manifest::Manifest::read_output`]).
//! A mismatch is a `corrupt` error naming the object, never a number.
//!
//! The batch watermark `W` is the end of the contiguous block of owned hours
//! that starts at the earliest owned hour: serving takes hours before `W` from
//! batch and the rest from the speed layer (DESIGN §5.4).

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};

use crate::manifest::Manifest;
use crate::{Error, Result, layout};

/// A published state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Published {
    /// Sequence number (1, 2, ...).
    pub seq: u64,
    /// The hour → run mapping.
    pub hours: BTreeMap<DateTime<Utc>, String>,
    /// End of the contiguous owned hours from the first one.
    pub watermark: Option<DateTime<Utc>>,
    /// When it was published.
    pub published_at: DateTime<Utc>,
    /// SHA-256 of the bytes of each named run's manifest (states written
    /// before manifests were hashed have none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub manifests: BTreeMap<String, String>,
    /// SHA-256 of the bytes of the state before this one (`None` for the
    /// first, and for states written before the chain was hashed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_sha256: Option<String>,
}

impl Published {
    /// Run `run_id`'s manifest, checked against the hash this state
    /// records for it.
    pub async fn manifest(&self, store: &dyn ObjectStore, run_id: &str) -> Result<Manifest> {
        let sha = self.manifests.get(run_id);
        if sha.is_none() && !self.manifests.is_empty() {
            return Err(Error::Corrupt(format!(
                "published state {} names run {run_id} but records no hash of its manifest",
                self.seq
            )));
        }
        crate::manifest::load(
            store,
            run_id,
            sha.map(String::as_str),
            &format!("published state {}", self.seq),
        )
        .await
    }
}

/// `CURRENT`: names the published state in force.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Current {
    /// The sequence number of the published state in force.
    pub seq: u64,
    /// Its path.
    pub path: String,
    /// SHA-256 of its bytes (absent in a `CURRENT` written before states
    /// were hashed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// The latest published state, if any run was published: the one `CURRENT`
/// names, or a later one if the chain goes on past it (a publisher that died
/// between writing its state and `CURRENT`, or whose `CURRENT` write was
/// overtaken). Every state is complete when it appears (one create-only
/// put), so following the chain is always safe; every link is checked by
/// hash.
pub async fn current(store: &dyn ObjectStore) -> Result<Option<Published>> {
    Ok(current_with_hash(store).await?.map(|(p, _)| p))
}

/// [`current`], with the SHA-256 of the state's bytes (what the next state
/// records as its `prev_sha256`).
pub async fn current_with_hash(store: &dyn ObjectStore) -> Result<Option<(Published, String)>> {
    let mut latest = match layout::get_json::<Current>(store, &layout::current()).await? {
        Some(c) => {
            let path = layout::published(c.seq);
            let bytes = match &c.sha256 {
                Some(sha) => layout::get_verified(store, &path, sha, "CURRENT").await?,
                None => layout::get_bytes(store, &path).await?.ok_or_else(|| {
                    Error::Corrupt(format!(
                        "CURRENT names {} which does not exist; restore it from a backup or point CURRENT at the latest published/ state",
                        c.path
                    ))
                })?,
            };
            Some(parse(&path, c.seq, bytes)?)
        }
        None => None,
    };
    loop {
        let next = latest
            .as_ref()
            .map_or(1, |(p, _): &(Published, String)| p.seq + 1);
        let path = layout::published(next);
        let Some(bytes) = layout::get_bytes(store, &path).await? else {
            return Ok(latest);
        };
        let (p, sha) = parse(&path, next, bytes)?;
        if let Some((prev, prev_sha)) = &latest
            && p.prev_sha256.as_ref().is_some_and(|s| s != prev_sha)
        {
            return Err(Error::Corrupt(format!(
                "{path} records the state before it as SHA-256 {}, but state {} hashes to {prev_sha}: one of them changed after it was written; restore it from a backup",
                p.prev_sha256.as_deref().unwrap_or_default(),
                prev.seq
            )));
        }
        latest = Some((p, sha));
    }
}

fn parse(
    path: &object_store::path::Path,
    seq: u64,
    bytes: bytes::Bytes,
) -> Result<(Published, String)> {
    let p: Published = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Corrupt(format!("{path} is not a published state: {e}")))?;
    if p.seq != seq {
        return Err(Error::Corrupt(format!(
            "{path} holds seq {}; restore it from a backup",
            p.seq
        )));
    }
    Ok((p, layout::sha256(&bytes)))
}

/// The watermark of an hour map.
pub fn watermark(hours: &BTreeMap<DateTime<Utc>, String>) -> Option<DateTime<Utc>> {
    let mut it = hours.keys();
    let mut end = *it.next()? + TimeDelta::hours(1);
    for &h in it {
        if h != end {
            break;
        }
        end = h + TimeDelta::hours(1);
    }
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_stops_at_the_first_hole() {
        let h = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let mut m = BTreeMap::new();
        assert_eq!(watermark(&m), None);
        m.insert(h("2026-11-21T10:00:00Z"), "a".to_owned());
        m.insert(h("2026-11-21T11:00:00Z"), "a".to_owned());
        m.insert(h("2026-11-21T13:00:00Z"), "b".to_owned());
        assert_eq!(watermark(&m), Some(h("2026-11-21T12:00:00Z")));
    }
}
