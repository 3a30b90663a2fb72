//! The batch on a Ballista cluster: `viewcount batch scheduler`, `viewcount
//! batch executor`, and [`Ballista`], the [`batch::run::Compute`] that
//! `batch run --engine ballista` plans the SQL specification (crate
//! `batch-sql`) with.
//!
//! Every process of the cluster registers the rules' functions
//! ([`batch_sql::functions::register_functions`]; Ballista ships a plan's
//! functions by name) and its own handle on the same store under
//! [`batch_sql::session::DATAFUSION_URL`], so a plan names files the same
//! way wherever it runs: a `file://` store must be the same directory on
//! every machine (a shared mount), an `s3://` store the same bucket and
//! prefix.
//!
//! The binary links this crate only with its `ballista` cargo feature.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ballista::prelude::SessionContextExt;
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_core::utils::default_session_builder;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use batch::memory::Memory;
use batch::run::{Computed, Engine};
use batch_sql::session::store_url;
use chrono::{DateTime, Utc};
use datafusion::execution::SessionState;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::future::BoxFuture;
use object_store::ObjectStore;
use schemas::{ErrorClass, RuleSet};

/// Errors of a cluster process or a run on the cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is unusable.
    #[error("{0}")]
    Input(String),
    /// The cluster is not there, or failed.
    #[error("{0}")]
    Cluster(String),
    /// DataFusion failed.
    #[error("datafusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// The SQL engine failed.
    #[error(transparent)]
    Sql(#[from] batch_sql::Error),
}

impl Error {
    /// What a caller can do about it.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Input(_) => ErrorClass::Input,
            Error::Cluster(_) => ErrorClass::Unavailable,
            Error::DataFusion(e) => batch_sql::datafusion_error_class(e),
            Error::Sql(e) => e.class(),
        }
    }
}

impl From<Error> for batch::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Input(m) => batch::Error::Input(m),
            Error::Sql(e) => e.into_batch(Engine::Ballista),
            other => batch::Error::Engine {
                engine: Engine::Ballista.as_str(),
                class: other.class(),
                message: other.to_string(),
            },
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A scheduler's address in `batch run --ballista`: `df://HOST:PORT`.
pub const URL_SCHEME: &str = "df://";

/// The default scheduler port (Ballista's).
pub const DEFAULT_SCHEDULER_PORT: u16 = 50050;

/// Checks a `--ballista` URL: `df://HOST:PORT`.
pub fn parse_scheduler_url(url: &str) -> Result<(String, u16)> {
    let bad = || {
        Error::Input(format!(
            "--ballista {url:?} is not a scheduler address; use df://HOST:PORT, like df://127.0.0.1:{DEFAULT_SCHEDULER_PORT}"
        ))
    };
    let rest = url.strip_prefix(URL_SCHEME).ok_or_else(bad)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse::<u16>().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

/// A client session on the scheduler at `url` (`df://HOST:PORT`) with
/// `store`'s raw files at `paths` as the table `raw`: what
/// [`batch_sql::sql`] plans in for `--engine ballista`. Connects on the
/// first query.
pub async fn remote_session<'a>(
    url: &str,
    store: Arc<dyn ObjectStore>,
    paths: impl IntoIterator<Item = &'a str>,
) -> Result<SessionContext> {
    parse_scheduler_url(url)?;
    // The functions are registered after the context exists: making it
    // replaces the state's function lists with Ballista's.
    let ctx = SessionContext::remote(url).await?;
    // Ballista 55's adaptive planner re-plans the rules' joins without end
    // (a new one-task stage after another, "stages to be cancelled but its
    // not implemented"); the static planner runs the plan as written.
    ctx.state_ref().write().config_mut().options_mut().set(
        ballista_core::config::BALLISTA_ADAPTIVE_PLANNER_ENABLED,
        "false",
    )?;
    batch_sql::session::register_raw(&ctx, store, paths).await?;
    Ok(ctx)
}

