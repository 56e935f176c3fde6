#!/usr/bin/env bash
# The one bench command: agentauth on SQLite, agentauth on PostgreSQL and
# node-oidc-provider, all started at once on this machine and driven with the
# same wrk scenarios, one server after the other for each scenario (so that
# the host's drifting speed hits all three alike). Prints one table and writes
# it as Markdown and JSON, with a bar chart (SVG), under bench/results/.
#
#   bench/compare.sh                 # 10 s per row, about 10 minutes
#   DURATION=5s bench/compare.sh     # DURATION is in seconds
#   PEER=0 bench/compare.sh          # agentauth only
#   ONLY="introspection jwks" bench/compare.sh   # some scenarios only
#
# The client_credentials_es256 rows run on three more servers, started only
# for them: agentauth with --signing-alg ES256 on SQLite and on PostgreSQL,
# and node-oidc-provider with an ES256 key (labelled "-es256").
#
# Traffic goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

export DURATION=${DURATION:-10s}
PEER=${PEER:-1}
BIN=${AGENTAUTH_BIN:-target/release/agentauth}
PROOFS_BIN=${PROOFS_BIN:-target/release/examples/dpop_proofs}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/test}
PG_DB=agentauth_bench
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-bench/results/compare-$STAMP}
export AGENTAUTH_KEK=${AGENTAUTH_KEK:-$(openssl rand -base64 32)}
export RUST_LOG=${RUST_LOG:-warn}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
[ -n "${AGENTAUTH_BIN:-}" ] || cargo build --release --bins --example dpop_proofs
mkdir -p bench/results

TMP=$(mktemp -d)
declare -A PID PORTS AUTH TOKEN_PATH INTROSPECT_PATH JWKS_PATH METADATA_PATH IDLE PEAK
cleanup() {
  for p in "${PID[@]}"; do kill "$p" 2>/dev/null || true; done
  psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1 || true
  psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS ${PG_DB}_es256" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

# shellcheck source=bench/lib.sh
source bench/lib.sh


# --- agentauth on SQLite and on PostgreSQL ---------------------------------
psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $PG_DB" >/dev/null
psql -q "$PG_ADMIN" -c "CREATE DATABASE $PG_DB" >/dev/null
want() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }
SERVERS=(sqlite postgres)
ES_SERVERS=()
PORTS[sqlite]=18180
PORTS[postgres]=18280
PORTS[sqlite-es256]=18181
PORTS[postgres-es256]=18281
declare -A ALG=([sqlite]=RS256 [postgres]=RS256 [sqlite-es256]=ES256 [postgres-es256]=ES256)
OURS=(sqlite postgres)
if want client_credentials_es256; then
  OURS+=(sqlite-es256 postgres-es256)
  ES_SERVERS+=(sqlite-es256 postgres-es256)
  psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS ${PG_DB}_es256" >/dev/null
  psql -q "$PG_ADMIN" -c "CREATE DATABASE ${PG_DB}_es256" >/dev/null
fi
for s in "${OURS[@]}"; do
  case $s in
    sqlite) DB="sqlite://$TMP/agentauth.db?mode=rwc" ;;
    sqlite-es256) DB="sqlite://$TMP/agentauth-es256.db?mode=rwc" ;;
    postgres) DB="postgres://postgres@127.0.0.1:5432/$PG_DB" ;;
    postgres-es256) DB="postgres://postgres@127.0.0.1:5432/${PG_DB}_es256" ;;
  esac
  client=$("$BIN" client create --database-url "$DB" --name bench --grant-type client_credentials \
    --scope "read write" --auth-method client_secret_basic --introspect "*" --json)
  AUTH[$s]=$(printf '%s:%s' "$(json_field client_id <<<"$client")" "$(json_field client_secret <<<"$client")" | base64 -w0)
  "$BIN" serve --listen "127.0.0.1:${PORTS[$s]}" --issuer "http://127.0.0.1:${PORTS[$s]}" --database-url "$DB" \
    --signing-alg "${ALG[$s]}" 2>"$TMP/$s.log" &
  PID[$s]=$!
  TOKEN_PATH[$s]=/token
  INTROSPECT_PATH[$s]=/introspect
  JWKS_PATH[$s]=/jwks.json
  METADATA_PATH[$s]=/.well-known/oauth-authorization-server
  wait_up "http://127.0.0.1:${PORTS[$s]}/healthz"
done

