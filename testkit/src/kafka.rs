//! A Kafka for each test, and names and checks tests share.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

use infra::kafka::EmbeddedKafka;

use crate::Result;

/// Environment variable naming an external broker for the external test tier.
pub const EXTERNAL_KAFKA_ENV: &str = "VIEWCOUNT_TEST_KAFKA";

/// A Kafka for one test: the external broker of `VIEWCOUNT_TEST_KAFKA` when set,
/// otherwise a fresh embedded mock cluster.
#[derive(Debug)]
pub struct TestKafka {
    bootstrap: String,
    embedded: Option<EmbeddedKafka>,
}

impl TestKafka {
    /// Picks the broker as described on the type.
    pub fn start() -> Result<Self> {
        match std::env::var(EXTERNAL_KAFKA_ENV) {
            Ok(b) if !b.trim().is_empty() => Ok(Self {
                bootstrap: b,
                embedded: None,
            }),
            _ => Self::start_embedded(),
        }
    }

    /// Always a fresh embedded cluster, whatever `VIEWCOUNT_TEST_KAFKA`
    /// says: for fault-injection tests, which need a broker they can take
    /// down (on an external broker they would have nothing to test, and a
    /// test that skips itself passes without testing anything).
    pub fn start_embedded() -> Result<Self> {
        let k = EmbeddedKafka::start(1)?;
        Ok(Self {
            bootstrap: k.bootstrap_servers().to_owned(),
            embedded: Some(k),
        })
    }

    /// `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// The embedded cluster, for fault injection; `None` on an external
    /// broker (fault-injection tests start with [`Self::start_embedded`]).
    pub fn embedded(&self) -> Option<&EmbeddedKafka> {
        self.embedded.as_ref()
    }

    /// High watermarks of `topic`'s first `partitions` partitions.
    pub async fn high_watermarks(&self, topic: &str, partitions: i32) -> Result<Vec<i64>> {
        let (b, t) = (self.bootstrap.clone(), topic.to_owned());
        let ends = tokio::task::spawn_blocking(move || {
            infra::kafka::high_watermarks(&b, &t, partitions, Duration::from_secs(10))
        })
        .await
        .map_err(|e| crate::Error::Io(std::io::Error::other(e)))??;
        Ok(ends)
    }

    /// Creates a uniquely named topic and returns its name.
    pub async fn topic(&self, prefix: &str, partitions: i32) -> Result<String> {
        let name = unique_name(prefix);
        match &self.embedded {
            Some(k) => k.create_topic(&name, partitions)?,
            None => create_topic(&self.bootstrap, &name, partitions).await?,
        }
        Ok(name)
    }
}

/// Creates topic `name` with `partitions` partitions (replication 1) on the
/// broker at `bootstrap` with the Kafka admin API.
pub async fn create_topic(bootstrap: &str, name: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin.create_topics([&topic], &opts).await? {
        r.map_err(|(_, code)| rdkafka::error::KafkaError::AdminOp(code))?;
    }
    Ok(())
}

/// `prefix-<random>`: unique names let tests share a broker and run in parallel.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Asserts `got` holds exactly `want`: the first few differing keys with both
/// values, then no extra keys. `what` names `got` in the message.
pub fn assert_same_map<K, V>(
    got: &std::collections::BTreeMap<K, V>,
    want: &std::collections::BTreeMap<K, V>,
    what: &str,
) where
    K: Ord + std::fmt::Debug,
    V: PartialEq + std::fmt::Debug,
{
    let diffs: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .map(|(k, v)| (k, v, got.get(k)))
        .take(5)
        .collect();
    assert!(
        diffs.is_empty(),
        "{what} differs from the truth (key, want, got): {diffs:?}"
    );
    let extra: Vec<_> = got
        .keys()
        .filter(|k| !want.contains_key(*k))
        .take(5)
        .collect();
    assert!(extra.is_empty(), "extra keys in {what}: {extra:?}");
}
