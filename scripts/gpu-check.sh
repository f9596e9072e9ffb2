#!/usr/bin/env bash
# One GPU run of ferrolm, every result in one JSON file (docs/gpu.md says how to run it on a lent
# GPU machine). On a machine with Python and a CUDA build of torch, no Rust and no network:
#   1. installs the abi3 wheel that scripts/build-wheel.sh made (dist/ferrolm-*.whl, or --wheel)
#      with `pip install --no-deps --no-index --target` into a scratch folder put first on
#      PYTHONPATH, so the machine's own torch, NumPy and transformers are used as they are
#      (not a `venv --system-site-packages`: made from an interpreter that is itself a venv's,
#      as on the lent machines, it sees the base Python's packages, not that venv's torch);
#   2. runs `python -m ferrolm.testing.gpu_check` from the installed wheel: the gpu-marked tests,
#      DivPrune and the quantizers vs torch on the GPU, t(n) of a ~1B random Llama and of a
#      ~0.25B draft, Sequoia's plan from them; a failing step is recorded and the next one runs.
# Writes $OUT/gpu-check.json when $OUT is set, else ./gpu-check.json (or --out FILE), the run's
# output beside it (gpu-check.log), and prints a Markdown summary. Exit code: 0 when every step
# that ran succeeded and no test failed.
#
# Usage: scripts/gpu-check.sh [--dry-run] [--source] [--wheel FILE] [--out FILE]
#                             [--acceptance FILE] [--only STEPS] [--skip STEPS] [--tests FILE...]
#   --dry-run     the same steps on the CPU with tiny sizes (under 2 minutes)
#   --source      no wheel: the ferrolm that $PYTHON imports, else this checkout's python/
#   --acceptance  the acceptance vector for the plan (default benches/data/qwen_acceptance.json;
#                 without it, the Sequoia demo vector shipped with ferrolm, and the JSON says so)
#   --only/--skip STEPS  comma-separated steps (environment,kernels,pytest,divprune,quantize,
#                 curve_target,curve_draft,plan); --tests FILE... (relative to the checkout)
#                 instead of every tests/ file that holds gpu tests
# Environment: PYTHON (default python3), GPU_CHECK_LIMIT_S (the driver's hard limit; default
# 450 s on a GPU, 170 s for --dry-run).
set -uo pipefail
here=$(pwd)
cd "$(dirname "$0")/.."
root=$(pwd)
# Paths given on the command line are relative to where the script was started.
abs() { case "$1" in /*) echo "$1" ;; *) echo "$here/$1" ;; esac; }
PYTHON=${PYTHON:-python3}
dry=0
source_tree=0
wheel=""
out=""
driver_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry=1; driver_args+=(--dry-run) ;;
        --source) source_tree=1 ;;
        --wheel) wheel=$(abs "$2"); shift ;;
        --out) out=$(abs "$2"); shift ;;
        --acceptance) driver_args+=("$1" "$(abs "$2")"); shift ;;
        --only|--skip) driver_args+=("$1" "$2"); shift ;;
        --tests)
            driver_args+=(--tests)
            while [ $# -gt 1 ] && [ "${2#--}" = "$2" ]; do driver_args+=("$2"); shift; done ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "gpu-check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "$out" ]; then
    if [ -n "${OUT:-}" ]; then out=$OUT/gpu-check.json; else out=$root/gpu-check.json; fi
fi
mkdir -p "$(dirname "$out")"
log=${out%.json}.log
limit=${GPU_CHECK_LIMIT_S:-$([ $dry = 1 ] && echo 170 || echo 450)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1. ferrolm: the wheel, else (--source, or no wheel / a failed install) the source tree.
how=""
install_error=""
t0=$(date +%s.%N)
if [ $source_tree = 0 ]; then
    if [ -z "$wheel" ]; then
        wheel=$(ls -t dist/ferrolm-*.whl 2>/dev/null | head -1)
    fi
    if [ -z "$wheel" ] || [ ! -f "$wheel" ]; then
        install_error="no wheel (${wheel:-dist/ferrolm-*.whl} not found): run scripts/build-wheel.sh and carry dist/"
    elif "$PYTHON" -m pip install --quiet --no-deps --no-index --no-compile \
            --disable-pip-version-check --target "$work/site" "$wheel" >"$work/pip.log" 2>&1; then
        how="wheel $(basename "$wheel") (pip install --no-deps --target)"
    elif "$PYTHON" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
            "$wheel" "$work/site" 2>>"$work/pip.log"; then
        how="wheel $(basename "$wheel") (unzipped: pip failed: $(tail -c 300 "$work/pip.log" | tr '\n' ' '))"
    else
        install_error="installing $wheel failed: $(tail -c 1000 "$work/pip.log")"
    fi
fi
if [ -n "$how" ]; then
    export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
elif "$PYTHON" -c 'import ferrolm._native' 2>/dev/null; then
    how="the ferrolm $PYTHON imports"
elif ls python/ferrolm/_native*.so >/dev/null 2>&1; then
    export PYTHONPATH="$root/python${PYTHONPATH:+:$PYTHONPATH}"
    how="this checkout's python/ (source tree)"
fi
install_s=$("$PYTHON" -c "import sys; print(round($(date +%s.%N) - $t0, 3))" 2>/dev/null || echo 0)
echo "gpu-check: ferrolm from ${how:-nowhere}${install_error:+ ($install_error)}" >&2

# 2. The driver, under a hard limit; it rewrites the JSON after every step.
export PYTHONUNBUFFERED=1
args=(--out "$out" --root "$root" --deadline-s $((limit - 30))
      --install "${how:-none}" --install-seconds "$install_s")
[ -n "$install_error" ] && args+=(--install-error "$install_error")
rm -f "$out"
timeout -k 10 "$limit" "$PYTHON" -m ferrolm.testing.gpu_check "${args[@]}" \
    ${driver_args[@]+"${driver_args[@]}"} 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

# 3. No JSON at all (ferrolm did not import, or the limit struck before the first step): write
#    one with what is known, using the standard library only.
if [ ! -s "$out" ]; then
    "$PYTHON" - "$out" "$rc" "${how:-none}" "$install_error" "$log" <<'PY'
import json, sys, time
out, rc, how, error, log = sys.argv[1:6]
tail = open(log, errors="replace").read()[-4000:]
json.dump({
    "schema": 1,
    "mode": "unknown",
    "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "install": {"how": how, "error": error or None},
    "steps": [{"name": "driver", "status": "failed", "seconds": 0.0,
               "error": f"the driver exited with {rc} before writing a report", "log": tail}],
    "benches": [],
}, open(out, "w"), indent=1)
PY
    echo "gpu-check: the driver failed (exit $rc); $out records its output" >&2
    [ "$rc" = 0 ] && rc=1
fi
exit "$rc"
