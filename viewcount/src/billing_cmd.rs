//! `viewcount billing` and `viewcount ledger`: statements from batch numbers
//! and the audit ledger (DESIGN §5.6, §5.7, §6).

use std::path::{Path, PathBuf};

use anyhow::Context;
use billing::ledger::{self, Appended, Ledger, LogKey, Proven};
use billing::statement::{self, Finalized, Period, ReportOptions};

use crate::batch_cmd::{MemoryFlags, StoreFlag};

/// Billing subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum BillingCommand {
    /// Issue a month's statement from the batch numbers and record it in the ledger.
    Report(ReportArgs),
    /// Lock a month: its latest statement becomes final; later changes become adjustments.
    Finalize(FinalizeArgs),
    /// Trace a creator's payout to lines, hours, runs, raw files and event ids (NDJSON).
    Explain(ExplainArgs),
}

/// Ledger subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum LedgerCommand {
    /// Make a signing key for the ledger (and its public verifier key beside it).
    Keygen(KeygenArgs),
    /// Recompute everything: chain, Merkle roots, checkpoint signatures and consistency, file hashes.
    Verify(VerifyArgs),
    /// After a crash mid-append: check the entry that has no signed
    /// checkpoint and sign it, and move `ledger/checkpoint` to the newest.
    Repair(RepairArgs),
    /// Print an inclusion proof of an entry (C2SP tlog-proof), or a consistency proof.
    Prove(ProveArgs),
    /// Check a proof offline with nothing but the public key.
    CheckProof(CheckProofArgs),
}

