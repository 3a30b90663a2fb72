//! `viewcount serve`: the API, its reload loops and its readiness checks,
//! standalone or inside `viewcount up`.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use object_store::ObjectStore;
use telemetry::OpsBuilder;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiConfig, App};
use crate::metrics::Metrics;
use crate::source::{Source, TokensFile};
use crate::speed_part::{SpeedConfig, SpeedSource};
use crate::{Error, Result};

/// Everything `serve` is configured with.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Limits and cadences of the API.
    pub api: ApiConfig,
    /// Where the speed layer's counters are.
    pub speed: SpeedConfig,
    /// The tokens file.
    pub tokens: PathBuf,
    /// How often the published state, the catalog, the tokens file and
    /// the Redis connection are checked for changes.
    pub reload_every: Duration,
    /// Deadlines and connection caps of the listener ([`run`]).
    pub http: telemetry::http::Limits,
}

impl ServeOptions {
    /// Default [`Self::reload_every`].
    pub const DEFAULT_RELOAD_EVERY: Duration = Duration::from_secs(2);
}

/// A built serving layer: its routes, and what it reads.
#[derive(Debug)]
pub struct Serving {
    /// The API routes and `/openapi.json` (add the ops routes beside them).
    pub router: Router,
    /// The paths `router` routes.
    pub paths: Vec<&'static str>,
    /// The published state and catalog being served.
    pub source: Arc<Source>,
    /// The tokens in force.
    pub tokens: Arc<TokensFile>,
}

impl Serving {
    /// Builds the serving layer over `store`: registers its metrics and
    /// readiness checks with `ops`, loads the published state once (a
    /// failure shows on `/readyz` and is retried), and starts the reload
    /// loops, which stop with `cancel` (as do live streams).
    pub async fn start(
        ops: &mut OpsBuilder,
        store: Arc<dyn ObjectStore>,
        options: ServeOptions,
        cancel: CancellationToken,
    ) -> Result<Self> {
        let metrics = Metrics::register(ops.registry());
        let tokens = Arc::new(
            TokensFile::open(options.tokens.clone(), metrics.clone()).map_err(Error::Config)?,
        );
        Self::start_with(ops, store, options, tokens, metrics, cancel).await
    }

    /// [`Serving::start`] with the tokens given.
    pub async fn start_with(
        ops: &mut OpsBuilder,
        store: Arc<dyn ObjectStore>,
        options: ServeOptions,
        tokens: Arc<TokensFile>,
        metrics: Metrics,
        cancel: CancellationToken,
    ) -> Result<Self> {
        let source = Arc::new(Source::new(store, metrics.clone()));
        let speed = Arc::new(SpeedSource::new(options.speed.clone()));
        let _ = source.refresh().await;
        let _ = speed.refresh().await;
        let every = options.reload_every;
        tokio::spawn(source.clone().run(every, cancel.clone()));
        tokio::spawn(tokens.clone().run(every, cancel.clone()));
        tokio::spawn(speed.clone().run(every, cancel.clone()));
        let s = source.clone();
        ops.check("batch_state", move || {
            let r = s.loaded();
            async move { r }
        });
        let s = source.clone();
        ops.degrading_check("batch_reload", move || {
            let r = s.reload_failure();
            async move { r }
        });
        let t = tokens.clone();
        ops.degrading_check("tokens", move || {
            let r = t.problem();
            async move { r }
        });
        let sp = speed.clone();
        ops.degrading_check("redis", move || {
            let sp = sp.clone();
            async move { sp.ping().await }
        });
        let app = Arc::new(App::new(
            source.clone(),
            tokens.clone(),
            speed,
            options.api,
            metrics,
            cancel,
        ));
        let (router, paths) = crate::api::router(app);
        Ok(Self {
            router,
            paths,
            source,
            tokens,
        })
    }
}

/// Serves the API alone on `listener` (with `/healthz`, `/readyz`,
/// `/metrics`) until `shutdown`, then closes live streams and lets
/// in-flight requests finish.
pub async fn run(
    listener: TcpListener,
    store: Arc<dyn ObjectStore>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let cancel = telemetry::cancel_on(shutdown);
    let mut ops = OpsBuilder::new();
    let options_http = options.http;
    let serving = Serving::start(&mut ops, store, options, cancel.clone()).await?;
    let ops = ops.build();
    let app = serving
        .router
        .merge(ops.router())
        .fallback(telemetry::not_found);
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving listening");
    let c = cancel.clone();
    telemetry::http::serve(
        listener,
        app,
        ops,
        options_http,
        async move { c.cancelled().await },
        std::future::pending(),
    )
    .await?;
    tracing::info!("serving stopped");
    Ok(())
}
