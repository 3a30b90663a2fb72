//! The HTTP API (DESIGN §6): creators' and finance's questions answered by
//! merging batch counts (hours before the watermark `W`) with speed counts
//! (hours from `W` on), every answer saying which part came from where and
//! how fresh it is.
//!
//! Every `/v1/` route needs `Authorization: Bearer <secret>` (401 with
//! `WWW-Authenticate: Bearer` otherwise), is rate limited per token (429
//! with `Retry-After`), and checks the token's scope: a creator token reads
//! only its own creator's videos (403 otherwise, and for unattributed
//! videos). Path and query values are checked before they reach a Redis key
//! or anything else; a bad one is a 400 naming the parameter.
//!
//! One module per route family, each handler small and its checks in
//! [`params`]; the routes and the OpenAPI document are listed once, here:
//! - [`app`]: the shared state and limits; [`error`]: the error answer;
//! - [`params`]: query and path parameters; [`auth`]: tokens, rate limits,
//!   the creator scope;
//! - [`answers`] and [`merge`]: the views answers and the merge rule that
//!   fills them; [`views`]: their routes; [`live`]: the live stream;
//! - [`statements`]: statements, the ledger and earnings (the money is
//!   billing's, read and priced there);
//! - [`dashboard`]: the embedded creator dashboard.

pub mod answers;
pub mod app;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod live;
pub mod merge;
pub mod params;
pub mod statements;
pub mod views;

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

pub use app::{ApiConfig, App};
pub use error::{ApiError, ErrorBody, ErrorDetail};

use answers::*;
use dashboard::{dashboard, dashboard_file};
use live::{LiveEvent, LiveTotal, video_live};
use params::{Granularity, SortBy};
use views::{Me, creator_series, creator_views, me, video_entry, video_series, video_views};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// States, once for every route, the pattern of each parameter whose rule
/// is the same everywhere: video and creator ids
/// ([`schemas::validate::ID_PATTERN`]) and hours ([`params::HOUR_PATTERN`]).
struct ParamPatterns;

impl Modify for ParamPatterns {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, Schema};
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                for p in op.parameters.iter_mut().flatten() {
                    let pattern = match p.name.as_str() {
                        "video_id" | "creator_id" => schemas::validate::ID_PATTERN,
                        "from" | "to" => params::HOUR_PATTERN,
                        _ => continue,
                    };
                    if let Some(RefOr::T(Schema::Object(o))) = &mut p.schema {
                        o.pattern = Some(pattern.to_owned());
                    }
                }
            }
        }
    }
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "Alive")))]
#[allow(dead_code)]
fn healthz_doc() {}

/// Readiness: 200 (possibly `degraded`, naming what is missing) or 503.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "Ready, possibly degraded"),
    (status = 503, description = "Not ready"),
))]
#[allow(dead_code)]
fn readyz_doc() {}

/// Prometheus / OpenMetrics text.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Metrics: OpenMetrics when the Accept header asks for it (Prometheus does), else the classic Prometheus text format", content(
    (String = "text/plain"),
    (String = "application/openmetrics-text")
))))]
#[allow(dead_code)]
fn metrics_doc() {}

/// This document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "The OpenAPI document")))]
#[allow(dead_code)]
fn openapi_doc() {}

/// The API's OpenAPI document, generated from the handlers above.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "viewcount serving API",
        description = "Video views merged from the authoritative batch counts (hours before the watermark) and the speed layer (hours from it on)."
    ),
    paths(
        views::video_views, views::video_series, live::video_live, views::video_entry,
        views::creator_views, views::creator_series, views::me,
        statements::statements, statements::statement, statements::entries,
        statements::entry_proof, statements::checkpoint, statements::earnings,
        dashboard::dashboard, dashboard::dashboard_file, healthz_doc, readyz_doc, metrics_doc, openapi_doc
    ),
    components(schemas(
        VideoViews, BatchPart, SpeedPart, SpeedStatus, UniqueViewers, Series, Point, PointSource,
        SpeedState, CreatorViews, CreatorRow, VideoEntry, LiveTotal, LiveEvent, ErrorBody, ErrorDetail, Granularity, SortBy, Me,
        statements::StatementSummary, statements::CreatorStatement, statements::CreatorLine,
        statements::Earnings, statements::VideoEarnings, statements::Earned, statements::StatementRef
    )),
    modifiers(&BearerAuth, &ParamPatterns)
)]
pub struct ApiDoc;

/// The API routes (behind authentication) and `/openapi.json`, and the
/// list of paths routed, so a test can hold the document to the router.
pub fn router(app: Arc<App>) -> (Router, Vec<&'static str>) {
    use statements as b;
    let routes: [(&'static str, axum::routing::MethodRouter<Arc<App>>); 13] = [
        ("/v1/me", get(me)),
        ("/v1/videos/{video_id}/views", get(video_views)),
        ("/v1/videos/{video_id}/series", get(video_series)),
        ("/v1/videos/{video_id}/live", get(video_live)),
        ("/v1/videos/{video_id}", get(video_entry)),
        ("/v1/creators/{creator_id}/views", get(creator_views)),
        ("/v1/creators/{creator_id}/series", get(creator_series)),
        ("/v1/statements", get(b::statements)),
        ("/v1/statements/{statement_id}", get(b::statement)),
        ("/v1/ledger/entries", get(b::entries)),
        ("/v1/ledger/entries/{seq}/proof", get(b::entry_proof)),
        ("/v1/ledger/checkpoint", get(b::checkpoint)),
        ("/v1/creators/{creator_id}/earnings", get(b::earnings)),
    ];
    let mut paths = Vec::new();
    let mut api: Router<Arc<App>> = Router::new();
    for (path, method) in routes {
        paths.push(path);
        api = api.route(path, method);
    }
    let api = api
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::authenticate,
        ))
        .with_state(app);
    let doc_json =
        serde_json::to_string_pretty(&ApiDoc::openapi()).unwrap_or_else(|_| "{}".to_owned());
    paths.extend(["/openapi.json", "/", "/dashboard/{file}"]);
    let router = api
        .route(
            "/openapi.json",
            get(move || {
                let body = doc_json.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
            }),
        )
        .route("/", get(dashboard))
        .route("/dashboard/{file}", get(dashboard_file));
    (router, paths)
}
