//! API keys: creation, lookup with a short cache, and the axum layer that guards the routes.
//!
//! A key looks like `spk_<id>_<secret>_<checksum>`: `id` is 12 hex digits, public, and names
//! the key in `keys list`; `secret` is 32 random bytes in hex; `checksum` is the CRC-32 of
//! everything before it (`spk_<id>_<secret>`), 8 hex digits, as GitHub's tokens carry one.
//! Keys made before the checksum (`spk_<id>_<secret>`) stay valid. Only the SHA-256 of the
//! whole key is stored. A request's key is found by its id and then compared, in constant
//! time, by hash.
//!
//! Made-up keys cost no lookup: a key whose checksum does not match, or whose id is not
//! among the ids of `api_keys` (read at the first request, again every minute, and, for an
//! id not among them, at most once a second), is refused before the database is asked.
//!
//! Each key carries scopes: `ingest` for `POST /sensor`, `query` for the `GET` routes.
//! Answers: no key, or a key that is malformed or unknown, is 401; a revoked key, or one
//! without the route's scope, is 403. Lookups are cached for `AUTH_CACHE_SECS` (default 30),
//! which bounds how long a revoked key keeps working in a running function. While the
//! database is unreachable, keys it vouched for within `AUTH_STALE_IF_ERROR_SECS` (default
//! an hour) keep working, so ingest survives a database outage.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::Utc;
use moka::future::Cache;
use moka::ops::compute::Op;
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
/// Hex digits of the checksum that ends a key.
const CHECKSUM_DIGITS: usize = 8;

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

/// The CRC-32 of a key's first part (`spk_<id>_<secret>`), as the key's last part.
fn checksum(body: &str) -> String {
    format!("{:08x}", crc32fast::hash(body.as_bytes()))
}

/// The id of a well-formed key, without looking anything up: `spk_<id>_<secret>_<checksum>`
/// with the checksum of the rest, or `spk_<id>_<secret>` (keys made before checksums).
fn key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(PREFIX)?;
    let mut parts = rest.split('_');
    let (id, secret, check) = (parts.next()?, parts.next()?, parts.next());
    let hex_of = |s: &str, digits: usize| {
        s.len() == digits && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if parts.next().is_some() || !hex_of(id, ID_BYTES * 2) || !hex_of(secret, SECRET_BYTES * 2) {
        return None;
    }
    match check {
        None => Some(id),
        Some(check) => {
            let body = &key[..key.len() - check.len() - 1];
            (hex_of(check, CHECKSUM_DIGITS) && check == checksum(body)).then_some(id)
        }
    }
}

/// A key id as a number (12 hex digits fit in 48 bits), for the sets and caches that hold
/// many of them. `None` for a text that is not a key id.
fn parse_id(id: &str) -> Option<u64> {
    let hex = id.len() == ID_BYTES * 2 && id.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then(|| u64::from_str_radix(id, 16).ok()).flatten()
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
    let body = format!("{PREFIX}{id}_{}", hex(&secret));
    let key = format!("{body}_{}", checksum(&body));
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

/// The database could not be asked about a key (or the key ids), so the request cannot be
/// judged: it is answered 503. One failed lookup is shared by the requests that waited on it.
#[derive(Debug, Clone, Error)]
#[error(transparent)]
pub struct Unavailable(Arc<StoreError>);

impl From<StoreError> for Unavailable {
    fn from(e: StoreError) -> Self {
        Unavailable(Arc::new(e))
    }
}

/// How often the key ids are read again while every key presented is among them.
const IDS_REFRESH_EVERY: Duration = Duration::from_secs(60);
/// The least time between two reads of the key ids prompted by an id not among them: a key
/// made a moment ago works within about this long, and a flood of made-up ids costs at most
/// one read per this long.
const IDS_MISS_REFRESH: Duration = Duration::from_secs(1);

/// The ids of every key in `api_keys`, so that a key with any other id is refused without
/// asking the database. Keys are never deleted (only revoked), so the set only grows; a key
/// made after the last read is found by reading the ids again, at most once per
/// [`IDS_MISS_REFRESH`], one read at a time.
struct KnownIds {
    state: RwLock<IdState>,
    /// Held while the ids are read, so that one read serves every request waiting on it.
    reading: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Default)]
struct IdState {
    ids: HashSet<u64>,
    /// When the last read that succeeded started.
    loaded: Option<Instant>,
    /// When the last read started, and why it failed when it did.
    last_read: Option<(Instant, Option<Unavailable>)>,
}

