// Just over 500 lines, about 150 of them unit tests: the read routes' parameters and the
// questions they parse into (`RecentQuery`, `StatsQuery`, `Cursor`), kept together.
//! Query parameters of `GET /sensor`, checked, and the tutorial's response shape; the
//! questions the store answers ([`RecentQuery`], [`StatsQuery`]) are defined here, and the
//! store uses them.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::reading::{check_location, parse_time_str, Reading};

/// Most rows one request may ask for.
pub const MAX_LIMIT: i64 = 1000;

/// What is wrong with one parameter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamError {
    pub parameter: String,
    pub message: String,
}

/// Checks a query string against the parameters a route takes: each known parameter at
/// most once, nothing unknown. Parse functions record their own errors.
pub struct Params {
    pairs: Vec<(String, String)>,
    pub errors: Vec<ParamError>,
}

impl Params {
    pub fn parse(raw_query: Option<&str>, known: &[&str]) -> Params {
        let mut params = Params {
            pairs: Vec::new(),
            errors: Vec::new(),
        };
        match serde_urlencoded::from_str::<Vec<(String, String)>>(raw_query.unwrap_or("")) {
            Ok(pairs) => {
                let mut seen = HashSet::new();
                for (name, value) in pairs {
                    if !known.contains(&name.as_str()) {
                        let message = format!("unknown parameter; use {}", known.join(", "));
                        params.fail(&name, message);
                    } else if !seen.insert(name.clone()) {
                        params.fail(&name, "is given more than once".into());
                    } else {
                        params.pairs.push((name, value));
                    }
                }
            }
            Err(e) => params.fail("", format!("query string is not valid: {e}")),
        }
        params
    }

    pub fn fail(&mut self, parameter: &str, message: String) {
        self.errors.push(ParamError {
            parameter: parameter.to_owned(),
            message,
        });
    }

    /// The value of `name` run through `parse`, if given; a parse error is recorded.
    pub fn get<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let value = self.pairs.iter().find(|(n, _)| n == name)?.1.clone();
        parse(&value).map_err(|m| self.fail(name, m)).ok()
    }

    /// `since`/`until`, checked to be in order.
    pub fn time_range(&mut self) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        let since = self.get("since", parse_query_time);
        let until = self.get("until", parse_query_time);
        if let (Some(s), Some(u)) = (since, until) {
            if s >= u {
                self.fail("until", "must be later than since".into());
            }
        }
        (since, until)
    }

    pub fn format(&mut self) -> Format {
        self.get("format", |v| match v {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            _ => Err(format!("must be json or csv, got '{v}'")),
        })
        .unwrap_or(Format::Json)
    }

    pub fn finish<T>(self, value: T) -> Result<T, Vec<ParamError>> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(self.errors)
        }
    }
}

/// Earliest time a query may name: 0000-01-01T00:00:00Z, RFC 3339's first.
const MIN_QUERY_SECS: i64 = -62_167_219_200;
/// Latest time a query may name: 9999-12-31T23:59:59.999999Z, RFC 3339's last.
const MAX_QUERY_MICROS: i64 = 253_402_300_799_999_999;

/// A time as `since`/`until` take it ([`parse_time_str`]), within RFC 3339's years 0000 to
/// 9999: PostgreSQL cannot compare a timestamp much outside them.
pub fn parse_query_time(s: &str) -> Result<DateTime<Utc>, String> {
    check_query_time(parse_time_str(s)?)
}

fn check_query_time(t: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let micros = t.timestamp_micros();
    if t.timestamp() < MIN_QUERY_SECS || micros > MAX_QUERY_MICROS {
        return Err(format!(
            "{} is outside the years 0000 to 9999",
            t.to_rfc3339()
        ));
    }
    Ok(t)
}

/// Response body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Json,
    Csv,
}

