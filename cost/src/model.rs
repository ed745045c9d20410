//! The cost model: billing units (512 KiB API increments, 64 KiB SQS chunks, Lambda's
//! millisecond rounding and CPU share), the figures taken from measured runs, and the three
//! designs priced per million readings.

use serde::Serialize;
use thiserror::Error;

use crate::measure::Measurements;
use crate::prices::Prices;
use crate::run::Run;

/// Hours in a month, as AWS prices them.
pub const MONTH_HOURS: f64 = 730.0;
pub const MONTH_SECS: f64 = MONTH_HOURS * 3600.0;
/// API Gateway meters requests in 512 KiB increments.
pub const API_INCREMENT_BYTES: f64 = 512.0 * 1024.0;
/// SQS bills each 64 KiB chunk of a call's payload as one request.
pub const SQS_CHUNK_BYTES: f64 = 64.0 * 1024.0;
/// Most entries in a SendMessageBatch, ReceiveMessage or DeleteMessageBatch call.
pub const SQS_BATCH_ENTRIES: f64 = 10.0;
/// Lambda gives a function one full vCPU at this memory size, proportionally less below.
pub const LAMBDA_FULL_VCPU_MB: f64 = 1769.0;
/// Lambda's invocation payload limit, which bounds a writer batch.
pub const LAMBDA_EVENT_BYTES: f64 = 6.0 * 1024.0 * 1024.0;
/// `{"v":1,"batches":[` and `]}`: the envelope around a message's parts.
pub const ENVELOPE_MESSAGE_BYTES: f64 = 20.0;
/// `{"id":"<36-character batch id>","part":0,"readings":[` and `]}`. (With 43 bytes per
/// reading, the comma the last reading does not need stands for the comma between parts.)
pub const ENVELOPE_PART_BYTES: f64 = 68.0;
pub const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// API Gateway requests billed for one request of `bytes`: one per started 512 KiB.
pub fn api_units(bytes: f64) -> f64 {
    (bytes / API_INCREMENT_BYTES).ceil().max(1.0)
}

/// SQS requests billed for one call carrying `bytes` of payload: one per started 64 KiB,
/// at least one (a DeleteMessageBatch or an empty receive carries none).
pub fn sqs_chunks(bytes: f64) -> f64 {
    (bytes / SQS_CHUNK_BYTES).ceil().max(1.0)
}

/// Lambda's share of one vCPU at `memory_mb`.
pub fn cpu_share(memory_mb: f64) -> f64 {
    (memory_mb / LAMBDA_FULL_VCPU_MB).min(1.0)
}

/// How much longer a measured time runs under Lambda at `memory_mb`: the CPU-bound share
/// `cpu_fraction` runs at the function's CPU share (times `cpu_speed`, a Lambda vCPU
/// against the measuring machine's core), the rest (waiting on SQS, the database) as
/// measured.
pub fn stretch(memory_mb: f64, cpu_fraction: f64, cpu_speed: f64) -> f64 {
    (1.0 - cpu_fraction) + cpu_fraction / (cpu_share(memory_mb) * cpu_speed)
}

/// Lambda bills each invocation's duration rounded up to the millisecond.
pub fn billed_ms(ms: f64) -> f64 {
    ms.ceil().max(1.0)
}

/// GB-seconds of one invocation of `billed_ms` at `memory_mb`.
pub fn gb_seconds(memory_mb: f64, billed_ms: f64) -> f64 {
    memory_mb / 1024.0 * billed_ms / 1000.0
}

/// How one request's readings are packed into messages.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Packing {
    pub messages: f64,
    /// Mean bytes of a message.
    pub bytes: f64,
}

/// Packs `readings` of `bytes_per_reading` greedily into messages of at most `max_bytes`,
/// as `readings::model::envelope::pack` does: each message holds the envelope, one part of the
/// request and as many readings as fit.
pub fn pack_request(readings: f64, bytes_per_reading: f64, max_bytes: f64) -> Packing {
    let room = max_bytes - ENVELOPE_MESSAGE_BYTES - ENVELOPE_PART_BYTES;
    let per_message = (room / bytes_per_reading).floor().max(1.0);
    let messages = (readings / per_message).ceil().max(1.0);
    let total =
        messages * (ENVELOPE_MESSAGE_BYTES + ENVELOPE_PART_BYTES) + readings * bytes_per_reading;
    Packing {
        messages,
        bytes: total / messages,
    }
}

