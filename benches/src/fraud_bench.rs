//! Invalid-traffic benchmark: the current rules (v3) of [`schemas::fraud`] on a
//! labelled month (four weeks of `viewcount gen --fraud-ratio` traffic:
//! every invalid pattern, and organic traffic with its hard cases), and the
//! batch job's time under the current rules beside rules v2 as they stood
//! and rules v1 (the daily cap alone),
//! alternated in the same invocation.
//!
//! - **Recall** per invalid pattern: its billable views the rules filter /
//!   its billable views (views that were never billable are never paid, so
//!   they are not what filtering is for).
//! - **False positives** per organic kind (plain organic traffic, a popular
//!   video's fans, shared household accounts, binge sessions): its
//!   billable views filtered / its billable views.
//!
//! Both come from the generator's labels and [`schemas::fraud::decide`],
//! and the harness checks that the batch run's output equals that
//! reference at every video-hour and in every rule's total, so they are
//! the batch job's own figures. Each timed run is a child process (this
//! binary with `measure`). Run with `scripts/bench fraud`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use loadgen::{Generator, Label, LabelTally, Truth};
use schemas::fraud::FraudRule;
use schemas::{RuleSet, ValidationContext};

use benches::{
    Archiver, labelled_month, machine, measured, median, peak_rss_mib, replace_section, rules_v2,
    spread,
};

#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Events of the month (re-sends included).
    #[arg(long, default_value_t = 5_000_000)]
    events: u64,
    /// Organic users.
    #[arg(long, default_value_t = 100_000)]
    users: u32,
    /// Videos.
    #[arg(long, default_value_t = 10_000)]
    videos: u32,
    /// Share of events that are invalid traffic (over the four patterns).
    #[arg(long, default_value_t = 0.06)]
    fraud_ratio: f64,
    /// Share of events from organic hard cases (over the six).
    #[arg(long, default_value_t = 0.06)]
    hard_case_ratio: f64,
    /// Where the archive is kept between runs.
    #[arg(long, default_value = "/tmp/viewcount-fraud-bench")]
    dir: PathBuf,
    /// Timed runs per rule set, alternated.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Replace the fraud section of this Markdown file with the results.
    #[arg(long)]
    write: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// (internal) one batch run in this process; prints JSON.
    Measure {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        from: DateTime<Utc>,
        #[arg(long)]
        to: DateTime<Utc>,
        /// `v1` (the daily cap alone), `v2` (rules v2 as they stood) or
        /// `v3` (the current defaults).
        #[arg(long)]
        rules: String,
    },
}

/// Rules v1's decisions: the v2 rule set with every v2 rule off.
fn v1_rules() -> RuleSet {
    RuleSet {
        impossible_watch_seconds: 0,
        impossible_watch_devices: 0,
        repeat_loop_views: 0,
        bot_farm_accounts: 0,
        zero_engagement_views: 0,
        token_replay_views: 0,
        metronome_views: 0,
        ..RuleSet::default()
    }
}

