//! TimescaleDB: which table kind a server gives (`TIMESCALEDB`), tables made by other
//! software adopted with every row, and what the hypertable does (chunks, compression,
//! retention, the hourly aggregate, late data into compressed chunks). Every test runs on
//! both targets of `scripts/test` and asserts what that target should give
//! ([`expected_kind`]).

use chrono::{DateTime, TimeDelta, Utc};
use readings::config::{DbConfig, LifecycleConfig, TimescaleMode};
use readings::model::envelope::{BatchPart, WireReading};
use readings::postgres::store::{Store, StoreError, TableKind};
use readings::query::{Cursor, RecentQuery, StatsQuery};
use readings::testing::{
    background_job_runs, expected_kind, far_deadline, run_policy_jobs, PrivateCluster, TestDb,
};
use readings::Reading;

fn store_with(config: &DbConfig, mode: TimescaleMode) -> Store {
    Store::new(&DbConfig {
        timescaledb: mode,
        ..config.clone()
    })
    .unwrap()
}

/// All of a batch of its own, named after `id` and `n`.
fn part(id: &str, n: u32, rows: &[(i64, &str, f64)]) -> BatchPart {
    BatchPart::range(
        format!("{id}/{n}"),
        0,
        rows.len() as u32,
        rows.iter()
            .map(|(t, l, v)| WireReading(*t, (*l).into(), *v))
            .collect(),
    )
}

async fn query_i64(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get(0)
}

/// A test database set up as the writer sets one up: the default lifecycle settings applied.
async fn configured_db() -> TestDb {
    let db = TestDb::new().await;
    assert!(db
        .store
        .apply_lifecycle(&LifecycleConfig::default())
        .await
        .unwrap());
    db
}

const HOUR_US: i64 = 3_600_000_000;
const DAY_US: i64 = 24 * HOUR_US;

#[tokio::test]
async fn a_server_without_timescaledb_preloaded_gives_a_plain_table_and_no_fatal_error() {
    // The state right after installing TimescaleDB's package: CREATE EXTENSION would be
    // FATAL and close the connection, so it must not be tried.
    let cluster = PrivateCluster::prepare().without_timescaledb();
    cluster.launch();
    let config = cluster.db_config();
    let admin = store_with(&config, TimescaleMode::Off);
    let installed: bool = readings::testing::store_value(
        &admin,
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')",
    )
    .await
    .unwrap();
    let why = if installed {
        "installed but not preloaded"
    } else {
        "not installed"
    };

    // require: refused before anything is created, saying what to change.
    let err = store_with(&config, TimescaleMode::Require)
        .ready()
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::TimescaleRequired(_)), "{err:?}");
    let message = err.to_string();
    assert!(message.starts_with("TIMESCALEDB=require, but"), "{message}");
    assert!(message.contains(why), "{message}");
    assert!(
        message.contains("shared_preload_libraries = 'timescaledb'"),
        "{message}"
    );
    let made: bool =
        readings::testing::store_value(&admin, "SELECT to_regclass('sensor_data') IS NOT NULL")
            .await
            .unwrap();
    assert!(!made, "require created tables before refusing");

    // auto: a plain table, with the reason; it takes readings and answers queries.
    let store = store_with(&config, TimescaleMode::Auto);
    let schema = store.schema().await.unwrap().clone();
    assert_eq!(schema.kind, TableKind::Plain);
    assert_eq!(schema.timescaledb, None);
    assert!(!schema.nullable);
    let reason = schema.plain_because.unwrap_or_default();
    assert!(reason.contains(why), "{reason}");
    store
        .write(
            &[&part("p", 0, &[(1_700_000_000_000_000, "attic", 20.5)])],
            far_deadline(),
        )
        .await
        .unwrap();
    let newest = store.recent(&RecentQuery::default()).await.unwrap();
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].location, "attic");
    let extension: bool = readings::testing::store_value(
        &store,
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')",
    )
    .await
    .unwrap();
    assert!(!extension);

    // off: plain too, and nothing to warn about.
    let schema = store_with(&config, TimescaleMode::Off)
        .schema()
        .await
        .unwrap()
        .clone();
    assert_eq!(
        (schema.kind, schema.plain_because),
        (TableKind::Plain, None)
    );
}