/// SQS requests billed to send `messages` messages of `bytes` each with SendMessageBatch:
/// up to 10 per call and at most `max_call_bytes` per call, each call billed by its chunks.
pub fn send_requests(messages: f64, bytes: f64, max_call_bytes: f64) -> f64 {
    let per_call = (max_call_bytes / bytes)
        .floor()
        .clamp(1.0, SQS_BATCH_ENTRIES);
    let full = (messages / per_call).floor();
    let rest = messages - full * per_call;
    let mut billed = full * sqs_chunks(per_call * bytes);
    if rest > 1e-9 {
        billed += sqs_chunks(rest * bytes);
    }
    billed
}

/// SQS requests billed to receive (ReceiveMessage, up to 10 messages, billed by chunks)
/// and delete (DeleteMessageBatch, up to 10, one request each) the `messages` messages of
/// `bytes` each that one writer invocation gets.
pub fn receive_delete_requests(messages: f64, bytes: f64) -> (f64, f64) {
    let full = (messages / SQS_BATCH_ENTRIES).floor();
    let rest = messages - full * SQS_BATCH_ENTRIES;
    let mut receive = full * sqs_chunks(SQS_BATCH_ENTRIES * bytes);
    if rest > 1e-9 {
        receive += sqs_chunks(rest * bytes);
    }
    (receive, (messages / SQS_BATCH_ENTRIES).ceil())
}

/// `(a, b)` of `y = a + b·x` by least squares over `points`, neither negative: a negative
/// slope becomes 0 (the mean), a negative intercept 0 (the line through the origin). `None`
/// with fewer than two distinct `x`.
pub fn fit_line(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if points.len() < 2 || sxx <= f64::EPSILON * mx.abs().max(1.0) {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let b = sxy / sxx;
    let a = my - b * mx;
    Some(if b < 0.0 {
        (my.max(0.0), 0.0)
    } else if a < 0.0 {
        let through_origin = points.iter().map(|p| p.0 * p.1).sum::<f64>()
            / points.iter().map(|p| p.0 * p.0).sum::<f64>();
        (0.0, through_origin.max(0.0))
    } else {
        (a, b)
    })
}

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("{0}")]
    Input(String),
}

/// A run with its counters.
#[derive(Debug, Clone)]
pub struct Measured {
    pub run: Run,
    pub counters: Measurements,
    /// Where the counters came from (files), for the report.
    pub sources: Vec<String>,
}

/// One figure the model uses, with where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub what: String,
    pub value: f64,
    pub unit: String,
    pub source: String,
    /// Measured on the local machine and scaled, or assumed: not a Lambda measurement.
    pub estimate: bool,
}

/// Per-request ingest time `fixed + per_reading·K` and its Lambda stretch.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct IngestTime {
    pub fixed_ms: f64,
    pub per_reading_ms: f64,
    pub stretch: f64,
}

impl IngestTime {
    /// Time per request of `batch` readings as measured (locally, or on Lambda).
    pub fn measured_ms(&self, batch: f64) -> f64 {
        self.fixed_ms + self.per_reading_ms * batch
    }
    pub fn lambda_ms(&self, batch: f64) -> f64 {
        billed_ms(self.measured_ms(batch) * self.stretch)
    }
}

/// Writer time per invocation `per_invocation + per_request·requests + per_reading·readings`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct WriterTime {
    pub per_invocation_ms: f64,
    pub per_request_ms: f64,
    pub per_reading_ms: f64,
    pub stretch: f64,
}

impl WriterTime {
    pub fn lambda_ms(&self, requests: f64, readings: f64) -> f64 {
        billed_ms(
            (self.per_invocation_ms
                + self.per_request_ms * requests
                + self.per_reading_ms * readings)
                * self.stretch,
        )
    }
}

/// Log bytes per unit of work.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LogSizes {
    pub ingest_per_request: f64,
    pub other_per_request: f64,
    pub writer_per_invocation: f64,
    pub ingest_platform_per_invocation: f64,
    pub writer_platform_per_invocation: f64,
}

