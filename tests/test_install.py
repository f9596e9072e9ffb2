"""Dependencies by need: the base install is NumPy (+ tqdm); torch and the HF stack are extras.

The fresh-virtualenv version of these checks runs on the built wheel in ``scripts/check-wheel.sh``
(CI); here the same smoke script runs in the dev environment with the optional packages hidden.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ferrolm import _optional

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = "torch,transformers,safetensors,gguf,tokenizers,accelerate"


def _toml(path: Path) -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")
    with open(path, "rb") as f:
        return tomllib.load(f)


def _pyproject() -> dict:
    return _toml(ROOT / "pyproject.toml")


def _names(requirements: list[str]) -> set[str]:
    return {r.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip() for r in requirements}


def test_base_dependencies_are_numpy_and_tqdm():
    project = _pyproject()["project"]
    assert _names(project["dependencies"]) == {"numpy", "tqdm"}
    extras = project["optional-dependencies"]
    assert _names(extras["torch"]) == {"torch"}
    assert {"transformers", "safetensors", "gguf"} <= _names(extras["hf"])
    assert extras["all"] == ["ferrolm[torch,hf]"]
    # Not in the base: ferrolm never imports it, but transformers needs it to load GGUF models.
    assert "accelerate" in _names(extras["hf"])


def test_every_optional_package_has_an_extra():
    extras = _pyproject()["project"]["optional-dependencies"]
    distribution = {"PIL": "pillow"}  # import names that differ from the name pip installs
    for package, extra in _optional.EXTRAS.items():
        assert distribution.get(package, package) in _names(extras[extra]), (package, extra)


def test_base_features_work_and_extras_are_named_without_torch_or_hf():
    # A subprocess, so that hiding the packages cannot disturb this interpreter's imports.
    r = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "install_smoke.py"), "--hide", HIDDEN],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    for label in (
        "speculative.sequoia_dp",
        "speculative.TreeBuilder",
        "prune.divprune(ndarray)",
        "comm.quantize/dequantize(ndarray)",
        "tokens.scan",
        "cuda.kernel_names",
    ):
        assert f"ok   {label}" in r.stdout, r.stdout
    assert r.stdout.count("ImportError naming [torch]") == 6, r.stdout


def test_require_names_the_extra_and_keeps_other_import_errors(monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf now fails as if not installed
    with pytest.raises(ImportError, match=r"pip install 'ferrolm\[hf\]'") as e:
        _optional.require("gguf", "reading GGUF weights")
    assert e.value.name == "gguf"
    assert "reading GGUF weights needs `gguf`" in str(e.value)
    # A missing module that is not the optional package itself (a broken install) is not
    # disguised as a missing extra.
    with pytest.raises(ModuleNotFoundError, match="_ferrolm_missing_") as e:
        _optional.require("numpy._ferrolm_missing_")
    assert "pip install" not in str(e.value)
    assert _optional.require("numpy").__name__ == "numpy"


def test_is_tensor_does_not_import_torch():
    code = (
        "import sys, numpy as np; from ferrolm._optional import is_tensor; "
        "assert not is_tensor(np.zeros(2)); assert 'torch' not in sys.modules; "
        "import torch; assert is_tensor(torch.zeros(2)); print('ok')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "ok", r.stderr


def test_lazy_names_are_the_functions_not_the_submodules():
    # `speculative.profile` is both a function and the submodule defining it.
    from ferrolm import comm, prune, speculative

    assert callable(speculative.profile)
    assert not isinstance(speculative.profile, type(sys))
    assert speculative.SpeculativeGenerator.__name__ == "SpeculativeGenerator"
    assert comm.all_reduce.__module__ == "ferrolm.comm.allreduce"
    assert prune.apply_to_llava.__module__ == "ferrolm.prune.llava"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = speculative.nope


def test_build_requirements_equal_the_build_extra():
    lines = (ROOT / "requirements" / "build.txt").read_text().splitlines()
    listed = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    assert listed == _pyproject()["project"]["optional-dependencies"]["build"]


def _floors() -> dict[str, str]:
    """`name -> floor` for every `name>=floor` requirement of the base and the extras."""
    project = _pyproject()["project"]
    floors = {"python": project["requires-python"].removeprefix(">=")}
    for reqs in [project["dependencies"], *project["optional-dependencies"].values()]:
        for req in reqs:
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)>=([^,<]+)(,<.*)?", req)
            if m:
                floors[m[1].lower()] = m[2]
    return floors


def _one_line(text: str) -> str:
    return " ".join(text.split())


def test_readme_names_the_declared_floors_it_says_are_tested():
    readme = _one_line((ROOT / "README.md").read_text())
    floors = _floors()
    tested = (
        f"CPython {floors['python']}, NumPy {floors['numpy']}, torch {floors['torch']}, "
        f"transformers {floors['transformers']}"
    )
    assert tested in readme, tested
    assert f"CPython {floors['python']}+" in readme
    # test-floors.sh pins the floors of the base, torch, hf and test requirements.
    script = (ROOT / "scripts" / "test-floors.sh").read_text()
    assert 'extras["torch"] + extras["hf"] + extras["test"]' in script


def test_readme_quick_start_installs_the_wheel_the_build_makes_and_runs_the_ci_tests():
    readme = (ROOT / "README.md").read_text()
    version = _toml(ROOT / "Cargo.toml")["workspace"]["package"]["version"]
    # The tag scripts/build-wheel.sh gives (--compatibility manylinux_2_28, abi3 from 3.9).
    wheel = f"ferrolm-{version}-cp39-abi3-manylinux_2_28_x86_64.whl"
    assert re.search(rf"^pip install '{re.escape(wheel)}\[all\]'", readme, re.M), wheel
    assert "--compatibility manylinux_2_28" in (ROOT / "scripts" / "build-wheel.sh").read_text()
    assert re.search(r"^bash scripts/setup.sh && ", readme, re.M)
    # The README's test command is the one .ci/run ends with.
    ci = (ROOT / ".ci" / "run").read_text()
    command = r"\.venv/bin/python -m pytest -n 2 --dist loadfile"
    assert re.search(rf"^{command} +#", readme, re.M)
    assert re.search(rf"^{command}$", ci, re.M)