#[tokio::test]
async fn a_server_with_timescaledb_preloaded_gives_a_hypertable_or_refuses_with_require() {
    let db = TestDb::new().await;
    match expected_kind() {
        TableKind::Hypertable => {
            let store = store_with(&db.config, TimescaleMode::Require);
            let schema = store.schema().await.unwrap().clone();
            assert_eq!(schema.kind, TableKind::Hypertable);
            assert_eq!(schema.timescaledb.as_deref(), Some("2.28.3"));
            assert_eq!(schema.plain_because, None);
            let license: String = readings::testing::store_value(
                &store,
                "SELECT current_setting('timescaledb.license')",
            )
            .await
            .unwrap();
            assert_eq!(license, "timescale");
            // TIMESCALEDB=off in another process leaves the hypertable as it is.
            let off = store_with(&db.config, TimescaleMode::Off);
            assert_eq!(off.ready().await.unwrap(), TableKind::Hypertable);
        }
        TableKind::Plain => {
            let err = store_with(&db.config, TimescaleMode::Require)
                .ready()
                .await
                .unwrap_err();
            assert!(matches!(err, StoreError::TimescaleRequired(_)), "{err:?}");
            assert_eq!(db.store.ready().await.unwrap(), TableKind::Plain);
        }
    }
}

/// The Timescale tutorial's table: nullable columns, made a hypertable where TimescaleDB is
/// loaded; rows from its handler, which stored whatever JSON it got.
async fn tutorial_table(db: &TestDb, hypertable: bool) -> tokio_postgres::Client {
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE sensor_data (
             time        TIMESTAMPTZ,
             location    TEXT,
             temperature DOUBLE PRECISION
         );",
    )
    .await
    .unwrap();
    if hypertable {
        c.batch_execute(
            "CREATE EXTENSION IF NOT EXISTS timescaledb;
             SELECT create_hypertable('sensor_data', 'time', if_not_exists => TRUE);",
        )
        .await
        .unwrap();
    }
    c.batch_execute(
        "INSERT INTO sensor_data VALUES
             ('2024-03-15 12:00:00+00', 'bedroom', 66),
             ('2024-03-15 12:01:00+00', 'kitchen', 70),
             ('2024-03-15 12:02:00+00', 'bedroom', 67),
             ('2024-03-15 12:03:00+00', NULL, 71),
             ('2024-03-15 12:04:00+00', 'kitchen', NULL);",
    )
    .await
    .unwrap();
    c
}

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().into()
}

#[tokio::test]
async fn the_tutorials_table_is_adopted_and_rows_with_nulls_are_skipped() {
    let db = TestDb::new().await;
    let hypertable = expected_kind() == TableKind::Hypertable;
    let c = tutorial_table(&db, hypertable).await;
    if !hypertable {
        // Only a plain table can hold a reading without a time.
        c.batch_execute("INSERT INTO sensor_data VALUES (NULL, 'attic', 10)")
            .await
            .unwrap();
    }
    let before = db.count().await;

    let schema = db.store.schema().await.unwrap().clone();
    assert_eq!(schema.kind, expected_kind());
    assert!(schema.nullable);
    assert_eq!(
        db.count().await,
        before,
        "adopting the table lost or added rows"
    );

    let newest = db.store.recent(&RecentQuery::default()).await.unwrap();
    let got: Vec<(DateTime<Utc>, &str, f64)> = newest
        .iter()
        .map(|r| (r.time, r.location.as_str(), r.temperature))
        .collect();
    assert_eq!(
        got,
        [
            (at("2024-03-15T12:02:00Z"), "bedroom", 67.0),
            (at("2024-03-15T12:01:00Z"), "kitchen", 70.0),
            (at("2024-03-15T12:00:00Z"), "bedroom", 66.0),
        ]
    );
    let latest = db.store.latest(None).await.unwrap();
    let got: Vec<(&str, f64)> = latest
        .iter()
        .map(|r| (r.location.as_str(), r.temperature))
        .collect();
    assert_eq!(got, [("bedroom", 67.0), ("kitchen", 70.0)]);
    let stats = db
        .store
        .stats(&StatsQuery {
            bucket_secs: 3600,
            since: at("2024-03-15T00:00:00Z"),
            until: at("2024-03-16T00:00:00Z"),
            location: None,
        })
        .await
        .unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!(
        (stats[0].count, stats[0].min, stats[0].max),
        (3, 66.0, 70.0)
    );
    // New readings go in beside the old ones.
    db.store
        .write(
            &[&part(
                "new",
                0,
                &[(
                    at("2024-03-15T12:05:00Z").timestamp_micros(),
                    "bedroom",
                    68.0,
                )],
            )],
            far_deadline(),
        )
        .await
        .unwrap();
    assert_eq!(db.count().await, before + 1);
}

