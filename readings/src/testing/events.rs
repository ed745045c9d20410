//! Lambda events for tests: the samples in `events/`, headers and base64 bodies set on them,
//! SQS messages, and what a function's Lambda host answers, read alike for every source.

/// A sample event from the repository's `events/` folder.
pub fn event(file: &str) -> serde_json::Value {
    let path = format!("{}/../events/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// An HTTP event from `events/` carrying `key` as its bearer token.
pub fn event_with_key(file: &str, key: &str) -> serde_json::Value {
    let mut e = event(file);
    set_header(&mut e, "authorization", Some(&format!("Bearer {key}")));
    e
}

/// Sets (or with `None` removes) a request header of an HTTP event of any shape: in
/// `headers` and in `multiValueHeaders`, whichever the event has (REST events have both, an
/// ALB event one of them), replacing the header under any spelling of its name; an event
/// with neither gets `headers`.
pub fn set_header(event: &mut serde_json::Value, name: &str, value: Option<&str>) {
    use serde_json::Value;
    let mut found = false;
    for (field, multi) in [("headers", false), ("multiValueHeaders", true)] {
        let Some(headers) = event.get_mut(field).and_then(Value::as_object_mut) else {
            continue;
        };
        found = true;
        headers.retain(|k, _| !k.eq_ignore_ascii_case(name));
        if let Some(v) = value {
            let v = if multi {
                serde_json::json!([v])
            } else {
                serde_json::json!(v)
            };
            headers.insert(name.to_owned(), v);
        }
    }
    if !found {
        if let Some(v) = value {
            event["headers"] = serde_json::json!({ name: v });
        }
    }
}

/// The event with its body base64-encoded, as API Gateway, ALB and function URLs send
/// bodies they take for binary.
pub fn with_base64_body(mut event: serde_json::Value) -> serde_json::Value {
    let body = event["body"]
        .as_str()
        .unwrap_or_default()
        .as_bytes()
        .to_vec();
    // aws_lambda_events writes binary bodies in base64.
    let encoded = aws_lambda_events::encodings::Body::Binary(body);
    event["body"] = serde_json::to_value(encoded).expect("a body serialises");
    event["isBase64Encoded"] = serde_json::Value::Bool(true);
    event
}

/// An SQS message as Lambda delivers it, with an id and a body.
pub fn sqs_message(id: &str, body: &str) -> aws_lambda_events::event::sqs::SqsMessage {
    let mut m = aws_lambda_events::event::sqs::SqsMessage::default();
    m.message_id = Some(id.into());
    m.body = Some(body.into());
    m
}

/// What a function's Lambda host answers `event` with, as it posts the answer to the
/// Runtime API: the steps of [`crate::http::lambda::serve`]
/// ([`crate::http::lambda::normalise`], then `lambda_http`, which reads the event and shapes
/// the answer for its source, around [`crate::http::lambda::strip_stage`] and `app`) without
/// the runtime's transport. Panics on an event `lambda_http` refuses.
pub async fn lambda_answer(app: axum::Router, event: &serde_json::Value) -> serde_json::Value {
    use lambda_http::tower::{Service, ServiceExt};
    let bytes = serde_json::to_vec(event).expect("an event serialises");
    let bytes = crate::http::lambda::normalise(&bytes).unwrap_or(bytes);
    let request: lambda_http::request::LambdaRequest = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("lambda_http refuses the event: {e}: {event}"));
    let mut handler = lambda_http::Adapter::from(tower::ServiceExt::map_request(
        app,
        crate::http::lambda::strip_stage::<lambda_http::Body>,
    ));
    let invocation = lambda_http::LambdaEvent::new(request, lambda_http::Context::default());
    let response = match handler.ready().await {
        Ok(handler) => handler.call(invocation).await,
        Err(e) => match e {},
    };
    let response = response.unwrap_or_else(|e| match e {});
    serde_json::to_value(response).expect("an answer serialises")
}

/// An answer of a function's Lambda host read the same way whatever the event's source:
/// status, headers (lower-case names, each with all its values) and body.
#[derive(Debug, Clone, PartialEq)]
pub struct LambdaAnswer {
    pub status: u16,
    pub headers: std::collections::BTreeMap<String, Vec<String>>,
    pub body: Vec<u8>,
}

impl LambdaAnswer {
    /// Reads `statusCode`, `multiValueHeaders` (REST, ALB) or else `headers` (HTTP API,
    /// function URL) and `body` (decoding base64 when `isBase64Encoded`).
    pub fn read(answer: &serde_json::Value) -> LambdaAnswer {
        use serde_json::Value;
        let status = answer["statusCode"]
            .as_u64()
            .unwrap_or_else(|| panic!("no statusCode: {answer}")) as u16;
        let non_empty = |field: &str| {
            answer
                .get(field)
                .and_then(Value::as_object)
                .filter(|h| !h.is_empty())
        };
        let mut headers = std::collections::BTreeMap::new();
        if let Some(multi) = non_empty("multiValueHeaders") {
            for (name, values) in multi {
                let values = values.as_array().unwrap_or_else(|| panic!("{answer}"));
                let values = values
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default().to_owned());
                headers.insert(name.to_ascii_lowercase(), values.collect());
            }
        } else if let Some(single) = non_empty("headers") {
            for (name, value) in single {
                let value = value.as_str().unwrap_or_default().to_owned();
                headers.insert(name.to_ascii_lowercase(), vec![value]);
            }
        }
        let body = answer["body"].as_str().unwrap_or_default();
        let base64 = answer["isBase64Encoded"].as_bool().unwrap_or(false);
        let body = match lambda_http::Body::from_maybe_encoded(base64, body) {
            lambda_http::Body::Empty => Vec::new(),
            lambda_http::Body::Text(t) => t.into_bytes(),
            lambda_http::Body::Binary(b) => b,
            other => panic!("unexpected body {other:?}"),
        };
        LambdaAnswer {
            status,
            headers,
            body,
        }
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&self.body));
        })
    }
}

/// The event source an answer is shaped for, told from its fields, as `lambda_http` writes
/// them: `"rest"` (only `multiValueHeaders`), `"http"` (HTTP API or function URL: `headers`
/// and `cookies`), `"alb"` (`statusDescription`, both header forms alike).
pub fn answer_shape(answer: &serde_json::Value) -> &'static str {
    let has = |field: &str| {
        answer
            .get(field)
            .and_then(serde_json::Value::as_object)
            .is_some_and(|h| !h.is_empty())
    };
    if answer.get("statusDescription").is_some() {
        assert_eq!(
            answer["headers"].as_object().map(|h| h.len()),
            answer["multiValueHeaders"].as_object().map(|h| h.len()),
            "{answer}"
        );
        "alb"
    } else if answer.get("cookies").is_some() {
        assert!(has("headers") && !has("multiValueHeaders"), "{answer}");
        "http"
    } else {
        assert!(has("multiValueHeaders") && !has("headers"), "{answer}");
        "rest"
    }
}
