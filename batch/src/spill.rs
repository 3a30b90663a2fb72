//! Spill files of the native engine ([`crate::count`]): rows that do not fit
//! the memory limit, written to local disk by partition and read back one
//! partition at a time.
//!
//! Two stages: `shard` files hold valid rows by event id hash (for dedup),
//! `bucket` files the dedup winners by video and day (for counting).
//! Records are little-endian. A shard record is every field of a row then
//! its user id. A bucket record holds only what counting reads: video,
//! `occurred_at`, user hash, watch seconds and flags, then, for a billable
//! row (the only kind the fraud cap ranks), its event id and user id: about
//! half a shard record's bytes. A row that is not billable carries no user
//! id in either stage: nothing reads it (its viewer is its hash). Only this
//! process reads them, within one run: the directory is created at the
//! first spill under the configured spill directory and removed when the run
//! ends, however it ends.

use std::fs::OpenOptions;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, StringArray, StringBuilder};

use crate::memory::Budget;
use crate::rows::{BATCH_ROWS, Blocks, Row};
use crate::{Error, Result};

/// The most partitions per in-memory shard or bucket.
pub(crate) const MAX_SPLIT: usize = 64;

/// Bytes [`Spill::append_buffered`] holds per file before writing them.
const PENDING_BYTES: usize = 64 << 10;

/// Bytes of a shard record before its user id.
const FIXED: usize = 16 + 8 * 7 + 4 * 3 + 2 + 1 + 4;
/// Bytes of a bucket record without its key: video, `occurred_at`, user
/// hash, watch seconds, flags.
const WINNER: usize = 4 + 8 + 8 + 4 + 1;
/// Bytes of a bucket record's key before its user id: event id,
/// behavioural fingerprint, playback hash, user id's length.
const WINNER_KEY: usize = 16 + 8 + 8 + 4;
/// Flags of a shard or bucket record.
const ELIGIBLE: u8 = 1;
const KEYED: u8 = 2;
const ZERO_ADS: u8 = 4;
const VERIFIED: u8 = 8;

/// A row's flags byte.
fn flags(r: &Row) -> u8 {
    (if r.eligible { ELIGIBLE } else { 0 })
        | (if r.zero_ads { ZERO_ADS } else { 0 })
        | if r.verified { VERIFIED } else { 0 }
}

/// Which files.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stage {
    /// Valid rows by event id (read → dedup).
    Shards,
    /// Winners by video and day (dedup → count).
    Buckets,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Shards => "shard",
            Stage::Buckets => "bucket",
        }
    }
}

/// The spill files of one run.
#[derive(Debug)]
pub(crate) struct Spill {
    /// Where the run's directory is made.
    root: PathBuf,
    dir: Mutex<Option<tempfile::TempDir>>,
    /// Partitions per in-memory shard (and bucket): set at the first spill.
    split: OnceLock<usize>,
    /// One lock per file, so appends of two threads do not interleave.
    locks: Vec<Mutex<()>>,
    /// Per file, records not yet written ([`Spill::append_buffered`]).
    pending: Vec<Mutex<Vec<u8>>>,
    written: AtomicU64,
}

impl Spill {
    /// Spills (if it comes to that) under `root`, or the temp directory.
    pub(crate) fn new(root: Option<&Path>, shards: usize) -> Self {
        Self {
            root: root.map_or_else(std::env::temp_dir, Path::to_path_buf),
            dir: Mutex::new(None),
            split: OnceLock::new(),
            locks: (0..2 * shards * MAX_SPLIT)
                .map(|_| Mutex::new(()))
                .collect(),
            pending: (0..2 * shards * MAX_SPLIT)
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            written: AtomicU64::new(0),
        }
    }

    /// Whether anything was spilled (then every row is, see [`crate::count`]).
    pub(crate) fn active(&self) -> bool {
        self.split.get().is_some()
    }

    /// Partitions per shard: `split` if this is the first spill (a power of
    /// two, at most [`MAX_SPLIT`]), else as set by the first.
    pub(crate) fn start(&self, split: usize) -> usize {
        *self.split.get_or_init(|| {
            let split = split.clamp(1, MAX_SPLIT).next_power_of_two();
            tracing::info!(
                dir = %self.root.display(),
                partitions = self.locks.len() / 2 / MAX_SPLIT * split,
                "the rows read passed half the memory limit: spilling to local disk"
            );
            split
        })
    }

