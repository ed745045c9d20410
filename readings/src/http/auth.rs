//! API keys: creation, lookup with a short cache, and the axum layer that guards the routes.
//!
//! A key looks like `spk_<id>_<secret>`: `id` is 12 hex digits, public, and names the key in
//! `keys list`; `secret` is 32 random bytes in hex. Only the SHA-256 of the whole key is
//! stored. A request's key is found by its id and then compared, in constant time, by hash.
//!
//! Each key carries scopes: `ingest` for `POST /sensor`, `query` for the `GET` routes.
//! Answers: no key, or a key that is malformed or unknown, is 401; a revoked key, or one
//! without the route's scope, is 403. Lookups are cached for `AUTH_CACHE_SECS` (default 30),
//! which bounds how long a revoked key keeps working in a running function. While the
//! database is unreachable, keys it vouched for within `AUTH_STALE_IF_ERROR_SECS` (default
//! an hour) keep working, so ingest survives a database outage.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::Utc;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::config::AuthConfig;
use crate::http::error::ApiError;
use crate::postgres::store::{Store, StoreError, StoredKey};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `POST /sensor`.
    Ingest,
    /// `GET /sensor`, `/sensor/latest`, `/sensor/stats`.
    Query,
}

impl Scope {
    pub const ALL: [Scope; 2] = [Scope::Ingest, Scope::Query];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Query => "query",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| format!("unknown scope {s:?}; scopes are ingest and query"))
    }
}

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("a key needs a name of 1 to 100 characters")]
    BadName,
    #[error("a key needs at least one scope")]
    NoScope,
    #[error(transparent)]
    Store(#[from] StoreError),
}

const PREFIX: &str = "spk_";
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// The key id an operator names: the id itself, with or without `spk_`, or a whole key
/// pasted in its place.
pub fn named_id(arg: &str) -> &str {
    let id = arg.trim().trim_start_matches(PREFIX);
    id.split('_').next().unwrap_or(id)
}

/// The id of a well-formed key, without looking anything up.
fn key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex_of = |s: &str, bytes: usize| {
        s.len() == bytes * 2 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    (hex_of(id, ID_BYTES) && hex_of(secret, SECRET_BYTES)).then_some(id)
}

/// A key just made: the only time its secret exists outside the client.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub id: String,
    /// The whole key, to hand to the client. It is not stored.
    pub key: String,
    /// Its scopes, sorted, each once.
    pub scopes: Vec<Scope>,
}

/// Makes a key with a name and scopes, stores its hash, and returns it.
pub async fn create_key(store: &Store, name: &str, scopes: &[Scope]) -> Result<NewKey, KeyError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(KeyError::BadName);
    }
    if scopes.is_empty() {
        return Err(KeyError::NoScope);
    }
    let mut scopes: Vec<Scope> = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    let mut rng = rand::rng();
    let mut id = [0u8; ID_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let id = hex(&id);
    let key = format!("{PREFIX}{id}_{}", hex(&secret));
    store
        .insert_api_key(&StoredKey {
            id: id.clone(),
            name: name.to_owned(),
            scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            key_hash: hash(&key),
            created_at: Utc::now(),
            revoked_at: None,
        })
        .await?;
    Ok(NewKey { id, key, scopes })
}

/// How a request's credentials were judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer` or `x-api-key` header.
    Missing,
    /// A header that is not a key of this pipeline, or a key that does not exist.
    Unknown,
    Revoked,
    /// The key lacks the route's scope.
    Scope(Scope),
}

