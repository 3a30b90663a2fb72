//! `viewcount ingest`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use ingest::{EventProducer, IngestConfig, PlaybackPolicy, ProducerConfig};
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
    /// The player service's public playback keys: one `<key id> ed25519
    /// <base64 key>` line each (`viewcount token playback-keygen` writes
    /// one to FILE.pub; keep an old key's line until its tokens expired).
    #[arg(long, env = "VIEWCOUNT_PLAYBACK_KEYS", value_name = "FILE")]
    pub(crate) playback_keys: Option<PathBuf>,
    /// Reject every event without a valid playback token, with the reason
    /// (default true; `up --demo`: false). false: keep them, recorded as
    /// unverified and never billable.
    #[arg(long, env = "VIEWCOUNT_REQUIRE_SIGNED_EVENTS", action = clap::ArgAction::Set, value_name = "true|false")]
    pub(crate) require_signed_events: Option<bool>,
}

impl IngestFlags {
    /// Ingest's settings. `demo_key`: a key `up --demo` signs its own
    /// traffic with, trusted besides --playback-keys; `required_by_default`:
    /// what --require-signed-events is when not given.
    pub(crate) fn config(
        &self,
        rules: RuleSet,
        demo_key: Option<&playback::PlaybackSigner>,
        required_by_default: bool,
    ) -> anyhow::Result<IngestConfig> {
        Ok(IngestConfig {
            max_body_bytes: self.max_body_bytes,
            max_events: self.max_events,
            rules,
            keeper: None,
            http: telemetry::http::Limits::default(),
            playback: self.playback_policy(demo_key, required_by_default)?,
        })
    }

    /// How tokens are checked: there is no setting without keys that
    /// makes unsigned events billable.
    fn playback_policy(
        &self,
        demo_key: Option<&playback::PlaybackSigner>,
        required_by_default: bool,
    ) -> anyhow::Result<PlaybackPolicy> {
        let required = self.require_signed_events.unwrap_or(required_by_default);
        let mut keys = match &self.playback_keys {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading --playback-keys {}", path.display()))?;
                playback::Keyring::parse(&text, &path.display().to_string())?
            }
            None => playback::Keyring::default(),
        };
        if let Some(k) = demo_key {
            keys.insert(k)?;
        }
        if keys.is_empty() {
            if required {
                bail!(
                    "ingest requires signed playback tokens (--require-signed-events, the default) but holds no key to verify them: give --playback-keys FILE with the player service's public keys (`viewcount token playback-keygen` makes a pair), or --require-signed-events false to keep unsigned events as unverified, never billable"
                );
            }
            tracing::warn!(
                "no --playback-keys: no playback token can be verified, so every event is kept as unverified and none is billable"
            );
        }
        Ok(PlaybackPolicy::Verify {
            keys: Arc::new(keys),
            required,
        })
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
    // The settings first: a bad one is reported before Kafka is contacted.
    let mut config = a.flags.config(a.rules.rules()?, None, true)?;
    let producer = Arc::new(a.flags.producer(&a.broker.kafka, &a.broker.topic)?);
    let listener = bind(&a.listen).await?;
    config.http = a.http.limits();
    ingest::run(listener, config, producer, shutdown_signal()).await?;
    Ok(())
}
