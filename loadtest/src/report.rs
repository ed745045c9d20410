//! The summary (text and JSON) and the thresholds that gate CI.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::str::FromStr;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::stats::{ms, Second, Stats};
use crate::verify::Verification;

/// Everything a run reports; `--json` writes exactly this.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub run_id: String,
    pub ingest_url: String,
    pub query_url: Option<String>,
    pub started_at: String,
    pub elapsed_secs: f64,
    /// Stopped early by Ctrl-C.
    pub interrupted: bool,
    pub target: Plan,
    pub requests: Requests,
    pub readings: Readings,
    /// Answers by HTTP status.
    pub status: BTreeMap<String, u64>,
    /// Requests without an answer, by kind (connect, timeout, body, request, other).
    pub transport_errors: BTreeMap<String, u64>,
    /// Non-2xx answers plus transport errors.
    pub errors: u64,
    /// `errors` / requests, from 0 to 1.
    pub error_rate: f64,
    /// Every request.
    pub latency_ms: Latency,
    /// POST /sensor only (when any was sent).
    pub ingest_latency_ms: Option<Latency>,
    /// GET /sensor only (when any was sent).
    pub query_latency_ms: Option<Latency>,
    pub throughput: Throughput,
    pub verify: Option<Verification>,
    pub thresholds: Vec<Checked>,
    pub timeline: Vec<Second>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub rate: f64,
    pub batch: u32,
    pub sensors: u32,
    pub concurrency: u32,
    pub query_ratio: f64,
    pub duration_secs: Option<f64>,
    pub readings: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Requests {
    pub total: u64,
    pub ingest: u64,
    pub query: u64,
    /// Tries beyond each request's first (--retry-for).
    pub retries: u64,
    /// Requests answered 2xx after one or more retries.
    pub recovered: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Readings {
    /// Readings in every POST sent.
    pub sent: u64,
    /// Readings in POSTs answered 2xx.
    pub accepted: u64,
}

/// Latency from each request's scheduled send time to the end of its answer.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    #[serde(rename = "p99.9")]
    pub p99_9: f64,
    #[serde(rename = "p99.99")]
    pub p99_99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// The percentiles of a histogram of µs, in ms.
    pub fn of(h: &Histogram<u64>) -> Latency {
        let q = |q: f64| {
            if h.is_empty() {
                0.0
            } else {
                ms(h.value_at_quantile(q))
            }
        };
        Latency {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p99_9: q(0.999),
            p99_99: q(0.9999),
            max: if h.is_empty() { 0.0 } else { ms(h.max()) },
            mean: h.mean() / 1000.0,
        }
    }

    fn line(&self) -> String {
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}",
            show_ms(self.p50),
            show_ms(self.p90),
            show_ms(self.p99),
            show_ms(self.p99_9),
            show_ms(self.p99_99),
            show_ms(self.max)
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Accepted readings per second of the run.
    pub readings_per_sec: f64,
    pub requests_per_sec: f64,
}

/// A threshold and how the run did against it.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    pub threshold: String,
    pub actual: f64,
    pub passed: bool,
}

impl Summary {
    pub fn new(
        run_id: &str,
        plan: Plan,
        urls: (String, Option<String>),
        started_at: String,
        run: &crate::runner::Run,
        stats: &Stats,
        verify: Option<Verification>,
    ) -> Summary {
        let secs = run.elapsed.as_secs_f64().max(1e-9);
        Summary {
            run_id: run_id.to_owned(),
            ingest_url: urls.0,
            query_url: urls.1,
            started_at,
            elapsed_secs: run.elapsed.as_secs_f64(),
            interrupted: run.interrupted,
            target: plan,
            requests: Requests {
                total: stats.completed,
                ingest: stats.ingest_requests,
                query: stats.query_requests,
                retries: stats.retries,
                recovered: stats.recovered,
            },
            readings: Readings {
                sent: stats.readings_sent,
                accepted: stats.readings_accepted,
            },
            status: stats
                .status
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
            transport_errors: stats
                .transport
                .iter()
                .map(|(k, n)| ((*k).to_owned(), *n))
                .collect(),
            errors: stats.errors(),
            error_rate: if stats.completed == 0 {
                0.0
            } else {
                stats.errors() as f64 / stats.completed as f64
            },
            latency_ms: Latency::of(&stats.latency),
            ingest_latency_ms: (stats.ingest_requests > 0)
                .then(|| Latency::of(&stats.ingest_latency)),
            query_latency_ms: (stats.query_requests > 0).then(|| Latency::of(&stats.query_latency)),
            throughput: Throughput {
                readings_per_sec: stats.readings_accepted as f64 / secs,
                requests_per_sec: stats.completed as f64 / secs,
            },
            verify,
            thresholds: Vec::new(),
            timeline: stats.timeline.clone(),
        }
    }

