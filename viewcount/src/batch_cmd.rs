//! `viewcount archive` and `viewcount batch run`.

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::Context;
use archive::{ArchiveConfig, ArchiveMetrics};
use batch::run::{Engine, RunOptions, RunReport};
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use telemetry::OpsBuilder;

use crate::util::{KafkaFlags, RuleFlags, run_service};

/// `--store`, shared.
#[derive(Debug, clap::Args)]
pub(crate) struct StoreFlag {
    /// Object store URL (file:///abs/dir); default file://$PWD/data.
    #[arg(long, env = "VIEWCOUNT_STORE")]
    pub(crate) store: Option<String>,
}

impl StoreFlag {
    pub(crate) fn url(&self) -> String {
        self.store
            .clone()
            .unwrap_or_else(store::layout::default_url)
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct ArchiveArgs {
    #[command(flatten)]
    broker: KafkaFlags,
    #[command(flatten)]
    store: StoreFlag,
    /// Listen address of /healthz, /readyz, /metrics.
    #[arg(long, env = "VIEWCOUNT_LISTEN", default_value = crate::util::DEFAULT_LISTEN)]
    listen: String,
    /// Flush at least this often.
    #[arg(long, env = "VIEWCOUNT_ARCHIVE_FLUSH", default_value_t = archive::ArchiveConfig::DEFAULT_FLUSH_INTERVAL.into())]
    flush_interval: humantime::Duration,
    #[command(flatten)]
    instance: crate::util::InstanceFlag,
    #[command(flatten)]
    rules: RuleFlags,
}

pub(crate) async fn archive(a: ArchiveArgs) -> anyhow::Result<()> {
    let store = store::open(&a.store.url())?;
    let mut config = ArchiveConfig::new(&a.broker.kafka, &a.broker.topic);
    config.instance_id = Some(a.instance.id("archive", true));
    config.flush_interval = a.flush_interval.into();
    config.rules = a.rules.rules()?;
    let mut ops = OpsBuilder::new();
    let metrics = ArchiveMetrics::register(ops.registry());
    let ready = ops.flag("archive");
    let ops = ops.build();
    run_service(&a.listen, ops, |stop| {
        archive::run(config, store, metrics, ready, stop)
    })
    .await
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum BatchCommand {
    /// Recompute hours [from, to) from the raw archive and publish them, or
    /// with --dirty exactly the hours that got data since the batch covered them.
    Run(RunArgs),
    /// Run `batch run --dirty` on a schedule until stopped, serving
    /// /healthz, /readyz and /metrics.
    Schedule(ScheduleArgs),
    /// Run a Ballista scheduler for `batch run --engine ballista`, with the
    /// counting rules' functions and the store registered.
    Scheduler(SchedulerArgs),
    /// Run a Ballista executor: registers with the scheduler and runs its
    /// tasks over the store (the same store every process of the cluster
    /// and the client name).
    Executor(ExecutorArgs),
}

#[derive(Debug, clap::Args)]
#[cfg_attr(not(feature = "ballista"), allow(dead_code))]
pub(crate) struct SchedulerArgs {
    #[command(flatten)]
    store: StoreFlag,
    /// Address to listen on for clients and executors (gRPC).
    #[arg(
        long,
        env = "VIEWCOUNT_BALLISTA_BIND",
        default_value = "127.0.0.1:50050"
    )]
    bind: std::net::SocketAddr,
    /// The host executors and clients reach this scheduler at (default: the
    /// --bind address's; required when that is 0.0.0.0).
    #[arg(long)]
    external_host: Option<String>,
}

#[derive(Debug, clap::Args)]
#[cfg_attr(not(feature = "ballista"), allow(dead_code))]
pub(crate) struct ExecutorArgs {
    #[command(flatten)]
    store: StoreFlag,
    /// The scheduler: df://HOST:PORT.
    #[arg(
        long,
        env = "VIEWCOUNT_BALLISTA",
        default_value = "df://127.0.0.1:50050"
    )]
    scheduler: String,
    /// Host to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind_host: String,
    /// The host the scheduler and clients reach this executor at (default:
    /// --bind-host; required when that is 0.0.0.0).
    #[arg(long)]
    external_host: Option<String>,
    /// Arrow Flight port: results and shuffle data are fetched from it.
    #[arg(long, default_value_t = 50051)]
    flight_port: u16,
    /// gRPC port: the scheduler sends tasks to it.
    #[arg(long, default_value_t = 50052)]
    grpc_port: u16,
    /// Tasks run at once (default: every core).
    #[arg(long, default_value_t = 0)]
    vcores: usize,
    /// Directory for shuffle and spill files (default: a directory under
    /// the system temp directory named after the flight port).
    #[arg(long)]
    work_dir: Option<std::path::PathBuf>,
    /// Memory this executor's tasks keep under (like 4G); past it, sorts and
    /// aggregates spill to --work-dir. Default: Ballista's share of the machine.
    #[arg(long, env = "VIEWCOUNT_MEMORY_LIMIT", value_parser = parse_memory_limit)]
    memory_limit: Option<u64>,
}

