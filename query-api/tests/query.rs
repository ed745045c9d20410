//! query-api over HTTP against a real PostgreSQL.

use readings::http::auth::Auth;
use readings::testing::TestDb;
use serde_json::{json, Value};

const BASE: i64 = 1_700_000_000;

async fn setup() -> (TestDb, String) {
    let db = TestDb::new().await;
    // 40 readings one second apart; every fourth in the attic, the rest in the cellar.
    let rows: Vec<(i64, &str, f64)> = (0..40)
        .map(|i| {
            let loc = if i % 4 == 0 { "attic" } else { "cellar" };
            ((BASE + i) * 1_000_000 + 250_000, loc, i as f64 + 0.5)
        })
        .collect();
    db.insert(&rows).await;
    let app = query_api::router(db.store.clone(), &Auth::Off);
    let url = format!("{}/sensor", readings::testing::serve(app).await);
    (db, url)
}

async fn get(url: &str, query: &[(&str, String)]) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(url)
        .query(query)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn offsets(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["time"].as_i64().unwrap() - BASE)
        .collect()
}

#[tokio::test]
async fn default_is_the_tutorials_five_newest() {
    let (_db, url) = setup().await;
    let (status, body) = get(&url, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(offsets(&body), [39, 38, 37, 36, 35]);
    assert_eq!(
        body[0],
        json!({"time": BASE + 39, "location": "cellar", "temperature": 39.5})
    );
}

#[tokio::test]
async fn each_parameter_filters() {
    let (_db, url) = setup().await;
    let (_, b) = get(&url, &[("location", "attic".into())]).await;
    assert_eq!(offsets(&b), [36, 32, 28, 24, 20]);
    assert!(b
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["location"] == "attic"));

    let (_, b) = get(&url, &[("limit", "1000".into())]).await;
    assert_eq!(offsets(&b), (0..40).rev().collect::<Vec<_>>());
    let (_, b) = get(&url, &[("limit", "1".into())]).await;
    assert_eq!(offsets(&b), [39]);

    // since is inclusive, until exclusive; epoch seconds or RFC 3339.
    let (_, b) = get(
        &url,
        &[("since", (BASE + 37).to_string()), ("limit", "10".into())],
    )
    .await;
    assert_eq!(offsets(&b), [39, 38, 37]);
    let until = chrono::DateTime::from_timestamp(BASE + 3, 0)
        .unwrap()
        .to_rfc3339();
    let (_, b) = get(&url, &[("until", until)]).await;
    assert_eq!(offsets(&b), [2, 1, 0]);
    let (_, b) = get(
        &url,
        &[
            ("location", "cellar".into()),
            ("since", (BASE + 10).to_string()),
            ("until", (BASE + 15).to_string()),
            ("limit", "3".into()),
        ],
    )
    .await;
    assert_eq!(offsets(&b), [14, 13, 11]);
    let (_, b) = get(&url, &[("location", "nowhere".into())]).await;
    assert_eq!(b, json!([]));
}

