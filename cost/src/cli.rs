//! The command line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};

use crate::assume::{self, Assumptions};
use crate::emf::{self, MemoryHints};
use crate::measure::Measurements;
use crate::model::{Measured, Model};
use crate::prices::Prices;
use crate::report::{number, Report};
use crate::run::Run;
use crate::template::Settings;

/// What each million readings costs on AWS, from a measured run.
///
/// Reads a `loadtest --json` summary and the pipeline's own counters for that run (the
/// functions' EMF and log lines, or a measurements file), the template's memory sizes and
/// a price table, and prints dollars per million readings and per month, by service, for
/// this pipeline at several batch sizes, for ingest-api as a Fargate service, and for the
/// tutorial's one-invocation-per-reading design. Figures that are not measured are
/// documented assumptions (--list-assumptions), each overridable with --assume.
#[derive(Debug, Parser)]
#[command(name = "cost", version)]
pub struct Cli {
    /// A `loadtest --json` summary. Repeat for runs at other batch sizes: with two or more,
    /// the per-request and per-reading times are fitted instead of assumed.
    #[arg(
        long = "run",
        value_name = "FILE",
        required_unless_present = "list_assumptions"
    )]
    pub runs: Vec<PathBuf>,
    /// The functions' stdout lines during the --run before this flag: EMF documents
    /// (METRICS=emf), log lines (JSON or text) and, from a Lambda log export, REPORT lines.
    #[arg(long = "metrics", value_name = "FILE")]
    pub metrics: Vec<PathBuf>,
    /// A measurements JSON file for the --run before this flag; its fields replace what
    /// --metrics derived (schema in cost/README.md).
    #[arg(long = "measurements", value_name = "FILE")]
    pub measurements: Vec<PathBuf>,
    /// The price table (TOML), e.g. cost/prices/us-east-1.toml.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "list_assumptions"
    )]
    pub prices: Option<PathBuf>,
    /// Overrides one price, e.g. --price lambda_gb_second=0.0000133334 (repeatable).
    #[arg(long = "price", value_name = "KEY=VALUE")]
    pub price: Vec<String>,
    /// The SAM template whose parameter defaults give the memory sizes and writer batching.
    #[arg(long, value_name = "FILE", default_value = "template.yaml")]
    pub template: PathBuf,
    /// Readings per second, for the monthly figures (and the batching that depends on it).
    #[arg(
        long,
        value_name = "READINGS_PER_SEC",
        required_unless_present = "list_assumptions"
    )]
    pub rate: Option<f64>,
    /// Readings per request to price the designs at.
    #[arg(
        long,
        value_name = "N,N,...",
        value_delimiter = ',',
        default_value = "1,10,100,1000"
    )]
    pub batches: Vec<f64>,
    /// Overrides one assumption, e.g. --assume tutorial_duration_ms=80 (repeatable; see
    /// --list-assumptions).
    #[arg(long = "assume", value_name = "KEY=VALUE")]
    pub assume: Vec<String>,
    /// Writes the whole report as JSON to FILE (`-`: to stdout, instead of the text).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draws $ per million readings against readings per request to an SVG file.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Prints every assumption with its default, unit and meaning, and exits.
    #[arg(long)]
    pub list_assumptions: bool,
}

/// ingest-api's default `INGEST_MAX_READINGS`.
const INGEST_MAX_READINGS: f64 = 10_000.0;

/// One run and the counter files that follow it on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct RunArgs {
    pub run: PathBuf,
    pub metrics: Vec<PathBuf>,
    pub measurements: Vec<PathBuf>,
}

