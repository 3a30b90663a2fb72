//! The HTTP surface of ingest.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use telemetry::OpsBuilder;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::producer::{EventProducer, ProduceFailure};
use schemas::trace::{TRACE_HEADER, TraceParent};
use schemas::wire::{DecodeError, Slot, body_format, decode_body};
use schemas::{
    Playback, ReceivedEvent, Rejection, Rule, RuleSet, ValidationContext, ViewEvent, Violation,
};

/// Request limits and validation settings.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Largest request body in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Most events one request may carry (413 above it).
    pub max_events: usize,
    /// The one rule set (acceptance limits among it); every layer runs
    /// with the same one.
    pub rules: RuleSet,
    /// What must keep every acknowledged event, when ingest can see it: in
    /// `up` the archive's readiness (the embedded Kafka keeps records only
    /// in memory). While it is not ready, requests answer 503 with
    /// `Retry-After` and nothing is acknowledged. Deployed apart, Kafka's
    /// retention keeps events for an archive that is down: `None`.
    pub keeper: Option<telemetry::ReadyFlag>,
    /// Deadlines and connection caps of the listener ([`ingest::run`](run)).
    pub http: telemetry::http::Limits,
    /// How playback tokens are checked.
    pub playback: PlaybackPolicy,
}

/// How ingest checks signed playback tokens (DESIGN §6).
#[derive(Debug, Clone, Default)]
pub enum PlaybackPolicy {
    /// No keys: tokens are not checked and every event is recorded
    /// [`Playback::Unchecked`], as before tokens existed (billable by its
    /// own `revenue_eligible`). Only for tests and embedding: anyone who
    /// can reach ingest can then invent billable views.
    #[default]
    Unchecked,
    /// Tokens are verified with the keyring. An event without a valid token
    /// is rejected (`required`) with the reason, or kept but never billable
    /// ([`Playback::Unverified`]).
    Verify {
        /// The player service's public keys.
        keys: Arc<playback::Keyring>,
        /// Reject unsigned and invalid events instead of keeping them.
        required: bool,
    },
}

/// Tokens a request's events carry, each opened once
/// ([`playback::Keyring::open`]): a request that repeats one token, as a
/// replay does, pays for its signature once.
type Opened = HashMap<String, Result<playback::Opened, playback::TokenError>>;

/// Requests with more events than this, under [`PlaybackPolicy::Verify`],
/// are validated on a blocking thread: an Ed25519 verification is tens of
/// microseconds, so 10 000 of them would hold a runtime worker (and every
/// connection waiting on it) for most of a second.
const INLINE_VERIFICATIONS: usize = 8;

impl PlaybackPolicy {
    /// Whether tokens are verified (so validating costs a signature check
    /// per distinct token).
    fn verifies(&self) -> bool {
        matches!(self, Self::Verify { .. })
    }

    /// The verdict on `event`'s token: `Err` is the rejection when tokens
    /// are required and it has no valid one.
    fn check(
        &self,
        event: &ViewEvent,
        received_at: DateTime<Utc>,
        opened: &mut Opened,
    ) -> Result<Playback, Rejection> {
        let Self::Verify { keys, required } = self else {
            return Ok(Playback::Unchecked);
        };
        let verdict = match &event.playback_token {
            None => Err(None),
            Some(t) => {
                if !opened.contains_key(t.as_str()) {
                    opened.insert(t.clone(), keys.open(t));
                }
                match &opened[t.as_str()] {
                    Ok(o) => o
                        .check(&event.video_id, event.occurred_at, received_at)
                        .map(|v| v.claims.playback_id)
                        .map_err(Some),
                    Err(e) => Err(Some(e.clone())),
                }
            }
        };
        // The sentence is written only for a rejection, not for every
        // event kept as unverified.
        match verdict {
            Ok(playback_id) => Ok(Playback::Verified { playback_id }),
            Err(e) if *required => Err(Rejection {
                violations: vec![Violation::new(
                    "playback_token",
                    Rule::Signature,
                    match e {
                        None => format!(
                            "is missing: this ingest requires a signed playback token from the platform's player service (schema_version {}); see `viewcount token sign-playback`",
                            schemas::event::PLAYBACK_TOKEN_VERSION
                        ),
                        Some(e) => e
                            .to_string()
                            .trim_start_matches("playback_token ")
                            .to_owned(),
                    },
                )],
            }),
            Err(None) => Ok(Playback::Unverified {
                reason: "unsigned".to_owned(),
            }),
            Err(Some(e)) => Ok(Playback::Unverified {
                reason: format!("invalid:{}", e.code()),
            }),
        }
    }
}