#[tokio::test]
async fn bad_parameters_are_400_with_the_parameter_named() {
    let (_db, url) = setup().await;
    for (q, name) in [
        (vec![("limit", "0")], "limit"),
        (vec![("limit", "1001")], "limit"),
        (vec![("limit", "ten")], "limit"),
        (vec![("since", "last tuesday")], "since"),
        (vec![("until", "")], "until"),
        (vec![("location", "")], "location"),
        (vec![("order", "asc")], "order"),
        (
            vec![("since", "1700000010"), ("until", "1700000005")],
            "until",
        ),
        // Year -251,000: outside what PostgreSQL can compare (this answered 500).
        (vec![("since", "-8e15")], "since"),
        // A location no reading can have: NUL, which PostgreSQL refuses in text (500 too).
        (vec![("cursor", "1700000000000000.00")], "cursor"),
    ] {
        let q: Vec<(&str, String)> = q.into_iter().map(|(k, v)| (k, v.to_owned())).collect();
        let (status, body) = get(&url, &q).await;
        assert_eq!(status, 400, "{q:?}: {body}");
        assert_eq!(body["error"], "invalid query parameters");
        assert_eq!(body["details"][0]["parameter"], name, "{q:?}: {body}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let (_db, url) = setup().await;
    for path in ["/sensor", "/sensor/latest", "/sensor/stats"] {
        let r = reqwest::Client::new()
            .delete(url.replace("/sensor", path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 405, "{path}");
        // RFC 9110: a 405 names the methods the route takes.
        assert_eq!(r.headers()["allow"], "GET, HEAD", "{path}");
        assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    }
    let r = reqwest::get(url.replace("/sensor", "/nope")).await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
}

#[tokio::test]
async fn sql_in_parameters_is_only_data() {
    let (db, url) = setup().await;
    let (status, body) = get(&url, &[("location", "attic' OR '1'='1".into())]).await;
    assert_eq!((status, body), (200, json!([])));
    assert_eq!(db.count().await, 40);
}

#[tokio::test]
async fn cursor_pages_walk_back_through_ties_without_gaps_or_repeats() {
    let db = TestDb::new().await;
    // 30 readings at 10 distinct times: three locations share each time.
    let rows: Vec<(i64, String, f64)> = (0..30)
        .map(|i| {
            (
                (BASE + i / 3) * 1_000_000,
                format!("loc-{}", i % 3),
                i as f64,
            )
        })
        .collect();
    let refs: Vec<(i64, &str, f64)> = rows.iter().map(|(t, l, v)| (*t, l.as_str(), *v)).collect();
    db.insert(&refs).await;
    let app = query_api::router(db.store.clone(), &Auth::Off);
    let url = format!("{}/sensor", readings::testing::serve(app).await);

    let client = reqwest::Client::new();
    let mut seen: Vec<(i64, String)> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut q = vec![("limit", "4".to_owned())];
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let r = client.get(&url).query(&q).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        cursor = r
            .headers()
            .get(query_api::NEXT_CURSOR)
            .map(|v| v.to_str().unwrap().to_owned());
        let page: Value = r.json().await.unwrap();
        for row in page.as_array().unwrap() {
            seen.push((
                row["time"].as_i64().unwrap(),
                row["location"].as_str().unwrap().to_owned(),
            ));
        }
        pages += 1;
        if cursor.is_none() {
            break;
        }
        assert!(pages < 20, "pagination does not end");
    }
    let mut want: Vec<(i64, String)> = rows
        .iter()
        .map(|(t, l, _)| (t / 1_000_000, l.clone()))
        .collect();
    want.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, want, "every reading once, newest first");
    assert_eq!(pages, 8, "7 full pages of 4, then a short one");
}

#[tokio::test]
async fn latest_gives_each_locations_newest_reading() {
    let (_db, url) = setup().await;
    let latest = url.replace("/sensor", "/sensor/latest");
    let (status, body) = get(&latest, &[]).await;
    assert_eq!(status, 200);
    // attic: every 4th offset (newest 36); cellar: the others (newest 39).
    assert_eq!(
        body,
        json!([
            {"time": BASE + 36, "location": "attic", "temperature": 36.5},
            {"time": BASE + 39, "location": "cellar", "temperature": 39.5}
        ])
    );
    let (_, body) = get(&latest, &[("location", "cellar,nowhere".into())]).await;
    assert_eq!(
        body,
        json!([{"time": BASE + 39, "location": "cellar", "temperature": 39.5}])
    );
    let (status, body) = get(&latest, &[("location", ",".into())]).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn stats_match_values_computed_here() {
    let db = TestDb::new().await;
    // Two days of readings every 10 minutes for two locations, from a day boundary.
    let day0 = 1_709_942_400; // 2024-03-09T00:00:00Z
    let mut rows = Vec::new();
    for i in 0..288i64 {
        let t = day0 + i * 600;
        rows.push((t, "north", (i % 17) as f64 - 3.25));
        rows.push((t, "south", (i % 5) as f64 * 1.5));
    }
    let seed: Vec<(i64, &str, f64)> = rows
        .iter()
        .map(|(t, l, v)| (t * 1_000_000, *l, *v))
        .collect();
    db.insert(&seed).await;
    let app = query_api::router(db.store.clone(), &Auth::Off);
    let url = format!("{}/sensor/stats", readings::testing::serve(app).await);

    let expect = |bucket: i64, since: i64, until: i64, loc: Option<&str>| -> Vec<Value> {
        let mut groups: std::collections::BTreeMap<i64, Vec<f64>> = Default::default();
        for (t, l, v) in &rows {
            if *t >= since && *t < until && loc.is_none_or(|x| x == *l) {
                groups
                    .entry(t - (t - 946_857_600).rem_euclid(bucket))
                    .or_default()
                    .push(*v);
            }
        }
        groups
            .into_iter()
            .map(|(b, vs)| {
                let n = vs.len() as f64;
                json!({
                    "bucket": b,
                    "count": vs.len(),
                    "avg": vs.iter().sum::<f64>() / n,
                    "min": vs.iter().cloned().fold(f64::INFINITY, f64::min),
                    "max": vs.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
                })
            })
            .collect()
    };
    let close = |got: &Value, want: &[Value]| {
        let got = got.as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, w) in got.iter().zip(want) {
            for k in ["bucket", "count"] {
                assert_eq!(g[k], w[k], "{g} vs {w}");
            }
            for k in ["avg", "min", "max"] {
                let (a, b) = (g[k].as_f64().unwrap(), w[k].as_f64().unwrap());
                assert!((a - b).abs() < 1e-9, "{k}: {g} vs {w}");
            }
        }
    };
    let until = day0 + 2 * 86_400;
    for (bucket, secs, since) in [
        ("5m", 300, until - 86_400),
        ("1h", 3600, day0),
        ("1d", 86_400, day0),
    ] {
        for loc in [None, Some("north")] {
            let mut q = vec![
                ("bucket", bucket.to_owned()),
                ("since", since.to_string()),
                ("until", until.to_string()),
            ];
            if let Some(l) = loc {
                q.push(("location", l.to_owned()));
            }
            let (status, body) = get(&url, &q).await;
            assert_eq!(status, 200, "{body}");
            close(&body, &expect(secs, since, until, loc));
        }
    }
    // More than 1000 buckets is refused.
    let four_days_ago = (until - 4 * 86_400).to_string();
    let (status, body) = get(
        &url,
        &[
            ("bucket", "5m".into()),
            ("since", four_days_ago),
            ("until", until.to_string()),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["details"][0]["parameter"], "bucket");
}

#[tokio::test]
async fn csv_on_every_route() {
    let (_db, url) = setup().await;
    for (path, query, header, rows) in [
        (
            "/sensor",
            "limit=2&format=csv",
            "time,location,temperature",
            2,
        ),
        (
            "/sensor/latest",
            "format=csv",
            "time,location,temperature",
            2,
        ),
        (
            "/sensor/stats",
            "bucket=1h&since=1699990000&until=1700010000&format=csv",
            "bucket,count,avg,min,max",
            1,
        ),
    ] {
        let r = reqwest::get(format!("{}{path}?{query}", url.trim_end_matches("/sensor")))
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv"));
        let text = r.text().await.unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], header, "{path}");
        assert_eq!(lines.len(), rows + 1, "{path}: {text}");
    }
    let r = reqwest::get(format!("{url}?limit=1&format=csv"))
        .await
        .unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        format!("time,location,temperature\n{},cellar,39.5\n", BASE + 39)
    );
}

