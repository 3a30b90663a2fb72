//! Statements (DESIGN §5.6, §6): a period's batch billable views × the rate
//! card, as files under `statements/<YYYY-MM>/<statement_id>/`, recorded in
//! the ledger.
//!
//! A statement is a pure function of its inputs — the run owning each hour
//! of the period (and of every finalized period it adjusts), the catalog,
//! the rate card and the code version — and its id is the hash of them, so
//! the same inputs give the same id and the same bytes. Speed numbers never
//! reach it.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{ArrayRef, Decimal128Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use rust_decimal::Decimal;
use schemas::fraud::FraudRule;
use serde::{Deserialize, Serialize};
use store::catalog::Catalog;
use store::state::Published;

use crate::ledger::{
    self, Appended, Entry, Inputs, Kind, Ledger, LogKey, NewEntry, RulesFile, RunRules,
    SealedTotals, Totals, TotalsFile,
};
use crate::money::{self, format_amount, format_cpm};
use crate::rates::RateCard;
use crate::{Error, Result};

/// Code version recorded in statements (part of the id).
pub const CODE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The statement CSV's header (DESIGN §6).
pub const CSV_HEADER: [&str; 9] = [
    "creator_id",
    "video_id",
    "title",
    "billable_views",
    "cpm",
    "amount",
    "currency",
    "kind",
    "reference",
];

/// A statement's directory in the store: `statements/<YYYY-MM>/<id>`
/// (DESIGN §6), as [`ledger::statement_dir`] spells it.
pub fn dir(period: &str, statement_id: &str) -> String {
    ledger::statement_dir(period, statement_id)
}

/// The store path of file `name` (like `statement.csv`) of the statement
/// a ledger entry records.
pub fn file_of(entry: &Entry, name: &str) -> Path {
    Path::from(format!(
        "{}/{name}",
        dir(&entry.period, &entry.statement_id)
    ))
}

/// One line of a recorded statement CSV, read back: the [`Line`] and the
/// currency the file states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedLine {
    /// The line.
    pub line: Line,
    /// Its `currency` column.
    pub currency: String,
}

/// Parses a statement CSV (`statement.csv`, or `unattributed.csv`) as
/// [`Statement::csv`] writes it, the one reader of the format: the header
/// must be [`CSV_HEADER`], and line *i* after it is leaf *i* of the ledger's
/// line tree ([`ledger::line_leaves`]; a title is one line of text, so a
/// record never spans two). Anything else, a bad number, a missing field,
/// an unknown kind, is `Tampered`, naming `path` and the line: a recorded
/// statement is never read around.
pub fn parse_csv(path: &str, bytes: &[u8]) -> Result<Vec<RecordedLine>> {
    let bad = |line: usize, why: String| Error::Tampered(format!("{path} line {line}: {why}"));
    let header = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    if header != CSV_HEADER.join(",").as_bytes() {
        return Err(bad(
            1,
            format!("the header is not {}", CSV_HEADER.join(",")),
        ));
    }
    let mut out = Vec::new();
    for (i, leaf) in ledger::line_leaves(bytes).into_iter().enumerate() {
        let n = i + 2;
        let record = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(leaf)
            .records()
            .next()
            .ok_or_else(|| bad(n, "an empty line".into()))?
            .map_err(|e| bad(n, e.to_string()))?;
        if record.len() != CSV_HEADER.len() {
            return Err(bad(
                n,
                format!("{} fields, not {}", record.len(), CSV_HEADER.len()),
            ));
        }
        let f = |k: usize| &record[k];
        let opt = |k: usize| (!f(k).is_empty()).then(|| f(k).to_owned());
        let decimal = |k: usize| -> Result<Option<Decimal>> {
            opt(k)
                .map(|v| {
                    Decimal::from_str(&v)
                        .map_err(|_| bad(n, format!("{} {v:?} is not a decimal", CSV_HEADER[k])))
                })
                .transpose()
        };
        let kind = match f(7) {
            "views" => LineKind::Views,
            "adjustment" => LineKind::Adjustment,
            other => {
                return Err(bad(
                    n,
                    format!("kind {other:?} is neither views nor adjustment"),
                ));
            }
        };
        out.push(RecordedLine {
            line: Line {
                creator_id: opt(0),
                video_id: f(1).to_owned(),
                title: f(2).to_owned(),
                billable_views: f(3).parse().map_err(|_| {
                    bad(
                        n,
                        format!("billable_views {:?} is not a whole number", f(3)),
                    )
                })?,
                cpm: decimal(4)?,
                amount: decimal(5)?,
                kind,
                reference: opt(8)
                    .map(|r| {
                        r.parse()
                            .map_err(|_| bad(n, format!("reference {r:?} is not a ledger entry")))
                    })
                    .transpose()?,
            },
            currency: f(6).to_owned(),
        });
    }
    Ok(out)
}

/// Reads file `name` (like `rates.toml`) of the statement `entry` records,
/// checked against the SHA-256 the entry recorded for it: `Tampered` if it
/// differs, is missing, or the entry recorded none.
pub async fn read_recorded(store: &dyn ObjectStore, entry: &Entry, name: &str) -> Result<Bytes> {
    let path = file_of(entry, name);
    let bytes = get(store, &path).await?;
    match entry.files.get(path.as_ref()) {
        Some(want) if store::layout::sha256(&bytes) == *want => Ok(bytes),
        Some(_) => Err(Error::Tampered(format!(
            "{path} does not have the SHA-256 ledger entry {} recorded; run `viewcount ledger verify`",
            entry.seq
        ))),
        None => Err(Error::Tampered(format!(
            "ledger entry {} records no SHA-256 for {path}; run `viewcount ledger verify`",
            entry.seq
        ))),
    }
}

/// Reads statement CSV `name` (`statement.csv` or `unattributed.csv`) of
/// the statement `entry` records ([`read_recorded`]): its bytes and its
/// lines ([`parse_csv`]).
pub async fn read_csv(
    store: &dyn ObjectStore,
    entry: &Entry,
    name: &str,
) -> Result<(Bytes, Vec<RecordedLine>)> {
    let bytes = read_recorded(store, entry, name).await?;
    let lines = parse_csv(file_of(entry, name).as_ref(), &bytes)?;
    Ok((bytes, lines))
}

