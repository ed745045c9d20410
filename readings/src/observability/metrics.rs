// Over 500 lines on purpose: the metric table in these docs, the metric constants and the
// emitter change together; about 160 of the lines are unit tests.
//! CloudWatch metrics in the Embedded Metric Format (EMF): one JSON line on stdout per
//! metrics record, which CloudWatch Logs turns into metrics when it reads a Lambda
//! function's output. No API calls, no background task, nothing buffered.
//!
//! # Metrics
//!
//! Namespace `METRICS_NAMESPACE` (default `SensorPipeline`); every metric has the dimension
//! `Function` (the Lambda function's name, or the executable's name outside Lambda).
//!
//! | metric | unit | emitted by | value |
//! |---|---|---|---|
//! | `ReadingsAccepted` | Count | ingest, per 202 | readings accepted and enqueued |
//! | `MessagesEnqueued` | Count | ingest, per 202 | SQS messages they were packed into |
//! | `RequestsRejected` | Count | ingest, per 4xx | 1 per refused request (also by `Status`, e.g. `400`) |
//! | `BatchSize` | Count | writer, per batch | SQS messages in the batch |
//! | `RowsWritten` | Count | writer, per batch | rows COPYed into `sensor_data` |
//! | `DuplicatesSkipped` | Count | writer, per batch | readings not written again: their batch part was already written |
//! | `DlqSends` | Count | writer, per batch | messages sent to the dead-letter queue |
//! | `CopyDuration` | Milliseconds | writer, per batch that ran a COPY | time spent in binary COPY (summed over the batch's transactions) |
//! | `AuthFailures` | Count | [`auth_failure`] | 1 per refused credential (also by `Reason`) |
//!
//! Rejections are counted per request, not per reading: a request is all or nothing, and a
//! refused body may not even parse into readings. 5xx answers are not rejections.
//!
//! # Settings
//!
//! `METRICS=emf|off` (default `emf` under Lambda, `off` elsewhere: the long-running local
//! services print nothing extra unless asked) and `METRICS_NAMESPACE`.
//!
//! # Use
//!
//! ```no_run
//! use readings::observability::metrics::{self, Record};
//! // One document with several metrics:
//! Record::new()
//!     .count(metrics::ROWS_WRITTEN, 120)
//!     .duration(metrics::COPY_DURATION, std::time::Duration::from_millis(7))
//!     .emit();
//! // A refused credential (the reason becomes a dimension: keep it to a few fixed values):
//! metrics::auth_failure("revoked");
//! // Any counter, once:
//! metrics::count(metrics::AUTH_FAILURES, 1);
//! ```
//!
//! All of these do nothing when metrics are off. [`init`] reads the settings and reports a
//! bad value; a process that never calls it reads them on first use (a bad value then turns
//! metrics off, with a warning).
//!
//! (Why not the `metrics` facade with `metrics_cloudwatch_embedded`: its documents carry one
//! dimension set, so a reason could not be both totalled and broken down; per-invocation
//! properties are process-global; and between periodic flushes in a long-running process it
//! keeps at most 100 values per histogram, logging an error for each one dropped.)

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::config::{in_lambda, ConfigError};

/// The namespace when `METRICS_NAMESPACE` is not set.
pub const DEFAULT_NAMESPACE: &str = "SensorPipeline";
/// The dimension every metric carries: the function's name.
pub const FUNCTION_DIMENSION: &str = "Function";

/// A CloudWatch unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    /// The name CloudWatch uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// A metric's name and unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub unit: Unit,
}

const fn count_metric(name: &'static str) -> Metric {
    Metric {
        name,
        unit: Unit::Count,
    }
}

