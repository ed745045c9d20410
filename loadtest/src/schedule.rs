//! The open model's timetable: when each request is due and what it is, fixed in advance
//! from the target rate, whatever the answers do.

use std::time::Duration;

/// What a slot sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// POST this many readings.
    Ingest(u32),
    /// GET /sensor.
    Query,
}

/// One scheduled request: due `offset` after the start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slot {
    pub offset: Duration,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub struct Schedule {
    /// Seconds between two requests (ingest and query together).
    interval: f64,
    end: Option<Duration>,
    readings_left: Option<u64>,
    batch: u32,
    query_ratio: f64,
    index: u64,
}

impl Schedule {
    /// `rate` readings/s in requests of `batch`, plus a `query_ratio` share of GETs on top;
    /// until `end` and/or `readings` readings.
    pub fn new(
        rate: f64,
        batch: u32,
        query_ratio: f64,
        end: Option<Duration>,
        readings: Option<u64>,
    ) -> Schedule {
        let ingest_per_sec = rate / f64::from(batch);
        let requests_per_sec = ingest_per_sec / (1.0 - query_ratio);
        Schedule {
            interval: 1.0 / requests_per_sec,
            end,
            readings_left: readings,
            batch,
            query_ratio,
            index: 0,
        }
    }

    /// Requests per second, ingest and query together.
    pub fn requests_per_sec(&self) -> f64 {
        1.0 / self.interval
    }
}

impl Iterator for Schedule {
    type Item = Slot;

    fn next(&mut self) -> Option<Slot> {
        // Computed from the index, not accumulated, so the timetable never drifts.
        let offset = Duration::from_secs_f64(self.index as f64 * self.interval);
        if self.end.is_some_and(|end| offset >= end) || self.readings_left == Some(0) {
            return None;
        }
        let i = self.index as f64;
        let is_query = ((i + 1.0) * self.query_ratio).floor() > (i * self.query_ratio).floor();
        self.index += 1;
        let kind = if is_query {
            Kind::Query
        } else {
            let n = match &mut self.readings_left {
                Some(left) => {
                    let n = (*left).min(u64::from(self.batch));
                    *left -= n;
                    n as u32
                }
                None => self.batch,
            };
            Kind::Ingest(n)
        };
        Some(Slot { offset, kind })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings(s: &[Slot]) -> u64 {
        s.iter()
            .map(|s| match s.kind {
                Kind::Ingest(n) => u64::from(n),
                Kind::Query => 0,
            })
            .sum()
    }

    #[test]
    fn a_duration_gives_rate_times_duration() {
        let s: Vec<_> = Schedule::new(200.0, 10, 0.0, Some(Duration::from_secs(3)), None).collect();
        assert_eq!(s.len(), 60);
        assert_eq!(readings(&s), 600);
        assert_eq!(s[1].offset, Duration::from_millis(50));
        assert_eq!(s[59].offset, Duration::from_millis(2950));
    }

    #[test]
    fn a_reading_budget_ends_with_a_partial_batch() {
        let s: Vec<_> = Schedule::new(1000.0, 10, 0.0, None, Some(95)).collect();
        assert_eq!(s.len(), 10);
        assert_eq!(s[9].kind, Kind::Ingest(5));
        assert_eq!(readings(&s), 95);
    }

    #[test]
    fn queries_come_on_top_of_the_ingest_rate() {
        let s: Vec<_> = Schedule::new(100.0, 1, 0.5, Some(Duration::from_secs(1)), None).collect();
        let queries = s.iter().filter(|s| s.kind == Kind::Query).count();
        assert_eq!(s.len(), 200);
        assert_eq!(queries, 100);
        assert_eq!(readings(&s), 100);
        let s: Vec<_> = Schedule::new(100.0, 1, 0.1, Some(Duration::from_secs(9)), None).collect();
        let queries = s.iter().filter(|s| s.kind == Kind::Query).count();
        assert_eq!((s.len(), queries), (1000, 100));
    }
}