/// The totals of the statement `entry` records: a format-1 entry's own, or
/// a format-2 entry's `totals.json`, read against the hash the entry
/// commits to ([`read_recorded`]) and checked to be this statement's, in
/// its currency, with its line count.
pub async fn entry_totals(store: &dyn ObjectStore, entry: &Entry) -> Result<Totals> {
    if let Some(t) = &entry.totals {
        return Ok(t.clone());
    }
    let path = file_of(entry, ledger::TOTALS_FILE);
    let bytes = read_recorded(store, entry, ledger::TOTALS_FILE).await?;
    let f: TotalsFile =
        serde_json::from_slice(&bytes).map_err(|err| Error::Tampered(format!("{path}: {err}")))?;
    let salt_ok = f.salt.len() == 64 && f.salt.bytes().all(|b| b.is_ascii_hexdigit());
    if f.statement_id != entry.statement_id
        || f.period != entry.period
        || !salt_ok
        || f.totals.currency != entry.currency()
        || f.totals.lines != entry.lines()
    {
        return Err(Error::Tampered(format!(
            "{path} is not the totals of statement {} of {} that ledger entry {} records",
            entry.statement_id, entry.period, entry.seq
        )));
    }
    Ok(f.totals)
}

/// The rules of the runs the statement `entry` records counted with
/// (`rules.json`, read against the hash the entry recorded and checked to be
/// this statement's); `None` for a statement from before the file existed.
pub async fn entry_rules(store: &dyn ObjectStore, entry: &Entry) -> Result<Option<RulesFile>> {
    let path = file_of(entry, ledger::RULES_FILE);
    if !entry.files.contains_key(path.as_ref()) {
        return Ok(None);
    }
    let bytes = read_recorded(store, entry, ledger::RULES_FILE).await?;
    let f: RulesFile =
        serde_json::from_slice(&bytes).map_err(|err| Error::Tampered(format!("{path}: {err}")))?;
    let salt_ok = f.salt.len() == 64 && f.salt.bytes().all(|b| b.is_ascii_hexdigit());
    if f.statement_id != entry.statement_id || f.period != entry.period || !salt_ok {
        return Err(Error::Tampered(format!(
            "{path} is not the rules of statement {} of {} that ledger entry {} records",
            entry.statement_id, entry.period, entry.seq
        )));
    }
    Ok(Some(f))
}

/// The totals a statement's recorded CSVs add up to, as [`Statement::totals`]
/// computes them, to check against the totals its entry records.
async fn recount_totals(store: &dyn ObjectStore, entry: &Entry) -> Result<Totals> {
    let (_, lines) = read_csv(store, entry, "statement.csv").await?;
    let (_, unattributed) = read_csv(store, entry, "unattributed.csv").await?;
    let path = file_of(entry, "statement.csv");
    if let Some(r) = lines.iter().find(|r| r.currency != entry.currency()) {
        return Err(Error::Tampered(format!(
            "{path}: a line of {} is in {}, not the statement's {}",
            r.line.video_id,
            r.currency,
            entry.currency()
        )));
    }
    totals_of(
        entry.currency(),
        lines.iter().map(|r| &r.line),
        unattributed.iter().map(|r| &r.line),
    )
    .map_err(|what| Error::Tampered(format!("{path}: {what} overflows the decimal range")))
}

/// The totals of a statement's lines, the one place they are summed: when
/// a statement is built (where an overflow refuses it) and when `verify
/// --deep` recounts a recorded one. `Err` names the sum that overflowed.
fn totals_of<'a>(
    currency: &str,
    lines: impl Iterator<Item = &'a Line>,
    unattributed: impl Iterator<Item = &'a Line>,
) -> std::result::Result<Totals, String> {
    let mut by_creator: BTreeMap<&str, Decimal> = BTreeMap::new();
    let mut billable_views: i64 = 0;
    let mut count: u64 = 0;
    for l in lines {
        count += 1;
        billable_views = billable_views
            .checked_add(l.billable_views)
            .ok_or("the billable views")?;
        if let (Some(c), Some(a)) = (&l.creator_id, l.amount) {
            let t = by_creator.entry(c).or_default();
            *t = t
                .checked_add(a)
                .ok_or_else(|| format!("the total of creator {c}"))?;
        }
    }
    let amount = money::sum(by_creator.values()).ok_or("the statement total")?;
    Ok(Totals {
        currency: currency.to_owned(),
        amount: format_amount(amount),
        billable_views,
        creators: by_creator.len() as u64,
        lines: count,
        unattributed_billable_views: unattributed.map(|l| l.billable_views.max(0) as u64).sum(),
    })
}

/// What [`verify_deep`] re-checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeepVerified {
    /// Statements followed down.
    pub statements: u64,
    /// Run manifests checked (each against the hash its statement, or for
    /// statements from before manifests were hashed, nothing, recorded).
    pub manifests: u64,
    /// Views and filtered files re-hashed against their run's manifest.
    pub outputs: u64,
    /// Raw archive files re-hashed against the manifests that read them.
    pub raw_files: u64,
    /// Bytes re-hashed.
    pub bytes: u64,
}

