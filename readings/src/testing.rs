//! Helpers for integration tests: a fresh database and a fresh queue pair per test, on the
//! PostgreSQL cluster and SQS endpoint that `scripts/test` starts.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use aws_sdk_sqs::Client;
use rand::Rng;
use tokio_postgres::NoTls;

use crate::config::{DbConfig, QueueConfig};
use crate::model::envelope::decode;
use crate::postgres::store::Store;
use crate::queue;

fn suffix() -> String {
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

/// The table kind the test server gives: `PG_TARGET=timescaledb` (the TimescaleDB pass of
/// `scripts/test`) starts every cluster with TimescaleDB preloaded, so a hypertable;
/// otherwise a plain table (TimescaleDB may be installed, but is not preloaded).
pub fn expected_kind() -> crate::postgres::store::TableKind {
    match std::env::var("PG_TARGET").as_deref() {
        Ok("timescaledb") => crate::postgres::store::TableKind::Hypertable,
        _ => crate::postgres::store::TableKind::Plain,
    }
}

/// The TimescaleDB policy jobs on the database's hypertables (not TimescaleDB's own
/// telemetry and housekeeping jobs): `(job_id, proc_name)` by name.
async fn policy_jobs(client: &tokio_postgres::Client) -> Vec<(i32, String)> {
    client
        .query(
            "SELECT job_id, proc_name::text FROM timescaledb_information.jobs
             WHERE hypertable_name IS NOT NULL ORDER BY proc_name, job_id",
            &[],
        )
        .await
        .expect("list jobs")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Runs every policy job now, in this session (`CALL run_job`, which fails with the job's
/// error). Returns `(proc_name, "Success" or the error)` by name.
pub async fn run_policy_jobs(client: &tokio_postgres::Client) -> Vec<(String, String)> {
    let mut outcomes = Vec::new();
    for (id, name) in policy_jobs(client).await {
        let outcome = match client.batch_execute(&format!("CALL run_job({id})")).await {
            Ok(()) => "Success".to_owned(),
            Err(e) => format!("run_job failed: {}", error_chain(&e)),
        };
        outcomes.push((name, outcome));
    }
    outcomes
}

/// Has TimescaleDB's background scheduler run every policy job now (`alter_job(...,
/// next_start => now())`) and waits, up to a minute, for each to finish a run after that.
/// A run counts as finished once `last_run_duration` is set (its finish is after its start):
/// `job_status` is not enough, since it says `Running` only while the worker's backend is
/// active in `pg_stat_activity`, and `last_run_status` is NULL between a run's start and end.
/// Returns `(proc_name, last_run_status)` from `timescaledb_information.job_stats` by name,
/// with the error from `job_errors` for a failed run. Needs a server with background
/// workers to spare: a cluster of the test's own, not the shared one where every test
/// database's scheduler takes a worker.
pub async fn background_job_runs(client: &tokio_postgres::Client) -> Vec<(String, String)> {
    let jobs = policy_jobs(client).await;
    let asked = chrono::Utc::now();
    for (id, _) in &jobs {
        client
            .batch_execute(&format!("SELECT alter_job({id}, next_start => now())"))
            .await
            .unwrap_or_else(|e| panic!("alter_job({id}): {e:?}"));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut outcomes = Vec::new();
    for (id, name) in jobs {
        let outcome = loop {
            let row = client
                .query_one(
                    "SELECT s.last_run_started_at >= $2 AND s.last_run_duration IS NOT NULL,
                            s.last_run_status::text,
                            (SELECT e.err_message FROM timescaledb_information.job_errors e
                             WHERE e.job_id = $1 AND e.start_time >= $2
                             ORDER BY e.start_time DESC LIMIT 1)
                     FROM timescaledb_information.job_stats s WHERE s.job_id = $1",
                    &[&id, &asked],
                )
                .await
                .expect("job stats");
            let (done, status, error): (Option<bool>, Option<String>, Option<String>) =
                (row.get(0), row.get(1), row.get(2));
            if done == Some(true) {
                break match error {
                    Some(e) if status.as_deref() != Some("Success") => {
                        format!("{}: {e}", status.unwrap_or_default())
                    }
                    _ => status.unwrap_or_default(),
                };
            }
            if std::time::Instant::now() > deadline {
                break format!("no run within a minute (status {status:?})");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        outcomes.push((name, outcome));
    }
    outcomes
}

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!("TEST_DATABASE_URL is not set: run the tests with scripts/test, which starts PostgreSQL and moto")
    })
}

/// A database of its own for one test, on the test cluster.
pub struct TestDb {
    pub config: DbConfig,
    pub store: Store,
    pub name: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let admin = admin_url();
        let name = format!("t_{}", suffix());
        let (client, conn) = tokio_postgres::connect(&admin, NoTls)
            .await
            .expect("connect to TEST_DATABASE_URL");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let mut pg: tokio_postgres::Config = admin.parse().expect("TEST_DATABASE_URL parses");
        pg.dbname(&name);
        let url = pg_url(&pg, &name);
        let config = DbConfig {
            url,
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            ..Default::default()
        };
        let store = Store::new(&config).expect("store");
        TestDb {
            config,
            store,
            name,
        }
    }

    /// The database `config` names (e.g. a [`PrivateCluster`]'s), with the same helpers.
    pub fn on(config: DbConfig) -> TestDb {
        let name = config
            .url
            .parse::<tokio_postgres::Config>()
            .ok()
            .and_then(|c| c.get_dbname().map(str::to_owned))
            .unwrap_or_default();
        let store = Store::new(&config).expect("store");
        TestDb {
            config,
            store,
            name,
        }
    }

    /// Writes readings `(epoch µs, location, temperature)` through the store's write path,
    /// as one batch part of its own.
    pub async fn insert(&self, rows: &[(i64, &str, f64)]) {
        let part = crate::model::envelope::BatchPart {
            id: format!("seed-{}", suffix()),
            part: 0,
            readings: rows
                .iter()
                .map(|(t, l, v)| crate::model::envelope::WireReading(*t, (*l).to_owned(), *v))
                .collect(),
        };
        self.store.write(&[&part]).await.expect("seed readings");
    }

    /// A new API key with these scopes, in this test's database.
    pub async fn api_key(&self, scopes: &[crate::http::auth::Scope]) -> String {
        crate::http::auth::create_key(&self.store, "test", scopes)
            .await
            .expect("create an API key")
            .key
    }

    /// A plain connection to this test's database.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.config.url, NoTls)
            .await
            .expect("connect to test database");
        tokio::spawn(conn);
        client
    }

    /// Rows in `sensor_data` (0 when the table does not exist yet).
    pub async fn count(&self) -> i64 {
        let c = self.client().await;
        let exists: bool = c
            .query_one("SELECT to_regclass('sensor_data') IS NOT NULL", &[])
            .await
            .expect("query")
            .get(0);
        if !exists {
            return 0;
        }
        c.query_one("SELECT count(*) FROM sensor_data", &[])
            .await
            .expect("count")
            .get(0)
    }

    /// Every row as (epoch µs, location, temperature), ordered by time then location.
    pub async fn rows(&self) -> Vec<(i64, String, f64)> {
        self.client()
            .await
            .query(
                "SELECT (extract(epoch FROM time) * 1000000)::int8, location, temperature
                 FROM sensor_data ORDER BY time, location, temperature",
                &[],
            )
            .await
            .expect("rows")
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }
}

fn pg_url(pg: &tokio_postgres::Config, db: &str) -> String {
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let user = pg.get_user().unwrap_or("postgres");
    format!("postgres://{user}@{host}:{port}/{db}")
}

/// An error and its causes, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    s
}

