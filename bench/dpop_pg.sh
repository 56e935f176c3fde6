#!/usr/bin/env bash
# What DPoP costs against bearer on PostgreSQL (issue 11, item 7), in A/B
# rounds: each variant is one agentauth binary on its own fresh PostgreSQL
# database (plus, as the floor, the first binary on SQLite, whose replay
# check is in memory). Every round runs, for each connection count and
# each variant, a client_credentials row without and then with a fresh
# ES256 DPoP proof per request, so a drift in the host's speed hits the
# pair alike. Besides req/s it reads the server's and PostgreSQL's CPU
# over each row and, from /metrics, how many proofs one statement carried.
#
#   bench/dpop_pg.sh                                   # HEAD's release build
#   VARIANTS="base=/tmp/agentauth-base new=target/release/agentauth" bench/dpop_pg.sh
#   ROUNDS=5 DURATION=10s CONNS="16 64" bench/dpop_pg.sh
#   SQLITE=0 bench/dpop_pg.sh                          # PostgreSQL rows only
#   VARIANTS="logged=target/release/agentauth unlogged=target/release/agentauth" \
#     SQL_unlogged="ALTER TABLE dpop_jtis SET UNLOGGED" bench/dpop_pg.sh
#                        # SQL_<variant>: run on that variant's database once it is up
#
# Writes the rows and a summary (median cost per variant and connection
# count) to bench/results/dpop-pg-<stamp>.md. Traffic goes to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

export DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-16 64}
SQLITE=${SQLITE:-1}
PROOFS_BIN=${PROOFS_BIN:-target/release/examples/dpop_proofs}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/test}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-bench/results/dpop-pg-$STAMP.md}
export AGENTAUTH_KEK=${AGENTAUTH_KEK:-$(openssl rand -base64 32)}
export RUST_LOG=${RUST_LOG:-warn}

if [ -z "${VARIANTS:-}" ]; then
  cargo build --release --bin agentauth --example dpop_proofs
  VARIANTS="head=target/release/agentauth"
fi
[ -x "$PROOFS_BIN" ] || cargo build --release --example dpop_proofs
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
mkdir -p bench/results