/// Re-checks every statement of `log` down to the data it was computed
/// from: its manifest (against the hash its ledger entry recorded), each
/// run that owned one of its hours (the run's manifest against the hash the
/// statement recorded), the run's views and filtered files, and every raw
/// archive file the run read (each against its manifest). Each object is
/// hashed as it streams in; the first mismatch is an error naming it.
/// `progress` is told each statement as it starts.
pub async fn verify_deep(
    store: &dyn ObjectStore,
    log: &ledger::Log,
    progress: &mut dyn FnMut(&Entry),
) -> Result<DeepVerified> {
    let mut done = DeepVerified::default();
    // Each run followed down once: the rules its manifest records.
    let mut seen_runs: BTreeMap<String, RunRules> = BTreeMap::new();
    for e in log.entries.iter().filter(|e| e.kind == Kind::Statement) {
        progress(e);
        let manifest: StatementManifest = serde_json::from_slice(
            &read_recorded(store, e, "manifest.json").await?,
        )
        .map_err(|err| Error::Tampered(format!("{}: {err}", file_of(e, "manifest.json"))))?;
        let recorded = entry_totals(store, e).await?;
        let recounted = recount_totals(store, e).await?;
        let show = |t: &Totals| {
            format!(
                "{} {} to {} creators for {} billable views in {} lines",
                t.amount, t.currency, t.creators, t.billable_views, t.lines
            )
        };
        if recorded != recounted {
            return Err(Error::Tampered(format!(
                "statement {} of {} (ledger entry {}): its lines add up to {}, but the totals \
                 recorded for it are {}",
                e.statement_id,
                e.period,
                e.seq,
                show(&recounted),
                show(&recorded)
            )));
        }
        if manifest.totals != recorded {
            return Err(Error::Tampered(format!(
                "{}: its totals ({}) are not the ones recorded for the statement ({})",
                file_of(e, "manifest.json"),
                show(&manifest.totals),
                show(&recorded)
            )));
        }
        done.statements += 1;
        let runs: BTreeSet<&String> = manifest.inputs.hours.values().collect();
        // The rules it commits to are those its runs counted with, every
        // run's and no other.
        let committed = entry_rules(store, e).await?;
        if let Some(f) = &committed {
            let named: BTreeSet<&String> = f.runs.keys().collect();
            if named != runs {
                return Err(Error::Tampered(format!(
                    "{}: it names the rules of runs {named:?}, but the statement counts runs {runs:?}",
                    file_of(e, ledger::RULES_FILE)
                )));
            }
        }
        let check_rules = |run: &str, actual: &RunRules| match committed
            .as_ref()
            .and_then(|f| f.runs.get(run))
        {
            Some(r) if r != actual => Err(Error::Tampered(format!(
                "{}: the rules it records for run {run} are not the ones the run's manifest records",
                file_of(e, ledger::RULES_FILE)
            ))),
            _ => Ok(()),
        };
        for run in runs {
            if let Some(actual) = seen_runs.get(run) {
                check_rules(run, actual)?;
                continue;
            }
            let named_by = format!("statement {}", e.statement_id);
            let m = store::manifest::load(
                store,
                run,
                manifest.inputs.manifests.get(run).map(String::as_str),
                &named_by,
            )
            .await?;
            done.manifests += 1;
            let actual = RunRules {
                rules_version: m.rules_version,
                rules: m.rules,
            };
            check_rules(run, &actual)?;
            seen_runs.insert(run.clone(), actual);
            for o in &m.outputs {
                let path = Path::from(o.path.as_str());
                let bytes = m.read_output(store, &path).await?.unwrap_or_default();
                done.outputs += 1;
                done.bytes += bytes.len() as u64;
            }
            let read_by = format!("run {run}'s manifest");
            for i in &m.inputs {
                let bytes = store::layout::get_verified(
                    store,
                    &Path::from(i.path.as_str()),
                    &i.sha256,
                    &read_by,
                )
                .await?;
                done.raw_files += 1;
                done.bytes += bytes.len() as u64;
            }
        }
    }
    Ok(done)
}

/// A billing period: one calendar month, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Period {
    first: NaiveDate,
}

impl Period {
    /// Parses `YYYY-MM`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::Input(format!(
                "period {s:?} is not a month: write it as YYYY-MM, like 2026-10"
            ))
        };
        if s.len() != 7 || s.as_bytes()[4] != b'-' {
            return Err(bad());
        }
        let first = NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").map_err(|_| bad())?;
        Ok(Self { first })
    }

    /// `YYYY-MM`.
    pub fn label(&self) -> String {
        self.first.format("%Y-%m").to_string()
    }

    /// First instant.
    pub fn start(&self) -> DateTime<Utc> {
        self.first
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc()
    }

    /// End (exclusive): the next month's first instant.
    pub fn end(&self) -> DateTime<Utc> {
        let (y, m) = if self.first.month() == 12 {
            (self.first.year() + 1, 1)
        } else {
            (self.first.year(), self.first.month() + 1)
        };
        NaiveDate::from_ymd_opt(y, m, 1)
            .unwrap_or(self.first)
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc()
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

/// `views` or `adjustment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineKind {
    /// Billable views of the period.
    Views,
    /// A correction of a finalized period.
    Adjustment,
}

impl LineKind {
    /// As the CSV's `kind` column spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::Views => "views",
            LineKind::Adjustment => "adjustment",
        }
    }
}

/// One statement line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    /// The creator paid (`None`: unattributed, not paid).
    pub creator_id: Option<String>,
    /// The video.
    pub video_id: String,
    /// Its title from the catalog.
    pub title: String,
    /// Billable views (negative in an adjustment that takes views back).
    pub billable_views: i64,
    /// The rate in force (`None`: unattributed).
    #[serde(serialize_with = "opt_cpm")]
    pub cpm: Option<Decimal>,
    /// What it pays (`None`: unattributed).
    #[serde(serialize_with = "opt_amount")]
    pub amount: Option<Decimal>,
    /// `views` or `adjustment`.
    pub kind: LineKind,
    /// For an adjustment: the ledger entry of the statement it corrects.
    pub reference: Option<u64>,
}

fn opt_cpm<S: serde::Serializer>(
    v: &Option<Decimal>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match v {
        Some(d) => s.serialize_str(&format_cpm(*d)),
        None => s.serialize_none(),
    }
}

fn opt_amount<S: serde::Serializer>(
    v: &Option<Decimal>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match v {
        Some(d) => s.serialize_str(&format_amount(*d)),
        None => s.serialize_none(),
    }
}

/// (creator, video, rate) → billable views: what a period pays.
pub type Lines = BTreeMap<(String, String, Decimal), i64>;

/// Billable views of one creator's video the invalid-traffic rules
/// removed in a period: not paid, listed in `statement.json` so the
/// creator sees what was removed and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Filtered {
    /// The video.
    pub video_id: String,
    /// Billable views removed.
    pub filtered_views: u64,
    /// The same by the rule that removed them (only rules that did).
    pub by_rule: BTreeMap<&'static str, u64>,
}

