# Shared by bench/load.sh and bench/peer/run.sh: run one wrk scenario and
# collect its row. Needs PORT, TMP and DURATION set by the caller.
# shellcheck shell=bash

ROWS=()      # markdown rows
JSON=()      # json objects

rss_kib() { awk -v k="$2" '$1==k":" {print $2}' "/proc/$1/status"; }

run() { # backend scenario conns method path body auth [lua script]
  local backend=$1 scenario=$2 conns=$3 method=$4 path=$5 body=$6 auth=$7 script=${8:-bench/wrk/request.lua} line
  line=$(WRK_METHOD=$method WRK_BODY=$body WRK_AUTH=$auth WRK_PROOFS=$TMP/proofs.txt \
    wrk -t2 -c"$conns" -d"$DURATION" --latency -s "$script" "http://127.0.0.1:$PORT$path" | grep '^RESULT')
  local rps p50_ms p99_ms non2xx socket_errors kv
  for kv in ${line#RESULT }; do
    case $kv in
      rps=*) rps=${kv#*=} ;; p50_ms=*) p50_ms=${kv#*=} ;; p99_ms=*) p99_ms=${kv#*=} ;;
      non2xx=*) non2xx=${kv#*=} ;; socket_errors=*) socket_errors=${kv#*=} ;;
    esac
  done
  printf '%-8s %-24s c=%-3s %9s req/s  p50 %7s ms  p99 %7s ms  non-2xx %s\n' "$backend" "$scenario" "$conns" "$rps" "$p50_ms" "$p99_ms" "$non2xx"
  ROWS+=("| $backend | $scenario | $conns | $rps | $p50_ms | $p99_ms | $non2xx |")
  JSON+=("{\"backend\":\"$backend\",\"scenario\":\"$scenario\",\"connections\":$conns,\"rps\":$rps,\"p50_ms\":$p50_ms,\"p99_ms\":$p99_ms,\"non_2xx\":$non2xx,\"socket_errors\":$socket_errors}")
  LAST_RPS=$rps
}