/// The one value `sql` answers, asked through `store`'s pool (connecting as the functions
/// do), or the error: the store's own when no connection can be had, as the functions
/// log it.
pub async fn store_value<T>(store: &Store, sql: &str) -> Result<T, String>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    let client = store
        .pool()
        .get()
        .await
        .map_err(|e| crate::postgres::store::StoreError::from(e).to_string())?;
    let row = client
        .query_one(sql, &[])
        .await
        .map_err(|e| error_chain(&e))?;
    row.try_get(0).map_err(|e| error_chain(&e))
}

/// An HTTP event from `events/` carrying `key` as its bearer token.
pub fn event_with_key(file: &str, key: &str) -> serde_json::Value {
    let mut e = event(file);
    set_header(&mut e, "authorization", Some(&format!("Bearer {key}")));
    e
}

/// Sets (or with `None` removes) a request header of an HTTP event of any shape: in
/// `headers` and in `multiValueHeaders`, whichever the event has (REST events have both, an
/// ALB event one of them), replacing the header under any spelling of its name; an event
/// with neither gets `headers`.
pub fn set_header(event: &mut serde_json::Value, name: &str, value: Option<&str>) {
    use serde_json::Value;
    let mut found = false;
    for (field, multi) in [("headers", false), ("multiValueHeaders", true)] {
        let Some(headers) = event.get_mut(field).and_then(Value::as_object_mut) else {
            continue;
        };
        found = true;
        headers.retain(|k, _| !k.eq_ignore_ascii_case(name));
        if let Some(v) = value {
            let v = if multi {
                serde_json::json!([v])
            } else {
                serde_json::json!(v)
            };
            headers.insert(name.to_owned(), v);
        }
    }
    if !found {
        if let Some(v) = value {
            event["headers"] = serde_json::json!({ name: v });
        }
    }
}

