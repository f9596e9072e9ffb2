#!/usr/bin/env bash
# Rebuilds the native module in place (python/ferrolm/_native.abi3.so) without reinstalling:
# for working trees that share one virtualenv. Usage: scripts/dev-build.sh [--debug]
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
[ "${1:-}" = "--debug" ] && profile=dev
cargo build --quiet --profile "$profile" -p ferrolm-python
dir=release
[ "$profile" = dev ] && dir=debug
target=${CARGO_TARGET_DIR:-target}
cp "$target/$dir/lib_native.so" python/ferrolm/_native.abi3.so