#[tokio::test]
async fn a_plain_table_of_readings_becomes_a_hypertable_with_every_row_where_timescaledb_is_loaded()
{
    let db = TestDb::new().await;
    let c = tutorial_table(&db, false).await;
    c.batch_execute(
        "INSERT INTO sensor_data
         SELECT '2024-03-01'::timestamptz + i * interval '1 hour', 'loc' || (i % 7), i
         FROM generate_series(1, 2000) i",
    )
    .await
    .unwrap();
    let before = db.count().await;
    assert_eq!(db.store.ready().await.unwrap(), expected_kind());
    assert_eq!(db.count().await, before);
    let in_root = query_i64(&c, "SELECT count(*) FROM ONLY sensor_data").await;
    match expected_kind() {
        // migrate_data moved every row into chunks.
        TableKind::Hypertable => {
            assert_eq!(in_root, 0);
            let chunks = query_i64(&c, "SELECT count(*) FROM show_chunks('sensor_data')").await;
            assert!(chunks > 1, "{chunks} chunks");
        }
        TableKind::Plain => assert_eq!(in_root, before),
    }
    let registered = query_i64(&c, "SELECT count(*) FROM sensor_locations").await;
    assert_eq!(registered, 9, "bedroom, kitchen and loc0..loc6");
}

#[tokio::test]
async fn a_table_with_readings_without_time_stays_plain_and_keeps_them() {
    let db = TestDb::new().await;
    let c = tutorial_table(&db, false).await;
    c.batch_execute("INSERT INTO sensor_data VALUES (NULL, 'attic', 10), (NULL, NULL, NULL)")
        .await
        .unwrap();
    let before = db.count().await;
    let schema = db.store.schema().await.unwrap().clone();
    assert_eq!(schema.kind, TableKind::Plain);
    assert_eq!(db.count().await, before);
    let reason = schema.plain_because.unwrap_or_default();
    if expected_kind() == TableKind::Hypertable {
        assert!(
            reason.contains("could not become a hypertable") && reason.contains("every row kept"),
            "{reason}"
        );
        // Another process takes the recorded answer instead of trying again.
        let again = store_with(&db.config, TimescaleMode::Auto);
        let schema = again.schema().await.unwrap();
        assert_eq!(schema.kind, TableKind::Plain);
        assert_eq!(schema.plain_because.as_deref(), Some(reason.as_str()));
        // require tries again, and refuses with the same reason.
        let err = store_with(&db.config, TimescaleMode::Require)
            .ready()
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("could not become a hypertable"),
            "{err}"
        );
        // Once the rows are fixed, require converts the table.
        c.batch_execute("DELETE FROM sensor_data WHERE time IS NULL")
            .await
            .unwrap();
        let fixed = store_with(&db.config, TimescaleMode::Require);
        assert_eq!(fixed.ready().await.unwrap(), TableKind::Hypertable);
        assert_eq!(db.count().await, before - 2);
    } else {
        assert!(!reason.contains("could not become"), "{reason}");
        let newest = db.store.recent(&RecentQuery::default()).await.unwrap();
        assert_eq!(newest.len(), 3, "rows without a time are not answered");
    }
}

