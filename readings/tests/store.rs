//! The store against a real PostgreSQL: schema setup, the exactly-once write path, queries.

use chrono::{DateTime, TimeDelta, Utc};
use readings::config::DbConfig;
use readings::model::envelope::{decode, BatchPart, Packer, Place, WireReading};
use readings::postgres::store::{recent_sql, ErrorKind, Store, StoreError, TableKind};
use readings::query::{Cursor, RecentQuery};
use readings::testing::{expected_kind, far_deadline, run_policy_jobs, sample_readings, TestDb};

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap()
}

fn wire(rows: &[(i64, &str, f64)]) -> Vec<WireReading> {
    rows.iter()
        .map(|(t, l, v)| WireReading(t * 1_000_000, (*l).into(), *v))
        .collect()
}

/// A version-1 part: part `n` of its batch.
fn numbered(id: &str, n: u32, rows: &[(i64, &str, f64)]) -> BatchPart {
    BatchPart {
        id: id.into(),
        place: Place::Numbered(n),
        readings: wire(rows),
    }
}

/// A version-2 part: readings `first..` of a batch of `of`.
fn range(id: &str, first: u32, of: u32, rows: &[(i64, &str, f64)]) -> BatchPart {
    BatchPart::range(id, first, of, wire(rows))
}

#[tokio::test]
async fn concurrent_schema_setup_makes_one_table_without_error() {
    let db = TestDb::new().await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        // Separate stores: separate processes cold-starting at once.
        let store = readings::Store::new(&db.config).unwrap();
        tasks.spawn(async move { store.ensure_schema().await });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap().unwrap(), expected_kind());
    }
    let c = db.client().await;
    let tables: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename IN ('sensor_data', 'ingest_batches')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 2);
    let indexes: Vec<String> = c
        .query(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'sensor_data' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        indexes,
        ["sensor_data_location_time_idx", "sensor_data_time_idx"]
    );
    // And again, on a schema that exists.
    assert_eq!(db.store.ensure_schema().await.unwrap(), expected_kind());
    let hypertables: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_extension e, LATERAL (
                 SELECT 1 FROM timescaledb_information.hypertables
                 WHERE hypertable_name = 'sensor_data') h
             WHERE e.extname = 'timescaledb'",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(0);
    assert_eq!(
        hypertables,
        i64::from(expected_kind() == TableKind::Hypertable)
    );
}