    /// Partitions per shard (1 before any spill).
    pub(crate) fn split(&self) -> usize {
        self.split.get().copied().unwrap_or(1)
    }

    /// Bytes written so far.
    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    fn path(&self, stage: Stage, part: usize) -> Result<PathBuf> {
        let mut dir = self.dir.lock().unwrap_or_else(|p| p.into_inner());
        if dir.is_none() {
            sweep_stale(&self.root);
            let made = tempfile::Builder::new()
                .prefix(&format!("{PREFIX}{}-", std::process::id()))
                .tempdir_in(&self.root)
                .map_err(|e| self.failed(&self.root, &e))?;
            *dir = Some(made);
        }
        let base = dir.as_ref().map(|d| d.path().to_path_buf());
        Ok(base
            .unwrap_or_default()
            .join(format!("{}-{part:05}.bin", stage.name())))
    }

    fn failed(&self, path: &Path, e: &dyn std::fmt::Display) -> Error {
        Error::Spill(format!(
            "{}: {e}; free space there, pass a larger --memory-limit, or point --spill-dir at a local disk with room",
            path.display()
        ))
    }

    /// A file's index in `locks` and `pending`.
    fn index(&self, stage: Stage, part: usize) -> usize {
        let index = match stage {
            Stage::Shards => part,
            Stage::Buckets => self.locks.len() / 2 + part,
        };
        index % self.locks.len()
    }

    fn lock(&self, stage: Stage, part: usize) -> std::sync::MutexGuard<'_, ()> {
        self.locks[self.index(stage, part)]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Appends records to a partition's file through a buffer of up to
    /// [`PENDING_BYTES`]: for writers that add a few KB at a time to each
    /// of many files (a dedup task's winners go to every bucket). Call
    /// [`Spill::flush`] before reading the files.
    pub(crate) fn append_buffered(&self, stage: Stage, part: usize, records: &[u8]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut pending = self.pending[self.index(stage, part)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        pending.extend_from_slice(records);
        if pending.len() >= PENDING_BYTES {
            self.append(stage, part, &pending)?;
            pending.clear();
        }
        Ok(())
    }

    /// Writes what [`Spill::append_buffered`] holds of `stage`'s files.
    pub(crate) fn flush(&self, stage: Stage) -> Result<()> {
        for part in 0..self.locks.len() / 2 {
            let mut pending = self.pending[self.index(stage, part)]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            self.append(stage, part, &pending)?;
            *pending = Vec::new();
        }
        Ok(())
    }

    /// Appends encoded records to a partition's file.
    pub(crate) fn append(&self, stage: Stage, part: usize, records: &[u8]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let path = self.path(stage, part)?;
        let _guard = self.lock(stage, part);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(records))
            .map_err(|e| self.failed(&path, &e))?;
        self.written
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The size of a partition's file (0 if it has none).
    pub(crate) fn size(&self, stage: Stage, part: usize) -> u64 {
        if !self.active() {
            return 0;
        }
        self.path(stage, part)
            .ok()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    }

    /// Reads a partition's rows back, and deletes its file. Each row's
    /// user id is in the returned chunks, at the row's `chunk` and `row`
    /// (empty for a row spilled without one).
    /// What they hold is added to `budget`; the caller gives it back.
    pub(crate) fn load(
        &self,
        stage: Stage,
        part: usize,
        budget: &Budget,
    ) -> Result<(Blocks, Vec<StringArray>, u64)> {
        let path = self.path(stage, part)?;
        let mut rows = Blocks::default();
        let mut users = Vec::new();
        let mut held = 0u64;
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((rows, users, 0)),
            Err(e) => return Err(self.failed(&path, &e)),
        };
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut builder = StringBuilder::new();
        let mut in_chunk = 0usize;
        let mut fixed = [0u8; FIXED];
        let mut winner = [0u8; WINNER];
        let mut key = [0u8; WINNER_KEY];
        let mut user = Vec::new();
        let finish = |builder: &mut StringBuilder, users: &mut Vec<StringArray>| {
            let chunk = builder.finish();
            let bytes = chunk.get_array_memory_size() as u64;
            budget.add(bytes);
            users.push(chunk);
            bytes
        };
        let failed = |e: std::io::Error| self.failed(&path, &e);
        loop {
            let first = match stage {
                Stage::Shards => &mut fixed[..],
                Stage::Buckets => &mut winner[..],
            };
            match input.read_exact(first) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(failed(e)),
            }
            let (mut r, len) = match stage {
                Stage::Shards => decode(&fixed),
                Stage::Buckets => {
                    let (mut r, keyed) = decode_winner(&winner);
                    let mut len = 0;
                    if keyed {
                        input.read_exact(&mut key).map_err(failed)?;
                        (r.id, r.print, r.playback, len) = decode_key(&key);
                    }
                    (r, len)
                }
            };
            user.resize(len, 0);
            input.read_exact(&mut user).map_err(failed)?;
            let user = std::str::from_utf8(&user)
                .map_err(|e| Error::Bug(format!("spill file {} holds {e}", path.display())))?;
            if in_chunk == BATCH_ROWS {
                held += finish(&mut builder, &mut users);
                in_chunk = 0;
            }
            builder.append_value(user);
            r.chunk = users.len() as u32;
            r.row = in_chunk as u16;
            in_chunk += 1;
            let grew = rows.push(r) as u64;
            budget.add(grew);
            held += grew;
        }
        if in_chunk > 0 {
            held += finish(&mut builder, &mut users);
        }
        drop(input);
        let _ = std::fs::remove_file(&path);
        Ok((rows, users, held))
    }
}

