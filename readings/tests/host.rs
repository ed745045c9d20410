//! The local HTTP host (`readings::http::server`) under clients that misbehave: slow headers, slow
//! bodies, more requests than it takes at once, and a shutdown with a request in flight.
//! Raw TCP clients, so the tests see exactly what a client gets: the status line, headers,
//! body, and whether the connection was closed.
//!
//! `sigterm_lets_the_request_in_flight_finish` sends SIGTERM to this test process: it is the
//! only test here whose server listens for it (the others are shut down by a future of their
//! own), and the signal handler is installed before the signal is sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use readings::config::HttpConfig;
use readings::http::server::serve_with;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

/// A handler that reports it started, then waits for the test to let it finish.
#[derive(Clone)]
struct Gate {
    entered: mpsc::UnboundedSender<()>,
    release: Arc<Semaphore>,
}

async fn held(State(gate): State<Gate>) -> &'static str {
    let _ = gate.entered.send(());
    let _permit = gate.release.acquire().await;
    "finished"
}

/// Reads the body the way ingest-api does, mapping any failure to 413: the host's 408 must
/// win over whatever the handler makes of a body that timed out.
async fn read_body(body: Body) -> (StatusCode, String) {
    match axum::body::to_bytes(body, 1 << 20).await {
        Ok(bytes) => (StatusCode::OK, format!("read {} bytes", bytes.len())),
        Err(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too large".into()),
    }
}

/// `/held` waits for the gate, `/fast` answers at once, `/body` reads the body.
fn app() -> (Router, mpsc::UnboundedReceiver<()>, Arc<Semaphore>) {
    let (entered, entered_rx) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let router = Router::new()
        .route("/held", get(held))
        .route("/fast", get(|| async { "fast" }))
        .route("/body", post(read_body))
        .with_state(Gate {
            entered,
            release: release.clone(),
        });
    (router, entered_rx, release)
}

fn config() -> HttpConfig {
    HttpConfig {
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(10),
        max_concurrent_requests: 100,
        shutdown_grace: Duration::from_secs(10),
    }
}

/// A server on a free loopback port, and the sender that shuts it down.
struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(router: Router, config: HttpConfig) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        serve_with(router, listener, &config, async {
            let _ = stopped.await;
        })
        .await
    });
    Server {
        addr,
        stop: Some(stop),
        task,
    }
}

/// An answer as the client saw it.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// Reads one answer to the end of the connection (requests here say `Connection: close`,
/// or the server closes it), within `limit`. `None` when the server closed the connection
/// without answering.
async fn read_answer(stream: &mut (impl AsyncRead + Unpin), limit: Duration) -> Option<Answer> {
    let mut raw = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no answer and no close within {limit:?}; got so far: {:?}",
        String::from_utf8_lossy(&raw)
    );
    if raw.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Some(Answer {
        status,
        headers,
        body: body.to_owned(),
    })
}

async fn send(addr: SocketAddr, request: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
}

async fn fetch(addr: SocketAddr, path: &str) -> Answer {
    let mut stream = send(addr, &get_request(path)).await;
    read_answer(&mut stream, Duration::from_secs(10))
        .await
        .expect("an answer")
}

/// Writes `lines` one at a time, `every` apart, until the server closes the connection;
/// returns how long after the first byte that was, or `None` if every line was written and
/// the connection is still open.
async fn drip(stream: &mut TcpStream, lines: &[String], every: Duration) -> Option<Duration> {
    let started = Instant::now();
    for line in lines {
        if stream.write_all(line.as_bytes()).await.is_err() {
            return Some(started.elapsed());
        }
        // Anything but a timeout (end of stream, reset, an answer) ends the connection.
        let mut buf = [0u8; 1024];
        if tokio::time::timeout(every, stream.read(&mut buf))
            .await
            .is_ok()
        {
            return Some(started.elapsed());
        }
    }
    None
}

#[tokio::test]
async fn a_client_that_sends_its_headers_too_slowly_is_cut_off() {
    let (router, _entered, _release) = app();
    let server = start(
        router,
        HttpConfig {
            header_timeout: Duration::from_secs(1),
            ..config()
        },
    )
    .await;

    // Slowloris: a header line every 200 ms, for up to 6 s; never the blank line.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut lines = vec!["GET /fast HTTP/1.1\r\nHost: test\r\n".to_owned()];
    lines.extend((0..30).map(|i| format!("X-Slow-{i}: still sending\r\n")));
    let closed_after = drip(&mut stream, &lines, Duration::from_millis(200))
        .await
        .expect("the server kept a connection open whose headers never ended");
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_secs(3),
        "closed after {closed_after:?}; the header timeout is 1 s"
    );

    // A client that sends its request at once is answered as usual.
    let answer = fetch(server.addr, "/fast").await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "fast"));
}

