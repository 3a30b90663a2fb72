//! `viewcount reconcile --from --to`: the speed layer against the published
//! batch, per video per hour, every difference with its cause (DESIGN §5.5).
//!
//! Expected relations: speed views == batch views, and speed billable ==
//! batch billable + batch fraud_filtered; the filtered views are attributed
//! to the invalid-traffic rule that removed them (the run's filtered table,
//! [`store::filtered`]; a run made before it existed had only the daily
//! cap). Where speed counts more views than
//! batch, the raw archive says why: copies of an `event_id` that batch
//! removed but the speed layer could not see as duplicates —
//! - *conflicting duplicate*: a copy whose payload differs from the winner
//!   and that lands in another partition or occurred-at day (another dedup
//!   hash), so speed counted it too;
//! - *late beyond the dedup window*: an exact re-send received more than the
//!   window after the first copy, when speed had forgotten the id.
//!
//! Anything else is *unexplained*, and makes the command exit non-zero.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use object_store::ObjectStore;
use serde::Serialize;

use schemas::fraud::FraudRule;
use store::Manifest;
use store::filtered::load_by_video_hour;
use store::manifest::Input;
use store::views::{ViewsTable, load_views};

/// Errors of reconciliation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request cannot be answered as asked (nothing published, range).
    #[error("{0}")]
    Input(String),
    /// Stored data is not what batch wrote.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The raw files could not be read.
    #[error(transparent)]
    Batch(#[from] batch::Error),
}

impl Error {
    /// What a caller can do about it.
    pub fn class(&self) -> schemas::ErrorClass {
        match self {
            Error::Input(_) => schemas::ErrorClass::Input,
            Error::Corrupt(_) => schemas::ErrorClass::Corrupt,
            Error::Store(e) => e.class(),
            Error::Batch(e) => e.class(),
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Speed-layer counts by (video, hour): `[views, billable, watch_seconds]`.
pub type SpeedTable = BTreeMap<(String, DateTime<Utc>), [u64; 3]>;

/// Why speed and batch differ for one video-hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Billable views batch's `token_replay` rule removed (speed is
    /// unfiltered: so for every rule below).
    TokenReplay,
    /// Billable views batch's `impossible_watch` rule removed.
    ImpossibleWatch,
    /// Billable views batch's `repeat_loop` rule removed.
    RepeatLoop,
    /// Billable views batch's `zero_engagement` rule removed.
    ZeroEngagement,
    /// Billable views batch's `bot_farm` rule removed.
    BotFarm,
    /// Billable views batch's daily cap removed.
    DailyCap,
    /// Billable views batch's `metronome` rule removed.
    Metronome,
    /// Copies with a different payload that speed could not match.
    ConflictingDuplicate,
    /// Re-sends received after the dedup window.
    LateBeyondDedupWindow,
    /// No known cause.
    Unexplained,
}

/// Causes, each with the views it explains.
type Causes = Vec<(Cause, u64)>;

/// One video-hour's difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// Video.
    pub video_id: String,
    /// Hour.
    pub hour: DateTime<Utc>,
    /// Speed views.
    pub speed_views: u64,
    /// Batch views.
    pub batch_views: u64,
    /// Speed billable.
    pub speed_billable: u64,
    /// Batch billable + fraud-filtered.
    pub batch_billable_before_cap: u64,
    /// Each cause with the number of views it explains.
    pub causes: Vec<(Cause, u64)>,
}

/// The reconciliation.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Range compared.
    pub from: DateTime<Utc>,
    /// End (exclusive).
    pub to: DateTime<Utc>,
    /// Hours of the range the published batch owns (only those are compared).
    pub hours_compared: usize,
    /// Video-hours compared.
    pub video_hours: usize,
    /// Video-hours where speed and batch agree exactly (filtered views
    /// aside).
    pub agreeing: usize,
    /// Every difference.
    pub differences: Vec<Difference>,
    /// Views per cause over the range.
    pub totals: BTreeMap<Cause, u64>,
}

impl Cause {
    /// The cause of views `rule` filtered.
    pub fn filtered_by(rule: FraudRule) -> Cause {
        match rule {
            FraudRule::TokenReplay => Cause::TokenReplay,
            FraudRule::ImpossibleWatch => Cause::ImpossibleWatch,
            FraudRule::RepeatLoop => Cause::RepeatLoop,
            FraudRule::BotFarm => Cause::BotFarm,
            FraudRule::ZeroEngagement => Cause::ZeroEngagement,
            FraudRule::DailyCap => Cause::DailyCap,
            FraudRule::Metronome => Cause::Metronome,
        }
    }
}

impl Report {
    /// Whether any difference has no known cause.
    pub fn has_unexplained(&self) -> bool {
        self.totals.get(&Cause::Unexplained).copied().unwrap_or(0) > 0
    }
}

