# Shared by the bench scripts: wait_up, json_field, and run (one wrk scenario
# and its row; needs PORT, TMP and DURATION set by the caller, and CPU_PID: the
# server process, whose CPU time over the run gives the cores it actually got).
# shellcheck shell=bash

ROWS=()      # markdown rows
JSON=()      # json objects

rss_kib() { awk -v k="$2" '$1==k":" {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # utime + stime
TICK=$(getconf CLK_TCK)

# Waits until URL answers 2xx (15 s at most).
wait_up() { for _ in $(seq 1 150); do curl -fs "$1" >/dev/null && return; sleep 0.1; done; echo "not up: $1" >&2; exit 1; }
# A field of the JSON object on stdin.
# A fresh PostgreSQL database named $1 (dropped first) through $PG_ADMIN;
# prints its URL.
fresh_pg_db() {
  psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $1" >/dev/null
  psql -q "$PG_ADMIN" -c "CREATE DATABASE $1" >/dev/null
  echo "postgres://postgres@127.0.0.1:5432/$1"
}
json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

run() { # backend scenario conns method path body auth [lua script]
  local backend=$1 scenario=$2 conns=$3 method=$4 path=$5 body=$6 auth=$7 script=${8:-bench/wrk/request.lua} line
  local t0 c0 t1 c1 cores
  t0=$(date +%s.%N); c0=$(cpu_ticks "$CPU_PID")
  line=$(WRK_METHOD=$method WRK_BODY=$body WRK_AUTH=$auth WRK_PROOFS=$TMP/proofs.txt \
    wrk -t2 -c"$conns" -d"$DURATION" --latency -s "$script" "http://127.0.0.1:$PORT$path" | grep '^RESULT')
  t1=$(date +%s.%N); c1=$(cpu_ticks "$CPU_PID")
  cores=$(python3 -c "import sys; t0, t1, c0, c1, hz = map(float, sys.argv[1:]); print(f'{(c1 - c0) / hz / (t1 - t0):.2f}')" "$t0" "$t1" "$c0" "$c1" "$TICK")
  local rps p50_ms p99_ms non2xx socket_errors kv
  for kv in ${line#RESULT }; do
    case $kv in
      rps=*) rps=${kv#*=} ;; p50_ms=*) p50_ms=${kv#*=} ;; p99_ms=*) p99_ms=${kv#*=} ;;
      non2xx=*) non2xx=${kv#*=} ;; socket_errors=*) socket_errors=${kv#*=} ;;
    esac
  done
  printf '%-18s %-24s c=%-3s %9s req/s  p50 %7s ms  p99 %7s ms  server cores %s  non-2xx %s\n' "$backend" "$scenario" "$conns" "$rps" "$p50_ms" "$p99_ms" "$cores" "$non2xx"
  ROWS+=("| $backend | $scenario | $conns | $rps | $p50_ms | $p99_ms | $cores | $non2xx |")
  JSON+=("{\"backend\":\"$backend\",\"scenario\":\"$scenario\",\"connections\":$conns,\"rps\":$rps,\"p50_ms\":$p50_ms,\"p99_ms\":$p99_ms,\"server_cores\":$cores,\"non_2xx\":$non2xx,\"socket_errors\":$socket_errors}")
  LAST_RPS=$rps
  LAST_CORES=$cores
}

# Token load in the background for a mixed row: wrk -t1 at $1 connections on
# POST /token with client_credentials, for DURATION plus two seconds (so it
# spans the row run next). Sets BG_PID.
background_tokens() { # conns auth
  local secs=${DURATION%s}
  WRK_METHOD=POST WRK_BODY="grant_type=client_credentials&scope=read" WRK_AUTH=$2 \
    wrk -t1 -c"$1" -d"$((secs + 2))s" -s bench/wrk/request.lua "http://127.0.0.1:$PORT/token" >/dev/null &
  BG_PID=$!
  sleep 1
}

# The physical limit, RSA-2048 signatures per second on one core and on all
# cores (openssl speed). The machine's speed drifts (shared hosts), so the
# scripts sample it beside each server's rows and keep the highest figure:
# the ceiling is what the cores can do, not what they did on average.
CEILINGS=()
sample_ceiling() {
  local one all
  one=$(openssl speed -seconds 2 rsa2048 2>/dev/null | awk '/^rsa 2048/ {print int($6)}')
  all=$(openssl speed -seconds 2 -multi "$(nproc)" rsa2048 2>/dev/null | awk '/^rsa 2048/ {print int($6)}')
  CEILINGS+=("{\"one_core\":$one,\"all_cores\":$all}")
  echo "signing ceiling sample: $one/s on one core, $all/s on $(nproc) cores"
}
