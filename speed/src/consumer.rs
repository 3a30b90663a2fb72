//! The Kafka side of the speed layer: batches, dead letters, retries, rebalances.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::AtomicI64;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::join_all;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use schemas::{ReceivedEvent, ValidationContext};
use telemetry::ReadyFlag;
use tokio_util::sync::CancellationToken;

use crate::{Error, Metrics, Result, SpeedConfig};
use counters::apply::{Applied, PartitionBatch, Record, Retention, SCRIPT};
use counters::conn::{RedisClient, RedisConn};
use counters::keys::KeySpace;

/// Librdkafka callbacks: resume from Redis's offsets on assignment; lag metrics.
struct SpeedContext {
    redis: RedisClient,
    keys: KeySpace,
    topic: String,
    lag: Family<Vec<(String, String)>, Gauge<i64, AtomicI64>>,
}

impl ClientContext for SpeedContext {
    fn stats(&self, stats: Statistics) {
        if let Some(t) = stats.topics.get(&self.topic) {
            for (p, ps) in &t.partitions {
                if *p >= 0 && ps.consumer_lag >= 0 {
                    self.lag
                        .get_or_create(&vec![("partition".into(), p.to_string())])
                        .set(ps.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for SpeedContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // Resume where Redis says each partition is applied up to. If
                // Redis is unreachable the committed (advisory) offsets are
                // used: the script skips what was already applied, so this is
                // only a matter of rereading, never of double counting.
                match self.stored_offsets(tpl) {
                    Ok(found) => {
                        for (p, off) in found {
                            let _ = tpl.set_partition_offset(&self.topic, p, Offset::Offset(off));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "speed: cannot read offsets from redis on assignment; starting from committed offsets")
                    }
                }
                let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(?parts, "speed: partitions assigned");
                if let Err(e) = consumer.assign(tpl) {
                    tracing::error!(error = %e, "speed: assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(count = tpl.count(), "speed: partitions revoked");
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "speed: unassign failed");
                }
            }
            other => {
                tracing::error!(error = ?other, "speed: rebalance error");
                let _ = consumer.unassign();
            }
        }
    }
}

impl SpeedContext {
    fn stored_offsets(&self, tpl: &TopicPartitionList) -> redis::RedisResult<Vec<(i32, i64)>> {
        let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let keys: Vec<String> = parts.iter().map(|&p| self.keys.offset(p)).collect();
        let stored = self.redis.get_blocking(&keys, Duration::from_secs(2))?;
        Ok(parts
            .into_iter()
            .zip(stored)
            .filter_map(|(p, off)| Some((p, off?)))
            .collect())
    }
}

/// Runs the speed layer until `shutdown` resolves. Marks `ready` as Redis and
/// Kafka come and go.
pub async fn run(
    config: SpeedConfig,
    metrics: Metrics,
    ready: ReadyFlag,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let cancel = telemetry::cancel_on(shutdown);
    Speed::start(config, metrics, ready, cancel)
        .await?
        .run()
        .await
}

/// One partition's share of a batch, decoded, with its script call built.
struct Part {
    partition: i32,
    records: Vec<Record>,
    span: (i64, i64),
    call: PartitionBatch,
}

/// A batch ready to apply.
struct Prepared {
    parts: Vec<Part>,
    dead: Vec<(OwnedMessage, &'static str, String)>,
}

struct Speed {
    config: SpeedConfig,
    keys: KeySpace,
    retention: Retention,
    consumer: StreamConsumer<SpeedContext>,
    dlq: FutureProducer,
    redis: RedisConn,
    script: redis::Script,
    metrics: Metrics,
    ready: ReadyFlag,
    cancel: CancellationToken,
    limits: ValidationContext,
    /// True while the applier works on a batch.
    applying: std::sync::atomic::AtomicBool,
    heartbeat_script: redis::Script,
}

/// How long the reader waits for a record before it reports the caught-up
/// partitions fresh ([`Speed::heartbeat`]).
const IDLE_HEARTBEAT: Duration = Duration::from_secs(1);

/// Marks a partition fresh as of ARGV[2] (µs) if Redis has applied every
/// record before ARGV[1], the consumer's fetch position: then its counters
/// hold every record received until now. Never moves the time back.
const HEARTBEAT: &str = r#"
local applied = tonumber(redis.call('GET', KEYS[1]) or '0')
if applied >= tonumber(ARGV[1]) and tonumber(ARGV[2]) > tonumber(redis.call('GET', KEYS[2]) or '0') then
  redis.call('SET', KEYS[2], ARGV[2])
  return 1
end
return 0
"#;

impl Speed {
    async fn start(
        config: SpeedConfig,
        metrics: Metrics,
        ready: ReadyFlag,
        cancel: CancellationToken,
    ) -> Result<Self> {
        let keys = KeySpace::new(&config.key_prefix, config.dedup_bucket_bits);
        let client = RedisClient::open(config.redis_url.as_str())
            .map_err(|e| Error::Config(format!("redis url {:?}: {e}", config.redis_url)))?;
        let redis = connect(
            &client,
            counters::conn::script_timeout(config.batch_max),
            config.max_backoff,
            &metrics,
            &ready,
            &cancel,
        )
        .await?;
        let context = SpeedContext {
            redis: client,
            keys: keys.clone(),
            topic: config.topic.clone(),
            lag: metrics.lag.clone(),
        };
        let consumer: StreamConsumer<SpeedContext> = infra::kafka::consumer_config(
            &config.bootstrap_servers,
            &config.group_id,
            config.instance_id.as_deref(),
            config.session_timeout,
        )
        .set(
            "statistics.interval.ms",
            config.stats_interval.as_millis().to_string(),
        )
        // Freshness: do not let the broker hold a fetch open for long.
        .set("fetch.wait.max.ms", "25")
        .create_with_context(context)
        .map_err(Error::Kafka)?;
        consumer.subscribe(&[&config.topic]).map_err(Error::Kafka)?;
        let dlq: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &config.bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()
            .map_err(Error::Kafka)?;
        let limits = ValidationContext::new(Utc::now(), &config.rules);
        let mut speed = Self {
            retention: Retention {
                dedup_window: config.dedup_window,
                counters: config.counter_retention,
            },
            keys,
            consumer,
            dlq,
            redis,
            script: redis::Script::new(SCRIPT),
            metrics,
            ready,
            cancel,
            limits,
            config,
            applying: std::sync::atomic::AtomicBool::new(false),
            heartbeat_script: redis::Script::new(HEARTBEAT),
        };
        speed.record_partition_count().await;
        Ok(speed)
    }

    /// Readers sum a video's counters over every partition's keys; they learn
    /// how many partitions there are from here.
    async fn record_partition_count(&mut self) {
        let topic = self.config.topic.clone();
        let md = self
            .consumer
            .fetch_metadata(Some(&topic), Timeout::After(Duration::from_secs(10)));
        let n = match md {
            Ok(md) => md.topics().first().map_or(0, |t| t.partitions().len()),
            Err(e) => {
                tracing::warn!(error = %e, "speed: cannot read topic metadata");
                return;
            }
        };
        let key = self.keys.meta();
        let r: redis::RedisResult<i64> = redis::cmd("HSET")
            .arg(&key)
            .arg("partitions")
            .arg(n)
            .query_async(&mut self.redis)
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "speed: cannot record the partition count");
        }
    }

    /// Two stages in one task: the reader batches and decodes records while
    /// the applier's scripts for the previous batch run in Redis, so our CPU
    /// and Redis's overlap. Dropping the task (abort) drops both.
    async fn run(self) -> Result<()> {
        tracing::info!(topic = %self.config.topic, group = %self.config.group_id, prefix = %self.keys.prefix(), "speed layer running");
        self.ready.set_ready();
        let (tx, rx) = tokio::sync::mpsc::channel::<Prepared>(2);
        let (stopped_by, ()) = tokio::join!(self.read_loop(tx), self.apply_loop(rx));
        let _ = self
            .consumer
            .commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
        let out = match stopped_by {
            Some(e) => {
                tracing::error!(error = %e, "speed layer stopped");
                self.ready.set_not_ready(e.to_string());
                Err(e)
            }
            None => {
                tracing::info!("speed layer stopped");
                Ok(())
            }
        };
        // Closing Kafka clients blocks in librdkafka: off the runtime, bounded.
        let Speed { consumer, dlq, .. } = self;
        infra::kafka::close(consumer, "speed consumer").await;
        infra::kafka::close(dlq, "dead-letter producer").await;
        out
    }

    /// Reads batches until shutdown; `Some` if a record stopped it (its
    /// batch is not applied, so its offset does not move).
    async fn read_loop(&self, tx: tokio::sync::mpsc::Sender<Prepared>) -> Option<Error> {
        loop {
            let mut batch: Vec<OwnedMessage> = Vec::with_capacity(self.config.batch_max);
            let first = tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                () = tx.closed() => break,
                m = self.consumer.recv() => m,
                () = tokio::time::sleep(IDLE_HEARTBEAT) => {
                    if tx.capacity() == tx.max_capacity() {
                        self.heartbeat().await;
                    }
                    continue;
                }
            };
            match first {
                Ok(m) => batch.push(m.detach()),
                Err(e) => {
                    tracing::warn!(error = %e, "speed: kafka consume error");
                    continue;
                }
            }
            let deadline = tokio::time::Instant::now() + self.config.batch_wait;
            while batch.len() < self.config.batch_max {
                match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                    Ok(Ok(m)) => batch.push(m.detach()),
                    Ok(Err(e)) => tracing::warn!(error = %e, "speed: kafka consume error"),
                    Err(_) => break,
                }
            }
            if let Some(e) = self.narrower_than_ingest(&batch) {
                return Some(e);
            }
            let prepared = self.prepare(batch);
            if tx.send(prepared).await.is_err() {
                break; // the applier stopped
            }
        }
        None
    }

    /// The first record that ingest accepted under wider limits than ours.
    fn narrower_than_ingest(&self, batch: &[OwnedMessage]) -> Option<Error> {
        for m in batch {
            if let Err(e) = infra::kafka::check_limits(&self.config.rules, m) {
                return Some(e.into());
            }
        }
        None
    }

    /// Groups a batch by partition, decodes and re-validates every record and
    /// builds each partition's script call.
    fn prepare(&self, batch: Vec<OwnedMessage>) -> Prepared {
        self.metrics.batch(batch.len());
        let mut by_partition: BTreeMap<i32, Vec<OwnedMessage>> = BTreeMap::new();
        for m in batch {
            by_partition.entry(m.partition()).or_default().push(m);
        }
        let mut parts = Vec::with_capacity(by_partition.len());
        let mut dead = Vec::new();
        for (partition, msgs) in by_partition {
            // One part per run of consecutive offsets: after a seek or a
            // reassignment a batch can hold records from before and after
            // the jump, and a part's span must never claim records it does
            // not hold (the script stores the span's end as applied).
            for msgs in contiguous_runs(msgs, |m| m.offset()) {
                let mut records = Vec::with_capacity(msgs.len());
                for m in &msgs {
                    match decode(m, &self.limits) {
                        Ok(event) => {
                            tracing::trace!(
                                trace_id = infra::kafka::trace_id(m).as_deref(),
                                event_id = %event.event.event_id,
                                partition,
                                offset = m.offset(),
                                "speed: counting"
                            );
                            records.push(Record {
                                offset: m.offset(),
                                event,
                            })
                        }
                        Err((code, reason)) => dead.push((m.clone(), code, reason)),
                    }
                }
                let span = (
                    msgs.first().map_or(0, |m| m.offset()),
                    msgs.last().map_or(0, |m| m.offset() + 1),
                );
                let call = PartitionBatch::build(
                    &self.keys,
                    partition,
                    &records,
                    span,
                    false,
                    &self.config.rules,
                    &self.retention,
                );
                parts.push(Part {
                    partition,
                    records,
                    span,
                    call,
                });
            }
        }
        Prepared { parts, dead }
    }

    async fn apply_loop(&self, mut rx: tokio::sync::mpsc::Receiver<Prepared>) {
        // After a rewind, the partition's next part must start at the rewind
        // target; parts read before the seek are stale and dropped.
        let mut expected: BTreeMap<i32, i64> = BTreeMap::new();
        while let Some(p) = rx.recv().await {
            self.applying
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let go_on = self.process(p, &mut expected).await;
            self.applying
                .store(false, std::sync::atomic::Ordering::SeqCst);
            if !go_on {
                break; // shutdown while retrying: nothing advanced
            }
        }
    }

    /// Nothing arrived for [`IDLE_HEARTBEAT`] and nothing waits to be
    /// applied: every assigned partition that Redis has applied up to the
    /// consumer's fetch position holds every record received until about
    /// now (a record produced during the last fetch wait may still be on
    /// its way), so its applied-at time moves to now. Without this an idle partition's counters would look
    /// as stale as its last record is old. Best effort: an error only
    /// leaves the time where it was.
    async fn heartbeat(&self) {
        if self.applying.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        // The fetch position (next offset to fetch) is known locally; with
        // nothing received for a second, the consumer has fetched all the
        // broker had, so a Redis offset at the position means caught up.
        let Ok(list) = self.consumer.position() else {
            return;
        };
        // (partition, position) of those consumed from (the list itself
        // may not be held across an await).
        let positions: Vec<(i32, i64)> = list
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect();
        drop(list);
        let now = Utc::now().timestamp_micros();
        for (p, position) in positions {
            let mut conn = self.redis.clone();
            let mut call = self.heartbeat_script.key(self.keys.offset(p));
            call.key(self.keys.applied_at(p)).arg(position).arg(now);
            // Never hold the reader up: a slow or absent Redis ends this
            // round (the applier reports Redis trouble, not the heartbeat).
            let r = tokio::select! {
                () = self.cancel.cancelled() => return,
                r = tokio::time::timeout(IDLE_HEARTBEAT, call.invoke_async::<i64>(&mut conn)) => r,
            };
            match r {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(partition = p, error = %e, "speed: heartbeat not written");
                    return;
                }
                Err(_) => return,
            }
        }
    }

    /// Applies one prepared batch: dead letters first (acknowledged before any
    /// offset moves past them), then one script per partition, all partitions
    /// at once. Returns false if shutdown interrupted the retries.
    async fn process(&self, p: Prepared, expected: &mut BTreeMap<i32, i64>) -> bool {
        if !p.dead.is_empty() {
            let dead: Vec<(&OwnedMessage, &'static str, String)> =
                p.dead.iter().map(|(m, c, r)| (m, *c, r.clone())).collect();
            if !self.dead_letter(&dead).await {
                return false;
            }
        }
        // Partitions at once; each partition's runs one after another.
        let mut by_partition: BTreeMap<i32, Vec<&Part>> = BTreeMap::new();
        for part in &p.parts {
            by_partition.entry(part.partition).or_default().push(part);
        }
        let results = join_all(by_partition.into_iter().map(|(partition, parts)| {
            let want = expected.remove(&partition);
            async move {
                (
                    partition,
                    self.apply_partition(partition, parts, want).await,
                )
            }
        }))
        .await;
        let mut completed = true;
        for (partition, result) in results {
            match result {
                Some(Some(want)) => {
                    expected.insert(partition, want);
                }
                Some(None) => {}
                None => completed = false,
            }
        }
        completed
    }

    /// Applies one partition's parts in offset order. `want`: after a
    /// rewind, the offset the partition's next part must start at (parts
    /// read before the seek are stale and dropped). Returns the partition's
    /// `want` afterwards, or `None` if shutdown interrupted the retries.
    async fn apply_partition(
        &self,
        partition: i32,
        parts: Vec<&Part>,
        mut want: Option<i64>,
    ) -> Option<Option<i64>> {
        for part in parts {
            match want {
                Some(w) if part.span.0 != w => continue,
                Some(_) => want = None,
                None => {}
            }
            let applied = self.invoke(partition, &part.call).await?;
            if let Some(stored) = applied.gap_at {
                // Redis is behind us. If the broker still has the records
                // from `stored`, reread them; if retention deleted them,
                // accept the gap (and say so loudly).
                let low = self.low_watermark(partition).await;
                if low.is_none_or(|low| stored >= low) {
                    self.metrics.rewound(partition, part.span.0, stored);
                    match self.consumer.seek(
                        &self.config.topic,
                        partition,
                        Offset::Offset(stored),
                        Timeout::After(Duration::from_secs(10)),
                    ) {
                        Ok(()) => want = Some(stored),
                        Err(e) => {
                            tracing::warn!(partition, error = %e, "speed: seek failed; the partition resumes from Redis's offset on the next assignment")
                        }
                    }
                    // The rest of this batch is past the gap: reread.
                    return Some(want);
                }
                tracing::error!(partition, stored, low = ?low, "speed: records between the stored offset and the log start were deleted by retention before they were counted");
                self.metrics.gap_accepted(partition, part.span.0 - stored);
                let call = PartitionBatch::build(
                    &self.keys,
                    partition,
                    &part.records,
                    part.span,
                    true,
                    &self.config.rules,
                    &self.retention,
                );
                self.invoke(partition, &call).await?;
            }
            let now = Utc::now();
            for r in &part.records {
                self.metrics
                    .fresh((now - r.event.received_at).as_seconds_f64());
            }
            // Advisory: lets lag tools see progress. Redis holds the truth.
            let _ = self
                .consumer
                .store_offset(&self.config.topic, partition, part.span.1 - 1);
        }
        Some(want)
    }

    /// Runs one partition's script, retrying Redis errors with capped
    /// exponential backoff until it succeeds or shutdown. `None` on shutdown.
    async fn invoke(&self, partition: i32, call: &PartitionBatch) -> Option<Applied> {
        let mut delays =
            counters::conn::backoff(Duration::from_millis(50), self.config.max_backoff);
        loop {
            let started = Instant::now();
            let mut inv = self.script.prepare_invoke();
            for k in &call.keys {
                inv.key(k);
            }
            for a in call.args() {
                inv.arg(a);
            }
            let mut conn = self.redis.clone();
            let r: redis::RedisResult<Vec<i64>> = inv.invoke_async(&mut conn).await;
            let backoff = delays.next().unwrap_or(self.config.max_backoff);
            match r.map(|v| Applied::from_reply(&v)) {
                Ok(Some(a)) => {
                    self.metrics.applied(partition, &a, started.elapsed());
                    self.ready.set_ready();
                    return Some(a);
                }
                Ok(None) => self.metrics.redis_error("unexpected script reply", backoff),
                Err(e) => {
                    self.metrics.redis_error(&e.to_string(), backoff);
                    self.ready
                        .set_not_ready(format!("redis unavailable: {e}; retrying"));
                }
            }
            tokio::select! {
                () = self.cancel.cancelled() => return None,
                () = tokio::time::sleep(backoff) => {}
            }
        }
    }

    /// Produces poison records to the dead-letter topic and waits for acks,
    /// retrying until acknowledged or shutdown. False on shutdown.
    async fn dead_letter(&self, dead: &[(&OwnedMessage, &'static str, String)]) -> bool {
        let mut delays =
            counters::conn::backoff(Duration::from_millis(50), self.config.max_backoff);
        loop {
            let sends = dead.iter().map(|(m, code, reason)| {
                let partition = m.partition();
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "reason",
                        value: Some(reason.as_str()),
                    })
                    .insert(Header {
                        key: "reason_code",
                        value: Some(*code),
                    })
                    .insert(Header {
                        key: "source_topic",
                        value: Some(self.config.topic.as_str()),
                    })
                    .insert(Header {
                        key: "source_partition",
                        value: Some(&partition.to_string()),
                    })
                    .insert(Header {
                        key: "source_offset",
                        value: Some(&m.offset().to_string()),
                    });
                // The event's trace goes on with it into the dead-letter topic.
                let traceparent = infra::kafka::header(*m, schemas::trace::TRACE_HEADER);
                let headers = match traceparent {
                    Some(t) => headers.insert(Header {
                        key: schemas::trace::TRACE_HEADER,
                        value: Some(t),
                    }),
                    None => headers,
                };
                let mut rec = FutureRecord::<[u8], [u8]>::to(&self.config.dlq_topic)
                    .payload(m.payload().unwrap_or_default())
                    .headers(headers);
                if let Some(k) = m.key() {
                    rec = rec.key(k);
                }
                self.dlq.send(rec, Timeout::After(Duration::from_secs(10)))
            });
            let results = join_all(sends).await;
            match results.into_iter().find_map(|r| r.err()) {
                None => {
                    for (m, code, reason) in dead {
                        self.metrics.dead_lettered(
                            m.partition(),
                            m.offset(),
                            reason,
                            code,
                            infra::kafka::trace_id(*m).as_deref(),
                        );
                    }
                    return true;
                }
                Some((e, _)) => {
                    tracing::warn!(error = %e, "speed: dead-letter produce failed; retrying, offsets not advanced");
                    self.ready
                        .set_not_ready(format!("dead-letter topic unavailable: {e}"));
                }
            }
            let backoff = delays.next().unwrap_or(self.config.max_backoff);
            tokio::select! {
                () = self.cancel.cancelled() => return false,
                () = tokio::time::sleep(backoff) => {}
            }
        }
    }

    async fn low_watermark(&self, partition: i32) -> Option<i64> {
        self.consumer
            .fetch_watermarks(
                &self.config.topic,
                partition,
                Timeout::After(Duration::from_secs(5)),
            )
            .map(|(low, _)| low)
            .map_err(|e: KafkaError| tracing::warn!(error = %e, "speed: cannot read watermarks"))
            .ok()
    }
}

