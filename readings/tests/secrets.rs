//! Database connections from Secrets Manager secrets (moto), against a private cluster that
//! checks passwords (SCRAM) for every role but `postgres`.

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use readings::config::{ConfigError, DbConfig};
use readings::postgres::secrets::SecretError;
use readings::testing::{store_value, PrivateCluster};
use readings::Store;
use tokio_postgres::NoTls;

/// Everything a connection string would need escaped, and then some.
const PASSWORD: &str = r#"p@ss:w/o?r#d%41'"\ &="#;

fn suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

async fn create_secret(value: &str) -> String {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL_SECRETS_MANAGER").is_some(),
        "AWS_ENDPOINT_URL_SECRETS_MANAGER is not set: run the tests with scripts/test"
    );
    readings::postgres::secrets::client()
        .await
        .create_secret()
        .name(format!("db-{}", suffix()))
        .secret_string(value)
        .send()
        .await
        .expect("create secret")
        .arn
        .expect("secret arn")
}

/// A cluster where role `app` (owner of database `sensors`) logs in with [`PASSWORD`].
async fn password_cluster() -> PrivateCluster {
    let mut cluster = PrivateCluster::prepare();
    let hba = cluster.file(
        "pg_hba.conf",
        b"host all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
    );
    cluster.set("hba_file", hba.display());
    cluster.launch();
    let (client, conn) = tokio_postgres::connect(
        &format!("postgres://postgres@127.0.0.1:{}/sensors", cluster.port),
        NoTls,
    )
    .await
    .expect("connect as postgres");
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE app LOGIN PASSWORD '{}';
             ALTER DATABASE sensors OWNER TO app;",
            PASSWORD.replace('\'', "''")
        ))
        .await
        .expect("create role app");
    cluster
}

async fn current_user(config: &DbConfig) -> Result<String, String> {
    let store = Store::new(config).map_err(|e| e.to_string())?;
    store_value(&store, "SELECT current_user::text").await
}

#[tokio::test]
async fn secrets_connect_with_a_password_that_needs_escaping() {
    let cluster = password_cluster().await;
    let port = cluster.port;

    // The JSON RDS writes, port as a number; the store sets the schema up and writes.
    let json = serde_json::json!({
        "username": "app", "password": PASSWORD, "engine": "postgres",
        "host": "127.0.0.1", "port": port, "dbname": "sensors",
        "dbInstanceIdentifier": "sensors-db"
    });
    let config = DbConfig::from_secret(&create_secret(&json.to_string()).await)
        .await
        .expect("config from the JSON secret");
    assert_eq!(current_user(&config).await.as_deref(), Ok("app"));
    let store = Store::new(&config).unwrap();
    store.ready().await.expect("schema set up as app");
    let part = readings::model::envelope::BatchPart::range(
        "secret-1",
        0,
        1,
        vec![readings::model::envelope::WireReading(
            1_710_000_000_000_000,
            "vault".into(),
            4.0,
        )],
    );
    assert_eq!(
        store
            .write(&[&part], readings::testing::far_deadline())
            .await
            .expect("write")
            .rows,
        1
    );

    // A URL, the password percent-encoded.
    let url = format!(
        "postgres://app:{}@127.0.0.1:{port}/sensors",
        utf8_percent_encode(PASSWORD, NON_ALPHANUMERIC)
    );
    let config = DbConfig::from_secret(&create_secret(&url).await)
        .await
        .expect("config from the URL secret");
    assert_eq!(current_user(&config).await.as_deref(), Ok("app"));

    // key=value, the password quoted.
    let kv = format!(
        "host=127.0.0.1 port={port} user=app dbname=sensors password='{}'",
        PASSWORD.replace('\\', r"\\").replace('\'', r"\'")
    );
    let config = DbConfig::from_secret(&create_secret(&kv).await)
        .await
        .expect("config from the key=value secret");
    assert_eq!(current_user(&config).await.as_deref(), Ok("app"));

    // The server does check: a wrong password is refused.
    let wrong = serde_json::json!({
        "username": "app", "password": format!("{PASSWORD}x"),
        "host": "127.0.0.1", "port": port.to_string()
    });
    let config = DbConfig::from_secret(&create_secret(&wrong.to_string()).await)
        .await
        .expect("config from the secret with a wrong password");
    let e = current_user(&config).await.expect_err("wrong password");
    assert!(e.contains("password authentication failed"), "{e}");
    assert!(!e.contains(PASSWORD), "{e}");
}

#[tokio::test]
async fn a_missing_secret_is_an_error_naming_its_arn() {
    let arn = format!(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:missing-{}-AbCdEf",
        suffix()
    );
    let e = DbConfig::from_secret(&arn)
        .await
        .expect_err("no such secret");
    assert!(
        matches!(e, ConfigError::Secret(SecretError::Read { .. })),
        "{e:?}"
    );
    let e = e.to_string();
    assert!(e.contains(&arn), "{e}");
    assert!(e.contains("ResourceNotFoundException"), "{e}");
}

#[tokio::test]
async fn a_malformed_json_secret_is_a_clear_error_without_its_content() {
    let arn =
        create_secret(r#"{"username": "app", "password": "hunter2-do-not-log", "host": "db""#)
            .await;
    let e = DbConfig::from_secret(&arn)
        .await
        .expect_err("malformed JSON")
        .to_string();
    assert!(e.contains(&arn), "{e}");
    assert!(e.contains("is not valid JSON"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");

    let arn = create_secret(r#"{"username": "app", "password": "hunter2-do-not-log"}"#).await;
    let e = DbConfig::from_secret(&arn)
        .await
        .expect_err("no host")
        .to_string();
    assert!(e.contains(&arn) && e.contains("field `host`"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}

#[tokio::test]
async fn a_rotated_password_is_read_again_from_the_secret_without_a_restart() {
    let cluster = password_cluster().await;
    let secret = |password: &str| {
        serde_json::json!({
            "username": "app", "password": password, "engine": "postgres",
            "host": "127.0.0.1", "port": cluster.port, "dbname": "sensors"
        })
        .to_string()
    };
    let arn = create_secret(&secret(PASSWORD)).await;
    let store = Store::new(&DbConfig::from_secret(&arn).await.expect("config")).unwrap();
    store
        .ready()
        .await
        .expect("connects with the first password");

    let (admin, conn) = tokio_postgres::connect(
        &format!("postgres://postgres@127.0.0.1:{}/sensors", cluster.port),
        NoTls,
    )
    .await
    .expect("connect as postgres");
    tokio::spawn(conn);
    // What rotation does: a new password on the role, then in the secret. Open connections
    // stay logged in, so end them: the pool must log in again.
    let rotate = |password: &'static str| {
        let admin = &admin;
        async move {
            admin
                .batch_execute(&format!("ALTER ROLE app PASSWORD '{password}'"))
                .await
                .expect("new password");
            admin
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'",
                    &[],
                )
                .await
                .expect("end app's sessions");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };
    let query = || store_value::<String>(&store, "SELECT current_user::text");

    rotate("rotated-1").await;
    readings::postgres::secrets::client()
        .await
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(secret("rotated-1"))
        .send()
        .await
        .expect("rotate the secret");
    assert_eq!(
        query().await.as_deref(),
        Ok("app"),
        "logged in with the new password"
    );

    // The role's password changes but the secret does not: refused, with the reason.
    rotate("rotated-2").await;
    let err = query()
        .await
        .expect_err("the secret's password is out of date");
    assert!(err.contains("password authentication failed"), "{err}");
}