/// Readings accepted and enqueued (ingest, per accepted request).
pub const READINGS_ACCEPTED: Metric = count_metric("ReadingsAccepted");
/// SQS messages sent for accepted requests (ingest).
pub const MESSAGES_ENQUEUED: Metric = count_metric("MessagesEnqueued");
/// Requests refused with a 4xx status, one per request (ingest).
pub const REQUESTS_REJECTED: Metric = count_metric("RequestsRejected");
/// SQS messages in one writer batch.
pub const BATCH_SIZE: Metric = count_metric("BatchSize");
/// Rows COPYed into `sensor_data` (writer).
pub const ROWS_WRITTEN: Metric = count_metric("RowsWritten");
/// Readings skipped because their batch part was already written (writer).
pub const DUPLICATES_SKIPPED: Metric = count_metric("DuplicatesSkipped");
/// Messages sent to the dead-letter queue (writer).
pub const DLQ_SENDS: Metric = count_metric("DlqSends");
/// Time spent in binary COPY for one writer batch.
pub const COPY_DURATION: Metric = Metric {
    name: "CopyDuration",
    unit: Unit::Milliseconds,
};
/// Refused credentials (see [`auth_failure`]).
pub const AUTH_FAILURES: Metric = count_metric("AuthFailures");

/// Whether metrics are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// EMF lines on stdout.
    Emf,
    /// Nothing.
    Off,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "emf" => Ok(Mode::Emf),
            "off" => Ok(Mode::Off),
            _ => Err("expected emf or off".into()),
        }
    }
}

/// Metrics settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `METRICS`: `emf` or `off`; default `emf` under Lambda, `off` elsewhere.
    pub mode: Mode,
    /// `METRICS_NAMESPACE`, default [`DEFAULT_NAMESPACE`].
    pub namespace: String,
    /// The `Function` dimension: `AWS_LAMBDA_FUNCTION_NAME`, else the executable's name.
    pub function: String,
}

impl MetricsConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME")
            .ok()
            .filter(|f| !f.trim().is_empty())
            .or_else(executable_name)
            .unwrap_or_else(|| "unknown".into());
        Self::from_vars(|name| std::env::var(name).ok(), in_lambda(), function)
    }

    /// The settings from `var` (an environment lookup), for a process that does or does not
    /// run under Lambda.
    pub fn from_vars(
        var: impl Fn(&str) -> Option<String>,
        lambda: bool,
        function: String,
    ) -> Result<Self, ConfigError> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let mode = match set("METRICS") {
            Some(v) => v.parse().map_err(|reason| ConfigError::Invalid {
                name: "METRICS",
                value: v,
                reason,
            })?,
            None if lambda => Mode::Emf,
            None => Mode::Off,
        };
        let namespace = match set("METRICS_NAMESPACE") {
            Some(v) => check_namespace(v.trim()).map_err(|reason| ConfigError::Invalid {
                name: "METRICS_NAMESPACE",
                value: v.clone(),
                reason,
            })?,
            None => DEFAULT_NAMESPACE.to_owned(),
        };
        Ok(MetricsConfig {
            mode,
            namespace,
            function,
        })
    }
}

fn executable_name() -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.file_stem()?.to_string_lossy().into_owned())
}

/// CloudWatch's rules for a namespace: 1 to 255 printable ASCII characters, not `AWS/...`.
fn check_namespace(ns: &str) -> Result<String, String> {
    if ns.is_empty() || ns.len() > 255 {
        return Err("must be 1 to 255 characters long".into());
    }
    if !ns.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        return Err("must be printable ASCII".into());
    }
    if ns.starts_with("AWS/") {
        return Err("the AWS/ prefix is reserved for AWS services".into());
    }
    Ok(ns.to_owned())
}

/// Renders records as EMF documents.
#[derive(Debug, Clone)]
pub struct Emitter {
    config: MetricsConfig,
}

impl Emitter {
    pub fn new(config: MetricsConfig) -> Self {
        Emitter { config }
    }

    pub fn enabled(&self) -> bool {
        self.config.mode == Mode::Emf
    }