#[tokio::test]
async fn newest_queries_are_index_scans() {
    let db = TestDb::new().await;
    db.store.ensure_schema().await.unwrap();
    let c = db.client().await;
    c.batch_execute(
        "INSERT INTO sensor_data
         SELECT now() - i * interval '1 second', 'loc' || (i % 100), i
         FROM generate_series(1, 20000) i;
         ANALYZE sensor_data;",
    )
    .await
    .unwrap();
    c.batch_execute(
        "INSERT INTO sensor_locations SELECT 'loc' || i FROM generate_series(0, 99) i;
         ANALYZE sensor_locations;",
    )
    .await
    .unwrap();
    // The queries the store runs for GET /sensor (with and without a location and a
    // cursor) and /sensor/latest.
    let newest = recent_sql(&RecentQuery::default(), false);
    let one_location = recent_sql(
        &RecentQuery {
            location: Some("loc7".into()),
            ..Default::default()
        },
        false,
    )
    .replace("$1", "'loc7'");
    let next_page = recent_sql(
        &RecentQuery {
            after: Some(Cursor {
                time: Utc::now(),
                location: "loc5".into(),
            }),
            limit: 100,
            ..Default::default()
        },
        false,
    )
    .replace("$1", "(now() - interval '1 hour')")
    .replace("$2", "'loc5'");
    for sql in [
        newest.as_str(),
        &one_location,
        &next_page,
        "SELECT r.time, l.location, r.temperature FROM sensor_locations l LEFT JOIN LATERAL (SELECT time, temperature FROM sensor_data d WHERE d.location = l.location ORDER BY time DESC LIMIT 1) r ON TRUE ORDER BY l.location",
    ] {
        let plan: Vec<String> = c
            .query(&format!("EXPLAIN {sql}"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("Index Scan"), "{sql}\n{plan}");
        assert!(!plan.contains("Seq Scan on sensor_data"), "{sql}\n{plan}");
        // At most an incremental sort of rows that tie on time, never a full sort of
        // readings (/sensor/latest sorts its one row per location, which is fine).
        let sorts_readings = plan
            .lines()
            .any(|l| l.trim_start().trim_start_matches("->  ").starts_with("Sort  ("));
        assert!(!sorts_readings || sql.contains("sensor_locations"), "{sql}\n{plan}");
    }
}

/// Parts `a0`, `a1` (of batch `a`) and `b0` written with repeats, in two calls: each
/// reading lands once. Returns the database to check the records in.
async fn write_with_repeats(a0: BatchPart, a1: BatchPart, b0: BatchPart) -> TestDb {
    let db = TestDb::new().await;
    let r = db
        .store
        .write(&[&a0, &a0, &a1], far_deadline())
        .await
        .unwrap();
    assert_eq!((r.rows, r.parts_written, r.parts_skipped), (3, 2, 1));
    assert_eq!(r.rows_skipped, 2);
    let r = db
        .store
        .write(&[&a1, &b0, &a0], far_deadline())
        .await
        .unwrap();
    assert_eq!((r.rows, r.parts_written, r.parts_skipped), (1, 1, 2));
    assert_eq!(r.rows_skipped, 3);
    assert_eq!(
        db.rows().await,
        [
            (1_000_000_000, "x".into(), 1.0),
            (1_001_000_000, "x".into(), 2.0),
            (1_002_000_000, "y".into(), 3.0),
            (1_003_000_000, "z".into(), 4.0)
        ]
    );
    db
}

#[tokio::test]
async fn a_part_is_written_once_however_often_it_arrives() {
    let db = write_with_repeats(
        range("a", 0, 3, &[(1000, "x", 1.0), (1001, "x", 2.0)]),
        range("a", 2, 3, &[(1002, "y", 3.0)]),
        range("b", 0, 1, &[(1003, "z", 4.0)]),
    )
    .await;
    // Each batch once, with its size and the offsets written.
    assert_eq!(
        written_batches(&db).await,
        [
            ("a".into(), 3, "{[0,3)}".into()),
            ("b".into(), 1, "{[0,1)}".into())
        ]
    );
}

/// What `written_batches` records: (batch id, size, offsets written).
async fn written_batches(db: &TestDb) -> Vec<(String, i32, String)> {
    db.client()
        .await
        .query(
            "SELECT batch_id, readings, written::text FROM written_batches ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn a_version_1_part_is_written_once_however_often_it_arrives() {
    let db = write_with_repeats(
        numbered("a", 0, &[(1000, "x", 1.0), (1001, "x", 2.0)]),
        numbered("a", 1, &[(1002, "y", 3.0)]),
        numbered("b", 0, &[(1003, "z", 4.0)]),
    )
    .await;
    // Each part once, with the number of readings it wrote.
    assert_eq!(
        recorded_parts(&db).await,
        [
            ("a".into(), 0, Some(2)),
            ("a".into(), 1, Some(1)),
            ("b".into(), 0, Some(1))
        ]
    );
}

#[tokio::test]
async fn a_database_of_an_older_schema_version_gains_what_this_one_records() {
    let db = TestDb::new().await;
    let a0 = numbered("a", 0, &[(1000, "x", 1.0)]);
    db.store.write(&[&a0], far_deadline()).await.unwrap();
    // As version 3 left it: parts recorded without their number of readings.
    db.client()
        .await
        .batch_execute(
            "ALTER TABLE ingest_batches DROP COLUMN readings;
             DROP TABLE written_batches;
             UPDATE pipeline_schema SET version = 3;",
        )
        .await
        .unwrap();
    // A function of this version starting against it.
    let store = Store::new(&db.config).unwrap();
    let b0 = numbered("b", 0, &[(1001, "x", 2.0), (1002, "y", 3.0)]);
    let c0 = range("c", 0, 1, &[(1004, "z", 5.0)]);
    let r = store.write(&[&a0, &b0, &c0], far_deadline()).await.unwrap();
    assert_eq!((r.rows, r.parts_written, r.parts_skipped), (3, 2, 1));
    assert_eq!(
        recorded_parts(&db).await,
        [("a".into(), 0, None), ("b".into(), 0, Some(2))]
    );
    assert_eq!(
        written_batches(&db).await,
        [("c".into(), 1, "{[0,1)}".into())]
    );
    assert_eq!(db.count().await, 4);
}

/// The batch parts `ingest_batches` records: (batch id, part, number of readings).
async fn recorded_parts(db: &TestDb) -> Vec<(String, i32, Option<i32>)> {
    db.client()
        .await
        .query(
            "SELECT batch_id, part, readings FROM ingest_batches ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn concurrent_writers_of_the_same_part_write_it_once() {
    let db = TestDb::new().await;
    db.store.ensure_schema().await.unwrap();
    let p = range("same", 0, 2, &[(2000, "x", 1.0), (2001, "x", 2.0)]);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let store = db.store.clone();
        let p = p.clone();
        tasks.spawn(async move { store.write(&[&p], far_deadline()).await.unwrap().rows });
    }
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        total += r.unwrap();
    }
    assert_eq!(total, 2);
    assert_eq!(db.count().await, 2);
}

#[tokio::test]
async fn recent_filters_and_orders() {
    let db = TestDb::new().await;
    let base = 1_700_000_000;
    let rows: Vec<(i64, &str, f64)> = (0..30)
        .map(|i| {
            (
                base + i,
                if i % 3 == 0 { "attic" } else { "cellar" },
                i as f64,
            )
        })
        .collect();
    db.store
        .write(&[&range("q", 0, rows.len() as u32, &rows)], far_deadline())
        .await
        .unwrap();

    let times = |v: Vec<readings::Reading>| {
        v.iter()
            .map(|r| r.time.timestamp() - base)
            .collect::<Vec<_>>()
    };

    let newest = db.store.recent(&RecentQuery::default()).await.unwrap();
    assert_eq!(times(newest.clone()), [29, 28, 27, 26, 25]);
    assert_eq!(newest[0].location, "cellar");
    assert_eq!(newest[0].temperature, 29.0);

    let q = RecentQuery {
        location: Some("attic".into()),
        limit: 3,
        ..Default::default()
    };
    assert_eq!(times(db.store.recent(&q).await.unwrap()), [27, 24, 21]);

    let q = RecentQuery {
        since: Some(at(base + 10)),
        until: Some(at(base + 14)),
        limit: 1000,
        ..Default::default()
    };
    assert_eq!(times(db.store.recent(&q).await.unwrap()), [13, 12, 11, 10]);

    let q = RecentQuery {
        location: Some("attic".into()),
        until: Some(at(base + 9)),
        ..Default::default()
    };
    assert_eq!(times(db.store.recent(&q).await.unwrap()), [6, 3, 0]);

    let q = RecentQuery {
        since: Some(Utc::now() - TimeDelta::minutes(1)),
        ..Default::default()
    };
    assert!(db.store.recent(&q).await.unwrap().is_empty());
}

#[tokio::test]
async fn lifecycle_settings_are_recorded_and_reapplied_when_changed() {
    use readings::config::LifecycleConfig;
    let db = TestDb::new().await;
    let cfg = LifecycleConfig::default();
    assert!(db.store.apply_lifecycle(&cfg).await.unwrap());
    assert!(
        !db.store.apply_lifecycle(&cfg).await.unwrap(),
        "unchanged: nothing to do"
    );
    let longer = LifecycleConfig {
        retention_days: 90,
        ..cfg.clone()
    };
    assert!(db.store.apply_lifecycle(&longer).await.unwrap());
    let recorded: String = db
        .client()
        .await
        .query_one("SELECT lifecycle FROM pipeline_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, longer.fingerprint());
}

#[tokio::test]
async fn retention_deletes_only_expired_readings() {
    use readings::config::LifecycleConfig;
    let db = TestDb::new().await;
    let cfg = LifecycleConfig {
        retention_days: 30,
        ..LifecycleConfig::default()
    };
    // As the writer does: settings first (one-day chunks on a hypertable), then readings.
    assert!(db.store.apply_lifecycle(&cfg).await.unwrap());
    let now = Utc::now().timestamp_micros();
    let day = 86_400_000_000i64;
    let rows: Vec<(i64, &str, f64)> = (0..12_000)
        .map(|i| (now - (i % 60) * day - i, "x", 1.0))
        .collect();
    db.insert(&rows).await;
    let keep = rows
        .iter()
        .filter(|(t, _, _)| *t > now - 30 * day + 60_000_000)
        .count() as i64;
    let deleted = db.store.delete_expired(&cfg).await.unwrap();
    if expected_kind() == TableKind::Hypertable {
        // The retention policy drops whole chunks (one day each) past 30 days instead.
        assert_eq!(deleted, 0);
        let c = db.client().await;
        let jobs = run_policy_jobs(&c).await;
        assert!(
            jobs.contains(&("policy_retention".into(), "Success".into())),
            "{jobs:?}"
        );
        let (kept_new, left_old, total): (i64, i64, i64) = c
            .query_one(
                "SELECT count(*) FILTER (WHERE time > now() - interval '30 days'),
                        count(*) FILTER (WHERE time < now() - interval '31 days'),
                        count(*)
                 FROM sensor_data",
                &[],
            )
            .await
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .unwrap();
        assert_eq!(kept_new, keep);
        assert_eq!(
            left_old, 0,
            "readings older than the retention and its chunk"
        );
        assert!(total < 12_000);
    } else {
        assert_eq!(db.count().await, keep);
        assert_eq!(deleted as i64, 12_000 - keep);
    }
    let off = LifecycleConfig::default();
    assert_eq!(db.store.delete_expired(&off).await.unwrap(), 0);
}

#[tokio::test]
async fn stats_buckets_start_where_time_bucket_starts_them() {
    use readings::query::StatsQuery;
    let db = TestDb::new().await;
    assert_eq!(db.store.ensure_schema().await.unwrap(), expected_kind());
    let c = db.client().await;
    let base = 1_709_942_400i64;
    let rows: Vec<(i64, &str, f64)> = (0..2000)
        .map(|i| {
            (
                (base + i * 97) * 1_000_000,
                if i % 2 == 0 { "a" } else { "b" },
                (i % 23) as f64,
            )
        })
        .collect();
    db.insert(&rows).await;
    for (bucket, secs) in [("5 minutes", 300i64), ("1 hour", 3600), ("1 day", 86_400)] {
        // Expected: buckets counted here (TimescaleDB's origin, 2000-01-03 UTC, is a whole
        // number of days after the epoch, so these buckets start on multiples of `secs`).
        let mut expected: std::collections::BTreeMap<i64, (i64, f64, f64, f64)> =
            Default::default();
        for (t, _, v) in &rows {
            let start = (t / 1_000_000).div_euclid(secs) * secs;
            let e = expected
                .entry(start)
                .or_insert((0, 0.0, f64::MAX, f64::MIN));
            e.0 += 1;
            e.1 += v;
            e.2 = e.2.min(*v);
            e.3 = e.3.max(*v);
        }
        let got = db
            .store
            .stats(&StatsQuery {
                bucket_secs: secs,
                since: at(base - 86_400),
                until: at(base + 3 * 86_400),
                location: None,
            })
            .await
            .unwrap();
        let got: Vec<(i64, i64, f64, f64)> = got
            .iter()
            .map(|b| (b.bucket.timestamp(), b.count, b.min, b.max))
            .collect();
        let want: Vec<(i64, i64, f64, f64)> = expected
            .iter()
            .map(|(k, (n, _, lo, hi))| (*k, *n, *lo, *hi))
            .collect();
        assert_eq!(got, want, "{bucket}");

        if expected_kind() == TableKind::Hypertable {
            // And the store's date_bin form (plain tables) agrees with time_bucket.
            let sql = |f: &str| {
                format!(
                    "SELECT {f}, count(*), avg(temperature), min(temperature), max(temperature)
                     FROM sensor_data GROUP BY 1 ORDER BY 1"
                )
            };
            let query = |sql: String| {
                let c = &c;
                async move {
                    c.query(&sql, &[])
                        .await
                        .unwrap()
                        .iter()
                        .map(|r| (r.get(0), r.get(1), r.get(2)))
                        .collect::<Vec<(DateTime<Utc>, i64, f64)>>()
                }
            };
            let tb = query(sql(&format!("time_bucket(INTERVAL '{bucket}', time)"))).await;
            let bin = query(sql(&format!(
                "date_bin(INTERVAL '{bucket}', time, TIMESTAMPTZ '2000-01-03 00:00:00+00')"
            )))
            .await;
            assert_eq!(tb, bin, "{bucket}");
        }
    }
}

#[tokio::test]
async fn old_batch_records_and_keys_are_pruned_and_recent_ones_kept() {
    let db = TestDb::new().await;
    db.store.ensure_schema().await.unwrap();
    let c = db.client().await;
    c.batch_execute(
        "INSERT INTO ingest_batches (batch_id, part, written_at)
         SELECT 'old-' || i, 0, now() - interval '30 days' FROM generate_series(1, 12000) i;
         INSERT INTO ingest_batches (batch_id, part, written_at)
         SELECT 'new-' || i, 0, now() - interval '1 day' FROM generate_series(1, 100) i;
         INSERT INTO idempotency_keys (batch_id, body_hash, created_at)
         VALUES ('old-key', 'h', now() - interval '30 days'), ('new-key', 'h', now());",
    )
    .await
    .unwrap();
    let pruned = db
        .store
        .prune(std::time::Duration::from_secs(21 * 86_400))
        .await
        .unwrap();
    assert_eq!(pruned, 12_001);
    let left: Vec<String> = c
        .query(
            "SELECT DISTINCT split_part(batch_id, '-', 1) FROM ingest_batches
             UNION ALL SELECT batch_id FROM idempotency_keys ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["new", "new-key"]);
}

/// A connection of its own to the test's database.
async fn session(db: &TestDb) -> tokio_postgres::Client {
    db.client().await
}

/// A store on the test's database whose sessions carry `application_name`, so that
/// `pg_stat_activity` tells them apart.
fn named_store(db: &TestDb, name: &str) -> Store {
    Store::new(&DbConfig {
        url: format!("{}?application_name={name}", db.config.url),
        ..db.config.clone()
    })
    .unwrap()
}

/// Waits (up to 20 s) until a session of `app` waits on a lock of this kind (`relation`,
/// `transactionid`, ...).
async fn wait_for_lock_wait(observer: &tokio_postgres::Client, app: &str, event: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let waiting: bool = observer
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                                WHERE application_name = $1 AND wait_event_type = 'Lock'
                                  AND wait_event = $2)",
                &[&app, &event],
            )
            .await
            .unwrap()
            .get(0);
        if waiting {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{app} never waited on a {event} lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn deadlocks_and_serialization_failures_are_transient() {
    let db = TestDb::new().await;
    let (a, b) = (session(&db).await, session(&db).await);
    a.batch_execute(
        "CREATE TABLE pair (id int PRIMARY KEY, v int);
         INSERT INTO pair VALUES (1, 0), (2, 0);
         SET deadlock_timeout = '100ms';",
    )
    .await
    .unwrap();
    b.batch_execute("SET deadlock_timeout = '100ms'")
        .await
        .unwrap();

    // A deadlock: each holds one row and wants the other's; PostgreSQL ends one of them.
    a.batch_execute("BEGIN; UPDATE pair SET v = 1 WHERE id = 1")
        .await
        .unwrap();
    b.batch_execute("BEGIN; UPDATE pair SET v = 1 WHERE id = 2")
        .await
        .unwrap();
    let (ra, rb) = tokio::join!(
        a.execute("UPDATE pair SET v = 2 WHERE id = 2", &[]),
        b.execute("UPDATE pair SET v = 2 WHERE id = 1", &[]),
    );
    let victim = match (ra, rb) {
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => e,
        other => panic!("expected one deadlock victim, got {other:?}"),
    };
    let e = StoreError::Db {
        context: "writing",
        source: victim,
    };
    assert_eq!(e.sqlstate(), Some("40P01"), "{e}");
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    a.batch_execute("ROLLBACK").await.unwrap();
    b.batch_execute("ROLLBACK").await.unwrap();

    // A serialization failure: a repeatable-read transaction updates a row another
    // transaction changed after its snapshot.
    a.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT * FROM pair")
        .await
        .unwrap();
    b.execute("UPDATE pair SET v = 3 WHERE id = 1", &[])
        .await
        .unwrap();
    let failure = a
        .execute("UPDATE pair SET v = 4 WHERE id = 1", &[])
        .await
        .unwrap_err();
    let e = StoreError::Db {
        context: "writing",
        source: failure,
    };
    assert_eq!(e.sqlstate(), Some("40001"), "{e}");
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
}

/// Two writers get the same parts; the first is held inside its transaction (its COPY waits
/// on a lock a third session holds) after recording the parts' keys, so the second must wait
/// on those keys' primary key entries. Then the first goes on and commits: the second skips
/// them. Or the first is cancelled and rolls back: the second writes them.
#[tokio::test]
async fn a_writer_racing_another_on_the_same_parts_waits_for_it_and_never_doubles_rows() {
    for (version_1, first_commits) in [(false, true), (false, false), (true, true), (true, false)] {
        let db = TestDb::new().await;
        let (first, second) = (named_store(&db, "first"), named_store(&db, "second"));
        first.ready().await.unwrap();
        second.ready().await.unwrap();
        let observer = session(&db).await;
        let (shared, own) = if version_1 {
            (
                [
                    numbered("shared", 0, &[(3000, "x", 1.0), (3001, "y", 2.0)]),
                    numbered("shared", 1, &[(3002, "x", 3.0)]),
                ],
                numbered("own", 0, &[(3003, "z", 4.0)]),
            )
        } else {
            (
                [
                    range("shared", 0, 3, &[(3000, "x", 1.0), (3001, "y", 2.0)]),
                    range("shared", 2, 3, &[(3002, "x", 3.0)]),
                ],
                range("own", 0, 1, &[(3003, "z", 4.0)]),
            )
        };

        let blocker = session(&db).await;
        blocker
            .batch_execute("BEGIN; LOCK TABLE sensor_data IN SHARE MODE")
            .await
            .unwrap();
        let first_write = tokio::spawn({
            let (store, parts) = (first.clone(), shared.clone());
            async move {
                store
                    .write(&parts.iter().collect::<Vec<_>>(), far_deadline())
                    .await
            }
        });
        wait_for_lock_wait(&observer, "first", "relation").await;
        let second_write = tokio::spawn({
            let (store, mut parts) = (second.clone(), shared.to_vec());
            parts.insert(1, own.clone());
            async move {
                store
                    .write(&parts.iter().collect::<Vec<_>>(), far_deadline())
                    .await
            }
        });
        wait_for_lock_wait(&observer, "second", "transactionid").await;

        if !first_commits {
            observer
                .execute(
                    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity
                     WHERE application_name = 'first' AND wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .unwrap();
        }
        let first_result = if first_commits {
            blocker.batch_execute("COMMIT").await.unwrap();
            first_write.await.unwrap()
        } else {
            // The first write fails (and rolls back) while the lock is still held.
            let r = first_write.await.unwrap();
            blocker.batch_execute("COMMIT").await.unwrap();
            r
        };
        let second_report = second_write.await.unwrap().unwrap();
        if first_commits {
            let r = first_result.unwrap();
            assert_eq!((r.rows, r.parts_written, r.parts_skipped), (3, 2, 0));
            assert_eq!(
                (
                    second_report.rows,
                    second_report.parts_written,
                    second_report.parts_skipped
                ),
                (1, 1, 2)
            );
        } else {
            let e = first_result.unwrap_err();
            assert_eq!(e.sqlstate(), Some("57014"), "{e}");
            assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
            assert_eq!(
                (
                    second_report.rows,
                    second_report.parts_written,
                    second_report.parts_skipped
                ),
                (4, 3, 0)
            );
        }
        assert_eq!(
            db.rows().await,
            [
                (3_000_000_000, "x".into(), 1.0),
                (3_001_000_000, "y".into(), 2.0),
                (3_002_000_000, "x".into(), 3.0),
                (3_003_000_000, "z".into(), 4.0)
            ],
            "version 1: {version_1}, first commits: {first_commits}"
        );
    }
}

/// A request retried with the same `Idempotency-Key` has the same batch id, but its tries
/// may be packed differently: the long-running ingest host packs each try beside whatever
/// other requests are waiting, and another instance may have another message size (SQS
/// queues take 1 KiB to 1 MiB). Whichever parts of which try arrive, in whatever order,
/// the writer writes each of the request's readings once.
#[tokio::test]
async fn a_retry_packed_differently_writes_each_reading_once() {
    let retried = sample_readings("retried", 120);
    // The first try shares its first message with another request's readings; the retry is
    // packed alone (a quiet moment, or Lambda, which packs each request on its own), at
    // another message size.
    let mut packer = Packer::new(2048, Utc::now());
    packer.add("other", &sample_readings("other", 9)).unwrap();
    packer.add("retried", &retried).unwrap();
    let first_try = packer.finish();
    let mut packer = Packer::new(3000, Utc::now());
    packer.add("retried", &retried).unwrap();
    let retry = packer.finish();
    assert!(first_try.len() > 1 && retry.len() > 1);
    // The parts of the two tries begin at different offsets.
    let starts = |bodies: &[String]| -> Vec<u32> {
        bodies
            .iter()
            .flat_map(|b| decode(b).unwrap().batches)
            .filter(|p| p.id == "retried")
            .map(|p| p.offsets().unwrap().start)
            .collect()
    };
    assert_ne!(starts(&first_try), starts(&retry));
    // The first try's first message holds only the other request's readings.
    assert_eq!(starts(&first_try[..1]), Vec::<u32>::new());

    let bodies = |tries: &[&[String]]| -> Vec<String> { tries.concat() };
    // Every message of both tries, the first try's first or the retry's; or only the first
    // part of one try, then the other.
    for (case, messages) in [
        ("first try, then retry", bodies(&[&first_try, &retry])),
        ("retry, then first try", bodies(&[&retry, &first_try])),
        // One try died after its first part of the request (the process was killed before
        // sending the next): the other try's parts overlap it without matching it.
        (
            "the first try's first part only, then the retry",
            bodies(&[&first_try[..2], &retry]),
        ),
        (
            "the retry's first part only, then the first try",
            bodies(&[&retry[..1], &first_try]),
        ),
        (
            "interleaved",
            first_try
                .iter()
                .zip(retry.iter().rev())
                .flat_map(|(a, b)| [b.clone(), a.clone()])
                .chain(first_try.iter().skip(retry.len()).cloned())
                .chain(retry.iter().rev().skip(first_try.len()).cloned())
                .collect(),
        ),
    ] {
        let db = TestDb::new().await;
        for body in &messages {
            let parts = decode(body).unwrap().batches;
            db.store
                .write(&parts.iter().collect::<Vec<_>>(), far_deadline())
                .await
                .unwrap();
        }
        let rows: Vec<String> = db
            .rows()
            .await
            .into_iter()
            .map(|(_, location, _)| location)
            .filter(|l| l.starts_with("retried-"))
            .collect();
        let mut want: Vec<String> = retried.iter().map(|r| r.location.clone()).collect();
        want.sort();
        let mut got = rows.clone();
        got.sort();
        assert_eq!(got, want, "{case}: each of the request's readings once");
    }
}

/// Every session the functions open limits lock waits and abandoned transactions, so a
/// client that stops mid-transaction (a frozen Lambda sandbox) cannot hold locks for long.
#[tokio::test]
async fn every_session_limits_lock_waits_and_idle_transactions() {
    let db = TestDb::new().await;
    let show = |setting: &'static str| {
        let store = db.store.clone();
        async move {
            readings::testing::store_value::<String>(&store, &format!("SHOW {setting}"))
                .await
                .unwrap()
        }
    };
    assert_eq!(show("lock_timeout").await, "10s");
    assert_eq!(show("idle_in_transaction_session_timeout").await, "1min");
    assert_eq!(show("statement_timeout").await, "30s");
}

/// A write still running at its deadline (here: waiting on a lock another session holds)
/// is cancelled on the server, so it stops waiting and holding what it took, and its
/// connection is closed rather than handed to the next caller; nothing of it is kept, and
/// the same parts are written once later.
#[tokio::test]
async fn a_write_past_its_deadline_is_cancelled_on_the_server_and_its_connection_closed() {
    let db = TestDb::new().await;
    let store = named_store(&db, "late-writer");
    store.ready().await.unwrap();
    let blocker = session(&db).await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE sensor_data IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let p = range("late", 0, 2, &[(5000, "x", 1.0), (5001, "y", 2.0)]);
    let started = std::time::Instant::now();
    let deadline = started + std::time::Duration::from_secs(1);
    let e = store.write(&[&p], deadline).await.unwrap_err();
    assert!(matches!(e, StoreError::Deadline(_)), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // Nothing of the store's is left running or waiting on the server.
    let observer = session(&db).await;
    let mut left = i64::MAX;
    for _ in 0..50 {
        left = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = 'late-writer' AND state <> 'idle'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "the late write still runs on the server");
    // The connection is gone from the pool, not waiting there for its next user.
    assert_eq!(store.pool().status().size, 0);
    blocker.batch_execute("COMMIT").await.unwrap();
    let r = store.write(&[&p], far_deadline()).await.unwrap();
    assert_eq!(r.rows, 2);
    assert_eq!(db.count().await, 2);
}

/// A part whose batch size is not the one recorded for its batch id names other readings
/// than the ones written under that id: it is refused as a data error (dead-lettered by the
/// writer), never skipped or written in part.
#[tokio::test]
async fn a_part_that_names_another_batch_size_is_refused() {
    let db = TestDb::new().await;
    let a = range("a", 0, 2, &[(6000, "x", 1.0), (6001, "x", 2.0)]);
    db.store.write(&[&a], far_deadline()).await.unwrap();
    let other = range("a", 1, 3, &[(7001, "y", 5.0), (7002, "y", 6.0)]);
    let e = db.store.write(&[&other], far_deadline()).await.unwrap_err();
    assert!(matches!(e, StoreError::PartMismatch(_)), "{e}");
    assert_eq!(e.kind(), ErrorKind::Data);
    assert!(e.to_string().contains("batch a"), "{e}");
    // Two parts of one call that disagree are refused too.
    let (b1, b2) = (
        range("b", 0, 2, &[(8000, "z", 1.0)]),
        range("b", 1, 3, &[(8001, "z", 2.0)]),
    );
    let e = db
        .store
        .write(&[&b1, &b2], far_deadline())
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::PartMismatch(_)), "{e}");
    assert_eq!(db.count().await, 2);
}

/// What the pool's only connection holds prepared: statements in the server's
/// `pg_prepared_statements`, and in deadpool's statement cache of the connection. Asked
/// with the simple query protocol, which prepares nothing.
async fn prepared_statements(store: &Store) -> (i64, usize) {
    let client = store.pool().get().await.unwrap();
    let rows = client
        .simple_query("SELECT count(*) FROM pg_prepared_statements")
        .await
        .unwrap();
    let server = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0),
            _ => None,
        })
        .unwrap()
        .parse()
        .unwrap();
    (server, client.statement_cache.size())
}

