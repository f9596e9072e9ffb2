#!/usr/bin/env bash
# Builds the abi3 wheel (one wheel for CPython 3.9+) into dist/, e.g. to carry to a GPU machine
# that has Python and torch but no Rust: `pip install --no-deps dist/ferrolm-*.whl` there.
set -euo pipefail
cd "$(dirname "$0")/.."
MATURIN=${MATURIN:-.venv/bin/maturin}
"$MATURIN" build --release --out dist --quiet
ls -1 dist/*.whl
