//! The report: everything `--json` writes, and its text form.

use std::fmt::Write as _;

use serde::Serialize;

use crate::assume::{Assumptions, Origin};
use crate::measure::Measurements;
use crate::model::{readings_per_month, Design, Figure, Measured, Model, Row};
use crate::prices::Prices;
use crate::template::Settings;

#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub file: String,
    pub batch: f64,
    pub requests: u64,
    pub readings: u64,
    pub elapsed_secs: f64,
    pub requests_per_sec: f64,
    pub lost: Option<u64>,
    pub duplicated: Option<u64>,
    /// The counters used, and the files they came from.
    pub counters: Measurements,
    pub counter_sources: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AssumptionUsed {
    pub key: &'static str,
    pub value: f64,
    pub unit: &'static str,
    pub origin: Origin,
    pub meaning: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Fixed {
    pub what: String,
    pub dollars_per_month: f64,
}

/// The whole report; `--json` writes exactly this.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub prices: Prices,
    /// Readings per second the monthly figures are for.
    pub rate: f64,
    pub readings_per_month: f64,
    pub runs: Vec<RunInfo>,
    pub template: Option<Settings>,
    pub figures: Vec<Figure>,
    pub assumptions: Vec<AssumptionUsed>,
    pub model: Model,
    /// Every design at every batch size; dollars per million readings and per month.
    pub rows: Vec<Row>,
    /// Monthly costs that do not grow with readings (not in the rows).
    pub fixed: Vec<Fixed>,
    pub notes: Vec<String>,
    pub warnings: Vec<String>,
}

impl Report {
    pub fn new(
        prices: Prices,
        rate: f64,
        runs: &[Measured],
        template: Option<Settings>,
        assumptions: &Assumptions,
        model: Model,
        rows: Vec<Row>,
    ) -> Report {
        let runs_info = runs
            .iter()
            .map(|m| RunInfo {
                file: m.run.path.clone(),
                batch: m.run.batch(),
                requests: m.run.accepted_requests,
                readings: m.run.summary.readings.accepted,
                elapsed_secs: m.run.summary.elapsed_secs,
                requests_per_sec: m.run.requests_per_sec(),
                lost: m.run.summary.verify.as_ref().map(|v| v.lost),
                duplicated: m.run.summary.verify.as_ref().map(|v| v.duplicated),
                counters: m.counters.clone(),
                counter_sources: m.sources.clone(),
            })
            .collect();
        let fixed = vec![Fixed {
            what: "Secrets Manager: the database secret".into(),
            dollars_per_month: prices.get("secrets_secret_month"),
        }];
        let mut notes = vec![
            format!(
                "Durations marked * are estimates: times measured on the local machine, stretched to Lambda's CPU share at each function's memory size (one vCPU at {} MB, proportionally less below), or assumed. Each Lambda invocation is billed rounded up to the millisecond.",
                crate::model::LAMBDA_FULL_VCPU_MB
            ),
            "Batch sizes other than the measured runs' are scaled: ingest time per request = fixed + per reading × readings; messages per request from packing the readings into envelopes of up to sqs_max_message_bytes; writer time per invocation = per invocation + per request × requests + per reading × readings, with as many messages per invocation as the batch size, Lambda's 6 MB payload and the batching window at this rate allow.".into(),
            "Prices: the table's first tier, no free tier. Not included: the database, data transfer, log storage, NAT gateways or VPC endpoints, idle SQS polling by the writer's event source (a fixed few hundred thousand requests a month), and for the Fargate design the load balancer, VPC link or Cloud Map in front of the tasks (API Gateway is priced for all three).".into(),
            format!(
                "The tutorial takes one reading per request whatever a client could batch: one API Gateway request ({}), one {} MB {} Lambda invocation of {} ms (an assumption: tutorial_duration_ms) and one INSERT per reading; its database work is not priced here.",
                if model.tutorial_rest_api { "REST API" } else { "HTTP API" },
                number(model.tutorial_memory_mb),
                if model.tutorial_arm64 { "arm64" } else { "x86_64 Python" },
                number(model.tutorial_duration_ms)
            ),
            format!(
                "ingest on Fargate: tasks of {} vCPU and {} GB, each sustaining {} requests/s at batch {} (scaled to other batch sizes by the ingest time per request), at least {} running; concurrent requests share messages for {} ms.",
                number(model.service_vcpu),
                number(model.service_memory_gb),
                number(model.service_rps),
                number(model.service_batch),
                number(model.service_min_tasks),
                number(model.service_linger_ms)
            ),
        ];
        notes.extend(model.notes.iter().cloned());
        let mut warnings = model.warnings.clone();
        if let Some(arch) = template.as_ref().and_then(|t| t.architecture.as_deref()) {
            if arch != "arm64" {
                warnings.push(format!(
                    "the template's Architectures is `{arch}`, but the functions are priced with lambda_gb_second (arm64)"
                ));
            }
        }
        let assumptions = assumptions
            .used()
            .into_iter()
            .map(|(a, value, origin)| AssumptionUsed {
                key: a.key,
                value,
                unit: a.unit,
                origin,
                meaning: a.meaning,
            })
            .collect();
        Report {
            readings_per_month: readings_per_month(rate),
            rate,
            runs: runs_info,
            template,
            figures: model.figures.clone(),
            assumptions,
            prices,
            model,
            rows,
            fixed,
            notes,
            warnings,
        }
    }

