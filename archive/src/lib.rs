//! `viewcount archive`: every valid event from Kafka into Parquet, partitioned
//! by event date and hour.
//!
//! At-least-once into the archive: a flush uploads whole files first, then
//! records the partition's progress, then (advisory) the Kafka offset. A crash
//! between the two re-archives the same records on restart, under a file
//! named for their offset range; batch removes the duplicates by `event_id`.
//! Records below a partition's recorded progress are skipped, so a restart
//! does not even rewrite them.
//!
//! A store that fails (a full disk, too many open files, a dropped
//! connection) stalls the archive instead of ending it: it stops consuming,
//! keeps every record it holds, reports not ready with the error (so `up`'s
//! ingest answers 503 and acknowledges nothing it cannot keep), counts each
//! failure in `archive_store_failures` and retries with a backoff of 1 s
//! doubling to 30 s until the write succeeds. Any other error stops it,
//! loudly: logged at error, counted, and not ready with the reason.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use object_store::ObjectStore;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::util::Timeout;
use schemas::archive::to_record_batch;
use schemas::rules::hour_bucket;
use schemas::{ArchivedEvent, ReceivedEvent, RuleSet, ValidationContext};
use telemetry::ReadyFlag;

use store::layout;
use store::progress::{ArchiveMeta, Progress};

