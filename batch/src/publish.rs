//! Publishing runs: how runs over different ranges compose.
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
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, store};

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

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Current {
    seq: u64,
    path: String,
}

/// The current published state, if any run was published.
pub async fn current(store: &dyn ObjectStore) -> Result<Option<Published>> {
    let Some(c) = store::get_json::<Current>(store, &store::current()).await? else {
        return Ok(None);
    };
    store::get_json::<Published>(store, &store::published(c.seq))
        .await?
        .map(Some)
        .ok_or_else(|| Error::Corrupt(format!("CURRENT names {} which does not exist", c.path)))
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

/// Publishes `run_id` as the owner of hours `[from, to)`.
pub async fn publish(
    store: &dyn ObjectStore,
    run_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Published> {
    for _attempt in 0..20 {
        let cur = current(store).await?;
        let seq = cur.as_ref().map_or(1, |c| c.seq + 1);
        let mut hours = cur.map(|c| c.hours).unwrap_or_default();
        let mut h = from;
        while h < to {
            hours.insert(h, run_id.to_owned());
            h += TimeDelta::hours(1);
        }
        let state = Published {
            seq,
            watermark: watermark(&hours),
            hours,
            published_at: Utc::now(),
        };
        let mut bytes =
            serde_json::to_vec_pretty(&state).map_err(|e| Error::Corrupt(e.to_string()))?;
        bytes.push(b'\n');
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match store
            .put_opts(&store::published(seq), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
        store::put_json(
            store,
            &store::current(),
            &Current {
                seq,
                path: store::published(seq).to_string(),
            },
        )
        .await?;
        return Ok(state);
    }
    Err(Error::Corrupt(
        "could not publish after 20 attempts: other publishers keep winning".into(),
    ))
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