/// Everything the designs are priced from.
#[derive(Debug, Clone, Serialize)]
pub struct Model {
    pub ingest_memory_mb: f64,
    pub writer_memory_mb: f64,
    pub writer_batch_size: f64,
    pub writer_batch_window_secs: f64,
    pub request_bytes_per_reading: f64,
    pub request_overhead_bytes: f64,
    pub envelope_bytes_per_reading: f64,
    pub sqs_max_message_bytes: f64,
    pub record_overhead_bytes: f64,
    pub ingest: IngestTime,
    pub writer: WriterTime,
    pub logs: LogSizes,
    pub lambda_env_lifetime_hours: f64,
    pub secret_calls_per_cold_start: f64,
    /// Requests/s one service task sustains at `service_batch` readings per request.
    pub service_rps: f64,
    pub service_batch: f64,
    pub service_vcpu: f64,
    pub service_memory_gb: f64,
    pub service_min_tasks: f64,
    pub service_linger_ms: f64,
    pub tutorial_duration_ms: f64,
    pub tutorial_memory_mb: f64,
    pub tutorial_arm64: bool,
    pub tutorial_rest_api: bool,
    pub tutorial_request_bytes: f64,
    pub tutorial_log_bytes: f64,
    /// The ingest or writer durations are estimates (measured locally and scaled, or
    /// assumed), not Lambda's billed durations.
    pub ingest_estimated: bool,
    pub writer_estimated: bool,
    #[serde(skip)]
    pub figures: Vec<Figure>,
    #[serde(skip)]
    pub notes: Vec<String>,
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// The designs compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Design {
    /// This pipeline: API Gateway → ingest-api on Lambda → SQS → batch-writer on Lambda.
    Pipeline,
    /// ingest-api as a long-running Fargate service (coalescing), the rest as `Pipeline`.
    Service,
    /// The tutorial: API Gateway → one Python Lambda invocation and one INSERT per reading.
    Tutorial,
}

impl Design {
    pub fn label(self) -> &'static str {
        match self {
            Design::Pipeline => "pipeline (Lambda)",
            Design::Service => "ingest on Fargate",
            Design::Tutorial => "tutorial",
        }
    }
}

/// Usage per million readings (and a few per-unit figures).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    pub api_requests: f64,
    /// Requests billed: one per started 512 KiB of each request.
    pub api_billed_requests: f64,
    pub ingest_invocations: f64,
    /// Billed ms of one ingest invocation.
    pub ingest_billed_ms: f64,
    pub ingest_gb_seconds: f64,
    pub writer_invocations: f64,
    pub writer_messages_per_invocation: f64,
    /// Billed ms of one writer invocation.
    pub writer_billed_ms: f64,
    pub writer_gb_seconds: f64,
    pub sqs_messages: f64,
    /// Mean bytes of a message.
    pub sqs_message_bytes: f64,
    pub sqs_send_requests: f64,
    pub sqs_receive_requests: f64,
    pub sqs_delete_requests: f64,
    pub log_bytes: f64,
    pub secret_calls: f64,
    /// Tasks running at the rate (the service only).
    pub fargate_tasks: f64,
    /// Requests/s one task sustains at this batch size.
    pub fargate_task_capacity_rps: f64,
    pub fargate_task_hours: f64,
}

/// Dollars per million readings, by service.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Dollars {
    pub api_gateway: f64,
    pub lambda_ingest_requests: f64,
    pub lambda_ingest_duration: f64,
    pub lambda_writer: f64,
    pub fargate: f64,
    pub sqs: f64,
    pub logs: f64,
    pub secrets: f64,
    pub total: f64,
}

/// One design at one batch size.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub design: Design,
    /// Readings per request.
    pub batch: f64,
    pub usage: Usage,
    pub per_million: Dollars,
    pub per_month: f64,
}

/// Readings per month at `rate` readings/s.
pub fn readings_per_month(rate: f64) -> f64 {
    rate * MONTH_SECS
}

/// SQS messages per reading and their mean size, for requests of `batch` readings.
struct Flow {
    messages_per_reading: f64,
    message_bytes: f64,
    /// SQS requests billed for sending, per reading.
    send_per_reading: f64,
}

impl Model {
    /// Every design at every batch size (the tutorial once: it takes one reading per
    /// request whatever the client could batch).
    pub fn rows(&self, prices: &Prices, rate: f64, batches: &[f64]) -> Vec<Row> {
        let mut rows = Vec::new();
        for &b in batches {
            rows.push(self.pipeline(prices, rate, b));
        }
        for &b in batches {
            rows.push(self.service(prices, rate, b));
        }
        rows.push(self.tutorial(prices, rate));
        rows
    }

    fn api(&self, prices: &Prices, batch: f64, usage: &mut Usage, dollars: &mut Dollars) {
        usage.api_requests = 1e6 / batch;
        usage.api_billed_requests = usage.api_requests
            * api_units(self.request_overhead_bytes + batch * self.request_bytes_per_reading);
        dollars.api_gateway = usage.api_billed_requests * prices.get("api_http_request");
    }