/// A period counted from batch numbers.
#[derive(Debug, Clone, Default)]
pub struct Counted {
    /// Paid lines.
    pub lines: Lines,
    /// Per creator and video, the billable views the rules removed.
    pub filtered: BTreeMap<(String, String), Filtered>,
    /// Unattributed video → billable views.
    pub unattributed: BTreeMap<String, i64>,
    /// Each hour of the period the batch owns → its run.
    pub hours: BTreeMap<DateTime<Utc>, String>,
    /// Each of those runs → the SHA-256 of its manifest the published state
    /// recorded (empty for a state from before manifests were hashed).
    pub manifests: BTreeMap<String, String>,
    /// The counting rules versions of those runs.
    pub rules_versions: BTreeSet<u32>,
    /// Each of those runs → the rules it counted with.
    pub rules: BTreeMap<String, RunRules>,
}

/// Counts `period` from the batch runs `published` names: per (creator,
/// video, rate in force that day), the billable views.
pub async fn count(
    store: &dyn ObjectStore,
    published: &Published,
    period: Period,
    catalog: Option<&Catalog>,
    rates: &RateCard,
) -> Result<Counted> {
    let hours: BTreeMap<DateTime<Utc>, String> = published
        .hours
        .range(period.start()..period.end())
        .map(|(h, r)| (*h, r.clone()))
        .collect();
    let mut by_run: BTreeMap<&str, BTreeSet<DateTime<Utc>>> = BTreeMap::new();
    for (h, r) in &hours {
        by_run.entry(r.as_str()).or_default().insert(*h);
    }
    let mut out = Counted {
        hours: hours.clone(),
        ..Counted::default()
    };
    for (run, owned) in by_run {
        let manifest = published.manifest(store, run).await?;
        out.manifests.insert(
            run.to_owned(),
            published.manifests.get(run).cloned().unwrap_or_default(),
        );
        let table = store::views::load_views(store, &manifest).await?;
        // By rule, where the run has a filtered table (rules v2); a run
        // without one had only the daily cap.
        let mut rules = store::filtered::load_by_video_hour(store, &manifest).await?;
        out.rules_versions.insert(manifest.rules_version);
        out.rules.insert(
            run.to_owned(),
            RunRules {
                rules_version: manifest.rules_version,
                rules: manifest.rules,
            },
        );
        for ((video, hour), counts) in table {
            if !owned.contains(&hour) {
                continue;
            }
            if counts[2] > 0
                && let Some(creator) = catalog.and_then(|c| c.creator_of(&video))
            {
                let f = out
                    .filtered
                    .entry((creator.to_owned(), video.clone()))
                    .or_insert_with(|| Filtered {
                        video_id: video.clone(),
                        ..Filtered::default()
                    });
                f.filtered_views += counts[2];
                let by = rules
                    .remove(&(video.clone(), hour))
                    .unwrap_or_else(|| vec![(FraudRule::DailyCap, counts[2])]);
                for (rule, n) in by {
                    *f.by_rule.entry(rule.name()).or_default() += n;
                }
            }
            if counts[1] == 0 {
                continue;
            }
            let billable = i64::try_from(counts[1])
                .map_err(|_| Error::Bug(format!("{video} {hour}: billable views out of range")))?;
            match catalog.and_then(|c| c.creator_of(&video)) {
                Some(creator) => {
                    let cpm = rates.cpm(creator, hour.date_naive());
                    *out.lines
                        .entry((creator.to_owned(), video, cpm))
                        .or_default() += billable;
                }
                None => *out.unattributed.entry(video).or_default() += billable,
            }
        }
    }
    Ok(out)
}

/// A statement, computed, before its files are written.
#[derive(Debug, Clone)]
pub struct Statement {
    /// The hash of its inputs.
    pub id: String,
    /// The month.
    pub period: Period,
    /// Labelled provisional everywhere.
    pub provisional: bool,
    /// ISO 4217.
    pub currency: String,
    /// Paid lines, sorted by creator, video, kind, reference, rate.
    pub lines: Vec<Line>,
    /// Unattributed videos (not paid).
    pub unattributed: Vec<Line>,
    /// Per creator and video, billable views the invalid-traffic rules
    /// removed (not paid).
    pub filtered: BTreeMap<(String, String), Filtered>,
    /// Inputs.
    pub manifest_inputs: ManifestInputs,
    /// Each run it counts → the rules it counted with (`rules.json`).
    pub rules: BTreeMap<String, RunRules>,
}

/// The inputs a statement manifest records (all part of the id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestInputs {
    /// The run owning each hour of the period.
    pub hours: BTreeMap<DateTime<Utc>, String>,
    /// SHA-256 of each of those runs' manifests, as the published state
    /// recorded it (so the statement vouches for everything below it:
    /// `ledger verify --deep` and explain check it). Statements made
    /// before manifests were hashed have none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub manifests: BTreeMap<String, String>,
    /// Catalog SHA-256, if one was in force.
    pub catalog_sha256: Option<String>,
    /// Rate card SHA-256 (its bytes are `rates.toml` beside the statement).
    pub rate_card_sha256: String,
    /// Counting rules versions of the runs.
    pub rules_versions: Vec<u32>,
    /// This code's version.
    pub code_version: String,
    /// Finalized periods whose changes this statement's adjustments carry:
    /// the statement entry corrected and the run owning each of its hours.
    pub adjusts: Vec<Adjusted>,
}

/// A finalized period an adjustment was computed for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adjusted {
    /// `YYYY-MM`.
    pub period: String,
    /// The ledger entry of its final statement.
    pub entry: u64,
    /// The run owning each of its hours now.
    pub hours: BTreeMap<DateTime<Utc>, String>,
    /// Earlier adjustments of it (ledger entries of finalized statements).
    pub earlier: Vec<u64>,
}

impl Statement {
    /// Σ of each creator's total (each a Σ of rounded lines).
    pub fn total(&self) -> Decimal {
        let by_creator = self.creator_totals();
        money::sum(by_creator.values()).unwrap_or_default()
    }