/// A failure of a run on the cluster at `url`, saying what to check when it
/// is not the data's fault (a corrupt input stays a DataFusion error,
/// classed by its cause).
pub fn explain(url: &str, e: Error) -> Error {
    let inner = match e {
        Error::DataFusion(inner) | Error::Sql(batch_sql::Error::DataFusion(inner)) => inner,
        other => return other,
    };
    if batch_sql::datafusion_error_class(&inner) == ErrorClass::Corrupt {
        return Error::DataFusion(inner);
    }
    Error::Cluster(format!(
        "the run on the scheduler at {url} failed: {inner}; check that `viewcount batch scheduler` listens there, that executors are registered with it (`viewcount batch executor --scheduler {url}`), and that every process opens the same --store"
    ))
}

/// How long a run waits, by default, for the cluster to run a first task.
pub const DEFAULT_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs a one-row query on the cluster within `wait`. A Ballista scheduler
/// with no executor queues jobs until one registers, without limit; this
/// turns that into an error naming what to start.
pub async fn wait_ready(ctx: &SessionContext, url: &str, wait: std::time::Duration) -> Result<()> {
    let probe = async { ctx.sql("SELECT 1").await?.collect().await };
    match tokio::time::timeout(wait, probe).await {
        Ok(done) => done
            .map(drop)
            .map_err(|e| explain(url, Error::DataFusion(e))),
        Err(_) => Err(Error::Cluster(format!(
            "the scheduler at {url} ran no task within {}s: no executor is registered with it, or all are busy; start one with `viewcount batch executor --scheduler {url}` (or wait longer with --ballista-wait)",
            wait.as_secs()
        ))),
    }
}

/// A session state as Ballista builds it, with the rules' functions and the
/// store registered: the scheduler's per-client sessions and the source of
/// an executor's function registry.
fn cluster_state(config: SessionConfig, store: &Arc<dyn ObjectStore>) -> Result<SessionState> {
    let mut state = default_session_builder(config)?;
    batch_sql::functions::register_functions(&mut state)?;
    state
        .runtime_env()
        .register_object_store(&store_url(), store.clone());
    Ok(state)
}

/// `batch run --engine ballista`: the SQL specification planned on the
/// scheduler at `url`, which waits up to `wait` for the cluster to run a
/// first task.
#[derive(Debug, Clone)]
pub struct Ballista {
    url: String,
    wait: std::time::Duration,
}

impl Ballista {
    /// The cluster whose scheduler is at `url` (`df://HOST:PORT`, checked).
    pub fn new(url: &str, wait: std::time::Duration) -> Result<Self> {
        parse_scheduler_url(url)?;
        Ok(Self {
            url: url.to_owned(),
            wait,
        })
    }
}

impl batch::run::Compute for Ballista {
    fn engine(&self) -> Engine {
        Engine::Ballista
    }

    fn compute<'a>(
        &'a self,
        store: Arc<dyn ObjectStore>,
        paths: Vec<String>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        rules: &'a RuleSet,
        _memory: &'a Memory,
    ) -> BoxFuture<'a, batch::Result<Computed>> {
        Box::pin(async move {
            let ctx = remote_session(&self.url, store, paths.iter().map(String::as_str)).await?;
            wait_ready(&ctx, &self.url, self.wait).await?;
            batch_sql::sql::compute(&ctx, from, to, rules)
                .await
                .map_err(|e| explain(&self.url, e.into()).into())
        })
    }
}

/// What `viewcount batch scheduler` runs.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Where to listen for clients and executors (gRPC).
    pub bind: SocketAddr,
    /// The host executors and clients reach this scheduler at.
    pub external_host: String,
}

