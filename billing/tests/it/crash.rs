//! The ledger after a crash at every point of an append, on a local and an
//! S3 store: a writer stopped after any one of its writes (the entry, its
//! signed checkpoint, `ledger/checkpoint`) leaves a log that the next
//! append, or `repair`, brings back to signed by itself, checking the
//! unsigned entry before signing it; the API's view never shows an entry no
//! checkpoint covers; and `verify` passes afterwards. A crash is an injected
//! failure of the next write ([`testkit::faults`]): what is left in the
//! store is what a `kill -9` there leaves.

use std::collections::BTreeMap;
use std::sync::Arc;

use billing::ledger::{Appended, Entry, Inputs, Kind, Ledger, LogKey, NewEntry, Totals};
use bytes::Bytes;
use chrono::Utc;
use object_store::ObjectStore;
use object_store::path::Path;
use testkit::faults::{FaultyStore, Op};

fn entry(n: u64) -> NewEntry {
    NewEntry {
        entry: Entry {
            seq: 0,
            prev: String::new(),
            kind: Kind::Statement,
            period: "2026-10".into(),
            statement_id: format!("s{n}"),
            provisional: true,
            files: BTreeMap::from([(
                format!("statements/2026-10/s{n}/statement.csv"),
                store::layout::sha256(format!("line {n}\n").as_bytes()),
            )]),
            totals: Some(Totals {
                currency: "USD".into(),
                amount: format!("{n}.00"),
                billable_views: n as i64,
                creators: 1,
                lines: 1,
                unattributed_billable_views: 0,
            }),
            sealed_totals: None,
            inputs: Inputs {
                published_seq: n,
                watermark: None,
                runs: vec![],
                catalog_sha256: None,
                rate_card_sha256: "00".into(),
            },
            lines_root: None,
            references: vec![],
            operator: "test".into(),
            recorded_at: Utc::now(),
        },
    }
}

async fn append(store: &Arc<FaultyStore>, key: &LogKey, n: u64) -> billing::Result<Appended> {
    let e = entry(n);
    let (path, _) = e.entry.files.iter().next().unwrap();
    store::layout::put(
        store.as_ref(),
        &Path::from(path.as_str()),
        Bytes::from(format!("line {n}\n")),
    )
    .await
    .unwrap();
    let id = e.entry.statement_id.clone();
    Ledger::new(store.clone())
        .append(key, e, move |log| log.statement(&id).map(|e| e.seq))
        .await
}

/// Every crash point on `open(name)`, a fresh empty store per point.
async fn every_crash_point(open: impl Fn(&str) -> Arc<dyn ObjectStore>) {
    let (_, key) = LogKey::generate("test.local/ledger").unwrap();
    // (the write that fails, whether the entry it carried was written)
    let points = [
        ("ledger/entries/", false),
        ("ledger/checkpoints/", true),
        ("ledger/checkpoint", true),
    ];
    for (write, entry_written) in points {
        for repair_first in [false, true] {
            let name = format!("{}-{repair_first}", write.replace('/', "-"));
            let store = FaultyStore::new(open(&name));
            let ledger = Ledger::new(store.clone());
            assert_eq!(append(&store, &key, 0).await.unwrap(), Appended::New(0));
            store.fail(Op::Put, write, 0, 1);
            let crashed = append(&store, &key, 1).await;
            assert!(crashed.is_err(), "{write}: the append was not stopped");
            assert_eq!(store.injected().len(), 1, "{write}: {:?}", store.injected());
            store.clear();

            // What readers are shown: only what a checkpoint covers.
            let shown = ledger.read_signed().await.unwrap();
            let signed_after_crash = if write == "ledger/checkpoint" { 2 } else { 1 };
            assert_eq!(shown.entries.len(), signed_after_crash, "{write}");

            if repair_first {
                let n = ledger.repair(&key).await.unwrap();
                assert_eq!(n, u64::from(write == "ledger/checkpoints/"), "{write}");
                ledger.verify(None, None).await.unwrap();
            }
            // The next append goes through by itself.
            let next = append(&store, &key, 2).await.unwrap();
            let want = if entry_written { 2 } else { 1 };
            assert_eq!(
                next,
                Appended::New(want),
                "{write} (repair first: {repair_first})"
            );
            let v = ledger.verify(None, None).await.unwrap();
            assert_eq!(v.entries, want + 1, "{write}");
            let log = ledger.read_signed().await.unwrap();
            let ids: Vec<&str> = log
                .entries
                .iter()
                .map(|e| e.statement_id.as_str())
                .collect();
            let expected: &[&str] = if entry_written {
                &["s0", "s1", "s2"]
            } else {
                &["s0", "s2"]
            };
            assert_eq!(ids, expected, "{write}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_of_an_append_recovers_on_a_local_store() {
    let dir = tempfile::tempdir().unwrap();
    every_crash_point(|name| {
        let root = dir.path().join(name);
        std::fs::create_dir_all(&root).unwrap();
        store::layout::open(&format!("file://{}", root.display())).unwrap()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_of_an_append_recovers_on_s3() {
    let s3 = testkit::s3::S3Server::start("ledger").expect("moto");
    every_crash_point(|name| store::open_with(&s3.url(name), s3.vars()).unwrap()).await;
}

/// An unsigned entry that does not hold up is never signed: one whose
/// statement file is not what it records is refused by the next append,
/// which names it, and nothing is written.
#[tokio::test]
async fn an_unsigned_entry_that_does_not_check_out_is_not_signed() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        FaultyStore::new(store::layout::open(&format!("file://{}", dir.path().display())).unwrap());
    let (_, key) = LogKey::generate("test.local/ledger").unwrap();
    let ledger = Ledger::new(store.clone());
    append(&store, &key, 0).await.unwrap();
    store.fail(Op::Put, "ledger/checkpoints/", 0, 1);
    assert!(append(&store, &key, 1).await.is_err());
    store.clear();
    store::layout::put(
        store.as_ref(),
        &Path::from("statements/2026-10/s1/statement.csv"),
        Bytes::from("line 1, edited\n"),
    )
    .await
    .unwrap();
    let err = append(&store, &key, 2).await.unwrap_err().to_string();
    assert!(
        err.contains("entry 1")
            && err.contains("cannot be signed")
            && err.contains("s1/statement.csv"),
        "{err}"
    );
    assert!(ledger.repair(&key).await.is_err());
    assert_eq!(ledger.read_signed().await.unwrap().entries.len(), 1);
    assert!(ledger.verify(None, None).await.is_err());
}
