#!/usr/bin/env bash
# Start (or reuse) a private PostgreSQL cluster for the Postgres-backed tests and print the line
#   export ANOMALY_PIPELINE_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:<port>/anomaly_pipeline_test
# for `eval "$(infra/ci/start_postgres.sh)"`. Installs the Debian package when initdb is missing.
# Idempotent: a second call finds the running cluster and prints the same URL.
#   PG_CI_DIR   where the cluster lives (default /tmp/anomaly-pipeline-pg; outside the checkout)
#   PG_CI_PORT  port (default: a free one, chosen on first start and remembered in $PG_CI_DIR/port)
# The cluster trusts connections from 127.0.0.1 only: a throw-away test database, no secrets.
# Stop it with: infra/ci/start_postgres.sh stop
set -euo pipefail

PG_CI_DIR="${PG_CI_DIR:-/tmp/anomaly-pipeline-pg}"
DATA="$PG_CI_DIR/data"
DB=anomaly_pipeline_test

log() { echo "start_postgres: $*" >&2; }

find_bin() {
  local name=$1 candidate
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
  for candidate in /usr/lib/postgresql/*/bin/"$name"; do
    if [ -x "$candidate" ]; then echo "$candidate"; return 0; fi
  done
  return 1
}

if ! find_bin initdb >/dev/null || ! find_bin pg_ctl >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    log "initdb/pg_ctl not found and not root: install the 'postgresql' package first"; exit 1
  fi
  log "installing the Debian postgresql package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi
INITDB=$(find_bin initdb)
PG_CTL=$(find_bin pg_ctl)

# initdb refuses to run as root: run the server as the postgres user when we are root.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir "$PG_CI_DIR" --shell /bin/sh postgres
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

mkdir -p "$PG_CI_DIR"
if [ "$(id -u)" -eq 0 ]; then
  as_owner true
  chown postgres "$PG_CI_DIR"
  if ! runuser -u postgres -- test -w "$PG_CI_DIR"; then
    log "the postgres user cannot reach $PG_CI_DIR (a parent folder is private): set PG_CI_DIR under /tmp"
    exit 1
  fi
fi

if [ "${1:-}" = "stop" ]; then
  if [ -f "$DATA/postmaster.pid" ]; then as_owner "$PG_CTL" -D "$DATA" -m fast stop >&2; fi
  exit 0
fi

if [ ! -f "$DATA/PG_VERSION" ]; then
  log "initialising a cluster in $DATA"
  as_owner "$INITDB" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --no-locale >/dev/null
fi

if [ -f "$PG_CI_DIR/port" ]; then
  PORT=$(cat "$PG_CI_DIR/port")
else
  PORT="${PG_CI_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
  echo "$PORT" > "$PG_CI_DIR/port"
fi

if ! as_owner "$PG_CTL" -D "$DATA" status >/dev/null 2>&1; then
  log "starting PostgreSQL on 127.0.0.1:$PORT"
  as_owner "$PG_CTL" -D "$DATA" -l "$PG_CI_DIR/server.log" -w -t 60 \
    -o "-p $PORT -h 127.0.0.1 -k $PG_CI_DIR -c max_connections=200 -c fsync=off" start >&2
fi

PSQL="$(find_bin psql)"
if ! as_owner "$PSQL" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -tAc \
     "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1; then
  as_owner "$PSQL" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -qc "CREATE DATABASE $DB" >&2
fi
echo "export ANOMALY_PIPELINE_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$PORT/$DB"