    /// Each creator's total: the sum of their rounded lines.
    pub fn creator_totals(&self) -> BTreeMap<String, Decimal> {
        let mut out: BTreeMap<String, Vec<Decimal>> = BTreeMap::new();
        for l in &self.lines {
            if let (Some(c), Some(a)) = (&l.creator_id, l.amount) {
                out.entry(c.clone()).or_default().push(a);
            }
        }
        out.into_iter()
            .map(|(c, a)| (c, money::sum(&a).unwrap_or_default()))
            .collect()
    }

    /// The store directory.
    pub fn dir(&self) -> String {
        dir(&self.period.label(), &self.id)
    }

    /// The totals a ledger entry records. `Err` when a sum overflows the
    /// decimal range: checked once, when the statement is built, so
    /// [`Statement::total`] and [`Statement::creator_totals`] never fall
    /// back to zero.
    pub fn totals(&self) -> Result<Totals> {
        totals_of(&self.currency, self.lines.iter(), self.unattributed.iter())
            .map_err(|what| Error::Input(format!("{what} overflows the decimal range")))
    }

    /// `statement.csv` (or, with `unattributed`, `unattributed.csv`).
    pub fn csv(&self, unattributed: bool) -> Result<Vec<u8>> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(CSV_HEADER).map_err(csv_err)?;
        let lines = if unattributed {
            &self.unattributed
        } else {
            &self.lines
        };
        for l in lines {
            let views = l.billable_views.to_string();
            let cpm = l.cpm.map(format_cpm).unwrap_or_default();
            let amount = l.amount.map(format_amount).unwrap_or_default();
            let reference = l.reference.map(|r| r.to_string()).unwrap_or_default();
            w.write_record([
                l.creator_id.as_deref().unwrap_or(""),
                &l.video_id,
                &l.title,
                &views,
                &cpm,
                &amount,
                &self.currency,
                l.kind.as_str(),
                &reference,
            ])
            .map_err(csv_err)?;
        }
        w.into_inner().map_err(|e| Error::Bug(format!("csv: {e}")))
    }

    /// `statement.json`.
    pub fn json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Creator<'a> {
            creator_id: &'a str,
            total: String,
            billable_views: i64,
            lines: Vec<&'a Line>,
            /// Billable views the invalid-traffic rules removed (not paid).
            filtered_views: u64,
            /// Per video, what was removed and by which rule.
            filtered: Vec<&'a Filtered>,
        }
        #[derive(Serialize)]
        struct Unattributed {
            videos: usize,
            billable_views: i64,
        }
        #[derive(Serialize)]
        struct Doc<'a> {
            statement_id: &'a str,
            period: String,
            provisional: bool,
            currency: &'a str,
            total: String,
            billable_views: i64,
            creators: Vec<Creator<'a>>,
            unattributed: Unattributed,
        }
        let totals = self.creator_totals();
        let mut by_creator: BTreeMap<&str, Creator<'_>> = BTreeMap::new();
        fn creator<'a>(c: &'a str, totals: &BTreeMap<String, Decimal>) -> Creator<'a> {
            Creator {
                creator_id: c,
                total: format_amount(totals.get(c).copied().unwrap_or_default()),
                billable_views: 0,
                lines: Vec::new(),
                filtered_views: 0,
                filtered: Vec::new(),
            }
        }
        for l in &self.lines {
            let Some(c) = l.creator_id.as_deref() else {
                continue;
            };
            let entry = by_creator.entry(c).or_insert_with(|| creator(c, &totals));
            entry.billable_views += l.billable_views;
            entry.lines.push(l);
        }
        for ((c, _), f) in &self.filtered {
            let entry = by_creator.entry(c).or_insert_with(|| creator(c, &totals));
            entry.filtered_views += f.filtered_views;
            entry.filtered.push(f);
        }
        let creators: Vec<Creator<'_>> = by_creator.into_values().collect();
        let doc = Doc {
            statement_id: &self.id,
            period: self.period.label(),
            provisional: self.provisional,
            currency: &self.currency,
            total: format_amount(self.total()),
            billable_views: self.lines.iter().map(|l| l.billable_views).sum(),
            creators,
            unattributed: Unattributed {
                videos: self.unattributed.len(),
                billable_views: self.unattributed.iter().map(|l| l.billable_views).sum(),
            },
        };
        pretty(&doc)
    }

    /// `statement.parquet`: the paid lines, money as exact decimals.
    pub fn parquet(&self) -> Result<Bytes> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("creator_id", DataType::Utf8, false),
            Field::new("video_id", DataType::Utf8, false),
            Field::new("title", DataType::Utf8, false),
            Field::new("billable_views", DataType::Int64, false),
            Field::new(
                "cpm",
                DataType::Decimal128(38, money::CPM_MAX_SCALE as i8),
                false,
            ),
            Field::new(
                "amount",
                DataType::Decimal128(38, money::AMOUNT_SCALE as i8),
                false,
            ),
            Field::new("currency", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("reference", DataType::Int64, true),
        ]));
        let scaled = |d: Decimal, scale: u32| {
            let mut d = d;
            d.rescale(scale);
            d.mantissa()
        };
        let l = &self.lines;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                l.iter().map(|x| x.creator_id.clone().unwrap_or_default()),
            )),
            Arc::new(StringArray::from_iter_values(l.iter().map(|x| &x.video_id))),
            Arc::new(StringArray::from_iter_values(l.iter().map(|x| &x.title))),
            Arc::new(Int64Array::from_iter_values(
                l.iter().map(|x| x.billable_views),
            )),
            Arc::new(
                Decimal128Array::from_iter_values(
                    l.iter()
                        .map(|x| scaled(x.cpm.unwrap_or_default(), money::CPM_MAX_SCALE)),
                )
                .with_precision_and_scale(38, money::CPM_MAX_SCALE as i8)?,
            ),
            Arc::new(
                Decimal128Array::from_iter_values(
                    l.iter()
                        .map(|x| scaled(x.amount.unwrap_or_default(), money::AMOUNT_SCALE)),
                )
                .with_precision_and_scale(38, money::AMOUNT_SCALE as i8)?,
            ),
            Arc::new(StringArray::from_iter_values(
                l.iter().map(|_| &self.currency),
            )),
            Arc::new(StringArray::from_iter_values(
                l.iter().map(|x| x.kind.as_str()),
            )),
            Arc::new(Int64Array::from_iter(
                l.iter()
                    .map(|x| x.reference.and_then(|r| i64::try_from(r).ok())),
            )),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        Ok(store::layout::parquet_bytes(schema, &[batch])?)
    }
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementManifest {
    /// The statement.
    pub statement_id: String,
    /// `YYYY-MM`.
    pub period: String,
    /// Labelled provisional.
    pub provisional: bool,
    /// Its inputs.
    pub inputs: ManifestInputs,
    /// Its totals.
    pub totals: Totals,
    /// File name → hex SHA-256 of every other file in the directory.
    pub files: BTreeMap<String, String>,
}

