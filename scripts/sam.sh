# shellcheck shell=bash
# The AWS SAM tool chain of scripts/lint-template and scripts/package. Source it after
# lib.sh; do not run it.
#
# aws-sam-cli gets a virtualenv of its own (.local/sam-venv): it pins boto3/botocore exactly,
# and installing it into .venv would change the packages of the moto server that scripts/test
# runs from there. The same venv holds what `sam build` runs for the Rust functions
# (BuildMethod rust-cargolambda): cargo-lambda, and zig (the `ziglang` package), which
# cargo-lambda links with. All pinned; installed only when missing or at another version.

CFN_LINT_VERSION="1.58.0"
SAM_CLI_VERSION="1.170.0"
CARGO_LAMBDA_VERSION="1.9.2"
ZIGLANG_VERSION="0.17.1"
SAM_VENV_DIR="$(repo_root)/.local/sam-venv"

# has_versions PYTHON NAME==VERSION... — succeeds when every distribution is installed
# at exactly that version.
has_versions() {
  local python="$1"
  shift
  [[ -x "$python" ]] || return 1
  "$python" - "$@" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    if version(name) != want:
        sys.exit(1)
PY
}

pip_install() {
  local python="$1"
  shift
  log "installing $* into $(dirname "$(dirname "$python")")"
  "$python" -m pip install --quiet --disable-pip-version-check "$@" ||
    die "pip install $* failed"
}

# Installs cfn-lint into .venv and the SAM tool chain into .local/sam-venv, when missing.
ensure_sam_tools() {
  ensure_venv
  if ! has_versions "$VENV_DIR/bin/python" "cfn-lint==$CFN_LINT_VERSION"; then
    pip_install "$VENV_DIR/bin/python" "cfn-lint==$CFN_LINT_VERSION"
  fi
  local pins=("aws-sam-cli==$SAM_CLI_VERSION" "cfn-lint==$CFN_LINT_VERSION"
    "cargo-lambda==$CARGO_LAMBDA_VERSION" "ziglang==$ZIGLANG_VERSION")
  if ! has_versions "$SAM_VENV_DIR/bin/python" "${pins[@]}"; then
    if [[ ! -x "$SAM_VENV_DIR/bin/python" ]]; then
      log "creating Python virtualenv in $SAM_VENV_DIR"
      rm -rf "$SAM_VENV_DIR"
      mkdir -p "$(dirname "$SAM_VENV_DIR")"
      python3 -m venv "$SAM_VENV_DIR" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    fi
    pip_install "$SAM_VENV_DIR/bin/python" "${pins[@]}"
  fi
}

# Offline AWS settings for sam: it wants a region; scripts/test's moto settings are replaced
# too. Nothing here talks to AWS: every AWS endpoint points at a closed local port, so an
# accidental AWS call fails instead.
sam_offline_env() {
  unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL_SQS AWS_ENDPOINT_URL_SECRETS_MANAGER
  export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
  export AWS_ACCESS_KEY_ID=lint AWS_SECRET_ACCESS_KEY=lint
  export AWS_ENDPOINT_URL="http://127.0.0.1:9" AWS_EC2_METADATA_DISABLED=true
  export SAM_CLI_TELEMETRY=0
}
