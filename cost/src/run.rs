//! The part of `loadtest --json`'s summary that cost reads. Other fields are ignored, so
//! the summary can grow without breaking this.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RunError {
    #[error("reading {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: not a loadtest --json summary: {reason}")]
    Format { path: String, reason: String },
    #[error("{path}: {reason}")]
    Unusable { path: String, reason: String },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Summary {
    #[serde(default)]
    pub run_id: Option<String>,
    pub elapsed_secs: f64,
    pub target: Plan,
    pub requests: Requests,
    pub readings: Readings,
    /// Answers by HTTP status.
    #[serde(default)]
    pub status: BTreeMap<String, u64>,
    pub latency_ms: Latency,
    #[serde(default)]
    pub ingest_latency_ms: Option<Latency>,
    pub throughput: Throughput,
    #[serde(default)]
    pub verify: Option<Verify>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Plan {
    pub rate: f64,
    pub batch: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Requests {
    pub total: u64,
    pub ingest: u64,
    pub query: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Readings {
    pub sent: u64,
    pub accepted: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub mean: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Throughput {
    pub readings_per_sec: f64,
    pub requests_per_sec: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Verify {
    pub expected: u64,
    pub lost: u64,
    pub duplicated: u64,
}

/// A run, with the figures cost takes from it.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub path: String,
    pub summary: Summary,
    /// Ingest requests answered 202.
    pub accepted_requests: u64,
}

impl Run {
    pub fn load(path: &Path) -> Result<Run, RunError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| RunError::Read {
            path: name.clone(),
            reason: e.to_string(),
        })?;
        Run::parse(&text, &name)
    }

    pub fn parse(text: &str, path: &str) -> Result<Run, RunError> {
        let summary: Summary = serde_json::from_str(text).map_err(|e| RunError::Format {
            path: path.into(),
            reason: e.to_string(),
        })?;
        let accepted_requests = summary.status.get("202").copied().unwrap_or(0);
        let unusable = |reason: String| RunError::Unusable {
            path: path.into(),
            reason,
        };
        if accepted_requests == 0 || summary.readings.accepted == 0 {
            return Err(unusable(
                "no ingest request was accepted (no 202 answers): nothing to cost".into(),
            ));
        }
        if !(summary.elapsed_secs.is_finite() && summary.elapsed_secs > 0.0) {
            return Err(unusable(format!(
                "elapsed_secs is {}",
                summary.elapsed_secs
            )));
        }
        Ok(Run {
            path: path.into(),
            summary,
            accepted_requests,
        })
    }

    /// Readings per accepted request.
    pub fn batch(&self) -> f64 {
        self.summary.readings.accepted as f64 / self.accepted_requests as f64
    }

    /// Accepted ingest requests per second of the run.
    pub fn requests_per_sec(&self) -> f64 {
        self.accepted_requests as f64 / self.summary.elapsed_secs
    }

    /// Mean client-side latency of the ingest requests, ms.
    pub fn ingest_latency_mean_ms(&self) -> f64 {
        self.summary
            .ingest_latency_ms
            .as_ref()
            .unwrap_or(&self.summary.latency_ms)
            .mean
    }

    /// The file's name without its folders.
    pub fn name(&self) -> String {
        Path::new(&self.path)
            .file_name()
            .map_or_else(|| self.path.clone(), |n| n.to_string_lossy().into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../tests/data/sample-batch100.json");

    #[test]
    fn reads_a_loadtest_summary() {
        let r = Run::parse(SAMPLE, "sample-batch100.json").unwrap();
        assert_eq!(r.accepted_requests, 300);
        assert_eq!(r.summary.readings.accepted, 30_000);
        assert_eq!(r.batch(), 100.0);
        assert_eq!(r.summary.target.batch, 100);
        assert!((r.requests_per_sec() - 300.0 / 6.03).abs() < 1e-9);
        assert_eq!(r.summary.verify.as_ref().map(|v| v.lost), Some(0));
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        let e = Run::parse("{}", "x.json").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("x.json: not a loadtest --json summary"),
            "{e}"
        );
        let none = SAMPLE.replace("\"202\": 300", "\"503\": 300");
        let e = Run::parse(&none, "x.json").unwrap_err();
        assert!(
            e.to_string().contains("no ingest request was accepted"),
            "{e}"
        );
    }
}
