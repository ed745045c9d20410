//! --ledger: every reading sent, with how its request ended, for an exact check against
//! `sensor_data` (`scripts/chaos` loads it with COPY and joins it with the table).
//!
//! CSV with a header, one reading a line: `location,time,outcome`. Locations (`lt-<run
//! id>-<n>`) and RFC 3339 times hold no commas or quotes. Outcomes:
//!
//! | outcome   | the request's last answer | what the pipeline owes |
//! |---|---|---|
//! | `acked`   | 2xx                       | the reading stored exactly once |
//! | `refused` | 4xx                       | the reading never stored |
//! | `unknown` | 5xx or none               | stored at most once (it may have been enqueued before the failure) |

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};

use crate::fleet::Reading;
use crate::stats::Outcome;

/// The ledger's header line.
pub const HEADER: &str = "location,time,outcome";

/// What a request's outcome means for its readings.
pub fn class(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Status(s) if (200..300).contains(s) => "acked",
        Outcome::Status(s) if (400..500).contains(s) => "refused",
        _ => "unknown",
    }
}

pub struct Ledger {
    path: PathBuf,
    out: Mutex<Writer>,
}

struct Writer {
    file: BufWriter<File>,
    /// The first write error; later writes are skipped and [`Ledger::finish`] reports it.
    error: Option<std::io::Error>,
}

impl Ledger {
    /// Creates (or replaces) `path` and writes the header.
    pub fn create(path: &Path) -> Result<Ledger> {
        let file =
            File::create(path).with_context(|| format!("--ledger: creating {}", path.display()))?;
        let mut file = BufWriter::new(file);
        writeln!(file, "{HEADER}")
            .with_context(|| format!("--ledger: writing {}", path.display()))?;
        Ok(Ledger {
            path: path.to_owned(),
            out: Mutex::new(Writer { file, error: None }),
        })
    }

    /// Appends the readings of one finished request.
    pub fn record(&self, readings: &[Reading], outcome: &Outcome) {
        let class = class(outcome);
        let mut w = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if w.error.is_some() {
            return;
        }
        for r in readings {
            if let Err(e) = writeln!(w.file, "{},{},{class}", r.location, r.time) {
                w.error = Some(e);
                return;
            }
        }
    }

    /// Flushes the file; fails with the first write error, if there was one. Call it once
    /// every request has finished.
    pub fn finish(&self) -> Result<()> {
        let mut w = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.path.display();
        if let Some(e) = w.error.take() {
            return Err(anyhow!("--ledger: writing {path}: {e}"));
        }
        w.file
            .flush()
            .with_context(|| format!("--ledger: writing {path}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reading_is_one_line_with_its_request_outcome() {
        let dir = std::env::temp_dir().join(format!("ledger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.csv");
        let ledger = Ledger::create(&path).unwrap();
        let r = |l: &str, t: &str| Reading {
            location: l.into(),
            temperature: 1.0,
            time: t.into(),
            micros: 0,
        };
        let two = [
            r("lt-a-0", "2026-01-01T00:00:00.000001Z"),
            r("lt-a-1", "2026-01-01T00:00:00.000002Z"),
        ];
        ledger.record(&two, &Outcome::Status(202));
        ledger.record(
            &[r("lt-a-2", "2026-01-01T00:00:01Z")],
            &Outcome::Status(400),
        );
        let lost = Outcome::Transport {
            kind: "timeout",
            detail: String::new(),
        };
        ledger.record(&[r("lt-a-3", "2026-01-01T00:00:02Z")], &lost);
        ledger.record(
            &[r("lt-a-4", "2026-01-01T00:00:03Z")],
            &Outcome::Status(503),
        );
        ledger.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "location,time,outcome\n\
             lt-a-0,2026-01-01T00:00:00.000001Z,acked\n\
             lt-a-1,2026-01-01T00:00:00.000002Z,acked\n\
             lt-a-2,2026-01-01T00:00:01Z,refused\n\
             lt-a-3,2026-01-01T00:00:02Z,unknown\n\
             lt-a-4,2026-01-01T00:00:03Z,unknown\n"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
