//! Counters of one run from the functions' output lines: what they print on stdout with
//! `METRICS=emf` (EMF documents), their log lines (JSON under Lambda or with
//! `LOG_FORMAT=json`, or tracing's text format), and, from a Lambda log export, the
//! platform's `START` / `END` / `REPORT` lines.
//!
//! | line | counts as |
//! |---|---|
//! | EMF with `ReadingsAccepted` | one accepted ingest request: its readings, `MessagesEnqueued` |
//! | EMF with `RequestsRejected` | one refused ingest request |
//! | EMF with `BatchSize` | one writer batch (handler call): `BatchSize` messages, `RowsWritten` rows, `CopyDuration` ms |
//! | log `readings enqueued` | the ingest request's `duration_ms` |
//! | log `request refused…` | ingest |
//! | log `batch handled` | the writer batch's `duration_ms` |
//! | `REPORT RequestId: …` | `Billed Duration`, a cold start when it has an `Init Duration`; the function whose log lines carry that request id, else the one whose memory size it reports |
//! | any other line | the function whose lines carry its `requestId`, else "other" |
//!
//! Every line's bytes (without its line end) count as log bytes of the function it belongs
//! to. Lines that are neither JSON nor a known text line still count as bytes ("other").
//! Of a JSON line only the JSON counts (an export may put a timestamp before it).
//! `scripts/dev` puts `[ingest] `, `[writer] ` or `[query] ` before each line of a
//! service: the tag is not counted, and `[query]` lines are left out (reading readings back
//! is not part of the cost of ingesting them).

use std::collections::HashMap;

use serde_json::Value;

use crate::measure::{Function, Measurements};

/// Which function a line belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Owner {
    Ingest,
    Writer,
}

/// What parsing found besides the counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub measurements: Measurements,
    pub lines: u64,
    /// Lines that looked like JSON but did not parse.
    pub malformed: u64,
    /// `REPORT` lines that could not be given to a function.
    pub unattributed_reports: u64,
    /// `[query] ` lines of scripts/dev, left out.
    pub query_lines: u64,
}

#[derive(Default)]
struct Tally {
    invocations: u64,
    readings: u64,
    messages: u64,
    duration_ms: f64,
    timed: u64,
    copy_ms: f64,
    copied: u64,
    log_bytes: u64,
    billed_ms: f64,
    billed: u64,
    cold_starts: u64,
    platform_bytes: u64,
}

impl Tally {
    fn into_function(self) -> Function {
        let some = |present: bool, v: u64| present.then_some(v);
        let seen = self.invocations > 0;
        Function {
            invocations: some(seen, self.invocations),
            readings: some(seen, self.readings),
            messages: some(seen, self.messages),
            payload_bytes: None,
            duration_ms: (self.timed > 0).then_some(self.duration_ms),
            timed: some(self.timed > 0, self.timed),
            copy_ms: (self.copied > 0).then_some(self.copy_ms),
            cpu_ms: None,
            log_bytes: some(self.log_bytes > 0, self.log_bytes),
            info_logged: seen.then_some(self.timed > 0),
            billed_ms: (self.billed > 0).then_some(self.billed_ms),
            billed_invocations: some(self.billed > 0, self.billed),
            cold_starts: some(self.billed > 0, self.cold_starts),
            platform_log_bytes: some(self.platform_bytes > 0, self.platform_bytes),
        }
    }
}

struct Report {
    request_id: String,
    billed_ms: f64,
    memory_mb: Option<f64>,
    cold: bool,
    bytes: u64,
}

/// Memory sizes of the two functions, to give `REPORT` lines whose request id no log line
/// names to the function with that memory size (when the sizes differ).
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryHints {
    pub ingest_mb: Option<f64>,
    pub writer_mb: Option<f64>,
}

