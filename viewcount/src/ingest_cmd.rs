//! `viewcount ingest`.

use std::sync::Arc;

use anyhow::Context;
use ingest::{EventProducer, IngestConfig, ProducerConfig};
use schemas::RuleSet;

use crate::util::{HttpFlags, KafkaFlags, RuleFlags, bind, shutdown_signal};

/// Flags shared by every command that runs ingest.
#[derive(Debug, clap::Args)]
pub(crate) struct IngestFlags {
    /// Largest request body in bytes.
    #[arg(long, env = "VIEWCOUNT_MAX_BODY_BYTES", default_value_t = IngestConfig::DEFAULT_MAX_BODY_BYTES)]
    pub(crate) max_body_bytes: usize,
    /// Most events one request may carry.
    #[arg(long, env = "VIEWCOUNT_MAX_EVENTS", default_value_t = IngestConfig::DEFAULT_MAX_EVENTS)]
    pub(crate) max_events: usize,
    /// How long Kafka may take to acknowledge an event before ingest answers 503.
    #[arg(long, env = "VIEWCOUNT_DELIVERY_TIMEOUT", default_value_t = ProducerConfig::DEFAULT_DELIVERY_TIMEOUT.into())]
    pub(crate) delivery_timeout: humantime::Duration,
    /// Produce with Kafka's idempotent producer (no duplicates from the
    /// producer's own retries). Turn it off only for a Kafka-compatible
    /// broker whose support for it is broken (tansu 0.6 panics when the
    /// producer bumps its epoch after a timeout); a record the producer
    /// then re-sends is removed by the event_id dedup like any re-sent event.
    #[arg(long, env = "VIEWCOUNT_KAFKA_IDEMPOTENCE", default_value_t = true, action = clap::ArgAction::Set, value_name = "true|false")]
    pub(crate) kafka_idempotence: bool,
}

impl IngestFlags {
    pub(crate) fn config(&self, rules: RuleSet) -> IngestConfig {
        IngestConfig {
            max_body_bytes: self.max_body_bytes,
            max_events: self.max_events,
            rules,
            keeper: None,
            http: telemetry::http::Limits::default(),
        }
    }

    pub(crate) fn producer(&self, bootstrap: &str, topic: &str) -> anyhow::Result<EventProducer> {
        let mut pc = ProducerConfig::new(bootstrap, topic);
        pc.delivery_timeout = self.delivery_timeout.into();
        pc.idempotence = self.kafka_idempotence;
        EventProducer::new(&pc).context("creating the Kafka producer")
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    broker: KafkaFlags,
    /// HTTP listen address.
    #[arg(long, env = "VIEWCOUNT_LISTEN", default_value = crate::util::DEFAULT_LISTEN)]
    listen: String,
    #[command(flatten)]
    flags: IngestFlags,
    #[command(flatten)]
    http: HttpFlags,
    #[command(flatten)]
    rules: RuleFlags,
}

pub(crate) async fn run(a: Args) -> anyhow::Result<()> {
    let producer = Arc::new(a.flags.producer(&a.broker.kafka, &a.broker.topic)?);
    let listener = bind(&a.listen).await?;
    let mut config = a.flags.config(a.rules.rules()?);
    config.http = a.http.limits();
    ingest::run(listener, config, producer, shutdown_signal()).await?;
    Ok(())
}
