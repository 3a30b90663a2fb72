//! Serving telemetry: each notable event is one method here that both logs
//! (where a person should hear of it) and counts, so logs and `/metrics`
//! never disagree.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The serving metrics (cheap to clone: every field is a shared handle).
#[derive(Debug, Clone)]
pub struct Metrics {
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram>,
    auth_failures: Family<Labels, Counter>,
    rate_limited: Counter,
    reloads: Family<Labels, Counter>,
    speed_unavailable: Counter,
    live_streams: Gauge<i64, AtomicI64>,
    index_video_hours: Gauge<i64, AtomicI64>,
    index_bytes: Gauge<i64, AtomicI64>,
    index_seq: Gauge<i64, AtomicI64>,
    watermark: Gauge<i64, AtomicI64>,
}

impl Default for Metrics {
    /// Metrics registered nowhere (for tests and tools).
    fn default() -> Self {
        Self::register(&mut Registry::default())
    }
}

impl Metrics {
    /// Registers every serving metric under `serving_` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("serving");
        let m = Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
            }),
            auth_failures: Family::default(),
            rate_limited: Counter::default(),
            reloads: Family::default(),
            speed_unavailable: Counter::default(),
            live_streams: Gauge::default(),
            index_video_hours: Gauge::default(),
            index_bytes: Gauge::default(),
            index_seq: Gauge::default(),
            watermark: Gauge::default(),
        };
        r.register(
            "http_requests",
            "API requests by route and response status",
            m.requests.clone(),
        );
        r.register(
            "request_seconds",
            "Time to answer an API request, by route",
            m.latency.clone(),
        );
        r.register(
            "auth_failures",
            "Requests refused 401 or 403, by reason",
            m.auth_failures.clone(),
        );
        r.register(
            "rate_limited",
            "Requests refused 429 by the per-token rate limit or live-stream bound",
            m.rate_limited.clone(),
        );
        r.register(
            "reloads",
            "Reloads of the published state, the catalog and the tokens file, by what and outcome",
            m.reloads.clone(),
        );
        r.register(
            "speed_unavailable",
            "Answers given from batch alone because Redis did not answer",
            m.speed_unavailable.clone(),
        );
        r.register(
            "live_streams",
            "Open live (Server-Sent Events) streams",
            m.live_streams.clone(),
        );
        r.register(
            "index_rows",
            "Video-hours in the batch index",
            m.index_video_hours.clone(),
        );
        r.register(
            "index_bytes",
            "Approximate heap bytes of the batch index",
            m.index_bytes.clone(),
        );
        r.register(
            "index_seq",
            "Sequence number of the published state being served",
            m.index_seq.clone(),
        );
        r.register(
            "watermark_seconds",
            "Batch watermark being served, seconds since the epoch",
            m.watermark.clone(),
        );
        m
    }

    /// A request to `route` was answered `status` after `took`.
    pub fn answered(&self, route: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&labels(&[
                ("route", route),
                ("status", &status.to_string()),
            ]))
            .inc();
        self.latency
            .get_or_create(&labels(&[("route", route)]))
            .observe(took.as_secs_f64());
    }

    /// A request was refused for `reason` (`missing`, `invalid`, `scope`).
    pub fn auth_failed(&self, reason: &str) {
        self.auth_failures
            .get_or_create(&labels(&[("reason", reason)]))
            .inc();
    }

    /// A request was refused 429.
    pub fn limited(&self) {
        self.rate_limited.inc();
    }

    /// A reload of `what` (`state`, `catalog`, `tokens`) ended in
    /// `outcome` (`ok` or `failed`).
    pub fn reloaded(&self, what: &str, outcome: &str) {
        self.reloads
            .get_or_create(&labels(&[("what", what), ("outcome", outcome)]))
            .inc();
    }

    /// An answer was given without the speed part.
    pub fn speed_unavailable(&self, why: &str) {
        tracing::warn!(
            reason = why,
            "serving: Redis did not answer; answering from batch alone"
        );
        self.speed_unavailable.inc();
    }

    /// A live stream opened (`+1`) or closed (`-1`).
    pub fn live(&self, delta: i64) {
        self.live_streams.inc_by(delta);
    }

    /// The index now served.
    pub fn index(&self, index: &crate::BatchIndex) {
        let to_i64 = |x: usize| i64::try_from(x).unwrap_or(i64::MAX);
        self.index_video_hours.set(to_i64(index.video_hours()));
        self.index_bytes.set(to_i64(index.resident_bytes()));
        self.index_seq.set(
            index
                .seq()
                .map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX)),
        );
        self.watermark
            .set(index.watermark().map_or(0, |w| w.timestamp()));
    }
}
