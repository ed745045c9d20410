//! `cost`: what each million readings costs on AWS, from measured figures.
//!
//! A measured run (`loadtest --json`, [`run`]) and the pipeline's counters for it ([`emf`]
//! from the functions' output lines, or a [`measure`] file), the template's settings
//! ([`template`]), a price table ([`prices`]) and documented assumptions ([`assume`]) are
//! resolved ([`resolve`]) into a [`model`], which prices three designs per million
//! readings; [`report`] prints it (text or JSON), [`svg`] draws it, [`cli`] is the command.

pub mod assume;
pub mod cli;
pub mod emf;
pub mod measure;
pub mod model;
pub mod prices;
pub mod report;
pub mod resolve;
pub mod run;
pub mod svg;
pub mod template;
