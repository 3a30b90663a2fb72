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
//! The batch watermark `W` is the end of the contiguous block of owned hours
//! that starts at the earliest owned hour: serving takes hours before `W` from
//! batch and the rest from the speed layer (DESIGN §5.4).

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};

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
}

/// `CURRENT`: names the published state in force.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Current {
    /// The sequence number of the published state in force.
    pub seq: u64,
    /// Its path.
    pub path: String,
}

/// The latest published state, if any run was published: the one `CURRENT`
/// names, or a later one if the chain goes on past it (a publisher that died
/// between writing its state and `CURRENT`, or whose `CURRENT` write was
/// overtaken). Every state is complete when it appears (one create-only
/// put), so following the chain is always safe.
pub async fn current(store: &dyn ObjectStore) -> Result<Option<Published>> {
    let mut latest = match layout::get_json::<Current>(store, &layout::current()).await? {
        Some(c) => Some(
            layout::get_json::<Published>(store, &layout::published(c.seq))
                .await?
                .ok_or_else(|| {
                    Error::Corrupt(format!(
                        "CURRENT names {} which does not exist; restore it from a backup or point CURRENT at the latest published/ state",
                        c.path
                    ))
                })?,
        ),
        None => None,
    };
    loop {
        let next = latest.as_ref().map_or(1, |p| p.seq + 1);
        match layout::get_json::<Published>(store, &layout::published(next)).await? {
            Some(p) if p.seq == next => latest = Some(p),
            Some(p) => {
                return Err(Error::Corrupt(format!(
                    "{} holds seq {}; restore it from a backup",
                    layout::published(next),
                    p.seq
                )));
            }
            None => return Ok(latest),
        }
    }
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
