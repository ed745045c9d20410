//! Test queues: a main queue and its dead-letter queue per test, on the SQS endpoint that
//! `scripts/test` starts.

use std::collections::HashMap;

use aws_sdk_sqs::types::QueueAttributeName;
use aws_sdk_sqs::Client;

use super::suffix;
use crate::config::QueueConfig;
use crate::model::envelope::decode;
use crate::queue;

/// The SQS stand-ins `scripts/test` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqsStandIn {
    Moto,
    Fauxqs,
}

/// A main queue and its dead-letter queue (redrive after 5 receives), named for one test.
pub struct TestQueue {
    pub client: Client,
    pub config: QueueConfig,
    pub dlq_url: String,
    /// The DLQ's `MaximumMessageSize`, as the endpoint reports it.
    pub dlq_max_bytes: usize,
}

impl TestQueue {
    pub async fn new() -> TestQueue {
        if std::env::var_os("AWS_ENDPOINT_URL_SQS").is_none() {
            panic!("AWS_ENDPOINT_URL_SQS is not set: run the tests with scripts/test, which starts PostgreSQL and moto");
        }
        TestQueue::on(queue::client().await).await
    }

    /// A queue pair on the SQS stand-in `stand_in` names: [`SqsStandIn::Moto`] (strict,
    /// `AWS_ENDPOINT_URL_SQS`) or [`SqsStandIn::Fauxqs`] (`FAUXQS_ENDPOINT_URL`), both
    /// started by `scripts/test`.
    pub async fn at(stand_in: SqsStandIn) -> TestQueue {
        match stand_in {
            SqsStandIn::Moto => TestQueue::new().await,
            SqsStandIn::Fauxqs => {
                let url = std::env::var("FAUXQS_ENDPOINT_URL").unwrap_or_else(|_| {
                    panic!("FAUXQS_ENDPOINT_URL is not set: run the tests with scripts/test, which starts fauxqs")
                });
                TestQueue::on(queue::client_for(Some(&url)).await).await
            }
        }
    }

    /// A queue pair through `client`.
    pub async fn on(client: Client) -> TestQueue {
        let name = format!("t-{}", suffix());
        let dlq_url = client
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .send()
            .await
            .expect("create dlq")
            .queue_url
            .expect("dlq url");
        let mut dlq_attributes = client
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .attribute_names(QueueAttributeName::MaximumMessageSize)
            .send()
            .await
            .expect("dlq attributes")
            .attributes
            .unwrap_or_default();
        let dlq_arn = dlq_attributes
            .remove(&QueueAttributeName::QueueArn)
            .expect("dlq arn");
        let dlq_max_bytes = dlq_attributes
            .remove(&QueueAttributeName::MaximumMessageSize)
            .and_then(|m| m.parse().ok())
            .expect("the DLQ's MaximumMessageSize");
        let queue_url = client
            .create_queue()
            .queue_name(&name)
            .set_attributes(Some(HashMap::from([
                (
                    QueueAttributeName::RedrivePolicy,
                    format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"5"}}"#),
                ),
                (QueueAttributeName::VisibilityTimeout, "30".into()),
            ])))
            .send()
            .await
            .expect("create queue")
            .queue_url
            .expect("queue url");
        TestQueue {
            client,
            config: QueueConfig {
                queue_url,
                max_message_bytes: None,
            },
            dlq_url,
            dlq_max_bytes,
        }
    }

    pub fn url(&self) -> &str {
        &self.config.queue_url
    }

    /// A sender to the dead-letter queue.
    pub fn dlq_sender(&self) -> queue::Sender {
        queue::Sender::sized(self.client.clone(), &self.dlq_url, self.dlq_max_bytes)
            .expect("a sender for the test DLQ")
    }

    /// Receives (and deletes) every message now visible on `url`, with its attributes,
    /// waiting briefly for stragglers.
    pub async fn drain(&self, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
        let mut all = Vec::new();
        loop {
            let out = self
                .client
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .message_attribute_names("All")
                .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("receive");
            let msgs = out.messages.unwrap_or_default();
            if msgs.is_empty() {
                return all;
            }
            for m in &msgs {
                self.client
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .expect("delete");
            }
            all.extend(msgs);
        }
    }

    /// Number of readings in the messages now on the main queue (consumes them).
    pub async fn drain_readings(&self) -> usize {
        let url = self.config.queue_url.clone();
        self.drain(&url)
            .await
            .iter()
            .map(|m| {
                decode(m.body().unwrap_or_default())
                    .expect("envelope")
                    .batches
                    .iter()
                    .map(|b| b.readings.len())
                    .sum::<usize>()
            })
            .sum()
    }
}
