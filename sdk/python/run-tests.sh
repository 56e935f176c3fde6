#!/bin/sh
# Runs the Python package's tests against the real server binary.
# AGENTAUTH_BIN: the server (default ../../target/debug/agentauth).
# Extra arguments go to pytest (e.g. -k verifier).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
# (Re)install when the pins changed since the last install.
if [ ! -x .venv/bin/python ] || [ requirements-test.txt -nt .venv/.installed ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements-test.txt
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
  touch .venv/.installed
fi
export AGENTAUTH_BIN="${AGENTAUTH_BIN:-$here/../../target/debug/agentauth}"
exec .venv/bin/python -m pytest -q "$@"