/// Reconciles `speed` (already read from Redis for the range) with the
/// published batch for `[from, to)`. The copies batch removed are found by
/// the batch engine's own read and dedup of the runs' inputs, within
/// `memory` (spilling past half of it, as a run does).
pub async fn reconcile(
    store: Arc<dyn ObjectStore>,
    speed: &SpeedTable,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    dedup_window: Duration,
    memory: &batch::memory::Memory,
) -> Result<Report> {
    let state = store::state::current(store.as_ref())
        .await?
        .ok_or_else(|| {
            Error::Input("nothing is published yet; run `viewcount batch run` first".into())
        })?;
    let owned: BTreeMap<DateTime<Utc>, String> = state
        .hours
        .range(from..to)
        .map(|(h, r)| (*h, r.clone()))
        .collect();
    let mut batch: ViewsTable = BTreeMap::new();
    let mut filtered: BTreeMap<(String, DateTime<Utc>), Causes> = BTreeMap::new();
    let mut runs: Vec<&String> = owned.values().collect();
    runs.sort();
    runs.dedup();
    for r in runs {
        let manifest = state.manifest(store.as_ref(), r).await?;
        for (k, v) in load_views(store.as_ref(), &manifest).await? {
            if owned.get(&k.1) == Some(r) {
                batch.insert(k, v);
            }
        }
        for (k, rules) in load_by_video_hour(store.as_ref(), &manifest).await? {
            if owned.get(&k.1) == Some(r) {
                let causes = rules
                    .into_iter()
                    .map(|(rule, n)| (Cause::filtered_by(rule), n));
                filtered.entry(k).or_default().extend(causes);
            }
        }
    }
    // Each video-hour's filtered views by rule; those of a run without
    // the table (rules v1) were the daily cap's.
    let mut by_rule = |k: &(String, DateTime<Utc>), bf: u64| -> Result<Causes> {
        let causes = filtered.remove(k).unwrap_or_default();
        let sum: u64 = causes.iter().map(|c| c.1).sum();
        if causes.is_empty() && bf > 0 {
            return Ok(vec![(Cause::DailyCap, bf)]);
        }
        if sum != bf {
            return Err(Error::Corrupt(format!(
                "the filtered table of {} {} gives {sum} views by rule but the views table {bf} fraud-filtered; \
                 rerun `viewcount batch run` for that hour",
                k.0,
                schemas::event::format_timestamp(&k.1)
            )));
        }
        Ok(causes)
    };
    let excess = if owned.is_empty() {
        BTreeMap::new()
    } else {
        speed_excess(store, &state, &owned, dedup_window, memory).await?
    };

    let mut keys: Vec<&(String, DateTime<Utc>)> = batch
        .keys()
        .chain(speed.keys().filter(|(_, h)| owned.contains_key(h)))
        .collect();
    keys.sort();
    keys.dedup();
    let mut differences = Vec::new();
    let mut totals: BTreeMap<Cause, u64> = BTreeMap::new();
    let mut agreeing = 0;
    for k in &keys {
        let b = batch.get(*k).copied().unwrap_or_default();
        let s = speed.get(*k).copied().unwrap_or_default();
        let (bv, bb, bf) = (b[0], b[1], b[2]);
        let (sv, sb) = (s[0], s[1]);
        let rules = by_rule(k, bf)?;
        if sv == bv && sb == bb + bf {
            for (c, n) in rules {
                *totals.entry(c).or_default() += n;
            }
            agreeing += 1;
            continue;
        }
        let mut causes = rules;
        let mut extra = sv.saturating_sub(bv);
        let known = excess.get(*k).copied().unwrap_or_default();
        for (cause, n) in [
            (Cause::ConflictingDuplicate, known[0]),
            (Cause::LateBeyondDedupWindow, known[1]),
        ] {
            let take = n.min(extra);
            if take > 0 {
                causes.push((cause, take));
                extra -= take;
            }
        }
        let unexplained = extra + bv.saturating_sub(sv);
        if unexplained > 0 {
            causes.push((Cause::Unexplained, unexplained));
        }
        for (c, n) in &causes {
            *totals.entry(*c).or_default() += n;
        }
        differences.push(Difference {
            video_id: k.0.clone(),
            hour: k.1,
            speed_views: sv,
            batch_views: bv,
            speed_billable: sb,
            batch_billable_before_cap: bb + bf,
            causes,
        });
    }
    Ok(Report {
        from,
        to,
        hours_compared: owned.len(),
        video_hours: keys.len(),
        agreeing,
        differences,
        totals,
    })
}

/// Per (video, hour): copies batch removed that speed counts, by cause
/// `[conflicting, late beyond the window]`.
async fn speed_excess(
    store: Arc<dyn ObjectStore>,
    state: &store::Published,
    owned: &BTreeMap<DateTime<Utc>, String>,
    dedup_window: Duration,
    memory: &batch::memory::Memory,
) -> Result<BTreeMap<(String, DateTime<Utc>), [u64; 2]>> {
    // The inputs of the owning runs: exactly what batch read.
    let mut inputs: Vec<Input> = Vec::new();
    let mut rules: Option<schemas::RuleSet> = None;
    let mut runs: Vec<&String> = owned.values().collect();
    runs.sort();
    runs.dedup();
    for r in runs {
        let m: Manifest = state.manifest(store.as_ref(), r).await?;
        // Which copies batch removed depends on which rows it found valid:
        // judge them by the rules the runs counted with.
        match rules {
            Some(seen) if seen != m.rules => {
                return Err(Error::Input(format!(
                    "the runs owning this range counted with different rule sets ({seen:?} and {:?} in run {r}); \
                     reconcile a range counted under one rule set, or rerun `viewcount batch run` over the whole range",
                    m.rules
                )));
            }
            _ => rules = Some(m.rules),
        }
        inputs.extend(m.inputs);
    }
    inputs.sort_by(|a, b| a.path.cmp(&b.path));
    inputs.dedup_by(|a, b| a.path == b.path);
    if inputs.is_empty() {
        return Ok(BTreeMap::new());
    }
    // The batch engine's own read and dedup over exactly what the runs read
    // (valid rows only, the winner order of `schemas::dedup`), so what
    // reconcile calls a removed copy is exactly what batch removed.
    Ok(batch::run::removed_copies(
        store,
        &inputs,
        &rules.unwrap_or_default(),
        dedup_window,
        memory,
    )
    .await?)
}
