//! The native counting engine: the compute step of `batch run`, exact,
//! deterministic, reading every input once and using every core.
//!
//! Each input file is fetched once: its SHA-256 (recorded in the manifest)
//! and the rows counted come from the same bytes, so a manifest names exactly
//! what was counted even if a file changed during the run. Three parallel
//! phases, each a set of independent tasks taken by one thread per core:
//!
//! 1. **read**: per file, fetch, checksum, decode and re-validate; the valid
//!    rows' keys go to one of [`SHARDS`] shards by a hash of the event id.
//!    Each reader numbers the video ids it sees in its own dictionary (while
//!    the strings are in cache); the dictionaries are merged into global
//!    numbers when every file is read. Users are known by their sketch hash
//!    (and, where the fraud cap needs exact ids, by the decoded string).
//! 2. **dedup**: per shard, keep the first copy of every event id (a hash
//!    table keyed by the 128-bit id); winners go to one of [`BUCKETS`]
//!    buckets by video number.
//! 3. **count**: per bucket (so every view of a video is in one task), the
//!    fraud cap per (user, video, day), then views, billable views,
//!    fraud-filtered views, watch seconds and a viewer sketch per
//!    video-hour. Rows are then sorted by (video, hour).
//!
//! Semantics, shared with the SQL engine ([`crate::sql`]), which a test holds
//! byte-identical to this one:
//! - a row counts only if it passes re-validation
//!   ([`schemas::archive::RawColumns::is_valid`]);
//! - of the copies of an event id, the one received first wins (then lowest
//!   Kafka partition, offset and payload fingerprint: the one rule of
//!   [`schemas::dedup`]); an id whose copies carry different payloads is a
//!   conflicting id;
//! - billable = `revenue_eligible` and `watch_seconds >= min`; per user,
//!   video and UTC day, billable views beyond the cap (in `occurred_at`, then
//!   `event_id` order) are fraud-filtered;
//! - per video and hour of `occurred_at` within the range: views, billable
//!   views, fraud-filtered views, watch seconds, and a viewer sketch.
//!
//! Memory ([`crate::memory`]): in memory, about 160 bytes of peak RSS per
//! valid row of the days read (its keys, and its user id in the decoded
//! arrays), plus the distinct video ids. When the rows read pass half the
//! limit, the readers spill them ([`crate::spill`]) with their user ids to
//! local files by event id hash (each shard split further, so that the
//! partitions worked on at once fit the limit and each fits in cache);
//! what they still hold at the end stays in memory; dedup then takes one
//! partition at a time, from disk and memory, and spills its winners by
//! (video, day), in records of only what counting reads (user and event
//! ids only for billable rows), and counting takes one of those at a
//! time. Every partition holds whole event ids, and whole (video, day)s, so the output is the same
//! bytes as in memory; as many partitions are worked on at once as the
//! limit holds (at least one).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::{Array, RecordBatch, StringArray};
use foldhash::fast::RandomState;
use hashbrown::{HashMap, HashTable};
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use schemas::RuleSet;
use schemas::archive::RawColumns;
use schemas::dedup::event_key;
use schemas::fraud::{FraudRule, in_dense_window, span_day};

use crate::memory::{Budget, Memory};
use crate::rows::{BATCH_ROWS, Blocks, ROW_BYTES, Row, placed, row_at};
use crate::spill::{Spill, Stage, encode, encode_winner};
use crate::{Error, Result};
use store::filtered::FilteredRow;
use store::manifest::{Input, Rows, Step};
use store::sketch::{Sketch, value_hash};
use store::views::{ViewRow, views_batch};
use telemetry::process::{peak_rss, reset_peak_rss};

const HOUR_US: i64 = 3_600_000_000;
const DAY_US: i64 = 24 * HOUR_US;

/// Dedup tasks (by event id).
pub const SHARDS: usize = 64;
/// Count tasks (by video id).
pub const BUCKETS: usize = 64;

/// What a run computed.
#[derive(Debug)]
pub(crate) struct Counted {
    /// The inputs read, in the order given, with their checksums.
    pub inputs: Vec<Input>,
    /// The views table, sorted by (video, hour).
    pub views: RecordBatch,
    /// Filtered views by rule, sorted by (video, hour, rule).
    pub filtered: Vec<FilteredRow>,
    /// Row counts.
    pub rows: Rows,
    /// Each phase: wall time, memory, spill.
    pub steps: Vec<Step>,
    /// The billable views asked for ([`Wanted`]), unsorted.
    pub evidence: Vec<Decided>,
    /// Video names by global number (what [`Decided::video`] indexes).
    pub video_names: Vec<Box<str>>,
}

/// Billable views a count also lists one by one (the evidence behind a
/// statement line): those of `videos` occurring in `[from_us, to_us)`.
#[derive(Debug, Clone)]
pub(crate) struct Wanted {
    pub videos: std::collections::BTreeSet<String>,
    pub from_us: i64,
    pub to_us: i64,
}

/// One billable view as the rules decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decided {
    /// The event id ([`event_key`] form).
    pub id: [u64; 2],
    /// Global video number ([`Counted`]'s `video_names`).
    pub video: u32,
    /// `occurred_at`, µs.
    pub occurred_at: i64,
    /// The rule that removed it, if one did.
    pub rule: Option<FraudRule>,
}

/// [`Wanted`] in the numbers of one count, and what its buckets found.
struct Evidence {
    /// Per global video: whether it is wanted.
    videos: Vec<bool>,
    from_us: i64,
    to_us: i64,
    found: Mutex<Vec<Decided>>,
}

impl Evidence {
    fn new(wanted: &Wanted, ids: &Ids) -> Self {
        Self {
            videos: ids
                .videos
                .iter()
                .map(|v| wanted.videos.contains(&**v))
                .collect(),
            from_us: wanted.from_us,
            to_us: wanted.to_us,
            found: Mutex::new(Vec::new()),
        }
    }
}

/// Progress of a count: `(step, done, total)`.
pub(crate) type ProgressTx = tokio::sync::mpsc::UnboundedSender<(&'static str, u64, u64)>;

/// Rows of a spill partition at most (if [`crate::spill::MAX_SPLIT`]
/// allows): dedup's hash table and counting's groups then stay in cache
/// as an in-memory shard's do at ten million rows. On the 100 M-row
/// benchmark day, 16 partitions per shard instead of 1 took dedup from
/// 38.5 s to 28.9 s: its cost was cache misses in the hash table.
const PARTITION_ROWS: usize = 1 << 17;

/// Bytes per row a dedup task holds beyond its rows: its table, and the
/// winners' copies.
const DEDUP_BYTES: u64 = ROW_BYTES + 12;
/// Bytes per row a count task holds beyond its rows: groups, ranks, marks.
const COUNT_BYTES: u64 = 40;
/// Bytes per valid row of a partition being worked on (rows, user ids and
/// the task's own), to size partitions when spilling.
const WORKING_BYTES: u64 = ROW_BYTES + 24 + DEDUP_BYTES;

/// Distinct strings, numbered in order of first sight.
#[derive(Default)]
struct Dict {
    names: Vec<Box<str>>,
    table: HashTable<u32>,
}

impl Dict {
    fn id(&mut self, state: &RandomState, s: &str) -> u32 {
        let hash = state.hash_one(s);
        let names = &mut self.names;
        if let Some(&n) = self.table.find(hash, |&n| &*names[n as usize] == s) {
            return n;
        }
        let n = names.len() as u32;
        names.push(s.into());
        self.table
            .insert_unique(hash, n, |&m| state.hash_one(&*names[m as usize]));
        n
    }
}

/// The readers' dictionaries merged: global names, and each reader's
/// numbers translated.
struct Ids {
    videos: Vec<Box<str>>,
    /// Per global video: its rank in name order (output order).
    video_rank: Vec<u32>,
    /// Per reader: local video number → global.
    video_of: Vec<Vec<u32>>,
    /// Every decoded `user_id` column, by chunk number.
    user_ids: Vec<StringArray>,
}

impl Ids {
    fn merge(dicts: Vec<Dict>, user_ids: Vec<StringArray>, state: &RandomState) -> Self {
        let mut videos = Dict::default();
        let video_of = dicts
            .iter()
            .map(|d| d.names.iter().map(|n| videos.id(state, n)).collect())
            .collect();
        let mut order: Vec<u32> = (0..videos.names.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| videos.names[a as usize].cmp(&videos.names[b as usize]));
        let mut video_rank = vec![0; order.len()];
        for (rank, &v) in order.iter().enumerate() {
            video_rank[v as usize] = rank as u32;
        }
        Self {
            videos: videos.names,
            video_rank,
            video_of,
            user_ids,
        }
    }
}

/// Runs `task(i)` for `i in 0..tasks` on `threads` threads; results in order.
fn parallel<T: Send>(threads: usize, tasks: usize, task: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<T>>> = Mutex::new((0..tasks).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.min(tasks) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= tasks {
                        break;
                    }
                    let out = task(i);
                    if let Ok(mut d) = done.lock() {
                        d[i] = Some(out);
                    }
                }
            });
        }
    });
    done.into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