/// Runs a Ballista scheduler until the future is dropped or it fails.
pub async fn run_scheduler(options: SchedulerOptions, store: Arc<dyn ObjectStore>) -> Result<()> {
    let config = SchedulerConfig {
        bind_host: options.bind.ip().to_string(),
        bind_port: options.bind.port(),
        external_host: options.external_host,
        override_session_builder: Some(Arc::new(move |config: SessionConfig| {
            cluster_state(config, &store).map_err(|e| match e {
                Error::DataFusion(e) => e,
                other => datafusion::error::DataFusionError::External(Box::new(other)),
            })
        })),
        ..SchedulerConfig::default()
    };
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(cluster_error)?;
    ballista_scheduler::scheduler_process::start_server(cluster, options.bind, Arc::new(config))
        .await
        .map_err(cluster_error)
}

/// What `viewcount batch executor` runs.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler's host and port.
    pub scheduler: (String, u16),
    /// The host to listen on.
    pub bind_host: String,
    /// The host the scheduler and clients reach this executor at.
    pub external_host: String,
    /// Arrow Flight port (results and shuffle data are fetched here).
    pub flight_port: u16,
    /// gRPC port (the scheduler pushes tasks here).
    pub grpc_port: u16,
    /// Tasks run at once; 0 = every core.
    pub vcores: usize,
    /// Shuffle files; kept while the process runs.
    pub work_dir: PathBuf,
    /// DataFusion's memory pool for this executor's tasks (past it, sorts
    /// and aggregates spill to `work_dir`); `None`: Ballista's default share
    /// of the machine.
    pub memory_limit: Option<u64>,
}

/// Runs a Ballista executor until it is stopped (Ctrl-C or SIGTERM: it
/// finishes its tasks and deregisters) or fails.
pub async fn run_executor(options: ExecutorOptions, store: Arc<dyn ObjectStore>) -> Result<()> {
    let work_dir = options
        .work_dir
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::Input(format!(
                "--work-dir {} is not valid UTF-8; choose another directory",
                options.work_dir.display()
            ))
        })?;
    std::fs::create_dir_all(&options.work_dir).map_err(|e| {
        Error::Input(format!(
            "cannot create the executor's --work-dir {work_dir}: {e}"
        ))
    })?;
    let registry = cluster_state(SessionConfig::default(), &store)?;
    let spill_dir = work_dir.clone();
    let config = ExecutorProcessConfig {
        bind_host: options.bind_host,
        external_host: Some(options.external_host),
        port: options.flight_port,
        grpc_port: options.grpc_port,
        scheduler_host: options.scheduler.0,
        scheduler_port: options.scheduler.1,
        // Started beside its scheduler (as in scripts/test), an executor
        // waits for it rather than failing at once.
        scheduler_connect_timeout_seconds: 30,
        vcores: options.vcores,
        work_dir: Some(work_dir),
        print_thread_info: false,
        memory_pool_size: options.memory_limit,
        override_function_registry: Some(Arc::new(BallistaFunctionRegistry::from(&registry))),
        override_runtime_producer: Some(Arc::new(move |_config: &SessionConfig| {
            let env = RuntimeEnvBuilder::new()
                .with_temp_file_path(spill_dir.clone())
                .build()?;
            env.register_object_store(&store_url(), store.clone());
            Ok(Arc::new(env))
        })),
        ..ExecutorProcessConfig::default()
    };
    start_executor_process(Arc::new(config))
        .await
        .map_err(cluster_error)
}

fn cluster_error(e: ballista_core::error::BallistaError) -> Error {
    Error::Cluster(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_urls_are_checked() {
        assert_eq!(
            parse_scheduler_url("df://127.0.0.1:50050").unwrap(),
            ("127.0.0.1".to_owned(), 50050)
        );
        assert_eq!(
            parse_scheduler_url("df://sched.internal:7000").unwrap(),
            ("sched.internal".to_owned(), 7000)
        );
        for bad in [
            "127.0.0.1:50050",
            "http://h:1",
            "df://h",
            "df://:50050",
            "df://h:0",
            "df://h:port",
        ] {
            let e = parse_scheduler_url(bad).unwrap_err().to_string();
            assert!(e.contains("df://HOST:PORT"), "{bad}: {e}");
        }
    }
}