#[tokio::test]
async fn lifecycle_settings_shape_the_hypertable_every_job_succeeds_and_changes_are_reapplied() {
    // A cluster of its own, so TimescaleDB's background scheduler has workers to run the
    // jobs with (on the shared cluster every test database's scheduler takes one).
    let cluster = PrivateCluster::start();
    let db = TestDb::on(cluster.db_config());
    let cfg = LifecycleConfig {
        chunk_interval_hours: 12,
        compress_after_days: 7,
        retention_days: 90,
        hourly_aggregate: true,
    };
    assert!(db.store.apply_lifecycle(&cfg).await.unwrap());
    let now = Utc::now().timestamp_micros();
    let rows: Vec<(i64, &str, f64)> = (0..20 * 24)
        .map(|h| {
            (
                now - h * HOUR_US,
                if h % 2 == 0 { "a" } else { "b" },
                h as f64,
            )
        })
        .collect();
    db.insert(&rows).await;
    let c = db.client().await;
    let text = |sql: &'static str| {
        let c = &c;
        async move {
            c.query(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<String>>()
        }
    };
    let interval = "SELECT time_interval::text FROM timescaledb_information.dimensions
                    WHERE hypertable_name = 'sensor_data'";
    let policies = "SELECT proc_name::text FROM timescaledb_information.jobs
                    WHERE hypertable_name IS NOT NULL ORDER BY 1";
    if expected_kind() == TableKind::Plain {
        let aggregate = query_i64(
            &c,
            "SELECT count(*) FROM pg_class WHERE relname = 'sensor_data_hourly'",
        )
        .await;
        assert_eq!(aggregate, 0);
        assert!(!db.store.apply_lifecycle(&cfg).await.unwrap());
        return;
    }
    assert_eq!(text(interval).await, ["12:00:00"]);
    assert_eq!(
        text(
            "SELECT segmentby || ' / ' || orderby
             FROM timescaledb_information.hypertable_compression_settings
             WHERE hypertable = 'sensor_data'::regclass"
        )
        .await,
        ["location / \"time\" DESC"]
    );
    assert_eq!(
        text(policies).await,
        [
            "policy_compression",
            "policy_refresh_continuous_aggregate",
            "policy_retention"
        ]
    );
    // Run in this session, then by the background scheduler, as deployed.
    for outcomes in [run_policy_jobs(&c).await, background_job_runs(&c).await] {
        assert!(
            outcomes.iter().all(|(_, o)| o == "Success") && outcomes.len() == 3,
            "{outcomes:?}"
        );
    }
    // Compression took the chunks wholly older than 7 days, and only those.
    let (old, fresh_compressed) = c
        .query_one(
            "SELECT count(*) FILTER (WHERE range_end < now() - interval '7 days' AND is_compressed),
                    count(*) FILTER (WHERE range_end > now() - interval '7 days' AND is_compressed)
             FROM timescaledb_information.chunks WHERE hypertable_name = 'sensor_data'",
            &[],
        )
        .await
        .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
        .unwrap();
    assert!(old >= 20, "{old} compressed chunks");
    assert_eq!(fresh_compressed, 0);
    assert_eq!(db.count().await, rows.len() as i64);
    // The aggregate was refreshed by its policy: its materialization holds rows.
    let table: String = c
        .query_one(
            "SELECT format('%I.%I', materialization_hypertable_schema,
                           materialization_hypertable_name)
             FROM timescaledb_information.continuous_aggregates
             WHERE view_name = 'sensor_data_hourly'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let materialized = query_i64(&c, &format!("SELECT count(*) FROM {table}")).await;
    assert!(materialized > 0);

    // Changed settings are applied again: new chunk interval, policies gone, aggregate gone.
    let changed = LifecycleConfig {
        chunk_interval_hours: 6,
        compress_after_days: 0,
        retention_days: 0,
        hourly_aggregate: false,
    };
    assert!(db.store.apply_lifecycle(&changed).await.unwrap());
    assert!(!db.store.apply_lifecycle(&changed).await.unwrap());
    assert_eq!(text(interval).await, ["06:00:00"]);
    assert!(text(policies).await.is_empty());
    let aggregate = query_i64(
        &c,
        "SELECT count(*) FROM pg_class WHERE relname = 'sensor_data_hourly'",
    )
    .await;
    assert_eq!(aggregate, 0);
    // And back.
    assert!(db.store.apply_lifecycle(&cfg).await.unwrap());
    assert_eq!(text(policies).await.len(), 3);
    assert_eq!(db.count().await, rows.len() as i64);
}

/// `(bucket start, count, avg, min, max)` straight from `sensor_data`, bucketed as the
/// table kind buckets.
async fn raw_stats(
    c: &tokio_postgres::Client,
    bucket: &str,
    location: Option<&str>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<(i64, i64, f64, f64, f64)> {
    let b = match expected_kind() {
        TableKind::Hypertable => format!("time_bucket(INTERVAL '{bucket}', time)"),
        TableKind::Plain => {
            format!("date_bin(INTERVAL '{bucket}', time, TIMESTAMPTZ '2000-01-03 00:00:00+00')")
        }
    };
    c.query(
        &format!(
            "SELECT extract(epoch FROM {b})::int8, count(*), avg(temperature),
                    min(temperature), max(temperature)
             FROM sensor_data
             WHERE time >= $1 AND time < $2 AND ($3::text IS NULL OR location = $3)
             GROUP BY 1 ORDER BY 1"
        ),
        &[&since, &until, &location],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
    .collect()
}

fn same_stats(
    got: &[readings::postgres::store::BucketStats],
    want: &[(i64, i64, f64, f64, f64)],
    what: &str,
) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(
            (g.bucket.timestamp(), g.count, g.min, g.max),
            (w.0, w.1, w.3, w.4),
            "{what}"
        );
        assert!(
            (g.avg - w.2).abs() < 1e-9,
            "{what}: avg {} vs {}",
            g.avg,
            w.2
        );
    }
}

