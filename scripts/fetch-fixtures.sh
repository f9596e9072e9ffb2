#!/usr/bin/env bash
# Fetches the reference tokenizations that llama.cpp ships (vocab-only `ggml-vocab-*.gguf`
# files with `.inp` inputs and `.out` expected ids) into a cache outside the repository, for
# tests/test_tokens_reference.py. They come from the `llama-cpp-python` sdist on PyPI (pinned
# version, sha256 checked); only `vendor/llama.cpp/models/` is kept.
#
# Destination: $FERROLM_LLAMA_CPP_MODELS if set, else
# ${XDG_CACHE_HOME:-~/.cache}/ferrolm/fixtures/llama.cpp/models. Idempotent: does nothing when
# the destination already holds the files. Needs a Python with pip (PYTHON, default
# .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.3.36
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/ferrolm/fixtures
DEST=${FERROLM_LLAMA_CPP_MODELS:-$CACHE/llama.cpp/models}
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

if [ -f "$DEST/ggml-vocab-gpt-2.gguf.out" ]; then
    echo "llama.cpp reference tokenizations already in $DEST" >&2
    exit 0
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# Hash-checking mode: pip refuses a file whose sha256 differs.
echo "llama-cpp-python==$VERSION --hash=sha256:$SHA256" > "$WORK/req.txt"
"$PYTHON" -m pip download --quiet --no-deps --no-binary llama-cpp-python \
    --require-hashes -r "$WORK/req.txt" -d "$WORK"
SDIST="$WORK/llama_cpp_python-$VERSION.tar.gz"
echo "$SHA256  $SDIST" | sha256sum --check --quiet
tar -xzf "$SDIST" -C "$WORK" "llama_cpp_python-$VERSION/vendor/llama.cpp/models/"
mkdir -p "$(dirname "$DEST")"
rm -rf "$DEST.partial"
mv "$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp/models" "$DEST.partial"
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
echo "llama.cpp reference tokenizations installed in $DEST" >&2
