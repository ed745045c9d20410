//! The queue message body: a small versioned JSON envelope.
//!
//! ```json
//! {"v":2,"at":1678925592123,"batches":[{"id":"<batch id>","first":0,"of":1,"readings":[[1678925592000000,"bedroom",66.0]]}]}
//! ```
//!
//! A reading travels as `[epoch microseconds, location, temperature]`. A request's readings
//! are its *batch*, numbered from 0 in the order the request gave them. A message carries
//! *parts* of batches: readings `first .. first + len` of a batch of `of` readings. That
//! identity depends only on the request, never on how its readings were cut into messages:
//! a retried request (the same `Idempotency-Key`, so the same batch id) that an instance
//! with another message size packed differently names each reading by the same offset, and
//! the writer records which offsets of each batch it has written (see `Store::write`). The
//! envelope holds a list of parts so that parts of several requests can share a message.
//! `at` is when the message was packed (epoch milliseconds): dead letters and replays carry
//! it, so a replay can be refused once the writer's batch records may be gone.
//!
//! The body is ASCII: every other character of a string travels as a `\u` escape (a
//! surrogate pair beyond the Basic Multilingual Plane), which decoding turns back into the
//! same character. SQS restricts the characters of a message body (and some SQS stand-ins
//! restrict them further); escaped, every valid location travels on every queue unchanged.
//!
//! Version 1 (`{"v":1,"batches":[{"id","part","readings"}]}`) numbered parts instead, in
//! the order the producer cut them; it is still read, and written exactly once by its part
//! number. Decoders accept every version listed in [`SUPPORTED_VERSIONS`], so messages that
//! wait in a queue across an upgrade stay readable.

use std::io;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::reading::Reading;

/// The version this build writes.
pub const VERSION: u32 = 2;
/// The versions this build reads.
pub const SUPPORTED_VERSIONS: [u32; 2] = [1, 2];

/// A decoded message body.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub v: u32,
    /// When the message was packed (version 2 on; `None` for version 1).
    pub at: Option<DateTime<Utc>>,
    pub batches: Vec<BatchPart>,
}

/// One part of one ingest request's batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPart {
    pub id: String,
    pub place: Place,
    pub readings: Vec<WireReading>,
}

/// Which readings of its batch a part holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Version 2: the readings from offset `first` on (as many as the part holds), of a batch
    /// of `of` readings.
    Range { first: u32, of: u32 },
    /// Version 1: the part's number, in the order its producer cut the batch.
    Numbered(u32),
}

impl BatchPart {
    /// A version-2 part: readings `first ..` of a batch of `of`.
    pub fn range(id: impl Into<String>, first: u32, of: u32, readings: Vec<WireReading>) -> Self {
        BatchPart {
            id: id.into(),
            place: Place::Range { first, of },
            readings,
        }
    }

    /// The offsets this part holds, for a version-2 part.
    pub fn offsets(&self) -> Option<std::ops::Range<u32>> {
        match self.place {
            Place::Range { first, .. } => Some(
                first..first.saturating_add(u32::try_from(self.readings.len()).unwrap_or(u32::MAX)),
            ),
            Place::Numbered(_) => None,
        }
    }
}

impl std::fmt::Display for BatchPart {
    /// `<id>[first..end of N]` or, for version 1, `<id>/part`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.place {
            Place::Range { first, of } => write!(
                f,
                "{}[{first}..{} of {of}]",
                self.id,
                first as usize + self.readings.len()
            ),
            Place::Numbered(n) => write!(f, "{}/{n}", self.id),
        }
    }
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
    #[error("message body is not a readings envelope: {0}")]
    Inconsistent(String),
}

/// The envelope as the JSON holds it, every version's fields optional, so one parse reads
/// any version and [`decode`] checks what that version requires.
#[derive(Deserialize)]
struct Raw {
    v: u32,
    #[serde(default)]
    at: Option<i64>,
    batches: Vec<RawPart>,
}

#[derive(Deserialize)]
struct RawPart {
    id: String,
    #[serde(default)]
    part: Option<u32>,
    #[serde(default)]
    first: Option<u32>,
    #[serde(default)]
    of: Option<u32>,
    readings: Vec<WireReading>,
}

