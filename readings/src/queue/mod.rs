//! The SQS side: building the client, and sending packed message bodies; dead letters and
//! their reason attributes in [`deadletter`].

pub mod deadletter;

use std::time::Duration;

use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;
use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::future::try_join_all;
use thiserror::Error;

use crate::config::QueueConfig;

/// SQS's classic maximum message size, used when the queue does not say.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 262_144;
/// Entries in one SendMessageBatch call.
const MAX_BATCH_ENTRIES: usize = 10;

#[derive(Debug, Clone, Error)]
pub enum QueueError {
    #[error("the queue is unavailable: {0}")]
    Unavailable(String),
    #[error("the queue rejected a message: {0}")]
    Rejected(String),
}

/// Builds an SQS client from the AWS SDK's standard settings (region, credentials, and
/// `AWS_ENDPOINT_URL_SQS` / `AWS_ENDPOINT_URL` for a local endpoint such as moto).
pub async fn client() -> Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(25))
        .build();
    let shared = aws_config::from_env().timeout_config(timeouts).load().await;
    Client::new(&shared)
}

/// Sends message bodies to one queue, packing them into SendMessageBatch calls and retrying
/// the entries that fail.
#[derive(Clone)]
pub struct Sender {
    client: Client,
    queue_url: String,
    max_message_bytes: usize,
    retry: ExponentialBuilder,
}

impl Sender {
    /// Connects to the configured queue. The maximum message size comes from the
    /// configuration, else from the queue's `MaximumMessageSize` attribute, else
    /// [`DEFAULT_MAX_MESSAGE_BYTES`].
    pub async fn new(client: Client, config: &QueueConfig) -> Self {
        let max_message_bytes = match config.max_message_bytes {
            Some(m) => m,
            None => queue_max_message_bytes(&client, &config.queue_url)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, default = DEFAULT_MAX_MESSAGE_BYTES,
                        "could not read the queue's MaximumMessageSize; using the default");
                    DEFAULT_MAX_MESSAGE_BYTES
                }),
        };
        Sender {
            client,
            queue_url: config.queue_url.clone(),
            max_message_bytes,
            retry: ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(50))
                .with_max_delay(Duration::from_secs(1))
                .with_max_times(4)
                .with_jitter(),
        }
    }

    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Sends every body, or fails. Calls carry at most ten entries and at most
    /// `max_message_bytes` in total, as SQS requires; calls run concurrently.
    pub async fn send_all(&self, bodies: Vec<String>) -> Result<(), QueueError> {
        let mut calls: Vec<Vec<String>> = Vec::new();
        let mut size = 0;
        for body in bodies {
            match calls.last_mut() {
                Some(call)
                    if call.len() < MAX_BATCH_ENTRIES
                        && size + body.len() <= self.max_message_bytes =>
                {
                    size += body.len();
                    call.push(body);
                }
                _ => {
                    size = body.len();
                    calls.push(vec![body]);
                }
            }
        }
        try_join_all(calls.into_iter().map(|call| self.send_batch(call))).await?;
        Ok(())
    }

    async fn send_batch(&self, bodies: Vec<String>) -> Result<(), QueueError> {
        let mut pending: Vec<(String, String)> = bodies
            .into_iter()
            .enumerate()
            .map(|(i, b)| (i.to_string(), b))
            .collect();
        let mut delays = self.retry.build();
        loop {
            let last_error = match self.try_send(&pending).await {
                Ok(left) if left.is_empty() => return Ok(()),
                Ok(left) => {
                    let error = format!("{} of {} entries failed", left.len(), pending.len());
                    pending = left;
                    error
                }
                Err(Fatal(e)) => return Err(e),
                Err(Transient(e)) => e,
            };
            match delays.next() {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err(QueueError::Unavailable(last_error)),
            }
        }
    }

    async fn try_send(
        &self,
        entries: &[(String, String)],
    ) -> Result<Vec<(String, String)>, Failure> {
        let request_entries = entries
            .iter()
            .map(|(id, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(id)
                    .message_body(body)
                    .build()
                    .map_err(|e| Fatal(QueueError::Rejected(e.to_string())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(request_entries))
            .send()
            .await
            .map_err(|e| Transient(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
        let mut left = Vec::new();
        for failed in out.failed() {
            if failed.sender_fault() {
                return Err(Fatal(QueueError::Rejected(format!(
                    "{}: {}",
                    failed.code(),
                    failed.message().unwrap_or("no message")
                ))));
            }
            if let Some(e) = entries.iter().find(|(id, _)| id == failed.id()) {
                left.push(e.clone());
            }
        }
        Ok(left)
    }
}

enum Failure {
    Transient(String),
    Fatal(QueueError),
}
use Failure::{Fatal, Transient};

async fn queue_max_message_bytes(client: &Client, queue_url: &str) -> Result<usize, String> {
    let out = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::MaximumMessageSize)
        .send()
        .await
        .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())?;
    out.attributes()
        .and_then(|a| a.get(&QueueAttributeName::MaximumMessageSize))
        .ok_or_else(|| "attribute missing".to_owned())?
        .parse()
        .map_err(|e: std::num::ParseIntError| e.to_string())
}