impl IngestConfig {
    /// Default [`Self::max_body_bytes`]: 1 MiB.
    pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
    /// Default [`Self::max_events`].
    pub const DEFAULT_MAX_EVENTS: usize = 10_000;
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            max_events: Self::DEFAULT_MAX_EVENTS,
            rules: RuleSet::default(),
            keeper: None,
            http: telemetry::http::Limits::default(),
            playback: PlaybackPolicy::Unchecked,
        }
    }
}

struct AppState {
    config: IngestConfig,
    producer: Arc<EventProducer>,
    metrics: Metrics,
}

/// One rejected event in a response.
#[derive(Debug, Serialize)]
struct Rejected {
    index: usize,
    event_id: Option<String>,
    reason: String,
    violations: Vec<ViolationBody>,
}

#[derive(Debug, Serialize)]
struct ViolationBody {
    field: &'static str,
    rule: &'static str,
    message: String,
}

/// Registers ingest's metrics and its readiness check (the broker answers a
/// metadata request for the topic) with `ops`.
pub fn register(ops: &mut OpsBuilder, producer: &Arc<EventProducer>) -> Metrics {
    let p = producer.clone();
    ops.check("kafka", move || {
        let p = p.clone();
        async move { p.broker_reachable(Duration::from_secs(2)).await }
    });
    Metrics::register(ops.registry(), producer.clone())
}

