//! The functions' database roles: schema setup creates them and grants each what its
//! function does, and a function connected as one works, but cannot change the schema or
//! touch what it does not need. Functions that only check the schema (`DB_SCHEMA=check`)
//! never set it up, and say so until it is.

use chrono::Utc;
use readings::config::SchemaMode;
use readings::http::auth::{create_key, Scope};
use readings::model::envelope::{BatchPart, WireReading};
use readings::postgres::store::{Claim, Store, StoreError, TableKind};
use readings::query::RecentQuery;
use readings::testing::{expected_kind, far_deadline, run_policy_jobs, TestDb};

/// `sql` run as `config`'s role: Ok, or the error's SQLSTATE.
async fn run_as(config: &readings::config::DbConfig, sql: &str) -> Result<(), String> {
    let (client, conn) = tokio_postgres::connect(&config.url, tokio_postgres::NoTls)
        .await
        .expect("connect as the role");
    tokio::spawn(conn);
    client.batch_execute(sql).await.map_err(|e| {
        e.code()
            .map(|c| c.code().to_owned())
            .unwrap_or_else(|| e.to_string())
    })
}

/// Runs each of `statements`, then of [`SCHEMA_CHANGES`], as `config`'s role: each must
/// be refused for want of privilege (SQLSTATE 42501).
async fn assert_refused(config: &readings::config::DbConfig, statements: &[&str]) {
    for sql in statements.iter().chain(&SCHEMA_CHANGES) {
        let refused = run_as(config, sql).await;
        assert_eq!(refused.err().as_deref(), Some("42501"), "{sql}");
    }
}

/// The statements no function role may run: changing the schema, deleting readings.
const SCHEMA_CHANGES: [&str; 4] = [
    "ALTER TABLE sensor_data ADD COLUMN humidity double precision",
    "DROP TABLE sensor_locations",
    "CREATE TABLE intruder (x int)",
    "TRUNCATE sensor_data",
];

fn part(id: &str, rows: &[(i64, &str, f64)]) -> BatchPart {
    BatchPart::range(
        id,
        0,
        rows.len() as u32,
        rows.iter()
            .map(|(t, l, v)| WireReading(*t, (*l).into(), *v))
            .collect(),
    )
}

#[tokio::test]
async fn the_query_role_reads_and_cannot_write_or_change_the_schema() {
    let db = TestDb::new().await;
    db.store.ensure_schema().await.unwrap();
    let now = Utc::now().timestamp_micros();
    db.insert(&[(now, "attic", 21.5)]).await;
    let query = db.login_in("sensor_pipeline_query").await;
    let store = Store::new(&query).unwrap();
    assert_eq!(store.ready().await.unwrap(), expected_kind());
    let newest = store.recent(&RecentQuery::default()).await.unwrap();
    assert_eq!(newest.len(), 1);
    assert_eq!(store.latest(None).await.unwrap().len(), 1);
    // API keys are checked by the HTTP functions: it may read them.
    let key = create_key(&db.store, "dash", &[Scope::Query])
        .await
        .unwrap();
    assert!(store.api_key(&key.id).await.unwrap().is_some());

    assert_refused(
        &query,
        &[
            "INSERT INTO sensor_data VALUES (now(), 'x', 1)",
            "UPDATE sensor_data SET temperature = 0",
            "DELETE FROM sensor_data",
            "INSERT INTO api_keys (id, name, scopes, key_hash) VALUES ('x', 'x', '{}', '')",
            "INSERT INTO written_batches (batch_id, readings, written) VALUES ('x', 1, '{}')",
            "SELECT * FROM idempotency_keys",
        ],
    )
    .await;
    let e = store
        .write(&[&part("q", &[(now, "x", 1.0)])], far_deadline())
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate(), Some("42501"), "{e}");
}

