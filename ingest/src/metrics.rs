//! Ingest telemetry: each notable event is one function here that both logs and
//! counts, so logs and `/metrics` never disagree.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use schemas::Rejection;

use crate::EventProducer;

type Labels = Vec<(String, String)>;

/// The ingest metrics (cheap to clone: every field is a shared handle).
#[derive(Debug, Clone)]
pub struct Metrics {
    requests: Family<Labels, Counter>,
    accepted: Counter,
    rejected: Counter,
    rejections: Family<Labels, Counter>,
    playback: Family<Labels, Counter>,
    produce_seconds: Histogram,
}

/// Reads the producer's queue depth at scrape time.
#[derive(Debug)]
struct QueueDepth(Arc<EventProducer>);

impl Collector for QueueDepth {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let gauge = ConstGauge::new(i64::from(self.0.queue_depth()));
        let m = encoder.encode_descriptor(
            "producer_queue_depth",
            "Messages queued in or in flight from the producer",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(m)
    }
}

impl Metrics {
    /// Registers every ingest metric under `ingest_` in `registry`.
    pub fn register(registry: &mut Registry, producer: Arc<EventProducer>) -> Self {
        let registry = registry.sub_registry_with_prefix("ingest");
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
        let playback = Family::<Labels, Counter>::default();
        registry.register(
            "playback_checks",
            "Accepted events by what their playback token showed: verified, unsigned, invalid:<why> (kept, never billable), unchecked (no keys)",
            playback.clone(),
        );
        let produce_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "produce_ack_seconds",
            "Time from enqueueing a request's events to the broker acknowledging all of them",
            produce_seconds.clone(),
        );
        registry.register_collector(Box::new(QueueDepth(producer)));
        Self {
            requests,
            accepted,
            rejected,
            rejections,
            playback,
            produce_seconds,
        }
    }

    /// Events accepted and rejected so far, for a summary.
    pub fn totals(&self) -> (u64, u64) {
        (self.accepted.get(), self.rejected.get())
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

    /// An accepted event's playback verdict (before Kafka acknowledged it).
    pub fn playback_checked(&self, p: &schemas::Playback) {
        self.playback
            .get_or_create(&vec![(
                "outcome".into(),
                p.as_wire().unwrap_or("unchecked").to_owned(),
            )])
            .inc();
    }

    /// One NDJSON line did not parse.
    pub fn line_unparseable(&self, index: usize, reason: &str) {
        tracing::debug!(index, reason, "event line unparseable");
        self.rejected.inc();
        self.rejections
            .get_or_create(&vec![("reason".into(), "event.json".into())])
            .inc();
    }
}
