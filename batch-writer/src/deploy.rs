//! The deploy step: the template's `SchemaMigration` custom resource invokes the writer
//! function with a CloudFormation request on every deploy that changes the schema version
//! or the lifecycle settings; the writer migrates ([`Writer::migrate`]) and answers on the
//! request's presigned `ResponseURL`, so the stack goes on (or rolls back, saying why)
//! before the HTTP functions, whose roles cannot change the schema, serve the new version.

use std::time::{Duration, Instant};

use readings::writer::Writer;
use serde::Deserialize;
use serde_json::{json, Value};

/// A CloudFormation custom resource request, as Lambda delivers it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Request {
    pub request_type: String,
    #[serde(rename = "ResponseURL")]
    pub response_url: String,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    #[serde(default)]
    pub physical_resource_id: Option<String>,
}

/// The resource's id: one schema per stack.
const PHYSICAL_ID: &str = "sensor-pipeline-schema";
/// Time kept back from the deadline to answer CloudFormation: without an answer it waits
/// an hour before it gives up.
const ANSWER_MARGIN: Duration = Duration::from_secs(5);
/// CloudFormation refuses answers over 4,096 bytes.
const MAX_REASON_CHARS: usize = 2000;

/// Migrates on Create and Update (nothing on Delete: the data outlives the stack), then
/// answers CloudFormation. Returns what it answered.
pub async fn handle(writer: &Writer, request: Request, deadline: Instant) -> anyhow::Result<Value> {
    let (status, reason, data) = match request.request_type.as_str() {
        "Delete" => (
            "SUCCESS",
            "nothing deleted: the tables and their readings outlive the stack".to_owned(),
            json!({}),
        ),
        "Create" | "Update" => {
            let until = deadline.checked_sub(ANSWER_MARGIN).unwrap_or(deadline);
            match writer.migrate(until).await {
                Ok(schema) => (
                    "SUCCESS",
                    format!("schema set up: sensor_data is a {:?} table", schema.kind),
                    json!({
                        "SchemaVersion": readings::postgres::store::SCHEMA_VERSION,
                        "TableKind": format!("{:?}", schema.kind),
                    }),
                ),
                Err(e) => {
                    tracing::error!(error = %e, "the schema migration failed");
                    (
                        "FAILED",
                        format!("the schema migration failed: {e}"),
                        json!({}),
                    )
                }
            }
        }
        other => (
            "FAILED",
            format!("unknown RequestType {other:?}"),
            json!({}),
        ),
    };
    let answer = json!({
        "Status": status,
        "Reason": reason.chars().take(MAX_REASON_CHARS).collect::<String>(),
        "PhysicalResourceId": request.physical_resource_id.as_deref().unwrap_or(PHYSICAL_ID),
        "StackId": request.stack_id,
        "RequestId": request.request_id,
        "LogicalResourceId": request.logical_resource_id,
        "Data": data,
    });
    respond(&request.response_url, &answer).await?;
    tracing::info!(status, request_type = %request.request_type, "answered CloudFormation");
    Ok(answer)
}

/// PUTs the answer to the presigned URL (no Content-Type: the URL was signed without one),
/// trying three times.
async fn respond(url: &str, answer: &Value) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let body = serde_json::to_string(answer)?;
    let mut last = String::new();
    for attempt in 1..=3u32 {
        match client.put(url).body(body.clone()).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("HTTP {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
    }
    anyhow::bail!("answering CloudFormation failed: {last}")
}
