//! The operational surface every viewcount service shares: `GET /healthz`,
//! `GET /readyz` and `GET /metrics` (Prometheus text) over one metrics registry
//! and a set of readiness checks.
//!
//! A service registers its metrics in [`OpsBuilder::registry`] and its
//! readiness as a [`ReadyFlag`] (flipped by the service as its dependencies come
//! and go) or an async check (run on each `/readyz`). `viewcount up` builds one
//! [`Ops`] for all services in the process, so one `/metrics` shows them all.
//!
//! [`http`]: the HTTP edge (deadlines, connection caps, a bounded drain)
//! every listener runs behind.
//!
//! [`supervise`]: long-running tasks watched, so one that stops is loud.
//!
//! [`process`]: this process's peak memory (and a child's) as the kernel
//! counts it, which batch runs record and benchmarks measure.

pub mod http;
pub mod process;
pub mod supervise;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use prometheus_client::registry::Registry;
use serde_json::json;

type CheckFn = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// What a failing check means for the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Severity {
    /// The service cannot do its job: `/readyz` answers 503.
    Required,
    /// The service still answers, with less: `/readyz` answers 200 and
    /// says `degraded`, naming the check and why.
    Degrading,
}

/// A readiness flag a service flips: ready, or not ready with a reason.
#[derive(Debug, Clone)]
pub struct ReadyFlag(Arc<Mutex<Option<String>>>);

impl ReadyFlag {
    /// A flag, initially not ready for `reason`.
    pub fn new(reason: &str) -> Self {
        Self(Arc::new(Mutex::new(Some(reason.to_owned()))))
    }

    /// Marks the service ready.
    pub fn set_ready(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Marks the service not ready, saying why.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.into());
    }

    /// `Err(reason)` when not ready.
    pub fn get(&self) -> Result<(), String> {
        match &*self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            None => Ok(()),
            Some(r) => Err(r.clone()),
        }
    }
}

/// Collects metrics and readiness checks before serving.
pub struct OpsBuilder {
    registry: Registry,
    checks: Vec<(String, CheckFn, Severity)>,
}

impl Default for OpsBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl OpsBuilder {
    /// An empty builder; metric names get the `viewcount_` prefix.
    pub fn new() -> Self {
        Self {
            registry: Registry::with_prefix("viewcount"),
            checks: Vec::new(),
        }
    }

    /// The registry services register their metrics in (use a sub-registry
    /// named for the service).
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// A readiness flag named `name`, initially not ready ("starting").
    pub fn flag(&mut self, name: &str) -> ReadyFlag {
        let flag = ReadyFlag::new("starting");
        let f = flag.clone();
        self.checks.push((
            name.to_owned(),
            Arc::new(move || {
                let r = f.get();
                Box::pin(async move { r })
            }),
            Severity::Required,
        ));
        flag
    }

    /// An async readiness check named `name`, run on every `/readyz`.
    pub fn check<F, Fut>(&mut self, name: &str, f: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks.push((
            name.to_owned(),
            Arc::new(move || Box::pin(f())),
            Severity::Required,
        ));
    }

    /// An async check named `name` whose failure leaves the service ready
    /// but degraded (it still answers, with less): `/readyz` answers 200
    /// with `"degraded"` naming it and why.
    pub fn degrading_check<F, Fut>(&mut self, name: &str, f: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks.push((
            name.to_owned(),
            Arc::new(move || Box::pin(f())),
            Severity::Degrading,
        ));
    }

    /// Freezes the registry and checks.
    pub fn build(self) -> Ops {
        Ops(Arc::new(Inner {
            registry: self.registry,
            checks: self.checks,
            draining: AtomicBool::new(false),
        }))
    }
}

struct Inner {
    registry: Registry,
    checks: Vec<(String, CheckFn, Severity)>,
    draining: AtomicBool,
}

/// The built operational surface; cheap to clone.
#[derive(Clone)]
pub struct Ops(Arc<Inner>);

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops").finish_non_exhaustive()
    }
}

impl Ops {
    /// From now on `/readyz` answers 503 "shutting down".
    pub fn start_draining(&self) {
        self.0.draining.store(true, Ordering::Relaxed);
    }

