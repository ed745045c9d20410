//! `keys`: creates, lists and revokes the API keys the HTTP functions accept.
//!
//! Talks to the pipeline's database through the settings the functions read
//! (`DATABASE_URL` or `DATABASE_SECRET_ARN`, `DB_SSLMODE`, ...). A key is printed once, at creation; only its hash is stored.

use std::io::Write;

use anyhow::Context;
use clap::{Parser, Subcommand};
use readings::config::DbConfig;
use readings::http::auth::{self, Scope};
use readings::postgres::store::{Store, StoredKey};
use serde::Serialize;

/// Manage the sensor pipeline's API keys.
///
/// The database comes from DATABASE_URL, or from the Secrets Manager secret named by
/// DATABASE_SECRET_ARN, with the functions' other database settings (see the README). Running functions cache key lookups for AUTH_CACHE_SECS (30 s by
/// default): a revoked key stops working within that time.
#[derive(Debug, Parser)]
#[command(name = "keys", version)]
pub struct Cli {
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a key and print it. It is shown this once: store it where the client reads it.
    Create {
        /// What the key is for (a fleet, a dashboard), shown by `list`.
        #[arg(long)]
        name: String,
        /// What the key may do: `ingest` (POST /sensor) or `query` (the GET routes). Repeat
        /// for both.
        #[arg(long = "scope", required = true, value_parser = parse_scope)]
        scopes: Vec<Scope>,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by its id (the part after `spk_`, as `list` shows it).
    Revoke {
        /// The key id.
        id: String,
    },
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    s.parse()
}

#[derive(Serialize)]
struct KeyOut<'a> {
    id: &'a str,
    name: &'a str,
    scopes: &'a [String],
    created_at: String,
    revoked_at: Option<String>,
}

impl<'a> From<&'a StoredKey> for KeyOut<'a> {
    fn from(k: &'a StoredKey) -> Self {
        KeyOut {
            id: &k.id,
            name: &k.name,
            scopes: &k.scopes,
            created_at: k.created_at.to_rfc3339(),
            revoked_at: k.revoked_at.map(|t| t.to_rfc3339()),
        }
    }
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = DbConfig::load().await?;
    let store = Store::new(&config)?;
    let schema = store.schema().await.context("setting up the database")?;
    if let Some(why) = &schema.plain_because {
        eprintln!("warning: sensor_data is a plain table: {why}");
    }
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Create { name, scopes } => {
            let key = auth::create_key(&store, &name, &scopes)
                .await
                .context("creating the key")?;
            let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
            if cli.json {
                let v = serde_json::json!({"id": key.id, "key": key.key, "name": name.trim(), "scopes": scopes});
                writeln!(out, "{v}")?;
            } else {
                eprintln!(
                    "created key {} ({}) with scopes {}; it is shown only now:",
                    key.id,
                    name.trim(),
                    scopes.join(",")
                );
                writeln!(out, "{}", key.key)?;
            }
        }
        Command::List => {
            let keys = store.api_keys().await.context("listing keys")?;
            if cli.json {
                let v: Vec<KeyOut> = keys.iter().map(KeyOut::from).collect();
                writeln!(out, "{}", serde_json::to_string(&v)?)?;
            } else {
                writeln!(
                    out,
                    "{:<12}  {:<13}  {:<20}  {:<20}  NAME",
                    "ID", "SCOPES", "CREATED", "REVOKED"
                )?;
                let when =
                    |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
                for k in &keys {
                    writeln!(
                        out,
                        "{:<12}  {:<13}  {:<20}  {:<20}  {}",
                        k.id,
                        k.scopes.join(","),
                        when(k.created_at),
                        k.revoked_at.map(when).unwrap_or_else(|| "-".into()),
                        k.name
                    )?;
                }
            }
        }
        Command::Revoke { id } => {
            let id = auth::named_id(&id);
            if !store.revoke_api_key(id).await.context("revoking the key")? {
                anyhow::bail!("no key with id {id:?}; `keys list` shows the ids");
            }
            if cli.json {
                writeln!(out, "{}", serde_json::json!({"id": id, "revoked": true}))?;
            } else {
                eprintln!("revoked key {id}; running functions refuse it within AUTH_CACHE_SECS (30 s by default)");
            }
        }
    }
    Ok(())
}
