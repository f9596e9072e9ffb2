"""scripts/gpu-check.sh: its dry run on this CPU end to end, and the JSON it writes.

The dry run takes the same steps as a GPU run with tiny sizes; these tests check that every
step succeeds and that what the report holds is real: pytest's counts, bench rows with both
sides of each comparison, a t(n) curve that grows with n, and a plan that is the planner's
optimum over the recorded curve (re-solved here from the recorded acceptance vector).
"""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import ferrolm.cuda
from ferrolm import speculative
from ferrolm.testing import gpu_benches, gpu_check, gpu_report

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu-check.sh"


def _script(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "OUT"}
    full.update({"PYTHON": sys.executable, **(env or {})})
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


# The dry run (about 20 s on two quiet cores) is shared by the tests that read its report.
@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any], float]:
    out = tmp_path_factory.mktemp("gpu-check") / "report.json"
    start = time.monotonic()
    # One small gpu-marked test file keeps the nested pytest short; the GPU run takes them all.
    proc = _script(["--dry-run", "--source", "--out", str(out), "--tests", "tests/test_cuda.py"])
    seconds = time.monotonic() - start
    assert out.is_file(), proc.stdout + proc.stderr
    return proc, json.loads(out.read_text()), seconds


@pytest.mark.slow
def test_dry_run_passes_end_to_end(dry_run: tuple[Any, dict[str, Any], float]) -> None:
    proc, report, seconds = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert seconds < 120
    assert report["mode"] == "dry-run"
    assert [s["name"] for s in report["steps"]] == list(gpu_check.STEPS)
    status = {s["name"]: s["status"] for s in report["steps"]}
    if not ferrolm.cuda.nvrtc_available():  # nothing to compile the kernels with
        assert status.pop("kernels") == "skipped"
    bad = {name: s for name, s in status.items() if s != "ok"}
    assert not bad, report["steps"]
    assert all(s["seconds"] >= 0 for s in report["steps"])
    assert report["install"]["error"] is None
    assert report["install"]["how"] != "none"
    env = report["environment"]
    assert env["torch"] == torch.__version__
    assert env["packages"]["torch"]
    assert env["packages"]["numpy"]
    assert (
        Path(env["ferrolm_file"]).resolve()
        == Path(ferrolm.cuda.__file__).parent.joinpath("__init__.py").resolve()
    )
    assert env["sources_differing_from_checkout"] == []
    assert "## ferrolm gpu-check (dry-run)" in proc.stdout
    assert "| curve_target | ok |" in proc.stdout


@pytest.mark.slow
def test_dry_run_records_the_pytest_counts(dry_run: tuple[Any, dict[str, Any], float]) -> None:
    t = dry_run[1]["pytest"]
    assert t["files"] == ["tests/test_cuda.py"]
    assert t["total"] >= 2
    assert t["failed"] == 0
    assert t["errors"] == 0
    assert t["passed"] + t["skipped"] == t["total"]
    if not ferrolm.cuda.is_available():
        assert t["skipped"] == t["total"]
        assert all("needs a CUDA GPU" in reason for reason in t["skip_reasons"])


def _pairs(rows: list[dict[str, Any]], bench: str) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        if r["bench"] == bench:
            out.setdefault(r["case"], {})[r["impl"]] = r
    return out