/// Takes the value out of a task slot (each slot is taken by one task).
fn take<T: Default>(slot: &Mutex<T>) -> T {
    std::mem::take(&mut *slot.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Reads `files` (sorted) and counts hours `[from_us, to_us)` with `rules`,
/// within `memory`. Blocking: call it from a blocking thread. Reads run on
/// `io`, the runtime the store was opened on: a remote store's connection
/// pool belongs to it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn count(
    io: &tokio::runtime::Handle,
    store: Arc<dyn ObjectStore>,
    files: &[ObjectMeta],
    from_us: i64,
    to_us: i64,
    rules: &RuleSet,
    memory: &Memory,
    wanted: Option<&Wanted>,
    progress: &ProgressTx,
) -> Result<Counted> {
    let work = Work::new(memory, progress);
    let mut steps = Steps::start(&work.budget, &work.spill);

    let read = read(io, store, files, rules, &work)?;
    steps.done("reading");

    let ids = Ids::merge(read.dicts, read.user_ids, &work.state);
    let evidence = wanted.map(|w| Evidence::new(w, &ids));
    let evidence = evidence.as_ref();
    let hours = UserHours::new(rules);
    let (tally, out) = if work.spill.active() {
        let memory = work.shard_parts(read.shards);
        let tally = work.dedup_spilled(&ids, memory, min_watch(rules), &hours)?;
        let per_user = hours.over(rules, &work);
        steps.done("deduplicating");
        (
            tally,
            work.count_spilled(&ids, from_us, to_us, rules, &per_user, evidence)?,
        )
    } else {
        let (tally, buckets) = work.dedup_in_memory(read.shards, &ids, &hours);
        let per_user = hours.over(rules, &work);
        steps.done("deduplicating");
        (
            tally,
            work.count_in_memory(buckets, &ids, from_us, to_us, rules, &per_user, evidence),
        )
    };
    let mut out: Vec<Out<'_>> = out.into_iter().flatten().collect();
    out.sort_unstable_by_key(|(rank, r, _)| (*rank, r.hour_us));
    let mut filtered = Vec::new();
    for (_, r, by_rule) in &out {
        for (rule, &views) in FraudRule::ALL.iter().zip(by_rule) {
            if views > 0 {
                filtered.push(FilteredRow {
                    video_id: r.video_id.to_owned(),
                    hour_us: r.hour_us,
                    rule: *rule,
                    views,
                });
            }
        }
    }
    let out: Vec<ViewRow<'_>> = out.into_iter().map(|(_, r, _)| r).collect();
    let mut rows = Rows {
        input: read.input_rows,
        invalid: read.input_rows - tally.valid,
        duplicates: tally.valid - tally.winners,
        conflicting_ids: tally.conflicting,
        ..Rows::default()
    };
    for r in &out {
        rows.views += r.views as u64;
        rows.billable_views += r.billable_views as u64;
        rows.fraud_filtered += r.fraud_filtered as u64;
        rows.output += 1;
    }
    let views = views_batch(out.into_iter())?;
    steps.done("counting");
    let evidence = evidence.map_or_else(Vec::new, |e| take(&e.found));
    Ok(Counted {
        inputs: read.inputs,
        views,
        filtered,
        rows,
        steps: steps.list,
        evidence,
        video_names: ids.videos,
    })
}

/// Copies removed by dedup, per (video, hour): see [`removed_copies`].
pub(crate) type RemovedCopies = Vec<((String, i64), [u64; 2])>;

/// Reads `files` as [`count`] does and returns, per (video, hour of
/// `occurred_at`), the copies of event ids dedup removes that the speed
/// layer counts as views of their own: `[conflicting, late]`. Conflicting:
/// another payload than the winner's, in another Kafka partition or on
/// another occurred-at day (speed dedups per partition and day, so it
/// cannot match them). Late: the winner's payload, received more than
/// `window_us` after it (speed has forgotten the id). The same read, dedup
/// and memory limit as a run, so what reconcile calls removed is exactly
/// what batch removed. Sorted by (video, hour).
#[allow(clippy::too_many_arguments)]
pub(crate) fn removed_copies(
    io: &tokio::runtime::Handle,
    store: Arc<dyn ObjectStore>,
    files: &[ObjectMeta],
    rules: &RuleSet,
    memory: &Memory,
    window_us: i64,
    progress: &ProgressTx,
) -> Result<(Vec<Input>, RemovedCopies)> {
    let work = Work::new(memory, progress);
    let (budget, spill, state) = (&work.budget, &work.spill, &work.state);
    let read = read(io, store, files, rules, &work)?;
    let ids = Ids::merge(read.dicts, read.user_ids, state);
    // One split (and every core) when nothing spilled.
    let parts = SHARDS * spill.split();
    let shards = work.shard_parts(read.shards);
    let threads = work.threads_for(Stage::Shards, parts, 3);
    let done = AtomicU64::new(0);
    let found = parallel(threads, parts, |p| -> Result<_> {
        let (rows, _, held) = work.partition(p, &shards)?;
        let out = removed(&rows, &ids, state, window_us);
        budget.sub(held);
        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
        let _ = progress.send(("deduplicating", n, parts as u64));
        Ok(out)
    });
    let mut all: HashMap<(u32, i64), [u64; 2], RandomState> = HashMap::with_hasher(state.clone());
    for shard in found {
        for (k, v) in shard? {
            let e = all.entry(k).or_default();
            e[0] += v[0];
            e[1] += v[1];
        }
    }
    let mut out: RemovedCopies = all
        .into_iter()
        .map(|((v, hour), n)| ((ids.videos[v as usize].to_string(), hour), n))
        .collect();
    out.sort_unstable();
    Ok((read.inputs, out))
}

/// The engine's steps as they finish: wall time, the process's peak RSS
/// and the engine's accounted peak during each, and what each spilled.
struct Steps<'a> {
    budget: &'a Budget,
    spill: &'a Spill,
    clock: Instant,
    spilled: u64,
    list: Vec<Step>,
}

impl<'a> Steps<'a> {
    fn start(budget: &'a Budget, spill: &'a Spill) -> Self {
        reset_peak_rss();
        budget.take_peak();
        Self {
            budget,
            spill,
            clock: Instant::now(),
            spilled: 0,
            list: Vec::new(),
        }
    }

    fn done(&mut self, name: &str) {
        let spilled = self.spill.written();
        self.list.push(Step {
            peak_rss_bytes: peak_rss(),
            memory_bytes: Some(self.budget.take_peak()),
            spilled_bytes: Some(spilled - self.spilled),
            ..Step::timed(name, self.clock.elapsed().as_secs_f64())
        });
        self.spilled = spilled;
        reset_peak_rss();
        self.clock = Instant::now();
    }
}

/// Row counts of dedup.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    valid: u64,
    winners: u64,
    conflicting: u64,
}

