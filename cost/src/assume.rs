//! The model's assumptions: every figure that is not measured, with its default, unit and
//! reason, each overridable with `--assume key=value`. The report lists those it used.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use thiserror::Error;

use crate::template::Settings;

/// One assumption. `default: None` means the default comes from elsewhere (the template,
/// or a measured figure), as `from` says.
#[derive(Debug, Clone, Copy)]
pub struct Assumption {
    pub key: &'static str,
    pub default: Option<f64>,
    pub unit: &'static str,
    pub meaning: &'static str,
}

const fn a(
    key: &'static str,
    default: f64,
    unit: &'static str,
    meaning: &'static str,
) -> Assumption {
    Assumption {
        key,
        default: Some(default),
        unit,
        meaning,
    }
}

const fn from(key: &'static str, unit: &'static str, meaning: &'static str) -> Assumption {
    Assumption {
        key,
        default: None,
        unit,
        meaning,
    }
}

/// Every assumption, in the order the README documents them.
pub const ASSUMPTIONS: &[Assumption] = &[
    // ---- the deployment (template.yaml)
    from("ingest_memory_mb", "MB", "ingest-api MemorySize (template: IngestMemorySize)"),
    from("query_memory_mb", "MB", "query-api MemorySize (template: QueryMemorySize); not part of the cost of ingestion"),
    from("writer_memory_mb", "MB", "batch-writer MemorySize (template: WriterMemorySize)"),
    from("writer_batch_size", "messages", "most messages per writer invocation (template: WriterBatchSize)"),
    from("writer_batch_window_secs", "s", "how long Lambda gathers a writer batch (template: WriterBatchingWindowSeconds)"),
    // ---- sizes
    a("request_bytes_per_reading", 88.0, "bytes", "HTTP body per reading: loadtest's {\"location\":\"lt-abcd1234-517\",\"temperature\":21.53,\"time\":\"2026-11-29T17:40:01.123456Z\"} and a comma"),
    a("request_overhead_bytes", 600.0, "bytes", "request line and headers (the API key among them) counted toward API Gateway's 512 KiB increments"),
    a("envelope_bytes_per_reading", 43.0, "bytes", "SQS payload per reading: [1764437000123456,\"lt-abcd1234-517\",21.53] and a comma; derived from ingest.payload_bytes when measured"),
    a("sqs_max_message_bytes", 262144.0, "bytes", "the queue's MaximumMessageSize, which ingest packs messages to and which bounds a SendMessageBatch (256 KiB; 1048576 for a queue with a 1 MiB maximum)"),
    a("sqs_event_record_overhead_bytes", 1000.0, "bytes", "bytes an SQS record adds to the writer's event besides its body (ids, receipt handle, attributes), toward Lambda's 6 MB payload limit"),
    // ---- logs
    a("platform_log_bytes", 258.0, "bytes", "Lambda's START, END and REPORT lines per invocation (text format); measured when the lines hold them"),
    a("ingest_log_bytes", 620.0, "bytes", "ingest-api log and EMF bytes per request when none are measured (one EMF line, one `readings enqueued` line)"),
    a("ingest_info_log_bytes", 255.0, "bytes", "the `readings enqueued` line per request, added when the measured run did not log at info (the template's LogLevel is info)"),
    a("writer_log_bytes", 790.0, "bytes", "batch-writer log and EMF bytes per invocation when none are measured"),
    a("writer_info_log_bytes", 315.0, "bytes", "the `batch handled` line per invocation, added when the measured run did not log at info"),
    // ---- durations
    a("ingest_ms_per_reading", 0.002, "ms", "ingest time per reading (parse, validate, pack) measured locally; used when runs of only one batch size are given (otherwise fitted)"),
    a("ingest_linger_ms", 0.0, "ms", "time a measured local request waited to share messages (INGEST_COALESCE_LINGER_MS, on average about half of it), subtracted: Lambda does not coalesce"),
    a("ingest_cpu_fraction", 1.0, "share", "share of the measured ingest time that is CPU work, stretched by Lambda's CPU share; used when ingest.cpu_ms is not measured (1 = all of it: an upper estimate)"),
    a("writer_ms_per_invocation", 2.0, "ms", "writer time per handler call besides its readings (commit, event decoding); taken out of the measured time and put back per Lambda invocation"),
    a("writer_ms_per_request", 0.01, "ms", "writer time per batch part (one per ingest request: its batch-id key); used when runs of only one batch size are given (otherwise fitted)"),
    a("writer_ms_per_reading", 0.00515, "ms", "writer time per reading when no writer time is measured (BENCHMARKS.md P1: 1,000,000 readings in 5.15 s)"),
    a("writer_cpu_fraction", 1.0, "share", "share of the measured writer time that is CPU work; used when neither writer.cpu_ms nor the handler/COPY split is measured"),
    a("cpu_speed", 1.0, "ratio", "speed of one Lambda or Fargate vCPU relative to one core of the measuring machine"),
    // ---- Lambda environments
    a("lambda_env_lifetime_hours", 2.0, "h", "how long an execution environment lives before a cold start replaces it (AWS does not publish it)"),
    a("secret_calls_per_cold_start", 1.0, "calls", "GetSecretValue calls per cold start (DATABASE_SECRET_ARN; 0 with DatabaseUrl)"),
    // ---- the tutorial's design
    a("tutorial_duration_ms", 50.0, "ms", "the tutorial's Python handler per reading: connect, INSERT, COMMIT (an assumption: not measured here)"),
    a("tutorial_memory_mb", 128.0, "MB", "the tutorial's function memory"),
    a("tutorial_arm64", 0.0, "0/1", "1: the tutorial's function on arm64 prices; 0: x86_64, Lambda's default"),
    a("tutorial_rest_api", 0.0, "0/1", "1: the tutorial behind a REST API ($3.50/million); 0: an HTTP API like this pipeline's"),
    a("tutorial_request_bytes", 39.0, "bytes", "the tutorial's body {\"location\":\"bedroom\",\"temperature\":66}"),
    a("tutorial_log_bytes", 258.0, "bytes", "the tutorial's log bytes per invocation (Lambda's platform lines only)"),
    // ---- ingest-api as a long-running service
    a("service_vcpu", 1.0, "vCPU", "Fargate task size: vCPUs"),
    a("service_memory_gb", 2.0, "GB", "Fargate task size: memory"),
    from("service_rps", "requests/s", "requests per second one task sustains at the first run's batch size (default: that run's achieved requests/s)"),
    a("service_min_tasks", 1.0, "tasks", "fewest tasks running"),
    a("service_linger_ms", 5.0, "ms", "INGEST_COALESCE_LINGER_MS of the service: concurrent requests share messages"),
];

