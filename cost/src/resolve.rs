//! From measured runs, their counters and the assumptions to the figures a [`Model`]
//! prices with, each recorded with where it came from.

use crate::assume::{Assumptions, Origin};
use crate::measure::{Function, Measurements};
use crate::model::{
    cpu_share, fit_line, stretch, Figure, IngestTime, LogSizes, Measured, Model, ModelError,
    WriterTime, ENVELOPE_MESSAGE_BYTES, ENVELOPE_PART_BYTES,
};
use crate::report::number;

/// The figures, notes and warnings gathered while resolving.
#[derive(Default)]
struct Sheet {
    figures: Vec<Figure>,
    notes: Vec<String>,
    warnings: Vec<String>,
}

impl Sheet {
    fn add(&mut self, what: &str, value: f64, unit: &str, source: String, estimate: bool) {
        self.figures.push(Figure {
            what: what.into(),
            value,
            unit: unit.into(),
            source,
            estimate,
        });
    }
}

/// "assumption `key` (default)", "(--assume)", or "template.yaml (`key`)".
pub fn assumed(a: &Assumptions, key: &'static str) -> String {
    match a.origin(key) {
        Some(Origin::Flag) => format!("assumption `{key}` (--assume)"),
        Some(Origin::Template) => format!("template.yaml (`{key}`)"),
        _ => format!("assumption `{key}` (default)"),
    }
}

/// The CPU-bound share `f` and where it came from, turned into a stretch figure.
fn stretch_figure(
    sheet: &mut Sheet,
    who: &str,
    memory_mb: f64,
    f: (f64, String),
    speed: f64,
) -> f64 {
    let (f, source) = f;
    sheet.add(&format!("{who} CPU-bound share"), f, "share", source, true);
    let s = stretch(memory_mb, f, speed);
    sheet.add(
        &format!("{who} Lambda stretch"),
        s,
        "×",
        format!(
            "(1 - {f}) + {f} / (CPU share {} at {} MB × cpu_speed {})",
            number(cpu_share(memory_mb)),
            number(memory_mb),
            number(speed),
            f = number(f),
        ),
        true,
    );
    s
}

impl Model {
    /// Resolves every figure from the runs, their counters and the assumptions.
    pub fn resolve(runs: &[Measured], a: &Assumptions) -> Result<Model, ModelError> {
        let first = runs
            .first()
            .ok_or_else(|| ModelError::Input("no --run given".into()))?;
        let need = |key: &'static str| {
            a.get(key).ok_or_else(|| {
                ModelError::Input(format!(
                    "`{key}` is unknown: give --template or --assume {key}=..."
                ))
            })
        };
        let ingest_memory_mb = need("ingest_memory_mb")?;
        let writer_memory_mb = need("writer_memory_mb")?;
        let writer_batch_size = need("writer_batch_size")?;
        let writer_batch_window_secs = need("writer_batch_window_secs")?;

        let mut sheet = Sheet::default();
        check_runs(runs, &mut sheet);
        let request_bytes_per_reading = a.value("request_bytes_per_reading");
        sheet.add(
            "HTTP body per reading",
            request_bytes_per_reading,
            "bytes",
            assumed(a, "request_bytes_per_reading"),
            true,
        );
        let envelope_bytes_per_reading = envelope_bytes(runs, a, &mut sheet);
        let (ingest, ingest_estimated) = ingest_time(runs, a, ingest_memory_mb, &mut sheet);
        let (writer, writer_estimated) = writer_time(runs, a, writer_memory_mb, &mut sheet);
        let logs = log_sizes(runs, a, &mut sheet);
        let service_batch = first.run.batch();
        let service_rps = match a.get("service_rps") {
            Some(v) => {
                sheet.add(
                    "requests/s one service task sustains",
                    v,
                    "requests/s",
                    format!(
                        "{} at batch {}",
                        assumed(a, "service_rps"),
                        number(service_batch)
                    ),
                    true,
                );
                v
            }
            None => {
                let v = first.run.requests_per_sec();
                sheet.add(
                    "requests/s one service task sustains",
                    v,
                    "requests/s",
                    format!(
                        "measured: {}'s accepted requests/s at batch {}, the rate that run was asked for, not a saturation point (measure one task alone and give --assume service_rps=...)",
                        first.run.name(),
                        number(service_batch)
                    ),
                    true,
                );
                v
            }
        };

