#!/usr/bin/env python3
"""Writes the SAMPLE inputs in this folder: synthetic, shaped like what the functions and
loadtest print, with made-up figures. Not measurements. Run from this folder:

    python3 generate.py

sample-batch1.*    a local run, --batch 1, 500 requests (loadtest summary + scripts/dev's
                   output with METRICS=emf LOG_FORMAT=json RUST_LOG=info, coalescing 50 ms:
                   each service's lines behind its tag, `[ingest] `, `[writer] `, `[query] `)
sample-batch100.*  the same at --batch 100, 300 requests
sample-batch100.measurements.json  counters a person would add by hand (payload bytes, CPU)
sample-lambda-batch10.*  a run against Lambda: a CloudWatch export of both functions'
                   log groups, with the platform's START/END/REPORT lines
"""

import json
import random
import uuid

rng = random.Random(7)
T0 = 1764437000000  # epoch ms of the first line


def emf(function, metrics, units, props=None):
    doc = dict(props or {})
    doc.update(metrics)
    doc["Function"] = function
    doc["_aws"] = {
        "CloudWatchMetrics": [
            {
                "Dimensions": [["Function"]],
                "Metrics": [{"Name": n, "Unit": units.get(n, "Count")} for n in metrics],
                "Namespace": "SensorPipeline",
            }
        ],
        "Timestamp": T0,
    }
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def log(message, fields, target, request_id=None, level="INFO"):
    doc = dict(fields)
    doc.update(
        {
            "level": level,
            "message": message,
            "target": target,
            "timestamp": "2026-11-29T17:40:01.123456Z",
        }
    )
    if request_id:
        doc["requestId"] = request_id
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def summary(run_id, batch, requests, elapsed, rate, latency_mean, latency_p50):
    readings = batch * requests
    return {
        "run_id": run_id,
        "ingest_url": "http://127.0.0.1:3000/sensor",
        "query_url": None,
        "started_at": "2026-11-29T17:40:00Z",
        "elapsed_secs": elapsed,
        "interrupted": False,
        "target": {
            "rate": rate,
            "batch": batch,
            "sensors": 1000,
            "concurrency": 512,
            "query_ratio": 0.0,
            "duration_secs": round(elapsed),
            "readings": None,
        },
        "requests": {"total": requests, "ingest": requests, "query": 0},
        "readings": {"sent": readings, "accepted": readings},
        "status": {"202": requests},
        "transport_errors": {},
        "errors": 0,
        "error_rate": 0.0,
        "latency_ms": {
            "p50": latency_p50,
            "p90": latency_p50 * 1.3,
            "p99": latency_p50 * 2.1,
            "p99.9": latency_p50 * 2.6,
            "p99.99": latency_p50 * 2.8,
            "max": latency_p50 * 3.0,
            "mean": latency_mean,
        },
        "ingest_latency_ms": None,
        "query_latency_ms": None,
        "throughput": {
            "readings_per_sec": readings / elapsed,
            "requests_per_sec": requests / elapsed,
        },
        "verify": {
            "expected": readings,
            "rows": readings,
            "lost": 0,
            "duplicated": 0,
            "unacknowledged": 0,
            "complete": True,
            "waited_ms": 310.0,
            "polls": 30,
            "lag_ms": {"p50": 260.0, "p99": 480.0, "max": 510.0},
        },
        "thresholds": [],
        "timeline": [],
    }


def local_run(name, batch, requests, elapsed, rate, ingest_ms, writer_batches, rows_ms, copy_share):
    lines = [
        "2026-11-29T17:39:58.000001Z  INFO ingest_api: listening addr=127.0.0.1:3000",
        log("EMF metrics on", {"function": "ingest-api", "namespace": "SensorPipeline"}, "readings::metrics"),
    ]
    tags = ["[ingest] ", "[ingest] "]
    messages_total = writer_batches * 4
    for _ in range(requests):
        bid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        ms = max(1, round(rng.gauss(ingest_ms, ingest_ms / 5)))
        # Coalescing: the request's readings went into one shared message.
        lines.append(emf("ingest-api", {"ReadingsAccepted": batch, "MessagesEnqueued": 1}, {}, {"batch_id": bid}))
        lines.append(
            log(
                "readings enqueued",
                {"accepted": batch, "messages": 1, "batch_id": bid, "duration_ms": ms},
                "ingest_api",
            )
        )
        tags += ["[ingest] ", "[ingest] "]
    lines.append(log("GET /sensor", {"status": 200, "duration_ms": 1}, "query_api"))
    tags.append("[query] ")
    readings = batch * requests
    per_batch = readings // writer_batches
    for b in range(writer_batches):
        rows = per_batch if b < writer_batches - 1 else readings - per_batch * (writer_batches - 1)
        dur = rows * rows_ms + 2.0 + rng.random()
        copy = round(dur * copy_share, 3)
        lines.append(
            emf(
                "batch-writer",
                {"BatchSize": 4, "RowsWritten": rows, "DuplicatesSkipped": 0, "DlqSends": 0, "CopyDuration": copy},
                {"CopyDuration": "Milliseconds"},
            )
        )
        lines.append(
            log(
                "batch handled",
                {
                    "messages": 4,
                    "rows": rows,
                    "parts_written": rows // batch,
                    "parts_skipped": 0,
                    "rows_skipped": 0,
                    "dead_lettered": 0,
                    "dlq_sent": 0,
                    "failed": 0,
                    "copy_ms": copy,
                    "duration_ms": round(dur),
                },
                "readings::writer",
            )
        )
        tags += ["[writer] ", "[writer] "]
    with open(f"{name}.emf", "w") as f:
        f.write("\n".join(t + l for t, l in zip(tags, lines, strict=True)) + "\n")
    with open(f"{name}.json", "w") as f:
        json.dump(summary("smpl" + str(batch), batch, requests, elapsed, rate, ingest_ms + 4.0, ingest_ms + 2.0), f, indent=2)
        f.write("\n")
    return messages_total


