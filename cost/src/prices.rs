//! The price table: a TOML file with its region and date, every price required, none
//! unknown, none negative; each overridable with `--price key=value`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use thiserror::Error;

/// Every price the model uses: its key, unit and meaning.
pub const KEYS: &[(&str, &str, &str)] = &[
    (
        "lambda_gb_second",
        "$/GB-s",
        "Lambda arm64 duration, per GB-second",
    ),
    (
        "lambda_x86_gb_second",
        "$/GB-s",
        "Lambda x86_64 duration, per GB-second (the tutorial's function)",
    ),
    ("lambda_request", "$/invocation", "Lambda, per invocation"),
    (
        "api_http_request",
        "$/request",
        "API Gateway HTTP API, per request per 512 KiB increment",
    ),
    (
        "api_rest_request",
        "$/request",
        "API Gateway REST API, per request per 512 KiB increment",
    ),
    (
        "sqs_request",
        "$/request",
        "SQS standard queue, per request per 64 KiB chunk of payload",
    ),
    (
        "logs_ingest_gb",
        "$/GB",
        "CloudWatch Logs ingestion, per GB (2^30 bytes)",
    ),
    (
        "secrets_10k_calls",
        "$/10,000 calls",
        "Secrets Manager, per 10,000 API calls",
    ),
    (
        "secrets_secret_month",
        "$/secret-month",
        "Secrets Manager, per secret per month (fixed)",
    ),
    (
        "fargate_vcpu_hour",
        "$/vCPU-h",
        "Fargate Linux/ARM, per vCPU-hour",
    ),
    (
        "fargate_gb_hour",
        "$/GB-h",
        "Fargate Linux/ARM, per GB-hour",
    ),
];

#[derive(Debug, Error, PartialEq)]
pub enum PriceError {
    #[error("reading {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: not valid TOML: {reason}")]
    Syntax { path: String, reason: String },
    #[error("{path}: `{key}` is missing")]
    Missing { path: String, key: String },
    #[error("{path}: unknown key `{key}`{hint}")]
    Unknown {
        path: String,
        key: String,
        hint: String,
    },
    #[error("{path}: `{key}` must be {expected}, not {found}")]
    Type {
        path: String,
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("{path}: `{key}` is {value}: a price must be a finite number, zero or more")]
    Negative {
        path: String,
        key: String,
        value: f64,
    },
    #[error("--price `{text}`: expected KEY=VALUE, e.g. lambda_gb_second=0.0000133334")]
    OverrideSyntax { text: String },
}

/// A validated price table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prices {
    pub region: String,
    /// The date the figures were taken (YYYY-MM-DD).
    pub as_of: String,
    pub source: Option<String>,
    /// Every key of [`KEYS`], in dollars.
    pub prices: BTreeMap<String, f64>,
    /// Keys changed with `--price`, with the file's value.
    pub overridden: BTreeMap<String, f64>,
}

