"""Hostile-input probes run in a child process, so that an abort or a hang fails a test
instead of killing the test runner.

Each probe is a Python expression evaluated in one child (after a setup block); the child
reports, per probe, the exception class and message it raised (if any), the seconds it took
and how much its peak resident memory grew. The child runs under an address-space limit, so a
probe that asks for more memory than it should fails there rather than on the machine.

Example:
    >>> out = run_probes("import math", {"bad": "math.sqrt(-1)", "ok": "math.sqrt(4)"})
    >>> out["bad"].exc, out["ok"].exc
    ('ValueError', None)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

__all__ = ["Probe", "interrupt_after", "run_probes"]

_CHILD = r"""
import json, resource, sys, time
limit = int(sys.argv[1])
if limit:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
exec(sys.argv[2])
probes = json.loads(sys.argv[3])
for name, expr in probes.items():
    print(json.dumps({"start": name}), flush=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    exc, msg = None, ""
    try:
        eval(expr)
    except BaseException as e:
        exc, msg = type(e).__name__, str(e)
    seconds = time.perf_counter() - t
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    print(json.dumps({"name": name, "exc": exc, "msg": msg, "seconds": seconds,
                      "grown_bytes": grown}), flush=True)
"""


@dataclass
class Probe:
    """What one probe did in the child."""

    exc: str | None
    """The class name of the exception it raised, or ``None``."""
    msg: str
    """The exception's message (empty without one)."""
    seconds: float
    """Wall-clock time of the call."""
    grown_bytes: int
    """Growth of the child's peak resident memory during the call."""


def run_probes(
    setup: str,
    probes: dict[str, str],
    *,
    address_space: int = 10 << 30,
    timeout: float = 300.0,
) -> dict[str, Probe]:
    """Evaluates each of ``probes`` (name -> expression) in one child after ``setup``.

    Args:
        setup: Statements run first (imports, fixtures).
        probes: Expressions to evaluate, in order.
        address_space: ``RLIMIT_AS`` of the child in bytes (0 = none).
        timeout: Seconds for the whole child.

    Returns:
        One :class:`Probe` per probe that completed. A probe that aborted the child (and the
        ones after it) is missing; :class:`RuntimeError` is raised instead, naming the probe
        that was running and the child's last output.
    """
    cmd = [sys.executable, "-c", _CHILD, str(address_space), setup, json.dumps(probes)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    done: dict[str, Probe] = {}
    running = None
    for line in proc.stdout.splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if "start" in record:
            running = record["start"]
            continue
        done[record["name"]] = Probe(
            record["exc"], record["msg"], record["seconds"], record["grown_bytes"]
        )
        running = None
    if proc.returncode != 0 or running is not None:
        raise RuntimeError(
            f"the probe child exited with status {proc.returncode} while running "
            f"{running!r}:\n{proc.stderr[-3000:]}"
        )
    return done


def interrupt_after(code: str, seconds: float, *, timeout: float = 60.0) -> tuple[str, float]:
    """Runs ``code`` in a child, sends it SIGINT ``seconds`` after it prints ``ready``, and
    returns the child's last output line and the seconds from the signal to its exit."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        _, err = proc.communicate()
        raise RuntimeError(f"the child did not get ready: {line!r}\n{err[-3000:]}")
    time.sleep(seconds)
    proc.send_signal(signal.SIGINT)
    sent = time.perf_counter()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return "", float("inf")
    elapsed = time.perf_counter() - sent
    lines = [ln for ln in out.splitlines() if ln.strip()]
    return (lines[-1] if lines else err.strip()[-500:]), elapsed