/// The event with its body base64-encoded, as API Gateway, ALB and function URLs send
/// bodies they take for binary.
pub fn with_base64_body(mut event: serde_json::Value) -> serde_json::Value {
    let body = event["body"]
        .as_str()
        .unwrap_or_default()
        .as_bytes()
        .to_vec();
    // aws_lambda_events writes binary bodies in base64.
    let encoded = aws_lambda_events::encodings::Body::Binary(body);
    event["body"] = serde_json::to_value(encoded).expect("a body serialises");
    event["isBase64Encoded"] = serde_json::Value::Bool(true);
    event
}

/// What a function's Lambda host answers `event` with, as it posts the answer to the
/// Runtime API: the steps of [`crate::http::lambda::serve`] ([`crate::http::lambda::normalise`], then
/// `lambda_http`, which reads the event and shapes the answer for its source, around
/// [`crate::http::lambda::strip_stage`] and `app`) without the runtime's transport. Panics on an
/// event `lambda_http` refuses.
pub async fn lambda_answer(app: axum::Router, event: &serde_json::Value) -> serde_json::Value {
    use lambda_http::tower::{Service, ServiceExt};
    let bytes = serde_json::to_vec(event).expect("an event serialises");
    let bytes = crate::http::lambda::normalise(&bytes).unwrap_or(bytes);
    let request: lambda_http::request::LambdaRequest = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("lambda_http refuses the event: {e}: {event}"));
    let mut handler = lambda_http::Adapter::from(tower::ServiceExt::map_request(
        app,
        crate::http::lambda::strip_stage::<lambda_http::Body>,
    ));
    let invocation = lambda_http::LambdaEvent::new(request, lambda_http::Context::default());
    let response = match handler.ready().await {
        Ok(handler) => handler.call(invocation).await,
        Err(e) => match e {},
    };
    let response = response.unwrap_or_else(|e| match e {});
    serde_json::to_value(response).expect("an answer serialises")
}

/// An answer of a function's Lambda host read the same way whatever the event's source:
/// status, headers (lower-case names, each with all its values) and body.
#[derive(Debug, Clone, PartialEq)]
pub struct LambdaAnswer {
    pub status: u16,
    pub headers: std::collections::BTreeMap<String, Vec<String>>,
    pub body: Vec<u8>,
}

impl LambdaAnswer {
    /// Reads `statusCode`, `multiValueHeaders` (REST, ALB) or else `headers` (HTTP API,
    /// function URL) and `body` (decoding base64 when `isBase64Encoded`).
    pub fn read(answer: &serde_json::Value) -> LambdaAnswer {
        use serde_json::Value;
        let status = answer["statusCode"]
            .as_u64()
            .unwrap_or_else(|| panic!("no statusCode: {answer}")) as u16;
        let non_empty = |field: &str| {
            answer
                .get(field)
                .and_then(Value::as_object)
                .filter(|h| !h.is_empty())
        };
        let mut headers = std::collections::BTreeMap::new();
        if let Some(multi) = non_empty("multiValueHeaders") {
            for (name, values) in multi {
                let values = values.as_array().unwrap_or_else(|| panic!("{answer}"));
                let values = values
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default().to_owned());
                headers.insert(name.to_ascii_lowercase(), values.collect());
            }
        } else if let Some(single) = non_empty("headers") {
            for (name, value) in single {
                let value = value.as_str().unwrap_or_default().to_owned();
                headers.insert(name.to_ascii_lowercase(), vec![value]);
            }
        }
        let body = answer["body"].as_str().unwrap_or_default();
        let base64 = answer["isBase64Encoded"].as_bool().unwrap_or(false);
        let body = match lambda_http::Body::from_maybe_encoded(base64, body) {
            lambda_http::Body::Empty => Vec::new(),
            lambda_http::Body::Text(t) => t.into_bytes(),
            lambda_http::Body::Binary(b) => b,
            other => panic!("unexpected body {other:?}"),
        };
        LambdaAnswer {
            status,
            headers,
            body,
        }
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&self.body));
        })
    }
}

