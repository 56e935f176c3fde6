#!/usr/bin/env bash
# Drives the release server with wrk on SQLite and PostgreSQL and prints one
# table (also written to bench/results/load-<time>.{md,json}).
#
#   bench/load.sh                     # 10 s per scenario
#   DURATION=5s bench/load.sh
#   AGENTAUTH_BIN=path/to/agentauth bench/load.sh
#
# Traffic goes to 127.0.0.1 only; every run is bounded by DURATION.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
BIN=${AGENTAUTH_BIN:-target/release/agentauth}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/test}
PG_DB=agentauth_bench
PORT=${PORT:-18180}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-bench/results/load-$STAMP}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
[ -x "$BIN" ] || cargo build --release
PROOFS_BIN=${PROOFS_BIN:-target/release/examples/dpop_proofs}
[ -x "$PROOFS_BIN" ] || cargo build --release --example dpop_proofs
export AGENTAUTH_KEK=${AGENTAUTH_KEK:-$(openssl rand -base64 32)}
export RUST_LOG=${RUST_LOG:-warn}

TMP=$(mktemp -d)
SERVER_PID=
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

# shellcheck source=bench/lib.sh
source bench/lib.sh

declare -A IDLE PEAK CC64 DPOP64
for backend in sqlite postgres; do
  if [ "$backend" = sqlite ]; then
    DB="sqlite://$TMP/agentauth.db?mode=rwc"
  else
    psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $PG_DB" >/dev/null
    psql -q "$PG_ADMIN" -c "CREATE DATABASE $PG_DB" >/dev/null
    DB="postgres://postgres@127.0.0.1:5432/$PG_DB"
  fi
  CLIENT=$("$BIN" client create --database-url "$DB" --name bench --grant-type client_credentials \
    --scope "read write" --auth-method client_secret_basic --json)
  ID=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])' <<<"$CLIENT")
  SECRET=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])' <<<"$CLIENT")
  AUTH=$(printf '%s:%s' "$ID" "$SECRET" | base64 -w0)

  "$BIN" serve --listen "127.0.0.1:$PORT" --issuer "http://127.0.0.1:$PORT" --database-url "$DB" 2>"$TMP/$backend.log" &
  SERVER_PID=$!
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
  sleep 2
  IDLE[$backend]=$(rss_kib "$SERVER_PID" VmRSS)

  TOKEN=$(curl -fs -u "$ID:$SECRET" -d grant_type=client_credentials "http://127.0.0.1:$PORT/token" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

  for c in 16 64; do
    run "$backend" client_credentials "$c" POST /token "grant_type=client_credentials&scope=read" "$AUTH"
    [ "$c" = 64 ] && CC64[$backend]=$LAST_RPS
  done
  # A fresh ES256 proof per request, minted just before the run (iat = now).
  for c in 16 64; do
    "$PROOFS_BIN" 80000 POST "http://127.0.0.1:$PORT/token" >"$TMP/proofs.txt"
    run "$backend" client_credentials_dpop "$c" POST /token "grant_type=client_credentials&scope=read" "$AUTH" bench/wrk/dpop.lua
    [ "$c" = 64 ] && DPOP64[$backend]=$LAST_RPS
  done
  for c in 16 64; do
    run "$backend" introspection "$c" POST /introspect "token=$TOKEN" "$AUTH"
  done
  run "$backend" jwks 64 GET /jwks.json "" ""
  run "$backend" metadata 64 GET /.well-known/oauth-authorization-server "" ""

  PEAK[$backend]=$(rss_kib "$SERVER_PID" VmHWM)
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=
done
[ -n "${PG_DB:-}" ] && psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $PG_DB" >/dev/null || true

# The physical limit: RSA-2048 signatures per second, one core and all cores.
sign1=$(openssl speed -seconds 3 rsa2048 2>/dev/null | awk '/^rsa 2048/ {print $6}')
signN=$(openssl speed -seconds 3 -multi "$(nproc)" rsa2048 2>/dev/null | awk '/^rsa 2048/ {print $6}')

{
  echo "# agentauth load test, $STAMP"
  echo
  echo "wrk -t2 on the same $(nproc)-core machine as the server, $DURATION per row. $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)."
  echo
  echo "| backend | scenario | connections | req/s | p50 ms | p99 ms | non-2xx |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "| backend | idle RSS MiB | peak RSS MiB | client_credentials@64 / signing ceiling | DPoP cost @64 |"
  echo "|---|---|---|---|---|"
  for b in sqlite postgres; do
    python3 -c 'import sys; b, i, p, c, s, d = sys.argv[1:]; print(f"| {b} | {int(i)/1024:.1f} | {int(p)/1024:.1f} | {100*float(c)/float(s):.0f}% | {100*(1-float(d)/float(c)):.1f}% |")' \
      "$b" "${IDLE[$b]}" "${PEAK[$b]}" "${CC64[$b]}" "$signN" "${DPOP64[$b]}"
  done
  echo
  echo "Signing ceiling (openssl speed rsa2048): $sign1 sign/s on one core, $signN sign/s on $(nproc) cores."
} | tee "$OUT.md"

{
  echo "{\"stamp\":\"$STAMP\",\"duration\":\"$DURATION\",\"openssl_rsa2048_sign_per_s\":{\"one_core\":$sign1,\"all_cores\":$signN},"
  echo "\"rss_kib\":{\"sqlite\":{\"idle\":${IDLE[sqlite]},\"peak\":${PEAK[sqlite]}},\"postgres\":{\"idle\":${IDLE[postgres]},\"peak\":${PEAK[postgres]}}},"
  echo "\"rows\":[$(IFS=,; echo "${JSON[*]}")]}"
} >"$OUT.json"
echo "wrote $OUT.md and $OUT.json"
