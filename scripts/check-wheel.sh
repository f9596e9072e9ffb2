#!/usr/bin/env bash
# Checks the wheel scripts/build-wheel.sh made, the way a user gets it:
#   1. its platform tag is manylinux_2_28 or older, and `auditwheel show` agrees;
#   2. the extension needs no glibc symbol newer than 2.28 (objdump -T) and is stripped;
#   3. the wheel is at most 3 MB;
#   4. `pip install <wheel>` into a fresh virtualenv, outside the source tree and with no Rust
#      toolchain on PATH, installs the base (NumPy, tqdm) and no torch; there one small call per
#      capability works and each torch/HF feature raises an ImportError naming its extra
#      (tests/install_smoke.py).
# Usage: scripts/check-wheel.sh [WHEEL]. Needs network access to PyPI (or a pip cache) for
# NumPy and tqdm. Environment: PYTHON (the dev virtualenv's, for auditwheel), BASE_PYTHON (the
# interpreter the fresh virtualenv is made from; default: the one behind PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
PYTHON=${PYTHON:-.venv/bin/python}
MAX_GLIBC=2.28
MAX_BYTES=$((3 * 1024 * 1024))
fail() { echo "check-wheel: FAIL: $*" >&2; exit 1; }

if [ $# -ge 1 ]; then
    wheel=$1
else
    shopt -s nullglob
    wheels=(dist/ferrolm-*.whl)
    [ ${#wheels[@]} -eq 1 ] || fail "expected one dist/ferrolm-*.whl, found ${#wheels[@]}: run scripts/build-wheel.sh"
    wheel=${wheels[0]}
fi
wheel=$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")
name=$(basename "$wheel")
echo "check-wheel: $name"

# 1. The tag: abi3, and manylinux_2_X with X <= 28 (or a legacy alias of an older glibc).
case "$name" in
    *-cp39-abi3-*) ;;
    *) fail "$name is not a cp39-abi3 wheel" ;;
esac
tag_ok=$("$PYTHON" - "$name" "$MAX_GLIBC" <<'PY'
import re, sys
name, floor = sys.argv[1], tuple(int(x) for x in sys.argv[2].split("."))
platforms = name[:-4].split("-")[-1].split(".")
legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
ok = False
for p in platforms:
    m = re.fullmatch(r"manylinux_(\d+)_(\d+)_x86_64", p)
    glibc = (int(m[1]), int(m[2])) if m else legacy.get(p.rsplit("_x86_64", 1)[0])
    ok = ok or (glibc is not None and glibc <= floor)
print("yes" if ok else "no")
PY
)
[ "$tag_ok" = yes ] || fail "$name is not tagged manylinux_2_28 or older"
auditwheel=$(dirname "$PYTHON")/auditwheel
audit=$("$auditwheel" show "$wheel" 2>&1) || fail "auditwheel show failed: $audit"
echo "$audit" | tr -s ' \n' ' ' | grep -Eq 'consistent with the following platform tag: "manylinux_2_(2[0-8]|1[0-9]|[0-9])_x86_64"' \
    || fail "auditwheel does not accept it as manylinux_2_28 or older: $audit"
echo "ok   tag: ${name%.whl} (auditwheel: $(echo "$audit" | tr -s ' \n' ' ' | grep -Eo 'platform tag: "[^"]*"' | head -1))"

# 2. The extension: glibc symbols and strip.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract('ferrolm/_native.abi3.so', sys.argv[2])" "$wheel" "$tmp"
so=$tmp/ferrolm/_native.abi3.so
newest=$(objdump -T "$so" | grep -Eo 'GLIBC_[0-9]+(\.[0-9]+)+' | sed 's/GLIBC_//' | sort -V | tail -1)
[ -n "$newest" ] || fail "objdump -T found no GLIBC symbol versions in the extension"
[ "$(printf '%s\n%s\n' "$newest" "$MAX_GLIBC" | sort -V | tail -1)" = "$MAX_GLIBC" ] \
    || fail "the extension needs GLIBC_$newest (> $MAX_GLIBC): $(objdump -T "$so" | grep "GLIBC_$newest" | head -3)"
if objdump -h "$so" | grep -Eq ' \.(symtab|debug_info) '; then
    fail "the extension is not stripped (it has a .symtab or .debug_info section)"
fi
echo "ok   extension: newest glibc symbol GLIBC_$newest, stripped, $(stat -c %s "$so") bytes"

# 3. Size.
size=$(stat -c %s "$wheel")
[ "$size" -le "$MAX_BYTES" ] || fail "the wheel is $size bytes (> 3 MB)"
echo "ok   size: $size bytes"

# 4. A fresh install, as a user would make it, away from the source tree and from cargo.
BASE_PYTHON=${BASE_PYTHON:-$("$PYTHON" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')}
"$BASE_PYTHON" -m venv "$tmp/venv"
cp tests/install_smoke.py "$tmp/install_smoke.py"
cd "$tmp"
clean_path=$tmp/venv/bin:/usr/bin:/bin
if PATH=$clean_path command -v cargo >/dev/null || PATH=$clean_path command -v rustc >/dev/null; then
    fail "a Rust toolchain is on the clean PATH ($clean_path)"
fi
env -i HOME="$HOME" PATH="$clean_path" PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ${PIP_INDEX_URL:+PIP_INDEX_URL="$PIP_INDEX_URL"} \
    "$tmp/venv/bin/python" -m pip install --quiet --only-binary=:all: "$wheel" \
    || fail "pip install $name failed"
installed=$("$tmp/venv/bin/python" -m pip list --format=freeze 2>/dev/null)
echo "ok   installed: $(echo "$installed" | tr '\n' ' ')"
if echo "$installed" | grep -Eiq '^(torch|transformers|nvidia-|triton|tokenizers|accelerate)'; then
    fail "the base install brought a package it must not: $installed"
fi
env -i HOME="$HOME" PATH="$clean_path" "$tmp/venv/bin/python" install_smoke.py \
    || fail "the smoke calls failed in the fresh install"
cd "$repo"
echo "check-wheel: OK"