/// The event source an answer is shaped for, told from its fields, as `lambda_http` writes
/// them: `"rest"` (only `multiValueHeaders`), `"http"` (HTTP API or function URL: `headers`
/// and `cookies`), `"alb"` (`statusDescription`, both header forms alike).
pub fn answer_shape(answer: &serde_json::Value) -> &'static str {
    let has = |field: &str| {
        answer
            .get(field)
            .and_then(serde_json::Value::as_object)
            .is_some_and(|h| !h.is_empty())
    };
    if answer.get("statusDescription").is_some() {
        assert_eq!(
            answer["headers"].as_object().map(|h| h.len()),
            answer["multiValueHeaders"].as_object().map(|h| h.len()),
            "{answer}"
        );
        "alb"
    } else if answer.get("cookies").is_some() {
        assert!(has("headers") && !has("multiValueHeaders"), "{answer}");
        "http"
    } else {
        assert!(has("multiValueHeaders") && !has("headers"), "{answer}");
        "rest"
    }
}

/// Ingest settings for tests: 1 MiB bodies, 10,000 readings, default limits, no coalescing.
pub fn ingest_config() -> crate::config::IngestConfig {
    crate::config::IngestConfig {
        addr: ([127, 0, 0, 1], 0).into(),
        max_body_bytes: 1 << 20,
        max_readings: 10_000,
        limits: crate::model::reading::Limits::default(),
        coalesce_linger: Duration::ZERO,
    }
}

/// Serves `app` on a free loopback port in the background; returns `http://host:port`.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    tokio::spawn(crate::http::serve_on(app, listener));
    base
}

/// `n` readings a millisecond apart from 2024-03-09T16:00:00Z, locations `{tag}-{i}`,
/// temperatures 0, 1, 2, …
pub fn sample_readings(tag: &str, n: usize) -> Vec<crate::Reading> {
    (0..n)
        .map(|i| crate::Reading {
            time: chrono::DateTime::from_timestamp_micros(1_710_000_000_000_000 + i as i64 * 1_000)
                .expect("in range"),
            location: format!("{tag}-{i}"),
            temperature: i as f64,
        })
        .collect()
}

/// An SQS message as Lambda delivers it, with an id and a body.
pub fn sqs_message(id: &str, body: &str) -> aws_lambda_events::event::sqs::SqsMessage {
    let mut m = aws_lambda_events::event::sqs::SqsMessage::default();
    m.message_id = Some(id.into());
    m.body = Some(body.into());
    m
}

