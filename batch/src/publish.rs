//! Publishing runs: how runs over different ranges compose.
//!
//! The published state (`published/<seq>.json`) maps every hour to the run
//! that owns it (see [`store::state`]). A run publishes by taking the latest
//! state, pointing its hours at itself, and writing that as the next seq
//! *create-only*: of two publishers racing for one seq, one wins and the
//! other retries on top of it (with backoff). Then `CURRENT` is pointed at
//! the new seq.
//!
//! Readers take `CURRENT` and follow the chain forward past it while a next
//! state exists ([`store::state::current`]), so a publisher that died between
//! writing its state and `CURRENT`, or a slow one whose `CURRENT` write lands
//! after a newer one, can never hide a published state or jam later
//! publishes: the orphaned state is complete (written in one put, after the
//! run's views and manifest) and is simply adopted as the base.

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, TimeDelta, Utc};
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use store::layout;
#[cfg(test)]
use store::state::current;
use store::state::{Current, Published, current_with_hash, watermark};

use crate::{Error, Result};

/// How many create-only attempts before giving up: each loss means another
/// publisher won and moved the chain forward, so this bounds contention, not
/// crashes (an orphaned state costs no attempt).
const ATTEMPTS: usize = 50;

/// Publishes `run_id` (whose manifest's bytes hash to `manifest_sha256`) as
/// the owner of hours `[from, to)`. The new state records that hash, keeps
/// those of the runs still owning hours, and the hash of the state it
/// follows; `CURRENT` records the new state's.
pub async fn publish(
    store: &dyn ObjectStore,
    run_id: &str,
    manifest_sha256: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Published> {
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(5))
        .with_max_delay(std::time::Duration::from_millis(500))
        .with_jitter()
        .with_max_times(ATTEMPTS)
        .build();
    loop {
        let base = current_with_hash(store).await?;
        let seq = base.as_ref().map_or(1, |(c, _)| c.seq + 1);
        let (mut hours, mut manifests, prev_sha256) = match base {
            Some((c, sha)) => (c.hours, c.manifests, Some(sha)),
            None => Default::default(),
        };
        let mut h = from;
        while h < to {
            hours.insert(h, run_id.to_owned());
            h += TimeDelta::hours(1);
        }
        manifests.insert(run_id.to_owned(), manifest_sha256.to_owned());
        // A state from before manifests were hashed names runs it has no
        // hash for: take each from its manifest now, as it is.
        for run in hours.values() {
            if !manifests.contains_key(run) {
                let path = layout::manifest(run);
                let bytes = layout::get_bytes(store, &path).await?.ok_or_else(|| {
                    Error::Corrupt(format!(
                        "the published state names run {run}, whose manifest {path} is missing; rerun its hours"
                    ))
                })?;
                manifests.insert(run.clone(), layout::sha256(&bytes));
            }
        }
        let owners: std::collections::BTreeSet<&String> = hours.values().collect();
        manifests.retain(|run, _| owners.contains(run));
        let state = Published {
            seq,
            watermark: watermark(&hours),
            hours,
            published_at: Utc::now(),
            manifests,
            prev_sha256,
        };
        let bytes = layout::json_bytes(&state)?;
        let state_sha256 = layout::sha256(&bytes);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match store
            .put_opts(&layout::published(seq), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                // Another publisher took this seq: retry on top of it.
                match backoff.next() {
                    Some(pause) => {
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                    None => {
                        return Err(Error::Input(format!(
                            "could not publish run {run_id}: other publishers won {ATTEMPTS} times in a row; retry when fewer runs publish at once"
                        )));
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
        layout::put_json(
            store,
            &layout::current(),
            &Current {
                seq,
                path: layout::published(seq).to_string(),
                sha256: Some(state_sha256),
            },
        )
        .await?;
        return Ok(state);
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    fn h(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// A publisher that died after writing its state but before `CURRENT`
    /// leaves an orphan: later publishes adopt it instead of jamming, and
    /// readers see it.
    #[tokio::test]
    async fn an_orphaned_state_is_adopted_not_a_jam() {
        let store = InMemory::new();
        let first = publish(
            &store,
            "a",
            "sha-a",
            h("2026-11-21T00:00:00Z"),
            h("2026-11-21T02:00:00Z"),
        )
        .await
        .unwrap();
        assert_eq!(first.seq, 1);
        // The crash: state 2 written, CURRENT still names 1.
        let mut orphan = first.clone();
        orphan.seq = 2;
        orphan.hours.insert(h("2026-11-21T02:00:00Z"), "b".into());
        orphan.manifests.insert("b".into(), "sha-b".into());
        orphan.watermark = watermark(&orphan.hours);
        layout::put_json(&store, &layout::published(2), &orphan)
            .await
            .unwrap();
        assert_eq!(current(&store).await.unwrap().unwrap(), orphan);

        let next = publish(
            &store,
            "c",
            "sha-c",
            h("2026-11-21T03:00:00Z"),
            h("2026-11-21T04:00:00Z"),
        )
        .await
        .unwrap();
        assert_eq!(next.seq, 3);
        let runs: Vec<&str> = next.hours.values().map(String::as_str).collect();
        assert_eq!(runs, ["a", "a", "b", "c"]);
        assert_eq!(next.watermark, Some(h("2026-11-21T04:00:00Z")));
        let cur: Current = layout::get_json(&store, &layout::current())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(cur.seq, 3);
        assert_eq!(current(&store).await.unwrap().unwrap(), next);
    }

    /// Concurrent publishers never lose each other's hours.
    #[tokio::test]
    async fn racing_publishers_all_land() {
        let store = std::sync::Arc::new(InMemory::new());
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let from = h("2026-11-21T00:00:00Z") + TimeDelta::hours(i);
                    publish(
                        store.as_ref(),
                        &format!("r{i}"),
                        "sha",
                        from,
                        from + TimeDelta::hours(1),
                    )
                    .await
                    .unwrap()
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let cur = current(store.as_ref()).await.unwrap().unwrap();
        assert_eq!(cur.seq, 8);
        assert_eq!(cur.hours.len(), 8);
        assert_eq!(cur.watermark, Some(h("2026-11-21T08:00:00Z")));
    }
}
