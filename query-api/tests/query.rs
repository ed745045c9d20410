//! query-api over HTTP against a real PostgreSQL.

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
    let app = query_api::router(db.store.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sensor", listener.local_addr().unwrap());
    tokio::spawn(readings::http::serve_on(app, listener));
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
    ] {
        let q: Vec<(&str, String)> = q.into_iter().map(|(k, v)| (k, v.to_owned())).collect();
        let (status, body) = get(&url, &q).await;
        assert_eq!(status, 400, "{q:?}: {body}");
        assert_eq!(body["error"], "invalid query parameters");
        assert_eq!(body["details"][0]["parameter"], name, "{q:?}: {body}");
    }
}

#[tokio::test]
async fn sql_in_parameters_is_only_data() {
    let (db, url) = setup().await;
    let (status, body) = get(&url, &[("location", "attic' OR '1'='1".into())]).await;
    assert_eq!((status, body), (200, json!([])));
    assert_eq!(db.count().await, 40);
}
