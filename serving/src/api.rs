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

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header, request::Parts as RequestParts};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, TimeDelta, Utc};
use futures::Stream;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use schemas::rules::{day_bucket, hour_bucket};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::index::Counts;
use crate::metrics::Metrics;
use crate::source::{Snapshot, Source, TokensFile, now};
use crate::speed_part::{SpeedRead, SpeedSource, freshness};
use crate::split::split;
use crate::tokens::Token;

/// Limits and cadences of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Requests per second each token may make (`None`: no limit).
    pub rate_per_second: Option<NonZeroU32>,
    /// Requests a token may make at once above its rate.
    pub burst: NonZeroU32,
    /// Open live streams each token may hold.
    pub live_per_token: usize,
    /// How often a live stream looks for a change.
    pub live_every: Duration,
    /// Most points a series answer may hold.
    pub max_points: usize,
    /// Most rows a creator listing may return.
    pub max_limit: usize,
    /// The rate card for creators' *estimated* earnings (`None`: estimates
    /// are not offered). Statements never use it: billing reads its own.
    pub rates: Option<Arc<billing::RateCard>>,
}

impl ApiConfig {
    /// Default [`Self::rate_per_second`].
    pub const DEFAULT_RATE: u32 = 100;
    /// Default [`Self::burst`].
    pub const DEFAULT_BURST: u32 = 200;
    /// Default [`Self::live_per_token`].
    pub const DEFAULT_LIVE_PER_TOKEN: usize = 4;
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            rate_per_second: NonZeroU32::new(Self::DEFAULT_RATE),
            burst: NonZeroU32::new(Self::DEFAULT_BURST).unwrap_or(NonZeroU32::MIN),
            live_per_token: Self::DEFAULT_LIVE_PER_TOKEN,
            live_every: Duration::from_secs(1),
            max_points: 10_000,
            max_limit: 10_000,
            rates: None,
        }
    }
}

/// Everything a request may need, shared by all of them.
#[derive(Debug)]
pub struct App {
    source: Arc<Source>,
    tokens: Arc<TokensFile>,
    speed: Arc<SpeedSource>,
    config: ApiConfig,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    live_slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    metrics: Metrics,
    cancel: CancellationToken,
}

impl App {
    /// The API over `source`, `tokens` and `speed`; live streams end when
    /// `cancel` fires.
    pub fn new(
        source: Arc<Source>,
        tokens: Arc<TokensFile>,
        speed: Arc<SpeedSource>,
        config: ApiConfig,
        metrics: Metrics,
        cancel: CancellationToken,
    ) -> Self {
        let limiter = config
            .rate_per_second
            .map(|r| RateLimiter::keyed(Quota::per_second(r).allow_burst(config.burst)));
        Self {
            source,
            tokens,
            speed,
            config,
            limiter,
            live_slots: Mutex::new(HashMap::new()),
            metrics,
            cancel,
        }
    }
}

impl App {
    /// The published state and catalog being served.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.source.snapshot()
    }

    /// The rate card for estimates, if configured.
    pub(crate) fn rates(&self) -> Option<&billing::RateCard> {
        self.config.rates.as_deref()
    }

    /// The object store served from.
    pub(crate) fn store(&self) -> Arc<dyn object_store::ObjectStore> {
        self.source.store()
    }
}

// ---------------------------------------------------------------- errors

/// An error answer: `{"error": {"code", "message", "parameter"?}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    parameter: Option<&'static str>,
    retry_after: Option<u64>,
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable code: `bad_parameter`, `unauthorized`, `forbidden`,
    /// `not_found`, `rate_limited`, `internal`.
    code: String,
    /// What was wrong and what to do.
    message: String,
    /// The query or path parameter at fault, for `bad_parameter`.
    #[serde(skip_serializing_if = "Option::is_none")]
    parameter: Option<String>,
}

impl ApiError {
    pub(crate) fn bad(parameter: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "bad_parameter",
            message: format!("{parameter}: {}", message.into()),
            parameter: Some(parameter),
            retry_after: None,
        }
    }

    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            parameter: None,
            retry_after: None,
        }
    }

    pub(crate) fn forbidden(what: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this token may not read {what}; a creator token reads only its own creator's videos"
            ),
        )
    }

    fn limited(message: String, retry_after: u64) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
        e.retry_after = Some(retry_after.max(1));
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                parameter: self.parameter.map(str::to_owned),
            },
        };
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(v) = self
            .retry_after
            .and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

// ---------------------------------------------------------------- answers

/// The rules that removed views, by name, with how many.
fn by_rule_names(c: &Counts) -> BTreeMap<&'static str, u64> {
    schemas::fraud::FraudRule::ALL
        .iter()
        .zip(c.filtered_by_rule)
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (r.name(), n))
        .collect()
}

/// The batch part of an answer: hours `[from, to)` before the watermark.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchPart {
    views: u64,
    /// Billable views after the invalid-traffic rules: what is paid.
    billable_views: u64,
    /// Billable views the invalid-traffic rules removed (not paid).
    fraud_filtered: u64,
    /// `fraud_filtered` by the rule that removed them (`impossible_watch`,
    /// `repeat_loop`, `zero_engagement`, `bot_farm`, `daily_cap`; only
    /// rules that removed any). The README describes each rule.
    filtered_by_rule: BTreeMap<&'static str, u64>,
    watch_seconds: u64,
    /// End of the batch part: `min(to, W)` (never before `from`).
    #[schema(value_type = String, format = DateTime)]
    to: DateTime<Utc>,
    /// Sequence number of the published state answered from (`null`:
    /// nothing published yet).
    seq: Option<u64>,
}

