//! `export` and `import`: the dead-letter queue to a JSON-lines file and back.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::report::rfc3339;
use crate::message::{AgeLimit, DeadMessage, Filter};
use crate::scan::scan;
use crate::sqs::{self, Outgoing, MAX_BATCH_ENTRIES};
use crate::ui::Ui;
use crate::Queues;
use chrono::{DateTime, Utc};
use readings::queue::deadletter::ATTR_ENQUEUED_AT;

/// One line of an export file. `import` uses `body` and `attributes`; the rest is for
/// people and other tools.
#[derive(Debug, Serialize, Deserialize)]
pub struct Line {
    pub message_id: String,
    pub body: String,
    /// The message attributes (the failure attributes), name → text value.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub sent_timestamp: Option<String>,
    /// When its readings were first enqueued (see `DeadMessage::enqueued_at`); `import`
    /// puts it back as the `enqueued_at` attribute.
    #[serde(default)]
    pub enqueued_at: Option<String>,
    #[serde(default)]
    pub receive_count: Option<u64>,
    #[serde(default)]
    pub class: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

impl From<&DeadMessage> for Line {
    fn from(m: &DeadMessage) -> Line {
        Line {
            message_id: m.message_id.clone(),
            body: m.body.clone(),
            attributes: m.attributes.clone(),
            sent_timestamp: m.sent_at.map(rfc3339),
            enqueued_at: m.enqueued_at().map(rfc3339),
            receive_count: m.receive_count,
            class: Some(m.class().to_owned()),
            reason: Some(m.reason()),
        }
    }
}

pub(crate) async fn export(q: &Queues<'_>, ui: Ui, file: &Path) -> Result<()> {
    let dlq = q.dlq().await?;
    let depth = sqs::depth(q.client, &dlq).await?;
    let bar = ui.progress(Some(depth.visible), "exporting the dead-letter queue");
    let mut scanned = scan(q.client, &dlq, &Filter::default(), None, &bar).await?;
    bar.finish_and_clear();
    let written = write_lines(file, &scanned.matched);
    let count = scanned.matched.len();
    scanned.matched.clear();
    scanned.release().await?;
    written?;
    if ui.json {
        return ui.print_json(&json!({"exported": count, "file": file}));
    }
    println!("exported {count} messages to {}", file.display());
    Ok(())
}

/// Writes next to `file` and renames, so a failed export leaves no half-written file.
fn write_lines(file: &Path, messages: &[DeadMessage]) -> Result<()> {
    let mut partial = file.as_os_str().to_owned();
    partial.push(".partial");
    let partial = Path::new(&partial);
    let write = || -> Result<()> {
        let mut out = BufWriter::new(File::create(partial)?);
        for m in messages {
            serde_json::to_writer(&mut out, &Line::from(m))?;
            out.write_all(b"\n")?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(partial, file)?;
        Ok(())
    };
    write().with_context(|| format!("writing {}", file.display()))
}

pub(crate) async fn import(
    q: &Queues<'_>,
    ui: Ui,
    file: &Path,
    age: AgeLimit,
    force: bool,
) -> Result<()> {
    let dlq = q.dlq().await?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut messages = Vec::new();
    let mut letters = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(line).with_context(|| {
            format!(
                "{} line {}: not a line of `dlq export`",
                file.display(),
                i + 1
            )
        })?;
        if parsed.body.is_empty() {
            bail!(
                "{} line {}: the body is empty, and SQS refuses empty messages",
                file.display(),
                i + 1
            );
        }
        let sent_at = parsed
            .sent_timestamp
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let mut letter = DeadMessage {
            message_id: parsed.message_id,
            body: parsed.body.clone(),
            attributes: parsed.attributes,
            sent_at,
            receive_count: parsed.receive_count,
        };
        // The enqueue time travels as an attribute when the line has it and the body does
        // not say it (a version-1 body): the import's own SentTimestamp is not it.
        if let Some(t) = parsed.enqueued_at.filter(|_| !letter.body_says_when()) {
            letter
                .attributes
                .entry(ATTR_ENQUEUED_AT.to_owned())
                .or_insert(t);
        }
        let attributes = letter.attributes.clone();
        letters.push(letter);
        messages.push(Outgoing {
            body: parsed.body,
            attributes,
        });
    }
    age.check(&letters, force, "import")?;
    let sender = sqs::sender(q.client, &dlq).await?;
    let bar = ui.progress(Some(messages.len() as u64), "importing");
    let mut sent = 0;
    for chunk in messages.chunks(MAX_BATCH_ENTRIES) {
        sqs::send(&sender, chunk).await.with_context(|| {
            format!("import stopped after sending {sent} of {} messages; the first {sent} lines are on the queue", messages.len())
        })?;
        sent += chunk.len();
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    if ui.json {
        return ui.print_json(&json!({"imported": sent, "file": file}));
    }
    println!("imported {sent} messages from {}", file.display());
    Ok(())
}
