//! Properties of everything that parses what a client or a queue hands the pipeline:
//! reading validation (`reading`), request bodies (`ingest`), queue envelopes (`envelope`),
//! cursors and query parameters (`query`). Arbitrary input and near misses of valid input
//! give errors, never panics; what is encoded decodes to the same thing.
//!
//! Each property runs proptest's default 256 cases (`PROPTEST_CASES=5000` searches further);
//! the whole file takes a few seconds.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use proptest::sample::Index;
use readings::ingest::{self, BodyFormat, IngestError};
use readings::model::envelope::{self, BatchPart, EnvelopeError, Packer, Place, WireReading};
use readings::model::reading::{self, check_location, FieldError, MAX_LOCATION_CHARS};
use readings::query::{self, Cursor, MAX_LIMIT, MAX_LOCATIONS};
use readings::{Limits, Reading};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// Strategies

/// Any text, control characters and newlines included.
fn any_text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("(?s).{{0,{max}}}")).expect("a valid regex")
}

/// Any JSON number serde_json can hold.
fn json_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
    ]
}

/// Any JSON value, a few levels deep, whose objects often use a reading's field names.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        any_text(24).prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            Just("location".to_owned()),
            Just("temperature".to_owned()),
            Just("time".to_owned()),
            any_text(10),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Text that is nearly a time: RFC 3339 with fields in and out of range, epoch numbers
/// around the seconds/milliseconds threshold and the ends of `i64`, and plain garbage.
fn time_text() -> impl Strategy<Value = String> {
    let rfc3339 = (
        0u32..=10_001,
        0u32..=13,
        0u32..=32,
        0u32..=25,
        0u32..=61,
        0u32..=61,
        prop::option::of(0u32..=999_999_999),
        prop_oneof![
            Just("Z".to_owned()),
            Just("z".to_owned()),
            Just(String::new()),
            (-30i32..=30, 0u32..=99).prop_map(|(h, m)| format!("{h:+03}:{m:02}")),
        ],
    )
        .prop_map(|(y, mo, d, h, mi, s, frac, tz)| {
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{tz}")
        });
    let edges = prop::sample::select(vec![
        "",
        " ",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "infinity",
        "1e11",
        "-1e11",
        "99999999999",
        "100000000000",
        "1e308",
        "1e309",
        "-1",
        "0",
        "-0",
        "0.0000001",
        "-62167219200",
        "-62167219201",
        "253402300799",
        "253402300800",
        "253402300799999",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "-9223372036854775809",
        "0000-01-01T00:00:00Z",
        "-0001-12-31T23:59:59Z",
        "9999-12-31T23:59:59.999999999Z",
        "+10000-01-01T00:00:00Z",
        "+262143-12-31T23:59:59Z",
        "1970-01-01T00:00:00-00:01",
        "2024-02-30T00:00:00Z",
        "2024-03-15T12:00:00",
        "2024-03-15 12:00:00Z",
    ])
    .prop_map(str::to_owned);
    prop_oneof![
        rfc3339,
        edges,
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        "[-+]?[0-9]{0,22}(\\.[0-9]{0,12})?([eE][-+]?[0-9]{1,4})?",
        any_text(40),
    ]
}

fn location_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any_text(MAX_LOCATION_CHARS + 12).prop_map(Value::String),
        prop::sample::select(vec![
            String::new(),
            " \t ".to_owned(),
            "x".repeat(MAX_LOCATION_CHARS),
            "x".repeat(MAX_LOCATION_CHARS + 1),
            format!("  {}  ", "é".repeat(MAX_LOCATION_CHARS)),
            "\u{3000}room\u{3000}".to_owned(),
            "room\u{200b}".to_owned(),
        ])
        .prop_map(Value::String),
        "[a-z ]{0,5}[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}][a-z ]{0,5}".prop_map(Value::String),
        json_value(),
    ]
}

fn temperature_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        json_number(),
        prop::sample::select(vec![
            -150.0,
            1000.0,
            // Just outside the default range: the next doubles past its ends.
            f64::from_bits((-150.0f64).to_bits() + 1),
            f64::from_bits(1000.0f64.to_bits() + 1),
            0.0,
            -0.0,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
        ])
        .prop_map(|f| json!(f)),
        prop::sample::select(vec!["21.5", "NaN", "1e999"]).prop_map(|s| json!(s)),
        json_value(),
    ]
}

