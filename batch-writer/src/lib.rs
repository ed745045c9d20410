//! batch-writer: SQS batches of readings into PostgreSQL. Under Lambda the event source
//! mapping delivers [`SqsEvent`]s; locally [`poller`] does the same job against any SQS
//! endpoint. Both call [`readings::writer::Writer::handle`].

pub mod deploy;
pub mod poller;

use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{service_fn, LambdaEvent};
use readings::config::{
    in_lambda, DbConfig, LifecycleConfig, PollerConfig, QueueConfig, WriterConfig,
};
use readings::queue::{self, Sender};
use readings::writer::Writer;
use readings::Store;
use serde_json::{json, Value};

/// Time kept back from a deadline to send the answer.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(500);

/// Builds the writer from the environment: the store, the migrator when
/// `MIGRATION_DATABASE_SECRET_ARN` or `MIGRATION_DATABASE_URL` names a connection of its
/// own, and, with `DLQ_URL`, the DLQ.
pub async fn writer_from_env() -> anyhow::Result<Writer> {
    let store = Store::new(&DbConfig::load().await?)?;
    let mut writer = Writer::new(store.clone());
    if DbConfig::migration_configured() {
        // Connects only when used: a writer instance that only writes batches opens none.
        let migrator = Store::new(&DbConfig::load_migration().await?)?;
        writer = writer.with_migrator(migrator);
    }
    store.check_at_start().await?;
    let config = WriterConfig::from_env()?;
    let writer = writer
        .with_retention(config.batch_record_retention)
        .with_lifecycle(LifecycleConfig::from_env()?);
    Ok(match config.dlq_url {
        // Letters are sized to the DLQ's MaximumMessageSize: as deployed, else as it says.
        Some(url) => writer.with_dead_letter_queue(
            Sender::connect(
                queue::client().await,
                &url,
                readings::config::max_message_bytes_from_env()?,
            )
            .await?,
        ),
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
        lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
            let writer = writer.clone();
            async move {
                let deadline = lambda_deadline(event.context.deadline);
                handle_event(&writer, event.payload, deadline).await
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

/// `batch-writer migrate`: sets the schema up and applies the lifecycle settings with the
/// migration connection (`MIGRATION_DATABASE_*`, else the writer's own), then exits. What
/// the deploy's custom resource does under Lambda, for a local run or a manual step.
pub async fn migrate() -> anyhow::Result<()> {
    let migrator = Store::new(&DbConfig::load_migration().await?)?;
    let writer = Writer::new(migrator.clone()).with_lifecycle(LifecycleConfig::from_env()?);
    let schema = writer
        .migrate(Instant::now() + Duration::from_secs(3600))
        .await?;
    tracing::info!(
        version = readings::postgres::store::SCHEMA_VERSION,
        table = ?schema.kind,
        "schema set up"
    );
    Ok(())
}

/// What the writer function is invoked with.
#[derive(Debug)]
pub enum Invocation {
    /// Messages from the SQS event source mapping.
    Sqs(Box<SqsEvent>),
    /// The EventBridge schedule (or `{"maintenance": true}`): run [`Writer::maintain`].
    Maintenance,
    /// The deploy's custom resource: migrate, then answer CloudFormation.
    Deploy(Box<deploy::Request>),
}

impl Invocation {
    /// Reads an invocation's payload.
    pub fn from_payload(payload: Value) -> Result<Invocation, String> {
        if payload.get("Records").is_some() {
            return serde_json::from_value(payload)
                .map(|e| Invocation::Sqs(Box::new(e)))
                .map_err(|e| format!("an SQS event that does not parse: {e}"));
        }
        if payload.get("RequestType").is_some() {
            return serde_json::from_value(payload)
                .map(|r| Invocation::Deploy(Box::new(r)))
                .map_err(|e| format!("a CloudFormation request that does not parse: {e}"));
        }
        let scheduled =
            payload.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event");
        if scheduled || payload.get("maintenance") == Some(&Value::Bool(true)) {
            return Ok(Invocation::Maintenance);
        }
        Err("not an SQS event, a scheduled event, {\"maintenance\": true} or a CloudFormation request".into())
    }
}

/// One Lambda invocation: a batch of messages, or the scheduled maintenance.
pub async fn handle_event(
    writer: &Writer,
    payload: Value,
    deadline: Instant,
) -> Result<Value, lambda_runtime::Error> {
    match Invocation::from_payload(payload)? {
        Invocation::Sqs(event) => Ok(serde_json::to_value(writer.handle(*event, deadline).await)?),
        Invocation::Maintenance => {
            writer.maintain(deadline).await;
            Ok(json!({"maintenance": "done"}))
        }
        Invocation::Deploy(request) => Ok(deploy::handle(writer, *request, deadline).await?),
    }
}

/// The invocation's deadline (epoch milliseconds) as an `Instant`, less [`DEADLINE_MARGIN`].
fn lambda_deadline(deadline_ms: u64) -> Instant {
    let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
    let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
    Instant::now() + left.saturating_sub(DEADLINE_MARGIN)
}
