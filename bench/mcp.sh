#!/usr/bin/env bash
# The cost of protection: `whoami` calls per second through the example MCP
# server (examples/mcp_server.rs, rmcp streamable HTTP) with no protection,
# protected by the resource kit (local verification, bearer token), and in
# introspection mode (every token also checked at agentauth, 1 s cache).
# The example runs stateless (JSON responses, no session), as it does by
# default. Writes bench/results/mcp-<stamp>.md.
#
#   bench/mcp.sh                 # 15 s per row
#   DURATION=5s bench/mcp.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export DURATION=${DURATION:-15s}
CONNS=${CONNS:-32}
BIN=${AGENTAUTH_BIN:-target/release/agentauth}
MCP_BIN=${MCP_BIN:-target/release/examples/mcp_server}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-bench/results/mcp-$STAMP}
export AGENTAUTH_KEK=${AGENTAUTH_KEK:-$(openssl rand -base64 32)}
export RUST_LOG=${RUST_LOG:-warn}
AS_PORT=18580
PORT=18590
ISSUER="http://127.0.0.1:$AS_PORT"
RESOURCE="http://127.0.0.1:$PORT/mcp"

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
[ -n "${AGENTAUTH_BIN:-}" ] || cargo build --release --bins --example mcp_server
mkdir -p bench/results

TMP=$(mktemp -d)
AS_PID=
CPU_PID=
cleanup() {
  [ -n "$CPU_PID" ] && kill "$CPU_PID" 2>/dev/null || true
  [ -n "$AS_PID" ] && kill "$AS_PID" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
# shellcheck source=bench/lib.sh
source bench/lib.sh
wait_up() { for _ in $(seq 1 150); do curl -s -o /dev/null "$1" && return; sleep 0.1; done; echo "not up: $1" >&2; exit 1; }

DB="sqlite://$TMP/mcp.db?mode=rwc"
client=$("$BIN" client create --database-url "$DB" --name bench --grant-type client_credentials \
  --scope mcp --auth-method client_secret_basic --json)
introspector=$("$BIN" client create --database-url "$DB" --name mcp-introspection --grant-type client_credentials \
  --scope mcp --auth-method client_secret_basic --introspect "$RESOURCE" --json)
"$BIN" serve --listen "127.0.0.1:$AS_PORT" --issuer "$ISSUER" --database-url "$DB" \
  --resource "$RESOURCE" --scopes "mcp mcp:admin" --access-token-ttl 3600 2>"$TMP/as.log" &
AS_PID=$!
wait_up "$ISSUER/healthz"
TOKEN=$(curl -fs -u "$(json_field client_id <<<"$client"):$(json_field client_secret <<<"$client")" \
  -d "grant_type=client_credentials&scope=mcp&resource=$RESOURCE" "$ISSUER/token" | json_field access_token)

rpc() { # bearer session body -> headers+body
  curl -s -D - -X POST "$RESOURCE" -H 'content-type: application/json' \
    -H 'accept: application/json, text/event-stream' \
    ${1:+-H "authorization: Bearer $1"} ${2:+-H "mcp-session-id: $2"} -d "$3"
}

declare -A RPS
for mode in unprotected protected introspection; do
  args=(--issuer "$ISSUER" --listen "127.0.0.1:$PORT")
  bearer=$TOKEN
  case $mode in
    unprotected) args+=(--unprotected); bearer= ;;
    introspection)
      args+=(--introspection-client "$(json_field client_id <<<"$introspector")")
      export MCP_INTROSPECTION_SECRET
      MCP_INTROSPECTION_SECRET=$(json_field client_secret <<<"$introspector") ;;
  esac
  "$MCP_BIN" "${args[@]}" 2>"$TMP/mcp-$mode.log" &
  CPU_PID=$!
  wait_up "http://127.0.0.1:$PORT/mcp"
  init='{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}'
  session=$(rpc "$bearer" "" "$init" | awk 'tolower($1)=="mcp-session-id:" {print $2}' | tr -d '\r')
  # Stateless (the example's default): no session id, every POST stands alone.
  rpc "$bearer" "$session" '{"jsonrpc":"2.0","method":"notifications/initialized"}' >/dev/null
  check=$(rpc "$bearer" "$session" '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"whoami","arguments":{}}}')
  grep -q '"result"' <<<"$check" || { echo "whoami failed ($mode): $check" >&2; exit 1; }
  WRK_BEARER=$bearer WRK_SESSION=$session \
    run sqlite "whoami_$mode" "$CONNS" POST /mcp \
    '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"whoami","arguments":{}}}' "" bench/wrk/mcp.lua
  RPS[$mode]=$LAST_RPS
  kill "$CPU_PID"; wait "$CPU_PID" 2>/dev/null || true
  CPU_PID=
done

cost() { python3 -c "import sys; a, b = map(float, sys.argv[1:]); print(f'{(1 - b / a) * 100:.1f}%')" "$1" "$2"; }
{
  echo "# MCP whoami through the example server, $STAMP"
  echo
  echo "$(nproc) cores, wrk -t2 -c$CONNS, $DURATION per row; stateless MCP server (JSON responses); bearer RS256 token; agentauth on SQLite."
  echo "'server cores' is the MCP server's CPU time over the run."
  echo
  echo "| backend | scenario | connections | req/s | p50 ms | p99 ms | server cores | non-2xx |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "Cost of protection (local verification): $(cost "${RPS[unprotected]}" "${RPS[protected]}")"
  echo "Cost of introspection mode: $(cost "${RPS[unprotected]}" "${RPS[introspection]}")"
} | tee "$OUT.md"
