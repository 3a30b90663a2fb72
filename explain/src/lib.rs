//! `billing explain`: a payout traced to the events behind it.
//!
//! Payout → the creator's statement lines → the per-hour batch rows of each
//! line's video → the runs owning those hours (their manifests: rules, code,
//! inputs) → the raw files of those hours → the event ids the rules counted
//! as billable. The event ids are decided again by the native engine
//! ([`batch::evidence::billable_events`]) over exactly the inputs each run
//! recorded (each checked against the SHA-256 the run recorded), with the
//! rules it recorded, within `--memory-limit`; the count per line must
//! equal the line's billable views, and explain fails loudly if it does
//! not. The billable views the
//! invalid-traffic rules removed ([`schemas::fraud`]) are listed too, each
//! with the rule that removed it: what the creator was not paid for, and
//! why.
//!
//! A video of the creator's whose every billable view in the period was
//! removed has no line (nothing is paid for it), but the statement records
//! what was removed from it (`statement.json`, `filtered`): it is explained
//! as an `unpaid_video` record, its hours, runs, inputs and filtered events,
//! like a paid line's. The filtered events found per video must equal what
//! the statement recorded, as the paid ones must equal each line.
//!
//! Output is NDJSON, one record per line, each with a `"record"` field:
//! `statement`, `line`, `unpaid_video`, `hour`, `run`, `input`, `event`,
//! `filtered`. By default each line lists a sample of its event ids (and of
//! its video's filtered ones, per rule); `--all` lists every one.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use object_store::ObjectStore;
use object_store::path::Path;
use rust_decimal::Decimal;
use serde_json::json;

use batch::memory::Memory;
use billing::ledger::{Kind, Ledger};
use billing::money::format_cpm;
use billing::rates::RateCard;
use billing::statement::{LineKind, Period, StatementManifest, read_csv, read_recorded};
pub use billing::{Error, Result};

/// Event ids listed per line without `--all`.
pub const SAMPLE: usize = 10;

/// What to explain.
#[derive(Debug, Clone)]
pub struct ExplainOptions {
    /// The creator.
    pub creator: String,
    /// The month.
    pub period: Period,
    /// Only this video.
    pub video: Option<String>,
    /// Every event id, not a sample.
    pub all: bool,
    /// Memory the re-decision may hold (it spills past it, as a run does).
    pub memory: Memory,
}

/// What explain found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Explained {
    /// The ledger entry of the statement explained.
    pub entry: u64,
    /// Lines explained.
    pub lines: u64,
    /// Billable views on them.
    pub billable_views: i64,
    /// Event ids found behind them (equal to `billable_views`).
    pub events: u64,
    /// Billable views of the creator's videos and hours the
    /// invalid-traffic rules removed (not paid).
    pub filtered_events: u64,
    /// Videos with removed views and no line: every billable view removed.
    pub unpaid_videos: u64,
}

fn emit(out: &mut dyn Write, v: serde_json::Value) -> Result<()> {
    writeln!(out, "{v}").map_err(|e| Error::Input(format!("writing the output: {e}")))
}

