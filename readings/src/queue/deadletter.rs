//! The dead-letter queue: messages the writer can never write go there at once, with
//! message attributes that say why, instead of cycling until SQS's maxReceiveCount.
//!
//! The body is the original message body, unchanged, so a message can be replayed to the
//! main queue as it is. The attributes (all `String`):
//!
//! | attribute | value |
//! |---|---|
//! | `failure_class` | a [`FailureClass`] name |
//! | `failure_reason` | the error text |
//! | `original_message_id` | the message id on the main queue |
//! | `receive_count` | `ApproximateReceiveCount` when it failed |
//! | `failed_at` | RFC 3339 time of the failure |
//! | `sqlstate` | the database error code, when there is one |
//! | `enqueued_at` | RFC 3339 time the readings were first enqueued, when known |
//!
//! Messages that reach the DLQ through the queue's own redrive policy (maxReceiveCount)
//! carry none of these. Attribute values are [`attribute_text`]: characters a queue may
//! refuse are escaped, so the letter is never refused for its reason's text. A letter is
//! sized to fit: its reason is shortened when body and attributes would exceed the DLQ's
//! size (ingest leaves [`crate::queue::ATTRIBUTE_RESERVE`] bytes free in every message for
//! this).

use std::fmt;

use chrono::{DateTime, Utc};

use crate::queue::{attribute_text, Outgoing, Sender};

pub const ATTR_CLASS: &str = "failure_class";
pub const ATTR_REASON: &str = "failure_reason";
pub const ATTR_ORIGINAL_ID: &str = "original_message_id";
pub const ATTR_RECEIVE_COUNT: &str = "receive_count";
pub const ATTR_FAILED_AT: &str = "failed_at";
pub const ATTR_SQLSTATE: &str = "sqlstate";
pub const ATTR_ENQUEUED_AT: &str = "enqueued_at";
/// Every attribute the writer sets.
pub const ATTRIBUTES: [&str; 7] = [
    ATTR_CLASS,
    ATTR_REASON,
    ATTR_ORIGINAL_ID,
    ATTR_RECEIVE_COUNT,
    ATTR_FAILED_AT,
    ATTR_SQLSTATE,
    ATTR_ENQUEUED_AT,
];
/// Set by `dlq replay --force` / `import --force` on a message it sends: the writer writes
/// it even though it is older than the batch records (see [`FailureClass::Expired`]).
pub const ATTR_REPLAY_FORCED: &str = "replay_forced";
/// Longest `failure_reason`, in bytes.
pub const MAX_REASON_BYTES: usize = 1000;

/// Why a message can never be written as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// The body is not a readings envelope.
    Undecodable,
    /// An envelope version this build does not read.
    UnsupportedVersion,
    /// A reading breaks the validation rules.
    InvalidReading,
    /// The database refused the message's data (SQLSTATE classes 22, 23).
    DataError,
    /// The database refused the write for a reason an operator must fix (privileges,
    /// missing objects: SQLSTATE class 42); replay after fixing it.
    Operator,
    /// A part names other readings than the ones recorded under its batch id.
    BatchMismatch,
    /// The message is older than the writer's batch records (`BATCH_RECORD_RETENTION_DAYS`
    /// less a margin): what it holds may already be written, and the records that would
    /// say so may be gone. Written only when replayed with `--force`.
    Expired,
}

impl FailureClass {
    pub const ALL: [FailureClass; 7] = [
        FailureClass::Undecodable,
        FailureClass::UnsupportedVersion,
        FailureClass::InvalidReading,
        FailureClass::DataError,
        FailureClass::Operator,
        FailureClass::BatchMismatch,
        FailureClass::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Undecodable => "undecodable",
            FailureClass::UnsupportedVersion => "unsupported_version",
            FailureClass::InvalidReading => "invalid_reading",
            FailureClass::DataError => "data_error",
            FailureClass::Operator => "operator",
            FailureClass::BatchMismatch => "batch_mismatch",
            FailureClass::Expired => "expired",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message's permanent failure.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub class: FailureClass,
    pub reason: String,
    pub sqlstate: Option<String>,
}

impl Failure {
    /// The reason as it may be logged. Reasons that can quote the message's data (a
    /// decoder's complaint about a value, a value the database refused) have their quoted
    /// text replaced by `…`; the DLQ's `failure_reason` attribute keeps the whole reason.
    pub fn loggable_reason(&self) -> String {
        match self.class {
            FailureClass::Operator
            | FailureClass::UnsupportedVersion
            | FailureClass::BatchMismatch
            | FailureClass::Expired => self.reason.clone(),
            FailureClass::Undecodable | FailureClass::InvalidReading | FailureClass::DataError => {
                crate::observability::telemetry::redact_quoted(&self.reason)
            }
        }
    }
}

/// One message bound for the DLQ.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message_id: String,
    pub body: String,
    pub receive_count: Option<String>,
    pub failure: Failure,
    pub failed_at: DateTime<Utc>,
    /// When its readings were first enqueued, when known (the envelope's `at`, or the
    /// `enqueued_at` attribute a replay carries).
    pub enqueued_at: Option<DateTime<Utc>>,
}