/// Gives each --metrics / --measurements to the --run before it.
pub fn group(cli: &Cli, matches: &ArgMatches) -> Result<Vec<RunArgs>> {
    let run_at: Vec<usize> = matches
        .indices_of("runs")
        .map(Iterator::collect)
        .unwrap_or_default();
    let mut groups: Vec<RunArgs> = cli
        .runs
        .iter()
        .map(|r| RunArgs {
            run: r.clone(),
            metrics: Vec::new(),
            measurements: Vec::new(),
        })
        .collect();
    let owner = |at: usize, flag: &str, file: &Path| -> Result<usize> {
        run_at.iter().rposition(|r| *r < at).with_context(|| {
            format!(
                "--{flag} {} comes before any --run: put it after the run it belongs to",
                file.display()
            )
        })
    };
    for (file, at) in cli
        .metrics
        .iter()
        .zip(matches.indices_of("metrics").into_iter().flatten())
    {
        let i = owner(at, "metrics", file)?;
        groups[i].metrics.push(file.clone());
    }
    for (file, at) in cli
        .measurements
        .iter()
        .zip(matches.indices_of("measurements").into_iter().flatten())
    {
        let i = owner(at, "measurements", file)?;
        groups[i].measurements.push(file.clone());
    }
    Ok(groups)
}