/// Filters for the newest-readings query.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentQuery {
    pub location: Option<String>,
    /// Inclusive lower bound.
    pub since: Option<DateTime<Utc>>,
    /// Exclusive upper bound.
    pub until: Option<DateTime<Utc>>,
    /// Only rows after this one in (time, location) descending order: the next page.
    pub after: Option<Cursor>,
    /// How many rows, 1 to [`MAX_LIMIT`] (values outside are clamped).
    pub limit: i64,
}

impl Default for RecentQuery {
    fn default() -> Self {
        RecentQuery {
            location: None,
            since: None,
            until: None,
            after: None,
            limit: 5,
        }
    }
}

/// `GET /sensor`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecentParams {
    pub query: RecentQuery,
    pub format: Format,
}

/// Parses `location`, `limit` (1..=1000, default 5), `since` (inclusive), `until`
/// (exclusive), `cursor` (from a previous page's `Next-Cursor` header) and `format`.
pub fn parse_recent(raw_query: Option<&str>) -> Result<RecentParams, Vec<ParamError>> {
    let mut p = Params::parse(
        raw_query,
        &["location", "limit", "since", "until", "cursor", "format"],
    );
    let mut query = RecentQuery {
        location: p.get("location", check_location),
        ..RecentQuery::default()
    };
    if let Some(limit) = p.get("limit", |v| match v.trim().parse::<i64>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be a whole number from 1 to {MAX_LIMIT}, got '{v}'"
        )),
    }) {
        query.limit = limit;
    }
    (query.since, query.until) = p.time_range();
    query.after = p.get("cursor", Cursor::decode);
    let format = p.format();
    p.finish(RecentParams { query, format })
}

/// Where the next page of `GET /sensor` starts: just past the last row of this one, in the
/// order (time, location) descending.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub time: DateTime<Utc>,
    pub location: String,
}

impl Cursor {
    /// An opaque token: epoch microseconds and the hex of the location.
    pub fn encode(&self) -> String {
        let hex: String = self.location.bytes().map(|b| format!("{b:02x}")).collect();
        format!("{}.{hex}", self.time.timestamp_micros())
    }

    /// The inverse of [`Cursor::encode`]. Only what `encode` could have made passes: a time
    /// a query may name and a location as stored (trimmed, no control characters).
    pub fn decode(token: &str) -> Result<Cursor, String> {
        let bad = || "is not a cursor from a Next-Cursor header".to_owned();
        let (micros, hex) = token.split_once('.').ok_or_else(bad)?;
        let time = micros
            .parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_micros)
            .and_then(|t| check_query_time(t).ok())
            .ok_or_else(bad)?;
        if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| bad())?;
        let location = String::from_utf8(bytes).map_err(|_| bad())?;
        if check_location(&location).ok().as_deref() != Some(location.as_str()) {
            return Err(bad());
        }
        Ok(Cursor { time, location })
    }
}

/// `GET /sensor/latest`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LatestParams {
    /// Only these locations (comma-separated in the query); all when absent.
    pub locations: Option<Vec<String>>,
    pub format: Format,
}

/// Most locations one `/sensor/latest` request may name.
pub const MAX_LOCATIONS: usize = 1000;

pub fn parse_latest(raw_query: Option<&str>) -> Result<LatestParams, Vec<ParamError>> {
    let mut p = Params::parse(raw_query, &["location", "format"]);
    let locations = p.get("location", |v| {
        let list = v
            .split(',')
            .map(check_location)
            .collect::<Result<Vec<_>, _>>()?;
        if list.len() > MAX_LOCATIONS {
            return Err(format!(
                "names {} locations; at most {MAX_LOCATIONS}",
                list.len()
            ));
        }
        Ok(list)
    });
    let format = p.format();
    p.finish(LatestParams { locations, format })
}

/// Bucket widths `GET /sensor/stats` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    FiveMinutes,
    Hour,
    Day,
}

impl Bucket {
    pub fn seconds(self) -> i64 {
        match self {
            Bucket::FiveMinutes => 300,
            Bucket::Hour => 3600,
            Bucket::Day => 86_400,
        }
    }

