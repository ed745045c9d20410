//! The SQS calls the commands share: queue attributes, batched send and delete.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;

/// SQS's limit on one SendMessageBatch call's total size (and the classic message size).
const MAX_BATCH_BYTES: usize = 262_144;
/// Entries in one batch call.
pub const MAX_BATCH_ENTRIES: usize = 10;

/// The endpoint the client talks to, for error messages.
pub fn endpoint_name(client: &Client) -> String {
    for var in ["AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL"] {
        if let Ok(url) = std::env::var(var) {
            if !url.is_empty() {
                return url;
            }
        }
    }
    match client.config().region() {
        Some(r) => format!("https://sqs.{r}.amazonaws.com"),
        None => "AWS SQS (no region set)".to_owned(),
    }
}

/// An SQS error in a line: the service's code and message, or the HTTP status when the
/// endpoint answered without one, or the transport error.
pub fn describe<E>(e: SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let SdkError::ServiceError(_) = &e {
        let status = e.raw_response().map(|r| r.status().as_u16());
        match (e.code(), e.message(), status) {
            (Some(c), Some(m), _) => return format!("{c}: {m}"),
            (Some(c), None, _) => return c.to_owned(),
            (None, Some(m), _) => return m.to_owned(),
            (None, None, Some(s)) => return format!("HTTP {s}, with no SQS error in the answer"),
            (None, None, None) => {}
        }
    }
    DisplayErrorContext(e).to_string()
}

/// Some attributes of a queue.
pub async fn queue_attributes(
    client: &Client,
    url: &str,
    names: &[QueueAttributeName],
) -> Result<HashMap<QueueAttributeName, String>> {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .set_attribute_names(Some(names.to_vec()))
        .send()
        .await
        .map_err(|e| anyhow!(describe(e)))
        .with_context(|| format!("reading the attributes of {url}"))?;
    Ok(out.attributes.unwrap_or_default())
}

/// Visible, in-flight and delayed message counts.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Depth {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

pub async fn depth(client: &Client, url: &str) -> Result<Depth> {
    let attrs = queue_attributes(
        client,
        url,
        &[
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            QueueAttributeName::ApproximateNumberOfMessagesDelayed,
        ],
    )
    .await?;
    let get = |name: QueueAttributeName| -> u64 {
        attrs
            .get(&name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    };
    Ok(Depth {
        visible: get(QueueAttributeName::ApproximateNumberOfMessages),
        in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        delayed: get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
    })
}

pub async fn queue_arn(client: &Client, url: &str) -> Result<String> {
    queue_attributes(client, url, &[QueueAttributeName::QueueArn])
        .await?
        .remove(&QueueAttributeName::QueueArn)
        .with_context(|| format!("{url} did not report its QueueArn"))
}

/// The dead-letter queue named by the main queue's redrive policy.
pub async fn dlq_of(client: &Client, queue_url: &str) -> Result<String> {
    let policy = queue_attributes(client, queue_url, &[QueueAttributeName::RedrivePolicy])
        .await?
        .remove(&QueueAttributeName::RedrivePolicy)
        .with_context(|| {
            format!("{queue_url} has no redrive policy; give the dead-letter queue with --dlq-url or DLQ_URL")
        })?;
    let arn = serde_json::from_str::<serde_json::Value>(&policy)
        .ok()
        .and_then(|p| p.get("deadLetterTargetArn")?.as_str().map(str::to_owned))
        .with_context(|| {
            format!("the redrive policy of {queue_url} names no deadLetterTargetArn: {policy}")
        })?;
    // arn:aws:sqs:region:account:name
    let fields: Vec<&str> = arn.split(':').collect();
    let (Some(account), Some(name)) = (fields.get(4), fields.get(5)) else {
        bail!("'{arn}' is not an SQS queue ARN");
    };
    client
        .get_queue_url()
        .queue_name(*name)
        .queue_owner_aws_account_id(*account)
        .send()
        .await
        .map_err(|e| anyhow!(describe(e)))
        .with_context(|| format!("looking up the URL of the dead-letter queue {arn}"))?
        .queue_url
        .with_context(|| format!("no URL for the dead-letter queue {arn}"))
}

/// A message to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub body: String,
    /// String message attributes.
    pub attributes: BTreeMap<String, String>,
}

