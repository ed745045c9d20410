//! Where and how to connect to PostgreSQL: a libpq-style connection string (URL or
//! key=value) or a Secrets Manager secret, turned into a [`tokio_postgres::Config`] plus the
//! TLS settings tokio-postgres does not know.
//!
//! tokio-postgres understands `sslmode` only up to `require` and has no `sslrootcert`, so
//! both are taken out of the string here, in either form, before it parses the rest.
//!
//! Errors never echo values: the string carries a password.

use std::str::FromStr;

use percent_encoding::percent_decode_str;
use thiserror::Error;

use crate::postgres::tls::{RootCert, TlsSettings};

/// A connection target: the PostgreSQL settings and the TLS settings.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// Host, port, user, password, database and the other libpq settings tokio-postgres
    /// reads; its `ssl_mode` is set from `tls` when the pool is built.
    pub pg: tokio_postgres::Config,
    pub tls: TlsSettings,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConnectionStringError {
    #[error("expected `=` after the option name ending at byte {0}")]
    ExpectedEquals(usize),
    #[error("the option ending at byte {0} has no value")]
    MissingValue(usize),
    #[error("the quoted value starting at byte {0} is not terminated")]
    UnterminatedQuote(usize),
    #[error("option `{0}` is not supported")]
    Unsupported(&'static str),
    #[error("unknown option at byte {0} (not shown: it may be part of a password)")]
    UnknownOption(usize),
    #[error("invalid value for sslmode: {0}")]
    SslMode(String),
    #[error("a percent-encoded sslrootcert or sslmode is not valid UTF-8")]
    Encoding,
    #[error("{0}")]
    Postgres(String),
}

/// Options tokio-postgres 0.7 parses, plus `sslrootcert`, taken out here.
const KNOWN: &[&str] = &[
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "sslmode",
    "sslnegotiation",
    "sslrootcert",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// libpq options that have no equivalent here; named in the error, since they are not
/// password fragments.
const UNSUPPORTED: &[&str] = &[
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "sslcompression",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "requirepeer",
    "gssencmode",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "passfile",
    "service",
    "require_auth",
    "replication",
    "client_encoding",
    "fallback_application_name",
];

impl ConnectionSettings {
    /// Parses a libpq-style URL (`postgres://` or `postgresql://`) or key=value string,
    /// including `sslmode` (all of libpq's values but `allow`) and `sslrootcert`.
    pub fn parse(s: &str) -> Result<Self, ConnectionStringError> {
        let (rest, ssl) = if is_url(s) {
            split_url(s)?
        } else {
            split_key_values(s)?
        };
        let mut tls = TlsSettings::default();
        if let Some(mode) = ssl.mode {
            tls.mode = Some(mode.parse().map_err(ConnectionStringError::SslMode)?);
        }
        tls.root_cert = ssl.root_cert.as_deref().map(RootCert::from_setting);
        let pg = tokio_postgres::Config::from_str(&rest)
            .map_err(|e| ConnectionStringError::Postgres(postgres_error(&e)))?;
        Ok(ConnectionSettings { pg, tls })
    }

    /// The tokio-postgres settings with the negotiation `tls` asks for.
    pub fn postgres_config(&self) -> tokio_postgres::Config {
        let mut pg = self.pg.clone();
        pg.ssl_mode(self.tls.mode().negotiation());
        pg
    }
}

impl FromStr for ConnectionSettings {
    type Err = ConnectionStringError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ConnectionSettings::parse(s)
    }
}

/// tokio-postgres' parse error with its cause ("invalid value for option `port`").
fn postgres_error(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) if !e.to_string().contains(&cause.to_string()) => format!("{e}: {cause}"),
        _ => e.to_string(),
    }
}

fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// The raw `sslmode` and `sslrootcert` values taken out of a string (the last one wins, as
/// in libpq).
#[derive(Debug, Default)]
struct Ssl {
    mode: Option<String>,
    root_cert: Option<String>,
}