        Ok(Model {
            ingest_memory_mb,
            writer_memory_mb,
            writer_batch_size,
            writer_batch_window_secs,
            request_bytes_per_reading,
            request_overhead_bytes: a.value("request_overhead_bytes"),
            envelope_bytes_per_reading,
            sqs_max_message_bytes: a.value("sqs_max_message_bytes"),
            record_overhead_bytes: a.value("sqs_event_record_overhead_bytes"),
            ingest,
            writer,
            logs,
            lambda_env_lifetime_hours: a.value("lambda_env_lifetime_hours"),
            secret_calls_per_cold_start: a.value("secret_calls_per_cold_start"),
            service_rps,
            service_batch,
            service_vcpu: a.value("service_vcpu"),
            service_memory_gb: a.value("service_memory_gb"),
            service_min_tasks: a.value("service_min_tasks"),
            service_linger_ms: a.value("service_linger_ms"),
            tutorial_duration_ms: a.value("tutorial_duration_ms"),
            tutorial_memory_mb: a.value("tutorial_memory_mb"),
            tutorial_arm64: a.value("tutorial_arm64") == 1.0,
            tutorial_rest_api: a.value("tutorial_rest_api") == 1.0,
            tutorial_request_bytes: a.value("tutorial_request_bytes"),
            tutorial_log_bytes: a.value("tutorial_log_bytes"),
            ingest_estimated,
            writer_estimated,
            figures: sheet.figures,
            notes: sheet.notes,
            warnings: sheet.warnings,
        })
    }
}

/// Warnings and notes about the runs themselves.
fn check_runs(runs: &[Measured], sheet: &mut Sheet) {
    for r in runs {
        let c = &r.counters;
        let name = r.run.name();
        if let Some(n) = c.ingest.readings {
            let want = r.run.summary.readings.accepted as f64;
            if (n as f64 - want).abs() > 0.01 * want {
                sheet.warnings.push(format!(
                    "{name}: the lines count {n} accepted readings, the run {}: were they printed during this run only?",
                    r.run.summary.readings.accepted
                ));
            }
        }
        if let (Some(sent), Some(received)) = (c.ingest.messages, c.writer.messages) {
            if sent > received {
                sheet.notes.push(format!(
                    "{name}: ingest reported {sent} messages enqueued, the writer received {received}: with coalescing (the long-running host) every request that shared a message counts it, so the writer's count is the number of messages; the designs below pack each request's readings by the model instead."
                ));
            }
        }
        if let Some(n) = c.rejected {
            sheet.warnings.push(format!(
                "{name}: {n} ingest requests were refused (4xx); they are not priced"
            ));
        }
        if let Some(v) = &r.run.summary.verify {
            if v.lost > 0 || v.duplicated > 0 {
                sheet.warnings.push(format!(
                    "{name}: verify found {} lost and {} duplicated readings",
                    v.lost, v.duplicated
                ));
            }
        }
    }
}

