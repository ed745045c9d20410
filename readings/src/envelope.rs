//! The queue message body: a small versioned JSON envelope.
//!
//! ```json
//! {"v":1,"batches":[{"id":"<batch id>","part":0,"readings":[[1678925592000000,"bedroom",66.0]]}]}
//! ```
//!
//! A reading travels as `[epoch microseconds, location, temperature]`. A request's readings
//! may span several messages; each message carries one *part* of the batch, and `(id, part)`
//! is what the writer records to make a redelivered part a no-op. The envelope holds a list
//! of parts so that parts of several requests can share a message. Decoders accept every
//! version listed in [`SUPPORTED_VERSIONS`], so messages that wait in a queue across an
//! upgrade stay readable.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::reading::Reading;

/// The version this build writes.
pub const VERSION: u32 = 1;
/// The versions this build reads.
pub const SUPPORTED_VERSIONS: [u32; 1] = [1];

/// A decoded message body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    pub batches: Vec<BatchPart>,
}

/// One part of one ingest request's batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchPart {
    pub id: String,
    pub part: u32,
    pub readings: Vec<WireReading>,
}

/// A reading as it travels: `[epoch microseconds, location, temperature]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireReading(pub i64, pub String, pub f64);

impl From<&Reading> for WireReading {
    fn from(r: &Reading) -> Self {
        WireReading(r.time.timestamp_micros(), r.location.clone(), r.temperature)
    }
}

impl WireReading {
    pub fn time(&self) -> Result<DateTime<Utc>, EnvelopeError> {
        DateTime::from_timestamp_micros(self.0).ok_or(EnvelopeError::BadTime(self.0))
    }
}

#[derive(Debug, Error)]
pub enum EnvelopeError {
    #[error("message body is not a readings envelope: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("envelope version {found} is not supported (this build reads {SUPPORTED_VERSIONS:?})")]
    UnsupportedVersion { found: u32 },
    #[error("reading time {0} µs is out of range")]
    BadTime(i64),
    #[error("a reading of {0} bytes cannot fit in a message of at most {1} bytes")]
    TooLarge(usize, usize),
}

/// Decodes a message body.
pub fn decode(body: &str) -> Result<Envelope, EnvelopeError> {
    match serde_json::from_str::<Envelope>(body) {
        Ok(e) if SUPPORTED_VERSIONS.contains(&e.v) => Ok(e),
        Ok(e) => Err(EnvelopeError::UnsupportedVersion { found: e.v }),
        Err(err) => {
            // A newer envelope may not parse as this one: name its version if it has one.
            #[derive(Deserialize)]
            struct Probe {
                v: u32,
            }
            match serde_json::from_str::<Probe>(body) {
                Ok(p) if !SUPPORTED_VERSIONS.contains(&p.v) => {
                    Err(EnvelopeError::UnsupportedVersion { found: p.v })
                }
                _ => Err(EnvelopeError::Malformed(err)),
            }
        }
    }
}

