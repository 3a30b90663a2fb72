//! `billing-bench`: a month's report, verifying a large ledger, and proofs.
//!
//! Builds a store holding one month (October 2026, 744 hours) published by
//! one run with `--videos` videos in every hour (≥ 1 million video-hours), a
//! catalog of those videos over 500 creators and a rate card with overrides,
//! and a ledger of `--entries` entries. Each measured operation runs in its
//! own child process (this binary with `measure ...`) so its peak RSS
//! (VmHWM) is its own; side by side, in the same invocation, a floor for
//! each: reading the month's views file alone (report), reading every
//! ledger object alone (verify), one Ed25519 signature check (proof check).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use billing::ledger::{Entry, Inputs, Kind, Ledger, LogKey, NewEntry, Totals};
use billing::statement::{self, Period, ReportOptions};
use chrono::{DateTime, TimeDelta, Utc};
use clap::Parser;
use object_store::ObjectStore;
use store::views::{ViewRow, views_batch};

use benches::{machine, median, peak_rss_mib, replace_section, spread};

#[derive(Debug, Parser)]
struct Args {
    /// Videos, each with a row in every hour of the month.
    #[arg(long, default_value_t = 1_400)]
    videos: u32,
    /// Ledger entries for the verify run.
    #[arg(long, default_value_t = 10_000)]
    entries: u64,
    /// Repetitions.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Replace the billing section of this Markdown file with the results.
    #[arg(long)]
    write: Option<std::path::PathBuf>,
    /// Internal: measure one operation in this process and print JSON.
    #[arg(long, num_args = 2, value_names = ["OP", "DIR"], hide = true)]
    measure: Option<Vec<String>>,
}

const RATES: &str = "currency = \"USD\"\ndefault_cpm = \"2.50\"\n\n[[override]]\ncreator_id = \"creator-0001\"\ncpm = \"4.125\"\neffective_from = 2026-10-15\n\n[[override]]\ncreator_id = \"creator-0002\"\ncpm = \"3.10\"\neffective_from = 2026-01-01\neffective_to = 2026-10-20\n";