/// Fetches `path?query` as CSV: the `Content-Disposition` header and the parsed records
/// (header row first).
async fn csv_download(base: &str, path_and_query: &str) -> (String, Vec<Vec<String>>) {
    let r = reqwest::get(format!("{base}{path_and_query}"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{path_and_query}");
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let disposition = r
        .headers()
        .get("content-disposition")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = r.text().await.unwrap();
    let records = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    (disposition, records)
}

#[tokio::test]
async fn csv_is_safe_to_open_in_a_spreadsheet_on_every_route() {
    // Locations a spreadsheet would run as formulas (written straight to the table, as a
    // database shared with other tools may hold them), and harmless ones.
    let cases = [
        (
            "=HYPERLINK(\"http://attacker.invalid\",\"open\")",
            "'=HYPERLINK(\"http://attacker.invalid\",\"open\")",
        ),
        ("+SUM(1,2)", "'+SUM(1,2)"),
        ("-2+3", "'-2+3"),
        ("@cmd|' /C calc'!A0", "'@cmd|' /C calc'!A0"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        ("kitchen", "kitchen"),
        ("a=b+c", "a=b+c"),
    ];
    let db = TestDb::new().await;
    let rows: Vec<(i64, &str, f64)> = cases
        .iter()
        .enumerate()
        .map(|(i, (loc, _))| ((BASE + i as i64) * 1_000_000, *loc, -7.25 - i as f64))
        .collect();
    db.insert(&rows).await;
    let base = readings::testing::serve(query_api::router(db.store.clone(), &Auth::Off)).await;
    let expected = |records: &[Vec<String>]| {
        let mut got: Vec<(String, String)> = records[1..]
            .iter()
            .map(|r| (r[1].clone(), r[2].clone()))
            .collect();
        got.sort();
        let mut want: Vec<(String, String)> = cases
            .iter()
            .enumerate()
            .map(|(i, (_, cell))| ((*cell).to_owned(), (-7.25 - i as f64).to_string()))
            .collect();
        want.sort();
        assert_eq!(got, want);
    };

    let (disposition, records) = csv_download(&base, "/sensor?limit=100&format=csv").await;
    assert_eq!(disposition, r#"attachment; filename="sensor-readings.csv""#);
    assert_eq!(records[0], ["time", "location", "temperature"]);
    expected(&records);
    // Numbers stay numbers: the negative temperature and the time are not prefixed.
    assert_eq!(records[1][0], (BASE + 7).to_string());
    assert_eq!(records[1][2], "-14.25");

    let (disposition, records) = csv_download(&base, "/sensor/latest?format=csv").await;
    assert_eq!(disposition, r#"attachment; filename="sensor-latest.csv""#);
    assert_eq!(records[0], ["time", "location", "temperature"]);
    expected(&records);

    // Stats hold only numbers: none is touched, negative ones included.
    let (disposition, records) = csv_download(
        &base,
        "/sensor/stats?bucket=1d&since=1699920000&until=1700006400&format=csv",
    )
    .await;
    assert_eq!(disposition, r#"attachment; filename="sensor-stats.csv""#);
    assert_eq!(records[0], ["bucket", "count", "avg", "min", "max"]);
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[1][1], "8");
    assert_eq!(records[1][3], "-14.25");
    assert_eq!(records[1][4], "-7.25");
    assert!(records[1][2].starts_with("-10.75"), "{records:?}");

    // JSON answers are not attachments and keep the locations as they are.
    let r = reqwest::get(format!("{base}/sensor?limit=1"))
        .await
        .unwrap();
    assert!(r.headers().get("content-disposition").is_none());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body[0]["location"], "a=b+c");
}

#[tokio::test]
async fn rows_with_nulls_in_the_tutorials_table_are_skipped_on_every_route() {
    // The tutorial's table, whose handler stored whatever JSON it got.
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE sensor_data (time TIMESTAMPTZ, location TEXT, temperature DOUBLE PRECISION);
         INSERT INTO sensor_data VALUES
             (to_timestamp(1700000000), 'bedroom', 66),
             (to_timestamp(1700000060), NULL, 71),
             (to_timestamp(1700000120), 'kitchen', NULL);",
    )
    .await
    .unwrap();
    let app = query_api::router(db.store.clone(), &Auth::Off);
    let base = readings::testing::serve(app).await;
    let one = json!([{"time": 1_700_000_000, "location": "bedroom", "temperature": 66.0}]);
    let (status, body) = get(&format!("{base}/sensor"), &[]).await;
    assert_eq!((status, &body), (200, &one));
    let (status, body) = get(&format!("{base}/sensor/latest"), &[]).await;
    assert_eq!((status, &body), (200, &one));
    let range = [
        ("since", "1699999200".to_owned()),
        ("until", "1700006400".to_owned()),
    ];
    let (status, body) = get(&format!("{base}/sensor/stats"), &range).await;
    assert_eq!(status, 200);
    assert_eq!(body[0]["count"], 1);
    assert_eq!(body[0]["avg"], 66.0);
    let csv = reqwest::get(format!("{base}/sensor?format=csv"))
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert_eq!(csv.text().await.unwrap().lines().count(), 2);
}

#[tokio::test]
async fn a_pool_wait_that_times_out_answers_503_with_retry_after_on_every_route() {
    let (db, _) = setup().await;
    // One connection, waited for at most a second, and keys checked as deployed.
    let store = readings::Store::new(&readings::config::DbConfig {
        pool_size: 1,
        connect_timeout: std::time::Duration::from_secs(1),
        ..db.config.clone()
    })
    .unwrap();
    let key = db.api_key(&[readings::http::auth::Scope::Query]).await;
    let auth = Auth::new(&readings::config::AuthConfig::default(), store.clone());
    let base = readings::testing::serve(query_api::router(store.clone(), &auth)).await;
    let routes = ["/sensor", "/sensor/latest", "/sensor/stats"];
    let http = reqwest::Client::new();
    // Each route answers, and the key's lookup is cached.
    for route in routes {
        let r = http
            .get(format!("{base}{route}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{route}");
    }

    // The only connection busy with a long statement, as under load.
    let holder = store.clone();
    let held = tokio::spawn(async move {
        let client = holder.pool().get().await.unwrap();
        client.batch_execute("SELECT pg_sleep(10)").await.unwrap();
    });
    while store.pool().status().available > 0 {
        tokio::task::yield_now().await;
    }
    let get = |route: &str| http.get(format!("{base}{route}")).bearer_auth(&key).send();
    let answers = tokio::join!(get(routes[0]), get(routes[1]), get(routes[2]));
    for (route, r) in routes.into_iter().zip([answers.0, answers.1, answers.2]) {
        let r = r.unwrap();
        assert_eq!(r.status().as_u16(), 503, "{route}");
        assert!(
            r.headers().contains_key("retry-after"),
            "{route}: 503 carries Retry-After"
        );
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].is_string(), "{route}: a JSON error: {body}");
    }
    held.abort();
}

/// A query function that only checks the schema (`DB_SCHEMA=check`, as deployed) before the
/// deploy's migration has run answers 503 with `Retry-After` on every route, never 500.
#[tokio::test]
async fn before_the_migration_every_route_answers_503_with_retry_after() {
    let db = TestDb::new().await;
    let store = readings::Store::new(&readings::config::DbConfig {
        schema: readings::config::SchemaMode::Check,
        ..db.config.clone()
    })
    .unwrap();
    let base = readings::testing::serve(query_api::router(store, &Auth::Off)).await;
    for route in ["/sensor", "/sensor/latest", "/sensor/stats"] {
        let r = reqwest::get(format!("{base}{route}")).await.unwrap();
        assert_eq!(r.status().as_u16(), 503, "{route}");
        assert!(r.headers().contains_key("retry-after"), "{route}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("migrated"),
            "{route}: {body}"
        );
    }
}
