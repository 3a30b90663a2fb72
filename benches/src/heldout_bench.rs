//! Invalid traffic, tuned and held out: what the rules remove of the
//! generator's labelled traffic they were tuned on (`loadgen`'s patterns)
//! beside what they remove of the held-out suite (crate `heldout`, written
//! apart from the rules and the generator and never tuned on), for rules v2
//! and the current rules, in one invocation.
//!
//! - **Recall** per invalid pattern: its billable views the rules remove /
//!   its billable views (views that were never billable are never paid).
//! - **False positives** per organic kind: its billable views removed / its
//!   billable views.
//!
//! Decisions are the reference's ([`schemas::fraud::decide`]); the batch
//! engines are held to it on both kinds of traffic (`batch` tests
//! `engines::every_invalid_traffic_rule…` and `engines::the_held_out_suite…`),
//! so these are the batch job's figures. The held-out suite is drawn afresh
//! for each of `--seeds` seeds (from `--seed`), and reported as their sum.
//! Run with `scripts/bench heldout`.

use std::collections::BTreeMap;

use chrono::Utc;
use clap::Parser;
use heldout::{Pattern, SuiteConfig};
use loadgen::{Generator, Label, Truth};
use schemas::fraud::{FraudRule, decide};
use schemas::{RuleSet, ValidationContext};

use benches::{labelled_month, machine, replace_section, rules_v2};

#[derive(Debug, Parser)]
struct Args {
    /// Events of the tuned-on generator month (re-sends included).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Held-out suites to draw, each with its own seed.
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// The first held-out seed (the next ones follow it).
    #[arg(long, default_value_t = 9_001)]
    seed: u64,
    /// Replace the held-out section of this Markdown file with the results.
    #[arg(long)]
    write: Option<std::path::PathBuf>,
}

/// Billable and removed views of one kind of traffic, by rule.
#[derive(Debug, Clone, Default)]
struct Tally {
    billable: u64,
    removed: u64,
    by_rule: BTreeMap<&'static str, u64>,
}

/// One row of the tables: a kind of traffic under both rule sets.
#[derive(Debug, Clone, Default)]
struct Row {
    invalid: bool,
    hard: bool,
    v2: Tally,
    now: Tally,
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "—".into()
    } else {
        format!("{:.1} %", 100.0 * part as f64 / whole as f64)
    }
}

/// The generator's labelled month (tuned on), per label.
fn tuned(events: u64) -> anyhow::Result<BTreeMap<String, Row>> {
    let now = Utc::now();
    // The fraud benchmark's month (its default shares and sizes).
    let g = Generator::new(labelled_month(now, events, 100_000, 10_000, 0.06, 0.06)?)?;
    let ctx = ValidationContext::at(now);
    let mut truth = Truth::new(RuleSet::default());
    for e in g {
        if let Ok(ev) = schemas::parse_event(&e.value, &ctx) {
            truth.record_labelled(&ev, e.label);
        }
    }
    let tally = |rules: &RuleSet| -> BTreeMap<Label, Tally> {
        truth
            .labels_under(rules)
            .into_iter()
            .map(|(l, t)| {
                let by_rule = t
                    .filtered_by_rule
                    .iter()
                    .filter_map(|(r, n)| FraudRule::from_name(r).map(|r| (r.name(), *n)))
                    .collect();
                (
                    l,
                    Tally {
                        billable: t.billable_views,
                        removed: t.filtered_views,
                        by_rule,
                    },
                )
            })
            .collect()
    };
    let (v2, now) = (tally(&rules_v2()), tally(&RuleSet::default()));
    Ok(Label::ALL
        .into_iter()
        .map(|l| {
            (
                l.name().to_owned(),
                Row {
                    invalid: l.is_invalid(),
                    hard: !l.is_invalid() && l != Label::Organic,
                    v2: v2.get(&l).cloned().unwrap_or_default(),
                    now: now.get(&l).cloned().unwrap_or_default(),
                },
            )
        })
        .collect())
}

/// The held-out suites, per pattern, summed over the seeds.
fn held_out(seed: u64, seeds: u64) -> BTreeMap<String, Row> {
    let mut rows: BTreeMap<String, Row> = Pattern::ALL
        .into_iter()
        .map(|p| {
            (
                p.name().to_owned(),
                Row {
                    invalid: p.is_invalid(),
                    hard: p.is_hard_organic(),
                    ..Row::default()
                },
            )
        })
        .collect();
    for s in seed..seed + seeds {
        let views = heldout::generate(&SuiteConfig {
            seed: s,
            ..SuiteConfig::default()
        });
        let judged: Vec<(schemas::ViewEvent, Option<String>)> = views
            .iter()
            .map(|v| (v.event.clone(), v.playback_id.clone()))
            .collect();
        for (rules, now) in [(rules_v2(), false), (RuleSet::default(), true)] {
            let decided = decide(&rules, &judged);
            for (v, d) in views.iter().zip(decided) {
                let row = rows.entry(v.pattern.name().to_owned()).or_default();
                let t = if now { &mut row.now } else { &mut row.v2 };
                if rules.is_billable(&v.event) {
                    t.billable += 1;
                }
                if let Some(rule) = d {
                    t.removed += 1;
                    *t.by_rule.entry(rule.name()).or_default() += 1;
                }
            }
        }
        eprintln!("held-out seed {s}: {} views decided", views.len());
    }
    rows
}

