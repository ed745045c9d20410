//! The reading model and the rules a reading must pass before the pipeline accepts it.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Serialize;
use serde_json::Value;

/// Longest location name, in characters, after trimming.
pub const MAX_LOCATION_CHARS: usize = 128;

/// The fields a reading may carry. Anything else is rejected.
pub const FIELDS: [&str; 3] = ["location", "temperature", "time"];

/// Epoch numbers at or above this magnitude are milliseconds; below it, seconds.
/// 1e11 seconds is the year 5138, 1e11 milliseconds is March 1973.
const EPOCH_MILLIS_THRESHOLD: f64 = 1e11;

/// One validated sensor reading, as stored in `sensor_data`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub time: DateTime<Utc>,
    pub location: String,
    pub temperature: f64,
}

/// Bounds a reading must respect. Built from configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub temperature_min: f64,
    pub temperature_max: f64,
    /// How far in the future (relative to the server's receive time) a reading's time may be.
    pub max_future_skew: TimeDelta,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            temperature_min: -150.0,
            temperature_max: 1000.0,
            max_future_skew: TimeDelta::minutes(5),
        }
    }
}

/// What is wrong with one field of one reading.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    /// Position of the reading in the request (0-based).
    pub index: usize,
    /// The field at fault; empty when the reading as a whole is at fault.
    pub field: String,
    pub message: String,
}

impl FieldError {
    fn new(index: usize, field: &str, message: impl Into<String>) -> Self {
        FieldError {
            index,
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// Checks one JSON value as a reading.
///
/// `received_at` is the server's receive time: it stands in for a missing `time` and anchors
/// the future-skew rule. Every problem found is pushed to `errors`; the reading is returned
/// only when there were none.
pub fn validate(
    value: &Value,
    index: usize,
    received_at: DateTime<Utc>,
    limits: &Limits,
    errors: &mut Vec<FieldError>,
) -> Option<Reading> {
    let before = errors.len();
    let Some(object) = value.as_object() else {
        errors.push(FieldError::new(
            index,
            "",
            format!(
                "a reading must be a JSON object like {{\"location\":\"bedroom\",\"temperature\":21.5}}, found {}",
                kind_of(value)
            ),
        ));
        return None;
    };

    for key in object.keys() {
        if !FIELDS.contains(&key.as_str()) {
            errors.push(FieldError::new(
                index,
                key,
                "unknown field; a reading has only location, temperature and an optional time",
            ));
        }
    }

    let location = match object.get("location") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new(index, "location", "is required"));
            None
        }
        Some(Value::String(raw)) => check_location(raw)
            .map_err(|message| errors.push(FieldError::new(index, "location", message)))
            .ok(),
        Some(other) => {
            errors.push(FieldError::new(
                index,
                "location",
                format!("must be a string, found {}", kind_of(other)),
            ));
            None
        }
    };

    let temperature = match object.get("temperature") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new(index, "temperature", "is required"));
            None
        }
        Some(Value::Number(n)) => match n.as_f64() {
            Some(t) if temperature_in_range(t, limits) => Some(t),
            _ => {
                errors.push(FieldError::new(
                    index,
                    "temperature",
                    format!(
                        "{n} is outside the accepted range {} to {}",
                        limits.temperature_min, limits.temperature_max
                    ),
                ));
                None
            }
        },
        Some(other) => {
            errors.push(FieldError::new(
                index,
                "temperature",
                format!("must be a number, found {}", kind_of(other)),
            ));
            None
        }
    };

    let time = match object.get("time") {
        None | Some(Value::Null) => Some(received_at),
        Some(v) => parse_time(v)
            .and_then(|t| check_time(t, received_at, limits))
            .map_err(|message| errors.push(FieldError::new(index, "time", message)))
            .ok(),
    };

    if errors.len() > before {
        return None;
    }
    Some(Reading {
        time: time?,
        location: location?,
        temperature: temperature?,
    })
}

/// Whether a temperature is one the limits accept.
fn temperature_in_range(t: f64, limits: &Limits) -> bool {
    t.is_finite() && t >= limits.temperature_min && t <= limits.temperature_max
}

/// Trims a location and checks it; returns the value to store.
pub fn check_location(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err("must not be empty".into());
    }
    let chars = trimmed.chars().count();
    if chars > MAX_LOCATION_CHARS {
        return Err(format!(
            "is {chars} characters long; at most {MAX_LOCATION_CHARS} are allowed"
        ));
    }
    if let Some(c) = trimmed.chars().find(|c| c.is_control()) {
        return Err(format!(
            "must not contain control characters (found U+{:04X})",
            c as u32
        ));
    }
    Ok(trimmed.to_owned())
}