/// The `POST /v1/events` route.
pub fn router(config: IngestConfig, producer: Arc<EventProducer>, metrics: Metrics) -> Router {
    let body_limit = config.max_body_bytes;
    let state = Arc::new(AppState {
        config,
        producer,
        metrics,
    });
    Router::new()
        .route("/v1/events", post(post_events))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Serves ingest alone on `listener` (with `/healthz`, `/readyz`, `/metrics`)
/// until `shutdown` resolves, then stops accepting, lets in-flight requests
/// finish with truthful answers, and flushes the producer.
pub async fn run(
    listener: TcpListener,
    config: IngestConfig,
    producer: Arc<EventProducer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    let mut ops = OpsBuilder::new();
    let metrics = register(&mut ops, &producer);
    let ops = ops.build();
    let limits = config.http;
    let app = router(config, producer.clone(), metrics)
        .merge(ops.router())
        .fallback(telemetry::not_found);
    let addr = listener.local_addr()?;
    tracing::info!(%addr, topic = producer.topic(), "ingest listening");
    telemetry::http::serve(listener, app, ops, limits, shutdown, std::future::pending()).await?;
    if let Err(e) = producer.flush().await {
        tracing::warn!(error = %e, "ingest: producer flush on shutdown incomplete");
    }
    tracing::info!("ingest stopped");
    Ok(())
}

async fn post_events(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // The caller's trace continues here (or one starts): its `traceparent`
    // goes on every record of the request and back in the answer.
    let trace = headers
        .get(TRACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse)
        .map_or_else(TraceParent::start, |t| t.child());
    let mut response = handle_events(&st, &headers, body, &trace).await;
    st.metrics.request_answered(response.status().as_u16());
    tracing::debug!(
        trace_id = %trace.trace_id(),
        status = response.status().as_u16(),
        "ingest: POST /v1/events answered"
    );
    if let Ok(v) = HeaderValue::from_str(&trace.to_string()) {
        response.headers_mut().insert(TRACE_HEADER, v);
    }
    response
}

/// Parses and validates every event of a request received at
/// `received_at`, and checks its playback token: what is accepted, and
/// what is rejected with its reasons.
fn validate(
    st: &AppState,
    slots: &[Slot],
    received_at: DateTime<Utc>,
) -> (Vec<ReceivedEvent>, Vec<Rejected>) {
    let ctx = ValidationContext::new(received_at, &st.config.rules);
    let mut accepted = Vec::with_capacity(slots.len());
    let mut rejected = Vec::new();
    let mut opened = Opened::new();
    for (index, slot) in slots.iter().enumerate() {
        match slot {
            Ok(value) => match schemas::parse_event(value, &ctx).and_then(|event| {
                let playback = st.config.playback.check(&event, received_at, &mut opened)?;
                Ok(ReceivedEvent::new(event, received_at).with_playback(playback))
            }) {
                Ok(received) => {
                    st.metrics.playback_checked(&received.playback);
                    accepted.push(received);
                }
                Err(rej) => {
                    st.metrics.event_rejected(index, &rej);
                    rejected.push(Rejected {
                        index,
                        event_id: value
                            .get("event_id")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        reason: rej.to_string(),
                        violations: rej
                            .violations
                            .iter()
                            .map(|v| ViolationBody {
                                field: v.field,
                                rule: v.rule.as_str(),
                                message: v.message.clone(),
                            })
                            .collect(),
                    });
                }
            },
            Err(reason) => {
                st.metrics.line_unparseable(index, reason);
                rejected.push(Rejected {
                    index,
                    event_id: None,
                    reason: reason.clone(),
                    violations: vec![ViolationBody {
                        field: "event",
                        rule: "json",
                        message: reason.clone(),
                    }],
                });
            }
        }
    }

    (accepted, rejected)
}

async fn handle_events(
    st: &Arc<AppState>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    trace: &TraceParent,
) -> Response {
    if let Some(Err(why)) = st.config.keeper.as_ref().map(telemetry::ReadyFlag::get) {
        tracing::warn!(reason = %why, trace_id = %trace.trace_id(), "ingest: the archive cannot keep events, answering 503");
        return unavailable(
            "archive_unavailable",
            format!(
                "the archive cannot keep events now ({why}); nothing in this request is accepted. Retry after the Retry-After delay"
            ),
        );
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let format = match body_format(ct) {
        Ok(f) => f,
        Err(e) => {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                e,
            );
        }
    };
    let body = match body {
        Ok(b) => b,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "the body is larger than the limit of {} bytes; split it into smaller requests",
                    st.config.max_body_bytes
                ),
            );
        }
        Err(r) if telemetry::http::BodyTimeout::caused(&r) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the body did not arrive within {} s; send it faster or in smaller requests",
                    st.config.http.body_timeout.as_secs()
                ),
            );
        }
        Err(r) => return error(StatusCode::BAD_REQUEST, "unreadable_body", r.body_text()),
    };
    let slots = match decode_body(format, &body, st.config.max_events) {
        Ok(s) => s,
        Err(e @ DecodeError::TooManyEvents { .. }) => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "too_many_events", e);
        }
        Err(e @ DecodeError::UnsupportedMediaType(_)) => {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                e,
            );
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, "unparseable_body", e),
    };

    let received_at = Utc::now();
    let (accepted, mut rejected) = if st.config.playback.verifies()
        && slots.len() > INLINE_VERIFICATIONS
    {
        let st = st.clone();
        match tokio::task::spawn_blocking(move || validate(&st, &slots, received_at)).await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "ingest: validating a request failed");
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "validating the request failed; nothing in it is accepted. Retry it".to_owned(),
                );
            }
        }
    } else {
        validate(st, &slots, received_at)
    };

    let rejected_total = rejected.len();
    let by_rule = rejections_by_rule(&rejected);
    // Every rejected event's index, compactly (a client must know which
    // ones were not taken); the reasons of the first few only.
    let rejected_indices: Vec<usize> = rejected.iter().map(|r| r.index).collect();
    rejected.truncate(MAX_LISTED_REJECTIONS);
    if accepted.is_empty() {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": {
                    "code": "no_valid_events",
                    "message": format!(
                        "none of the {rejected_total} events was valid; see `rejected` for the reasons (the first {MAX_LISTED_REJECTIONS} events) and `rejected_by_rule` for every event"
                    ),
                },
                "accepted": 0,
                "rejected": rejected,
                "rejected_total": rejected_total,
                "rejected_indices": rejected_indices,
                "rejected_by_rule": by_rule,
            })),
        )
            .into_response();
    }

    let started = Instant::now();
    let traceparent = trace.to_string();
    match st
        .producer
        .produce_traced(&accepted, &st.config.rules, Some(&traceparent))
        .await
    {
        Ok(()) => {
            st.metrics
                .events_accepted(accepted.len(), started.elapsed());
            (
                StatusCode::ACCEPTED,
                Json(json!({
                    "accepted": accepted.len(),
                    "rejected": rejected,
                    "rejected_total": rejected_total,
                    "rejected_indices": rejected_indices,
                    "rejected_by_rule": by_rule,
                })),
            )
                .into_response()
        }
        Err(ProduceFailure::QueueFull { enqueued }) => {
            tracing::warn!(enqueued, trace_id = %trace.trace_id(), "ingest: producer queue full, answering 503");
            unavailable(
                "producer_queue_full",
                format!(
                    "the Kafka producer queue is full; nothing in this request is reported accepted. Retry the whole request after the Retry-After delay (re-sent events are deduplicated by event_id); {enqueued} of its events were already queued and may arrive"
                ),
            )
        }
        Err(ProduceFailure::NotAcknowledged {
            delivered,
            failed,
            first_error,
        }) => {
            tracing::warn!(delivered, failed, error = %first_error, trace_id = %trace.trace_id(), "ingest: Kafka did not acknowledge, answering 503");
            unavailable(
                "kafka_unavailable",
                format!(
                    "Kafka did not acknowledge {failed} of {} events ({first_error}); nothing in this request is reported accepted. Retry the whole request after the Retry-After delay (re-sent events are deduplicated by event_id)",
                    accepted.len()
                ),
            )
        }
    }
}