/// Parses the lines of `text`.
pub fn parse(text: &str, hints: MemoryHints) -> Parsed {
    let mut tallies: HashMap<Owner, Tally> = HashMap::new();
    let mut owners: HashMap<String, Owner> = HashMap::new();
    // Lines whose owner is known only by request id, settled after every line is read.
    let mut pending: Vec<(String, u64, bool)> = Vec::new();
    let mut reports: Vec<Report> = Vec::new();
    let mut parsed = Parsed::default();
    let mut other_bytes = 0u64;
    let mut rejected = 0u64;

    for raw in text.lines() {
        let line = strip_ansi(raw.trim_end_matches('\r'));
        let (tag, line) = split_tag(&line);
        if line.trim().is_empty() {
            continue;
        }
        if tag == Some("query") {
            parsed.query_lines += 1;
            continue;
        }
        parsed.lines += 1;
        let mut bytes = line.len() as u64;
        let trimmed = line.trim();

        if let Some(rest) = trimmed.strip_prefix("REPORT RequestId:") {
            match report(rest, bytes) {
                Some(r) => reports.push(r),
                None => other_bytes += bytes,
            }
            continue;
        }
        if let Some(rest) = trimmed
            .strip_prefix("START RequestId:")
            .or_else(|| trimmed.strip_prefix("END RequestId:"))
        {
            let id = rest.split_whitespace().next().unwrap_or("").to_owned();
            pending.push((id, bytes, true));
            continue;
        }

        let json = trimmed.find('{').and_then(|at| {
            let doc = serde_json::from_str::<Value>(&trimmed[at..]).ok()?;
            bytes = (trimmed.len() - at) as u64;
            Some(doc)
        });
        let Some(doc) = json else {
            if trimmed.starts_with('{') {
                parsed.malformed += 1;
            }
            match text_line(trimmed) {
                Some((owner, duration)) => {
                    let t = tallies.entry(owner).or_default();
                    t.log_bytes += bytes;
                    if let Some(ms) = duration {
                        t.duration_ms += ms;
                        t.timed += 1;
                    }
                }
                None => other_bytes += bytes,
            }
            continue;
        };

        if doc.get("_aws").is_some() {
            let metric = |name: &str| metric_value(&doc, name);
            if let Some(readings) = metric("ReadingsAccepted") {
                let t = tallies.entry(Owner::Ingest).or_default();
                t.invocations += 1;
                t.readings += readings as u64;
                t.messages += metric("MessagesEnqueued").unwrap_or(0.0) as u64;
                t.log_bytes += bytes;
            } else if metric("RequestsRejected").is_some() {
                rejected += 1;
                tallies.entry(Owner::Ingest).or_default().log_bytes += bytes;
            } else if let Some(size) = metric("BatchSize") {
                let t = tallies.entry(Owner::Writer).or_default();
                t.invocations += 1;
                t.messages += size as u64;
                t.readings += metric("RowsWritten").unwrap_or(0.0) as u64;
                if let Some(ms) = metric("CopyDuration") {
                    t.copy_ms += ms;
                    t.copied += 1;
                }
                t.log_bytes += bytes;
            } else {
                // AuthFailures may come from either HTTP function; other metrics are not
                // this pipeline's ingestion path.
                other_bytes += bytes;
            }
            continue;
        }

        let message = doc.get("message").and_then(Value::as_str).unwrap_or("");
        let request_id = doc
            .get("requestId")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let owner = match message {
            "readings enqueued" => Some((Owner::Ingest, true)),
            m if m.starts_with("request refused") => Some((Owner::Ingest, false)),
            "batch handled" => Some((Owner::Writer, true)),
            _ => None,
        };
        match owner {
            Some((owner, timed)) => {
                let t = tallies.entry(owner).or_default();
                t.log_bytes += bytes;
                if timed {
                    if let Some(ms) = doc.get("duration_ms").and_then(Value::as_f64) {
                        t.duration_ms += ms;
                        t.timed += 1;
                    }
                }
                if let Some(id) = request_id {
                    owners.insert(id, owner);
                }
            }
            None => match request_id {
                Some(id) => pending.push((id, bytes, false)),
                None => other_bytes += bytes,
            },
        }
    }

    for (id, bytes, platform) in pending {
        match owners.get(&id) {
            Some(owner) => {
                let t = tallies.entry(*owner).or_default();
                if platform {
                    t.platform_bytes += bytes;
                } else {
                    t.log_bytes += bytes;
                }
            }
            None => other_bytes += bytes,
        }
    }
    for r in reports {
        let by_memory = |mb: f64| match (hints.ingest_mb, hints.writer_mb) {
            (Some(i), Some(w)) if i != w && mb == i => Some(Owner::Ingest),
            (Some(i), Some(w)) if i != w && mb == w => Some(Owner::Writer),
            _ => None,
        };
        let owner = owners
            .get(&r.request_id)
            .copied()
            .or_else(|| r.memory_mb.and_then(by_memory));
        match owner {
            Some(owner) => {
                let t = tallies.entry(owner).or_default();
                t.billed_ms += r.billed_ms;
                t.billed += 1;
                t.cold_starts += u64::from(r.cold);
                t.platform_bytes += r.bytes;
            }
            None => {
                parsed.unattributed_reports += 1;
                other_bytes += r.bytes;
            }
        }
    }

    parsed.measurements = Measurements {
        note: None,
        ingest: tallies
            .remove(&Owner::Ingest)
            .unwrap_or_default()
            .into_function(),
        writer: tallies
            .remove(&Owner::Writer)
            .unwrap_or_default()
            .into_function(),
        other_log_bytes: (other_bytes > 0).then_some(other_bytes),
        rejected: (rejected > 0).then_some(rejected),
    };
    parsed
}