    /// The text report.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Cost per million readings: {} list prices of {}, at {} readings/s ({} readings a month)",
            self.prices.region,
            self.prices.as_of,
            number(self.rate),
            number(self.readings_per_month)
        );
        if !self.prices.overridden.is_empty() {
            let changed: Vec<String> = self
                .prices
                .overridden
                .iter()
                .map(|(k, old)| {
                    format!(
                        "{k} {} (file: {})",
                        number(self.prices.get(k)),
                        number(*old)
                    )
                })
                .collect();
            let _ = writeln!(out, "Prices changed with --price: {}", changed.join(", "));
        }
        let _ = writeln!(out, "\nMeasured runs");
        for r in &self.runs {
            let verify = match (r.lost, r.duplicated) {
                (Some(l), Some(d)) => format!("; verify: {l} lost, {d} duplicated"),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "  {}: batch {}, {} requests, {} readings in {} s ({} requests/s){verify}",
                r.file,
                number(r.batch),
                number(r.requests as f64),
                number(r.readings as f64),
                number(r.elapsed_secs),
                number(r.requests_per_sec)
            );
            if r.counter_sources.is_empty() {
                let _ = writeln!(out, "    no counters given (--metrics, --measurements): the figures below are assumptions");
            } else {
                let _ = writeln!(
                    out,
                    "    counters from {}: {}",
                    r.counter_sources.join(" + "),
                    counters_line(&r.counters)
                );
            }
        }
        let m = &self.model;
        let _ = writeln!(
            out,
            "\nDeployment: ingest-api {} MB, batch-writer {} MB (up to {} messages per invocation, {} s window){}",
            number(m.ingest_memory_mb),
            number(m.writer_memory_mb),
            number(m.writer_batch_size),
            number(m.writer_batch_window_secs),
            match self.template.as_ref().and_then(|t| t.architecture.as_deref()) {
                Some(a) => format!(", {a}"),
                None => String::new(),
            }
        );

        let _ = writeln!(
            out,
            "\nFigures (* estimate: measured locally and scaled, or assumed)"
        );
        let width = self.figures.iter().map(|f| f.what.len()).max().unwrap_or(0);
        for f in &self.figures {
            let _ = writeln!(
                out,
                "  {}{:<width$}  {:>12} {:<10} {}",
                if f.estimate { "*" } else { " " },
                f.what,
                number(f.value),
                f.unit,
                f.source
            );
        }

        let _ = writeln!(
            out,
            "\n$ per million readings, by service; $ per month at {} readings/s (* durations are estimates, see Notes)",
            number(self.rate),
        );
        let star = |estimate: bool| if estimate { "*" } else { "" };
        let ingest_time = format!("ingest time{}", star(m.ingest_estimated));
        let writer = format!("writer{}", star(m.writer_estimated));
        let header = [
            "design",
            "batch",
            "API GW",
            "ingest req",
            &ingest_time,
            &writer,
            "Fargate",
            "SQS",
            "Logs",
            "Secrets",
            "total",
            "$/month",
        ];
        let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| (*s).to_owned()).collect()];
        for r in &self.rows {
            let d = &r.per_million;
            let dash = |applies: bool, v: f64| if applies { money(v) } else { "-".into() };
            let lambda_ingest = r.design != Design::Service;
            table.push(vec![
                r.design.label().into(),
                number(r.batch),
                money(d.api_gateway),
                dash(lambda_ingest, d.lambda_ingest_requests),
                if r.design == Design::Tutorial {
                    // Always an assumption (tutorial_duration_ms).
                    format!("{}*", money(d.lambda_ingest_duration))
                } else {
                    dash(lambda_ingest, d.lambda_ingest_duration)
                },
                dash(r.design != Design::Tutorial, d.lambda_writer),
                dash(r.design == Design::Service, d.fargate),
                dash(r.design != Design::Tutorial, d.sqs),
                money(d.logs),
                dash(r.design != Design::Tutorial, d.secrets),
                money(d.total),
                money(r.per_month),
            ]);
        }
        out.push_str(&align(&table));
        for f in &self.fixed {
            let _ = writeln!(
                out,
                "Fixed, not above: {} ${:.2} a month.",
                f.what, f.dollars_per_month
            );
        }

        let _ = writeln!(out, "\nUsage per million readings");
        let mut usage: Vec<Vec<String>> = vec![[
            "design",
            "batch",
            "API req",
            "ingest ms",
            "writer inv",
            "msgs/inv",
            "writer ms",
            "SQS msgs",
            "msg bytes",
            "SQS req",
            "log MB",
            "tasks",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()];
        for r in &self.rows {
            let u = &r.usage;
            let sqs = u.sqs_send_requests + u.sqs_receive_requests + u.sqs_delete_requests;
            let na = |applies: bool, v: f64| if applies { number(v) } else { "-".into() };
            usage.push(vec![
                r.design.label().into(),
                number(r.batch),
                number(u.api_billed_requests),
                na(r.design != Design::Service, u.ingest_billed_ms),
                na(r.design != Design::Tutorial, u.writer_invocations),
                na(
                    r.design != Design::Tutorial,
                    u.writer_messages_per_invocation,
                ),
                na(r.design != Design::Tutorial, u.writer_billed_ms),
                na(r.design != Design::Tutorial, u.sqs_messages),
                na(r.design != Design::Tutorial, u.sqs_message_bytes),
                na(r.design != Design::Tutorial, sqs),
                number(u.log_bytes / 1e6),
                na(r.design == Design::Service, u.fargate_tasks),
            ]);
        }
        out.push_str(&align(&usage));

        let _ = writeln!(out, "\nNotes");
        for n in &self.notes {
            let _ = writeln!(out, "  - {n}");
        }
        if !self.warnings.is_empty() {
            let _ = writeln!(out, "\nWarnings");
            for w in &self.warnings {
                let _ = writeln!(out, "  ! {w}");
            }
        }
        out
    }
}

