//! The pipeline's own counters for one run: the `--measurements` JSON file, or what
//! [`crate::emf`] derives from the functions' output lines. Every field is optional: what
//! is missing is replaced by a documented assumption (and the report says so).
//!
//! ```json
//! {
//!   "ingest": {"invocations": 600, "readings": 60000, "messages": 600,
//!              "payload_bytes": 2640000, "duration_ms": 1830.0, "timed": 600,
//!              "cpu_ms": 420.0, "log_bytes": 390000},
//!   "writer": {"invocations": 30, "messages": 120, "readings": 60000,
//!              "duration_ms": 610.0, "copy_ms": 450.0, "log_bytes": 21000},
//!   "other_log_bytes": 1200
//! }
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum MeasureError {
    #[error("reading {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: {reason}")]
    Format { path: String, reason: String },
}

/// One function's counters over the run.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Function {
    /// Handler calls: accepted requests (ingest), batches (writer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invocations: Option<u64>,
    /// Readings accepted (ingest) or rows written (writer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readings: Option<u64>,
    /// SQS messages sent (ingest) or received (writer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<u64>,
    /// Bytes of the SQS message bodies sent (ingest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_bytes: Option<u64>,
    /// Handler wall time, ms, summed over `timed` calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// How many calls `duration_ms` covers (default: `invocations`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timed: Option<u64>,
    /// Time in binary COPY, ms, summed over every batch (writer; the `CopyDuration` metric).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_ms: Option<f64>,
    /// The process's CPU time (user + system) over the run, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<f64>,
    /// Bytes of the function's log and EMF lines (without line ends).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_bytes: Option<u64>,
    /// Whether `log_bytes` includes the info-level log line of each call (`readings
    /// enqueued`, `batch handled`); false when the run logged at warn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info_logged: Option<bool>,
    /// On Lambda: billed duration from the `REPORT` lines, ms, summed over
    /// `billed_invocations`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billed_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billed_invocations: Option<u64>,
    /// On Lambda: `REPORT` lines with an `Init Duration`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cold_starts: Option<u64>,
    /// On Lambda: bytes of the platform's `START`, `END` and `REPORT` lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform_log_bytes: Option<u64>,
}

/// The counters of one run.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Measurements {
    /// Free text: where the figures came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default)]
    pub ingest: Function,
    #[serde(default)]
    pub writer: Function,
    /// Lines neither function's by their content or request id (start-up lines, other
    /// functions' metrics), counted per ingest request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_log_bytes: Option<u64>,
    /// Ingest requests refused with 4xx (`RequestsRejected`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<u64>,
}

impl Measurements {
    pub fn load(path: &Path) -> Result<Measurements, MeasureError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| MeasureError::Read {
            path: name.clone(),
            reason: e.to_string(),
        })?;
        Measurements::parse(&text, &name)
    }

    pub fn parse(text: &str, path: &str) -> Result<Measurements, MeasureError> {
        let m: Measurements = serde_json::from_str(text).map_err(|e| MeasureError::Format {
            path: path.into(),
            reason: e.to_string(),
        })?;
        m.check().map_err(|reason| MeasureError::Format {
            path: path.into(),
            reason,
        })?;
        Ok(m)
    }

    /// Refuses negative or non-finite times.
    fn check(&self) -> Result<(), String> {
        for (name, f) in [("ingest", &self.ingest), ("writer", &self.writer)] {
            for (field, v) in [
                ("duration_ms", f.duration_ms),
                ("copy_ms", f.copy_ms),
                ("cpu_ms", f.cpu_ms),
                ("billed_ms", f.billed_ms),
            ] {
                if let Some(v) = v {
                    if !(v.is_finite() && v >= 0.0) {
                        return Err(format!(
                            "{name}.{field} is {v}: expected a time, zero or more"
                        ));
                    }
                }
            }
            if f.timed == Some(0) && f.duration_ms.is_some() {
                return Err(format!("{name}.timed is 0 but {name}.duration_ms is given"));
            }
        }
        Ok(())
    }

    /// `self` with every field that `over` has replaced by `over`'s.
    pub fn overlaid(mut self, over: &Measurements) -> Measurements {
        self.ingest = self.ingest.overlaid(&over.ingest);
        self.writer = self.writer.overlaid(&over.writer);
        if over.note.is_some() {
            self.note.clone_from(&over.note);
        }
        if over.other_log_bytes.is_some() {
            self.other_log_bytes = over.other_log_bytes;
        }
        if over.rejected.is_some() {
            self.rejected = over.rejected;
        }
        self
    }
}

impl Function {
    fn overlaid(mut self, over: &Function) -> Function {
        macro_rules! take {
            ($($f:ident),*) => {$(if over.$f.is_some() { self.$f = over.$f; })*};
        }
        take!(
            invocations,
            readings,
            messages,
            payload_bytes,
            duration_ms,
            timed,
            copy_ms,
            cpu_ms,
            log_bytes,
            info_logged,
            billed_ms,
            billed_invocations,
            cold_starts,
            platform_log_bytes
        );
        self
    }

    /// Mean handler wall time per call, ms.
    pub fn mean_duration_ms(&self) -> Option<f64> {
        let d = self.duration_ms?;
        let n = self.timed.or(self.invocations)?;
        (n > 0).then(|| d / n as f64)
    }

    /// Mean billed duration per call on Lambda, ms.
    pub fn mean_billed_ms(&self) -> Option<f64> {
        let d = self.billed_ms?;
        let n = self.billed_invocations?;
        (n > 0).then(|| d / n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let doc = include_str!("measure.rs")
            .split("```json")
            .nth(1)
            .and_then(|s| s.split("```").next())
            .unwrap()
            .lines()
            .map(|l| l.trim_start().trim_start_matches("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        let m = Measurements::parse(&doc, "doc").unwrap();
        assert_eq!(m.ingest.invocations, Some(600));
        assert_eq!(m.ingest.mean_duration_ms(), Some(3.05));
        assert_eq!(m.writer.copy_ms, Some(450.0));
        assert_eq!(m.writer.mean_duration_ms(), Some(610.0 / 30.0));
        assert_eq!(m.other_log_bytes, Some(1200));
    }

    #[test]
    fn refuses_unknown_fields_and_negative_times() {
        let e = Measurements::parse(r#"{"ingest": {"requests": 5}}"#, "m.json").unwrap_err();
        assert!(e.to_string().contains("unknown field `requests`"), "{e}");
        let e = Measurements::parse(r#"{"writer": {"copy_ms": -1}}"#, "m.json").unwrap_err();
        assert_eq!(
            e.to_string(),
            "m.json: writer.copy_ms is -1: expected a time, zero or more"
        );
    }

    #[test]
    fn a_file_overlays_derived_figures_field_by_field() {
        let derived = Measurements {
            ingest: Function {
                invocations: Some(10),
                messages: Some(10),
                ..Function::default()
            },
            ..Measurements::default()
        };
        let file =
            Measurements::parse(r#"{"ingest": {"messages": 4, "payload_bytes": 1000}}"#, "f")
                .unwrap();
        let m = derived.overlaid(&file);
        assert_eq!(m.ingest.invocations, Some(10));
        assert_eq!(m.ingest.messages, Some(4));
        assert_eq!(m.ingest.payload_bytes, Some(1000));
    }
}