/// `--from` and `--to`: hours `[from, to)`.
#[derive(Debug, clap::Args)]
pub(crate) struct HourRange {
    /// First hour (inclusive).
    #[arg(long, value_parser = schemas::time::parse_instant)]
    from: DateTime<Utc>,
    /// End (exclusive).
    #[arg(long, value_parser = schemas::time::parse_instant)]
    to: DateTime<Utc>,
}

/// How a batch run computes: shared by `batch run` and `batch schedule`.
#[derive(Debug, clap::Args)]
pub(crate) struct ComputeFlags {
    #[command(flatten)]
    store: StoreFlag,
    /// Events for an hour received later than this after its end are late data.
    #[arg(long, env = "VIEWCOUNT_LATENESS", default_value_t = RunOptions::DEFAULT_LATENESS.to_std().unwrap_or_default().into())]
    lateness: humantime::Duration,
    /// How to compute: `native` (the default), `sql` (the rules as
    /// DataFusion SQL, slower; gives the same bytes, to cross-check a run) or
    /// `ballista` (that SQL on a Ballista cluster, see --ballista).
    #[arg(long, default_value = "native", value_parser = |s: &str| Engine::parse(s).map_err(|e| e.to_string()))]
    engine: Engine,
    /// The Ballista scheduler for --engine ballista: df://HOST:PORT (started
    /// with `viewcount batch scheduler`).
    #[arg(long, env = "VIEWCOUNT_BALLISTA")]
    ballista: Option<String>,
    /// How long --engine ballista waits for the cluster to run a first task
    /// (no executor registered, or all busy) before failing.
    #[arg(long, default_value = "2m")]
    ballista_wait: humantime::Duration,
    #[command(flatten)]
    memory: MemoryFlags,
    #[command(flatten)]
    rules: RuleFlags,
}

/// The native engine's memory: shared by `batch run`, `batch schedule` and
/// `reconcile` (which reads and deduplicates a run's inputs the same way).
#[derive(Debug, clap::Args)]
pub(crate) struct MemoryFlags {
    /// Memory the engine keeps its working set under (like 6G or 512M;
    /// binary multiples); past half of it, the native engine's rows spill to
    /// --spill-dir and the output is the same (`--engine sql`: DataFusion's
    /// memory pool, spilling there too; `ballista`: see `batch executor`).
    /// Default: a quarter of this machine's (or cgroup's) memory.
    #[arg(long, env = "VIEWCOUNT_MEMORY_LIMIT", value_parser = parse_memory_limit)]
    memory_limit: Option<u64>,
    /// Local directory for spill files (a subdirectory per run, removed
    /// after it). Default: the system temp directory.
    #[arg(long, env = "VIEWCOUNT_SPILL_DIR")]
    spill_dir: Option<std::path::PathBuf>,
}

