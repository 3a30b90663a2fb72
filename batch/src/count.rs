//! The native counting engine: the compute step of `batch run`, exact,
//! deterministic, and reading every input once.
//!
//! Each input file is fetched once: its SHA-256 (recorded in the manifest)
//! and the rows counted come from the same bytes, so a manifest names exactly
//! what was counted even if a file changed during the run. One worker per
//! core fetches, checksums, decodes and re-validates files and extracts what
//! counting needs of each valid row; one counter thread keeps the first copy
//! of every event id in a hash table keyed by the 128-bit id. When every file
//! is read, the counter applies the fraud cap and aggregates per video-hour.
//!
//! Semantics, shared with the SQL engine ([`crate::sql`]), which a test holds
//! byte-identical to this one:
//! - a row counts only if it passes re-validation
//!   ([`schemas::archive::RawColumns::is_valid`]);
//! - of the copies of an event id, the one received first wins (then lowest
//!   Kafka partition, offset and payload fingerprint, so ties are decided
//!   too); an id whose copies carry different payloads is a conflicting id;
//! - billable = `revenue_eligible` and `watch_seconds >= min`; per user,
//!   video and UTC day, billable views beyond the cap (in `occurred_at`, then
//!   `event_id` order) are fraud-filtered;
//! - per video and hour of `occurred_at` within the range: views, billable
//!   views, fraud-filtered views, watch seconds, and a viewer sketch.
//!
//! Memory: about 100 bytes per distinct event of the days read (the winner
//! table), plus a few in-flight record batches.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, RecordBatch, StringArray};
use foldhash::fast::{FixedState, RandomState};
use hashbrown::{HashMap, HashTable};
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use schemas::CountingRules;
use schemas::archive::RawColumns;

use crate::run::{Input, Rows, ViewRow, views_batch};
use crate::sketch::{Sketch, value_hash};
use crate::{Error, Result, store};

const HOUR_US: i64 = 3_600_000_000;
const DAY_US: i64 = 24 * HOUR_US;

/// Rows per decoded batch.
const BATCH_ROWS: usize = 8192;

/// What a run computed.
#[derive(Debug)]
pub(crate) struct Counted {
    /// The inputs read, in the order given, with their checksums.
    pub inputs: Vec<Input>,
    /// The views table, sorted by (video, hour).
    pub views: RecordBatch,
    /// Row counts.
    pub rows: Rows,
}