#[tokio::test]
async fn a_client_that_sends_its_body_too_slowly_gets_408() {
    let (router, _entered, _release) = app();
    let server = start(
        router,
        HttpConfig {
            body_timeout: Duration::from_secs(1),
            ..config()
        },
    )
    .await;

    // Promises 100 bytes, sends 10, then one every 200 ms (it would take 18 s).
    let started = Instant::now();
    let stream = send(
        server.addr,
        "POST /body HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n[{\"locati",
    )
    .await;
    let (mut reader, mut writer) = stream.into_split();
    let trickle = async {
        for _ in 0..90 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer.write_all(b" ").await.is_err() {
                break;
            }
        }
    };
    let answer = tokio::select! {
        () = trickle => panic!("the whole body was sent without an answer"),
        answer = read_answer(&mut reader, Duration::from_secs(10)) => answer,
    };
    let answer = answer.expect("an answer before the connection closed");
    let elapsed = started.elapsed();
    assert_eq!(answer.status, 408, "{answer:?}");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4),
        "answered after {elapsed:?}; the body timeout is 1 s"
    );
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.header("connection"), Some("close"));
    let error = answer.json()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("did not arrive within 1s"), "{error}");

    // A body sent at once is read as usual.
    let mut stream = send(
        server.addr,
        "POST /body HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    let answer = read_answer(&mut stream, Duration::from_secs(5))
        .await
        .expect("an answer");
    assert_eq!((answer.status, answer.body.as_str()), (200, "read 5 bytes"));
}

#[tokio::test]
async fn requests_beyond_the_cap_get_503_with_retry_after() {
    let (router, mut entered, release) = app();
    let server = start(
        router,
        HttpConfig {
            max_concurrent_requests: 2,
            ..config()
        },
    )
    .await;

    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(send(server.addr, &get_request("/held")).await);
        tokio::time::timeout(Duration::from_secs(5), entered.recv())
            .await
            .expect("the held request reached its handler");
    }

    // Two in flight: a third is refused at once, on any route.
    for path in ["/fast", "/held"] {
        let started = Instant::now();
        let answer = fetch(server.addr, path).await;
        assert_eq!(answer.status, 503, "{path}: {answer:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "{path}: queued");
        assert_eq!(answer.header("retry-after"), Some("1"), "{path}");
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert_eq!(
            answer.json()["error"],
            "too many requests in progress; retry later"
        );
    }

    // Once they finish, requests are taken again.
    release.add_permits(2);
    for mut stream in held {
        let answer = read_answer(&mut stream, Duration::from_secs(5))
            .await
            .expect("an answer");
        assert_eq!((answer.status, answer.body.as_str()), (200, "finished"));
    }
    let answer = fetch(server.addr, "/fast").await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish() {
    let (router, mut entered, release) = app();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // What the binaries run: the default bounds, stopped by SIGTERM or Ctrl-C.
    let server = tokio::spawn(readings::http::serve_on(router, listener));

    // An idle keep-alive connection, which must not hold the shutdown up.
    let mut idle = send(addr, "GET /fast HTTP/1.1\r\nHost: test\r\n\r\n").await;
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    let mut in_flight = send(addr, &get_request("/held")).await;
    tokio::time::timeout(Duration::from_secs(5), entered.recv())
        .await
        .expect("the request reached its handler");

    // The accept loop has polled its shutdown future (it accepted since), so the signal
    // handler is in place and SIGTERM stops the server, not this process.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    // No new connections once the signal is handled.
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if TcpStream::connect(addr).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "still accepting connections after SIGTERM");
    assert!(!server.is_finished(), "stopped with a request in flight");

    // The request in flight is answered in full; then the server stops, well within its
    // 20 s grace period (the idle connection does not hold it up).
    tokio::time::sleep(Duration::from_millis(300)).await;
    release.add_permits(1);
    let answer = read_answer(&mut in_flight, Duration::from_secs(5))
        .await
        .expect("the request in flight was answered");
    assert_eq!((answer.status, answer.body.as_str()), (200, "finished"));
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stopped once its request was answered")
        .unwrap()
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(1), idle.read(&mut buf))
        .await
        .expect("the idle connection was closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "the idle connection was closed");
}

#[tokio::test]
async fn shutdown_cuts_off_requests_that_outlive_the_grace_period() {
    let (router, mut entered, _release) = app();
    let mut server = start(
        router,
        HttpConfig {
            shutdown_grace: Duration::from_millis(500),
            ..config()
        },
    )
    .await;
    let mut stuck = send(server.addr, &get_request("/held")).await;
    tokio::time::timeout(Duration::from_secs(5), entered.recv())
        .await
        .expect("the request reached its handler");

    let started = Instant::now();
    if let Some(stop) = server.stop.take() {
        let _ = stop.send(());
    }
    tokio::time::timeout(Duration::from_secs(5), &mut server.task)
        .await
        .expect("the server stopped")
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "stopped after {took:?}; the grace period is 500 ms"
    );
    // The client's connection is closed without an answer.
    assert!(read_answer(&mut stuck, Duration::from_secs(2))
        .await
        .is_none());
}
