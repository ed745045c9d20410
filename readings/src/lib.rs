//! Sensor readings through the pipeline: the reading model and its validation
//! ([`model::reading`]), ingest request handling ([`ingest`]), the queue envelope ([`model::envelope`]) and
//! sender ([`queue`]), the PostgreSQL store ([`postgres::store`]) and how it connects ([`postgres::connection`],
//! [`postgres::tls`], [`postgres::secrets`]), the writer's SQS handler ([`writer`]), query parameters
//! ([`query`]), configuration ([`config`]), the host that runs an HTTP function under Lambda
//! or locally ([`http`], with the local host's bounds in [`http::server`] and the Lambda host, for
//! every API Gateway, ALB and function URL payload, in [`http::lambda`]), API keys ([`http::auth`]), logs
//! ([`observability::telemetry`]) and CloudWatch metrics ([`observability::metrics`]).

pub mod config;
pub mod http;
pub mod ingest;
pub mod model;
pub mod observability;
pub mod postgres;
pub mod query;
pub mod queue;
pub mod writer;

#[cfg(feature = "testing")]
pub mod testing;

// Re-exported at the root, as the types nearly every crate of the workspace names: the
// reading, its limits and the store. Everything else is imported from its module.
pub use model::reading::{Limits, Reading};
pub use postgres::store::Store;
