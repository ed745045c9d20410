//! The TimescaleDB target: the table kind the tests should expect, and TimescaleDB's policy
//! jobs run now, in the session or by the background scheduler.

use std::time::Duration;

use super::error_chain;

/// The table kind the test server gives: `PG_TARGET=timescaledb` (the TimescaleDB pass of
/// `scripts/test`) starts every cluster with TimescaleDB preloaded, so a hypertable;
/// otherwise a plain table (TimescaleDB may be installed, but is not preloaded).
pub fn expected_kind() -> crate::postgres::store::TableKind {
    match std::env::var("PG_TARGET").as_deref() {
        Ok("timescaledb") => crate::postgres::store::TableKind::Hypertable,
        _ => crate::postgres::store::TableKind::Plain,
    }
}

/// The TimescaleDB policy jobs on the database's hypertables (not TimescaleDB's own
/// telemetry and housekeeping jobs): `(job_id, proc_name)` by name.
async fn policy_jobs(client: &tokio_postgres::Client) -> Vec<(i32, String)> {
    client
        .query(
            "SELECT job_id, proc_name::text FROM timescaledb_information.jobs
             WHERE hypertable_name IS NOT NULL ORDER BY proc_name, job_id",
            &[],
        )
        .await
        .expect("list jobs")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Runs every policy job now, in this session (`CALL run_job`, which fails with the job's
/// error). Returns `(proc_name, "Success" or the error)` by name.
pub async fn run_policy_jobs(client: &tokio_postgres::Client) -> Vec<(String, String)> {
    let mut outcomes = Vec::new();
    for (id, name) in policy_jobs(client).await {
        let outcome = match client.batch_execute(&format!("CALL run_job({id})")).await {
            Ok(()) => "Success".to_owned(),
            Err(e) => format!("run_job failed: {}", error_chain(&e)),
        };
        outcomes.push((name, outcome));
    }
    outcomes
}

/// Has TimescaleDB's background scheduler run every policy job now (`alter_job(...,
/// next_start => now())`) and waits, up to a minute, for each to finish a run after that.
/// A run counts as finished once `last_run_duration` is set (its finish is after its start):
/// `job_status` is not enough, since it says `Running` only while the worker's backend is
/// active in `pg_stat_activity`, and `last_run_status` is NULL between a run's start and end.
/// Returns `(proc_name, last_run_status)` from `timescaledb_information.job_stats` by name,
/// with the error from `job_errors` for a failed run. Needs a server with background
/// workers to spare: a cluster of the test's own, not the shared one where every test
/// database's scheduler takes a worker.
pub async fn background_job_runs(client: &tokio_postgres::Client) -> Vec<(String, String)> {
    let jobs = policy_jobs(client).await;
    let asked = chrono::Utc::now();
    for (id, _) in &jobs {
        client
            .batch_execute(&format!("SELECT alter_job({id}, next_start => now())"))
            .await
            .unwrap_or_else(|e| panic!("alter_job({id}): {e:?}"));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut outcomes = Vec::new();
    for (id, name) in jobs {
        let outcome = loop {
            let row = client
                .query_one(
                    "SELECT s.last_run_started_at >= $2 AND s.last_run_duration IS NOT NULL,
                            s.last_run_status::text,
                            (SELECT e.err_message FROM timescaledb_information.job_errors e
                             WHERE e.job_id = $1 AND e.start_time >= $2
                             ORDER BY e.start_time DESC LIMIT 1)
                     FROM timescaledb_information.job_stats s WHERE s.job_id = $1",
                    &[&id, &asked],
                )
                .await
                .expect("job stats");
            let (done, status, error): (Option<bool>, Option<String>, Option<String>) =
                (row.get(0), row.get(1), row.get(2));
            if done == Some(true) {
                break match error {
                    Some(e) if status.as_deref() != Some("Success") => {
                        format!("{}: {e}", status.unwrap_or_default())
                    }
                    _ => status.unwrap_or_default(),
                };
            }
            if std::time::Instant::now() > deadline {
                break format!("no run within a minute (status {status:?})");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        outcomes.push((name, outcome));
    }
    outcomes
}
