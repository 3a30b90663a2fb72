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

/// Whether stdout was found closed (a pipe whose reader ended).
static STDOUT_GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Prints a line to stdout; once stdout is closed (`up | tee log` and the
/// `tee` ended), to stderr instead, saying so once: a long-running command
/// keeps running, never panics on its own output.
pub(crate) fn say_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    if !STDOUT_GONE.load(Ordering::Relaxed) {
        if writeln!(std::io::stdout().lock(), "{line}").is_ok() {
            return;
        }
        STDOUT_GONE.store(true, Ordering::Relaxed);
        let _ = writeln!(
            std::io::stderr().lock(),
            "viewcount: stdout is closed; printing to stderr from now on"
        );
    }
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// `println!` through [`say_line`].
macro_rules! say {
    ($($t:tt)*) => {
        $crate::util::say_line(format_args!($($t)*))
    };
}
pub(crate) use say;

/// A command whose stdout is a pipe that closed (`viewcount status | head
/// -1`) ends quietly, as Unix tools do (exit 141, "killed by SIGPIPE"),
/// instead of panicking: Rust ignores SIGPIPE, so printing fails with
/// `EPIPE` and `println!` panics; this hook turns that one panic into the
/// quiet exit. Every other panic is reported as before.
pub(crate) fn quiet_broken_pipe() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        report(info);
    }));
}

/// Every file and directory this process creates is its owner's alone
/// (umask 077): statements, ledger entries, the archive's events (user
/// ids), keys and tokens files are not for other local users. A local
/// store's directories are then 0700 and its files 0600.
pub(crate) fn owner_only_files() {
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Whether `e` is a write to a closed pipe (somewhere in its chain).
pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().map(std::io::Error::kind)
            == Some(std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind)
                == Some(std::io::ErrorKind::BrokenPipe)
    })
}

/// Raises this process' open-files limit to the most the system allows:
/// every connection, Kafka socket and open file is a descriptor, and the
/// usual soft limit (1 024) is far below what a listener holds at its
/// connection cap. Logged; a refusal leaves the limit as it was.
pub(crate) fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
}

/// `--instance-id`: the static group membership of a consumer (DESIGN §7).
#[derive(Debug, clap::Args)]
pub(crate) struct InstanceFlag {
    /// This consumer's static member id in its Kafka group
    /// (`group.instance.id`): restarted with the same id it takes its
    /// partitions back at once; two live instances must not share one.
    /// Default: the host name and the role (`up`: the id and each role).
    #[arg(long, env = "VIEWCOUNT_INSTANCE_ID")]
    pub(crate) instance_id: Option<String>,
}

impl InstanceFlag {
    /// The id of this process' `role` consumer (`speed`, `archive`).
    pub(crate) fn id(&self, role: &str, one_role: bool) -> String {
        match &self.instance_id {
            Some(id) if one_role => id.clone(),
            Some(id) => format!("{id}-{role}"),
            None => {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "viewcount".to_owned());
                format!("{host}-{role}")
            }
        }
    }
}

/// The HTTP edge's deadlines and caps, for every command with a listener
/// that clients reach (ingest, serve, up).
#[derive(Debug, clap::Args)]
pub(crate) struct HttpFlags {
    /// Time a client has to send a request's head; also the longest a
    /// connection may sit idle before its next request.
    #[arg(long, env = "VIEWCOUNT_HEADER_TIMEOUT", default_value_t = telemetry::http::Limits::DEFAULT_HEADER_TIMEOUT.into())]
    pub(crate) header_timeout: humantime::Duration,
    /// Time a client has to send a request's whole body (408 after it).
    #[arg(long, env = "VIEWCOUNT_BODY_TIMEOUT", default_value_t = telemetry::http::Limits::DEFAULT_BODY_TIMEOUT.into())]
    pub(crate) body_timeout: humantime::Duration,
    /// Open connections at most (one more is answered 503 and closed).
    #[arg(long, env = "VIEWCOUNT_MAX_CONNECTIONS", default_value_t = telemetry::http::Limits::DEFAULT_MAX_CONNECTIONS)]
    pub(crate) max_connections: usize,
    /// Open connections from one IP address at most.
    #[arg(long, env = "VIEWCOUNT_MAX_CONNECTIONS_PER_IP", default_value_t = telemetry::http::Limits::DEFAULT_MAX_CONNECTIONS_PER_IP)]
    pub(crate) max_connections_per_ip: usize,
    /// At shutdown, how long in-flight requests may take before their
    /// connections are closed.
    #[arg(long, env = "VIEWCOUNT_DRAIN_TIMEOUT", default_value_t = telemetry::http::Limits::DEFAULT_DRAIN_TIMEOUT.into())]
    pub(crate) drain_timeout: humantime::Duration,
}

impl HttpFlags {
    pub(crate) fn limits(&self) -> telemetry::http::Limits {
        telemetry::http::Limits {
            header_timeout: self.header_timeout.into(),
            body_timeout: self.body_timeout.into(),
            max_connections: self.max_connections.max(1),
            max_connections_per_ip: self.max_connections_per_ip.max(1),
            drain_timeout: self.drain_timeout.into(),
        }
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

/// Counts SIGINT (Ctrl-C) and SIGTERM from now on: the receiver holds how
/// many arrived. Once called, neither signal ends the process by itself.
pub(crate) fn signals() -> tokio::sync::watch::Receiver<u32> {
    let (tx, rx) = tokio::sync::watch::channel(0u32);
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        loop {
            #[cfg(unix)]
            let term_recv = async {
                match term.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let term_recv = std::future::pending::<()>();
            tokio::pin!(term_recv);
            tokio::select! {
                r = tokio::signal::ctrl_c() => {
                    if r.is_err() {
                        // No Ctrl-C handler on this platform: SIGTERM only.
                        (&mut term_recv).await;
                    }
                }
                () = &mut term_recv => {}
            }
            tx.send_modify(|n| *n += 1);
        }
    });
    rx
}

/// Resolves when SIGINT (Ctrl-C) or SIGTERM arrives; a second one ends the
/// process at once (exit 130). Every service it is used by keeps nothing it
/// acknowledged only in memory: ingest answers 202 only after Kafka did,
/// speed's offsets are atomic with its counters, the archive is
/// at-least-once.
pub(crate) async fn shutdown_signal() {
    let mut rx = signals();
    let _ = rx.wait_for(|n| *n >= 1).await;
    tokio::spawn(async move {
        let _ = rx.wait_for(|n| *n >= 2).await;
        eprintln!("viewcount: a second signal; stopping now");
        std::process::exit(130);
    });
}

/// Reads a playback signing key file (`viewcount token playback-keygen`).
pub(crate) fn read_playback_signer(
    path: &std::path::Path,
) -> anyhow::Result<playback::PlaybackSigner> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the playback signing key {}", path.display()))?;
    playback::PlaybackSigner::parse(&text)
        .with_context(|| format!("{} is not usable", path.display()))
}
