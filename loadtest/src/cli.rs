//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::report::Threshold;

const LONG_ABOUT: &str = "\
Simulates a fleet of sensors and sends their readings to the ingest API (POST /sensor) at a \
constant arrival rate, optionally mixed with GET /sensor calls to the query API, then prints \
latency percentiles, status codes and the achieved throughput.

Open model: requests are scheduled at fixed times from the target --rate, whether or not \
earlier ones have answered, and each latency is measured from the request's scheduled time. \
A stall therefore shows up in the latency of every request scheduled during it instead of \
being hidden by a sender that waits (coordinated omission). When --concurrency requests are \
in flight, the next scheduled sends wait for a free slot and that wait counts as latency.

Every reading carries a `time` (RFC 3339, its send time) and a location \
`lt-<run id>-<sensor n>`, unique per run, so (location, time) identifies each reading.

--verify DATABASE_URL checks the whole pipeline: from the start of the run, every 100 ms, it \
asks the batch records which accepted requests (by the batch ids the API answered) have all \
their readings written, which the writer records in the same transaction as it writes them; \
after the last request it waits until every accepted request is written or --verify-timeout \
passes, then counts this run's rows in sensor_data and reports readings lost, duplicated and \
stored although their request failed. The ingest-to-queryable lag of a reading is the time \
of the first poll that found its whole request written minus its send time; its p50/p99 are \
reported (resolution: the poll interval).";

const AFTER_HELP: &str = "\
Examples:
  # against scripts/dev (source .local/dev/env sets INGEST_URL, QUERY_URL, DATABASE_URL)
  loadtest --rate 500 --duration 30s
  loadtest --rate 2000 --batch 50 --sensors 1000 --duration 1m --svg run.svg
  loadtest --rate 200 --query-ratio 0.2 --duration 20s
  loadtest --rate 1000 --batch 10 --duration 30s --verify \"$DATABASE_URL\"

  # as under faults (scripts/chaos): half the requests keyed and retried for 90 s, 1% invalid,
  # every reading's outcome written for an exact check
  loadtest --rate 200 --idempotency-share 0.5 --retry-for 90s --invalid-share 0.01 \\
      --ledger run.csv --duration 2m

  # a CI gate: exit code 2 on any breach
  loadtest --rate 500 --duration 30s --json result.json \\
      --threshold 'p99<50ms' --threshold 'errors<0.1%' --threshold 'rate>490'

Thresholds: p50, p90, p99, p99.9, p99.99, max with a unit (us, ms, s), e.g. 'p99<50ms';
errors as a share of requests ('errors<0.1%') or a count ('errors<5'); rate, the achieved
readings/s ('rate>900'). Operators: <, <=, >, >=.

Exit codes:
  0    done, every threshold met
  1    an error: bad arguments, the target or the database unreachable
  2    a threshold breached, or readings lost or duplicated (--verify)
  130  interrupted by Ctrl-C (the summary and files cover what was sent)";

/// Load generator for the sensor pipeline.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version, about, long_about = LONG_ABOUT, after_help = AFTER_HELP)]
pub struct Args {
    /// The ingest API's POST /sensor URL.
    #[arg(long, env = "INGEST_URL", value_name = "URL")]
    pub ingest_url: String,

    /// The query API's GET /sensor URL (needed with --query-ratio).
    #[arg(long, env = "QUERY_URL", value_name = "URL")]
    pub query_url: Option<String>,

    /// Target readings per second (open model: a constant arrival rate).
    #[arg(long, default_value_t = 100.0, value_parser = positive_f64)]
    pub rate: f64,

    /// Simulated sensors, each with its own location and drifting temperature.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub sensors: u32,

    /// Readings per request: 1 sends one JSON object, more send a JSON array.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub batch: u32,

    /// How long to send, e.g. 30s, 2m, 1h [default: 10s unless --readings is given].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Stop after sending this many readings (with --duration, whichever comes first).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub readings: Option<u64>,

    /// Most requests in flight; further scheduled sends wait (and the wait counts as latency).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// Share of requests that are GET /sensor?location=<a sensor of the run> calls to
    /// --query-url, from 0 to below 1; they come on top of the ingest requests, which keep
    /// the target --rate.
    #[arg(long, default_value_t = 0.0, value_parser = query_ratio)]
    pub query_ratio: f64,

