//! Dirty hours: what the scheduled run (`viewcount batch run --dirty`) must
//! recompute so late views reach the authoritative numbers (DESIGN §5.3).
//!
//! The archive's record of what it received is its raw files themselves:
//! each flush writes new, immutable files under `raw/dt=…/hour=…/`, and a
//! run's manifest lists every raw file it read. So an hour `H` the archive
//! has completed (below its watermark) is pending when
//!
//! - **late data**: the run that owns `H` did not read every raw file of
//!   `H` (the archive wrote more after that run listed its inputs), or
//! - **uncovered**: `H` has raw files but no run owns it (data older than
//!   anything published), or
//! - **new**: `H` lies between the batch watermark and the archive's
//!   (complete, never published; quiet hours included, so the watermark
//!   moves on).
//!
//! Deriving this from the files rather than from separate "dirty" markers
//! means it cannot go stale: no marker to lose in a crash between writing
//! a raw file and its marker, and none to clear racing a flush that lands
//! while a run is reading — a file the run did not read keeps its hour
//! dirty until a run does. The scan covers the days that can still receive
//! data (the rules' late horizon before the archive's progress).
//!
//! The fraud cap and the replay rule rank views within a UTC day by time,
//! so a late view in hour `H` can change billable counts in later hours of
//! its day: each late or uncovered hour is recomputed together with the
//! rest of its day up to the archive watermark. The impossible-watch rule's
//! concurrency reaches back too (a late view can crowd views that started
//! before it, earlier that day), so with it on the whole day is. Runs are
//! cut at day boundaries, so each reads one day of raw files.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound, TimeDelta, Utc};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use serde::Serialize;
use store::manifest::Manifest;
use store::{layout, progress};

use crate::run::{ProgressFn, RunOptions, RunReport};
use crate::{Error, Result};

/// Why an hour is pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Why {
    /// The owning run did not read `files` of the hour's raw files.
    LateData {
        /// Raw files of the hour its owner did not read.
        files: usize,
    },
    /// Raw files, but no run owns the hour.
    Uncovered,
    /// Complete and never published.
    New,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::LateData { files } => {
                write!(f, "late data: {files} raw file(s) its run did not read")
            }
            Why::Uncovered => f.write_str("raw data no run covers"),
            Why::New => f.write_str("complete, never published"),
        }
    }
}

/// One hour the next scheduled run recomputes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingHour {
    /// Start of the hour.
    pub hour: DateTime<Utc>,
    /// Why.
    #[serde(flatten)]
    pub why: Why,
}

/// What `batch run --dirty` would do now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    /// The archive watermark: hours before it are complete.
    pub archive_watermark: Option<DateTime<Utc>>,
    /// The batch watermark of the published state.
    pub batch_watermark: Option<DateTime<Utc>>,
    /// Late-data and uncovered hours: views the published numbers miss.
    pub dirty: Vec<PendingHour>,
    /// Complete hours never published (the watermark's way forward).
    pub new_hours: usize,
    /// The runs to do, `[from, to)`, each within one UTC day, in order.
    pub runs: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Plan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
}