/// Whether the speed part could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SpeedStatus {
    /// Read (or nothing to read: the range ends before `W`).
    Ok,
    /// Redis did not answer: the answer holds batch alone.
    Unavailable,
}

/// The speed part of an answer: hours `[from, to)` from the watermark on.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpeedPart {
    status: SpeedStatus,
    views: u64,
    billable_views: u64,
    watch_seconds: u64,
    /// Start of the speed part: `max(from, W)` (never after `to`).
    #[schema(value_type = String, format = DateTime)]
    from: DateTime<Utc>,
    /// Every speed count includes all events received up to this many
    /// seconds ago (`null`: nothing applied yet, or not read).
    freshness_seconds: Option<f64>,
    /// Distinct viewers in the speed part, where the speed layer keeps
    /// them (only in a video's totals).
    #[serde(skip_serializing_if = "Option::is_none")]
    unique_viewers: Option<UniqueViewers>,
}

/// A HyperLogLog estimate of distinct viewers. The speed layer keeps them
/// per UTC day, so the estimate covers the whole days `[from, to)` that
/// hold the speed part. It is never added to another distinct count.
#[derive(Debug, Serialize, ToSchema)]
pub struct UniqueViewers {
    estimate: u64,
    #[schema(value_type = String, format = DateTime)]
    from: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    to: DateTime<Utc>,
}

/// A video's views over `[from, to)`.
#[derive(Debug, Serialize, ToSchema)]
pub struct VideoViews {
    video_id: String,
    /// Owner by the catalog in force (`null`: unattributed).
    creator_id: Option<String>,
    title: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    from: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    to: DateTime<Utc>,
    views: u64,
    billable_views: u64,
    watch_seconds: u64,
    /// True when any hour of the range came from the speed layer (the
    /// numbers may still change).
    provisional: bool,
    /// The batch watermark `W` (`null`: nothing published yet).
    #[schema(value_type = Option<String>, format = DateTime)]
    watermark: Option<DateTime<Utc>>,
    batch: BatchPart,
    speed: SpeedPart,
    /// Anything the numbers do not include, in words.
    warnings: Vec<String>,
}

/// Where a series point's counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PointSource {
    /// Every hour before `W`.
    Batch,
    /// Every hour from `W` on.
    Speed,
    /// A day that `W` cuts.
    Mixed,
}

/// One step of a series.
#[derive(Debug, Serialize, ToSchema)]
pub struct Point {
    #[schema(value_type = String, format = DateTime)]
    start: DateTime<Utc>,
    views: u64,
    billable_views: u64,
    watch_seconds: u64,
    source: PointSource,
}

/// The state of the speed part of a series.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpeedState {
    status: SpeedStatus,
    freshness_seconds: Option<f64>,
}

/// Views per hour or per day.
#[derive(Debug, Serialize, ToSchema)]
pub struct Series {
    /// The video (video series) or `null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    video_id: Option<String>,
    /// The owner (video series) or the creator (creator series).
    creator_id: Option<String>,
    /// `hour` or `day`.
    granularity: String,
    #[schema(value_type = String, format = DateTime)]
    from: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    to: DateTime<Utc>,
    provisional: bool,
    #[schema(value_type = Option<String>, format = DateTime)]
    watermark: Option<DateTime<Utc>>,
    speed: SpeedState,
    points: Vec<Point>,
    warnings: Vec<String>,
}

/// One video of a creator listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatorRow {
    video_id: String,
    title: String,
    views: u64,
    billable_views: u64,
    watch_seconds: u64,
    /// Views from the speed part (included in `views`).
    speed_views: u64,
    /// Billable views of the batch part the invalid-traffic rules removed
    /// (the speed part is not filtered yet).
    fraud_filtered: u64,
    /// `fraud_filtered` by rule, as in [`BatchPart`].
    filtered_by_rule: BTreeMap<&'static str, u64>,
}

/// A creator's videos over `[from, to)`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatorViews {
    creator_id: String,
    #[schema(value_type = String, format = DateTime)]
    from: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    to: DateTime<Utc>,
    /// Totals over all the creator's videos (not only the rows shown).
    views: u64,
    billable_views: u64,
    watch_seconds: u64,
    provisional: bool,
    #[schema(value_type = Option<String>, format = DateTime)]
    watermark: Option<DateTime<Utc>>,
    batch: BatchPart,
    speed: SpeedPart,
    /// Videos the catalog gives the creator.
    videos: usize,
    /// The first `limit` videos by `sort`.
    rows: Vec<CreatorRow>,
    warnings: Vec<String>,
}

/// A video's catalog entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct VideoEntry {
    video_id: String,
    creator_id: String,
    title: String,
}

// ---------------------------------------------------------------- parameters

/// Query parameters, checked by name: an unknown one is a 400 (a typo
/// such as `form=` must not silently mean "all time").
pub(crate) struct Params(HashMap<String, String>);

