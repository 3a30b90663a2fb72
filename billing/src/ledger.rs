//! The audit ledger (DESIGN §5.7): an append-only transparency log in the
//! object store.
//!
//! | path | what |
//! |---|---|
//! | `ledger/entries/<seq>.json` | entry `seq` (from 0, 20 digits), written create-only; leaf `seq` of the tree is its exact bytes |
//! | `ledger/checkpoints/<size>` | the signed checkpoint of the tree of `size` entries, one per append, create-only |
//! | `ledger/checkpoint` | the latest checkpoint |
//! | `ledger/log.pub` | the verifier key (C2SP signed-note format), written by the first append |
//!
//! Each entry also names the previous entry's SHA-256 (`prev`), so the chain
//! can be followed by anyone with `sha256sum`; the Merkle tree (RFC 6962
//! hashing, [`tlog_tiles`]) and the checkpoints (C2SP `tlog-checkpoint` in a
//! C2SP `signed-note`, Ed25519, [`signed_note`]) let someone holding only the
//! public key check that an entry is in the log and that the log was only
//! ever appended to.
//!
//! Two writers racing for the same `seq` cannot both win: the entry is
//! written create-only, and the loser re-reads the log and appends after
//! the winner (or finds that the winner recorded the same thing).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use signed_note::{Note, StandardSigner, StandardVerifier, VerifierList};
use tlog_tiles::{Checkpoint, Hash, HashReader};

use crate::{Error, Result};

/// `prev` of entry 0.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The default log name (checkpoint origin and key name).
pub const DEFAULT_ORIGIN: &str = "viewcount.local/ledger";

/// First line of an inclusion proof (C2SP tlog-proof).
pub const PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";

/// First line of a consistency proof (the same layout as a tlog-proof, for
/// the tree-to-tree proof C2SP does not define a file for).
pub const CONSISTENCY_HEADER: &str = "viewcount/tlog-consistency-proof@v1";

/// How long an appender gives another writer to sign the entry it just
/// wrote before it checks that entry and signs it itself (a writer that
/// died between its entry and its checkpoint): a live writer signs within
/// milliseconds, and signing twice is harmless (the same checkpoint).
const UNSIGNED_GRACE: Duration = Duration::from_secs(1);

/// Path of entry `seq`.
pub fn entry_path(seq: u64) -> Path {
    Path::from(format!("ledger/entries/{seq:020}.json"))
}

/// Path of the checkpoint of the tree of `size` entries.
pub fn checkpoint_path(size: u64) -> Path {
    Path::from(format!("ledger/checkpoints/{size:020}"))
}

/// The latest checkpoint.
pub fn latest_checkpoint_path() -> Path {
    Path::from("ledger/checkpoint")
}

/// The published verifier key.
pub fn pubkey_path() -> Path {
    Path::from("ledger/log.pub")
}

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A statement was issued.
    Statement,
    /// A period was locked: its latest statement is final.
    Finalize,
}

/// Totals an entry records, so a reader of the ledger alone sees the money.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    /// ISO 4217 code.
    pub currency: String,
    /// Statement total (two decimals).
    pub amount: String,
    /// Billable views paid for (adjustments included).
    pub billable_views: i64,
    /// Creators paid.
    pub creators: u64,
    /// Statement lines.
    pub lines: u64,
    /// Billable views of unattributed videos (not paid).
    pub unattributed_billable_views: u64,
}

/// What a statement was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inputs {
    /// The published state read.
    pub published_seq: u64,
    /// The batch watermark then.
    pub watermark: Option<DateTime<Utc>>,
    /// The runs owning the period's hours (sorted).
    pub runs: Vec<String>,
    /// The catalog in force (SHA-256 of its bytes), if any.
    pub catalog_sha256: Option<String>,
    /// The rate card (SHA-256 of its bytes).
    pub rate_card_sha256: String,
}

/// One ledger entry. Its exact bytes are a leaf of the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Position in the log, from 0.
    pub seq: u64,
    /// Hex SHA-256 of entry `seq − 1`'s bytes ([`GENESIS_PREV`] for 0).
    pub prev: String,
    /// What it records.
    pub kind: Kind,
    /// `YYYY-MM`.
    pub period: String,
    /// The statement.
    pub statement_id: String,
    /// Whether the statement is provisional.
    pub provisional: bool,
    /// Path in the store → hex SHA-256 of every file of the statement.
    pub files: BTreeMap<String, String>,
    /// Entry format 1: the statement's totals in the clear, shown to anyone
    /// holding the entry, a creator's line proof included. Format 2 entries
    /// have [`Entry::sealed_totals`] instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<Totals>,
    /// Entry format 2: the totals are committed to, not shown: a creator's
    /// line proof embeds this entry and learns nothing of the statement's
    /// total, creators or billable views.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_totals: Option<SealedTotals>,
    /// Inputs of the statement.
    pub inputs: Inputs,
    /// Root (base64) of the RFC 6962 tree whose leaves are the statement
    /// CSV's lines (without the header and the newline), so one creator's
    /// line can be proven in the log without showing the others.
    pub lines_root: Option<String>,
    /// Entries this one refers to: for `finalize`, the statement entry; for
    /// a statement with adjustment lines, the entries they correct.
    pub references: Vec<u64>,
    /// Who ran it.
    pub operator: String,
    /// When it was appended.
    pub recorded_at: DateTime<Utc>,
}

/// What a format-2 entry shows of its statement's totals, and the
/// commitment to the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedTotals {
    /// ISO 4217 code (every line states it too).
    pub currency: String,
    /// Statement lines: the size of the line tree, which a line proof needs.
    pub lines: u64,
    /// Hex SHA-256 of the statement's `totals.json` ([`TotalsFile`]): the
    /// totals with a secret 32-byte salt, so the hash cannot be matched by
    /// trying every plausible total.
    pub sha256: String,
}

/// `statements/<period>/<id>/totals.json`: a format-2 entry's totals, which
/// only readers of the store (finance, `ledger verify`) see. The salt is
/// derived from the log's signing key and the statement, so re-issuing the
/// same statement writes the same bytes, and nobody without the key can
/// compute it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotalsFile {
    /// The statement.
    pub statement_id: String,
    /// `YYYY-MM`.
    pub period: String,
    /// 64 hex digits.
    pub salt: String,
    /// The totals.
    pub totals: Totals,
}