/// Progress of a count: `(step, done, total)`.
pub(crate) type ProgressTx = tokio::sync::mpsc::UnboundedSender<(&'static str, u64, u64)>;

/// The payload fingerprint of row `i`: a fixed 64-bit hash of every payload
/// field (what makes two copies of an event id the same event). Both engines
/// use it, to spot conflicting copies and to break exact ties.
pub fn payload_fp(c: &RawColumns<'_>, i: usize) -> u64 {
    fn opt(a: &StringArray, i: usize) -> Option<&str> {
        a.is_valid(i).then(|| a.value(i))
    }
    FixedState::with_seed(0x7663_6670).hash_one((
        c.video_id.value(i),
        c.user_id.value(i),
        opt(c.session_id, i),
        c.occurred_at.value(i),
        c.watch_seconds.value(i),
        c.device.value(i),
        opt(c.country, i),
        opt(c.referrer, i),
        opt(c.quality, i),
        c.revenue_eligible.value(i),
        c.ad_impressions.value(i),
    ))
}

/// Reads `files` (sorted) and counts hours `[from_us, to_us)` with `rules`.
/// Blocking: call it from a blocking thread.
pub(crate) fn count(
    store: Arc<dyn ObjectStore>,
    files: &[ObjectMeta],
    from_us: i64,
    to_us: i64,
    rules: &CountingRules,
    progress: &ProgressTx,
) -> Result<Counted> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(files.len().max(1));
    let total_bytes: u64 = files.iter().map(|m| m.size).sum();
    let state = RandomState::default();
    let next = AtomicUsize::new(0);
    let abort = AtomicBool::new(false);
    let read_bytes = AtomicU64::new(0);
    let inputs: Mutex<Vec<Option<Input>>> = Mutex::new(vec![None; files.len()]);
    let (tx, rx) = mpsc::sync_channel::<Result<Chunk>>(workers * 2);

    let mut counter = Counter::new(state.clone());
    std::thread::scope(|s| -> Result<()> {
        for _ in 0..workers {
            let tx = tx.clone();
            let (store, state, next, abort) = (store.clone(), &state, &next, &abort);
            let (inputs, read_bytes) = (&inputs, &read_bytes);
            s.spawn(move || {
                let work = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => Worker {
                        store,
                        state,
                        tx: &tx,
                        rt,
                    },
                    Err(e) => {
                        abort.store(true, Ordering::Relaxed);
                        let _ = tx.send(Err(Error::Config(format!(
                            "cannot start a reader's I/O runtime: {e}"
                        ))));
                        return;
                    }
                };
                while !abort.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(meta) = files.get(i) else { break };
                    match work.file(meta) {
                        Ok(input) => {
                            read_bytes.fetch_add(input.size, Ordering::Relaxed);
                            if let Ok(mut all) = inputs.lock() {
                                all[i] = Some(input);
                            }
                        }
                        Err(e) => {
                            abort.store(true, Ordering::Relaxed);
                            let _ = tx.send(Err(e));
                            break;
                        }
                    }
                }
            });
        }
        drop(tx);
        let mut result = Ok(());
        for chunk in rx.iter() {
            match chunk {
                Ok(chunk) if result.is_ok() => {
                    counter.add(&chunk);
                    let _ = progress.send((
                        "reading inputs",
                        read_bytes.load(Ordering::Relaxed),
                        total_bytes,
                    ));
                }
                Ok(_) => {}
                Err(e) => {
                    abort.store(true, Ordering::Relaxed);
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
            }
        }
        result
    })?;
    let _ = progress.send(("reading inputs", total_bytes, total_bytes));
    let inputs = inputs
        .into_inner()
        .map_err(|_| Error::Input("a reader thread panicked".into()))?
        .into_iter()
        .zip(files)
        .map(|(i, m)| i.ok_or_else(|| Error::Input(format!("{} was not read", m.location))))
        .collect::<Result<Vec<_>>>()?;
    let _ = progress.send(("counting", 0, 1));
    let (views, rows) = counter.finish(from_us, to_us, rules)?;
    let _ = progress.send(("counting", 1, 1));
    Ok(Counted {
        inputs,
        views,
        rows,
    })
}

/// What the counter needs of one valid row.
#[derive(Debug, Clone, Copy)]
struct Keys {
    id: [u64; 2],
    id_hash: u64,
    fp: u64,
    received_at: i64,
    offset: i64,
    occurred_at: i64,
    partition: i32,
    watch_seconds: i32,
    eligible: bool,
    video_hash: u64,
    user_hash: u64,
    row: u32,
}

/// The valid rows of one decoded batch.
#[derive(Debug)]
struct Chunk {
    keys: Vec<Keys>,
    video_id: StringArray,
    user_id: StringArray,
    input_rows: u64,
}

struct Worker<'a> {
    store: Arc<dyn ObjectStore>,
    state: &'a RandomState,
    tx: &'a mpsc::SyncSender<Result<Chunk>>,
    /// Drives this thread's object store reads.
    rt: tokio::runtime::Runtime,
}

impl Worker<'_> {
    /// Fetches, checksums, decodes and sends one file.
    fn file(&self, meta: &ObjectMeta) -> Result<Input> {
        let path = meta.location.to_string();
        let bytes = self.rt.block_on(async {
            Ok::<_, Error>(self.store.get(&meta.location).await?.bytes().await?)
        })?;
        let input = Input {
            path: path.clone(),
            size: bytes.len() as u64,
            sha256: store::sha256(&bytes),
        };
        let damaged = |e: &dyn std::fmt::Display| {
            Error::Corrupt(format!(
                "raw file {path} cannot be read: {e}; restore it from a backup, or move it aside and re-archive its offsets"
            ))
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| damaged(&e))?
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| damaged(&e))?;
        for batch in reader {
            let batch = batch.map_err(|e| damaged(&e))?;
            let chunk = self.chunk(&batch).map_err(|e| damaged(&e))?;
            if self.tx.send(Ok(chunk)).is_err() {
                // The counter stopped (another file failed).
                break;
            }
        }
        Ok(input)
    }

    fn chunk(&self, batch: &RecordBatch) -> Result<Chunk> {
        let c = RawColumns::new(batch)?;
        let mut keys = Vec::with_capacity(c.len());
        for i in 0..c.len() {
            if !c.is_valid(i) {
                continue;
            }
            let Some(id) = c.event_id(i) else { continue };
            let (hi, lo) = id.as_u64_pair();
            keys.push(Keys {
                id: [hi, lo],
                id_hash: self.state.hash_one([hi, lo]),
                fp: payload_fp(&c, i),
                received_at: c.received_at.value(i),
                offset: c.kafka_offset.value(i),
                occurred_at: c.occurred_at.value(i),
                partition: c.kafka_partition.value(i),
                watch_seconds: c.watch_seconds.value(i),
                eligible: c.revenue_eligible.value(i),
                video_hash: self.state.hash_one(c.video_id.value(i)),
                user_hash: self.state.hash_one(c.user_id.value(i)),
                row: i as u32,
            });
        }
        Ok(Chunk {
            keys,
            video_id: c.video_id.clone(),
            user_id: c.user_id.clone(),
            input_rows: c.len() as u64,
        })
    }
}

