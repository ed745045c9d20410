//! PostgreSQL: where and how to connect ([`connection`], [`tls`], credentials from Secrets
//! Manager in [`secrets`], re-read when rotated in [`rotation`]), the database settings
//! ([`settings`]) and the [`store`] itself.

pub mod connection;
pub mod rotation;
pub mod secrets;
pub mod settings;
pub mod store;
pub mod tls;