impl Params {
    pub(crate) fn new(q: HashMap<String, String>, allowed: &[&'static str]) -> ApiResult<Self> {
        if let Some(k) = q.keys().find(|k| !allowed.contains(&k.as_str())) {
            let shown: String = k.chars().take(40).collect();
            return Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                code: "bad_parameter",
                message: format!(
                    "unknown query parameter {shown:?}; this endpoint takes {}",
                    allowed.join(", ")
                ),
                parameter: None,
                retry_after: None,
            });
        }
        Ok(Self(q))
    }

    /// A parameter's value.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn hour(&self, name: &'static str) -> ApiResult<Option<DateTime<Utc>>> {
        self.0
            .get(name)
            .map(|v| schemas::time::parse_hour(v).map_err(|e| ApiError::bad(name, e)))
            .transpose()
    }

    /// `from` and `to` with defaults: all time up to the end of the
    /// current hour.
    fn range(&self, default_span: Option<TimeDelta>) -> ApiResult<(DateTime<Utc>, DateTime<Utc>)> {
        let to = match self.hour("to")? {
            Some(t) => t,
            None => next_hour(now()),
        };
        let from = match (self.hour("from")?, default_span) {
            (Some(f), _) => f,
            (None, Some(span)) => to - span,
            (None, None) => DateTime::<Utc>::UNIX_EPOCH,
        };
        check_range(from, to)
    }

    fn granularity(&self) -> ApiResult<TimeDelta> {
        match self.0.get("granularity").map(String::as_str) {
            None | Some("hour") => Ok(TimeDelta::hours(1)),
            Some("day") => Ok(TimeDelta::days(1)),
            Some(other) => Err(ApiError::bad(
                "granularity",
                format!(
                    "must be hour or day, got {:?}",
                    other.chars().take(40).collect::<String>()
                ),
            )),
        }
    }

    /// `from`/`to` of a series: defaults 48 hours (hourly) or 30 days
    /// (daily) back from the end of the current hour or day; daily series
    /// start at midnight; at most `max_points` points.
    fn series_range(
        &self,
        step: TimeDelta,
        max_points: usize,
    ) -> ApiResult<(DateTime<Utc>, DateTime<Utc>)> {
        let daily = step == TimeDelta::days(1);
        let (from, to) = if daily {
            let to = match self.hour("to")? {
                Some(t) => t,
                None => next_day(now()),
            };
            let from = match self.hour("from")? {
                Some(f) => f,
                None => to - TimeDelta::days(30),
            };
            (from, to)
        } else {
            self.range(Some(TimeDelta::hours(48)))?
        };
        check_range(from, to)?;
        if daily && from.timestamp().rem_euclid(86_400) != 0 {
            return Err(ApiError::bad(
                "from",
                "a daily series starts at midnight UTC; give a date such as 2026-11-01",
            ));
        }
        let points = (to - from).num_seconds() / step.num_seconds();
        if points > i64::try_from(max_points).unwrap_or(i64::MAX) {
            return Err(ApiError::bad(
                "to",
                format!(
                    "the range holds {points} points, more than {max_points}; narrow from/to or use granularity=day"
                ),
            ));
        }
        Ok((from, to))
    }

    fn limit(&self, default: usize, max: usize) -> ApiResult<usize> {
        match self.0.get("limit") {
            None => Ok(default.min(max)),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad(
                    "limit",
                    format!(
                        "must be a whole number from 1 to {max}, got {:?}",
                        v.chars().take(40).collect::<String>()
                    ),
                )),
            },
        }
    }

    fn sort(&self) -> ApiResult<Sort> {
        match self.0.get("sort").map(String::as_str) {
            None | Some("views") => Ok(Sort::Views),
            Some("billable_views") => Ok(Sort::Billable),
            Some("watch_seconds") => Ok(Sort::Watch),
            Some("video_id") => Ok(Sort::VideoId),
            Some(other) => Err(ApiError::bad(
                "sort",
                format!(
                    "must be views, billable_views, watch_seconds or video_id, got {:?}",
                    other.chars().take(40).collect::<String>()
                ),
            )),
        }
    }
}

/// Steps of a series (for the document; parsed by [`Params::granularity`]).
#[derive(Debug, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum Granularity {
    /// Hourly points.
    Hour,
    /// Daily points, from midnight UTC.
    Day,
}

/// Orders of a creator listing (for the document; parsed by
/// [`Params::sort`]).
#[derive(Debug, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum SortBy {
    /// Most views first.
    Views,
    /// Most billable views first.
    BillableViews,
    /// Most watch time first.
    WatchSeconds,
    /// By video id.
    VideoId,
}

/// `[from, to)` is a range the API answers: not empty, not before 1970.
fn check_range(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> ApiResult<(DateTime<Utc>, DateTime<Utc>)> {
    if from >= to {
        return Err(ApiError::bad(
            "to",
            format!("must be after from ({from} .. {to} is empty)"),
        ));
    }
    if from < DateTime::<Utc>::UNIX_EPOCH {
        return Err(ApiError::bad("from", "must not be before 1970-01-01"));
    }
    Ok((from, to))
}

#[derive(Debug, Clone, Copy)]
enum Sort {
    Views,
    Billable,
    Watch,
    VideoId,
}

/// The end of the hour (or day) holding `t`.
fn next_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    hour_bucket(t) + TimeDelta::hours(1)
}

fn next_day(t: DateTime<Utc>) -> DateTime<Utc> {
    day_bucket(t) + TimeDelta::days(1)
}

fn check_video(video: &str) -> ApiResult<()> {
    schemas::validate::check_video_id(video).map_err(|v| ApiError::bad("video_id", v.message))
}

fn check_creator(creator: &str) -> ApiResult<()> {
    store::catalog::check_creator_id(creator).map_err(|e| ApiError::bad("creator_id", e))
}