fn counters_line(c: &Measurements) -> String {
    let mut parts = Vec::new();
    let f = |v: Option<u64>| v.map_or_else(|| "?".into(), |n| number(n as f64));
    let i = &c.ingest;
    if i.invocations.is_some() || i.duration_ms.is_some() {
        let mut s = format!(
            "ingest {} requests, {} readings, {} messages",
            f(i.invocations),
            f(i.readings),
            f(i.messages)
        );
        if let Some(ms) = i.mean_duration_ms() {
            s.push_str(&format!(", {} ms per request", number(ms)));
        }
        if let Some(ms) = i.mean_billed_ms() {
            s.push_str(&format!(", {} ms billed", number(ms)));
        }
        parts.push(s);
    }
    let w = &c.writer;
    if w.invocations.is_some() || w.duration_ms.is_some() || w.copy_ms.is_some() {
        let mut s = format!(
            "writer {} invocations, {} messages, {} rows",
            f(w.invocations),
            f(w.messages),
            f(w.readings)
        );
        if let Some(ms) = w.mean_duration_ms() {
            s.push_str(&format!(", {} ms per invocation", number(ms)));
        }
        if let Some(ms) = w.copy_ms {
            s.push_str(&format!(", {} ms in COPY", number(ms)));
        }
        parts.push(s);
    }
    let logs = i.log_bytes.unwrap_or(0) + w.log_bytes.unwrap_or(0) + c.other_log_bytes.unwrap_or(0);
    if logs > 0 {
        parts.push(format!("{} bytes of lines", number(logs as f64)));
    }
    if parts.is_empty() {
        "nothing countable".into()
    } else {
        parts.join("; ")
    }
}

/// Columns padded to their widest cell: the first left-aligned, the rest right-aligned.
fn align(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            if c == 0 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str("  ");
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A number for people: thousands separated, small ones to four significant digits.
pub fn number(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v.is_nan() { "?".into() } else { "0".into() };
    }
    let a = v.abs();
    if a >= 1000.0 {
        return thousands(v.round());
    }
    let decimals = if a >= 100.0 {
        1
    } else {
        (3 - a.log10().floor() as i32).clamp(0, 12) as usize
    };
    trim(format!("{v:.decimals$}"))
}

/// Dollars: whole dollars from 1,000, cents from 1, three significant digits below.
pub fn money(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if a >= 1000.0 {
        thousands(v.round())
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        let decimals = (2 - a.log10().floor() as i32).clamp(0, 12) as usize;
        format!("{v:.decimals$}")
    }
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(262_800_000_000.0), "262,800,000,000");
        assert_eq!(number(1769.0), "1,769");
        assert_eq!(number(256.0), "256");
        assert_eq!(number(60.32), "60.32");
        assert_eq!(number(994.7), "994.7");
        assert_eq!(number(0.0021), "0.0021");
        assert_eq!(number(0.144708), "0.1447");
        assert_eq!(number(6.9106), "6.911");
        assert_eq!(number(0.0), "0");
        assert_eq!(money(1.0), "1.00");
        assert_eq!(money(0.117_123), "0.117");
        assert_eq!(money(0.000_351_2), "0.000351");
        assert_eq!(money(262_800.4), "262,800");
        assert_eq!(money(0.0), "0");
    }

    #[test]
    fn columns_align() {
        let t = align(&[
            vec!["a".into(), "1".into()],
            vec!["long".into(), "100".into()],
        ]);
        assert_eq!(t, "a       1\nlong  100\n");
    }
}
