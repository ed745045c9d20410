//! The Lambda host of the two HTTP functions.
//!
//! Four event sources can invoke them, each with a payload of its own: API Gateway REST APIs
//! (payload 1.0), HTTP APIs (payload 2.0), function URLs (the 2.0 shape) and Application Load
//! Balancers. `lambda_http` (built with `apigw_rest`, `apigw_http` and `alb`) turns each into
//! the same `http::Request` for the router and answers in the shape the event came in: REST
//! with `multiValueHeaders`, HTTP API and function URL with `headers` (and `cookies`), ALB
//! with both header forms and a `statusDescription`. [`serve`] adds two things it does not do:
//!
//! - [`normalise`]: a REST event without a `requestContext` (hand-written test events, such
//!   as the Timescale tutorial's `events/post.json`) is given the one field `lambda_http`
//!   needs, instead of being refused as matching no event source;
//! - [`strip_stage`]: a named stage in front of the path is dropped before routing, for
//!   REST and HTTP API events alike.

use std::task::{Context, Poll};

use axum::http::{Request, Uri};
use axum::Router;
use lambda_http::lambda_runtime::layers::TracingLayer;
use lambda_http::lambda_runtime::{LambdaInvocation, Runtime};
use lambda_http::request::RequestContext;
use lambda_http::tower::layer::layer_fn;
use lambda_http::tower::Service;
use lambda_http::RequestExt;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

/// Serves `router` under the Lambda Runtime API until the process is stopped: every event
/// is [`normalise`]d, handed to `lambda_http`, and its request [`strip_stage`]d.
pub async fn serve(router: Router) -> anyhow::Result<()> {
    use tower::ServiceExt;
    // What `lambda_http::run` builds, with one layer more. (`lambda_http::runtime` would
    // do, but wants `Sync` responses, and axum's body is not.)
    let handler = lambda_http::Adapter::from(router.map_request(strip_stage::<lambda_http::Body>));
    Runtime::new(handler)
        .layer(layer_fn(Normalised))
        // What `lambda_http::run` adds: the per-invocation span with the request id that
        // every log line carries (see `telemetry`).
        .layer(TracingLayer::new())
        .run()
        .await
        .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"))
}

/// Runs [`normalise`] on each invocation's payload before `lambda_http` reads it.
#[derive(Clone)]
struct Normalised<S>(S);

impl<S: Service<LambdaInvocation>> Service<LambdaInvocation> for Normalised<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut invocation: LambdaInvocation) -> Self::Future {
        if let Some(event) = normalise(&invocation.body) {
            invocation.body = event.into();
        }
        self.0.call(invocation)
    }
}

/// The fields [`normalise`] looks at; everything else is skipped unread.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Shape {
    http_method: Option<IgnoredAny>,
    request_context: Option<ShapeContext>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ShapeContext {
    /// Every REST event's context has it.
    http_method: Option<IgnoredAny>,
    /// HTTP API and function URL events (payload 2.0).
    http: Option<IgnoredAny>,
    /// ALB events.
    elb: Option<IgnoredAny>,
}

/// The event with `requestContext.httpMethod` filled in from its `httpMethod`, for a REST
/// (payload 1.0) event that lacks it; `None` for every other event, which goes to
/// `lambda_http` as it came.
///
/// Why: API Gateway always sends a `requestContext`, but hand-written REST events often
/// leave it out. The Timescale tutorial's `events/post.json` is only `body`, `resource`,
/// `path`, `httpMethod`, `isBase64Encoded` and `protocol`. `lambda_http` reads REST events
/// as `aws_lambda_events::apigw::ApiGatewayProxyRequest`, whose `requestContext` and its
/// `httpMethod` are required, so such an event matches none of the shapes it knows and the
/// invocation fails with "failed to deserialize the incoming data into the function's
/// payload type". The method is the only required field missing (headers, query strings,
/// stage and the rest default to empty), so it is the only one added. Events with a
/// context of another source (`requestContext.http`: HTTP API or function URL;
/// `requestContext.elb`: ALB) are never touched, so no event changes shape. The check
/// skips every value, so events that need nothing cost one quick scan.
pub fn normalise(event: &[u8]) -> Option<Vec<u8>> {
    let shape: Shape = serde_json::from_slice(event).ok()?;
    shape.http_method.as_ref()?;
    if let Some(context) = &shape.request_context {
        if context.http_method.is_some() || context.http.is_some() || context.elb.is_some() {
            return None;
        }
    }
    let mut event: Value = serde_json::from_slice(event).ok()?;
    let object = event.as_object_mut()?;
    let method = object.get("httpMethod")?.as_str()?.to_owned();
    let context = object
        .entry("requestContext")
        .or_insert_with(|| Value::Object(Default::default()));
    if context.is_null() {
        *context = Value::Object(Default::default());
    }
    context
        .as_object_mut()?
        .insert("httpMethod".into(), Value::String(method));
    serde_json::to_vec(&event).ok()
}