    /// Checks each threshold; returns one line per breach.
    pub fn check(&mut self, thresholds: &[Threshold]) -> Vec<String> {
        let mut breaches = Vec::new();
        for t in thresholds {
            let actual = t.metric.value(self);
            let passed = t.op.holds(actual, t.limit);
            if !passed {
                breaches.push(format!(
                    "threshold breached: {t} ({} was {})",
                    t.metric.name(),
                    t.metric.show(actual)
                ));
            }
            self.thresholds.push(Checked {
                threshold: t.to_string(),
                actual,
                passed,
            });
        }
        if let Some(v) = &self.verify {
            if v.lost > 0 {
                breaches.push(format!(
                    "verify: {} of {} accepted readings lost (not in sensor_data after {:.1}s)",
                    v.lost,
                    v.expected,
                    v.waited_ms / 1000.0
                ));
            }
            if v.duplicated > 0 {
                breaches.push(format!("verify: {} readings duplicated", v.duplicated));
            }
        }
        breaches
    }

    /// The human summary.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let t = &self.target;
        let _ = writeln!(
            out,
            "run {}: {:.2}s, target {} readings/s, batch {}, {} sensors, concurrency {}{}",
            self.run_id,
            self.elapsed_secs,
            t.rate,
            t.batch,
            t.sensors,
            t.concurrency,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        let r = &self.requests;
        let _ = writeln!(
            out,
            "  requests    {} (ingest {}, query {})",
            r.total, r.ingest, r.query
        );
        if r.retries > 0 {
            let _ = writeln!(
                out,
                "  retries     {} ({} requests answered 2xx after retrying)",
                r.retries, r.recovered
            );
        }
        let _ = writeln!(
            out,
            "  readings    {} sent, {} accepted",
            self.readings.sent, self.readings.accepted
        );
        let status: Vec<String> = self
            .status
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        let _ = writeln!(out, "  status      {}", or_none(&status));
        let _ = writeln!(
            out,
            "  errors      {} ({:.2}%)",
            self.errors,
            self.error_rate * 100.0
        );
        if !self.transport_errors.is_empty() {
            let kinds: Vec<String> = self
                .transport_errors
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            let _ = writeln!(out, "  no answer   {}", kinds.join(", "));
        }
        let _ = writeln!(out, "  latency     {}", self.latency_ms.line());
        if let (Some(i), Some(q)) = (&self.ingest_latency_ms, &self.query_latency_ms) {
            let _ = writeln!(out, "    ingest    {}", i.line());
            let _ = writeln!(out, "    query     {}", q.line());
        }
        let _ = writeln!(
            out,
            "  throughput  {:.1} readings/s, {:.1} requests/s",
            self.throughput.readings_per_sec, self.throughput.requests_per_sec
        );
        if let Some(v) = &self.verify {
            let _ = writeln!(
                out,
                "  verify      {} of {} accepted readings in sensor_data ({} rows): {} lost, {} duplicated, {} stored unacknowledged; waited {:.1}s",
                v.expected - v.lost,
                v.expected,
                v.rows,
                v.lost,
                v.duplicated,
                v.unacknowledged,
                v.waited_ms / 1000.0
            );
            let _ = writeln!(
                out,
                "  lag         p50 {}  p99 {}  max {} (ingest to queryable, polled every {} ms or more)",
                show_ms(v.lag_ms.p50),
                show_ms(v.lag_ms.p99),
                show_ms(v.lag_ms.max),
                crate::verify::POLL_EVERY.as_millis()
            );
        }
        for c in &self.thresholds {
            let _ = writeln!(
                out,
                "  {} {}",
                if c.passed { "pass  " } else { "BREACH" },
                c.threshold
            );
        }
        out
    }
}

