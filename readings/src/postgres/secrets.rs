//! Database connection settings from AWS Secrets Manager (`DATABASE_SECRET_ARN`), read
//! once at cold start by [`crate::config::DbConfig::load`].
//!
//! The secret's `SecretString` is either
//! - the JSON that RDS and Secrets Manager use for database credentials:
//!   `{"username", "password", "host", "port", "dbname", "engine"}` (`port` a number or a
//!   string, default 5432; `dbname` default `sensors`; `engine`, when present, must be a
//!   PostgreSQL one), optionally with `sslmode` and `sslrootcert`; other fields are ignored;
//! - or a connection string, URL or key=value, as `DATABASE_URL` takes.
//!
//! The connection is built with `tokio_postgres::Config`'s setters, so a password needs no
//! escaping. Neither the secret nor any part of it is logged or put in an error.

use std::time::Duration;

use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::Client;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::postgres::connection::{ConnectionSettings, ConnectionStringError};
use crate::postgres::tls::{RootCert, TlsSettings};

/// The database when the JSON secret names none: the same as `DATABASE_URL`'s default.
pub const DEFAULT_DBNAME: &str = "sensors";

#[derive(Debug, Error)]
pub enum SecretError {
    #[error("cannot read secret {arn} from Secrets Manager: {reason}")]
    Read { arn: String, reason: String },
    #[error("secret {arn} has no SecretString (a binary secret?): store the connection as JSON or as a connection string")]
    NotText { arn: String },
    #[error("secret {arn} is not valid JSON: {reason}")]
    Json { arn: String, reason: String },
    #[error("secret {arn}: {problem}")]
    Field { arn: String, problem: String },
    #[error("secret {arn} is neither JSON nor a valid connection string: {source}")]
    ConnectionString {
        arn: String,
        #[source]
        source: ConnectionStringError,
    },
}

/// A Secrets Manager client from the AWS SDK's standard settings (region, credentials, and
/// `AWS_ENDPOINT_URL_SECRETS_MANAGER` / `AWS_ENDPOINT_URL` for a local endpoint such as moto).
pub async fn client() -> Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(10))
        .build();
    let shared = aws_config::from_env().timeout_config(timeouts).load().await;
    Client::new(&shared)
}

/// Reads the current version of secret `arn` and turns it into connection settings.
pub async fn fetch(client: &Client, arn: &str) -> Result<ConnectionSettings, SecretError> {
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| SecretError::Read {
            arn: arn.to_owned(),
            reason: sdk_reason(&e),
        })?;
    let text = out.secret_string().ok_or_else(|| SecretError::NotText {
        arn: arn.to_owned(),
    })?;
    parse(arn, text)
}

/// The service's code and message ("ResourceNotFoundException: Secrets Manager can't find
/// the specified secret."), or the whole chain for a transport failure.
fn sdk_reason<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => DisplayErrorContext(e).to_string(),
    }
}

/// Parses a secret's text: JSON when it starts with `{`, a connection string otherwise.
/// `arn` only names the secret in errors.
pub fn parse(arn: &str, secret: &str) -> Result<ConnectionSettings, SecretError> {
    let trimmed = secret.trim();
    if !trimmed.starts_with('{') {
        return ConnectionSettings::parse(trimmed).map_err(|source| {
            SecretError::ConnectionString {
                arn: arn.to_owned(),
                source,
            }
        });
    }
    // Into a Value first: serde_json's syntax errors give a position, never content.
    let value: Value = serde_json::from_str(trimmed).map_err(|e| SecretError::Json {
        arn: arn.to_owned(),
        reason: e.to_string(),
    })?;
    let Value::Object(fields) = value else {
        return Err(SecretError::Json {
            arn: arn.to_owned(),
            reason: "not a JSON object".into(),
        });
    };
    from_fields(&fields).map_err(|problem| SecretError::Field {
        arn: arn.to_owned(),
        problem,
    })
}