#[tokio::test]
async fn stats_from_the_hourly_aggregate_equal_raw_buckets() {
    let db = configured_db().await;
    let now = Utc::now().timestamp_micros();
    let rows: Vec<(i64, &str, f64)> = (0..3 * 24 * 12)
        .map(|i| {
            (
                now - i * 5 * 60_000_000,
                if i % 3 == 0 { "north" } else { "south" },
                ((i * 7) % 31) as f64 / 4.0,
            )
        })
        .collect();
    db.insert(&rows).await;
    let c = db.client().await;
    if expected_kind() == TableKind::Hypertable {
        // Materialize the older part: answers then mix materialized and real-time rows.
        c.batch_execute(
            "CALL refresh_continuous_aggregate('sensor_data_hourly', NULL, now() - interval '1 day')",
        )
        .await
        .unwrap();
        let materialized = query_i64(&c, "SELECT count(*) FROM sensor_data_hourly").await;
        assert!(materialized > 0);
    }
    let until = Utc::now() + TimeDelta::hours(1);
    let since = until - TimeDelta::days(4);
    for (secs, bucket) in [(3600, "1 hour"), (86_400, "1 day"), (300, "5 minutes")] {
        for location in [None, Some("north")] {
            let got = db
                .store
                .stats(&StatsQuery {
                    bucket_secs: secs,
                    since,
                    until,
                    location: location.map(str::to_owned),
                })
                .await
                .unwrap();
            let want = raw_stats(&c, bucket, location, since, until).await;
            same_stats(&got, &want, &format!("{bucket} {location:?}"));
        }
    }
}