@pytest.mark.slow
def test_dry_run_bench_rows_compare_both_sides(dry_run: tuple[Any, dict[str, Any], float]) -> None:
    rows = dry_run[1]["benches"]
    for r in rows:
        assert 0 < r["min_s"] <= r["median_s"] < 10
        assert r["repeats"] == gpu_benches.DRY_RUN.repeats
    prune = _pairs(rows, "divprune")
    assert len(prune) == len(gpu_benches.DRY_RUN.divprune)
    for pair in prune.values():
        ours, theirs = pair["ferrolm"], pair["torch"]
        assert ours["speedup_vs_torch"] == pytest.approx(theirs["median_s"] / ours["median_s"])
        assert ours["same_tokens_as_torch"] == "2/2"
        assert ours["objective"] == pytest.approx(ours["objective_torch"], abs=1e-5)
        assert all(0 < v <= 2 for v in ours["objective"])
    for bench in ("quantize", "dequantize_accumulate"):
        pairs = _pairs(rows, bench)
        assert {case.split("-")[0] for case in pairs} == {"minmax", "blockwise", "intellect"}
        assert all(set(pair) == {"torch", "ferrolm"} for pair in pairs.values())
    for case, pair in _pairs(rows, "quantize").items():
        # Same codes as the torch ops but for values on a rounding boundary.
        assert pair["ferrolm"]["codes_equal_torch"] >= 0.999, case
        ours = pair["ferrolm"]
        if case.startswith("intellect"):  # a grid of +-3 RMS: outliers clamp
            assert 0 < ours["rel_l2_decode_error"] < 0.05, case
        else:  # half a step of (max - min) / 255
            assert 0 < ours["max_abs_decode_error"] < 0.1, case


@pytest.mark.slow
def test_dry_run_verify_curves_grow_with_n(dry_run: tuple[Any, dict[str, Any], float]) -> None:
    curves = dry_run[1]["verify_curve"]
    sizes = gpu_benches.DRY_RUN
    assert curves["target"]["sizes"] == list(sizes.curve_sizes)
    assert curves["draft"]["sizes"] == list(sizes.draft_sizes)
    assert curves["target"]["parameters"] > 5 * curves["draft"]["parameters"] > 0
    for c in curves.values():
        lat = c["latency_s"]
        assert len(c["logits_to_host_s"]) == len(lat)
        assert all(0 <= t < 1 for t in c["logits_to_host_s"])
        assert c["context"] == sizes.context
        assert c["dtype"] == "float32"
        assert all(math.isfinite(t) and 0 < t < 10 for t in lat)
    lat = curves["target"]["latency_s"]
    # A 16- or 64-token tree costs several single-token steps of this model: noise on a shared
    # CPU can swap neighbours, not turn the whole curve around.
    assert max(lat[2:]) > min(lat[:2])


@pytest.mark.slow
def test_dry_run_plan_is_the_planners_optimum(dry_run: tuple[Any, dict[str, Any], float]) -> None:
    report = dry_run[1]
    plan, acc = report["plan"], report["acceptance"]
    target, draft = report["verify_curve"]["target"], report["verify_curve"]["draft"]
    demo = ROOT / "benches" / "data" / "qwen_acceptance.json"
    if demo.is_file():
        assert acc["kind"] == "file"
        assert plan["acceptance_kind"] == "file"
    else:
        assert acc["kind"] == plan["acceptance_kind"] == "sequoia-demo"
        shipped = resources.files("ferrolm.speculative") / "sequoia_acceptance_vector.txt"
        with resources.as_file(shipped) as path:
            assert acc["acceptance"] == speculative.load_acceptance_vector(path).tolist()
    sizes, t_verify = target["sizes"], target["latency_s"]
    assert plan["n"] in sizes
    assert 0 <= plan["d"] <= gpu_benches.DRY_RUN.max_depth
    assert plan["t_autoregressive_s"] == t_verify[0]
    assert plan["t_verify_s"] == t_verify[sizes.index(plan["n"])]
    widths, t_widths = draft["sizes"], draft["latency_s"]

    def draft_cost(n: int, d: int) -> float:
        if d == 0:
            return 0.0
        levels = speculative.draft_level_widths(table, n, d)
        return float(np.interp(levels, widths, t_widths).sum())

    table = speculative.sequoia_dp(acc["acceptance"], max(sizes), plan["max_depth"])
    assert plan["level_widths"] == (
        speculative.draft_level_widths(table, plan["n"], plan["d"]).tolist() if plan["d"] else []
    )
    assert sum(plan["t_draft_levels_s"]) == pytest.approx(draft_cost(plan["n"], plan["d"]))
    assert plan["s_per_token"] == pytest.approx(
        (sum(plan["t_draft_levels_s"]) + plan["t_verify_s"]) / plan["tokens_per_step"]
    )
    assert plan["speedup"] == pytest.approx(plan["t_autoregressive_s"] / plan["s_per_token"])
    # No measured size and depth beats the plan, each priced at its own level widths.
    f = table.values()
    assert plan["tokens_per_step"] == pytest.approx(f[plan["n"], plan["d"]])
    best = min(
        (draft_cost(n, d) + tv) / f[n, d]
        for n, tv in zip(sizes, t_verify)
        for d in range(plan["max_depth"] + 1)
        if f[n, d] > 0
    )
    assert plan["s_per_token"] == pytest.approx(best)
    alt = plan["logits_on_device"]
    assert alt["n"] in sizes
    assert alt["speedup"] == pytest.approx(alt["t_autoregressive_s"] / alt["s_per_token"])
    parents = np.asarray(plan["tree_parents"])
    assert len(parents) == plan["n"]
    assert parents[0] == -1
    assert speculative.tree_value(acc["acceptance"], parents) == pytest.approx(
        plan["tokens_per_step"]
    )


