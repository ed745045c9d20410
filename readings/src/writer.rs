//! The batch writer's handler: one SQS event in, the messages that failed out.
//!
//! Every message is decoded on its own; the good ones are written together in one
//! transaction (binary COPY). The response names exactly the messages that were not written
//! (Lambda's ReportBatchItemFailures), so SQS redelivers only those and one bad message never
//! holds back the rest.

use std::time::Instant;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};

use crate::envelope::{self, BatchPart};
use crate::store::Store;

/// Writes SQS events to the store.
#[derive(Clone)]
pub struct Writer {
    store: Store,
}

impl Writer {
    pub fn new(store: Store) -> Self {
        Writer { store }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Handles one event. Messages that cannot be decoded, and every decoded message when the
    /// write fails, are reported as failed.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let started = Instant::now();
        let total = event.records.len();
        let mut failed: Vec<String> = Vec::new();
        let mut decoded: Vec<(String, Vec<BatchPart>)> = Vec::with_capacity(total);

        for message in event.records {
            let Some(id) = message.message_id else {
                tracing::error!("SQS message without a message id; it cannot be reported");
                continue;
            };
            match envelope::decode(message.body.as_deref().unwrap_or("")) {
                Ok(env) => decoded.push((id, env.batches)),
                Err(e) => {
                    tracing::warn!(message_id = %id, error = %e, "undecodable message");
                    failed.push(id);
                }
            }
        }

        let parts: Vec<&BatchPart> = decoded.iter().flat_map(|(_, p)| p).collect();
        if !parts.is_empty() {
            match self.store.write(&parts).await {
                Ok(report) => tracing::info!(
                    messages = total,
                    failed = failed.len(),
                    rows = report.rows,
                    parts_written = report.parts_written,
                    parts_skipped = report.parts_skipped,
                    duration_ms = started.elapsed().as_millis() as u64,
                    "batch written"
                ),
                Err(e) => {
                    tracing::error!(
                        messages = total,
                        error = %e,
                        sqlstate = e.sqlstate().unwrap_or(""),
                        duration_ms = started.elapsed().as_millis() as u64,
                        "batch write failed; its messages will be redelivered"
                    );
                    failed.extend(decoded.into_iter().map(|(id, _)| id));
                }
            }
        } else if total > 0 {
            tracing::info!(
                messages = total,
                failed = failed.len(),
                "batch had nothing to write"
            );
        }

        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = failed
            .into_iter()
            .map(|id| {
                let mut f = BatchItemFailure::default();
                f.item_identifier = id;
                f
            })
            .collect();
        response
    }
}
