//! `cost`: what each million readings costs on AWS, from measured figures.
//!
//! The inputs: a measured run (`loadtest --json`, [`run`]) and the pipeline's counters for
//! it ([`emf`] from the functions' output lines, or a [`measure`] file), the template's
//! settings ([`template`]) and a price table ([`prices`]).

pub mod emf;
pub mod measure;
pub mod prices;
pub mod run;
pub mod template;
