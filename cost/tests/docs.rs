//! cost/README.md keeps up with the code: every assumption and price is documented, the
//! measurements example parses, and the sample output is what the binary prints today.

use std::path::Path;
use std::process::Command;

use cost::assume::ASSUMPTIONS;
use cost::measure::Measurements;
use cost::prices::KEYS;

const README: &str = include_str!("../README.md");

/// The text of the fenced block that starts with "```{lang}" after `heading`.
fn block<'a>(heading: &str, lang: &str) -> &'a str {
    let from = README
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading}"));
    let rest = &README[from..];
    let open = format!("```{lang}\n");
    let start = rest.find(&open).unwrap() + open.len();
    let len = rest[start..].find("\n```").unwrap();
    &README[from + start..from + start + len]
}

#[test]
fn every_assumption_and_price_is_documented() {
    for a in ASSUMPTIONS {
        assert!(
            README.contains(&format!("| `{}` |", a.key)),
            "README's assumption table lacks {}",
            a.key
        );
    }
    let listed = String::from_utf8(
        Command::new(env!("CARGO_BIN_EXE_cost"))
            .arg("--list-assumptions")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for line in listed.lines().skip(1) {
        let row = format!("| `{} |", line.replacen(" | ", "` | ", 1));
        assert!(
            README.contains(&row),
            "README's row differs from --list-assumptions: {row}"
        );
    }
    for (key, _, _) in KEYS {
        assert!(
            README.contains(&format!("| `{key}` |")),
            "README's price table lacks {key}"
        );
    }
}

#[test]
fn the_measurements_example_parses() {
    let m = Measurements::parse(block("### The measurements file", "json"), "README").unwrap();
    assert_eq!(m.ingest.invocations, Some(60_000));
    assert_eq!(m.writer.copy_ms, Some(28_000.0));
}

#[test]
fn the_sample_output_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let d = "cost/tests/data";
    let out = Command::new(env!("CARGO_BIN_EXE_cost"))
        .current_dir(root)
        .args([
            "--run",
            &format!("{d}/sample-batch1.json"),
            "--metrics",
            &format!("{d}/sample-batch1.emf"),
            "--run",
            &format!("{d}/sample-batch100.json"),
            "--metrics",
            &format!("{d}/sample-batch100.emf"),
            "--prices",
            "cost/prices/us-east-1.toml",
            "--template",
            &format!("{d}/template.yaml"),
            "--rate",
            "100000",
            "--assume",
            "ingest_linger_ms=25",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        block("## Sample output", "text"),
        printed.trim_end(),
        "regenerate the sample in cost/README.md with the command above it"
    );
}
