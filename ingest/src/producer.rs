//! The Kafka side of ingest: an idempotent producer that reports an event
//! accepted only once the broker acknowledged it (acks=all).

use std::time::Duration;

use futures::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use schemas::rules::LIMITS_HEADER;
use schemas::trace::TRACE_HEADER;
use schemas::{ReceivedEvent, RuleSet};

use crate::{Error, Result};

/// Producer settings. Defaults live in [`ProducerConfig::new`].
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// The event topic.
    pub topic: String,
    /// How long librdkafka may try to deliver one event before ingest answers
    /// 503 (`message.timeout.ms`).
    pub delivery_timeout: Duration,
    /// Capacity of the local producer queue in messages; when full, requests get 503.
    pub queue_max_messages: u32,
    /// How long the producer waits to fill a batch (`linger.ms`).
    pub linger: Duration,
    /// `enable.idempotence` (default on). Off, the producer's own retries
    /// can write a record twice (still acks=all); the event_id dedup of the
    /// speed layer and batch removes the copy like any re-sent event. Only
    /// for a broker whose idempotent-producer support is broken.
    pub idempotence: bool,
}

impl ProducerConfig {
    /// Default [`Self::delivery_timeout`].
    pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

    /// Defaults for `bootstrap_servers` and `topic`.
    pub fn new(bootstrap_servers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            topic: topic.into(),
            delivery_timeout: Self::DEFAULT_DELIVERY_TIMEOUT,
            queue_max_messages: 200_000,
            linger: Duration::from_millis(1),
            idempotence: true,
        }
    }

    /// The librdkafka configuration: idempotent (unless turned off),
    /// acks=all, compressed.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("enable.idempotence", self.idempotence.to_string())
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", self.linger.as_millis().to_string())
            .set(
                "message.timeout.ms",
                self.delivery_timeout.as_millis().max(1).to_string(),
            )
            .set(
                "queue.buffering.max.messages",
                self.queue_max_messages.to_string(),
            )
            // Key-hash partitioning identical to the Java client, so external
            // tools computing partitions from video_id agree with us.
            .set("partitioner", "murmur2_random");
        c
    }
}

/// Why a batch was not (fully) acknowledged.
#[derive(Debug)]
pub enum ProduceFailure {
    /// The local queue is full: back off and retry.
    QueueFull {
        /// Events enqueued before the queue filled (they may still be delivered).
        enqueued: usize,
    },
    /// Some events were not acknowledged in time or were refused.
    NotAcknowledged {
        /// Events the broker acknowledged.
        delivered: usize,
        /// Events it did not.
        failed: usize,
        /// The first error seen.
        first_error: KafkaError,
    },
}

/// Produces received events to the event topic, keyed by `video_id`.
pub struct EventProducer {
    producer: FutureProducer,
    topic: String,
    delivery_timeout: Duration,
}

impl std::fmt::Debug for EventProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProducer")
            .field("topic", &self.topic)
            .finish()
    }
}

impl EventProducer {
    /// Creates the producer (it connects lazily).
    pub fn new(config: &ProducerConfig) -> Result<Self> {
        let producer: FutureProducer = config.client_config().create().map_err(Error::Kafka)?;
        Ok(Self {
            producer,
            topic: config.topic.clone(),
            delivery_timeout: config.delivery_timeout,
        })
    }

    /// The topic events go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Messages waiting in the local queue or in flight to the broker.
    pub fn queue_depth(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// Enqueues every event and waits until the broker acknowledged all of them.
    /// `Ok` means every event is durable in Kafka. Each record carries the
    /// acceptance limits of `rules` (the set the events were validated with)
    /// in its [`LIMITS_HEADER`], so consumers can refuse to run narrower.
    pub async fn produce_all(
        &self,
        events: &[ReceivedEvent],
        rules: &RuleSet,
    ) -> Result<(), ProduceFailure> {
        self.produce_traced(events, rules, None).await
    }

    /// [`EventProducer::produce_all`], each record also carrying
    /// `traceparent` (W3C) in its [`TRACE_HEADER`].
    pub async fn produce_traced(
        &self,
        events: &[ReceivedEvent],
        rules: &RuleSet,
        traceparent: Option<&str>,
    ) -> Result<(), ProduceFailure> {
        let limits = rules.limits_header();
        let mut pending = Vec::with_capacity(events.len());
        for e in events {
            let payload = e.to_json_bytes();
            let mut headers = OwnedHeaders::new_with_capacity(2).insert(Header {
                key: LIMITS_HEADER,
                value: Some(limits.as_str()),
            });
            if let Some(t) = traceparent {
                headers = headers.insert(Header {
                    key: TRACE_HEADER,
                    value: Some(t),
                });
            }
            let record = FutureRecord::to(&self.topic)
                .key(e.event.video_id.as_str())
                .payload(&payload)
                .headers(headers)
                .timestamp(e.received_at.timestamp_millis());
            match self.producer.send_result(record) {
                Ok(f) => pending.push(f),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    return Err(ProduceFailure::QueueFull {
                        enqueued: pending.len(),
                    });
                }
                Err((err, _)) => {
                    return Err(ProduceFailure::NotAcknowledged {
                        delivered: 0,
                        failed: events.len(),
                        first_error: err,
                    });
                }
            }
        }
        let mut delivered = 0;
        let mut failed = 0;
        let mut first_error = None;
        for r in join_all(pending).await {
            match r {
                Ok(Ok(_)) => delivered += 1,
                Ok(Err((e, _))) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
                Err(_canceled) => {
                    failed += 1;
                    first_error.get_or_insert(KafkaError::Canceled);
                }
            }
        }
        match first_error {
            None => Ok(()),
            Some(first_error) => Err(ProduceFailure::NotAcknowledged {
                delivered,
                failed,
                first_error,
            }),
        }
    }

    /// Whether the broker answers a metadata request for the topic in time.
    pub async fn broker_reachable(&self, timeout: Duration) -> Result<(), String> {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            let md = producer
                .client()
                .fetch_metadata(Some(&topic), Timeout::After(timeout))
                .map_err(|e| format!("Kafka metadata request failed: {e}"))?;
            match md.topics().first() {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
                Some(t) => Err(format!("topic {topic:?} is not available: {:?}", t.error())),
                None => Err(format!("topic {topic:?} not in metadata")),
            }
        })
        .await
        .map_err(|e| format!("metadata check failed: {e}"))?
    }

    /// Waits (blocking a worker thread) until queued events are delivered or the
    /// delivery timeout passes. Used on shutdown.
    pub async fn flush(&self) -> Result<(), String> {
        let producer = self.producer.clone();
        let timeout = self.delivery_timeout + Duration::from_secs(1);
        tokio::task::spawn_blocking(move || producer.flush(Timeout::After(timeout)))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }
}