/// SQS payload bytes per reading: measured from `ingest.payload_bytes` less the envelopes,
/// or the assumption.
fn envelope_bytes(runs: &[Measured], a: &Assumptions, sheet: &mut Sheet) -> f64 {
    let sized: Vec<&Measured> = runs
        .iter()
        .filter(|r| {
            r.counters.ingest.payload_bytes.is_some() && r.counters.ingest.messages.is_some()
        })
        .collect();
    if sized.is_empty() {
        let v = a.value("envelope_bytes_per_reading");
        sheet.add(
            "SQS payload per reading",
            v,
            "bytes",
            assumed(a, "envelope_bytes_per_reading"),
            true,
        );
        return v;
    }
    let (mut payload, mut overhead, mut readings) = (0.0, 0.0, 0.0);
    for r in &sized {
        let i = &r.counters.ingest;
        let requests = i.invocations.unwrap_or(r.run.accepted_requests) as f64;
        payload += i.payload_bytes.unwrap_or(0) as f64;
        overhead += i.messages.unwrap_or(0) as f64 * ENVELOPE_MESSAGE_BYTES
            + requests * ENVELOPE_PART_BYTES;
        readings += i.readings.unwrap_or(r.run.summary.readings.accepted) as f64;
    }
    let net = if payload > overhead {
        payload - overhead
    } else {
        payload
    };
    let v = net / readings;
    sheet.add(
        "SQS payload per reading",
        v,
        "bytes",
        format!(
            "measured: ingest.payload_bytes, {} bytes for {} readings, less the envelopes",
            number(payload),
            number(readings)
        ),
        false,
    );
    v
}

/// Ingest time per request, `fixed + per_reading·K`, fitted over the runs' batch sizes (or
/// one batch size and the per-reading assumption), and its Lambda stretch. The flag: the
/// result is an estimate (not Lambda's billed duration).
fn ingest_time(
    runs: &[Measured],
    a: &Assumptions,
    memory_mb: f64,
    sheet: &mut Sheet,
) -> (IngestTime, bool) {
    let linger = a.value("ingest_linger_ms");
    let on_lambda = runs
        .iter()
        .all(|r| r.counters.ingest.mean_billed_ms().is_some());
    if !on_lambda
        && runs
            .iter()
            .any(|r| r.counters.ingest.mean_billed_ms().is_some())
    {
        sheet.warnings.push(
            "some runs have Lambda REPORT lines for ingest and some not: the local handler times are used for all".into(),
        );
    }
    let mut points = Vec::new();
    let mut how = Vec::new();
    let (mut cpu_total, mut wall_total, mut cpu_all) = (0.0, 0.0, true);
    for r in runs {
        let k = r.run.batch();
        let i = &r.counters.ingest;
        let (d, source) = if on_lambda {
            (i.mean_billed_ms().unwrap_or(0.0), "REPORT Billed Duration")
        } else if let Some(d) = i.mean_duration_ms() {
            ((d - linger).max(0.0), "handler duration_ms")
        } else {
            (
                (r.run.ingest_latency_mean_ms() - linger).max(0.0),
                "client latency mean (no `readings enqueued` lines: an upper bound of the handler's time)",
            )
        };
        points.push((k, d));
        how.push(format!(
            "{} ms per request at batch {} ({}, {source})",
            number(d),
            number(k),
            r.run.name()
        ));
        let requests = i.invocations.unwrap_or(r.run.accepted_requests) as f64;
        match i.cpu_ms {
            Some(cpu) => {
                cpu_total += cpu;
                wall_total += d * requests;
            }
            None => cpu_all = false,
        }
    }
    let (fixed_ms, per_reading_ms, fit) = match fit_line(&points) {
        Some((fixed, per)) => (fixed, per, "fitted over the runs' batch sizes".to_owned()),
        None => {
            let per = a.value("ingest_ms_per_reading");
            let n = points.len() as f64;
            let k = points.iter().map(|p| p.0).sum::<f64>() / n;
            let d = points.iter().map(|p| p.1).sum::<f64>() / n;
            (
                (d - per * k).max(0.0),
                per,
                format!(
                    "one batch size measured; per reading: {}",
                    assumed(a, "ingest_ms_per_reading")
                ),
            )
        }
    };
    let place = if on_lambda { "on Lambda" } else { "locally" };
    sheet.add(
        "ingest time per request, fixed",
        fixed_ms,
        "ms",
        format!("measured {place}: {}; {fit}", how.join("; ")),
        !on_lambda,
    );
    sheet.add(
        "ingest time per reading",
        per_reading_ms,
        "ms",
        fit,
        !on_lambda,
    );
    if on_lambda {
        sheet.add(
            "ingest Lambda stretch",
            1.0,
            "×",
            "measured on Lambda: no scaling".into(),
            false,
        );
        let time = IngestTime {
            fixed_ms,
            per_reading_ms,
            stretch: 1.0,
        };
        return (time, false);
    }
    if linger > 0.0 {
        sheet.add(
            "ingest wait subtracted",
            linger,
            "ms",
            assumed(a, "ingest_linger_ms"),
            true,
        );
    }
    let f = if cpu_all && wall_total > 0.0 {
        (
            (cpu_total / wall_total).clamp(0.0, 1.0),
            format!(
                "measured: ingest.cpu_ms {} over {} ms of handler time",
                number(cpu_total),
                number(wall_total)
            ),
        )
    } else {
        (
            a.value("ingest_cpu_fraction"),
            assumed(a, "ingest_cpu_fraction"),
        )
    };
    let stretch = stretch_figure(sheet, "ingest", memory_mb, f, a.value("cpu_speed"));
    let time = IngestTime {
        fixed_ms,
        per_reading_ms,
        stretch,
    };
    (time, true)
}

