//! Reading the dead-letter queue without consuming it.
//!
//! A scan receives every message it can (ten per call, with a visibility timeout that hides
//! them while the command works), until a receive returns nothing new. The command then
//! deletes what it consumed, and [`Scan::release`] makes every other scanned message visible
//! again at once. Every command that reads dead letters goes through [`scan`].

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use aws_sdk_sqs::types::{ChangeMessageVisibilityBatchRequestEntry, MessageSystemAttributeName};
use aws_sdk_sqs::Client;
use indicatif::ProgressBar;

use crate::message::{DeadMessage, Filter};
use crate::sqs::{self, MAX_BATCH_ENTRIES};

/// How long scanned messages stay hidden: long enough for the scan and a command's work on
/// them; they are made visible again as soon as the command is done.
pub const HOLD: Duration = Duration::from_secs(60);
/// SQS's longest visibility timeout.
const MAX_HOLD: Duration = Duration::from_secs(12 * 60 * 60);

/// Scanned messages, hidden from other consumers until [`Scan::release`].
pub struct Scan {
    client: Client,
    url: String,
    /// The messages that passed the filter, oldest failure first.
    pub matched: Vec<DeadMessage>,
    /// How many scanned messages the filter left out.
    pub skipped: usize,
    /// Message id → the latest receipt handle, for every message still hidden.
    held: HashMap<String, String>,
}

/// Receives the messages on `url` that `filter` selects, stopping early once `limit` are
/// found. On error, whatever was received is released before returning.
pub async fn scan(
    client: &Client,
    url: &str,
    filter: &Filter,
    limit: Option<usize>,
    progress: &ProgressBar,
) -> Result<Scan> {
    let mut scan = Scan {
        client: client.clone(),
        url: url.to_owned(),
        matched: Vec::new(),
        skipped: 0,
        held: HashMap::new(),
    };
    match scan.fill(filter, limit, progress).await {
        Ok(()) => {
            scan.matched.sort_by_key(|m| m.failed_at());
            Ok(scan)
        }
        Err(e) => {
            if let Err(release) = scan.release().await {
                eprintln!("warning: {release:#}");
            }
            Err(e)
        }
    }
}

impl Scan {
    async fn fill(
        &mut self,
        filter: &Filter,
        limit: Option<usize>,
        progress: &ProgressBar,
    ) -> Result<()> {
        let mut seen = HashSet::new();
        loop {
            if limit.is_some_and(|l| self.matched.len() >= l) {
                return Ok(());
            }
            let out = self
                .client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(MAX_BATCH_ENTRIES as i32)
                .visibility_timeout(HOLD.as_secs() as i32)
                // Long polling asks every SQS server, so an empty answer means empty; it
                // returns as soon as there is a message, and waits 1 s only at the end.
                .wait_time_seconds(1)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(|e| anyhow!(sqs::describe(e)))
                .with_context(|| format!("receiving from {}", self.url))?;
            let messages = out.messages.unwrap_or_default();
            let mut new = 0;
            for m in &messages {
                let (Some(dead), Some(receipt)) = (DeadMessage::from_sqs(m), m.receipt_handle())
                else {
                    continue;
                };
                // A message seen before came back because the hold ran out: keep its
                // newest receipt, count it once.
                self.held
                    .insert(dead.message_id.clone(), receipt.to_owned());
                if !seen.insert(dead.message_id.clone()) {
                    continue;
                }
                new += 1;
                progress.inc(1);
                if !filter.matches(&dead) {
                    self.skipped += 1;
                } else if limit.is_none_or(|l| self.matched.len() < l) {
                    self.matched.push(dead);
                }
            }
            if new == 0 {
                return Ok(());
            }
        }
    }

    /// The receipt handle of a message still hidden.
    pub fn receipt(&self, message_id: &str) -> Option<&str> {
        self.held.get(message_id).map(String::as_str)
    }

    /// Marks a message as deleted: it is no longer released.
    pub fn consumed(&mut self, message_id: &str) {
        self.held.remove(message_id);
    }

    /// Keeps these messages hidden for `hold` from now (up to SQS's 12 hours).
    pub async fn extend(&self, message_ids: &[&str], hold: Duration) -> Result<()> {
        self.change_visibility(message_ids, hold.min(MAX_HOLD))
            .await
    }

    /// Makes every message still held visible again.
    pub async fn release(self) -> Result<()> {
        let ids: Vec<&str> = self.held.keys().map(String::as_str).collect();
        self.change_visibility(&ids, Duration::ZERO).await
    }

    async fn change_visibility(&self, message_ids: &[&str], timeout: Duration) -> Result<()> {
        let mut failed = 0;
        for chunk in message_ids.chunks(MAX_BATCH_ENTRIES) {
            let entries = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, id)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(self.receipt(id)?)
                        .visibility_timeout(timeout.as_secs() as i32)
                        .build()
                        .ok()
                })
                .collect::<Vec<_>>();
            if entries.is_empty() {
                continue;
            }
            let out = self
                .client
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| anyhow!(sqs::describe(e)))
                .with_context(|| {
                    format!(
                        "changing the visibility of scanned messages on {}; they become visible again by themselves within {} s",
                        self.url,
                        HOLD.as_secs()
                    )
                })?;
            failed += out.failed().len();
        }
        if failed > 0 {
            // Their receipts ran out: the messages are visible again already.
            eprintln!("warning: {failed} scanned messages could not be made visible again; they reappear when their visibility timeout ends");
        }
        Ok(())
    }
}
