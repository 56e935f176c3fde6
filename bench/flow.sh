#!/usr/bin/env bash
# Authorization-code exchange and refresh rotation per second, SQLite and
# PostgreSQL, 16 concurrent workers (examples/flow_load.rs drives the real
# release server over HTTP). Traffic goes to 127.0.0.1 only.
#
#   bench/flow.sh              # 8 s per scenario
#   SECONDS_PER=5 CONCURRENCY=16 bench/flow.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER=${SECONDS_PER:-8}
CONCURRENCY=${CONCURRENCY:-16}
BIN=${AGENTAUTH_BIN:-target/release/agentauth}
LOAD=target/release/examples/flow_load
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/test}
PORT=${PORT:-18280}
[ -x "$BIN" ] || cargo build --release
[ -x "$LOAD" ] || cargo build --release --example flow_load
export AGENTAUTH_KEK=${AGENTAUTH_KEK:-$(openssl rand -base64 32)}
export RUST_LOG=${RUST_LOG:-warn}
TMP=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -rf "$TMP"' EXIT

echo "| backend | scenario | workers | req/s | p50 ms | p99 ms |"
echo "|---|---|---|---|---|---|"
for backend in sqlite postgres; do
  if [ "$backend" = sqlite ]; then
    DB="sqlite://$TMP/agentauth.db?mode=rwc"
  else
    psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS agentauth_flow" >/dev/null
    psql -q "$PG_ADMIN" -c "CREATE DATABASE agentauth_flow" >/dev/null
    DB="postgres://postgres@127.0.0.1:5432/agentauth_flow"
  fi
  "$BIN" migrate --database-url "$DB" >/dev/null
  "$BIN" serve --listen "127.0.0.1:$PORT" --issuer "http://127.0.0.1:$PORT" --database-url "$DB" 2>"$TMP/$backend.log" &
  PID=$!
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
  "$LOAD" "$DB" "http://127.0.0.1:$PORT" "$SECONDS_PER" "$CONCURRENCY" 2>"$TMP/load.log" | while read -r _ kv1 kv2 kv3 kv4; do
    echo "| $backend | ${kv1#*=} | $CONCURRENCY | ${kv2#*=} | ${kv3#*=} | ${kv4#*=} |"
  done
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
done
psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS agentauth_flow" >/dev/null || true
