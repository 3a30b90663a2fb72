//! `viewcount batch run --from --to`: the authoritative recomputation.
//!
//! 1. Plan: clamp the range to complete hours (archive watermark), list the
//!    raw files of every *day* the range touches (the fraud cap counts per UTC
//!    day, so an hour needs its day's earlier hours), checksum them. The run id
//!    is a hash of the inputs, range, rules and code version: the same inputs
//!    give the same id and the same output path, so reruns are idempotent.
//! 2. Compute with an [`Engine`]: re-validate every row with the `schemas`
//!    rules, keep the first copy of each `event_id` (earliest `received_at`,
//!    then lowest partition and offset), apply the fraud cap, and aggregate
//!    per video per hour with sketches of unique viewers. The native engine
//!    ([`crate::count`]) reads each input once, checksumming and counting the
//!    same bytes; another engine plugs in as a [`Compute`] (the SQL
//!    specification in the `batch-sql` crate, a Ballista cluster in
//!    `batch-cluster`), which this crate knows only by that trait, so it
//!    builds without DataFusion.
//! 3. Write `views/run=<id>/part-0.parquet` sorted by (video, hour) with fixed
//!    writer settings (same rows → same bytes), then the manifest, then
//!    publish (see [`crate::publish`]).

use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use chrono::{DateTime, Duration, DurationRound, TimeDelta, Utc};
use futures::TryStreamExt;
use futures::future::BoxFuture;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use schemas::{RULES_VERSION, RuleSet};
use store::filtered::{FilteredRow, filtered_batch, filtered_schema};
pub use store::manifest::Engine;
use store::manifest::{Input, Manifest, Output, Rows, Step};
use store::state::Published;
use store::views::{views_batch, views_schema};
use store::{layout, progress};

pub use crate::memory::Memory;
use crate::{Error, Result, count, publish};

/// Code version recorded in manifests.
pub const CODE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// First hour (inclusive).
    pub from: DateTime<Utc>,
    /// End (exclusive).
    pub to: DateTime<Utc>,
    /// Counting rules.
    pub rules: RuleSet,
    /// Allowed lateness for the archive watermark.
    pub lateness: Duration,
    /// Compute hours past the archive watermark too (they are not complete;
    /// for tests and backfills of closed archives).
    pub allow_incomplete: bool,
    /// Plan only: say what would be read and written.
    pub dry_run: bool,
    /// How to compute: the native engine when `None`.
    pub compute: Option<Arc<dyn Compute>>,
    /// How much memory the computation may hold, and where it spills.
    pub memory: Memory,
}

impl RunOptions {
    /// Allowed lateness unless configured: 10 minutes.
    pub const DEFAULT_LATENESS: Duration = Duration::minutes(10);

    /// Hours `[from, to)` with the default rules and lateness, complete hours
    /// only, computed and published by the native engine.
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        Self {
            from,
            to,
            rules: RuleSet::default(),
            lateness: Self::DEFAULT_LATENESS,
            allow_incomplete: false,
            dry_run: false,
            compute: None,
            memory: Memory::default(),
        }
    }

    /// The engine these options compute with.
    pub fn engine(&self) -> Engine {
        self.compute.as_ref().map_or(Engine::Native, |c| c.engine())
    }
}

/// What an engine computed for a run: the views table sorted by (video,
/// hour), the filtered views by rule sorted by (video, hour, rule), and the
/// row counts.
#[derive(Debug)]
pub struct Computed {
    /// The views table ([`store::views::views_schema`]).
    pub views: RecordBatch,
    /// Filtered views by rule.
    pub filtered: Vec<FilteredRow>,
    /// Row counts.
    pub rows: Rows,
}

/// An engine other than the native one: it computes a run's [`Computed`]
/// from the raw files the run planned, with the same semantics, and a test
/// of its crate holds its output byte-identical to the native engine's.
/// The run checksums the inputs itself before handing them over.
pub trait Compute: Send + Sync + std::fmt::Debug {
    /// The engine recorded in the manifest.
    fn engine(&self) -> Engine;

