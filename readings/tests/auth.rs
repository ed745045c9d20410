//! API keys through the guard (`Auth::protect`) against a real PostgreSQL: what made-up keys
//! cost the database, that real keys (with and without a checksum) keep working, and that
//! a key that cannot be checked for want of a connection answers 503.

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use axum::Router;
use rand::Rng;
use readings::config::{AuthConfig, DbConfig};
use readings::http::auth::{create_key, Auth, Scope};
use readings::postgres::store::StoredKey;
use readings::testing::TestDb;
use readings::Store;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tower::ServiceExt;

/// One route behind the guard, needing the `query` scope.
fn app(store: &Store) -> Router {
    let auth = Auth::new(&AuthConfig::default(), store.clone());
    auth.protect(
        Router::new().route("/", get(|| async { "ok" })),
        Scope::Query,
    )
}

/// The status, `Retry-After` and body of a request presenting `key`.
async fn call(app: &Router, key: &str) -> (u16, Option<String>, String) {
    let request = Request::builder()
        .uri("/")
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    (
        status,
        retry_after,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

/// A store with one connection, so that everything the guard asks goes through it.
fn one_connection(db: &TestDb, connect_timeout: Duration) -> Store {
    Store::new(&DbConfig {
        pool_size: 1,
        connect_timeout,
        ..db.config.clone()
    })
    .unwrap()
}

/// Transactions the test database has run, as PostgreSQL's statistics count them. The
/// store's one connection flushes what it has counted before the count is read (a
/// backend otherwise reports its counts up to 10 s late).
async fn transactions(store: &Store) -> i64 {
    let client = store.pool().get().await.unwrap();
    client
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    client
        .query_one(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database
             WHERE datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

fn random_hex(digits: usize) -> String {
    let mut rng = rand::rng();
    (0..digits)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap())
        .collect()
}

/// `spk_<id>_<secret>`, the format of keys made before checksums.
fn old_format(id: &str) -> String {
    format!("spk_{id}_{}", random_hex(64))
}

/// `spk_<id>_<secret>_<crc32>`, the format `keys create` makes.
fn with_checksum(body: &str) -> String {
    format!("{body}_{:08x}", crc32fast::hash(body.as_bytes()))
}

/// Stores a key of the format made before checksums, as `keys create` did then.
async fn old_key(store: &Store) -> String {
    let id = random_hex(12);
    let key = old_format(&id);
    store
        .insert_api_key(&StoredKey {
            id,
            name: "made before checksums".into(),
            scopes: vec!["query".into()],
            key_hash: Sha256::digest(key.as_bytes()).to_vec(),
            created_at: chrono::Utc::now(),
            revoked_at: None,
        })
        .await
        .unwrap();
    key
}

#[tokio::test]
async fn two_thousand_forged_keys_cost_fewer_than_100_transactions() {
    let db = TestDb::new().await;
    let store = one_connection(&db, Duration::from_secs(5));
    let real = create_key(&store, "fleet", &[Scope::Query]).await.unwrap();
    let old = old_key(&store).await;
    let app = app(&store);
    assert_eq!(call(&app, &real.key).await.0, 200);
    assert_eq!(call(&app, &old).await.0, 200);

    // Forged keys of every kind: made-up ids in the old format and in the new one with a
    // correct checksum (anyone can compute it), keys whose checksum does not match, and
    // the real key's id with another secret.
    let real_body = &real.key[..real.key.len() - 9];
    let forged: Vec<String> = (0..2000)
        .map(|i| match i % 4 {
            0 => old_format(&random_hex(12)),
            1 => with_checksum(&old_format(&random_hex(12))),
            2 => format!("{}_{}", old_format(&random_hex(12)), random_hex(8)),
            _ => with_checksum(&format!("spk_{}_{}", real.id, random_hex(64))),
        })
        .collect();
    assert!(!forged.iter().any(|k| k == &real.key || k == real_body));

    let before = transactions(&store).await;
    for key in &forged {
        let (status, _, body) = call(&app, key).await;
        assert_eq!(status, 401, "{key}: {body}");
    }
    // The real keys are still cached: the flood evicted nothing.
    assert_eq!(call(&app, &real.key).await.0, 200);
    assert_eq!(call(&app, &old).await.0, 200);
    let spent = transactions(&store).await - before;
    assert!(
        spent < 100,
        "2,000 forged keys cost {spent} database transactions"
    );
}

#[tokio::test]
async fn a_key_made_after_the_ids_were_read_works_within_a_second() {
    let db = TestDb::new().await;
    let store = one_connection(&db, Duration::from_secs(5));
    let first = create_key(&store, "first", &[Scope::Query]).await.unwrap();
    let app = app(&store);
    assert_eq!(call(&app, &first.key).await.0, 200);

    let later = create_key(&store, "later", &[Scope::Query]).await.unwrap();
    let old = old_key(&store).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for key in [&later.key, &old] {
        let (status, _, body) = call(&app, key).await;
        assert_eq!(status, 200, "{key}: {body}");
    }
    // Revoked keys stay among the ids: refused as revoked (403), not as unknown.
    assert!(store.revoke_api_key(&first.id).await.unwrap());
    let fresh = app_with_cache(&store, Duration::ZERO);
    assert_eq!(call(&fresh, &first.key).await.0, 403);
}

fn app_with_cache(store: &Store, cache_ttl: Duration) -> Router {
    let auth = Auth::new(
        &AuthConfig {
            cache_ttl,
            ..AuthConfig::default()
        },
        store.clone(),
    );
    auth.protect(
        Router::new().route("/", get(|| async { "ok" })),
        Scope::Query,
    )
}

/// Takes the store's only connection and keeps it busy for `secs`; returns once it is
/// taken.
async fn hold_the_only_connection(store: &Store, secs: u32) -> tokio::task::JoinHandle<()> {
    let holder = store.clone();
    let held = tokio::spawn(async move {
        let client = holder.pool().get().await.unwrap();
        client
            .batch_execute(&format!("SELECT pg_sleep({secs})"))
            .await
            .unwrap();
    });
    while store.pool().status().available > 0 || store.pool().status().size == 0 {
        tokio::task::yield_now().await;
    }
    held
}

#[tokio::test]
async fn keys_that_cannot_be_checked_for_want_of_a_connection_answer_503() {
    let db = TestDb::new().await;
    // Pool waits end after a second.
    let store = one_connection(&db, Duration::from_secs(1));
    let seen = create_key(&store, "seen", &[Scope::Query]).await.unwrap();
    let unseen = create_key(&store, "unseen", &[Scope::Query]).await.unwrap();
    let warm = app(&store);
    assert_eq!(call(&warm, &seen.key).await.0, 200);
    let cold = app(&store);

    let held = hold_the_only_connection(&store, 5).await;
    // `warm` has read the key ids but never looked `unseen` up; `cold` has read nothing.
    for (app, key, what) in [
        (&warm, &unseen.key, "a key not looked up yet"),
        (&cold, &seen.key, "the key ids not read yet"),
    ] {
        let (status, retry_after, body) = call(app, key).await;
        assert_eq!(status, 503, "{what}: {body}");
        assert!(retry_after.is_some(), "{what}: 503 carries Retry-After");
        let json: Value = serde_json::from_str(&body).unwrap();
        assert!(
            json["error"]
                .as_str()
                .is_some_and(|e| e.contains("API key")),
            "{json}"
        );
    }
    // A key looked up before is answered from the cache meanwhile.
    assert_eq!(call(&warm, &seen.key).await.0, 200);
    held.abort();
}
