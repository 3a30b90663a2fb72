//! Billing inside `viewcount up`: a dev ledger key and a demo rate card
//! beside the store, and after the demo a provisional statement of the
//! month, checked against the generator's truth × the rates, and a ledger
//! that verifies.

use crate::util::say;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use billing::ledger::{Appended, Ledger, LogKey};
use billing::statement::{self, LineKind, Period, ReportOptions};
use billing::{RateCard, money};
use chrono::{DateTime, Utc};
use loadgen::Truth;

/// The key and rate card `up` bills with.
pub(crate) struct BillingFiles {
    key_path: PathBuf,
    key: LogKey,
    rates_path: PathBuf,
    rates: Vec<u8>,
}

impl BillingFiles {
    /// Uses the given files, or makes a dev key and a demo rate card beside
    /// a file:// store (kept, so the printed commands work after `up` stops).
    pub(crate) fn prepare(
        store_url: &str,
        key: Option<PathBuf>,
        rates: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let beside = |suffix: &str| -> anyhow::Result<PathBuf> {
            match store_url.strip_prefix("file://") {
                Some(dir) => Ok(PathBuf::from(format!(
                    "{}{suffix}",
                    dir.trim_end_matches('/')
                ))),
                None => bail!(
                    "the store {store_url} is not a local directory: pass --ledger-key and --rates"
                ),
            }
        };
        let key_path = match key {
            Some(p) => p,
            None => {
                let p = beside(".dev-ledger.key")?;
                if !p.exists() {
                    let (skey, key) = LogKey::generate(billing::ledger::DEFAULT_ORIGIN)?;
                    crate::billing_cmd::write_key(&p, &skey)?;
                    let public = crate::billing_cmd::pub_path(&p);
                    std::fs::write(&public, format!("{}\n", key.vkey))
                        .with_context(|| format!("writing {}", public.display()))?;
                    say!(
                        "ledger: made a dev signing key {} (use --ledger-key or VIEWCOUNT_LEDGER_KEY for a real one)",
                        p.display()
                    );
                }
                p
            }
        };
        let key = LogKey::from_file(&key_path)?;
        let rates_path = match rates {
            Some(p) => p,
            None => {
                let p = beside(".rates.toml")?;
                if !p.exists() {
                    std::fs::write(&p, DEMO_RATES)
                        .with_context(|| format!("writing {}", p.display()))?;
                }
                p
            }
        };
        let rates = std::fs::read(&rates_path)
            .with_context(|| format!("reading the rate card {}", rates_path.display()))?;
        RateCard::parse(&rates).with_context(|| rates_path.display().to_string())?;
        say!(
            "billing: rate card {}, ledger key {} ({})",
            rates_path.display(),
            key_path.display(),
            key.vkey
        );
        Ok(Self {
            key_path,
            key,
            rates_path,
            rates,
        })
    }
}

impl BillingFiles {
    /// The rate card, for serving's estimated earnings.
    pub(crate) fn rate_card(&self) -> anyhow::Result<Arc<RateCard>> {
        Ok(Arc::new(RateCard::parse(&self.rates)?))
    }
}

/// The demo's rate card: one rate for everyone but the demo catalog's
/// first creator.
const DEMO_RATES: &str = r#"# The demo rate card (DESIGN §6): currency units per 1 000 billable views.
currency = "USD"
default_cpm = "2.50"

[[override]]
creator_id = "creator-0001"
cpm = "4.125"
effective_from = 2026-01-01
"#;

/// Issues the provisional statement of the month of the demo's last closed
/// hour and checks it line by line against the truth × the rates, then
/// verifies the ledger.
pub(crate) async fn demo_billing(
    store: Arc<dyn object_store::ObjectStore>,
    store_url: &str,
    files: &BillingFiles,
    truth: &Truth,
    catalog: &store::catalog::Catalog,
    closed_to: DateTime<Utc>,
) -> anyhow::Result<()> {
    let last = closed_to - chrono::Duration::hours(1);
    let period = Period::parse(&last.format("%Y-%m").to_string())?;
    say!(
        "\nbilling: a provisional statement of {period} (the batch watermark has not passed its end plus the 72h grace) ..."
    );
    let r = statement::report(
        store.clone(),
        &files.key,
        &files.rates,
        &ReportOptions {
            period,
            provisional: true,
            grace: ReportOptions::DEFAULT_GRACE,
            operator: "viewcount up".into(),
        },
    )
    .await?;
    let s = &r.statement;
    let seq = match r.entry {
        Appended::New(n) | Appended::Existing(n) => n,
    };
    say!(
        "billing: statement {} PROVISIONAL: {} {} to {} creators in {} lines; {} unattributed videos not paid; ledger entry {seq}",
        s.id,
        money::format_amount(s.total()),
        s.currency,
        s.creator_totals().len(),
        s.lines.len(),
        s.unattributed.len()
    );

    // The truth × the rates, line by line.
    let rates = RateCard::parse(&files.rates)?;
    let mut want: BTreeMap<(String, String, rust_decimal::Decimal), i64> = BTreeMap::new();
    for row in truth.rows() {
        if row.hour < period.start() || row.hour >= period.end().min(closed_to) {
            continue;
        }
        let Some(creator) = catalog.creator_of(&row.video_id) else {
            continue;
        };
        let billable = (row.billable_views - row.fraud_filtered) as i64;
        if billable > 0 {
            let cpm = rates.cpm(creator, row.hour.date_naive());
            *want
                .entry((creator.to_owned(), row.video_id.clone(), cpm))
                .or_default() += billable;
        }
    }
    let got: BTreeMap<(String, String, rust_decimal::Decimal), i64> = s
        .lines
        .iter()
        .filter(|l| l.kind == LineKind::Views)
        .filter_map(|l| {
            Some((
                (l.creator_id.clone()?, l.video_id.clone(), l.cpm?),
                l.billable_views,
            ))
        })
        .collect();
    if got != want {
        bail!(
            "the statement differs from the truth × rates ({} lines vs {} expected)",
            got.len(),
            want.len()
        );
    }
    let mut want_total = Vec::new();
    for ((_, _, cpm), views) in &want {
        want_total.push(money::line_amount(*views, *cpm).context("amount overflow")?);
    }
    if money::sum(&want_total) != Some(s.total()) {
        bail!("the statement total differs from the sum of the truth's rounded lines");
    }
    say!(
        "check: every line equals the truth's billable views × the rate in force, total {} = Σ rounded lines",
        money::format_amount(s.total())
    );
    let v = Ledger::new(store).verify(None, None).await?;
    say!(
        "check: ledger verifies ({} entries, {} statement files re-hashed, root {})",
        v.entries,
        v.files,
        v.root.unwrap_or_default()
    );
    let key = files.key_path.display();
    let rates_path = files.rates_path.display();
    say!(
        "finance: the files are in {store_url}/{}/. Try:\n  \
         viewcount ledger verify --store {store_url}\n  \
         viewcount ledger prove --entry {seq} --store {store_url} > entry.tlog-proof\n  \
         viewcount ledger check-proof entry.tlog-proof --pubkey {key}.pub\n  \
         viewcount billing report --period {period} --rates {rates_path} --provisional --ledger-key {key} --store {store_url}",
        s.dir()
    );
    Ok(())
}