impl MemoryFlags {
    pub(crate) fn memory(&self) -> batch::memory::Memory {
        batch::memory::Memory {
            limit: self
                .memory_limit
                .unwrap_or_else(batch::memory::default_limit),
            spill_dir: self.spill_dir.clone(),
        }
    }
}

fn parse_memory_limit(s: &str) -> Result<u64, String> {
    let bytes = batch::memory::parse_size(s)?;
    if bytes < batch::memory::MIN_LIMIT {
        return Err(format!(
            "{s} is below the smallest memory limit, {}",
            batch::memory::human(batch::memory::MIN_LIMIT)
        ));
    }
    Ok(bytes)
}

impl ComputeFlags {
    /// Run options for `[from, to)` (the dirty planner sets its own ranges).
    fn options(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> anyhow::Result<RunOptions> {
        Ok(RunOptions {
            from,
            to,
            rules: self.rules.rules()?,
            lateness: chrono::Duration::from_std(self.lateness.into())
                .context("--lateness is out of range")?,
            allow_incomplete: false,
            dry_run: false,
            compute: self.compute()?,
            memory: self.memory.memory(),
        })
    }

    /// The engine `--engine` names; the native one is `None`.
    fn compute(&self) -> anyhow::Result<Option<Arc<dyn batch::run::Compute>>> {
        if self.ballista.is_some() && self.engine != Engine::Ballista {
            anyhow::bail!(
                "--ballista is for --engine ballista, not --engine {}",
                self.engine.as_str()
            );
        }
        match self.engine {
            Engine::Native => Ok(None),
            Engine::Sql => sql_engine(),
            Engine::Ballista => {
                let url = self.ballista.as_deref().ok_or_else(|| {
                    anyhow::anyhow!(
                        "--engine ballista needs the scheduler: --ballista df://HOST:PORT"
                    )
                })?;
                ballista_engine(url, self.ballista_wait.into())
            }
        }
    }
}

#[cfg(feature = "sql")]
fn sql_engine() -> anyhow::Result<Option<Arc<dyn batch::run::Compute>>> {
    Ok(Some(Arc::new(batch_sql::Sql)))
}

#[cfg(not(feature = "sql"))]
fn sql_engine() -> anyhow::Result<Option<Arc<dyn batch::run::Compute>>> {
    Err(not_built("--engine sql", "sql"))
}

#[cfg(feature = "ballista")]
fn ballista_engine(
    url: &str,
    wait: std::time::Duration,
) -> anyhow::Result<Option<Arc<dyn batch::run::Compute>>> {
    Ok(Some(Arc::new(batch_cluster::Ballista::new(url, wait)?)))
}

#[cfg(not(feature = "ballista"))]
fn ballista_engine(
    _url: &str,
    _wait: std::time::Duration,
) -> anyhow::Result<Option<Arc<dyn batch::run::Compute>>> {
    Err(not_built("--engine ballista", "ballista"))
}

/// What to do when this binary was built without an engine's cargo feature.
#[cfg(not(all(feature = "sql", feature = "ballista")))]
fn not_built(what: &str, feature: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{what} needs a viewcount built with the `{feature}` cargo feature (it links DataFusion{}, which the default build leaves out): \
         cargo build --release -p viewcount --features {feature}",
        if feature == "ballista" {
            " and Ballista"
        } else {
            ""
        }
    )
}

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// First hour (inclusive).
    #[arg(long, value_parser = schemas::time::parse_instant, required_unless_present = "dirty", requires = "to")]
    from: Option<DateTime<Utc>>,
    /// End (exclusive).
    #[arg(long, value_parser = schemas::time::parse_instant, required_unless_present = "dirty", requires = "from")]
    to: Option<DateTime<Utc>>,
    /// Recompute exactly the hours that received data since the batch last
    /// covered them, and the complete hours never published (the scheduled run).
    #[arg(long, conflicts_with_all = ["from", "to", "allow_incomplete"])]
    dirty: bool,
    #[command(flatten)]
    compute: ComputeFlags,
    /// Also compute hours the archive has not completed (past its watermark).
    #[arg(long)]
    allow_incomplete: bool,
    /// Show what would be read and written, compute nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the manifest as JSON instead of a summary (with --dirty: the
    /// plan and every run's manifest).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ScheduleArgs {
    /// Time between the starts of two dirty runs.
    #[arg(long, env = "VIEWCOUNT_BATCH_EVERY", default_value = "5m")]
    every: humantime::Duration,
    #[command(flatten)]
    compute: ComputeFlags,
    /// Listen address of /healthz, /readyz, /metrics.
    #[arg(long, env = "VIEWCOUNT_LISTEN", default_value = crate::util::DEFAULT_LISTEN)]
    listen: String,
}