#[derive(Debug, Error, PartialEq)]
pub enum AssumeError {
    #[error("--assume `{text}`: expected KEY=VALUE, e.g. tutorial_duration_ms=80")]
    Syntax { text: String },
    #[error("--assume: unknown key `{key}` (--list-assumptions shows them all)")]
    Unknown { key: String },
    #[error("--assume {key}: `{value}` is not a finite number, zero or more")]
    Value { key: String, value: String },
    #[error("--assume {key}: must be {what}")]
    Range { key: String, what: &'static str },
    #[error("{0}")]
    Template(String),
}

/// Where an assumption's value came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Default,
    Template,
    Flag,
}

/// The assumptions in force.
#[derive(Debug, Clone, Serialize)]
pub struct Assumptions {
    values: BTreeMap<&'static str, (f64, Origin)>,
    #[serde(skip)]
    used: std::cell::RefCell<BTreeSet<&'static str>>,
}

impl Assumptions {
    /// The defaults, with the template's settings when given.
    pub fn new(template: Option<&Settings>) -> Assumptions {
        let mut values = BTreeMap::new();
        for a in ASSUMPTIONS {
            if let Some(v) = a.default {
                values.insert(a.key, (v, Origin::Default));
            }
        }
        if let Some(t) = template {
            for (key, v) in [
                ("ingest_memory_mb", t.ingest_memory_mb),
                ("query_memory_mb", t.query_memory_mb),
                ("writer_memory_mb", t.writer_memory_mb),
                ("writer_batch_size", t.writer_batch_size),
                ("writer_batch_window_secs", t.writer_batch_window_secs),
            ] {
                values.insert(key, (v, Origin::Template));
            }
        }
        Assumptions {
            values,
            used: Default::default(),
        }
    }