    /// Sent as `Authorization: Bearer <key>` on every request.
    #[arg(
        long,
        env = "LOADTEST_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,

    /// Per-request timeout.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Fail (exit code 2) unless this holds, e.g. 'p99<50ms', 'errors<0.1%', 'rate>900'.
    /// Repeatable.
    #[arg(long = "threshold", value_name = "EXPR")]
    pub thresholds: Vec<Threshold>,

    /// Write the whole summary, with the per-second timeline, as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Draw latency (p50/p99/max per second) and throughput over time as an SVG to FILE.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,

    /// Check in PostgreSQL that every accepted reading arrived exactly once, and measure the
    /// ingest-to-queryable lag (see above). Plain (non-TLS) connections only.
    #[arg(long, value_name = "DATABASE_URL")]
    pub verify: Option<String>,

    /// Longest wait after the last request for the readings to arrive (with --verify).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub verify_timeout: Duration,

    /// How long --verify goes on while the database cannot be counted (down, restarting,
    /// out of connections) before it gives up.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub verify_patience: Duration,

    /// Share of ingest requests, from 0 to 1, that carry an `Idempotency-Key` header
    /// (`lt-<run id>-<request n>`), so that retrying them is safe.
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub idempotency_share: f64,

    /// Retry a failed ingest request (a 5xx answer or no answer) for up to this long after
    /// its first send, with jittered backoff, the same body and the same `Idempotency-Key`.
    /// A request without a key is retried only when it never reached the server (the
    /// connection was refused), since another try could store its readings twice.
    /// The latency and the outcome counted are the last try's.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub retry_for: Option<Duration>,

    /// Share of ingest requests, from 0 to below 1, made invalid on purpose (one reading's
    /// temperature out of range): the API must refuse them whole (400) and none of their
    /// readings may be stored.
    #[arg(long, default_value_t = 0.0, value_parser = query_ratio)]
    pub invalid_share: f64,

    /// Write every reading sent to FILE as CSV, `location,time,outcome`, where outcome is
    /// `acked` (2xx), `refused` (4xx) or `unknown` (5xx or no answer, after retries): what
    /// an exact check against sensor_data needs (see scripts/chaos).
    #[arg(long, value_name = "FILE")]
    pub ledger: Option<PathBuf>,

    /// No live progress (it is also hidden when stderr is not a terminal).
    #[arg(long, short)]
    pub quiet: bool,
}

impl Args {
    /// The send window: --duration, else 10 s unless --readings bounds the run.
    pub fn duration(&self) -> Option<Duration> {
        match (self.duration, self.readings) {
            (Some(d), _) => Some(d),
            (None, Some(_)) => None,
            (None, None) => Some(Duration::from_secs(10)),
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 30s, 2m, 500ms)"))?;
    if d.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(d)
}

fn positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a positive number")),
    }
}

fn share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a number from 0 to 1")),
    }
}

fn query_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a number from 0 to below 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(
            ["loadtest", "--ingest-url", "http://127.0.0.1:1/sensor"]
                .iter()
                .chain(args),
        )
    }

    #[test]
    fn defaults_and_duration() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.duration(), Some(Duration::from_secs(10)));
        let a = parse(&["--readings", "100"]).unwrap();
        assert_eq!(a.duration(), None);
        let a = parse(&["--duration", "1m 30s", "--readings", "5"]).unwrap();
        assert_eq!(a.duration(), Some(Duration::from_secs(90)));
        assert_eq!(
            (a.idempotency_share, a.invalid_share, a.retry_for),
            (0.0, 0.0, None)
        );
        let a = parse(&["--idempotency-share", "1", "--retry-for", "90s"]).unwrap();
        assert_eq!(a.idempotency_share, 1.0);
        assert_eq!(a.retry_for, Some(Duration::from_secs(90)));
    }

    #[test]
    fn refuses_bad_values() {
        for bad in [
            &["--rate", "0"][..],
            &["--rate", "abc"],
            &["--batch", "0"],
            &["--duration", "0s"],
            &["--duration", "soon"],
            &["--query-ratio", "1"],
            &["--threshold", "p42<1ms"],
            &["--idempotency-share", "1.5"],
            &["--invalid-share", "1"],
            &["--retry-for", "0s"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
