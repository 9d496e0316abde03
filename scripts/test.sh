#!/usr/bin/env bash
# Set up and run the whole test suite: lint, then the tests on SQLite and on the local PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/services.sh
scripts/browser.sh
.venv/bin/ruff check .
echo "== tests on SQLite"
FINFLOW_TEST_DB=sqlite .venv/bin/python -m pytest "$@"
echo "== tests on PostgreSQL"
FINFLOW_TEST_DB=postgres .venv/bin/python -m pytest "$@"