#[tokio::test]
async fn a_connection_keeps_a_bounded_number_of_prepared_statements() {
    let db = TestDb::new().await;
    let store = Store::new(&DbConfig {
        pool_size: 1,
        ..db.config.clone()
    })
    .unwrap();
    let locations = ["attic", "cellar", "porch"];
    // Readings in 40 successive hours, /sensor/latest asked after each: on a hypertable its
    // first probes are bounded by a time written into the statement, one per hour.
    let base = 1_700_000_000 - 1_700_000_000 % 3600;
    for hour in 0..40 {
        let start = base + hour * 3600;
        let rows: Vec<(i64, &str, f64)> = (0..6)
            .map(|i| (start + i, locations[i as usize % 3], hour as f64))
            .collect();
        store
            .write(
                &[&range(&format!("h{hour}"), 0, rows.len() as u32, &rows)],
                far_deadline(),
            )
            .await
            .unwrap();
        let latest = store.latest(None).await.unwrap();
        let got: Vec<(&str, i64)> = latest
            .iter()
            .map(|r| (r.location.as_str(), r.time.timestamp()))
            .collect();
        assert_eq!(
            got,
            [
                ("attic", start + 3),
                ("cellar", start + 4),
                ("porch", start + 5)
            ]
        );
    }
    let (after_latest, cached) = prepared_statements(&store).await;
    assert!(
        after_latest <= 20 && cached as i64 <= after_latest,
        "after 40 hours of /sensor/latest the connection holds {after_latest} prepared statements ({cached} in deadpool's cache)"
    );

    // GET /sensor with every limit from 1 to 300, for all locations and for one.
    let total = 40 * 6;
    for limit in 1..=300 {
        let all = store
            .recent(&RecentQuery {
                limit,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len() as i64, limit.min(total), "limit {limit}");
        assert_eq!(all[0].time.timestamp(), base + 39 * 3600 + 5);
        let attic = store
            .recent(&RecentQuery {
                limit,
                location: Some("attic".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(attic.len() as i64, limit.min(total / 3), "limit {limit}");
        assert!(attic.iter().all(|r| r.location == "attic"));
    }
    let (after_recent, cached) = prepared_statements(&store).await;
    assert!(
        after_recent - after_latest <= 16 && cached as i64 <= after_recent,
        "600 requests with 300 limits left {} more prepared statements ({after_recent} in all, {cached} in deadpool's cache)",
        after_recent - after_latest
    );
}
