//! The batch writer's handler: one SQS event in, the messages that failed out.
//!
//! Every message is decoded and checked on its own. The good ones are written together in
//! one transaction (binary COPY, batch ids recorded alongside). On a transient database
//! error the transaction is retried with jittered backoff while the deadline allows, then
//! every message in it is reported failed so SQS redelivers them. On a data error the
//! batch is bisected to isolate the messages that cause it, and the rest is written.
//! Messages that can never be written (undecodable, unsupported version, invalid
//! readings, refused data, operator-fixable refusals) go to the dead-letter queue with
//! their reason and count as handled; if the DLQ cannot take them they are reported
//! failed instead, never dropped. The response names exactly the messages SQS must keep
//! (Lambda's ReportBatchItemFailures).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::Client;
use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use tracing::Instrument;

use crate::config::LifecycleConfig;
use crate::model::envelope::{self, BatchPart, EnvelopeError};
use crate::model::reading::check_location;
use crate::observability::{metrics, telemetry};
use crate::postgres::store::{ErrorKind, Store, WriteReport};
use crate::queue::deadletter::{self, DeadLetter, Failure, FailureClass};

/// How often one process prunes old batch records, at most.
const PRUNE_EVERY_SECS: i64 = 3600;

/// Where dead letters go.
#[derive(Clone)]
pub struct DeadLetterQueue {
    pub client: Client,
    pub url: String,
}

/// Writes SQS events to the store.
#[derive(Clone)]
pub struct Writer {
    store: Store,
    dlq: Option<DeadLetterQueue>,
    retention: Duration,
    lifecycle: LifecycleConfig,
    last_prune: Arc<AtomicI64>,
}

/// A decoded message.
struct Good {
    id: String,
    body: String,
    receive_count: Option<String>,
    parts: Vec<BatchPart>,
}

/// What happened to one event.
#[derive(Default)]
struct Tally {
    report: WriteReport,
    retry: Vec<String>,
    dead: Vec<DeadLetter>,
}

impl Writer {
    /// A writer without a dead-letter queue: poison messages are reported failed and left
    /// to the queue's redrive policy.
    pub fn new(store: Store) -> Self {
        Writer {
            store,
            dlq: None,
            retention: Duration::from_secs(21 * 86_400),
            lifecycle: LifecycleConfig::default(),
            last_prune: Arc::new(AtomicI64::new(0)),
        }
    }

    pub fn with_dead_letter_queue(mut self, dlq: DeadLetterQueue) -> Self {
        self.dlq = Some(dlq);
        self
    }