/// One table and its verdicts against the held-out targets.
fn table(rows: &BTreeMap<String, Row>, with_targets: bool) -> String {
    let mut out = String::from(
        "| traffic | billable views | removed, rules v2 | share, v2 | removed, current rules | share, current | by rule (current) | target |\n|---|---:|---:|---:|---:|---:|---|---|\n",
    );
    let (mut inv, mut inv_v2, mut inv_now) = (0u64, 0u64, 0u64);
    let (mut org, mut org_v2, mut org_now) = (0u64, 0u64, 0u64);
    let (mut each_recall, mut each_fp) = (true, true);
    let mut ordered: Vec<(&String, &Row)> = rows.iter().collect();
    ordered.sort_by_key(|(_, r)| (r.invalid, r.hard));
    for (name, r) in ordered {
        let kind = if r.invalid {
            "recall"
        } else if r.hard {
            "false positives, hard case"
        } else {
            "false positives"
        };
        let target = if r.invalid {
            inv += r.now.billable;
            inv_v2 += r.v2.removed;
            inv_now += r.now.removed;
            if r.now.billable == 0 {
                "never billable".to_owned()
            } else {
                let met = r.now.removed * 4 >= r.now.billable * 3;
                each_recall &= met;
                format!("≥ 75 %: {}", if met { "met" } else { "NOT met" })
            }
        } else {
            org += r.now.billable;
            org_v2 += r.v2.removed;
            org_now += r.now.removed;
            if r.hard {
                let met = r.now.removed * 50 <= r.now.billable;
                each_fp &= met;
                format!("≤ 2 %: {}", if met { "met" } else { "NOT met" })
            } else {
                String::new()
            }
        };
        let by: Vec<String> = r
            .now
            .by_rule
            .iter()
            .map(|(rule, n)| format!("{rule} {n}"))
            .collect();
        out += &format!(
            "| `{name}` ({kind}) | {} | {} | {} | {} | {} | {} | {} |\n",
            r.now.billable,
            r.v2.removed,
            pct(r.v2.removed, r.now.billable),
            r.now.removed,
            pct(r.now.removed, r.now.billable),
            by.join(", "),
            if with_targets { target.as_str() } else { "" },
        );
    }
    let recall_met = inv_now * 10 >= inv * 9 && each_recall;
    let fp_met = org_now * 200 <= org && each_fp;
    out += &format!(
        "| **all invalid** (recall) | {inv} | {inv_v2} | **{}** | {inv_now} | **{}** | | {} |\n| **all organic** (false positives) | {org} | {org_v2} | **{}** | {org_now} | **{}** | | {} |\n",
        pct(inv_v2, inv),
        pct(inv_now, inv),
        if with_targets {
            format!(
                "≥ 90 % and every pattern ≥ 75 %: {}",
                if recall_met { "met" } else { "NOT met" }
            )
        } else {
            String::new()
        },
        pct(org_v2, org),
        pct(org_now, org),
        if with_targets {
            format!(
                "≤ 0.5 % and every hard case ≤ 2 %: {}",
                if fp_met { "met" } else { "NOT met" }
            )
        } else {
            String::new()
        },
    );
    out
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    eprintln!("deciding the generator's month ({} events)", args.events);
    let tuned = tuned(args.events)?;
    let held = held_out(args.seed, args.seeds);
    let body = format!(
        "Run: `scripts/bench heldout` ({} generator events; {} held-out suites, seeds {}–{}, each `heldout::SuiteConfig::default()`: 7 days, 400 videos, 20 000 organic users, 60 000 baseline views, 12 episodes of every hard case and invalid pattern). Measured {} on {}. Decisions are `schemas::fraud::decide`, which both batch engines are held to on both kinds of traffic. \"Rules v2\" is the rule set before rules v3 (impossible watch by the hour limit, no replay rule); \"current\" is today's defaults.\n\n### Tuned on: the generator's labelled month\n\n{}\n### Held out: the `heldout` suite (never tuned on)\n\n{}\nTargets are the held-out targets of issue 26. The held-out suite's patterns, their parameter families and how the suite was kept apart are in `heldout/src/lib.rs` (README, \"Held-out evaluation\").\n",
        args.events,
        args.seeds,
        args.seed,
        args.seed + args.seeds - 1,
        Utc::now().format("%Y-%m-%d"),
        machine(),
        table(&tuned, false),
        table(&held, true),
    );
    println!("{body}");
    if let Some(path) = &args.write {
        let section = format!(
            "<!-- heldout:begin -->\n## Invalid traffic: tuned on and held out\n\n{body}<!-- heldout:end -->\n"
        );
        replace_section(path, "heldout", &section)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
