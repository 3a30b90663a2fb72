//! The ledger as a transparency log: racing writers, proofs checked with the
//! public key alone, and the tamper matrix — each tampering detected by
//! `verify` with a message naming what broke.

use std::collections::BTreeMap;
use std::sync::Arc;

use billing::ledger::{
    self, Appended, Entry, Inputs, Kind, Ledger, LogKey, NewEntry, Proven, Totals,
};
use bytes::Bytes;
use chrono::Utc;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

struct Log {
    _dir: tempfile::TempDir,
    store: Arc<dyn ObjectStore>,
    key: LogKey,
    ledger: Ledger,
}

fn entry(n: u64) -> NewEntry {
    let file = format!("statements/2026-{:02}/s{n}/statement.csv", n % 12 + 1);
    NewEntry {
        entry: Entry {
            seq: 0,
            prev: String::new(),
            kind: Kind::Statement,
            period: format!("2026-{:02}", n % 12 + 1),
            statement_id: format!("s{n}"),
            provisional: false,
            files: BTreeMap::from([(
                file,
                store::layout::sha256(format!("line {n}\n").as_bytes()),
            )]),
            totals: Some(Totals {
                currency: "USD".into(),
                amount: format!("{n}.00"),
                billable_views: n as i64 * 400,
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

impl Log {
    /// A log of `n` entries, each with its statement file.
    async fn with(n: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = store::layout::open(&format!("file://{}", dir.path().display())).unwrap();
        let (_, key) = LogKey::generate("test.local/ledger").unwrap();
        let ledger = Ledger::new(store.clone());
        let log = Self {
            _dir: dir,
            store,
            key,
            ledger,
        };
        for i in 0..n {
            log.append(i).await;
        }
        log
    }

    async fn append(&self, i: u64) -> Appended {
        let e = entry(i);
        let (path, _) = e.entry.files.iter().next().unwrap();
        store::layout::put(
            self.store.as_ref(),
            &Path::from(path.as_str()),
            Bytes::from(format!("line {i}\n")),
        )
        .await
        .unwrap();
        let id = e.entry.statement_id.clone();
        self.ledger
            .append(&self.key, e, move |log| log.statement(&id).map(|e| e.seq))
            .await
            .unwrap()
    }

    async fn get(&self, p: &Path) -> Vec<u8> {
        self.store
            .get(p)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    }

    async fn put(&self, p: &Path, b: Vec<u8>) {
        store::layout::put(self.store.as_ref(), p, b.into())
            .await
            .unwrap();
    }

    async fn verify_err(&self) -> String {
        self.ledger
            .verify(None, None)
            .await
            .unwrap_err()
            .to_string()
    }
}

#[tokio::test]
async fn racing_writers_never_fork_the_log() {
    let log = Arc::new(Log::with(0).await);
    let mut tasks = Vec::new();
    for i in 0..12u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move { log.append(i).await }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Appended::New(s) => seqs.push(s),
            other => panic!("distinct entries are all appended: {other:?}"),
        }
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (0..12).collect::<Vec<_>>());
    let v = log.ledger.verify(None, None).await.unwrap();
    assert_eq!((v.entries, v.files), (12, 12));
    // The same thing appended again by racing writers is recorded once.
    let s3 = log
        .ledger
        .read()
        .await
        .unwrap()
        .statement("s3")
        .unwrap()
        .seq;
    let again: Vec<_> = futures::future::join_all((0..4).map(|_| log.append(3))).await;
    assert!(
        again.iter().all(|a| *a == Appended::Existing(s3)),
        "{again:?}"
    );
    assert_eq!(log.ledger.read().await.unwrap().entries.len(), 12);
}

#[tokio::test]
async fn proofs_check_offline_with_the_key_alone() {
    let log = Log::with(7).await;
    let vkey = log.ledger.pubkey().await.unwrap().unwrap();
    assert_eq!(vkey, log.key.vkey);
    for n in 0..7 {
        let proof = log.ledger.prove(n).await.unwrap();
        assert!(
            proof.starts_with("c2sp.org/tlog-proof@v1\nextra "),
            "{proof}"
        );
        match ledger::check_proof(proof.as_bytes(), &vkey, None).unwrap() {
            Proven::Inclusion {
                index, size, entry, ..
            } => {
                assert_eq!((index, size), (n, 7));
                assert_eq!(entry, log.get(&ledger::entry_path(n)).await);
            }
            other => panic!("{other:?}"),
        }
    }
    let proof = log.ledger.prove(4).await.unwrap();
    // An altered entry in the proof, a changed hash, another key: refused.
    let altered = proof.replacen("index 4", "index 5", 1);
    assert!(ledger::check_proof(altered.as_bytes(), &vkey, None).is_err());
    let mut lines: Vec<String> = proof.lines().map(str::to_owned).collect();
    lines[3] = lines[3].chars().rev().collect();
    assert!(
        ledger::check_proof(format!("{}\n", lines.join("\n")).as_bytes(), &vkey, None).is_err()
    );
    let (_, other) = LogKey::generate("test.local/ledger").unwrap();
    let e = ledger::check_proof(proof.as_bytes(), &other.vkey, None).unwrap_err();
    assert!(e.to_string().contains("not signed by the log's key"), "{e}");
    assert!(ledger::check_proof(b"garbage", &vkey, None).is_err());
    assert!(ledger::check_proof(b"c2sp.org/tlog-proof@v1\nindex 99\n\nx\n", &vkey, None).is_err());

    // Consistency: a checkpoint held at size 3 is extended by the log of 7.
    let held = log.get(&ledger::checkpoint_path(3)).await;
    let c = log.ledger.prove_consistency(3).await.unwrap();
    assert_eq!(
        ledger::check_proof(c.as_bytes(), &vkey, Some(&held)).unwrap(),
        Proven::Consistency {
            origin: "test.local/ledger".into(),
            old: 3,
            size: 7
        }
    );
    let wrong = log.get(&ledger::checkpoint_path(4)).await;
    assert!(ledger::check_proof(c.as_bytes(), &vkey, Some(&wrong)).is_err());
    assert!(ledger::check_proof(c.as_bytes(), &vkey, None).is_err());
}

#[tokio::test]
async fn a_byte_flipped_in_an_entry_is_named() {
    let log = Log::with(5).await;
    let p = ledger::entry_path(2);
    let mut b = log.get(&p).await;
    let at = b.windows(4).position(|w| w == b"test").unwrap();
    b[at] = b'b'; // still valid JSON: operator "best"
    log.put(&p, b).await;
    let e = log.verify_err().await;
    assert!(e.contains("entry 2") && e.contains("altered"), "{e}");

    // The last entry, which no later entry chains to: caught by its root.
    let log = Log::with(5).await;
    let p = ledger::entry_path(4);
    let mut b = log.get(&p).await;
    let at = b.windows(4).position(|w| w == b"test").unwrap();
    b[at] = b'r';
    log.put(&p, b).await;
    let e = log.verify_err().await;
    assert!(e.contains("entry 4") && e.contains("altered"), "{e}");

    // A flip that breaks the JSON.
    let log = Log::with(3).await;
    let p = ledger::entry_path(1);
    let mut b = log.get(&p).await;
    b[0] = b'[';
    log.put(&p, b).await;
    let e = log.verify_err().await;
    assert!(e.contains("entry 1") && e.contains("altered"), "{e}");
}

#[tokio::test]
async fn a_deleted_entry_is_named() {
    let log = Log::with(5).await;
    log.store.delete(&ledger::entry_path(2)).await.unwrap();
    let e = log.verify_err().await;
    assert!(e.contains("entry 2") && e.contains("deleted"), "{e}");

    let log = Log::with(5).await;
    log.store.delete(&ledger::entry_path(4)).await.unwrap();
    let e = log.verify_err().await;
    assert!(e.contains("entry 4") && e.contains("deleted"), "{e}");
}

#[tokio::test]
async fn reordered_entries_are_named() {
    let log = Log::with(5).await;
    let (a, b) = (ledger::entry_path(1), ledger::entry_path(3));
    let (ba, bb) = (log.get(&a).await, log.get(&b).await);
    log.put(&a, bb).await;
    log.put(&b, ba).await;
    let e = log.verify_err().await;
    assert!(
        e.contains("holds entry seq 3") && e.contains("reordered"),
        "{e}"
    );
}

#[tokio::test]
async fn an_edited_statement_file_is_named() {
    let log = Log::with(4).await;
    let path = "statements/2026-03/s2/statement.csv";
    log.put(&Path::from(path), b"line 2 but more\n".to_vec())
        .await;
    let e = log.verify_err().await;
    assert!(
        e.contains(path) && e.contains("entry 2") && e.contains("edited"),
        "{e}"
    );
}

#[tokio::test]
async fn an_entry_appended_without_the_key_is_named() {
    let log = Log::with(4).await;
    let mut forged = entry(4).entry;
    forged.seq = 4;
    forged.prev = store::layout::sha256(&log.get(&ledger::entry_path(3)).await);
    store::layout::put(
        log.store.as_ref(),
        &Path::from(forged.files.keys().next().unwrap().as_str()),
        Bytes::from("line 4\n"),
    )
    .await
    .unwrap();
    log.put(&ledger::entry_path(4), forged.to_bytes()).await;
    let e = log.verify_err().await;
    assert!(
        e.contains("entry 4") && e.contains("without the log's key"),
        "{e}"
    );
}

#[tokio::test]
async fn a_checkpoint_signed_with_another_key_is_named() {
    let log = Log::with(4).await;
    // Same log name, another key: re-sign the tree of 3 entries.
    let good = log.get(&ledger::checkpoint_path(3)).await;
    let text_end = good.windows(2).position(|w| w == b"\n\n").unwrap() + 1;
    let (skey, other) = LogKey::generate("test.local/ledger").unwrap();
    let _ = skey;
    let mut note = signed_note::Note::new(&good[..text_end], &[]).unwrap();
    let signer = signed_note::StandardSigner::new(&skey).unwrap();
    note.add_sigs(&[&signer]).unwrap();
    log.put(&ledger::checkpoint_path(3), note.to_bytes()).await;
    let e = log.verify_err().await;
    assert!(
        e.contains("checkpoints/00000000000000000003") && e.contains("not signed by the log's key"),
        "{e}"
    );

    // An attacker who replaces log.pub too is caught by the key you trust.
    let log = Log::with(2).await;
    let trusted = log.key.vkey.clone();
    log.put(
        &ledger::pubkey_path(),
        format!("{}\n", other.vkey).into_bytes(),
    )
    .await;
    let e = log
        .ledger
        .verify(Some(&trusted), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not the key you trust"), "{e}");
}

#[tokio::test]
async fn a_rolled_back_checkpoint_is_named() {
    let log = Log::with(5).await;
    let old = log.get(&ledger::checkpoint_path(3)).await;
    log.put(&ledger::latest_checkpoint_path(), old).await;
    let e = log.verify_err().await;
    assert!(e.contains("rolled back"), "{e}");

    // A log truncated back to 3 entries, everything consistent, is caught by
    // a checkpoint held from before.
    let log = Log::with(5).await;
    let held = log.get(&ledger::latest_checkpoint_path()).await;
    for n in [3u64, 4] {
        log.store.delete(&ledger::entry_path(n)).await.unwrap();
        log.store
            .delete(&ledger::checkpoint_path(n + 1))
            .await
            .unwrap();
    }
    let three = log.get(&ledger::checkpoint_path(3)).await;
    log.put(&ledger::latest_checkpoint_path(), three).await;
    log.ledger
        .verify(None, None)
        .await
        .expect("consistent on its own");
    let e = log
        .ledger
        .verify(None, Some(&held))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("rolled back or truncated"), "{e}");
}

#[tokio::test]
async fn an_entry_with_both_or_neither_kind_of_totals_is_refused() {
    let log = Log::with(1).await;
    let sealed = |sha256: String| ledger::SealedTotals {
        currency: "USD".into(),
        lines: 1,
        sha256,
    };
    // The writer refuses to append one.
    let mut neither = entry(1).entry;
    neither.totals = None;
    let err = log
        .ledger
        .append(&log.key, NewEntry { entry: neither }, |_| None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("neither totals nor sealed_totals"), "{err}");

    // A reader refuses one written around the writer, naming why: both
    // kinds, or a sealed hash its files do not record for totals.json.
    let totals_path = "statements/2026-02/s1/totals.json".to_owned();
    let mut both = entry(1).entry;
    both.sealed_totals = Some(sealed("ab".repeat(32)));
    let mut unrecorded = entry(1).entry;
    unrecorded.totals = None;
    unrecorded.sealed_totals = Some(sealed("ab".repeat(32)));
    let mut other_hash = unrecorded.clone();
    other_hash
        .files
        .insert(totals_path.clone(), "cd".repeat(32));
    for (mut e, why) in [
        (both, "both totals and sealed_totals".to_owned()),
        (unrecorded, format!("no {totals_path}")),
        (
            other_hash,
            format!("not the one its files record for {totals_path}"),
        ),
    ] {
        e.seq = 1;
        log.put(&ledger::entry_path(1), e.to_bytes()).await;
        let err = log.ledger.read().await.unwrap_err().to_string();
        assert!(
            err.contains("entry 1") && err.contains(&why),
            "{why}: {err}"
        );
    }
}