fn open(dir: &std::path::Path) -> anyhow::Result<Arc<dyn ObjectStore>> {
    Ok(store::layout::open(&format!("file://{}", dir.display()))?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(m) = &args.measure {
        return measure(&m[0], std::path::Path::new(&m[1])).await;
    }
    let month = tempfile::tempdir()?;
    let big = tempfile::tempdir()?;
    let t = Instant::now();
    let video_hours = build_month(open(month.path())?.as_ref(), args.videos).await?;
    let key_path = month.path().join("bench.key");
    let (skey, key) = LogKey::generate("bench.local/ledger")?;
    std::fs::write(&key_path, format!("{skey}\n"))?;
    std::fs::copy(&key_path, big.path().join("bench.key"))?;
    build_ledger(open(big.path())?, &key, args.entries).await?;
    eprintln!(
        "built {video_hours} video-hours and a ledger of {} entries in {:.1}s",
        args.entries,
        t.elapsed().as_secs_f64()
    );
    let exe = std::env::current_exe()?;
    let run = |op: &str, dir: &std::path::Path| -> anyhow::Result<serde_json::Value> {
        let out = std::process::Command::new(&exe)
            .args(["--measure", op, &dir.display().to_string()])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{op} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let ops: [(&str, &std::path::Path); 6] = [
        ("report", month.path()),
        ("read-views", month.path()),
        ("verify", big.path()),
        ("read-ledger", big.path()),
        ("check-proof", big.path()),
        ("signature", big.path()),
    ];
    let mut results: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
    for rep in 0..args.reps {
        for (op, dir) in ops {
            let v = run(op, dir)?;
            eprintln!("rep {rep} {op}: {v}");
            results.entry(op).or_default().push(v);
        }
    }
    let stat = |op: &str, field: &str| -> (f64, f64, f64) {
        let v: Vec<f64> = results[op]
            .iter()
            .map(|x| x[field].as_f64().unwrap_or(0.0))
            .collect();
        let (lo, hi) = spread(&v);
        (median(&v), lo, hi)
    };
    let row = |label: &str, op: &str, unit: &str, scale: f64| {
        let (m, lo, hi) = stat(op, "seconds");
        let (rss, _, _) = stat(op, "rss_mib");
        format!(
            "| {label} | {:.3} {unit} | {:.3} – {:.3} | {rss:.0} |\n",
            m * scale,
            lo * scale,
            hi * scale
        )
    };
    let report_s = stat("report", "seconds").0;
    let verify_s = stat("verify", "seconds").0;
    let check_ms = stat("check-proof", "seconds").0 * 1e3;
    let lines = results["report"][0]["lines"].as_u64().unwrap_or(0);
    let section = format!(
        "<!-- billing:begin -->\n## Billing (`scripts/bench billing`)\n\n{} on {}, {}, release build; {} reps, each operation in its own process (peak RSS is its own).\n\n\
         - **report**: `billing report` of October 2026 over {video_hours} video-hours (one published run, {} videos × 744 hours, 500 creators, a rate card with two overrides, one changing mid-month): counting, {lines} lines, six files written, one ledger entry appended and signed. Floor beside it: reading and decoding the month's views file alone.\n\
         - **verify**: `ledger verify` over {} entries (each chained, signed by its own checkpoint, consistency-checked against the next, and its statement file re-hashed). Floor beside it: reading every entry and checkpoint object alone.\n\
         - **check-proof**: `ledger::check_proof` of an inclusion proof against the latest checkpoint of the {}-entry log (parse, Ed25519 signature, Merkle path), median of 1 000. Floor beside it: one Ed25519 signature check of the same note.\n\n\
         | operation | median | min – max | peak RSS MiB |\n|---|---|---|---|\n{}{}{}{}{}{}\n\
         Targets: report < 10 s (measured {report_s:.2} s), verify < 5 s (measured {verify_s:.2} s), proof check < 1 ms (measured {check_ms:.3} ms): {}.\n<!-- billing:end -->\n",
        Utc::now().format("%Y-%m-%d"),
        machine(),
        std::env::consts::ARCH,
        args.reps,
        args.videos,
        args.entries,
        args.entries,
        row("report", "report", "s", 1.0),
        row("↳ floor: read the views file", "read-views", "s", 1.0),
        row("verify", "verify", "s", 1.0),
        row("↳ floor: read every ledger object", "read-ledger", "s", 1.0),
        row("check-proof (per proof)", "check-proof", "ms", 1e3),
        row("↳ floor: one signature check", "signature", "ms", 1e3),
        if report_s < 10.0 && verify_s < 5.0 && check_ms < 1.0 {
            "all met"
        } else {
            "NOT all met"
        }
    );
    print!("{section}");
    if let Some(path) = &args.write {
        replace_section(path, "billing", &section)?;
    }
    Ok(())
}

/// One measured operation, printed as JSON.
async fn measure(op: &str, dir: &std::path::Path) -> anyhow::Result<()> {
    let store = open(dir)?;
    let key = LogKey::from_file(&dir.join("bench.key"))?;
    let t = Instant::now();
    let mut extra = serde_json::json!({});
    match op {
        "report" => {
            // A new rate card each time (same rates, a comment with the
            // time), so each run computes and records a new statement.
            let rates = format!(
                "# {}\n{RATES}",
                Utc::now().timestamp_nanos_opt().unwrap_or(0)
            );
            let t = Instant::now();
            let r = statement::report(
                store,
                &key,
                rates.as_bytes(),
                &ReportOptions {
                    period: Period::parse("2026-10")?,
                    provisional: false,
                    grace: TimeDelta::zero(),
                    operator: "bench".into(),
                },
            )
            .await?;
            extra = serde_json::json!({"seconds": t.elapsed().as_secs_f64(), "lines": r.statement.lines.len()});
        }
        "read-views" => {
            let t = Instant::now();
            let state = store::state::current(store.as_ref())
                .await?
                .ok_or_else(|| anyhow::anyhow!("nothing published"))?;
            let m = state.manifest(store.as_ref(), "bench-run").await?;
            let v = store::views::load_views(store.as_ref(), &m).await?;
            extra = serde_json::json!({"seconds": t.elapsed().as_secs_f64(), "rows": v.len()});
        }
        "verify" => {
            let t = Instant::now();
            let v = Ledger::new(store).verify(None, None).await?;
            extra = serde_json::json!({"seconds": t.elapsed().as_secs_f64(), "entries": v.entries});
        }
        "read-ledger" => {
            use futures::TryStreamExt;
            use object_store::ObjectStoreExt;
            let t = Instant::now();
            let metas: Vec<_> = store
                .list(Some(&object_store::path::Path::from("ledger")))
                .try_collect()
                .await?;
            let mut bytes = 0usize;
            for m in &metas {
                bytes += store.get(&m.location).await?.bytes().await?.len();
            }
            extra = serde_json::json!({"seconds": t.elapsed().as_secs_f64(), "objects": metas.len(), "bytes": bytes});
        }
        "check-proof" | "signature" => {
            let ledger = Ledger::new(store);
            let vkey = ledger.pubkey().await?.unwrap_or_default();
            let proof = ledger.prove(4_321).await?;
            let note = ledger.latest_checkpoint().await?.unwrap_or_default();
            let verifier = billing::ledger::LogVerifier::parse(&vkey)?;
            let n = 1_000;
            let t = Instant::now();
            for _ in 0..n {
                if op == "check-proof" {
                    billing::ledger::check_proof(proof.as_bytes(), &vkey, None)?;
                } else {
                    verifier.open(&note).map_err(anyhow::Error::msg)?;
                }
            }
            extra = serde_json::json!({"seconds": t.elapsed().as_secs_f64() / f64::from(n)});
        }
        other => anyhow::bail!("unknown operation {other}"),
    }
    let mut v = serde_json::json!({"op": op, "total_seconds": t.elapsed().as_secs_f64(), "rss_mib": peak_rss_mib()});
    if let (Some(v), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            v.insert(k.clone(), x.clone());
        }
    }
    println!("{v}");
    Ok(())
}

/// October 2026 published by one run: `videos` videos in every hour.
async fn build_month(store: &dyn ObjectStore, videos: u32) -> anyhow::Result<usize> {
    let start: DateTime<Utc> = "2026-10-01T00:00:00Z".parse()?;
    let hours: Vec<DateTime<Utc>> = (0..744).map(|h| start + TimeDelta::hours(h)).collect();
    let names: Vec<String> = (1..=videos).map(|v| format!("v{v:06}")).collect();
    let sketch = store::sketch::Sketch::default().to_bytes();
    let mut batches = Vec::new();
    for (vi, name) in names.iter().enumerate() {
        batches.push(views_batch(hours.iter().enumerate().map(|(hi, h)| {
            let views = ((vi * 7 + hi * 13) % 97 + 3) as i64;
            ViewRow {
                video_id: name,
                hour_us: h.timestamp_micros(),
                views,
                billable_views: views * 3 / 5,
                fraud_filtered: (views % 5 == 0) as i64,
                watch_seconds: views * 90,
                sketch: sketch.clone(),
            }
        }))?);
    }
    let end = start + TimeDelta::hours(744);
    let sha = store::views::put_run(store, "bench-run", &batches, start, end).await?;
    let published = store::Published {
        seq: 1,
        hours: hours.iter().map(|h| (*h, "bench-run".to_owned())).collect(),
        watermark: Some(end),
        published_at: Utc::now(),
        manifests: [("bench-run".to_owned(), sha)].into(),
        prev_sha256: None,
    };
    store::layout::put_json(store, &store::layout::published(1), &published).await?;
    let creators: Vec<String> = (0..names.len())
        .map(|i| format!("creator-{:04}", i % 500 + 1))
        .collect();
    let catalog = store::catalog::to_csv(
        names
            .iter()
            .zip(&creators)
            .map(|(v, c)| [v.as_str(), c.as_str(), "a benchmark video"]),
    );
    store::catalog::import(store, catalog.into()).await?;
    Ok(names.len() * hours.len())
}

/// A ledger of `n` entries, each with a small statement file.
async fn build_ledger(store: Arc<dyn ObjectStore>, key: &LogKey, n: u64) -> anyhow::Result<()> {
    let mut news = Vec::with_capacity(n as usize);
    for i in 0..n {
        let path = format!("statements/bench/s{i}/statement.csv");
        let body = format!("creator_id,video_id\nc{i},v{i}\n");
        store::layout::put(
            store.as_ref(),
            &object_store::path::Path::from(path.as_str()),
            body.clone().into(),
        )
        .await?;
        news.push(NewEntry {
            entry: Entry {
                seq: 0,
                prev: String::new(),
                kind: Kind::Statement,
                period: "2026-10".into(),
                statement_id: format!("{i:032x}"),
                provisional: true,
                files: BTreeMap::from([(path, store::layout::sha256(body.as_bytes()))]),
                totals: Some(Totals {
                    currency: "USD".into(),
                    amount: "1.00".into(),
                    billable_views: 400,
                    creators: 1,
                    lines: 1,
                    unattributed_billable_views: 0,
                }),
                sealed_totals: None,
                inputs: Inputs {
                    published_seq: 1,
                    watermark: None,
                    runs: vec!["bench-run".into()],
                    catalog_sha256: None,
                    rate_card_sha256: "00".into(),
                },
                lines_root: None,
                references: vec![],
                operator: "bench".into(),
                recorded_at: Utc::now(),
            },
        });
    }
    Ledger::new(store).append_all(key, news).await?;
    Ok(())
}