impl Ssl {
    /// Takes the option if it is one of ours.
    fn take(&mut self, key: &str, value: String) -> bool {
        match key {
            "sslmode" => self.mode = Some(value),
            "sslrootcert" => self.root_cert = Some(value),
            _ => return false,
        }
        true
    }
}

/// Splits the query off a URL and takes our options out of it, keeping every other byte as
/// it was. The query starts at the first `?` after the credentials, which end at the first
/// `@`: where tokio-postgres looks for them.
fn split_url(s: &str) -> Result<(String, Ssl), ConnectionStringError> {
    let after_credentials = s.find('@').map_or(0, |at| at + 1);
    let Some(q) = s[after_credentials..]
        .find('?')
        .map(|q| q + after_credentials)
    else {
        return Ok((s.to_owned(), Ssl::default()));
    };
    let mut ssl = Ssl::default();
    let mut kept = Vec::new();
    for piece in s[q + 1..].split('&') {
        let taken = match piece.split_once('=') {
            Some((key, value)) if matches!(key, "sslmode" | "sslrootcert") => {
                let value = percent_decode_str(value)
                    .decode_utf8()
                    .map_err(|_| ConnectionStringError::Encoding)?;
                ssl.take(key, value.into_owned())
            }
            _ => false,
        };
        if !taken {
            kept.push(piece);
        }
    }
    let mut rest = s[..q].to_owned();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    Ok((rest, ssl))
}

/// Takes our options out of a key=value string, keeping the others verbatim. The grammar is
/// tokio-postgres' (libpq's): `key = value` pairs separated by whitespace; a value is
/// single-quoted or runs to the next whitespace; a backslash escapes the next character.
fn split_key_values(s: &str) -> Result<(String, Ssl), ConnectionStringError> {
    let mut ssl = Ssl::default();
    let mut rest = String::with_capacity(s.len());
    let mut p = KvParser { s, i: 0 };
    loop {
        p.skip_ws();
        let start = p.i;
        let key = p.take_while(|c| !c.is_whitespace() && c != '=');
        if key.is_empty() {
            // tokio-postgres stops here too; keep whatever is left for it to see.
            rest.push_str(&s[start..]);
            break;
        }
        let key_end = p.i;
        p.skip_ws();
        if !p.eat('=') {
            return Err(ConnectionStringError::ExpectedEquals(key_end));
        }
        p.skip_ws();
        let value = p.value(key_end)?;
        if !KNOWN.contains(&key) {
            return Err(match UNSUPPORTED.iter().find(|u| **u == key) {
                Some(u) => ConnectionStringError::Unsupported(u),
                None => ConnectionStringError::UnknownOption(start),
            });
        }
        if !ssl.take(key, value) {
            rest.push_str(&s[start..p.i]);
            rest.push(' ');
        }
    }
    Ok((rest, ssl))
}