    /// The EMF document for `record` at `timestamp_ms` (epoch milliseconds), or `None` when
    /// the record holds no metric.
    pub fn render(&self, record: &Record, timestamp_ms: i64) -> Option<Value> {
        if record.values.is_empty() {
            return None;
        }
        let mut dimension_sets = vec![vec![FUNCTION_DIMENSION]];
        if let Some((name, _)) = &record.dimension {
            dimension_sets.push(vec![FUNCTION_DIMENSION, name]);
        }
        let definitions: Vec<Value> = record
            .values
            .iter()
            .map(|(m, _)| json!({"Name": m.name, "Unit": m.unit.as_str()}))
            .collect();
        let mut doc = Map::new();
        // Properties first, so a metric or dimension of the same name wins.
        for (k, v) in &record.properties {
            doc.insert((*k).to_owned(), v.clone());
        }
        for (m, v) in &record.values {
            doc.insert(m.name.to_owned(), number(*v));
        }
        doc.insert(
            FUNCTION_DIMENSION.to_owned(),
            Value::String(self.config.function.clone()),
        );
        if let Some((name, value)) = &record.dimension {
            doc.insert((*name).to_owned(), Value::String(value.clone()));
        }
        doc.insert(
            "_aws".to_owned(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.config.namespace,
                    "Dimensions": dimension_sets,
                    "Metrics": definitions,
                }],
            }),
        );
        Some(Value::Object(doc))
    }

    /// Writes `record` to stdout as one line, when metrics are on.
    pub fn emit(&self, record: &Record) {
        if !self.enabled() {
            return;
        }
        let Some(doc) = self.render(record, chrono::Utc::now().timestamp_millis()) else {
            return;
        };
        let mut line = doc.to_string();
        line.push('\n');
        // One write under the lock, so log lines from other threads cannot split it. A
        // closed stdout leaves nowhere to report the failure.
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
    }
}

/// Whole numbers as integers, the rest as floats.
fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        Value::from(v as i64)
    } else {
        serde_json::Number::from_f64(v).map_or(Value::from(0), Value::Number)
    }
}

static EMITTER: OnceLock<Emitter> = OnceLock::new();

/// Reads the settings from the environment; call it at start-up to fail on a bad value.
/// The first call (or first use) decides; later calls change nothing.
pub fn init() -> Result<(), ConfigError> {
    let config = MetricsConfig::from_env()?;
    let emitter = EMITTER.get_or_init(|| Emitter::new(config));
    if emitter.enabled() {
        tracing::info!(namespace = %emitter.config.namespace, function = %emitter.config.function, "EMF metrics on");
    }
    Ok(())
}

fn emitter() -> &'static Emitter {
    EMITTER.get_or_init(|| {
        let config = MetricsConfig::from_env().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "metrics are off");
            MetricsConfig {
                mode: Mode::Off,
                namespace: DEFAULT_NAMESPACE.into(),
                function: String::new(),
            }
        });
        Emitter::new(config)
    })
}

/// Whether metrics are written (to skip work that only feeds them).
pub fn enabled() -> bool {
    emitter().enabled()
}

