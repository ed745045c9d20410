//! The model's arithmetic against cases computed by hand (the computation is in the
//! comments next to each expected value).

use cost::assume::Assumptions;
use cost::measure::{Function, Measurements};
use cost::model::*;
use cost::prices::Prices;
use cost::run::Run;

fn prices() -> Prices {
    Prices::parse(include_str!("../prices/us-east-1.toml"), "us-east-1.toml").unwrap()
}

/// `a` equals `b` to 1e-9 of their size.
#[track_caller]
fn close(a: f64, b: f64) {
    assert!(
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12),
        "{a} != {b}"
    );
}

#[test]
fn api_gateway_bills_each_started_512_kib() {
    assert_eq!(api_units(0.0), 1.0); // an empty request still counts once
    assert_eq!(api_units(600.0 + 88.0), 1.0);
    assert_eq!(api_units(524_288.0), 1.0); // exactly 512 KiB
    assert_eq!(api_units(524_289.0), 2.0); // one byte more: a second increment
    assert_eq!(api_units(1_048_576.0), 2.0);
    assert_eq!(api_units(1_048_577.0), 3.0);
}

#[test]
fn sqs_bills_each_started_64_kib_of_a_call() {
    assert_eq!(sqs_chunks(0.0), 1.0); // a DeleteMessageBatch carries no payload: 1
    assert_eq!(sqs_chunks(1.0), 1.0);
    assert_eq!(sqs_chunks(65_536.0), 1.0); // exactly 64 KiB
    assert_eq!(sqs_chunks(65_537.0), 2.0);
    assert_eq!(sqs_chunks(262_144.0), 4.0); // a 256 KiB message: 4 requests
    assert_eq!(sqs_chunks(262_145.0), 5.0);

    // One small message: one call, one chunk.
    assert_eq!(send_requests(1.0, 131.0, 262_144.0), 1.0);
    // 25 messages of 30,000 bytes, calls of at most 262,144 bytes: floor(262144/30000) = 8
    // per call. 3 calls of 8 × 30,000 = 240,000 bytes = 3.66 chunks → 4 each = 12, and one
    // call of 1 message (30,000 bytes → 1): 13.
    assert_eq!(send_requests(25.0, 30_000.0, 262_144.0), 13.0);
    // 12 messages of 100 bytes: 10 per call (the entry limit): 1 + 1 = 2.
    assert_eq!(send_requests(12.0, 100.0, 262_144.0), 2.0);
    // Full 256 KiB messages: one per call, 4 chunks each.
    assert_eq!(send_requests(3.0, 262_144.0, 262_144.0), 12.0);

    // 142 messages of 43,089 bytes: 14 receives of 10 (430,890 bytes = 6.57 → 7 chunks) = 98
    // and one of 2 (86,178 bytes = 1.31 → 2) = 100; deletes: ceil(142 / 10) = 15.
    assert_eq!(receive_delete_requests(142.0, 43_089.0), (100.0, 15.0));
    // 50 messages of 4,388 bytes: 5 receives of 43,880 bytes (1 chunk each), 5 deletes.
    assert_eq!(receive_delete_requests(50.0, 4_388.0), (5.0, 5.0));
}

#[test]
fn packing_requests_into_messages() {
    // Room for readings: 262,144 - 20 (envelope) - 68 (part) = 262,056 bytes, 6,094 readings
    // of 43 bytes. 100 readings: one message of 88 + 4,300 = 4,388 bytes.
    assert_eq!(
        pack_request(100.0, 43.0, 262_144.0),
        Packing {
            messages: 1.0,
            bytes: 4_388.0
        }
    );
    // 10,000 readings: ceil(10000 / 6094) = 2 messages, 2 × 88 + 430,000 = 430,176 bytes,
    // 215,088 each on average.
    assert_eq!(
        pack_request(10_000.0, 43.0, 262_144.0),
        Packing {
            messages: 2.0,
            bytes: 215_088.0
        }
    );
    // One reading: 88 + 43 = 131 bytes.
    assert_eq!(pack_request(1.0, 43.0, 262_144.0).bytes, 131.0);
}

