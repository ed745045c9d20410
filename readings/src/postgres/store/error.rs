//! How the store's errors are classed ([`ErrorKind`]) and described: the server's message and
//! SQLSTATE, not just "db error".

use thiserror::Error;

use crate::model::envelope::EnvelopeError;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("invalid database configuration: {0}")]
    Config(String),
    #[error("no database connection available: {}", describe_pool(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error while {context}: {}", describe(source))]
    Db {
        context: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("database busy: {0}")]
    Busy(&'static str),
    /// The deadline came before `0` finished; the statement was cancelled on the server.
    #[error("{0} was still running at the deadline; it was cancelled")]
    Deadline(&'static str),
    /// A batch part names other readings than the ones recorded under its batch id.
    #[error("{0}")]
    PartMismatch(String),
    /// `DB_SCHEMA=check`, and the database's schema is not (yet) at this build's version.
    #[error("the database schema is not ready: {0}")]
    SchemaBehind(String),
    /// `TIMESCALEDB=require`, and the database cannot give a hypertable: why, and what to do.
    #[error("TIMESCALEDB=require, but {0}")]
    TimescaleRequired(String),
}

/// What to do about a failed write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Worth retrying: the connection, the server's state or a conflict (SQLSTATE classes
    /// 08, 40, 53, 57, 58, XX, timeouts, no code at all).
    Transient,
    /// The data itself is refused (classes 22, 23): retrying the same rows cannot succeed.
    Data,
    /// Refused for a reason an operator must fix (class 42: privileges, missing objects).
    Operator,
}

impl StoreError {
    /// The SQLSTATE of the underlying database error, if there is one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            StoreError::Db { source, .. } => source.code().map(|c| c.code()),
            _ => None,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Envelope(_) | StoreError::PartMismatch(_) => ErrorKind::Data,
            _ => match self.sqlstate().map(|s| s.get(..2).unwrap_or(s)) {
                Some("22") | Some("23") => ErrorKind::Data,
                Some("42") => ErrorKind::Operator,
                _ => ErrorKind::Transient,
            },
        }
    }
}

/// The server's message, code and constraint, not just "db error".
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {}", db.message(), db.code().code());
            if let Some(c) = db.constraint() {
                s.push_str(&format!(", constraint {c}"));
            }
            s.push(')');
            s
        }
        None => match std::error::Error::source(e) {
            Some(inner) => format!("{e}: {inner}"),
            None => e.to_string(),
        },
    }
}

/// Why the pool has no connection: for a failed connect, the server's or the TLS layer's
/// reason ("password authentication failed ...", "invalid peer certificate: UnknownIssuer").
fn describe_pool(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => describe(e),
        e => e.to_string(),
    }
}

pub(super) trait Context<T> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, tokio_postgres::Error> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Db { context, source })
    }
}
