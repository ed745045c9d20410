//! Accepting readings: parse a request body, validate every reading, pack them into
//! envelopes and enqueue them. All or nothing per request.
//!
//! The long-running host first gathers the readings of concurrent requests ([`coalesce`]).

pub mod coalesce;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;
use uuid::Uuid;

use crate::config::IngestConfig;
use crate::ingest::coalesce::Coalescer;
use crate::model::envelope::{self, EnvelopeError};
use crate::model::reading::{validate, FieldError, Reading, Submitted};
use crate::postgres::store::{Claim, Store};
use crate::queue::{QueueError, Sender};

/// Namespace for batch ids derived from an API key's id and an `Idempotency-Key` header.
/// (Batch ids once derived from the header alone, in another namespace, so two tenants'
/// keys could name the same batch; messages queued with those ids are written as ever.)
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x5d2c_8f0e_61b4_4c3a_9e27_b1a0_4f6d_c913);
/// Most field errors listed in one response.
pub const MAX_DETAILS: usize = 100;
/// Longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// How the body is encoded, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// One reading object or an array of them.
    Json,
    /// One reading object per line.
    Ndjson,
}

impl BodyFormat {
    /// Maps a `Content-Type` header to a format. A missing header is read as JSON, as the
    /// tutorial's clients may omit it.
    pub fn from_content_type(header: Option<&str>) -> Result<Self, IngestError> {
        let Some(header) = header else {
            return Ok(BodyFormat::Json);
        };
        let mime = header
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/json" | "text/json" => Ok(BodyFormat::Json),
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines" => Ok(BodyFormat::Ndjson),
            _ => Err(IngestError::UnsupportedMediaType(header.to_owned())),
        }
    }
}

