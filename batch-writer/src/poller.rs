//! The local host of the writer: long-polls SQS, hands batches to the same handler Lambda
//! calls, and deletes the messages the handler did not report as failed, as Lambda's event
//! source mapping does. Failed messages are left to reappear after their visibility timeout.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use aws_sdk_sqs::Client;
use readings::config::PollerConfig;
use readings::writer::Writer;
use tokio::sync::watch;
use tokio::time::Instant;

/// Most messages one ReceiveMessage call returns.
const MAX_RECEIVE: usize = 10;

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    pub received: usize,
    pub failed: usize,
    pub deleted: usize,
    /// Time from the first message received to the end of gathering the batch.
    pub gather: Duration,
    /// Time in the handler (decode, COPY, commit).
    pub handle: Duration,
    /// Time deleting what succeeded.
    pub delete: Duration,
}

/// Where the writer's time went since the last report: logged every [`REPORT_EVERY`] by
/// [`Poller::run`], so an operator sees what limits it (SQS calls or the database).
#[derive(Debug, Default)]
struct Totals {
    rounds: u64,
    messages: u64,
    gather: Duration,
    handle: Duration,
    delete: Duration,
}

/// How often [`Poller::run`] logs where the time went.
const REPORT_EVERY: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Poller {
    client: Client,
    queue_url: String,
    config: PollerConfig,
    writer: Writer,
    totals: std::sync::Arc<std::sync::Mutex<Totals>>,
}

impl Poller {
    pub fn new(client: Client, queue_url: String, config: PollerConfig, writer: Writer) -> Self {
        Poller {
            client,
            queue_url,
            config,
            writer,
            totals: Default::default(),
        }
    }

