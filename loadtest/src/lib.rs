//! A fleet simulator and open-model load generator for the ingest and query APIs. See
//! `loadtest --help` and the README's "Load testing".

pub mod cli;
pub mod fleet;
pub mod ledger;
pub mod progress;
pub mod report;
pub mod runner;
pub mod schedule;
pub mod stats;
pub mod svg;
pub mod target;
pub mod verify;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use chrono::Utc;

use cli::Args;
use fleet::Fleet;
use report::{Plan, Summary};
use schedule::Schedule;
use stats::{lock, Stats};
use target::Target;

/// How a finished run went.
pub enum Verdict {
    Passed,
    /// One line per breached threshold (or verify failure).
    Breached(Vec<String>),
    /// Stopped by Ctrl-C before the end of the schedule (the summary covers what ran).
    Interrupted,
}

/// Runs the load test `args` describes, prints the summary and writes the files asked for.
pub async fn run(args: Args) -> Result<Verdict> {
    let run_id = fleet::new_run_id();
    let fleet = Fleet::new(&run_id, args.sensors);
    let target = Arc::new(Target::new(
        &args.ingest_url,
        args.query_url.as_deref(),
        args.api_key.as_deref(),
        args.timeout,
        args.concurrency as usize,
    )?);
    target.preflight(args.query_ratio > 0.0).await?;

    let started_at = Utc::now();
    let monitor = match &args.verify {
        Some(url) => Some(
            verify::Monitor::start(url, fleet.locations(), started_at, args.verify_patience)
                .await?,
        ),
        None => None,
    };
    let duration = args.duration();
    let schedule = Schedule::new(
        args.rate,
        args.batch,
        args.query_ratio,
        duration,
        args.readings,
    );
    let start = Instant::now();
    let stats = Arc::new(Mutex::new(Stats::new(start)));
    let progress = progress::Progress::start(
        args.quiet,
        duration,
        args.readings,
        args.rate,
        stats.clone(),
    );
    let ledger = match &args.ledger {
        Some(path) => Some(Arc::new(ledger::Ledger::create(path)?)),
        None => None,
    };
    let sending = runner::Sending {
        idempotency_share: args.idempotency_share,
        invalid_share: args.invalid_share,
        retry_for: args.retry_for,
        ledger: ledger.clone(),
        pending: monitor.as_ref().map(verify::Monitor::pending),
    };
    let run = runner::run(
        schedule,
        fleet,
        target.clone(),
        args.concurrency,
        stats.clone(),
        start,
        sending,
    )
    .await;
    progress.finish();
    let run = run?;
    // Every request has finished (the runner waited for them all).
    if let Some(ledger) = ledger {
        ledger.finish()?;
    }

    // Every request has finished: take the stats out of the shared lock.
    let stats = std::mem::replace(&mut *lock(&stats), Stats::new(start));
    // A failed check still leaves the load's summary and files; the error comes last.
    let (verification, verify_error) = match monitor {
        Some(m) => {
            if !args.quiet {
                eprintln!(
                    "verifying: waiting up to {} for {} readings in sensor_data",
                    humantime::format_duration(args.verify_timeout),
                    stats.readings_accepted
                );
            }
            let finish = m.finish(stats.readings_accepted, args.verify_timeout);
            let result = tokio::select! {
                v = finish => v,
                // The run's Ctrl-C handler stays installed; honour a Ctrl-C here too.
                _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted while verifying")),
            };
            match result {
                Ok(v) => (Some(v), None),
                Err(e) => (None, Some(e)),
            }
        }
        None => (None, None),
    };

    let plan = Plan {
        rate: args.rate,
        batch: args.batch,
        sensors: args.sensors,
        concurrency: args.concurrency,
        query_ratio: args.query_ratio,
        duration_secs: duration.map(|d| d.as_secs_f64()),
        readings: args.readings,
    };
    let urls = (
        target.ingest_url.to_string(),
        target.query_url.as_ref().map(|u| u.to_string()),
    );
    let mut summary = Summary::new(
        &run_id,
        plan,
        urls,
        started_at.to_rfc3339(),
        &run,
        &stats,
        verification,
    );
    let breaches = summary.check(&args.thresholds);
    print!("{}", summary.text());
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&summary).context("encoding the JSON summary")?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        let title = format!(
            "loadtest {run_id}: {} readings/s target, batch {}",
            args.rate, args.batch
        );
        let lag = summary.verify.as_ref().map(|v| v.lag_timeline.as_slice());
        svg::draw(path, &title, args.rate, &summary.timeline, lag)?;
    }
    if let Some(e) = verify_error {
        return Err(e.context("--verify could not finish"));
    }
    Ok(if !breaches.is_empty() {
        Verdict::Breached(breaches)
    } else if run.interrupted {
        Verdict::Interrupted
    } else {
        Verdict::Passed
    })
}