#[tokio::test]
async fn the_ingest_role_checks_keys_and_claims_idempotency_keys_only() {
    let db = TestDb::new().await;
    db.store.ensure_schema().await.unwrap();
    let ingest = db.login_in("sensor_pipeline_ingest").await;
    let store = Store::new(&ingest).unwrap();
    let key = create_key(&db.store, "fleet", &[Scope::Ingest])
        .await
        .unwrap();
    assert!(store.api_key(&key.id).await.unwrap().is_some());
    assert_eq!(store.claim_key("b-1", "hash").await.unwrap(), Claim::New);
    assert_eq!(store.claim_key("b-1", "hash").await.unwrap(), Claim::Retry);
    assert_refused(
        &ingest,
        &[
            "INSERT INTO sensor_data VALUES (now(), 'x', 1)",
            "SELECT * FROM sensor_data",
            "UPDATE api_keys SET revoked_at = NULL",
            "DELETE FROM idempotency_keys",
        ],
    )
    .await;
}

#[tokio::test]
async fn the_writer_role_writes_readings_exactly_once_and_nothing_else() {
    let db = TestDb::new().await;
    db.store.ensure_schema().await.unwrap();
    let writer = db.login_in("sensor_pipeline_writer").await;
    let store = Store::new(&writer).unwrap();
    let now = Utc::now().timestamp_micros();
    // Readings a week apart: on a hypertable, new chunks made by the writer's role.
    let rows: Vec<(i64, &str, f64)> = (0..4)
        .map(|i| (now - i * 7 * 86_400_000_000, "cellar", i as f64))
        .collect();
    let p = part("w-1", &rows);
    assert_eq!(store.write(&[&p], far_deadline()).await.unwrap().rows, 4);
    assert_eq!(store.write(&[&p], far_deadline()).await.unwrap().rows, 0);
    if expected_kind() == TableKind::Hypertable {
        // Compressed chunks too: a late reading into one.
        db.store
            .apply_lifecycle(&readings::config::LifecycleConfig::default())
            .await
            .unwrap();
        let c = db.client().await;
        run_policy_jobs(&c).await;
        let compressed: i64 = c
            .query_one(
                "SELECT count(*) FROM timescaledb_information.chunks
                 WHERE hypertable_name = 'sensor_data' AND is_compressed",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(compressed >= 1);
        let late = part("w-2", &[(now - 14 * 86_400_000_000 + 1, "cellar", 9.0)]);
        assert_eq!(store.write(&[&late], far_deadline()).await.unwrap().rows, 1);
    }
    assert_refused(
        &writer,
        &[
            "DELETE FROM sensor_data",
            "UPDATE sensor_data SET temperature = 0",
            "SELECT * FROM api_keys",
            "INSERT INTO api_keys (id, name, scopes, key_hash) VALUES ('x', 'x', '{}', '')",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_function_that_only_checks_the_schema_waits_for_the_migration() {
    let db = TestDb::new().await;
    let checking = Store::new(&readings::config::DbConfig {
        schema: SchemaMode::Check,
        ..db.config.clone()
    })
    .unwrap();
    let e = checking.recent(&RecentQuery::default()).await.unwrap_err();
    assert!(matches!(e, StoreError::SchemaBehind(_)), "{e}");
    assert!(e.to_string().contains("not set up"), "{e}");
    // It created nothing.
    let tables: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0);
    // At start it says so and starts anyway.
    checking.check_at_start().await.unwrap();

    // An older version is not enough either.
    db.store.ensure_schema().await.unwrap();
    let c = db.client().await;
    c.batch_execute("UPDATE pipeline_schema SET version = 4")
        .await
        .unwrap();
    let e = Store::new(&readings::config::DbConfig {
        schema: SchemaMode::Check,
        ..db.config.clone()
    })
    .unwrap()
    .recent(&RecentQuery::default())
    .await
    .unwrap_err();
    assert!(e.to_string().contains("version 4"), "{e}");
    // Once migrated (a later version, from a newer writer, will do), it works; and a
    // migration of this version leaves a later one as it is.
    c.batch_execute("UPDATE pipeline_schema SET version = 99")
        .await
        .unwrap();
    assert!(checking
        .recent(&RecentQuery::default())
        .await
        .unwrap()
        .is_empty());
    Store::new(&db.config)
        .unwrap()
        .ensure_schema()
        .await
        .unwrap();
    let version: i32 = c
        .query_one("SELECT version FROM pipeline_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 99);
}
