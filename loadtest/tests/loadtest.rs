//! The `loadtest` binary against the real local services: the pipeline runs in this process
//! (ingest router and query router on 127.0.0.1:0, the writer's poller, a database and a
//! queue of the test's own), and the binary is pointed at its URLs.

use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use local_pipeline::LocalPipeline as Pipeline;
use readings::testing::TestDb;
use serde_json::Value;

async fn pipeline() -> Pipeline {
    Pipeline::start().await
}

/// Serves `app` on a loopback port; returns the URL of its `/sensor`.
async fn listen(app: axum::Router) -> String {
    format!("{}/sensor", readings::testing::serve(app).await)
}

/// Runs the binary to completion.
async fn loadtest(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .env_remove("INGEST_URL")
        .env_remove("QUERY_URL")
        .env_remove("LOADTEST_API_KEY")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Runs the binary against `url` with `args`, `--verify` on `db` (waiting at most
/// `timeout`) and its JSON summary in a scratch directory named `name`; returns its output
/// and the summary.
async fn verified_run(
    name: &str,
    url: &str,
    db: &TestDb,
    timeout: &str,
    args: &[&str],
) -> (Output, Value) {
    let json = scratch(name).join("out.json");
    let mut all = vec!["--ingest-url", url, "--verify", &db.config.url];
    all.extend([
        "--verify-timeout",
        timeout,
        "--json",
        json.to_str().unwrap(),
    ]);
    all.extend(args);
    let out = loadtest(&all).await;
    let summary = read_json(&json);
    (out, summary)
}

/// How many readings the lag timeline of a `--verify` summary covers.
fn lag_readings(verify: &Value) -> u64 {
    verify["lag_timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["readings"].as_u64().unwrap())
        .sum()
}

/// A scratch directory for output files.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("loadtest-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_lands_every_reading_exactly_once() {
    let p = pipeline().await;
    let dir = scratch("full");
    let (json, svg) = (dir.join("out.json"), dir.join("out.svg"));
    let out = loadtest(&[
        "--api-key",
        &p.key,
        "--ingest-url",
        &p.ingest,
        "--rate",
        "200",
        "--duration",
        "3s",
        "--batch",
        "10",
        "--sensors",
        "20",
        "--json",
        json.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
        "--verify",
        &p.db.config.url,
        "--verify-timeout",
        "30s",
        "--threshold",
        "errors<1%",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("latency"), "{stdout}");
    assert!(stdout.contains("pass   errors<1%"), "{stdout}");

    let v = read_json(&json);
    // Open model: 20 requests/s for 3 s, scheduled at fixed times.
    assert_eq!(v["readings"]["sent"], 600, "{v}");
    assert_eq!(v["readings"]["accepted"], 600);
    assert_eq!(v["requests"]["total"], 60);
    assert_eq!(v["status"]["202"], 60);
    assert_eq!(v["errors"], 0);
    assert!(v["query_latency_ms"].is_null());
    assert!(v["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert!(v["latency_ms"]["max"].as_f64() >= v["latency_ms"]["p50"].as_f64());
    let rate = v["throughput"]["readings_per_sec"].as_f64().unwrap();
    assert!((150.0..=210.0).contains(&rate), "achieved {rate}");
    assert!(v["timeline"].as_array().unwrap().len() >= 3);
    let verify = &v["verify"];
    assert_eq!(verify["expected"], 600, "{verify}");
    assert_eq!(verify["lost"], 0);
    assert_eq!(verify["duplicated"], 0);
    assert_eq!(verify["complete"], true);
    assert!(verify["lag_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert_eq!(v["thresholds"][0]["passed"], true);

    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg") && picture.contains("</svg>"));
    assert!(picture.contains("p99") && picture.contains("throughput"));
    assert!(picture.contains("requests/s") && picture.contains("ingest-to-queryable lag"));
    let lag = verify["lag_timeline"].as_array().unwrap();
    assert!(lag.len() >= 3, "{verify}");
    assert_eq!(lag_readings(verify), 600);

    // The run's rows, by its tag.
    let run = v["run_id"].as_str().unwrap();
    let rows: i64 =
        p.db.client()
            .await
            .query_one(
                "SELECT count(*) FROM sensor_data WHERE location LIKE $1",
                &[&format!("lt-{run}-%")],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(rows, 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breached_threshold_exits_2_and_names_it() {
    let p = pipeline().await;
    let out = loadtest(&[
        "--api-key",
        &p.key,
        "--ingest-url",
        &p.ingest,
        "--rate",
        "50",
        "--duration",
        "1s",
        "--threshold",
        "p99<1us",
        "--threshold",
        "errors<1%",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("threshold breached: p99<1us (p99 was "),
        "{err}"
    );
    assert!(
        !err.contains("errors<1%"),
        "only the breach is named: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_ratio_mixes_in_get_requests() {
    let p = pipeline().await;
    let json = scratch("query").join("out.json");
    let out = loadtest(&[
        "--api-key",
        &p.key,
        "--ingest-url",
        &p.ingest,
        "--query-url",
        &p.query,
        "--rate",
        "40",
        "--duration",
        "2s",
        "--query-ratio",
        "0.5",
        "--json",
        json.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let v = read_json(&json);
    assert_eq!(v["requests"]["ingest"], 80, "{v}");
    assert_eq!(v["requests"]["query"], 80);
    assert_eq!(v["status"]["202"], 80);
    assert_eq!(v["status"]["200"], 80);
    assert_eq!(v["readings"]["sent"], 80);
    // Mixed runs report each kind's latency too.
    assert!(v["ingest_latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    assert!(v["query_latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("    query     p50 "), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_is_down_fails_with_one_clear_line() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/sensor");
    let out = loadtest(&["--ingest-url", &url, "--rate", "1000", "--duration", "2s"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("error: cannot reach the ingest API at {url}")),
        "{err}"
    );
    assert!(err.to_lowercase().contains("refused"), "{err}");
    assert!(out.stdout.is_empty());
}

/// What a capturing stand-in for the ingest API saw.
#[derive(Default)]
struct Seen {
    bodies: Vec<(HeaderMap, String)>,
}

/// An HTTP endpoint that records each POST and answers `status`: to look at exactly what
/// the binary sends, and to answer what the real API would only under faults.
async fn capture(status: StatusCode) -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/sensor",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let store = store.clone();
            async move {
                store.lock().unwrap().bodies.push((headers, body));
                status
            }
        }),
    );
    (listen(app).await, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_1_sends_the_tutorials_single_object_with_the_api_key() {
    let (url, seen) = capture(StatusCode::ACCEPTED).await;
    let out = loadtest(&[
        "--ingest-url",
        &url,
        "--rate",
        "20",
        "--readings",
        "5",
        "--batch",
        "1",
        "--api-key",
        "s3cret",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.bodies.len(), 5);
    for (headers, body) in &seen.bodies {
        assert_eq!(headers["authorization"], "Bearer s3cret");
        assert_eq!(headers["content-type"], "application/json");
        let v: Value = serde_json::from_str(body).unwrap();
        let o = v
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {body}"));
        let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["location", "temperature", "time"], "{body}");
        assert!(o["location"].as_str().unwrap().starts_with("lt-"));
        assert!(o["temperature"].is_f64());
        chrono::DateTime::parse_from_rfc3339(o["time"].as_str().unwrap()).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_2xx_answers_count_as_errors() {
    let (url, seen) = capture(StatusCode::SERVICE_UNAVAILABLE).await;
    let json = scratch("errors").join("out.json");
    let out = loadtest(&[
        "--ingest-url",
        &url,
        "--rate",
        "100",
        "--readings",
        "30",
        "--batch",
        "3",
        "--json",
        json.to_str().unwrap(),
        "--threshold",
        "errors<5",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("threshold breached: errors<5 (errors was 10)"));
    let v = read_json(&json);
    assert_eq!(v["status"]["503"], 10, "{v}");
    assert_eq!(v["errors"], 10);
    assert_eq!(v["readings"]["sent"], 30);
    assert_eq!(v["readings"]["accepted"], 0);
    let body: Value = serde_json::from_str(&seen.lock().unwrap().bodies[0].1).unwrap();
    assert_eq!(body.as_array().map(Vec::len), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_the_run_and_still_reports() {
    let (url, _seen) = capture(StatusCode::ACCEPTED).await;
    let json = scratch("interrupt").join("out.json");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["--ingest-url", &url, "--rate", "50", "--duration", "30s"])
        .args(["--json", json.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = child.id().unwrap().to_string();
    let kill = tokio::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(kill.success());
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("stops soon after Ctrl-C")
        .unwrap();
    assert_eq!(out.status.code(), Some(130), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"));
    let v = read_json(&json);
    assert_eq!(v["interrupted"], true);
    let sent = v["readings"]["sent"].as_u64().unwrap();
    assert!(
        (20..=150).contains(&sent),
        "{sent} readings in about 1.5 s at 50/s"
    );
    assert_eq!(v["status"]["202"], sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_goes_down_after_the_first_answer_stops_the_run() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Answers one request (loadtest's reachability check), then stops listening.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sensor", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = vec![0; 4096];
        let _ = conn.read(&mut buf).await;
        let answer =
            "HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        conn.write_all(answer.as_bytes()).await.unwrap();
        conn.shutdown().await.unwrap();
    });
    let out = loadtest(&["--ingest-url", &url, "--rate", "1000", "--duration", "3s"]).await;
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: no request got an answer ("),
        "{err}"
    );
    let tried: u64 = err["error: no request got an answer (".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        tried < 300,
        "stopped after {tried} of 3000 scheduled requests"
    );
    assert!(err.to_lowercase().contains("refused"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_accepted_readings_that_never_arrive() {
    // Answers 202 but stores nothing.
    let (url, _seen) = capture(StatusCode::ACCEPTED).await;
    let db = TestDb::new().await;
    let (out, v) = verified_run(
        "lost",
        &url,
        &db,
        "1s",
        &["--rate", "100", "--readings", "20", "--batch", "4"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("verify: 20 of 20 accepted readings lost"),
        "{err}"
    );
    assert_eq!(v["verify"]["lost"], 20, "{v}");
    assert_eq!(v["verify"]["rows"], 0);
    assert_eq!(v["verify"]["complete"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_in_every_request_scheduled_during_it() {
    // The first POST takes a second; the rest answer at once.
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let app = axum::Router::new().route(
        "/sensor",
        axum::routing::post(move || {
            let stall = first.swap(false, std::sync::atomic::Ordering::SeqCst);
            async move {
                if stall {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                StatusCode::ACCEPTED
            }
        }),
    );
    let url = listen(app).await;
    let json = scratch("stall").join("out.json");
    let out = loadtest(&[
        "--ingest-url",
        &url,
        "--rate",
        "20",
        "--duration",
        "2s",
        "--concurrency",
        "1",
        "--json",
        json.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let v = read_json(&json);
    assert_eq!(v["requests"]["total"], 40, "{v}");
    // Nearly half the requests were due during the stall and waited for it; measured from
    // their scheduled times, a quarter of all latencies are over half a second. (A sender
    // that waits before scheduling the next request would report one slow request.)
    let l = &v["latency_ms"];
    assert!(l["max"].as_f64().unwrap() >= 1000.0, "{l}");
    assert!(l["p90"].as_f64().unwrap() >= 500.0, "{l}");
}

/// An endpoint that answers 503 to the first POST of each body and 202 to the next ones.
async fn flaky() -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/sensor",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let store = store.clone();
            async move {
                let mut seen = store.lock().unwrap();
                let again = seen.bodies.iter().any(|(_, b)| *b == body);
                seen.bodies.push((headers, body));
                if again {
                    StatusCode::ACCEPTED
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }),
    );
    (listen(app).await, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_requests_are_retried_with_the_same_key_and_body_and_the_ledger_says_how_each_ended()
{
    let (url, seen) = flaky().await;
    let dir = scratch("retry");
    let (json, ledger) = (dir.join("out.json"), dir.join("ledger.csv"));
    let out = loadtest(&[
        "--ingest-url",
        &url,
        "--rate",
        "100",
        "--readings",
        "20",
        "--batch",
        "2",
        "--idempotency-share",
        "1",
        "--retry-for",
        "10s",
        "--json",
        json.to_str().unwrap(),
        "--ledger",
        ledger.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let v = read_json(&json);
    assert_eq!(v["requests"]["retries"], 10, "{v}");
    assert_eq!(v["requests"]["recovered"], 10, "{v}");
    assert_eq!(v["readings"]["accepted"], 20, "{v}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.bodies.len(), 20);
    let mut keys = std::collections::HashMap::new();
    for (headers, body) in &seen.bodies {
        let key = headers["idempotency-key"].to_str().unwrap().to_owned();
        assert!(key.starts_with("lt-"), "{key}");
        keys.entry(key).or_insert_with(Vec::new).push(body.clone());
    }
    // Each key was sent twice, with the same body.
    assert_eq!(keys.len(), 10);
    assert!(
        keys.values().all(|b| b.len() == 2 && b[0] == b[1]),
        "{keys:?}"
    );
    let text = std::fs::read_to_string(&ledger).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "location,time,outcome");
    assert_eq!(lines.len(), 21);
    assert!(lines[1..].iter().all(|l| l.ends_with(",acked")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_key_are_not_retried_after_an_answer_and_invalid_ones_are_refused() {
    let (url, seen) = capture(StatusCode::SERVICE_UNAVAILABLE).await;
    let dir = scratch("noretry");
    let (json, ledger) = (dir.join("out.json"), dir.join("ledger.csv"));
    let out = loadtest(&[
        "--ingest-url",
        &url,
        "--rate",
        "100",
        "--readings",
        "10",
        "--retry-for",
        "10s",
        "--json",
        json.to_str().unwrap(),
        "--ledger",
        ledger.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(seen.lock().unwrap().bodies.len(), 10);
    let text = std::fs::read_to_string(&ledger).unwrap();
    assert_eq!(text.lines().filter(|l| l.ends_with(",unknown")).count(), 10);
    assert!(seen.lock().unwrap().bodies[0]
        .0
        .get("idempotency-key")
        .is_none());

    // Invalid on purpose, against the real API: refused whole, and so in the ledger.
    let p = pipeline().await;
    let out = loadtest(&[
        "--api-key",
        &p.key,
        "--ingest-url",
        &p.ingest,
        "--rate",
        "200",
        "--readings",
        "40",
        "--batch",
        "4",
        "--invalid-share",
        "0.5",
        "--ledger",
        ledger.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = std::fs::read_to_string(&ledger).unwrap();
    let refused = text.lines().filter(|l| l.ends_with(",refused")).count();
    let acked = text.lines().filter(|l| l.ends_with(",acked")).count();
    assert_eq!(refused + acked, 40, "{text}");
    assert!(refused > 0 && refused % 4 == 0, "{refused} refused");
}

/// A stand-in for the pipeline whose writer is slow on purpose: each accepted request gets a
/// batch id, its first reading is written (with its batch record, as the writer does) at
/// once and each next one, as a part of its own, `next_part_after` later; every reading is
/// written `copies` times.
async fn split_writer(db: &TestDb, next_part_after: Duration, copies: usize) -> String {
    db.store.ensure_schema().await.unwrap();
    let url = db.config.url.clone();
    let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let app = axum::Router::new().route(
        "/sensor",
        axum::routing::post(move |body: String| {
            let (url, n) = (url.clone(), n.clone());
            async move {
                let readings: Vec<Value> = serde_json::from_str(&body).unwrap();
                let id = format!("b-{}", n.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
                let (batch, accepted) = (id.clone(), readings.len());
                tokio::spawn(async move {
                    let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                        .await
                        .unwrap();
                    tokio::spawn(conn);
                    for (part, r) in readings.iter().enumerate() {
                        if part > 0 {
                            tokio::time::sleep(next_part_after).await;
                        }
                        let tx = client.transaction().await.unwrap();
                        for _ in 0..copies {
                            tx.execute(
                                "INSERT INTO sensor_data (time, location, temperature)
                                 VALUES ($1::text::timestamptz, $2, $3)",
                                &[
                                    &r["time"].as_str().unwrap(),
                                    &r["location"].as_str().unwrap(),
                                    &r["temperature"].as_f64().unwrap(),
                                ],
                            )
                            .await
                            .unwrap();
                        }
                        tx.execute(
                            "INSERT INTO ingest_batches (batch_id, part, readings)
                             VALUES ($1, $2, 1)",
                            &[&batch, &(part as i32)],
                        )
                        .await
                        .unwrap();
                        tx.commit().await.unwrap();
                    }
                });
                (
                    StatusCode::ACCEPTED,
                    axum::Json(serde_json::json!({"accepted": accepted, "batch_id": id})),
                )
            }
        }),
    );
    listen(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_counts_as_queryable_only_once_all_its_parts_are_written() {
    let db = TestDb::new().await;
    let url = split_writer(&db, Duration::from_millis(800), 1).await;
    let (out, v) = verified_run(
        "parts",
        &url,
        &db,
        "20s",
        &["--rate", "20", "--readings", "20", "--batch", "2"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let verify = &v["verify"];
    assert_eq!(verify["expected"], 20, "{verify}");
    assert_eq!(verify["lost"], 0, "{verify}");
    assert_eq!(verify["duplicated"], 0, "{verify}");
    // Every reading waits for its request's second part: none is queryable sooner.
    let lag = &verify["lag_ms"];
    assert!(lag["p50"].as_f64().unwrap() >= 800.0, "{lag}");
    assert_eq!(lag_readings(verify), 20, "{verify}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_readings_stored_twice() {
    let db = TestDb::new().await;
    let url = split_writer(&db, Duration::ZERO, 2).await;
    let (out, v) = verified_run(
        "twice",
        &url,
        &db,
        "20s",
        &[
            "--rate",
            "30",
            "--readings",
            "9",
            "--batch",
            "3",
            "--sensors",
            "2",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    let verify = &v["verify"];
    assert_eq!(verify["rows"], 18, "{verify}");
    assert_eq!(verify["duplicated"], 9, "{verify}");
    assert_eq!(verify["lost"], 0, "{verify}");
    assert_eq!(verify["complete"], true, "{verify}");
}
