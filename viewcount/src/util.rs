//! Small helpers shared by the subcommands.

use schemas::RuleSet;

/// Logs to stderr: readable lines on a terminal, one JSON object per line
/// otherwise (for a log collector; `VIEWCOUNT_LOG_FORMAT=text|json`
/// overrides). `RUST_LOG` overrides the default `info` level.
pub(crate) fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,librdkafka=warn,rdkafka=warn")
    });
    let json = match std::env::var("VIEWCOUNT_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init();
    } else {
        builder.init();
    }
}

/// `--kafka` and `--topic` of a service that needs a broker.
#[derive(Debug, clap::Args)]
pub(crate) struct KafkaFlags {
    /// Kafka bootstrap servers.
    #[arg(long, env = "VIEWCOUNT_KAFKA")]
    pub(crate) kafka: String,
    /// The event topic.
    #[arg(long, env = "VIEWCOUNT_TOPIC", default_value = DEFAULT_TOPIC)]
    pub(crate) topic: String,
}

/// `--topic`'s default.
pub(crate) const DEFAULT_TOPIC: &str = "view-events";

/// `--listen`'s default.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The one rule set (DESIGN §3, §4) as flags, shared by every command that
/// validates or counts: `ingest`, `speed`, `archive`, `batch run` and `up`
/// all take these same flags and variables, so one setting reaches every
/// layer (`reconcile` uses the rule set the runs' manifests recorded). The
/// flags are [`RuleSet`]'s own (its `cli` feature): names, variables, help
/// and defaults are written once, on its fields.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RuleFlags {
    #[command(flatten)]
    rules: RuleSet,
}

/// `--dedup-window`'s default: the speed layer's.
pub(crate) fn default_dedup_window() -> humantime::Duration {
    speed::defaults::DEDUP_WINDOW
        .to_std()
        .unwrap_or_default()
        .into()
}

/// `--dedup-window` as the speed layer takes it.
pub(crate) fn dedup_window(d: humantime::Duration) -> anyhow::Result<chrono::Duration> {
    chrono::Duration::from_std(d.into())
        .map_err(|_| anyhow::anyhow!("--dedup-window {d} is out of range"))
}

impl RuleFlags {
    /// The rule set these flags name, checked ([`RuleSet::check`]).
    pub(crate) fn rules(&self) -> anyhow::Result<RuleSet> {
        self.rules.check().map_err(anyhow::Error::msg)?;
        Ok(self.rules)
    }
}

/// Binds the HTTP listen address, with an error that says which flag sets it.
pub(crate) async fn bind(listen: &str) -> anyhow::Result<tokio::net::TcpListener> {
    use anyhow::Context;
    tokio::net::TcpListener::bind(listen).await.with_context(|| {
        format!(
            "cannot listen on {listen}; is another viewcount running? pick another with --listen / VIEWCOUNT_LISTEN"
        )
    })
}

/// One stop signal shared by the tasks of a process: each takes
/// [`Stop::wait`] as its shutdown future.
#[derive(Debug)]
pub(crate) struct Stop(tokio::sync::watch::Sender<bool>);

impl Stop {
    pub(crate) fn new() -> Self {
        Self(tokio::sync::watch::channel(false).0)
    }

    /// Resolves once [`Stop::stop`] was called.
    pub(crate) fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    pub(crate) fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// Runs one service with `/healthz`, `/readyz`, `/metrics` on `listen` until
/// SIGINT/SIGTERM, then stops both and waits for them. A service that ends
/// by itself (an error it does not retry, a panic) ends the process with
/// its error, so whatever runs the process sees it and restarts it.
pub(crate) async fn run_service<F, E>(
    listen: &str,
    ops: telemetry::Ops,
    service: impl FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> F,
) -> anyhow::Result<()>
where
    F: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: Into<anyhow::Error> + Send + 'static,
{
    use anyhow::Context;
    let listener = bind(listen).await?;
    let stop = Stop::new();
    let app = ops.router().fallback(telemetry::not_found);
    let http = tokio::spawn(telemetry::serve(listener, app, ops, stop.wait()));
    let mut task = tokio::spawn(service(Box::pin(stop.wait())));
    let ended = tokio::select! {
        () = shutdown_signal() => None,
        r = &mut task => Some(r),
    };
    stop.stop();
    let outcome = match ended {
        None => task.await,
        Some(r) => {
            tracing::error!("the service stopped by itself; stopping the process");
            r
        }
    };
    let served = http.await.context("http task");
    outcome
        .context("service task")?
        .map_err(Into::into)
        .context("the service stopped")?;
    served??;
    Ok(())
}

/// Resolves when SIGINT (Ctrl-C) or SIGTERM arrives.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
