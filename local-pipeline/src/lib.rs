//! The whole pipeline in one process, each function on its local host: HTTP → ingest-api →
//! SQS (moto) → batch-writer poller → PostgreSQL → query-api → HTTP. For tests that need
//! more than one function; each pipeline has a database and a queue pair of its own.

use std::sync::Arc;
use std::time::Duration;

use batch_writer::poller::Poller;
use readings::config::{AuthConfig, PollerConfig};
use readings::http::auth::{Auth, Scope};
use readings::ingest::Ingestor;
use readings::queue::Sender;
use readings::testing::{ingest_config, serve, SqsStandIn, TestDb, TestQueue};
use readings::writer::Writer;

/// How to start a [`LocalPipeline`].
#[derive(Debug, Clone)]
pub struct Options {
    /// The ingest host's coalescing linger; zero turns coalescing off.
    pub coalesce_linger: Duration,
    /// API keys checked with this cache time; `None` runs with `AUTH=off`.
    pub auth_cache: Option<Duration>,
    /// The poller's SQS long-poll wait.
    pub poll_wait: Duration,
    /// The SQS stand-in the queues are on.
    pub sqs: SqsStandIn,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            coalesce_linger: Duration::ZERO,
            auth_cache: Some(Duration::from_secs(30)),
            poll_wait: Duration::from_secs(1),
            sqs: SqsStandIn::Moto,
        }
    }
}

/// A running pipeline. Its tasks stop with the test's runtime.
pub struct LocalPipeline {
    pub db: TestDb,
    pub queue: TestQueue,
    /// `http://127.0.0.1:port` of ingest-api.
    pub ingest_base: String,
    /// `http://127.0.0.1:port` of query-api.
    pub query_base: String,
    /// `{ingest_base}/sensor`.
    pub ingest: String,
    /// `{query_base}/sensor`.
    pub query: String,
    /// A key with both scopes (accepted whether or not keys are checked).
    pub key: String,
}

impl LocalPipeline {
    /// Keys checked, no coalescing.
    pub async fn start() -> LocalPipeline {
        LocalPipeline::with(Options::default()).await
    }

    pub async fn with(options: Options) -> LocalPipeline {
        let db = TestDb::new().await;
        let queue = TestQueue::at(options.sqs).await;
        let auth = match options.auth_cache {
            Some(cache_ttl) => Auth::new(
                &AuthConfig {
                    cache_ttl,
                    ..AuthConfig::default()
                },
                db.store.clone(),
            ),
            None => Auth::Off,
        };
        let key = db.api_key(&[Scope::Ingest, Scope::Query]).await;
        let sender = Sender::new(queue.client.clone(), &queue.config)
            .await
            .expect("a sender for the test queue");
        let mut ingestor = Ingestor::new(ingest_config(), sender, db.store.clone());
        if !options.coalesce_linger.is_zero() {
            ingestor = ingestor.with_coalescing(options.coalesce_linger);
        }
        let ingest_base = serve(ingest_api::router(Arc::new(ingestor), &auth)).await;
        let query_base = serve(query_api::router(db.store.clone(), &auth)).await;
        let poller = Poller::new(
            queue.client.clone(),
            queue.url().to_owned(),
            PollerConfig {
                batch_size: 100,
                batch_window: Duration::from_millis(100),
                wait: options.poll_wait,
                visibility_timeout: Duration::from_secs(30),
                pollers: 2,
                maintenance_every: Duration::from_secs(3600),
            },
            Writer::new(db.store.clone()).with_dead_letter_queue(queue.dlq_sender()),
        );
        tokio::spawn(poller.run(std::future::pending()));
        LocalPipeline {
            ingest: format!("{ingest_base}/sensor"),
            query: format!("{query_base}/sensor"),
            db,
            queue,
            ingest_base,
            query_base,
            key,
        }
    }
}

impl LocalPipeline {
    /// `GET /sensor?query` with the pipeline's key, as JSON.
    pub async fn get_json(&self, query: &str) -> serde_json::Value {
        reqwest::Client::new()
            .get(format!("{}?{query}", self.query))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("GET /sensor")
            .json()
            .await
            .expect("a JSON answer")
    }

    /// Waits until `sensor_data` holds `n` rows (for at most `within`), then a little longer,
    /// and returns the count: more than `n` would be duplicates, fewer a loss.
    pub async fn settle(&self, n: i64, within: Duration) -> i64 {
        let deadline = tokio::time::Instant::now() + within;
        while self.db.count().await < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        self.db.count().await
    }
}
