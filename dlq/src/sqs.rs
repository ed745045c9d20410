//! The SQS calls the commands share: queue attributes, batched send and delete.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, QueueAttributeName};
use aws_sdk_sqs::Client;

pub use readings::queue::{Outgoing, MAX_BATCH_ENTRIES};

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

/// A sender to `url`, sized to the queue's own MaximumMessageSize.
pub async fn sender(client: &Client, url: &str) -> Result<readings::queue::Sender> {
    readings::queue::Sender::connect(client.clone(), url, None)
        .await
        .with_context(|| format!("preparing to send to {url}"))
}

/// Sends messages, failing on the first that SQS does not take (after the sender's
/// retries).
pub async fn send(sender: &readings::queue::Sender, messages: &[Outgoing]) -> Result<()> {
    for result in sender.send_each(messages).await {
        result.with_context(|| format!("sending to {}", sender.queue_url()))?;
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
