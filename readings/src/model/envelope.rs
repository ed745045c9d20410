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

use crate::model::reading::Reading;

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
        let (time, location, temperature) = wire(r);
        WireReading(time, location.to_owned(), temperature)
    }
}

/// A reading in its wire form, borrowing its location: serialised as [`WireReading`] is.
fn wire(r: &Reading) -> (i64, &str, f64) {
    (
        r.time.timestamp_micros(),
        r.location.as_str(),
        r.temperature,
    )
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
    let mut packer = Packer::new(max_bytes);
    packer.add(batch_id, readings)?;
    Ok(packer.finish())
}

/// Packs the readings of several batches (of several requests) into shared message bodies
/// of at most `max_bytes` each, in order. A batch that does not fit in one body continues
/// in the next with the next part number, so every `(id, part)` stays unique.
///
/// A batch's parts hold the same readings however it is packed, alone ([`pack`], as under
/// Lambda) or beside other batches: a batch that fits in one body is never split (when it
/// does not fit in what is left of the current body it starts the next one), and a larger
/// one starts on an empty body and is split there as it would be alone. A retried request
/// (the same `Idempotency-Key`, so the same batch id) is packed beside other requests than
/// its first try was, and the writer skips a part whose `(id, part)` it has written: the
/// part must name the same readings in both tries.
pub struct Packer {
    max_bytes: usize,
    bodies: Vec<String>,
    body: String,
    batches_in_body: usize,
}

const CLOSE: &str = "]}";

impl Packer {
    pub fn new(max_bytes: usize) -> Self {
        Packer {
            max_bytes,
            bodies: Vec::new(),
            body: Self::prefix(),
            batches_in_body: 0,
        }
    }

    fn prefix() -> String {
        format!(r#"{{"v":{VERSION},"batches":["#)
    }

    /// Bytes of the bodies packed so far, closed or not.
    pub fn len(&self) -> usize {
        self.bodies.iter().map(String::len).sum::<usize>() + self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bodies.is_empty() && self.batches_in_body == 0
    }

    /// Adds one batch's readings.
    pub fn add(&mut self, batch_id: &str, readings: &[Reading]) -> Result<(), EnvelopeError> {
        let id = serde_json::to_string(batch_id).map_err(EnvelopeError::Malformed)?;
        if readings.is_empty() {
            return Ok(());
        }
        // Every reading's text in one buffer, `ends[i]` the end of reading i.
        let mut text = Vec::with_capacity(readings.len() * 48);
        let mut ends = Vec::with_capacity(readings.len());
        for r in readings {
            serde_json::to_writer(&mut text, &wire(r)).map_err(EnvelopeError::Malformed)?;
            ends.push(text.len());
        }
        let text = String::from_utf8(text)
            .map_err(|e| EnvelopeError::Malformed(serde::ser::Error::custom(e)))?;
        let items = ends.iter().scan(0, |start, &end| {
            Some(&text[std::mem::replace(start, end)..end])
        });
        // The whole batch as one part after what the body holds, its closing and the body's.
        let whole = format!(r#",{{"id":{id},"part":0,"readings":["#).len()
            + text.len()
            + (readings.len() - 1)
            + 2 * CLOSE.len();
        if self.batches_in_body > 0 && self.body.len() + whole > self.max_bytes {
            self.flush();
        }
        let mut part = 0u32;
        let mut open = false;
        for item in items {
            loop {
                let head = if open {
                    String::new()
                } else {
                    let comma = if self.batches_in_body > 0 { "," } else { "" };
                    format!(r#"{comma}{{"id":{id},"part":{part},"readings":["#)
                };
                let comma = usize::from(open && !self.body.ends_with('['));
                let needed = self.body.len() + head.len() + comma + item.len() + 2 * CLOSE.len();
                if needed <= self.max_bytes {
                    if open {
                        if comma == 1 {
                            self.body.push(',');
                        }
                    } else {
                        self.body.push_str(&head);
                        self.batches_in_body += 1;
                        open = true;
                    }
                    self.body.push_str(item);
                    break;
                }
                if self.batches_in_body == 0 {
                    return Err(EnvelopeError::TooLarge(item.len(), self.max_bytes));
                }
                if open {
                    self.body.push_str(CLOSE);
                    part += 1;
                    open = false;
                }
                self.flush();
            }
        }
        if open {
            self.body.push_str(CLOSE);
        }
        Ok(())
    }

    fn flush(&mut self) {
        if self.batches_in_body > 0 {
            self.body.push_str(CLOSE);
            self.bodies
                .push(std::mem::replace(&mut self.body, Self::prefix()));
            self.batches_in_body = 0;
        }
    }

    /// The message bodies.
    pub fn finish(mut self) -> Vec<String> {
        self.flush();
        self.bodies
    }
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
    fn several_batches_share_messages_and_keep_their_parts() {
        let mut packer = Packer::new(2048);
        let batches: Vec<(String, Vec<Reading>)> = (0..40)
            .map(|b| (format!("req-{b}"), readings(1 + b % 9)))
            .collect();
        for (id, rs) in &batches {
            packer.add(id, rs).unwrap();
        }
        let bodies = packer.finish();
        assert!(bodies.iter().all(|b| b.len() <= 2048));
        assert!(bodies.len() < batches.len() / 2, "{} bodies", bodies.len());
        let mut got: std::collections::BTreeMap<String, Vec<(u32, Vec<WireReading>)>> =
            Default::default();
        for b in &bodies {
            for p in decode(b).unwrap().batches {
                got.entry(p.id).or_default().push((p.part, p.readings));
            }
        }
        for (id, rs) in &batches {
            let parts = &got[id];
            let numbers: Vec<u32> = parts.iter().map(|p| p.0).collect();
            assert_eq!(numbers, (0..parts.len() as u32).collect::<Vec<_>>(), "{id}");
            let all: Vec<WireReading> = parts.iter().flat_map(|p| p.1.clone()).collect();
            assert_eq!(
                all,
                rs.iter().map(WireReading::from).collect::<Vec<_>>(),
                "{id}"
            );
        }
    }

    /// The parts of `id` in `bodies`: (part, readings) in order.
    fn parts_of(bodies: &[String], id: &str) -> Vec<(u32, Vec<WireReading>)> {
        bodies
            .iter()
            .flat_map(|b| decode(b).unwrap().batches)
            .filter(|p| p.id == id)
            .map(|p| (p.part, p.readings))
            .collect()
    }

    #[test]
    fn a_batch_has_the_same_parts_alone_or_beside_other_batches() {
        // A retried request keeps its batch id but is packed beside other requests: each of
        // its part numbers must name the same readings either way.
        let max = 2048;
        for n in [3, 20, 49, 50, 51, 120, 400] {
            let rs = readings(n);
            let alone = parts_of(&pack("retried", &rs, max).unwrap(), "retried");
            for before in 0..40 {
                let mut packer = Packer::new(max);
                if before > 0 {
                    packer.add("other", &readings(before)).unwrap();
                }
                packer.add("retried", &rs).unwrap();
                packer.add("after", &readings(7)).unwrap();
                let bodies = packer.finish();
                assert!(bodies.iter().all(|b| b.len() <= max));
                assert_eq!(
                    parts_of(&bodies, "retried"),
                    alone,
                    "{n} readings after {before} others"
                );
                assert_eq!(parts_of(&bodies, "after").len(), 1);
            }
        }
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
