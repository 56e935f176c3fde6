#!/usr/bin/env bash
# Where the server's CPU goes under load: perf samples the release server on
# SQLite while wrk drives one scenario at 64 connections, then prints the
# share per thread and the top symbols (also written to
# bench/results/profile-<scenario>-<UTC time>.txt).
#
#   bench/profile.sh                      # client_credentials
#   bench/profile.sh introspection
#   bench/profile.sh client_credentials_dpop   # a fresh ES256 proof per request
#   STORE=postgres bench/profile.sh client_credentials_dpop  # on a fresh PostgreSQL database
#   EXTRA="--signing-threads 0" bench/profile.sh
#
# Needs perf (Debian package linux-perf) and permission to use it.
set -euo pipefail
cd "$(dirname "$0")/.."

SCENARIO=${1:-client_credentials}
DURATION=${DURATION:-8s}
BIN=${AGENTAUTH_BIN:-target/release/agentauth}
PORT=${PORT:-18580}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=bench/results/profile-$SCENARIO-${STORE:-sqlite}-$STAMP.txt
export AGENTAUTH_KEK=${AGENTAUTH_KEK:-$(openssl rand -base64 32)}
export RUST_LOG=${RUST_LOG:-warn}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf; }
[ -n "${AGENTAUTH_BIN:-}" ] || cargo build --release --bins --example dpop_proofs
PROOFS_BIN=${PROOFS_BIN:-target/release/examples/dpop_proofs}
STORE=${STORE:-sqlite}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/test}

TMP=$(mktemp -d)
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null
  [ "$STORE" = postgres ] && psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS agentauth_profile" >/dev/null 2>&1
  rm -rf "$TMP"
}
trap cleanup EXIT
# shellcheck source=bench/lib.sh
source bench/lib.sh
case $STORE in
  sqlite) DB="sqlite://$TMP/agentauth.db?mode=rwc" ;;
  postgres) DB=$(fresh_pg_db agentauth_profile) ;;
  *) echo "STORE is sqlite or postgres" >&2; exit 2 ;;
esac
client=$("$BIN" client create --database-url "$DB" --name bench --grant-type client_credentials \
  --scope "read write" --auth-method client_secret_basic --introspect "*" --json)
ID=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])' <<<"$client")
SECRET=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])' <<<"$client")
AUTH=$(printf '%s:%s' "$ID" "$SECRET" | base64 -w0)
# shellcheck disable=SC2086
"$BIN" serve ${EXTRA:-} --listen "127.0.0.1:$PORT" --issuer "http://127.0.0.1:$PORT" --database-url "$DB" 2>"$TMP/server.log" &
SERVER_PID=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done

SCRIPT=bench/wrk/request.lua
case $SCENARIO in
  client_credentials) METHOD=POST; URL_PATH=/token; BODY="grant_type=client_credentials&scope=read" ;;
  client_credentials_dpop)
    METHOD=POST; URL_PATH=/token; BODY="grant_type=client_credentials&scope=read"; SCRIPT=bench/wrk/dpop.lua
    "$PROOFS_BIN" $(( ${DURATION%s} * 12000 )) POST "http://127.0.0.1:$PORT/token" >"$TMP/proofs.txt" ;;
  introspection)
    METHOD=POST; URL_PATH=/introspect
    BODY="token=$(curl -fs -u "$ID:$SECRET" -d grant_type=client_credentials "http://127.0.0.1:$PORT/token" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')" ;;
  jwks) METHOD=GET; URL_PATH=/jwks.json; BODY=""; AUTH="" ;;
  *) echo "unknown scenario: $SCENARIO (client_credentials, client_credentials_dpop, introspection, jwks)" >&2; exit 2 ;;
esac

secs=${DURATION%s}
perf record -F 999 -g -p "$SERVER_PID" -o "$TMP/perf.data" -- sleep "$((secs - 2))" >/dev/null 2>&1 &
PERF_PID=$!
result=$(WRK_METHOD=$METHOD WRK_BODY=$BODY WRK_AUTH=$AUTH WRK_PROOFS=$TMP/proofs.txt \
  wrk -t2 -c"${CONNS:-64}" -d"$DURATION" --latency -s "$SCRIPT" "http://127.0.0.1:$PORT$URL_PATH" | grep '^RESULT')
wait "$PERF_PID"
[ -n "${KEEP:-}" ] && cp "$TMP/perf.data" "$KEEP"

{
  echo "# perf profile: $SCENARIO on $STORE at ${CONNS:-64} connections, $DURATION, $(nproc) × $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "# server flags: ${EXTRA:-(defaults)}"
  echo "# wrk: $result"
  echo
  echo "## share of the server's samples per thread"
  perf report -i "$TMP/perf.data" --no-children --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9]'
  echo
  echo "## top symbols (self time)"
  perf report -i "$TMP/perf.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -40 | cut -c1-160
} | tee "$OUT"
echo "wrote $OUT"