/// Splits `items` (in arrival order) into runs of consecutive offsets.
fn contiguous_runs<T>(items: Vec<T>, offset: impl Fn(&T) -> i64) -> Vec<Vec<T>> {
    let mut runs: Vec<Vec<T>> = Vec::new();
    for item in items {
        match runs.last_mut() {
            Some(run) if run.last().is_some_and(|l| offset(l) + 1 == offset(&item)) => {
                run.push(item);
            }
            _ => runs.push(vec![item]),
        }
    }
    runs
}

/// Decodes and re-validates one record; `Err((code, reason))` for poison.
fn decode(
    m: &OwnedMessage,
    limits: &ValidationContext,
) -> std::result::Result<ReceivedEvent, (&'static str, String)> {
    let Some(payload) = m.payload() else {
        return Err(("empty", "record has no payload".into()));
    };
    ReceivedEvent::from_json_bytes(payload, limits).map_err(|e| ("invalid", e.to_string()))
}

/// The applier's connection: replies waited for up to `response` (a whole
/// batch's script), connecting retried until it works or shutdown.
async fn connect(
    client: &RedisClient,
    response: Duration,
    max_backoff: Duration,
    metrics: &Metrics,
    ready: &ReadyFlag,
    cancel: &CancellationToken,
) -> Result<RedisConn> {
    let mut delays = counters::conn::backoff(Duration::from_millis(100), max_backoff);
    loop {
        let backoff = delays.next().unwrap_or(max_backoff);
        match client
            .connect(counters::conn::CONNECT_TIMEOUT, response, 6)
            .await
        {
            Ok(c) => return Ok(c),
            Err(e) => {
                metrics.redis_error(&e.to_string(), backoff);
                ready.set_not_ready(format!("redis unavailable: {e}; retrying"));
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return Err(Error::Stopped),
            () = tokio::time::sleep(backoff) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::contiguous_runs;

    #[test]
    fn a_batch_splits_where_offsets_jump() {
        let runs = contiguous_runs(vec![0, 1, 2, 5, 6, 3, 4, 9], |&o| o);
        assert_eq!(runs, vec![vec![0, 1, 2], vec![5, 6], vec![3, 4], vec![9]]);
        assert!(contiguous_runs(Vec::<i64>::new(), |&o| o).is_empty());
    }
}