/// Parses a time given as RFC 3339 text, or as epoch seconds or milliseconds (a JSON number,
/// or text holding one). Magnitudes of 1e11 and above are read as milliseconds.
pub fn parse_time(value: &Value) -> Result<DateTime<Utc>, String> {
    match value {
        Value::String(s) => parse_time_str(s),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => TimeInput::Int(i).parse(),
            (None, Some(f)) => TimeInput::Float(f).parse(),
            (None, None) => Err(format!("{n} is not a usable epoch time")),
        },
        other => Err(format!(
            "must be an RFC 3339 string or epoch seconds/milliseconds, found {}",
            kind_of(other)
        )),
    }
}

/// Text form of [`parse_time`]: RFC 3339, or a decimal epoch number.
pub fn parse_time_str(s: &str) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(i) = s.parse::<i64>() {
        return from_epoch_int(i);
    }
    if let Ok(f) = s.parse::<f64>() {
        if f.is_finite() {
            return from_epoch_float(f);
        }
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!("'{s}' is not RFC 3339 (e.g. 2024-03-15T12:00:00Z) or epoch seconds: {e}")
        })
}

fn from_epoch_int(i: i64) -> Result<DateTime<Utc>, String> {
    let t = if (i as f64).abs() >= EPOCH_MILLIS_THRESHOLD {
        DateTime::from_timestamp_millis(i)
    } else {
        DateTime::from_timestamp(i, 0)
    };
    t.ok_or_else(|| format!("{i} is out of range for an epoch time"))
}

fn from_epoch_float(f: f64) -> Result<DateTime<Utc>, String> {
    let micros = if f.abs() >= EPOCH_MILLIS_THRESHOLD {
        f * 1e3
    } else {
        f * 1e6
    };
    if !micros.is_finite() || micros.abs() > i64::MAX as f64 {
        return Err(format!("{f} is out of range for an epoch time"));
    }
    DateTime::from_timestamp_micros(micros.round() as i64)
        .ok_or_else(|| format!("{f} is out of range for an epoch time"))
}

fn check_time(
    t: DateTime<Utc>,
    received_at: DateTime<Utc>,
    limits: &Limits,
) -> Result<DateTime<Utc>, String> {
    if t < DateTime::UNIX_EPOCH {
        return Err(format!(
            "{} is before 1970-01-01T00:00:00Z; the sensor's clock is probably unset",
            t.to_rfc3339()
        ));
    }
    // Checked: a skew from the configuration can run off chrono's calendar. Past its end no
    // reading is too far ahead; before its start every one is.
    let too_far_ahead = match received_at.checked_add_signed(limits.max_future_skew) {
        Some(latest) => t > latest,
        None => limits.max_future_skew < TimeDelta::zero(),
    };
    if too_far_ahead {
        return Err(format!(
            "{} is more than {} s in the future (server time {})",
            t.to_rfc3339(),
            limits.max_future_skew.num_seconds(),
            received_at.to_rfc3339()
        ));
    }
    Ok(t)
}

/// A reading's `time` as a body states it, before it is checked: text, or an epoch number.
#[derive(Debug, Clone, PartialEq)]
pub enum TimeInput<'a> {
    Text(Cow<'a, str>),
    Int(i64),
    Float(f64),
}

impl TimeInput<'_> {
    /// The instant it names (see [`parse_time`]).
    pub fn parse(&self) -> Result<DateTime<Utc>, String> {
        match self {
            TimeInput::Text(s) => parse_time_str(s),
            TimeInput::Int(i) => from_epoch_int(*i),
            TimeInput::Float(f) => from_epoch_float(*f),
        }
    }
}

/// A reading object as a well-formed body states it, its text borrowed from the body.
///
/// Ingest's fast path: it parses only an object holding `location` (a string),
/// `temperature` (a number) and optionally `time` (text, a number or null), each once, and
/// nothing else. Whatever else a body holds fails to parse, and the caller falls back to
/// [`validate`] on a [`Value`], which names every problem. [`Submitted::check`] accepts
/// exactly the readings [`validate`] accepts, with the same result.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted<'a> {
    pub location: Cow<'a, str>,
    pub temperature: f64,
    pub time: Option<TimeInput<'a>>,
}

