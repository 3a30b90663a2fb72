//! The embedded Kafka: librdkafka's mock cluster on loopback.

use std::sync::mpsc;
use std::thread::JoinHandle;

use rdkafka::mocking::MockCluster;

use crate::{Error, Result};

type Reply = mpsc::Sender<Result<()>>;

enum Command {
    CreateTopic(String, i32, Reply),
    BrokersDown(Reply),
    BrokersUp(Reply),
    Stop,
}

/// A mock Kafka cluster owned by a dedicated thread. Clients connect to
/// [`EmbeddedKafka::bootstrap_servers`] like to any broker. Dropping it stops the
/// cluster.
pub struct EmbeddedKafka {
    bootstrap: String,
    tx: mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedKafka {
    /// Starts a cluster of `brokers` brokers.
    pub fn start(brokers: i32) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Command>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String>>();
        let thread = std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(brokers) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                for cmd in rx {
                    match cmd {
                        Command::CreateTopic(name, partitions, reply) => {
                            let r = cluster.create_topic(&name, partitions, 1);
                            let _ = reply.send(r.map_err(Error::from));
                        }
                        Command::BrokersDown(reply) => {
                            let r = (1..=brokers).try_for_each(|b| cluster.broker_down(b));
                            let _ = reply.send(r.map_err(Error::from));
                        }
                        Command::BrokersUp(reply) => {
                            let r = (1..=brokers).try_for_each(|b| cluster.broker_up(b));
                            let _ = reply.send(r.map_err(Error::from));
                        }
                        Command::Stop => break,
                    }
                }
            })?;
        let bootstrap = ready_rx.recv().map_err(|_| Error::KafkaStopped)??;
        Ok(Self {
            bootstrap,
            tx,
            thread: Some(thread),
        })
    }

    /// The `bootstrap.servers` list of the cluster.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    fn call(&self, make: impl FnOnce(Reply) -> Command) -> Result<()> {
        let (reply, rx) = mpsc::channel();
        self.tx.send(make(reply)).map_err(|_| Error::KafkaStopped)?;
        rx.recv().map_err(|_| Error::KafkaStopped)?
    }

    /// Creates a topic (replication factor 1).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        let name = name.to_owned();
        self.call(|r| Command::CreateTopic(name, partitions, r))
    }

    /// Makes every broker refuse connections (fault injection).
    pub fn brokers_down(&self) -> Result<()> {
        self.call(Command::BrokersDown)
    }

    /// Makes every broker accept connections again.
    pub fn brokers_up(&self) -> Result<()> {
        self.call(Command::BrokersUp)
    }
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for EmbeddedKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedKafka")
            .field("bootstrap", &self.bootstrap)
            .finish()
    }
}

/// The high watermark (next offset) of each of `partitions` partitions of
/// `topic`. Blocking: call it from `spawn_blocking` in async code.
pub fn high_watermarks(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    timeout: std::time::Duration,
) -> Result<Vec<i64>> {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    (0..partitions)
        .map(|p| Ok(c.fetch_watermarks(topic, p, timeout)?.1))
        .collect()
}

/// One record read back from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    /// Partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// Key bytes, if any.
    pub key: Option<Vec<u8>>,
    /// Payload bytes, if any.
    pub payload: Option<Vec<u8>>,
    /// Headers (key, value) in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Reads every record a topic holds right now (up to each partition's high
