#!/usr/bin/env bash
# Installs node-oidc-provider in a temporary directory, starts it configured
# like agentauth's bench (bench/peer/server.mjs), and drives it with the same
# wrk scenarios. Writes JSON rows to $1. Run from the repository root.
set -euo pipefail
OUT_JSON=$1
DURATION=${DURATION:-10s}
PORT=${PEER_PORT:-18380}
PROOFS_BIN=${PROOFS_BIN:-target/release/examples/dpop_proofs}
TMP=$(mktemp -d)
SERVER_PID=
trap '[ -n "$SERVER_PID" ] && kill $SERVER_PID 2>/dev/null; rm -rf "$TMP"' EXIT
# shellcheck source=bench/lib.sh
source bench/lib.sh

cp bench/peer/package.json bench/peer/package-lock.json bench/peer/server.mjs "$TMP/"
(cd "$TMP" && npm ci --no-audit --no-fund --silent >/dev/null)
SECRET=$(openssl rand -hex 24)
(cd "$TMP" && PORT=$PORT CLIENT_ID=bench CLIENT_SECRET=$SECRET NODE_ENV=production exec node server.mjs) 2>"$TMP/peer.log" &
SERVER_PID=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/jwks" >/dev/null && break; sleep 0.1; done
sleep 2
PEER_PID=$(pgrep -P "$SERVER_PID" node || echo "$SERVER_PID")
IDLE=$(rss_kib "$PEER_PID" VmRSS)
AUTH=$(printf 'bench:%s' "$SECRET" | base64 -w0)

for c in 16 64; do
  run peer client_credentials "$c" POST /token "grant_type=client_credentials&scope=read" "$AUTH"
done
for c in 16 64; do
  "$PROOFS_BIN" 80000 POST "http://127.0.0.1:$PORT/token" >"$TMP/proofs.txt"
  run peer client_credentials_dpop "$c" POST /token "grant_type=client_credentials&scope=read" "$AUTH" bench/wrk/dpop.lua
done
run peer jwks 64 GET /jwks "" ""
run peer metadata 64 GET /.well-known/openid-configuration "" ""
PEAK=$(rss_kib "$PEER_PID" VmHWM)
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=

echo "{\"rss_kib\":{\"idle\":$IDLE,\"peak\":$PEAK},\"rows\":[$(IFS=,; echo "${JSON[*]}")]}" >"$OUT_JSON"
