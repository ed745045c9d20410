//! A dead letter as this tool sees it: body, failure attributes, and what SQS says about it.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use chrono::{DateTime, TimeDelta, Utc};
use readings::queue::deadletter::{ATTR_CLASS, ATTR_ENQUEUED_AT, ATTR_FAILED_AT, ATTR_REASON};
use readings::writer::EXPIRY_MARGIN;
use serde::Serialize;

/// The class shown for messages that SQS's redrive policy moved (they carry no attributes).
pub const REDRIVE: &str = "redrive";

#[derive(Debug, Clone)]
pub struct DeadMessage {
    pub message_id: String,
    pub body: String,
    /// The message attributes that have a text value (the failure attributes).
    pub attributes: BTreeMap<String, String>,
    /// When the message was first sent (SentTimestamp).
    pub sent_at: Option<DateTime<Utc>>,
    /// ApproximateReceiveCount, this tool's own receives included.
    pub receive_count: Option<u64>,
}

impl DeadMessage {
    /// Reads a received message; `None` when it lacks an id.
    pub fn from_sqs(m: &Message) -> Option<DeadMessage> {
        let system = m.attributes();
        let system_attr = |name: MessageSystemAttributeName| system.and_then(|a| a.get(&name));
        let sent_at = system_attr(MessageSystemAttributeName::SentTimestamp)
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(DateTime::from_timestamp_millis);
        let receive_count = system_attr(MessageSystemAttributeName::ApproximateReceiveCount)
            .and_then(|v| v.parse().ok());
        let attributes = m
            .message_attributes()
            .map(|attrs| {
                attrs
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        Some(DeadMessage {
            message_id: m.message_id()?.to_owned(),
            body: m.body().unwrap_or_default().to_owned(),
            attributes,
            sent_at,
            receive_count,
        })
    }

    /// The failure class, or [`REDRIVE`].
    pub fn class(&self) -> &str {
        self.attributes
            .get(ATTR_CLASS)
            .map(String::as_str)
            .unwrap_or(REDRIVE)
    }

    /// The failure reason; for redriven messages, a sentence saying so.
    pub fn reason(&self) -> String {
        match self.attributes.get(ATTR_REASON) {
            Some(r) => r.clone(),
            None => format!(
                "moved by the queue's redrive policy after {} receives",
                self.receive_count
                    .map_or_else(|| "an unknown number of".to_owned(), |n| n.to_string())
            ),
        }
    }

    /// When it failed: the `failed_at` attribute, else (redrive) when it was sent.
    pub fn failed_at(&self) -> Option<DateTime<Utc>> {
        self.attributes
            .get(ATTR_FAILED_AT)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .or(self.sent_at)
    }

    /// When its readings were first enqueued: the envelope's `at` (version 2), else the
    /// `enqueued_at` attribute, else (the redrive policy keeps it) its SentTimestamp.
    pub fn enqueued_at(&self) -> Option<DateTime<Utc>> {
        readings::model::envelope::decode(&self.body)
            .ok()
            .and_then(|e| e.at)
            .or_else(|| {
                self.attributes
                    .get(ATTR_ENQUEUED_AT)
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc))
            })
            .or(self.sent_at)
    }

    /// Whether the body itself says when it was enqueued (a version-2 envelope's `at`).
    pub fn body_says_when(&self) -> bool {
        readings::model::envelope::decode(&self.body).is_ok_and(|e| e.at.is_some())
    }