    /// Each request's readings in messages of their own (Lambda: no coalescing).
    fn own_messages(&self, batch: f64) -> Flow {
        let p = pack_request(
            batch,
            self.envelope_bytes_per_reading,
            self.sqs_max_message_bytes,
        );
        Flow {
            messages_per_reading: p.messages / batch,
            message_bytes: p.bytes,
            send_per_reading: send_requests(p.messages, p.bytes, self.sqs_max_message_bytes)
                / batch,
        }
    }

    /// The writer's invocations for `flow` at `rate`, added to `usage` and `dollars`.
    fn writer(
        &self,
        prices: &Prices,
        rate: f64,
        batch: f64,
        flow: &Flow,
        usage: &mut Usage,
        dollars: &mut Dollars,
    ) {
        let mu = flow.messages_per_reading;
        let s = flow.message_bytes;
        let by_payload = (LAMBDA_EVENT_BYTES / (s + self.record_overhead_bytes))
            .floor()
            .max(1.0);
        let by_window = (rate * mu * self.writer_batch_window_secs).floor().max(1.0);
        let n = self.writer_batch_size.min(by_payload).min(by_window);
        let invocations = 1e6 * mu / n;
        let readings = n / mu;
        let requests = readings / batch;
        let ms = self.writer.lambda_ms(requests, readings);
        let (receive, delete) = receive_delete_requests(n, s);
        usage.writer_invocations = invocations;
        usage.writer_messages_per_invocation = n;
        usage.writer_billed_ms = ms;
        usage.writer_gb_seconds = invocations * gb_seconds(self.writer_memory_mb, ms);
        usage.sqs_messages = 1e6 * mu;
        usage.sqs_message_bytes = s;
        usage.sqs_send_requests = 1e6 * flow.send_per_reading;
        usage.sqs_receive_requests = invocations * receive;
        usage.sqs_delete_requests = invocations * delete;
        dollars.lambda_writer = invocations * prices.get("lambda_request")
            + usage.writer_gb_seconds * prices.get("lambda_gb_second");
        dollars.sqs =
            (usage.sqs_send_requests + usage.sqs_receive_requests + usage.sqs_delete_requests)
                * prices.get("sqs_request");
    }

    /// GetSecretValue calls per million readings for a function with `invocations` per
    /// million readings of `billed_ms` each: one per cold start, each environment replaced
    /// every `lambda_env_lifetime_hours`.
    pub fn secret_calls(&self, rate: f64, invocations: f64, billed_ms: f64) -> f64 {
        let per_sec = rate * invocations / 1e6;
        let environments = (per_sec * billed_ms / 1000.0).ceil().max(1.0);
        let calls_per_month = environments * MONTH_HOURS / self.lambda_env_lifetime_hours
            * self.secret_calls_per_cold_start;
        calls_per_month / readings_per_month(rate) * 1e6
    }

    fn finish(
        &self,
        prices: &Prices,
        rate: f64,
        design: Design,
        batch: f64,
        usage: Usage,
        mut d: Dollars,
    ) -> Row {
        d.logs = usage.log_bytes / GIB * prices.get("logs_ingest_gb");
        d.secrets = usage.secret_calls / 10_000.0 * prices.get("secrets_10k_calls");
        d.total = d.api_gateway
            + d.lambda_ingest_requests
            + d.lambda_ingest_duration
            + d.lambda_writer
            + d.fargate
            + d.sqs
            + d.logs
            + d.secrets;
        Row {
            design,
            batch,
            per_month: d.total * readings_per_month(rate) / 1e6,
            usage,
            per_million: d,
        }
    }

    /// This pipeline on Lambda, `batch` readings per request.
    pub fn pipeline(&self, prices: &Prices, rate: f64, batch: f64) -> Row {
        let mut u = Usage::default();
        let mut d = Dollars::default();
        self.api(prices, batch, &mut u, &mut d);
        u.ingest_invocations = u.api_requests;
        u.ingest_billed_ms = self.ingest.lambda_ms(batch);
        u.ingest_gb_seconds =
            u.ingest_invocations * gb_seconds(self.ingest_memory_mb, u.ingest_billed_ms);
        d.lambda_ingest_requests = u.ingest_invocations * prices.get("lambda_request");
        d.lambda_ingest_duration = u.ingest_gb_seconds * prices.get("lambda_gb_second");
        let flow = self.own_messages(batch);
        self.writer(prices, rate, batch, &flow, &mut u, &mut d);
        let l = &self.logs;
        u.log_bytes = u.ingest_invocations
            * (l.ingest_per_request + l.other_per_request + l.ingest_platform_per_invocation)
            + u.writer_invocations * (l.writer_per_invocation + l.writer_platform_per_invocation);
        u.secret_calls = self.secret_calls(rate, u.ingest_invocations, u.ingest_billed_ms)
            + self.secret_calls(rate, u.writer_invocations, u.writer_billed_ms);
        self.finish(prices, rate, Design::Pipeline, batch, u, d)
    }