fn from_fields(fields: &Map<String, Value>) -> Result<ConnectionSettings, String> {
    let text = |name: &str| -> Result<Option<&str>, String> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(format!("field `{name}` must be a string")),
        }
    };
    let required = |name: &str| -> Result<&str, String> {
        match text(name)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(format!("field `{name}` is missing or empty")),
        }
    };
    if let Some(engine) = text("engine")? {
        if !engine.to_ascii_lowercase().contains("postgres") {
            return Err(format!(
                "field `engine` is `{engine}`; this pipeline needs PostgreSQL"
            ));
        }
    }
    let port = match fields.get("port") {
        None | Some(Value::Null) => Some(5432),
        Some(Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Some(Value::String(s)) => s.trim().parse::<u16>().ok(),
        Some(_) => None,
    }
    .filter(|p| *p > 0)
    .ok_or("field `port` must be a port number (1 to 65535), as a number or a string")?;

    let mut pg = tokio_postgres::Config::new();
    pg.user(required("username")?)
        .password(required("password")?)
        .host(required("host")?)
        .port(port)
        .dbname(text("dbname")?.unwrap_or(DEFAULT_DBNAME));
    let tls = TlsSettings {
        mode: text("sslmode")?
            .map(|m| m.parse())
            .transpose()
            .map_err(|e| format!("field `sslmode`: {e}"))?,
        root_cert: text("sslrootcert")?.map(RootCert::from_setting),
    };
    Ok(ConnectionSettings { pg, tls })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::tls::SslMode;

    const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";

    #[test]
    fn rds_json_with_a_password_that_needs_escaping() {
        let pw = r#"p@ss:w/o?r#d%2F'"\ "#;
        let secret = serde_json::json!({
            "username": "app", "password": pw, "engine": "postgres",
            "host": "db.example.com", "port": 5433, "dbname": "metrics",
            "dbInstanceIdentifier": "db-1"
        });
        let c = parse(ARN, &secret.to_string()).unwrap();
        assert_eq!(c.pg.get_user(), Some("app"));
        assert_eq!(c.pg.get_password(), Some(pw.as_bytes()));
        assert_eq!(c.pg.get_ports(), &[5433]);
        assert_eq!(c.pg.get_dbname(), Some("metrics"));
        assert_eq!(c.tls, TlsSettings::default());
    }

    #[test]
    fn port_as_a_string_default_database_and_tls_fields() {
        let c = parse(
            ARN,
            r#"{"username":"u","password":"p","host":"h","port":"6432","sslmode":"verify-full","sslrootcert":"/opt/rds-ca.pem"}"#,
        )
        .unwrap();
        assert_eq!(c.pg.get_ports(), &[6432]);
        assert_eq!(c.pg.get_dbname(), Some(DEFAULT_DBNAME));
        assert_eq!(c.tls.mode, Some(SslMode::VerifyFull));
        assert_eq!(
            c.tls.root_cert,
            Some(RootCert::File("/opt/rds-ca.pem".into()))
        );
    }

    #[test]
    fn a_connection_string_secret() {
        let c = parse(ARN, " postgres://u:p%23w@h:5432/db?sslmode=require\n").unwrap();
        assert_eq!(c.pg.get_password(), Some(&b"p#w"[..]));
        assert_eq!(c.tls.mode, Some(SslMode::Require));
        let c = parse(ARN, "host=h user=u password='a b' dbname=db").unwrap();
        assert_eq!(c.pg.get_password(), Some(&b"a b"[..]));
    }

    #[test]
    fn problems_name_the_secret_and_the_field_but_never_a_value() {
        let cases = [
            (
                r#"{"username":"u","password":"hunter2","host":"h""#,
                "not valid JSON",
            ),
            (r#"{"username":"u","password":"hunter2"}"#, "field `host`"),
            (
                r#"{"username":"u","password":7,"host":"h"}"#,
                "field `password`",
            ),
            (
                r#"{"username":"u","password":"hunter2","host":"h","port":"hunter2"}"#,
                "field `port`",
            ),
            (
                r#"{"username":"u","password":"hunter2","host":"h","engine":"mysql"}"#,
                "PostgreSQL",
            ),
            ("hunter2", "connection string"),
            ("host=h password=hunter2 oops", "connection string"),
        ];
        for (secret, expected) in cases {
            let e = parse(ARN, secret).expect_err(secret).to_string();
            assert!(e.contains(ARN), "{e}");
            assert!(e.contains(expected), "{secret}: {e}");
            assert!(!e.contains("hunter2"), "{secret}: {e}");
        }
    }
}
