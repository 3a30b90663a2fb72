//! The store's contract on a real S3-compatible server (moto on loopback):
//! create-only writes stay create-only under a race, listing and prefixes
//! behave as on a local directory, publishing's CURRENT swap keeps every
//! racing publisher's hours, and archive → scheduled batch runs on it.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use futures::TryStreamExt;
use loadgen::Truth;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use schemas::RuleSet;
use testkit::s3::S3Server;

use crate::harness::{Setup, expected};

fn open(s3: &S3Server, prefix: &str) -> Arc<dyn ObjectStore> {
    store::open_with(&s3.url(prefix), s3.vars()).expect("open the S3 store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_only_writes_race_to_exactly_one_winner_on_s3() {
    let s3 = S3Server::start("contract").expect("moto");
    let store = open(&s3, "race");
    let key = Path::from("ledger/entries/00000000000000000000.json");
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move {
                let opts = PutOptions {
                    mode: PutMode::Create,
                    ..PutOptions::default()
                };
                let body = PutPayload::from(format!("writer {i}"));
                (i, store.put_opts(&key, body, opts).await)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (i, Ok(_)) => winners.push(i),
            (_, Err(object_store::Error::AlreadyExists { .. })) => {}
            (i, Err(e)) => panic!("writer {i}: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one create wins: {winners:?}");
    let stored = store.get(&key).await.unwrap().bytes().await.unwrap();
    assert_eq!(stored, Bytes::from(format!("writer {}", winners[0])));
    // And a later create of the same key is refused too.
    let again = store
        .put_opts(
            &key,
            PutPayload::from_static(b"late"),
            PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            },
        )
        .await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_and_prefixes_on_s3() {
    let s3 = S3Server::start("listing").expect("moto");
    let a = open(&s3, "tenant-a/data");
    let b = open(&s3, "tenant-b");
    let names = [
        "raw/dt=2026-11-20/hour=23/p0000-1.parquet",
        "raw/dt=2026-11-21/hour=00/p0000-2.parquet",
        "raw/dt=2026-11-21/hour=01/p0001-3.parquet",
        "runs/abc.json",
    ];
    for n in names {
        a.put(&Path::from(n), PutPayload::from_static(b"x"))
            .await
            .unwrap();
    }
    let list = |store: Arc<dyn ObjectStore>, prefix: &'static str, offset: Option<&'static str>| async move {
        let prefix = Path::from(prefix);
        let listed: Vec<_> = match offset {
            Some(o) => store
                .list_with_offset(Some(&prefix), &Path::from(o))
                .try_collect()
                .await
                .unwrap(),
            None => store.list(Some(&prefix)).try_collect().await.unwrap(),
        };
        let mut out: Vec<String> = listed.into_iter().map(|m| m.location.to_string()).collect();
        out.sort();
        out
    };
    assert_eq!(list(a.clone(), "raw", None).await, names[..3]);
    assert_eq!(
        list(a.clone(), "raw", Some("raw/dt=2026-11-20")).await,
        names[..3],
        "offset is exclusive and lexicographic"
    );
    assert_eq!(
        list(a.clone(), "raw", Some("raw/dt=2026-11-21")).await,
        names[1..3]
    );
    assert!(
        list(b.clone(), "raw", None).await.is_empty(),
        "prefixes keep stores apart"
    );
    assert!(matches!(
        b.get(&Path::from("runs/abc.json")).await,
        Err(object_store::Error::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_publishers_all_land_through_current_on_s3() {
    let s3 = S3Server::start("publish").expect("moto");
    let store = open(&s3, "views");
    let h0: DateTime<Utc> = "2026-11-21T00:00:00Z".parse().unwrap();
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let from = h0 + TimeDelta::hours(i);
                batch::publish::publish(
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
    let cur = store::state::current(store.as_ref())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cur.seq, 6, "one published state per publisher, none lost");
    assert_eq!(cur.hours.len(), 6);
    assert_eq!(cur.watermark, Some(h0 + TimeDelta::hours(6)));
    let named: store::state::Current =
        store::layout::get_json(store.as_ref(), &store::layout::current())
            .await
            .unwrap()
            .unwrap();
    assert!(named.seq <= 6 && named.seq >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_and_the_scheduled_batch_run_on_s3() {
    let s3 = S3Server::start("pipeline").expect("moto");
    let store = open(&s3, "viewcount");
    let s = Setup::on(store, tempfile::tempdir().unwrap()).await;
    let mut truth = Truth::new(RuleSet::default());
    s.produce(3_000, 71, &mut truth).await;
    let archive = s.archive("archive");
    s.wait_archived().await;
    archive.stop().await;

    let now = Utc::now();
    let opts = batch::run::RunOptions::new(now, now);
    let (plan, reports) = batch::dirty::run_dirty(s.store.clone(), &opts, &|_, _, _| {})
        .await
        .expect("dirty run on S3");
    assert!(!reports.is_empty(), "{plan:#?}");
    let w = plan.archive_watermark.unwrap();
    let published = store::state::current(s.store.as_ref())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(published.watermark, Some(w));
    // The published numbers equal the truth for every complete hour.
    let mut got = store::ViewsTable::new();
    for r in &reports {
        let views = s.views(r).await;
        got.extend(
            views
                .into_iter()
                .filter(|((_, h), _)| published.hours[h] == r.manifest.run_id),
        );
    }
    let mut want = expected(&truth);
    want.retain(|(_, h), _| *h < w);
    testkit::assert_same_map(&got, &want, "batch on S3");
    // A rerun finds nothing to do, and a repeated run writes the same bytes.
    let again = batch::dirty::plan(s.store.as_ref(), &opts).await.unwrap();
    assert!(again.dirty.is_empty(), "{again:#?}");
    let (from, to) = (reports[0].manifest.from, reports[0].manifest.to);
    let rerun = s.run_range(from, to).await;
    assert_eq!(rerun.manifest.outputs, reports[0].manifest.outputs);
}
