#!/usr/bin/env bash
# Set up and start finflow on embedded defaults (SQLite in ./var, no Redis needed): schema, demo company,
# the three processes, demo API tokens in var/demo-tokens.txt, then the API on http://127.0.0.1:8000.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/finflow up "$@"
