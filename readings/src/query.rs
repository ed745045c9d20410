//! Query parameters of `GET /sensor`, checked, and the tutorial's response shape.

use std::collections::HashSet;

use serde::Serialize;

use crate::reading::{check_location, parse_time_str, Reading};
use crate::store::RecentQuery;

/// Most rows one request may ask for.
pub const MAX_LIMIT: i64 = 1000;

/// What is wrong with one parameter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamError {
    pub parameter: String,
    pub message: String,
}

/// Parses `location`, `limit` (1..=1000, default 5), `since` (inclusive) and `until`
/// (exclusive), each given at most once; anything else is an error.
pub fn parse_recent(raw_query: Option<&str>) -> Result<RecentQuery, Vec<ParamError>> {
    let pairs: Vec<(String, String)> = match serde_urlencoded::from_str(raw_query.unwrap_or("")) {
        Ok(p) => p,
        Err(e) => {
            return Err(vec![ParamError {
                parameter: String::new(),
                message: format!("query string is not valid: {e}"),
            }])
        }
    };
    let mut q = RecentQuery::default();
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    let mut fail = |parameter: &str, message: String| {
        errors.push(ParamError {
            parameter: parameter.to_owned(),
            message,
        })
    };
    for (name, value) in &pairs {
        if !seen.insert(name.as_str()) {
            fail(name, "is given more than once".into());
            continue;
        }
        match name.as_str() {
            "location" => match check_location(value) {
                Ok(l) => q.location = Some(l),
                Err(m) => fail(name, m),
            },
            "limit" => match value.trim().parse::<i64>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => q.limit = n,
                _ => fail(
                    name,
                    format!("must be a whole number from 1 to {MAX_LIMIT}, got '{value}'"),
                ),
            },
            "since" | "until" => match parse_time_str(value) {
                Ok(t) if name == "since" => q.since = Some(t),
                Ok(t) => q.until = Some(t),
                Err(m) => fail(name, m),
            },
            _ => fail(
                name,
                "unknown parameter; use location, limit, since or until".into(),
            ),
        }
    }
    if let (Some(s), Some(u)) = (q.since, q.until) {
        if s >= u {
            fail("until", "must be later than since".into());
        }
    }
    if errors.is_empty() {
        Ok(q)
    } else {
        Err(errors)
    }
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
    use chrono::DateTime;

    fn names(e: Vec<ParamError>) -> Vec<String> {
        e.into_iter().map(|p| p.parameter).collect()
    }

    #[test]
    fn defaults_are_the_tutorials() {
        assert_eq!(parse_recent(None).unwrap(), RecentQuery::default());
        assert_eq!(parse_recent(Some("")).unwrap().limit, 5);
    }

    #[test]
    fn every_parameter() {
        let q = parse_recent(Some(
            "location=living%20room&limit=1000&since=2024-03-15T00:00:00Z&until=1710511200",
        ))
        .unwrap();
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
    }
}
