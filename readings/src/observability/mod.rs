//! What the functions tell operators: logs as JSON lines under Lambda, and process signals
//! ([`telemetry`]); CloudWatch metrics as EMF documents on stdout ([`metrics`]).

pub mod metrics;
pub mod telemetry;