TMP=$(mktemp -d)
declare -A PID PORTS AUTH DBNAME BIN DB
NAMES=()
cleanup() {
  for p in "${PID[@]}"; do kill "$p" 2>/dev/null || true; done
  for d in "${DBNAME[@]}"; do psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $d" >/dev/null 2>&1 || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
# shellcheck source=bench/lib.sh
source bench/lib.sh

# CPU seconds of every PostgreSQL process (the pooled backends live for
# the whole run, so the difference over a row is theirs).
pg_ticks() {
  local total=0 pid
  for pid in $(pgrep -u postgres); do
    total=$((total + $(cpu_ticks "$pid" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
metric() { curl -fs "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1==m {print int($2)}' | head -1; }

port=18480
for v in $VARIANTS; do
  name=${v%%=*}
  NAMES+=("$name"); BIN[$name]=${v#*=}
  DBNAME[$name]=agentauth_dpop_${name//[^a-z0-9]/_}
  DB[$name]=$(fresh_pg_db "${DBNAME[$name]}")
done
if [ "$SQLITE" = 1 ]; then
  NAMES+=(sqlite); BIN[sqlite]=${BIN[${NAMES[0]}]}; DB[sqlite]="sqlite://$TMP/agentauth.db?mode=rwc"
fi

for name in "${NAMES[@]}"; do
  PORTS[$name]=$port; port=$((port + 1))
  client=$("${BIN[$name]}" client create --database-url "${DB[$name]}" --name bench --grant-type client_credentials \
    --scope "read write" --auth-method client_secret_basic --json)
  AUTH[$name]=$(printf '%s:%s' "$(json_field client_id <<<"$client")" "$(json_field client_secret <<<"$client")" | base64 -w0)
  "${BIN[$name]}" serve --listen "127.0.0.1:${PORTS[$name]}" --issuer "http://127.0.0.1:${PORTS[$name]}" \
    --database-url "${DB[$name]}" 2>"$TMP/$name.log" &
  PID[$name]=$!
  wait_up "http://127.0.0.1:${PORTS[$name]}/healthz"
  sql_var=SQL_$name
  if [ -n "${!sql_var:-}" ]; then psql -q "${DB[$name]}" -c "${!sql_var}"; fi
done
sleep 1

CC="grant_type=client_credentials&scope=read"
secs=${DURATION%s}
proofs=$(( secs * 12000 ))
LINES=()
row() { # name conns scenario
  local name=$1 c=$2 scenario=$3 p0 p1 t0 t1 s0 s1 n0 n1 pg per
  PORT=${PORTS[$name]}; CPU_PID=${PID[$name]}
  s0=$(metric "$PORT" agentauth_replay_statements_total); n0=$(metric "$PORT" agentauth_replay_spends_total)
  p0=$(pg_ticks); t0=$(date +%s.%N)
  if [ "$scenario" != bearer ]; then
    "$PROOFS_BIN" "$proofs" POST "http://127.0.0.1:$PORT/token" >"$TMP/proofs.txt"
    p0=$(pg_ticks); t0=$(date +%s.%N)
    # "echo": the same requests as the DPoP row, the proof in a header
    # the server ignores; wrk's per-request Lua work is then the same too.
    header=DPoP; [ "$scenario" = echo ] && header=X-Ignored-Proof
    WRK_PROOF_HEADER=$header run "$name" "client_credentials_$scenario" "$c" POST /token "$CC" "${AUTH[$name]}" bench/wrk/dpop.lua >/dev/null
  else
    run "$name" client_credentials "$c" POST /token "$CC" "${AUTH[$name]}" >/dev/null
  fi
  p1=$(pg_ticks); t1=$(date +%s.%N)
  s1=$(metric "$PORT" agentauth_replay_statements_total); n1=$(metric "$PORT" agentauth_replay_spends_total)
  pg=$(python3 -c "import sys; p0,p1,t0,t1,hz=map(float,sys.argv[1:]); print(f'{(p1-p0)/hz/(t1-t0):.2f}')" "$p0" "$p1" "$t0" "$t1" "$TICK")
  per=$(python3 -c "import sys; s=int(sys.argv[2] or 0)-int(sys.argv[1] or 0); n=int(sys.argv[4] or 0)-int(sys.argv[3] or 0); print(f'{n/s:.1f}' if s else '—')" "${s0:-0}" "${s1:-0}" "${n0:-0}" "${n1:-0}")
  LINES+=("$ROUND $name $c $scenario $LAST_RPS $LAST_CORES $pg $per")
  printf 'round %s  %-8s c=%-3s %-6s %9s req/s  server %s cores  postgres %s cores  proofs/statement %s\n' \
    "$ROUND" "$name" "$c" "$scenario" "$LAST_RPS" "$LAST_CORES" "$pg" "$per"
}

for ROUND in $(seq 1 "$ROUNDS"); do
  for c in $CONNS; do
    for name in "${NAMES[@]}"; do
      row "$name" "$c" bearer
      row "$name" "$c" echo
      row "$name" "$c" dpop
    done
  done
done

printf '%s\n' "${LINES[@]}" >"$TMP/lines.txt"
python3 - "$TMP/lines.txt" "$OUT" "$DURATION" "$ROUNDS" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$VARIANTS" <<'EOF'
import statistics, sys
from collections import defaultdict
lines, out, duration, rounds, cpu, variants = sys.argv[1:]
rows = [l.split() for l in open(lines) if l.strip()]
by = {}
for r, name, c, scen, rps, cores, pg, per in rows:
    by[(r, name, c, scen)] = (float(rps), cores, pg, per)
def us(rps, cores, pg):
    return (float(cores) + float(pg)) / rps * 1e6
md = [f"# DPoP against bearer, A/B rounds\n",
      f"wrk -t2, {duration} per row, {rounds} rounds, {cpu}, 2 cores shared by wrk, the servers and PostgreSQL.",
      f"Variants: `{variants}`; `sqlite` is the first binary on SQLite (replay check in memory), the floor.",
      "Rows: *bearer* is client_credentials with wrk's fixed request; *echo* sends the DPoP row's very requests (a fresh proof each,",
      "built by wrk's Lua per request) in a header the server ignores; *DPoP* sends them as `DPoP`. Cost = 1 − DPoP req/s ÷ that row's req/s.",
      "CPU µs per token = (server + PostgreSQL CPU) ÷ req/s.\n",
      "| round | variant | conns | bearer req/s | echo req/s | DPoP req/s | cost vs bearer | cost vs echo | CPU µs/token (bearer / echo / DPoP) | PostgreSQL cores (echo / DPoP) | proofs per statement |",
      "|---|---|---|---|---|---|---|---|---|---|---|"]
costs = defaultdict(list)
costs_echo = defaultdict(list)
cpu_us = defaultdict(list)
for (r, name, c, scen), (rps, cores, pg, per) in sorted(by.items(), key=lambda kv: (int(kv[0][0]), int(kv[0][2]), kv[0][1])):
    if scen != "bearer":
        continue
    d = by.get((r, name, c, "dpop"))
    e = by.get((r, name, c, "echo"))
    if not d or not e:
        continue
    cost, cost_e = 1 - d[0] / rps, 1 - d[0] / e[0]
    costs[(name, c)].append(cost)
    costs_echo[(name, c)].append(cost_e)
    cpu_us[(name, c)].append((us(rps, cores, pg), us(*e[:3]), us(*d[:3])))
    md.append(f"| {r} | {name} | {c} | {rps:,.0f} | {e[0]:,.0f} | {d[0]:,.0f} | {cost:.1%} | {cost_e:.1%} | "
              f"{us(rps, cores, pg):.0f} / {us(*e[:3]):.0f} / {us(*d[:3]):.0f} | {e[2]} / {d[2]} | {d[3]} |")
md += ["", "| variant | conns | cost vs bearer, median (min–max) | cost vs echo, median (min–max) | CPU µs/token, median (bearer / echo / DPoP) |", "|---|---|---|---|---|"]
for (name, c), cs in sorted(costs.items(), key=lambda kv: (int(kv[0][1]), kv[0][0])):
    ce = costs_echo[(name, c)]
    u = cpu_us[(name, c)]
    med = lambda i: statistics.median(x[i] for x in u)
    md.append(f"| {name} | {c} | {statistics.median(cs):.1%} ({min(cs):.1%}–{max(cs):.1%}) | "
              f"{statistics.median(ce):.1%} ({min(ce):.1%}–{max(ce):.1%}) | {med(0):.0f} / {med(1):.0f} / {med(2):.0f} |")
open(out, "w").write("\n".join(md) + "\n")
print("\n".join(md))
EOF
echo "wrote $OUT"
