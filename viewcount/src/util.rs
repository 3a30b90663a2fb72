//! Small helpers shared by the subcommands.

use std::time::Duration;

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
/// layer (`reconcile` uses the rule set the runs' manifests recorded). Defaults come from [`RuleSet::default`].
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RuleFlags {
    /// Accept `occurred_at` up to this far before its receipt (the late-data
    /// horizon). Every layer must run with the same value.
    #[arg(long, env = "VIEWCOUNT_LATE_HORIZON", default_value_t = secs(RuleSet::default().late_horizon_seconds))]
    pub(crate) late_horizon: humantime::Duration,
    /// Accept `occurred_at` up to this far after its receipt.
    #[arg(long, env = "VIEWCOUNT_MAX_FUTURE", default_value_t = secs(RuleSet::default().max_future_seconds))]
    pub(crate) max_future: humantime::Duration,
    /// A view is billable when revenue-eligible and watched at least this
    /// many seconds.
    #[arg(long, env = "VIEWCOUNT_BILLABLE_MIN_WATCH", default_value_t = RuleSet::default().billable_min_watch_seconds)]
    pub(crate) billable_min_watch: u32,
    /// Batch fraud cap: at most this many billable views per user, video and
    /// UTC day.
    #[arg(long, env = "VIEWCOUNT_FRAUD_CAP", default_value_t = RuleSet::default().fraud_cap_per_user_video_day)]
    pub(crate) fraud_cap: u32,
    /// Batch rule `impossible_watch`: a user's views in one UTC hour that
    /// report more watch seconds than this in all are filtered (0: off).
    #[arg(long, env = "VIEWCOUNT_IMPOSSIBLE_WATCH", default_value_t = RuleSet::default().impossible_watch_seconds)]
    pub(crate) impossible_watch: u32,
    /// Batch rule `repeat_loop`: this many billable views of one video by
    /// one user in one UTC hour are all filtered (0: off).
    #[arg(long, env = "VIEWCOUNT_REPEAT_LOOP_VIEWS", default_value_t = RuleSet::default().repeat_loop_views)]
    pub(crate) repeat_loop_views: u32,
    /// Batch rule `bot_farm`: this many users viewing one video in one UTC
    /// hour with one device, country, referrer, quality and watch band are
    /// all filtered (0: off).
    #[arg(long, env = "VIEWCOUNT_BOT_FARM_ACCOUNTS", default_value_t = RuleSet::default().bot_farm_accounts)]
    pub(crate) bot_farm_accounts: u32,
    /// Batch rule `bot_farm`: the width in seconds of its watch bands.
    #[arg(long, env = "VIEWCOUNT_BOT_FARM_WATCH_BAND", default_value_t = RuleSet::default().bot_farm_watch_band_seconds)]
    pub(crate) bot_farm_watch_band: u32,
    /// Batch rule `zero_engagement`: this many views of one video with no
    /// ad impression and under --zero-engagement-watch seconds, within
    /// --zero-engagement-window of each other in one UTC hour, are all
    /// filtered (0: off).
    #[arg(long, env = "VIEWCOUNT_ZERO_ENGAGEMENT_VIEWS", default_value_t = RuleSet::default().zero_engagement_views)]
    pub(crate) zero_engagement_views: u32,
    /// Batch rule `zero_engagement`: the watch seconds below which a view
    /// without ad impressions is a candidate.
    #[arg(long, env = "VIEWCOUNT_ZERO_ENGAGEMENT_WATCH", default_value_t = RuleSet::default().zero_engagement_watch_seconds)]
    pub(crate) zero_engagement_watch: u32,
    /// Batch rule `zero_engagement`: the burst's window, in seconds.
    #[arg(long, env = "VIEWCOUNT_ZERO_ENGAGEMENT_WINDOW", default_value_t = RuleSet::default().zero_engagement_window_seconds)]
    pub(crate) zero_engagement_window: u32,
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

fn secs(s: u32) -> humantime::Duration {
    Duration::from_secs(s.into()).into()
}

impl RuleFlags {
    /// The rule set these flags name.
    pub(crate) fn rules(&self) -> anyhow::Result<RuleSet> {
        let whole_seconds = |d: &humantime::Duration, flag: &str| -> anyhow::Result<u32> {
            let d: Duration = (*d).into();
            if d.subsec_nanos() != 0 {
                anyhow::bail!("--{flag} {d:?}: give whole seconds");
            }
            u32::try_from(d.as_secs())
                .map_err(|_| anyhow::anyhow!("--{flag} {d:?} is too long (at most 136 years)"))
        };
        let rules = RuleSet {
            late_horizon_seconds: whole_seconds(&self.late_horizon, "late-horizon")?,
            max_future_seconds: whole_seconds(&self.max_future, "max-future")?,
            billable_min_watch_seconds: self.billable_min_watch,
            fraud_cap_per_user_video_day: self.fraud_cap,
            impossible_watch_seconds: self.impossible_watch,
            repeat_loop_views: self.repeat_loop_views,
            bot_farm_accounts: self.bot_farm_accounts,
            bot_farm_watch_band_seconds: self.bot_farm_watch_band,
            zero_engagement_views: self.zero_engagement_views,
            zero_engagement_watch_seconds: self.zero_engagement_watch,
            zero_engagement_window_seconds: self.zero_engagement_window,
        };
        rules.check().map_err(anyhow::Error::msg)?;
        Ok(rules)
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
/// SIGINT/SIGTERM, then stops both and waits for them.
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
    let task = tokio::spawn(service(Box::pin(stop.wait())));
    shutdown_signal().await;
    stop.stop();
    task.await.context("service task")?.map_err(Into::into)?;
    http.await.context("http task")??;
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
