//! The SQS side: building the client, and the one sender every SQS send goes through
//! (ingest's envelopes, the writer's dead letters, the `dlq` tool's replays and imports);
//! dead letters and their reason attributes in [`deadletter`].
//!
//! SQS limits a message to the queue's `MaximumMessageSize` (1,024 bytes to 1 MiB), counting
//! the body and, for each message attribute, its name, data type and value. A
//! SendMessageBatch call carries at most ten entries, and the sender keeps each call within
//! the same size in total. [`Outgoing::size`] counts as SQS does, so a message that cannot fit is
//! refused here with a reason instead of by SQS with a generic error.

pub mod deadletter;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::time::Duration;

use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;
use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::future::join_all;
use thiserror::Error;

use crate::config::QueueConfig;

/// Entries in one SendMessageBatch call.
pub const MAX_BATCH_ENTRIES: usize = 10;
/// The smallest `MaximumMessageSize` the pipeline works with: a message must hold a reading
/// of any valid size after [`ATTRIBUTE_RESERVE`].
pub const MIN_MESSAGE_BYTES: usize = 4096;
/// Bytes of every message that ingest leaves free for the attributes the message may gain
/// later: a dead letter's reason attributes ([`deadletter`], at most about 1,300 bytes), or
/// a replay's. A message packed to the queue's size still reaches the dead-letter queue
/// with its reason.
pub const ATTRIBUTE_RESERVE: usize = 2048;

#[derive(Debug, Clone, Error)]
pub enum QueueError {
    #[error("the queue is unavailable: {0}")]
    Unavailable(String),
    #[error("the queue rejected a message: {0}")]
    Rejected(String),
    #[error("the queue's settings cannot be used: {0}")]
    Config(String),
}

/// Builds an SQS client from the AWS SDK's standard settings (region, credentials, and
/// `AWS_ENDPOINT_URL_SQS` / `AWS_ENDPOINT_URL` for a local endpoint such as moto).
pub async fn client() -> Client {
    client_for(None).await
}

/// [`client`], of the SQS API at `endpoint` when given (a second local stand-in, say).
pub async fn client_for(endpoint: Option<&str>) -> Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(25))
        .build();
    let mut loader = aws_config::from_env().timeout_config(timeouts);
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    Client::new(&loader.load().await)
}

/// A message to send: its body and its String message attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outgoing {
    pub body: String,
    pub attributes: BTreeMap<String, String>,
}

/// The data type of every attribute the pipeline sets.
const STRING: &str = "String";

impl Outgoing {
    pub fn new(body: impl Into<String>) -> Self {
        Outgoing {
            body: body.into(),
            attributes: BTreeMap::new(),
        }
    }

    /// The message's size as SQS counts it: the body, plus each attribute's name, data type
    /// and value.
    pub fn size(&self) -> usize {
        self.body.len()
            + self
                .attributes
                .iter()
                .map(|(k, v)| k.len() + STRING.len() + v.len())
                .sum::<usize>()
    }
}

/// Splits messages into SendMessageBatch calls of at most [`MAX_BATCH_ENTRIES`] entries and
/// `max_bytes` in total, in order. A message larger than `max_bytes` gets a call of its
/// own (SQS refuses it; [`Sender`] refuses it before sending).
pub fn batches(messages: &[Outgoing], max_bytes: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, m) in messages.iter().enumerate() {
        let n = i - start;
        if n > 0 && (n == MAX_BATCH_ENTRIES || size + m.size() > max_bytes) {
            out.push(start..i);
            (start, size) = (i, 0);
        }
        size += m.size();
    }
    if start < messages.len() {
        out.push(start..messages.len());
    }
    out
}

/// Sends messages to one queue in SendMessageBatch calls, retrying the entries that fail
/// for SQS's own reasons with jittered backoff.
#[derive(Clone)]
pub struct Sender {
    client: Client,
    queue_url: String,
    max_message_bytes: usize,
    retry: ExponentialBuilder,
}

impl Sender {
    /// Connects to the configured queue. The maximum message size comes from the
    /// configuration (`SQS_MAX_MESSAGE_BYTES`), else from the queue's `MaximumMessageSize`
    /// attribute. When neither gives it, this fails: a guessed size could be larger than
    /// the queue takes.
    pub async fn new(client: Client, config: &QueueConfig) -> Result<Self, QueueError> {
        Sender::connect(client, &config.queue_url, config.max_message_bytes).await
    }