    /// Counts hours `[from, to)` of the raw files at `paths` (store paths)
    /// with `rules`, within `memory`.
    fn compute<'a>(
        &'a self,
        store: Arc<dyn ObjectStore>,
        paths: Vec<String>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        rules: &'a RuleSet,
        memory: &'a Memory,
    ) -> BoxFuture<'a, Result<Computed>>;
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The manifest (for a dry run: the plan, outputs empty).
    pub manifest: Manifest,
    /// The published state after the run (None for a dry run).
    pub published: Option<Published>,
}

/// Reports progress: called with a step name and (done, total) units.
pub type ProgressFn<'a> = &'a (dyn Fn(&str, u64, u64) + Send + Sync);

/// Runs the batch job.
pub async fn run(
    store: Arc<dyn ObjectStore>,
    opts: &RunOptions,
    progress: ProgressFn<'_>,
) -> Result<RunReport> {
    let started_at = Utc::now();
    let clock = Instant::now();
    let hour = TimeDelta::hours(1);
    if opts.from.duration_trunc(hour).ok() != Some(opts.from)
        || opts.to.duration_trunc(hour).ok() != Some(opts.to)
    {
        return Err(Error::Input(format!(
            "--from and --to must be whole UTC hours (like 2026-11-21T13:00:00Z), got {} and {}",
            opts.from, opts.to
        )));
    }
    if opts.from >= opts.to {
        return Err(Error::Input(format!(
            "--from ({}) must be before --to ({})",
            opts.from, opts.to
        )));
    }
    let (meta, archived) = progress::load(store.as_ref()).await?;
    if let Some(archive_rules) = meta.as_ref().and_then(|m| m.rules) {
        // The archive kept what its rules accepted; counting it under
        // narrower limits would drop views ingest answered 202 for.
        opts.rules
            .check_limits_header(archive_rules.limits_header().as_bytes())
            .map_err(|why| {
                Error::Input(format!(
                    "the archive's rules are wider than this run's: {why}"
                ))
            })?;
    }
    let archive_watermark =
        meta.and_then(|m| progress::watermark(m.partitions, &archived, opts.lateness));
    let to = if opts.allow_incomplete {
        opts.to
    } else {
        match archive_watermark {
            None => {
                return Err(Error::Input(
                    "the archive has not recorded progress for every partition yet, so no hour is known complete; run `viewcount archive` (or pass --allow-incomplete)".into(),
                ));
            }
            Some(w) if w <= opts.from => {
                return Err(Error::Input(format!(
                    "no complete hour in the range: the archive watermark is {w} (allowed lateness {} min); wait, or pass --allow-incomplete",
                    opts.lateness.num_minutes()
                )));
            }
            Some(w) => opts.to.min(w),
        }
    };
    let skipped_incomplete_to = (to < opts.to).then_some(opts.to);

    // Plan: every raw file of every day the range touches.
    let day = TimeDelta::days(1);
    let first_day = opts
        .from
        .duration_trunc(day)
        .map_err(|e| Error::Input(e.to_string()))?;
    let mut inputs_meta = Vec::new();
    let mut d = first_day;
    while d < to {
        let prefix = Path::from(format!("raw/dt={}", d.date_naive().format("%Y-%m-%d")));
        let mut listed: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
        inputs_meta.append(&mut listed);
        d += day;
    }
    inputs_meta.retain(|m| m.location.as_ref().ends_with(".parquet"));
    inputs_meta.sort_by(|a, b| a.location.cmp(&b.location));

    let mut manifest = Manifest {
        run_id: String::new(),
        from: opts.from,
        to,
        skipped_incomplete_to,
        rules_version: RULES_VERSION,
        rules: opts.rules,
        code_version: CODE_VERSION.into(),
        engine: opts.engine(),
        archive_watermark,
        inputs: Vec::new(),
        outputs: Vec::new(),
        rows: Rows::default(),
        started_at,
        seconds: 0.0,
        steps: Vec::new(),
    };
    let mut step_clock = Instant::now();
    let step = |manifest: &mut Manifest, clock: &mut Instant, name: &str| {
        manifest
            .steps
            .push(Step::timed(name, clock.elapsed().as_secs_f64()));
        *clock = Instant::now();
    };
    step(&mut manifest, &mut step_clock, "planning");
    let (from_us, to_us) = (opts.from.timestamp_micros(), to.timestamp_micros());
    let counted = if opts.dry_run || opts.compute.is_some() {
        manifest.inputs = checksum(store.as_ref(), &inputs_meta, progress).await?;
        if opts.dry_run {
            manifest.run_id = run_id(opts.from, to, &opts.rules, &manifest.inputs);
            for path in [
                layout::views_file(&manifest.run_id),
                layout::filtered_file(&manifest.run_id),
            ] {
                manifest.outputs.push(Output {
                    path: path.to_string(),
                    size: 0,
                    sha256: String::new(),
                    rows: 0,
                });
            }
            return Ok(RunReport {
                manifest,
                published: None,
            });
        }
        progress("computing", 0, 1);
        let paths: Vec<String> = manifest.inputs.iter().map(|i| i.path.clone()).collect();
        let computed = match &opts.compute {
            Some(compute) if !paths.is_empty() => {
                compute
                    .compute(
                        store.clone(),
                        paths,
                        opts.from,
                        to,
                        &opts.rules,
                        &opts.memory,
                    )
                    .await?
            }
            _ => Computed {
                views: views_batch(std::iter::empty())?,
                filtered: Vec::new(),
                rows: Rows::default(),
            },
        };
        let (views, filtered, rows) = (computed.views, computed.filtered, computed.rows);
        progress("computing", 1, 1);
        manifest.rows = rows;
        step(&mut manifest, &mut step_clock, "computing");
        (views, filtered)
    } else {
        // The native engine runs on its own threads; progress comes back
        // through a channel so the caller's callback stays on this task.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (rules, files, memory) = (opts.rules, inputs_meta.clone(), opts.memory.clone());
        let io = tokio::runtime::Handle::current();
        let task = tokio::task::spawn_blocking({
            let store = store.clone();
            move || {
                count::count(
                    &io, store, &files, from_us, to_us, &rules, &memory, None, &tx,
                )
            }
        });
        while let Some((step, done, total)) = rx.recv().await {
            progress(step, done, total);
        }
        let native = task
            .await
            .map_err(|e| Error::Input(format!("the counting engine failed: {e}")))??;
        manifest.inputs = native.inputs;
        manifest.rows = native.rows;
        manifest.steps.extend(native.steps);
        step_clock = Instant::now();
        (native.views, native.filtered)
    };
    let (views, filtered) = counted;
    let run_id = run_id(opts.from, to, &opts.rules, &manifest.inputs);
    manifest.run_id = run_id.clone();
    let outputs = [
        (
            layout::views_file(&run_id),
            layout::parquet_bytes(views_schema(), &[views])?,
            manifest.rows.output,
        ),
        (
            layout::filtered_file(&run_id),
            layout::parquet_bytes(filtered_schema(), &[filtered_batch(&filtered)?])?,
            filtered.len() as u64,
        ),
    ];
    for (out_path, bytes, rows) in outputs {
        manifest
            .outputs
            .push(store::manifest::put_output(store.as_ref(), &out_path, bytes, rows).await?);
    }
    step(&mut manifest, &mut step_clock, "writing");
    manifest.seconds = clock.elapsed().as_secs_f64();
    let manifest_sha256 =
        layout::put_json(store.as_ref(), &layout::manifest(&run_id), &manifest).await?;
    progress("publishing", 0, 1);
    let published =
        publish::publish(store.as_ref(), &run_id, &manifest_sha256, opts.from, to).await?;
    progress("publishing", 1, 1);
    Ok(RunReport {
        manifest,
        published: Some(published),
    })
}