impl Prices {
    pub fn load(path: &Path) -> Result<Prices, PriceError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PriceError::Read {
            path: name.clone(),
            reason: e.to_string(),
        })?;
        Prices::parse(&text, &name)
    }

    /// Parses and validates a price file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Prices, PriceError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| PriceError::Syntax {
            path: path.into(),
            reason: e.message().to_owned(),
        })?;
        let err_path = || path.to_owned();
        for key in table.keys() {
            if !["region", "as_of", "source", "prices"].contains(&key.as_str()) {
                return Err(PriceError::Unknown {
                    path: err_path(),
                    key: key.clone(),
                    hint: " (the file holds region, as_of, source and [prices])".into(),
                });
            }
        }
        let text_field = |key: &str| -> Result<Option<String>, PriceError> {
            match table.get(key) {
                None => Ok(None),
                Some(toml::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
                Some(v) => Err(PriceError::Type {
                    path: err_path(),
                    key: key.into(),
                    expected: "a non-empty string",
                    found: describe(v),
                }),
            }
        };
        let missing = |key: &str| PriceError::Missing {
            path: err_path(),
            key: key.into(),
        };
        let region = text_field("region")?.ok_or_else(|| missing("region"))?;
        let as_of = text_field("as_of")?.ok_or_else(|| missing("as_of"))?;
        if !is_date(&as_of) {
            return Err(PriceError::Type {
                path: err_path(),
                key: "as_of".into(),
                expected: "a date as YYYY-MM-DD",
                found: format!("\"{as_of}\""),
            });
        }
        let source = text_field("source")?;
        let section = match table.get("prices") {
            Some(toml::Value::Table(t)) => t,
            Some(v) => {
                return Err(PriceError::Type {
                    path: err_path(),
                    key: "prices".into(),
                    expected: "a table ([prices])",
                    found: describe(v),
                })
            }
            None => return Err(missing("[prices]")),
        };
        for key in section.keys() {
            if !KEYS.iter().any(|(k, _, _)| k == key) {
                return Err(PriceError::Unknown {
                    path: err_path(),
                    key: format!("prices.{key}"),
                    hint: hint(key),
                });
            }
        }
        let mut prices = BTreeMap::new();
        for (key, _, _) in KEYS {
            let full = format!("prices.{key}");
            let value = match section.get(*key) {
                None => return Err(missing(&full)),
                Some(toml::Value::Float(f)) => *f,
                Some(toml::Value::Integer(i)) => *i as f64,
                Some(v) => {
                    return Err(PriceError::Type {
                        path: err_path(),
                        key: full,
                        expected: "a number",
                        found: describe(v),
                    })
                }
            };
            check(path, &full, value)?;
            prices.insert((*key).to_owned(), value);
        }
        Ok(Prices {
            region,
            as_of,
            source,
            prices,
            overridden: BTreeMap::new(),
        })
    }

    /// Applies one `--price key=value`.
    pub fn set(&mut self, text: &str) -> Result<(), PriceError> {
        let syntax = || PriceError::OverrideSyntax { text: text.into() };
        let (key, value) = text.split_once('=').ok_or_else(syntax)?;
        let key = key.trim();
        let key = key.strip_prefix("prices.").unwrap_or(key);
        if !KEYS.iter().any(|(k, _, _)| *k == key) {
            return Err(PriceError::Unknown {
                path: "--price".into(),
                key: key.into(),
                hint: hint(key),
            });
        }
        let value: f64 = value.trim().parse().map_err(|_| PriceError::Type {
            path: "--price".into(),
            key: key.into(),
            expected: "a number",
            found: format!("`{}`", value.trim()),
        })?;
        check("--price", key, value)?;
        if let Some(old) = self.prices.insert(key.to_owned(), value) {
            self.overridden.entry(key.to_owned()).or_insert(old);
        }
        Ok(())
    }

    /// The price of `key` (one of [`KEYS`]).
    pub fn get(&self, key: &str) -> f64 {
        // Every key of KEYS is present after validation; an unknown key is a programming
        // error that the tests catch, priced at zero rather than aborting a report.
        debug_assert!(self.prices.contains_key(key), "unknown price {key}");
        self.prices.get(key).copied().unwrap_or(0.0)
    }
}

fn check(path: &str, key: &str, value: f64) -> Result<(), PriceError> {
    if !value.is_finite() || value < 0.0 {
        return Err(PriceError::Negative {
            path: path.into(),
            key: key.into(),
            value,
        });
    }
    Ok(())
}

fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("the string \"{s}\""),
        toml::Value::Integer(i) => format!("the integer {i}"),
        toml::Value::Float(f) => format!("the number {f}"),
        toml::Value::Boolean(b) => format!("the boolean {b}"),
        toml::Value::Datetime(d) => format!("the date-time {d}"),
        toml::Value::Array(_) => "an array".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

/// YYYY-MM-DD with a plausible month and day.
fn is_date(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return false;
    };
    let num = |p: &str, len: usize| {
        (p.len() == len && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u32>().ok())
            .flatten()
    };
    matches!(
        (num(y, 4), num(m, 2), num(d, 2)),
        (Some(_), Some(1..=12), Some(1..=31))
    )
}