/// Packs one batch's readings into as few message bodies as fit in `max_bytes` each.
///
/// Bodies are filled greedily in order; part numbers count from 0.
pub fn pack(
    batch_id: &str,
    readings: &[Reading],
    max_bytes: usize,
) -> Result<Vec<String>, EnvelopeError> {
    let id = serde_json::to_string(batch_id).map_err(EnvelopeError::Malformed)?;
    let head = |part: usize| {
        format!(r#"{{"v":{VERSION},"batches":[{{"id":{id},"part":{part},"readings":["#)
    };
    const TAIL: &str = "]}]}";

    let mut bodies = Vec::new();
    let mut body = head(0);
    let mut in_body = 0usize;
    for r in readings {
        let item =
            serde_json::to_string(&WireReading::from(r)).map_err(EnvelopeError::Malformed)?;
        let extra = item.len() + usize::from(in_body > 0);
        if in_body > 0 && body.len() + extra + TAIL.len() > max_bytes {
            body.push_str(TAIL);
            bodies.push(std::mem::replace(&mut body, head(bodies.len() + 1)));
            in_body = 0;
        }
        if in_body > 0 {
            body.push(',');
        }
        body.push_str(&item);
        in_body += 1;
        if body.len() + TAIL.len() > max_bytes {
            return Err(EnvelopeError::TooLarge(item.len(), max_bytes));
        }
    }
    if in_body > 0 {
        body.push_str(TAIL);
        bodies.push(body);
    }
    Ok(bodies)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings(n: usize) -> Vec<Reading> {
        (0..n)
            .map(|i| Reading {
                time: DateTime::from_timestamp_micros(1_678_925_592_000_000 + i as i64 * 1_000_001)
                    .unwrap(),
                location: format!("room \"{}\" ü", i % 7),
                temperature: 20.0 + i as f64 / 3.0,
            })
            .collect()
    }

    fn unpack(bodies: &[String]) -> Vec<Reading> {
        bodies
            .iter()
            .flat_map(|b| decode(b).unwrap().batches)
            .flat_map(|p| p.readings)
            .map(|w| Reading {
                time: w.time().unwrap(),
                location: w.1,
                temperature: w.2,
            })
            .collect()
    }

    fn assert_same(got: Vec<Reading>, want: &[Reading]) {
        assert_eq!(got.len(), want.len());
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            panic!("reading {i}: got {:?}, want {:?}", got[i], want[i]);
        }
    }

    #[test]
    fn round_trip_is_exact() {
        let rs = readings(50);
        let bodies = pack("b-1", &rs, 262_144).unwrap();
        assert_eq!(bodies.len(), 1);
        assert_same(unpack(&bodies), &rs);
        let e = decode(&bodies[0]).unwrap();
        assert_eq!(e.v, VERSION);
        assert_eq!(e.batches[0].id, "b-1");
        assert_eq!(e.batches[0].part, 0);
    }

    #[test]
    fn packing_fills_messages_to_the_limit_and_no_further() {
        let rs = readings(10_000);
        let max = 4096;
        let bodies = pack("batch", &rs, max).unwrap();
        assert!(bodies.iter().all(|b| b.len() <= max));
        // Greedy: every body but the last could not take the next reading.
        let total: usize = bodies.iter().map(String::len).sum();
        assert!(
            bodies.len() <= total / (max - 60) + 1,
            "{} bodies for {total} bytes",
            bodies.len()
        );
        for (i, b) in bodies.iter().enumerate() {
            assert_eq!(decode(b).unwrap().batches[0].part as usize, i);
        }
        assert_same(unpack(&bodies), &rs);
    }

    #[test]
    fn packing_is_size_aware_not_count_based() {
        let short: Vec<Reading> = readings(100);
        let mut long = short.clone();
        for r in &mut long {
            r.location = "x".repeat(120);
        }
        let a = pack("b", &short, 2000).unwrap().len();
        let b = pack("b", &long, 2000).unwrap().len();
        assert!(b > a * 2, "short {a} long {b}");
    }

    #[test]
    fn a_reading_too_big_for_any_message_is_an_error() {
        assert!(matches!(
            pack("b", &readings(1), 40),
            Err(EnvelopeError::TooLarge(..))
        ));
        assert!(pack("b", &[], 40).unwrap().is_empty());
    }

    #[test]
    fn unknown_versions_and_garbage_are_distinguished() {
        assert!(matches!(
            decode(r#"{"v":2,"batches":[]}"#),
            Err(EnvelopeError::UnsupportedVersion { found: 2 })
        ));
        assert!(matches!(
            decode(r#"{"v":9,"something":"else"}"#),
            Err(EnvelopeError::UnsupportedVersion { found: 9 })
        ));
        assert!(matches!(
            decode("not json"),
            Err(EnvelopeError::Malformed(_))
        ));
        assert!(matches!(
            decode(r#"{"v":1,"batches":[{"id":"x"}]}"#),
            Err(EnvelopeError::Malformed(_))
        ));
    }
}