/// A sample event from the repository's `events/` folder.
pub fn event(file: &str) -> serde_json::Value {
    let path = format!("{}/../events/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A main queue and its dead-letter queue (redrive after 5 receives), named for one test.
pub struct TestQueue {
    pub client: Client,
    pub config: QueueConfig,
    pub dlq_url: String,
}

impl TestQueue {
    pub async fn new() -> TestQueue {
        if std::env::var_os("AWS_ENDPOINT_URL_SQS").is_none() {
            panic!("AWS_ENDPOINT_URL_SQS is not set: run the tests with scripts/test, which starts PostgreSQL and moto");
        }
        let client = queue::client().await;
        let name = format!("t-{}", suffix());
        let dlq_url = client
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .send()
            .await
            .expect("create dlq")
            .queue_url
            .expect("dlq url");
        let dlq_arn = client
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("dlq attributes")
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .expect("dlq arn");
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
        }
    }

    pub fn url(&self) -> &str {
        &self.config.queue_url
    }

    /// Receives (and deletes) every message now visible on `url`, waiting briefly for stragglers.
    pub async fn drain(&self, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
        let mut all = Vec::new();
        loop {
            let out = self
                .client
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
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
/// The SAM function (`template.yaml`) that deploys each function binary.
pub const SAM_FUNCTIONS: [(&str, &str); 3] = [
    ("ingest-api", "IngestFunction"),
    ("query-api", "QueryFunction"),
    ("batch-writer", "WriterFunction"),
];

/// The function binary a test runs under [`FakeLambdaRuntime`]: `built`, the one cargo built
/// for the test (`env!("CARGO_BIN_EXE_<name>")`), unless `BOOTSTRAP_DIR` is set; then the
/// deploy artifact that `sam build` made for it, `$BOOTSTRAP_DIR/<Function>/bootstrap`
/// (`scripts/test` runs the Lambda tests a second time that way after `scripts/package`).
/// Panics when `BOOTSTRAP_DIR` is set and the artifact is missing, rather than quietly test
/// the other binary.
pub fn function_binary(built: &str) -> String {
    let Some(dir) = std::env::var_os("BOOTSTRAP_DIR").filter(|d| !d.is_empty()) else {
        return built.to_owned();
    };
    let name = std::path::Path::new(built)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let function = SAM_FUNCTIONS
        .iter()
        .find(|(bin, _)| *bin == name)
        .unwrap_or_else(|| panic!("no SAM function deploys the binary {name:?}"))
        .1;
    let bootstrap = std::path::Path::new(&dir).join(function).join("bootstrap");
    assert!(
        bootstrap.is_file(),
        "BOOTSTRAP_DIR is set, but {} is missing (run scripts/package)",
        bootstrap.display()
    );
    bootstrap.to_string_lossy().into_owned()
}

/// A stand-in for the Lambda Runtime API (the endpoint `AWS_LAMBDA_RUNTIME_API` names): it
/// hands out the given events one by one and collects what the function answers, so a test
/// can run a function binary exactly as Lambda would.
pub struct FakeLambdaRuntime {
    /// `host:port`, the value for `AWS_LAMBDA_RUNTIME_API`.
    pub address: String,
    responses: tokio::sync::mpsc::UnboundedReceiver<(String, serde_json::Value)>,
}

impl FakeLambdaRuntime {
    pub async fn start(events: Vec<serde_json::Value>) -> FakeLambdaRuntime {
        use axum::extract::{Path, State};
        use axum::routing::{get, post};
        use std::sync::{Arc, Mutex};

        type Shared = (
            Arc<Mutex<std::collections::VecDeque<serde_json::Value>>>,
            tokio::sync::mpsc::UnboundedSender<(String, serde_json::Value)>,
        );
        async fn next(State((queue, _)): State<Shared>) -> axum::response::Response {
            use axum::response::IntoResponse;
            let event = queue.lock().expect("event queue").pop_front();
            let Some(event) = event else {
                // No more work: hold the long poll, as Lambda does between invocations.
                std::future::pending::<()>().await;
                unreachable!()
            };
            let id = format!("req-{}", suffix());
            let deadline = chrono::Utc::now().timestamp_millis() + 30_000;
            (
                [
                    ("lambda-runtime-aws-request-id", id),
                    ("lambda-runtime-deadline-ms", deadline.to_string()),
                    (
                        "lambda-runtime-invoked-function-arn",
                        "arn:aws:lambda:us-east-1:123456789012:function:test".to_owned(),
                    ),
                    (
                        "lambda-runtime-trace-id",
                        "Root=1-00000000-000000000000000000000000".to_owned(),
                    ),
                    ("content-type", "application/json".to_owned()),
                ],
                event.to_string(),
            )
                .into_response()
        }
        async fn respond(
            State((_, tx)): State<Shared>,
            Path((id, kind)): Path<(String, String)>,
            body: String,
        ) -> axum::http::StatusCode {
            let value = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
            let _ = tx.send((format!("{kind}:{id}"), value));
            axum::http::StatusCode::ACCEPTED
        }
        async fn init_error(State((_, tx)): State<Shared>, body: String) -> axum::http::StatusCode {
            let _ = tx.send(("init-error".into(), serde_json::Value::String(body)));
            axum::http::StatusCode::ACCEPTED
        }

        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let state: Shared = (Arc::new(Mutex::new(events.into())), tx);
        let app = axum::Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/{kind}", post(respond))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake runtime");
        let address = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeLambdaRuntime {
            address,
            responses: rx,
        }
    }

    /// The environment Lambda gives a function, pointing at this runtime.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_LAMBDA_RUNTIME_API", self.address.clone()),
            ("AWS_LAMBDA_FUNCTION_NAME", "test".into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".into()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/test".into()),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "test".into()),
        ]
    }

    /// Runs `binary` as a Lambda function with `env` on a fresh runtime that hands it
    /// `events`, and returns its answer to each, in order; the process is killed afterwards.
    pub async fn invoke(
        binary: &str,
        env: &[(&str, &str)],
        events: Vec<serde_json::Value>,
    ) -> Vec<(String, serde_json::Value)> {
        Self::run(binary, env, events, false).await.0
    }

    /// As [`FakeLambdaRuntime::invoke`], and also returns what the function printed on
    /// stdout (its logs and metrics), line by line.
    pub async fn invoke_with_output(
        binary: &str,
        env: &[(&str, &str)],
        events: Vec<serde_json::Value>,
    ) -> (Vec<(String, serde_json::Value)>, Vec<String>) {
        Self::run(binary, env, events, true).await
    }

    async fn run(
        binary: &str,
        env: &[(&str, &str)],
        events: Vec<serde_json::Value>,
        capture: bool,
    ) -> (Vec<(String, serde_json::Value)>, Vec<String>) {
        use tokio::io::AsyncBufReadExt;
        let n = events.len();
        let mut runtime = FakeLambdaRuntime::start(events).await;
        let mut command = tokio::process::Command::new(binary);
        command
            .envs(runtime.env())
            .envs(env.iter().copied())
            .kill_on_drop(true);
        if capture {
            command.stdout(std::process::Stdio::piped());
        }
        let mut child = command.spawn().expect("start the function binary");
        let reader = child.stdout.take().map(|out| {
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(out).lines();
                let mut all = Vec::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    all.push(line);
                }
                all
            })
        });
        let mut answers = Vec::with_capacity(n);
        for _ in 0..n {
            answers.push(runtime.next_response().await);
        }
        child.kill().await.expect("stop the function binary");
        let output = match reader {
            Some(r) => r.await.expect("read the function's stdout"),
            None => Vec::new(),
        };
        (answers, output)
    }

    /// The next answer: `("response:<id>" | "error:<id>" | "init-error", body)`; waits at
    /// most 30 s.
    pub async fn next_response(&mut self) -> (String, serde_json::Value) {
        tokio::time::timeout(Duration::from_secs(30), self.responses.recv())
            .await
            .expect("the function answered within 30 s")
            .expect("runtime channel open")
    }
}

