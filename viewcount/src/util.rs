//! Small helpers shared by the subcommands.

use std::time::Duration;

/// Logs to stderr; `RUST_LOG` overrides the default `info` level.
pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,librdkafka=warn,rdkafka=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// `--kafka` and `--topic` of a service that needs a broker.
#[derive(Debug, clap::Args)]
pub(crate) struct KafkaFlags {
    /// Kafka bootstrap servers.
    #[arg(long, env = "VIEWCOUNT_KAFKA")]
    pub(crate) kafka: String,
    /// The event topic.
    #[arg(long, env = "VIEWCOUNT_TOPIC", default_value = "view-events")]
    pub(crate) topic: String,
}

/// Parses `500ms`, `30s`, `15m`, `2h`, `7d` (a bare number means seconds).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; use e.g. 500ms, 30s, 15m, 2h, 7d"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3_600,
        "d" => n * 86_400,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?}; use ms, s, m, h or d"
            ));
        }
    };
    Ok(Duration::from_secs(secs))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7_200)));
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("h").is_err());
    }
}