impl DeadLetter {
    /// The message for the DLQ: the body unchanged, the attributes described in the module
    /// docs, the reason shortened so that the whole fits in `max_bytes` where it can.
    pub fn outgoing(&self, max_bytes: usize) -> Outgoing {
        let mut m = Outgoing::new(self.body.clone());
        let mut put = |name: &str, value: &str| {
            m.attributes.insert(name.to_owned(), attribute_text(value));
        };
        put(ATTR_CLASS, self.failure.class.as_str());
        put(ATTR_ORIGINAL_ID, &self.message_id);
        put(
            ATTR_RECEIVE_COUNT,
            self.receive_count.as_deref().unwrap_or("unknown"),
        );
        put(ATTR_FAILED_AT, &self.failed_at.to_rfc3339());
        if let Some(s) = &self.failure.sqlstate {
            put(ATTR_SQLSTATE, s);
        }
        if let Some(t) = self.enqueued_at {
            put(ATTR_ENQUEUED_AT, &t.to_rfc3339());
        }
        // SQS refuses empty strings; keep reasons short enough to read at a glance, and to
        // fit beside the body.
        let room = max_bytes
            .saturating_sub(m.size() + ATTR_REASON.len() + "String".len())
            .min(MAX_REASON_BYTES);
        let reason = shorten(&attribute_text(&self.failure.reason), room.max(1));
        m.attributes.insert(
            ATTR_REASON.to_owned(),
            if reason.is_empty() {
                "-".to_owned()
            } else {
                reason
            },
        );
        m
    }
}

/// `s` cut to at most `max` bytes at a character boundary, with `…` when cut.
fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let ellipsis = "…";
    let mut end = max.saturating_sub(ellipsis.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    if end == 0 {
        return s.chars().next().map(String::from).unwrap_or_default();
    }
    format!("{}{ellipsis}", &s[..end])
}

/// Sends dead letters to the DLQ; returns the original message ids that could not be sent
/// (the caller reports them as failed so SQS keeps them).
pub async fn send(dlq: &Sender, letters: &[DeadLetter]) -> Vec<String> {
    let messages: Vec<Outgoing> = letters
        .iter()
        .map(|l| l.outgoing(dlq.max_message_bytes()))
        .collect();
    let mut unsent = Vec::new();
    for (letter, result) in letters.iter().zip(dlq.send_each(&messages).await) {
        if let Err(e) = result {
            tracing::error!(message_id = %letter.message_id, error = %e,
                "the DLQ did not take a message; it stays on the queue");
            unsent.push(letter.message_id.clone());
        }
    }
    unsent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(body: usize, reason: &str) -> DeadLetter {
        DeadLetter {
            message_id: "0b6f6f1e-5f9a-4d7e-9a57-0a3b5c9d1e2f".into(),
            body: "x".repeat(body),
            receive_count: Some("1".into()),
            failure: Failure {
                class: FailureClass::DataError,
                reason: reason.into(),
                sqlstate: Some("22003".into()),
            },
            failed_at: Utc::now(),
            enqueued_at: Some(Utc::now()),
        }
    }

    #[test]
    fn a_letter_of_a_full_message_fits_in_the_reserve() {
        let max = 262_144;
        let l = letter(max - crate::queue::ATTRIBUTE_RESERVE, &"why ".repeat(500));
        let m = l.outgoing(max);
        assert!(m.size() <= max, "{} > {max}", m.size());
        assert_eq!(m.attributes[ATTR_REASON].len(), MAX_REASON_BYTES);
        assert!(m.attributes[ATTR_REASON].ends_with('…'));
    }

    #[test]
    fn a_reason_is_shortened_to_fit_and_never_empty() {
        let l = letter(10_000, "reason with 🌡 and ü");
        let m = l.outgoing(20_000);
        assert_eq!(m.attributes[ATTR_REASON], "reason with \\u{1f321} and ü");
        let tight = l.outgoing(10_000 + m.size() - l.body.len() - 10);
        assert!(tight.size() <= 10_000 + m.size() - l.body.len() - 10);
        assert!(!tight.attributes[ATTR_REASON].is_empty());
        let l = letter(10, "");
        assert_eq!(l.outgoing(4096).attributes[ATTR_REASON], "-");
    }
}