def test_a_driver_that_cannot_start_still_leaves_a_report_in_out(tmp_path: Path) -> None:
    wrapper = tmp_path / "python"
    wrapper.write_text(
        "#!/bin/sh\n"
        'case "$*" in *ferrolm.testing.gpu_check*) echo "ImportError: no ferrolm" >&2; exit 3;; '
        "esac\n"
        f'exec {sys.executable} "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    out = tmp_path / "out"
    proc = _script(
        ["--wheel", str(tmp_path / "missing.whl")], {"PYTHON": str(wrapper), "OUT": str(out)}
    )
    assert proc.returncode == 3
    assert "ImportError: no ferrolm" in (out / "gpu-check.log").read_text()
    report = json.loads((out / "gpu-check.json").read_text())
    assert "missing.whl not found" in report["install"]["error"]
    (step,) = report["steps"]
    assert step["status"] == "failed"
    assert "ImportError: no ferrolm" in step["log"]


def test_failed_and_overdue_steps_are_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    report = gpu_report.Report(tmp_path / "r.json", "dry-run", deadline_s=60)

    def boom() -> None:
        raise ValueError("broken on purpose")

    def cannot() -> None:
        raise gpu_report.StepSkippedError("not here")

    report.run("a", boom, budget_s=10)
    report.run("b", lambda: time.sleep(5), budget_s=0.3)
    report.run("c", lambda: {"x": 1}, budget_s=10)
    report.run("d", lambda: None, budget_s=10, after=("a", "c"))
    report.run("e", lambda: None, budget_s=10, needs=("no_such_module_here",))
    report.run("f", cannot, budget_s=10)

    def half_way() -> None:
        report.data["benches"].append({"bench": "first"})
        time.sleep(5)

    report.run("g", half_way, budget_s=0.3)
    saved = json.loads((tmp_path / "r.json").read_text())
    status = {s["name"]: s for s in saved["steps"]}
    assert status["a"]["status"] == "failed"
    assert "ValueError: broken" in status["a"]["error"]
    assert "boom" in status["a"]["traceback"]
    assert status["b"]["status"] == "timeout"
    assert status["b"]["seconds"] < 3
    assert status["c"]["status"] == "ok"
    assert saved["c"] == {"x": 1}
    assert status["d"]["status"] == "skipped"
    assert "a" in status["d"]["reason"]
    assert "no_such_module_here" in status["e"]["reason"]
    assert status["f"]["status"] == "skipped"
    assert status["f"]["reason"] == "not here"
    assert status["g"]["status"] == "timeout"
    assert saved["benches"] == [{"bench": "first"}]
    assert gpu_check.main(["--only", "nope"]) == 2


def test_gpu_test_files_are_the_marked_ones() -> None:
    files = gpu_check.gpu_test_files(ROOT)
    assert "tests/test_cuda.py" in files
    assert "tests/test_comm_gpu.py" in files
    assert "tests/test_gpu_check.py" not in files
    assert "tests/test_layout.py" not in files


def test_acceptance_files(tmp_path: Path) -> None:
    listed = tmp_path / "a.json"
    listed.write_text("[0.5, 0.25]")
    assert gpu_benches.load_acceptance(listed)["acceptance"] == [0.5, 0.25]
    described = tmp_path / "b.json"
    described.write_text(json.dumps({"acceptance": [0.7, 0.1], "pair": "qwen 0.5b -> 1.5b"}))
    got = gpu_benches.load_acceptance(described)
    assert got["kind"] == "file"
    assert got["meta"] == {"pair": "qwen 0.5b -> 1.5b"}
    sequoia = tmp_path / "c.txt"
    sequoia.write_text("0.0 0.6 0.2\n")
    assert gpu_benches.load_acceptance(sequoia)["acceptance"] == [0.6, 0.2]
    missing = gpu_benches.load_acceptance(tmp_path / "none.json")
    assert missing["kind"] == "sequoia-demo"
    assert "none.json not found" in missing["reason"]
    for bad in ("[0.8, 0.4]", "[]", '{"p": [0.5]}', "[-0.1]"):
        listed.write_text(bad)
        with pytest.raises(ValueError, match=r"a\.json"):
            gpu_benches.load_acceptance(listed)


def test_a_wheel_from_another_commit_is_named(tmp_path: Path) -> None:
    installed, checkout = tmp_path / "site" / "ferrolm", tmp_path / "python" / "ferrolm"
    for root in (installed, checkout):
        (root / "testing").mkdir(parents=True)
        (root / "__init__.py").write_text("x = 1\n")
        (root / "_native.abi3.so").write_bytes(b"\0")
    (installed / "testing" / "old.py").write_text("")
    (checkout / "testing" / "new.py").write_text("")
    assert gpu_check._differing_sources(installed, checkout) == ["testing/new.py", "testing/old.py"]
    (checkout / "__init__.py").write_text("x = 2\n")
    assert "__init__.py" in gpu_check._differing_sources(installed, checkout)
    assert gpu_check._differing_sources(checkout, checkout) == []


def test_the_gpu_models_have_the_sizes_they_claim() -> None:
    # Built on the meta device: the shapes without the memory.
    meta = torch.device("meta")
    target = gpu_benches.random_llama(gpu_benches.GPU.target, meta, torch.bfloat16)
    draft = gpu_benches.random_llama(gpu_benches.GPU.draft, meta, torch.bfloat16)
    assert {p.dtype for p in target.parameters()} == {torch.bfloat16}
    assert sum(p.numel() for p in target.parameters()) == pytest.approx(1.236e9, rel=1e-3)
    assert sum(p.numel() for p in draft.parameters()) == pytest.approx(0.253e9, rel=1e-3)
    assert torch.get_default_dtype() == torch.float32


def test_the_gpu_plan_at_full_size_prices_each_draft_level_at_its_width() -> None:
    sizes = list(gpu_benches.GPU.curve_sizes)
    widths = list(gpu_benches.GPU.draft_sizes)
    # The shape of a memory-bound GPU: a 256-token tree costs about twice one token.
    target = {
        "sizes": sizes,
        "latency_s": [0.012 + 5e-5 * n for n in sizes],
        "logits_to_host_s": [2e-5 * n for n in sizes],
    }
    draft = {"sizes": widths, "latency_s": [0.004 + 1e-5 * n for n in widths]}
    acc = gpu_benches.load_acceptance(Path("no-such-file.json"))
    start = time.monotonic()
    plan = gpu_benches.plans(acc, target, draft, gpu_benches.GPU.max_depth)
    assert time.monotonic() - start < 5
    assert plan["max_nodes"] == 256
    assert plan["d"] >= 1
    assert plan["speedup"] > 1
    depth = np.zeros(plan["n"], dtype=int)
    for i, parent in enumerate(plan["tree_parents"][1:], start=1):
        depth[i] = depth[parent] + 1
    # Level widths: the root, then the nodes of each level 1..d-1 that have children.
    has_kids = np.zeros(plan["n"], dtype=bool)
    has_kids[[q for q in plan["tree_parents"][1:]]] = True
    expected = [1] + [int((has_kids & (depth == k)).sum()) for k in range(1, plan["d"])]
    assert plan["level_widths"] == expected
    assert plan["draft_width"] == max(expected)
    assert plan["t_draft_levels_s"] == pytest.approx([0.004 + 1e-5 * w for w in expected])
    # Without the copy of the logits, verification is cheaper: never a worse plan.
    assert plan["logits_on_device"]["speedup"] >= plan["speedup"] * 0.999


# t(n) and t(w) as gpu-check measured them on an H200 (bf16, context 256, median of 7,
# 2026-12-04): copying n x 128256 float32 logits to the host jumps from 2.6 ms at n = 64 to 41 ms
# at n = 96, so the draft's t(w) jumps too. Pricing a tree's draft at the widest level of the
# tree chosen before, and stopping when that width stopped growing, planned no speculation
# (1.00x) on the logits-on-device curves; each tree priced at its own widths plans a speedup.
H200_SIZES = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256]
H200_TARGET_MS = [
    18.08,
    18.55,
    18.62,
    17.65,
    18.60,
    19.00,
    18.99,
    19.23,
    20.85,
    20.03,
    28.78,
    20.99,
    61.19,
    76.03,
    104.60,
    132.66,
]
H200_HOST_MS = [
    0.081,
    0.130,
    0.189,
    0.224,
    0.310,
    0.394,
    0.558,
    0.715,
    1.037,
    1.332,
    1.974,
    2.589,
    40.89,
    55.68,
    85.11,
    112.84,
]
H200_DRAFT_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
H200_DRAFT_MS = [8.92, 9.55, 9.92, 10.0, 10.4, 10.6, 12.2, 71.0, 124.0]


