//! The Grafana dashboard's SQL runs against the real schema: every panel query, with
//! Grafana's macros expanded the way its PostgreSQL datasource expands them, returns rows.

use readings::testing::TestDb;
use serde_json::Value;

fn expand(sql: &str) -> String {
    sql.replace(
        "$__timeGroupAlias(time, $__interval)",
        "date_bin(INTERVAL '5 minutes', time, TIMESTAMPTZ '2000-01-03') AS time",
    )
    .replace(
        "$__timeGroupAlias(time, '1m')",
        "date_bin(INTERVAL '1 minute', time, TIMESTAMPTZ '2000-01-03') AS time",
    )
    .replace(
        "$__timeFilter(time)",
        "time BETWEEN now() - INTERVAL '6 hours' AND now()",
    )
    .replace("$location", "'kitchen','attic'")
}

#[tokio::test]
async fn every_dashboard_query_runs_and_returns_rows() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../grafana/dashboards/sensor-pipeline.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let db = TestDb::new().await;
    let now = chrono::Utc::now().timestamp_micros();
    let rows: Vec<(i64, &str, f64)> = (0..120)
        .map(|i| {
            (
                now - i * 60_000_000,
                if i % 2 == 0 { "kitchen" } else { "attic" },
                20.0 + i as f64 / 10.0,
            )
        })
        .collect();
    db.insert(&rows).await;
    let client = db.client().await;

    let mut queries: Vec<(String, String)> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap().to_owned();
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |t| (title.clone(), t["rawSql"].as_str().unwrap().to_owned()))
        })
        .collect();
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        queries.push((
            var["name"].as_str().unwrap().to_owned(),
            var["query"].as_str().unwrap().to_owned(),
        ));
    }
    assert!(queries.len() >= 5);
    for (title, sql) in queries {
        let result = client.query(&expand(&sql), &[]).await;
        let rows = result.unwrap_or_else(|e| panic!("{title}: {e:?}\n{sql}"));
        assert!(!rows.is_empty(), "{title} returned nothing");
    }
}
