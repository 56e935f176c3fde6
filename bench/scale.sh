#!/usr/bin/env bash
# Issue 34 item 6: agentauth on a PostgreSQL database at scale. Seeds a
# fresh database (bench/seed-scale.sql: 1,000,000 clients, 100,000 agents,
# 1,000,000 live refresh families, 10,000,000 audit rows by default), then
# reports how long seeding took, each table's and index's size, and the
# server's start-up time (to /readyz) and RSS on it.
#
#   bench/scale.sh                       # the sizes of the issue
#   CLIENTS=10000 AUDIT=100000 bench/scale.sh   # smaller, to try it
#
# The rows of bench/compare.sh run on this database with SCALE_DB set to
# its URL (the database is kept; DROP=1 drops it at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

BIN=${AGENTAUTH_BIN:-target/release/agentauth}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/test}
OWNERS=${OWNERS:-10000} CLIENTS=${CLIENTS:-1000000} AGENTS=${AGENTS:-100000}
FAMILIES=${FAMILIES:-1000000} AUDIT=${AUDIT:-10000000}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-bench/results/scale-$STAMP.md}
export AGENTAUTH_KEK=${AGENTAUTH_KEK:-$(openssl rand -base64 32)}
export RUST_LOG=${RUST_LOG:-warn}

DB=$(fresh_pg_db agentauth_scale)
"$BIN" migrate --database-url "$DB" >/dev/null
started=$(date +%s.%N)
psql -q "$DB" -v owners="$OWNERS" -v clients="$CLIENTS" -v agents="$AGENTS" \
  -v families="$FAMILIES" -v audit="$AUDIT" -f bench/seed-scale.sql >/dev/null
seeded=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}')" "$started" "$(date +%s.%N)")

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
t0=$(date +%s.%N)
"$BIN" serve --database-url "$DB" --listen "127.0.0.1:$PORT" --issuer "http://127.0.0.1:$PORT" \
  --resource https://mcp.example.com/mcp --scopes read >/dev/null 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
wait_up "http://127.0.0.1:$PORT/readyz"
up_ms=$(python3 -c "import sys; print(f'{(float(sys.argv[2]) - float(sys.argv[1])) * 1000:.0f}')" "$t0" "$(date +%s.%N)")
rss=$(rss_kib "$PID" VmRSS)

{
  echo "# agentauth at scale on PostgreSQL ($STAMP)"
  echo
  echo "Seeded: $OWNERS owners, $CLIENTS clients, $AGENTS agents, $FAMILIES live refresh families, $AUDIT audit rows, in ${seeded} s (bench/seed-scale.sql)."
  echo "Start-up to /readyz: ${up_ms} ms; RSS once ready: $((rss / 1024)) MiB ($(basename "$BIN"))."
  echo
  echo "| relation | kind | rows (estimate) | size |"
  echo "|---|---|---|---|"
  psql -qtA -F'|' "$DB" -c "
    SELECT c.relname, CASE c.relkind WHEN 'r' THEN 'table' ELSE 'index' END,
           CASE c.relkind WHEN 'r' THEN c.reltuples::bigint::text ELSE '' END,
           pg_size_pretty(pg_relation_size(c.oid))
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i') AND pg_relation_size(c.oid) > 65536
    ORDER BY pg_relation_size(c.oid) DESC" | sed 's/^/| /; s/$/ |/'
  echo
  echo "Database total: $(psql -qtA "$DB" -c "SELECT pg_size_pretty(pg_database_size(current_database()))")."
} | tee "$OUT"
kill "$PID"
if [ "${DROP:-0}" = 1 ]; then psql -q "$PG_ADMIN" -c "DROP DATABASE agentauth_scale WITH (FORCE)"; fi