impl Outgoing {
    fn size(&self) -> usize {
        self.body.len()
            + self
                .attributes
                .iter()
                .map(|(k, v)| k.len() + v.len() + "String".len())
                .sum::<usize>()
    }
}

/// Splits messages into batch calls: at most ten entries and 256 KiB each.
pub fn batches(messages: &[Outgoing]) -> Vec<&[Outgoing]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, m) in messages.iter().enumerate() {
        let n = i - start;
        if n > 0 && (n == MAX_BATCH_ENTRIES || size + m.size() > MAX_BATCH_BYTES) {
            out.push(&messages[start..i]);
            (start, size) = (i, 0);
        }
        size += m.size();
    }
    if start < messages.len() {
        out.push(&messages[start..]);
    }
    out
}

/// Sends up to ten messages in one SendMessageBatch call, retrying entries that fail for
/// the server's reasons; fails when an entry is refused or keeps failing.
pub async fn send_batch(client: &Client, url: &str, messages: &[Outgoing]) -> Result<()> {
    let mut pending: Vec<usize> = (0..messages.len()).collect();
    let mut attempt = 0;
    while !pending.is_empty() {
        attempt += 1;
        let entries = pending
            .iter()
            .map(|&i| {
                let m = &messages[i];
                let mut attrs = HashMap::new();
                for (k, v) in &m.attributes {
                    let value = MessageAttributeValue::builder()
                        .data_type("String")
                        .string_value(v)
                        .build()
                        .with_context(|| format!("message attribute {k}"))?;
                    attrs.insert(k.clone(), value);
                }
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&m.body)
                    .set_message_attributes((!attrs.is_empty()).then_some(attrs))
                    .build()
                    .context("building a SendMessageBatch entry")
            })
            .collect::<Result<Vec<_>>>()?;
        let out = match client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if attempt < 4 => {
                eprintln!(
                    "warning: sending to {url} failed, retrying: {}",
                    describe(e)
                );
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                continue;
            }
            Err(e) => {
                return Err(anyhow!(describe(e)))
                    .with_context(|| format!("sending messages to {url}"))
            }
        };
        let mut left = Vec::new();
        for f in out.failed() {
            let why = format!("{}: {}", f.code(), f.message().unwrap_or("no message"));
            if f.sender_fault() || attempt >= 4 {
                bail!("{url} refused a message: {why}");
            }
            left.extend(f.id().parse::<usize>().ok());
        }
        pending = left;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
        }
    }
    Ok(())
}

/// Deletes up to ten messages by receipt handle; returns how many SQS reports deleted.
pub async fn delete_batch(client: &Client, url: &str, receipts: &[&str]) -> Result<usize> {
    let entries = receipts
        .iter()
        .enumerate()
        .map(|(i, r)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(*r)
                .build()
                .context("building a DeleteMessageBatch entry")
        })
        .collect::<Result<Vec<_>>>()?;
    let out = client
        .delete_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|e| anyhow!(describe(e)))
        .with_context(|| format!("deleting messages from {url}"))?;
    for f in out.failed() {
        eprintln!(
            "warning: {url} did not delete a message: {}: {}",
            f.code(),
            f.message().unwrap_or("no message")
        );
    }
    Ok(out.successful().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: usize) -> Outgoing {
        Outgoing {
            body: "x".repeat(n),
            attributes: BTreeMap::new(),
        }
    }

    #[test]
    fn batches_hold_ten_messages_and_256_kib_at_most() {
        let small: Vec<Outgoing> = (0..25).map(|_| msg(10)).collect();
        let sizes: Vec<usize> = batches(&small).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [10, 10, 5]);
        let big: Vec<Outgoing> = (0..5).map(|_| msg(100_000)).collect();
        let sizes: Vec<usize> = batches(&big).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        assert!(batches(&[]).is_empty());
    }
}