    /// A sender for `queue_url`, of messages up to `max_message_bytes`, or up to the
    /// queue's own `MaximumMessageSize` when that is `None` (asked with a few retries).
    pub async fn connect(
        client: Client,
        queue_url: &str,
        max_message_bytes: Option<usize>,
    ) -> Result<Self, QueueError> {
        let max = match max_message_bytes {
            Some(m) => m,
            None => queue_max_message_bytes(&client, queue_url).await?,
        };
        Sender::sized(client, queue_url, max)
    }

    /// A sender for `queue_url`, which takes messages of up to `max` bytes.
    pub fn sized(client: Client, queue_url: &str, max: usize) -> Result<Self, QueueError> {
        if max < MIN_MESSAGE_BYTES {
            return Err(QueueError::Config(format!(
                "{queue_url} takes messages of at most {max} bytes; the pipeline needs at least \
                 {MIN_MESSAGE_BYTES} (set the queue's MaximumMessageSize, or SQS_MAX_MESSAGE_BYTES)"
            )));
        }
        Ok(Sender {
            client,
            queue_url: queue_url.to_owned(),
            max_message_bytes: max,
            retry: ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(50))
                .with_max_delay(Duration::from_secs(1))
                .with_max_times(4)
                .with_jitter(),
        })
    }

    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// The size message bodies are packed to: the queue's maximum less
    /// [`ATTRIBUTE_RESERVE`].
    pub fn packing_bytes(&self) -> usize {
        self.max_message_bytes.saturating_sub(ATTRIBUTE_RESERVE)
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Sends every body, or fails. Calls run concurrently.
    pub async fn send_all(&self, bodies: Vec<String>) -> Result<(), QueueError> {
        let messages: Vec<Outgoing> = bodies.into_iter().map(Outgoing::new).collect();
        self.send_each(&messages).await.into_iter().collect()
    }

    /// Sends each message, and says for each whether it was sent. A message larger than the
    /// queue takes is refused without being sent. Calls run concurrently.
    pub async fn send_each(&self, messages: &[Outgoing]) -> Vec<Result<(), QueueError>> {
        let mut results: Vec<Result<(), QueueError>> = vec![Ok(()); messages.len()];
        let mut sendable = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            if m.size() > self.max_message_bytes {
                results[i] = Err(QueueError::Rejected(format!(
                    "a message of {} bytes (body and attributes) is larger than the {} bytes {} takes",
                    m.size(),
                    self.max_message_bytes,
                    self.queue_url
                )));
            } else {
                sendable.push(i);
            }
        }
        let chosen: Vec<Outgoing> = sendable.iter().map(|&i| messages[i].clone()).collect();
        let calls = batches(&chosen, self.max_message_bytes);
        let outcomes = join_all(calls.iter().map(|r| self.send_batch(&chosen[r.clone()]))).await;
        for (range, outcome) in calls.into_iter().zip(outcomes) {
            for (j, result) in range.zip(outcome) {
                results[sendable[j]] = result;
            }
        }
        results
    }

    /// One call's messages (at most ten), retried while entries fail for SQS's reasons.
    async fn send_batch(&self, messages: &[Outgoing]) -> Vec<Result<(), QueueError>> {
        let mut results: Vec<Option<Result<(), QueueError>>> = vec![None; messages.len()];
        let mut pending: Vec<usize> = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            match entry(i, m) {
                Ok(_) => pending.push(i),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let mut delays = self.retry.build();
        while !pending.is_empty() {
            let entries: Vec<SendMessageBatchRequestEntry> = pending
                .iter()
                .filter_map(|&i| entry(i, &messages[i]).ok())
                .collect();
            let error = match self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(out) => {
                    let mut left = Vec::new();
                    for failed in out.failed() {
                        let Some(i) = failed
                            .id()
                            .parse::<usize>()
                            .ok()
                            .filter(|i| pending.contains(i))
                        else {
                            continue;
                        };
                        let why = format!(
                            "{}: {}",
                            failed.code(),
                            failed.message().unwrap_or("no message")
                        );
                        if failed.sender_fault() {
                            results[i] = Some(Err(QueueError::Rejected(why)));
                        } else {
                            left.push((i, why));
                        }
                    }
                    for &i in &pending {
                        if results[i].is_none() && !left.iter().any(|(j, _)| *j == i) {
                            results[i] = Some(Ok(()));
                        }
                    }
                    pending = left.iter().map(|(i, _)| *i).collect();
                    left.first()
                        .map(|(_, why)| format!("{} of the entries failed: {why}", left.len()))
                }
                Err(e) => Some(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()),
            };
            let Some(error) = error else { break };
            match delays.next() {
                Some(delay) => tokio::time::sleep(delay).await,
                None => {
                    for &i in &pending {
                        results[i] = Some(Err(QueueError::Unavailable(error.clone())));
                    }
                    break;
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(QueueError::Unavailable("not sent".into()))))
            .collect()
    }
}