fn rules_named(name: &str) -> anyhow::Result<RuleSet> {
    match name {
        "v1" => Ok(v1_rules()),
        "v2" => Ok(rules_v2()),
        "v3" => Ok(RuleSet::default()),
        other => bail!("--rules {other}: expected v1, v2 or v3"),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.cmd {
        Some(Cmd::Measure {
            dir,
            from,
            to,
            rules,
        }) => rt.block_on(measure(&dir, from, to, rules_named(&rules)?)),
        None => rt.block_on(run(args)),
    }
}

async fn measure(
    dir: &Path,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    rules: RuleSet,
) -> anyhow::Result<()> {
    let store = store::open(&format!("file://{}", dir.display()))?;
    let opts = batch::run::RunOptions {
        allow_incomplete: true,
        rules,
        ..batch::run::RunOptions::new(from, to)
    };
    let t = Instant::now();
    let report = batch::run::run(store, &opts, &|_, _, _| {}).await?;
    println!(
        "{}",
        serde_json::json!({"seconds": t.elapsed().as_secs_f64(), "rss_mib": peak_rss_mib(),
            "run_id": report.manifest.run_id, "rows": report.manifest.rows})
    );
    Ok(())
}

/// What preparing leaves for the measurements: the range, and per label
/// the tallies under the current rules and v1.
#[derive(serde::Serialize, serde::Deserialize)]
struct Prepared {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    events: u64,
    current: BTreeMap<String, LabelTally>,
    v1: BTreeMap<String, LabelTally>,
    /// The reference's counts per video-hour under the current rules:
    /// (video, hour) → [views, billable after filtering, filtered].
    expected: Vec<(String, DateTime<Utc>, [u64; 3])>,
}

/// Generates the labelled month into `dir` (once: kept for later runs) and
/// decides it with the reference under both rule sets.
async fn prepare(args: &Args) -> anyhow::Result<Prepared> {
    let dir = &args.dir;
    // The reference's decisions depend on the rules and their attribution
    // order: a change to either prepares again.
    let rules = format!(
        "{}{:?}",
        serde_json::to_string(&RuleSet::default())?,
        FraudRule::ALL
    );
    let marker = dir.join(format!(
        "prepared-{}-{}-{}-{}-{}-{:016x}.json",
        args.events,
        args.users,
        args.videos,
        args.fraud_ratio,
        args.hard_case_ratio,
        schemas::fraud::value_hash(rules.as_bytes())
    ));
    if let Ok(s) = std::fs::read_to_string(&marker) {
        eprintln!("archive already prepared in {}", dir.display());
        return Ok(serde_json::from_str(&s)?);
    }
    let _ = std::fs::remove_dir_all(dir);
    let store = store::open(&format!("file://{}", dir.display()))?;
    let now = Utc::now();
    // Four weeks ending an hour ago: all within the default late horizon.
    let g = Generator::new(labelled_month(
        now,
        args.events,
        args.users,
        args.videos,
        args.fraud_ratio,
        args.hard_case_ratio,
    )?)?;
    let ctx = ValidationContext::at(now);
    let mut truth = Truth::new(RuleSet::default());
    let mut archive = Archiver::new(store, now);
    for e in g {
        if let Ok(ev) = schemas::parse_event(&e.value, &ctx) {
            truth.record_labelled(&ev, e.label);
            archive.push(ev).await?;
        }
    }
    let (from, to) = archive.finish().await?;
    let done = archive.events;
    eprintln!("deciding {done} events with the reference (the current rules, then v1)");
    let file = truth.to_file();
    let named = |m: BTreeMap<Label, LabelTally>| {
        m.into_iter()
            .map(|(l, t)| (l.name().to_owned(), t))
            .collect::<BTreeMap<_, _>>()
    };
    let prepared = Prepared {
        from,
        to,
        events: done,
        current: file.labels.clone(),
        v1: named(truth.labels_under(&v1_rules())),
        expected: file
            .rows
            .iter()
            .map(|r| {
                (
                    r.video_id.clone(),
                    r.hour,
                    [
                        r.views,
                        r.billable_views - r.fraud_filtered,
                        r.fraud_filtered,
                    ],
                )
            })
            .collect(),
    };
    std::fs::write(&marker, serde_json::to_string(&prepared)?)?;
    Ok(prepared)
}

/// Removes a run's outputs, so each run starts from the bare archive.
fn clean(dir: &Path) {
    for sub in ["views", "filtered", "runs", "published", "CURRENT"] {
        let p = dir.join(sub);
        let _ = std::fs::remove_dir_all(&p);
        let _ = std::fs::remove_file(&p);
    }
}

/// `part / whole` as a percentage with two decimals ("–" for 0 / 0).
fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "–".into()
    } else {
        format!("{:.2} %", 100.0 * part as f64 / whole as f64)
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let p = prepare(&args).await?;
    let exe = std::env::current_exe()?;
    let mut times: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut rss: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut last_v3 = None;
    for rep in 0..args.reps {
        for rules in ["v1", "v2", "v3"] {
            clean(&args.dir);
            let v = measured(
                Command::new(&exe).args([
                    "measure",
                    "--dir",
                    &args.dir.display().to_string(),
                    "--from",
                    &p.from.to_rfc3339(),
                    "--to",
                    &p.to.to_rfc3339(),
                    "--rules",
                    rules,
                ]),
                &format!("batch run under rules {rules}"),
            )?;
            let secs = v["seconds"].as_f64().context("seconds")?;
            eprintln!("rep {rep}: rules {rules}: {secs:.2} s");
            times.entry(rules).or_default().push(secs);
            rss.entry(rules)
                .or_default()
                .push(v["rss_mib"].as_f64().unwrap_or(0.0));
            if rules == "v3" {
                last_v3 = Some(v);
            }
        }
    }
    // The last v3 run's output is still in the store: it must be the
    // reference's, at every video-hour and in every rule's total.
    let v3 = last_v3.context("no v3 run")?;
    let run_id = v3["run_id"].as_str().context("run id")?;
    let store = store::open(&format!("file://{}", args.dir.display()))?;
    let manifest = store::manifest::load(store.as_ref(), run_id, None, "the benchmark").await?;
    let views = store::views::load_views(store.as_ref(), &manifest).await?;
    let got: Vec<(String, DateTime<Utc>, [u64; 3])> = views
        .into_iter()
        .map(|((v, h), c)| (v, h, [c[0], c[1], c[2]]))
        .collect();
    if got != p.expected {
        let diff = got
            .iter()
            .zip(&p.expected)
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("batch {a:?}, reference {b:?}"));
        bail!(
            "the batch run's views differ from the reference ({} video-hours against {}; first difference: {})",
            got.len(),
            p.expected.len(),
            diff.unwrap_or_else(|| "in length".into())
        );
    }
    let mut by_rule: BTreeMap<String, u64> = BTreeMap::new();
    for f in store::filtered::load_filtered(store.as_ref(), &manifest).await? {
        *by_rule.entry(f.rule.name().to_owned()).or_default() += f.views as u64;
    }
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for t in p.current.values() {
        for (r, n) in &t.filtered_by_rule {
            *want.entry(r.clone()).or_default() += n;
        }
    }
    if by_rule != want {
        bail!(
            "the batch run's filtered views by rule {by_rule:?} differ from the reference's {want:?}"
        );
    }

    let body = report(&args, &p, &times, &rss, &by_rule);
    println!("{body}");
    if let Some(path) = &args.write {
        let section = format!(
            "<!-- fraud:begin -->\n## Invalid traffic on the generator, and the rules' cost\n\nRun: `scripts/bench fraud` (release build) on {}, {}.\n\n{body}<!-- fraud:end -->\n",
            machine(),
            Utc::now().format("%Y-%m-%d")
        );
        replace_section(path, "fraud", &section)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn report(
    args: &Args,
    p: &Prepared,
    times: &BTreeMap<&str, Vec<f64>>,
    rss: &BTreeMap<&str, Vec<f64>>,
    by_rule: &BTreeMap<String, u64>,
) -> String {
    let mut out = format!(
        "A generated month: {} events over four weeks ({} accepted, re-sends included), {} organic users, {} videos, `--fraud-ratio {}` over the {} invalid patterns and `--hard-case-ratio {}` over the {} organic hard cases, every pattern at its default parameters (README, \"Labelled traffic\"). Rules at their defaults (README, \"Invalid-traffic rules\"). The batch run's output equals the reference decision (`schemas::fraud::decide`) at all {} video-hours and in every rule's total, so these are the batch job's figures.\n\n",
        args.events,
        p.events,
        args.users,
        args.videos,
        args.fraud_ratio,
        Label::invalid_patterns(),
        args.hard_case_ratio,
        Label::hard_cases(),
        p.expected.len()
    );
    out += "| traffic | billable views | filtered, current rules | share, current | by rule (current) | filtered, rules v1 | share, v1 | target |\n|---|---:|---:|---:|---|---:|---:|---|\n";
    let (mut inv, mut inv2, mut inv1) = (0u64, 0u64, 0u64);
    let (mut org, mut org2, mut org1) = (0u64, 0u64, 0u64);
    let mut recall_ok = true;
    let mut fp_ok = true;
    for label in Label::ALL {
        let name = label.name();
        let t2 = p.current.get(name).cloned().unwrap_or_default();
        let f1 = p.v1.get(name).map_or(0, |t| t.filtered_views);
        let (kind, target) = if label.is_invalid() {
            inv += t2.billable_views;
            inv2 += t2.filtered_views;
            inv1 += f1;
            let met = t2.filtered_views * 10 >= t2.billable_views * 9;
            recall_ok &= met;
            (
                "recall",
                if met {
                    "≥ 90 %: met"
                } else {
                    "≥ 90 %: NOT met"
                },
            )
        } else {
            org += t2.billable_views;
            org2 += t2.filtered_views;
            org1 += f1;
            let met = t2.filtered_views * 200 <= t2.billable_views;
            fp_ok &= met;
            (
                "false positives",
                if met {
                    "≤ 0.5 %: met"
                } else {
                    "≤ 0.5 %: NOT met"
                },
            )
        };
        let by: Vec<String> = t2
            .filtered_by_rule
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        out += &format!(
            "| `{name}` ({kind}) | {} | {} | {} | {} | {f1} | {} | {target} |\n",
            t2.billable_views,
            t2.filtered_views,
            pct(t2.filtered_views, t2.billable_views),
            by.join(", "),
            pct(f1, t2.billable_views),
        );
    }
    let overall_ok = inv2 * 100 >= inv * 95;
    let org_ok = org2 * 200 <= org;
    out += &format!(
        "| **all invalid** (recall) | {inv} | {inv2} | **{}** | | {inv1} | {} | ≥ 95 %: {}; every pattern ≥ 90 %: {} |\n| **all organic** (false positives) | {org} | {org2} | **{}** | | {org1} | {} | ≤ 0.5 %: {} |\n\n",
        pct(inv2, inv),
        pct(inv1, inv),
        if overall_ok { "met" } else { "NOT met" },
        if recall_ok { "met" } else { "NOT met" },
        pct(org2, org),
        pct(org1, org),
        if org_ok && fp_ok { "met" } else { "NOT met" },
    );
    out += "Filtered views by the rule they are attributed to (the first rule, in attribution order, that catches a view):";
    for rule in FraudRule::ALL {
        out += &format!(
            " `{}` {},",
            rule.name(),
            by_rule.get(rule.name()).copied().unwrap_or(0)
        );
    }
    out.pop();
    out += ".\n\n";
    let line = |rules: &str| {
        let t = times.get(rules).cloned().unwrap_or_default();
        let (lo, hi) = spread(&t);
        let r = rss.get(rules).cloned().unwrap_or_default();
        format!(
            "| rules {rules} | {:.2} s | {lo:.2}–{hi:.2} s | {:.0} MiB |\n",
            median(&t),
            median(&r)
        )
    };
    let m = |rules: &str| median(times.get(rules).map_or(&[][..], |v| v));
    let (m1, m2, m3) = (m("v1"), m("v2"), m("v3"));
    let ratio = if m1 > 0.0 { m2 / m1 } else { 0.0 };
    let ratio3 = if m2 > 0.0 { m3 / m2 } else { 0.0 };
    out += &format!(
        "Batch time over the month (`batch run`, native engine, default memory limit), {} runs of each rule set, alternated, each in its own process (v2: rules v2 as they stood, impossible watch by the hour limit and no replay rule; v3: today's defaults):\n\n| rules | median | spread | peak RSS (median) |\n|---|---:|---:|---:|\n{}{}{}\nRules v2 cost **{ratio:.2}×** rules v1's time (target ≤ 1.15×: {}); the current rules cost **{ratio3:.2}×** rules v2's (target ≤ 1.3×: {}).\n",
        args.reps,
        line("v1"),
        line("v2"),
        line("v3"),
        if ratio <= 1.15 { "met" } else { "NOT met" },
        if ratio3 <= 1.3 { "met" } else { "NOT met" }
    );
    out
}