/// Spill directories are `viewcount-spill-<pid>-<random>`.
const PREFIX: &str = "viewcount-spill-";

/// Removes the spill directories under `root` whose process is gone (a run
/// killed before it could clean up); a live process's are left alone, and
/// so is anything whose owner cannot be told.
fn sweep_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() && Path::new("/proc/self").exists() {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    tracing::info!(dir = %entry.path().display(), pid, "removed a stale spill directory of a process that is gone")
                }
                Err(e) => {
                    tracing::warn!(dir = %entry.path().display(), error = %e, "cannot remove a stale spill directory")
                }
            }
        }
    }
}

/// A little-endian `u64` of 8 bytes (callers slice exactly 8).
fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().unwrap_or_default())
}

/// A little-endian `u32` of 4 bytes (callers slice exactly 4).
fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().unwrap_or_default())
}

/// Appends a shard record of `r` with its user id (`""` for a row that is
/// not billable).
pub(crate) fn encode(r: &Row, user: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&r.id[0].to_le_bytes());
    out.extend_from_slice(&r.id[1].to_le_bytes());
    out.extend_from_slice(&r.fp.to_le_bytes());
    out.extend_from_slice(&r.received_at.to_le_bytes());
    out.extend_from_slice(&r.offset.to_le_bytes());
    out.extend_from_slice(&r.occurred_at.to_le_bytes());
    out.extend_from_slice(&r.user_hash.to_le_bytes());
    out.extend_from_slice(&r.print.to_le_bytes());
    out.extend_from_slice(&r.playback.to_le_bytes());
    out.extend_from_slice(&r.partition.to_le_bytes());
    out.extend_from_slice(&r.watch_seconds.to_le_bytes());
    out.extend_from_slice(&r.video.to_le_bytes());
    out.extend_from_slice(&r.reader.to_le_bytes());
    out.push(flags(r));
    out.extend_from_slice(&(user.len() as u32).to_le_bytes());
    out.extend_from_slice(user.as_bytes());
}

/// Appends a bucket record of winner `r`: with its event id and user id
/// if `user` is given (a billable row), else without.
pub(crate) fn encode_winner(r: &Row, user: Option<&str>, out: &mut Vec<u8>) {
    out.extend_from_slice(&r.video.to_le_bytes());
    out.extend_from_slice(&r.occurred_at.to_le_bytes());
    out.extend_from_slice(&r.user_hash.to_le_bytes());
    out.extend_from_slice(&r.watch_seconds.to_le_bytes());
    let keyed = if user.is_some() { KEYED } else { 0 };
    out.push(keyed | flags(r));
    if let Some(user) = user {
        out.extend_from_slice(&r.id[0].to_le_bytes());
        out.extend_from_slice(&r.id[1].to_le_bytes());
        out.extend_from_slice(&r.print.to_le_bytes());
        out.extend_from_slice(&r.playback.to_le_bytes());
        out.extend_from_slice(&(user.len() as u32).to_le_bytes());
        out.extend_from_slice(user.as_bytes());
    }
}

