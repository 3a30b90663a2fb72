//! `GET /v1/videos/{id}/live`: a video's merged total as server-sent
//! events, a bounded number of streams per token.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::{DateTime, TimeDelta, Utc};
use futures::Stream;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use utoipa::ToSchema;

use super::answers::SpeedStatus;
use super::app::App;
use super::auth::{Caller, authorize};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::merge::add;
use super::params::*;
use crate::metrics::Metrics;
use crate::source::now;

/// One live update of a video's merged total.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LiveTotal {
    pub(crate) video_id: String,
    pub(crate) views: u64,
    pub(crate) billable_views: u64,
    pub(crate) watch_seconds: u64,
    pub(crate) provisional: bool,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub(crate) watermark: Option<DateTime<Utc>>,
    pub(crate) speed_status: SpeedStatus,
    pub(crate) freshness_seconds: Option<f64>,
}

/// One Server-Sent Event of a live stream, as a client's SSE parser sees
/// it: `event` is `total` and `data` a [`LiveTotal`] in JSON.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiveEvent {
    /// Always `total`.
    pub(crate) event: String,
    /// A `LiveTotal`, as JSON text.
    #[schema(content_media_type = "application/json")]
    pub(crate) data: String,
}

/// Holds a live stream's slot and says when it closes.
pub(crate) struct LiveGuard {
    pub(crate) _permit: OwnedSemaphorePermit,
    pub(crate) metrics: Metrics,
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
        ("video_id" = String, Path, description = "The video"),
        ("from" = Option<String>, Query, description = "First hour counted; default: all time"),
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
pub(crate) async fn video_live(
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
        caller: Caller,
        video: String,
        from: DateTime<Utc>,
        last: Option<LiveTotal>,
        first: bool,
        _guard: LiveGuard,
    }
    let state = Live {
        app,
        caller,
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
            if !st.app.tokens.tokens().holds(&st.caller.0) {
                // Revoked (or changed) since the stream opened: it ends.
                return None;
            }
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