/// Plans the dirty run: reads the archive's progress, the published state,
/// the owning runs' manifests and the raw listing of the days that can
/// still change.
pub async fn plan(store: &dyn ObjectStore, opts: &RunOptions) -> Result<Plan> {
    let (meta, archived) = progress::load(store).await?;
    let Some(meta) = meta else {
        return Ok(Plan::default());
    };
    let published = store::state::current(store).await?;
    let mut plan = Plan {
        archive_watermark: progress::watermark(meta.partitions, &archived, opts.lateness),
        batch_watermark: published.as_ref().and_then(|p| p.watermark),
        ..Plan::default()
    };
    let Some(aw) = plan.archive_watermark else {
        return Ok(plan);
    };
    // Days before this can no longer receive data: every partition has
    // archived past their end plus the late horizon.
    let oldest_progress = archived
        .iter()
        .map(|p| p.complete_through)
        .min()
        .unwrap_or(aw);
    let scan_from = floor_day(oldest_progress - opts.rules.late_horizon() - opts.lateness)?;
    let raw = raw_files_since(store, scan_from, aw).await?;
    let owned = published
        .as_ref()
        .map(|p| p.hours.clone())
        .unwrap_or_default();
    let mut read_by: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut pending: BTreeMap<DateTime<Utc>, Why> = BTreeMap::new();
    for (hour, files) in &raw {
        let Some(run) = owned.get(hour) else {
            // Past the batch watermark it is simply new (below).
            if plan.batch_watermark.is_some_and(|w| *hour < w) {
                pending.insert(*hour, Why::Uncovered);
            }
            continue;
        };
        if !read_by.contains_key(run)
            && let Some(p) = &published
        {
            read_by.insert(run.clone(), inputs_of(store, p, run).await?);
        }
        let read = &read_by[run];
        let unread = files.iter().filter(|f| !read.contains(*f)).count();
        if unread > 0 {
            pending.insert(*hour, Why::LateData { files: unread });
        }
    }
    // New hours: from the batch watermark (or the first raw hour) to the
    // archive's, quiet ones included.
    let start = plan
        .batch_watermark
        .or_else(|| raw.keys().next().copied())
        .unwrap_or(aw);
    let mut h = start;
    while h < aw {
        if !owned.contains_key(&h) && h >= scan_from {
            pending.entry(h).or_insert(Why::New);
        }
        h += TimeDelta::hours(1);
    }
    for (&hour, why) in &pending {
        if matches!(why, Why::New) {
            plan.new_hours += 1;
        } else {
            plan.dirty.push(PendingHour { hour, why: *why });
        }
    }
    let todo = to_recompute(&pending, aw, opts.rules.late_views_reach_back())?;
    plan.runs = ranges_within_days(&todo)?;
    Ok(plan)
}

/// The hours to recompute for `pending`: a new hour itself; a late or
/// uncovered hour with the rest of its day up to `aw` (a late view can
/// change later hours' decisions of its day), and with `reach_back` (a late
/// view can change earlier hours' too: [`schemas::RuleSet::late_views_reach_back`])
/// with the whole of its day before it as well.
fn to_recompute(
    pending: &BTreeMap<DateTime<Utc>, Why>,
    aw: DateTime<Utc>,
    reach_back: bool,
) -> Result<BTreeSet<DateTime<Utc>>> {
    let mut todo: BTreeSet<DateTime<Utc>> = BTreeSet::new();
    for (&hour, why) in pending {
        todo.insert(hour);
        if matches!(why, Why::New) {
            continue;
        }
        let day = floor_day(hour)?;
        let end = (day + TimeDelta::days(1)).min(aw);
        let mut h = if reach_back { day } else { hour };
        while h < end {
            todo.insert(h);
            h += TimeDelta::hours(1);
        }
    }
    Ok(todo)
}

/// Runs the plan: one batch run per range, in order, each published as it
/// completes. Returns the plan and what each run did.
pub async fn run_dirty(
    store: Arc<dyn ObjectStore>,
    opts: &RunOptions,
    progress: ProgressFn<'_>,
) -> Result<(Plan, Vec<RunReport>)> {
    let plan = plan(store.as_ref(), opts).await?;
    let mut reports = Vec::with_capacity(plan.runs.len());
    for &(from, to) in &plan.runs {
        let one = RunOptions {
            from,
            to,
            allow_incomplete: false,
            ..opts.clone()
        };
        reports.push(crate::run::run(store.clone(), &one, progress).await?);
    }
    Ok((plan, reports))
}

fn floor_day(t: DateTime<Utc>) -> Result<DateTime<Utc>> {
    t.duration_trunc(TimeDelta::days(1))
        .map_err(|e| Error::Input(format!("cannot take the day of {t}: {e}")))
}

