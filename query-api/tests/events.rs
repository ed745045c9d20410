//! The sample events in events/ run through the function as Lambda would deliver them
//! (`lambda_answer`: the steps of the Lambda host without the Runtime API), so they never
//! rot; and one request gets one answer whichever event source delivers it.

use readings::config::AuthConfig;
use readings::http::auth::{Auth, Scope};
use readings::testing::{
    answer_shape, event, event_with_key, lambda_answer, set_header, LambdaAnswer, TestDb,
};
use serde_json::{json, Map, Value};

/// Every query sample: file, the shape its answer takes (see `answer_shape`), rows.
const SAMPLES: [(&str, &str, usize); 7] = [
    ("query-get.json", "http", 2),
    ("query-get-params.json", "http", 1),
    ("query-get-named-stage.json", "http", 1),
    ("query-get-rest.json", "rest", 1),
    ("query-get-alb.json", "alb", 1),
    ("query-get-function-url.json", "http", 1),
    ("tutorial-get.json", "rest", 2),
];

async fn db_and_app() -> (TestDb, axum::Router) {
    let db = TestDb::new().await;
    db.insert(&[
        (1_678_882_392_000_000, "bedroom", 66.0),
        (1_678_882_393_000_000, "kitchen", 71.5),
    ])
    .await;
    let auth = Auth::new(&AuthConfig::default(), db.store.clone());
    let app = query_api::router(db.store.clone(), &auth);
    (db, app)
}

#[test]
fn every_query_sample_event_is_tested() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../events");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.starts_with("query-") || f == "tutorial-get.json")
        .collect();
    files.sort();
    let mut tested: Vec<String> = SAMPLES.iter().map(|s| s.0.to_owned()).collect();
    tested.sort();
    assert_eq!(files, tested);
}

#[tokio::test]
async fn sample_get_events_answer() {
    let (db, app) = db_and_app().await;
    let key = db.api_key(&[Scope::Query]).await;
    for (file, shape, rows) in SAMPLES {
        let answer = lambda_answer(app.clone(), &event_with_key(file, &key)).await;
        assert_eq!(answer_shape(&answer), shape, "{file}: {answer}");
        let read = LambdaAnswer::read(&answer);
        assert_eq!(read.status, 200, "{file}: {answer}");
        let body = read.json();
        assert_eq!(body.as_array().unwrap().len(), rows, "{file}: {body}");
    }
}

#[tokio::test]
async fn the_tutorials_get_event_as_it_is_gets_the_json_401() {
    let (_db, app) = db_and_app().await;
    let answer = lambda_answer(app, &event("tutorial-get.json")).await;
    assert_eq!(answer_shape(&answer), "rest", "{answer}");
    let read = LambdaAnswer::read(&answer);
    assert_eq!(read.status, 401, "{answer}");
    assert_eq!(read.headers["content-type"], ["application/json"]);
    assert_eq!(
        read.headers["www-authenticate"],
        ["Bearer realm=\"sensor-pipeline\""]
    );
    assert_eq!(
        read.json(),
        json!({"error": "missing API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`"})
    );
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The event with `query` as its query string, written as its source writes one: an HTTP
/// API or function URL event has `rawQueryString` (encoded) and `queryStringParameters`
/// (decoded); a REST event both `queryStringParameters` and
/// `multiValueQueryStringParameters`, decoded; an ALB event one of the two, as the client
/// sent it (encoded).
fn with_query(mut event: Value, query: &[(&str, &str)]) -> Value {
    let single = |encoded: bool| -> Value {
        let map: Map<String, Value> = query
            .iter()
            .map(|(k, v)| {
                let v = if encoded { encode(v) } else { (*v).to_owned() };
                (k.to_string(), Value::String(v))
            })
            .collect();
        Value::Object(map)
    };
    let multi = |encoded: bool| -> Value {
        let map: Map<String, Value> = single(encoded)
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), json!([v])))
            .collect();
        Value::Object(map)
    };
    if event["version"] == "2.0" {
        let raw: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        event["rawQueryString"] = Value::String(raw.join("&"));
        event["queryStringParameters"] = single(false);
    } else if event["requestContext"].get("elb").is_some() {
        if event.get("multiValueQueryStringParameters").is_some() {
            event["multiValueQueryStringParameters"] = multi(true);
        } else {
            event["queryStringParameters"] = single(true);
        }
    } else {
        event["queryStringParameters"] = single(false);
        event["multiValueQueryStringParameters"] = multi(false);
    }
    event
}

/// The same request sent as each of `files`, and the answer every one of them must get.
struct Case<'a> {
    files: &'a [&'a str],
    key: Option<&'a str>,
    query: Option<&'a [(&'a str, &'a str)]>,
    status: u16,
    rows: usize,
}

#[tokio::test]
async fn one_request_gets_one_answer_in_every_payload_shape() {
    let (db, app) = db_and_app().await;
    let key = db.api_key(&[Scope::Query]).await;
    let bearer = format!("Bearer {key}");
    // `+` must reach the parameters as `+`, never as a space: 13:00+01:00 is 12:00Z, so
    // the bedroom's 12:13:12Z reading is in, and a misread offset is either refused or
    // leaves it out.
    let query = [
        ("location", "bedroom"),
        ("since", "2023-03-15T13:00:00+01:00"),
        ("until", "2023-03-15T12:30:00Z"),
    ];
    let everywhere = SAMPLES.map(|s| s.0);
    let same_parameters = [
        "query-get-params.json",
        "query-get-named-stage.json",
        "query-get-rest.json",
        "query-get-alb.json",
        "query-get-function-url.json",
    ];
    let cases = [
        // No key: the same JSON 401, whatever the event.
        Case {
            files: &everywhere,
            key: None,
            query: None,
            status: 401,
            rows: 0,
        },
        // The 5 newest, with no parameters.
        Case {
            files: &["query-get.json", "tutorial-get.json"],
            key: Some(&bearer),
            query: None,
            status: 200,
            rows: 2,
        },
        // The same parameters in every shape, on the $default stage and on a named one.
        Case {
            files: &same_parameters,
            key: Some(&bearer),
            query: None,
            status: 200,
            rows: 1,
        },
        // A query string with `+` and `:`, in each source's encoding.
        Case {
            files: &everywhere,
            key: Some(&bearer),
            query: Some(&query),
            status: 200,
            rows: 1,
        },
    ];
    for Case {
        files,
        key,
        query,
        status,
        rows,
    } in cases
    {
        let mut answers = Vec::new();
        for file in files {
            let mut e = event(file);
            set_header(&mut e, "authorization", key);
            if let Some(query) = query {
                e = with_query(e, query);
            }
            let answer = lambda_answer(app.clone(), &e).await;
            let read = LambdaAnswer::read(&answer);
            assert_eq!(read.status, status, "{file}: {answer}");
            if status == 200 {
                let body = read.json();
                assert_eq!(body.as_array().unwrap().len(), rows, "{file}: {body}");
            }
            answers.push((file, read));
        }
        let (first, expected) = &answers[0];
        for (file, answer) in &answers[1..] {
            assert_eq!(answer, expected, "{file} differs from {first}");
        }
    }
}