pub(crate) async fn batch(cmd: BatchCommand) -> anyhow::Result<()> {
    match cmd {
        BatchCommand::Run(a) if a.dirty => {
            let store = store::open(&a.compute.store.url())?;
            let now = Utc::now();
            let opts = a.compute.options(now, now)?;
            if a.dry_run {
                let plan = batch::dirty::plan(store.as_ref(), &opts).await?;
                if a.json {
                    println!("{}", serde_json::to_string_pretty(&plan)?);
                } else {
                    print_plan(&plan);
                }
                return Ok(());
            }
            let (plan, reports) = run_dirty_with_progress(store, &opts).await?;
            if a.json {
                let manifests: Vec<_> = reports.iter().map(|r| &r.manifest).collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"plan": plan, "runs": manifests})
                    )?
                );
            } else {
                print_plan(&plan);
                for r in &reports {
                    print_summary(r, false);
                }
            }
            Ok(())
        }
        BatchCommand::Run(a) => {
            let (Some(from), Some(to)) = (a.from, a.to) else {
                anyhow::bail!("give --from and --to, or --dirty");
            };
            let store = store::open(&a.compute.store.url())?;
            let mut opts = a.compute.options(from, to)?;
            opts.allow_incomplete = a.allow_incomplete;
            opts.dry_run = a.dry_run;
            let report = run_with_progress(store, &opts).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report.manifest)?);
            } else {
                print_summary(&report, a.dry_run);
            }
            Ok(())
        }
        BatchCommand::Schedule(a) => schedule(a).await,
        BatchCommand::Scheduler(a) => scheduler(a).await,
        BatchCommand::Executor(a) => executor(a).await,
    }
}

/// The host others reach a cluster process at: `--external-host`, else the
/// host it binds, unless that is a wildcard address (which names no machine).
#[cfg(feature = "ballista")]
fn external_host(given: Option<String>, bind: &str, flag: &str) -> anyhow::Result<String> {
    match given {
        Some(host) => Ok(host),
        None if bind
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified()) =>
        {
            anyhow::bail!(
                "{flag} {bind} listens on every interface; give --external-host, the name or address other machines reach this process at"
            )
        }
        None => Ok(bind.to_owned()),
    }
}

#[cfg(feature = "ballista")]
async fn scheduler(a: SchedulerArgs) -> anyhow::Result<()> {
    let store = store::open(&a.store.url())?;
    let options = batch_cluster::SchedulerOptions {
        bind: a.bind,
        external_host: external_host(a.external_host, &a.bind.ip().to_string(), "--bind")?,
    };
    tracing::info!(bind = %a.bind, store = %a.store.url(), "ballista scheduler starting");
    tokio::select! {
        result = batch_cluster::run_scheduler(options, store) => {
            result.with_context(|| format!("the Ballista scheduler on {} stopped", a.bind))
        }
        () = crate::util::shutdown_signal() => Ok(()),
    }
}

