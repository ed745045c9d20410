//! Test databases: a database of its own per test on the test cluster ([`TestDb`]), and a
//! value asked through a store's pool as the functions connect.

use std::time::Duration;

use tokio_postgres::NoTls;

use super::{error_chain, suffix};
use crate::config::DbConfig;
use crate::postgres::store::Store;

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!("TEST_DATABASE_URL is not set: run the tests with scripts/test, which starts PostgreSQL and moto")
    })
}

/// A database of its own for one test, on the test cluster.
pub struct TestDb {
    pub config: DbConfig,
    pub store: Store,
    pub name: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let admin = admin_url();
        let name = format!("t_{}", suffix());
        let (client, conn) = tokio_postgres::connect(&admin, NoTls)
            .await
            .expect("connect to TEST_DATABASE_URL");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let mut pg: tokio_postgres::Config = admin.parse().expect("TEST_DATABASE_URL parses");
        pg.dbname(&name);
        let url = pg_url(&pg, &name);
        let config = DbConfig {
            url,
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            ..Default::default()
        };
        let store = Store::new(&config).expect("store");
        TestDb {
            config,
            store,
            name,
        }
    }

    /// The database `config` names (e.g. a [`PrivateCluster`](super::PrivateCluster)'s), with
    /// the same helpers.
    pub fn on(config: DbConfig) -> TestDb {
        let name = config
            .url
            .parse::<tokio_postgres::Config>()
            .ok()
            .and_then(|c| c.get_dbname().map(str::to_owned))
            .unwrap_or_default();
        let store = Store::new(&config).expect("store");
        TestDb {
            config,
            store,
            name,
        }
    }

    /// Writes readings `(epoch µs, location, temperature)` through the store's write path,
    /// as one batch part of its own.
    pub async fn insert(&self, rows: &[(i64, &str, f64)]) {
        let readings: Vec<_> = rows
            .iter()
            .map(|(t, l, v)| crate::model::envelope::WireReading(*t, (*l).to_owned(), *v))
            .collect();
        let part = crate::model::envelope::BatchPart::range(
            format!("seed-{}", suffix()),
            0,
            readings.len() as u32,
            readings,
        );
        self.store
            .write(&[&part], far_deadline())
            .await
            .expect("seed readings");
    }

    /// The connection of a new login role, a member of `group` (one of the functions'
    /// roles, [`crate::postgres::store::ROLES`]), that only checks the schema
    /// (`DB_SCHEMA=check`), as a deployed function with a role of its own connects. The
    /// schema must be set up first (it creates the group roles).
    pub async fn login_in(&self, group: &str) -> DbConfig {
        let login = format!("t_{}", suffix());
        self.client()
            .await
            .batch_execute(&format!("CREATE ROLE {login} LOGIN IN ROLE {group}"))
            .await
            .expect("create a login role");
        let mut pg: tokio_postgres::Config = self.config.url.parse().expect("test url parses");
        pg.user(&login);
        DbConfig {
            url: pg_url(&pg, &self.name),
            schema: crate::postgres::settings::SchemaMode::Check,
            ..self.config.clone()
        }
    }

    /// A new API key with these scopes, in this test's database.
    pub async fn api_key(&self, scopes: &[crate::http::auth::Scope]) -> String {
        crate::http::auth::create_key(&self.store, "test", scopes)
            .await
            .expect("create an API key")
            .key
    }

    /// A plain connection to this test's database.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.config.url, NoTls)
            .await
            .expect("connect to test database");
        tokio::spawn(conn);
        client
    }

    /// Rows in `sensor_data` (0 when the table does not exist yet).
    pub async fn count(&self) -> i64 {
        let c = self.client().await;
        let exists: bool = c
            .query_one("SELECT to_regclass('sensor_data') IS NOT NULL", &[])
            .await
            .expect("query")
            .get(0);
        if !exists {
            return 0;
        }
        c.query_one("SELECT count(*) FROM sensor_data", &[])
            .await
            .expect("count")
            .get(0)
    }

    /// Every row as (epoch µs, location, temperature), ordered by time then location.
    pub async fn rows(&self) -> Vec<(i64, String, f64)> {
        self.client()
            .await
            .query(
                "SELECT (extract(epoch FROM time) * 1000000)::int8, location, temperature
                 FROM sensor_data ORDER BY time, location, temperature",
                &[],
            )
            .await
            .expect("rows")
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }
}

/// A deadline no test reaches.
pub fn far_deadline() -> std::time::Instant {
    std::time::Instant::now() + Duration::from_secs(3600)
}

fn pg_url(pg: &tokio_postgres::Config, db: &str) -> String {
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let user = pg.get_user().unwrap_or("postgres");
    format!("postgres://{user}@{host}:{port}/{db}")
}

/// The one value `sql` answers, asked through `store`'s pool (connecting as the functions
/// do), or the error: the store's own when no connection can be had, as the functions
/// log it.
pub async fn store_value<T>(store: &Store, sql: &str) -> Result<T, String>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    let client = store
        .pool()
        .get()
        .await
        .map_err(|e| crate::postgres::store::StoreError::from(e).to_string())?;
    let row = client
        .query_one(sql, &[])
        .await
        .map_err(|e| error_chain(&e))?;
    row.try_get(0).map_err(|e| error_chain(&e))
}