fn pretty<T: Serialize>(v: &T) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).unwrap_or_default();
    b.push(b'\n');
    b
}

fn csv_err(e: csv::Error) -> Error {
    Error::Bug(format!("csv: {e}"))
}

/// How to report.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// The month.
    pub period: Period,
    /// Issue before the watermark passed the period end plus the grace.
    pub provisional: bool,
    /// How long after the period end late data may still arrive.
    pub grace: TimeDelta,
    /// Who runs it (recorded in the ledger).
    pub operator: String,
}

impl ReportOptions {
    /// The default grace: 72 hours.
    pub const DEFAULT_GRACE: TimeDelta = TimeDelta::hours(72);
}

/// What a report did.
#[derive(Debug, Clone)]
pub struct Reported {
    /// The statement.
    pub statement: Statement,
    /// Its ledger entry, new or found.
    pub entry: Appended,
    /// The files written (store paths).
    pub files: BTreeMap<String, String>,
}

/// Issues the statement of a period: checks the watermark, counts, adds
/// adjustments of earlier finalized periods, writes the files and records
/// them in the ledger. Re-running with the same inputs writes nothing and
/// returns the entry that holds it.
pub async fn report(
    store: Arc<dyn ObjectStore>,
    key: &LogKey,
    rate_card: &[u8],
    opts: &ReportOptions,
) -> Result<Reported> {
    let rates = RateCard::parse(rate_card)?;
    let period = opts.period;
    let published = store::state::current(store.as_ref())
        .await?
        .ok_or_else(|| {
            Error::NotReady(
                "nothing is published yet: run `viewcount batch run --from … --to …` first".into(),
            )
        })?;
    let need = period.end() + opts.grace;
    let w = published.watermark;
    if !opts.provisional && w.is_none_or(|w| w < need) {
        let missing = w.map_or_else(
            || "no hour is published".to_owned(),
            |w| {
                format!(
                    "the batch watermark is {}, {} hours short",
                    w.to_rfc3339(),
                    (need - w).num_hours()
                )
            },
        );
        return Err(Error::NotReady(format!(
            "{period} cannot be billed yet: {missing} of {} (the period's end plus the {}h grace). \
             Run `viewcount batch run --from {} --to {}` once the archive has those hours, \
             or pass --provisional for a statement labelled provisional",
            need.to_rfc3339(),
            opts.grace.num_hours(),
            w.unwrap_or(period.start()).format("%Y-%m-%dT%H:%M:%SZ"),
            need.format("%Y-%m-%dT%H:%M:%SZ"),
        )));
    }
    let ledger = Ledger::new(store.clone());
    let log = ledger.read().await?;
    if let Some(f) = log.finalized(&period.label()) {
        return Err(Error::Input(format!(
            "{period} was finalized in ledger entry {}: it is never reissued; later changes to it \
             appear as adjustment lines in a later period's statement",
            f.seq
        )));
    }
    let catalog = store::catalog::current(store.as_ref()).await?;
    let counted = count(store.as_ref(), &published, period, catalog.as_ref(), &rates).await?;
    let (adjust_lines, adjusts) = adjustments(store.as_ref(), &published, period, &log).await?;
    let inputs = ManifestInputs {
        hours: counted.hours.clone(),
        manifests: counted
            .manifests
            .iter()
            .filter(|(_, sha)| !sha.is_empty())
            .map(|(r, sha)| (r.clone(), sha.clone()))
            .collect(),
        catalog_sha256: catalog.as_ref().map(|c| c.sha256.clone()),
        rate_card_sha256: rates.sha256.clone(),
        rules_versions: counted.rules_versions.iter().copied().collect(),
        code_version: CODE_VERSION.to_owned(),
        adjusts,
    };
    let id = statement_id(&period, opts.provisional, &inputs);
    let statement = build(
        id,
        period,
        opts.provisional,
        &rates,
        catalog.as_ref(),
        &counted,
        adjust_lines,
        inputs,
    )?;
    if let Some(e) = log.statement(&statement.id) {
        return Ok(Reported {
            files: e.files.clone(),
            statement,
            entry: Appended::Existing(e.seq),
        });
    }
    let (files, sealed) = write_files(store.as_ref(), key, &statement, rate_card).await?;
    let mut runs: Vec<String> = statement
        .manifest_inputs
        .hours
        .values()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    runs.sort();
    let references: Vec<u64> = statement
        .manifest_inputs
        .adjusts
        .iter()
        .filter(|a| statement.lines.iter().any(|l| l.reference == Some(a.entry)))
        .map(|a| a.entry)
        .collect();
    let entry = Entry {
        seq: 0,
        prev: String::new(),
        kind: Kind::Statement,
        period: period.label(),
        statement_id: statement.id.clone(),
        provisional: statement.provisional,
        files: files.clone(),
        totals: None,
        sealed_totals: Some(sealed),
        inputs: Inputs {
            published_seq: published.seq,
            watermark: published.watermark,
            runs,
            catalog_sha256: statement.manifest_inputs.catalog_sha256.clone(),
            rate_card_sha256: rates.sha256.clone(),
        },
        lines_root: Some(ledger::lines_root(&statement.csv(false)?)?),
        references,
        operator: opts.operator.clone(),
        recorded_at: Utc::now(),
    };
    let id = statement.id.clone();
    let appended = ledger
        .append(key, NewEntry { entry }, |log| {
            log.statement(&id).map(|e| e.seq)
        })
        .await?;
    Ok(Reported {
        statement,
        entry: appended,
        files,
    })
}