impl KnownIds {
    fn new() -> Self {
        KnownIds {
            state: RwLock::new(IdState::default()),
            reading: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, IdState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn has(&self, id: u64) -> bool {
        self.state().ids.contains(&id)
    }

    /// Whether the ids are older than [`IDS_REFRESH_EVERY`].
    fn due(&self) -> bool {
        self.state()
            .loaded
            .is_some_and(|at| at.elapsed() >= IDS_REFRESH_EVERY)
    }

    /// Whether `id` names a key. An id not among those read last is looked for in a new
    /// read, unless a read started after this request arrived or less than
    /// [`IDS_MISS_REFRESH`] ago: then the answer is that read's.
    async fn contains(&self, store: &Store, id: u64) -> Result<bool, Unavailable> {
        let arrived = Instant::now();
        if self.has(id) {
            return Ok(true);
        }
        let _reading = self.reading.lock().await;
        let last = {
            let state = self.state();
            if state.ids.contains(&id) {
                return Ok(true);
            }
            state.last_read.clone()
        };
        if let Some((started, failed)) = last {
            if started >= arrived || started.elapsed() < IDS_MISS_REFRESH {
                return failed.map_or(Ok(false), Err);
            }
        }
        self.read(store).await?;
        Ok(self.has(id))
    }

    /// Reads every key id (the caller holds `reading`).
    async fn read(&self, store: &Store) -> Result<(), Unavailable> {
        let started = Instant::now();
        let read = store.api_key_ids().await;
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        match read {
            Ok(ids) => {
                state.ids = ids.iter().filter_map(|id| parse_id(id)).collect();
                state.loaded = Some(started);
                state.last_read = Some((started, None));
                Ok(())
            }
            Err(e) => {
                let e = Unavailable::from(e);
                state.last_read = Some((started, Some(e.clone())));
                Err(e)
            }
        }
    }

    /// Reads the ids again in the background when they are older than
    /// [`IDS_REFRESH_EVERY`] and no read is under way.
    fn refresh_if_due(self: &Arc<Self>, store: &Store) {
        if !self.due() {
            return;
        }
        let Ok(reading) = self.reading.clone().try_lock_owned() else {
            return;
        };
        let (ids, store) = (self.clone(), store.clone());
        tokio::spawn(async move {
            let _reading = reading;
            if ids.due() {
                if let Err(e) = ids.read(&store).await {
                    tracing::warn!(error = %e, "reading the API key ids failed; keeping the last ones");
                }
            }
        });
    }
}

/// What the cache remembers of a key id.
#[derive(Clone)]
struct Lookup {
    /// The database's last answer (`None` inside: there is no such key) and when it was
    /// asked for it.
    answer: Option<(Instant, Option<Arc<StoredKey>>)>,
    /// When the database was last asked (answered or not).
    asked: Instant,
    /// Why that last ask failed, when it did.
    failed: Option<Unavailable>,
}

impl Lookup {
    /// The lookup's result: the answer when there is one (a fresh one, or one kept through a
    /// failure), else the failure.
    fn outcome(&self) -> Result<Option<Arc<StoredKey>>, Unavailable> {
        match (&self.answer, &self.failed) {
            (Some((_, key)), _) => Ok(key.clone()),
            (None, Some(failed)) => Err(failed.clone()),
            (None, None) => Ok(None),
        }
    }
}

/// Most key ids whose lookups are cached; past it the least used give way.
const MAX_CACHED: u64 = 10_000;
/// How long a failed lookup of a key without a usable answer is shared before the database
/// is asked again.
const FAILED_LOOKUP_REUSE: Duration = Duration::from_secs(1);

/// Checks keys against `api_keys`, caching each lookup for a while.
///
/// A key is refused without a lookup when it is malformed, when its checksum (keys made
/// since checksums were added end in one) does not match, or when its id is not among the
/// key ids read from `api_keys` ([`KnownIds`]): made-up keys cost no database work beyond
/// one read of the ids per second. The lookups of real keys are cached in a bounded cache
/// (moka: the least used give way, never the whole cache), one lookup per key at a time.
///
/// While the database cannot be asked, a key it vouched for within `stale_if_error` keeps
/// working (and is asked about again once per cache period): ingest goes on accepting
/// readings through a database outage, as the queue between them intends.
pub struct KeyChecker {
    store: Store,
    ttl: Duration,
    stale_if_error: Duration,
    ids: Arc<KnownIds>,
    cache: Cache<u64, Lookup>,
}

impl KeyChecker {
    pub fn new(store: Store, ttl: Duration, stale_if_error: Duration) -> Self {
        KeyChecker {
            store,
            ttl,
            stale_if_error,
            ids: Arc::new(KnownIds::new()),
            cache: Cache::builder()
                .max_capacity(MAX_CACHED)
                .time_to_live(ttl.max(stale_if_error).max(FAILED_LOOKUP_REUSE))
                .build(),
        }
    }

    /// The cached result for a key, when it may still be used without asking.
    fn settled(&self, lookup: &Lookup) -> Option<Result<Option<Arc<StoredKey>>, Unavailable>> {
        let fresh = lookup.asked.elapsed() < self.ttl;
        match (&lookup.answer, &lookup.failed) {
            (Some((_, key)), None) => fresh.then(|| Ok(key.clone())),
            (Some((at, key)), Some(_)) if at.elapsed() < self.stale_if_error => {
                fresh.then(|| Ok(key.clone()))
            }
            (_, Some(failed)) => {
                (lookup.asked.elapsed() < FAILED_LOOKUP_REUSE).then(|| Err(failed.clone()))
            }
            (None, None) => None,
        }
    }

    /// Asks the database about a key; when that fails, keeps `previous`'s answer if the
    /// database gave it within `stale_if_error`.
    async fn ask(&self, id: &str, previous: Option<Lookup>) -> Lookup {
        let asked = Instant::now();
        match self.store.api_key(id).await {
            Ok(key) => Lookup {
                answer: Some((asked, key.map(Arc::new))),
                asked,
                failed: None,
            },
            Err(e) => {
                let answer = previous
                    .and_then(|p| p.answer)
                    .filter(|(at, _)| at.elapsed() < self.stale_if_error);
                if answer.is_some() {
                    tracing::warn!(error = %e, key_id = id, "API key lookup failed; using the last answer");
                }
                Lookup {
                    answer,
                    asked,
                    failed: Some(e.into()),
                }
            }
        }
    }

    async fn lookup(&self, id: &str, num: u64) -> Result<Option<Arc<StoredKey>>, Unavailable> {
        if self.ttl.is_zero() {
            return Ok(self.store.api_key(id).await?.map(Arc::new));
        }
        if let Some(result) = self.cache.get(&num).await.and_then(|l| self.settled(&l)) {
            return result;
        }
        // One lookup per key at a time: requests for the same key wait for it, then find
        // its answer settled.
        let computed = self
            .cache
            .entry(num)
            .and_compute_with(|current| async move {
                let previous = current.map(|entry| entry.into_value());
                if previous.as_ref().is_some_and(|p| self.settled(p).is_some()) {
                    return Op::Nop;
                }
                Op::Put(self.ask(id, previous).await)
            })
            .await;
        match computed.into_entry() {
            Some(entry) => entry.value().outcome(),
            None => Ok(None),
        }
    }

    /// Judges the credentials in `headers` for a route needing `scope`. Returns the key's
    /// id when allowed.
    pub async fn check(&self, headers: &HeaderMap, scope: Scope) -> Result<Checked, Unavailable> {
        let key = match presented(headers) {
            Ok(Some(key)) => key,
            Ok(None) => return Ok(Checked::Denied(Denied::Missing, None)),
            Err(denied) => return Ok(Checked::Denied(denied, None)),
        };
        let Some((id, num)) = key_id(key).and_then(|id| Some((id, parse_id(id)?))) else {
            return Ok(Checked::Denied(Denied::Unknown, None));
        };
        if !self.ids.contains(&self.store, num).await? {
            return Ok(Checked::Denied(Denied::Unknown, None));
        }
        self.ids.refresh_if_due(&self.store);
        let Some(stored) = self.lookup(id, num).await? else {
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
        let old = format!("spk_0123456789ab_{}", "f".repeat(64));
        assert_eq!(
            key_id(&old),
            Some("0123456789ab"),
            "keys made before checksums"
        );
        assert_eq!(key_id(&old.replace("spk_", "sk_")), None);
        assert_eq!(key_id(&old[..old.len() - 1]), None);
        assert_eq!(key_id(&old.to_uppercase()), None);
        assert_eq!(key_id("spk_0123456789ab"), None);
        assert_eq!(key_id(""), None);

        let new = format!("{old}_{}", checksum(&old));
        assert_eq!(new.len(), 4 + 12 + 1 + 64 + 1 + 8);
        assert_eq!(key_id(&new), Some("0123456789ab"));
        // A checksum that does not match, one digit of the secret changed, or one part more.
        assert_eq!(key_id(&format!("{old}_00000000")), None);
        assert_eq!(key_id(&new.replacen("fff", "ffe", 1)), None);
        assert_eq!(key_id(&format!("{new}_{}", checksum(&new))), None);
        assert_eq!(
            key_id(&format!("{old}_{}", checksum(&old).to_uppercase())),
            None
        );
    }

    #[test]
    fn the_checksum_is_the_crc32_of_the_rest() {
        // CRC-32 (ISO-HDLC, as zlib and GitHub's tokens use) of "123456789" is cbf43926.
        assert_eq!(checksum("123456789"), "cbf43926");
    }

    #[test]
    fn key_ids_are_numbers_of_12_hex_digits() {
        assert_eq!(parse_id("0123456789ab"), Some(0x0123_4567_89ab));
        assert_eq!(parse_id("+123456789ab"), None);
        assert_eq!(parse_id("0123456789a"), None);
        assert_eq!(parse_id("0123456789ag"), None);
    }

    #[test]
    fn operators_name_a_key_by_its_id_or_the_whole_key() {
        let old = format!("spk_0123456789ab_{}", "f".repeat(64));
        let key = format!("{old}_{}", checksum(&old));
        for arg in [
            key.as_str(),
            old.as_str(),
            "spk_0123456789ab",
            " 0123456789ab ",
        ] {
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