/// Errors of the archive service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is unusable, or the store belongs to another source.
    #[error("{0}")]
    Config(String),
    /// The Kafka client failed.
    #[error("kafka: {0}")]
    Kafka(rdkafka::error::KafkaError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A record batch could not be built (a bug: records were validated).
    #[error(transparent)]
    Schema(#[from] schemas::Error),
    /// A record was accepted by ingest under wider limits than this layer's:
    /// the archive stops (its progress does not pass the record) until it
    /// runs with the same rules.
    #[error("archive {0}")]
    RulesNarrowerThanIngest(#[from] infra::kafka::NarrowerThanIngest),
}

impl Error {
    /// What a caller can do about it.
    pub fn class(&self) -> schemas::ErrorClass {
        use schemas::ErrorClass;
        match self {
            Error::Config(_) | Error::RulesNarrowerThanIngest { .. } => ErrorClass::Input,
            Error::Kafka(e) => infra::kafka::error_class(e),
            Error::Store(e) => e.class(),
            Error::Schema(_) => ErrorClass::Bug,
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Archive settings; defaults in [`ArchiveConfig::new`].
#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    /// Kafka bootstrap servers.
    pub bootstrap_servers: String,
    /// The event topic.
    pub topic: String,
    /// Consumer group.
    pub group_id: String,
    /// Flush when this many records are buffered.
    pub flush_rows: usize,
    /// Flush at least this often (so the archive is never far behind).
    pub flush_interval: Duration,
    /// Records received up to this long before a caught-up check may still be
    /// in flight to the broker (ingest's delivery timeout plus margin);
    /// `complete_through` stays this far behind the check.
    pub in_flight_margin: chrono::Duration,
    /// The one rule set; its re-validation limits (relative to each
    /// record's `received_at`) must accept at least what ingest accepted
    /// (checked on every record's `vc-limits` header).
    pub rules: RuleSet,
    /// Kafka group session timeout.
    pub session_timeout: Duration,
    /// Static group membership (`group.instance.id`): the same id after a
    /// restart takes the partitions back at once (DESIGN §7). `None`: a
    /// dynamic member.
    pub instance_id: Option<String>,
    /// How long the last flush at shutdown retries a failing store before
    /// the archive stops with the error (the unwritten records stay in
    /// Kafka, their offsets not committed).
    pub shutdown_retry: Duration,
}

impl ArchiveConfig {
    /// Default [`Self::flush_interval`].
    pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(60);

    /// Defaults for the given broker and topic.
    pub fn new(bootstrap_servers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            topic: topic.into(),
            group_id: "archive".into(),
            flush_rows: 200_000,
            flush_interval: Self::DEFAULT_FLUSH_INTERVAL,
            in_flight_margin: chrono::Duration::seconds(30),
            rules: RuleSet::default(),
            session_timeout: Duration::from_secs(10),
            shutdown_retry: Duration::from_secs(20),
            instance_id: None,
        }
    }
}

/// Archive metrics.
#[derive(Debug, Clone)]
pub struct ArchiveMetrics {
    archived: Counter,
    files: Counter,
    bytes: Counter,
    skipped_invalid: Counter,
    skipped_archived: Counter,
    store_failures: Counter,
}

impl ArchiveMetrics {
    /// Registers under `archive_` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("archive");
        let m = Self {
            archived: Counter::default(),
            files: Counter::default(),
            bytes: Counter::default(),
            skipped_invalid: Counter::default(),
            skipped_archived: Counter::default(),
            store_failures: Counter::default(),
        };
        r.register(
            "records",
            "Records written to the raw archive",
            m.archived.clone(),
        );
        r.register("files", "Parquet files written", m.files.clone());
        r.register("bytes", "Parquet bytes written", m.bytes.clone());
        r.register(
            "skipped_invalid",
            "Records that failed re-validation (the speed layer dead-letters them)",
            m.skipped_invalid.clone(),
        );
        r.register(
            "skipped_archived",
            "Records below a partition's recorded progress (already archived)",
            m.skipped_archived.clone(),
        );
        r.register(
            "store_failures",
            "Store reads or writes of the archive that failed (each retried with backoff while the store is unavailable; anything else stops the archive)",
            m.store_failures.clone(),
        );
        m
    }

    /// Store failures so far (each retry counts).
    pub fn store_failures(&self) -> u64 {
        self.store_failures.get()
    }

    /// Records archived so far.
    pub fn archived(&self) -> u64 {
        self.archived.get()
    }
}

#[derive(Default)]
struct Buffer {
    rows: Vec<ArchivedEvent>,
    first: i64,
    last: i64,
}

/// Runs the archive until `shutdown`, flushing what it holds before it stops.
pub async fn run(
    config: ArchiveConfig,
    store: Arc<dyn ObjectStore>,
    metrics: ArchiveMetrics,
    ready: ReadyFlag,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let cancel = telemetry::cancel_on(shutdown);
    let consumer: StreamConsumer = infra::kafka::consumer_config(
        &config.bootstrap_servers,
        &config.group_id,
        config.instance_id.as_deref(),
        config.session_timeout,
    )
    .create()
    .map_err(Error::Kafka)?;
    consumer.subscribe(&[&config.topic]).map_err(Error::Kafka)?;
    // A broker that is down or restarting when the archive starts is waited
    // for (not ready, saying so), not a reason to exit.
    let mut retry: Option<Retry> = None;
    let partitions = loop {
        let md = tokio::task::block_in_place(|| {
            consumer.fetch_metadata(Some(&config.topic), Timeout::After(Duration::from_secs(5)))
        });
        match md {
            Ok(md) => break md.topics().first().map_or(0, |t| t.partitions().len()) as i32,
            Err(e) => {
                let r = Retry::after(retry.as_ref());
                tracing::warn!(error = %e, retry_in = ?r.delay, "archive: cannot read the topic's metadata from Kafka; retrying");
                ready.set_not_ready(format!(
                    "the archive cannot reach Kafka ({e}); retrying every {} s",
                    r.delay.as_secs()
                ));
                tokio::select! {
                    () = cancel.cancelled() => return Err(Error::Kafka(e)),
                    () = tokio::time::sleep(r.delay) => {}
                }
                retry = Some(r);
            }
        }
    };
    let cluster_id = tokio::task::block_in_place(|| {
        consumer
            .client()
            .fetch_cluster_id(Timeout::After(Duration::from_secs(10)))
    });
    let meta = ArchiveMeta {
        topic: config.topic.clone(),
        partitions,
        cluster_id,
        rules: Some(config.rules),
    };
    let mut retry: Option<Retry> = None;
    loop {
        match record_meta(store.as_ref(), &meta).await {
            Ok(()) => break,
            Err(e) if e.class() == schemas::ErrorClass::Unavailable => {
                let r = Retry::after(retry.as_ref());
                metrics.store_failures.inc();
                tracing::error!(error = %e, retry_in = ?r.delay, "archive: cannot record its metadata in the store; retrying");
                ready.set_not_ready(format!(
                    "the archive cannot reach the store ({e}); retrying"
                ));
                tokio::select! {
                    () = cancel.cancelled() => return Err(e),
                    () = tokio::time::sleep(r.delay) => {}
                }
                retry = Some(r);
            }
            Err(e) => {
                ready.set_not_ready(format!("the archive stopped: {e}"));
                return Err(e);
            }
        }
    }
    ready.set_ready();
    tracing::info!(topic = %config.topic, partitions, "archive running");

    let mut a = Archiver {
        config,
        store,
        metrics,
        consumer,
        buffers: BTreeMap::new(),
        progress: HashMap::new(),
        buffered: 0,
    };
    let out = a.serve(&cancel, &ready).await;
    // Closing a consumer blocks in librdkafka: off the runtime, bounded.
    infra::kafka::close(a.consumer, "archive consumer").await;
    if out.is_ok() {
        tracing::info!("archive stopped");
    }
    out
}

/// Checks the store belongs to this source, then records it.
async fn record_meta(store: &dyn ObjectStore, meta: &ArchiveMeta) -> Result<()> {
    if let Some(old) = layout::get_json::<ArchiveMeta>(store, &layout::archive_meta()).await? {
        meta.check_same_source(&old).map_err(Error::Config)?;
    }
    layout::put_json(store, &layout::archive_meta(), meta).await?;
    Ok(())
}

/// The next attempt after a failed store write: doubling from 1 s up to 30 s.
struct Retry {
    delay: Duration,
    at: Instant,
}

impl Retry {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(30);

    fn after(previous: Option<&Retry>) -> Self {
        let delay = previous.map_or(Self::FIRST, |p| (p.delay * 2).min(Self::MAX));
        Self {
            delay,
            at: Instant::now() + delay,
        }
    }
}

struct Archiver {
    config: ArchiveConfig,
    store: Arc<dyn ObjectStore>,
    metrics: ArchiveMetrics,
    consumer: StreamConsumer,
    buffers: BTreeMap<i32, Buffer>,
    progress: HashMap<i32, Progress>,
    buffered: usize,
}

impl Archiver {
    /// Consumes and archives until `cancel`, then writes what it holds.
    async fn serve(
        &mut self,
        cancel: &tokio_util::sync::CancellationToken,
        ready: &ReadyFlag,
    ) -> Result<()> {
        // A record received but not yet taken (taking it read the store and
        // failed): taken before any other.
        let mut pending: Option<rdkafka::message::OwnedMessage> = None;
        // While the store fails: when to try again. Nothing more is consumed
        // meanwhile, so what is buffered stays exactly what the failed write
        // held, and the retry writes the same files.
        let mut failing: Option<Retry> = None;
        let mut last_flush = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let consuming = failing.is_none() && pending.is_none();
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = tick.tick() => {}
                m = self.consumer.recv(), if consuming => match m {
                    Ok(m) => pending = Some(m.detach()),
                    Err(e) => tracing::warn!(error = %e, "archive: kafka consume error"),
                },
            }
            if failing.as_ref().is_some_and(|f| Instant::now() < f.at) {
                continue;
            }
            let due = failing.is_some()
                || self.buffered >= self.config.flush_rows
                || last_flush.elapsed() >= self.config.flush_interval;
            match self.step(&mut pending, due).await {
                Ok(flushed) => {
                    if flushed {
                        last_flush = Instant::now();
                    }
                    if failing.take().is_some() {
                        tracing::info!("archive: the store works again; archiving resumed");
                        ready.set_ready();
                    }
                }
                Err(e) if e.class() == schemas::ErrorClass::Unavailable => {
                    let retry = Retry::after(failing.as_ref());
                    self.metrics.store_failures.inc();
                    tracing::error!(error = %e, retry_in = ?retry.delay, buffered = self.buffered, "archive: cannot write to the store; holding what it has and retrying");
                    ready.set_not_ready(format!(
                        "the archive cannot write to the store ({e}); {} records held, retrying every {} s",
                        self.buffered,
                        retry.delay.as_secs()
                    ));
                    failing = Some(retry);
                }
                Err(e) => return Err(self.stopped(ready, e)),
            }
        }
        // What is held is written before stopping; a store that keeps failing
        // is retried for a bounded time, then the error says what was not kept.
        let deadline = Instant::now() + self.config.shutdown_retry;
        let mut retry: Option<Retry> = None;
        loop {
            match self.step(&mut pending, true).await {
                Ok(_) => break,
                Err(e)
                    if e.class() == schemas::ErrorClass::Unavailable
                        && Instant::now() < deadline =>
                {
                    let r = Retry::after(retry.as_ref());
                    self.metrics.store_failures.inc();
                    tracing::error!(error = %e, "archive: final flush failed; retrying");
                    tokio::time::sleep(r.delay).await;
                    retry = Some(r);
                }
                Err(e) => return Err(self.stopped(ready, e)),
            }
        }
        let _ = self
            .consumer
            .commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
        Ok(())
    }

    /// Takes the pending record, then flushes when `due`; whether it flushed.
    /// On an error the record stays pending and the buffers stay whole.
    async fn step(
        &mut self,
        pending: &mut Option<rdkafka::message::OwnedMessage>,
        due: bool,
    ) -> Result<bool> {
        if let Some(m) = pending.as_ref() {
            self.take(m).await?;
            *pending = None;
        }
        if due {
            self.flush().await?;
        }
        Ok(due)
    }

    /// The archive stops on `e` (not a store outage): loud, and not ready
    /// with the reason, so whatever watches it (ingest in `up`, `/readyz`)
    /// stops acknowledging what it could not keep.
    fn stopped(&self, ready: &ReadyFlag, e: Error) -> Error {
        self.metrics.store_failures.inc();
        tracing::error!(error = %e, buffered = self.buffered, "archive stopped on an error");
        ready.set_not_ready(format!("the archive stopped: {e}"));
        e
    }

    async fn progress_of(&mut self, partition: i32) -> Result<Progress> {
        if let Some(p) = self.progress.get(&partition) {
            return Ok(*p);
        }
        let p = layout::get_json::<Progress>(self.store.as_ref(), &layout::progress(partition))
            .await?
            .unwrap_or(Progress {
                partition,
                next_offset: 0,
                complete_through: DateTime::<Utc>::UNIX_EPOCH,
            });
        self.progress.insert(partition, p);
        Ok(p)
    }

    async fn take(&mut self, m: &rdkafka::message::OwnedMessage) -> Result<()> {
        let p = m.partition();
        if m.offset() < self.progress_of(p).await?.next_offset {
            self.metrics.skipped_archived.inc();
            return Ok(());
        }
        infra::kafka::check_limits(&self.config.rules, m)?;
        let limits = ValidationContext::new(Utc::now(), &self.config.rules);
        let b = self.buffers.entry(p).or_default();
        if b.rows.is_empty() {
            b.first = m.offset();
        }
        b.last = m.offset();
        match m
            .payload()
            .map(|bytes| ReceivedEvent::from_json_bytes(bytes, &limits))
        {
            Some(Ok(received)) => {
                tracing::trace!(
                    trace_id = infra::kafka::trace_id(m).as_deref(),
                    event_id = %received.event.event_id,
                    partition = p,
                    offset = m.offset(),
                    "archive: archiving"
                );
                b.rows.push(ArchivedEvent {
                    received,
                    kafka_partition: p,
                    kafka_offset: m.offset(),
                });
                self.buffered += 1;
            }
            _ => {
                tracing::debug!(
                    partition = p,
                    offset = m.offset(),
                    trace_id = infra::kafka::trace_id(m).as_deref(),
                    "archive: skipping an invalid record"
                );
                self.metrics.skipped_invalid.inc();
            }
        }
        Ok(())
    }

    /// Uploads every buffered partition's files, then records progress for
    /// every assigned partition (also idle ones, so the watermark moves). A
    /// partition's buffer is let go only once its files and progress are
    /// written: after an error, a retry writes the same files again.
    async fn flush(&mut self) -> Result<()> {
        let check_time = Utc::now();
        let assigned: Vec<i32> = self
            .consumer
            .assignment()
            .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        let mut touched: Vec<i32> = assigned.clone();
        touched.extend(self.buffers.keys().copied());
        touched.sort_unstable();
        touched.dedup();
        for p in touched {
            let prev = self.progress_of(p).await?;
            let buf = self.buffers.get(&p);
            let next_offset = buf.map_or(prev.next_offset, |b| b.last + 1);
            let newest = buf.and_then(|b| b.rows.iter().map(|r| r.received.received_at).max());
            let high = tokio::task::block_in_place(|| {
                self.consumer.fetch_watermarks(
                    &self.config.topic,
                    p,
                    Timeout::After(Duration::from_secs(5)),
                )
            })
            .map(|(_, h)| h)
            .ok();
            let caught_up = high.is_some_and(|h| next_offset >= h);
            if let Some(b) = buf.filter(|b| !b.rows.is_empty()) {
                self.write_files(p, b).await?;
            }
            let mut complete_through = prev.complete_through;
            if caught_up {
                complete_through = complete_through.max(check_time - self.config.in_flight_margin);
            } else if let Some(t) = newest {
                // Not caught up: only what was received before the oldest
                // unarchived record is known complete; the last archived
                // record's receive time is a safe lower bound.
                complete_through = complete_through.max(t - self.config.in_flight_margin);
            }
            let progress = Progress {
                partition: p,
                next_offset,
                complete_through,
            };
            if progress != prev {
                layout::put_json(self.store.as_ref(), &layout::progress(p), &progress).await?;
                self.progress.insert(p, progress);
            }
            if let Some(b) = self.buffers.remove(&p) {
                self.buffered -= b.rows.len();
                let _ = self
                    .consumer
                    .store_offset(&self.config.topic, p, next_offset - 1);
            }
        }
        Ok(())
    }

    async fn write_files(&self, partition: i32, b: &Buffer) -> Result<()> {
        let mut by_hour: BTreeMap<DateTime<Utc>, Vec<ArchivedEvent>> = BTreeMap::new();
        for r in &b.rows {
            by_hour
                .entry(hour_bucket(r.received.event.occurred_at))
                .or_default()
                .push(r.clone());
        }
        for (hour, rows) in by_hour {
            let batch = to_record_batch(&rows)?;
            let bytes = layout::parquet_bytes(schemas::raw_schema(), &[batch])?;
            let path = layout::raw_file(hour, partition, b.first, b.last);
            self.metrics.bytes.inc_by(bytes.len() as u64);
            layout::put(self.store.as_ref(), &path, bytes).await?;
            self.metrics.files.inc();
            self.metrics.archived.inc_by(rows.len() as u64);
            tracing::debug!(%path, rows = rows.len(), "archive: file written");
        }
        Ok(())
    }
}