#[test]
fn lambda_cpu_share_and_billing() {
    // 1 vCPU at 1,769 MB: 256 MB has 256/1769 = 0.144714 of it.
    close(cpu_share(256.0), 256.0 / 1769.0);
    assert_eq!(cpu_share(3008.0), 1.0);
    // All CPU-bound: 1769/256 = 6.91015625 times longer.
    close(stretch(256.0, 1.0, 1.0), 6.910_156_25);
    // Half CPU-bound at 1,024 MB: 0.5 + 0.5 × 1769/1024 = 0.5 + 0.863770 = 1.363770.
    close(stretch(1024.0, 0.5, 1.0), 0.5 + 0.5 * 1769.0 / 1024.0);
    // A Lambda vCPU twice as fast as the measuring core halves the stretch of the CPU part.
    close(stretch(256.0, 1.0, 2.0), 6.910_156_25 / 2.0);
    // Nothing CPU-bound: no stretch, whatever the memory.
    assert_eq!(stretch(128.0, 0.0, 1.0), 1.0);
    // Billed per started millisecond, at least one.
    assert_eq!(billed_ms(6.01), 7.0);
    assert_eq!(billed_ms(7.0), 7.0);
    assert_eq!(billed_ms(0.2), 1.0);
    // 256 MB for 7 ms: 0.25 GB × 0.007 s = 0.00175 GB-s.
    close(gb_seconds(256.0, 7.0), 0.00175);
}

#[test]
fn fitting_fixed_and_per_reading_parts() {
    // (1, 1.1) and (100, 2.8): slope 1.7/99 = 0.0171717, intercept 1.1 - 0.0171717.
    let (a, b) = fit_line(&[(1.0, 1.1), (100.0, 2.8)]).unwrap();
    close(b, 1.7 / 99.0);
    close(a, 1.1 - 1.7 / 99.0);
    // A falling line is not a cost model: no per-unit part, the mean as the fixed part.
    assert_eq!(fit_line(&[(1.0, 3.0), (100.0, 1.0)]), Some((2.0, 0.0)));
    // A negative intercept: the line through the origin, Σxy/Σx² = (1·1 + 100·300)/(1 + 10000).
    let (a, b) = fit_line(&[(1.0, 1.0), (100.0, 300.0)]).unwrap();
    assert_eq!(a, 0.0);
    close(b, 30_001.0 / 10_001.0);
    // One batch size: nothing to fit.
    assert_eq!(fit_line(&[(100.0, 1.0), (100.0, 2.0)]), None);
}

/// A model with round figures for the hand computations below.
fn model() -> Model {
    Model {
        ingest_memory_mb: 256.0,
        writer_memory_mb: 1024.0,
        writer_batch_size: 1000.0,
        writer_batch_window_secs: 5.0,
        request_bytes_per_reading: 88.0,
        request_overhead_bytes: 600.0,
        envelope_bytes_per_reading: 43.0,
        sqs_max_message_bytes: 262_144.0,
        record_overhead_bytes: 1000.0,
        ingest: IngestTime {
            fixed_ms: 1.0,
            per_reading_ms: 0.01,
            stretch: 2.0,
        },
        writer: WriterTime {
            per_invocation_ms: 2.0,
            per_request_ms: 0.01,
            per_reading_ms: 0.005,
            stretch: 1.5,
        },
        logs: LogSizes {
            ingest_per_request: 600.0,
            other_per_request: 0.0,
            writer_per_invocation: 800.0,
            ingest_platform_per_invocation: 258.0,
            writer_platform_per_invocation: 258.0,
        },
        lambda_env_lifetime_hours: 2.0,
        secret_calls_per_cold_start: 1.0,
        service_rps: 500.0,
        service_batch: 1.0,
        service_vcpu: 1.0,
        service_memory_gb: 2.0,
        service_min_tasks: 1.0,
        service_linger_ms: 5.0,
        tutorial_duration_ms: 50.0,
        tutorial_memory_mb: 128.0,
        tutorial_arm64: false,
        tutorial_rest_api: false,
        tutorial_request_bytes: 39.0,
        tutorial_log_bytes: 258.0,
        ingest_estimated: true,
        writer_estimated: true,
        figures: vec![],
        notes: vec![],
        warnings: vec![],
    }
}

const GIB: f64 = 1_073_741_824.0;