impl std::ops::Add for Tally {
    type Output = Tally;
    fn add(self, o: Tally) -> Tally {
        Tally {
            valid: self.valid + o.valid,
            winners: self.winners + o.winners,
            conflicting: self.conflicting + o.conflicting,
        }
    }
}

/// What every phase shares.
struct Work<'a> {
    budget: Budget,
    spill: Spill,
    state: RandomState,
    threads: usize,
    progress: &'a ProgressTx,
}

impl<'a> Work<'a> {
    /// Every core, within `memory`.
    fn new(memory: &Memory, progress: &'a ProgressTx) -> Self {
        Self {
            budget: Budget::new(memory.limit),
            spill: Spill::new(memory.spill_dir.as_deref(), SHARDS),
            state: RandomState::default(),
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            progress,
        }
    }

    /// Phase 2 with every row in memory.
    fn dedup_in_memory(
        &self,
        shards: Vec<Vec<Blocks>>,
        ids: &Ids,
        hours: &UserHours,
    ) -> (Tally, Vec<Vec<Blocks>>) {
        let shards: Vec<Mutex<Vec<Blocks>>> = shards.into_iter().map(Mutex::new).collect();
        let done = AtomicU64::new(0);
        let deduped = parallel(self.threads, SHARDS, |s| {
            let parts = take(&shards[s]);
            let held: u64 = parts.iter().map(Blocks::bytes).sum();
            let valid: u64 = parts.iter().map(|p| p.len() as u64).sum();
            self.budget.add(valid * DEDUP_BYTES);
            let mut buckets: Vec<Blocks> = (0..BUCKETS).map(|_| Blocks::default()).collect();
            let mut watched = hours.local();
            let tally = dedup(parts, ids, &self.state, |w| {
                hours.add(&mut watched, &w);
                buckets[w.video as usize % BUCKETS].push(w);
            });
            hours.merge(watched, &self.budget);
            let kept: u64 = buckets.iter().map(Blocks::bytes).sum();
            self.budget.add(kept);
            self.budget.sub(held + valid * DEDUP_BYTES);
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            let _ = self.progress.send(("deduplicating", n, SHARDS as u64));
            (tally, buckets)
        });
        let mut tally = Tally::default();
        let mut buckets: Vec<Vec<Blocks>> = (0..BUCKETS).map(|_| Vec::new()).collect();
        for (t, shard) in deduped {
            tally = tally + t;
            for (b, rows) in shard.into_iter().enumerate() {
                buckets[b].push(rows);
            }
        }
        (tally, buckets)
    }

    /// Phase 3 with every winner in memory.
    #[allow(clippy::too_many_arguments)]
    fn count_in_memory<'s>(
        &self,
        buckets: Vec<Vec<Blocks>>,
        ids: &'s Ids,
        from_us: i64,
        to_us: i64,
        rules: &RuleSet,
        per_user: &PerUser,
        evidence: Option<&Evidence>,
    ) -> Vec<Vec<Out<'s>>> {
        let buckets: Vec<Mutex<Vec<Blocks>>> = buckets.into_iter().map(Mutex::new).collect();
        let done = AtomicU64::new(0);
        parallel(self.threads, BUCKETS, |b| {
            let parts = take(&buckets[b]);
            let held: u64 = parts.iter().map(Blocks::bytes).sum();
            let rows: u64 = parts.iter().map(|p| p.len() as u64).sum();
            self.budget.add(rows * COUNT_BYTES);
            let out = count_bucket(
                parts,
                &ids.user_ids,
                ids,
                from_us,
                to_us,
                rules,
                &self.state,
                per_user,
                evidence,
            );
            self.budget.sub(held + rows * COUNT_BYTES);
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            let _ = self.progress.send(("counting", n, BUCKETS as u64));
            out
        })
    }

    /// Phase 2 from spill files: a shard partition at a time, its winners
    /// spilled by (video, day) in bucket records (keyed if billable).
    fn dedup_spilled(
        &self,
        ids: &Ids,
        memory: MemoryParts,
        min_watch: i32,
        hours: &UserHours,
    ) -> Result<Tally> {
        let parts = SHARDS * self.spill.split();
        let buckets = BUCKETS * self.spill.split();
        // Its rows and user ids (about the file's size), its table and the
        // winners' copies (about as much again), and room to spare.
        let threads = self.threads_for(Stage::Shards, parts, 3);
        let done = AtomicU64::new(0);
        let results = parallel(threads, parts, |p| -> Result<Tally> {
            let (rows_of, users, held) = self.partition(p, &memory)?;
            let valid: u64 = rows_of.iter().map(|r| r.len() as u64).sum();
            let extra = valid * DEDUP_BYTES;
            self.budget.add(extra);
            // About the bytes of a winner's record, for a partition's
            // share of each bucket.
            let each = (valid as usize * 48 / buckets).max(64);
            let mut records: Vec<Vec<u8>> =
                (0..buckets).map(|_| Vec::with_capacity(each)).collect();
            let mut watched = hours.local();
            let tally = dedup(rows_of, ids, &self.state, |w| {
                hours.add(&mut watched, &w);
                let user = w.billable(min_watch).then(|| match memory_chunk(w.chunk) {
                    Some(chunk) => ids.user_ids[chunk].value(usize::from(w.row)),
                    None => users[w.chunk as usize].value(usize::from(w.row)),
                });
                encode_winner(&w, user, &mut records[bucket_of_video_day(&w, buckets)]);
            });
            hours.merge(watched, &self.budget);
            for (b, r) in records.iter().enumerate() {
                self.spill.append_buffered(Stage::Buckets, b, r)?;
            }
            self.budget.sub(held + extra);
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            let _ = self.progress.send(("deduplicating", n, parts as u64));
            Ok(tally)
        });
        let tally = results
            .into_iter()
            .try_fold(Tally::default(), |sum, t| -> Result<Tally> { Ok(sum + t?) })?;
        self.spill.flush(Stage::Buckets)?;
        Ok(tally)
    }

    /// Phase 3 from spill files: a (video, day) partition at a time.
    #[allow(clippy::too_many_arguments)]
    fn count_spilled<'s>(
        &self,
        ids: &'s Ids,
        from_us: i64,
        to_us: i64,
        rules: &RuleSet,
        per_user: &PerUser,
        evidence: Option<&Evidence>,
    ) -> Result<Vec<Vec<Out<'s>>>> {
        let buckets = BUCKETS * self.spill.split();
        let threads = self.threads_for(Stage::Buckets, buckets, 2);
        let done = AtomicU64::new(0);
        parallel(threads, buckets, |b| {
            let (rows, users, held) = self.spill.load(Stage::Buckets, b, &self.budget)?;
            let extra = rows.len() as u64 * COUNT_BYTES;
            self.budget.add(extra);
            let out = count_bucket(
                vec![rows],
                &users,
                ids,
                from_us,
                to_us,
                rules,
                &self.state,
                per_user,
                evidence,
            );
            self.budget.sub(held + extra);
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            let _ = self.progress.send(("counting", n, buckets as u64));
            Ok(out)
        })
        .into_iter()
        .collect()
    }

    /// The rows the readers still hold, by shard-stage partition: as read
    /// if nothing spilled; else as [`Reader::spill_rows`] would have
    /// written them, their user-id chunks marked as the readers'
    /// ([`memory_chunk`]).
    fn shard_parts(&self, shards: Vec<Vec<Blocks>>) -> MemoryParts {
        if !self.spill.active() {
            return shards.into_iter().map(Mutex::new).collect();
        }
        let split = self.spill.split();
        let shards: Vec<Mutex<Vec<Blocks>>> = shards.into_iter().map(Mutex::new).collect();
        let parts = parallel(self.threads, SHARDS, |s| {
            let held = take(&shards[s]);
            let mut subs: Vec<Blocks> = (0..split).map(|_| Blocks::default()).collect();
            let mut grew = 0;
            for r in held.iter().flat_map(Blocks::iter) {
                let mut r = *r;
                r.chunk |= MEMORY_CHUNK;
                grew += subs[sub_partition(&self.state, r.id, split)].push(r) as u64;
            }
            self.budget.add(grew);
            self.budget.sub(held.iter().map(Blocks::bytes).sum());
            subs
        });
        parts
            .into_iter()
            .flatten()
            .map(|b| Mutex::new(vec![b]))
            .collect()
    }

    /// Shard-stage partition `p` whole: its rows still in memory (taken
    /// from `memory`) and, if the spill is active, its file's; the file's
    /// user-id chunks; and the bytes both hold, to give back to the budget.
    fn partition(
        &self,
        p: usize,
        memory: &MemoryParts,
    ) -> Result<(Vec<Blocks>, Vec<StringArray>, u64)> {
        let mut rows = take(&memory[p]);
        let mut held: u64 = rows.iter().map(Blocks::bytes).sum();
        if !self.spill.active() {
            return Ok((rows, Vec::new(), held));
        }
        let (loaded, users, file) = self.spill.load(Stage::Shards, p, &self.budget)?;
        rows.push(loaded);
        held += file;
        Ok((rows, users, held))
    }

    /// How many partitions of `stage` fit in the limit at once: a task
    /// holds about `factor` times its file's size.
    fn threads_for(&self, stage: Stage, parts: usize, factor: u64) -> usize {
        let largest = (0..parts)
            .map(|p| self.spill.size(stage, p))
            .max()
            .unwrap_or(0);
        let each = largest.saturating_mul(factor).max(1);
        usize::try_from(self.budget.limit() / each)
            .unwrap_or(usize::MAX)
            .clamp(1, self.threads)
    }
}

