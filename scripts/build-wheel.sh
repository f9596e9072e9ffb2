#!/usr/bin/env bash
# Builds the portable wheel into dist/: one abi3 wheel for CPython 3.10+ on x86-64 Linux, tagged
# manylinux_2_28 (glibc 2.28: RHEL 8, Debian 10+, Ubuntu 18.10+), with a stripped extension.
# The zig linker (PyPI `ziglang`, installed by scripts/setup.sh) links against glibc 2.28's
# symbols whatever glibc this machine has. scripts/check-wheel.sh checks the result.
#
# The cargo flags below are the ones scripts/setup.sh gives the editable install
# (MATURIN_ARGS), so after setup this only packages and relinks: keep the two in step.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
MATURIN=${MATURIN:-$(dirname "$PYTHON")/maturin}
# maturin finds zig through `python3 -m ziglang`: the virtualenv's own python must come first.
export PATH="$(cd "$(dirname "$PYTHON")" && pwd):$PATH"
MATURIN_ARGS=${MATURIN_ARGS:-"--zig --compatibility manylinux_2_28 --strip"}
rm -f dist/ferrolm-*.whl
# shellcheck disable=SC2086 # MATURIN_ARGS is a list of flags
"$MATURIN" build --release $MATURIN_ARGS --interpreter "$PYTHON" --out dist --quiet
ls -1 dist/ferrolm-*.whl
