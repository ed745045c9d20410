//! The open-model loop: sends each scheduled request at its time, at most `concurrency` at
//! once, and records each latency from the scheduled time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use chrono::Utc;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;

use crate::fleet::{Fleet, Reading};
use crate::ledger::Ledger;
use crate::schedule::{Kind, Schedule};
use crate::stats::{lock, Completion, Op, Outcome, Stats};
use crate::target::{self, Target};
use crate::verify::Pending;

/// When the first this-many answers are all transport errors, the run stops: the target is
/// down, and thousands of identical errors would tell nothing more.
const GIVE_UP_AFTER: u64 = 10;

/// A temperature far beyond any plausible `TEMPERATURE_MAX`: a request carrying it is
/// refused whole.
pub const INVALID_TEMPERATURE: f64 = 1.0e9;

/// The first retry waits about this long; each next one twice as long, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How ingest requests are sent, beyond the schedule.
#[derive(Clone, Default)]
pub struct Sending {
    /// Share of ingest requests with an `Idempotency-Key`.
    pub idempotency_share: f64,
    /// Share of ingest requests made invalid on purpose.
    pub invalid_share: f64,
    /// Retry budget from a request's first send (see [`target::retryable`]).
    pub retry_for: Option<Duration>,
    /// Where every reading's outcome goes.
    pub ledger: Option<Arc<Ledger>>,
    /// Where --verify learns which requests were accepted, and as which batch ids.
    pub pending: Option<Arc<Pending>>,
}

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
    sending: Sending,
) -> Result<Run> {
    let mut rng = SmallRng::from_rng(&mut rand::rng());
    let mut request_n = 0u64;
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
        let (op, mut readings, location) = match slot.kind {
            Kind::Ingest(n) => (Op::Ingest, fleet.readings(n as usize, sent_at), None),
            Kind::Query => (Op::Query, vec![], Some(fleet.random_location().to_owned())),
        };
        let mut key = None;
        if op == Op::Ingest {
            request_n += 1;
            if rng.random_bool(sending.invalid_share) {
                if let Some(r) = readings.last_mut() {
                    r.temperature = INVALID_TEMPERATURE;
                }
            }
            if rng.random_bool(sending.idempotency_share) {
                key = Some(format!("lt-{}-{request_n}", fleet.run_id()));
            }
        }
        let count = readings.len() as u32;
        lock(&stats).sent(op, count);
        let target = target.clone();
        let stats = stats.clone();
        let sending = sending.clone();
        tokio::spawn(async move {
            let (outcome, attempts, batch_id) = match &location {
                Some(location) => (target.query(location).await, 1, None),
                None => ingest(&target, &readings, key.as_deref(), sending.retry_for).await,
            };
            if let Some(ledger) = &sending.ledger {
                ledger.record(&readings, &outcome);
            }
            if let (Some(pending), Some(id)) = (&sending.pending, batch_id) {
                pending.accepted(id, sent_at.timestamp_micros(), count);
            }
            let now = Instant::now();
            let completion = Completion {
                op,
                readings: count,
                latency: now.saturating_duration_since(due),
                outcome,
                attempts,
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

/// POSTs `readings`, retrying what [`target::retryable`] allows while `retry_for` lasts from
/// the first send, with jittered exponential backoff. Returns the last outcome, the tries
/// and the batch id an accepting answer gave.
async fn ingest(
    target: &Target,
    readings: &[Reading],
    key: Option<&str>,
    retry_for: Option<Duration>,
) -> (Outcome, u32, Option<String>) {
    let body = match target::encode(readings) {
        Ok(b) => b,
        Err(e) => {
            let outcome = Outcome::Transport {
                kind: "encode",
                detail: e.to_string(),
            };
            return (outcome, 1, None);
        }
    };
    let first = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    let mut attempts = 1;
    loop {
        let (outcome, batch_id) = target.post(body.clone(), key).await;
        let Some(budget) = retry_for else {
            return (outcome, attempts, batch_id);
        };
        if !target::retryable(&outcome, key.is_some()) {
            return (outcome, attempts, batch_id);
        }
        let wait = backoff.mul_f64(rand::rng().random_range(0.5..1.0));
        if first.elapsed() + wait > budget {
            return (outcome, attempts, batch_id);
        }
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        attempts += 1;
    }
}

/// The first answers are all transport errors.
fn target_is_down(s: &Stats) -> bool {
    s.completed >= GIVE_UP_AFTER && nothing_answered(s)
}

/// Every finished request failed without an HTTP answer.
fn nothing_answered(s: &Stats) -> bool {
    s.transport.values().sum::<u64>() == s.completed
}