// ---------------------------------------------------------------- auth

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
async fn authenticate(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
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

fn check_token(app: &App, req: &Request) -> ApiResult<Caller> {
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
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
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
fn authorize(caller: &Caller, owner: Option<&str>, what: &str) -> ApiResult<()> {
    if caller.0.may_read(owner) {
        Ok(())
    } else {
        Err(ApiError::forbidden(what))
    }
}

// ---------------------------------------------------------------- merging

/// The batch and speed parts of one range for some videos, from one
/// snapshot and one Redis round trip.
pub(crate) struct Merged {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    pub(crate) watermark: Option<DateTime<Utc>>,
    seq: Option<u64>,
    /// The speed part's range, if not empty.
    speed_range: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Per video.
    pub(crate) batch: Vec<Counts>,
    /// Per video, per hour of the speed part.
    speed_hours: Vec<BTreeMap<DateTime<Utc>, speed::Counts>>,
    status: SpeedStatus,
    freshness: Option<f64>,
    viewers: Option<(Vec<u64>, DateTime<Utc>, DateTime<Utc>)>,
    pub(crate) warnings: Vec<String>,
}

impl Merged {
    pub(crate) fn speed_total(&self, i: usize) -> speed::Counts {
        let mut c = speed::Counts::default();
        for h in self.speed_hours[i].values() {
            c.views += h.views;
            c.billable_views += h.billable_views;
            c.watch_seconds += h.watch_seconds;
        }
        c
    }

    fn provisional(&self) -> bool {
        self.speed_range.is_some()
    }

    fn batch_part(&self, c: Counts) -> BatchPart {
        BatchPart {
            views: c.views,
            billable_views: c.billable_views,
            fraud_filtered: c.fraud_filtered,
            filtered_by_rule: by_rule_names(&c),
            watch_seconds: c.watch_seconds,
            to: self
                .watermark
                .map_or(self.from, |w| w.clamp(self.from, self.to)),
            seq: self.seq,
        }
    }

    fn speed_part(&self, c: speed::Counts, viewers: Option<UniqueViewers>) -> SpeedPart {
        SpeedPart {
            status: self.status,
            views: c.views,
            billable_views: c.billable_views,
            watch_seconds: c.watch_seconds,
            from: self
                .watermark
                .map_or(self.from, |w| w.clamp(self.from, self.to)),
            freshness_seconds: self.freshness,
            unique_viewers: viewers,
        }
    }
}

fn add(a: Counts, b: speed::Counts) -> (u64, u64, u64) {
    (
        a.views + b.views,
        a.billable_views + b.billable_views,
        a.watch_seconds + b.watch_seconds,
    )
}

impl App {
    /// Merges `videos` over `[from, to)` from `snap` and the speed layer.
    pub(crate) async fn merge(
        &self,
        snap: &Snapshot,
        videos: &[&str],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        viewers: bool,
    ) -> Merged {
        let w = snap.index.watermark();
        let parts = split(from, to, w);
        let batch = videos
            .iter()
            .map(|v| match parts.batch {
                Some((a, b)) => snap.index.totals(v, a, b),
                None => Counts::default(),
            })
            .collect();
        let mut m = Merged {
            from,
            to,
            watermark: w,
            seq: snap.index.seq(),
            speed_range: parts.speed,
            batch,
            speed_hours: vec![BTreeMap::new(); videos.len()],
            status: SpeedStatus::Ok,
            freshness: None,
            viewers: None,
            warnings: Vec::new(),
        };
        let Some((sf, st)) = parts.speed else {
            return m;
        };
        let now = now();
        // The speed layer keeps counters for a limited time, and nothing
        // is counted far in the future: read only the days that can hold
        // data, and say what neither layer covers.
        let floor = day_bucket(now - speed::defaults::COUNTER_RETENTION);
        let read_from = sf.max(floor);
        let read_to = st.min(next_day(now) + TimeDelta::days(1));
        if sf < floor {
            m.warnings.push(format!(
                "hours from {sf} to {} are after the batch watermark and older than the speed layer keeps ({} days): they are not counted until a batch run covers them",
                floor.min(st),
                speed::defaults::COUNTER_RETENTION.num_days()
            ));
        }
        if read_from >= read_to {
            return m;
        }
        match self.speed.read(videos, read_from, read_to, viewers).await {
            SpeedRead::Ok(r) => {
                m.freshness = freshness(&r.applied_at, now);
                m.viewers = r.viewers.map(|v| {
                    (
                        v,
                        day_bucket(read_from),
                        next_day(read_to - TimeDelta::seconds(1)),
                    )
                });
                m.speed_hours = r.hours;
            }
            SpeedRead::Unavailable(why) => {
                self.metrics.speed_unavailable(&why);
                m.status = SpeedStatus::Unavailable;
                m.warnings.push(format!(
                    "the speed layer (Redis) did not answer ({why}): hours from {sf} on are not included; retry shortly"
                ));
            }
        }
        m
    }
}

// ---------------------------------------------------------------- handlers

/// A video's views over `[from, to)`: batch before the watermark, speed
/// from it on.
#[utoipa::path(
    get,
    path = "/v1/videos/{video_id}/views",
    params(
        ("video_id" = String, Path, description = "The video", pattern = r"^[A-Za-z0-9_-]{1,64}$"),
        ("from" = Option<String>, Query, description = "First hour (RFC 3339 UTC on the hour, or a date); default: all time", pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:00:00(\\.0+)?(Z|z|[+-][0-9]{2}:00))?$"),
        ("to" = Option<String>, Query, description = "End hour, exclusive; default: the end of the current hour", pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:00:00(\\.0+)?(Z|z|[+-][0-9]{2}:00))?$"),
    ),
    responses(
        (status = 200, description = "The merged totals", body = VideoViews),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Another creator's or an unattributed video", body = ErrorBody),
        (status = 404, description = "No such video: no data and no catalog entry", body = ErrorBody),
        (status = 429, description = "Over the token's rate limit", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn video_views(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParam(video_id): PathParam,
    QueryMap(q): QueryMap,
) -> ApiResult<axum::Json<VideoViews>> {
    check_video(&video_id)?;
    let q = Params::new(q, &["from", "to"])?;
    let (from, to) = q.range(None)?;
    let snap = app.source.snapshot();
    let owner = snap.owner(&video_id);
    authorize(&caller, owner, "this video")?;
    let m = app.merge(&snap, &[&video_id], from, to, true).await;
    let speed = m.speed_total(0);
    known(&snap, &video_id, &m)?;
    let (views, billable_views, watch_seconds) = add(m.batch[0], speed);
    let viewers = m.viewers.as_ref().map(|(v, a, b)| UniqueViewers {
        estimate: v[0],
        from: *a,
        to: *b,
    });
    let entry = snap.catalog.as_ref().and_then(|c| c.entry(&video_id));
    Ok(axum::Json(VideoViews {
        video_id: video_id.clone(),
        creator_id: owner.map(str::to_owned),
        title: entry.map(|e| e.title.clone()),
        from,
        to,
        views,
        billable_views,
        watch_seconds,
        provisional: m.provisional(),
        watermark: m.watermark,
        batch: m.batch_part(m.batch[0]),
        speed: m.speed_part(speed, viewers),
        warnings: m.warnings,
    }))
}

/// 404 for a video with no catalog entry, no batch hours and no speed
/// counts in the range read (when the speed layer answered).
fn known(snap: &Snapshot, video: &str, m: &Merged) -> ApiResult<()> {
    if snap.owner(video).is_none()
        && !snap.index.has_video(video)
        && m.speed_hours[0].is_empty()
        && m.status == SpeedStatus::Ok
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no video {video:?}: it has no views and no catalog entry"),
        ));
    }
    Ok(())
}

/// The points of `videos` summed, per `step` over `[from, to)`.
async fn series_of(
    app: &App,
    snap: &Snapshot,
    videos: &[&str],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step: TimeDelta,
) -> (Merged, Vec<Point>) {
    let m = app.merge(snap, videos, from, to, false).await;
    let w = m.watermark;
    let mut points = Vec::new();
    let mut at = from;
    while at < to {
        let end = (at + step).min(to);
        let parts = split(at, end, w);
        let (mut views, mut billable, mut watch) = (0, 0, 0);
        if let Some((a, b)) = parts.batch {
            for v in videos {
                let c = snap.index.totals(v, a, b);
                views += c.views;
                billable += c.billable_views;
                watch += c.watch_seconds;
            }
        }
        if let Some((a, b)) = parts.speed {
            for hours in &m.speed_hours {
                for (_, c) in hours.range(a..b) {
                    views += c.views;
                    billable += c.billable_views;
                    watch += c.watch_seconds;
                }
            }
        }
        let source = match (parts.batch, parts.speed) {
            (Some(_), Some(_)) => PointSource::Mixed,
            (None, Some(_)) => PointSource::Speed,
            _ => PointSource::Batch,
        };
        points.push(Point {
            start: at,
            views,
            billable_views: billable,
            watch_seconds: watch,
            source,
        });
        at = end;
    }
    (m, points)
}

impl Series {
    fn new(
        video_id: Option<String>,
        creator_id: Option<String>,
        step: TimeDelta,
        m: Merged,
        points: Vec<Point>,
    ) -> Self {
        Self {
            video_id,
            creator_id,
            granularity: granularity_name(step).to_owned(),
            from: m.from,
            to: m.to,
            provisional: m.provisional(),
            watermark: m.watermark,
            speed: SpeedState {
                status: m.status,
                freshness_seconds: m.freshness,
            },
            points,
            warnings: m.warnings,
        }
    }
}

fn granularity_name(step: TimeDelta) -> &'static str {
    if step == TimeDelta::days(1) {
        "day"
    } else {
        "hour"
    }
}

