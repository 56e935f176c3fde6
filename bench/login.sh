#!/usr/bin/env bash
# Proof-of-work login, measured (issue 15): the agent's solve time at the
# default difficulty (examples/agent.rs pow-bench, 200 challenges), logins
# end to end under load (examples/login_load.rs: site request -> agent
# reads, solves and approves -> passport on the site's event stream) on
# SQLite and on PostgreSQL, and 10,000 sites waiting on event streams
# (bench/login_listeners.py: server memory and CPU). Release build.
# Writes bench/results/login-<stamp>.md.
#
#   bench/login.sh                       # about 2 minutes after the build
#   DURATION=5 WORKERS=8 LISTENERS=2000 bench/login.sh
#   DIFFICULTY=8 WORKERS=16 LISTENERS=0 bench/login.sh   # the server alone
#
# One site and one agent make every request, so the server runs with
# --login-rate and --pow-free-rate above the load: the rows measure the
# server's login path at the base difficulty (15 bits), not its flood
# brakes (tests/api/login.rs covers those).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-20}
WORKERS=${WORKERS:-"4 16"}
# The base difficulty; at 8 bits the solve costs nothing and the rows show
# the server's login path alone (at 15, the load tool's solving shares the
# two cores with the server).
DIFFICULTY=${DIFFICULTY:-15}
LISTENERS=${LISTENERS:-10000}
BIN=${AGENTAUTH_BIN:-target/release/agentauth}
EX=${EXAMPLES_DIR:-target/release/examples}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/test}
PG_DB=agentauth_bench_login
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-bench/results/login-$STAMP}
export AGENTAUTH_KEK=${AGENTAUTH_KEK:-$(openssl rand -base64 32)}
export RUST_LOG=${RUST_LOG:-warn}
POW=urn:agentauth:params:grant-type:pow-login

[ -n "${AGENTAUTH_BIN:-}" ] || cargo build --release --bins --example login_load --example agent_requests --example agent
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

"$EX/agent_requests" keygen "$TMP/keys"
start() { # backend database-url port
  AGENTAUTH_PASSWORD="bench password 1" "$BIN" user create alice --database-url "$2" >/dev/null
  AGENT=$("$BIN" agent create --owner alice --name a --scope read --jwk "$TMP/keys/a.jwk" --database-url "$2")
  SITE=$("$BIN" client create --database-url "$2" --name "Bench Site" --grant-type "$POW" \
    --scope read --auth-method client_secret_basic --json)
  ISSUER="http://127.0.0.1:$3"
  "$BIN" serve --listen "127.0.0.1:$3" --issuer "$ISSUER" --database-url "$2" \
    --login-rate 1000000 --pow-free-rate 1000000 --max-open-login-requests 100000 \
    --login-streams 100000 --login-streams-per-site 100000 \
    --pow-difficulty "$DIFFICULTY" 2>"$TMP/$1.log" &
  SERVER_PID=$!
  wait_up "$ISSUER/healthz"
}
stop() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=; }

POW_LINE=$("$EX/agent" pow-bench 200 15)
echo "$POW_LINE"
for backend in sqlite postgres; do
  case $backend in
    sqlite) DB="sqlite://$TMP/login.db?mode=rwc" ;;
    postgres) DB=$(fresh_pg_db "$PG_DB") ;;
  esac
  start "$backend" "$DB" 18490
  for c in $WORKERS; do
    t0=$(date +%s.%N); c0=$(cpu_ticks "$SERVER_PID")
    line=$("$EX/login_load" "$ISSUER" "$(json_field client_id <<<"$SITE")" "$(json_field client_secret <<<"$SITE")" \
      "$AGENT" "$TMP/keys/a.pk8" "$c" "$DURATION")
    t1=$(date +%s.%N); c1=$(cpu_ticks "$SERVER_PID")
    row=$(python3 - "$backend" "$c" "$line" "$t0" "$t1" "$c0" "$c1" "$TICK" <<'PY'
import json, sys
backend, c, line = sys.argv[1:4]
t0, t1, c0, c1, hz = map(float, sys.argv[4:9])
r = json.loads(line)
print(f"| {backend} | {c} | {r['logins']} | {r['logins_per_second']:.0f} | {r['latency_ms']['p50']:.1f} | "
      f"{r['latency_ms']['p99']:.1f} | {r['solve_ms']['p50']:.1f} | {(c1 - c0) / hz / (t1 - t0):.2f} | {r['error_count']} |")
PY
)
    echo "$row"; ROWS+=("$row")
  done
  stop
done

# 10,000 waiting sites, SQLite (the streams hold no database connection).
LISTEN_LINE="not measured (LISTENERS=0)"
if [ "$LISTENERS" -gt 0 ]; then
  DB="sqlite://$TMP/listen.db?mode=rwc"
  start listeners "$DB" 18491
  LISTEN_LINE=$(python3 bench/login_listeners.py "$ISSUER" "$(json_field client_id <<<"$SITE")" \
    "$(json_field client_secret <<<"$SITE")" "$SERVER_PID" "$LISTENERS" | tail -1)
  stop
fi

{
  echo "# Proof-of-work login, $STAMP ($(nproc) cores, release build, load tool on the same cores)"
  echo
  echo "Solve time at 15 bits (examples/agent.rs pow-bench, 200 challenges): $POW_LINE"
  echo
  echo "Logins end to end, $DURATION s per row: site creates a request and opens its stream, the agent reads"
  echo "the challenge (DPoP passport), solves it ($DIFFICULTY bits), approves; latency ends when the passport reaches the site."
  echo
  echo "| backend | workers | logins | logins/s | p50 ms | p99 ms | solve p50 ms | server cores | errors |"
  echo "|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "Waiting event streams: $LISTEN_LINE"
} | tee "$OUT.md"
