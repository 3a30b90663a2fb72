//! Speed-layer telemetry: each notable event is one function that logs and counts.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use counters::apply::Applied;

type Labels = Vec<(String, String)>;

/// Running totals of the speed layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Records read.
    pub consumed: u64,
    /// Views counted.
    pub counted: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Conflicting duplicates among them.
    pub conflicts: u64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Failed Redis calls.
    pub redis_errors: u64,
}

/// The speed metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    consumed: Counter,
    counted: Counter,
    duplicates: Counter,
    conflicts: Counter,
    replayed: Counter,
    dead_lettered: Family<Labels, Counter>,
    dead_lettered_total: Counter,
    redis_errors: Counter,
    rewinds: Counter,
    gap_records: Counter,
    batch_size: Histogram,
    script_seconds: Histogram,
    freshness_seconds: Histogram,
    pub(crate) lag: Family<Labels, Gauge<i64, AtomicI64>>,
}

impl Metrics {
    /// Registers every speed metric under `speed_` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("speed");
        let m = Self {
            consumed: Counter::default(),
            counted: Counter::default(),
            duplicates: Counter::default(),
            conflicts: Counter::default(),
            replayed: Counter::default(),
            dead_lettered: Family::default(),
            dead_lettered_total: Counter::default(),
            redis_errors: Counter::default(),
            rewinds: Counter::default(),
            gap_records: Counter::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            script_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            freshness_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            lag: Family::default(),
        };
        r.register("consumed", "Records read from Kafka", m.consumed.clone());
        r.register(
            "counted",
            "Events counted as views (first sight of their event_id)",
            m.counted.clone(),
        );
        r.register(
            "duplicates",
            "Events dropped as re-sends of a remembered event_id",
            m.duplicates.clone(),
        );
        r.register(
            "conflicting_duplicates",
            "Duplicates whose payload differs from the first occurrence (the first wins)",
            m.conflicts.clone(),
        );
        r.register(
            "replayed",
            "Records skipped because their offset was already applied (replay or rebalance overlap)",
            m.replayed.clone(),
        );
        r.register(
            "dead_lettered",
            "Records sent to the dead-letter topic, by reason",
            m.dead_lettered.clone(),
        );
        r.register(
            "redis_errors",
            "Failed Redis calls (retried with backoff)",
            m.redis_errors.clone(),
        );
        r.register(
            "rewinds",
            "Times a partition was rewound to Redis's stored offset (Redis lost recent writes)",
            m.rewinds.clone(),
        );
        r.register(
            "gap_records",
            "Records deleted by Kafka retention before the speed layer counted them (accepted gaps)",
            m.gap_records.clone(),
        );
        r.register("batch_size", "Records per batch", m.batch_size.clone());
        r.register(
            "script_seconds",
            "Latency of one partition batch's Redis script",
            m.script_seconds.clone(),
        );
        r.register(
            "freshness_seconds",
            "Counted-at minus received_at, per event",
            m.freshness_seconds.clone(),
        );
        r.register(
            "lag",
            "Consumer lag per partition (records), from librdkafka statistics",
            m.lag.clone(),
        );
        m
    }

    pub(crate) fn batch(&self, records: usize) {
        self.consumed.inc_by(records as u64);
        self.batch_size.observe(records as f64);
    }

    pub(crate) fn applied(&self, partition: i32, a: &Applied, took: Duration) {
        self.counted.inc_by(a.counted);
        self.duplicates.inc_by(a.duplicates);
        self.replayed.inc_by(a.skipped);
        self.script_seconds.observe(took.as_secs_f64());
        if a.conflicts > 0 {
            tracing::warn!(
                partition,
                conflicts = a.conflicts,
                "conflicting duplicates: same event_id, different payload; the first occurrence was kept"
            );
            self.conflicts.inc_by(a.conflicts);
        }
    }

    pub(crate) fn fresh(&self, seconds: f64) {
        self.freshness_seconds.observe(seconds.max(0.0));
    }

    pub(crate) fn dead_lettered(
        &self,
        partition: i32,
        offset: i64,
        reason: &str,
        code: &str,
        trace_id: Option<&str>,
    ) {
        tracing::warn!(
            partition,
            offset,
            reason,
            trace_id,
            "record sent to the dead-letter topic"
        );
        self.dead_lettered
            .get_or_create(&vec![("reason".into(), code.into())])
            .inc();
        self.dead_lettered_total.inc();
    }

    /// The running totals, for progress displays.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            consumed: self.consumed.get(),
            counted: self.counted.get(),
            duplicates: self.duplicates.get(),
            conflicts: self.conflicts.get(),
            dead_lettered: self.dead_lettered_total.get(),
            redis_errors: self.redis_errors.get(),
        }
    }

    pub(crate) fn redis_error(&self, error: &str, retry_in: Duration) {
        tracing::warn!(
            error,
            retry_in_ms = retry_in.as_millis() as u64,
            "redis call failed; pausing, offsets not advanced"
        );
        self.redis_errors.inc();
    }

    pub(crate) fn rewound(&self, partition: i32, from: i64, to: i64) {
        tracing::warn!(
            partition,
            from,
            to,
            "redis is behind this consumer (lost recent writes?); rewinding to its stored offset"
        );
        self.rewinds.inc();
    }

    /// Records `n` records of `partition` were deleted by retention before
    /// the speed layer counted them: the gap is accepted (counts are low by
    /// that many records; batch, from the archive, still has them if the
    /// archive read them in time).
    pub(crate) fn gap_accepted(&self, partition: i32, n: i64) {
        tracing::error!(
            partition,
            records = n,
            "speed: accepted a gap of records deleted before they were counted"
        );
        self.gap_records.inc_by(u64::try_from(n).unwrap_or(0));
    }
}