    /// Logs the rounds since the last report and where their time went, then starts over.
    fn report(&self) {
        let t = std::mem::take(&mut *self.totals.lock().unwrap_or_else(|p| p.into_inner()));
        if t.rounds == 0 {
            return;
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0 / t.rounds as f64;
        tracing::info!(
            rounds = t.rounds,
            messages = t.messages,
            gather_ms_per_round = format!("{:.1}", ms(t.gather)),
            handle_ms_per_round = format!("{:.1}", ms(t.handle)),
            delete_ms_per_round = format!("{:.1}", ms(t.delete)),
            "writer rounds since the last report"
        );
    }

    /// Runs `pollers` receive-handle-delete loops until `shutdown` resolves; a batch being
    /// handled when it does is finished first.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut loops = tokio::task::JoinSet::new();
        for _ in 0..self.config.pollers {
            let poller = self.clone();
            let stop = stop_rx.clone();
            loops.spawn(async move { poller.poll_until(stop).await });
        }
        let reporter = {
            let poller = self.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(REPORT_EVERY);
                every.tick().await;
                loop {
                    every.tick().await;
                    poller.report();
                }
            })
        };
        // The writer's maintenance, as the EventBridge schedule invokes it under Lambda: at
        // start, then every `maintenance_every`, each run within a visibility timeout.
        let maintenance = {
            let poller = self.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(poller.config.maintenance_every);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    let deadline = std::time::Instant::now() + poller.config.visibility_timeout;
                    poller.writer.maintain(deadline).await;
                }
            })
        };
        shutdown.await;
        reporter.abort();
        maintenance.abort();
        // The receiver side may already be gone if every loop ended; nothing to stop then.
        let _ = stop_tx.send(true);
        while loops.join_next().await.is_some() {}
        Ok(())
    }

    async fn poll_until(&self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        while !*stop.borrow() {
            let round = tokio::select! {
                r = self.round() => r,
                _ = stop.changed() => return,
            };
            match round {
                Ok(_) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "polling failed");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {},
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One round: gather a batch (long poll, then up to the batching window), handle it,
    /// delete what succeeded.
    pub async fn round(&self) -> anyhow::Result<Round> {
        let (messages, gather) = self.gather().await?;
        // Received messages stay hidden for the visibility timeout: answer before it ends.
        let deadline = std::time::Instant::now()
            + self
                .config
                .visibility_timeout
                .saturating_sub(crate::DEADLINE_MARGIN);
        if messages.is_empty() {
            return Ok(Round::default());
        }
        let received = messages.len();
        let receipts: HashMap<String, String> = messages
            .iter()
            .filter_map(|m| Some((m.message_id.clone()?, m.receipt_handle.clone()?)))
            .collect();
        let mut event = SqsEvent::default();
        event.records = messages.into_iter().map(to_event_message).collect();

        let handle_started = Instant::now();
        let failed: HashSet<String> = match tokio::time::timeout(
            self.config.visibility_timeout,
            self.writer.handle(event, deadline),
        )
        .await
        {
            Ok(response) => response
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect(),
            Err(_) => {
                tracing::error!(
                    messages = received,
                    "handler passed the visibility timeout; the batch will be redelivered"
                );
                receipts.keys().cloned().collect()
            }
        };
        let done: Vec<&String> = receipts
            .iter()
            .filter(|(id, _)| !failed.contains(*id))
            .map(|(_, receipt)| receipt)
            .collect();
        let delete_started = Instant::now();
        let handle = delete_started - handle_started;
        let deleted = self.delete(&done).await;
        let round = Round {
            received,
            failed: failed.len(),
            deleted,
            gather,
            handle,
            delete: delete_started.elapsed(),
        };
        let mut totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        totals.rounds += 1;
        totals.messages += received as u64;
        totals.gather += round.gather;
        totals.handle += round.handle;
        totals.delete += round.delete;
        Ok(round)
    }

    /// A batch (long poll, then up to the batching window) and the time spent gathering it
    /// after the first messages arrived.
    async fn gather(&self) -> anyhow::Result<(Vec<Message>, Duration)> {
        let mut batch = self
            .receive(self.config.wait, self.config.batch_size)
            .await?;
        let first = Instant::now();
        if batch.is_empty() {
            return Ok((batch, Duration::ZERO));
        }
        let deadline = first + self.config.batch_window;
        while batch.len() < self.config.batch_size && Instant::now() < deadline {
            let more = self
                .receive(Duration::ZERO, self.config.batch_size - batch.len())
                .await?;
            if more.is_empty() {
                tokio::time::sleep_until(deadline.min(Instant::now() + Duration::from_millis(20)))
                    .await;
            }
            batch.extend(more);
        }
        Ok((batch, first.elapsed()))
    }

    async fn receive(&self, wait: Duration, want: usize) -> anyhow::Result<Vec<Message>> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(want.min(MAX_RECEIVE) as i32)
            .wait_time_seconds(wait.as_secs() as i32)
            .visibility_timeout(self.config.visibility_timeout.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "receiving from {}: {}",
                    self.queue_url,
                    aws_sdk_sqs::error::DisplayErrorContext(e)
                )
            })?;
        Ok(out.messages.unwrap_or_default())
    }

    /// Deletes by receipt handle, ten per call with the calls in flight together; returns
    /// how many were deleted. A message that could not be deleted comes back later and is
    /// skipped by its batch id.
    async fn delete(&self, receipts: &[&String]) -> usize {
        let calls = receipts.chunks(MAX_RECEIVE).map(|chunk| {
            let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r.as_str())
                        .build()
                        .ok()
                })
                .collect();
            self.client
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
        });
        let mut deleted = 0;
        for outcome in futures_util::future::join_all(calls).await {
            match outcome {
                Ok(out) => {
                    deleted += out.successful().len();
                    for f in out.failed() {
                        tracing::warn!(
                            code = f.code(),
                            "delete failed; the message will be redelivered and skipped"
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "delete failed; the messages will be redelivered and skipped")
                }
            }
        }
        deleted
    }
}

/// The SQS API's message in the shape Lambda's event source mapping delivers.
fn to_event_message(m: Message) -> SqsMessage {
    let mut e = SqsMessage::default();
    e.attributes = m
        .attributes
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.as_str().to_owned(), v))
        .collect();
    e.message_attributes = m
        .message_attributes
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let mut a = SqsMessageAttribute::default();
            a.data_type = Some(v.data_type);
            a.string_value = v.string_value;
            a.string_list_values = v.string_list_values.unwrap_or_default();
            (k, a)
        })
        .collect();
    e.message_id = m.message_id;
    e.receipt_handle = m.receipt_handle;
    e.body = m.body;
    e.md5_of_body = m.md5_of_body;
    e.md5_of_message_attributes = m.md5_of_message_attributes;
    e.event_source = Some("aws:sqs".into());
    e
}
