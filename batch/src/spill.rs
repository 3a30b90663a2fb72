//! Spill files of the native engine ([`crate::count`]): rows that do not fit
//! the memory limit, written to local disk by partition and read back one
//! partition at a time.
//!
//! Two stages: `shard` files hold valid rows by event id hash (for dedup),
//! `bucket` files the dedup winners by video and day (for counting). A
//! record is a row's fixed fields then its user id, little-endian. Only this
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

use crate::count::{BATCH_ROWS, Blocks, Row};
use crate::memory::Budget;
use crate::{Error, Result};

/// The most partitions per in-memory shard or bucket.
pub(crate) const MAX_SPLIT: usize = 64;

/// Bytes of a record before its user id.
const FIXED: usize = 16 + 8 * 5 + 4 * 3 + 2 + 1 + 4;

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

    fn lock(&self, stage: Stage, part: usize) -> std::sync::MutexGuard<'_, ()> {
        let index = match stage {
            Stage::Shards => part,
            Stage::Buckets => self.locks.len() / 2 + part,
        };
        self.locks[index % self.locks.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
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
    /// user id is in the returned chunks, at the row's `chunk` and `row`.
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
        let mut user = Vec::new();
        let finish = |builder: &mut StringBuilder, users: &mut Vec<StringArray>| {
            let chunk = builder.finish();
            let bytes = chunk.get_array_memory_size() as u64;
            budget.add(bytes);
            users.push(chunk);
            bytes
        };
        loop {
            match input.read_exact(&mut fixed) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(self.failed(&path, &e)),
            }
            let (mut r, len) = decode(&fixed);
            user.resize(len, 0);
            input
                .read_exact(&mut user)
                .map_err(|e| self.failed(&path, &e))?;
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

/// Appends a record of `r` with its user id.
pub(crate) fn encode(r: &Row, user: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&r.id[0].to_le_bytes());
    out.extend_from_slice(&r.id[1].to_le_bytes());
    out.extend_from_slice(&r.fp.to_le_bytes());
    out.extend_from_slice(&r.received_at.to_le_bytes());
    out.extend_from_slice(&r.offset.to_le_bytes());
    out.extend_from_slice(&r.occurred_at.to_le_bytes());
    out.extend_from_slice(&r.user_hash.to_le_bytes());
    out.extend_from_slice(&r.partition.to_le_bytes());
    out.extend_from_slice(&r.watch_seconds.to_le_bytes());
    out.extend_from_slice(&r.video.to_le_bytes());
    out.extend_from_slice(&r.reader.to_le_bytes());
    out.push(u8::from(r.eligible));
    out.extend_from_slice(&(user.len() as u32).to_le_bytes());
    out.extend_from_slice(user.as_bytes());
}

/// A record's row (without its user id's place) and its user id's length.
fn decode(b: &[u8; FIXED]) -> (Row, usize) {
    let mut at = 0;
    let mut take = |n: usize| {
        let s = &b[at..at + n];
        at += n;
        s
    };
    let u64_ = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or_default());
    let u32_ = |s: &[u8]| u32::from_le_bytes(s.try_into().unwrap_or_default());
    let id = [u64_(take(8)), u64_(take(8))];
    let fp = u64_(take(8));
    let received_at = u64_(take(8)) as i64;
    let offset = u64_(take(8)) as i64;
    let occurred_at = u64_(take(8)) as i64;
    let user_hash = u64_(take(8));
    let partition = u32_(take(4)) as i32;
    let watch_seconds = u32_(take(4)) as i32;
    let video = u32_(take(4));
    let reader = u16::from_le_bytes(take(2).try_into().unwrap_or_default());
    let eligible = take(1)[0] != 0;
    let len = u32_(take(4)) as usize;
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
            chunk: 0,
            row: 0,
            reader,
            eligible,
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
            chunk: 99,
            row: 99,
            reader: 3,
            eligible: n.is_multiple_of(2),
        };
        let mut buf = Vec::new();
        let n = BATCH_ROWS as u64 + 5;
        for i in 0..n {
            encode(&row(i), &format!("user-{i}-é"), &mut buf);
        }
        let (half, rest) = buf.split_at(buf.len() / 2);
        spill.append(Stage::Buckets, 2, half).unwrap();
        spill.append(Stage::Buckets, 2, rest).unwrap();
        assert_eq!(spill.written(), buf.len() as u64);
        assert_eq!(spill.size(Stage::Buckets, 2), buf.len() as u64);
        let budget = Budget::new(1 << 30);
        let (rows, users, held) = spill.load(Stage::Buckets, 2, &budget).unwrap();
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
            assert_eq!((r.reader, r.eligible), (want.reader, want.eligible));
            let user = users[r.chunk as usize].value(usize::from(r.row));
            assert_eq!(user, format!("user-{i}-é"));
        }
        assert_eq!(spill.size(Stage::Buckets, 2), 0, "a loaded file is gone");
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