/// A bucket record's row (the fields dedup used are zero, and so are the
/// event id, fingerprint and playback until [`decode_key`]) and whether a
/// key follows.
fn decode_winner(b: &[u8; WINNER]) -> (Row, bool) {
    let flags = b[24];
    (
        Row {
            id: [0, 0],
            fp: 0,
            received_at: 0,
            offset: 0,
            occurred_at: le_u64(&b[4..12]) as i64,
            partition: 0,
            watch_seconds: le_u32(&b[20..24]) as i32,
            video: le_u32(&b[0..4]),
            user_hash: le_u64(&b[12..20]),
            print: 0,
            playback: 0,
            chunk: 0,
            row: 0,
            reader: 0,
            eligible: flags & ELIGIBLE != 0,
            zero_ads: flags & ZERO_ADS != 0,
            verified: flags & VERIFIED != 0,
        },
        flags & KEYED != 0,
    )
}

/// A bucket record's key: the event id, the fingerprint, the playback
/// hash and the user id's length.
fn decode_key(b: &[u8; WINNER_KEY]) -> ([u64; 2], u64, u64, usize) {
    let len = le_u32(&b[32..36]);
    (
        [le_u64(&b[0..8]), le_u64(&b[8..16])],
        le_u64(&b[16..24]),
        le_u64(&b[24..32]),
        len as usize,
    )
}

