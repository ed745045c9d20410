//! What the run measured: latency histograms, status and error counts, a per-second timeline,
//! and the send times of accepted readings (for --verify's lag).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// The two kinds of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Ingest,
    Query,
}

/// How a request ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// An HTTP answer with this status.
    Status(u16),
    /// No HTTP answer: the kind (`connect`, `timeout`, ...) and the error's text.
    Transport { kind: &'static str, detail: String },
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Status(s) if (200..300).contains(s))
    }
}

/// One finished request.
#[derive(Debug, Clone)]
pub struct Completion {
    pub op: Op,
    pub readings: u32,
    /// From the scheduled send time to the end of the answer.
    pub latency: Duration,
    pub outcome: Outcome,
    /// Tries, 1 when the request was not retried.
    pub attempts: u32,
}

/// One second of the run, by completion time.
#[derive(Debug, Clone, Serialize)]
pub struct Second {
    pub second: u64,
    /// How much of the second the run covered: 1 but for the last.
    pub length: f64,
    pub requests: u64,
    /// Readings accepted (2xx) in this second.
    pub readings: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

struct Current {
    index: u64,
    latency: Histogram<u64>,
    requests: u64,
    readings: u64,
    errors: u64,
}

/// The latency histograms record microseconds from 1 µs up to an hour (longer is clamped).
const MAX_MICROS: u64 = 3_600_000_000;

fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, sigfig).expect("constant histogram bounds are valid")
}

/// The microseconds of `d` as a histogram value.
fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_MICROS)
}

/// A value of a latency histogram in milliseconds.
pub fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

pub struct Stats {
    start: Instant,
    /// Every request's latency, in µs.
    pub latency: Histogram<u64>,
    /// The same split by kind of request.
    pub ingest_latency: Histogram<u64>,
    pub query_latency: Histogram<u64>,
    pub ingest_requests: u64,
    pub query_requests: u64,
    pub readings_sent: u64,
    pub readings_accepted: u64,
    pub status: BTreeMap<u16, u64>,
    pub transport: BTreeMap<&'static str, u64>,
    /// The text of the first transport error, for the error message when nothing answers.
    pub first_transport_error: Option<String>,
    pub completed: u64,
    pub successes: u64,
    /// Tries beyond each request's first.
    pub retries: u64,
    /// Requests that were retried and then answered 2xx.
    pub recovered: u64,
    pub timeline: Vec<Second>,
    current: Current,
}

impl Stats {
    pub fn new(start: Instant) -> Stats {
        Stats {
            start,
            latency: histogram(3),
            ingest_latency: histogram(3),
            query_latency: histogram(3),
            ingest_requests: 0,
            query_requests: 0,
            readings_sent: 0,
            readings_accepted: 0,
            status: BTreeMap::new(),
            transport: BTreeMap::new(),
            first_transport_error: None,
            completed: 0,
            successes: 0,
            retries: 0,
            recovered: 0,
            timeline: Vec::new(),
            current: Current::new(0),
        }
    }

    /// A request leaves.
    pub fn sent(&mut self, op: Op, readings: u32) {
        match op {
            Op::Ingest => self.ingest_requests += 1,
            Op::Query => self.query_requests += 1,
        }
        self.readings_sent += u64::from(readings);
    }

    /// A request ended at `now`.
    pub fn record(&mut self, c: Completion, now: Instant) {
        self.roll_to(now.saturating_duration_since(self.start).as_secs());
        let value = micros(c.latency);
        self.latency.saturating_record(value);
        match c.op {
            Op::Ingest => self.ingest_latency.saturating_record(value),
            Op::Query => self.query_latency.saturating_record(value),
        }
        self.completed += 1;
        self.retries += u64::from(c.attempts.saturating_sub(1));
        if c.attempts > 1 && c.outcome.is_success() {
            self.recovered += 1;
        }
        let cur = &mut self.current;
        cur.latency.saturating_record(value);
        cur.requests += 1;
        if c.outcome.is_success() {
            self.successes += 1;
            if c.op == Op::Ingest {
                self.readings_accepted += u64::from(c.readings);
                cur.readings += u64::from(c.readings);
            }
        } else {
            cur.errors += 1;
        }
        match c.outcome {
            Outcome::Status(s) => *self.status.entry(s).or_default() += 1,
            Outcome::Transport { kind, detail } => {
                *self.transport.entry(kind).or_default() += 1;
                self.first_transport_error.get_or_insert(detail);
            }
        }
    }