#[cfg(feature = "ballista")]
async fn executor(a: ExecutorArgs) -> anyhow::Result<()> {
    let store = store::open(&a.store.url())?;
    let scheduler = batch_cluster::parse_scheduler_url(&a.scheduler)?;
    let work_dir = a.work_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("viewcount-executor-{}", a.flight_port))
    });
    let options = batch_cluster::ExecutorOptions {
        scheduler,
        external_host: external_host(a.external_host, &a.bind_host, "--bind-host")?,
        bind_host: a.bind_host,
        flight_port: a.flight_port,
        grpc_port: a.grpc_port,
        vcores: a.vcores,
        work_dir,
        memory_limit: a.memory_limit,
    };
    tracing::info!(scheduler = %a.scheduler, store = %a.store.url(), flight_port = a.flight_port, "ballista executor starting");
    // The executor handles Ctrl-C and SIGTERM itself: it drains its tasks
    // and deregisters from the scheduler before returning.
    batch_cluster::run_executor(options, store)
        .await
        .with_context(|| format!("the Ballista executor of scheduler {} stopped", a.scheduler))
}

#[cfg(not(feature = "ballista"))]
async fn scheduler(_a: SchedulerArgs) -> anyhow::Result<()> {
    Err(not_built("`viewcount batch scheduler`", "ballista"))
}

#[cfg(not(feature = "ballista"))]
async fn executor(_a: ExecutorArgs) -> anyhow::Result<()> {
    Err(not_built("`viewcount batch executor`", "ballista"))
}

/// How many dirty hours a summary lists.
pub(crate) const SHOWN: usize = 12;

/// Prints what a dirty run found to do.
pub(crate) fn print_plan(plan: &batch::dirty::Plan) {
    let show = |t: Option<DateTime<Utc>>| t.map_or("none".to_owned(), |t| t.to_string());
    println!(
        "dirty: archive watermark {}, batch watermark {}; {} dirty hour(s), {} new complete hour(s); {} run(s)",
        show(plan.archive_watermark),
        show(plan.batch_watermark),
        plan.dirty.len(),
        plan.new_hours,
        plan.runs.len()
    );
    for d in plan.dirty.iter().take(SHOWN) {
        println!("  {}  {}", d.hour.format("%Y-%m-%dT%H:%MZ"), d.why);
    }
    if plan.dirty.len() > SHOWN {
        println!("  ... and {} more dirty hours", plan.dirty.len() - SHOWN);
    }
    for (from, to) in &plan.runs {
        println!(
            "  run [{}, {})",
            from.format("%Y-%m-%dT%H:%MZ"),
            to.format("%Y-%m-%dT%H:%MZ")
        );
    }
}

/// `batch run --dirty` with the progress display of [`run_with_progress`].
pub(crate) async fn run_dirty_with_progress(
    store: Arc<dyn object_store::ObjectStore>,
    opts: &RunOptions,
) -> anyhow::Result<(batch::dirty::Plan, Vec<RunReport>)> {
    let progress = Progress::new();
    let out = batch::dirty::run_dirty(store, opts, &|s, d, t| progress.show(s, d, t)).await?;
    progress.finish();
    Ok(out)
}

async fn schedule(a: ScheduleArgs) -> anyhow::Result<()> {
    let every: std::time::Duration = a.every.into();
    if every.is_zero() {
        anyhow::bail!("--every must be longer than zero, like 5m");
    }
    let store = store::open(&a.compute.store.url())?;
    let now = Utc::now();
    let opts = a.compute.options(now, now)?;
    let mut ops = OpsBuilder::new();
    let metrics = batch::schedule::Metrics::register(ops.registry());
    let ready = ops.flag("scheduler");
    let ops = ops.build();
    tracing::info!(every = %a.every, "batch scheduler: a dirty run at start and then at every tick");
    run_service(&a.listen, ops, |stop| async move {
        ready.set_ready();
        batch::schedule::Scheduler::new(store, opts, every, metrics)
            .run(stop)
            .await;
        Ok::<(), anyhow::Error>(())
    })
    .await
}