/// `--ledger-key`.
#[derive(Debug, clap::Args)]
pub(crate) struct KeyFlag {
    /// The ledger's Ed25519 signing key (from `viewcount ledger keygen`).
    #[arg(long, env = "VIEWCOUNT_LEDGER_KEY")]
    ledger_key: PathBuf,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ReportArgs {
    /// The month, `YYYY-MM`.
    #[arg(long)]
    period: String,
    /// The rate card (TOML).
    #[arg(long)]
    rates: PathBuf,
    /// How long after the month's end late views may still arrive: the batch
    /// watermark must pass end + grace.
    #[arg(long, default_value = "72h")]
    grace: humantime::Duration,
    /// Issue before the grace has passed; labelled provisional everywhere.
    #[arg(long)]
    provisional: bool,
    /// Who runs it (recorded in the ledger).
    #[arg(long, env = "USER", default_value = "unknown")]
    operator: String,
    #[command(flatten)]
    key: KeyFlag,
    #[command(flatten)]
    store: StoreFlag,
}

#[derive(Debug, clap::Args)]
pub(crate) struct FinalizeArgs {
    /// The month, `YYYY-MM`.
    #[arg(long)]
    period: String,
    /// Who runs it (recorded in the ledger).
    #[arg(long, env = "USER", default_value = "unknown")]
    operator: String,
    #[command(flatten)]
    key: KeyFlag,
    #[command(flatten)]
    store: StoreFlag,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ExplainArgs {
    /// The creator.
    #[arg(long)]
    creator: String,
    /// The month, `YYYY-MM`.
    #[arg(long)]
    period: String,
    /// Only this video.
    #[arg(long)]
    video: Option<String>,
    /// List every event id (default: a sample of each line's).
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    store: StoreFlag,
    #[command(flatten)]
    memory: MemoryFlags,
}

#[derive(Debug, clap::Args)]
pub(crate) struct KeygenArgs {
    /// Where to write the signing key (mode 0600); the verifier key goes to FILE.pub.
    #[arg(long)]
    out: PathBuf,
    /// The log's name: the checkpoint origin and the key name (no spaces, no '+').
    #[arg(long, default_value = ledger::DEFAULT_ORIGIN)]
    name: String,
}

#[derive(Debug, clap::Args)]
pub(crate) struct VerifyArgs {
    /// The verifier key you trust (default: the log's own `ledger/log.pub`).
    #[arg(long)]
    pubkey: Option<PathBuf>,
    /// A checkpoint you saw before: the log must extend it.
    #[arg(long)]
    trusted_checkpoint: Option<PathBuf>,
    /// Also follow every statement down to its data: the run manifests of
    /// its hours, their views and filtered files and every raw archive file
    /// they read, each re-hashed against what names it.
    #[arg(long)]
    deep: bool,
    #[command(flatten)]
    store: StoreFlag,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RepairArgs {
    #[command(flatten)]
    key: KeyFlag,
    #[command(flatten)]
    store: StoreFlag,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ProveArgs {
    /// The entry to prove included in the latest checkpoint.
    #[arg(
        long,
        conflicts_with = "consistency",
        required_unless_present = "consistency"
    )]
    entry: Option<u64>,
    /// Prove that the tree of this many entries is a prefix of the latest.
    #[arg(long)]
    consistency: Option<u64>,
    #[command(flatten)]
    store: StoreFlag,
}

#[derive(Debug, clap::Args)]
pub(crate) struct CheckProofArgs {
    /// The proof (from `viewcount ledger prove`).
    file: PathBuf,
    /// The log's verifier key (`ledger/log.pub`, obtained out of band).
    #[arg(long)]
    pubkey: PathBuf,
    /// For a consistency proof: the older checkpoint you hold.
    #[arg(long)]
    old_checkpoint: Option<PathBuf>,
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

pub(crate) async fn billing(c: BillingCommand) -> anyhow::Result<()> {
    match c {
        BillingCommand::Report(a) => {
            let period = Period::parse(&a.period)?;
            let rates = read(&a.rates, "the rate card")?;
            let key = LogKey::from_file(&a.key.ledger_key)?;
            let grace = chrono::Duration::from_std(a.grace.into())
                .map_err(|_| anyhow::anyhow!("--grace {} is out of range", a.grace))?;
            let store = store::open(&a.store.url())?;
            let r = statement::report(
                store,
                &key,
                &rates,
                &ReportOptions {
                    period,
                    provisional: a.provisional,
                    grace,
                    operator: a.operator,
                },
            )
            .await?;
            let s = &r.statement;
            let label = if s.provisional { " PROVISIONAL" } else { "" };
            let adjustments = s
                .lines
                .iter()
                .filter(|l| l.kind == statement::LineKind::Adjustment)
                .count();
            println!(
                "statement {}{label} for {}: {} {} to {} creators in {} lines ({adjustments} adjustments); \
                 {} unattributed videos not paid",
                s.id,
                s.period,
                billing::money::format_amount(s.total()),
                s.currency,
                s.creator_totals().len(),
                s.lines.len(),
                s.unattributed.len()
            );
            match r.entry {
                Appended::New(seq) => {
                    println!("recorded in ledger entry {seq}; files in {}/", s.dir())
                }
                Appended::Existing(seq) => println!(
                    "already recorded in ledger entry {seq} (same inputs, same statement): nothing new written"
                ),
            }
        }
        BillingCommand::Finalize(a) => {
            let period = Period::parse(&a.period)?;
            let key = LogKey::from_file(&a.key.ledger_key)?;
            let store = store::open(&a.store.url())?;
            match statement::finalize(store, &key, period, &a.operator).await? {
                Finalized::New { entry, statement } => println!(
                    "{period} finalized in ledger entry {entry} (statement of entry {statement}); \
                     later changes to it become adjustment lines in later statements"
                ),
                Finalized::Already(seq) => {
                    println!("{period} was already finalized in ledger entry {seq}")
                }
            }
        }
        BillingCommand::Explain(a) => {
            let store = store::open(&a.store.url())?;
            let opts = explain::ExplainOptions {
                creator: a.creator,
                period: Period::parse(&a.period)?,
                video: a.video,
                all: a.all,
                memory: a.memory.memory(),
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let e = explain::explain(store, &opts, &mut out).await?;
            std::io::Write::flush(&mut out)?;
            eprintln!(
                "explained ledger entry {}: {} lines, {} billable views, {} event ids found behind them; \
                 {} views removed by the invalid-traffic rules{}{}",
                e.entry,
                e.lines,
                e.billable_views,
                e.events,
                e.filtered_events,
                match e.unpaid_videos {
                    0 => String::new(),
                    n => format!(" ({n} video(s) with every view removed, so no line)"),
                },
                if opts.all {
                    ""
                } else {
                    " (a sample of each line's listed; --all lists every one)"
                }
            );
        }
    }
    Ok(())
}

pub(crate) async fn ledger(c: LedgerCommand) -> anyhow::Result<()> {
    match c {
        LedgerCommand::Keygen(a) => {
            let (skey, key) = LogKey::generate(&a.name)?;
            write_key(&a.out, &skey)?;
            let pub_path = pub_path(&a.out);
            std::fs::write(&pub_path, format!("{}\n", key.vkey))
                .with_context(|| format!("writing {}", pub_path.display()))?;
            println!(
                "signing key {} (keep it secret), verifier key {}:\n{}",
                a.out.display(),
                pub_path.display(),
                key.vkey
            );
        }
        LedgerCommand::Verify(a) => {
            let pubkey = a
                .pubkey
                .as_deref()
                .map(|p| read(p, "the verifier key"))
                .transpose()?
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            let trusted = a
                .trusted_checkpoint
                .as_deref()
                .map(|p| read(p, "the trusted checkpoint"))
                .transpose()?;
            let store = store::open(&a.store.url())?;
            let ledger = Ledger::new(store.clone());
            let v = ledger
                .verify(pubkey.as_deref(), trusted.as_deref())
                .await
                .context("the ledger does not verify")?;
            if a.deep {
                let log = ledger.read().await?;
                let d = statement::verify_deep(store.as_ref(), &log, &mut |e| {
                    eprintln!(
                        "deep: statement {} of {} (entry {})",
                        e.statement_id, e.period, e.seq
                    )
                })
                .await
                .context("the ledger does not verify down to its data")?;
                println!(
                    "deep: {} statements followed down: {} run manifests, {} views and filtered files, {} raw files re-hashed ({} bytes), every one as recorded",
                    d.statements, d.manifests, d.outputs, d.raw_files, d.bytes
                );
            }
            match v.root {
                Some(root) => println!(
                    "ledger verifies: {} entries, {} statement files re-hashed, every checkpoint signed by {} \
                     and consistent with the next; root {root}",
                    v.entries,
                    v.files,
                    v.origin.unwrap_or_default()
                ),
                None => println!("ledger is empty: nothing to verify"),
            }
        }
        LedgerCommand::Repair(a) => {
            let key = LogKey::from_file(&a.key.ledger_key)?;
            let store = store::open(&a.store.url())?;
            match Ledger::new(store).repair(&key).await? {
                0 => println!("ledger: every entry is signed; the latest checkpoint is the newest"),
                n => println!(
                    "ledger: checked and signed {n} entry left unsigned by a crash; it verifies now"
                ),
            }
        }
        LedgerCommand::Prove(a) => {
            let store = store::open(&a.store.url())?;
            let ledger = Ledger::new(store);
            let proof = match (a.entry, a.consistency) {
                (Some(n), _) => ledger.prove(n).await?,
                (None, Some(old)) => ledger.prove_consistency(old).await?,
                (None, None) => anyhow::bail!("give --entry N or --consistency OLD_SIZE"),
            };
            print!("{proof}");
        }
        LedgerCommand::CheckProof(a) => {
            let proof = read(&a.file, "the proof")?;
            let vkey = String::from_utf8_lossy(&read(&a.pubkey, "the verifier key")?).into_owned();
            let old = a
                .old_checkpoint
                .as_deref()
                .map(|p| read(p, "the older checkpoint"))
                .transpose()?;
            match ledger::check_proof(&proof, &vkey, old.as_deref())? {
                Proven::Inclusion {
                    origin,
                    size,
                    index,
                    entry,
                } => {
                    println!(
                        "proof holds: entry {index} is in {origin}'s log of {size} entries (checkpoint signed by its key)"
                    );
                    print!("{}", String::from_utf8_lossy(&entry));
                }
                Proven::Line {
                    origin,
                    size,
                    entry,
                    period,
                    statement_id,
                    provisional,
                    line,
                } => println!(
                    "proof holds: this line is in statement {statement_id} of {period}{} recorded in entry {entry} \
                     of {origin}'s log of {size} entries (checkpoint signed by its key):\n{line}",
                    if provisional { " (PROVISIONAL)" } else { "" }
                ),
                Proven::Consistency { origin, old, size } => println!(
                    "proof holds: {origin}'s log of {size} entries extends your checkpoint of {old}: history was only appended to"
                ),
            }
        }
    }
    Ok(())
}

pub(crate) fn pub_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Writes a signing key readable by its owner only; never overwrites one.
pub(crate) fn write_key(path: &Path, skey: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "creating {} (an existing key is never overwritten)",
                path.display()
            )
        })?;
    writeln!(f, "{skey}").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
