#!/usr/bin/env bash
# Install voxpipe with every extra plus the test-only plugin package, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}"
python -m pip install -q -c scripts/constraints.txt -e ".[all,dev]" -e tests/plugins/voxpipe-testkit
ruff check .
ruff format --check .
python -m pytest -q "$@"
