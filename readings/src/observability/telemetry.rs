//! Logging set-up and process signals.
//!
//! Under Lambda (or with `LOG_FORMAT=json`) each log line is one JSON object: `timestamp`,
//! `level`, `target`, `message`, the event's fields, and the fields of the spans it was
//! logged in, all at the top level. The Lambda runtime opens a span per invocation with the
//! request id (`requestId`, and `xrayTraceId` when tracing is on), so every line logged
//! while an invocation is handled names it; lines logged at start-up have none.
//!
//! Log counts, ids, statuses and durations; never request bodies, reading values or
//! locations, or credentials.

use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::in_lambda;

/// A handler's `duration_ms` log field: milliseconds to the microsecond, since most calls
/// take less than one and the cost report sums the field over every line.
pub fn duration_ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// JSON logs under Lambda (or with `LOG_FORMAT=json`), readable text otherwise. The level
/// comes from `RUST_LOG` (default `info`).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = in_lambda()
        || std::env::var("LOG_FORMAT")
            .map(|f| f.eq_ignore_ascii_case("json"))
            .unwrap_or(false);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    let result = if json {
        builder
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .try_init()
    } else {
        builder.try_init()
    };
    // A subscriber set earlier (tests) stays in place.
    drop(result);
}

/// One JSON object per event, with event and span fields at the top level (see the module
/// documentation). Event fields win over span fields of the same name, and the line's own
/// `timestamp`, `level` and `target` over both.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut line = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                // Span fields as the JSON field formatter recorded them.
                let Some(fields) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields) {
                    line.extend(fields);
                }
            }
        }
        event.record(&mut FieldVisitor(&mut line));
        let meta = event.metadata();
        line.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        writeln!(writer, "{}", Value::Object(line))
    }
}

struct FieldVisitor<'a>(&'a mut Map<String, Value>);

impl FieldVisitor<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        self.0.insert(field.name().to_owned(), value);
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value)
            .map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.put(field, v);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

/// `text` with whatever stands between double quotes or backticks replaced by `…`: for
/// logging error messages that may quote data (serde's `invalid type: string "..."`,
/// `unknown field `...``).
pub fn redact_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '"' && c != '`' {
            continue;
        }
        out.push('…');
        let mut escaped = false;
        for inner in chars.by_ref() {
            if escaped {
                escaped = false;
            } else if inner == '\\' {
                escaped = true;
            } else if inner == c {
                out.push(c);
                break;
            }
        }
    }
    out
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(f: impl FnOnce()) -> Vec<Value> {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn span_and_event_fields_are_top_level() {
        let logged = lines(|| {
            let invoke = tracing::info_span!("Lambda runtime invoke", requestId = "req-1");
            let _in = invoke.enter();
            let inner = tracing::info_span!("inner", batch = 7, requestId = "shadowed");
            inner.in_scope(|| {
                tracing::info!(rows = 3_u64, ratio = 0.5, ok = true, name = %"x", "batch handled");
            });
            tracing::warn!(level = "spoofed", "plain");
        });
        assert_eq!(logged.len(), 2);
        let first = &logged[0];
        assert_eq!(first["message"], "batch handled");
        // The innermost span wins for a field several spans have.
        assert_eq!(first["requestId"], "shadowed");
        assert_eq!(first["batch"], 7);
        assert_eq!(first["rows"], 3);
        assert_eq!(first["ratio"], 0.5);
        assert_eq!(first["ok"], true);
        assert_eq!(first["name"], "x");
        assert_eq!(first["level"], "INFO");
        assert!(first["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(first.get("span").is_none() && first.get("spans").is_none());
        let second = &logged[1];
        assert_eq!(second["requestId"], "req-1");
        assert_eq!(second["level"], "WARN");
    }

    #[test]
    fn quoted_text_is_redacted() {
        let serde = serde_json::from_str::<Vec<f64>>(r#"["kitchen \"7\""]"#)
            .unwrap_err()
            .to_string();
        assert!(serde.contains("kitchen"), "{serde}");
        let redacted = redact_quoted(&serde);
        assert!(!redacted.contains("kitchen"), "{redacted}");
        assert!(
            redacted.starts_with("invalid type: string \"…\", expected f64"),
            "{redacted}"
        );
        assert_eq!(
            redact_quoted("unknown field `attic`, expected `v`"),
            "unknown field `…`, expected `…`"
        );
        assert_eq!(redact_quoted("no quotes"), "no quotes");
        assert_eq!(redact_quoted("open \"end"), "open \"…");
    }

    #[test]
    fn lines_outside_spans_have_no_request_id() {
        let logged = lines(|| tracing::info!("starting"));
        assert_eq!(logged[0]["message"], "starting");
        assert!(logged[0].get("requestId").is_none());
    }
}