/// watermark), in partition then offset order. Blocking: call it from
/// `spawn_blocking` in async code. Gives up after `timeout`.
pub fn read_topic(
    bootstrap: &str,
    topic: &str,
    timeout: std::time::Duration,
) -> Result<Vec<KafkaRecord>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
    use std::time::Instant;

    let deadline = Instant::now() + timeout;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("read-topic-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    let mut high = std::collections::HashMap::new();
    for &p in &partitions {
        let (_, hi) = consumer.fetch_watermarks(topic, p, timeout)?;
        high.insert(p, hi);
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut next: std::collections::HashMap<i32, i64> =
        partitions.iter().map(|&p| (p, 0)).collect();
    let mut out = Vec::new();
    let done = |next: &std::collections::HashMap<i32, i64>| {
        high.iter()
            .all(|(p, hi)| next.get(p).copied().unwrap_or(0) >= *hi)
    };
    while !done(&next) {
        if Instant::now() > deadline {
            return Err(Error::Kafka(
                rdkafka::error::KafkaError::MessageConsumption(
                    rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
                ),
            ));
        }
        match consumer.poll(std::time::Duration::from_millis(100)) {
            Some(Ok(m)) => {
                next.insert(m.partition(), m.offset() + 1);
                out.push(KafkaRecord {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                    headers: m
                        .headers()
                        .map(|h| {
                            use rdkafka::message::Headers;
                            h.iter()
                                .map(|x| (x.key.to_owned(), x.value.unwrap_or_default().to_vec()))
                                .collect()
                        })
                        .unwrap_or_default(),
                });
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    Ok(out)
}

/// A record that ingest accepted under wider limits than the consumer's own
/// (its [`schemas::rules::LIMITS_HEADER`]): counting or skipping it under
/// the consumer's rules could lose an accepted view, so the consumer stops
/// there until it runs with the same rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stopped at partition {partition} offset {offset}: {reason}")]
pub struct NarrowerThanIngest {
    /// Partition of the record.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// What differs and what to set.
    pub reason: String,
}

/// A record's header `key`, if present with a value.
pub fn header<'a, M: rdkafka::Message>(m: &'a M, key: &str) -> Option<&'a [u8]> {
    use rdkafka::message::Headers;
    m.headers()?.iter().find(|h| h.key == key)?.value
}

/// The trace id of the W3C `traceparent` a record carries (set by ingest;
/// see [`schemas::trace`]), for logs that follow one event across services.
pub fn trace_id<M: rdkafka::Message>(m: &M) -> Option<String> {
    schemas::trace::trace_id_of(header(m, schemas::trace::TRACE_HEADER))
}

/// Checks a record's limits header against `rules`. Records without one
/// (not from ingest: tools, tests) pass: the consumer's rules decide.
pub fn check_limits<M: rdkafka::Message>(
    rules: &schemas::RuleSet,
    m: &M,
) -> Result<(), NarrowerThanIngest> {
    let Some(value) = header(m, schemas::rules::LIMITS_HEADER) else {
        return Ok(());
    };
    rules
        .check_limits_header(value)
        .map_err(|reason| NarrowerThanIngest {
            partition: m.partition(),
            offset: m.offset(),
            reason,
        })
}

/// What a caller can do about a Kafka client error: a client that cannot be
/// created or configured, or a subscription that is refused, is a bad
/// setting (fix it and restart); anything else is the broker being away or
/// busy, which passes.
pub fn error_class(e: &rdkafka::error::KafkaError) -> schemas::ErrorClass {
    use rdkafka::error::KafkaError as K;
    match e {
        K::ClientConfig(..) | K::ClientCreation(_) | K::Subscription(_) => {
            schemas::ErrorClass::Input
        }
        _ => schemas::ErrorClass::Unavailable,
    }
}

/// The consumer settings every viewcount consumer group shares (speed,
/// archive): offsets are stored only after the downstream write is durable
/// (`enable.auto.offset.store=false`; the stored offset is then committed in
/// the background, advisory for lag tools), a new group starts at the
/// earliest record, and a crashed member's partitions move after
/// `session_timeout`. Callers add what is theirs (statistics, fetch waits).
///
/// With `instance_id` the consumer is a static member of its group
/// (`group.instance.id`, KIP-345, DESIGN §7): restarted after a crash with
/// the same id it takes its partitions back at once instead of waiting for
/// the dead member's session to expire, and a second live consumer with the
/// same id is fenced by the broker.
pub fn consumer_config(
    bootstrap_servers: &str,
    group_id: &str,
    instance_id: Option<&str>,
    session_timeout: std::time::Duration,
) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    if let Some(id) = instance_id {
        c.set("group.instance.id", id);
    }
    c.set("bootstrap.servers", bootstrap_servers)
        .set("group.id", group_id)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set(
            "session.timeout.ms",
            session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (session_timeout.as_millis() / 4).max(100).to_string(),
        );
    c
}

/// How long [`close`] waits for a Kafka client to close.
pub const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Drops a Kafka client (a consumer leaves its group, a producer flushes)
/// on a thread of its own, waiting at most [`CLOSE_TIMEOUT`]: librdkafka's
/// close blocks with no deadline of its own, and on a runtime worker it
/// would stall every task scheduled there (a stop that hangs for good when
/// the broker is already gone). Past the deadline the thread is left to the
/// process' exit, and the wait is logged.
pub async fn close<T: Send + 'static>(client: T, what: &'static str) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name(format!("close {what}"))
        .spawn(move || {
            drop(client);
            let _ = tx.send(());
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start a thread to close the {what}; leaving it open");
        return;
    }
    if tokio::time::timeout(CLOSE_TIMEOUT, rx).await.is_err() {
        tracing::warn!(
            "the {what} did not close within {} s; leaving it to the process' exit",
            CLOSE_TIMEOUT.as_secs()
        );
    }
}