/// A video's views per hour or per day.
#[utoipa::path(
    get,
    path = "/v1/videos/{video_id}/series",
    params(
        ("video_id" = String, Path, description = "The video", pattern = r"^[A-Za-z0-9_-]{1,64}$"),
        ("granularity" = Option<Granularity>, Query, description = "hour (default) or day"),
        ("from" = Option<String>, Query, description = "First hour (daily: a midnight); default: 48 hours or 30 days back", pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:00:00(\\.0+)?(Z|z|[+-][0-9]{2}:00))?$"),
        ("to" = Option<String>, Query, description = "End, exclusive; default: the end of the current hour or day", pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:00:00(\\.0+)?(Z|z|[+-][0-9]{2}:00))?$"),
    ),
    responses(
        (status = 200, description = "The series", body = Series),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Another creator's or an unattributed video", body = ErrorBody),
        (status = 404, description = "No such video", body = ErrorBody),
        (status = 429, description = "Over the token's rate limit", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn video_series(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParam(video_id): PathParam,
    QueryMap(q): QueryMap,
) -> ApiResult<axum::Json<Series>> {
    check_video(&video_id)?;
    let q = Params::new(q, &["from", "to", "granularity"])?;
    let step = q.granularity()?;
    let (from, to) = q.series_range(step, app.config.max_points)?;
    let snap = app.source.snapshot();
    let owner = snap.owner(&video_id);
    authorize(&caller, owner, "this video")?;
    let (m, points) = series_of(&app, &snap, &[&video_id], from, to, step).await;
    known(&snap, &video_id, &m)?;
    Ok(axum::Json(Series::new(
        Some(video_id.clone()),
        owner.map(str::to_owned),
        step,
        m,
        points,
    )))
}

/// The creator's videos by the catalog; 403/404 as the caller may see.
pub(crate) fn creator_videos<'a>(
    snap: &'a Snapshot,
    caller: &Caller,
    creator_id: &str,
) -> ApiResult<&'a [String]> {
    check_creator(creator_id)?;
    authorize(caller, Some(creator_id), "this creator's videos")?;
    let videos = snap
        .catalog
        .as_ref()
        .map_or(&[][..], |c| c.videos_of(creator_id));
    if videos.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("the catalog in force gives creator {creator_id:?} no videos"),
        ));
    }
    Ok(videos)
}

