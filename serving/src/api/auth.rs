//! Authentication (bearer tokens, as a layer before every `/v1/` route),
//! per-token rate limits and the creator scope.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::{StatusCode, header, request::Parts as RequestParts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};

use super::app::App;
use super::error::{ApiError, ApiResult};
use crate::tokens::Token;

/// The authenticated token of a request (put there by [`authenticate`]).
#[derive(Debug, Clone)]
pub struct Caller(pub(crate) Arc<Token>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut RequestParts, _: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the route is not behind authentication; this is a bug",
            )
        })
    }
}

/// Middleware: the bearer token, its rate limit, then the route.
pub(crate) async fn authenticate(
    State(app): State<Arc<App>>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let response = match check_token(&app, &req) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    };
    let status = response.status();
    match status {
        StatusCode::UNAUTHORIZED => {}
        StatusCode::FORBIDDEN => app.metrics.auth_failed("scope"),
        StatusCode::TOO_MANY_REQUESTS => app.metrics.limited(),
        _ => {}
    }
    app.metrics
        .answered(&route, status.as_u16(), started.elapsed());
    response
}

pub(crate) fn check_token(app: &App, req: &Request) -> ApiResult<Caller> {
    let unauthorized = |reason: &str, message: &str| {
        app.metrics.auth_failed(reason);
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    };
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "missing",
            "send the token as `Authorization: Bearer <secret>`; create one with `viewcount token create`",
        ));
    };
    let secret = value
        .to_str()
        .ok()
        .and_then(|v| {
            // The scheme is case-insensitive (RFC 9110 §11.1).
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(rest)
        })
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let Some(secret) = secret else {
        return Err(unauthorized(
            "malformed",
            "the Authorization header must be `Bearer <secret>`",
        ));
    };
    let tokens = app.tokens.tokens();
    let Some(token) = tokens.authenticate(secret) else {
        return Err(unauthorized(
            "invalid",
            "the token is not valid (unknown or revoked)",
        ));
    };
    if let Some(limiter) = &app.limiter
        && let Err(not_until) = limiter.check_key(&token.name)
    {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        return Err(ApiError::limited(
            format!(
                "token {:?} is over its rate limit; retry after {} ms",
                token.name,
                wait.as_millis()
            ),
            wait.as_secs_f64().ceil() as u64,
        ));
    }
    Ok(Caller(Arc::new(token.clone())))
}

/// 403 unless `caller` may read what `owner` owns.
pub(crate) fn authorize(caller: &Caller, owner: Option<&str>, what: &str) -> ApiResult<()> {
    if caller.0.may_read(owner) {
        Ok(())
    } else {
        Err(ApiError::forbidden(what))
    }
}
