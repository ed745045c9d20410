//! The `keys` binary against a real database: create shows the key once, list never shows
//! a secret, revoke makes the functions refuse the key.

use std::process::Output;
use std::time::Duration;

use readings::http::auth::{Checked, Denied, KeyChecker, Scope};
use readings::testing::TestDb;
use serde_json::Value;

async fn keys(db: &TestDb, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_keys"))
        .args(args)
        .env("DATABASE_URL", &db.config.url)
        .output()
        .await
        .expect("run keys")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "keys failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8")
}

fn bearer(key: &str) -> axum::http::HeaderMap {
    let mut h = axum::http::HeaderMap::new();
    h.insert(
        "authorization",
        format!("Bearer {key}").parse().expect("header"),
    );
    h
}

#[tokio::test]
async fn create_list_revoke() {
    let db = TestDb::new().await;
    let checker = KeyChecker::new(db.store.clone(), Duration::ZERO, Duration::ZERO);

    let out = keys(
        &db,
        &["create", "--name", "north fleet", "--scope", "ingest"],
    )
    .await;
    let key = stdout(&out).trim().to_owned();
    // spk_<id>_<secret>_<checksum>, the checksum the CRC-32 of the rest.
    assert!(
        key.starts_with("spk_") && key.len() == 4 + 12 + 1 + 64 + 1 + 8,
        "{key}"
    );
    let (body, check) = key.rsplit_once('_').unwrap();
    assert_eq!(check, format!("{:08x}", crc32fast::hash(body.as_bytes())));
    let id = key[4..16].to_owned();
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(
        note.contains(&id) && note.contains("shown only now"),
        "{note}"
    );
    assert_eq!(
        checker.check(&bearer(&key), Scope::Ingest).await.unwrap(),
        Checked::Allowed(id.clone())
    );

    let out = keys(
        &db,
        &[
            "--json", "create", "--name", "wall", "--scope", "query", "--scope", "ingest",
        ],
    )
    .await;
    let made: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(made["scopes"], serde_json::json!(["ingest", "query"]));
    let second = made["key"].as_str().unwrap().to_owned();

    let listing = stdout(&keys(&db, &["list"]).await);
    assert!(
        listing.contains(&id) && listing.contains("north fleet"),
        "{listing}"
    );
    assert!(listing.contains("ingest,query"), "{listing}");
    assert!(!listing.contains(&key[17..]) && !listing.contains(&second[17..]));
    let rows: Value = serde_json::from_str(&stdout(&keys(&db, &["--json", "list"]).await)).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2);
    assert_eq!(rows[0]["id"], id.as_str());
    assert_eq!(rows[0]["revoked_at"], Value::Null);
    // Only a hash is stored.
    let client = db.client().await;
    let stored: Vec<u8> = client
        .query_one("SELECT key_hash FROM api_keys WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored.len(), 32);
    let dump: String = client
        .query_one("SELECT string_agg(t::text, ' ') FROM api_keys t", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!dump.contains(&key[17..]), "no secret in the table");

    stdout(&keys(&db, &["revoke", &id]).await);
    assert_eq!(
        checker.check(&bearer(&key), Scope::Ingest).await.unwrap(),
        Checked::Denied(Denied::Revoked, Some(id.clone()))
    );
    let rows: Value = serde_json::from_str(&stdout(&keys(&db, &["--json", "list"]).await)).unwrap();
    assert!(rows[0]["revoked_at"].is_string(), "{rows}");
    assert_eq!(rows[1]["revoked_at"], Value::Null, "the other key stays");
}

#[tokio::test]
async fn bad_input_is_refused_with_a_reason() {
    let db = TestDb::new().await;
    let out = keys(&db, &["create", "--name", "x", "--scope", "admin"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown scope"), "{err}");

    let out = keys(&db, &["create", "--name", " ", "--scope", "query"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("name"));

    let out = keys(&db, &["create", "--name", "x"]).await;
    assert!(!out.status.success(), "a scope is required");

    let out = keys(&db, &["revoke", "0123456789ab"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no key with id"), "{err}");
}