/// Per spill partition of the shard stage, the rows still in memory.
type MemoryParts = Vec<Mutex<Vec<Blocks>>>;

/// Marks a row's `chunk` as one of the readers' user-id chunks
/// ([`Ids::user_ids`]) rather than its loaded partition's.
const MEMORY_CHUNK: u32 = 1 << 31;

/// The readers' chunk a row's user id is in, if it is one of theirs.
fn memory_chunk(chunk: u32) -> Option<usize> {
    (chunk & MEMORY_CHUNK != 0).then_some((chunk & !MEMORY_CHUNK) as usize)
}

/// Which of a shard's `split` spill partitions an event id goes to (the
/// shard is chosen by other bits of the same hash).
fn sub_partition(state: &RandomState, id: [u64; 2], split: usize) -> usize {
    let bits = (SHARDS * split).trailing_zeros();
    (state.hash_one(id) >> (64 - bits)) as usize & (split - 1)
}

/// The spilled winners' partition: every row of a (video, UTC day) in one,
/// so the fraud cap and the hours of a video-day are counted together, and
/// a popular video's days spread out.
fn bucket_of_video_day(r: &Row, buckets: usize) -> usize {
    let day = r.occurred_at.div_euclid(DAY_US) as u64;
    let mixed =
        (u64::from(r.video) << 32 | (day & 0xffff_ffff)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mixed >> 32) as usize % buckets
}

/// Phase 1's result.
struct Read {
    inputs: Vec<Input>,
    /// Per shard, the rows of each reader (empty if they were spilled).
    shards: Vec<Vec<Blocks>>,
    /// Per reader, its video dictionary.
    dicts: Vec<Dict>,
    /// Every decoded `user_id` column, by chunk number (empty if spilled).
    user_ids: Vec<StringArray>,
    input_rows: u64,
}

/// How far the readers are: to estimate the days' rows at the first spill.
struct Totals {
    /// Bytes of every input.
    bytes: u64,
    /// Bytes of the files opened so far.
    opened: AtomicU64,
    /// Rows of the files opened so far (from their footers).
    rows: AtomicU64,
}

/// Phase 1: every file fetched, checksummed, decoded and re-validated once.
fn read(
    io: &tokio::runtime::Handle,
    store: Arc<dyn ObjectStore>,
    files: &[ObjectMeta],
    rules: &RuleSet,
    work: &Work<'_>,
) -> Result<Read> {
    let threads = work.threads;
    let totals = Totals {
        bytes: files.iter().map(|m| m.size).sum(),
        opened: AtomicU64::new(0),
        rows: AtomicU64::new(0),
    };
    let next = AtomicUsize::new(0);
    let abort = AtomicBool::new(false);
    let read_bytes = AtomicU64::new(0);
    let input_rows = AtomicU64::new(0);
    let inputs: Mutex<Vec<Option<Input>>> = Mutex::new(vec![None; files.len()]);
    let user_ids: Mutex<Vec<StringArray>> = Mutex::new(Vec::new());
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let fail = |e: Error| {
        abort.store(true, Ordering::Relaxed);
        if let Ok(mut slot) = first_error.lock() {
            slot.get_or_insert(e);
        }
    };
    let readers = parallel(threads.min(files.len().max(1)), threads, |index| {
        let mut reader = Reader {
            store: store.clone(),
            rules,
            io,
            work,
            totals: &totals,
            index: index as u16,
            videos: Dict::default(),
            user_ids: &user_ids,
            own_chunks: Vec::new(),
            held: 0,
            shards: (0..SHARDS).map(|_| Blocks::default()).collect(),
            input_rows: 0,
            scratch: Vec::with_capacity(256),
        };
        while !abort.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(meta) = files.get(i) else { break };
            match reader.file(meta) {
                Ok(input) => {
                    let done = read_bytes.fetch_add(input.size, Ordering::Relaxed) + input.size;
                    let _ = work.progress.send(("reading inputs", done, totals.bytes));
                    if let Ok(mut all) = inputs.lock() {
                        all[i] = Some(input);
                    }
                }
                Err(e) => fail(e),
            }
        }
        input_rows.fetch_add(reader.input_rows, Ordering::Relaxed);
        reader
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    // Once one reader spilled, dedup and counting go partition by
    // partition; what the readers still hold stays in memory and joins
    // its partition there (see [`Work::shard_parts`]) instead of taking
    // a round trip through disk.
    let inputs = inputs
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .zip(files)
        .map(|(i, m)| i.ok_or_else(|| Error::Input(format!("{} was not read", m.location))))
        .collect::<Result<Vec<_>>>()?;
    let mut shards: Vec<Vec<Blocks>> = (0..SHARDS).map(|_| Vec::new()).collect();
    let mut dicts = Vec::new();
    // Reader numbers are task indices.
    for (index, reader) in readers.into_iter().enumerate() {
        debug_assert_eq!(usize::from(reader.index), index);
        for (s, rows) in reader.shards.into_iter().enumerate() {
            shards[s].push(rows);
        }
        dicts.push(reader.videos);
    }
    Ok(Read {
        inputs,
        shards,
        dicts,
        user_ids: user_ids.into_inner().unwrap_or_else(|p| p.into_inner()),
        input_rows: input_rows.into_inner(),
    })
}

struct Reader<'a> {
    store: Arc<dyn ObjectStore>,
    /// Which rows are valid.
    rules: &'a RuleSet,
    /// The runtime that drives object store reads.
    io: &'a tokio::runtime::Handle,
    work: &'a Work<'a>,
    totals: &'a Totals,
    index: u16,
    videos: Dict,
    /// Every reader's decoded user ids, by chunk number.
    user_ids: &'a Mutex<Vec<StringArray>>,
    /// The chunks this reader's rows in memory point into.
    own_chunks: Vec<u32>,
    /// Bytes this reader's rows and chunks hold.
    held: u64,
    shards: Vec<Blocks>,
    input_rows: u64,
    /// The payload encoding of the row being fingerprinted.
    scratch: Vec<u8>,
}