    /// Requests/s one task sustains at `batch`: the reference rate scaled by the ingest
    /// time per request at the reference batch size over that at `batch`.
    pub fn task_capacity(&self, batch: f64) -> f64 {
        let at_ref = self.ingest.measured_ms(self.service_batch);
        let here = self.ingest.measured_ms(batch);
        if at_ref > 0.0 && here > 0.0 {
            self.service_rps * at_ref / here
        } else {
            self.service_rps
        }
    }

    /// ingest-api as a Fargate service (concurrent requests share messages for
    /// `service_linger_ms`), the writer on Lambda.
    pub fn service(&self, prices: &Prices, rate: f64, batch: f64) -> Row {
        let mut u = Usage::default();
        let mut d = Dollars::default();
        self.api(prices, batch, &mut u, &mut d);
        let capacity = self.task_capacity(batch);
        let tasks = (rate / batch / capacity)
            .ceil()
            .max(self.service_min_tasks)
            .max(1.0);
        u.fargate_tasks = tasks;
        u.fargate_task_capacity_rps = capacity;
        let month = tasks
            * MONTH_HOURS
            * (self.service_vcpu * prices.get("fargate_vcpu_hour")
                + self.service_memory_gb * prices.get("fargate_gb_hour"));
        u.fargate_task_hours = tasks * MONTH_HOURS / readings_per_month(rate) * 1e6;
        d.fargate = month / readings_per_month(rate) * 1e6;
        // Readings one task gathers in one linger window.
        let window = rate / tasks * self.service_linger_ms / 1000.0;
        let requests = window / batch;
        let flow = if requests <= 1.0 {
            self.own_messages(batch)
        } else {
            let payload = requests * ENVELOPE_PART_BYTES + window * self.envelope_bytes_per_reading;
            let messages = (payload / (self.sqs_max_message_bytes - ENVELOPE_MESSAGE_BYTES))
                .ceil()
                .max(1.0);
            let bytes = payload / messages + ENVELOPE_MESSAGE_BYTES;
            Flow {
                messages_per_reading: messages / window,
                message_bytes: bytes,
                send_per_reading: send_requests(messages, bytes, self.sqs_max_message_bytes)
                    / window,
            }
        };
        self.writer(prices, rate, batch, &flow, &mut u, &mut d);
        let l = &self.logs;
        u.log_bytes = u.api_requests * (l.ingest_per_request + l.other_per_request)
            + u.writer_invocations * (l.writer_per_invocation + l.writer_platform_per_invocation);
        u.secret_calls = self.secret_calls(rate, u.writer_invocations, u.writer_billed_ms);
        self.finish(prices, rate, Design::Service, batch, u, d)
    }

    /// The tutorial's design: one request, one invocation and one INSERT per reading.
    pub fn tutorial(&self, prices: &Prices, rate: f64) -> Row {
        let mut u = Usage::default();
        let mut d = Dollars::default();
        u.api_requests = 1e6;
        u.api_billed_requests =
            1e6 * api_units(self.request_overhead_bytes + self.tutorial_request_bytes);
        let api_price = if self.tutorial_rest_api {
            prices.get("api_rest_request")
        } else {
            prices.get("api_http_request")
        };
        d.api_gateway = u.api_billed_requests * api_price;
        u.ingest_invocations = 1e6;
        u.ingest_billed_ms = billed_ms(self.tutorial_duration_ms);
        u.ingest_gb_seconds = 1e6 * gb_seconds(self.tutorial_memory_mb, u.ingest_billed_ms);
        let gb_price = if self.tutorial_arm64 {
            prices.get("lambda_gb_second")
        } else {
            prices.get("lambda_x86_gb_second")
        };
        d.lambda_ingest_requests = 1e6 * prices.get("lambda_request");
        d.lambda_ingest_duration = u.ingest_gb_seconds * gb_price;
        u.log_bytes = 1e6 * self.tutorial_log_bytes;
        self.finish(prices, rate, Design::Tutorial, 1.0, u, d)
    }
}
