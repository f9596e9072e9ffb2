#!/usr/bin/env bash
# Rebuilds the native module in place (python/ferrolm/_native.abi3.so) without reinstalling:
# for working trees that share one virtualenv. Usage: scripts/dev-build.sh [--debug]
# The release build uses the flags of scripts/setup.sh and scripts/build-wheel.sh, so the three
# share one compile in target/x86_64-unknown-linux-gnu/; --debug is a plain cargo debug build.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
if [ "${1:-}" = "--debug" ]; then
    cargo build --quiet -p ferrolm-python
    cp "$target/debug/lib_native.so" python/ferrolm/_native.abi3.so
    exit 0
fi
PYTHON=${PYTHON:-.venv/bin/python}
MATURIN=${MATURIN:-$(dirname "$PYTHON")/maturin}
export PATH="$(cd "$(dirname "$PYTHON")" && pwd):$PATH"
MATURIN_ARGS=${MATURIN_ARGS:-"--zig --compatibility manylinux_2_28 --strip"}
out=$target/dev-wheel
rm -rf "$out"
# shellcheck disable=SC2086 # MATURIN_ARGS is a list of flags
"$MATURIN" build --release $MATURIN_ARGS --interpreter "$PYTHON" --out "$out" --quiet
"$PYTHON" - "$out" <<'PY'
import pathlib, shutil, sys, zipfile
(wheel,) = pathlib.Path(sys.argv[1]).glob("ferrolm-*.whl")
with zipfile.ZipFile(wheel) as z, z.open("ferrolm/_native.abi3.so") as src:
    with open("python/ferrolm/_native.abi3.so", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