impl Reader<'_> {
    /// Fetches, checksums, decodes and shards one file.
    fn file(&mut self, meta: &ObjectMeta) -> Result<Input> {
        let path = meta.location.to_string();
        let bytes = self.io.block_on(async {
            Ok::<_, Error>(self.store.get(&meta.location).await?.bytes().await?)
        })?;
        let in_flight = bytes.len() as u64;
        self.work.budget.add(in_flight);
        let input = Input {
            path: path.clone(),
            size: bytes.len() as u64,
            sha256: store::layout::sha256(&bytes),
        };
        let damaged = |e: &dyn std::fmt::Display| {
            Error::Corrupt(format!(
                "raw file {path} cannot be read: {e}; restore it from a backup, or move it aside and re-archive its offsets"
            ))
        };
        let decoded = (|| {
            let builder =
                ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| damaged(&e))?;
            let rows = builder.metadata().file_metadata().num_rows();
            self.totals
                .rows
                .fetch_add(rows.max(0) as u64, Ordering::Relaxed);
            self.totals.opened.fetch_add(in_flight, Ordering::Relaxed);
            let reader = builder
                .with_batch_size(BATCH_ROWS)
                .build()
                .map_err(|e| damaged(&e))?;
            for batch in reader {
                let batch = batch.map_err(|e| damaged(&e))?;
                self.batch(&batch).map_err(|e| damaged(&e))?;
                if self.work.budget.used() > self.work.budget.limit() / 2 {
                    self.spill_rows()?;
                }
            }
            Ok(())
        })();
        self.work.budget.sub(in_flight);
        decoded.map(|()| input)
    }

    fn batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let c = RawColumns::new(batch)?;
        self.input_rows += c.len() as u64;
        let chunk = {
            let mut all = self.user_ids.lock().unwrap_or_else(|p| p.into_inner());
            all.push(c.user_id.clone());
            (all.len() - 1) as u32
        };
        self.own_chunks.push(chunk);
        let mut held = c.user_id.get_array_memory_size() as u64;
        let state = &self.work.state;
        // Fingerprints group the bot farm's views and the metronome's.
        let farms = self.rules.bot_farm_accounts > 0 || self.rules.metronome_views > 0;
        let min_watch = min_watch(self.rules);
        let replays = self.rules.token_replay_views > 0;
        for i in 0..c.len() {
            let Some(id) = c.valid_event_id(i, self.rules) else {
                continue;
            };
            let key = event_key(id);
            let (watch_seconds, eligible) = (c.watch_seconds.value(i), c.revenue_eligible.value(i));
            let billable = eligible && watch_seconds >= min_watch;
            let print = if farms && billable {
                c.print(i, &mut self.scratch)
            } else {
                0
            };
            let playback = if replays && billable {
                c.verified_playback_id(i)
                    .map(|id| value_hash(id.as_bytes()))
            } else {
                None
            };
            let video = self.videos.id(state, c.video_id.value(i));
            let id_hash = state.hash_one(key);
            held += self.shards[(id_hash >> 58) as usize % SHARDS].push(Row {
                id: key,
                fp: c.payload(i).fingerprint_with(&mut self.scratch),
                received_at: c.received_at.value(i),
                offset: c.kafka_offset.value(i),
                occurred_at: c.occurred_at.value(i),
                partition: c.kafka_partition.value(i),
                watch_seconds,
                video,
                user_hash: value_hash(c.user_id.value(i).as_bytes()),
                print,
                chunk,
                row: i as u16,
                reader: self.index,
                eligible,
                zero_ads: c.ad_impressions.value(i) == 0,
                playback: playback.unwrap_or(0),
                verified: playback.is_some(),
            }) as u64;
        }
        self.held += held;
        self.work.budget.add(held);
        Ok(())
    }

    /// Writes this reader's rows in memory to the shard spill files, with
    /// their user ids, and lets go of them. The first spill of the run sets
    /// how many files a shard is split into, from an estimate of the days'
    /// rows (those of the files opened so far, in proportion to their
    /// bytes): enough that the partitions worked on at once fit the limit,
    /// and that each is small enough to work on in cache.
    fn spill_rows(&mut self) -> Result<()> {
        let (work, totals) = (self.work, self.totals);
        let opened = totals.opened.load(Ordering::Relaxed).max(1);
        let rows = totals.rows.load(Ordering::Relaxed);
        let estimate = rows as f64 * (totals.bytes.max(opened) as f64 / opened as f64);
        let fits = 2.0 * estimate * (WORKING_BYTES * work.threads as u64) as f64
            / (work.budget.limit() as f64 * SHARDS as f64);
        let in_cache = estimate / (SHARDS * PARTITION_ROWS) as f64;
        let split = work.spill.start(fits.max(in_cache).ceil() as usize);
        let users: Vec<StringArray> = self
            .user_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let min_watch = min_watch(self.rules);
        let mut records: Vec<Vec<u8>> = vec![Vec::new(); split];
        for (s, rows) in self.shards.iter().enumerate() {
            for r in rows.iter() {
                let sub = sub_partition(&work.state, r.id, split);
                let user = if r.billable(min_watch) {
                    users[r.chunk as usize].value(usize::from(r.row))
                } else {
                    ""
                };
                encode(r, user, &mut records[sub]);
                if records[sub].len() >= 1 << 20 {
                    work.spill
                        .append(Stage::Shards, s * split + sub, &records[sub])?;
                    records[sub].clear();
                }
            }
            for (sub, r) in records.iter_mut().enumerate() {
                work.spill.append(Stage::Shards, s * split + sub, r)?;
                r.clear();
            }
        }
        drop(users);
        self.shards = (0..SHARDS).map(|_| Blocks::default()).collect();
        {
            let mut all = self.user_ids.lock().unwrap_or_else(|p| p.into_inner());
            for &c in &self.own_chunks {
                all[c as usize] = StringArray::from(Vec::<&str>::new());
            }
        }
        self.own_chunks.clear();
        work.budget.sub(self.held);
        self.held = 0;
        Ok(())
    }
}

/// The first copy of every event id among a shard's parts: a table of each
/// id's winner as its place, so rows are not copied; and how many ids have
/// copies with different payloads.
fn winners(parts: &[Blocks], state: &RandomState) -> (HashTable<u64>, u64) {
    let valid: usize = parts.iter().map(Blocks::len).sum();
    let mut table: HashTable<u64> = HashTable::with_capacity(valid);
    // Ids whose copies carry different payloads.
    let mut conflicting: hashbrown::HashSet<[u64; 2], RandomState> =
        hashbrown::HashSet::with_hasher(state.clone());
    for (pos, r) in placed(parts) {
        let hash = state.hash_one(r.id);
        match table.find_mut(hash, |&w| row_at(parts, w).id == r.id) {
            None => {
                table.insert_unique(hash, pos, |&w| state.hash_one(row_at(parts, w).id));
            }
            Some(w) => {
                let old = row_at(parts, *w);
                if old.fp != r.fp {
                    conflicting.insert(r.id);
                }
                if r.order() < old.order() {
                    *w = pos;
                }
            }
        }
    }
    (table, conflicting.len() as u64)
}

/// Phase 2: the first copy of every event id of one shard, each given to
/// `keep` with its video number global (in no particular order).
fn dedup(parts: Vec<Blocks>, ids: &Ids, state: &RandomState, mut keep: impl FnMut(Row)) -> Tally {
    let valid: usize = parts.iter().map(Blocks::len).sum();
    let (mut table, conflicting) = winners(&parts, state);
    let winners = table.len() as u64;
    for pos in table.drain() {
        let mut w = row_at(&parts, pos);
        w.video = ids.video_of[usize::from(w.reader)][w.video as usize];
        keep(w);
    }
    Tally {
        valid: valid as u64,
        winners,
        conflicting,
    }
}