/// Per (video, hour of `occurred_at`), the copies of event ids that a run
/// over `inputs` (a manifest's, as recorded) removed and the speed layer,
/// with dedup window `window`, counts as views of their own:
/// `[conflicting, late]` (see the `count` module's `removed_copies`). The
/// native engine's own read and dedup, within `memory`; every input's
/// checksum must still be the recorded one.
pub async fn removed_copies(
    store: Arc<dyn ObjectStore>,
    inputs: &[Input],
    rules: &RuleSet,
    window: Duration,
    memory: &Memory,
) -> Result<std::collections::BTreeMap<(String, DateTime<Utc>), [u64; 2]>> {
    let files = input_metas(inputs)?;
    let window_us = window.num_microseconds().unwrap_or(i64::MAX);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let io = tokio::runtime::Handle::current();
    let (rules, memory) = (*rules, memory.clone());
    let task = tokio::task::spawn_blocking(move || {
        count::removed_copies(&io, store, &files, &rules, &memory, window_us, &tx)
    });
    while rx.recv().await.is_some() {}
    let (read, removed) = task
        .await
        .map_err(|e| Error::Input(format!("the counting engine failed: {e}")))??;
    check_unchanged(inputs, &read)?;
    removed
        .into_iter()
        .map(|((video, hour), n)| {
            let hour = DateTime::from_timestamp_micros(hour)
                .ok_or_else(|| Error::Corrupt(format!("hour {hour} µs is out of range")))?;
            Ok(((video, hour), n))
        })
        .collect()
}