    /// Applies one `--assume key=value`.
    pub fn set(&mut self, text: &str) -> Result<(), AssumeError> {
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| AssumeError::Syntax { text: text.into() })?;
        let key = key.trim();
        let a = ASSUMPTIONS
            .iter()
            .find(|a| a.key == key)
            .ok_or_else(|| AssumeError::Unknown { key: key.into() })?;
        let v: f64 = value
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| AssumeError::Value {
                key: key.into(),
                value: value.trim().into(),
            })?;
        let range = |what| AssumeError::Range {
            key: key.into(),
            what,
        };
        match a.unit {
            "share" if v > 1.0 => return Err(range("between 0 and 1")),
            "0/1" if v != 0.0 && v != 1.0 => return Err(range("0 or 1")),
            "MB" if v < 128.0 => return Err(range("at least 128 (Lambda's smallest memory size)")),
            _ => {}
        }
        let positive = [
            "sqs_max_message_bytes",
            "writer_batch_size",
            "cpu_speed",
            "lambda_env_lifetime_hours",
            "service_vcpu",
            "service_memory_gb",
            "service_rps",
            "service_linger_ms",
        ];
        if v == 0.0 && positive.contains(&a.key) {
            return Err(range("more than 0"));
        }
        self.values.insert(a.key, (v, Origin::Flag));
        Ok(())
    }

    /// The value of `key`, when it has one (template settings without a template, and
    /// `service_rps` unless given, have none).
    pub fn get(&self, key: &'static str) -> Option<f64> {
        let v = self.values.get(key).map(|(v, _)| *v);
        if v.is_some() {
            self.used.borrow_mut().insert(key);
        }
        v
    }

    /// The value of an assumption that always has a default.
    pub fn value(&self, key: &'static str) -> f64 {
        debug_assert!(
            ASSUMPTIONS
                .iter()
                .any(|a| a.key == key && a.default.is_some()),
            "{key} has no default"
        );
        self.get(key).unwrap_or(0.0)
    }

    pub fn origin(&self, key: &str) -> Option<&Origin> {
        self.values.get(key).map(|(_, o)| o)
    }

    /// Checks that the deployment settings are known (from the template or flags).
    pub fn require_deployment(&self, template_problem: Option<&str>) -> Result<(), AssumeError> {
        let missing: Vec<&str> = crate::template::PARAMETERS
            .iter()
            .map(|(_, key)| *key)
            .filter(|k| !self.values.contains_key(k))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(AssumeError::Template(format!(
            "{}; without it, give {}",
            template_problem.unwrap_or("no template was read"),
            missing
                .iter()
                .map(|k| format!("--assume {k}=..."))
                .collect::<Vec<_>>()
                .join(" ")
        )))
    }

    /// The assumptions the model read, with their values and origins.
    pub fn used(&self) -> Vec<(&'static Assumption, f64, Origin)> {
        let used = self.used.borrow();
        ASSUMPTIONS
            .iter()
            .filter(|a| used.contains(a.key))
            .filter_map(|a| self.values.get(a.key).map(|(v, o)| (a, *v, o.clone())))
            .collect()
    }
}

/// The table `--list-assumptions` prints.
pub fn list() -> String {
    let mut out = String::from("key | default | unit | meaning\n");
    for a in ASSUMPTIONS {
        let default = match a.default {
            Some(v) => format!("{v}"),
            None if a.key == "service_rps" => "measured".into(),
            None => "template".into(),
        };
        out.push_str(&format!(
            "{} | {} | {} | {}\n",
            a.key, default, a.unit, a.meaning
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique() {
        let mut keys = BTreeSet::new();
        for a in ASSUMPTIONS {
            assert!(keys.insert(a.key), "{} twice", a.key);
            assert!(!a.meaning.is_empty());
        }
    }

    #[test]
    fn overrides_are_checked() {
        let mut s = Assumptions::new(None);
        assert_eq!(s.get("ingest_memory_mb"), None);
        s.set("ingest_memory_mb=512").unwrap();
        assert_eq!(s.get("ingest_memory_mb"), Some(512.0));
        assert_eq!(s.origin("ingest_memory_mb"), Some(&Origin::Flag));
        s.set(" tutorial_duration_ms = 80 ").unwrap();
        assert_eq!(s.value("tutorial_duration_ms"), 80.0);
        for (bad, needle) in [
            ("tutorial_duration_ms", "expected KEY=VALUE"),
            ("nope=1", "unknown key `nope`"),
            ("tutorial_duration_ms=-1", "not a finite number"),
            ("ingest_cpu_fraction=1.5", "between 0 and 1"),
            ("tutorial_arm64=2", "0 or 1"),
            ("writer_memory_mb=64", "at least 128"),
            ("service_rps=0", "more than 0"),
        ] {
            let e = s.set(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn deployment_settings_come_from_the_template_or_flags() {
        let s = Assumptions::new(None);
        let e = s
            .require_deployment(Some("reading t.yaml: gone"))
            .unwrap_err();
        assert!(
            e.to_string().starts_with(
                "reading t.yaml: gone; without it, give --assume ingest_memory_mb=..."
            ),
            "{e}"
        );
        let mut s = Assumptions::new(None);
        for (_, key) in crate::template::PARAMETERS {
            s.set(&format!("{key}=256")).unwrap();
        }
        s.require_deployment(None).unwrap();
    }

    #[test]
    fn only_what_was_read_is_reported() {
        let s = Assumptions::new(None);
        let _ = s.value("cpu_speed");
        let used = s.used();
        assert_eq!(used.len(), 1);
        assert_eq!(used[0].0.key, "cpu_speed");
        assert_eq!(used[0].2, Origin::Default);
    }
}