def test_the_gpu_plan_on_the_h200_curves_speculates_with_logits_on_the_device() -> None:
    target = {
        "sizes": H200_SIZES,
        "latency_s": [t / 1e3 for t in H200_TARGET_MS],
        "logits_to_host_s": [t / 1e3 for t in H200_HOST_MS],
    }
    draft = {"sizes": H200_DRAFT_SIZES, "latency_s": [t / 1e3 for t in H200_DRAFT_MS]}
    acc = gpu_benches.load_acceptance(ROOT / "benches" / "data" / "qwen_acceptance.json")
    plan = gpu_benches.plans(acc, target, draft, gpu_benches.GPU.max_depth)
    on_device = plan["logits_on_device"]
    assert plan["d"] >= 1
    assert plan["speedup"] > 1.2
    assert on_device["d"] >= 1
    assert on_device["speedup"] >= plan["speedup"]
    # Every level's draft forward is priced at that level's width, under the jump.
    assert max(plan["level_widths"]) <= 64


def test_the_wheel_is_installed_where_the_run_imports_it(tmp_path: Path) -> None:
    # CI builds the wheel before the tests (scripts/build-wheel.sh); elsewhere there may be none.
    wheels = sorted((ROOT / "dist").glob("ferrolm-*.whl"))
    if not wheels:
        pytest.skip("no dist/ferrolm-*.whl: run scripts/build-wheel.sh")
    out = tmp_path / "gpu-check.json"
    env = {"PYTHONPATH": ""}  # only the wheel can provide ferrolm
    proc = _script(["--dry-run", "--only", "environment", "--out", str(out)], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["install"]["how"].startswith("wheel ferrolm-")
    assert "pip install --no-deps --target" in report["install"]["how"]
    site = Path(report["environment"]["ferrolm_file"]).parent.parent
    assert site.name == "site"
    assert not site.is_dir()  # the scratch folder is removed after the run
