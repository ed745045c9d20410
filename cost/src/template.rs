//! The deployment's settings that cost depends on, from `template.yaml`'s parameter
//! defaults: the three functions' memory sizes and the writer's event source batching.
//!
//! The template uses CloudFormation's short tags (`!Ref`, `!If`, ...), which general YAML
//! parsers refuse without a schema for them; all this needs is `Parameters.<Name>.Default`
//! of block-style YAML as the template writes it, so a small line scanner reads that.

use std::path::Path;

use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum TemplateError {
    #[error("reading {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: no top-level `Parameters:` section")]
    NoParameters { path: String },
    #[error("{path}: parameter `{name}` is missing (give --assume {flag}=... instead)")]
    Missing {
        path: String,
        name: &'static str,
        flag: &'static str,
    },
    #[error("{path}: parameter `{name}` has no Default (give --assume {flag}=... instead)")]
    NoDefault {
        path: String,
        name: &'static str,
        flag: &'static str,
    },
    #[error("{path}: `{name}`'s Default `{value}` is not a positive number")]
    NotANumber {
        path: String,
        name: &'static str,
        value: String,
    },
}

/// What cost needs from the template.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    pub ingest_memory_mb: f64,
    pub query_memory_mb: f64,
    pub writer_memory_mb: f64,
    /// Most SQS messages per writer invocation (the event source's `BatchSize`).
    pub writer_batch_size: f64,
    /// `MaximumBatchingWindowInSeconds`.
    pub writer_batch_window_secs: f64,
    /// `Architectures` of the functions, when the template names them (`Globals.Function`).
    pub architecture: Option<String>,
}

/// The parameters read, the assumption key that replaces each, and its field.
pub const PARAMETERS: [(&str, &str); 5] = [
    ("IngestMemorySize", "ingest_memory_mb"),
    ("QueryMemorySize", "query_memory_mb"),
    ("WriterMemorySize", "writer_memory_mb"),
    ("WriterBatchSize", "writer_batch_size"),
    ("WriterBatchingWindowSeconds", "writer_batch_window_secs"),
];

impl Settings {
    pub fn load(path: &Path) -> Result<Settings, TemplateError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| TemplateError::Read {
            path: name.clone(),
            reason: e.to_string(),
        })?;
        Settings::parse(&text, &name)
    }

    pub fn parse(text: &str, path: &str) -> Result<Settings, TemplateError> {
        let params = parameter_section(text)
            .ok_or_else(|| TemplateError::NoParameters { path: path.into() })?;
        let mut values = [0.0; 5];
        for (slot, (name, flag)) in values.iter_mut().zip(PARAMETERS) {
            let block = parameter_block(&params, name).ok_or(TemplateError::Missing {
                path: path.into(),
                name,
                flag,
            })?;
            let raw = default_of(&block).ok_or(TemplateError::NoDefault {
                path: path.into(),
                name,
                flag,
            })?;
            *slot = raw
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| TemplateError::NotANumber {
                    path: path.into(),
                    name,
                    value: raw.clone(),
                })?;
        }
        let [ingest_memory_mb, query_memory_mb, writer_memory_mb, writer_batch_size, writer_batch_window_secs] =
            values;
        Ok(Settings {
            ingest_memory_mb,
            query_memory_mb,
            writer_memory_mb,
            writer_batch_size,
            writer_batch_window_secs,
            architecture: architecture(text, &params),
        })
    }
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// The lines under the top-level `Parameters:` key.
fn parameter_section(text: &str) -> Option<Vec<&str>> {
    let mut lines = text.lines();
    lines.by_ref().find(|l| l.trim_end() == "Parameters:")?;
    Some(
        lines
            .take_while(|l| is_blank_or_comment(l) || indent(l) > 0)
            .filter(|l| !is_blank_or_comment(l))
            .collect(),
    )
}

/// The lines of one parameter (`  Name:` and what is indented under it).
fn parameter_block<'a>(params: &[&'a str], name: &str) -> Option<Vec<&'a str>> {
    let base = params.iter().map(|l| indent(l)).min()?;
    let start = params
        .iter()
        .position(|l| indent(l) == base && l.trim() == format!("{name}:"))?;
    Some(
        params[start + 1..]
            .iter()
            .take_while(|l| indent(l) > base)
            .copied()
            .collect(),
    )
}