/// A creator's videos with their totals over `[from, to)`.
#[utoipa::path(
    get,
    path = "/v1/creators/{creator_id}/views",
    params(
        ("creator_id" = String, Path, description = "The creator", pattern = r"^[A-Za-z0-9_-]{1,64}$"),
        ("from" = Option<String>, Query, description = "First hour; default: all time", pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:00:00(\\.0+)?(Z|z|[+-][0-9]{2}:00))?$"),
        ("to" = Option<String>, Query, description = "End hour, exclusive; default: the end of the current hour", pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:00:00(\\.0+)?(Z|z|[+-][0-9]{2}:00))?$"),
        ("sort" = Option<SortBy>, Query, description = "views (default), billable_views, watch_seconds or video_id"),
        ("limit" = Option<u32>, Query, description = "Rows to return, 1 to 10000; default 100", minimum = 1, maximum = 10000),
    ),
    responses(
        (status = 200, description = "The listing", body = CreatorViews),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Another creator", body = ErrorBody),
        (status = 404, description = "The catalog gives the creator no videos", body = ErrorBody),
        (status = 429, description = "Over the token's rate limit", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn creator_views(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParam(creator_id): PathParam,
    QueryMap(q): QueryMap,
) -> ApiResult<axum::Json<CreatorViews>> {
    let q = Params::new(q, &["from", "to", "sort", "limit"])?;
    let (from, to) = q.range(None)?;
    let sort = q.sort()?;
    let limit = q.limit(100, app.config.max_limit)?;
    let snap = app.source.snapshot();
    let videos: Vec<&str> = creator_videos(&snap, &caller, &creator_id)?
        .iter()
        .map(String::as_str)
        .collect();
    let m = app.merge(&snap, &videos, from, to, false).await;
    let catalog = snap.catalog.as_ref();
    let mut rows = Vec::with_capacity(videos.len());
    let (mut batch, mut speed) = (Counts::default(), speed::Counts::default());
    for (i, v) in videos.iter().enumerate() {
        let s = m.speed_total(i);
        let b = m.batch[i];
        batch += b;
        speed.views += s.views;
        speed.billable_views += s.billable_views;
        speed.watch_seconds += s.watch_seconds;
        let (views, billable_views, watch_seconds) = add(b, s);
        rows.push(CreatorRow {
            video_id: (*v).to_owned(),
            title: catalog
                .and_then(|c| c.entry(v))
                .map(|e| e.title.clone())
                .unwrap_or_default(),
            views,
            billable_views,
            watch_seconds,
            speed_views: s.views,
            fraud_filtered: b.fraud_filtered,
            filtered_by_rule: by_rule_names(&b),
        });
    }
    match sort {
        Sort::Views => rows.sort_by(|a, b| b.views.cmp(&a.views).then(a.video_id.cmp(&b.video_id))),
        Sort::Billable => rows.sort_by(|a, b| {
            b.billable_views
                .cmp(&a.billable_views)
                .then(a.video_id.cmp(&b.video_id))
        }),
        Sort::Watch => rows.sort_by(|a, b| {
            b.watch_seconds
                .cmp(&a.watch_seconds)
                .then(a.video_id.cmp(&b.video_id))
        }),
        Sort::VideoId => rows.sort_by(|a, b| a.video_id.cmp(&b.video_id)),
    }
    rows.truncate(limit);
    let (views, billable_views, watch_seconds) = add(batch, speed);
    Ok(axum::Json(CreatorViews {
        creator_id: creator_id.clone(),
        from,
        to,
        views,
        billable_views,
        watch_seconds,
        provisional: m.provisional(),
        watermark: m.watermark,
        batch: m.batch_part(batch),
        speed: m.speed_part(speed, None),
        videos: videos.len(),
        rows,
        warnings: m.warnings,
    }))
}

/// A creator's views (all their videos) per hour or per day.
#[utoipa::path(
    get,
    path = "/v1/creators/{creator_id}/series",
    params(
        ("creator_id" = String, Path, description = "The creator", pattern = r"^[A-Za-z0-9_-]{1,64}$"),
        ("granularity" = Option<Granularity>, Query, description = "hour (default) or day"),
        ("from" = Option<String>, Query, description = "First hour (daily: a midnight); default: 48 hours or 30 days back", pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:00:00(\\.0+)?(Z|z|[+-][0-9]{2}:00))?$"),
        ("to" = Option<String>, Query, description = "End, exclusive; default: the end of the current hour or day", pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:00:00(\\.0+)?(Z|z|[+-][0-9]{2}:00))?$"),
    ),
    responses(
        (status = 200, description = "The series", body = Series),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Another creator", body = ErrorBody),
        (status = 404, description = "The catalog gives the creator no videos", body = ErrorBody),
        (status = 429, description = "Over the token's rate limit", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn creator_series(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParam(creator_id): PathParam,
    QueryMap(q): QueryMap,
) -> ApiResult<axum::Json<Series>> {
    let q = Params::new(q, &["from", "to", "granularity"])?;
    let step = q.granularity()?;
    let (from, to) = q.series_range(step, app.config.max_points)?;
    let snap = app.source.snapshot();
    let videos: Vec<&str> = creator_videos(&snap, &caller, &creator_id)?
        .iter()
        .map(String::as_str)
        .collect();
    let (m, points) = series_of(&app, &snap, &videos, from, to, step).await;
    Ok(axum::Json(Series::new(
        None,
        Some(creator_id.clone()),
        step,
        m,
        points,
    )))
}

/// A video's catalog entry: who owns it and its title.
#[utoipa::path(
    get,
    path = "/v1/videos/{video_id}",
    params(("video_id" = String, Path, description = "The video", pattern = r"^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 200, description = "The entry", body = VideoEntry),
        (status = 400, description = "A bad video id", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Another creator's or an unattributed video", body = ErrorBody),
        (status = 404, description = "Not in the catalog", body = ErrorBody),
        (status = 429, description = "Over the token's rate limit", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn video_entry(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParam(video_id): PathParam,
    QueryMap(q): QueryMap,
) -> ApiResult<axum::Json<VideoEntry>> {
    check_video(&video_id)?;
    Params::new(q, &[])?;
    let snap = app.source.snapshot();
    let owner = snap.owner(&video_id);
    authorize(&caller, owner, "this video")?;
    let entry = snap
        .catalog
        .as_ref()
        .and_then(|c| c.entry(&video_id))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("video {video_id:?} is not in the catalog in force"),
            )
        })?;
    Ok(axum::Json(VideoEntry {
        video_id: video_id.clone(),
        creator_id: entry.creator_id.clone(),
        title: entry.title.clone(),
    }))
}

/// The token a request came with.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// The token's name.
    name: String,
    /// `creator`, `finance` or `admin`.
    role: String,
    /// The creator a creator token is scoped to.
    creator_id: Option<String>,
}

/// Who the token is: its name, role and creator (what the dashboard shows).
#[utoipa::path(
    get,
    path = "/v1/me",
    responses(
        (status = 200, description = "The token", body = Me),
        (status = 400, description = "A query parameter was given", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 429, description = "Over the token's rate limit", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn me(caller: Caller, QueryMap(q): QueryMap) -> ApiResult<axum::Json<Me>> {
    Params::new(q, &[])?;
    let t = &caller.0;
    Ok(axum::Json(Me {
        name: t.name.clone(),
        role: t.role.name().to_owned(),
        creator_id: t.creator_id.clone(),
    }))
}

/// One live update of a video's merged total.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LiveTotal {
    video_id: String,
    views: u64,
    billable_views: u64,
    watch_seconds: u64,
    provisional: bool,
    #[schema(value_type = Option<String>, format = DateTime)]
    watermark: Option<DateTime<Utc>>,
    speed_status: SpeedStatus,
    freshness_seconds: Option<f64>,
}

/// One Server-Sent Event of a live stream, as a client's SSE parser sees
/// it: `event` is `total` and `data` a [`LiveTotal`] in JSON.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiveEvent {
    /// Always `total`.
    event: String,
    /// A `LiveTotal`, as JSON text.
    #[schema(content_media_type = "application/json")]
    data: String,
}

/// Holds a live stream's slot and says when it closes.
struct LiveGuard {
    _permit: OwnedSemaphorePermit,
    metrics: Metrics,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.metrics.live(-1);
    }
}

/// The video's merged total (`from` on, default all time) as Server-Sent
/// Events: an `total` event now and whenever it changes.
#[utoipa::path(
    get,
    path = "/v1/videos/{video_id}/live",
    params(
        ("video_id" = String, Path, description = "The video", pattern = r"^[A-Za-z0-9_-]{1,64}$"),
        ("from" = Option<String>, Query, description = "First hour counted; default: all time", pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:00:00(\\.0+)?(Z|z|[+-][0-9]{2}:00))?$"),
    ),
    responses(
        (status = 200, description = "`text/event-stream` of `total` events, each a LiveTotal", content_type = "text/event-stream", body = LiveEvent),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Another creator's or an unattributed video", body = ErrorBody),
        (status = 429, description = "Over the token's rate limit or live-stream bound", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn video_live(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParam(video_id): PathParam,
    QueryMap(q): QueryMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    check_video(&video_id)?;
    let q = Params::new(q, &["from"])?;
    let from = q.hour("from")?.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let snap = app.source.snapshot();
    authorize(&caller, snap.owner(&video_id), "this video")?;
    drop(snap);
    let slots = {
        let mut all = app.live_slots.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(caller.0.name.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(app.config.live_per_token)))
            .clone()
    };
    let permit = slots.try_acquire_owned().map_err(|_| {
        ApiError::limited(
            format!(
                "token {:?} already holds {} live streams, the most it may; close one",
                caller.0.name, app.config.live_per_token
            ),
            5,
        )
    })?;
    app.metrics.live(1);
    let guard = LiveGuard {
        _permit: permit,
        metrics: app.metrics.clone(),
    };
    struct Live {
        app: Arc<App>,
        video: String,
        from: DateTime<Utc>,
        last: Option<LiveTotal>,
        first: bool,
        _guard: LiveGuard,
    }
    let state = Live {
        app,
        video: video_id,
        from,
        last: None,
        first: true,
        _guard: guard,
    };
    let stream = futures::stream::unfold(state, |mut st| async move {
        loop {
            if !st.first {
                tokio::select! {
                    () = st.app.cancel.cancelled() => return None,
                    () = tokio::time::sleep(st.app.config.live_every) => {}
                }
            }
            st.first = false;
            let to = next_hour(now());
            let from = st.from.min(to - TimeDelta::hours(1));
            let snap = st.app.source.snapshot();
            let m = st.app.merge(&snap, &[&st.video], from, to, false).await;
            let (views, billable_views, watch_seconds) = add(m.batch[0], m.speed_total(0));
            let total = LiveTotal {
                video_id: st.video.clone(),
                views,
                billable_views,
                watch_seconds,
                provisional: m.provisional(),
                watermark: m.watermark,
                speed_status: m.status,
                freshness_seconds: None,
            };
            if st.last.as_ref() == Some(&total) {
                continue;
            }
            st.last = Some(total.clone());
            let sent = LiveTotal {
                freshness_seconds: m.freshness,
                ..total
            };
            let event = Event::default()
                .event("total")
                .json_data(&sent)
                .unwrap_or_else(|_| Event::default().comment("unencodable"));
            return Some((Ok(event), st));
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

// ---------------------------------------------------------------- the dashboard

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const UPLOT_JS: &str = include_str!("../assets/vendor/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../assets/vendor/uplot/uPlot.min.css");

/// The creator dashboard: a page embedded in the binary (no CDN); it asks
/// for a token and keeps it in the tab's session storage.
#[utoipa::path(get, path = "/", responses((status = 200, description = "The dashboard page", content_type = "text/html")))]
async fn dashboard() -> Response {
    page("text/html; charset=utf-8", INDEX_HTML)
}

/// The dashboard's script and its vendored chart library (uPlot, MIT).
#[utoipa::path(
    get,
    path = "/dashboard/{file}",
    params(("file" = String, Path, description = "app.js, uPlot.iife.min.js or uPlot.min.css")),
    responses(
        (status = 200, description = "The file", content_type = "text/javascript"),
        (status = 404, description = "No such file", body = ErrorBody),
    )
)]
async fn dashboard_file(PathParam(file): PathParam) -> Response {
    match file.as_str() {
        "app.js" => page("text/javascript; charset=utf-8", APP_JS),
        "uPlot.iife.min.js" => page("text/javascript; charset=utf-8", UPLOT_JS),
        "uPlot.min.css" => page("text/css; charset=utf-8", UPLOT_CSS),
        _ => ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such dashboard file")
            .into_response(),
    }
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------- the document

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
        video_views, video_series, video_live, video_entry, creator_views, creator_series, me,
        crate::billing_api::statements, crate::billing_api::statement, crate::billing_api::entries,
        crate::billing_api::entry_proof, crate::billing_api::checkpoint, crate::billing_api::earnings,
        dashboard, dashboard_file, healthz_doc, readyz_doc, metrics_doc, openapi_doc
    ),
    components(schemas(
        VideoViews, BatchPart, SpeedPart, SpeedStatus, UniqueViewers, Series, Point, PointSource,
        SpeedState, CreatorViews, CreatorRow, VideoEntry, LiveTotal, LiveEvent, ErrorBody, ErrorDetail, Granularity, SortBy, Me,
        crate::billing_api::StatementSummary, crate::billing_api::CreatorStatement, crate::billing_api::CreatorLine,
        crate::billing_api::Earnings, crate::billing_api::VideoEarnings, crate::billing_api::Earned, crate::billing_api::StatementRef
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

// ---------------------------------------------------------------- the router

/// The API routes (behind authentication) and `/openapi.json`, and the
/// list of paths routed, so a test can hold the document to the router.
pub fn router(app: Arc<App>) -> (Router, Vec<&'static str>) {
    use crate::billing_api as b;
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
            authenticate,
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

// ---------------------------------------------------------------- extractors

/// The query string as name → value, a malformed one a 400 in the API's
/// error shape.
pub(crate) struct QueryMap(pub(crate) HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryMap {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut RequestParts, s: &S) -> Result<Self, ApiError> {
        Query::<HashMap<String, String>>::from_request_parts(parts, s)
            .await
            .map(|Query(q)| QueryMap(q))
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_parameter",
                    format!("the query string cannot be read: {}", e.body_text()),
                )
            })
    }
}

/// The one path parameter, a malformed one a 400 in the API's error shape.
pub(crate) struct PathParam(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut RequestParts, s: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, s)
            .await
            .map(|Path(p)| PathParam(p))
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_parameter",
                    format!("the path cannot be read: {}", e.body_text()),
                )
            })
    }
}