#[derive(Debug, Error)]
pub enum IngestError {
    #[error("unsupported Content-Type '{0}': send application/json (one reading or an array) or application/x-ndjson (one reading per line)")]
    UnsupportedMediaType(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("request holds {count} readings; at most {limit} are accepted per request")]
    TooManyReadings { count: usize, limit: usize },
    #[error("malformed JSON at line {line}, column {column}: {message}")]
    Malformed {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{0}")]
    Shape(String),
    #[error("{invalid} of {total} readings are invalid; nothing was accepted")]
    Invalid {
        total: usize,
        invalid: usize,
        details: Vec<FieldError>,
    },
    #[error("Idempotency-Key is invalid: {0}")]
    BadIdempotencyKey(String),
    #[error("this Idempotency-Key was already used with a different body; use a new key for new readings")]
    KeyReused,
    #[error("the idempotency record could not be checked: {0}")]
    KeyStore(#[from] crate::postgres::store::StoreError),
    #[error("readings could not be enqueued: {0}")]
    Queue(#[from] QueueError),
    #[error("readings could not be packed: {0}")]
    Envelope(#[from] EnvelopeError),
}

/// The answer to an accepted request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Accepted {
    pub accepted: usize,
    pub batch_id: String,
    #[serde(skip)]
    pub messages: usize,
}

/// Parses a body into JSON values, one per reading.
pub fn parse_body(body: &[u8], format: BodyFormat) -> Result<Vec<Value>, IngestError> {
    match format {
        BodyFormat::Json => match serde_json::from_slice::<Value>(body).map_err(malformed(0))? {
            Value::Array(items) => Ok(items),
            obj @ Value::Object(_) => Ok(vec![obj]),
            other => Err(IngestError::Shape(format!(
                "expected a reading object or an array of readings, found {}",
                match other {
                    Value::Null => "null",
                    Value::Bool(_) => "a boolean",
                    Value::Number(_) => "a number",
                    _ => "a string",
                }
            ))),
        },
        BodyFormat::Ndjson => ndjson_lines(body)
            .map(|(n, line)| serde_json::from_slice::<Value>(line).map_err(malformed(n)))
            .collect(),
    }
}

/// The lines of an NDJSON body that hold a reading, with their 0-based line numbers: blank
/// lines (and a trailing newline) are skipped.
fn ndjson_lines(body: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    body.split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.trim_ascii().is_empty())
}

fn malformed(line_offset: usize) -> impl Fn(serde_json::Error) -> IngestError {
    move |e| {
        let text = e.to_string();
        let message = match text.rfind(" at line ") {
            Some(i) => text[..i].to_owned(),
            None => text,
        };
        IngestError::Malformed {
            line: e.line() + line_offset,
            column: e.column(),
            message,
        }
    }
}

/// Parses and validates a body: the readings when every one passes, else the error that
/// names what is wrong and where.
///
/// A well-formed body of valid readings is read once into [`Submitted`] readings that borrow
/// their text from the body. Any other body, malformed or invalid, is read again through
/// [`parse_body`] and [`validate_all`], which name every problem; the first pass accepts
/// only what the second would accept, with the same readings.
pub fn read_body(
    body: &[u8],
    format: BodyFormat,
    received_at: DateTime<Utc>,
    config: &IngestConfig,
) -> Result<Vec<Reading>, IngestError> {
    if let Some(readings) = read_well_formed(body, format, received_at, config) {
        return Ok(readings);
    }
    let values = parse_body(body, format)?;
    validate_all(&values, received_at, config)
}

fn read_well_formed(
    body: &[u8],
    format: BodyFormat,
    received_at: DateTime<Utc>,
    config: &IngestConfig,
) -> Option<Vec<Reading>> {
    let submitted: Vec<Submitted> = match format {
        BodyFormat::Json if body.trim_ascii_start().starts_with(b"[") => {
            serde_json::from_slice(body).ok()?
        }
        BodyFormat::Json => vec![serde_json::from_slice(body).ok()?],
        BodyFormat::Ndjson => ndjson_lines(body)
            .map(|(_, line)| serde_json::from_slice(line))
            .collect::<Result<_, _>>()
            .ok()?,
    };
    if submitted.is_empty() || submitted.len() > config.max_readings {
        return None;
    }
    submitted
        .iter()
        .map(|s| s.check(received_at, &config.limits))
        .collect()
}

/// Validates every value. All pass, or the error lists what failed (up to [`MAX_DETAILS`]).
pub fn validate_all(
    values: &[Value],
    received_at: DateTime<Utc>,
    config: &IngestConfig,
) -> Result<Vec<Reading>, IngestError> {
    if values.is_empty() {
        return Err(IngestError::Shape("the request holds no readings".into()));
    }
    if values.len() > config.max_readings {
        return Err(IngestError::TooManyReadings {
            count: values.len(),
            limit: config.max_readings,
        });
    }
    let mut errors = Vec::new();
    let mut invalid = 0;
    let mut readings = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let before = errors.len();
        match validate(v, i, received_at, &config.limits, &mut errors) {
            Some(r) => readings.push(r),
            None => {
                invalid += 1;
                errors.truncate(before.max(MAX_DETAILS));
            }
        }
    }
    if invalid > 0 {
        errors.truncate(MAX_DETAILS);
        return Err(IngestError::Invalid {
            total: values.len(),
            invalid,
            details: errors,
        });
    }
    Ok(readings)
}

/// The batch id of a request: derived from its `Idempotency-Key` when it has one, together
/// with the id of the API key that sent it (`tenant`; `None` when keys are not checked), so
/// a retried request maps to the same id and two tenants' keys never do. Random otherwise.
pub fn batch_id(
    tenant: Option<&str>,
    idempotency_key: Option<&str>,
) -> Result<String, IngestError> {
    match idempotency_key {
        None => Ok(Uuid::new_v4().to_string()),
        Some(key) => {
            if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
                return Err(IngestError::BadIdempotencyKey(format!(
                    "must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes long"
                )));
            }
            // Key ids are hex and header values hold no NUL: the pair is unambiguous.
            let name = format!("{}\0{key}", tenant.unwrap_or(""));
            Ok(Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, name.as_bytes()).to_string())
        }
    }
}

/// Namespace for body hashes of idempotent requests.
const BODY_NAMESPACE: Uuid = Uuid::from_u128(0x6ba7_b812_9dad_11d1_80b4_00c0_4fd4_30c8);

