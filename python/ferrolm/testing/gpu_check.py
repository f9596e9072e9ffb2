"""The driver of ``scripts/gpu-check.sh``: one GPU run, every result in one JSON file.

It runs the ``gpu``-marked tests, then the GPU benches of :mod:`ferrolm.testing.gpu_benches`
(DivPrune and the quantizers against torch on the device, t(n) of a ~1B random Llama and of a
~0.25B draft, Sequoia's plan from them), each as a step with a time budget. A failing step is
recorded (status, seconds, error) and the next one runs; the JSON is rewritten after every
step, so a run cut short still leaves what it measured. ``--dry-run`` runs the same steps on
the CPU with tiny sizes. ``docs/gpu.md`` says how to run it on a lent GPU machine.

Run as ``python -m ferrolm.testing.gpu_check [--dry-run] [--out FILE]`` from the root of a
checkout (for ``tests/`` and ``benches/data/``); the script sets up the import of the wheel.

Example:
    >>> _counts({"tests": "3", "failures": "1", "errors": "0", "skipped": "1"})["passed"]
    1
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any, Callable, Optional

from ferrolm.testing.gpu_report import Report, StepSkippedError, summary

__all__ = ["STEPS", "gpu_test_files", "main", "run_pytest"]

#: Steps in the order they run; ``--only``/``--skip`` take these names.
STEPS = (
    "environment",
    "kernels",
    "pytest",
    "divprune",
    "quantize",
    "curve_target",
    "curve_draft",
    "plan",
)
_PACKAGES = (
    "numpy",
    "torch",
    "transformers",
    "tqdm",
    "pytest",
    "pytest-benchmark",
    "hypothesis",
    "scipy",
    "safetensors",
)
# Seconds per step on an H100/H200 (a step over its budget is stopped and recorded as a
# timeout); the whole run stays under 8 minutes with the script's set-up.
_BUDGET_GPU = {"kernels": 60, "pytest": 200, "divprune": 40, "quantize": 40, "curve": 70}
_BUDGET_DRY = {"kernels": 60, "pytest": 90, "divprune": 20, "quantize": 20, "curve": 30}


def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _nvidia_smi() -> Optional[str]:
    query = "--query-gpu=name,driver_version,memory.total,clocks.max.sm"
    try:
        out = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _differing_sources(installed: Path, checkout: Path) -> list[str]:
    """The ``.py`` files of the package that differ between the import and the checkout (a
    wheel built from another commit than the tests it runs with)."""
    if installed.resolve() == checkout.resolve() or not checkout.is_dir():
        return []
    names = {p.relative_to(d).as_posix() for d in (installed, checkout) for p in d.rglob("*.py")}
    return sorted(
        n
        for n in names
        if not (installed / n).is_file()
        or not (checkout / n).is_file()
        or (installed / n).read_bytes() != (checkout / n).read_bytes()
    )


def environment(device: str, root: Path) -> dict[str, Any]:
    """Python, packages, torch's CUDA build, the device, where ferrolm was imported from and
    which of its sources differ from the checkout's."""
    import ferrolm

    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": {name: _version(name) for name in _PACKAGES},
        "ferrolm_version": _version("ferrolm"),
        "ferrolm_file": ferrolm.__file__,
        "sources_differing_from_checkout": _differing_sources(
            Path(ferrolm.__file__).parent, root / "python" / "ferrolm"
        ),
        "nvidia_smi": _nvidia_smi(),
    }
    if importlib.util.find_spec("torch") is None:
        return env
    import torch

    env.update(
        torch=torch.__version__,
        torch_cuda=torch.version.cuda,
        cudnn=getattr(torch.backends.cudnn, "version", lambda: None)(),
        torch_threads=torch.get_num_threads(),
        cuda_available=torch.cuda.is_available(),
    )
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(
            device=props.name,
            capability=f"{props.major}.{props.minor}",
            device_memory_gib=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
            device_count=torch.cuda.device_count(),
        )
    else:
        env["device"] = "cpu"
    return env