#[tokio::test]
async fn late_readings_into_a_compressed_chunk_are_written_exactly_once() {
    let db = configured_db().await;
    let now = Utc::now().timestamp_micros();
    let old: Vec<(i64, &str, f64)> = (0..600)
        .map(|i| (now - 12 * DAY_US + i * 60_000_000, "field", i as f64))
        .collect();
    db.store
        .write(&[&part("seed", 0, &old)], far_deadline())
        .await
        .unwrap();
    let c = db.client().await;
    if expected_kind() == TableKind::Hypertable {
        let compressed = query_i64(
            &c,
            "SELECT count(compress_chunk(ch)) FROM show_chunks('sensor_data', older_than => INTERVAL '7 days') ch",
        )
        .await;
        assert!(compressed >= 1);
    }
    // Late readings inside the compressed range, delivered twice, then again beside a new
    // part (a redelivered message packed with a fresh one).
    let late_rows: Vec<(i64, &str, f64)> = (0..50)
        .map(|i| {
            (
                now - 12 * DAY_US + i * 60_000_000 + 30_000_000,
                "field",
                -1.0,
            )
        })
        .collect();
    let late = part("late", 0, &late_rows);
    let fresh = part("fresh", 0, &[(now, "field", 5.0)]);
    let first = db.store.write(&[&late], far_deadline()).await.unwrap();
    assert_eq!(first.rows, 50);
    let again = db.store.write(&[&late], far_deadline()).await.unwrap();
    assert_eq!((again.rows, again.parts_skipped), (0, 1));
    let mixed = db
        .store
        .write(&[&late, &fresh], far_deadline())
        .await
        .unwrap();
    assert_eq!((mixed.rows, mixed.parts_skipped), (1, 1));
    assert_eq!(db.count().await, 600 + 50 + 1);
    let late_in_table = query_i64(
        &c,
        "SELECT count(*) FROM sensor_data WHERE temperature = -1",
    )
    .await;
    assert_eq!(late_in_table, 50);
    if expected_kind() == TableKind::Hypertable {
        // Still compressed (partially: the late rows sit beside the compressed batches).
        let compressed = query_i64(
            &c,
            "SELECT count(*) FROM timescaledb_information.chunks
             WHERE hypertable_name = 'sensor_data' AND is_compressed",
        )
        .await;
        assert!(compressed >= 1);
    }
    // The late readings are answered in order, once each.
    let window = db
        .store
        .recent(&RecentQuery {
            since: DateTime::from_timestamp_micros(now - 12 * DAY_US),
            until: DateTime::from_timestamp_micros(now - 12 * DAY_US + 10 * 60_000_000),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let temps: Vec<f64> = window.iter().map(|r| r.temperature).collect();
    assert_eq!(
        temps,
        [
            -1.0, 9.0, -1.0, 8.0, -1.0, 7.0, -1.0, 6.0, -1.0, 5.0, -1.0, 4.0, -1.0, 3.0, -1.0, 2.0,
            -1.0, 1.0, -1.0, 0.0
        ]
    );
}

/// Every route's answer, through the store's queries.
async fn answers(store: &Store, now: i64) -> Vec<String> {
    let mut out = Vec::new();
    let show = |v: &[Reading]| {
        v.iter()
            .map(|r| {
                format!(
                    "{} {} {}",
                    r.time.timestamp_micros(),
                    r.location,
                    r.temperature
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    out.push(show(&store.recent(&RecentQuery::default()).await.unwrap()));
    for location in ["loc1", "gone"] {
        let q = RecentQuery {
            location: Some(location.into()),
            ..Default::default()
        };
        out.push(show(&store.recent(&q).await.unwrap()));
    }
    // Three pages of 40 through the cursor, from 9 days ago (compressed chunks).
    let mut q = RecentQuery {
        until: DateTime::from_timestamp_micros(now - 9 * DAY_US),
        limit: 40,
        ..Default::default()
    };
    for _ in 0..3 {
        let page = store.recent(&q).await.unwrap();
        let last = page.last().unwrap();
        q.after = Some(Cursor {
            time: last.time,
            location: last.location.clone(),
        });
        out.push(show(&page));
    }
    out.push(show(&store.latest(None).await.unwrap()));
    let some = ["gone".to_owned(), "loc3".to_owned(), "nowhere".to_owned()];
    out.push(show(&store.latest(Some(&some[..])).await.unwrap()));
    let until = DateTime::from_timestamp_micros(now).unwrap() + TimeDelta::hours(1);
    for (secs, days, location) in [
        (3600, 30, Some("loc2")),
        (86_400, 30, None),
        (3600, 1, None),
    ] {
        let stats = store
            .stats(&StatsQuery {
                bucket_secs: secs,
                since: until - TimeDelta::days(days),
                until,
                location: location.map(str::to_owned),
            })
            .await
            .unwrap();
        out.push(
            stats
                .iter()
                .map(|b| {
                    format!(
                        "{} {} {:.9} {} {}",
                        b.bucket.timestamp(),
                        b.count,
                        b.avg,
                        b.min,
                        b.max
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        );
    }
    out
}

#[tokio::test]
async fn every_route_answers_the_same_over_compressed_chunks() {
    let db = configured_db().await;
    // 30 days of readings, one every 30 minutes from each of 4 locations; "gone" stopped
    // reporting 10 days ago, so its newest reading sits in a compressed chunk.
    let now = Utc::now().timestamp_micros();
    let mut rows: Vec<(i64, &str, f64)> = Vec::new();
    for i in 0..30 * 48 {
        let t = now - i * 30 * 60_000_000;
        for (n, location) in ["loc1", "loc2", "loc3", "gone"].into_iter().enumerate() {
            if location == "gone" && t > now - 10 * DAY_US {
                continue;
            }
            rows.push((
                t - n as i64,
                location,
                ((i * 13 + n as i64) % 50) as f64 / 2.0,
            ));
        }
    }
    for (k, chunk) in rows.chunks(2000).enumerate() {
        db.store
            .write(&[&part("seed", k as u32, chunk)], far_deadline())
            .await
            .unwrap();
    }
    if expected_kind() == TableKind::Hypertable {
        // As deployed: the policies have run (older chunks compressed, the aggregate
        // refreshed), so answers mix compressed and plain chunks, materialized and
        // real-time buckets.
        let c = db.client().await;
        let outcomes = run_policy_jobs(&c).await;
        assert!(outcomes.iter().all(|(_, o)| o == "Success"), "{outcomes:?}");
    }
    let before = answers(&db.store, now).await;
    // The 30 days of hourly stats of loc2 count every reading of loc2 in them, whole hours.
    let since = (now + HOUR_US - 30 * DAY_US).div_euclid(HOUR_US) * HOUR_US;
    let loc2 = rows
        .iter()
        .filter(|r| r.1 == "loc2" && r.0 >= since)
        .count();
    let counted: usize = before[8]
        .split("; ")
        .map(|b| b.split(' ').nth(1).unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(counted, loc2);
    // What the answers must be, from the rows themselves.
    let gone_newest = rows
        .iter()
        .filter(|r| r.1 == "gone")
        .map(|r| r.0)
        .max()
        .unwrap();
    assert!(
        before[6].contains(&format!("{gone_newest} gone")),
        "{}",
        before[6]
    );
    assert!(
        before[7].starts_with(&format!("{gone_newest} gone")),
        "{}",
        before[7]
    );
    assert!(!before[7].contains("nowhere"));
    assert_eq!(before[2].split("; ").count(), 5);
    for page in &before[3..6] {
        assert_eq!(page.split("; ").count(), 40);
    }
    assert_ne!(before[3], before[4]);

    if expected_kind() == TableKind::Hypertable {
        let c = db.client().await;
        // Every chunk compressed, the newest too, and the aggregate materialized.
        let compressed = query_i64(
            &c,
            "SELECT count(compress_chunk(ch, if_not_compressed => TRUE)) FROM show_chunks('sensor_data') ch",
        )
        .await;
        assert!(compressed >= 30, "{compressed} chunks");
        c.batch_execute("CALL refresh_continuous_aggregate('sensor_data_hourly', NULL, NULL)")
            .await
            .unwrap();
        let uncompressed = query_i64(
            &c,
            "SELECT count(*) FROM timescaledb_information.chunks
             WHERE hypertable_name = 'sensor_data' AND NOT is_compressed",
        )
        .await;
        assert_eq!(uncompressed, 0);
    }
    let after = answers(&db.store, now).await;
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert_eq!(b, a, "answer {i} changed over compressed chunks");
    }
}

#[tokio::test]
async fn stats_answer_every_bucket_the_range_touches_in_full() {
    let db = TestDb::new().await;
    // On a hypertable 1h buckets then come from the hourly aggregate.
    assert!(db
        .store
        .apply_lifecycle(&LifecycleConfig::default())
        .await
        .unwrap());
    let hour =
        |h: i64, m: i64| 1_710_000_000_000_000 / HOUR_US * HOUR_US + h * HOUR_US + m * 60_000_000;
    db.insert(&[
        (hour(0, 10), "x", 1.0),
        (hour(0, 50), "x", 2.0),
        (hour(1, 10), "x", 3.0),
        (hour(2, 10), "x", 4.0),
    ])
    .await;
    let t = |us: i64| DateTime::from_timestamp_micros(us).unwrap();
    let stats = db
        .store
        .stats(&StatsQuery {
            bucket_secs: 3600,
            since: t(hour(0, 30)),
            until: t(hour(1, 5)),
            location: None,
        })
        .await
        .unwrap();
    let got: Vec<(i64, i64, f64)> = stats
        .iter()
        .map(|b| (b.bucket.timestamp_micros(), b.count, b.max))
        .collect();
    assert_eq!(got, [(hour(0, 0), 2, 2.0), (hour(1, 0), 1, 3.0)]);
}

/// Writers on the hypertable while TimescaleDB's compression and retention jobs run (on
/// plain PostgreSQL: while the writer's own retention delete runs): each message is handled
/// by two writers at once, its readings partly late (into chunks the compression job takes)
/// and partly fresh; every message's readings end up in the table exactly once, and the
/// readings past retention are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_keep_exactly_once_while_compression_and_retention_jobs_run() {
    use aws_lambda_events::event::sqs::SqsEvent;
    use readings::testing::sqs_message;
    use readings::writer::Writer;

    let db = TestDb::new().await;
    let cfg = LifecycleConfig {
        chunk_interval_hours: 24,
        compress_after_days: 7,
        retention_days: 30,
        hourly_aggregate: true,
    };
    assert!(db.store.apply_lifecycle(&cfg).await.unwrap());
    let now = Utc::now().timestamp_micros();
    let ancient: Vec<(i64, &str, f64)> = (0..48)
        .map(|h| (now - 40 * DAY_US + h * HOUR_US, "ancient", 1.0))
        .collect();
    db.insert(&ancient).await;
    let settled: Vec<(i64, &str, f64)> = (0..5 * 24)
        .map(|h| (now - 14 * DAY_US + h * HOUR_US, "settled", 2.0))
        .collect();
    db.insert(&settled).await;

    // 40 messages of 30 readings each, one location per message: 20 late readings spread
    // over 8 to 12 days ago, 10 fresh ones.
    const MESSAGES: usize = 40;
    let bodies: Vec<String> = (0..MESSAGES)
        .map(|m| {
            let location = format!("w{m}");
            let readings: Vec<serde_json::Value> = (0..30)
                .map(|i| {
                    let t = if i < 20 {
                        now - 12 * DAY_US + (i * 5 + m as i64) * 4 * HOUR_US / 10
                    } else {
                        now - (i * 1000 + m as i64) * 1_000_000
                    };
                    serde_json::json!([t, location, i as f64])
                })
                .collect();
            serde_json::json!({"v": 1, "batches": [{"id": format!("msg-{m}"), "part": 0, "readings": readings}]})
                .to_string()
        })
        .collect();
    // Four writers (each a pool of its own, as separate processes have; their maintenance
    // keeps the same settings); each message goes to two of them, in batches of five.
    let writers: Vec<Writer> = (0..4)
        .map(|_| Writer::new(Store::new(&db.config).unwrap()).with_lifecycle(cfg.clone()))
        .collect();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for (w, writer) in writers.into_iter().enumerate() {
        let mine: Vec<usize> = (0..MESSAGES).filter(|m| m % 2 == w % 2).collect();
        let bodies = bodies.clone();
        tasks.spawn(async move {
            let mut failures = 0;
            for chunk in mine.chunks(5) {
                let mut event = SqsEvent::default();
                event.records = chunk
                    .iter()
                    .map(|&m| sqs_message(&format!("{w}-{m}"), &bodies[m]))
                    .collect();
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                failures += writer
                    .handle(event, deadline)
                    .await
                    .batch_item_failures
                    .len();
            }
            failures
        });
    }
    // Meanwhile, the jobs, over and over until the writers are done.
    let jobs = tokio::spawn({
        let (done, store, c) = (done.clone(), db.store.clone(), db.client().await);
        async move {
            let mut runs = Vec::new();
            loop {
                if expected_kind() == TableKind::Hypertable {
                    runs.extend(run_policy_jobs(&c).await);
                } else {
                    let outcome = store.delete_expired(&cfg).await.map(|_| ());
                    runs.push(("delete_expired".to_owned(), format!("{outcome:?}")));
                }
                if done.load(std::sync::atomic::Ordering::Relaxed) {
                    return runs;
                }
            }
        }
    });
    let mut failures = 0;
    while let Some(f) = tasks.join_next().await {
        failures += f.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = jobs.await.unwrap();
    assert_eq!(failures, 0, "every message written by the deadline");

    let c = db.client().await;
    let per_location: Vec<(String, i64)> = c
        .query(
            "SELECT location, count(*) FROM sensor_data GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut want: Vec<(String, i64)> = (0..MESSAGES).map(|m| (format!("w{m}"), 30)).collect();
    want.push(("settled".into(), settled.len() as i64));
    want.sort();
    assert_eq!(per_location, want, "jobs run meanwhile: {runs:?}");
    let distinct = query_i64(
        &c,
        "SELECT count(*) FROM (SELECT DISTINCT time, location FROM sensor_data) d",
    )
    .await;
    assert_eq!(distinct, (MESSAGES * 30 + settled.len()) as i64);
    assert_eq!(
        query_i64(
            &c,
            "SELECT count(*) FROM ingest_batches WHERE batch_id LIKE 'msg-%'"
        )
        .await,
        MESSAGES as i64
    );
    if expected_kind() == TableKind::Hypertable {
        // The jobs did their work: chunks older than 7 days compressed, none past 30 days.
        let compressed = query_i64(
            &c,
            "SELECT count(*) FROM timescaledb_information.chunks
             WHERE hypertable_name = 'sensor_data' AND is_compressed",
        )
        .await;
        assert!(compressed >= 1, "no chunk compressed: {runs:?}");
        assert!(
            runs.iter()
                .any(|(name, o)| name == "policy_retention" && o == "Success"),
            "{runs:?}"
        );
    }
}
