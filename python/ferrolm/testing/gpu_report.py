"""The report of ``scripts/gpu-check.sh``: steps run under a time budget, each recorded with
its status, and the JSON file rewritten after every step; and its Markdown summary.

Example:
    >>> import tempfile, pathlib
    >>> report = Report(pathlib.Path(tempfile.mkdtemp(), "r.json"), "dry-run", deadline_s=60)
    >>> report.run("twice", lambda: {"two": 2}, budget_s=5)
    >>> report.status("twice"), report.data["twice"]
    ('ok', {'two': 2})
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import signal
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

logger = logging.getLogger("ferrolm.gpu_check")

__all__ = ["Report", "StepSkippedError", "StepTimeoutError", "summary"]


class StepTimeoutError(Exception):
    """A step ran past its budget."""


class StepSkippedError(Exception):
    """Raised by a step that finds it cannot run here; its message is the reason."""


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Raises :class:`StepTimeoutError` in the main thread after ``seconds`` (checked between
    bytecodes, so a long native call is interrupted when it returns)."""

    def fire(signum: int, frame: Any) -> None:
        raise StepTimeoutError(f"over its budget of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Report:
    """The JSON report, written to ``path`` (atomically) after every step."""

    def __init__(self, path: Path, mode: str, deadline_s: float) -> None:
        self.path = path
        self.start = time.monotonic()
        self.deadline = self.start + deadline_s
        self.data: dict[str, Any] = {
            "schema": 1,
            "mode": mode,
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "steps": [],
            "benches": [],
        }

    def status(self, name: str) -> Optional[str]:
        """The status of step ``name``, ``None`` if it has not run."""
        for step in self.data["steps"]:
            if step["name"] == name:
                return str(step["status"])
        return None

    def save(self) -> None:
        """Writes the report (a temporary file renamed over the old one)."""
        self.data["total_s"] = round(time.monotonic() - self.start, 3)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        os.replace(tmp, self.path)

    def run(
        self,
        name: str,
        fn: Callable[[], Any],
        *,
        budget_s: float,
        needs: tuple[str, ...] = (),
        after: tuple[str, ...] = (),
    ) -> None:
        """Runs step ``name``: skipped with the reason when a package in ``needs`` is missing,
        a step in ``after`` did not succeed or the time is up; else ``fn()``'s result goes under
        ``name`` in the report (a list of rows is appended to ``benches``)."""
        step: dict[str, Any] = {"name": name, "status": "skipped", "seconds": 0.0, "error": None}
        self.data["steps"].append(step)
        missing = [m for m in needs if importlib.util.find_spec(m) is None]
        failed = [s for s in after if self.status(s) != "ok"]
        left = self.deadline - time.monotonic()
        if missing:
            step["reason"] = f"needs {', '.join(missing)} (not installed)"
        elif failed:
            step["reason"] = f"needs step {', '.join(failed)}, which did not succeed"
        elif left < 5:
            step["reason"] = "the run's deadline has passed"
        else:
            start = time.monotonic()
            logger.info("gpu-check: %s ...", name)
            try:
                with _alarm(min(budget_s, left - 2)):
                    result = fn()
                step["status"] = "ok"
                if isinstance(result, list):
                    self.data["benches"].extend(result)
                elif result is not None:
                    self.data[name] = result
            except StepTimeoutError as e:
                step.update(status="timeout", error=str(e))
            except StepSkippedError as e:
                step["reason"] = str(e)
            except Exception as e:  # every failure is a result to record
                tail = traceback.format_exception(type(e), e, e.__traceback__)[-6:]
                step.update(status="failed", error=f"{type(e).__name__}: {e}"[:2000])
                step["traceback"] = "".join(tail)[-4000:]
            step["seconds"] = round(time.monotonic() - start, 3)
            logger.info("gpu-check: %s %s (%.1f s)", name, step["status"], step["seconds"])
        self.save()


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def summary(data: dict[str, Any]) -> str:
    """A short Markdown summary of a report."""
    env = data.get("environment", {})
    lines = [
        f"## ferrolm gpu-check ({data['mode']}): {env.get('device', '?')}",
        "",
        f"torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), python {env.get('python')}, "
        f"total {data.get('total_s', 0):.0f} s",
        "",
    ]
    stale = env.get("sources_differing_from_checkout")
    if stale:
        lines += [f"**the wheel's sources differ from the checkout's**: {', '.join(stale)}", ""]
    lines += ["| step | status | seconds | note |", "|---|---|---|---|"]
    for s in data["steps"]:
        note = (s.get("error") or s.get("reason") or "").replace("|", "/").replace("\n", " ")
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | {note[:100]} |")
    t = data.get("pytest")
    if t:
        lines += [
            "",
            f"pytest -m gpu: {t['passed']} passed, {t['failed']} failed, "
            f"{t['errors']} errors, {t['skipped']} skipped",
        ]
    rows = [r for r in data["benches"] if "speedup_vs_torch" in r]
    if rows:
        lines += ["", "| bench | case | torch | ferrolm | speedup |", "|---|---|---|---|---|"]
        lines += [
            f"| {r['bench']} | {r['case']} | {_fmt(r['torch_median_s'])} | "
            f"{_fmt(r['median_s'])} | {r['speedup_vs_torch']:.2f}x |"
            for r in rows
        ]
    for which, c in data.get("verify_curve", {}).items():
        points = ", ".join(f"{n}: {_fmt(t)}" for n, t in zip(c["sizes"], c["latency_s"]))
        size = f"{c['parameters'] / 1e9:.2f}B" if c["parameters"] > 1e8 else f"{c['parameters']:,}"
        lines += ["", f"t(n) {which} ({size} parameters, {c['dtype']}): {points}"]
    p = data.get("plan")
    if p:
        lines += [
            "",
            f"plan ({p['acceptance_kind']} acceptance): n={p['n']} d={p['d']}, "
            f"{p['tokens_per_step']:.2f} tokens/step, predicted speedup {p['speedup']:.2f}x"
            f" ({p['logits_on_device']['speedup']:.2f}x with the logits left on the device)",
        ]
    return "\n".join(lines)
