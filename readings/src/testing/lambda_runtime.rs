//! A fake Lambda Runtime API, to run a function binary as Lambda would, and which binary to
//! run: the one cargo built or the `bootstrap` that `sam build` made.

use std::time::Duration;

use super::suffix;

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
