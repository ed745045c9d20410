//! The batch writer's handler: one SQS event in, the messages that failed out.
//!
//! Every message is decoded and checked on its own. The good ones are written together in
//! one transaction (binary COPY, batch offsets recorded alongside). On a transient database
//! error the transaction is retried with jittered backoff while the deadline allows, then
//! every message in it is reported failed so SQS redelivers them. On a data error the
//! batch is bisected to isolate the messages that cause it, and the rest is written.
//! Messages that can never be written (undecodable, unsupported version, invalid
//! readings, refused data, operator-fixable refusals, parts that name other readings than
//! their batch's, messages older than the batch records) go to the dead-letter queue with
//! their reason and count as handled; if the DLQ cannot take them they are reported failed
//! instead, never dropped. The response names exactly the messages SQS must keep (Lambda's
//! ReportBatchItemFailures).
//!
//! Nothing runs after [`Writer::handle`] returns: under Lambda the sandbox is frozen once
//! the answer is posted. Maintenance ([`Writer::maintain`]) is a call of its own, made by
//! the host on a schedule (an EventBridge rule under Lambda, a timer in the poller).

use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, TimeDelta, Utc};

use crate::config::LifecycleConfig;
use crate::model::envelope::{self, BatchPart, EnvelopeError};
use crate::model::reading::check_location;
use crate::observability::{metrics, telemetry};
use crate::postgres::store::{ErrorKind, Store, StoreError, WriteReport};
use crate::queue::deadletter::{
    self, DeadLetter, Failure, FailureClass, ATTR_ENQUEUED_AT, ATTR_REPLAY_FORCED,
};
use crate::queue::Sender;

/// How much younger than the batch records' retention a message must be to be written: a
/// message older than `retention - EXPIRY_MARGIN` may hold readings whose records are
/// pruned already (or about to be), so writing it could store them twice.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(86_400);

/// Writes SQS events to the store.
#[derive(Clone)]
pub struct Writer {
    store: Store,
    /// Sets the schema up and maintains it: `store` itself, or a store of its own when the
    /// writer's role only writes rows ([`Writer::with_migrator`]).
    migrator: Store,
    /// Where dead letters go.
    dlq: Option<Sender>,
    retention: Duration,
    lifecycle: LifecycleConfig,
}

