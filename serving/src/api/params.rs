//! Query and path parameters, checked before they reach a Redis key or
//! anything else: a bad one is a 400 naming the parameter.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::{StatusCode, request::Parts as RequestParts};
use chrono::{DateTime, TimeDelta, Utc};
use schemas::rules::{day_bucket, hour_bucket};
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult};

/// What `from` and `to` take ([`schemas::time::parse_hour`]): a date, or
/// an RFC 3339 time on the hour; the OpenAPI document states it for every
/// such parameter.
pub const HOUR_PATTERN: &str =
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:00:00(\.0+)?(Z|z|[+-][0-9]{2}:00))?$";
use crate::source::now;

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

    pub(crate) fn hour(&self, name: &'static str) -> ApiResult<Option<DateTime<Utc>>> {
        self.0
            .get(name)
            .map(|v| schemas::time::parse_hour(v).map_err(|e| ApiError::bad(name, e)))
            .transpose()
    }

    /// `from` and `to` with defaults: all time up to the end of the
    /// current hour.
    pub(crate) fn range(
        &self,
        default_span: Option<TimeDelta>,
    ) -> ApiResult<(DateTime<Utc>, DateTime<Utc>)> {
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

    pub(crate) fn granularity(&self) -> ApiResult<TimeDelta> {
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
    pub(crate) fn series_range(
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

    pub(crate) fn limit(&self, default: usize, max: usize) -> ApiResult<usize> {
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

    pub(crate) fn sort(&self) -> ApiResult<Sort> {
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
pub(crate) fn check_range(
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
pub(crate) enum Sort {
    Views,
    Billable,
    Watch,
    VideoId,
}

/// The end of the hour (or day) holding `t`.
pub(crate) fn next_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    hour_bucket(t) + TimeDelta::hours(1)
}

pub(crate) fn next_day(t: DateTime<Utc>) -> DateTime<Utc> {
    day_bucket(t) + TimeDelta::days(1)
}

pub(crate) fn check_video(video: &str) -> ApiResult<()> {
    schemas::validate::check_video_id(video).map_err(|v| ApiError::bad("video_id", v.message))
}

pub(crate) fn check_creator(creator: &str) -> ApiResult<()> {
    store::catalog::check_creator_id(creator).map_err(|e| ApiError::bad("creator_id", e))
}

/// The query string as name → value, a malformed one a 400 in the API's
/// error shape.
pub(crate) struct QueryMap(pub(crate) HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryMap {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut RequestParts, s: &S) -> Result<Self, ApiError> {
        let pairs = Query::<Vec<(String, String)>>::from_request_parts(parts, s)
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_parameter",
                    format!("the query string cannot be read: {}", e.body_text()),
                )
            })?
            .0;
        let mut q = HashMap::with_capacity(pairs.len());
        for (name, value) in pairs {
            if q.contains_key(&name) {
                // Two values of one parameter: which one counts would be a
                // guess (and a way around a check on the other).
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_parameter",
                    format!(
                        "the query parameter {:?} is given twice; give it once",
                        name.chars().take(64).collect::<String>()
                    ),
                ));
            }
            q.insert(name, value);
        }
        Ok(QueryMap(q))
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
