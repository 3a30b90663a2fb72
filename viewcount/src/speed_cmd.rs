//! `viewcount speed`.

use schemas::RuleSet;
use speed::SpeedConfig;
use telemetry::OpsBuilder;

use crate::util::{KafkaFlags, RuleFlags, run_service};

/// Speed-layer flags shared by `speed` and `up`.
#[derive(Debug, clap::Args)]
pub(crate) struct SpeedFlags {
    /// Consumer group of the speed layer.
    #[arg(long, env = "VIEWCOUNT_SPEED_GROUP", default_value = speed::defaults::GROUP)]
    pub(crate) speed_group: String,
    /// Dead-letter topic for undecodable or invalid records (default: TOPIC-dlq).
    #[arg(long, env = "VIEWCOUNT_DLQ_TOPIC")]
    pub(crate) dlq_topic: Option<String>,
    /// Prefix of every Redis key the speed layer writes.
    #[arg(long, env = "VIEWCOUNT_REDIS_PREFIX", default_value = speed::defaults::KEY_PREFIX)]
    pub(crate) redis_prefix: String,
    /// An event_id is remembered at least this long after it was received.
    #[arg(long, env = "VIEWCOUNT_DEDUP_WINDOW", default_value_t = crate::util::default_dedup_window())]
    pub(crate) dedup_window: humantime::Duration,
    /// Most records per batch (one Redis script call per partition per batch).
    #[arg(long, env = "VIEWCOUNT_SPEED_BATCH", default_value_t = speed::defaults::BATCH_MAX)]
    pub(crate) speed_batch: usize,
    /// Dedup hashes per partition per day, as a power of two: about
    /// log2(peak event ids per partition per day / 64).
    #[arg(long, env = "VIEWCOUNT_DEDUP_BUCKET_BITS", default_value_t = speed::defaults::DEDUP_BUCKET_BITS, value_parser = clap::value_parser!(u32).range(1..=24))]
    pub(crate) dedup_bucket_bits: u32,
    /// Longest wait to fill a batch.
    #[arg(long, env = "VIEWCOUNT_SPEED_BATCH_WAIT", default_value_t = speed::defaults::BATCH_WAIT.into())]
    pub(crate) speed_batch_wait: humantime::Duration,
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
        c.dedup_window = crate::util::dedup_window(self.dedup_window)?;
        c.batch_max = self.speed_batch.max(1);
        c.dedup_bucket_bits = self.dedup_bucket_bits;
        c.batch_wait = self.speed_batch_wait.into();
        Ok(c)
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    broker: KafkaFlags,
    /// Redis URL: redis://host:port/ for one server, or
    /// redis+cluster://host:port,host:port,... for a Redis Cluster.
    #[arg(long, env = "VIEWCOUNT_REDIS_URL")]
    redis_url: String,
    /// Listen address of /healthz, /readyz, /metrics.
    #[arg(long, env = "VIEWCOUNT_LISTEN", default_value = crate::util::DEFAULT_LISTEN)]
    listen: String,
    #[command(flatten)]
    flags: SpeedFlags,
    #[command(flatten)]
    instance: crate::util::InstanceFlag,
    #[command(flatten)]
    rules: RuleFlags,
}

pub(crate) async fn run(a: Args) -> anyhow::Result<()> {
    let mut config = a.flags.config(
        &a.broker.kafka,
        &a.broker.topic,
        &a.redis_url,
        a.rules.rules()?,
    )?;
    config.instance_id = Some(a.instance.id("speed", true));
    let mut ops = OpsBuilder::new();
    let metrics = speed::Metrics::register(ops.registry());
    let ready = ops.flag("redis");
    let ops = ops.build();
    run_service(&a.listen, ops, |stop| {
        speed::run(config, metrics, ready, stop)
    })
    .await
}
