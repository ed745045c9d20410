//! API keys on every HTTP route of the pipeline: no key, a bad key, a revoked key, a key of
//! the wrong scope and a key of the right scope, through the real routers.

use std::time::Duration;

use local_pipeline::{LocalPipeline, Options};
use readings::http::auth::{create_key, Scope};
use serde_json::Value;

async fn apis(cache: Duration) -> LocalPipeline {
    LocalPipeline::with(Options {
        auth_cache: Some(cache),
        ..Options::default()
    })
    .await
}

/// Every route with the scope it needs.
fn routes(apis: &LocalPipeline) -> Vec<(reqwest::Method, String, Scope)> {
    vec![
        (reqwest::Method::POST, apis.ingest.clone(), Scope::Ingest),
        (reqwest::Method::GET, apis.query.clone(), Scope::Query),
        (
            reqwest::Method::GET,
            format!("{}/latest", apis.query),
            Scope::Query,
        ),
        (
            reqwest::Method::GET,
            format!("{}/stats?bucket=1h", apis.query),
            Scope::Query,
        ),
    ]
}

enum Cred<'a> {
    None,
    Bearer(&'a str),
    Header(&'a str),
    Raw(&'a str),
}

async fn call(method: &reqwest::Method, url: &str, cred: Cred<'_>) -> (u16, Value, bool) {
    let mut req = reqwest::Client::new()
        .request(method.clone(), url)
        .header("content-type", "application/json")
        .body(r#"{"location":"bedroom","temperature":66}"#);
    req = match cred {
        Cred::None => req,
        Cred::Bearer(k) => req.bearer_auth(k),
        Cred::Header(k) => req.header("x-api-key", k),
        Cred::Raw(v) => req.header("authorization", v),
    };
    let response = req.send().await.expect("request");
    let status = response.status().as_u16();
    let challenge = response.headers().contains_key("www-authenticate");
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body, challenge)
}

fn error_of(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("a JSON error: {body}"))
}

#[tokio::test]
async fn every_route_answers_401_403_or_its_data_by_the_key_presented() {
    let apis = apis(Duration::from_secs(30)).await;
    let store = &apis.db.store;
    let ingest = create_key(store, "fleet", &[Scope::Ingest]).await.unwrap();
    let query = create_key(store, "dashboard", &[Scope::Query])
        .await
        .unwrap();
    let revoked = create_key(store, "old", &[Scope::Ingest, Scope::Query])
        .await
        .unwrap();
    assert!(store.revoke_api_key(&revoked.id).await.unwrap());
    // The right id with another secret, and a well-formed key that does not exist.
    let forged = format!("{}{}", &ingest.key[..ingest.key.len() - 4], "0000");
    let unknown = format!("spk_000000000000_{}", "0".repeat(64));

    for (method, url, scope) in routes(&apis) {
        let (right, wrong) = match scope {
            Scope::Ingest => (&ingest.key, &query.key),
            Scope::Query => (&query.key, &ingest.key),
        };
        let route = format!("{method} {url}");

        let (status, body, challenge) = call(&method, &url, Cred::None).await;
        assert_eq!(status, 401, "{route} without a key: {body}");
        assert!(error_of(&body).contains("missing API key"), "{body}");
        assert!(challenge, "{route}: a 401 names the scheme");

        for bad in ["nonsense", unknown.as_str(), forged.as_str()] {
            let (status, body, _) = call(&method, &url, Cred::Bearer(bad)).await;
            assert_eq!(status, 401, "{route} with {bad}: {body}");
            assert_eq!(error_of(&body), "unknown API key");
            assert!(!body.to_string().contains(bad), "the key is not echoed");
        }
        let (status, body, _) = call(&method, &url, Cred::Raw(&format!("Basic {right}"))).await;
        assert_eq!(status, 401, "{route} with another scheme: {body}");

        let (status, body, _) = call(&method, &url, Cred::Bearer(&revoked.key)).await;
        assert_eq!(status, 403, "{route} with a revoked key: {body}");
        assert!(error_of(&body).contains("revoked"), "{body}");

        let (status, body, _) = call(&method, &url, Cred::Bearer(wrong)).await;
        assert_eq!(status, 403, "{route} with the wrong scope: {body}");
        assert!(error_of(&body).contains(scope.as_str()), "{body}");

        for cred in [Cred::Bearer(right), Cred::Header(right)] {
            let (status, body, _) = call(&method, &url, cred).await;
            let expected = if scope == Scope::Ingest { 202 } else { 200 };
            assert_eq!(status, expected, "{route} with the right key: {body}");
        }
    }
}

#[tokio::test]
async fn a_key_with_both_scopes_opens_every_route_and_unknown_routes_stay_404() {
    let apis = apis(Duration::from_secs(30)).await;
    let both = apis.db.api_key(&[Scope::Ingest, Scope::Query]).await;
    for (method, url, _) in routes(&apis) {
        let (status, body, _) = call(&method, &url, Cred::Bearer(&both)).await;
        assert!(status == 200 || status == 202, "{method} {url}: {body}");
    }
    let (status, body, _) = call(
        &reqwest::Method::GET,
        &format!("{}/nowhere", apis.query_base),
        Cred::None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn a_revoked_key_stops_working_within_the_cache_time() {
    let apis = apis(Duration::from_secs(1)).await;
    let key = create_key(&apis.db.store, "fleet", &[Scope::Query])
        .await
        .unwrap();
    let url = apis.query.clone();
    let get = reqwest::Method::GET;
    assert_eq!(call(&get, &url, Cred::Bearer(&key.key)).await.0, 200);
    assert!(apis.db.store.revoke_api_key(&key.id).await.unwrap());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body, _) = call(&get, &url, Cred::Bearer(&key.key)).await;
    assert_eq!(status, 403, "revoked more than AUTH_CACHE_SECS ago: {body}");
}

#[tokio::test]
async fn with_the_cache_off_revocation_is_immediate_and_keys_are_checked_per_request() {
    let apis = apis(Duration::ZERO).await;
    let key = apis.db.api_key(&[Scope::Ingest]).await;
    let id = &key[4..16];
    let url = apis.ingest.clone();
    let post = reqwest::Method::POST;
    assert_eq!(call(&post, &url, Cred::Header(&key)).await.0, 202);
    assert!(apis.db.store.revoke_api_key(id).await.unwrap());
    assert_eq!(call(&post, &url, Cred::Header(&key)).await.0, 403);
}