    /// As a PostgreSQL interval literal.
    pub fn interval(self) -> &'static str {
        match self {
            Bucket::FiveMinutes => "5 minutes",
            Bucket::Hour => "1 hour",
            Bucket::Day => "1 day",
        }
    }
}

/// Most buckets one `/sensor/stats` request may span.
pub const MAX_BUCKETS: i64 = 1000;

/// A `/sensor/stats` question.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsQuery {
    pub bucket_secs: i64,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub location: Option<String>,
}

/// `GET /sensor/stats`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsParams {
    pub bucket: Bucket,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub location: Option<String>,
    pub format: Format,
}

/// Parses `bucket` (5m, 1h or 1d; default 1h), `since` (default: 24 h before `until`),
/// `until` (default: now), `location` and `format`; at most [`MAX_BUCKETS`] buckets.
pub fn parse_stats(
    raw_query: Option<&str>,
    now: DateTime<Utc>,
) -> Result<StatsParams, Vec<ParamError>> {
    let mut p = Params::parse(
        raw_query,
        &["bucket", "since", "until", "location", "format"],
    );
    let bucket = p
        .get("bucket", |v| match v {
            "5m" => Ok(Bucket::FiveMinutes),
            "1h" => Ok(Bucket::Hour),
            "1d" => Ok(Bucket::Day),
            _ => Err(format!("must be 5m, 1h or 1d, got '{v}'")),
        })
        .unwrap_or(Bucket::Hour);
    let (since, until) = p.time_range();
    let until = until.unwrap_or(now);
    let since = since.unwrap_or(until - chrono::TimeDelta::hours(24));
    let location = p.get("location", check_location);
    let format = p.format();
    let buckets = (until - since).num_seconds() / bucket.seconds() + 1;
    if since < until && buckets > MAX_BUCKETS {
        p.fail(
            "bucket",
            format!("the range spans {buckets} buckets; at most {MAX_BUCKETS}: narrow since/until or widen the bucket"),
        );
    }
    p.finish(StatsParams {
        bucket,
        since,
        until,
        location,
        format,
    })
}

/// A reading as the tutorial's GET returns it: time in whole epoch seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadingOut {
    pub time: i64,
    pub location: String,
    pub temperature: f64,
}