fn or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// Milliseconds with a unit that suits their size.
pub fn show_ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2}s", v / 1000.0)
    } else if v >= 1.0 {
        format!("{v:.2}ms")
    } else {
        format!("{:.0}µs", v * 1000.0)
    }
}

/// A CI gate such as `p99<50ms`, `errors<0.1%`, `errors<5` or `rate>900`.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    text: String,
    metric: Metric,
    op: Op,
    /// In the metric's unit: ms for latency, a fraction for error shares.
    limit: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Metric {
    /// A latency percentile or the maximum, in ms.
    Latency(Pct),
    ErrorShare,
    ErrorCount,
    /// Achieved readings/s.
    Rate,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Pct {
    P50,
    P90,
    P99,
    P999,
    P9999,
    Max,
}

const PCTS: [(&str, Pct); 6] = [
    ("p50", Pct::P50),
    ("p90", Pct::P90),
    ("p99", Pct::P99),
    ("p99.9", Pct::P999),
    ("p99.99", Pct::P9999),
    ("max", Pct::Max),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn holds(self, actual: f64, limit: f64) -> bool {
        match self {
            Op::Lt => actual < limit,
            Op::Le => actual <= limit,
            Op::Gt => actual > limit,
            Op::Ge => actual >= limit,
        }
    }
}

impl Metric {
    fn value(self, s: &Summary) -> f64 {
        let l = &s.latency_ms;
        match self {
            Metric::Latency(p) => match p {
                Pct::P50 => l.p50,
                Pct::P90 => l.p90,
                Pct::P99 => l.p99,
                Pct::P999 => l.p99_9,
                Pct::P9999 => l.p99_99,
                Pct::Max => l.max,
            },
            Metric::ErrorShare => s.error_rate,
            Metric::ErrorCount => s.errors as f64,
            Metric::Rate => s.throughput.readings_per_sec,
        }
    }

    fn name(self) -> String {
        match self {
            Metric::Latency(p) => PCTS
                .iter()
                .find(|(_, q)| *q == p)
                .map_or("latency", |(name, _)| name)
                .into(),
            Metric::ErrorShare | Metric::ErrorCount => "errors".into(),
            Metric::Rate => "rate".into(),
        }
    }

    fn show(self, v: f64) -> String {
        match self {
            Metric::Latency(_) => show_ms(v),
            Metric::ErrorShare => format!("{:.3}%", v * 100.0),
            Metric::ErrorCount => format!("{v}"),
            Metric::Rate => format!("{v:.1} readings/s"),
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

const THRESHOLD_HELP: &str = "expected e.g. p99<50ms, max<1s, errors<0.1%, errors<5, rate>900 \
     (latency: p50, p90, p99, p99.9, p99.99, max in us, ms or s)";

impl FromStr for Threshold {
    type Err = String;

    fn from_str(s: &str) -> Result<Threshold, String> {
        let bad = |why: &str| format!("`{s}`: {why}; {THRESHOLD_HELP}");
        let text: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        let at = text.find(['<', '>']).ok_or_else(|| bad("no < or >"))?;
        let (name, rest) = text.split_at(at);
        let (op, value) = match rest.as_bytes() {
            [b'<', b'=', ..] => (Op::Le, &rest[2..]),
            [b'>', b'=', ..] => (Op::Ge, &rest[2..]),
            [b'<', ..] => (Op::Lt, &rest[1..]),
            _ => (Op::Gt, &rest[1..]),
        };
        let number = |v: &str| {
            v.parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .ok_or_else(|| bad(&format!("`{v}` is not a number")))
        };
        let (metric, limit) = match name.to_ascii_lowercase().as_str() {
            "errors" => match value.strip_suffix('%') {
                Some(pct) => (Metric::ErrorShare, number(pct)? / 100.0),
                None => (Metric::ErrorCount, number(value)?),
            },
            "rate" => (Metric::Rate, number(value.trim_end_matches("/s"))?),
            p => {
                let (_, pct) = PCTS
                    .iter()
                    .find(|(n, _)| *n == p)
                    .ok_or_else(|| bad(&format!("unknown metric `{name}`")))?;
                (Metric::Latency(*pct), latency(value).map_err(|e| bad(&e))?)
            }
        };
        Ok(Threshold {
            text,
            metric,
            op,
            limit,
        })
    }
}

/// `50ms`, `1.5s`, `800us` → milliseconds.
fn latency(v: &str) -> Result<f64, String> {
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{v}` needs a unit (us, ms, s)"))?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n
        .parse()
        .map_err(|_| format!("`{v}` is not a number with a unit"))?;
    let scale = match unit {
        "us" | "µs" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        _ => return Err(format!("unknown unit `{unit}` (us, ms, s)")),
    };
    Ok(n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(p99: f64, errors: u64, requests: u64, rate: f64) -> Summary {
        Summary {
            run_id: "x".into(),
            ingest_url: String::new(),
            query_url: None,
            started_at: String::new(),
            elapsed_secs: 1.0,
            interrupted: false,
            target: Plan {
                rate: 1.0,
                batch: 1,
                sensors: 1,
                concurrency: 1,
                query_ratio: 0.0,
                duration_secs: None,
                readings: None,
            },
            requests: Requests {
                total: requests,
                ingest: requests,
                query: 0,
                retries: 0,
                recovered: 0,
            },
            readings: Readings {
                sent: requests,
                accepted: requests - errors,
            },
            status: BTreeMap::new(),
            transport_errors: BTreeMap::new(),
            errors,
            error_rate: errors as f64 / requests as f64,
            latency_ms: Latency {
                p50: 1.0,
                p90: 2.0,
                p99,
                p99_9: 4.0,
                p99_99: 5.0,
                max: 6.0,
                mean: 1.5,
            },
            ingest_latency_ms: None,
            query_latency_ms: None,
            throughput: Throughput {
                readings_per_sec: rate,
                requests_per_sec: rate,
            },
            verify: None,
            thresholds: vec![],
            timeline: vec![],
        }
    }

    fn t(s: &str) -> Threshold {
        s.parse().unwrap()
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(t("p99<50ms").limit, 50.0);
        assert_eq!(t("p99.9 < 1.5s").limit, 1500.0);
        assert_eq!(t("p50<800us").limit, 0.8);
        assert_eq!(t("max<=2s").op, Op::Le);
        assert_eq!(t("errors<0.1%").metric, Metric::ErrorShare);
        assert!((t("errors<0.1%").limit - 0.001).abs() < 1e-12);
        assert_eq!(t("errors<5").metric, Metric::ErrorCount);
        assert_eq!(t("rate>900").metric, Metric::Rate);
        assert_eq!(t("rate>=900/s").op, Op::Ge);
        for bad in [
            "p98<1ms",
            "p99<50",
            "p99<50min",
            "errors",
            "rate>fast",
            "latency<1s",
        ] {
            assert!(bad.parse::<Threshold>().is_err(), "{bad}");
        }
    }

    #[test]
    fn checks_and_names_breaches() {
        let mut s = summary(30.0, 2, 1000, 950.0);
        let breaches = s.check(&[
            t("p99<50ms"),
            t("errors<0.1%"),
            t("errors<5"),
            t("rate>990"),
            t("p99<1us"),
        ]);
        assert_eq!(
            breaches,
            [
                "threshold breached: errors<0.1% (errors was 0.200%)",
                "threshold breached: rate>990 (rate was 950.0 readings/s)",
                "threshold breached: p99<1us (p99 was 30.00ms)",
            ]
        );
        let passed: Vec<bool> = s.thresholds.iter().map(|c| c.passed).collect();
        assert_eq!(passed, [true, false, true, false, false]);
        assert!(s.text().contains("BREACH p99<1us"));
    }
}