/// A manifest's inputs as the native engine takes them.
pub(crate) fn input_metas(inputs: &[Input]) -> Result<Vec<ObjectMeta>> {
    inputs
        .iter()
        .map(|i| {
            Ok(ObjectMeta {
                location: Path::parse(&i.path).map_err(|e| {
                    Error::Corrupt(format!("a manifest names input {:?}: {e}", i.path))
                })?,
                last_modified: Utc::now(),
                size: i.size,
                e_tag: None,
                version: None,
            })
        })
        .collect()
}

/// Fails unless every input read has the checksum a manifest recorded.
pub(crate) fn check_unchanged(recorded: &[Input], read: &[Input]) -> Result<()> {
    for (was, now) in recorded.iter().zip(read) {
        if was.sha256 != now.sha256 {
            return Err(Error::Corrupt(format!(
                "raw file {} changed since the run that read it (sha256 {} then, {} now); rerun `viewcount batch run` over its hours",
                was.path, was.sha256, now.sha256
            )));
        }
    }
    Ok(())
}

/// Reads every input once to checksum it (dry runs and the SQL engine, which
/// reads the files again itself).
async fn checksum(
    store: &dyn ObjectStore,
    metas: &[ObjectMeta],
    progress: ProgressFn<'_>,
) -> Result<Vec<Input>> {
    let mut inputs = Vec::with_capacity(metas.len());
    for (i, m) in metas.iter().enumerate() {
        progress("checksumming inputs", i as u64, metas.len() as u64);
        let bytes = store.get(&m.location).await?.bytes().await?;
        inputs.push(Input {
            path: m.location.to_string(),
            size: bytes.len() as u64,
            sha256: layout::sha256(&bytes),
        });
    }
    progress(
        "checksumming inputs",
        metas.len() as u64,
        metas.len() as u64,
    );
    Ok(inputs)
}

/// The run id: a hash of what determines the output.
fn run_id(from: DateTime<Utc>, to: DateTime<Utc>, rules: &RuleSet, inputs: &[Input]) -> String {
    let canonical = serde_json::json!({
        "from": from, "to": to, "rules_version": RULES_VERSION, "rules": rules,
        "code_version": CODE_VERSION, "inputs": inputs,
    });
    layout::sha256(canonical.to_string().as_bytes())[..16].to_owned()
}