/// One EMF document, checked against CloudWatch's Embedded Metric Format specification
/// by [`check_emf`].
#[derive(Debug, Clone)]
pub struct EmfDocument {
    pub namespace: String,
    pub dimension_sets: Vec<Vec<String>>,
    /// Metric name → (unit, value); an array of values is summed.
    pub metrics: std::collections::BTreeMap<String, (String, f64)>,
    pub document: serde_json::Value,
}

impl EmfDocument {
    /// The value of `name`, if the document defines that metric.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).map(|(_, v)| *v)
    }
}

/// The lines of `output` that are EMF documents (JSON objects with `_aws`), each checked
/// with [`check_emf`].
pub fn emf_documents(output: &[String]) -> Vec<EmfDocument> {
    output
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .map(|v| check_emf(&v))
        .collect()
}

/// Checks `doc` against the EMF specification and returns its metrics; panics naming the
/// rule it breaks. The rules: `_aws.Timestamp` is a number of epoch milliseconds (here:
/// within a day of now); `_aws.CloudWatchMetrics` is a non-empty array of directives, each
/// with a non-empty `Namespace`, `Dimensions` (an array of arrays of at most 30 strings,
/// each a top-level member whose value is a string) and `Metrics` (at most 100 `{Name,
/// Unit}` objects, `Unit` one of CloudWatch's units when present), and every metric `Name`
/// is a top-level member whose value is a number or an array of at most 100 numbers.
pub fn check_emf(doc: &serde_json::Value) -> EmfDocument {
    const UNITS: [&str; 27] = [
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    ];
    let top = doc
        .as_object()
        .unwrap_or_else(|| panic!("not a JSON object: {doc}"));
    let aws = top["_aws"]
        .as_object()
        .unwrap_or_else(|| panic!("_aws is not an object: {doc}"));
    let ts = aws
        .get("Timestamp")
        .and_then(|t| t.as_i64())
        .unwrap_or_else(|| panic!("_aws.Timestamp is not an integer: {doc}"));
    let now = chrono::Utc::now().timestamp_millis();
    assert!(
        (ts - now).abs() < 86_400_000,
        "_aws.Timestamp {ts} is not epoch milliseconds near now ({now})"
    );
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(|d| d.as_array())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| panic!("_aws.CloudWatchMetrics is not a non-empty array: {doc}"));
    assert_eq!(
        directives.len(),
        1,
        "one directive per document here: {doc}"
    );
    let directive = &directives[0];
    let namespace = directive["Namespace"]
        .as_str()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| panic!("Namespace is not a non-empty string: {doc}"))
        .to_owned();
    let dimension_sets: Vec<Vec<String>> = directive["Dimensions"]
        .as_array()
        .unwrap_or_else(|| panic!("Dimensions is not an array: {doc}"))
        .iter()
        .map(|set| {
            let set = set
                .as_array()
                .unwrap_or_else(|| panic!("a dimension set is not an array: {doc}"));
            assert!(set.len() <= 30, "more than 30 dimensions in a set: {doc}");
            set.iter()
                .map(|d| {
                    let name = d
                        .as_str()
                        .unwrap_or_else(|| panic!("a dimension name is not a string: {doc}"));
                    assert!(
                        top.get(name).is_some_and(|v| v.is_string()),
                        "dimension {name} is not a top-level string: {doc}"
                    );
                    name.to_owned()
                })
                .collect()
        })
        .collect();
    let definitions = directive["Metrics"]
        .as_array()
        .unwrap_or_else(|| panic!("Metrics is not an array: {doc}"));
    assert!(definitions.len() <= 100, "more than 100 metrics: {doc}");
    let mut metrics = std::collections::BTreeMap::new();
    for m in definitions {
        let name = m["Name"]
            .as_str()
            .unwrap_or_else(|| panic!("a metric Name is not a string: {doc}"));
        let unit = match m.get("Unit") {
            None => "None",
            Some(u) => u
                .as_str()
                .filter(|u| UNITS.contains(u))
                .unwrap_or_else(|| panic!("metric {name} has an unknown Unit {u}: {doc}")),
        };
        let value = match top.get(name) {
            Some(serde_json::Value::Number(n)) => n.as_f64(),
            Some(serde_json::Value::Array(values)) if values.len() <= 100 => {
                values.iter().map(|v| v.as_f64()).sum::<Option<f64>>()
            }
            _ => None,
        }
        .unwrap_or_else(|| {
            panic!("metric {name} is not a top-level number or array of numbers: {doc}")
        });
        metrics.insert(name.to_owned(), (unit.to_owned(), value));
    }
    EmfDocument {
        namespace,
        dimension_sets,
        metrics,
        document: doc.clone(),
    }
}