/// Raw files of complete hours from `from_day` on, by hour.
async fn raw_files_since(
    store: &dyn ObjectStore,
    from_day: DateTime<Utc>,
    before: DateTime<Utc>,
) -> Result<BTreeMap<DateTime<Utc>, Vec<String>>> {
    // Listing is lexicographic: `raw/dt=<day>` sorts by date.
    let offset = Path::from(format!(
        "raw/dt={}",
        (from_day - Duration::days(1))
            .date_naive()
            .format("%Y-%m-%d")
    ));
    let raw = Path::from("raw");
    let listed: Vec<_> = store
        .list_with_offset(Some(&raw), &offset)
        .try_collect()
        .await?;
    let mut by_hour: BTreeMap<DateTime<Utc>, Vec<String>> = BTreeMap::new();
    for m in listed {
        if !m.location.as_ref().ends_with(".parquet") {
            continue;
        }
        let Some(hour) = layout::raw_file_hour(&m.location) else {
            continue;
        };
        if hour >= from_day && hour < before {
            by_hour
                .entry(hour)
                .or_default()
                .push(m.location.to_string());
        }
    }
    Ok(by_hour)
}

/// The raw files a run read (its manifest checked against the state).
async fn inputs_of(
    store: &dyn ObjectStore,
    published: &store::Published,
    run_id: &str,
) -> Result<BTreeSet<String>> {
    let m: Manifest = published.manifest(store, run_id).await?;
    Ok(m.inputs.into_iter().map(|i| i.path).collect())
}

/// Contiguous hour ranges, cut at UTC day boundaries.
fn ranges_within_days(
    hours: &BTreeSet<DateTime<Utc>>,
) -> Result<Vec<(DateTime<Utc>, DateTime<Utc>)>> {
    let mut out: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    for &h in hours {
        match out.last_mut() {
            Some((from, to)) if *to == h && floor_day(*from)? == floor_day(h)? => {
                *to = h + TimeDelta::hours(1);
            }
            _ => out.push((h, h + TimeDelta::hours(1))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_late_hour_takes_the_rest_of_its_day_and_with_reach_back_all_of_it() {
        let pending: BTreeMap<_, _> = [
            (h("2026-11-20T10:00:00Z"), Why::LateData { files: 1 }),
            (h("2026-11-21T02:00:00Z"), Why::New),
        ]
        .into_iter()
        .collect();
        let aw = h("2026-11-21T03:00:00Z");
        let hours = |from: &str, n: i64| -> Vec<DateTime<Utc>> {
            (0..n).map(|i| h(from) + TimeDelta::hours(i)).collect()
        };
        let forward = to_recompute(&pending, aw, false).unwrap();
        assert_eq!(
            forward.into_iter().collect::<Vec<_>>(),
            [
                hours("2026-11-20T10:00:00Z", 14),
                hours("2026-11-21T02:00:00Z", 1)
            ]
            .concat()
        );
        let whole = to_recompute(&pending, aw, true).unwrap();
        assert_eq!(
            whole.into_iter().collect::<Vec<_>>(),
            [
                hours("2026-11-20T00:00:00Z", 24),
                hours("2026-11-21T02:00:00Z", 1)
            ]
            .concat(),
            "a new hour is only itself"
        );
    }

    #[test]
    fn ranges_are_contiguous_and_cut_at_midnight() {
        let hours: BTreeSet<_> = [
            "2026-11-20T22:00:00Z",
            "2026-11-20T23:00:00Z",
            "2026-11-21T00:00:00Z",
            "2026-11-21T01:00:00Z",
            "2026-11-21T05:00:00Z",
        ]
        .into_iter()
        .map(h)
        .collect();
        assert_eq!(
            ranges_within_days(&hours).unwrap(),
            [
                (h("2026-11-20T22:00:00Z"), h("2026-11-21T00:00:00Z")),
                (h("2026-11-21T00:00:00Z"), h("2026-11-21T02:00:00Z")),
                (h("2026-11-21T05:00:00Z"), h("2026-11-21T06:00:00Z")),
            ]
        );
        assert!(ranges_within_days(&BTreeSet::new()).unwrap().is_empty());
    }
}