def kernels(device: str) -> dict[str, Any]:
    """NVRTC, the driver, and every kernel family compiled (for the device's own architecture
    too when there is a GPU). Skipped on a CPU without NVRTC; on a GPU that is a failure."""
    import ferrolm.cuda

    if device == "cpu" and not ferrolm.cuda.nvrtc_available():
        raise StepSkippedError("NVRTC not found (a CPU-only torch): nothing to compile with")
    out: dict[str, Any] = {
        "driver": ferrolm.cuda.driver_available(),
        "gpus": ferrolm.cuda.device_count(),
        "nvrtc": ferrolm.cuda.nvrtc_path(),
        "ferrolm_cuda_available": ferrolm.cuda.is_available(),
    }
    out["compiled"] = {k.name: k.ptx_bytes for k in ferrolm.cuda.compile_check()}
    if device == "cuda":
        import torch

        major, minor = torch.cuda.get_device_capability(0)
        arch = f"compute_{major}{minor}"
        out[arch] = {k.name: k.ptx_bytes for k in ferrolm.cuda.compile_check(arch)}
        if not out["ferrolm_cuda_available"]:
            raise RuntimeError(f"ferrolm.cuda.is_available() is False: {out}")
    return out


def gpu_test_files(root: Path) -> list[str]:
    """The files of ``tests/`` that hold ``gpu``-marked tests (so that a module the GPU
    machine cannot import elsewhere in ``tests/`` does not stop the collection)."""
    marked = re.compile(r"pytest\.mark\.gpu\b")
    return sorted(
        str(p.relative_to(root))
        for p in (root / "tests").glob("test_*.py")
        if marked.search(p.read_text(encoding="utf-8"))
    )


