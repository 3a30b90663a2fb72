//! Posting generated events to ingest.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;

use crate::{Error, GenEvent, Result, Truth};

/// How to send.
#[derive(Debug, Clone)]
pub struct SendConfig {
    /// The full URL of `POST /v1/events`.
    pub url: String,
    /// Events per request.
    pub batch_size: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Attempts per request before giving up (503s and connection failures are retried).
    pub max_attempts: u32,
    /// Offered load in events per second; `None` sends as fast as ingest answers.
    pub rate: Option<f64>,
}

impl SendConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            batch_size: 500,
            concurrency: 4,
            max_attempts: 20,
            rate: None,
        }
    }
}

/// What happened while sending.
#[derive(Debug, Clone, Default)]
pub struct SendReport {
    /// Requests answered (not counting retries).
    pub requests: u64,
    /// Events sent.
    pub events: u64,
    /// Events ingest accepted (acknowledged by Kafka).
    pub accepted: u64,
    /// Events ingest rejected.
    pub rejected: u64,
    /// Rejections by the first field named in the reason.
    pub rejected_by_field: BTreeMap<String, u64>,
    /// Retried attempts (503 or connection failure).
    pub retries: u64,
    /// Wall time.
    pub elapsed: Duration,
}

#[derive(Deserialize)]
struct Answer {
    /// The first rejected events, with their reasons.
    #[serde(default)]
    rejected: Vec<RejectedEntry>,
    /// Every rejected event's index (ingest lists only the first reasons).
    #[serde(default)]
    rejected_indices: Vec<usize>,
}

#[derive(Deserialize)]
struct RejectedEntry {
    index: usize,
    #[serde(default)]
    violations: Vec<ViolationEntry>,
}

#[derive(Deserialize)]
struct ViolationEntry {
    field: String,
}

struct ChunkResult {
    events: Vec<Value>,
    /// Per event, the field its rejection named first, or `None` if accepted.
    verdicts: Vec<Option<String>>,
    retries: u64,
}

/// Sends every event from `events` and records what was accepted in `truth`.
/// `progress` is called after each answered request.
pub async fn send(
    events: impl Iterator<Item = GenEvent> + Send,
    cfg: &SendConfig,
    truth: &mut Truth,
    mut progress: impl FnMut(&SendReport),
) -> Result<SendReport> {
    if cfg.batch_size == 0 || cfg.concurrency == 0 {
        return Err(Error::Config(
            "batch size and concurrency must be at least 1".into(),
        ));
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| Error::Config(format!("http client: {e}")))?;
    let started = Instant::now();
    let mut events = events.map(|e| (e.value, e.label)).peekable();
    let chunks = std::iter::from_fn(move || {
        events.peek()?;
        Some(
            events
                .by_ref()
                .take(cfg.batch_size)
                .unzip::<_, _, Vec<_>, Vec<_>>(),
        )
    });
    let mut sent_before = 0u64;
    let mut results = futures::stream::iter(chunks.map(|(chunk, labels)| {
        let due = cfg
            .rate
            .map(|r| started + Duration::from_secs_f64(sent_before as f64 / r));
        sent_before += chunk.len() as u64;
        let client = client.clone();
        async move {
            if let Some(due) = due {
                tokio::time::sleep_until(due.into()).await;
            }
            post_chunk(&client, cfg, chunk).await.map(|r| (r, labels))
        }
    }))
    .buffered(cfg.concurrency);

    let mut report = SendReport::default();
    // Only the accepted events' types are needed here: ingest already judged them.
    let far = chrono::Duration::days(365 * 100);
    while let Some(r) = results.next().await {
        let (r, labels) = r?;
        report.requests += 1;
        report.retries += r.retries;
        let ctx = schemas::ValidationContext {
            received_at: chrono::Utc::now(),
            max_future: far,
            late_horizon: far,
        };
        for ((value, verdict), label) in r.events.iter().zip(&r.verdicts).zip(labels) {
            report.events += 1;
            match verdict {
                None => {
                    report.accepted += 1;
                    match schemas::parse_event(value, &ctx) {
                        Ok(e) => truth.record_labelled(&e, label),
                        Err(why) => {
                            tracing::warn!(%why, "ingest accepted an event this build rejects")
                        }
                    }
                }
                Some(field) => {
                    report.rejected += 1;
                    *report.rejected_by_field.entry(field.clone()).or_default() += 1;
                }
            }
        }
        report.elapsed = started.elapsed();
        progress(&report);
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

async fn post_chunk(
    client: &reqwest::Client,
    cfg: &SendConfig,
    events: Vec<Value>,
) -> Result<ChunkResult> {
    let body = serde_json::to_vec(&events).map_err(|e| Error::Config(e.to_string()))?;
    let mut retries = 0;
    let mut last = String::new();
    for attempt in 1..=cfg.max_attempts {
        if attempt > 1 {
            retries += 1;
        }
        let resp = client
            .post(&cfg.url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        let backoff = Duration::from_millis((50u64 << attempt.min(6)).min(2_000));
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                last = format!("connection failed: {e}");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let status = resp.status().as_u16();
        match status {
            202 | 422 => {
                let text = resp.text().await.unwrap_or_default();
                let answer: Answer = serde_json::from_str(&text).map_err(|e| Error::Refused {
                    status,
                    body: format!("unreadable answer ({e}): {text}"),
                })?;
                let mut verdicts = vec![None; events.len()];
                for &i in &answer.rejected_indices {
                    if let Some(v) = verdicts.get_mut(i) {
                        *v = Some("event".to_owned());
                    }
                }
                for r in answer.rejected {
                    if let Some(v) = verdicts.get_mut(r.index) {
                        let field = r.violations.first().map_or("event", |v| v.field.as_str());
                        *v = Some(field.to_owned());
                    }
                }
                if status == 422 && verdicts.iter().any(Option::is_none) {
                    return Err(Error::Refused {
                        status,
                        body: "422 but not every event listed as rejected".into(),
                    });
                }
                return Ok(ChunkResult {
                    events,
                    verdicts,
                    retries,
                });
            }
            503 => {
                let wait = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map_or(backoff, |s| {
                        Duration::from_secs(s).min(backoff.max(Duration::from_millis(200)))
                    });
                last = format!("503: {}", resp.text().await.unwrap_or_default());
                tokio::time::sleep(wait).await;
            }
            _ => {
                return Err(Error::Refused {
                    status,
                    body: resp.text().await.unwrap_or_default(),
                });
            }
        }
    }
    Err(Error::SendFailed {
        url: cfg.url.clone(),
        attempts: cfg.max_attempts,
        last,
    })
}
