//! `viewcount speed`.

use std::time::Duration;

use anyhow::Context;
use schemas::RuleSet;
use speed::SpeedConfig;
use telemetry::OpsBuilder;

use crate::util::{KafkaFlags, RuleFlags, run_service};

/// Speed-layer flags shared by `speed` and `up`.
#[derive(Debug, clap::Args)]
pub(crate) struct SpeedFlags {
    /// Consumer group of the speed layer.
    #[arg(long, env = "VIEWCOUNT_SPEED_GROUP", default_value = "speed")]
    pub(crate) speed_group: String,
    /// Dead-letter topic for undecodable or invalid records (default: TOPIC-dlq).
    #[arg(long, env = "VIEWCOUNT_DLQ_TOPIC")]
    pub(crate) dlq_topic: Option<String>,
    /// Prefix of every Redis key the speed layer writes.
    #[arg(long, env = "VIEWCOUNT_REDIS_PREFIX", default_value = "vc:")]
    pub(crate) redis_prefix: String,
    /// An event_id is remembered at least this long after it was received.
    #[arg(long, env = "VIEWCOUNT_DEDUP_WINDOW", default_value = "48h", value_parser = humantime::parse_duration)]
    pub(crate) dedup_window: Duration,
    /// Most records per batch (one Redis script call per partition per batch).
    #[arg(long, env = "VIEWCOUNT_SPEED_BATCH", default_value_t = 20_000)]
    pub(crate) speed_batch: usize,
    /// Dedup hashes per partition per day, as a power of two: about
    /// log2(peak event ids per partition per day / 64).
    #[arg(long, env = "VIEWCOUNT_DEDUP_BUCKET_BITS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=24))]
    pub(crate) dedup_bucket_bits: u32,
    /// Longest wait to fill a batch.
    #[arg(long, env = "VIEWCOUNT_SPEED_BATCH_WAIT", default_value = "20ms", value_parser = humantime::parse_duration)]
    pub(crate) speed_batch_wait: Duration,
}

impl SpeedFlags {
    pub(crate) fn config(
        &self,
        kafka: &str,
        topic: &str,
        redis_url: &str,
        rules: RuleSet,
    ) -> anyhow::Result<SpeedConfig> {
        let mut c = SpeedConfig::new(kafka, topic, redis_url);
        c.rules = rules;
        c.group_id = self.speed_group.clone();
        if let Some(d) = &self.dlq_topic {
            c.dlq_topic = d.clone();
        }
        c.key_prefix = self.redis_prefix.clone();
        c.dedup_window =
            chrono::Duration::from_std(self.dedup_window).context("dedup window out of range")?;
        c.batch_max = self.speed_batch.max(1);
        c.dedup_bucket_bits = self.dedup_bucket_bits;
        c.batch_wait = self.speed_batch_wait;
        Ok(c)
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    broker: KafkaFlags,
    /// Redis URL (redis://host:port/).
    #[arg(long, env = "VIEWCOUNT_REDIS_URL")]
    redis_url: String,
    /// Listen address of /healthz, /readyz, /metrics.
    #[arg(long, env = "VIEWCOUNT_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    #[command(flatten)]
    flags: SpeedFlags,
    #[command(flatten)]
    rules: RuleFlags,
}

pub(crate) async fn run(a: Args) -> anyhow::Result<()> {
    let config = a.flags.config(
        &a.broker.kafka,
        &a.broker.topic,
        &a.redis_url,
        a.rules.rules()?,
    )?;
    let mut ops = OpsBuilder::new();
    let metrics = speed::Metrics::register(ops.registry());
    let ready = ops.flag("redis");
    let ops = ops.build();
    run_service(&a.listen, ops, |stop| {
        speed::run(config, metrics, ready, stop)
    })
    .await
}