/// The writer's time over one run, ms, and what it is.
fn writer_total(w: &Function, on_lambda: bool) -> Option<(f64, &'static str)> {
    let inv = w.invocations.map(|n| n as f64);
    if on_lambda {
        return w
            .mean_billed_ms()
            .zip(inv)
            .map(|(m, n)| (m * n, "REPORT Billed Duration"));
    }
    if let Some(d) = w.duration_ms {
        // Lines for only some batches: their mean over every batch.
        let scale = match (inv, w.timed) {
            (Some(n), Some(t)) if t > 0 => n / t as f64,
            _ => 1.0,
        };
        return Some((d * scale, "`batch handled` duration_ms"));
    }
    w.copy_ms.map(|c| {
        (
            c,
            "CopyDuration only: decoding is not in it, a lower estimate",
        )
    })
}

/// Writer time per invocation `per_invocation + per_request·requests + per_reading·readings`
/// from the runs (per reading, less the per-invocation assumption, fitted against 1/K), and
/// its Lambda stretch.
fn writer_time(
    runs: &[Measured],
    a: &Assumptions,
    memory_mb: f64,
    sheet: &mut Sheet,
) -> (WriterTime, bool) {
    let per_invocation_ms = a.value("writer_ms_per_invocation");
    let on_lambda = runs.iter().all(|r| {
        r.counters.writer.mean_billed_ms().is_some() && r.counters.writer.invocations.is_some()
    });
    let mut points = Vec::new();
    let mut how = Vec::new();
    let (mut cpu, mut cpu_wall, mut cpu_all) = (0.0, 0.0, true);
    let (mut handler, mut copy, mut split_all, mut copy_only) = (0.0, 0.0, true, false);
    for r in runs {
        let w = &r.counters.writer;
        let Some((total, source)) = writer_total(w, on_lambda) else {
            cpu_all = false;
            split_all = false;
            continue;
        };
        copy_only |= w.duration_ms.is_none() && !on_lambda;
        match (w.duration_ms, w.copy_ms) {
            (Some(_), Some(c)) if !on_lambda => {
                handler += total;
                copy += c;
            }
            _ => split_all = false,
        }
        match w.cpu_ms {
            Some(c) => {
                cpu += c;
                cpu_wall += total;
            }
            None => cpu_all = false,
        }
        let inv = w.invocations.map(|n| n as f64);
        let readings = w
            .readings
            .filter(|n| *n > 0)
            .unwrap_or(r.run.summary.readings.accepted) as f64;
        let k = r.run.batch();
        points.push((
            1.0 / k,
            ((total - inv.unwrap_or(0.0) * per_invocation_ms) / readings).max(0.0),
        ));
        how.push(format!(
            "{} ms over {} invocations for {} readings at batch {} ({}, {source})",
            number(total),
            inv.map_or_else(|| "?".into(), number),
            number(readings),
            number(k),
            r.run.name()
        ));
    }
    let place = if on_lambda { "on Lambda" } else { "locally" };
    let fitted = fit_line(&points);
    let (per_request_ms, per_reading_ms, source, request_source) = match (points.is_empty(), fitted)
    {
        (true, _) => (
            a.value("writer_ms_per_request"),
            a.value("writer_ms_per_reading"),
            format!(
                "no writer time measured: {}",
                assumed(a, "writer_ms_per_reading")
            ),
            assumed(a, "writer_ms_per_request"),
        ),
        (false, Some((e, c))) => (
            c,
            e,
            format!(
                "measured {place}: {}; fitted over the runs' batch sizes",
                how.join("; ")
            ),
            "fitted over the runs' batch sizes".into(),
        ),
        (false, None) => {
            let c = a.value("writer_ms_per_request");
            let n = points.len() as f64;
            let x = points.iter().map(|p| p.0).sum::<f64>() / n;
            let y = points.iter().map(|p| p.1).sum::<f64>() / n;
            (
                c,
                (y - c * x).max(0.0),
                format!(
                    "measured {place}: {}; less {} per invocation and {} per request",
                    how.join("; "),
                    assumed(a, "writer_ms_per_invocation"),
                    assumed(a, "writer_ms_per_request")
                ),
                assumed(a, "writer_ms_per_request"),
            )
        }
    };
    let measured_on_lambda = on_lambda && !points.is_empty();
    sheet.add(
        "writer time per invocation",
        per_invocation_ms,
        "ms",
        assumed(a, "writer_ms_per_invocation"),
        true,
    );
    sheet.add(
        "writer time per request (batch part)",
        per_request_ms,
        "ms",
        request_source,
        !measured_on_lambda,
    );
    sheet.add(
        "writer time per reading",
        per_reading_ms,
        "ms",
        source,
        !measured_on_lambda,
    );
    let time = |stretch| WriterTime {
        per_invocation_ms,
        per_request_ms,
        per_reading_ms,
        stretch,
    };
    if measured_on_lambda {
        sheet.add(
            "writer Lambda stretch",
            1.0,
            "×",
            "measured on Lambda: no scaling".into(),
            false,
        );
        return (time(1.0), false);
    }
    let f = if cpu_all && cpu_wall > 0.0 {
        (
            (cpu / cpu_wall).clamp(0.0, 1.0),
            format!(
                "measured: writer.cpu_ms {} over {} ms",
                number(cpu),
                number(cpu_wall)
            ),
        )
    } else if split_all && handler > 0.0 {
        (
            ((handler - copy) / handler).clamp(0.0, 1.0),
            format!(
                "measured: the handler's time outside COPY ({} of {} ms); COPY is taken as the database's work, not the function's CPU",
                number(handler - copy),
                number(handler)
            ),
        )
    } else if copy_only {
        (
            0.0,
            "CopyDuration is the database's work, not the function's CPU".into(),
        )
    } else {
        (
            a.value("writer_cpu_fraction"),
            assumed(a, "writer_cpu_fraction"),
        )
    };
    let stretch = stretch_figure(sheet, "writer", memory_mb, f, a.value("cpu_speed"));
    (time(stretch), true)
}

