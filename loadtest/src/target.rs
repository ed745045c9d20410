//! The APIs under load: one HTTP client, the two URLs and the API key.

use std::error::Error as _;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde::Deserialize;

use crate::fleet::Reading;
use crate::stats::Outcome;

pub struct Target {
    client: reqwest::Client,
    pub ingest_url: reqwest::Url,
    pub query_url: Option<reqwest::Url>,
}

impl Target {
    pub fn new(
        ingest_url: &str,
        query_url: Option<&str>,
        api_key: Option<&str>,
        timeout: Duration,
        concurrency: usize,
    ) -> Result<Target> {
        let ingest_url = parse_url("--ingest-url", ingest_url)?;
        let query_url = query_url.map(|u| parse_url("--query-url", u)).transpose()?;
        let mut headers = HeaderMap::new();
        if let Some(key) = api_key {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                .context("--api-key must be printable ASCII")?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(concurrency)
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        Ok(Target {
            client,
            ingest_url,
            query_url,
        })
    }

    /// One request to each URL the run uses, so an unreachable target fails with one clear
    /// message before the load starts. Any HTTP answer will do (a POST endpoint answers a
    /// GET with 405).
    pub async fn preflight(&self, with_query: bool) -> Result<()> {
        let mut urls = vec![("ingest API", &self.ingest_url)];
        if with_query {
            match &self.query_url {
                Some(url) => urls.push(("query API", url)),
                None => bail!("--query-ratio needs --query-url (or QUERY_URL)"),
            }
        }
        for (name, url) in urls {
            if let Err(e) = self.client.get(url.clone()).send().await {
                bail!("cannot reach the {name} at {url}: {}", describe(&e));
            }
        }
        Ok(())
    }

    /// POSTs an encoded body, with an `Idempotency-Key` header when `key` is given. Returns
    /// the outcome and, for a 2xx answer that names one, the batch id of the readings.
    pub async fn post(&self, body: Vec<u8>, key: Option<&str>) -> (Outcome, Option<String>) {
        let mut request = self
            .client
            .post(self.ingest_url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let (outcome, body) = answer(request).await;
        let batch_id = body
            .filter(|_| outcome.is_success())
            .and_then(|b| serde_json::from_slice::<Receipt>(&b).ok())
            .map(|r| r.batch_id);
        (outcome, batch_id)
    }

    /// GETs the newest readings of one location.
    pub async fn query(&self, location: &str) -> Outcome {
        let Some(url) = &self.query_url else {
            return Outcome::Transport {
                kind: "no query url",
                detail: "no --query-url".into(),
            };
        };
        answer(
            self.client
                .get(url.clone())
                .query(&[("location", location)]),
        )
        .await
        .0
    }
}

/// What the ingest API answers a request it accepted: `{"accepted": n, "batch_id": "..."}`.
#[derive(Deserialize)]
struct Receipt {
    batch_id: String,
}

/// The body of a POST: one JSON object for one reading (the tutorial's body), else an array.
pub fn encode(readings: &[Reading]) -> Result<Vec<u8>, serde_json::Error> {
    match readings {
        [one] => serde_json::to_vec(one),
        many => serde_json::to_vec(many),
    }
}

/// Whether a failed ingest request may be sent again: a 5xx or no answer at all, when it
/// carries an `Idempotency-Key` (the retry maps to the same batch id); without a key only
/// when it never reached the server (`connect`), as a retry of a request that did could
/// store its readings twice.
pub fn retryable(outcome: &Outcome, keyed: bool) -> bool {
    match outcome {
        Outcome::Status(s) => keyed && *s >= 500,
        Outcome::Transport { kind, .. } => keyed || *kind == "connect",
    }
}

fn parse_url(flag: &str, url: &str) -> Result<reqwest::Url> {
    let parsed = reqwest::Url::parse(url).with_context(|| {
        format!("{flag} `{url}` is not a URL like http://127.0.0.1:3000/sensor")
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        bail!("{flag} `{url}` must be an http:// or https:// URL");
    }
    Ok(parsed)
}

/// Sends a request and reads the whole answer (so the connection can be reused); returns
/// the outcome, and the body when there was one.
async fn answer(request: reqwest::RequestBuilder) -> (Outcome, Option<Vec<u8>>) {
    let result = async {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, body))
    }
    .await;
    match result {
        Ok((status, body)) => (Outcome::Status(status), Some(body.to_vec())),
        Err(e) => (
            Outcome::Transport {
                kind: kind(&e),
                detail: describe(&e),
            },
            None,
        ),
    }
}

/// A short name for the kind of transport error (`connect`: the request never left).
fn kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else if e.is_request() {
        "request"
    } else {
        "other"
    }
}

/// The error and its causes on one line, e.g. "error sending request: ...: Connection
/// refused (os error 111)".
pub fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_that_are_safe_to_repeat_are_retried() {
        let connect = Outcome::Transport {
            kind: "connect",
            detail: "connection refused".into(),
        };
        let timeout = Outcome::Transport {
            kind: "timeout",
            detail: "timed out".into(),
        };
        for (outcome, keyed, want) in [
            (Outcome::Status(503), true, true),
            (Outcome::Status(500), true, true),
            (Outcome::Status(503), false, false),
            (Outcome::Status(400), true, false),
            (Outcome::Status(422), true, false),
            (Outcome::Status(202), true, false),
            (timeout.clone(), true, true),
            (timeout, false, false),
            (connect.clone(), true, true),
            (connect, false, true),
        ] {
            assert_eq!(
                retryable(&outcome, keyed),
                want,
                "{outcome:?} keyed={keyed}"
            );
        }
    }
}