    /// The metrics in Prometheus/OpenMetrics text.
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }

    /// Runs every check: `Ok` with the degrading checks that fail (each
    /// with its reason) when no required check fails, else the failing
    /// required checks.
    pub async fn readiness(&self) -> Result<Vec<(String, String)>, Vec<(String, String)>> {
        if self.0.draining.load(Ordering::Relaxed) {
            return Err(vec![("service".into(), "shutting down".into())]);
        }
        let results = futures::future::join_all(self.0.checks.iter().map(|(_, f, _)| f())).await;
        let (mut failing, mut degraded) = (Vec::new(), Vec::new());
        for ((name, _, severity), r) in self.0.checks.iter().zip(results) {
            if let Err(why) = r {
                match severity {
                    Severity::Required => failing.push((name.clone(), why)),
                    Severity::Degrading => degraded.push((name.clone(), why)),
                }
            }
        }
        if failing.is_empty() {
            Ok(degraded)
        } else {
            Err(failing)
        }
    }

    /// `/healthz`, `/readyz`, `/metrics`.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        let ready = self.clone();
        let metrics = self.clone();
        Router::new()
            .route(
                "/healthz",
                get(|| async { axum::Json(json!({"status": "ok"})) }),
            )
            .route(
                "/readyz",
                get(move || {
                    let ops = ready.clone();
                    async move { readyz(&ops).await }
                }),
            )
            .route(
                "/metrics",
                get(move |headers: axum::http::HeaderMap| {
                    let ops = metrics.clone();
                    async move {
                        // OpenMetrics to a scraper that asks for it (Prometheus
                        // does), the classic text format to anyone else
                        // (curl, `promtool check metrics`).
                        let open_metrics = headers
                            .get_all(header::ACCEPT)
                            .iter()
                            .filter_map(|v| v.to_str().ok())
                            .any(|v| v.contains("application/openmetrics-text"));
                        if open_metrics {
                            (
                                [(
                                    header::CONTENT_TYPE,
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )],
                                ops.render_metrics(),
                            )
                        } else {
                            (
                                [(
                                    header::CONTENT_TYPE,
                                    "text/plain; version=0.0.4; charset=utf-8",
                                )],
                                classic_text(&ops.render_metrics()),
                            )
                        }
                    }
                }),
            )
    }
}

/// OpenMetrics text as the classic Prometheus text format (0.0.4): a
/// counter family is named with its `_total` suffix there, and there is no
/// `# UNIT` or `# EOF`.
pub fn classic_text(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len() + 64);
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{p}{name}_total {tail}"));
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Serves `app` on `listener` with the default [`http::Limits`] until
/// `shutdown`, then drains: `/readyz` turns 503, no new connections are
/// accepted, in-flight requests complete (within the drain deadline).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    ops: Ops,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    http::serve(
        listener,
        app,
        ops,
        http::Limits::default(),
        shutdown,
        std::future::pending(),
    )
    .await
}

/// 404 in the API's error shape.
pub async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"error": {"code": "not_found", "message": "no such endpoint; see the README for the HTTP API"}})),
    )
        .into_response()
}

async fn readyz(ops: &Ops) -> Response {
    match ops.readiness().await {
        Ok(degraded) if degraded.is_empty() => axum::Json(json!({"ready": true})).into_response(),
        Ok(degraded) => {
            let detail: serde_json::Map<String, serde_json::Value> = degraded
                .into_iter()
                .map(|(n, w)| (n, serde_json::Value::String(w)))
                .collect();
            axum::Json(json!({"ready": true, "status": "degraded", "degraded": detail}))
                .into_response()
        }
        Err(failing) => {
            let msg = failing
                .iter()
                .map(|(n, w)| format!("{n}: {w}"))
                .collect::<Vec<_>>()
                .join("; ");
            let detail: serde_json::Map<String, serde_json::Value> = failing
                .into_iter()
                .map(|(n, w)| (n, serde_json::Value::String(w)))
                .collect();
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"ready": false, "error": {"code": "not_ready", "message": msg, "checks": detail}})),
            )
                .into_response()
        }
    }
}

/// A token cancelled once `shutdown` resolves: how a service turns the
/// shutdown future it is given into something every task can watch.
pub fn cancel_on(
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio_util::sync::CancellationToken {
    let cancel = tokio_util::sync::CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        shutdown.await;
        c.cancel();
    });
    cancel
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_take_their_total_name_and_open_metrics_lines_go() {
        let om = "# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests_total{a=\"b\"} 3\n# HELP x_depth Depth.\n# TYPE x_depth gauge\n# UNIT x_depth bytes\nx_depth 1\n# EOF\n";
        assert_eq!(
            super::classic_text(om),
            "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\nx_requests_total{a=\"b\"} 3\n# HELP x_depth Depth.\n# TYPE x_depth gauge\nx_depth 1\n"
        );
    }
}