# --- node-oidc-provider, installed in a temporary directory ----------------
if [ "$PEER" = 1 ]; then
  SERVERS+=(node-oidc-provider)
  PEERS=(node-oidc-provider)
  PORTS[node-oidc-provider]=18380
  PORTS[node-oidc-provider-es256]=18381
  ALG[node-oidc-provider]=RS256
  ALG[node-oidc-provider-es256]=ES256
  if want client_credentials_es256; then PEERS+=(node-oidc-provider-es256); ES_SERVERS+=(node-oidc-provider-es256); fi
  cp bench/peer/package.json bench/peer/package-lock.json bench/peer/server.mjs "$TMP/"
  (cd "$TMP" && npm ci --no-audit --no-fund --silent >/dev/null)
  for s in "${PEERS[@]}"; do
    secret=$(openssl rand -hex 24)
    (cd "$TMP" && PORT=${PORTS[$s]} ALG=${ALG[$s]} CLIENT_ID=bench CLIENT_SECRET=$secret NODE_ENV=production exec node server.mjs) 2>"$TMP/$s.log" &
    PID[$s]=$!
    AUTH[$s]=$(printf 'bench:%s' "$secret" | base64 -w0)
    TOKEN_PATH[$s]=/token
    INTROSPECT_PATH[$s]=/token/introspection
    JWKS_PATH[$s]=/jwks
    METADATA_PATH[$s]=/.well-known/openid-configuration
    wait_up "http://127.0.0.1:${PORTS[$s]}/jwks"
  done
fi

sleep 2
for s in "${SERVERS[@]}" "${ES_SERVERS[@]}"; do IDLE[$s]=$(rss_kib "${PID[$s]}" VmRSS); done

# One token per server to introspect. The peer cannot introspect its JWT
# access tokens, so its token is an opaque one for a second resource.
declare -A TOKEN
for s in "${SERVERS[@]}"; do
  extra=()
  [ "$s" = node-oidc-provider ] && extra=(-d resource=https://opaque.example.com/mcp)
  TOKEN[$s]=$(curl -fs -H "Authorization: Basic ${AUTH[$s]}" -d grant_type=client_credentials -d scope=read "${extra[@]}" \
    "http://127.0.0.1:${PORTS[$s]}${TOKEN_PATH[$s]}" | json_field access_token)
done

use() { PORT=${PORTS[$1]}; CPU_PID=${PID[$1]}; }
CC="grant_type=client_credentials&scope=read"

sample_ceiling
want client_credentials && for c in 16 64; do
  for s in "${SERVERS[@]}"; do use "$s"; run "$s" client_credentials "$c" POST "${TOKEN_PATH[$s]}" "$CC" "${AUTH[$s]}"; done
done
# The same grant with ES256 signing keys on both sides.
want client_credentials_es256 && for c in 16 64; do
  for s in "${ES_SERVERS[@]}"; do use "$s"; run "$s" client_credentials_es256 "$c" POST "${TOKEN_PATH[$s]}" "$CC" "${AUTH[$s]}"; done
done
want client_credentials_dpop && for c in 16 64; do
  for s in "${SERVERS[@]}"; do
    use "$s"
    # A fresh ES256 proof per request, minted just before the row (iat = now).
    "$PROOFS_BIN" 80000 POST "http://127.0.0.1:$PORT${TOKEN_PATH[$s]}" >"$TMP/proofs.txt"
    run "$s" client_credentials_dpop "$c" POST "${TOKEN_PATH[$s]}" "$CC" "${AUTH[$s]}" bench/wrk/dpop.lua
  done
done
sample_ceiling
want introspection && for c in 16 64; do
  for s in "${SERVERS[@]}"; do use "$s"; run "$s" introspection "$c" POST "${INTROSPECT_PATH[$s]}" "token=${TOKEN[$s]}" "${AUTH[$s]}"; done
done
want jwks && for c in 16 64; do
  for s in "${SERVERS[@]}"; do use "$s"; run "$s" jwks "$c" GET "${JWKS_PATH[$s]}" "" ""; done
done
want metadata && for c in 16 64; do
  for s in "${SERVERS[@]}"; do use "$s"; run "$s" metadata "$c" GET "${METADATA_PATH[$s]}" "" ""; done
done
# Cheap requests while tokens are being minted (48 connections of
# client_credentials in the background): do they queue behind signing?
want jwks_under_token_load && for s in "${SERVERS[@]}"; do
  use "$s"
  background_tokens 48 "${AUTH[$s]}"
  run "$s" jwks_under_token_load 16 GET "${JWKS_PATH[$s]}" "" ""
  wait "$BG_PID"
done
sample_ceiling

for s in "${SERVERS[@]}" "${ES_SERVERS[@]}"; do PEAK[$s]=$(rss_kib "${PID[$s]}" VmHWM); done
rss=$(for s in "${SERVERS[@]}" "${ES_SERVERS[@]}"; do printf '"%s":{"idle":%s,"peak":%s},' "$s" "${IDLE[$s]}" "${PEAK[$s]}"; done)
cat >"$OUT.raw.json" <<EOF
{"stamp":"$STAMP","duration":"$DURATION","cpus":$(nproc),"cpu_model":"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)",
"ceiling_samples":[$(IFS=,; echo "${CEILINGS[*]}")],
"rss_kib":{${rss%,}},
"rows":[$(IFS=,; echo "${JSON[*]}")]}
EOF
python3 bench/compare.py "$OUT.raw.json" "$OUT"