struct KvParser<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> KvParser<'a> {
    fn peek(&self) -> Option<char> {
        self.s[self.i..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += c.len_utf8();
        Some(c)
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.bump();
        }
        &self.s[start..self.i]
    }

    fn skip_ws(&mut self) {
        self.take_while(char::is_whitespace);
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn value(&mut self, key_end: usize) -> Result<String, ConnectionStringError> {
        let mut value = String::new();
        if self.eat('\'') {
            let open = self.i - 1;
            loop {
                match self.bump() {
                    None => return Err(ConnectionStringError::UnterminatedQuote(open)),
                    Some('\'') => return Ok(value),
                    Some('\\') => value.extend(self.bump()),
                    Some(c) => value.push(c),
                }
            }
        }
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                break;
            }
            self.bump();
            if c == '\\' {
                value.extend(self.bump());
            } else {
                value.push(c);
            }
        }
        if value.is_empty() {
            return Err(ConnectionStringError::MissingValue(key_end));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::tls::SslMode;
    use tokio_postgres::config::Host;

    fn parse(s: &str) -> ConnectionSettings {
        ConnectionSettings::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn host(c: &ConnectionSettings) -> String {
        match c.pg.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn url_without_ssl_options_is_untouched() {
        let c = parse("postgres://app:p%40ss@db.example.com:6543/sensors?application_name=x");
        assert_eq!(host(&c), "db.example.com");
        assert_eq!(c.pg.get_ports(), &[6543]);
        assert_eq!(c.pg.get_password(), Some(&b"p@ss"[..]));
        assert_eq!(c.pg.get_dbname(), Some("sensors"));
        assert_eq!(c.pg.get_application_name(), Some("x"));
        assert_eq!(c.tls, TlsSettings::default());
        assert_eq!(c.tls.mode(), SslMode::Prefer);
    }

    #[test]
    fn url_ssl_options_are_taken_out_wherever_they_are() {
        let c = parse(
            "postgresql://app@h/db?sslmode=verify-full&application_name=a&sslrootcert=%2Ftmp%2Fmy%20ca.pem",
        );
        assert_eq!(c.tls.mode, Some(SslMode::VerifyFull));
        assert_eq!(
            c.tls.root_cert,
            Some(RootCert::File("/tmp/my ca.pem".into()))
        );
        assert_eq!(c.pg.get_application_name(), Some("a"));
        assert_eq!(
            c.postgres_config().get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );

        let c = parse("postgres://h/db?sslrootcert=system");
        assert_eq!(c.tls.root_cert, Some(RootCert::System));
        assert_eq!(c.tls.mode(), SslMode::VerifyFull);

        let c = parse("postgres://h/db?sslmode=disable");
        assert_eq!(
            c.postgres_config().get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
    }

    #[test]
    fn a_question_mark_in_the_credentials_is_not_the_query() {
        let c = parse("postgres://app:a?b=c@h:5432/db?sslmode=require");
        assert_eq!(c.pg.get_password(), Some(&b"a?b=c"[..]));
        assert_eq!(host(&c), "h");
        assert_eq!(c.tls.mode, Some(SslMode::Require));
    }

    #[test]
    fn key_values_ssl_options_are_taken_out_and_quoting_kept() {
        let c = parse(
            r"host=db port=5433 sslmode = verify-ca password='it\'s' sslrootcert='/etc/my ca.pem' user=app",
        );
        assert_eq!(c.tls.mode, Some(SslMode::VerifyCa));
        assert_eq!(
            c.tls.root_cert,
            Some(RootCert::File("/etc/my ca.pem".into()))
        );
        assert_eq!(c.pg.get_user(), Some("app"));
        assert_eq!(c.pg.get_ports(), &[5433]);

        let c = parse(r"host=db password='a b\'c\\d=e' sslmode=require dbname=x\ y");
        assert_eq!(c.pg.get_password(), Some(&br"a b'c\d=e"[..]));
        assert_eq!(c.pg.get_dbname(), Some("x y"));
        assert_eq!(c.tls.mode, Some(SslMode::Require));
    }

    #[test]
    fn errors_do_not_echo_values() {
        let cases = [
            ("host=db password=hunter2 secret", "hunter2"),
            ("host=db password='hunter2", "hunter2"),
            ("host=db password=hunter2 wat=hunter3", "hunter3"),
            ("host=db password= ", "password"),
            ("postgres://h/db?sslmode=hunter2", "hunter2"),
        ];
        for (s, secret) in cases {
            let e = ConnectionSettings::parse(s).expect_err(s).to_string();
            assert!(!e.contains(secret), "{s}: {e}");
        }
        assert_eq!(
            ConnectionSettings::parse("host=db sslcert=/x").unwrap_err(),
            ConnectionStringError::Unsupported("sslcert")
        );
        assert!(ConnectionSettings::parse("host=db sslmode=allow")
            .unwrap_err()
            .to_string()
            .contains("allow"));
        assert!(ConnectionSettings::parse("postgres://h:notaport/db")
            .unwrap_err()
            .to_string()
            .contains("port"));
    }
}