/// Drops a named stage from the front of the path: an HTTP API on stage `prod` sends
/// `rawPath` `/prod/sensor`, and for a REST event `lambda_http` itself puts the stage in
/// front of its `path` (unless `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH` is set); the routers
/// know `/sensor`. The `$default` stage, ALB and function URL events have no stage in
/// their paths.
pub fn strip_stage<B>(mut req: Request<B>) -> Request<B> {
    let stage = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.stage.clone(),
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.stage.clone(),
        _ => None,
    };
    let Some(stage) = stage.filter(|s| !s.is_empty() && s != "$default") else {
        return req;
    };
    let prefix = format!("/{stage}");
    let path = req.uri().path();
    let rest = match path.strip_prefix(&prefix) {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => return req,
    };
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::request::LambdaRequest;
    use serde_json::json;

    /// The Timescale tutorial's `events/post.json`, as it is.
    fn tutorial_post() -> Value {
        json!({
            "body": "{\"location\":\"bedroom\",\"temperature\":66}",
            "resource": "/sensor",
            "path": "/sensor",
            "httpMethod": "POST",
            "isBase64Encoded": false,
            "protocol": "HTTP/1.1"
        })
    }

    fn normalised(event: &Value) -> Option<Value> {
        normalise(&serde_json::to_vec(event).unwrap())
            .map(|bytes| serde_json::from_slice(&bytes).unwrap())
    }

    fn lambda_request(event: &Value) -> Result<LambdaRequest, serde_json::Error> {
        serde_json::from_value(event.clone())
    }

    #[test]
    fn lambda_http_refuses_a_rest_event_without_a_request_context() {
        let err = lambda_request(&tutorial_post()).unwrap_err().to_string();
        assert!(
            err.contains("doesn't match any of those services' events"),
            "{err}"
        );
    }

    #[test]
    fn a_rest_event_without_a_request_context_gets_only_its_method() {
        let mut expected = tutorial_post();
        expected["requestContext"] = json!({"httpMethod": "POST"});
        assert_eq!(normalised(&tutorial_post()), Some(expected.clone()));
        let request = lambda_request(&expected).unwrap();
        assert!(
            matches!(request, LambdaRequest::ApiGatewayV1(_)),
            "{request:?}"
        );
        let request: lambda_http::Request = request.into();
        assert_eq!(request.method(), "POST");
        assert_eq!(request.uri().path(), "/sensor");

        for context in [Value::Null, json!({}), json!({"stage": "prod"})] {
            let mut event = tutorial_post();
            event["httpMethod"] = json!("GET");
            event["requestContext"] = context.clone();
            let fixed = normalised(&event).unwrap();
            assert_eq!(fixed["requestContext"]["httpMethod"], "GET", "{context}");
            if let Some(stage) = context.get("stage") {
                assert_eq!(&fixed["requestContext"]["stage"], stage);
            }
            assert!(matches!(
                lambda_request(&fixed),
                Ok(LambdaRequest::ApiGatewayV1(_))
            ));
        }
    }

    #[test]
    fn events_of_every_source_pass_untouched() {
        let rest = json!({"httpMethod": "GET", "path": "/sensor",
            "requestContext": {"httpMethod": "GET", "stage": "prod"}});
        let http_api = json!({"version": "2.0", "rawPath": "/sensor",
            "requestContext": {"http": {"method": "GET", "path": "/sensor"}, "stage": "$default"}});
        // A 2.0 event that also has a top-level `httpMethod` must stay a 2.0 event.
        let http_api_with_method = json!({"version": "2.0", "rawPath": "/sensor", "httpMethod": "GET",
            "requestContext": {"http": {"method": "GET", "path": "/sensor"}}});
        let alb = json!({"httpMethod": "GET", "path": "/sensor",
            "requestContext": {"elb": {"targetGroupArn": "arn:aws:elasticloadbalancing:x"}}});
        for event in [rest, http_api, http_api_with_method, alb] {
            assert_eq!(normalised(&event), None, "{event}");
        }
        for bytes in [&b"not json"[..], b"[]", b"{\"httpMethod\": 5}", b"{}"] {
            assert_eq!(normalise(bytes), None);
        }
    }

    #[test]
    fn a_named_stage_is_stripped_from_rest_and_http_api_paths() {
        // REST: `path` has no stage; lambda_http puts it in front (the tests do not set
        // AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH).
        let rest = json!({"httpMethod": "GET", "path": "/sensor/latest",
            "queryStringParameters": {"location": "bedroom"},
            "requestContext": {"httpMethod": "GET", "stage": "prod", "path": "/prod/sensor/latest"}});
        let http_api = json!({"version": "2.0", "rawPath": "/prod/sensor/latest",
            "rawQueryString": "location=bedroom",
            "requestContext": {"http": {"method": "GET"}, "stage": "prod"}});
        for event in [rest, http_api] {
            let request: lambda_http::Request = lambda_request(&event).unwrap().into();
            let request = strip_stage(request);
            assert_eq!(request.uri().path(), "/sensor/latest", "{event}");
            assert_eq!(request.uri().query(), Some("location=bedroom"), "{event}");
        }
        let default_stage = json!({"version": "2.0", "rawPath": "/prod/sensor",
            "requestContext": {"http": {"method": "GET"}, "stage": "$default"}});
        let request: lambda_http::Request = lambda_request(&default_stage).unwrap().into();
        assert_eq!(strip_stage(request).uri().path(), "/prod/sensor");
    }
}