#[test]
fn the_pipeline_at_batch_100_by_hand() {
    // 1,000 readings/s: 1000 × 730 × 3600 = 2,628,000,000 readings a month.
    let row = model().pipeline(&prices(), 1000.0, 100.0);
    let (u, d) = (&row.usage, &row.per_million);

    // API Gateway: 10,000 requests of 600 + 100 × 88 = 9,400 bytes (one increment each)
    // × $0.000001 = $0.01.
    assert_eq!(u.api_billed_requests, 10_000.0);
    close(d.api_gateway, 0.01);

    // ingest: ceil((1 + 0.01 × 100) × 2) = 4 ms; 10,000 × 0.25 GB × 0.004 s = 10 GB-s ×
    // $0.0000133334 = $0.000133334; 10,000 invocations × $0.0000002 = $0.002.
    assert_eq!(u.ingest_billed_ms, 4.0);
    close(u.ingest_gb_seconds, 10.0);
    close(d.lambda_ingest_duration, 0.000_133_334);
    close(d.lambda_ingest_requests, 0.002);

    // SQS messages: one of 4,388 bytes per request, 0.01 per reading, 10,000 sends.
    // Writer batches: 10 messages/s × 5 s window = 50 (under 1000 and under
    // 6,291,456 / 5,388 = 1,167), so 10,000 / 50 = 200 invocations of 5,000 readings and 50
    // requests: ceil((2 + 0.01 × 50 + 0.005 × 5000) × 1.5) = ceil(41.25) = 42 ms;
    // 200 × 1 GB × 0.042 s = 8.4 GB-s × $0.0000133334 + 200 × $0.0000002.
    assert_eq!(u.writer_messages_per_invocation, 50.0);
    close(u.writer_invocations, 200.0);
    assert_eq!(u.writer_billed_ms, 42.0);
    close(d.lambda_writer, 8.4 * 0.000_013_333_4 + 200.0 * 0.000_000_2);

    // SQS requests: 10,000 sends (1 chunk each), per invocation 5 receives of 10 × 4,388 =
    // 43,880 bytes (1 chunk) and 5 deletes: 1,000 + 1,000. 12,000 × $0.0000004 = $0.0048.
    close(u.sqs_send_requests, 10_000.0);
    close(u.sqs_receive_requests, 1_000.0);
    close(u.sqs_delete_requests, 1_000.0);
    close(d.sqs, 0.0048);

    // Logs: 10,000 × (600 + 258) + 200 × (800 + 258) = 8,791,600 bytes / 2^30 × $0.50.
    close(u.log_bytes, 8_791_600.0);
    close(d.logs, 8_791_600.0 / GIB * 0.5);

    // Secrets: ingest 10 invocations/s × 0.004 s → 1 environment; writer 0.2/s × 0.042 s
    // → 1. Each replaced every 2 h: 2 × 730 / 2 = 730 calls a month, per million readings
    // 730 / 2,628,000,000 × 10^6 = 0.27778 calls × $0.05 / 10,000.
    close(u.secret_calls, 730.0 / 2_628.0);
    close(d.secrets, 730.0 / 2_628.0 / 10_000.0 * 0.05);

    let total = 0.01
        + 0.002
        + 0.000_133_334
        + (8.4 * 0.000_013_333_4 + 200.0 * 0.000_000_2)
        + 0.0048
        + 8_791_600.0 / GIB * 0.5
        + 730.0 / 2_628.0 / 10_000.0 * 0.05;
    close(d.total, total);
    // $ per month: total × 2,628 million readings.
    close(row.per_month, total * 2_628.0);
}

#[test]
fn the_tutorial_by_hand() {
    let mut m = model();
    let row = m.tutorial(&prices(), 1000.0);
    let d = &row.per_million;
    // 1,000,000 requests of 600 + 39 bytes: $1.00; 1,000,000 invocations: $0.20;
    // 50 ms × 0.125 GB = 0.00625 GB-s each, 6,250 GB-s × $0.0000166667 (x86_64) = $0.1041669;
    // logs 258,000,000 bytes / 2^30 × $0.50 = $0.120140.
    close(d.api_gateway, 1.0);
    close(d.lambda_ingest_requests, 0.2);
    close(d.lambda_ingest_duration, 6_250.0 * 0.000_016_666_7);
    close(d.logs, 258_000_000.0 / GIB * 0.5);
    assert_eq!(d.sqs, 0.0);
    close(
        d.total,
        1.0 + 0.2 + 6_250.0 * 0.000_016_666_7 + 258_000_000.0 / GIB * 0.5,
    );
    // Behind a REST API: $3.50 per million; on arm64: $0.0000133334 per GB-s.
    m.tutorial_rest_api = true;
    m.tutorial_arm64 = true;
    let d = m.tutorial(&prices(), 1000.0).per_million;
    close(d.api_gateway, 3.5);
    close(d.lambda_ingest_duration, 6_250.0 * 0.000_013_333_4);
}