/// Runs the command with `args` (the first is the program name); output goes to `out`.
pub fn main_with(
    args: impl IntoIterator<Item = OsString>,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    let matches = match Cli::command().try_get_matches_from(args) {
        Ok(m) => m,
        // --help and --version are answers, not failures.
        Err(e) if !e.use_stderr() => {
            write!(out, "{}", e.render())?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let cli = Cli::from_arg_matches(&matches)?;
    if cli.list_assumptions {
        out.write_all(assume::list().as_bytes())?;
        return Ok(());
    }
    let groups = group(&cli, &matches)?;
    let rate = cli.rate.context("--rate is required")?;
    if !(rate.is_finite() && rate > 0.0) {
        bail!("--rate {rate}: expected readings per second, more than 0");
    }
    let mut batches = cli.batches.clone();
    if let Some(b) = batches.iter().find(|b| !(b.is_finite() && **b >= 1.0)) {
        bail!("--batches: {b} is not a number of readings per request (1 or more)");
    }
    batches.sort_by(f64::total_cmp);
    batches.dedup();

    let prices_path = cli.prices.as_ref().context("--prices is required")?;
    let mut prices = Prices::load(prices_path)?;
    for p in &cli.price {
        prices.set(p)?;
    }

    let default_template = matches.value_source("template") == Some(ValueSource::DefaultValue);
    let (template, template_problem) = match Settings::load(&cli.template) {
        Ok(t) => (Some(t), None),
        Err(e) if default_template => (None, Some(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    let mut assumptions = Assumptions::new(template.as_ref());
    for a in &cli.assume {
        assumptions.set(a)?;
    }
    assumptions.require_deployment(template_problem.as_deref())?;
    let hints = MemoryHints {
        ingest_mb: assumptions.get("ingest_memory_mb"),
        writer_mb: assumptions.get("writer_memory_mb"),
    };

    let mut measured = Vec::new();
    let mut load_warnings = Vec::new();
    for g in &groups {
        let run = Run::load(&g.run)?;
        let mut counters = Measurements::default();
        let mut sources = Vec::new();
        for m in &g.metrics {
            let text =
                std::fs::read_to_string(m).with_context(|| format!("reading {}", m.display()))?;
            let parsed = emf::parse(&text, hints);
            if parsed.malformed > 0 {
                load_warnings.push(format!(
                    "{}: {} lines looked like JSON but did not parse",
                    m.display(),
                    parsed.malformed
                ));
            }
            if parsed.unattributed_reports > 0 {
                load_warnings.push(format!(
                    "{}: {} REPORT lines named no known request id or memory size and were not counted for either function",
                    m.display(),
                    parsed.unattributed_reports
                ));
            }
            counters = add(counters, parsed.measurements);
            sources.push(file_name(m));
        }
        for m in &g.measurements {
            let file = Measurements::load(m)?;
            counters = counters.overlaid(&file);
            sources.push(file_name(m));
        }
        measured.push(Measured {
            run,
            counters,
            sources,
        });
    }

    let mut model = Model::resolve(&measured, &assumptions)?;
    model.warnings.extend(load_warnings);
    for b in batches.iter().filter(|b| **b > INGEST_MAX_READINGS) {
        model.warnings.push(format!(
            "batch {}: more readings per request than ingest-api takes by default (INGEST_MAX_READINGS {}, INGEST_MAX_BODY_BYTES 1 MiB): such requests are refused unless those are raised",
            number(*b),
            number(INGEST_MAX_READINGS)
        ));
    }
    let rows = model.rows(&prices, rate, &batches);
    let title = format!(
        "$ per million readings at {} readings/s ({}, prices of {})",
        number(rate),
        prices.region,
        prices.as_of
    );
    let report = Report::new(prices, rate, &measured, template, &assumptions, model, rows);

    if let Some(svg) = &cli.svg {
        crate::svg::draw(svg, &title, &report.rows)?;
    }
    let json = serde_json::to_string_pretty(&report)?;
    match cli.json.as_deref() {
        Some(p) if p == Path::new("-") => {
            writeln!(out, "{json}")?;
        }
        Some(p) => {
            std::fs::write(p, json + "\n").with_context(|| format!("writing {}", p.display()))?;
            out.write_all(report.text().as_bytes())?;
        }
        None => out.write_all(report.text().as_bytes())?,
    }
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Counters of two line files of the same run (say, one per function's log group) added.
fn add(a: Measurements, b: Measurements) -> Measurements {
    use crate::measure::Function;
    fn u(x: Option<u64>, y: Option<u64>) -> Option<u64> {
        match (x, y) {
            (Some(x), Some(y)) => Some(x + y),
            (x, y) => x.or(y),
        }
    }
    fn f(x: Option<f64>, y: Option<f64>) -> Option<f64> {
        match (x, y) {
            (Some(x), Some(y)) => Some(x + y),
            (x, y) => x.or(y),
        }
    }
    fn func(a: Function, b: Function) -> Function {
        Function {
            invocations: u(a.invocations, b.invocations),
            readings: u(a.readings, b.readings),
            messages: u(a.messages, b.messages),
            payload_bytes: u(a.payload_bytes, b.payload_bytes),
            duration_ms: f(a.duration_ms, b.duration_ms),
            timed: u(a.timed, b.timed),
            copy_ms: f(a.copy_ms, b.copy_ms),
            cpu_ms: f(a.cpu_ms, b.cpu_ms),
            log_bytes: u(a.log_bytes, b.log_bytes),
            info_logged: match (a.info_logged, b.info_logged) {
                (Some(x), Some(y)) => Some(x && y),
                (x, y) => x.or(y),
            },
            billed_ms: f(a.billed_ms, b.billed_ms),
            billed_invocations: u(a.billed_invocations, b.billed_invocations),
            cold_starts: u(a.cold_starts, b.cold_starts),
            platform_log_bytes: u(a.platform_log_bytes, b.platform_log_bytes),
        }
    }
    Measurements {
        note: a.note.or(b.note),
        ingest: func(a.ingest, b.ingest),
        writer: func(a.writer, b.writer),
        other_log_bytes: u(a.other_log_bytes, b.other_log_bytes),
        rejected: u(a.rejected, b.rejected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> (Cli, ArgMatches) {
        let m = Cli::command()
            .try_get_matches_from(std::iter::once("cost").chain(args.iter().copied()))
            .unwrap();
        (Cli::from_arg_matches(&m).unwrap(), m)
    }

    #[test]
    fn counter_files_belong_to_the_run_before_them() {
        let (cli, m) = parse(&[
            "--rate",
            "1",
            "--prices",
            "p",
            "--run",
            "a.json",
            "--metrics",
            "a.emf",
            "--run",
            "b.json",
            "--measurements",
            "b.m.json",
            "--metrics",
            "b.emf",
        ]);
        let g = group(&cli, &m).unwrap();
        assert_eq!(
            g,
            vec![
                RunArgs {
                    run: "a.json".into(),
                    metrics: vec!["a.emf".into()],
                    measurements: vec![]
                },
                RunArgs {
                    run: "b.json".into(),
                    metrics: vec!["b.emf".into()],
                    measurements: vec!["b.m.json".into()]
                },
            ]
        );
        let (cli, m) = parse(&[
            "--metrics",
            "x.emf",
            "--run",
            "a.json",
            "--rate",
            "1",
            "--prices",
            "p",
        ]);
        let e = group(&cli, &m).unwrap_err().to_string();
        assert!(e.contains("--metrics x.emf comes before any --run"), "{e}");
    }
}