    /// What the body holds.
    pub fn summary(&self) -> Summary {
        match readings::model::envelope::decode(&self.body) {
            Ok(env) => {
                let mut locations = BTreeSet::new();
                let mut times = Vec::new();
                let mut count = 0;
                for r in env.batches.iter().flat_map(|b| &b.readings) {
                    count += 1;
                    locations.insert(r.1.as_str());
                    times.extend(r.time().ok());
                }
                Summary::Readings {
                    parts: env
                        .batches
                        .iter()
                        .map(|b| PartSummary {
                            part: b.to_string(),
                            readings: b.readings.len(),
                        })
                        .collect(),
                    readings: count,
                    locations: locations.len(),
                    first: times.iter().min().copied(),
                    last: times.iter().max().copied(),
                }
            }
            Err(e) => Summary::Undecodable {
                error: e.to_string(),
                body_preview: self.body.chars().take(200).collect(),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Summary {
    Readings {
        parts: Vec<PartSummary>,
        readings: usize,
        locations: usize,
        first: Option<DateTime<Utc>>,
        last: Option<DateTime<Utc>>,
    },
    Undecodable {
        error: String,
        body_preview: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct PartSummary {
    /// `<batch id>[first..end of size]`, or `<batch id>/<part>` for a version-1 part.
    pub part: String,
    pub readings: usize,
}

/// The oldest a dead letter may be for `replay` and `import` to take it without --force:
/// the writer's batch records kept `record_retention_days`, less the writer's own
/// [`EXPIRY_MARGIN`].
#[derive(Debug, Clone, Copy)]
pub struct AgeLimit {
    pub record_retention_days: u64,
    pub oldest: DateTime<Utc>,
}

impl AgeLimit {
    pub fn new(record_retention_days: u64) -> AgeLimit {
        let keep = TimeDelta::days(record_retention_days as i64)
            - TimeDelta::from_std(EXPIRY_MARGIN).unwrap_or_default();
        AgeLimit {
            record_retention_days,
            oldest: Utc::now() - keep,
        }
    }

    /// Whether `m` was enqueued before the limit.
    pub fn expired(&self, m: &DeadMessage) -> bool {
        m.enqueued_at().is_some_and(|t| t < self.oldest)
    }

    /// Refuses `messages` when any is too old, unless `force`, saying what --force risks;
    /// with `force`, warns on stderr. `verb` names the command ("replay", "import").
    pub fn check(&self, messages: &[DeadMessage], force: bool, verb: &str) -> Result<()> {
        let old: Vec<&DeadMessage> = messages.iter().filter(|m| self.expired(m)).collect();
        let Some(oldest) = old.iter().filter_map(|m| m.enqueued_at()).min() else {
            return Ok(());
        };
        let what = format!(
            "{} of the {} dead letters were enqueued before {} (the oldest at {}), longer ago than \
             the writer keeps its batch records ({} days, less a day's margin): the records that \
             make a second copy of their readings write nothing may be gone, so readings of theirs \
             that were written before would be stored twice",
            old.len(),
            messages.len(),
            self.oldest.to_rfc3339(),
            oldest.to_rfc3339(),
            self.record_retention_days
        );
        if !force {
            bail!("{verb} refused: {what}. Nothing was sent; {verb} them anyway with --force");
        }
        eprintln!("warning: --force: {what}");
        Ok(())
    }
}

/// Which dead letters a command works on.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// A failure class (exact), or a piece of the reason (case-insensitive).
    pub reason: Option<String>,
    /// Failed at or after.
    pub since: Option<DateTime<Utc>>,
}

impl Filter {
    pub fn matches(&self, m: &DeadMessage) -> bool {
        if let Some(r) = &self.reason {
            if m.class() != r && !m.reason().to_lowercase().contains(&r.to_lowercase()) {
                return false;
            }
        }
        if let Some(since) = self.since {
            if m.failed_at().is_none_or(|t| t < since) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(attrs: &[(&str, &str)]) -> DeadMessage {
        DeadMessage {
            message_id: "m".into(),
            body: "x".into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            sent_at: DateTime::from_timestamp(1_000, 0),
            receive_count: Some(6),
        }
    }

    #[test]
    fn redrive_messages_have_a_class_and_reason_of_their_own() {
        let m = msg(&[]);
        assert_eq!(m.class(), REDRIVE);
        assert_eq!(
            m.reason(),
            "moved by the queue's redrive policy after 6 receives"
        );
        assert_eq!(m.failed_at(), DateTime::from_timestamp(1_000, 0));
    }

    #[test]
    fn reason_filter_matches_class_exactly_or_reason_text_loosely() {
        let m = msg(&[
            ("failure_class", "operator"),
            ("failure_reason", "Permission denied for table sensor_data"),
            ("failed_at", "2024-03-15T12:00:00Z"),
        ]);
        let f = |r: &str| Filter {
            reason: Some(r.into()),
            since: None,
        };
        assert!(f("operator").matches(&m));
        assert!(!f("Operator").matches(&m));
        assert!(f("permission DENIED").matches(&m));
        assert!(!f("data_error").matches(&m));
        let since = |t: i64| Filter {
            reason: None,
            since: DateTime::from_timestamp(t, 0),
        };
        assert!(since(1_710_504_000).matches(&m));
        assert!(!since(1_710_504_001).matches(&m));
    }
}