#[test]
fn ingest_on_fargate_at_batch_1_by_hand() {
    let row = model().service(&prices(), 1000.0, 1.0);
    let (u, d) = (&row.usage, &row.per_million);
    // 1,000 requests/s, 500 per task (measured at batch 1): 2 tasks.
    // 2 × 730 h × (1 × $0.03238 + 2 × $0.00356) = $57.67 a month; per million readings
    // 57.67 / 2,628.
    assert_eq!(u.fargate_tasks, 2.0);
    close(d.fargate, 2.0 * 730.0 * (0.03238 + 2.0 * 0.00356) / 2_628.0);
    // Coalescing: 500 readings/s per task × 5 ms = 2.5 readings (2.5 requests) per window,
    // 2.5 × 68 + 2.5 × 43 = 277.5 bytes: 1 message of 297.5 bytes per window, 0.4 per reading;
    // 1 send per window: 400,000 sends per million readings.
    close(u.sqs_messages, 400_000.0);
    close(u.sqs_message_bytes, 297.5);
    close(u.sqs_send_requests, 400_000.0);
    // Writer: 400 messages/s × 5 s ≥ 1000: batches of 1000 messages = 2,500 readings and
    // requests; 400 invocations; ceil((2 + 0.01 × 2500 + 0.005 × 2500) × 1.5) = ceil(59.25) = 60 ms.
    close(u.writer_invocations, 400.0);
    assert_eq!(u.writer_billed_ms, 60.0);
    close(
        d.lambda_writer,
        400.0 * 0.06 * 0.000_013_333_4 + 400.0 * 0.000_000_2,
    );
    // 100 receives of 2,975 bytes (1 chunk) and 100 deletes per invocation: 40,000 each.
    close(d.sqs, (400_000.0 + 40_000.0 + 40_000.0) * 0.000_000_4);
    // No Lambda ingest; logs without the platform lines for ingest.
    assert_eq!(d.lambda_ingest_requests + d.lambda_ingest_duration, 0.0);
    close(u.log_bytes, 1e6 * 600.0 + 400.0 * (800.0 + 258.0));
    // The writer's secret only: 0.4 invocations/s × 0.06 s → 1 environment, 365 calls a month.
    close(u.secret_calls, 365.0 / 2_628.0);
    close(
        d.total,
        1.0 + d.fargate + d.lambda_writer + d.sqs + d.logs + d.secrets,
    );
    // At batch 100 the ingest time per request is 1 + 0.01 × 100 = 2 ms against 1.01 ms at
    // batch 1: one task sustains 500 × 1.01 / 2 = 252.5 requests/s.
    close(model().task_capacity(100.0), 252.5);
}

fn run(batch: u64, requests: u64) -> Run {
    let readings = batch * requests;
    let json = format!(
        r#"{{"elapsed_secs": 10.0, "target": {{"rate": 1, "batch": {batch}}},
            "requests": {{"total": {requests}, "ingest": {requests}, "query": 0}},
            "readings": {{"sent": {readings}, "accepted": {readings}}},
            "status": {{"202": {requests}}},
            "latency_ms": {{"p50": 1, "p99": 2, "mean": 40}},
            "throughput": {{"readings_per_sec": 1, "requests_per_sec": 1}}}}"#
    );
    Run::parse(&json, &format!("batch{batch}.json")).unwrap()
}