/// A shard record's row (without its user id's place) and its user id's
/// length.
fn decode(b: &[u8; FIXED]) -> (Row, usize) {
    let mut at = 0;
    let mut take = |n: usize| {
        let s = &b[at..at + n];
        at += n;
        s
    };
    let id = [le_u64(take(8)), le_u64(take(8))];
    let fp = le_u64(take(8));
    let received_at = le_u64(take(8)) as i64;
    let offset = le_u64(take(8)) as i64;
    let occurred_at = le_u64(take(8)) as i64;
    let user_hash = le_u64(take(8));
    let print = le_u64(take(8));
    let playback = le_u64(take(8));
    let partition = le_u32(take(4)) as i32;
    let watch_seconds = le_u32(take(4)) as i32;
    let video = le_u32(take(4));
    let reader = u16::from_le_bytes(take(2).try_into().unwrap_or_default());
    let flags = take(1)[0];
    let len = le_u32(take(4)) as usize;
    (
        Row {
            id,
            fp,
            received_at,
            offset,
            occurred_at,
            partition,
            watch_seconds,
            video,
            user_hash,
            print,
            playback,
            chunk: 0,
            row: 0,
            reader,
            eligible: flags & ELIGIBLE != 0,
            zero_ads: flags & ZERO_ADS != 0,
            verified: flags & VERIFIED != 0,
        },
        len,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::new(Some(dir.path()), 4);
        assert!(!spill.active());
        assert_eq!(spill.start(3), 4, "a power of two");
        assert_eq!(spill.start(1), 4, "set by the first spill");
        let row = |n: u64| Row {
            id: [n, !n],
            fp: n * 3,
            received_at: -5,
            offset: 1 << 40,
            occurred_at: 1_700_000_000_000_000,
            partition: 7,
            watch_seconds: -1,
            video: 9,
            user_hash: u64::MAX,
            print: n ^ 0xabc,
            playback: n ^ 0x5eed,
            chunk: 99,
            row: 99,
            reader: 3,
            eligible: n.is_multiple_of(2),
            zero_ads: n.is_multiple_of(3),
            verified: n.is_multiple_of(5),
        };
        let user = |i: u64| format!("user-{i}-é");
        let budget = Budget::new(1 << 30);
        let n = BATCH_ROWS as u64 + 5;

        // Shard records: every field, and the user id given.
        let mut buf = Vec::new();
        for i in 0..n {
            encode(&row(i), &user(i), &mut buf);
        }
        let (half, rest) = buf.split_at(buf.len() / 2);
        spill.append(Stage::Shards, 2, half).unwrap();
        spill.append(Stage::Shards, 2, rest).unwrap();
        assert_eq!(spill.written(), buf.len() as u64);
        assert_eq!(spill.size(Stage::Shards, 2), buf.len() as u64);
        let (rows, users, held) = spill.load(Stage::Shards, 2, &budget).unwrap();
        assert_eq!(rows.len() as u64, n);
        assert_eq!(users.len(), 2, "user ids in chunks of {BATCH_ROWS}");
        assert_eq!(budget.used(), held);
        for (i, r) in rows.iter().enumerate() {
            let want = row(i as u64);
            assert_eq!(
                (r.id, r.fp, r.received_at, r.offset, r.occurred_at),
                (
                    want.id,
                    want.fp,
                    want.received_at,
                    want.offset,
                    want.occurred_at
                )
            );
            assert_eq!(
                (r.partition, r.watch_seconds, r.video, r.user_hash),
                (
                    want.partition,
                    want.watch_seconds,
                    want.video,
                    want.user_hash
                )
            );
            assert_eq!(
                (r.reader, r.eligible, r.zero_ads, r.print),
                (want.reader, want.eligible, want.zero_ads, want.print)
            );
            assert_eq!((r.playback, r.verified), (want.playback, want.verified));
            assert_eq!(
                users[r.chunk as usize].value(usize::from(r.row)),
                user(i as u64)
            );
        }
        assert_eq!(spill.size(Stage::Shards, 2), 0, "a loaded file is gone");
        budget.sub(held);

        // Bucket records: what counting reads; the event id and user id
        // only where given (every third row here).
        let keyed = |i: u64| i.is_multiple_of(3);
        let mut buf = Vec::new();
        for i in 0..n {
            let u = user(i);
            encode_winner(&row(i), keyed(i).then_some(u.as_str()), &mut buf);
        }
        let full: u64 = (0..n).map(|i| (FIXED + 4 + user(i).len()) as u64).sum();
        assert!(
            (buf.len() as u64) < full / 2,
            "bucket records ({} bytes) are under half the shard records' ({full})",
            buf.len()
        );
        spill.append(Stage::Buckets, 2, &buf).unwrap();
        let (rows, users, held) = spill.load(Stage::Buckets, 2, &budget).unwrap();
        assert_eq!(rows.len() as u64, n);
        assert_eq!(budget.used(), held);
        for (i, r) in rows.iter().enumerate() {
            let (i, want) = (i as u64, row(i as u64));
            assert_eq!(
                (
                    r.occurred_at,
                    r.watch_seconds,
                    r.video,
                    r.user_hash,
                    r.eligible,
                    r.zero_ads,
                    r.verified
                ),
                (
                    want.occurred_at,
                    want.watch_seconds,
                    want.video,
                    want.user_hash,
                    want.eligible,
                    want.zero_ads,
                    want.verified
                )
            );
            let user_read = users[r.chunk as usize].value(usize::from(r.row));
            if keyed(i) {
                assert_eq!(
                    (r.id, r.print, r.playback, user_read),
                    (want.id, want.print, want.playback, user(i).as_str())
                );
            } else {
                assert_eq!((r.id, r.print, r.playback, user_read), ([0, 0], 0, 0, ""));
            }
        }
        let (none, _, _) = spill.load(Stage::Shards, 0, &budget).unwrap();
        assert_eq!(none.len(), 0, "a partition nothing spilled to is empty");
    }

    #[test]
    fn only_spill_directories_of_processes_that_are_gone_are_swept() {
        let root = tempfile::tempdir().unwrap();
        // A process that has exited: its pid is free (unless reused, when
        // the sweep leaves it, which is the safe way to be wrong).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let names = [
            format!("{PREFIX}{dead}-gone"),
            format!("{PREFIX}{}-live", std::process::id()),
            format!("{PREFIX}notapid"),
            "unrelated".to_owned(),
        ];
        for n in &names {
            std::fs::create_dir(root.path().join(n)).unwrap();
            std::fs::write(root.path().join(n).join("shards-00000.bin"), b"x").unwrap();
        }
        sweep_stale(root.path());
        let left: Vec<bool> = names.iter().map(|n| root.path().join(n).exists()).collect();
        assert_eq!(left, [false, true, true, true], "{names:?}");

        // A spill sweeps when it makes its directory, and names it by pid.
        std::fs::create_dir(root.path().join(&names[0])).unwrap();
        let spill = Spill::new(Some(root.path()), 4);
        spill.path(Stage::Shards, 0).unwrap();
        assert!(!root.path().join(&names[0]).exists());
        let own = std::fs::read_dir(root.path())
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{PREFIX}{}-", std::process::id()))
            })
            .count();
        assert_eq!(own, 2, "the live one and the new one");
    }
}
