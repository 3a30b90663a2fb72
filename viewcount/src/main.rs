//! `viewcount`: the one binary. Each subcommand is a thin shell around a
//! library crate; configuration comes from flags with `VIEWCOUNT_*` fallbacks
//! (DESIGN §6).

mod batch_cmd;
mod billing_cmd;
mod catalog_cmd;
mod gen_cmd;
mod ingest_cmd;
mod serve_cmd;
mod speed_cmd;
mod status_cmd;
mod token_cmd;
mod up;

mod util;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "viewcount",
    version,
    about = "Count video views exactly enough to pay creators"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything in one process on embedded defaults (mock-cluster Kafka, child redis-server).
    Up(Box<up::Args>),
    /// The ingest service alone: POST /v1/events into Kafka.
    Ingest(ingest_cmd::Args),
    /// The speed layer alone: Kafka -> deduplicated Redis counters.
    Speed(speed_cmd::Args),
    /// The serving API alone: merged batch + speed answers, with bearer tokens.
    Serve(serve_cmd::Args),
    /// The archive alone: Kafka -> raw Parquet by event hour.
    Archive(batch_cmd::ArchiveArgs),
    /// The batch layer: authoritative recomputation from the archive.
    #[command(subcommand)]
    Batch(batch_cmd::BatchCommand),
    /// Speed vs batch per video-hour, every difference with its cause.
    Reconcile(batch_cmd::ReconcileArgs),
    /// Seeded synthetic traffic, to an ingest URL or to NDJSON.
    Gen(gen_cmd::Args),
    /// The video catalog: which creator owns each video.
    #[command(subcommand)]
    Catalog(catalog_cmd::CatalogCommand),
    /// Bearer tokens for serving.
    #[command(subcommand)]
    Token(token_cmd::TokenCommand),
    /// Creator payment statements from the batch numbers.
    #[command(subcommand)]
    Billing(billing_cmd::BillingCommand),
    /// The audit ledger: keys, verification, proofs.
    #[command(subcommand)]
    Ledger(billing_cmd::LedgerCommand),
    /// The pipeline's health: lag, freshness, watermarks, dirty hours, last run, ledger head.
    Status(status_cmd::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    util::init_tracing();
    util::raise_fd_limit();
    util::owner_only_files();
    util::quiet_broken_pipe();
    // DataFusion and Ballista recurse over plans (planning, and a cluster
    // process decoding the plans it is sent): the rules' query, one join
    // per invalid-traffic rule, overflowed an executor's 2 MiB worker
    // stack. Stacks are reserved, not committed, so 16 MiB costs nothing
    // until used.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(16 << 20)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Up(a) => up::run(*a).await,
            Command::Ingest(a) => ingest_cmd::run(a).await,
            Command::Speed(a) => speed_cmd::run(a).await,
            Command::Serve(a) => serve_cmd::run(a).await,
            Command::Archive(a) => batch_cmd::archive(a).await,
            Command::Batch(c) => batch_cmd::batch(c).await,
            Command::Reconcile(a) => batch_cmd::reconcile(a).await,
            Command::Gen(a) => gen_cmd::run(a).await,
            Command::Catalog(c) => catalog_cmd::run(c).await,
            Command::Token(c) => token_cmd::run(c),
            Command::Billing(c) => billing_cmd::billing(c).await,
            Command::Ledger(c) => billing_cmd::ledger(c).await,
            Command::Status(a) => status_cmd::run(a).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader of our output went away (`| head -1`): quiet, as Unix
        // tools end on SIGPIPE.
        Err(e) if util::is_broken_pipe(&e) => std::process::ExitCode::from(141),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