impl From<Reading> for ReadingOut {
    fn from(r: Reading) -> Self {
        ReadingOut {
            time: r.time.timestamp(),
            location: r.location,
            temperature: r.temperature,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(e: Vec<ParamError>) -> Vec<String> {
        e.into_iter().map(|p| p.parameter).collect()
    }

    #[test]
    fn defaults_are_the_tutorials() {
        assert_eq!(parse_recent(None).unwrap(), RecentParams::default());
        assert_eq!(parse_recent(Some("")).unwrap().query.limit, 5);
    }

    #[test]
    fn every_parameter() {
        let q = parse_recent(Some(
            "location=living%20room&limit=1000&since=2024-03-15T00:00:00Z&until=1710511200",
        ))
        .unwrap()
        .query;
        assert_eq!(q.location.as_deref(), Some("living room"));
        assert_eq!(q.limit, 1000);
        assert_eq!(q.since, DateTime::from_timestamp(1_710_460_800, 0));
        assert_eq!(q.until, DateTime::from_timestamp(1_710_511_200, 0));
    }

    #[test]
    fn bad_parameters_are_named() {
        assert_eq!(names(parse_recent(Some("limit=0")).unwrap_err()), ["limit"]);
        assert_eq!(
            names(parse_recent(Some("limit=1001")).unwrap_err()),
            ["limit"]
        );
        assert_eq!(
            names(parse_recent(Some("limit=five")).unwrap_err()),
            ["limit"]
        );
        assert_eq!(
            names(parse_recent(Some("since=tomorrow")).unwrap_err()),
            ["since"]
        );
        assert_eq!(
            names(parse_recent(Some("location=")).unwrap_err()),
            ["location"]
        );
        assert_eq!(names(parse_recent(Some("loc=x")).unwrap_err()), ["loc"]);
        assert_eq!(
            names(parse_recent(Some("limit=1&limit=2")).unwrap_err()),
            ["limit"]
        );
        assert_eq!(
            names(parse_recent(Some("since=1710511200&until=1710460800")).unwrap_err()),
            ["until"]
        );
        assert_eq!(
            names(parse_recent(Some("cursor=zz")).unwrap_err()),
            ["cursor"]
        );
        assert_eq!(
            names(parse_recent(Some("format=xml")).unwrap_err()),
            ["format"]
        );
    }

    #[test]
    fn cursors_round_trip() {
        let c = Cursor {
            time: DateTime::from_timestamp_micros(1_710_000_000_123_456).unwrap(),
            location: "Küche, 2.OG".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        assert!(Cursor::decode("12.zz").is_err());
        assert!(Cursor::decode("12.abc").is_err());
        assert!(Cursor::decode("12.+a").is_err(), "a sign is no hex digit");
        // Nothing a stored location cannot be: NUL (PostgreSQL refuses it in text), blank,
        // untrimmed.
        for hex in ["00", "", "20", "206120"] {
            assert!(Cursor::decode(&format!("0.{hex}")).is_err(), "{hex}");
        }
        // Times PostgreSQL cannot compare.
        assert!(Cursor::decode(&format!("{}.61", i64::MIN)).is_err());
        assert!(Cursor::decode("253402300800000000.61").is_err());
    }

    #[test]
    fn query_times_stay_within_rfc_3339_years() {
        for ok in [
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
            "-62167219200",
            "253402300799",
        ] {
            assert!(parse_query_time(ok).is_ok(), "{ok}");
        }
        // 1e15 reads as milliseconds: year 33658.
        for bad in ["-62167219201", "253402300800000", "1e15", "-8e18"] {
            assert!(parse_query_time(bad).is_err(), "{bad}");
        }
        assert_eq!(
            names(parse_recent(Some("since=-1e16")).unwrap_err()),
            ["since"]
        );
        let now = DateTime::from_timestamp(1_710_000_000, 0).unwrap();
        assert_eq!(
            names(parse_stats(Some("until=-1e16"), now).unwrap_err()),
            ["until"]
        );
    }

    #[test]
    fn latest_parameters() {
        assert_eq!(parse_latest(None).unwrap(), LatestParams::default());
        let p = parse_latest(Some("location=a,%20b&format=csv")).unwrap();
        assert_eq!(p.locations.unwrap(), ["a", "b"]);
        assert_eq!(p.format, Format::Csv);
        assert_eq!(
            names(parse_latest(Some("location=a,,b")).unwrap_err()),
            ["location"]
        );
    }

    #[test]
    fn stats_parameters_and_bucket_bound() {
        let now = DateTime::from_timestamp(1_710_000_000, 0).unwrap();
        let p = parse_stats(None, now).unwrap();
        assert_eq!(
            (p.bucket, p.until, (p.until - p.since).num_hours()),
            (Bucket::Hour, now, 24)
        );
        let p = parse_stats(Some("bucket=5m&since=1709990000&location=x"), now).unwrap();
        assert_eq!(p.bucket, Bucket::FiveMinutes);
        assert_eq!(p.location.as_deref(), Some("x"));
        // 1000 five-minute buckets fit, 1001 do not.
        let since = now - chrono::TimeDelta::seconds(300 * 999);
        assert!(parse_stats(Some(&format!("bucket=5m&since={}", since.timestamp())), now).is_ok());
        let since = now - chrono::TimeDelta::seconds(300 * 1000);
        assert_eq!(
            names(
                parse_stats(Some(&format!("bucket=5m&since={}", since.timestamp())), now)
                    .unwrap_err()
            ),
            ["bucket"]
        );
        assert_eq!(
            names(parse_stats(Some("bucket=2h"), now).unwrap_err()),
            ["bucket"]
        );
    }
}
