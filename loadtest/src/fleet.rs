//! The simulated sensors: one location each and a temperature that drifts around a base.

use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// One reading as the ingest API takes it.
#[derive(Debug, Clone, Serialize)]
pub struct Reading {
    pub location: String,
    pub temperature: f64,
    /// RFC 3339 with microseconds: the reading's send time.
    pub time: String,
    /// The same time in epoch microseconds (not sent).
    #[serde(skip)]
    pub micros: i64,
}

struct Sensor {
    location: String,
    base: f64,
    temperature: f64,
    last_time: Option<DateTime<Utc>>,
}

/// The fleet of one run. Readings go to the sensors in turn.
pub struct Fleet {
    run_id: String,
    sensors: Vec<Sensor>,
    next: usize,
    rng: SmallRng,
}

/// A short random run id: 8 lowercase letters and digits.
pub fn new_run_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..8)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl Fleet {
    pub fn new(run_id: &str, sensors: u32) -> Fleet {
        let mut rng = SmallRng::from_rng(&mut rand::rng());
        let sensors = (0..sensors)
            .map(|n| {
                let base = rng.random_range(15.0..30.0);
                Sensor {
                    location: location(run_id, n),
                    base,
                    temperature: base + rng.random_range(-1.0..1.0),
                    last_time: None,
                }
            })
            .collect();
        Fleet {
            run_id: run_id.to_owned(),
            sensors,
            next: 0,
            rng,
        }
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Every location of the fleet.
    pub fn locations(&self) -> Vec<String> {
        self.sensors.iter().map(|s| s.location.clone()).collect()
    }

    /// A random sensor's location (for queries).
    pub fn random_location(&mut self) -> &str {
        let i = self.rng.random_range(0..self.sensors.len());
        &self.sensors[i].location
    }

    /// The next `n` readings, taken at `now`. A sensor's times strictly increase (by a
    /// microsecond when it reads twice within one), so (location, time) is unique in a run.
    pub fn readings(&mut self, n: usize, now: DateTime<Utc>) -> Vec<Reading> {
        let now = truncate_to_micros(now);
        (0..n)
            .map(|_| {
                let i = self.next;
                self.next = (self.next + 1) % self.sensors.len();
                let step = self.rng.random_range(-0.2..0.2);
                let s = &mut self.sensors[i];
                // A random walk pulled back towards the base.
                s.temperature += 0.05 * (s.base - s.temperature) + step;
                let time = match s.last_time {
                    Some(last) if last >= now => last + TimeDelta::microseconds(1),
                    _ => now,
                };
                s.last_time = Some(time);
                Reading {
                    location: s.location.clone(),
                    temperature: (s.temperature * 100.0).round() / 100.0,
                    time: time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    micros: time.timestamp_micros(),
                }
            })
            .collect()
    }
}

/// The location of sensor `n` in run `run_id`.
pub fn location(run_id: &str, n: u32) -> String {
    format!("lt-{run_id}-{n}")
}

fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn readings_are_unique_and_plausible() {
        let mut fleet = Fleet::new("abc", 3);
        let now = Utc::now();
        let mut seen = HashSet::new();
        let mut temps: Vec<Vec<f64>> = vec![vec![]; 3];
        for _ in 0..200 {
            for r in fleet.readings(7, now) {
                assert!(r.location.starts_with("lt-abc-"));
                assert!(seen.insert((r.location.clone(), r.time.clone())), "{r:?}");
                let n: usize = r.location["lt-abc-".len()..].parse().unwrap();
                temps[n].push(r.temperature);
            }
        }
        assert_eq!(seen.len(), 1400);
        for t in temps {
            let (lo, hi) = t
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            assert!(lo > 5.0 && hi < 40.0, "{lo}..{hi}");
            assert!(hi > lo, "the temperature drifts");
        }
    }

    #[test]
    fn run_ids_are_short_and_distinct() {
        let a = new_run_id();
        assert_eq!(a.len(), 8);
        assert_ne!(a, new_run_id());
    }
}