impl Submitted<'_> {
    /// The reading, when it passes every rule of [`validate`]; `None` when any fails.
    pub fn check(&self, received_at: DateTime<Utc>, limits: &Limits) -> Option<Reading> {
        let location = check_location(&self.location).ok()?;
        if !temperature_in_range(self.temperature, limits) {
            return None;
        }
        let time = match &self.time {
            None => received_at,
            Some(t) => t
                .parse()
                .and_then(|t| check_time(t, received_at, limits))
                .ok()?,
        };
        Some(Reading {
            time,
            location,
            temperature: self.temperature,
        })
    }
}

impl<'de> Deserialize<'de> for Submitted<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Only a map: a derived struct would also take an array of the three values.
        deserializer.deserialize_map(SubmittedVisitor)
    }
}

struct SubmittedVisitor;

impl<'de> Visitor<'de> for SubmittedVisitor {
    type Value = Submitted<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a reading object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut location = None;
        let mut temperature = None;
        let mut time = None;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            let duplicate = match key.0.as_ref() {
                "location" => location.replace(map.next_value::<Text<'de>>()?.0).is_some(),
                "temperature" => temperature.replace(map.next_value::<f64>()?).is_some(),
                "time" => time
                    .replace(map.next_value::<Option<TimeInput<'de>>>()?)
                    .is_some(),
                other => {
                    map.next_value::<IgnoredAny>()?;
                    return Err(de::Error::unknown_field(other, &FIELDS));
                }
            };
            if duplicate {
                return Err(de::Error::custom(format!("duplicate field {}", key.0)));
            }
        }
        Ok(Submitted {
            location: location.ok_or_else(|| de::Error::missing_field("location"))?,
            temperature: temperature.ok_or_else(|| de::Error::missing_field("temperature"))?,
            time: time.flatten(),
        })
    }
}

/// A JSON string, borrowed from the body unless it holds escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