/// A PostgreSQL cluster of a test's own, started and stopped with the project's scripts
/// (`scripts/lib.sh`), for tests that take the database away or need server settings of
/// their own (TLS, password authentication).
pub struct PrivateCluster {
    pub dir: std::path::PathBuf,
    pub port: u16,
    /// Server settings given with [`PrivateCluster::set`], applied on every start.
    settings: Vec<(String, String)>,
    /// `PG_TARGET` for this cluster; by default the tests' own (see [`expected_kind`]).
    target: Option<&'static str>,
}

impl PrivateCluster {
    pub fn start() -> PrivateCluster {
        let cluster = PrivateCluster::prepare();
        cluster.launch();
        cluster
    }

    /// A cluster with its directory and port chosen but not started: add
    /// [`file`](PrivateCluster::file)s and [`set`](PrivateCluster::set)tings, then
    /// [`launch`](PrivateCluster::launch) it.
    pub fn prepare() -> PrivateCluster {
        let dir = repo_root()
            .join(".local/test/clusters")
            .join(suffix())
            .join("pgdata");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        PrivateCluster {
            dir,
            port,
            settings: Vec::new(),
            target: None,
        }
    }

    /// Starts this cluster without TimescaleDB preloaded, whatever the tests' target: the
    /// state of a server right after TimescaleDB's package is installed.
    pub fn without_timescaledb(mut self) -> PrivateCluster {
        self.target = Some("postgres");
        self
    }

    /// Writes `contents` to file `name` beside the data directory, readable by the server
    /// alone (mode 0600, owned by the `postgres` OS user when the tests run as root, as the
    /// server then does), and returns its path: for `ssl_key_file`, `hba_file` and the like.
    pub fn file(&self, name: &str, contents: &[u8]) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let home = self.dir.parent().expect("cluster directory");
        std::fs::create_dir_all(home).expect("create the cluster directory");
        let path = home.join(name);
        std::fs::write(&path, contents).expect("write a cluster file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod a cluster file");
        self.lib(&format!(
            "if is_root; then chown postgres:postgres '{}'; fi",
            path.display()
        ));
        path
    }

    /// A server setting, passed as `-c name='value'` whenever the server starts.
    pub fn set(&mut self, name: &str, value: impl std::fmt::Display) {
        let value = value.to_string();
        assert!(
            !value.contains('\''),
            "a setting value with a quote: {value}"
        );
        self.settings.push((name.to_owned(), value));
    }

    /// Starts the server (initialising the cluster on the first start).
    pub fn launch(&self) {
        self.lib(&format!(
            "start_postgres '{}' {} test",
            self.dir.display(),
            self.port
        ));
    }

    /// Stops the server (`pg_ctl stop -m fast`), keeping the data.
    pub fn stop(&self) {
        self.lib(&format!("stop_postgres '{}'", self.dir.display()));
    }

    /// Starts the stopped server again on the same port.
    pub fn restart(&self) {
        self.launch();
    }

    pub fn db_config(&self) -> DbConfig {
        DbConfig {
            url: format!("postgres://postgres@127.0.0.1:{}/sensors", self.port),
            pool_size: 4,
            connect_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(30),
            ..Default::default()
        }
    }

    fn lib(&self, command: &str) {
        let options: Vec<String> = self
            .settings
            .iter()
            .map(|(name, value)| format!("-c {name}='{value}'"))
            .collect();
        let mut bash = std::process::Command::new("bash");
        bash.arg("-c")
            .arg(format!(
                "set -euo pipefail; source '{}/scripts/lib.sh'; ensure_pg_bin; {command}",
                repo_root().display()
            ))
            .env("PG_EXTRA_OPTS", options.join(" "));
        if let Some(target) = self.target {
            bash.env("PG_TARGET", target);
        }
        let status = bash.status().expect("run bash");
        assert!(status.success(), "{command} failed");
    }
}

fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.stop();
        if let Some(d) = self.dir.parent() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A program in the project's `.venv`, where `scripts/test` installs the Python tools.
fn venv_program(name: &str) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root");
    let bin = root.join(".venv/bin").join(name);
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with scripts/test, which installs it",
        bin.display()
    );
    bin
}

/// Checks the repository's `openapi.yaml` against the OpenAPI 3.1 schema
/// (openapi-spec-validator); panics with what is wrong.
pub fn validate_openapi() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root");
    let out = std::process::Command::new(venv_program("python"))
        .args([
            "-c",
            "import sys\n\
             from openapi_spec_validator import validate\n\
             from openapi_spec_validator.readers import read_from_filename\n\
             validate(read_from_filename(sys.argv[1])[0])",
        ])
        .arg(root.join("openapi.yaml"))
        .output()
        .expect("run openapi-spec-validator");
    assert!(
        out.status.success(),
        "openapi.yaml is not valid OpenAPI:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs schemathesis (from the project's `.venv`, where `scripts/test` installs it) with the
/// repository's `openapi.yaml` and settings (`schemathesis.toml`, hooks in
/// `scripts/schemathesis_hooks.py`) against the service at `base_url`, on the operations
/// tagged `tag`, in `phases`, sending `api_key` as a bearer token. `SCHEMATHESIS_EXTRA_ARGS`
/// (split on whitespace) is appended, e.g. `--max-examples 1000 --seed 7` for a longer
/// search. Panics with schemathesis's report when it finds an answer that breaks the
/// contract, or when it cannot run. Validates the document first ([`validate_openapi`]):
/// schemathesis loads some documents that break the OpenAPI schema.
pub async fn schemathesis(base_url: &str, tag: &str, phases: &str, api_key: &str) {
    validate_openapi();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root");
    let bin = venv_program("schemathesis");
    let spec = root.join("openapi.yaml");
    let hooks = root.join("scripts/schemathesis_hooks.py");
    let auth = format!("Authorization: Bearer {api_key}");
    let config = root.join("schemathesis.toml");
    let args: Vec<String> = [
        "--config-file",
        &config.to_string_lossy(),
        "run",
        &spec.to_string_lossy(),
        "--url",
        base_url,
        "--include-tag",
        tag,
        "--phases",
        phases,
        "--header",
        &auth,
        "--no-color",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(
        std::env::var("SCHEMATHESIS_EXTRA_ARGS")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned),
    )
    .collect();
    let shown = args.join(" ").replace(api_key, "<key>");
    let workdir = root.join("target/schemathesis");
    std::fs::create_dir_all(&workdir).expect("create target/schemathesis");
    let started = std::time::Instant::now();
    let child = tokio::process::Command::new(&bin)
        .args(&args)
        .env("SCHEMATHESIS_HOOKS", &hooks)
        // Keeps schemathesis's and Hypothesis's caches out of the source tree.
        .current_dir(&workdir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis {shown} ran longer than 300 s"))
        .expect("schemathesis output");
    // Reproducing commands can hold a URL of a megabyte: cut long lines.
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let output: Vec<String> = output
        .lines()
        .map(|l| match l.char_indices().nth(2000) {
            Some((i, _)) => format!("{} [...]", &l[..i]),
            None => l.to_owned(),
        })
        .collect();
    let report = format!(
        "schemathesis {shown}\n({:.1} s)\n{}",
        started.elapsed().as_secs_f64(),
        output.join("\n")
    );
    assert!(out.status.success(), "{report}");
    println!("{report}");
}