    /// Closes the seconds before `index` into the timeline.
    fn roll_to(&mut self, index: u64) {
        while self.current.index < index {
            let next = Current::new(self.current.index + 1);
            let done = std::mem::replace(&mut self.current, next);
            self.timeline.push(done.close(1.0));
        }
    }

    /// Closes the timeline up to `now` (the end of the run).
    pub fn finish(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.start);
        self.roll_to(elapsed.as_secs());
        // The last, partial second counts when anything happened in it.
        if self.current.requests > 0 {
            let length = elapsed.as_secs_f64() - self.current.index as f64;
            let last = std::mem::replace(&mut self.current, Current::new(u64::MAX));
            self.timeline.push(last.close(length.clamp(0.0, 1.0)));
        }
    }

    /// Non-2xx answers plus requests without an answer.
    pub fn errors(&self) -> u64 {
        self.completed - self.successes
    }

    /// The newest closed second.
    pub fn last_second(&self) -> Option<&Second> {
        self.timeline.last()
    }
}

impl Current {
    fn new(index: u64) -> Current {
        Current {
            index,
            latency: histogram(2),
            requests: 0,
            readings: 0,
            errors: 0,
        }
    }

    fn close(self, length: f64) -> Second {
        let (p50, p99, max) = if self.latency.is_empty() {
            (0, 0, 0)
        } else {
            (
                self.latency.value_at_quantile(0.5),
                self.latency.value_at_quantile(0.99),
                self.latency.max(),
            )
        };
        Second {
            second: self.index,
            length,
            requests: self.requests,
            readings: self.readings,
            errors: self.errors,
            p50_ms: ms(p50),
            p99_ms: ms(p99),
            max_ms: ms(max),
        }
    }
}

/// Locks shared stats; a panic elsewhere while holding the lock leaves counts usable.
pub fn lock(stats: &std::sync::Mutex<Stats>) -> std::sync::MutexGuard<'_, Stats> {
    stats.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(op: Op, readings: u32, latency_ms: u64, outcome: Outcome) -> Completion {
        Completion {
            op,
            readings,
            latency: Duration::from_millis(latency_ms),
            outcome,
            attempts: 1,
        }
    }

    #[test]
    fn counts_and_timeline() {
        let start = Instant::now();
        let mut s = Stats::new(start);
        let at = |ms| start + Duration::from_millis(ms);
        s.sent(Op::Ingest, 10);
        s.record(done(Op::Ingest, 10, 5, Outcome::Status(202)), at(100));
        s.sent(Op::Ingest, 10);
        s.record(done(Op::Ingest, 10, 50, Outcome::Status(503)), at(200));
        s.sent(Op::Query, 0);
        s.record(done(Op::Query, 0, 7, Outcome::Status(200)), at(2500));
        s.sent(Op::Ingest, 10);
        let refused = Outcome::Transport {
            kind: "connect",
            detail: "connection refused".into(),
        };
        s.record(done(Op::Ingest, 10, 1, refused), at(2600));
        s.finish(at(2700));

        assert_eq!((s.readings_sent, s.readings_accepted), (30, 10));
        assert_eq!((s.ingest_requests, s.query_requests), (3, 1));
        assert_eq!(s.errors(), 2);
        assert_eq!(s.status.get(&202), Some(&1));
        assert_eq!(s.status.get(&503), Some(&1));
        assert_eq!(s.transport.get("connect"), Some(&1));
        let t: Vec<_> = s
            .timeline
            .iter()
            .map(|x| (x.second, x.requests, x.readings, x.errors))
            .collect();
        assert_eq!(t, [(0, 2, 10, 1), (1, 0, 0, 0), (2, 2, 0, 1)]);
        assert!((s.timeline[0].max_ms - 50.0).abs() < 1.0);
        assert!((ms(s.latency.max()) - 50.0).abs() < 0.1);
    }
}