/// A decoded message.
struct Good {
    id: String,
    body: String,
    receive_count: Option<String>,
    enqueued_at: Option<DateTime<Utc>>,
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
            migrator: store.clone(),
            store,
            dlq: None,
            retention: Duration::from_secs(21 * 86_400),
            lifecycle: LifecycleConfig::default(),
        }
    }

    /// Runs migrations and maintenance through `migrator` (a store whose role owns the
    /// tables) instead of the writer's own store.
    pub fn with_migrator(mut self, migrator: Store) -> Self {
        self.migrator = migrator;
        self
    }

    /// Sets the schema up (tables, indexes, the functions' roles) and applies the lifecycle
    /// settings, finished by `deadline`: what a deploy runs before the functions serve.
    /// Returns the schema found.
    pub async fn migrate(
        &self,
        deadline: Instant,
    ) -> Result<crate::postgres::store::Schema, StoreError> {
        let work = async {
            let schema = self.migrator.schema().await?.clone();
            self.migrator.apply_lifecycle(&self.lifecycle).await?;
            Ok(schema)
        };
        tokio::time::timeout_at(deadline.into(), work)
            .await
            .unwrap_or(Err(StoreError::Deadline("the migration")))
    }

    /// Sends dead letters through `dlq` (a [`Sender`] for the dead-letter queue).
    pub fn with_dead_letter_queue(mut self, dlq: Sender) -> Self {
        self.dlq = Some(dlq);
        self
    }

    /// How long batch records are kept (see `BATCH_RECORD_RETENTION_DAYS`): messages older
    /// than that less [`EXPIRY_MARGIN`] are dead-lettered as [`FailureClass::Expired`].
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Data-lifecycle settings, applied by [`Writer::maintain`].
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
        let oldest =
            Utc::now() - TimeDelta::from_std(self.writable_age()).unwrap_or(TimeDelta::MAX);
        for message in event.records {
            match check(message, oldest) {
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
                let unsent = deadletter::send(dlq, &tally.dead).await;
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
                    let class = match (&e, kind) {
                        (StoreError::PartMismatch(_), _) => FailureClass::BatchMismatch,
                        (_, ErrorKind::Data) => FailureClass::DataError,
                        _ => FailureClass::Operator,
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
    ) -> Result<(), StoreError> {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(usize::MAX)
            .with_jitter()
            .build();
        loop {
            let attempt_started = Instant::now();
            // A statement may not outlive the deadline either: the store cancels it.
            match self.store.write(parts, deadline).await {
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

    /// The oldest a message may be to be written: the batch records' retention less
    /// [`EXPIRY_MARGIN`].
    fn writable_age(&self) -> Duration {
        self.retention.saturating_sub(EXPIRY_MARGIN)
    }

    /// Maintenance, finished by `deadline`: applies changed lifecycle settings, prunes old
    /// batch records and, on a plain table, deletes readings past their retention. The host
    /// calls it on a schedule (hourly), never after a batch: under Lambda nothing may run
    /// once an invocation has answered.
    pub async fn maintain(&self, deadline: Instant) {
        let started = Instant::now();
        let done = self
            .migrator
            .maintain(&self.lifecycle, self.retention, deadline)
            .await;
        match done.lifecycle {
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "applying lifecycle settings failed"),
        }
        match done.pruned {
            Ok(n) => tracing::info!(rows = n, "pruned old batch records"),
            Err(e) => tracing::warn!(error = %e, "pruning batch records failed"),
        }
        match done.expired {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "deleted readings past their retention"),
            Err(e) => tracing::warn!(error = %e, "deleting expired readings failed"),
        }
        tracing::info!(
            duration_ms = telemetry::duration_ms(started.elapsed()),
            "maintenance done"
        );
    }
}

fn letter(g: &Good, failure: Failure) -> DeadLetter {
    DeadLetter {
        message_id: g.id.clone(),
        body: g.body.clone(),
        receive_count: g.receive_count.clone(),
        failure,
        failed_at: Utc::now(),
        enqueued_at: g.enqueued_at,
    }
}

/// A time given as RFC 3339 text.
fn rfc3339(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Decodes and checks one message; messages enqueued before `oldest` are refused unless a
/// forced replay sent them. `Err(None)`: it has no id and cannot be reported.
fn check(message: SqsMessage, oldest: DateTime<Utc>) -> Result<Good, Option<Box<DeadLetter>>> {
    let Some(id) = message.message_id else {
        tracing::error!("SQS message without a message id; it cannot be reported");
        return Err(None);
    };
    let body = message.body.unwrap_or_default();
    let receive_count = message.attributes.get("ApproximateReceiveCount").cloned();
    let attribute = |name: &str| {
        message
            .message_attributes
            .get(name)
            .and_then(|a| a.string_value.as_deref())
    };
    let decoded = envelope::decode(&body);
    // When the readings were first enqueued: the envelope says (version 2), else the
    // attribute a replay carries, else (for the dead letter's record only: a version-1
    // message replayed by an older tool was sent again) when SQS took the message.
    let sent = message
        .attributes
        .get("SentTimestamp")
        .and_then(|ms| ms.parse().ok())
        .and_then(DateTime::from_timestamp_millis);
    let stated = decoded
        .as_ref()
        .ok()
        .and_then(|e| e.at)
        .or_else(|| attribute(ATTR_ENQUEUED_AT).and_then(rfc3339));
    let enqueued_at = stated.or(sent);
    let forced = attribute(ATTR_REPLAY_FORCED) == Some("true");
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
            enqueued_at,
        }))
    };
    let parts = match decoded {
        Ok(env) => env.batches,
        Err(e @ EnvelopeError::UnsupportedVersion { .. }) => {
            return Err(dead(FailureClass::UnsupportedVersion, e.to_string()))
        }
        Err(e) => return Err(dead(FailureClass::Undecodable, e.to_string())),
    };
    if let Some(at) = stated.filter(|at| *at < oldest && !forced) {
        return Err(dead(
            FailureClass::Expired,
            format!(
                "enqueued at {}, before {}: the batch records that make a second copy of its \
                 readings write nothing may be pruned already (BATCH_RECORD_RETENTION_DAYS), so \
                 it was not written; `dlq replay --force` writes it anyway, at the risk of \
                 storing its readings twice",
                at.to_rfc3339(),
                oldest.to_rfc3339()
            ),
        ));
    }
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
                    format!("batch part {part} reading {i}: {p}"),
                ));
            }
        }
    }
    Ok(Good {
        id,
        body,
        receive_count,
        enqueued_at,
        parts,
    })
}