/// Σ bytes / Σ units over every run, when every run has both (and whether any run lacked
/// its info-level lines).
fn pooled(
    runs: &[Measured],
    select: impl Fn(&Measurements) -> (Option<u64>, Option<u64>, bool),
) -> Option<(f64, f64, bool)> {
    let mut bytes = 0.0;
    let mut units = 0.0;
    let mut info_missing = false;
    for r in runs {
        match select(&r.counters) {
            (Some(b), Some(n), missing) if n > 0 => {
                bytes += b as f64;
                units += n as f64;
                info_missing |= missing;
            }
            _ => return None,
        }
    }
    Some((bytes, units, info_missing))
}

/// Log bytes of one function per request or invocation: measured (plus the info line the
/// run did not print), or the assumption.
#[allow(clippy::too_many_arguments)]
fn function_logs(
    runs: &[Measured],
    a: &Assumptions,
    sheet: &mut Sheet,
    what: &str,
    per: &str,
    select: impl Fn(&Measurements) -> &Function,
    default_key: &'static str,
    info_key: &'static str,
) -> f64 {
    let found = pooled(runs, |m| {
        let f = select(m);
        (f.log_bytes, f.invocations, f.info_logged == Some(false))
    });
    match found {
        Some((bytes, n, missing)) => {
            let extra = if missing { a.value(info_key) } else { 0.0 };
            let mut source = format!(
                "measured: {} bytes of {what} lines over {} {per}",
                number(bytes),
                number(n)
            );
            if missing {
                source.push_str(&format!(
                    ", plus {} (the run did not log at info)",
                    assumed(a, info_key)
                ));
            }
            let v = bytes / n + extra;
            sheet.add(
                &format!("{what} log bytes per {}", per.trim_end_matches('s')),
                v,
                "bytes",
                source,
                missing,
            );
            v
        }
        None => {
            let v = a.value(default_key);
            sheet.add(
                &format!("{what} log bytes per {}", per.trim_end_matches('s')),
                v,
                "bytes",
                assumed(a, default_key),
                true,
            );
            v
        }
    }
}