/// The metrics of one event (a request, a batch), written as one EMF document.
#[derive(Debug, Clone, Default)]
pub struct Record {
    values: Vec<(Metric, f64)>,
    dimension: Option<(&'static str, String)>,
    properties: Vec<(&'static str, Value)>,
}

impl Record {
    pub fn new() -> Self {
        Record::default()
    }

    /// Adds `n` to `metric` (a record holds one value per metric).
    pub fn count(&mut self, metric: Metric, n: u64) -> &mut Self {
        self.add(metric, n as f64)
    }

    /// Adds `d`, in milliseconds, to `metric`.
    pub fn duration(&mut self, metric: Metric, d: Duration) -> &mut Self {
        self.add(metric, d.as_secs_f64() * 1000.0)
    }

    fn add(&mut self, metric: Metric, v: f64) -> &mut Self {
        match self.values.iter_mut().find(|(m, _)| m.name == metric.name) {
            Some((_, total)) => *total += v,
            None => self.values.push((metric, v)),
        }
        self
    }

    /// Breaks every metric of the record down by one more dimension as well (CloudWatch then
    /// has both the total per function and the value per `name`). Each distinct value is a
    /// metric of its own: use a few fixed values, never ids or user input.
    pub fn dimension(&mut self, name: &'static str, value: impl Into<String>) -> &mut Self {
        let value = value.into();
        let value = if value.trim().is_empty() {
            "unknown".to_owned()
        } else {
            value
        };
        self.dimension = Some((name, value));
        self
    }

    /// Adds a field that is searchable in the logs but is not a metric (e.g. a batch id).
    pub fn property(&mut self, name: &'static str, value: impl Into<Value>) -> &mut Self {
        self.properties.retain(|(k, _)| *k != name);
        self.properties.push((name, value.into()));
        self
    }

    /// The value recorded for `metric`, if any.
    pub fn get(&self, metric: Metric) -> Option<f64> {
        self.values
            .iter()
            .find(|(m, _)| m.name == metric.name)
            .map(|(_, v)| *v)
    }

    /// Writes the record (when metrics are on).
    pub fn emit(&self) {
        emitter().emit(self);
    }
}

/// Emits `n` for one metric, as a document of its own.
pub fn count(metric: Metric, n: u64) {
    Record::new().count(metric, n).emit();
}

/// Counts an accepted ingest request: its readings and the messages they went into, with
/// its batch id as a property.
pub fn readings_accepted(readings: usize, messages: usize, batch_id: &str) {
    Record::new()
        .count(READINGS_ACCEPTED, readings as u64)
        .count(MESSAGES_ENQUEUED, messages as u64)
        .property("batch_id", batch_id)
        .emit();
}

/// Counts a request refused with `status` as `RequestsRejected`, in total and by `Status`;
/// statuses outside 400..=499 are not rejections and are not counted.
pub fn request_rejected(status: u16) {
    if let Some(r) = rejection_record(status) {
        r.emit();
    }
}

fn rejection_record(status: u16) -> Option<Record> {
    if !(400..500).contains(&status) {
        return None;
    }
    let mut r = Record::new();
    r.count(REQUESTS_REJECTED, 1)
        .dimension("Status", status.to_string());
    Some(r)
}

/// Counts one refused credential as `AuthFailures`, in total and by `Reason`. Pass one of a
/// few fixed reasons (for example `missing`, `unknown`, `revoked`, `scope`), never the key or
/// anything taken from the request.
pub fn auth_failure(reason: &str) {
    auth_failure_record(reason).emit();
}

fn auth_failure_record(reason: &str) -> Record {
    let mut r = Record::new();
    r.count(AUTH_FAILURES, 1).dimension("Reason", reason);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emitter() -> Emitter {
        Emitter::new(MetricsConfig {
            mode: Mode::Emf,
            namespace: "Ns".into(),
            function: "fn-a".into(),
        })
    }

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn a_record_renders_as_one_emf_document() {
        let mut r = Record::new();
        r.count(ROWS_WRITTEN, 4)
            .count(ROWS_WRITTEN, 2)
            .count(DLQ_SENDS, 0)
            .duration(COPY_DURATION, Duration::from_micros(1500))
            .property("batch_id", "b-1");
        let doc = emitter().render(&r, 1_710_000_000_123).unwrap();
        assert_eq!(
            doc,
            json!({
                "_aws": {
                    "Timestamp": 1_710_000_000_123_i64,
                    "CloudWatchMetrics": [{
                        "Namespace": "Ns",
                        "Dimensions": [["Function"]],
                        "Metrics": [
                            {"Name": "RowsWritten", "Unit": "Count"},
                            {"Name": "DlqSends", "Unit": "Count"},
                            {"Name": "CopyDuration", "Unit": "Milliseconds"},
                        ],
                    }],
                },
                "Function": "fn-a",
                "RowsWritten": 6,
                "DlqSends": 0,
                "CopyDuration": 1.5,
                "batch_id": "b-1",
            })
        );
        // One line.
        assert!(!doc.to_string().contains('\n'));
    }

    #[test]
    fn an_extra_dimension_adds_a_dimension_set() {
        let doc = emitter()
            .render(&auth_failure_record("revoked"), 0)
            .unwrap();
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Function"], ["Function", "Reason"]])
        );
        assert_eq!(doc["Reason"], "revoked");
        assert_eq!(doc["AuthFailures"], 1);
        assert_eq!(
            emitter().render(&auth_failure_record(" "), 0).unwrap()["Reason"],
            "unknown"
        );
    }

    #[test]
    fn only_client_errors_are_rejections() {
        let doc = emitter()
            .render(&rejection_record(413).unwrap(), 0)
            .unwrap();
        assert_eq!(doc["RequestsRejected"], 1);
        assert_eq!(doc["Status"], "413");
        assert!(rejection_record(503).is_none());
        assert!(rejection_record(202).is_none());
    }

    #[test]
    fn metrics_and_dimensions_win_over_properties_of_the_same_name() {
        let mut r = Record::new();
        r.property("Function", "spoofed")
            .property("RowsWritten", "x")
            .count(ROWS_WRITTEN, 1);
        let doc = emitter().render(&r, 0).unwrap();
        assert_eq!(doc["Function"], "fn-a");
        assert_eq!(doc["RowsWritten"], 1);
    }

    #[test]
    fn an_empty_record_renders_nothing() {
        assert!(emitter().render(&Record::new(), 0).is_none());
        let mut r = Record::new();
        r.property("batch_id", "b");
        assert!(emitter().render(&r, 0).is_none());
    }

    #[test]
    fn settings() {
        let c = MetricsConfig::from_vars(vars(&[]), true, "f".into()).unwrap();
        assert_eq!(
            c,
            MetricsConfig {
                mode: Mode::Emf,
                namespace: DEFAULT_NAMESPACE.into(),
                function: "f".into()
            }
        );
        let local = MetricsConfig::from_vars(vars(&[]), false, "f".into()).unwrap();
        assert_eq!(local.mode, Mode::Off);
        let on = MetricsConfig::from_vars(
            vars(&[("METRICS", "EMF"), ("METRICS_NAMESPACE", " Sensors/Prod ")]),
            false,
            "f".into(),
        )
        .unwrap();
        assert_eq!(
            (on.mode, on.namespace.as_str()),
            (Mode::Emf, "Sensors/Prod")
        );
        let off = MetricsConfig::from_vars(vars(&[("METRICS", "off")]), true, "f".into());
        assert_eq!(off.unwrap().mode, Mode::Off);
        for bad in [
            ("METRICS", "cloudwatch"),
            ("METRICS_NAMESPACE", "AWS/Lambda"),
            ("METRICS_NAMESPACE", "caf\u{e9}"),
        ] {
            let e = MetricsConfig::from_vars(vars(&[bad]), true, "f".into()).unwrap_err();
            assert!(e.to_string().contains(bad.0), "{e}");
        }
        assert!(check_namespace(&"n".repeat(256)).is_err());
    }

    #[test]
    fn numbers() {
        assert_eq!(number(3.0), json!(3));
        assert_eq!(number(2.25), json!(2.25));
        assert_eq!(number(f64::NAN), json!(0));
    }

    #[test]
    fn off_emits_nothing_and_reports_disabled() {
        let off = Emitter::new(MetricsConfig {
            mode: Mode::Off,
            namespace: "Ns".into(),
            function: "f".into(),
        });
        assert!(!off.enabled());
        // Rendering still works (emit checks the mode).
        let mut r = Record::new();
        r.count(BATCH_SIZE, 1);
        assert!(off.render(&r, 0).is_some());
        assert_eq!(r.get(BATCH_SIZE), Some(1.0));
    }
}
