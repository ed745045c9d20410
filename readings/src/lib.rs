//! Sensor readings through the pipeline. One folder per layer, listed in the order a reading
//! travels:
//!
//! - [`model`]: the reading and the rules it must pass, and the queue envelope; no I/O.
//! - [`ingest`]: request bodies into validated readings into envelopes on the queue, with
//!   coalescing of concurrent requests in the long-running host.
//! - [`queue`]: the SQS client and sender, and dead letters with their reason attributes.
//! - [`writer`]: the batch writer's SQS handler: messages into the store, failures classed.
//! - [`postgres`]: connection strings, TLS, credentials from Secrets Manager and their
//!   rotation, the database settings, and the [`Store`] (schema, writes, reads, keys,
//!   lifecycle).
//! - [`query`]: the read routes' parameters, and the questions the store answers.
//! - [`http`]: the two hosts of the HTTP functions (Lambda and local), JSON errors, API keys.
//! - [`observability`]: logs and process signals, CloudWatch EMF metrics.
//! - [`config`]: configuration from the environment (every module may use it; it uses only
//!   [`model`] and [`postgres`]'s settings and types).
//! - `testing` (feature `testing`): helpers for the workspace's integration tests.

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

/// The allocator of every binary that links this crate (feature `mimalloc`, on by default).
/// Ingest allocates per reading and per request: under glibc's allocator, malloc and free
/// took about 30% of its CPU at 100,000 readings/s.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
