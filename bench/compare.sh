#!/usr/bin/env bash
# One command: agentauth (SQLite and PostgreSQL) and node-oidc-provider,
# same machine, same run, same wrk scenarios; then one table (Markdown and
# JSON) and a bar chart (SVG) under bench/results/.
#
#   bench/compare.sh                 # 10 s per scenario
#   DURATION=5s bench/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export DURATION=${DURATION:-10s}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p bench/results
cargo build --release --bins --example dpop_proofs
OUT=bench/results/ours-$STAMP bench/load.sh
bench/peer/run.sh "bench/results/peer-$STAMP.json"
python3 bench/compare.py "bench/results/ours-$STAMP.json" "bench/results/peer-$STAMP.json" "bench/results/compare-$STAMP"
