//! Ingest telemetry: each notable event is one function here that both logs and
//! counts, so logs and `/metrics` never disagree.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use schemas::Rejection;

type Labels = Vec<(String, String)>;

/// The ingest metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    accepted: Counter,
    rejected: Counter,
    rejections: Family<Labels, Counter>,
    produce_seconds: Histogram,
    queue_depth: Gauge<i64, AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every ingest metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("viewcount_ingest");
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "http_requests",
            "POST /v1/events requests by response status",
            requests.clone(),
        );
        let accepted = Counter::default();
        registry.register(
            "events_accepted",
            "Events acknowledged by Kafka and answered 202",
            accepted.clone(),
        );
        let rejected = Counter::default();
        registry.register(
            "events_rejected",
            "Events rejected by validation",
            rejected.clone(),
        );
        let rejections = Family::<Labels, Counter>::default();
        registry.register(
            "rejections",
            "Violated rules by reason (field.rule); one event may break several",
            rejections.clone(),
        );
        let produce_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "produce_ack_seconds",
            "Time from enqueueing a request's events to the broker acknowledging all of them",
            produce_seconds.clone(),
        );
        let queue_depth = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "producer_queue_depth",
            "Messages queued in or in flight from the producer",
            queue_depth.clone(),
        );
        Self {
            registry,
            requests,
            accepted,
            rejected,
            rejections,
            produce_seconds,
            queue_depth,
        }
    }

    /// A request was answered with `status`.
    pub fn request_answered(&self, status: u16) {
        self.requests
            .get_or_create(&vec![("status".into(), status.to_string())])
            .inc();
    }

    /// `n` events were acknowledged by Kafka after `elapsed`.
    pub fn events_accepted(&self, n: usize, elapsed: Duration) {
        self.accepted.inc_by(n as u64);
        self.produce_seconds.observe(elapsed.as_secs_f64());
    }

    /// One event was rejected.
    pub fn event_rejected(&self, index: usize, rejection: &Rejection) {
        tracing::debug!(index, reason = %rejection, "event rejected");
        self.rejected.inc();
        for v in &rejection.violations {
            self.rejections
                .get_or_create(&vec![("reason".into(), v.code())])
                .inc();
        }
    }

    /// One NDJSON line did not parse.
    pub fn line_unparseable(&self, index: usize, reason: &str) {
        tracing::debug!(index, reason, "event line unparseable");
        self.rejected.inc();
        self.rejections
            .get_or_create(&vec![("reason".into(), "event.json".into())])
            .inc();
    }

    /// Renders the Prometheus text format, with the queue depth read now.
    pub fn render(&self, queue_depth: i32) -> String {
        self.queue_depth.set(i64::from(queue_depth));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