/// " (known keys: ...)" or a near miss.
fn hint(key: &str) -> String {
    let close = KEYS
        .iter()
        .map(|(k, _, _)| *k)
        .find(|k| k.contains(key) || key.contains(k) || edit_distance(k, key) <= 3);
    match close {
        Some(k) => format!(" (did you mean `{k}`?)"),
        None => format!(
            " (known keys: {})",
            KEYS.iter()
                .map(|(k, _, _)| *k)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../prices/us-east-1.toml");

    fn without(key: &str) -> String {
        SHIPPED
            .lines()
            .filter(|l| !l.starts_with(&format!("{key} =")))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_shipped_table_is_valid_and_complete() {
        let p = Prices::parse(SHIPPED, "us-east-1.toml").unwrap();
        assert_eq!(p.region, "us-east-1");
        assert_eq!(p.as_of, "2026-06-17");
        assert_eq!(p.prices.len(), KEYS.len());
        assert_eq!(p.get("lambda_gb_second"), 0.0000133334);
        assert_eq!(p.get("api_http_request"), 0.000001);
        assert_eq!(p.get("sqs_request"), 0.0000004);
        assert_eq!(p.get("fargate_vcpu_hour"), 0.03238);
    }

    #[test]
    fn a_missing_price_is_named() {
        for (key, _, _) in KEYS {
            let e = Prices::parse(&without(key), "p.toml").unwrap_err();
            assert_eq!(
                e,
                PriceError::Missing {
                    path: "p.toml".into(),
                    key: format!("prices.{key}")
                }
            );
            assert_eq!(e.to_string(), format!("p.toml: `prices.{key}` is missing"));
        }
        let e = Prices::parse(&without("as_of"), "p.toml").unwrap_err();
        assert_eq!(e.to_string(), "p.toml: `as_of` is missing");
    }

    #[test]
    fn negative_and_non_numeric_prices_are_refused_by_name() {
        let bad = SHIPPED.replace("sqs_request = 0.0000004", "sqs_request = -0.0000004");
        let e = Prices::parse(&bad, "p.toml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.toml: `prices.sqs_request` is -0.0000004: a price must be a finite number, zero or more"
        );
        let bad = SHIPPED.replace("logs_ingest_gb = 0.50", "logs_ingest_gb = \"0.50\"");
        let e = Prices::parse(&bad, "p.toml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.toml: `prices.logs_ingest_gb` must be a number, not the string \"0.50\""
        );
        let bad = SHIPPED.replace("logs_ingest_gb = 0.50", "logs_ingest_gb = nan");
        assert!(matches!(
            Prices::parse(&bad, "p.toml"),
            Err(PriceError::Negative { .. })
        ));
        // Whole numbers are prices too.
        let whole = SHIPPED.replace("logs_ingest_gb = 0.50", "logs_ingest_gb = 1");
        assert_eq!(
            Prices::parse(&whole, "p").unwrap().get("logs_ingest_gb"),
            1.0
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_a_hint() {
        let bad = SHIPPED.replace(
            "sqs_request = 0.0000004",
            "sqs_request = 0.0000004\nsqs_requests = 1",
        );
        let e = Prices::parse(&bad, "p.toml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.toml: unknown key `prices.sqs_requests` (did you mean `sqs_request`?)"
        );
        let bad = format!("currency = \"EUR\"\n{SHIPPED}");
        let e = Prices::parse(&bad, "p.toml").unwrap_err();
        assert!(e.to_string().contains("unknown key `currency`"), "{e}");
        let e = Prices::parse(&SHIPPED.replace("2026-06-17", "June 2026"), "p").unwrap_err();
        assert!(e.to_string().contains("YYYY-MM-DD"), "{e}");
        let e = Prices::parse("region = [", "p").unwrap_err();
        assert!(matches!(e, PriceError::Syntax { .. }), "{e}");
    }

    #[test]
    fn overrides_replace_and_are_remembered() {
        let mut p = Prices::parse(SHIPPED, "p").unwrap();
        p.set("lambda_gb_second=0.00002").unwrap();
        p.set("prices.sqs_request = 0").unwrap();
        assert_eq!(p.get("lambda_gb_second"), 0.00002);
        assert_eq!(p.get("sqs_request"), 0.0);
        assert_eq!(p.overridden["lambda_gb_second"], 0.0000133334);
        // A second override keeps the file's value as the original.
        p.set("lambda_gb_second=0.00003").unwrap();
        assert_eq!(p.overridden["lambda_gb_second"], 0.0000133334);
        for (bad, needle) in [
            ("lambda_gb_second", "expected KEY=VALUE"),
            ("lambda_gb_sec=1", "did you mean `lambda_gb_second`"),
            ("lambda_gb_second=cheap", "must be a number"),
            ("lambda_gb_second=-1", "zero or more"),
            ("lambda_gb_second=inf", "zero or more"),
        ] {
            let e = p.set(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn dates() {
        assert!(is_date("2026-06-17"));
        for bad in ["2026-6-17", "2026-13-01", "2026-06-00", "x", "2026-06-17-1"] {
            assert!(!is_date(bad), "{bad}");
        }
    }
}