/// The SendMessageBatch entry of message `i`.
fn entry(i: usize, m: &Outgoing) -> Result<SendMessageBatchRequestEntry, QueueError> {
    let mut attributes = HashMap::with_capacity(m.attributes.len());
    for (name, value) in &m.attributes {
        let value = MessageAttributeValue::builder()
            .data_type(STRING)
            .string_value(value)
            .build()
            .map_err(|e| QueueError::Rejected(format!("message attribute {name}: {e}")))?;
        attributes.insert(name.clone(), value);
    }
    SendMessageBatchRequestEntry::builder()
        .id(i.to_string())
        .message_body(&m.body)
        .set_message_attributes((!attributes.is_empty()).then_some(attributes))
        .build()
        .map_err(|e| QueueError::Rejected(format!("building a SendMessageBatch entry: {e}")))
}

/// The queue's `MaximumMessageSize`, asked up to four times.
async fn queue_max_message_bytes(client: &Client, queue_url: &str) -> Result<usize, QueueError> {
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_times(3)
        .with_jitter()
        .build();
    loop {
        let answer = client
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::MaximumMessageSize)
            .send()
            .await;
        let error = match answer {
            Ok(out) => {
                let value = out
                    .attributes()
                    .and_then(|a| a.get(&QueueAttributeName::MaximumMessageSize));
                return match value.map(|v| v.parse::<usize>()) {
                    Some(Ok(n)) => Ok(n),
                    Some(Err(e)) => Err(QueueError::Config(format!(
                        "{queue_url} reports MaximumMessageSize {value:?}: {e}"
                    ))),
                    None => Err(QueueError::Config(format!(
                        "{queue_url} does not report its MaximumMessageSize; set SQS_MAX_MESSAGE_BYTES"
                    ))),
                };
            }
            Err(e) => aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
        };
        match delays.next() {
            Some(delay) => tokio::time::sleep(delay).await,
            None => {
                return Err(QueueError::Unavailable(format!(
                    "reading the MaximumMessageSize of {queue_url}: {error} (set SQS_MAX_MESSAGE_BYTES to start without asking)"
                )))
            }
        }
    }
}

/// Text that SQS and its stand-ins carry unchanged in a message attribute: characters SQS
/// refuses (controls other than tab and line breaks, U+FFFE, U+FFFF) and characters beyond
/// the Basic Multilingual Plane (which some stand-ins refuse) are written `\u{…}`.
pub fn attribute_text(s: &str) -> String {
    let safe =
        |c: char| matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}');
    if s.chars().all(safe) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if safe(c) {
            out.push(c);
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: usize) -> Outgoing {
        Outgoing::new("x".repeat(n))
    }

    #[test]
    fn batches_hold_ten_messages_and_the_size_limit_at_most() {
        let small: Vec<Outgoing> = (0..25).map(|_| msg(10)).collect();
        let sizes: Vec<usize> = batches(&small, 262_144).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [10, 10, 5]);
        let big: Vec<Outgoing> = (0..5).map(|_| msg(100_000)).collect();
        let sizes: Vec<usize> = batches(&big, 262_144).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        let sizes: Vec<usize> = batches(&big, 1_048_576).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [5]);
        assert!(batches(&[], 262_144).is_empty());
    }

    #[test]
    fn attributes_count_towards_the_size() {
        let mut m = msg(100);
        m.attributes.insert("failure_reason".into(), "r".repeat(50));
        assert_eq!(m.size(), 100 + "failure_reason".len() + "String".len() + 50);
        let with: Vec<Outgoing> = (0..3).map(|_| m.clone()).collect();
        let sizes: Vec<usize> = batches(&with, 2 * m.size())
            .iter()
            .map(|b| b.len())
            .collect();
        assert_eq!(sizes, [2, 1]);
    }

    #[test]
    fn attribute_text_escapes_what_a_queue_may_refuse() {
        assert_eq!(attribute_text("plain ü 冷"), "plain ü 冷");
        assert_eq!(
            attribute_text("🌡 \u{FFFF}\u{1}"),
            "\\u{1f321} \\u{ffff}\\u{1}"
        );
    }
}