/// The id: SHA-256 (first 32 hex digits) of every input.
fn statement_id(period: &Period, provisional: bool, inputs: &ManifestInputs) -> String {
    #[derive(Serialize)]
    struct Id<'a> {
        period: String,
        provisional: bool,
        inputs: &'a ManifestInputs,
    }
    let bytes = serde_json::to_vec(&Id {
        period: period.label(),
        provisional,
        inputs,
    })
    .unwrap_or_default();
    store::layout::sha256(&bytes)[..32].to_owned()
}

#[allow(clippy::too_many_arguments)]
fn build(
    id: String,
    period: Period,
    provisional: bool,
    rates: &RateCard,
    catalog: Option<&Catalog>,
    counted: &Counted,
    adjust_lines: Vec<Line>,
    manifest_inputs: ManifestInputs,
) -> Result<Statement> {
    let title = |video: &str| {
        catalog
            .and_then(|c| c.entry(video))
            .map(|e| e.title.clone())
            .unwrap_or_default()
    };
    let mut lines = Vec::with_capacity(counted.lines.len() + adjust_lines.len());
    for ((creator, video, cpm), &views) in &counted.lines {
        lines.push(Line {
            creator_id: Some(creator.clone()),
            video_id: video.clone(),
            title: title(video),
            billable_views: views,
            cpm: Some(*cpm),
            amount: Some(amount(views, *cpm)?),
            kind: LineKind::Views,
            reference: None,
        });
    }
    lines.extend(adjust_lines);
    lines.sort_by(|a, b| {
        (&a.creator_id, &a.video_id, a.kind, a.reference, a.cpm).cmp(&(
            &b.creator_id,
            &b.video_id,
            b.kind,
            b.reference,
            b.cpm,
        ))
    });
    let unattributed = counted
        .unattributed
        .iter()
        .map(|(video, &views)| Line {
            creator_id: None,
            video_id: video.clone(),
            title: String::new(),
            billable_views: views,
            cpm: None,
            amount: None,
            kind: LineKind::Views,
            reference: None,
        })
        .collect();
    let s = Statement {
        id,
        period,
        provisional,
        currency: rates.currency.clone(),
        lines,
        unattributed,
        filtered: counted.filtered.clone(),
        manifest_inputs,
        rules: counted.rules.clone(),
    };
    s.totals()?;
    Ok(s)
}

fn amount(views: i64, cpm: Decimal) -> Result<Decimal> {
    money::line_amount(views, cpm)
        .ok_or_else(|| Error::Input(format!("{views} views at {cpm} overflow the decimal range")))
}

/// Adjustment lines for every finalized period before `period` whose
/// billable views changed since its final statement: the difference per
/// (creator, video, rate) beyond what earlier adjustments already paid,
/// at the rate in force for the original period.
async fn adjustments(
    store: &dyn ObjectStore,
    published: &Published,
    period: Period,
    log: &ledger::Log,
) -> Result<(Vec<Line>, Vec<Adjusted>)> {
    let label = period.label();
    // Adjustment lines already issued, by the entry they correct: only
    // those in finalized statements count (a provisional or superseded
    // statement paid nothing).
    let mut issued: BTreeMap<u64, (Lines, Vec<u64>)> = BTreeMap::new();
    let finals: Vec<&Entry> = log
        .entries
        .iter()
        .filter(|e| e.kind == Kind::Finalize && e.period < label)
        .collect();
    let mut final_statements = Vec::new();
    for f in &finals {
        let seq = *f.references.first().ok_or_else(|| {
            Error::Tampered(format!("finalize entry {} names no statement entry", f.seq))
        })?;
        let s = log.entries.get(seq as usize).ok_or_else(|| {
            Error::Tampered(format!(
                "finalize entry {} names entry {seq}, which does not exist",
                f.seq
            ))
        })?;
        let lines = read_lines(store, s).await?;
        for (l, reference) in &lines {
            if let Some(r) = reference {
                let slot = issued.entry(*r).or_default();
                *slot.0.entry(l.0.clone()).or_default() += l.1;
                if !slot.1.contains(&s.seq) {
                    slot.1.push(s.seq);
                }
            }
        }
        final_statements.push((f, s, lines));
    }
    let mut out = Vec::new();
    let mut adjusted = Vec::new();
    for (_, s, lines) in final_statements {
        let original_period = Period::parse(&s.period)?;
        let rate_bytes = read_recorded(store, s, "rates.toml").await?;
        let rates = RateCard::parse(&rate_bytes)?;
        let catalog = match &s.inputs.catalog_sha256 {
            Some(sha) => Some(store::catalog::load(store, sha).await?),
            None => None,
        };
        let now = count(store, published, original_period, catalog.as_ref(), &rates).await?;
        let mut paid: Lines = BTreeMap::new();
        for ((k, v), reference) in &lines {
            if reference.is_none() {
                *paid.entry(k.clone()).or_default() += v;
            }
        }
        let (earlier_lines, earlier) = issued.remove(&s.seq).unwrap_or_default();
        for (k, v) in earlier_lines {
            *paid.entry(k).or_default() += v;
        }
        let keys: BTreeSet<_> = paid.keys().chain(now.lines.keys()).cloned().collect();
        let mut any = false;
        for k in keys {
            let delta =
                now.lines.get(&k).copied().unwrap_or(0) - paid.get(&k).copied().unwrap_or(0);
            if delta == 0 {
                continue;
            }
            any = true;
            let (creator, video, cpm) = k;
            out.push(Line {
                creator_id: Some(creator),
                title: catalog
                    .as_ref()
                    .and_then(|c| c.entry(&video))
                    .map(|e| e.title.clone())
                    .unwrap_or_default(),
                video_id: video,
                billable_views: delta,
                cpm: Some(cpm),
                amount: Some(amount(delta, cpm)?),
                kind: LineKind::Adjustment,
                reference: Some(s.seq),
            });
        }
        if any {
            adjusted.push(Adjusted {
                period: s.period.clone(),
                entry: s.seq,
                hours: now.hours,
                earlier,
            });
        }
    }
    Ok((out, adjusted))
}

/// A recorded statement's lines: ((creator, video, cpm), views) and the
/// reference of adjustment lines.
type RecordedKey = ((String, String, Decimal), i64);