/// The first copy of an event id seen so far.
#[derive(Debug, Clone, Copy)]
struct Winner {
    id: [u64; 2],
    received_at: i64,
    offset: i64,
    occurred_at: i64,
    fp: u64,
    partition: i32,
    watch_seconds: i32,
    video: u32,
    user: u32,
    eligible: bool,
    conflicting: bool,
}

impl Winner {
    fn order(&self) -> (i64, i32, i64, u64) {
        (self.received_at, self.partition, self.offset, self.fp)
    }
}

/// Distinct strings numbered in arrival order.
struct Interned {
    names: Vec<Box<str>>,
    table: HashTable<u32>,
}

impl Interned {
    fn new() -> Self {
        Self {
            names: Vec::new(),
            table: HashTable::new(),
        }
    }

    /// The number of `s`, whose hash under `state` is `hash`; and whether it is new.
    fn get(&mut self, state: &RandomState, hash: u64, s: &str) -> (u32, bool) {
        let names = &mut self.names;
        if let Some(&n) = self.table.find(hash, |&n| &*names[n as usize] == s) {
            return (n, false);
        }
        let n = names.len() as u32;
        names.push(s.into());
        self.table
            .insert_unique(hash, n, |&m| state.hash_one(&*names[m as usize]));
        (n, true)
    }
}

struct Counter {
    state: RandomState,
    winners: Vec<Winner>,
    ids: HashTable<u32>,
    videos: Interned,
    users: Interned,
    /// Per user number: the sketch hash of the user id.
    user_sketch_hash: Vec<u64>,
    input_rows: u64,
    valid_rows: u64,
}

impl Counter {
    fn new(state: RandomState) -> Self {
        Self {
            state,
            winners: Vec::new(),
            ids: HashTable::new(),
            videos: Interned::new(),
            users: Interned::new(),
            user_sketch_hash: Vec::new(),
            input_rows: 0,
            valid_rows: 0,
        }
    }

    fn add(&mut self, chunk: &Chunk) {
        self.input_rows += chunk.input_rows;
        self.valid_rows += chunk.keys.len() as u64;
        for k in &chunk.keys {
            let winners = &self.winners;
            let found = self
                .ids
                .find(k.id_hash, |&w| winners[w as usize].id == k.id)
                .copied();
            match found {
                None => {
                    let (video, user) = self.intern(chunk, k);
                    let n = self.winners.len() as u32;
                    self.winners.push(Winner {
                        id: k.id,
                        received_at: k.received_at,
                        offset: k.offset,
                        occurred_at: k.occurred_at,
                        fp: k.fp,
                        partition: k.partition,
                        watch_seconds: k.watch_seconds,
                        video,
                        user,
                        eligible: k.eligible,
                        conflicting: false,
                    });
                    let (state, winners) = (&self.state, &self.winners);
                    self.ids
                        .insert_unique(k.id_hash, n, |&w| state.hash_one(winners[w as usize].id));
                }
                Some(n) => {
                    let w = self.winners[n as usize];
                    let same_payload = w.fp == k.fp;
                    let earlier = (k.received_at, k.partition, k.offset, k.fp) < w.order();
                    let (video, user) = if earlier && !same_payload {
                        self.intern(chunk, k)
                    } else {
                        (w.video, w.user)
                    };
                    let w = &mut self.winners[n as usize];
                    w.conflicting |= !same_payload;
                    if earlier {
                        w.received_at = k.received_at;
                        w.partition = k.partition;
                        w.offset = k.offset;
                        w.fp = k.fp;
                        w.occurred_at = k.occurred_at;
                        w.watch_seconds = k.watch_seconds;
                        w.eligible = k.eligible;
                        w.video = video;
                        w.user = user;
                    }
                }
            }
        }
    }

