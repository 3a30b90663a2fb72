//! The creator dashboard: a page and its script, embedded in the binary.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorBody};
use super::params::PathParam;

pub(crate) const INDEX_HTML: &str = include_str!("../../assets/index.html");
pub(crate) const APP_JS: &str = include_str!("../../assets/app.js");
pub(crate) const UPLOT_JS: &str = include_str!("../../assets/vendor/uplot/uPlot.iife.min.js");
pub(crate) const APP_CSS: &str = include_str!("../../assets/app.css");
pub(crate) const UPLOT_CSS: &str = include_str!("../../assets/vendor/uplot/uPlot.min.css");

/// The creator dashboard: a page embedded in the binary (no CDN); it asks
/// for a token and keeps it in the tab's session storage.
#[utoipa::path(get, path = "/", responses((status = 200, description = "The dashboard page", content_type = "text/html")))]
pub(crate) async fn dashboard() -> Response {
    page("text/html; charset=utf-8", INDEX_HTML)
}

/// The dashboard's script and its vendored chart library (uPlot, MIT).
#[utoipa::path(
    get,
    path = "/dashboard/{file}",
    params(("file" = String, Path, description = "app.js, app.css, uPlot.iife.min.js or uPlot.min.css")),
    responses(
        (status = 200, description = "The file", content_type = "text/javascript"),
        (status = 404, description = "No such file", body = ErrorBody),
    )
)]
pub(crate) async fn dashboard_file(PathParam(file): PathParam) -> Response {
    match file.as_str() {
        "app.js" => page("text/javascript; charset=utf-8", APP_JS),
        "app.css" => page("text/css; charset=utf-8", APP_CSS),
        "uPlot.iife.min.js" => page("text/javascript; charset=utf-8", UPLOT_JS),
        "uPlot.min.css" => page("text/css; charset=utf-8", UPLOT_CSS),
        _ => ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such dashboard file")
            .into_response(),
    }
}

/// What the dashboard's page may load and run: its own files and the API,
/// nothing inline, nothing from elsewhere, never inside another site's
/// frame (a creator's token is in the page).
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub(crate) fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}