fn log_sizes(runs: &[Measured], a: &Assumptions, sheet: &mut Sheet) -> LogSizes {
    let ingest_per_request = function_logs(
        runs,
        a,
        sheet,
        "ingest",
        "requests",
        |m| &m.ingest,
        "ingest_log_bytes",
        "ingest_info_log_bytes",
    );
    let writer_per_invocation = function_logs(
        runs,
        a,
        sheet,
        "writer",
        "invocations",
        |m| &m.writer,
        "writer_log_bytes",
        "writer_info_log_bytes",
    );
    let other = pooled(runs, |m| (m.other_log_bytes, Some(1), false)).map(|(b, _, _)| {
        let requests: u64 = runs.iter().map(|r| r.run.accepted_requests).sum();
        (b, requests as f64)
    });
    let other_per_request = match other {
        Some((b, n)) if b > 0.0 => {
            sheet.add(
                "other log bytes per request",
                b / n,
                "bytes",
                format!(
                    "measured: {} bytes of lines of neither function, spread over the requests",
                    number(b)
                ),
                false,
            );
            b / n
        }
        _ => 0.0,
    };
    let mut platform = |name: &str, select: fn(&Measurements) -> &Function| {
        let found = pooled(runs, |m| {
            let f = select(m);
            (f.platform_log_bytes, f.billed_invocations, false)
        });
        let (v, source, estimate) = match found {
            Some((b, n, _)) => (
                b / n,
                format!(
                    "measured: {} bytes of {name} START/END/REPORT lines over {} invocations",
                    number(b),
                    number(n)
                ),
                false,
            ),
            None => (
                a.value("platform_log_bytes"),
                assumed(a, "platform_log_bytes"),
                true,
            ),
        };
        sheet.add(
            &format!("Lambda platform log bytes per {name} invocation"),
            v,
            "bytes",
            source,
            estimate,
        );
        v
    };
    let ingest_platform_per_invocation = platform("ingest", |m| &m.ingest);
    let writer_platform_per_invocation = platform("writer", |m| &m.writer);
    LogSizes {
        ingest_per_request,
        other_per_request,
        writer_per_invocation,
        ingest_platform_per_invocation,
        writer_platform_per_invocation,
    }
}
