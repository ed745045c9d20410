//! batch-writer: SQS batches of readings into PostgreSQL. Under Lambda the event source
//! mapping delivers [`SqsEvent`]s; locally [`poller`] does the same job against any SQS
//! endpoint. Both call [`readings::writer::Writer::handle`].

pub mod poller;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, LambdaEvent};
use readings::config::{in_lambda, DbConfig, PollerConfig, QueueConfig};
use readings::queue;
use readings::store::Store;
use readings::writer::Writer;

/// Builds the function from the environment and runs it (Lambda or local poller).
pub async fn run() -> anyhow::Result<()> {
    let store = Store::new(&DbConfig::from_env()?)?;
    let writer = Writer::new(store);
    if in_lambda() {
        // The pool lives in `writer`, created once per process and reused by every invocation.
        lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
            let writer = writer.clone();
            async move {
                Ok::<SqsBatchResponse, lambda_runtime::Error>(writer.handle(event.payload).await)
            }
        }))
        .await
        .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"))
    } else {
        let queue = QueueConfig::from_env()?;
        let config = PollerConfig::from_env()?;
        tracing::info!(queue = %queue.queue_url, batch_size = config.batch_size, pollers = config.pollers, "batch-writer polling");
        let poller = poller::Poller::new(queue::client().await, queue.queue_url, config, writer);
        poller.run(readings::telemetry::shutdown_signal()).await
    }
}
