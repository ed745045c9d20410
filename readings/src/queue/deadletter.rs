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
//!
//! Messages that reach the DLQ through the queue's own redrive policy (maxReceiveCount)
//! carry none of these.

use std::collections::HashMap;
use std::fmt;

use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;
use chrono::{DateTime, Utc};

pub const ATTR_CLASS: &str = "failure_class";
pub const ATTR_REASON: &str = "failure_reason";
pub const ATTR_ORIGINAL_ID: &str = "original_message_id";
pub const ATTR_RECEIVE_COUNT: &str = "receive_count";
pub const ATTR_FAILED_AT: &str = "failed_at";
pub const ATTR_SQLSTATE: &str = "sqlstate";
/// Every attribute the writer sets.
pub const ATTRIBUTES: [&str; 6] = [
    ATTR_CLASS,
    ATTR_REASON,
    ATTR_ORIGINAL_ID,
    ATTR_RECEIVE_COUNT,
    ATTR_FAILED_AT,
    ATTR_SQLSTATE,
];

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
}

impl FailureClass {
    pub const ALL: [FailureClass; 5] = [
        FailureClass::Undecodable,
        FailureClass::UnsupportedVersion,
        FailureClass::InvalidReading,
        FailureClass::DataError,
        FailureClass::Operator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Undecodable => "undecodable",
            FailureClass::UnsupportedVersion => "unsupported_version",
            FailureClass::InvalidReading => "invalid_reading",
            FailureClass::DataError => "data_error",
            FailureClass::Operator => "operator",
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
            FailureClass::Operator | FailureClass::UnsupportedVersion => self.reason.clone(),
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
}

impl DeadLetter {
    /// The message attributes described in the module docs.
    pub fn attributes(&self) -> HashMap<String, MessageAttributeValue> {
        let mut attrs = HashMap::new();
        let mut put = |name: &str, value: &str| {
            if let Ok(v) = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
            {
                attrs.insert(name.to_owned(), v);
            }
        };
        put(ATTR_CLASS, self.failure.class.as_str());
        // SQS refuses empty strings; keep reasons short enough to read at a glance.
        let reason: String = self.failure.reason.chars().take(1000).collect();
        put(ATTR_REASON, if reason.is_empty() { "-" } else { &reason });
        put(ATTR_ORIGINAL_ID, &self.message_id);
        put(
            ATTR_RECEIVE_COUNT,
            self.receive_count.as_deref().unwrap_or("unknown"),
        );
        put(ATTR_FAILED_AT, &self.failed_at.to_rfc3339());
        if let Some(s) = &self.failure.sqlstate {
            put(ATTR_SQLSTATE, s);
        }
        attrs
    }
}

/// Sends dead letters to the DLQ, ten per call; returns the original message ids that
/// could not be sent (the caller reports them as failed so SQS keeps them).
pub async fn send(client: &Client, dlq_url: &str, letters: &[DeadLetter]) -> Vec<String> {
    let mut unsent = Vec::new();
    for chunk in letters.chunks(10) {
        let entries: Vec<SendMessageBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&l.body)
                    .set_message_attributes(Some(l.attributes()))
                    .build()
                    .ok()
            })
            .collect();
        match client
            .send_message_batch()
            .queue_url(dlq_url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) => {
                for f in out.failed() {
                    if let Some(l) = f.id().parse::<usize>().ok().and_then(|i| chunk.get(i)) {
                        tracing::error!(message_id = %l.message_id, code = f.code(), "DLQ refused a message; it stays on the queue");
                        unsent.push(l.message_id.clone());
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "DLQ send failed; the messages stay on the queue");
                unsent.extend(chunk.iter().map(|l| l.message_id.clone()));
            }
        }
    }
    unsent
}
