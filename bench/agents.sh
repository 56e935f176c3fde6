#!/usr/bin/env bash
# The agent grants under load, each as a fraction of client_credentials in
# the same run, on SQLite and on PostgreSQL; then the kill switch across two
# nodes on one PostgreSQL (bench/killswitch.py: median and max over 100
# trials). Writes bench/results/agents-<stamp>.md.
#
#   bench/agents.sh                  # 10 s per row, about 3 minutes
#   DURATION=5s TRIALS=20 bench/agents.sh
#
# Rows, 32 connections, RS256 signing (the default):
#   client_credentials        an operator client, client_secret_basic
#   client_credentials_agent  an agent, private_key_jwt (EdDSA), its jti spent
#   passport                  the passport grant (agent A, naming agent B)
#   token_exchange            agent B exchanging A's passport (act chain)
# The agent rows send a fresh client assertion per request
# (examples/agent_requests.rs, bench/wrk/bodies.lua).
set -euo pipefail
cd "$(dirname "$0")/.."

export DURATION=${DURATION:-10s}
TRIALS=${TRIALS:-100}
BIN=${AGENTAUTH_BIN:-target/release/agentauth}
GEN=${GEN_BIN:-target/release/examples/agent_requests}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/test}
PG_DB=agentauth_bench_agents
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-bench/results/agents-$STAMP}
export AGENTAUTH_KEK=${AGENTAUTH_KEK:-$(openssl rand -base64 32)}
export RUST_LOG=${RUST_LOG:-warn}
export AGENTAUTH_PASSWORD="bench password 1"
MCP=https://mcp.example.com/mcp

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
[ -n "${AGENTAUTH_BIN:-}" ] || cargo build --release --bins --example agent_requests --example mcp_server
mkdir -p bench/results

TMP=$(mktemp -d)
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT
# shellcheck source=bench/lib.sh
source bench/lib.sh

"$GEN" keygen "$TMP/keys"
declare -A RPS
for backend in sqlite postgres; do
  case $backend in
    sqlite) DB="sqlite://$TMP/agents.db?mode=rwc" ;;
    postgres) DB=$(fresh_pg_db "$PG_DB") ;;
  esac
  PORT=18480
  ISSUER="http://127.0.0.1:$PORT"
  "$BIN" user create alice --database-url "$DB" >/dev/null
  A=$("$BIN" agent create --owner alice --name a --scope read --jwk "$TMP/keys/a.jwk" --database-url "$DB")
  B=$("$BIN" agent create --owner alice --name b --scope read --jwk "$TMP/keys/b.jwk" --database-url "$DB")
  client=$("$BIN" client create --database-url "$DB" --name bench --grant-type client_credentials \
    --scope read --auth-method client_secret_basic --json)
  AUTH=$(printf '%s:%s' "$(json_field client_id <<<"$client")" "$(json_field client_secret <<<"$client")" | base64 -w0)
  "$BIN" serve --listen "127.0.0.1:$PORT" --issuer "$ISSUER" --database-url "$DB" --resource "$MCP" 2>"$TMP/$backend.log" &
  SERVER_PID=$!
  CPU_PID=$SERVER_PID
  wait_up "$ISSUER/healthz"
  run "$backend" client_credentials 32 POST /token "grant_type=client_credentials&scope=read&resource=$MCP" "$AUTH"
  RPS[$backend.client_credentials]=$LAST_RPS
  for grant in client_credentials passport exchange; do
    scenario=$grant
    [ "$grant" = client_credentials ] && scenario=client_credentials_agent
    [ "$grant" = exchange ] && scenario=token_exchange
    "$GEN" bodies "$grant" "$ISSUER" "$A" "$B" "$TMP/keys" 80000 >"$TMP/bodies.txt"
    WRK_BODIES="$TMP/bodies.txt" run "$backend" "$scenario" 32 POST /token "" "" bench/wrk/bodies.lua
    RPS[$backend.$scenario]=$LAST_RPS
  done
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=
done

{
  echo "# Agent grants, $STAMP ($(nproc) cores, $DURATION per row, 32 connections)"
  echo
  echo "| backend | scenario | conns | req/s | p50 ms | p99 ms | server cores | non-2xx |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "| backend | client_credentials_agent | passport | token_exchange |"
  echo "|---|---|---|---|"
  for backend in sqlite postgres; do
    base=${RPS[$backend.client_credentials]}
    frac() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$base"; }
    echo "| $backend (fraction of client_credentials) | $(frac "${RPS[$backend.client_credentials_agent]}") | $(frac "${RPS[$backend.passport]}") | $(frac "${RPS[$backend.token_exchange]}") |"
  done
  echo
  psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $PG_DB" >/dev/null
  psql -q "$PG_ADMIN" -c "CREATE DATABASE $PG_DB" >/dev/null
  # SKIP_KILLSWITCH=1: the rows only (a binary from before the status
  # lists, compared row by row).
  [ -n "${SKIP_KILLSWITCH:-}" ] && exit 0
  MCP_BIN=${MCP_BIN:-target/release/examples/mcp_server}
  MCP_FLAG=()
  [ -x "$MCP_BIN" ] && MCP_FLAG=(--mcp "$MCP_BIN")
  python3 bench/killswitch.py --bin "$BIN" --gen "$GEN" --keys "$TMP/keys" \
    --database-url "postgres://postgres@127.0.0.1:5432/$PG_DB" --trials "$TRIALS" \
    --status-ttl "${STATUS_TTL:-10}" "${MCP_FLAG[@]}"
} | tee "$OUT.md"