/// Decodes a message body.
pub fn decode(body: &str) -> Result<Envelope, EnvelopeError> {
    let raw = match serde_json::from_str::<Raw>(body) {
        Ok(raw) if SUPPORTED_VERSIONS.contains(&raw.v) => raw,
        Ok(raw) => return Err(EnvelopeError::UnsupportedVersion { found: raw.v }),
        Err(err) => {
            // A newer envelope may not parse as this one: name its version if it has one.
            #[derive(Deserialize)]
            struct Probe {
                v: u32,
            }
            return match serde_json::from_str::<Probe>(body) {
                Ok(p) if !SUPPORTED_VERSIONS.contains(&p.v) => {
                    Err(EnvelopeError::UnsupportedVersion { found: p.v })
                }
                _ => Err(EnvelopeError::Malformed(err)),
            };
        }
    };
    let bad = |what: String| Err(EnvelopeError::Inconsistent(what));
    let at = match (raw.v, raw.at) {
        (1, _) => None,
        (_, Some(ms)) => match DateTime::from_timestamp_millis(ms) {
            Some(t) => Some(t),
            None => return bad(format!("`at` {ms} is out of range")),
        },
        (v, None) => return bad(format!("a version {v} envelope needs `at`")),
    };
    let mut batches = Vec::with_capacity(raw.batches.len());
    for p in raw.batches {
        let place = match (raw.v, p.part, p.first, p.of) {
            (1, Some(n), _, _) => Place::Numbered(n),
            (1, None, ..) => return bad(format!("part of batch {} has no `part`", p.id)),
            (_, _, Some(first), Some(of)) => {
                let end = u64::from(first) + p.readings.len() as u64;
                if p.readings.is_empty() || end > u64::from(of) {
                    return bad(format!(
                        "part of batch {} holds readings {first}..{end}, outside its batch of {of}",
                        p.id
                    ));
                }
                Place::Range { first, of }
            }
            _ => return bad(format!("part of batch {} needs `first` and `of`", p.id)),
        };
        batches.push(BatchPart {
            id: p.id,
            place,
            readings: p.readings,
        });
    }
    Ok(Envelope {
        v: raw.v,
        at,
        batches,
    })
}

/// Writes JSON with every non-ASCII character of a string as a `\u` escape.
struct AsciiFormatter;

impl serde_json::ser::Formatter for AsciiFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        if fragment.is_ascii() {
            return writer.write_all(fragment.as_bytes());
        }
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if c.is_ascii() {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// Serialises `value` as ASCII-only JSON (see [`AsciiFormatter`]) onto `out`.
fn write_ascii<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), EnvelopeError> {
    let mut ser = serde_json::Serializer::with_formatter(out, AsciiFormatter);
    value.serialize(&mut ser).map_err(EnvelopeError::Malformed)
}

/// `value` as ASCII-only JSON text: what the envelope writes, for other texts bound for SQS.
pub fn to_ascii_json<T: Serialize + ?Sized>(value: &T) -> Result<String, EnvelopeError> {
    let mut out = Vec::new();
    write_ascii(&mut out, value)?;
    // Only ASCII was written.
    String::from_utf8(out).map_err(|e| EnvelopeError::Malformed(serde::ser::Error::custom(e)))
}

/// Packs one batch's readings into as few message bodies as fit in `max_bytes` each.
///
/// Bodies are filled greedily in order.
pub fn pack(
    batch_id: &str,
    readings: &[Reading],
    max_bytes: usize,
) -> Result<Vec<String>, EnvelopeError> {
    let mut packer = Packer::new(max_bytes, Utc::now());
    packer.add(batch_id, readings)?;
    Ok(packer.finish())
}

/// Packs the readings of several batches (of several requests) into shared message bodies
/// of at most `max_bytes` each, in order. A batch that does not fit in one body continues
/// in the next, each part naming the offsets of its readings, so a part's identity is the
/// same however the batch was packed.
///
/// A batch that fits in one body is never split: when it does not fit in what is left of
/// the current body it starts the next one, so a request's readings arrive together.
pub struct Packer {
    max_bytes: usize,
    prefix: String,
    bodies: Vec<String>,
    body: String,
    batches_in_body: usize,
}