/// Per (global video, hour of `occurred_at`): the copies dedup removes from
/// one shard that the speed layer counts as views of their own, as
/// `[conflicting, late]` (see [`removed_copies`]).
fn removed(
    parts: &[Blocks],
    ids: &Ids,
    state: &RandomState,
    window_us: i64,
) -> HashMap<(u32, i64), [u64; 2], RandomState> {
    let (table, _) = winners(parts, state);
    let mut out: HashMap<(u32, i64), [u64; 2], RandomState> = HashMap::with_hasher(state.clone());
    let day = |t: i64| t.div_euclid(DAY_US);
    for (pos, r) in placed(parts) {
        let found = table.find(state.hash_one(r.id), |&w| row_at(parts, w).id == r.id);
        let Some(&w) = found.filter(|&&w| w != pos) else {
            continue;
        };
        let w = row_at(parts, w);
        // Speed dedups per partition and occurred-at day: another payload
        // elsewhere is a view it cannot match; the same payload after its
        // window is one it has forgotten.
        let conflicting = r.fp != w.fp
            && (r.partition != w.partition || day(r.occurred_at) != day(w.occurred_at));
        let late = r.fp == w.fp && r.received_at - w.received_at > window_us;
        if conflicting || late {
            let video = ids.video_of[usize::from(r.reader)][r.video as usize];
            let hour = r.occurred_at - r.occurred_at.rem_euclid(HOUR_US);
            let e = out.entry((video, hour)).or_default();
            e[0] += u64::from(conflicting);
            e[1] += u64::from(late);
        }
    }
    out
}

/// The billable minimum watch time of `rules`, as a row holds watch time.
fn min_watch(rules: &RuleSet) -> i32 {
    i32::try_from(rules.billable_min_watch_seconds).unwrap_or(i32::MAX)
}

/// Filtered views of a video-hour by rule, in [`FraudRule::ALL`] order.
pub(crate) type ByRule = [i64; FraudRule::ALL.len()];

/// A counted video-hour: its video's rank in name order, its row, and its
/// filtered views by rule.
pub(crate) type Out<'s> = (u32, ViewRow<'s>, ByRule);

/// What the rules that follow a user over every video need of every winner
/// (users' views are spread over every bucket, so dedup hands them on as it
/// keeps winners): the impossible watch with rules v2's hour limit, its
/// (user hash, hour) and watch seconds; judging concurrency, its user hash
/// and watch span; the metronome, a billable winner's [`Paced`]. Each is appended to
/// one of [`USER_STRIPES`] lists by user hash, so that each list is worked
/// on by itself, in cache, when dedup is done.
struct UserHours {
    hours: Stripes<(UserHour, u32)>,
    spans: Stripes<UserSpan>,
    /// The metronome's: every billable winner's user hash, time, event id
    /// and watch seconds.
    paced: Stripes<Paced>,
    min_watch: i32,
}

/// Per-stripe lists of one kind of [`UserHours`] entry (none if its rule
/// is off).
struct Stripes<T> {
    lists: Vec<Mutex<Vec<T>>>,
}

impl<T> Stripes<T> {
    fn new(on: bool) -> Self {
        Self {
            lists: (0..if on { USER_STRIPES } else { 0 })
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
        }
    }

    fn on(&self) -> bool {
        !self.lists.is_empty()
    }

    /// Appends a dedup task's lists, counting them against `budget`.
    fn merge(&self, local: Vec<Vec<T>>, budget: &Budget) {
        for (stripe, entries) in self.lists.iter().zip(local) {
            if !entries.is_empty() {
                budget.add(entries.len() as u64 * std::mem::size_of::<T>() as u64);
                stripe
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(entries);
            }
        }
    }