def lambda_run(name, batch, requests, elapsed):
    ingest = "sensor-pipeline-IngestFunction-Sample1"
    writer = "sensor-pipeline-WriterFunction-Sample1"
    lines = []
    for n in range(requests):
        rid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        bid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        ms = rng.uniform(6.0, 14.0)
        lines.append(f"START RequestId: {rid} Version: $LATEST")
        lines.append(emf(ingest, {"ReadingsAccepted": batch, "MessagesEnqueued": 1}, {}, {"batch_id": bid}))
        lines.append(
            log(
                "readings enqueued",
                {"accepted": batch, "messages": 1, "batch_id": bid, "duration_ms": round(ms)},
                "ingest_api",
                rid,
            )
        )
        lines.append(f"END RequestId: {rid}")
        init = "\tInit Duration: 48.31 ms" if n == 0 else ""
        lines.append(
            f"REPORT RequestId: {rid}\tDuration: {ms:.2f} ms\tBilled Duration: {int(ms) + 1} ms\t"
            f"Memory Size: 256 MB\tMax Memory Used: 33 MB{init}"
        )
    # The writer's event source gathered every message into 2 invocations.
    for half in (requests // 2, requests - requests // 2):
        rid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        rows = half * batch
        ms = 9.0 + rows * 0.004
        lines.append(f"START RequestId: {rid} Version: $LATEST")
        lines.append(
            emf(
                writer,
                {"BatchSize": half, "RowsWritten": rows, "DuplicatesSkipped": 0, "DlqSends": 0, "CopyDuration": round(ms * 0.6, 3)},
                {"CopyDuration": "Milliseconds"},
            )
        )
        lines.append(
            log(
                "batch handled",
                {"messages": half, "rows": rows, "parts_written": half, "parts_skipped": 0, "rows_skipped": 0,
                 "dead_lettered": 0, "dlq_sent": 0, "failed": 0, "copy_ms": round(ms * 0.6, 3), "duration_ms": round(ms)},
                "readings::writer",
                rid,
            )
        )
        lines.append(f"END RequestId: {rid}")
        lines.append(
            f"REPORT RequestId: {rid}\tDuration: {ms:.2f} ms\tBilled Duration: {int(ms) + 1} ms\t"
            f"Memory Size: 1024 MB\tMax Memory Used: 41 MB\tInit Duration: 61.02 ms"
        )
    with open(f"{name}.log", "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(f"{name}.json", "w") as f:
        s = summary("smpllmbd", batch, requests, elapsed, batch * requests / elapsed, 38.0, 31.0)
        s["ingest_url"] = "https://abc123.execute-api.us-east-1.amazonaws.com/sensor"
        json.dump(s, f, indent=2)
        f.write("\n")


local_run("sample-batch1", 1, 500, 4.01, 125, ingest_ms=26.0, writer_batches=20, rows_ms=0.04, copy_share=0.4)
local_run("sample-batch100", 100, 300, 6.03, 5000, ingest_ms=28.0, writer_batches=30, rows_ms=0.006, copy_share=0.7)
lambda_run("sample-lambda-batch10", 10, 40, 4.0)

with open("sample-batch100.measurements.json", "w") as f:
    json.dump(
        {
            "note": "SAMPLE: counters read by hand for sample-batch100 (not a measurement)",
            "ingest": {"payload_bytes": 120 * (20 + 5 * 68) + 30000 * 43, "messages": 120, "cpu_ms": 540.0},
            "writer": {"cpu_ms": 150.0},
        },
        f,
        indent=2,
    )
    f.write("\n")
