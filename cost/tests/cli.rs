//! The binary end to end on the sample inputs in tests/data (synthetic, see
//! tests/data/generate.py).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
        .display()
        .to_string()
}

fn prices() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("prices/us-east-1.toml")
        .display()
        .to_string()
}

fn cost(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cost"))
        .args(args)
        .output()
        .expect("the cost binary runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The JSON documents of a lines file (after scripts/dev's `[tag] `).
fn json_lines(file: &str) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter_map(|l| {
            l.find('{')
                .and_then(|at| serde_json::from_str(&l[at..]).ok())
        })
        .collect()
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cost-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The two local sample runs, with their EMF lines.
fn local_args<'a>(
    run1: &'a str,
    emf1: &'a str,
    run100: &'a str,
    emf100: &'a str,
    p: &'a str,
    t: &'a str,
) -> Vec<&'a str> {
    vec![
        "--run",
        run1,
        "--metrics",
        emf1,
        "--run",
        run100,
        "--metrics",
        emf100,
        "--prices",
        p,
        "--template",
        t,
        "--rate",
        "100000",
        "--assume",
        "ingest_linger_ms=25",
    ]
}

#[test]
fn text_report_from_two_local_runs() {
    let (r1, e1, r100, e100, p, t) = (
        data("sample-batch1.json"),
        data("sample-batch1.emf"),
        data("sample-batch100.json"),
        data("sample-batch100.emf"),
        prices(),
        data("template.yaml"),
    );
    let svg = tmp("local.svg");
    let mut args = local_args(&r1, &e1, &r100, &e100, &p, &t);
    let svg_arg = svg.display().to_string();
    args.extend(["--svg", &svg_arg]);
    let o = cost(&args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.starts_with("Cost per million readings: us-east-1 list prices of 2026-06-17, at 100,000 readings/s (262,800,000,000 readings a month)"), "{out}");
    // Four batch sizes for the pipeline and the service, the tutorial once.
    for design in ["pipeline (Lambda)", "ingest on Fargate"] {
        for batch in ["1", "10", "100", "1,000"] {
            let prefix = format!("{design}  ");
            assert!(
                out.lines().any(|l| l
                    .strip_prefix(&prefix)
                    .and_then(|rest| rest.split_whitespace().next())
                    == Some(batch)),
                "no {design} row at {batch}:\n{out}"
            );
        }
    }
    assert_eq!(
        out.lines().filter(|l| l.starts_with("tutorial ")).count(),
        2,
        "{out}"
    );
    assert!(
        out.contains("ingest time*"),
        "local times are estimates:\n{out}"
    );
    assert!(
        out.contains(
            "counters from sample-batch1.emf: ingest 500 requests, 500 readings, 500 messages"
        ),
        "{out}"
    );
    assert!(
        out.contains("ingest reported 500 messages enqueued, the writer received 80"),
        "{out}"
    );
    assert!(
        out.contains("assumption `ingest_linger_ms` (--assume)"),
        "{out}"
    );
    assert!(
        out.contains("Fixed, not above: Secrets Manager: the database secret $0.40 a month."),
        "{out}"
    );

    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg"), "{picture}");
    for label in [
        "pipeline (Lambda)",
        "ingest on Fargate",
        "tutorial (one reading per request)",
        "readings per request (log scale)",
    ] {
        assert!(picture.contains(label), "the chart lacks {label}");
    }
    assert!(picture.trim_end().ends_with("</svg>"));
}