/// Explains a creator's payout for a period (the finalized statement, or
/// else the latest), writing NDJSON records to `out`.
pub async fn explain(
    store: Arc<dyn ObjectStore>,
    opts: &ExplainOptions,
    out: &mut dyn Write,
) -> Result<Explained> {
    let label = opts.period.label();
    let log = Ledger::new(store.clone()).read().await?;
    let entry = match log.finalized(&label) {
        Some(f) => f.references.first().and_then(|&s| log.entries.get(s as usize)),
        None => log.of(&label, Kind::Statement).last(),
    }
    .ok_or_else(|| {
        Error::Input(format!(
            "{label} has no statement in the ledger: run `viewcount billing report --period {label}` first"
        ))
    })?;
    let dir = billing::statement::dir(&entry.period, &entry.statement_id);
    let manifest: StatementManifest =
        serde_json::from_slice(&read_recorded(store.as_ref(), entry, "manifest.json").await?)
            .map_err(|e| Error::Tampered(format!("{dir}/manifest.json: {e}")))?;
    let rates = RateCard::parse(&read_recorded(store.as_ref(), entry, "rates.toml").await?)?;
    let (_, recorded) = read_csv(store.as_ref(), entry, "statement.csv").await?;
    emit(
        out,
        json!({"record": "statement", "statement_id": entry.statement_id, "period": label,
               "ledger_entry": entry.seq, "provisional": entry.provisional,
               "finalized": log.finalized(&label).map(|f| f.seq), "directory": dir}),
    )?;

    // The creator's lines: (video, cpm, billable views, kind).
    let mut lines: Vec<(String, Decimal, i64, LineKind)> = Vec::new();
    for r in recorded {
        let l = r.line;
        if l.creator_id.as_deref() != Some(opts.creator.as_str())
            || opts.video.as_ref().is_some_and(|v| *v != l.video_id)
        {
            continue;
        }
        let cpm = l.cpm.ok_or_else(|| {
            Error::Tampered(format!(
                "{dir}/statement.csv: the line of {} has no cpm",
                l.video_id
            ))
        })?;
        emit(
            out,
            json!({"record": "line", "creator_id": opts.creator, "video_id": l.video_id, "title": l.title,
                   "billable_views": l.billable_views, "cpm": format_cpm(cpm),
                   "amount": l.amount.map(billing::money::format_amount), "currency": r.currency,
                   "kind": l.kind.as_str(), "reference": l.reference}),
        )?;
        lines.push((l.video_id, cpm, l.billable_views, l.kind));
    }
    // What the statement recorded as removed, per video of the creator.
    let removed = removed_views(
        &read_recorded(store.as_ref(), entry, "statement.json").await?,
        &opts.creator,
        &format!("{dir}/statement.json"),
    )?;
    let removed: BTreeMap<String, u64> = removed
        .into_iter()
        .filter(|(v, _)| opts.video.as_ref().is_none_or(|want| want == v))
        .collect();
    let paid: BTreeSet<&str> = lines.iter().map(|l| l.0.as_str()).collect();
    let unpaid: Vec<(&String, &u64)> = removed
        .iter()
        .filter(|(v, _)| !paid.contains(v.as_str()))
        .collect();
    for (video, n) in &unpaid {
        emit(
            out,
            json!({"record": "unpaid_video", "creator_id": opts.creator, "video_id": video,
                   "billable_views": 0, "filtered_views": n}),
        )?;
    }
    if lines.is_empty() && unpaid.is_empty() {
        return Err(Error::Input(format!(
            "statement {} of {label} has no line for creator {:?}{}",
            entry.statement_id,
            opts.creator,
            opts.video
                .as_ref()
                .map(|v| format!(" and video {v:?}"))
                .unwrap_or_default()
        )));
    }
    let videos: BTreeSet<String> = lines
        .iter()
        .filter(|l| l.3 == LineKind::Views)
        .map(|l| l.0.clone())
        .chain(unpaid.iter().map(|(v, _)| (*v).clone()))
        .collect();

    // Per-hour batch rows of those videos, by owning run.
    let mut by_run: BTreeMap<&str, BTreeSet<DateTime<Utc>>> = BTreeMap::new();
    for (h, r) in &manifest.inputs.hours {
        by_run.entry(r.as_str()).or_default().insert(*h);
    }
    let mut hours_with_views: BTreeSet<DateTime<Utc>> = BTreeSet::new();
    let mut found: BTreeMap<(String, Decimal), u64> = BTreeMap::new();
    let mut sampled: BTreeMap<(String, Decimal), usize> = BTreeMap::new();
    let mut filtered_sampled: BTreeMap<(String, schemas::fraud::FraudRule), usize> =
        BTreeMap::new();
    let mut filtered_total = 0u64;
    let mut filtered_found: BTreeMap<String, u64> = BTreeMap::new();
    let mut events_total = 0u64;
    for (run, owned) in &by_run {
        // The run's manifest, checked against the hash the statement
        // recorded for it; its views against the manifest's.
        let m = store::manifest::load(
            store.as_ref(),
            run,
            manifest.inputs.manifests.get(*run).map(String::as_str),
            &format!("statement {}", entry.statement_id),
        )
        .await?;
        let table = store::views::load_views(store.as_ref(), &m).await?;
        let mut used = false;
        for ((video, hour), c) in &table {
            if videos.contains(video) && owned.contains(hour) && c[1] + c[2] > 0 {
                used = true;
                hours_with_views.insert(*hour);
                emit(
                    out,
                    json!({"record": "hour", "video_id": video, "hour": hour, "run_id": run,
                           "views": c[0], "billable_views": c[1], "fraud_filtered": c[2],
                           "watch_seconds": c[3]}),
                )?;
            }
        }
        if !used {
            continue;
        }
        emit(
            out,
            json!({"record": "run", "run_id": run, "rules_version": m.rules_version, "rules": m.rules,
                   "code_version": m.code_version, "engine": m.engine.as_str(),
                   "from": m.from, "to": m.to, "inputs": m.inputs.len(),
                   "outputs": m.outputs}),
        )?;
        for i in &m.inputs {
            let hour = store::layout::raw_file_hour(&Path::from(i.path.as_str()));
            if hour.is_some_and(|h| hours_with_views.contains(&h) && owned.contains(&h)) {
                emit(
                    out,
                    json!({"record": "input", "run_id": run, "path": i.path, "size": i.size, "sha256": i.sha256}),
                )?;
            }
        }
        // The events the run counted, decided again from its inputs — the
        // very bytes it read: each input is checked against the manifest
        // while it is read.
        let (Some(&from), Some(&last)) = (owned.first(), owned.last()) else {
            continue;
        };
        let videos: Vec<String> = videos.iter().cloned().collect();
        let events = batch::evidence::billable_events(
            store.clone(),
            &m.inputs,
            &videos,
            from,
            last + chrono::Duration::hours(1),
            &m.rules,
            &opts.memory,
        )
        .await
        .map_err(|e| match e.class() {
            schemas::ErrorClass::Corrupt => Error::Tampered(format!(
                "an input changed after the run {run} read it: {e}; \
                 its counts cannot be traced to events until the batch reruns those hours"
            )),
            _ => Error::Input(format!("re-deciding the events of run {run}: {e}")),
        })?;
        for e in events {
            let at = DateTime::<Utc>::from_timestamp_micros(e.occurred_at_us).unwrap_or_default();
            if !owned.contains(&schemas::rules::hour_bucket(at)) {
                continue;
            }
            if let Some(rule) = e.filtered_by {
                filtered_total += 1;
                *filtered_found.entry(e.video_id.clone()).or_default() += 1;
                let n = filtered_sampled
                    .entry((e.video_id.clone(), rule))
                    .or_default();
                if opts.all || *n < SAMPLE {
                    *n += 1;
                    emit(
                        out,
                        json!({"record": "filtered", "video_id": e.video_id, "event_id": e.event_id,
                               "occurred_at": schemas::event::format_timestamp(&at),
                               "rule": rule.name(), "run_id": run}),
                    )?;
                }
                continue;
            }
            let cpm = rates.cpm(&opts.creator, at.date_naive());
            let key = (e.video_id.clone(), cpm);
            *found.entry(key.clone()).or_default() += 1;
            events_total += 1;
            let n = sampled.entry(key).or_default();
            if opts.all || *n < SAMPLE {
                *n += 1;
                emit(
                    out,
                    json!({"record": "event", "video_id": e.video_id, "event_id": e.event_id,
                           "occurred_at": schemas::event::format_timestamp(&at),
                           "cpm": format_cpm(cpm), "run_id": run}),
                )?;
            }
        }
    }
    // Exact: the events behind each line are as many as its billable views.
    let mut explained = Explained {
        entry: entry.seq,
        ..Explained::default()
    };
    for (video, cpm, views, kind) in &lines {
        if *kind != LineKind::Views {
            continue;
        }
        let n = found.get(&(video.clone(), *cpm)).copied().unwrap_or(0);
        if n != *views as u64 {
            return Err(Error::Tampered(format!(
                "the line for {video} at {} pays {views} billable views but the runs' inputs hold {n} such events: \
                 an input changed since the run; run `viewcount ledger verify` and rerun the batch for its hours",
                format_cpm(*cpm)
            )));
        }
        explained.lines += 1;
        explained.billable_views += views;
    }
    // And the events the rules removed are as many as the statement says.
    for video in &videos {
        let (want, got) = (
            removed.get(video).copied().unwrap_or(0),
            filtered_found.get(video).copied().unwrap_or(0),
        );
        if want != got {
            return Err(Error::Tampered(format!(
                "the statement records {want} removed views of {video} but the runs' inputs hold {got} such events: \
                 an input changed since the run; run `viewcount ledger verify` and rerun the batch for its hours"
            )));
        }
    }
    explained.events = events_total;
    explained.filtered_events = filtered_total;
    explained.unpaid_videos = unpaid.len() as u64;
    Ok(explained)
}

/// Per video of `creator`, the billable views the statement's
/// `statement.json` records as removed (its `filtered` list; none in a
/// statement from before the list existed).
fn removed_views(json: &[u8], creator: &str, path: &str) -> Result<BTreeMap<String, u64>> {
    let bad = |why: &str| Error::Tampered(format!("{path}: {why}"));
    let doc: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| bad(&format!("not JSON: {e}")))?;
    let creators = doc["creators"]
        .as_array()
        .ok_or_else(|| bad("it has no `creators` list"))?;
    let mut out = BTreeMap::new();
    for c in creators.iter().filter(|c| c["creator_id"] == creator) {
        let Some(filtered) = c.get("filtered") else {
            continue;
        };
        for f in filtered
            .as_array()
            .ok_or_else(|| bad("a creator's `filtered` is not a list"))?
        {
            let (Some(video), Some(n)) = (f["video_id"].as_str(), f["filtered_views"].as_u64())
            else {
                return Err(bad("a `filtered` entry lacks video_id or filtered_views"));
            };
            *out.entry(video.to_owned()).or_default() += n;
        }
    }
    Ok(out)
}