/// A metric's value in an EMF document: a number, or the sum of an array of numbers (EMF
/// allows both), when the document declares the metric.
fn metric_value(doc: &Value, name: &str) -> Option<f64> {
    let declared = doc["_aws"]["CloudWatchMetrics"]
        .as_array()?
        .iter()
        .filter_map(|d| d["Metrics"].as_array())
        .flatten()
        .any(|m| m["Name"] == name);
    if !declared {
        return None;
    }
    match doc.get(name)? {
        Value::Number(n) => n.as_f64(),
        Value::Array(items) => Some(items.iter().filter_map(Value::as_f64).sum()),
        _ => None,
    }
}

/// A tracing text-format line of either function: `... INFO ingest_api: readings enqueued
/// accepted=100 messages=1 batch_id=... duration_ms=3`.
fn text_line(line: &str) -> Option<(Owner, Option<f64>)> {
    let (owner, timed) = if line.contains(" readings enqueued") {
        (Owner::Ingest, true)
    } else if line.contains(" request refused") {
        (Owner::Ingest, false)
    } else if line.contains(" batch handled") {
        (Owner::Writer, true)
    } else {
        return None;
    };
    let duration = timed
        .then(|| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix("duration_ms="))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .flatten();
    Some((owner, duration))
}

/// The fields of a `REPORT` line after `REPORT RequestId:`.
fn report(rest: &str, bytes: u64) -> Option<Report> {
    let mut fields = rest.split('\t').map(str::trim);
    let request_id = fields.next()?.to_owned();
    let mut billed = None;
    let mut memory = None;
    let mut cold = false;
    for f in fields {
        let Some((name, value)) = f.split_once(':') else {
            continue;
        };
        let number = || value.split_whitespace().next()?.parse::<f64>().ok();
        match name.trim() {
            "Billed Duration" => billed = number(),
            "Memory Size" => memory = number(),
            "Init Duration" => cold = true,
            _ => {}
        }
    }
    Some(Report {
        request_id,
        billed_ms: billed?,
        memory_mb: memory,
        cold,
        bytes,
    })
}

/// `[tag] rest` as scripts/dev prints a service's lines: the tag and the rest.
fn split_tag(line: &str) -> (Option<&str>, &str) {
    if let Some(rest) = line.strip_prefix('[') {
        if let Some((tag, after)) = rest.split_once("] ") {
            if !tag.is_empty() && tag.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                return (Some(tag), after);
            }
        }
    }
    (None, line)
}