/// Runs batch with a progress bar on a terminal, plain log lines otherwise.
pub(crate) async fn run_with_progress(
    store: Arc<dyn object_store::ObjectStore>,
    opts: &RunOptions,
) -> anyhow::Result<RunReport> {
    let progress = Progress::new();
    let report = batch::run::run(store, opts, &|s, d, t| progress.show(s, d, t)).await?;
    progress.finish();
    Ok(report)
}

/// A batch run's progress: a bar on a terminal, one log line per step
/// otherwise.
struct Progress {
    tty: bool,
    bar: ProgressBar,
    bytes_style: ProgressStyle,
    count_style: ProgressStyle,
    last_step: std::sync::Mutex<String>,
}

impl Progress {
    fn new() -> Self {
        let tty = std::io::stderr().is_terminal();
        let bar = ProgressBar::new(0);
        if tty {
            bar.set_style(
                ProgressStyle::with_template("{msg:24} {bar:30} {pos}/{len} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
        } else {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let bytes_style = ProgressStyle::with_template(
            "{msg:24} {bar:30} {binary_bytes}/{binary_total_bytes} {elapsed}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        let count_style = bar.style();
        Self {
            tty,
            bar,
            bytes_style,
            count_style,
            last_step: std::sync::Mutex::new(String::new()),
        }
    }

    fn show(&self, step: &str, done: u64, total: u64) {
        if self.tty && self.bar.message() != step {
            self.bar.set_style(if step == "reading inputs" {
                self.bytes_style.clone()
            } else {
                self.count_style.clone()
            });
        }
        self.bar.set_message(step.to_owned());
        self.bar.set_length(total);
        self.bar.set_position(done);
        let mut last = self.last_step.lock().unwrap_or_else(|p| p.into_inner());
        if !self.tty && *last != step {
            tracing::info!(step, total, "batch");
            *last = step.to_owned();
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

pub(crate) fn print_summary(r: &RunReport, dry_run: bool) {
    let m = &r.manifest;
    let bytes: u64 = m.inputs.iter().map(|i| i.size).sum();
    if dry_run {
        println!(
            "dry run: would compute hours [{}, {}) as run {}",
            m.from, m.to, m.run_id
        );
    } else {
        println!(
            "run {}: hours [{}, {}) in {:.1}s ({} engine)",
            m.run_id,
            m.from,
            m.to,
            m.seconds,
            m.engine.as_str()
        );
    }
    if let Some(req) = m.skipped_incomplete_to {
        println!(
            "  skipped [{}, {req}): not complete yet (archive watermark {:?})",
            m.to, m.archive_watermark
        );
    }
    let verb = if dry_run { "would read" } else { "read" };
    println!(
        "  {verb} {} raw files, {} bytes (whole days, for the fraud cap)",
        m.inputs.len(),
        bytes
    );
    for o in &m.outputs {
        if dry_run {
            println!("  would write {}", o.path);
        } else {
            println!(
                "  wrote {} ({} rows, {} bytes, sha256 {})",
                o.path, o.rows, o.size, o.sha256
            );
        }
    }
    if !dry_run {
        let rows = &m.rows;
        println!(
            "  rows: {} read, {} invalid, {} duplicates ({} conflicting ids), {} views, {} billable, {} fraud-filtered",
            rows.input,
            rows.invalid,
            rows.duplicates,
            rows.conflicting_ids,
            rows.views,
            rows.billable_views,
            rows.fraud_filtered
        );
        let peak_rss = m.steps.iter().filter_map(|s| s.peak_rss_bytes).max();
        let held = m.steps.iter().filter_map(|s| s.memory_bytes).max();
        let spilled: u64 = m.steps.iter().filter_map(|s| s.spilled_bytes).sum();
        if let (Some(rss), Some(held)) = (peak_rss, held) {
            use batch::memory::human;
            println!(
                "  memory: peak RSS {}, engine peak {}, spilled {}",
                human(rss),
                human(held),
                human(spilled)
            );
        }
        println!("  manifest runs/{}.json", m.run_id);
        if let Some(p) = &r.published {
            println!(
                "  published state #{}; batch watermark {}",
                p.seq,
                p.watermark.map_or("none".into(), |w| w.to_string())
            );
        }
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct ReconcileArgs {
    #[command(flatten)]
    range: HourRange,
    #[command(flatten)]
    store: StoreFlag,
    /// Redis URL of the speed layer.
    #[arg(long, env = "VIEWCOUNT_REDIS_URL")]
    redis_url: String,
    /// Prefix of the speed layer's keys.
    #[arg(long, env = "VIEWCOUNT_REDIS_PREFIX", default_value = speed::defaults::KEY_PREFIX)]
    redis_prefix: String,
    /// The speed layer's dedup window.
    #[arg(long, env = "VIEWCOUNT_DEDUP_WINDOW", default_value_t = crate::util::default_dedup_window())]
    dedup_window: humantime::Duration,
    #[command(flatten)]
    memory: MemoryFlags,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Compares speed and batch; errors (exit 1) on any unexplained difference.
pub(crate) async fn reconcile(a: ReconcileArgs) -> anyhow::Result<()> {
    let store = store::open(&a.store.url())?;
    let mut conn = counters::conn::connect_reader(&a.redis_url)
        .await
        .with_context(|| format!("connecting to redis at {}", a.redis_url))?;
    // The bucket bits do not matter for reading counters.
    let keys = counters::keys::KeySpace::new(&a.redis_prefix, speed::defaults::DEDUP_BUCKET_BITS);
    let speed_table: reconcile::SpeedTable = counters::read::all_counts(&mut conn, &keys)
        .await?
        .into_iter()
        .filter(|((_, h), _)| *h >= a.range.from && *h < a.range.to)
        .map(|(k, c)| (k, [c.views, c.billable_views, c.watch_seconds]))
        .collect();
    let window = crate::util::dedup_window(a.dedup_window)?;
    let report = reconcile::reconcile(
        store,
        &speed_table,
        a.range.from,
        a.range.to,
        window,
        &a.memory.memory(),
    )
    .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_reconcile(&report);
    }
    if report.has_unexplained() {
        anyhow::bail!(
            "speed and batch differ without a known cause in {} view(s); see the rows marked unexplained",
            report
                .totals
                .get(&reconcile::Cause::Unexplained)
                .copied()
                .unwrap_or(0)
        );
    }
    Ok(())
}

fn print_reconcile(r: &reconcile::Report) {
    println!(
        "reconcile [{}, {}): {} published hours, {} video-hours, {} agree",
        r.from, r.to, r.hours_compared, r.video_hours, r.agreeing
    );
    if !r.differences.is_empty() {
        println!(
            "{:<24} {:<22} {:>8} {:>8} {:>10} {:>10}  causes",
            "video", "hour", "speed", "batch", "speed bil", "batch bil"
        );
        for d in &r.differences {
            let causes: Vec<String> = d.causes.iter().map(|(c, n)| format!("{c:?}={n}")).collect();
            println!(
                "{:<24} {:<22} {:>8} {:>8} {:>10} {:>10}  {}",
                d.video_id,
                d.hour.format("%Y-%m-%dT%H:%MZ").to_string(),
                d.speed_views,
                d.batch_views,
                d.speed_billable,
                d.batch_billable_before_cap,
                causes.join(" ")
            );
        }
    }
    let totals: Vec<String> = r.totals.iter().map(|(c, n)| format!("{c:?}={n}")).collect();
    println!(
        "totals: {}",
        if totals.is_empty() {
            "no differences".into()
        } else {
            totals.join(" ")
        }
    );
}