impl Entry {
    /// The bytes stored (and hashed): pretty JSON and a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(self).unwrap_or_default();
        b.push(b'\n');
        b
    }

    /// The statement's currency.
    pub fn currency(&self) -> &str {
        match (&self.totals, &self.sealed_totals) {
            (Some(t), _) => &t.currency,
            (None, Some(s)) => &s.currency,
            (None, None) => "",
        }
    }

    /// The statement's line count (the size of its line tree).
    pub fn lines(&self) -> u64 {
        match (&self.totals, &self.sealed_totals) {
            (Some(t), _) => t.lines,
            (None, Some(s)) => s.lines,
            (None, None) => 0,
        }
    }

    /// Holds exactly one of `totals` (format 1) and `sealed_totals`
    /// (format 2), the sealed ones naming a `totals.json` its `files`
    /// record with the same hash.
    fn check_shape(&self) -> std::result::Result<(), String> {
        match (&self.totals, &self.sealed_totals) {
            (Some(_), None) => Ok(()),
            (None, Some(s)) => {
                let path = format!(
                    "{}/{TOTALS_FILE}",
                    statement_dir(&self.period, &self.statement_id)
                );
                match self.files.get(&path) {
                    Some(h) if *h == s.sha256 => Ok(()),
                    Some(_) => Err(format!(
                        "its sealed totals' sha256 is not the one its files record for {path}"
                    )),
                    None => Err(format!("its files record no {path} for its sealed totals")),
                }
            }
            (Some(_), Some(_)) => Err("it has both totals and sealed_totals".into()),
            (None, None) => Err("it has neither totals nor sealed_totals".into()),
        }
    }
}

/// A statement's directory in the store: `statements/<YYYY-MM>/<id>`
/// (DESIGN §6), the one place that spells it (`statement::dir`).
pub fn statement_dir(period: &str, statement_id: &str) -> String {
    format!("statements/{period}/{statement_id}")
}

/// The file of a statement that holds a format-2 entry's totals.
pub const TOTALS_FILE: &str = "totals.json";

/// The file of a statement that holds the rule sets of the runs it counts
/// ([`RulesFile`]); the entry records its SHA-256 like every statement
/// file's.
pub const RULES_FILE: &str = "rules.json";

/// A statement's `rules.json`: the counting rules of every batch run it
/// draws from, salted like [`TotalsFile`], so its hash in the ledger entry
/// commits to the rules in force without publishing their thresholds:
/// finance shows the file to an auditor later, who checks it against the
/// entry. Statements from before the file existed have none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// The statement.
    pub statement_id: String,
    /// `YYYY-MM`.
    pub period: String,
    /// 64 hex digits.
    pub salt: String,
    /// Run id → the rules it counted with.
    pub runs: BTreeMap<String, RunRules>,
}

/// One run's counting rules, as its manifest records them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRules {
    /// `schemas::RULES_VERSION` of the run.
    pub rules_version: u32,
    /// The whole rule set.
    pub rules: schemas::RuleSet,
}

/// An entry before it has a place in the log.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// Everything but `seq` and `prev` (filled in on append).
    pub entry: Entry,
}

/// A log's signing key, with the verifier key derived from it.
pub struct LogKey {
    signer: StandardSigner,
    /// The same Ed25519 key, for [`LogKey::totals_salt`].
    ed25519: ed25519_dalek::SigningKey,
    /// The verifier key (`name+id+base64`), as `ledger/log.pub` holds it.
    pub vkey: String,
    /// The key's name: the log's origin.
    pub name: String,
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogKey").field("vkey", &self.vkey).finish()
    }
}

impl LogKey {
    /// A new random key named `origin`: (signing key text, the key).
    pub fn generate(origin: &str) -> Result<(String, Self)> {
        if !signed_note::is_key_name_valid(origin) {
            return Err(Error::Input(format!(
                "log name {origin:?} is not a valid key name: no spaces and no '+', like {DEFAULT_ORIGIN}"
            )));
        }
        let (skey, _) = signed_note::generate_key(&mut rand_core_06::OsRng, origin);
        let key = Self::parse(&skey)?;
        Ok((skey, key))
    }

    /// Parses a signing key (`PRIVATE+KEY+name+id+base64`).
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let bad = |why: &str| {
            Error::Input(format!(
                "not a ledger signing key ({why}); make one with `viewcount ledger keygen`"
            ))
        };
        let signer = StandardSigner::new(text).map_err(|e| bad(&e.to_string()))?;
        let mut parts = text.splitn(5, '+');
        let (name, key64) = match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some(_), Some(_), Some(name), Some(_), Some(k)) => (name, k),
            _ => return Err(bad("malformed")),
        };
        let key = BASE64_STANDARD
            .decode(key64)
            .map_err(|_| bad("bad base64"))?;
        let sk = ed25519_dalek::SigningKey::try_from(&key[1..]).map_err(|_| bad("bad key"))?;
        let vkey = signed_note::new_ed25519_verifier_key(name, &sk.verifying_key());
        Ok(Self {
            signer,
            ed25519: sk,
            vkey,
            name: name.to_owned(),
        })
    }

    /// The salt of statement `statement_id`'s [`TotalsFile`] (64 hex
    /// digits): the SHA-256 of this key's Ed25519 signature of a message
    /// naming the statement. Ed25519 signatures are deterministic, so a
    /// re-issue writes the same bytes; the signature is never published,
    /// so without the key the salt cannot be computed. (The message cannot
    /// be mistaken for a checkpoint, whose first line is the log's name.)
    pub fn totals_salt(&self, period: &str, statement_id: &str) -> String {
        self.salt("statement-totals-salt", period, statement_id)
    }

    /// The salt of statement `statement_id`'s [`RulesFile`] (64 hex
    /// digits), derived as [`LogKey::totals_salt`] under its own name.
    pub fn rules_salt(&self, period: &str, statement_id: &str) -> String {
        self.salt("statement-rules-salt", period, statement_id)
    }

    fn salt(&self, name: &str, period: &str, statement_id: &str) -> String {
        use ed25519_dalek::Signer as _;
        let msg = format!("viewcount/{name}/v1\n{period}\n{statement_id}\n");
        let sig = self.ed25519.sign(msg.as_bytes());
        store::layout::sha256(&sig.to_bytes())
    }

    /// Reads a key file.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        store::secret::check_private(path, "the ledger key").map_err(Error::Input)?;
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Input(format!(
                "cannot read the ledger key {}: {e}; make one with `viewcount ledger keygen --out {}`",
                path.display(),
                path.display()
            ))
        })?;
        Self::parse(&text).map_err(|e| Error::Input(format!("{}: {e}", path.display())))
    }

    /// Signs a checkpoint of `size` entries with `root`.
    fn sign(&self, size: u64, root: Hash) -> Result<Vec<u8>> {
        let cp = Checkpoint::new(&self.name, size, root, "")
            .map_err(|e| Error::Bug(format!("checkpoint: {e}")))?;
        let mut note =
            Note::new(&cp.to_bytes(), &[]).map_err(|e| Error::Bug(format!("note: {e}")))?;
        note.add_sigs(&[&self.signer])
            .map_err(|e| Error::Bug(format!("signing: {e}")))?;
        Ok(note.to_bytes())
    }
}