#[test]
fn figures_from_two_measured_runs_by_hand() {
    let a = Measured {
        run: run(1, 100),
        counters: Measurements {
            ingest: Function {
                invocations: Some(100),
                duration_ms: Some(300.0), // 3 ms per request
                ..Function::default()
            },
            writer: Function {
                invocations: Some(5),
                readings: Some(100),
                duration_ms: Some(50.0),
                copy_ms: Some(20.0),
                ..Function::default()
            },
            ..Measurements::default()
        },
        sources: vec![],
    };
    let b = Measured {
        run: run(100, 10),
        counters: Measurements {
            ingest: Function {
                invocations: Some(10),
                duration_ms: Some(100.0), // 10 ms per request
                ..Function::default()
            },
            writer: Function {
                invocations: Some(10),
                readings: Some(1000),
                duration_ms: Some(120.0),
                copy_ms: Some(60.0),
                ..Function::default()
            },
            ..Measurements::default()
        },
        sources: vec![],
    };
    let mut assume = Assumptions::new(None);
    for s in [
        "ingest_memory_mb=256",
        "writer_memory_mb=1024",
        "writer_batch_size=1000",
        "writer_batch_window_secs=5",
    ] {
        assume.set(s).unwrap();
    }
    let m = Model::resolve(&[a.clone(), b], &assume).unwrap();
    // Ingest: (1, 3) and (100, 10): 7/99 ms per reading, 3 - 7/99 fixed; all CPU-bound by
    // default: × 1769/256.
    close(m.ingest.per_reading_ms, 7.0 / 99.0);
    close(m.ingest.fixed_ms, 3.0 - 7.0 / 99.0);
    close(m.ingest.stretch, 1769.0 / 256.0);
    // Writer, less 2 ms per invocation: (50 - 5 × 2) / 100 = 0.4 ms per reading at batch 1,
    // (120 - 10 × 2) / 1000 = 0.1 at batch 100. y = e + c/K: c = 0.3/0.99, e = 0.1 - c/100.
    close(m.writer.per_request_ms, 0.3 / 0.99);
    close(m.writer.per_reading_ms, 0.1 - 0.3 / 0.99 / 100.0);
    // CPU-bound share: time outside COPY, (170 - 80) / 170; stretch (1 - f) + f × 1769/1024.
    let f = 90.0 / 170.0;
    close(m.writer.stretch, (1.0 - f) + f * 1769.0 / 1024.0);
    assert!(m.ingest_estimated && m.writer_estimated);

    // One run only: the per-reading ingest time is the assumption (0.002 ms), the fixed part
    // the rest: 3 - 0.002 × 1 = 2.998. The writer's per-request time is the assumption
    // (0.01): (50 - 10) / 100 = 0.4 = e + 0.01 / 1, e = 0.39.
    let m = Model::resolve(&[a], &assume).unwrap();
    close(m.ingest.per_reading_ms, 0.002);
    close(m.ingest.fixed_ms, 2.998);
    close(m.writer.per_request_ms, 0.01);
    close(m.writer.per_reading_ms, 0.39);
}

#[test]
fn lambda_report_lines_replace_scaling() {
    let mut a = Measured {
        run: run(10, 40),
        counters: Measurements {
            ingest: Function {
                invocations: Some(40),
                duration_ms: Some(400.0),
                billed_ms: Some(440.0),
                billed_invocations: Some(40),
                ..Function::default()
            },
            ..Measurements::default()
        },
        sources: vec![],
    };
    let mut assume = Assumptions::new(None);
    for s in [
        "ingest_memory_mb=256",
        "writer_memory_mb=1024",
        "writer_batch_size=1000",
        "writer_batch_window_secs=5",
    ] {
        assume.set(s).unwrap();
    }
    let m = Model::resolve(std::slice::from_ref(&a), &assume).unwrap();
    // 11 ms billed per request on Lambda: no stretch; fixed 11 - 0.002 × 10 = 10.98.
    assert_eq!(m.ingest.stretch, 1.0);
    close(m.ingest.fixed_ms, 10.98);
    assert!(!m.ingest_estimated);
    // No writer time at all: the assumption (BENCHMARKS.md P1), stretched as all-CPU.
    close(m.writer.per_reading_ms, 0.00515);
    assert!(m.writer_estimated);
    // Without REPORT lines the local handler time is used and scaled.
    a.counters.ingest.billed_ms = None;
    let m = Model::resolve(&[a], &assume).unwrap();
    close(m.ingest.fixed_ms, 10.0 - 0.02);
    close(m.ingest.stretch, 1769.0 / 256.0);
}