const CLOSE: &str = "]}";

impl Packer {
    /// A packer whose messages say they were packed at `at`.
    pub fn new(max_bytes: usize, at: DateTime<Utc>) -> Self {
        let prefix = format!(
            r#"{{"v":{VERSION},"at":{},"batches":["#,
            at.timestamp_millis()
        );
        Packer {
            max_bytes,
            body: prefix.clone(),
            prefix,
            bodies: Vec::new(),
            batches_in_body: 0,
        }
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
        let id = to_ascii_json(batch_id)?;
        if readings.is_empty() {
            return Ok(());
        }
        let of = u32::try_from(readings.len()).map_err(|_| {
            EnvelopeError::Inconsistent(format!("{} readings in one batch", readings.len()))
        })?;
        // Every reading's text in one buffer, `ends[i]` the end of reading i.
        let mut text = Vec::with_capacity(readings.len() * 48);
        let mut ends = Vec::with_capacity(readings.len());
        for r in readings {
            write_ascii(&mut text, &wire(r))?;
            ends.push(text.len());
        }
        let text = String::from_utf8(text)
            .map_err(|e| EnvelopeError::Malformed(serde::ser::Error::custom(e)))?;
        let items = ends.iter().scan(0, |start, &end| {
            Some(&text[std::mem::replace(start, end)..end])
        });
        let head = |comma: &str, first: u32| {
            format!(r#"{comma}{{"id":{id},"first":{first},"of":{of},"readings":["#)
        };
        // The whole batch as one part after what the body holds, its closing and the body's.
        let whole = head(",", 0).len() + text.len() + (readings.len() - 1) + 2 * CLOSE.len();
        if self.batches_in_body > 0 && self.body.len() + whole > self.max_bytes {
            self.flush();
        }
        let mut open = false;
        for (offset, item) in (0u32..).zip(items) {
            loop {
                let opening = if open {
                    String::new()
                } else {
                    head(if self.batches_in_body > 0 { "," } else { "" }, offset)
                };
                let comma = usize::from(open && !self.body.ends_with('['));
                let needed = self.body.len() + opening.len() + comma + item.len() + 2 * CLOSE.len();
                if needed <= self.max_bytes {
                    if open {
                        if comma == 1 {
                            self.body.push(',');
                        }
                    } else {
                        self.body.push_str(&opening);
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
            let next = self.prefix.clone();
            self.bodies.push(std::mem::replace(&mut self.body, next));
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
        let at = DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        let mut packer = Packer::new(262_144, at);
        packer.add("b-1", &rs).unwrap();
        let bodies = packer.finish();
        assert_eq!(bodies.len(), 1);
        assert_same(unpack(&bodies), &rs);
        let e = decode(&bodies[0]).unwrap();
        assert_eq!((e.v, e.at), (VERSION, Some(at)));
        assert_eq!(e.batches[0].id, "b-1");
        assert_eq!(e.batches[0].place, Place::Range { first: 0, of: 50 });
    }

    #[test]
    fn bodies_are_ascii_and_decode_to_the_same_characters() {
        let locations = [
            "wohnzimmer-ü-🌡",
            "冷蔵庫 𠀋",
            "\u{10FFFF}\u{FFFD}\u{FEFF}",
            "tab\"quote\\back",
            "\u{FFFE}\u{FFFF}",
        ];
        let rs: Vec<Reading> = locations
            .iter()
            .map(|l| Reading {
                location: (*l).to_owned(),
                ..readings(1).remove(0)
            })
            .collect();
        let bodies = pack("b-ü-🌡", &rs, 262_144).unwrap();
        assert!(bodies.iter().all(|b| b.is_ascii()), "{bodies:?}");
        assert!(bodies[0].contains(r"\ud83c\udf21"), "{}", bodies[0]);
        assert_same(unpack(&bodies), &rs);
        assert_eq!(decode(&bodies[0]).unwrap().batches[0].id, "b-ü-🌡");
        assert_eq!(to_ascii_json("é").unwrap(), r#""\u00e9""#);
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
            bodies.len() <= total / (max - 100) + 1,
            "{} bodies for {total} bytes",
            bodies.len()
        );
        let mut next = 0;
        for b in &bodies {
            let part = &decode(b).unwrap().batches[0];
            assert_eq!(
                part.place,
                Place::Range {
                    first: next,
                    of: 10_000
                }
            );
            next += part.readings.len() as u32;
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

    /// Each batch's readings by offset, from every part in `bodies`.
    fn by_offset(bodies: &[String]) -> std::collections::BTreeMap<String, Vec<(u32, WireReading)>> {
        let mut got: std::collections::BTreeMap<String, Vec<(u32, WireReading)>> =
            Default::default();
        for b in bodies {
            for p in decode(b).unwrap().batches {
                let first = p.offsets().unwrap().start;
                let entry = got.entry(p.id).or_default();
                entry.extend((first..).zip(p.readings));
            }
        }
        got
    }

    #[test]
    fn several_batches_share_messages_and_keep_their_offsets() {
        let mut packer = Packer::new(2048, Utc::now());
        let batches: Vec<(String, Vec<Reading>)> = (0..40)
            .map(|b| (format!("req-{b}"), readings(1 + b % 9)))
            .collect();
        for (id, rs) in &batches {
            packer.add(id, rs).unwrap();
        }
        let bodies = packer.finish();
        assert!(bodies.iter().all(|b| b.len() <= 2048));
        assert!(bodies.len() < batches.len() / 2, "{} bodies", bodies.len());
        let got = by_offset(&bodies);
        for (id, rs) in &batches {
            let want: Vec<(u32, WireReading)> =
                (0..).zip(rs.iter().map(WireReading::from)).collect();
            assert_eq!(got[id], want, "{id}");
        }
    }

    #[test]
    fn a_reading_has_the_same_offset_at_every_message_size() {
        // A retried request keeps its batch id but may be packed by an instance with another
        // message size, or beside other requests: each reading keeps its offset.
        let rs = readings(400);
        let want: Vec<(u32, WireReading)> = (0..).zip(rs.iter().map(WireReading::from)).collect();
        for max in [700, 2048, 4096, 65_536, 1_048_576] {
            for before in [0, 3, 39] {
                let mut packer = Packer::new(max, Utc::now());
                if before > 0 {
                    packer.add("other", &readings(before)).unwrap();
                }
                packer.add("retried", &rs).unwrap();
                let bodies = packer.finish();
                assert!(bodies.iter().all(|b| b.len() <= max));
                assert_eq!(
                    by_offset(&bodies)["retried"],
                    want,
                    "{max} bytes, {before} before"
                );
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
    fn version_1_messages_still_decode() {
        let e = decode(r#"{"v":1,"batches":[{"id":"b","part":3,"readings":[[1678925592000000,"bedroom",66.0]]}]}"#)
            .unwrap();
        assert_eq!((e.v, e.at), (1, None));
        assert_eq!(e.batches[0].place, Place::Numbered(3));
        assert_eq!(e.batches[0].readings[0].1, "bedroom");
    }

    #[test]
    fn unknown_versions_garbage_and_inconsistent_parts_are_distinguished() {
        assert!(matches!(
            decode(r#"{"v":3,"batches":[]}"#),
            Err(EnvelopeError::UnsupportedVersion { found: 3 })
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
        let r = r#"[[1678925592000000,"a",1.0]]"#;
        for body in [
            format!(r#"{{"v":2,"batches":[{{"id":"x","first":0,"of":1,"readings":{r}}}]}}"#),
            format!(r#"{{"v":2,"at":1,"batches":[{{"id":"x","part":0,"readings":{r}}}]}}"#),
            format!(r#"{{"v":2,"at":1,"batches":[{{"id":"x","first":1,"of":1,"readings":{r}}}]}}"#),
            format!(
                r#"{{"v":2,"at":1,"batches":[{{"id":"x","first":4294967295,"of":4294967295,"readings":{r}}}]}}"#
            ),
            r#"{"v":2,"at":1,"batches":[{"id":"x","first":0,"of":1,"readings":[]}]}"#.to_owned(),
            format!(r#"{{"v":1,"batches":[{{"id":"x","first":0,"of":1,"readings":{r}}}]}}"#),
        ] {
            assert!(
                matches!(decode(&body), Err(EnvelopeError::Inconsistent(_))),
                "{body}"
            );
        }
    }
}