#[test]
fn json_report_from_two_local_runs() {
    let (r1, e1, r100, e100, p, t) = (
        data("sample-batch1.json"),
        data("sample-batch1.emf"),
        data("sample-batch100.json"),
        data("sample-batch100.emf"),
        prices(),
        data("template.yaml"),
    );
    let mut args = local_args(&r1, &e1, &r100, &e100, &p, &t);
    args.extend(["--json", "-"]);
    let o = cost(&args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let report: Value = serde_json::from_str(&out).expect("--json - prints only JSON");
    assert_eq!(report["rate"], 100_000.0);
    assert_eq!(report["readings_per_month"], 262_800_000_000.0);
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 9);
    for r in rows {
        let d = &r["per_million"];
        let sum: f64 = [
            "api_gateway",
            "lambda_ingest_requests",
            "lambda_ingest_duration",
            "lambda_writer",
            "fargate",
            "sqs",
            "logs",
            "secrets",
        ]
        .iter()
        .map(|k| d[k].as_f64().unwrap())
        .sum();
        let total = d["total"].as_f64().unwrap();
        assert!((sum - total).abs() < 1e-12, "{r}");
        let month = r["per_month"].as_f64().unwrap();
        assert!((month - total * 262_800.0).abs() < 1e-6 * month, "{r}");
    }
    // The tutorial with the shipped prices and default assumptions, by hand: $1.00 API +
    // $0.20 requests + 6,250 GB-s × $0.0000166667 + 258,000,000 bytes / 2^30 × $0.50.
    let tutorial = rows.iter().find(|r| r["design"] == "tutorial").unwrap();
    let want = 1.0 + 0.2 + 6_250.0 * 0.000_016_666_7 + 258_000_000.0 / 1_073_741_824.0 * 0.5;
    assert!((tutorial["per_million"]["total"].as_f64().unwrap() - want).abs() < 1e-9);
    // At batch 1 the pipeline's API Gateway line is $1.00 a million, and at 1,000 a
    // thousandth of it.
    let pipeline = |b: f64| {
        rows.iter()
            .find(|r| r["design"] == "pipeline" && r["batch"] == b)
            .unwrap()
    };
    assert_eq!(pipeline(1.0)["per_million"]["api_gateway"], 1.0);
    assert!(
        (pipeline(1000.0)["per_million"]["api_gateway"]
            .as_f64()
            .unwrap()
            - 0.001)
            .abs()
            < 1e-15
    );
    // Counters as derived from the lines.
    let c = &report["runs"][0]["counters"];
    assert_eq!(c["ingest"]["invocations"], 500);
    assert_eq!(c["writer"]["invocations"], 20);
    assert_eq!(c["writer"]["messages"], 80);
    // The fitted ingest model: (1, d1 - 25) and (100, d100 - 25) with d the mean
    // `duration_ms` of each file's `readings enqueued` lines.
    let mean = |file: &str| {
        let ds: Vec<f64> = json_lines(file)
            .into_iter()
            .filter(|v| v["message"] == "readings enqueued")
            .map(|v| v["duration_ms"].as_f64().unwrap())
            .collect();
        ds.iter().sum::<f64>() / ds.len() as f64
    };
    let (d1, d100) = (mean(&e1) - 25.0, mean(&e100) - 25.0);
    let slope = (d100 - d1) / 99.0;
    let m = &report["model"]["ingest"];
    assert!(
        (m["per_reading_ms"].as_f64().unwrap() - slope).abs() < 1e-9,
        "{m}"
    );
    assert!(
        (m["fixed_ms"].as_f64().unwrap() - (d1 - slope)).abs() < 1e-9,
        "{m}"
    );
    assert!(report["assumptions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["key"] == "ingest_linger_ms" && a["origin"] == "flag"));
}

#[test]
fn a_measurements_file_adds_what_the_lines_lack() {
    let (run, emf, m, p, t) = (
        data("sample-batch100.json"),
        data("sample-batch100.emf"),
        data("sample-batch100.measurements.json"),
        prices(),
        data("template.yaml"),
    );
    let json = tmp("measured.json");
    let json_arg = json.display().to_string();
    let o = cost(&[
        "--run",
        &run,
        "--metrics",
        &emf,
        "--measurements",
        &m,
        "--prices",
        &p,
        "--template",
        &t,
        "--rate",
        "5000",
        "--json",
        &json_arg,
        "--batches",
        "100",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("counters from sample-batch100.emf + sample-batch100.measurements.json"),
        "{out}"
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let figure = |what: &str| {
        report["figures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["what"] == what)
            .unwrap_or_else(|| panic!("no figure {what}"))
            .clone()
    };
    // (1,333,200 payload bytes - 120 messages × 20 - 300 requests × 68) / 30,000 readings
    // = 1,310,400 / 30,000 = 43.68 bytes.
    let payload = figure("SQS payload per reading");
    assert!(
        (payload["value"].as_f64().unwrap() - 43.68).abs() < 1e-9,
        "{payload}"
    );
    assert_eq!(payload["estimate"], false);
    // CPU-bound share: 540 ms of CPU over the handler time of the 300 requests.
    let wall: f64 = json_lines(&emf)
        .into_iter()
        .filter(|v| v["message"] == "readings enqueued")
        .map(|v| v["duration_ms"].as_f64().unwrap())
        .sum();
    let share = figure("ingest CPU-bound share");
    assert!(
        (share["value"].as_f64().unwrap() - 540.0 / wall).abs() < 1e-9,
        "{share}"
    );
    assert!(share["source"]
        .as_str()
        .unwrap()
        .starts_with("measured: ingest.cpu_ms"));
    assert_eq!(
        report["runs"][0]["counters"]["note"],
        "SAMPLE: counters read by hand for sample-batch100 (not a measurement)"
    );
}

#[test]
fn a_lambda_log_export_is_not_scaled() {
    let (run, log, p, t) = (
        data("sample-lambda-batch10.json"),
        data("sample-lambda-batch10.log"),
        prices(),
        data("template.yaml"),
    );
    let o = cost(&[
        "--run",
        &run,
        "--metrics",
        &log,
        "--prices",
        &p,
        "--template",
        &t,
        "--rate",
        "1000",
        "--batches",
        "10",
        "--json",
        "-",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["model"]["ingest_estimated"], false);
    assert_eq!(report["model"]["writer_estimated"], false);
    assert_eq!(report["model"]["ingest"]["stretch"], 1.0);
    let c = &report["runs"][0]["counters"];
    assert_eq!(c["ingest"]["billed_invocations"], 40);
    assert_eq!(c["ingest"]["cold_starts"], 1);
    assert_eq!(c["writer"]["billed_invocations"], 2);
    // Every ingest REPORT line bills `int(duration) + 1` ms; at batch 10 the pipeline bills
    // the measured mean (plus 0.002 ms per reading × 0) rounded up.
    let billed = c["ingest"]["billed_ms"].as_f64().unwrap() / 40.0;
    let row = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["design"] == "pipeline")
        .unwrap()
        .clone();
    assert_eq!(
        row["usage"]["ingest_billed_ms"].as_f64().unwrap(),
        billed.ceil()
    );
}

#[test]
fn bad_inputs_are_named() {
    let (run, emf, p, t) = (
        data("sample-batch1.json"),
        data("sample-batch1.emf"),
        prices(),
        data("template.yaml"),
    );
    let broken = tmp("broken.toml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&p)
            .unwrap()
            .replace("sqs_request = 0.0000004\n", ""),
    )
    .unwrap();
    let broken = broken.display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--run",
                &run,
                "--prices",
                &broken,
                "--template",
                &t,
                "--rate",
                "1",
            ],
            "`prices.sqs_request` is missing",
        ),
        (
            vec![
                "--run",
                &run,
                "--prices",
                &p,
                "--template",
                &t,
                "--rate",
                "1",
                "--price",
                "sqs_requests=1",
            ],
            "unknown key `sqs_requests` (did you mean `sqs_request`?)",
        ),
        (
            vec![
                "--run",
                &run,
                "--prices",
                &p,
                "--template",
                &t,
                "--rate",
                "1",
                "--price",
                "sqs_request=-1",
            ],
            "zero or more",
        ),
        (
            vec![
                "--metrics",
                &emf,
                "--run",
                &run,
                "--prices",
                &p,
                "--template",
                &t,
                "--rate",
                "1",
            ],
            "comes before any --run",
        ),
        (
            vec![
                "--run",
                &run,
                "--prices",
                &p,
                "--template",
                &t,
                "--rate",
                "1",
                "--assume",
                "tutorial_ms=5",
            ],
            "unknown key `tutorial_ms`",
        ),
        (
            vec![
                "--run",
                &run,
                "--prices",
                &p,
                "--template",
                &t,
                "--rate",
                "0",
            ],
            "--rate 0",
        ),
        (
            vec![
                "--run",
                &run,
                "--prices",
                &p,
                "--template",
                &t,
                "--rate",
                "1",
                "--batches",
                "0.5",
            ],
            "--batches: 0.5",
        ),
        (
            vec![
                "--run",
                &run,
                "--prices",
                &p,
                "--template",
                "/nonexistent/template.yaml",
                "--rate",
                "1",
            ],
            "reading /nonexistent/template.yaml",
        ),
        (
            vec![
                "--run",
                &emf,
                "--prices",
                &p,
                "--template",
                &t,
                "--rate",
                "1",
            ],
            "not a loadtest --json summary",
        ),
        (vec!["--prices", &p, "--rate", "1"], "--run <FILE>"),
    ];
    for (args, needle) in cases {
        let o = cost(&args);
        let (_, err) = text(&o);
        assert_eq!(
            o.status.code(),
            Some(if needle == "--run <FILE>" { 2 } else { 1 }),
            "{args:?}: {err}"
        );
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn batches_ingest_would_refuse_are_flagged() {
    let (run, p, t) = (data("sample-batch1.json"), prices(), data("template.yaml"));
    let o = cost(&[
        "--run",
        &run,
        "--prices",
        &p,
        "--template",
        &t,
        "--rate",
        "10",
        "--batches",
        "100,20000",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("! batch 20,000: more readings per request than ingest-api takes by default"),
        "{out}"
    );
    assert!(!out.contains("! batch 100:"), "{out}");
}

#[test]
fn without_a_template_the_sizes_are_flags() {
    let (run, p) = (data("sample-batch1.json"), prices());
    let dir = tmp("no-template");
    std::fs::create_dir_all(&dir).unwrap();
    // The default --template (template.yaml in the working directory) is absent here.
    let o = Command::new(env!("CARGO_BIN_EXE_cost"))
        .current_dir(&dir)
        .args(["--run", &run, "--prices", &p, "--rate", "10"])
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("without it, give --assume ingest_memory_mb=..."),
        "{err}"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_cost"))
        .current_dir(&dir)
        .args([
            "--run",
            &run,
            "--prices",
            &p,
            "--rate",
            "10",
            "--assume",
            "ingest_memory_mb=512",
            "--assume",
            "query_memory_mb=256",
            "--assume",
            "writer_memory_mb=2048",
            "--assume",
            "writer_batch_size=100",
            "--assume",
            "writer_batch_window_secs=1",
        ])
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("Deployment: ingest-api 512 MB, batch-writer 2,048 MB (up to 100 messages per invocation, 1 s window)"), "{out}");
    assert!(out.contains("no counters given"), "{out}");
}

#[test]
fn lists_and_helps() {
    let o = cost(&["--list-assumptions"]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    assert!(out.starts_with("key | default | unit | meaning\n"));
    assert!(out.contains("tutorial_duration_ms | 50 | ms |"), "{out}");
    assert!(out.contains("service_rps | measured |"), "{out}");
    let o = cost(&["--help"]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    assert!(out.contains("--assume <KEY=VALUE>"), "{out}");
}