/// Everything ingest needs: its limits, the queue, and the store that remembers
/// `Idempotency-Key`s (only requests that carry one touch the database).
#[derive(Clone)]
pub struct Ingestor {
    pub config: IngestConfig,
    pub sender: Sender,
    pub keys: Store,
    coalescer: Option<Coalescer>,
}

impl Ingestor {
    pub fn new(config: IngestConfig, sender: Sender, keys: Store) -> Self {
        Ingestor {
            config,
            sender,
            keys,
            coalescer: None,
        }
    }

    /// Shares messages between concurrent requests, waiting at most `linger` for company
    /// (for the long-running host; see [`crate::ingest::coalesce`]).
    pub fn with_coalescing(mut self, linger: std::time::Duration) -> Self {
        self.coalescer = Some(Coalescer::start(self.sender.clone(), linger));
        self
    }

    /// Handles one request body end to end: parse, validate, pack, enqueue. `tenant` is the
    /// id of the API key that sent it, which scopes its `Idempotency-Key`.
    pub async fn ingest(
        &self,
        content_type: Option<&str>,
        tenant: Option<&str>,
        idempotency_key: Option<&str>,
        body: &[u8],
    ) -> Result<Accepted, IngestError> {
        let format = BodyFormat::from_content_type(content_type)?;
        if body.len() > self.config.max_body_bytes {
            return Err(IngestError::BodyTooLarge {
                limit: self.config.max_body_bytes,
            });
        }
        let batch_id = batch_id(tenant, idempotency_key)?;
        let received_at = Utc::now();
        let readings = read_body(body, format, received_at, &self.config)?;
        if idempotency_key.is_some() {
            // A hash of the exact body: a retry sends the same bytes.
            let hash = Uuid::new_v5(&BODY_NAMESPACE, body).simple().to_string();
            if self.keys.claim_key(&batch_id, &hash).await? == Claim::Conflict {
                return Err(IngestError::KeyReused);
            }
        }
        let accepted = readings.len();
        let messages = match &self.coalescer {
            Some(c) => c.submit(batch_id.clone(), readings).await?,
            None => {
                let bodies = envelope::pack(&batch_id, &readings, self.sender.packing_bytes())?;
                let messages = bodies.len();
                self.sender.send_all(bodies).await?;
                messages
            }
        };
        Ok(Accepted {
            accepted,
            batch_id,
            messages,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::reading::Limits;

    fn config() -> IngestConfig {
        IngestConfig {
            addr: ([127, 0, 0, 1], 0).into(),
            max_body_bytes: 1000,
            max_readings: 3,
            limits: Limits::default(),
            coalesce_linger: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn content_types() {
        use BodyFormat::*;
        assert_eq!(BodyFormat::from_content_type(None).unwrap(), Json);
        assert_eq!(
            BodyFormat::from_content_type(Some("application/json; charset=utf-8")).unwrap(),
            Json
        );
        assert_eq!(
            BodyFormat::from_content_type(Some("Application/X-NDJSON")).unwrap(),
            Ndjson
        );
        assert!(matches!(
            BodyFormat::from_content_type(Some("text/plain")),
            Err(IngestError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn json_object_array_and_ndjson() {
        let one = parse_body(br#"{"location":"a","temperature":1}"#, BodyFormat::Json).unwrap();
        assert_eq!(one.len(), 1);
        let arr = parse_body(br#"[{"a":1},{"b":2}]"#, BodyFormat::Json).unwrap();
        assert_eq!(arr.len(), 2);
        let nd = parse_body(b"{\"a\":1}\r\n\n{\"b\":2}\n", BodyFormat::Ndjson).unwrap();
        assert_eq!(nd.len(), 2);
        assert!(matches!(
            parse_body(b"42", BodyFormat::Json),
            Err(IngestError::Shape(_))
        ));
    }

    #[test]
    fn malformed_json_names_line_and_column() {
        match parse_body(
            b"[\n {\"location\": \"a\",\n  \"temperature\": }]",
            BodyFormat::Json,
        ) {
            Err(IngestError::Malformed { line, column, .. }) => assert_eq!((line, column), (3, 18)),
            other => panic!("{other:?}"),
        }
        match parse_body(b"{\"a\":1}\n{\"a\":1}\n{\"a\" 1}\n", BodyFormat::Ndjson) {
            Err(IngestError::Malformed {
                line,
                column,
                message,
            }) => {
                assert_eq!((line, column), (3, 6));
                assert!(!message.contains("at line"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn all_or_nothing_with_every_failure_listed() {
        let values = parse_body(
            br#"[{"location":"a","temperature":1},{"location":"","temperature":1},{"location":"b","temperature":"x"}]"#,
            BodyFormat::Json,
        )
        .unwrap();
        match validate_all(&values, Utc::now(), &config()) {
            Err(IngestError::Invalid {
                total,
                invalid,
                details,
            }) => {
                assert_eq!((total, invalid), (3, 2));
                let at: Vec<(usize, &str)> = details
                    .iter()
                    .map(|d| (d.index, d.field.as_str()))
                    .collect();
                assert_eq!(at, [(1, "location"), (2, "temperature")]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn valid_bodies_are_read_in_one_pass() {
        let now = Utc::now();
        let c = config();
        for (body, format) in [
            (&br#"{"location":"bedroom","temperature":66}"#[..], BodyFormat::Json),
            (
                br#" [{"temperature":1.5,"location":"a \"b\"","time":null},
                    {"location":"c","temperature":-3,"time":"2024-03-15T12:00:00Z"}] "#,
                BodyFormat::Json,
            ),
            (
                b"{\"location\":\"a\",\"temperature\":1,\"time\":1710500000}\r\n\n{\"location\":\"b\",\"temperature\":2,\"time\":\"1710500000123\"}\n",
                BodyFormat::Ndjson,
            ),
        ] {
            let fast = read_well_formed(body, format, now, &c);
            let full = validate_all(&parse_body(body, format).unwrap(), now, &c).unwrap();
            assert_eq!(fast, Some(full), "{}", String::from_utf8_lossy(body));
        }
        // What the full reading must explain is left to it.
        for body in [
            &br#"[{"location":"a","temperature":1,"x":2}]"#[..],
            br#"[["a",1]]"#,
            br#"{"location":"a","location":"b","temperature":1}"#,
            br#"{"location":" ","temperature":1}"#,
            br#"[]"#,
            br#"[{"location":"a","temperature":1},{"location":"a","temperature":1},{"location":"a","temperature":1},{"location":"a","temperature":1}]"#,
        ] {
            assert_eq!(
                read_well_formed(body, BodyFormat::Json, now, &c),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn reading_count_limits() {
        let four = vec![serde_json::json!({"location":"a","temperature":1}); 4];
        assert!(matches!(
            validate_all(&four, Utc::now(), &config()),
            Err(IngestError::TooManyReadings { count: 4, limit: 3 })
        ));
        assert!(matches!(
            validate_all(&[], Utc::now(), &config()),
            Err(IngestError::Shape(_))
        ));
    }

    #[test]
    fn batch_ids_follow_the_tenant_and_the_idempotency_key() {
        let a = batch_id(Some("0123456789ab"), Some("key-1")).unwrap();
        assert_eq!(a, batch_id(Some("0123456789ab"), Some("key-1")).unwrap());
        assert_ne!(a, batch_id(Some("0123456789ab"), Some("key-2")).unwrap());
        assert_ne!(a, batch_id(Some("ba9876543210"), Some("key-1")).unwrap());
        assert_ne!(a, batch_id(None, Some("key-1")).unwrap());
        // Not the id the header alone once gave.
        let legacy = Uuid::new_v5(
            &Uuid::from_u128(0x1b4e_28ba_2fa1_41d2_883f_0016_d3cc_a427),
            b"key-1",
        );
        assert_ne!(batch_id(None, Some("key-1")).unwrap(), legacy.to_string());
        assert_ne!(batch_id(None, None).unwrap(), batch_id(None, None).unwrap());
        assert!(batch_id(None, Some("")).is_err());
        assert!(batch_id(None, Some(&"k".repeat(256))).is_err());
    }
}