fn time_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        time_text().prop_map(Value::String),
        json_number(),
        prop::sample::select(vec![
            1e11,
            -1e11,
            1e11 - 1.0,
            9.223_372_036_854_776e18,
            1e300
        ])
        .prop_map(|f| json!(f)),
        json_value(),
    ]
}

/// An object shaped like a reading, each field present or not, valid or nearly so, and
/// sometimes a field too many.
fn reading_like() -> impl Strategy<Value = Value> {
    (
        prop::option::of(location_value()),
        prop::option::of(temperature_value()),
        prop::option::of(time_value()),
        prop::option::of((any_text(12), json_value())),
    )
        .prop_map(|(location, temperature, time, extra)| {
            let mut o = serde_json::Map::new();
            if let Some(v) = location {
                o.insert("location".into(), v);
            }
            if let Some(v) = temperature {
                o.insert("temperature".into(), v);
            }
            if let Some(v) = time {
                o.insert("time".into(), v);
            }
            if let Some((k, v)) = extra {
                o.insert(k, v);
            }
            Value::Object(o)
        })
}

/// A reading object as text that validation accepts, written as clients write it: fields in
/// any order, times as text or numbers or null, strings with and without escapes.
fn valid_reading_text() -> impl Strategy<Value = String> {
    let location = prop_oneof![
        Just(r#""bedroom""#.to_owned()),
        Just(r#"" attic\t""#.to_owned()),
        Just(r#""sm\u00f6rg\u00e5sbord \"3\"""#.to_owned()),
        "[a-z ]{1,20}[a-z]".prop_map(|l| format!("\"{l}\"")),
    ];
    let temperature = prop_oneof![
        (-150i64..=1000).prop_map(|t| t.to_string()),
        (-150.0f64..=1000.0).prop_map(|t| t.to_string()),
        Just("6.6e1".to_owned()),
        Just("-0".to_owned()),
    ];
    let now = Utc::now().timestamp();
    let time = prop_oneof![
        Just(None),
        Just(Some("null".to_owned())),
        (0..now).prop_map(|t| Some(t.to_string())),
        (0..now).prop_map(|t| Some((t * 1000 + 7).to_string())),
        (0..now).prop_map(|t| Some(format!("{t}.25"))),
        (0..now).prop_map(|t| Some(format!("\"{t}\""))),
        (0..now).prop_map(|t| Some(format!(
            "\"{}\"",
            DateTime::from_timestamp(t, 123_000)
                .expect("in range")
                .to_rfc3339()
        ))),
    ];
    (location, temperature, time, any::<bool>()).prop_map(|(l, t, time, flip)| {
        let mut fields = vec![
            format!(r#""location":{l}"#),
            format!(r#""temperature": {t}"#),
        ];
        if let Some(time) = time {
            fields.push(format!(r#""time":{time}"#));
        }
        if flip {
            fields.reverse();
        }
        format!("{{{}}}", fields.join(","))
    })
}

/// An object as text whose keys may repeat or be written with escapes.
fn object_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just(r#""location""#.to_owned()),
        Just(r#""temperature""#.to_owned()),
        Just(r#""time""#.to_owned()),
        Just(r#""loc\u0061tion""#.to_owned()),
        any_text(8).prop_map(|k| Value::String(k).to_string()),
    ];
    let value = prop_oneof![
        Just(r#""kitchen""#.to_owned()),
        Just("21.5".to_owned()),
        Just("null".to_owned()),
        Just("1710500000".to_owned()),
        json_value().prop_map(|v| v.to_string()),
    ];
    prop::collection::vec((key, value), 0..5).prop_map(|fields| {
        let fields: Vec<String> = fields
            .into_iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        format!("{{{}}}", fields.join(","))
    })
}

/// Any time chrono can hold.
fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
    (DateTime::<Utc>::MIN_UTC.timestamp()..=DateTime::<Utc>::MAX_UTC.timestamp())
        .prop_map(|s| DateTime::from_timestamp(s, 0).expect("in chrono's range"))
}

/// A server clock from 1970 to 2200.
fn server_now() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..7_258_118_400).prop_map(|s| DateTime::from_timestamp(s, 0).expect("in range"))
}

/// Limits as configuration may set them: any bounds, any future skew chrono can hold.
fn any_limits() -> impl Strategy<Value = Limits> {
    (
        any::<f64>(),
        any::<f64>(),
        prop_oneof![
            any::<i64>().prop_map(TimeDelta::microseconds),
            any::<i64>().prop_filter_map("in range", TimeDelta::try_milliseconds),
            (0i64..86_400).prop_map(TimeDelta::seconds),
        ],
    )
        .prop_map(
            |(temperature_min, temperature_max, max_future_skew)| Limits {
                temperature_min,
                temperature_max,
                max_future_skew,
            },
        )
}

/// A location as ingest stores it: what `check_location` returns unchanged.
fn stored_location() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^\\p{Cc}]{1,128}",
        "[a-z]{1,10}( [a-z]{1,10}){0,3}",
        "[^\\p{Cc}\\s]{1,4}(\\s[^\\p{Cc}\\s]{1,4}){0,3}",
    ]
    .prop_filter_map("as stored", |s| {
        check_location(&s).ok().filter(|stored| *stored == s)
    })
}

/// Epoch microseconds a query may name (years 0000 to 9999).
const QUERY_MICROS: std::ops::RangeInclusive<i64> =
    -62_167_219_200_000_000..=253_402_300_799_999_999;

fn valid_cursor() -> impl Strategy<Value = Cursor> {
    (QUERY_MICROS, stored_location()).prop_map(|(micros, location)| Cursor {
        time: DateTime::from_timestamp_micros(micros).expect("in range"),
        location,
    })
}

/// Tokens that are cursors, nearly cursors, or nothing like one.
fn cursor_token() -> impl Strategy<Value = String> {
    let mutated = (valid_cursor(), any::<Index>(), any::<Index>()).prop_map(|(c, at, with)| {
        let mut token = c.encode().into_bytes();
        let alphabet = b"0123456789abcdefABCDEFg.-+ %";
        let at = at.index(token.len());
        token[at] = alphabet[with.index(alphabet.len())];
        String::from_utf8_lossy(&token).into_owned()
    });
    let truncated = (valid_cursor(), any::<Index>()).prop_map(|(c, at)| {
        let token = c.encode();
        token[..at.index(token.len() + 1)].to_owned()
    });
    let any_bytes = (
        any::<i64>(),
        prop::collection::vec(any::<u8>(), 0..40),
        any::<bool>(),
    )
        .prop_map(|(micros, bytes, upper)| {
            let hex: String = bytes
                .iter()
                .map(|b| {
                    if upper {
                        format!("{b:02X}")
                    } else {
                        format!("{b:02x}")
                    }
                })
                .collect();
            format!("{micros}.{hex}")
        });
    prop_oneof![
        valid_cursor().prop_map(|c| c.encode()),
        mutated,
        truncated,
        any_bytes,
        "[-+]?[0-9]{0,20}\\.[0-9a-fA-F]{0,20}(\\.[0-9a-f]{0,4})?",
        any_text(40),
    ]
}

/// A query string built from a route's parameter names (and near misses of them) with
/// values that are valid, nearly valid or garbage; encoded properly or written raw.
fn query_string() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        8 => prop::sample::select(vec![
            "location", "limit", "since", "until", "cursor", "format", "bucket",
        ])
        .prop_map(str::to_owned),
        1 => prop::sample::select(vec!["Limit", "limit ", "", "location[]", "format%00"])
            .prop_map(str::to_owned),
        1 => any_text(8),
    ];
    let value = prop_oneof![
        prop::sample::select(vec![
            "0", "1", "5", "1000", "1001", "-1", " 5", "5 ", "1e3", "٣", "json", "csv", "CSV",
            "json ", "5m", "1h", "1d", "1w", "", ",", "a,,b", " a , b ",
        ])
        .prop_map(str::to_owned),
        any::<i64>().prop_map(|i| i.to_string()),
        time_text(),
        cursor_token(),
        location_value().prop_map(|v| v.as_str().unwrap_or("room").to_owned()),
        (1usize..=MAX_LOCATIONS + 5).prop_map(|n| {
            (0..n)
                .map(|i| format!("l{i}"))
                .collect::<Vec<_>>()
                .join(",")
        }),
        any_text(30),
    ];
    prop_oneof![
        prop::collection::vec((name.clone(), value.clone()), 0..7)
            .prop_map(|pairs| serde_urlencoded::to_string(pairs).expect("encodes")),
        prop::collection::vec((name, value), 0..7).prop_map(|pairs| {
            pairs
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        }),
        "([a-z%=&+;]|%[0-9A-Fa-f]{0,2}|%[cC][0-3]){0,30}",
        any_text(60),
    ]
}

/// Readings as they travel: any time chrono can hold to the microsecond, any location the
/// JSON encoder takes, any finite temperature.
fn wire_readings(max: usize) -> impl Strategy<Value = Vec<Reading>> {
    let reading = (
        any::<i64>().prop_filter_map("in chrono's range", DateTime::from_timestamp_micros),
        prop_oneof![stored_location(), any_text(40)],
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
    )
        .prop_map(|(time, location, temperature)| Reading {
            time,
            location,
            temperature,
        });
    prop::collection::vec(reading, 0..max)
}

/// Batches of several requests, each with a distinct id.
fn batches() -> impl Strategy<Value = Vec<(String, Vec<Reading>)>> {
    prop::collection::vec((any_text(20), wire_readings(30)), 1..6).prop_map(|batches| {
        batches
            .into_iter()
            .enumerate()
            .map(|(i, (id, readings))| (format!("{i}:{id}"), readings))
            .collect()
    })
}

fn same_reading(got: &WireReading, want: &Reading) -> bool {
    got.time().ok() == Some(want.time)
        && got.1 == want.location
        && got.2.to_bits() == want.temperature.to_bits()
}

// ---------------------------------------------------------------------------------------
// Reading validation

/// What a reading `validate` accepts must satisfy, whatever it was made from.
fn assert_valid(r: &Reading, received_at: DateTime<Utc>, limits: &Limits) {
    assert_eq!(
        check_location(&r.location).as_deref(),
        Ok(r.location.as_str())
    );
    assert!(r.temperature.is_finite());
    assert!(r.temperature >= limits.temperature_min && r.temperature <= limits.temperature_max);
    assert!(r.time >= DateTime::UNIX_EPOCH || r.time == received_at);
}

fn validate(
    value: &Value,
    received_at: DateTime<Utc>,
    limits: &Limits,
) -> Result<Reading, Vec<FieldError>> {
    let mut errors = Vec::new();
    let reading = reading::validate(value, 7, received_at, limits, &mut errors);
    match reading {
        Some(r) => {
            assert!(errors.is_empty(), "accepted with errors: {errors:?}");
            Ok(r)
        }
        None => {
            assert!(!errors.is_empty(), "refused without an error: {value}");
            assert!(errors.iter().all(|e| e.index == 7 && !e.message.is_empty()));
            Err(errors)
        }
    }
}

proptest! {
    #[test]
    fn validation_never_panics_on_any_json(
        value in json_value(),
        received_at in any_time(),
        limits in any_limits(),
    ) {
        if let Ok(r) = validate(&value, received_at, &limits) {
            assert_valid(&r, received_at, &limits);
        }
    }

    #[test]
    fn validation_of_near_misses_names_each_field_at_fault(
        value in reading_like(),
        received_at in server_now(),
    ) {
        let limits = Limits::default();
        match validate(&value, received_at, &limits) {
            Ok(r) => {
                assert_valid(&r, received_at, &limits);
                assert!(r.time <= received_at + limits.max_future_skew);
            }
            Err(errors) => {
                let object = value.as_object().expect("an object");
                for e in &errors {
                    assert!(
                        object.contains_key(&e.field)
                            || ["location", "temperature"].contains(&e.field.as_str()),
                        "{e:?} for {value}"
                    );
                }
            }
        }
    }

    #[test]
    fn validation_survives_any_limits_with_a_time(
        time in time_value(),
        received_at in any_time(),
        limits in any_limits(),
    ) {
        let value = json!({"location": "attic", "temperature": 20.0, "time": time});
        if let Ok(r) = validate(&value, received_at, &limits) {
            assert_valid(&r, received_at, &limits);
        }
    }

    #[test]
    fn time_text_never_panics(text in time_text()) {
        if let Ok(t) = reading::parse_time_str(&text) {
            // What parses as a number or RFC 3339 is a real instant chrono can print.
            let _ = t.to_rfc3339();
        }
        let _ = reading::parse_time(&Value::String(text));
    }

    #[test]
    fn time_numbers_never_panic(number in json_number()) {
        let _ = reading::parse_time(&number);
    }

    #[test]
    fn locations_are_checked_without_panics(text in any_text(MAX_LOCATION_CHARS + 20)) {
        if let Ok(stored) = check_location(&text) {
            assert_eq!(stored.as_str(), text.trim());
            assert!(!stored.is_empty() && stored.chars().count() <= MAX_LOCATION_CHARS);
            assert!(!stored.chars().any(char::is_control));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Request bodies

fn format() -> impl Strategy<Value = BodyFormat> {
    prop_oneof![Just(BodyFormat::Json), Just(BodyFormat::Ndjson)]
}

/// Parses `body` and, when it parses, validates what came out, as ingest does.
fn ingest_body(body: &[u8], format: BodyFormat) -> Result<Vec<Reading>, IngestError> {
    let values = ingest::parse_body(body, format)?;
    let config = readings::testing::ingest_config();
    ingest::validate_all(&values, Utc::now(), &config)
}

fn assert_client_error(e: &IngestError) {
    match e {
        IngestError::Malformed { line, .. } => assert!(*line >= 1, "{e}"),
        IngestError::Shape(_)
        | IngestError::Invalid { .. }
        | IngestError::TooManyReadings { .. } => {}
        other => panic!("parsing gave a non-client error: {other}"),
    }
    assert!(!e.to_string().is_empty());
}

proptest! {
    #[test]
    fn bodies_of_any_bytes_give_errors_not_panics(
        body in prop::collection::vec(any::<u8>(), 0..512),
        format in format(),
    ) {
        if let Err(e) = ingest_body(&body, format) {
            assert_client_error(&e);
        }
    }

    #[test]
    fn bodies_of_any_text_give_errors_not_panics(body in any_text(200), format in format()) {
        if let Err(e) = ingest_body(body.as_bytes(), format) {
            assert_client_error(&e);
        }
    }

    #[test]
    fn json_and_ndjson_bodies_round_trip(
        values in prop::collection::vec(prop_oneof![reading_like(), json_value()], 1..20),
        crlf in any::<bool>(),
        blank_lines in any::<bool>(),
    ) {
        let array = serde_json::to_vec(&values).expect("serialises");
        let parsed = ingest::parse_body(&array, BodyFormat::Json).expect("parses");
        prop_assert_eq!(parsed, values.clone());

        let newline = if crlf { "\r\n" } else { "\n" };
        let mut ndjson = String::new();
        for v in &values {
            ndjson.push_str(&serde_json::to_string(v).expect("serialises"));
            ndjson.push_str(newline);
            if blank_lines {
                ndjson.push_str(" \t");
                ndjson.push_str(newline);
            }
        }
        let parsed = ingest::parse_body(ndjson.as_bytes(), BodyFormat::Ndjson).expect("parses");
        prop_assert_eq!(parsed, values.clone());

        // Whatever validation makes of them, it answers.
        if let Err(e) = ingest_body(&array, BodyFormat::Json) {
            assert_client_error(&e);
        }
    }

    #[test]
    fn the_fast_reading_of_a_body_agrees_with_the_full_one(
        objects in prop::collection::vec(
            prop_oneof![
                3 => reading_like().prop_map(|v| v.to_string()),
                2 => valid_reading_text(),
                1 => object_text(),
                1 => json_value().prop_map(|v| v.to_string()),
            ],
            0..12,
        ),
        format in format(),
        pretty in any::<bool>(),
        lone in any::<bool>(),
    ) {
        let separator = match (format, pretty) {
            (BodyFormat::Ndjson, false) => "\n",
            (BodyFormat::Ndjson, true) => "\r\n \n",
            (BodyFormat::Json, false) => ",",
            (BodyFormat::Json, true) => " ,\n\t",
        };
        let joined = objects.join(separator);
        let body = match format {
            BodyFormat::Json if lone && objects.len() == 1 => format!(" {joined}\n"),
            BodyFormat::Json => format!("[{joined}]"),
            BodyFormat::Ndjson => joined,
        };
        let config = readings::testing::ingest_config();
        let now = Utc::now();
        let full = ingest::parse_body(body.as_bytes(), format)
            .and_then(|values| ingest::validate_all(&values, now, &config));
        let fast = ingest::read_body(body.as_bytes(), format, now, &config);
        prop_assert_eq!(format!("{fast:?}"), format!("{full:?}"), "body: {}", body);
    }

    #[test]
    fn a_truncated_json_body_is_malformed(
        values in prop::collection::vec(reading_like(), 1..6),
        cut in any::<Index>(),
    ) {
        let array = serde_json::to_string(&values).expect("serialises");
        // A strict prefix of an array never parses; cut at a character boundary.
        let mut at = cut.index(array.len());
        while !array.is_char_boundary(at) {
            at -= 1;
        }
        let err = ingest::parse_body(&array.as_bytes()[..at], BodyFormat::Json).unwrap_err();
        prop_assert!(matches!(err, IngestError::Malformed { line: 1, .. }), "{}", err);
    }

    #[test]
    fn a_broken_ndjson_line_is_named_by_its_number(
        values in prop::collection::vec(reading_like(), 1..8),
        broken in any::<Index>(),
    ) {
        let broken = broken.index(values.len());
        let lines: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let line = serde_json::to_string(v).expect("serialises");
                // An object without its closing brace.
                if i == broken { line[..line.len() - 1].to_owned() } else { line }
            })
            .collect();
        let err = ingest::parse_body(lines.join("\n").as_bytes(), BodyFormat::Ndjson).unwrap_err();
        match err {
            IngestError::Malformed { line, .. } => prop_assert_eq!(line, broken + 1),
            other => prop_assert!(false, "{}", other),
        }
    }

    #[test]
    fn deeply_nested_bodies_are_refused_without_overflowing_the_stack(
        depth in 100usize..50_000,
        open in prop::sample::select(vec!["[", "{\"location\":"]),
        format in format(),
    ) {
        let body = open.repeat(depth);
        let err = ingest::parse_body(body.as_bytes(), format).unwrap_err();
        prop_assert!(matches!(err, IngestError::Malformed { .. }), "{}", err);
    }

    #[test]
    fn content_types_and_idempotency_keys_never_panic(
        header in any_text(60),
        key in any_text(300),
    ) {
        let _ = BodyFormat::from_content_type(Some(&header));
        match ingest::batch_id(Some("0123456789ab"), Some(&key)) {
            Ok(id) => prop_assert_eq!(
                ingest::batch_id(Some("0123456789ab"), Some(&key)).expect("same key"),
                id
            ),
            Err(e) => prop_assert!(matches!(e, IngestError::BadIdempotencyKey(_))),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Queue envelopes

/// A valid envelope's JSON (of version 1 or 2) with one thing changed.
fn envelope_near_miss() -> impl Strategy<Value = String> {
    prop_oneof![
        near_miss_of(
            r#"{"v":1,"batches":[{"id":"b","part":0,"readings":[[1678925592000000,"bedroom",66.0]]}]}"#
        ),
        near_miss_of(
            r#"{"v":2,"at":1678925592123,"batches":[{"id":"b","first":0,"of":1,"readings":[[1678925592000000,"bedroom",66.0]]}]}"#
        )
        .prop_map(|s| s.replace(r#""v":1"#, r#""v":2"#)),
        prop::sample::select(vec!["-1", "4294967296", "\"0\"", "null", "1", "4294967295"]).prop_map(
            |n| format!(r#"{{"v":2,"at":1,"batches":[{{"id":"b","first":{n},"of":1,"readings":[[1,"a",1.0]]}}]}}"#)
        ),
        prop::sample::select(vec!["-1", "4294967296", "\"0\"", "null", "0", "9223372036854775807"]).prop_map(
            |n| format!(r#"{{"v":2,"at":{n},"batches":[{{"id":"b","first":0,"of":1,"readings":[[1,"a",1.0]]}}]}}"#)
        ),
    ]
}

/// `valid` with one thing changed.
fn near_miss_of(valid: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u32>().prop_map(move |v| valid.replace(r#""v":1"#, &format!(r#""v":{v}"#))),
        prop::sample::select(vec!["-1", "1.0", "\"1\"", "null", "4294967296", "[1]"])
            .prop_map(move |v| valid.replace(r#""v":1"#, &format!(r#""v":{v}"#))),
        any::<i64>().prop_map(move |t| valid.replace("1678925592000000", &t.to_string())),
        prop::sample::select(vec![
            "[]",
            "[1,\"a\"]",
            "[1,\"a\",2,3]",
            "[\"1\",\"a\",2]",
            "[1,2,3]",
            "[1,\"a\",null]",
            "[1,\"a\",1e999]",
            "{}",
            "null",
        ])
        .prop_map(move |r| valid.replace(r#"[1678925592000000,"bedroom",66.0]"#, r)),
        prop::sample::select(vec!["-1", "4294967296", "\"0\"", "null"])
            .prop_map(move |p| valid.replace(r#""part":0"#, &format!(r#""part":{p}"#))),
        any::<Index>().prop_map(move |cut| valid[..cut.index(valid.len())].to_owned()),
        Just(r#"{"v":1}"#.to_owned()),
        Just(r#"{"v":2}"#.to_owned()),
        Just(r#"{"batches":[]}"#.to_owned()),
    ]
}

proptest! {
    #[test]
    fn envelopes_of_any_text_give_errors_not_panics(
        body in prop_oneof![any_text(200), envelope_near_miss()],
    ) {
        match envelope::decode(&body) {
            Ok(e) => {
                prop_assert!(envelope::SUPPORTED_VERSIONS.contains(&e.v));
                // What decodes is consistent: version 2 says when it was packed, and each
                // of its parts lies inside its batch.
                prop_assert_eq!(e.at.is_some(), e.v >= 2);
                for p in &e.batches {
                    if let Place::Range { of, .. } = p.place {
                        let offsets = p.offsets().expect("a range");
                        prop_assert!(offsets.start < offsets.end && offsets.end <= of);
                    }
                }
                for r in e.batches.iter().flat_map(|b| &b.readings) {
                    // An instant out of range is an error of its own, not a panic.
                    if let Err(err) = r.time() {
                        prop_assert!(matches!(err, EnvelopeError::BadTime(t) if t == r.0));
                    }
                }
            }
            Err(EnvelopeError::UnsupportedVersion { found }) => {
                prop_assert!(!envelope::SUPPORTED_VERSIONS.contains(&found));
            }
            Err(EnvelopeError::Malformed(_) | EnvelopeError::Inconsistent(_)) => {}
            Err(other) => prop_assert!(false, "decoding gave {}", other),
        }
    }

    #[test]
    fn envelopes_round_trip(batches in batches(), at_ms in 0i64..4_102_444_800_000) {
        let at = DateTime::from_timestamp_millis(at_ms).expect("in range");
        let mut packer = Packer::new(1_048_576, at);
        for (id, readings) in &batches {
            packer.add(id, readings).expect("fits");
        }
        let bodies = packer.finish();
        prop_assert!(bodies.len() <= 1);
        let decoded: Vec<BatchPart> = bodies
            .iter()
            .flat_map(|b| {
                let e = envelope::decode(b).expect("decodes");
                assert_eq!((e.v, e.at), (envelope::VERSION, Some(at)));
                assert!(b.is_ascii(), "{b}");
                e.batches
            })
            .collect();
        let want: Vec<&(String, Vec<Reading>)> = batches.iter().filter(|(_, r)| !r.is_empty()).collect();
        prop_assert_eq!(decoded.len(), want.len());
        for (got, (id, readings)) in decoded.iter().zip(want) {
            prop_assert_eq!(&got.id, id);
            prop_assert_eq!(got.place, Place::Range { first: 0, of: readings.len() as u32 });
            prop_assert_eq!(got.readings.len(), readings.len());
            for (g, w) in got.readings.iter().zip(readings) {
                let w = WireReading::from(w);
                prop_assert_eq!((g.0, &g.1, g.2.to_bits()), (w.0, &w.1, w.2.to_bits()));
            }
        }
    }

    #[test]
    fn packed_envelopes_decode_to_the_same_batches(
        batches in batches(),
        max_bytes in prop_oneof![2_048usize..8_192, Just(262_144)],
    ) {
        let mut packer = Packer::new(max_bytes, Utc::now());
        for (id, readings) in &batches {
            packer.add(id, readings).expect("every reading fits in a message");
        }
        let bodies = packer.finish();
        // Gather each batch's parts, in order, from every message.
        let mut parts: BTreeMap<String, Vec<BatchPart>> = BTreeMap::new();
        for body in &bodies {
            prop_assert!(body.len() <= max_bytes, "{} bytes > {}", body.len(), max_bytes);
            for part in envelope::decode(body).expect("decodes").batches {
                parts.entry(part.id.clone()).or_default().push(part);
            }
        }
        for (id, readings) in &batches {
            let got = parts.remove(id).unwrap_or_default();
            // Each part starts where the one before ended.
            let mut next = 0;
            for p in &got {
                prop_assert_eq!(p.place, Place::Range { first: next, of: readings.len() as u32 });
                next += p.readings.len() as u32;
            }
            let got: Vec<&WireReading> = got.iter().flat_map(|p| &p.readings).collect();
            prop_assert_eq!(got.len(), readings.len());
            for (g, w) in got.iter().zip(readings) {
                prop_assert!(same_reading(g, w), "{:?} != {:?}", g, w);
            }
        }
        prop_assert!(parts.is_empty(), "batches nobody added: {:?}", parts.keys());
    }

    #[test]
    fn packing_into_small_messages_fits_or_says_why(
        readings in wire_readings(20),
        max_bytes in 0usize..400,
    ) {
        match envelope::pack("batch", &readings, max_bytes) {
            Ok(bodies) => {
                prop_assert!(bodies.iter().all(|b| b.len() <= max_bytes));
                let got: Vec<WireReading> = bodies
                    .iter()
                    .flat_map(|b| envelope::decode(b).expect("decodes").batches)
                    .flat_map(|p| p.readings)
                    .collect();
                prop_assert_eq!(got.len(), readings.len());
                for (g, w) in got.iter().zip(&readings) {
                    prop_assert!(same_reading(g, w));
                }
            }
            Err(e) => prop_assert!(
                matches!(e, EnvelopeError::TooLarge(_, limit) if limit == max_bytes),
                "{}",
                e
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Cursors and query parameters

proptest! {
    #[test]
    fn cursors_round_trip(cursor in valid_cursor()) {
        let token = cursor.encode();
        prop_assert_eq!(Cursor::decode(&token), Ok(cursor));
        // A token is ASCII: it travels in a header and a query string as it is.
        prop_assert!(token.bytes().all(|b| b.is_ascii_graphic()));
    }

    #[test]
    fn cursor_tokens_give_errors_not_panics(token in cursor_token()) {
        if let Ok(cursor) = Cursor::decode(&token) {
            // What decodes is what a page could have ended on, and encodes to a token
            // that decodes to the same cursor.
            prop_assert!(QUERY_MICROS.contains(&cursor.time.timestamp_micros()));
            prop_assert_eq!(check_location(&cursor.location), Ok(cursor.location.clone()));
            prop_assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
        }
    }

    #[test]
    fn recent_parameters_give_errors_not_panics(raw in query_string(), absent in any::<bool>()) {
        let raw = (!absent).then_some(raw.as_str());
        match query::parse_recent(raw) {
            Ok(p) => {
                prop_assert!((1..=MAX_LIMIT).contains(&p.query.limit));
                if let (Some(since), Some(until)) = (p.query.since, p.query.until) {
                    prop_assert!(since < until);
                }
            }
            Err(errors) => prop_assert!(!errors.is_empty()),
        }
    }

    #[test]
    fn latest_parameters_give_errors_not_panics(raw in query_string()) {
        match query::parse_latest(Some(&raw)) {
            Ok(p) => {
                let locations = p.locations.unwrap_or_default();
                prop_assert!(locations.len() <= MAX_LOCATIONS);
                for l in &locations {
                    prop_assert_eq!(check_location(l), Ok(l.clone()));
                }
            }
            Err(errors) => prop_assert!(!errors.is_empty()),
        }
    }

    #[test]
    fn stats_parameters_give_errors_not_panics(raw in query_string(), now in server_now()) {
        match query::parse_stats(Some(&raw), now) {
            Ok(p) => {
                if p.since < p.until {
                    let buckets = (p.until - p.since).num_seconds() / p.bucket.seconds() + 1;
                    prop_assert!(buckets <= query::MAX_BUCKETS);
                }
            }
            Err(errors) => prop_assert!(!errors.is_empty()),
        }
    }

    #[test]
    fn query_times_give_errors_not_panics(text in time_text()) {
        if let Ok(t) = query::parse_query_time(&text) {
            prop_assert!(QUERY_MICROS.contains(&t.timestamp_micros()));
        }
    }
}
