//! The data model, without I/O: a reading and the rules it must pass ([`reading`]), and the
//! versioned queue message that carries readings from ingest to the writer ([`envelope`]).

pub mod envelope;
pub mod reading;
