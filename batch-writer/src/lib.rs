//! batch-writer: SQS batches of readings into PostgreSQL. Under Lambda the event source
//! mapping delivers [`SqsEvent`]s; locally [`poller`] does the same job against any SQS
//! endpoint. Both call [`readings::writer::Writer::handle`].

pub mod poller;

use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, LambdaEvent};
use readings::config::{
    in_lambda, DbConfig, LifecycleConfig, PollerConfig, QueueConfig, WriterConfig,
};
use readings::queue;
use readings::writer::{DeadLetterQueue, Writer};
use readings::Store;

/// Time kept back from a deadline to send the answer.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(500);

/// Builds the writer from the environment: the store and, with `DLQ_URL`, the DLQ.
pub async fn writer_from_env() -> anyhow::Result<Writer> {
    let store = Store::new(&DbConfig::load().await?)?;
    store.check_at_start().await?;
    let config = WriterConfig::from_env()?;
    let writer = Writer::new(store)
        .with_retention(config.batch_record_retention)
        .with_lifecycle(LifecycleConfig::from_env()?);
    Ok(match config.dlq_url {
        Some(url) => writer.with_dead_letter_queue(DeadLetterQueue {
            client: queue::client().await,
            url,
        }),
        None => {
            tracing::warn!("DLQ_URL is not set: poison messages cycle until the queue's redrive policy moves them");
            writer
        }
    })
}

/// Builds the function from the environment and runs it (Lambda or local poller).
pub async fn run() -> anyhow::Result<()> {
    readings::observability::metrics::init()?;
    let writer = writer_from_env().await?;
    if in_lambda() {
        // The pool lives in `writer`, created once per process and reused by every invocation.
        lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
            let writer = writer.clone();
            async move {
                let deadline = lambda_deadline(event.context.deadline);
                Ok::<SqsBatchResponse, lambda_runtime::Error>(
                    writer.handle(event.payload, deadline).await,
                )
            }
        }))
        .await
        .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"))
    } else {
        let queue = QueueConfig::from_env()?;
        let config = PollerConfig::from_env()?;
        tracing::info!(queue = %queue.queue_url, batch_size = config.batch_size, pollers = config.pollers, "batch-writer polling");
        let poller = poller::Poller::new(queue::client().await, queue.queue_url, config, writer);
        poller
            .run(readings::observability::telemetry::shutdown_signal())
            .await
    }
}

/// The invocation's deadline (epoch milliseconds) as an `Instant`, less [`DEADLINE_MARGIN`].
fn lambda_deadline(deadline_ms: u64) -> Instant {
    let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
    let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
    Instant::now() + left.saturating_sub(DEADLINE_MARGIN)
}