/// `line` without ANSI colour sequences (tracing colours its text output on a terminal).
fn strip_ansi(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.contains('\u{1b}') {
        return line.into();
    }
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines as the functions print them (EMF documents and JSON logs: serde_json writes
    // object keys in sorted order).
    const INGEST_EMF: &str = r#"{"Function":"ingest-api","MessagesEnqueued":1,"ReadingsAccepted":100,"_aws":{"CloudWatchMetrics":[{"Dimensions":[["Function"]],"Metrics":[{"Name":"ReadingsAccepted","Unit":"Count"},{"Name":"MessagesEnqueued","Unit":"Count"}],"Namespace":"SensorPipeline"}],"Timestamp":1764437000123},"batch_id":"0b6f6f1e-5a4e-4b8e-9a51-3c2d1e0f9a77"}"#;
    const INGEST_LOG: &str = r#"{"accepted":100,"batch_id":"0b6f6f1e-5a4e-4b8e-9a51-3c2d1e0f9a77","duration_ms":3,"level":"INFO","message":"readings enqueued","messages":1,"requestId":"req-i1","target":"ingest_api","timestamp":"2026-11-29T17:40:01.123456Z"}"#;
    const WRITER_EMF: &str = r#"{"BatchSize":4,"CopyDuration":12.5,"DlqSends":0,"DuplicatesSkipped":0,"Function":"batch-writer","RowsWritten":400,"_aws":{"CloudWatchMetrics":[{"Dimensions":[["Function"]],"Metrics":[{"Name":"BatchSize","Unit":"Count"},{"Name":"RowsWritten","Unit":"Count"},{"Name":"DuplicatesSkipped","Unit":"Count"},{"Name":"DlqSends","Unit":"Count"},{"Name":"CopyDuration","Unit":"Milliseconds"}],"Namespace":"SensorPipeline"}],"Timestamp":1764437000456}}"#;
    const WRITER_LOG: &str = r#"{"copy_ms":12.5,"dead_lettered":0,"dlq_sent":0,"duration_ms":20,"failed":0,"level":"INFO","message":"batch handled","messages":4,"parts_skipped":0,"parts_written":4,"requestId":"req-w1","rows":400,"rows_skipped":0,"target":"readings::writer","timestamp":"2026-11-29T17:40:01.456789Z"}"#;

    fn len(lines: &[&str]) -> u64 {
        lines.iter().map(|l| l.len() as u64).sum()
    }

    #[test]
    fn counts_emf_documents_and_log_lines() {
        let text = [
            INGEST_EMF, INGEST_LOG, INGEST_EMF, WRITER_EMF, WRITER_LOG, "",
        ]
        .join("\n");
        let p = parse(&text, MemoryHints::default());
        assert_eq!(p.lines, 5);
        let i = &p.measurements.ingest;
        assert_eq!(i.invocations, Some(2));
        assert_eq!(i.readings, Some(200));
        assert_eq!(i.messages, Some(2));
        // One of the two requests was timed (one log line).
        assert_eq!(i.duration_ms, Some(3.0));
        assert_eq!(i.timed, Some(1));
        assert_eq!(i.mean_duration_ms(), Some(3.0));
        assert_eq!(i.info_logged, Some(true));
        assert_eq!(
            i.log_bytes,
            Some(len(&[INGEST_EMF, INGEST_EMF, INGEST_LOG]))
        );
        let w = &p.measurements.writer;
        assert_eq!(w.invocations, Some(1));
        assert_eq!(w.messages, Some(4));
        assert_eq!(w.readings, Some(400));
        assert_eq!(w.copy_ms, Some(12.5));
        assert_eq!(w.duration_ms, Some(20.0));
        assert_eq!(w.log_bytes, Some(len(&[WRITER_EMF, WRITER_LOG])));
        assert_eq!(p.measurements.other_log_bytes, None);
        assert_eq!(i.billed_ms, None);
    }

    #[test]
    fn emf_alone_leaves_durations_unmeasured() {
        let p = parse(&[INGEST_EMF, WRITER_EMF].join("\n"), MemoryHints::default());
        assert_eq!(p.measurements.ingest.duration_ms, None);
        assert_eq!(p.measurements.ingest.info_logged, Some(false));
        assert_eq!(p.measurements.writer.copy_ms, Some(12.5));
        assert_eq!(p.measurements.writer.duration_ms, None);
    }

    #[test]
    fn metric_values_may_be_arrays_and_must_be_declared() {
        let doc: Value = serde_json::from_str(
            r#"{"BatchSize":[2,3],"RowsWritten":7,"_aws":{"CloudWatchMetrics":[{"Metrics":[{"Name":"BatchSize"}]}]}}"#,
        )
        .unwrap();
        assert_eq!(metric_value(&doc, "BatchSize"), Some(5.0));
        assert_eq!(metric_value(&doc, "RowsWritten"), None);
    }

    #[test]
    fn text_format_logs_and_other_lines() {
        let text = "\
\u{1b}[2m2026-11-29T17:40:01.123456Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m ingest_api: readings enqueued accepted=1 messages=1 batch_id=x duration_ms=41
2026-11-29T17:40:01.2Z  INFO readings::writer: batch handled messages=3 rows=3 copy_ms=1.5 duration_ms=7
2026-11-29T17:40:00.0Z  INFO ingest_api: listening addr=127.0.0.1:3000
{not json
";
        let p = parse(text, MemoryHints::default());
        assert_eq!(p.measurements.ingest.duration_ms, Some(41.0));
        assert_eq!(p.measurements.writer.duration_ms, Some(7.0));
        // No EMF: no invocation counts.
        assert_eq!(p.measurements.ingest.invocations, None);
        assert_eq!(p.malformed, 1);
        let other = "2026-11-29T17:40:00.0Z  INFO ingest_api: listening addr=127.0.0.1:3000".len()
            + "{not json".len();
        assert_eq!(p.measurements.other_log_bytes, Some(other as u64));
        // Colour codes are not counted: the functions print none when stdout is no terminal.
        let first = strip_ansi(text.lines().next().unwrap()).len() as u64;
        assert!(first < text.lines().next().unwrap().len() as u64);
        assert_eq!(p.measurements.ingest.log_bytes, Some(first));
    }

    #[test]
    fn scripts_dev_tags_are_not_counted_and_query_lines_are_left_out() {
        let text = format!(
            "[ingest] {INGEST_EMF}\n[ingest] {INGEST_LOG}\n[writer] {WRITER_EMF}\n[query] {{\"message\":\"listening\"}}\n[sqs] starting\n"
        );
        let p = parse(&text, MemoryHints::default());
        assert_eq!(p.lines, 4);
        assert_eq!(p.query_lines, 1);
        assert_eq!(p.measurements.ingest.invocations, Some(1));
        assert_eq!(
            p.measurements.ingest.log_bytes,
            Some(len(&[INGEST_EMF, INGEST_LOG]))
        );
        assert_eq!(p.measurements.writer.log_bytes, Some(len(&[WRITER_EMF])));
        assert_eq!(
            p.measurements.other_log_bytes,
            Some("starting".len() as u64)
        );
        // An export's timestamp before the JSON is not counted either.
        let p = parse(
            &format!("2026-11-29T17:40:01Z {INGEST_EMF}"),
            MemoryHints::default(),
        );
        assert_eq!(p.measurements.ingest.log_bytes, Some(len(&[INGEST_EMF])));
    }

    #[test]
    fn lambda_platform_lines_go_to_their_function() {
        let start_i = "START RequestId: req-i1 Version: $LATEST";
        let end_i = "END RequestId: req-i1";
        let report_i = "REPORT RequestId: req-i1\tDuration: 5.21 ms\tBilled Duration: 6 ms\tMemory Size: 256 MB\tMax Memory Used: 31 MB\tInit Duration: 40.02 ms";
        let report_w = "REPORT RequestId: req-w1\tDuration: 80.50 ms\tBilled Duration: 81 ms\tMemory Size: 1024 MB\tMax Memory Used: 40 MB";
        // No log line names req-w2: its memory size says it is the writer's.
        let report_w2 = "REPORT RequestId: req-w2\tDuration: 9.1 ms\tBilled Duration: 10 ms\tMemory Size: 1024 MB\tMax Memory Used: 40 MB";
        let report_x = "REPORT RequestId: req-x\tDuration: 1 ms\tBilled Duration: 1 ms\tMemory Size: 512 MB\tMax Memory Used: 40 MB";
        let warn = r#"{"level":"WARN","message":"message dead-lettered","requestId":"req-w1","target":"readings::writer","timestamp":"t"}"#;
        let text = [
            start_i, INGEST_EMF, INGEST_LOG, end_i, report_i, warn, WRITER_EMF, WRITER_LOG,
            report_w, report_w2, report_x,
        ]
        .join("\n");
        let hints = MemoryHints {
            ingest_mb: Some(256.0),
            writer_mb: Some(1024.0),
        };
        let p = parse(&text, hints);
        let i = &p.measurements.ingest;
        assert_eq!(i.billed_ms, Some(6.0));
        assert_eq!(i.billed_invocations, Some(1));
        assert_eq!(i.cold_starts, Some(1));
        assert_eq!(i.mean_billed_ms(), Some(6.0));
        assert_eq!(i.platform_log_bytes, Some(len(&[start_i, end_i, report_i])));
        let w = &p.measurements.writer;
        assert_eq!(w.billed_ms, Some(91.0));
        assert_eq!(w.billed_invocations, Some(2));
        assert_eq!(w.cold_starts, Some(0));
        assert_eq!(w.log_bytes, Some(len(&[WRITER_EMF, WRITER_LOG, warn])));
        assert_eq!(p.unattributed_reports, 1);
        assert_eq!(p.measurements.other_log_bytes, Some(report_x.len() as u64));
    }
}
