//! The views routes: a video's total and series, a creator's videos and
//! series, a catalog entry, and who a token is.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::answers::*;
use super::app::App;
use super::auth::{Caller, authorize};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::merge::{Merged, add};
use super::params::*;
use crate::index::Counts;
use crate::source::Snapshot;
use crate::split::split;

/// A video's views over `[from, to)`: batch before the watermark, speed
/// from it on.
#[utoipa::path(
    get,
    path = "/v1/videos/{video_id}/views",
    params(
        ("video_id" = String, Path, description = "The video"),
        ("from" = Option<String>, Query, description = "First hour (RFC 3339 UTC on the hour, or a date); default: all time"),
        ("to" = Option<String>, Query, description = "End hour, exclusive; default: the end of the current hour"),
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
pub(crate) async fn video_views(
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
pub(crate) fn known(snap: &Snapshot, video: &str, m: &Merged) -> ApiResult<()> {
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

/// Series cheaper than this many cells are computed in place; dearer ones
/// off the request workers ([`App::heavy`]).
const HEAVY_CELLS: u64 = 50_000;

/// The points of `videos` summed, per `step` over `[from, to)`, for
/// `caller`, whose work budget pays for it first (points × videos cells).
pub(crate) async fn series_of(
    app: &App,
    caller: &Caller,
    snap: &Arc<Snapshot>,
    videos: &[&str],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step: TimeDelta,
) -> ApiResult<(Merged, Vec<Point>)> {
    let points = ((to - from).num_seconds() / step.num_seconds().max(1)).max(1) as u64;
    let cells = points * videos.len().max(1) as u64;
    admit_cost(app, caller, cells)?;
    let m = app.merge(snap, videos, from, to, false).await;
    if cells < HEAVY_CELLS {
        let points = points_of(snap, videos, &m, from, to, step);
        return Ok((m, points));
    }
    let _permit = app.heavy.clone().acquire_owned().await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server is stopping",
        )
    })?;
    let (snap, videos) = (
        snap.clone(),
        videos
            .iter()
            .map(|v| (*v).to_owned())
            .collect::<Vec<String>>(),
    );
    tokio::task::spawn_blocking(move || {
        let videos: Vec<&str> = videos.iter().map(String::as_str).collect();
        let points = points_of(&snap, &videos, &m, from, to, step);
        (m, points)
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("computing the series failed ({e}); this is a bug, please report it"),
        )
    })
}

/// Charges `cells` of work to `caller`'s budget: 429 with `Retry-After`
/// while the token asks for more than its rate, 400 for one request dearer
/// than the whole budget.
fn admit_cost(app: &App, caller: &Caller, cells: u64) -> ApiResult<()> {
    let Some(limiter) = &app.cost_limiter else {
        return Ok(());
    };
    let too_dear = || {
        ApiError::bad(
            "from",
            format!(
                "this series would cost {cells} cells (points × videos), more than one request may ({}); ask for a shorter range or a coarser granularity",
                app.config.cost_burst
            ),
        )
    };
    // Above the burst, governor answers InsufficientCapacity: one error.
    let n = u32::try_from(cells)
        .ok()
        .and_then(std::num::NonZeroU32::new)
        .ok_or_else(too_dear)?;
    match limiter.check_key_n(&caller.0.name, n) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(not_until)) => {
            use governor::clock::{Clock, DefaultClock};
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            Err(ApiError::limited(
                format!(
                    "token {:?} asked for more work than its budget ({} cells a second; this request costs {cells}); retry after {} ms",
                    caller.0.name,
                    app.config
                        .cost_per_second
                        .map_or(0, std::num::NonZeroU32::get),
                    wait.as_millis()
                ),
                wait.as_secs_f64().ceil() as u64,
            ))
        }
        Err(_) => Err(too_dear()),
    }
}

/// The points themselves (CPU only).
fn points_of(
    snap: &Snapshot,
    videos: &[&str],
    m: &Merged,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step: TimeDelta,
) -> Vec<Point> {
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
    points
}

impl Series {
    pub(crate) fn new(
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

pub(crate) fn granularity_name(step: TimeDelta) -> &'static str {
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
        ("video_id" = String, Path, description = "The video"),
        ("granularity" = Option<Granularity>, Query, description = "hour (default) or day"),
        ("from" = Option<String>, Query, description = "First hour (daily: a midnight); default: 48 hours or 30 days back"),
        ("to" = Option<String>, Query, description = "End, exclusive; default: the end of the current hour or day"),
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
pub(crate) async fn video_series(
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
    let (m, points) = series_of(&app, &caller, &snap, &[&video_id], from, to, step).await?;
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
        ("creator_id" = String, Path, description = "The creator"),
        ("from" = Option<String>, Query, description = "First hour; default: all time"),
        ("to" = Option<String>, Query, description = "End hour, exclusive; default: the end of the current hour"),
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
pub(crate) async fn creator_views(
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
    let (mut batch, mut speed) = (Counts::default(), counters::Counts::default());
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
        ("creator_id" = String, Path, description = "The creator"),
        ("granularity" = Option<Granularity>, Query, description = "hour (default) or day"),
        ("from" = Option<String>, Query, description = "First hour (daily: a midnight); default: 48 hours or 30 days back"),
        ("to" = Option<String>, Query, description = "End, exclusive; default: the end of the current hour or day"),
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
pub(crate) async fn creator_series(
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
    let (m, points) = series_of(&app, &caller, &snap, &videos, from, to, step).await?;
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
    params(("video_id" = String, Path, description = "The video")),
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
pub(crate) async fn video_entry(
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
    pub(crate) name: String,
    /// `creator`, `finance` or `admin`.
    pub(crate) role: String,
    /// The creator a creator token is scoped to.
    pub(crate) creator_id: Option<String>,
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
pub(crate) async fn me(caller: Caller, QueryMap(q): QueryMap) -> ApiResult<axum::Json<Me>> {
    Params::new(q, &[])?;
    let t = &caller.0;
    Ok(axum::Json(Me {
        name: t.name.clone(),
        role: t.role.name().to_owned(),
        creator_id: t.creator_id.clone(),
    }))
}