    fn intern(&mut self, chunk: &Chunk, k: &Keys) -> (u32, u32) {
        let row = k.row as usize;
        let (video, _) = self
            .videos
            .get(&self.state, k.video_hash, chunk.video_id.value(row));
        let user_id = chunk.user_id.value(row);
        let (user, new) = self.users.get(&self.state, k.user_hash, user_id);
        if new {
            self.user_sketch_hash.push(value_hash(user_id.as_bytes()));
        }
        (video, user)
    }

    /// Fraud cap, then the per video-hour aggregate.
    fn finish(
        self,
        from_us: i64,
        to_us: i64,
        rules: &CountingRules,
    ) -> Result<(RecordBatch, Rows)> {
        let min_watch = i32::try_from(rules.billable_min_watch_seconds).unwrap_or(i32::MAX);
        let cap = rules.fraud_cap_per_user_video_day as usize;
        let billable = |w: &Winner| w.eligible && w.watch_seconds >= min_watch;
        let day = |w: &Winner| w.occurred_at.div_euclid(DAY_US) as i32;

        // Billable views per (user, video, day); only groups over the cap
        // need ordering.
        let mut per_day: HashMap<(u32, u32, i32), u32, RandomState> =
            HashMap::with_hasher(self.state.clone());
        for w in self.winners.iter().filter(|w| billable(w)) {
            *per_day.entry((w.user, w.video, day(w))).or_default() += 1;
        }
        // (user, video, day), occurred_at, event id, winner.
        type Ranked = ((u32, u32, i32), i64, [u64; 2], u32);
        let mut over: Vec<Ranked> = self
            .winners
            .iter()
            .enumerate()
            .filter(|(_, w)| billable(w))
            .filter_map(|(n, w)| {
                let key = (w.user, w.video, day(w));
                (per_day.get(&key).copied().unwrap_or(0) as usize > cap).then_some((
                    key,
                    w.occurred_at,
                    w.id,
                    n as u32,
                ))
            })
            .collect();
        drop(per_day);
        over.sort_unstable();
        let mut fraud = vec![false; self.winners.len()];
        for group in over.chunk_by(|a, b| a.0 == b.0) {
            for &(_, _, _, n) in group.iter().skip(cap) {
                fraud[n as usize] = true;
            }
        }

        #[derive(Default)]
        struct Agg {
            views: i64,
            billable: i64,
            fraud: i64,
            watch: i64,
            sketch: Sketch,
        }
        let mut groups: HashMap<(u32, i64), Agg, RandomState> =
            HashMap::with_hasher(self.state.clone());
        for (n, w) in self.winners.iter().enumerate() {
            if w.occurred_at < from_us || w.occurred_at >= to_us {
                continue;
            }
            let hour = w.occurred_at - w.occurred_at.rem_euclid(HOUR_US);
            let g = groups.entry((w.video, hour)).or_default();
            g.views += 1;
            if billable(w) {
                if fraud[n] {
                    g.fraud += 1;
                } else {
                    g.billable += 1;
                }
            }
            g.watch += i64::from(w.watch_seconds);
            g.sketch.insert_hash(self.user_sketch_hash[w.user as usize]);
        }
        let mut out: Vec<((u32, i64), Agg)> = groups.into_iter().collect();
        let videos = &self.videos.names;
        out.sort_unstable_by(|a, b| {
            videos[a.0.0 as usize]
                .cmp(&videos[b.0.0 as usize])
                .then(a.0.1.cmp(&b.0.1))
        });
        let views = views_batch(out.iter().map(|((v, hour), g)| ViewRow {
            video_id: &videos[*v as usize],
            hour_us: *hour,
            views: g.views,
            billable_views: g.billable,
            fraud_filtered: g.fraud,
            watch_seconds: g.watch,
            sketch: g.sketch.to_bytes(),
        }))?;
        let mut rows = Rows {
            input: self.input_rows,
            invalid: self.input_rows - self.valid_rows,
            duplicates: self.valid_rows - self.winners.len() as u64,
            conflicting_ids: self.winners.iter().filter(|w| w.conflicting).count() as u64,
            ..Rows::default()
        };
        for (_, g) in &out {
            rows.views += g.views as u64;
            rows.billable_views += g.billable as u64;
            rows.fraud_filtered += g.fraud as u64;
            rows.output += 1;
        }
        Ok((views, rows))
    }
}
