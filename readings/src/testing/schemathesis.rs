//! Contract checks: `openapi.yaml` validated, and schemathesis run against a service, both
//! from the project's `.venv`.

use std::time::Duration;

/// A program in the project's `.venv`, where `scripts/test` installs the Python tools.
fn venv_program(name: &str) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root");
    let bin = root.join(".venv/bin").join(name);
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with scripts/test, which installs it",
        bin.display()
    );
    bin
}

/// Checks the repository's `openapi.yaml` against the OpenAPI 3.1 schema
/// (openapi-spec-validator); panics with what is wrong.
pub fn validate_openapi() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root");
    let out = std::process::Command::new(venv_program("python"))
        .args([
            "-c",
            "import sys\n\
             from openapi_spec_validator import validate\n\
             from openapi_spec_validator.readers import read_from_filename\n\
             validate(read_from_filename(sys.argv[1])[0])",
        ])
        .arg(root.join("openapi.yaml"))
        .output()
        .expect("run openapi-spec-validator");
    assert!(
        out.status.success(),
        "openapi.yaml is not valid OpenAPI:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs schemathesis (from the project's `.venv`, where `scripts/test` installs it) with the
/// repository's `openapi.yaml` and settings (`schemathesis.toml`, hooks in
/// `scripts/schemathesis_hooks.py`) against the service at `base_url`, on the operations
/// tagged `tag`, in `phases`, sending `api_key` as a bearer token. `SCHEMATHESIS_EXTRA_ARGS`
/// (split on whitespace) is appended, e.g. `--max-examples 1000 --seed 7` for a longer
/// search. Panics with schemathesis's report when it finds an answer that breaks the
/// contract, or when it cannot run. Validates the document first ([`validate_openapi`]):
/// schemathesis loads some documents that break the OpenAPI schema.
pub async fn schemathesis(base_url: &str, tag: &str, phases: &str, api_key: &str) {
    validate_openapi();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root");
    let bin = venv_program("schemathesis");
    let spec = root.join("openapi.yaml");
    let hooks = root.join("scripts/schemathesis_hooks.py");
    let auth = format!("Authorization: Bearer {api_key}");
    let config = root.join("schemathesis.toml");
    let args: Vec<String> = [
        "--config-file",
        &config.to_string_lossy(),
        "run",
        &spec.to_string_lossy(),
        "--url",
        base_url,
        "--include-tag",
        tag,
        "--phases",
        phases,
        "--header",
        &auth,
        "--no-color",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(
        std::env::var("SCHEMATHESIS_EXTRA_ARGS")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned),
    )
    .collect();
    let shown = args.join(" ").replace(api_key, "<key>");
    let workdir = root.join("target/schemathesis");
    std::fs::create_dir_all(&workdir).expect("create target/schemathesis");
    let started = std::time::Instant::now();
    let child = tokio::process::Command::new(&bin)
        .args(&args)
        .env("SCHEMATHESIS_HOOKS", &hooks)
        // Keeps schemathesis's and Hypothesis's caches out of the source tree.
        .current_dir(&workdir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis {shown} ran longer than 300 s"))
        .expect("schemathesis output");
    // Reproducing commands can hold a URL of a megabyte: cut long lines.
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let output: Vec<String> = output
        .lines()
        .map(|l| match l.char_indices().nth(2000) {
            Some((i, _)) => format!("{} [...]", &l[..i]),
            None => l.to_owned(),
        })
        .collect();
    let report = format!(
        "schemathesis {shown}\n({:.1} s)\n{}",
        started.elapsed().as_secs_f64(),
        output.join("\n")
    );
    assert!(out.status.success(), "{report}");
    println!("{report}");
}