impl<'de> Deserialize<'de> for TimeInput<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TimeVisitor;
        impl<'de> Visitor<'de> for TimeVisitor {
            type Value = TimeInput<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a time as text or an epoch number")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(TimeInput::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TimeInput::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(TimeInput::Int(v))
            }
            // As `serde_json::Number::as_i64`, then `as_f64`.
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(v).map_or(TimeInput::Float(v as f64), TimeInput::Int))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(TimeInput::Float(v))
            }
        }
        deserializer.deserialize_any(TimeVisitor)
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-03-15T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn check(v: Value) -> Result<Reading, Vec<FieldError>> {
        let mut errors = Vec::new();
        validate(&v, 3, now(), &Limits::default(), &mut errors).ok_or(errors)
    }

    fn fields(v: Value) -> Vec<String> {
        check(v).unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn tutorial_body_is_accepted_with_receive_time() {
        let r = check(json!({"location": "bedroom", "temperature": 66})).unwrap();
        assert_eq!(
            r,
            Reading {
                time: now(),
                location: "bedroom".into(),
                temperature: 66.0
            }
        );
    }

    #[test]
    fn location_is_trimmed_and_bounded() {
        let r = check(json!({"location": "  attic \t", "temperature": 1})).unwrap();
        assert_eq!(r.location, "attic");
        let max = "é".repeat(MAX_LOCATION_CHARS);
        assert_eq!(
            check(json!({"location": max, "temperature": 1}))
                .unwrap()
                .location,
            max
        );
        let over = "a".repeat(MAX_LOCATION_CHARS + 1);
        let e = check(json!({"location": over, "temperature": 1})).unwrap_err();
        assert_eq!(e[0].field, "location");
        assert!(e[0].message.contains("129 characters"), "{}", e[0].message);
        assert_eq!(e[0].index, 3);
    }

    #[test]
    fn location_rules() {
        assert_eq!(
            fields(json!({"location": "   ", "temperature": 1})),
            ["location"]
        );
        assert_eq!(
            fields(json!({"location": "", "temperature": 1})),
            ["location"]
        );
        assert_eq!(
            fields(json!({"location": "a\u{7}b", "temperature": 1})),
            ["location"]
        );
        assert_eq!(
            fields(json!({"location": "a\nb", "temperature": 1})),
            ["location"]
        );
        assert_eq!(
            fields(json!({"location": 5, "temperature": 1})),
            ["location"]
        );
        assert_eq!(
            fields(json!({"location": null, "temperature": 1})),
            ["location"]
        );
        assert_eq!(fields(json!({"temperature": 1})), ["location"]);
    }

    #[test]
    fn temperature_rules_and_boundaries() {
        let l = Limits::default();
        assert!(check(json!({"location": "x", "temperature": l.temperature_min})).is_ok());
        assert!(check(json!({"location": "x", "temperature": l.temperature_max})).is_ok());
        assert_eq!(
            fields(json!({"location": "x", "temperature": l.temperature_max + 0.001})),
            ["temperature"]
        );
        assert_eq!(
            fields(json!({"location": "x", "temperature": l.temperature_min - 0.001})),
            ["temperature"]
        );
        assert_eq!(
            fields(json!({"location": "x", "temperature": "66"})),
            ["temperature"]
        );
        assert_eq!(fields(json!({"location": "x"})), ["temperature"]);
        assert_eq!(
            fields(json!({"location": "x", "temperature": true})),
            ["temperature"]
        );
        // Fahrenheit and Celsius readings of real places both pass the default range.
        assert!(check(json!({"location": "x", "temperature": -128.6})).is_ok());
        assert!(check(json!({"location": "x", "temperature": 134.1})).is_ok());
    }

    #[test]
    fn custom_range_applies() {
        let limits = Limits {
            temperature_min: 0.0,
            temperature_max: 50.0,
            ..Limits::default()
        };
        let mut errors = Vec::new();
        assert!(validate(
            &json!({"location": "x", "temperature": 66}),
            0,
            now(),
            &limits,
            &mut errors
        )
        .is_none());
        assert_eq!(errors[0].field, "temperature");
        assert!(
            errors[0].message.contains("0 to 50"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn time_formats() {
        let want = now() - TimeDelta::hours(1);
        for t in [
            json!("2024-03-15T11:00:00Z"),
            json!("2024-03-15T12:00:00+01:00"),
            json!(want.timestamp()),
            json!(want.timestamp_millis()),
            json!(want.timestamp().to_string()),
            json!(want.timestamp() as f64),
        ] {
            let r = check(json!({"location": "x", "temperature": 1, "time": t.clone()}))
                .unwrap_or_else(|e| panic!("{t}: {e:?}"));
            assert_eq!(r.time, want, "{t}");
        }
        let r = check(json!({"location": "x", "temperature": 1, "time": 1710500000.25})).unwrap();
        assert_eq!(r.time.timestamp_micros(), 1_710_500_000_250_000);
        let r = check(
            json!({"location": "x", "temperature": 1, "time": "2024-03-15T11:00:00.123456Z"}),
        )
        .unwrap();
        assert_eq!(r.time.timestamp_subsec_micros(), 123_456);
    }

    #[test]
    fn time_rules() {
        let skew = Limits::default().max_future_skew;
        let edge = now() + skew;
        assert!(
            check(json!({"location": "x", "temperature": 1, "time": edge.to_rfc3339()})).is_ok()
        );
        let over = edge + TimeDelta::seconds(1);
        let e = check(json!({"location": "x", "temperature": 1, "time": over.to_rfc3339()}))
            .unwrap_err();
        assert_eq!(e[0].field, "time");
        assert!(e[0].message.contains("in the future"), "{}", e[0].message);
        assert_eq!(
            fields(json!({"location": "x", "temperature": 1, "time": -5})),
            ["time"]
        );
        assert_eq!(
            fields(json!({"location": "x", "temperature": 1, "time": "yesterday"})),
            ["time"]
        );
        assert_eq!(
            fields(json!({"location": "x", "temperature": 1, "time": [1]})),
            ["time"]
        );
        assert_eq!(
            fields(json!({"location": "x", "temperature": 1, "time": 1e300})),
            ["time"]
        );
        // null means "absent": the receive time is used.
        assert_eq!(
            check(json!({"location": "x", "temperature": 1, "time": null}))
                .unwrap()
                .time,
            now()
        );
    }

    #[test]
    fn unknown_fields_and_non_objects_are_named() {
        let e = check(json!({"location": "x", "temperature": 1, "humidity": 40})).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].field, "humidity");
        assert!(e[0].message.contains("unknown field"));
        let e = check(json!([1, 2])).unwrap_err();
        assert_eq!(e[0].field, "");
        assert!(e[0].message.contains("found an array"));
    }

    #[test]
    fn every_problem_of_a_reading_is_reported() {
        let mut f = fields(json!({"location": "", "temperature": "hot", "time": "soon", "x": 1}));
        f.sort();
        assert_eq!(f, ["location", "temperature", "time", "x"]);
    }
}