    /// How long batch records are kept (see `BATCH_RECORD_RETENTION_DAYS`).
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Data-lifecycle settings, applied by the maintenance that follows the first batch.
    pub fn with_lifecycle(mut self, lifecycle: LifecycleConfig) -> Self {
        self.lifecycle = lifecycle;
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Handles one event; retries of transient faults stop in time to answer by `deadline`.
    pub async fn handle(&self, event: SqsEvent, deadline: Instant) -> SqsBatchResponse {
        let started = Instant::now();
        let total = event.records.len();
        let mut tally = Tally::default();
        let mut good = Vec::with_capacity(total);
        for message in event.records {
            match check(message) {
                Ok(g) => good.push(g),
                Err(Some(letter)) => tally.dead.push(*letter),
                Err(None) => {}
            }
        }

        self.write(&good, deadline, &mut tally).await;

        let dead = tally.dead.len();
        for letter in &tally.dead {
            tracing::warn!(message_id = %letter.message_id, class = %letter.failure.class,
                reason = %letter.failure.loggable_reason(), "message dead-lettered");
        }
        let mut dlq_sent = 0;
        match &self.dlq {
            Some(dlq) if dead > 0 => {
                let unsent = deadletter::send(&dlq.client, &dlq.url, &tally.dead).await;
                dlq_sent = dead - unsent.len();
                tally.retry.extend(unsent);
            }
            _ => tally
                .retry
                .extend(tally.dead.iter().map(|l| l.message_id.clone())),
        }
        let report = &tally.report;
        tracing::info!(
            messages = total,
            rows = report.rows,
            parts_written = report.parts_written,
            parts_skipped = report.parts_skipped,
            rows_skipped = report.rows_skipped,
            dead_lettered = dead,
            dlq_sent,
            failed = tally.retry.len(),
            copy_ms = report.copy_time.as_secs_f64() * 1000.0,
            duration_ms = telemetry::duration_ms(started.elapsed()),
            "batch handled"
        );
        let mut m = metrics::Record::new();
        m.count(metrics::BATCH_SIZE, total as u64)
            .count(metrics::ROWS_WRITTEN, report.rows)
            .count(metrics::DUPLICATES_SKIPPED, report.rows_skipped)
            .count(metrics::DLQ_SENDS, dlq_sent as u64);
        // Every successful write runs one COPY, even of nothing.
        if report.parts_written + report.parts_skipped > 0 {
            m.duration(metrics::COPY_DURATION, report.copy_time);
        }
        m.emit();
        self.maybe_maintain();

        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = tally
            .retry
            .into_iter()
            .map(|id| {
                let mut f = BatchItemFailure::default();
                f.item_identifier = id;
                f
            })
            .collect();
        response
    }

    /// Writes the messages, bisecting around data errors.
    async fn write(&self, good: &[Good], deadline: Instant, tally: &mut Tally) {
        let mut pending: Vec<&[Good]> = vec![good];
        while let Some(group) = pending.pop() {
            if group.is_empty() {
                continue;
            }
            let parts: Vec<&BatchPart> = group.iter().flat_map(|g| &g.parts).collect();
            let Err(e) = self
                .write_retrying(&parts, deadline, &mut tally.report)
                .await
            else {
                continue;
            };
            match e.kind() {
                ErrorKind::Transient => {
                    tracing::error!(error = %e, messages = group.len(),
                        "write still failing at the deadline; the messages will be redelivered");
                    tally.retry.extend(group.iter().map(|g| g.id.clone()));
                }
                ErrorKind::Data if group.len() > 1 => {
                    let (a, b) = group.split_at(group.len() / 2);
                    pending.push(b);
                    pending.push(a);
                }
                kind => {
                    let class = if kind == ErrorKind::Data {
                        FailureClass::DataError
                    } else {
                        FailureClass::Operator
                    };
                    let failure = Failure {
                        class,
                        reason: e.to_string(),
                        sqlstate: e.sqlstate().map(str::to_owned),
                    };
                    tally
                        .dead
                        .extend(group.iter().map(|g| letter(g, failure.clone())));
                }
            }
        }
    }

    /// One transaction, retried on transient errors while the deadline allows another try.
    async fn write_retrying(
        &self,
        parts: &[&BatchPart],
        deadline: Instant,
        report: &mut WriteReport,
    ) -> Result<(), crate::postgres::store::StoreError> {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(usize::MAX)
            .with_jitter()
            .build();
        loop {
            let attempt_started = Instant::now();
            // A statement may not outlive the deadline either; a dropped write rolls back.
            let attempt = tokio::time::timeout_at(deadline.into(), self.store.write(parts)).await;
            let result = attempt.unwrap_or(Err(crate::postgres::store::StoreError::Busy(
                "the write was still running at the deadline",
            )));
            match result {
                Ok(r) => {
                    report.rows += r.rows;
                    report.parts_written += r.parts_written;
                    report.parts_skipped += r.parts_skipped;
                    report.rows_skipped += r.rows_skipped;
                    report.copy_time += r.copy_time;
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Transient => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    // Leave room for one more attempt as long as the last one took.
                    let needed = delay + attempt_started.elapsed().max(Duration::from_secs(1));
                    if Instant::now() + needed >= deadline {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "transient write failure; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// In the background, at most once an hour per process (and after the first batch):
    /// applies changed lifecycle settings, prunes old batch records and, on a plain table,
    /// deletes readings past their retention.
    fn maybe_maintain(&self) {
        let now = Utc::now().timestamp();
        let last = self.last_prune.load(Ordering::Relaxed);
        if now - last < PRUNE_EVERY_SECS
            || self
                .last_prune
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let store = self.store.clone();
        let retention = self.retention;
        let lifecycle = self.lifecycle.clone();
        // In the span of the batch that triggered it, so its logs name that invocation.
        let span = tracing::Span::current();
        let maintenance = async move {
            if let Err(e) = store.apply_lifecycle(&lifecycle).await {
                tracing::warn!(error = %e, "applying lifecycle settings failed");
            }
            match store.prune(retention).await {
                Ok(n) => tracing::info!(rows = n, "pruned old batch records"),
                Err(e) => tracing::warn!(error = %e, "pruning batch records failed"),
            }
            match store.delete_expired(&lifecycle).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "deleted readings past their retention"),
                Err(e) => tracing::warn!(error = %e, "deleting expired readings failed"),
            }
        };
        tokio::spawn(maintenance.instrument(span));
    }
}

fn letter(g: &Good, failure: Failure) -> DeadLetter {
    DeadLetter {
        message_id: g.id.clone(),
        body: g.body.clone(),
        receive_count: g.receive_count.clone(),
        failure,
        failed_at: Utc::now(),
    }
}

/// Decodes and checks one message. `Err(None)`: it has no id and cannot be reported.
fn check(message: SqsMessage) -> Result<Good, Option<Box<DeadLetter>>> {
    let Some(id) = message.message_id else {
        tracing::error!("SQS message without a message id; it cannot be reported");
        return Err(None);
    };
    let body = message.body.unwrap_or_default();
    let receive_count = message.attributes.get("ApproximateReceiveCount").cloned();
    let dead = |class, reason: String| {
        Some(Box::new(DeadLetter {
            message_id: id.clone(),
            body: body.clone(),
            receive_count: receive_count.clone(),
            failure: Failure {
                class,
                reason,
                sqlstate: None,
            },
            failed_at: Utc::now(),
        }))
    };
    let parts = match envelope::decode(&body) {
        Ok(env) => env.batches,
        Err(e @ EnvelopeError::UnsupportedVersion { .. }) => {
            return Err(dead(FailureClass::UnsupportedVersion, e.to_string()))
        }
        Err(e) => return Err(dead(FailureClass::Undecodable, e.to_string())),
    };
    for part in &parts {
        for (i, r) in part.readings.iter().enumerate() {
            let problem = match check_location(&r.1) {
                Err(m) => Some(format!("location {m}")),
                Ok(l) if l != r.1 => Some("location is not trimmed".into()),
                Ok(_) if !r.2.is_finite() => Some("temperature is not finite".into()),
                Ok(_) => r.time().err().map(|e| e.to_string()),
            };
            if let Some(p) = problem {
                return Err(dead(
                    FailureClass::InvalidReading,
                    format!("batch {} part {} reading {i}: {p}", part.id, part.part),
                ));
            }
        }
    }
    Ok(Good {
        id,
        body,
        receive_count,
        parts,
    })
}