/// `Default: 256` (quotes and a trailing comment allowed).
fn default_of(block: &[&str]) -> Option<String> {
    let base = block.iter().map(|l| indent(l)).min()?;
    block
        .iter()
        .filter(|l| indent(l) == base)
        .find_map(|l| l.trim().strip_prefix("Default:"))
        .map(|v| {
            let v = v.split(" #").next().unwrap_or(v).trim();
            v.trim_matches(|c| c == '"' || c == '\'').to_owned()
        })
}

/// `Architectures: [arm64]` anywhere (the template sets it once, in `Globals.Function`), or
/// `[!Ref Name]`: then the parameter's Default.
fn architecture(text: &str, params: &[&str]) -> Option<String> {
    let value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Architectures:"))
        .map(|v| {
            v.split('#')
                .next()
                .unwrap_or(v)
                .trim()
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned()
        })?;
    match value.strip_prefix("!Ref ") {
        Some(name) => parameter_block(params, name.trim()).and_then(|b| default_of(&b)),
        None => Some(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
AWSTemplateFormatVersion: \"2010-09-09\"
Parameters:
  # ---- functions
  IngestMemorySize:
    Type: Number
    Default: 256
    MinValue: 128
    Description: ingest-api memory (MB).
  QueryMemorySize:
    Type: Number
    Default: '512' # quoted
  WriterMemorySize:
    Type: Number
    Default: 1024

  WriterBatchSize:
    Type: Number
    Default: 1000
    Description: >-
      Default: not this one (a description line)
  WriterBatchingWindowSeconds:
    Default: 5
Globals:
  Function:
    Architectures: [arm64]
Resources:
  IngestMemorySize:
    Default: 9999
";

    #[test]
    fn reads_the_parameter_defaults() {
        let s = Settings::parse(SAMPLE, "t.yaml").unwrap();
        assert_eq!(
            s,
            Settings {
                ingest_memory_mb: 256.0,
                query_memory_mb: 512.0,
                writer_memory_mb: 1024.0,
                writer_batch_size: 1000.0,
                writer_batch_window_secs: 5.0,
                architecture: Some("arm64".into()),
            }
        );
    }

    #[test]
    fn an_architecture_parameter_gives_its_default() {
        let text = SAMPLE.replace("[arm64]", "[!Ref Architecture]").replace(
            "Parameters:\n",
            "Parameters:\n  Architecture:\n    Type: String\n    Default: x86_64\n",
        );
        let s = Settings::parse(&text, "t.yaml").unwrap();
        assert_eq!(s.architecture.as_deref(), Some("x86_64"));
        let s = Settings::parse(&SAMPLE.replace("[arm64]", "[!Ref Other]"), "t.yaml").unwrap();
        assert_eq!(s.architecture, None);
    }

    #[test]
    fn reads_the_repository_template() {
        let text = include_str!("../../template.yaml");
        let s = Settings::parse(text, "template.yaml").unwrap();
        assert!(s.ingest_memory_mb >= 128.0 && s.writer_memory_mb >= 128.0);
        assert_eq!(s.architecture.as_deref(), Some("arm64"));
    }

    #[test]
    fn missing_parameters_and_defaults_are_named() {
        let e =
            Settings::parse(&SAMPLE.replace("  WriterMemorySize:", "  Other:"), "t").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t: parameter `WriterMemorySize` is missing (give --assume writer_memory_mb=... instead)"
        );
        let e =
            Settings::parse(&SAMPLE.replace("Default: 5\n", "Type: Number\n"), "t").unwrap_err();
        assert!(
            e.to_string()
                .contains("`WriterBatchingWindowSeconds` has no Default"),
            "{e}"
        );
        let e = Settings::parse(&SAMPLE.replace("Default: 256", "Default: lots"), "t").unwrap_err();
        assert!(
            e.to_string().contains("`lots` is not a positive number"),
            "{e}"
        );
        let e = Settings::parse("Resources: {}\n", "t").unwrap_err();
        assert_eq!(e, TemplateError::NoParameters { path: "t".into() });
    }
}
