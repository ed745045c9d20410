//! The open-model loop: sends each scheduled request at its time, at most `concurrency` at
//! once, and records each latency from the scheduled time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use chrono::Utc;
use tokio::sync::Semaphore;

use crate::fleet::Fleet;
use crate::schedule::{Kind, Schedule};
use crate::stats::{lock, Completion, Op, Stats};
use crate::target::Target;

/// When the first this-many answers are all transport errors, the run stops: the target is
/// down, and thousands of identical errors would tell nothing more.
const GIVE_UP_AFTER: u64 = 10;

pub struct Run {
    pub elapsed: Duration,
    /// Stopped early by Ctrl-C.
    pub interrupted: bool,
}

/// Sends the schedule. Fails when no request gets an answer.
pub async fn run(
    schedule: Schedule,
    mut fleet: Fleet,
    target: Arc<Target>,
    concurrency: u32,
    stats: Arc<Mutex<Stats>>,
    start: Instant,
) -> Result<Run> {
    let slots = Arc::new(Semaphore::new(concurrency as usize));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut interrupted = false;
    let interval = Duration::from_secs_f64(1.0 / schedule.requests_per_sec());
    // The schedule's length: up to when the slot after the last one would be due.
    let mut window = Duration::ZERO;
    for slot in schedule {
        window = slot.offset + interval;
        let due = start + slot.offset;
        let permit = tokio::select! {
            permit = async {
                tokio::time::sleep_until(due.into()).await;
                slots.clone().acquire_owned().await
            } => permit?,
            _ = &mut ctrl_c => {
                interrupted = true;
                break;
            }
        };
        if target_is_down(&lock(&stats)) {
            break;
        }
        let sent_at = Utc::now();
        let (op, readings, location) = match slot.kind {
            Kind::Ingest(n) => (Op::Ingest, fleet.readings(n as usize, sent_at), None),
            Kind::Query => (Op::Query, vec![], Some(fleet.random_location().to_owned())),
        };
        let count = readings.len() as u32;
        lock(&stats).sent(op, count);
        let target = target.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let outcome = match &location {
                Some(location) => target.query(location).await,
                None => target.ingest(&readings).await,
            };
            let now = Instant::now();
            let completion = Completion {
                op,
                readings: count,
                latency: now.saturating_duration_since(due),
                sent_at_micros: sent_at.timestamp_micros(),
                outcome,
            };
            lock(&stats).record(completion, now);
            drop(permit);
        });
    }
    // Wait for the requests in flight, until a Ctrl-C (after one that stopped the
    // schedule, the next one; once the schedule is done, the first).
    tokio::select! {
        all = slots.acquire_many(concurrency) => drop(all?),
        _ = tokio::signal::ctrl_c() => interrupted = true,
    }
    let end = Instant::now();
    let mut s = lock(&stats);
    s.finish(end);
    if s.completed > 0 && nothing_answered(&s) {
        let detail = s.first_transport_error.clone().unwrap_or_default();
        bail!(
            "no request got an answer ({} tried); the first error: {detail}",
            s.completed
        );
    }
    let took = end.saturating_duration_since(start);
    Ok(Run {
        // A run lasts its whole schedule even when the last answer comes sooner.
        elapsed: if interrupted { took } else { took.max(window) },
        interrupted,
    })
}

/// The first answers are all transport errors.
fn target_is_down(s: &Stats) -> bool {
    s.completed >= GIVE_UP_AFTER && nothing_answered(s)
}

/// Every finished request failed without an HTTP answer.
fn nothing_answered(s: &Stats) -> bool {
    s.transport.values().sum::<u64>() == s.completed
}