/// Rejected events an answer lists one by one; past them only the counts
/// by rule (a body of 10 000 bad events must not become a 7 MB answer).
pub const MAX_LISTED_REJECTIONS: usize = 20;

/// How many events broke each `field.rule` (an event may break several).
fn rejections_by_rule(rejected: &[Rejected]) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for r in rejected {
        for v in &r.violations {
            *out.entry(format!("{}.{}", v.field, v.rule)).or_default() += 1;
        }
    }
    out
}

/// `{"error": {"code", "message"}}` with `status`.
pub fn error(status: StatusCode, code: &str, message: impl ToString) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.to_string()}})),
    )
        .into_response()
}

fn unavailable(code: &str, message: String) -> Response {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, code, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events that share a token are judged with one opening of it: the
    /// signature is verified once per distinct token in a request, and
    /// every event still gets its own verdict (its video, its time).
    #[test]
    fn a_request_opens_each_distinct_token_once() {
        let signer = playback::PlaybackSigner::from_seed("k1", [3; 32]).unwrap();
        let policy = PlaybackPolicy::Verify {
            keys: Arc::new(playback::Keyring::of(&[&signer])),
            required: false,
        };
        let now = Utc::now();
        let token = signer.issue("v1", "pb-1", now, chrono::Duration::hours(1));
        let event = |video: &str, token: &str| {
            let v = json!({
                "event_id": uuid::Uuid::new_v4().to_string(), "video_id": video, "user_id": "u",
                "occurred_at": schemas::event::format_timestamp(&now), "watch_seconds": 60,
                "revenue_eligible": true, "schema_version": 2, "playback_token": token,
            });
            schemas::parse_event(&v, &ValidationContext::new(now, &RuleSet::default())).unwrap()
        };
        let mut opened = Opened::new();
        for _ in 0..100 {
            let verdict = policy
                .check(&event("v1", &token), now, &mut opened)
                .unwrap();
            assert_eq!(
                verdict,
                Playback::Verified {
                    playback_id: "pb-1".into()
                }
            );
        }
        assert_eq!(opened.len(), 1, "one token, opened once");
        // The same token on another video is that event's own refusal.
        let other = policy
            .check(&event("v2", &token), now, &mut opened)
            .unwrap();
        assert_eq!(
            other,
            Playback::Unverified {
                reason: "invalid:wrong_video".into()
            }
        );
        // One character of the signature changed.
        let at = token.len() - 10;
        let swap = if &token[at..=at] == "A" { "B" } else { "A" };
        let forged = format!("{}{swap}{}", &token[..at], &token[at + 1..]);
        let bad = policy
            .check(&event("v1", &forged), now, &mut opened)
            .unwrap();
        assert!(matches!(bad, Playback::Unverified { .. }), "{bad:?}");
        assert_eq!(opened.len(), 2, "a bad token is remembered as bad");
    }
}