/// A verifier key and what it checks.
pub struct LogVerifier {
    list: VerifierList,
    /// The key's name (the log's origin).
    pub name: String,
    /// The key text.
    pub vkey: String,
}

impl LogVerifier {
    /// Parses a verifier key (`name+id+base64`).
    pub fn parse(vkey: &str) -> Result<Self> {
        let vkey = vkey.trim();
        let v = StandardVerifier::new(vkey).map_err(|e| {
            Error::Input(format!(
                "not a ledger verifier key ({e}); it is one line like {DEFAULT_ORIGIN}+1a2b3c4d+AbC…"
            ))
        })?;
        let name = signed_note::Verifier::name(&v).to_owned();
        Ok(Self {
            list: VerifierList::new(vec![Box::new(v)]),
            name,
            vkey: vkey.to_owned(),
        })
    }

    /// Checks a signed checkpoint: signed by this key, for this log.
    pub fn open(&self, note: &[u8]) -> std::result::Result<Checkpoint, String> {
        let n = Note::from_bytes(note).map_err(|e| format!("not a signed note: {e}"))?;
        n.verify(&self.list).map_err(|e| match e {
            signed_note::NoteError::UnverifiedNote => {
                format!("not signed by the log's key {}", self.vkey)
            }
            other => format!("bad signature: {other}"),
        })?;
        let cp = Checkpoint::from_bytes(n.text()).map_err(|e| format!("not a checkpoint: {e}"))?;
        if cp.origin() != self.name {
            return Err(format!(
                "its origin is {:?}, not this log's {:?}",
                cp.origin(),
                self.name
            ));
        }
        Ok(cp)
    }
}

/// The Merkle tree of a log, all stored hashes in memory (32 bytes × about
/// two per entry).
#[derive(Debug, Default)]
pub struct Tree {
    hashes: Vec<Hash>,
    size: u64,
}

impl HashReader for Tree {
    fn read_hashes(&self, indexes: &[u64]) -> std::result::Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.hashes.get(i).copied())
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

impl Tree {
    /// A tree over `leaves`.
    pub fn of<'a>(leaves: impl IntoIterator<Item = &'a [u8]>) -> Result<Self> {
        let mut t = Self::default();
        for l in leaves {
            t.push(l)?;
        }
        Ok(t)
    }

    /// Appends a leaf.
    pub fn push(&mut self, leaf: &[u8]) -> Result<()> {
        let new = tlog_tiles::stored_hashes(self.size, leaf, self)
            .map_err(|e| Error::Bug(format!("tree: {e}")))?;
        self.hashes.extend(new);
        self.size += 1;
        Ok(())
    }

    /// Leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Root of the first `n` leaves.
    pub fn root(&self, n: u64) -> Result<Hash> {
        tlog_tiles::tree_hash(n, self).map_err(|e| Error::Bug(format!("tree: {e}")))
    }
}

/// The log as read: every entry's bytes, parsed.
#[derive(Debug, Default)]
pub struct Log {
    /// Entries' exact bytes, by seq.
    pub bytes: Vec<Bytes>,
    /// Entries parsed.
    pub entries: Vec<Entry>,
}

impl Log {
    /// Entries recorded for `period` of `kind`, oldest first.
    pub fn of(&self, period: &str, kind: Kind) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(move |e| e.period == period && e.kind == kind)
    }

    /// The entry recording statement `id`, if any.
    pub fn statement(&self, id: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.kind == Kind::Statement && e.statement_id == id)
    }

    /// The finalize entry of `period`, if it was finalized.
    pub fn finalized(&self, period: &str) -> Option<&Entry> {
        self.of(period, Kind::Finalize).next()
    }
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Appended as this seq.
    New(u64),
    /// Already recorded (by this or a racing writer) in this entry.
    Existing(u64),
}

/// A ledger in a store.
#[derive(Clone)]
pub struct Ledger {
    store: Arc<dyn ObjectStore>,
}

impl Ledger {
    /// The ledger of `store`.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }

    /// Entry files present, as seqs, sorted; an unexpected name is an error.
    async fn entry_seqs(&self) -> Result<Vec<u64>> {
        let prefix = Path::from("ledger/entries");
        let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        let mut seqs = Vec::with_capacity(metas.len());
        for m in metas {
            let name = m.location.filename().unwrap_or_default();
            let seq = name
                .strip_suffix(".json")
                .filter(|s| s.len() == 20)
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| {
                    Error::Tampered(format!(
                        "{} is not a ledger entry name (<20 digits>.json): remove it",
                        m.location
                    ))
                })?;
            seqs.push(seq);
        }
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// Sizes of the stored checkpoints, sorted.
    async fn checkpoint_sizes(&self) -> Result<Vec<u64>> {
        let prefix = Path::from("ledger/checkpoints");
        let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        let mut sizes = Vec::with_capacity(metas.len());
        for m in metas {
            let name = m.location.filename().unwrap_or_default();
            let size = Some(name)
                .filter(|s| s.len() == 20)
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| {
                    Error::Tampered(format!(
                        "{} is not a checkpoint name (<20 digits>): remove it",
                        m.location
                    ))
                })?;
            sizes.push(size);
        }
        sizes.sort_unstable();
        Ok(sizes)
    }

    async fn get(&self, path: &Path) -> Result<Option<Bytes>> {
        get(self.store.as_ref(), path).await
    }

    /// Reads the log: entries 0.. in order. A gap (a missing entry) or an
    /// entry that is not what this code wrote is an error naming it.
    pub async fn read(&self) -> Result<Log> {
        let seqs = self.entry_seqs().await?;
        if let Some((i, &s)) = seqs.iter().enumerate().find(|&(i, &s)| s != i as u64) {
            return Err(Error::Tampered(format!(
                "entry {i} ({}) is missing but entry {s} exists: an entry was deleted",
                entry_path(i as u64)
            )));
        }
        let store = self.store.clone();
        let bytes: Vec<Bytes> = futures::stream::iter(seqs.into_iter().map(move |s| {
            let store = store.clone();
            async move {
                let path = entry_path(s);
                get(store.as_ref(), &path)
                    .await?
                    .ok_or_else(|| Error::Tampered(format!("{path} vanished while being read")))
            }
        }))
        .buffered(32)
        .try_collect()
        .await?;
        let mut entries = Vec::with_capacity(bytes.len());
        for (i, b) in bytes.iter().enumerate() {
            let e: Entry = serde_json::from_slice(b).map_err(|err| {
                Error::Tampered(format!(
                    "entry {i} ({}) is not a valid ledger entry ({err}): it was altered",
                    entry_path(i as u64)
                ))
            })?;
            if e.seq != i as u64 {
                return Err(Error::Tampered(format!(
                    "{} holds entry seq {}: entries were reordered or renamed",
                    entry_path(i as u64),
                    e.seq
                )));
            }
            e.check_shape().map_err(|why| {
                Error::Tampered(format!(
                    "entry {i} ({}) is not a valid ledger entry: {why}; it was altered",
                    entry_path(i as u64)
                ))
            })?;
            entries.push(e);
        }
        Ok(Log { bytes, entries })
    }

    /// The log as far as a signed checkpoint covers it: what the API and
    /// `status` show. An entry past the newest checkpoint (its writer
    /// stopped before signing; the next append or `ledger repair` checks and
    /// signs it) is left out.
    pub async fn read_signed(&self) -> Result<Log> {
        let mut log = self.read().await?;
        let signed = usize::try_from(self.signed_size().await?).unwrap_or(usize::MAX);
        log.entries.truncate(signed);
        log.bytes.truncate(signed);
        Ok(log)
    }

    /// The size of the latest checkpoint (0 when none).
    async fn signed_size(&self) -> Result<u64> {
        Ok(self.checkpoint_sizes().await?.last().copied().unwrap_or(0))
    }

    /// Appends `new` unless `already(log)` finds it recorded. Racing writers
    /// never fork the log: the entry is written create-only; the loser
    /// re-reads and tries again after the winner.
    pub async fn append(
        &self,
        key: &LogKey,
        new: NewEntry,
        already: impl Fn(&Log) -> Option<u64>,
    ) -> Result<Appended> {
        new.entry
            .check_shape()
            .map_err(|why| Error::Bug(format!("the new ledger entry is malformed: {why}")))?;
        self.publish_key(key).await?;
        let mut waited = Duration::ZERO;
        loop {
            let log = self.read().await?;
            let n = log.entries.len() as u64;
            let signed = self.signed_size().await?;
            if signed < n {
                // Another writer's entry whose checkpoint has not appeared
                // yet: it is about to, unless that writer died. Past the
                // grace, check the entry and sign it.
                if waited < UNSIGNED_GRACE {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    waited += Duration::from_millis(100);
                    continue;
                }
                self.repair_with(key, &log, signed).await?;
                continue;
            }
            if let Some(seq) = already(&log) {
                return Ok(Appended::Existing(seq));
            }
            let mut entry = new.entry.clone();
            entry.seq = n;
            entry.prev = log
                .bytes
                .last()
                .map_or_else(|| GENESIS_PREV.to_owned(), |b| store::layout::sha256(b));
            let mut tree = Tree::of(log.bytes.iter().map(|b| b.as_ref()))?;
            let note = match self.write_signed(key, &mut tree, &entry.to_bytes()).await {
                Ok(note) => note,
                Err(Error::ObjectStore(object_store::Error::AlreadyExists { .. })) => {
                    tracing::info!(seq = n, "another writer appended first; appending after it");
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.publish_latest(n + 1, note).await?;
            return Ok(Appended::New(n));
        }
    }

    /// Writes `bytes` as the entry after `tree`'s last, create-only, then
    /// the signed checkpoint of the grown tree (create-only too); returns the
    /// checkpoint. An entry already there (a racing writer) is
    /// `Error::ObjectStore(AlreadyExists)`, and nothing was written.
    async fn write_signed(&self, key: &LogKey, tree: &mut Tree, bytes: &[u8]) -> Result<Vec<u8>> {
        let n = tree.size();
        self.store
            .put_opts(
                &entry_path(n),
                PutPayload::from(bytes.to_vec()),
                PutOptions::from(PutMode::Create),
            )
            .await?;
        tree.push(bytes)?;
        self.sign(key, tree).await
    }

    /// Writes the signed checkpoint of `tree`, create-only. One already
    /// there with the same bytes (another writer signed the same tree: the
    /// signature is deterministic) is success; another is `AlreadyExists`.
    async fn sign(&self, key: &LogKey, tree: &Tree) -> Result<Vec<u8>> {
        let size = tree.size();
        let note = key.sign(size, tree.root(size)?)?;
        let path = checkpoint_path(size);
        match self
            .store
            .put_opts(
                &path,
                PutPayload::from(note.clone()),
                PutOptions::from(PutMode::Create),
            )
            .await
        {
            Ok(_) => Ok(note),
            Err(object_store::Error::AlreadyExists { path: p, source })
                if self.get(&path).await?.as_deref() != Some(note.as_slice()) =>
            {
                Err(Error::ObjectStore(object_store::Error::AlreadyExists {
                    path: p,
                    source,
                }))
            }
            Err(object_store::Error::AlreadyExists { .. }) => Ok(note),
            Err(e) => Err(e.into()),
        }
    }

    /// Brings the log back to signed after a writer crashed mid-append, with
    /// the key: an entry whose checkpoint is missing (its writer died between
    /// the two writes) is checked and signed, and `ledger/checkpoint` is
    /// moved to the newest checkpoint (a writer that died before updating
    /// it). Nothing unsigned is trusted: the entry is signed only if it is
    /// the one entry past the newest checkpoint, names the hash of the entry
    /// before it, refers only to earlier entries, and every statement file
    /// it records exists with the recorded SHA-256; otherwise the error says
    /// which check failed and nothing is written. Returns the entries it
    /// signed (0 or 1).
    pub async fn repair(&self, key: &LogKey) -> Result<u64> {
        self.publish_key(key).await?;
        let log = self.read().await?;
        let signed = self.signed_size().await?;
        let repaired = if signed < log.entries.len() as u64 {
            self.repair_with(key, &log, signed).await?;
            1
        } else {
            0
        };
        let newest = self.signed_size().await?;
        if newest > 0 {
            let note = self
                .get(&checkpoint_path(newest))
                .await?
                .unwrap_or_default()
                .to_vec();
            self.publish_latest(newest, note).await?;
        }
        Ok(repaired)
    }

    /// Checks entry `signed` of `log` (the first past the newest checkpoint)
    /// and signs the tree that ends with it (see [`Ledger::repair`]).
    async fn repair_with(&self, key: &LogKey, log: &Log, signed: u64) -> Result<()> {
        let n = log.entries.len() as u64;
        let refuse = |why: String| {
            Error::Tampered(format!(
                "entry {signed} ({}) has no signed checkpoint and cannot be signed: {why}. \
                 Compare it with the statement it names; `viewcount ledger verify` names it",
                entry_path(signed)
            ))
        };
        if n > signed + 1 {
            return Err(refuse(format!(
                "{} entries follow the newest checkpoint, and a writer with the key never writes an entry before the previous one is signed",
                n - signed
            )));
        }
        let e = &log.entries[signed as usize];
        let prev = match signed {
            0 => GENESIS_PREV.to_owned(),
            s => store::layout::sha256(&log.bytes[s as usize - 1]),
        };
        if e.prev != prev {
            return Err(refuse(format!(
                "it names {} as the entry before it, which hashes to {prev}",
                e.prev
            )));
        }
        if let Some(r) = e.references.iter().find(|&&r| r >= signed) {
            return Err(refuse(format!(
                "it refers to entry {r}, which is not before it"
            )));
        }
        for (path, sha) in &e.files {
            store::layout::get_verified(
                self.store.as_ref(),
                &Path::from(path.as_str()),
                sha,
                &format!("unsigned entry {signed}"),
            )
            .await
            .map_err(|err| refuse(err.to_string()))?;
        }
        let tree = Tree::of(log.bytes.iter().map(|b| b.as_ref()))?;
        let note = match self.sign(key, &tree).await {
            Ok(note) => note,
            // Another writer signed a different tree of this size: the
            // next read shows what the log is.
            Err(Error::ObjectStore(object_store::Error::AlreadyExists { .. })) => return Ok(()),
            Err(e) => return Err(e),
        };
        tracing::warn!(
            seq = signed,
            "ledger: entry {signed} had no signed checkpoint (its writer stopped between the two writes); checked and signed it"
        );
        self.publish_latest(n, note).await
    }

    /// Appends many entries after one read of the log (a backfill, or a
    /// benchmark's log of thousands): each written create-only and signed by
    /// its own checkpoint, as [`Ledger::append`] does one at a time. A racing
    /// writer makes it stop with an error (what it appended stays, signed).
    pub async fn append_all(&self, key: &LogKey, news: Vec<NewEntry>) -> Result<Vec<u64>> {
        // A writer that crashed mid-append left the log unsigned at its
        // end: check and sign that first.
        self.repair(key).await?;
        let log = self.read().await?;
        let mut tree = Tree::of(log.bytes.iter().map(|b| b.as_ref()))?;
        let mut prev = log
            .bytes
            .last()
            .map_or_else(|| GENESIS_PREV.to_owned(), |b| store::layout::sha256(b));
        let mut seqs = Vec::with_capacity(news.len());
        let mut last = None;
        for new in news {
            let n = tree.size();
            let mut entry = new.entry;
            entry.seq = n;
            entry.prev = prev;
            let bytes = entry.to_bytes();
            let note = self
                .write_signed(key, &mut tree, &bytes)
                .await
                .map_err(|e| match e {
                    Error::ObjectStore(object_store::Error::AlreadyExists { .. }) => {
                        Error::Input(format!(
                            "another writer appended entry {n} meanwhile; {} entries of this batch were appended",
                            seqs.len()
                        ))
                    }
                    e => e,
                })?;
            prev = store::layout::sha256(&bytes);
            seqs.push(n);
            last = Some((n + 1, note));
        }
        if let Some((size, note)) = last {
            self.publish_latest(size, note).await?;
        }
        Ok(seqs)
    }

    /// Writes `ledger/checkpoint`, then follows newer checkpoints a racing
    /// writer may have stored meanwhile, so the latest never goes back.
    async fn publish_latest(&self, size: u64, note: Vec<u8>) -> Result<()> {
        let (mut size, mut note) = (size, note);
        loop {
            store::layout::put(self.store.as_ref(), &latest_checkpoint_path(), note.into()).await?;
            match self.get(&checkpoint_path(size + 1)).await? {
                Some(next) => {
                    size += 1;
                    note = next.to_vec();
                }
                None => return Ok(()),
            }
        }
    }

    /// Writes `ledger/log.pub` on first use; refuses a key other than the
    /// log's.
    async fn publish_key(&self, key: &LogKey) -> Result<()> {
        let line = format!("{}\n", key.vkey);
        match self
            .store
            .put_opts(
                &pubkey_path(),
                PutPayload::from(line.clone().into_bytes()),
                PutOptions::from(PutMode::Create),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let have = self.get(&pubkey_path()).await?.unwrap_or_default();
                if String::from_utf8_lossy(&have).trim() == key.vkey {
                    Ok(())
                } else {
                    Err(Error::Input(format!(
                        "this ledger's key is {} but --ledger-key is {}: sign with the log's own key",
                        String::from_utf8_lossy(&have).trim(),
                        key.vkey
                    )))
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The published verifier key.
    pub async fn pubkey(&self) -> Result<Option<String>> {
        Ok(self
            .get(&pubkey_path())
            .await?
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned()))
    }

    /// The latest signed checkpoint's bytes.
    pub async fn latest_checkpoint(&self) -> Result<Option<Bytes>> {
        self.get(&latest_checkpoint_path()).await
    }

    /// Checks everything (DESIGN §5.7): the entries are 0..n with no gap,
    /// each names the hash of the one before, every checkpoint is signed by
    /// the key and has the root of the entries it covers, each is consistent
    /// with the next, the latest is the newest, every entry is covered by a
    /// signed checkpoint, a trusted checkpoint (if given) is part of this
    /// history, and every statement file still has its recorded hash. The
    /// first problem found is the error, naming the entry or file.
    pub async fn verify(&self, pubkey: Option<&str>, trusted: Option<&[u8]>) -> Result<Verified> {
        let published = self.pubkey().await?;
        let vkey = match (pubkey, published.as_deref()) {
            (Some(given), Some(stored)) if given.trim() != stored => {
                return Err(Error::Tampered(format!(
                    "{} holds {stored}, not the key you trust ({}): the log's key was replaced",
                    pubkey_path(),
                    given.trim()
                )));
            }
            (Some(given), _) => given.trim().to_owned(),
            (None, Some(stored)) => stored.to_owned(),
            (None, None) => {
                let log = self.read().await?;
                if log.entries.is_empty() {
                    return Ok(Verified::default());
                }
                return Err(Error::Tampered(format!(
                    "{} is missing but the log has {} entries: restore the key, or pass --pubkey",
                    pubkey_path(),
                    log.entries.len()
                )));
            }
        };
        let verifier = LogVerifier::parse(&vkey)?;
        let log = self.read().await?;
        let n = log.entries.len() as u64;
        let tree = Tree::of(log.bytes.iter().map(|b| b.as_ref()))?;

        // Checkpoints: 1..=n, each signed, each with the root of its prefix.
        let sizes = self.checkpoint_sizes().await?;
        if let Some(&top) = sizes.last()
            && top > n
        {
            return Err(Error::Tampered(format!(
                "{} is signed for {top} entries but only {n} exist: entry {n} ({}) and later were deleted",
                checkpoint_path(top),
                entry_path(n)
            )));
        }
        let mut roots = Vec::with_capacity(sizes.len());
        for (i, &size) in sizes.iter().enumerate() {
            if size != i as u64 + 1 {
                return Err(Error::Tampered(format!(
                    "{} is missing: a checkpoint was deleted",
                    checkpoint_path(i as u64 + 1)
                )));
            }
            let note = self.get(&checkpoint_path(size)).await?.unwrap_or_default();
            let cp = verifier
                .open(&note)
                .map_err(|why| Error::Tampered(format!("{}: {why}", checkpoint_path(size))))?;
            if cp.size() != size {
                return Err(Error::Tampered(format!(
                    "{} is for a tree of {} entries, not {size}: it was replaced",
                    checkpoint_path(size),
                    cp.size()
                )));
            }
            if *cp.hash() != tree.root(size)? {
                return Err(Error::Tampered(format!(
                    "entry {} ({}) no longer matches the root signed in {}: it was altered after it was recorded",
                    size - 1,
                    entry_path(size - 1),
                    checkpoint_path(size)
                )));
            }
            roots.push(*cp.hash());
        }
        // The hash chain (also caught above for any signed entry; this names
        // the link for anyone checking with sha256sum alone).
        for (i, e) in log.entries.iter().enumerate() {
            let want = if i == 0 {
                GENESIS_PREV.to_owned()
            } else {
                store::layout::sha256(&log.bytes[i - 1])
            };
            if e.prev != want {
                return Err(Error::Tampered(format!(
                    "entry {i}'s prev is not the hash of entry {}: entry {} was altered or the two were reordered",
                    i.saturating_sub(1),
                    i.saturating_sub(1)
                )));
            }
        }
        let signed = sizes.len() as u64;
        if signed < n {
            return Err(Error::Tampered(format!(
                "entry {signed} ({}) is not covered by any signed checkpoint: its writer stopped between writing it and signing it, \
                 or it was written without the log's key. `viewcount ledger repair --ledger-key KEY` checks it (its place, the hash \
                 of the entry before it, its statement files) and signs it; the next `billing report` or `finalize` does the same",
                entry_path(signed)
            )));
        }
        // Each checkpoint consistent with the next (RFC 6962 proofs).
        for k in 1..signed {
            let p = tlog_tiles::prove_tree(k + 1, k, &tree)
                .map_err(|e| Error::Bug(format!("consistency proof: {e}")))?;
            tlog_tiles::check_tree(&p, k + 1, roots[k as usize], k, roots[k as usize - 1])
                .map_err(|_| {
                    Error::Tampered(format!(
                        "{} is not consistent with {}: history was rewritten",
                        checkpoint_path(k + 1),
                        checkpoint_path(k)
                    ))
                })?;
        }
        // The latest checkpoint is the newest one.
        if n > 0 {
            let latest = self.latest_checkpoint().await?.ok_or_else(|| {
                Error::Tampered(format!("{} is missing", latest_checkpoint_path()))
            })?;
            let cp = verifier
                .open(&latest)
                .map_err(|why| Error::Tampered(format!("{}: {why}", latest_checkpoint_path())))?;
            if cp.size() < n {
                return Err(Error::Tampered(format!(
                    "{} is for {} entries but the log has {n}, signed up to {}: the latest checkpoint was rolled back, \
                     or its writer stopped before moving it (`viewcount ledger repair --ledger-key KEY` moves it to the newest)",
                    latest_checkpoint_path(),
                    cp.size(),
                    checkpoint_path(n)
                )));
            }
            if cp.size() > n || *cp.hash() != roots[n as usize - 1] {
                return Err(Error::Tampered(format!(
                    "{} (tree of {}) is not {}: it was replaced",
                    latest_checkpoint_path(),
                    cp.size(),
                    checkpoint_path(n)
                )));
            }
        }
        // A checkpoint the caller held before: this log must extend it.
        if let Some(t) = trusted {
            let cp = verifier
                .open(t)
                .map_err(|why| Error::Input(format!("the trusted checkpoint: {why}")))?;
            if cp.size() > n {
                return Err(Error::Tampered(format!(
                    "your trusted checkpoint is for {} entries but the log has {n}: the log was rolled back or truncated",
                    cp.size()
                )));
            }
            if cp.size() > 0 && *cp.hash() != tree.root(cp.size())? {
                return Err(Error::Tampered(format!(
                    "the log's first {} entries are not the ones your trusted checkpoint signs: history was rewritten",
                    cp.size()
                )));
            }
        }
        // Every recorded file still has its hash.
        let mut files = 0;
        let mut checked = std::collections::BTreeSet::new();
        for e in &log.entries {
            for (path, sha) in &e.files {
                // A finalize entry repeats its statement's files.
                if !checked.insert((path, sha)) {
                    continue;
                }
                let p = Path::from(path.as_str());
                let Some(b) = self.get(&p).await? else {
                    return Err(Error::Tampered(format!(
                        "{path}, recorded in entry {}, is missing",
                        e.seq
                    )));
                };
                if store::layout::sha256(&b) != *sha {
                    return Err(Error::Tampered(format!(
                        "{path} does not have the SHA-256 entry {} recorded: it was edited after it was recorded",
                        e.seq
                    )));
                }
                files += 1;
            }
        }
        Ok(Verified {
            entries: n,
            files,
            root: if n > 0 {
                Some(roots[n as usize - 1].to_string())
            } else {
                None
            },
            origin: Some(verifier.name),
        })
    }

    /// An inclusion proof of entry `seq` against the latest checkpoint, as a
    /// C2SP `tlog-proof` whose `extra` is the entry's bytes.
    pub async fn prove(&self, seq: u64) -> Result<String> {
        self.prove_in(&self.read().await?, seq).await
    }

    /// [`Ledger::prove`] over a log the caller has already read.
    pub async fn prove_in(&self, log: &Log, seq: u64) -> Result<String> {
        let (note, size) = self.signed_state(log).await?;
        if seq >= size {
            return Err(Error::Input(format!(
                "entry {seq} does not exist: the log has {size} signed entries (0..={})",
                size.saturating_sub(1)
            )));
        }
        let tree = Tree::of(log.bytes.iter().take(size as usize).map(|b| b.as_ref()))?;
        let proof = tlog_tiles::prove_record(size, seq, &tree)
            .map_err(|e| Error::Bug(format!("inclusion proof: {e}")))?;
        let mut out = format!(
            "{PROOF_HEADER}\nextra {}\nindex {seq}\n",
            BASE64_STANDARD.encode(&log.bytes[seq as usize])
        );
        for h in proof {
            out.push_str(&format!("{h}\n"));
        }
        out.push('\n');
        out.push_str(&String::from_utf8_lossy(&note));
        Ok(out)
    }

    /// A consistency proof from the tree of `old` entries to the latest
    /// checkpoint.
    pub async fn prove_consistency(&self, old: u64) -> Result<String> {
        let log = self.read().await?;
        let (note, size) = self.signed_state(&log).await?;
        if old == 0 || old > size {
            return Err(Error::Input(format!(
                "--consistency {old}: give a tree size from 1 to {size} (the latest checkpoint's)"
            )));
        }
        let tree = Tree::of(log.bytes.iter().take(size as usize).map(|b| b.as_ref()))?;
        let proof = tlog_tiles::prove_tree(size, old, &tree)
            .map_err(|e| Error::Bug(format!("consistency proof: {e}")))?;
        let mut out = format!("{CONSISTENCY_HEADER}\nold {old}\n");
        for h in proof {
            out.push_str(&format!("{h}\n"));
        }
        out.push('\n');
        out.push_str(&String::from_utf8_lossy(&note));
        Ok(out)
    }

    /// The latest checkpoint, checked against the log's key, and its size
    /// (never more than `log` holds).
    async fn signed_state(&self, log: &Log) -> Result<(Bytes, u64)> {
        let note = self
            .latest_checkpoint()
            .await?
            .ok_or_else(|| Error::Input("the ledger is empty: nothing to prove".into()))?;
        let vkey = self
            .pubkey()
            .await?
            .ok_or_else(|| Error::Tampered(format!("{} is missing", pubkey_path())))?;
        let cp = LogVerifier::parse(&vkey)?
            .open(&note)
            .map_err(|why| Error::Tampered(format!("{}: {why}", latest_checkpoint_path())))?;
        let size = cp.size();
        if size > log.entries.len() as u64 {
            return Err(Error::Tampered(format!(
                "the latest checkpoint covers {size} entries but {} exist; run `viewcount ledger verify`",
                log.entries.len()
            )));
        }
        Ok((note, size))
    }
}

/// Reads an object, `None` when absent.
async fn get(store: &dyn ObjectStore, path: &Path) -> Result<Option<Bytes>> {
    match store.get(path).await {
        Ok(r) => Ok(Some(r.bytes().await?)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What `verify` checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// Entries (= the tree size).
    pub entries: u64,
    /// Statement files re-hashed.
    pub files: u64,
    /// Root hash (base64) of the whole tree.
    pub root: Option<String>,
    /// The log's name.
    pub origin: Option<String>,
}

/// What a proof showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proven {
    /// Entry `index` (its bytes) is in the log of `size` entries signed by
    /// the key.
    Inclusion {
        /// The log's name.
        origin: String,
        /// Tree size of the checkpoint.
        size: u64,
        /// The entry.
        index: u64,
        /// Its bytes.
        entry: Vec<u8>,
    },
    /// A statement line is in entry `entry` of the log of `size` entries.
    Line {
        /// The log's name.
        origin: String,
        /// Tree size of the checkpoint.
        size: u64,
        /// The statement's ledger entry.
        entry: u64,
        /// The period.
        period: String,
        /// The statement.
        statement_id: String,
        /// Whether the statement is provisional.
        provisional: bool,
        /// The CSV line.
        line: String,
    },
    /// The tree of `old` entries is a prefix of the tree of `size`.
    Consistency {
        /// The log's name.
        origin: String,
        /// The older tree.
        old: u64,
        /// The newer tree.
        size: u64,
    },
}

/// The leaves of a statement's line tree: each line of its CSV after the
/// header, without the newline (titles never hold one: the catalog refuses
/// control characters).
pub fn line_leaves(csv: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = csv.split(|&b| b == b'\n').skip(1).collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

/// The root (base64) of a statement's line tree.
pub fn lines_root(csv: &[u8]) -> Result<String> {
    let leaves = line_leaves(csv);
    let tree = Tree::of(leaves.iter().copied())?;
    Ok(tree.root(tree.size())?.to_string())
}

/// A proof that one statement line is in the log: the line, its place in
/// the statement's line tree (whose root the entry records), and the
/// entry's inclusion proof against a signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineProof {
    /// The CSV line, exactly.
    pub line: String,
    /// Its index among the statement's lines (0 = first after the header).
    pub index: u64,
    /// Lines in the statement.
    pub lines: u64,
    /// The inclusion proof in the line tree (base64 hashes).
    pub hashes: Vec<String>,
    /// The entry's inclusion proof (C2SP tlog-proof; its extra is the entry).
    pub entry_proof: String,
}

/// The line-tree part of a [`LineProof`] for line `index` of `csv`.
pub fn prove_line(csv: &[u8], index: u64) -> Result<(String, u64, Vec<String>)> {
    let leaves = line_leaves(csv);
    let n = leaves.len() as u64;
    if index >= n {
        return Err(Error::Input(format!(
            "line {index} does not exist: the statement has {n} lines"
        )));
    }
    let tree = Tree::of(leaves.iter().copied())?;
    let proof = tlog_tiles::prove_record(n, index, &tree)
        .map_err(|e| Error::Bug(format!("line proof: {e}")))?;
    Ok((
        String::from_utf8_lossy(leaves[index as usize]).into_owned(),
        n,
        proof.iter().map(ToString::to_string).collect(),
    ))
}

fn check_line_proof(p: &LineProof, vkey: &str) -> Result<Proven> {
    let bad = |why: String| Error::Tampered(format!("the line proof does not hold: {why}"));
    let Proven::Inclusion {
        origin,
        size,
        index,
        entry,
    } = check_proof(p.entry_proof.as_bytes(), vkey, None)?
    else {
        return Err(bad("its entry_proof is not an inclusion proof".into()));
    };
    let e: Entry = serde_json::from_slice(&entry)
        .map_err(|err| bad(format!("its entry is not a ledger entry: {err}")))?;
    let root = e
        .lines_root
        .as_deref()
        .ok_or_else(|| bad(format!("entry {index} records no line tree")))?;
    let root =
        Hash::parse_hash(root).map_err(|_| bad("the entry's lines_root is not a hash".into()))?;
    let hashes = p
        .hashes
        .iter()
        .map(|h| Hash::parse_hash(h).map_err(|_| bad(format!("{h:?} is not a base64 hash"))))
        .collect::<Result<Vec<_>>>()?;
    if p.index >= p.lines || hashes.len() > 64 || e.lines() != p.lines {
        return Err(bad(format!(
            "line {} of {} does not fit the entry's {} lines",
            p.index,
            p.lines,
            e.lines()
        )));
    }
    tlog_tiles::check_record(
        &hashes,
        p.lines,
        root,
        p.index,
        tlog_tiles::record_hash(p.line.as_bytes()),
    )
    .map_err(|_| {
        bad(format!(
            "line {} as given is not in the statement entry {index} records",
            p.index
        ))
    })?;
    Ok(Proven::Line {
        origin,
        size,
        entry: index,
        period: e.period,
        statement_id: e.statement_id,
        provisional: e.provisional,
        line: p.line.clone(),
    })
}

/// Checks a proof printed by [`Ledger::prove`] or
/// [`Ledger::prove_consistency`] with nothing but the verifier key (and, for
/// a consistency proof, the older checkpoint the checker holds). Never
/// panics on input: every problem is an error saying what is wrong.
pub fn check_proof(text: &[u8], vkey: &str, old_checkpoint: Option<&[u8]>) -> Result<Proven> {
    let bad = |why: String| Error::Tampered(format!("the proof does not hold: {why}"));
    if text.first() == Some(&b'{') {
        let p: LineProof = serde_json::from_slice(text)
            .map_err(|e| bad(format!("it is not a line proof: {e}")))?;
        return check_line_proof(&p, vkey);
    }
    let verifier = LogVerifier::parse(vkey)?;
    let text = std::str::from_utf8(text).map_err(|_| bad("it is not UTF-8 text".into()))?;
    let (head, note) = text
        .split_once("\n\n")
        .ok_or_else(|| bad("no blank line before the checkpoint".into()))?;
    let cp = verifier
        .open(note.as_bytes())
        .map_err(|why| bad(format!("its checkpoint: {why}")))?;
    let root = *cp.hash();
    let mut lines = head.lines();
    let header = lines.next().unwrap_or_default();
    let mut hashes = Vec::new();
    let hash =
        |l: &str| Hash::parse_hash(l).map_err(|_| bad(format!("{l:?} is not a base64 hash")));
    match header {
        PROOF_HEADER => {
            let mut extra = None;
            let mut index = None;
            for l in lines {
                if let Some(x) = l.strip_prefix("extra ") {
                    extra = Some(
                        BASE64_STANDARD
                            .decode(x)
                            .map_err(|_| bad("extra is not base64".into()))?,
                    );
                } else if let Some(x) = l.strip_prefix("index ") {
                    index = Some(x.parse::<u64>().map_err(|_| bad(format!("index {x:?}")))?);
                } else {
                    hashes.push(hash(l)?);
                }
            }
            let index = index.ok_or_else(|| bad("no index line".into()))?;
            let entry = extra.ok_or_else(|| bad("no extra line (the entry's bytes)".into()))?;
            if index >= cp.size() || hashes.len() > 64 {
                return Err(bad(format!(
                    "index {index} is not in a tree of {} entries",
                    cp.size()
                )));
            }
            tlog_tiles::check_record(
                &hashes,
                cp.size(),
                root,
                index,
                tlog_tiles::record_hash(&entry),
            )
            .map_err(|_| {
                bad(format!(
                    "entry {index} as given is not in the tree of {} entries this checkpoint signs",
                    cp.size()
                ))
            })?;
            Ok(Proven::Inclusion {
                origin: verifier.name,
                size: cp.size(),
                index,
                entry,
            })
        }
        CONSISTENCY_HEADER => {
            let mut old = None;
            for l in lines {
                if let Some(x) = l.strip_prefix("old ") {
                    old = Some(x.parse::<u64>().map_err(|_| bad(format!("old {x:?}")))?);
                } else {
                    hashes.push(hash(l)?);
                }
            }
            let old = old.ok_or_else(|| bad("no old line".into()))?;
            let held = old_checkpoint.ok_or_else(|| {
                Error::Input(
                    "a consistency proof is checked against the older checkpoint you hold: pass --old-checkpoint FILE"
                        .into(),
                )
            })?;
            let old_cp = verifier
                .open(held)
                .map_err(|why| bad(format!("the older checkpoint: {why}")))?;
            if old_cp.size() != old {
                return Err(bad(format!(
                    "it is from a tree of {old} entries but your checkpoint is for {}",
                    old_cp.size()
                )));
            }
            if old == 0 || old > cp.size() || hashes.len() > 128 {
                return Err(bad(format!("old size {old} vs new size {}", cp.size())));
            }
            tlog_tiles::check_tree(&hashes, cp.size(), root, old, *old_cp.hash()).map_err(
                |_| {
                    bad(format!(
                        "the tree of {} entries does not extend your tree of {old}: history was rewritten",
                        cp.size()
                    ))
                },
            )?;
            Ok(Proven::Consistency {
                origin: verifier.name,
                old,
                size: cp.size(),
            })
        }
        other => Err(bad(format!(
            "it starts with {other:?}, not {PROOF_HEADER} or {CONSISTENCY_HEADER}"
        ))),
    }
}
