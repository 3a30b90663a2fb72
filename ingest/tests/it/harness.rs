//! One ingest instance per test, on port 0, with its own topic.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use infra::kafka::{KafkaRecord, read_topic};
use ingest::{EventProducer, IngestConfig, ProducerConfig};
use schemas::{ReceivedEvent, ValidationContext};
use serde_json::{Value, json};
use testkit::TestKafka;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub(crate) struct Ingest {
    pub(crate) kafka: TestKafka,
    pub(crate) topic: String,
    pub(crate) url: String,
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<ingest::Result<()>>>,
}

impl Ingest {
    pub(crate) async fn start() -> Self {
        Self::start_with(|_, _| {}).await
    }

    pub(crate) async fn start_with(
        tune: impl FnOnce(&mut IngestConfig, &mut ProducerConfig),
    ) -> Self {
        Self::start_on(TestKafka::start().expect("kafka"), tune).await
    }

    /// As [`Self::start_with`], on `kafka`.
    pub(crate) async fn start_on(
        kafka: TestKafka,
        tune: impl FnOnce(&mut IngestConfig, &mut ProducerConfig),
    ) -> Self {
        let topic = kafka.topic("ingest-it", 3).await.expect("topic");
        let mut config = IngestConfig::default();
        let mut pc = ProducerConfig::new(kafka.bootstrap_servers(), &topic);
        tune(&mut config, &mut pc);
        let producer = Arc::new(EventProducer::new(&pc).expect("producer"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(ingest::run(listener, config, producer, async move {
            let _ = rx.await;
        }));
        Self {
            kafka,
            topic,
            url: format!("{base}/v1/events"),
            base,
            client: reqwest::Client::new(),
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// POSTs `body` with `content_type`; returns status and JSON body.
    pub(crate) async fn post(
        &self,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let r = self
            .client
            .post(&self.url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|_| json!({"raw": text}));
        (status, json)
    }

    pub(crate) async fn post_json(&self, body: &Value) -> (u16, Value) {
        self.post("application/json", serde_json::to_vec(body).unwrap())
            .await
    }

    /// Stops the server gracefully and waits for it.
    pub(crate) async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.server.take() {
            h.await.expect("join").expect("ingest run");
        }
    }

    /// Every record in the topic now.
    pub(crate) async fn records(&self) -> Vec<KafkaRecord> {
        let (b, t) = (
            self.kafka.bootstrap_servers().to_owned(),
            self.topic.clone(),
        );
        tokio::task::spawn_blocking(move || read_topic(&b, &t, Duration::from_secs(30)))
            .await
            .unwrap()
            .expect("read topic")
    }

    /// Every record decoded (and re-validated) as a received event.
    pub(crate) async fn events(&self) -> Vec<(KafkaRecord, ReceivedEvent)> {
        let limits = ValidationContext::at(Utc::now());
        self.records()
            .await
            .into_iter()
            .map(|r| {
                let e = ReceivedEvent::from_json_bytes(r.payload.as_deref().unwrap(), &limits)
                    .expect("payload decodes");
                (r, e)
            })
            .collect()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A valid event JSON with a fresh id.
pub(crate) fn event(video: &str) -> Value {
    json!({
        "event_id": uuid::Uuid::new_v4().to_string(),
        "video_id": video,
        "user_id": "u1",
        "occurred_at": schemas::event::format_timestamp(&Utc::now()),
        "watch_seconds": 40,
        "revenue_eligible": true,
    })
}