def _counts(attrs: dict[str, str]) -> dict[str, int]:
    c = {k: int(attrs.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    return {
        "total": c["tests"],
        "passed": c["tests"] - c["failures"] - c["errors"] - c["skipped"],
        "failed": c["failures"],
        "errors": c["errors"],
        "skipped": c["skipped"],
    }


def run_pytest(root: Path, files: list[str], timeout_s: float) -> dict[str, Any]:
    """``pytest -m gpu`` over ``files`` in a subprocess; counts and each failure from its
    JUnit XML."""
    if not files:
        raise RuntimeError("no test file under tests/ holds a gpu-marked test")
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "gpu",
            *files,
            "-p",
            "no:cacheprovider",
            "-q",
            "-rs",
            "--continue-on-collection-errors",
            f"--junitxml={xml}",
        ]
        start = time.monotonic()
        proc = subprocess.run(
            cmd, cwd=root, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        out: dict[str, Any] = {
            "command": " ".join(["python", *cmd[1:-1]]),
            "files": files,
            "returncode": proc.returncode,
            "seconds": round(time.monotonic() - start, 3),
            "output_tail": (proc.stdout + proc.stderr)[-3000:],
        }
        if not xml.is_file():
            raise RuntimeError(f"pytest wrote no report (exit {proc.returncode}): {out}")
        suite = ElementTree.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite[0]
    out.update(_counts(dict(suite.attrib)))
    out["failures"] = []
    skips: dict[str, int] = {}
    for case in suite.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        for child in case:
            message = (child.get("message") or child.text or "")[:500]
            if child.tag in ("failure", "error"):
                out["failures"].append({"test": name, "kind": child.tag, "message": message})
            elif child.tag == "skipped":
                skips[message] = skips.get(message, 0) + 1
    out["skip_reasons"] = skips
    return out


def _device(dry_run: bool) -> Any:
    import torch

    if dry_run:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(f"torch {torch.__version__} sees no CUDA device")
    return torch.device("cuda", 0)


def run_all(args: argparse.Namespace) -> Report:
    """Runs the selected steps and returns the saved report."""
    from ferrolm.testing import gpu_benches as gb

    root = Path(args.root).resolve()
    dry = bool(args.dry_run)
    sizes = gb.DRY_RUN if dry else gb.GPU
    if dry:
        import torch

        # Tiny sizes on a shared CPU: a second thread only adds waits at its barriers.
        torch.set_num_threads(1)
    budget = _BUDGET_DRY if dry else _BUDGET_GPU
    device_kind = "cpu" if dry else "cuda"
    report = Report(Path(args.out), "dry-run" if dry else "gpu", args.deadline_s)
    report.data["install"] = {
        "how": args.install,
        "seconds": args.install_seconds,
        "error": args.install_error,
    }
    only = set(args.only.split(",")) if args.only else set(STEPS)
    skip = set(args.skip.split(",")) if args.skip else set()
    wanted = only - skip
    curves: dict[str, Any] = {}
    report.data["verify_curve"] = curves
    rows: list[dict[str, Any]] = report.data["benches"]

    def curve(which: str) -> Callable[[], None]:
        def go() -> None:
            cfg = sizes.target if which == "target" else sizes.draft
            ns = sizes.curve_sizes if which == "target" else sizes.draft_sizes
            ctx, reps = sizes.context, sizes.repeats
            device = _device(dry)
            curves[which] = gb.verify_curve(cfg, device, sizes.dtype, ns, context=ctx, repeats=reps)

        return go

    def bench(rows_of: Callable[..., object]) -> Callable[[], None]:
        def go() -> None:
            # Rows go straight into the report: a step stopped half-way keeps what it measured.
            rows_of(sizes, _device(dry), rows)

        return go

    def plan() -> dict[str, Any]:
        acceptance = gb.load_acceptance(Path(args.acceptance))
        report.data["acceptance"] = acceptance
        return gb.plans(acceptance, curves["target"], curves["draft"], sizes.max_depth)

    steps: dict[str, tuple[Callable[[], Any], float, tuple[str, ...], tuple[str, ...]]] = {
        "environment": (lambda: environment(device_kind, root), 60, (), ()),
        "kernels": (lambda: kernels(device_kind), budget["kernels"], (), ()),
        "pytest": (
            lambda: run_pytest(root, args.tests or gpu_test_files(root), budget["pytest"] - 5),
            budget["pytest"],
            ("pytest", "torch"),
            (),
        ),
        "divprune": (
            bench(gb.divprune_rows),
            budget["divprune"],
            ("torch",),
            (),
        ),
        "quantize": (
            bench(gb.quantize_rows),
            budget["quantize"],
            ("torch",),
            (),
        ),
        "curve_target": (curve("target"), budget["curve"], ("torch", "transformers"), ()),
        "curve_draft": (curve("draft"), budget["curve"], ("torch", "transformers"), ()),
        "plan": (plan, 30, (), ("curve_target", "curve_draft")),
    }
    for name in STEPS:
        if name in wanted:
            fn, seconds, needs, after = steps[name]
            report.run(name, fn, budget_s=seconds, needs=needs, after=after)
    report.data["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    report.save()
    return report


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m ferrolm.testing.gpu_check", description=__doc__)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes")
    default_out = Path(os.environ["OUT"], "gpu-check.json") if os.environ.get("OUT") else None
    ap.add_argument("--out", default=default_out or Path("gpu-check.json"), type=Path)
    ap.add_argument("--root", default=".", help="the checkout (tests/, benches/data/)")
    ap.add_argument("--acceptance", default="benches/data/qwen_acceptance.json")
    ap.add_argument("--only", default="", help=f"comma-separated steps of {', '.join(STEPS)}")
    ap.add_argument("--skip", default="", help="comma-separated steps not to run")
    ap.add_argument("--tests", nargs="*", default=None, help="test files (default: gpu-marked)")
    ap.add_argument("--deadline-s", type=float, default=420.0, help="stop starting steps after")
    ap.add_argument("--install", default="the interpreter's own ferrolm", help=argparse.SUPPRESS)
    ap.add_argument("--install-seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--install-error", default=None, help=argparse.SUPPRESS)
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    """Runs the check; exit code 0 when every step that ran succeeded and no test failed."""
    args = _parser().parse_args(argv)
    # This is the script's entry point: it owns stdout (the summary) and stderr (progress).
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s", force=True)
    unknown = {s for s in (args.only + "," + args.skip).split(",") if s} - set(STEPS)
    if unknown:
        sys.stderr.write(f"gpu-check: unknown steps {sorted(unknown)}; steps: {STEPS}\n")
        return 2
    report = run_all(args)
    sys.stdout.write(summary(report.data) + f"\n\ngpu-check: report written to {report.path}\n")
    bad = [s["name"] for s in report.data["steps"] if s["status"] in ("failed", "timeout")]
    tests = report.data.get("pytest") or {}
    return 1 if bad or tests.get("failed") or tests.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