async fn read_lines(store: &dyn ObjectStore, e: &Entry) -> Result<Vec<(RecordedKey, Option<u64>)>> {
    let (_, lines) = read_csv(store, e, "statement.csv").await?;
    lines
        .into_iter()
        .map(|r| {
            let l = r.line;
            let cpm = l.cpm.ok_or_else(|| {
                Error::Tampered(format!(
                    "{}: a paid line of {} has no cpm",
                    file_of(e, "statement.csv"),
                    l.video_id
                ))
            })?;
            Ok((
                (
                    (
                        l.creator_id.unwrap_or_default(),
                        l.video_id,
                        cpm.normalize(),
                    ),
                    l.billable_views,
                ),
                l.reference,
            ))
        })
        .collect()
}

/// A recorded object's bytes; missing is an error (it was recorded).
pub async fn get(store: &dyn ObjectStore, path: &Path) -> Result<Bytes> {
    match store.get(path).await {
        Ok(r) => Ok(r.bytes().await?),
        Err(object_store::Error::NotFound { .. }) => Err(Error::Tampered(format!(
            "{path} is missing from the store; run `viewcount ledger verify`"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Writes a statement's files create-only (identical bytes already there
/// are fine: a rerun or a racing writer of the same statement), manifest
/// last. Returns store path → SHA-256 of each.
async fn write_files(
    store: &dyn ObjectStore,
    key: &LogKey,
    s: &Statement,
    rate_card: &[u8],
) -> Result<(BTreeMap<String, String>, SealedTotals)> {
    let dir = s.dir();
    let totals = s.totals()?;
    let sealed = pretty(&TotalsFile {
        statement_id: s.id.clone(),
        period: s.period.label(),
        salt: key.totals_salt(&s.period.label(), &s.id),
        totals: totals.clone(),
    });
    let sealed_totals = SealedTotals {
        currency: totals.currency.clone(),
        lines: totals.lines,
        sha256: store::layout::sha256(&sealed),
    };
    let rules = pretty(&RulesFile {
        statement_id: s.id.clone(),
        period: s.period.label(),
        salt: key.rules_salt(&s.period.label(), &s.id),
        runs: s.rules.clone(),
    });
    let mut named: Vec<(&str, Bytes)> = vec![
        (ledger::TOTALS_FILE, Bytes::from(sealed)),
        (ledger::RULES_FILE, Bytes::from(rules)),
        ("statement.csv", Bytes::from(s.csv(false)?)),
        ("unattributed.csv", Bytes::from(s.csv(true)?)),
        ("statement.json", Bytes::from(s.json())),
        ("statement.parquet", s.parquet()?),
        ("rates.toml", Bytes::copy_from_slice(rate_card)),
    ];
    let files: BTreeMap<String, String> = named
        .iter()
        .map(|(n, b)| ((*n).to_owned(), store::layout::sha256(b)))
        .collect();
    let manifest = StatementManifest {
        statement_id: s.id.clone(),
        period: s.period.label(),
        provisional: s.provisional,
        inputs: s.manifest_inputs.clone(),
        totals,
        files,
    };
    named.push(("manifest.json", Bytes::from(pretty(&manifest))));
    let mut out = BTreeMap::new();
    for (name, bytes) in named {
        let path = Path::from(format!("{dir}/{name}"));
        put_create(store, &path, bytes.clone()).await?;
        out.insert(path.to_string(), store::layout::sha256(&bytes));
    }
    Ok((out, sealed_totals))
}

async fn put_create(store: &dyn ObjectStore, path: &Path, bytes: Bytes) -> Result<()> {
    match store
        .put_opts(
            path,
            PutPayload::from(bytes.clone()),
            PutOptions::from(PutMode::Create),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(object_store::Error::AlreadyExists { .. }) => {
            let have = get(store, path).await?;
            if have == bytes {
                Ok(())
            } else {
                Err(Error::Tampered(format!(
                    "{path} exists with other bytes than this statement's: it was edited; run `viewcount ledger verify`"
                )))
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// What finalize did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finalized {
    /// Finalized now in this entry, locking the statement of entry `statement`.
    New {
        /// The finalize entry.
        entry: u64,
        /// The statement entry locked.
        statement: u64,
    },
    /// It already was, in this entry.
    Already(u64),
}

/// Locks a period: records a final entry for its latest non-provisional
/// statement. After it the period is never reissued.
pub async fn finalize(
    store: Arc<dyn ObjectStore>,
    key: &LogKey,
    period: Period,
    operator: &str,
) -> Result<Finalized> {
    let ledger = Ledger::new(store);
    let log = ledger.read().await?;
    let label = period.label();
    if let Some(f) = log.finalized(&label) {
        return Ok(Finalized::Already(f.seq));
    }
    let latest = log.of(&label, Kind::Statement).last().ok_or_else(|| {
        Error::Input(format!(
            "{period} has no statement yet: run `viewcount billing report --period {period} --rates FILE` first"
        ))
    })?;
    if latest.provisional {
        return Err(Error::Input(format!(
            "the latest statement of {period} (ledger entry {}) is provisional and cannot be finalized: \
             once the batch watermark has passed the period's end plus the grace, run \
             `viewcount billing report --period {period} --rates FILE` without --provisional, then finalize",
            latest.seq
        )));
    }
    let mut entry = latest.clone();
    entry.kind = Kind::Finalize;
    entry.references = vec![latest.seq];
    entry.operator = operator.to_owned();
    entry.recorded_at = Utc::now();
    let statement = latest.seq;
    let appended = ledger
        .append(key, NewEntry { entry }, |log| {
            log.finalized(&label).map(|e| e.seq)
        })
        .await?;
    Ok(match appended {
        Appended::New(seq) => Finalized::New {
            entry: seq,
            statement,
        },
        Appended::Existing(seq) => Finalized::Already(seq),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_months() {
        let p = Period::parse("2026-12").unwrap();
        assert_eq!(p.start().to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(p.end().to_rfc3339(), "2027-01-01T00:00:00+00:00");
        for bad in ["2026-13", "2026-1", "26-10", "2026/10", "2026-10-01", ""] {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
    }
}
