//! Helpers for integration tests, behind the `testing` feature: a fresh database and a fresh
//! queue pair per test, on the PostgreSQL cluster and SQS endpoint that `scripts/test` starts.
//!
//! One file per thing faked or started: test databases (`database`) and private clusters
//! (`cluster`), the TimescaleDB target and its jobs (`timescale`), test queues (`queue`), a
//! fake Lambda Runtime API (`lambda_runtime`), Lambda events and answers (`events`), EMF
//! checks (`emf`), schemathesis and the OpenAPI document (`schemathesis`), and small
//! fixtures (`fixtures`). Everything is re-exported here: tests name `readings::testing::X`.

mod cluster;
mod database;
mod emf;
mod events;
mod fixtures;
mod lambda_runtime;
mod queue;
mod schemathesis;
mod timescale;

pub use cluster::PrivateCluster;
pub use database::{far_deadline, store_value, TestDb};
pub use emf::{check_emf, emf_documents, EmfDocument};
pub use events::{
    answer_shape, event, event_with_key, lambda_answer, set_header, sqs_message, with_base64_body,
    LambdaAnswer,
};
pub use fixtures::{ingest_config, poller_config, sample_readings, serve};
pub use lambda_runtime::{function_binary, FakeLambdaRuntime, SAM_FUNCTIONS};
pub use queue::{SqsStandIn, TestQueue};
pub use schemathesis::{schemathesis, validate_openapi};
pub use timescale::{background_job_runs, expected_kind, run_policy_jobs};

use rand::Rng;

fn suffix() -> String {
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

/// An error and its causes, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    s
}