impl Denied {
    /// A short label for logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Denied::Missing => "missing",
            Denied::Unknown => "unknown",
            Denied::Revoked => "revoked",
            Denied::Scope(_) => "scope",
        }
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> ApiError {
        match d {
            Denied::Missing => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`",
            ),
            Denied::Unknown => ApiError::new(StatusCode::UNAUTHORIZED, "unknown API key"),
            Denied::Revoked => ApiError::new(StatusCode::FORBIDDEN, "this API key was revoked"),
            Denied::Scope(scope) => ApiError::new(
                StatusCode::FORBIDDEN,
                format!("this API key lacks the `{scope}` scope this route needs"),
            ),
        }
    }
}

/// The key a request presents: `Authorization: Bearer <key>`, else `x-api-key: <key>`.
/// `Err` for a header present but unusable (another scheme, not text).
fn presented(headers: &HeaderMap) -> Result<Option<&str>, Denied> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| Denied::Unknown)?.trim();
        let (scheme, rest) = v.split_once(' ').ok_or(Denied::Unknown)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Denied::Unknown);
        }
        return Ok(Some(rest.trim()));
    }
    match headers.get("x-api-key") {
        Some(v) => Ok(Some(v.to_str().map_err(|_| Denied::Unknown)?.trim())),
        None => Ok(None),
    }
}

/// What the cache remembers of a key id.
#[derive(Clone)]
struct Entry {
    /// When the database last answered for this id.
    fetched: Instant,
    /// When the database was last asked (answered or not).
    asked: Instant,
    /// `None`: there is no such key.
    key: Option<Arc<StoredKey>>,
}

/// Bound on cached key ids; past it the cache starts over.
const MAX_CACHED: usize = 10_000;

/// Checks keys against `api_keys`, caching each lookup for a while.
///
/// While the database cannot be asked, a key it vouched for within `stale_if_error` keeps
/// working (and is asked about again once per cache period): ingest goes on accepting
/// readings through a database outage, as the queue between them intends.
pub struct KeyChecker {
    store: Store,
    ttl: Duration,
    stale_if_error: Duration,
    cache: Mutex<HashMap<String, Entry>>,
}

impl KeyChecker {
    pub fn new(store: Store, ttl: Duration, stale_if_error: Duration) -> Self {
        KeyChecker {
            store,
            ttl,
            stale_if_error,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn remember(&self, id: &str, entry: Entry) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED && !cache.contains_key(id) {
                cache.clear();
            }
            cache.insert(id.to_owned(), entry);
        }
    }

    async fn lookup(&self, id: &str) -> Result<Option<Arc<StoredKey>>, StoreError> {
        if self.ttl.is_zero() {
            return Ok(self.store.api_key(id).await?.map(Arc::new));
        }
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|cache| cache.get(id).cloned());
        if let Some(entry) = &cached {
            if entry.asked.elapsed() < self.ttl {
                return Ok(entry.key.clone());
            }
        }
        match self.store.api_key(id).await {
            Ok(key) => {
                let key = key.map(Arc::new);
                let now = Instant::now();
                self.remember(
                    id,
                    Entry {
                        fetched: now,
                        asked: now,
                        key: key.clone(),
                    },
                );
                Ok(key)
            }
            Err(e) => match cached {
                Some(entry) if entry.fetched.elapsed() < self.stale_if_error => {
                    tracing::warn!(error = %e, key_id = id, "API key lookup failed; using the last answer");
                    let key = entry.key.clone();
                    self.remember(
                        id,
                        Entry {
                            asked: Instant::now(),
                            ..entry
                        },
                    );
                    Ok(key)
                }
                _ => Err(e),
            },
        }
    }

    /// Judges the credentials in `headers` for a route needing `scope`. Returns the key's
    /// id when allowed.
    pub async fn check(&self, headers: &HeaderMap, scope: Scope) -> Result<Checked, StoreError> {
        let key = match presented(headers) {
            Ok(Some(key)) => key,
            Ok(None) => return Ok(Checked::Denied(Denied::Missing, None)),
            Err(denied) => return Ok(Checked::Denied(denied, None)),
        };
        let Some(id) = key_id(key) else {
            return Ok(Checked::Denied(Denied::Unknown, None));
        };
        let Some(stored) = self.lookup(id).await? else {
            return Ok(Checked::Denied(Denied::Unknown, None));
        };
        let id = Some(stored.id.clone());
        if !bool::from(hash(key).ct_eq(&stored.key_hash)) {
            return Ok(Checked::Denied(Denied::Unknown, None));
        }
        if stored.revoked_at.is_some() {
            return Ok(Checked::Denied(Denied::Revoked, id));
        }
        if !stored.scopes.iter().any(|s| s == scope.as_str()) {
            return Ok(Checked::Denied(Denied::Scope(scope), id));
        }
        Ok(Checked::Allowed(stored.id.clone()))
    }
}

/// The verdict on one request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// The key's id.
    Allowed(String),
    /// Why not, and the key's id when the key itself was genuine.
    Denied(Denied, Option<String>),
}

/// The id of the API key a request was let through with, put in the request's extensions
/// by [`Auth::protect`]'s layer. Absent when keys are not checked (`AUTH=off`). Ingest scopes
/// `Idempotency-Key`s by it, so two tenants' keys never name the same batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyId(pub String);

/// Whether and how the HTTP routes check API keys.
#[derive(Clone)]
pub enum Auth {
    /// Every request is let through. Only for local runs (`AUTH=off`).
    Off,
    Keys(Arc<KeyChecker>),
}

impl Auth {
    /// From the configuration: keys checked against `store`, or off (with a warning).
    pub fn new(config: &AuthConfig, store: Store) -> Auth {
        if config.enabled {
            Auth::Keys(Arc::new(KeyChecker::new(
                store,
                config.cache_ttl,
                config.stale_if_error,
            )))
        } else {
            tracing::warn!("AUTH=off: API keys are not checked; every request is let through. Never expose this service.");
            Auth::Off
        }
    }

    /// Guards every route of `router` (not its fallback) with a key having `scope`.
    pub fn protect<S: Clone + Send + Sync + 'static>(
        &self,
        router: Router<S>,
        scope: Scope,
    ) -> Router<S> {
        match self {
            Auth::Off => router,
            Auth::Keys(checker) => router.route_layer(middleware::from_fn_with_state(
                (checker.clone(), scope),
                guard,
            )),
        }
    }
}

async fn guard(
    State((checker, scope)): State<(Arc<KeyChecker>, Scope)>,
    mut request: Request,
    next: Next,
) -> Response {
    match checker.check(request.headers(), scope).await {
        Ok(Checked::Allowed(id)) => {
            request.extensions_mut().insert(KeyId(id));
            next.run(request).await
        }
        Ok(Checked::Denied(denied, key_id)) => {
            tracing::info!(reason = denied.reason(), key_id = key_id.as_deref().unwrap_or("-"),
                scope = %scope, "request refused: API key");
            crate::observability::metrics::auth_failure(denied.reason());
            let mut response = ApiError::from(denied).into_response();
            if response.status() == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"sensor-pipeline\""),
                );
            }
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "API key lookup failed");
            ApiError::unavailable("cannot check the API key right now; retry later", 5)
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_come_only_from_well_formed_keys() {
        let key = format!("spk_0123456789ab_{}", "f".repeat(64));
        assert_eq!(key_id(&key), Some("0123456789ab"));
        assert_eq!(key_id(&key.replace("spk_", "sk_")), None);
        assert_eq!(key_id(&key[..key.len() - 1]), None);
        assert_eq!(key_id(&key.to_uppercase()), None);
        assert_eq!(key_id("spk_0123456789ab"), None);
        assert_eq!(key_id(""), None);
    }

    #[test]
    fn operators_name_a_key_by_its_id_or_the_whole_key() {
        let key = format!("spk_0123456789ab_{}", "f".repeat(64));
        for arg in [key.as_str(), "spk_0123456789ab", " 0123456789ab "] {
            assert_eq!(named_id(arg), "0123456789ab", "{arg}");
        }
    }

    #[test]
    fn bearer_wins_over_x_api_key_and_other_schemes_are_refused() {
        let mut h = HeaderMap::new();
        assert_eq!(presented(&h), Ok(None));
        h.insert("x-api-key", HeaderValue::from_static(" k1 "));
        assert_eq!(presented(&h), Ok(Some("k1")));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer k2"));
        assert_eq!(presented(&h), Ok(Some("k2")));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(presented(&h), Err(Denied::Unknown));
    }

    #[test]
    fn scopes_parse_by_name() {
        assert_eq!("ingest".parse::<Scope>(), Ok(Scope::Ingest));
        assert_eq!("query".parse::<Scope>(), Ok(Scope::Query));
        assert!("admin".parse::<Scope>().is_err());
    }
}