    /// What `each` finds in every list (`threads` lists at once); gives
    /// the lists' bytes back to `budget`.
    fn each<U: Send>(self, work: &Work<'_>, each: impl Fn(Vec<T>) -> Vec<U> + Sync) -> Vec<U>
    where
        T: Send,
    {
        let lists = self.lists;
        parallel(work.threads, lists.len(), |i| {
            let entries = take(&lists[i]);
            work.budget
                .sub(entries.len() as u64 * std::mem::size_of::<T>() as u64);
            each(entries)
        })
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Lists of [`UserHours`].
const USER_STRIPES: usize = 64;

/// The stripe of a user hash.
fn stripe_of(user_hash: u64) -> usize {
    (user_hash >> 58) as usize % USER_STRIPES
}

/// A (user hash, hour) packed small: the hash's halves and the hour's
/// number since the epoch (with its watch seconds, 16 bytes).
type UserHour = [u32; 3];

fn user_hour(user_hash: u64, occurred_at: i64) -> UserHour {
    [
        user_hash as u32,
        (user_hash >> 32) as u32,
        occurred_at.div_euclid(HOUR_US) as u32,
    ]
}

/// A winner's user hash and watch span ([`schemas::fraud::watch_span`]).
type UserSpan = (u64, i64, i64);

/// A billable winner's user hash, `occurred_at`, event id and watch
/// seconds (the metronome's order is the first three's).
type Paced = (u64, i64, [u64; 2], u32);

/// A dedup task's entries for [`UserHours`], by stripe.
struct Watched {
    hours: Vec<Vec<(UserHour, u32)>>,
    spans: Vec<Vec<UserSpan>>,
    paced: Vec<Vec<Paced>>,
}

/// A winner's watch span.
fn span_of(r: &Row) -> (i64, i64) {
    schemas::fraud::watch_span(r.occurred_at, r.watch_seconds.max(0).unsigned_abs())
}

impl UserHours {
    fn new(rules: &RuleSet) -> Self {
        Self {
            hours: Stripes::new(rules.impossible_watch_seconds > 0),
            spans: Stripes::new(rules.impossible_watch_devices > 0),
            paced: Stripes::new(rules.metronome_views > 0),
            min_watch: min_watch(rules),
        }
    }

    /// A dedup task's lists (empty if the rule is off).
    fn local(&self) -> Watched {
        Watched {
            hours: vec![Vec::new(); self.hours.lists.len()],
            spans: vec![Vec::new(); self.spans.lists.len()],
            paced: vec![Vec::new(); self.paced.lists.len()],
        }
    }

    /// Adds winner `w` to a task's lists.
    fn add(&self, local: &mut Watched, w: &Row) {
        if self.hours.on() {
            let k = user_hour(w.user_hash, w.occurred_at);
            local.hours[stripe_of(w.user_hash)].push((k, w.watch_seconds.max(0).unsigned_abs()));
        }
        if self.spans.on() {
            let (start, end) = span_of(w);
            if end > start {
                local.spans[stripe_of(w.user_hash)].push((w.user_hash, start, end));
            }
        }
        if self.paced.on() && w.billable(self.min_watch) {
            local.paced[stripe_of(w.user_hash)].push((
                w.user_hash,
                w.occurred_at,
                w.id,
                w.watch_seconds.max(0).unsigned_abs(),
            ));
        }
    }

    /// Appends a dedup task's lists, counting them against `budget`.
    fn merge(&self, local: Watched, budget: &Budget) {
        self.hours.merge(local.hours, budget);
        self.spans.merge(local.spans, budget);
        self.paced.merge(local.paced, budget);
    }

    /// What the rules found: the (user hash, hour)s whose watch seconds
    /// pass the v2 limit, per (user hash, day) the periods with more views
    /// in progress than the devices one person runs, and the event ids of
    /// the metronome's beats.
    fn over(self, rules: &RuleSet, work: &Work<'_>) -> PerUser {
        let limit = rules.impossible_watch_seconds;
        let hours = self.hours.each(work, |entries| {
            let mut sums: HashMap<UserHour, u32, RandomState> =
                HashMap::with_capacity_and_hasher(entries.len(), work.state.clone());
            for (k, w) in &entries {
                let sum = sums.entry(*k).or_default();
                *sum = sum.saturating_add(*w);
            }
            sums.into_iter()
                .filter(|(_, w)| *w > limit)
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        });
        let devices = rules.impossible_watch_devices;
        let crowds = self.spans.each(work, |mut entries| {
            entries.sort_unstable();
            entries
                .chunk_by(|a, b| a.0 == b.0 && span_day((a.1, a.2)) == span_day((b.1, b.2)))
                .filter_map(|day| {
                    let periods =
                        schemas::fraud::crowded(day.iter().map(|&(_, s, e)| (s, e)), devices);
                    (!periods.is_empty())
                        .then(|| ((day[0].0, span_day((day[0].1, day[0].2))), periods))
                })
                .collect::<Vec<_>>()
        });
        let beats = self.paced.each(work, |mut entries| {
            entries.sort_unstable();
            let mut out = Vec::new();
            let day = |e: &Paced| (e.0, e.1.div_euclid(DAY_US));
            for group in entries.chunk_by(|a, b| day(a) == day(b)) {
                let times: Vec<(i64, u32)> = group.iter().map(|e| (e.1, e.3)).collect();
                let steady = schemas::fraud::steady(rules, &times);
                out.extend(
                    group
                        .iter()
                        .zip(steady)
                        .filter(|(_, s)| *s)
                        .map(|(e, _)| e.2),
                );
            }
            out
        });
        let mut out = PerUser {
            hours: hashbrown::HashSet::with_hasher(work.state.clone()),
            crowds: HashMap::with_hasher(work.state.clone()),
            beats: hashbrown::HashSet::with_hasher(work.state.clone()),
        };
        out.hours.extend(hours);
        out.crowds.extend(crowds);
        out.beats.extend(beats);
        out
    }
}

/// What the rules that follow a user over every video catch: for the
/// impossible watch, (user hash, hour)s over the v2 limit and per (user
/// hash, day number) the crowded periods; for the metronome, the event ids
/// of its beats.
#[derive(Default)]
struct PerUser {
    hours: hashbrown::HashSet<UserHour, RandomState>,
    crowds: HashMap<(u64, i64), Vec<(i64, i64)>, RandomState>,
    beats: hashbrown::HashSet<[u64; 2], RandomState>,
}

impl PerUser {
    fn is_empty(&self) -> bool {
        self.hours.is_empty() && self.crowds.is_empty() && self.beats.is_empty()
    }

    /// The rule that catches billable row `r`, if any.
    fn catches(&self, r: &Row) -> Option<FraudRule> {
        if self.impossible(r) {
            return Some(FraudRule::ImpossibleWatch);
        }
        self.beats.contains(&r.id).then_some(FraudRule::Metronome)
    }

    /// Whether the impossible-watch rule catches billable row `r`.
    fn impossible(&self, r: &Row) -> bool {
        if self.hours.contains(&user_hour(r.user_hash, r.occurred_at)) {
            return true;
        }
        let span = span_of(r);
        self.crowds
            .get(&(r.user_hash, span_day(span)))
            .is_some_and(|c| schemas::fraud::meets(span, c))
    }
}

/// The start of the UTC hour of `us`.
fn hour_of(us: i64) -> i64 {
    us - us.rem_euclid(HOUR_US)
}

/// Phase 3: the invalid-traffic rules ([`schemas::fraud`]) and the per
/// video-hour aggregate of one bucket (every winner of a video and day is
/// in the same bucket), its rows' user ids in `users`. Rows come with
/// their video's rank in name order.
#[allow(clippy::too_many_arguments)]
fn count_bucket<'s>(
    parts: Vec<Blocks>,
    users: &[StringArray],
    ids: &'s Ids,
    from_us: i64,
    to_us: i64,
    rules: &RuleSet,
    state: &RandomState,
    per_user: &PerUser,
    evidence: Option<&Evidence>,
) -> Vec<Out<'s>> {
    let min_watch = min_watch(rules);
    let cap = rules.fraud_cap_per_user_video_day as usize;
    let rows = || parts.iter().flat_map(Blocks::iter);
    let len: usize = parts.iter().map(Blocks::len).sum();
    let billable = |r: &Row| r.billable(min_watch);
    let billables = || rows().enumerate().filter(|(_, r)| billable(r));
    let key = |r: &Row| {
        (
            r.video,
            r.occurred_at.div_euclid(DAY_US) as i32,
            r.user_hash,
        )
    };
    let user = |r: &Row| users[r.chunk as usize].value(usize::from(r.row));
    // Per row, the first rule that catches it (its index in
    // `FraudRule::ALL`), or NONE; each rule marks its rows.
    const NONE: u8 = u8::MAX;
    let mut rule = vec![NONE; len];
    let mut mark = |n: usize, r: FraudRule| {
        rule[n] = rule[n].min(r.index() as u8);
    };

    // Billable views per (video, day, user hash). Only groups with as many
    // as a repeat loop, or more than the cap, need more: their rows,
    // ranked by the exact user id, then time and event id.
    let mut per_day: HashMap<(u32, i32, u64), u32, RandomState> =
        HashMap::with_hasher(state.clone());
    for (_, r) in billables() {
        *per_day.entry(key(r)).or_default() += 1;
    }
    let repeat = rules.repeat_loop_views as usize;
    let least = if repeat > 0 {
        repeat.min(cap + 1)
    } else {
        cap + 1
    };
    // (video, day, user hash), user, occurred_at, event id, row.
    type Ranked<'a> = ((u32, i32, u64), &'a str, i64, [u64; 2], u32);
    let mut heavy: Vec<Ranked<'_>> = billables()
        .filter(|(_, r)| per_day.get(&key(r)).copied().unwrap_or(0) as usize >= least)
        .map(|(n, r)| (key(r), user(r), r.occurred_at, r.id, n as u32))
        .collect();
    drop(per_day);
    heavy.sort_unstable();
    // The daily cap, per exact user (two users whose hashes collide are
    // told apart here; a group within the cap marks nothing).
    for group in heavy.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
        for &(_, _, _, _, n) in group.iter().skip(cap) {
            mark(n as usize, FraudRule::DailyCap);
        }
    }
    // Token replays: a verified playback's billable views of a video and
    // day beyond the rule's number, in time and event id order (only
    // groups with more than that many are ranked).
    if rules.token_replay_views > 0 {
        let keep = rules.token_replay_views as usize;
        type Played = (u32, i32, u64);
        let played =
            |r: &Row| -> Played { (r.video, r.occurred_at.div_euclid(DAY_US) as i32, r.playback) };
        let verified = || billables().filter(|(_, r)| r.verified);
        let mut views: HashMap<Played, u32, RandomState> = HashMap::with_hasher(state.clone());
        for (_, r) in verified() {
            *views.entry(played(r)).or_default() += 1;
        }
        views.retain(|_, n| *n as usize > keep);
        if !views.is_empty() {
            let mut ranked: Vec<(Played, i64, [u64; 2], usize)> = verified()
                .filter(|(_, r)| views.contains_key(&played(r)))
                .map(|(n, r)| (played(r), r.occurred_at, r.id, n))
                .collect();
            ranked.sort_unstable();
            for group in ranked.chunk_by(|a, b| a.0 == b.0) {
                for &(_, _, _, n) in group.iter().skip(keep) {
                    mark(n, FraudRule::TokenReplay);
                }
            }
        }
    }

    // Repeat loops, per user hash and hour of the day's heavy groups.
    if repeat > 0 {
        for group in heavy.chunk_by(|a, b| a.0 == b.0) {
            if group.len() < repeat {
                continue;
            }
            let mut hours: Vec<(i64, u32)> = group.iter().map(|g| (hour_of(g.2), g.4)).collect();
            hours.sort_unstable();
            for hour in hours.chunk_by(|a, b| a.0 == b.0) {
                if hour.len() >= repeat {
                    for &(_, n) in hour {
                        mark(n as usize, FraudRule::RepeatLoop);
                    }
                }
            }
        }
    }
    drop(heavy);

    if !per_user.is_empty() {
        for (n, r) in billables() {
            if let Some(rule) = per_user.catches(r) {
                mark(n, rule);
            }
        }
    }

    // The metronome among a video-day's views with one fingerprint, from
    // any users.
    if rules.metronome_views > 0 {
        let least = rules.metronome_views as usize;
        type Beat = (u32, i32, u64);
        let beat =
            |r: &Row| -> Beat { (r.video, r.occurred_at.div_euclid(DAY_US) as i32, r.print) };
        let mut views: HashMap<Beat, u32, RandomState> = HashMap::with_hasher(state.clone());
        for (_, r) in billables() {
            *views.entry(beat(r)).or_default() += 1;
        }
        views.retain(|_, n| *n as usize >= least);
        if !views.is_empty() {
            let mut ranked: Vec<(Beat, i64, [u64; 2], usize, u32)> = billables()
                .filter(|(_, r)| views.contains_key(&beat(r)))
                .map(|(n, r)| {
                    let watch = r.watch_seconds.max(0).unsigned_abs();
                    (beat(r), r.occurred_at, r.id, n, watch)
                })
                .collect();
            ranked.sort_unstable();
            for group in ranked.chunk_by(|a, b| a.0 == b.0) {
                let times: Vec<(i64, u32)> = group.iter().map(|g| (g.1, g.4)).collect();
                for (g, steady) in group.iter().zip(schemas::fraud::steady(rules, &times)) {
                    if steady {
                        mark(g.3, FraudRule::Metronome);
                    }
                }
            }
        }
    }

    // Bot farms: only (video, hour, fingerprint, band)s with as many
    // views as the rule's accounts can have as many users; those count
    // their distinct users.
    if rules.bot_farm_accounts > 0 {
        let least = rules.bot_farm_accounts;
        type Farm = (u32, i64, u64, u32);
        let farm = |r: &Row| -> Farm {
            (
                r.video,
                hour_of(r.occurred_at),
                r.print,
                rules.watch_band(r.watch_seconds.max(0).unsigned_abs()),
            )
        };
        let candidates = || {
            billables().filter(|(_, r)| rules.farm_candidate(r.watch_seconds.max(0).unsigned_abs()))
        };
        let mut views: HashMap<Farm, u32, RandomState> = HashMap::with_hasher(state.clone());
        for (_, r) in candidates() {
            *views.entry(farm(r)).or_default() += 1;
        }
        views.retain(|_, n| *n >= least);
        if !views.is_empty() {
            // A band's share is of its (video, hour, fingerprint)'s
            // accounts, so every candidate of a group with a big band
            // counts.
            let crowd = |f: &Farm| (f.0, f.1, f.2);
            let mut crowds: hashbrown::HashSet<(u32, i64, u64), RandomState> =
                hashbrown::HashSet::with_hasher(state.clone());
            crowds.extend(views.keys().map(crowd));
            let mut members: Vec<(Farm, u64, usize)> = candidates()
                .filter(|(_, r)| crowds.contains(&crowd(&farm(r))))
                .map(|(n, r)| (farm(r), r.user_hash, n))
                .collect();
            members.sort_unstable();
            let distinct = |m: &[(Farm, u64, usize)]| {
                let mut users: Vec<u64> = m.iter().map(|m| m.1).collect();
                users.sort_unstable();
                users.dedup();
                users.len() as u64
            };
            for group in members.chunk_by(|a, b| crowd(&a.0) == crowd(&b.0)) {
                let of = distinct(group);
                for band in group.chunk_by(|a, b| a.0 == b.0) {
                    let accounts = 1 + band.windows(2).filter(|w| w[0].1 != w[1].1).count() as u64;
                    if accounts >= u64::from(least) && rules.farm_clustered(accounts, of) {
                        for &(_, _, n) in band {
                            mark(n, FraudRule::BotFarm);
                        }
                    }
                }
            }
        }
    }

    // Zero-engagement bursts: the candidates of each (video, hour) in
    // time order, those in a dense window caught.
    if rules.zero_engagement_views > 0 {
        let mut candidates: Vec<((u32, i64), i64, usize)> = billables()
            .filter(|(_, r)| {
                rules.zero_engagement_candidate(
                    u32::from(!r.zero_ads),
                    r.watch_seconds.max(0).unsigned_abs(),
                )
            })
            .map(|(n, r)| ((r.video, hour_of(r.occurred_at)), r.occurred_at, n))
            .collect();
        candidates.sort_unstable();
        let window_us = i64::from(rules.zero_engagement_window_seconds) * 1_000_000;
        let least = rules.zero_engagement_views as usize;
        for group in candidates.chunk_by(|a, b| a.0 == b.0) {
            if group.len() < least {
                continue;
            }
            let times: Vec<i64> = group.iter().map(|c| c.1).collect();
            for (c, dense) in group.iter().zip(in_dense_window(&times, window_us, least)) {
                if dense {
                    mark(c.2, FraudRule::ZeroEngagement);
                }
            }
        }
    }

    #[derive(Default)]
    struct Agg {
        views: i64,
        billable: i64,
        fraud: i64,
        by_rule: ByRule,
        watch: i64,
        sketch: Sketch,
    }
    if let Some(e) = evidence {
        let decided: Vec<Decided> = billables()
            .filter(|(_, r)| {
                e.videos[r.video as usize] && r.occurred_at >= e.from_us && r.occurred_at < e.to_us
            })
            .map(|(n, r)| Decided {
                id: r.id,
                video: r.video,
                occurred_at: r.occurred_at,
                rule: (rule[n] != NONE).then(|| FraudRule::ALL[usize::from(rule[n])]),
            })
            .collect();
        if !decided.is_empty() {
            e.found
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(decided);
        }
    }

    let mut groups: HashMap<(u32, i64), Agg, RandomState> = HashMap::with_hasher(state.clone());
    for (n, r) in rows().enumerate() {
        if r.occurred_at < from_us || r.occurred_at >= to_us {
            continue;
        }
        let g = groups.entry((r.video, hour_of(r.occurred_at))).or_default();
        g.views += 1;
        if billable(r) {
            if rule[n] == NONE {
                g.billable += 1;
            } else {
                g.fraud += 1;
                g.by_rule[usize::from(rule[n])] += 1;
            }
        }
        g.watch += i64::from(r.watch_seconds);
        g.sketch.insert_hash(r.user_hash);
    }
    groups
        .into_iter()
        .map(|((v, hour), g)| {
            (
                ids.video_rank[v as usize],
                ViewRow {
                    video_id: &ids.videos[v as usize],
                    hour_us: hour,
                    views: g.views,
                    billable_views: g.billable,
                    fraud_filtered: g.fraud,
                    watch_seconds: g.watch,
                    sketch: g.sketch.to_bytes(),
                },
                g.by_rule,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two users whose hashes collide: the cap still applies per user.
    #[test]
    fn colliding_user_hashes_are_split_by_the_exact_id() {
        let state = RandomState::default();
        let names = StringArray::from(vec!["alice", "bob"]);
        let ids = Ids {
            videos: vec!["v1".into()],
            video_rank: vec![0],
            video_of: vec![vec![0]],
            user_ids: vec![names],
        };
        let day = 20_000 * DAY_US;
        let row = |n: u64, user: u16| Row {
            id: [0, n],
            fp: 0,
            received_at: day,
            offset: n as i64,
            occurred_at: day + n as i64 * 1_000_000,
            partition: 0,
            watch_seconds: 60,
            video: 0,
            user_hash: 42,
            print: 0,
            playback: 0,
            chunk: 0,
            row: user,
            reader: 0,
            eligible: true,
            zero_ads: false,
            verified: false,
        };
        let run = |alice: u64, bob: u64| {
            let mut rows = Blocks::default();
            for n in 0..alice {
                rows.push(row(n, 0));
            }
            for n in alice..alice + bob {
                rows.push(row(n, 1));
            }
            let out = count_bucket(
                vec![rows],
                &ids.user_ids,
                &ids,
                day,
                day + DAY_US,
                // The cap alone (the others know users by hash).
                &RuleSet {
                    impossible_watch_seconds: 0,
                    impossible_watch_devices: 0,
                    repeat_loop_views: 0,
                    bot_farm_accounts: 0,
                    zero_engagement_views: 0,
                    token_replay_views: 0,
                    ..RuleSet::default()
                },
                &state,
                &PerUser::default(),
                None,
            );
            let fraud: i64 = out.iter().map(|(_, r, _)| r.fraud_filtered).sum();
            let billable: i64 = out.iter().map(|(_, r, _)| r.billable_views).sum();
            (billable, fraud)
        };
        assert_eq!(
            run(6, 6),
            (12, 0),
            "6 + 6 views of two users: none over the cap"
        );
        assert_eq!(
            run(12, 6),
            (16, 2),
            "alice's 11th and 12th are over the cap"
        );
    }
}
