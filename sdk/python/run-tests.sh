#!/bin/sh
# Runs the Python package's tests against the real server binary.
# AGENTAUTH_BIN: the server (default ../../target/debug/agentauth).
# Extra arguments go to pytest (e.g. -k verifier).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements-test.txt
  .venv/bin/pip install -q --no-deps -e .
fi
export AGENTAUTH_BIN="${AGENTAUTH_BIN:-$here/../../target/debug/agentauth}"
exec .venv/bin/python -m pytest -q "$@"
