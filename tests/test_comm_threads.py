"""The native thread pool follows torch and the environment (issue #15, item 6).

Each check runs in a fresh interpreter: the first native call sizes rayon's global pool, so the
order of events inside one process is part of what is tested.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ferrolm.testing.isolated import interrupt_after

_POLICY = r"""
import json, os, sys
import ferrolm
from ferrolm import _native
out = {}
def seen():
    # What the policy says, and what a native call really ran with (rayon, inside its pool).
    return [ferrolm.get_num_threads(), _native._debug_pool_threads()]
out["env"] = seen()                           # OMP_NUM_THREADS=3, torch not imported
assert "torch" not in sys.modules
import torch
torch.set_num_threads(2)
out["torch"] = seen()
ferrolm.set_num_threads(1)
torch.set_num_threads(3)
out["explicit"] = seen()                      # ferrolm.set_num_threads wins over torch
ferrolm.set_num_threads(None)
out["follow"] = seen()                        # back to torch's 3
torch.set_num_threads(1)
out["torch1"] = seen()
errors = []
for bad in (0, 5000, -1):
    try:
        ferrolm.set_num_threads(bad)
    except ValueError as e:
        errors.append(str(e))
try:
    ferrolm.set_num_threads(2.0)
except TypeError as e:
    errors.append("TypeError: " + str(e))
out["errors"] = errors
print(json.dumps(out))
"""


def _run(code: str, **env: str) -> dict:
    full = {
        k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "RAYON_NUM_THREADS")
    }
    full.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_native_threads_follow_set_num_threads_then_torch_then_omp():
    out = _run(_POLICY, OMP_NUM_THREADS="3")
    assert out["env"] == [3, 3]
    assert out["torch"] == [2, 2]
    assert out["explicit"] == [1, 1]
    assert out["follow"] == [3, 3]
    assert out["torch1"] == [1, 1]
    assert len(out["errors"]) == 4
    for message in out["errors"][:3]:
        assert "`n`" in message
        assert "[1, 4096]" in message
    assert out["errors"][3].startswith("TypeError")
    assert "`n`" in out["errors"][3]


_THREAD_LOCAL = r"""
import json, threading
import ferrolm
from ferrolm import _native
out = {}
ferrolm.set_num_threads(2)
def worker():
    _native.set_thread_num_threads(1)
    out["worker"] = [ferrolm.get_num_threads(), _native._debug_pool_threads()]
    out["main_while_set"] = main_seen
    _native.set_thread_num_threads(None)
    out["worker_cleared"] = ferrolm.get_num_threads()
main_seen = None
t = threading.Thread(target=worker)
main_seen = [ferrolm.get_num_threads(), _native._debug_pool_threads()]
t.start(); t.join()
out["main"] = [ferrolm.get_num_threads(), _native._debug_pool_threads()]
errors = []
for bad in (0, 5000, -1):
    try:
        _native.set_thread_num_threads(bad)
    except ValueError as e:
        errors.append(str(e))
out["errors"] = errors
print(json.dumps(out))
"""


def test_a_thread_count_for_one_thread_leaves_the_others_alone():
    # The undertrained pipeline reads weights on a worker thread with one native thread, beside
    # the scan on the main thread with all of them.
    out = _run(_THREAD_LOCAL)
    assert out["worker"] == [1, 1]
    assert out["worker_cleared"] == 2
    assert out["main"] == [2, 2] == out["main_while_set"]
    assert len(out["errors"]) == 3
    assert all("`n`" in e and "[1, 4096]" in e for e in out["errors"])


def test_without_torch_or_env_the_pool_has_one_thread_per_core():
    code = (
        "import json, os, ferrolm\n"
        "from ferrolm import _native\n"
        "print(json.dumps([ferrolm.get_num_threads(), _native._debug_pool_threads(),"
        " len(os.sched_getaffinity(0))]))\n"
    )
    got, pooled, cores = _run(code)
    assert got == pooled == cores
    # OpenMP's list syntax: the first entry is the outer count.
    got, pooled, _ = _run(code, OMP_NUM_THREADS="2,1")
    assert got == pooled == 2
    got, pooled, _ = _run(code, RAYON_NUM_THREADS="3")
    assert got == pooled == 3


def test_ctrl_c_still_interrupts_work_on_a_pool_of_another_size():
    # The first call sizes the global pool at 1; the DP then runs on a separate 2-thread pool,
    # where Python cannot deliver the signal: the calling thread must watch for it.
    code = (
        "import time, ferrolm, ferrolm.speculative as spec\n"
        "from ferrolm import _native\n"
        "ferrolm.set_num_threads(1)\n"
        "assert _native._debug_pool_threads() == 1\n"
        "ferrolm.set_num_threads(2)\n"
        "assert _native._debug_pool_threads() == 2\n"
        "print('ready', flush=True)\n"
        "t = time.perf_counter()\n"
        "try:\n"
        "    spec.sequoia_dp([0.6, 0.2], 16384, 600, max_work=2**62)\n"
        "    print('finished', time.perf_counter() - t)\n"
        "except KeyboardInterrupt:\n"
        "    print('KeyboardInterrupt', time.perf_counter() - t)\n"
    )
    last, after_signal = interrupt_after(code, 1.0)
    assert last.startswith("KeyboardInterrupt"), last
    assert after_signal < 5, f"exited {after_signal:.1f} s after SIGINT"


@pytest.mark.dist
def test_diloco_example_under_torchrun_uses_one_thread_per_rank(tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    if not os.path.exists(torchrun):
        pytest.skip("torchrun is not installed next to this Python")
    example = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "diloco_torchrun.py")
    full = {
        k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "RAYON_NUM_THREADS")
    }
    proc = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc-per-node",
            "2",
            example,
            "--steps",
            "20",
            "--sync-every",
            "10",
            "--report",
            str(tmp_path / "rank{rank}.json"),
        ],
        capture_output=True,
        text=True,
        env=full,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r, rep in enumerate(reports):
        assert rep["rank"] == r
        assert rep["world"] == 2
        # torchrun sets OMP_NUM_THREADS=1; torch and ferrolm's pool both follow it.
        assert rep["torch_threads"] == 1
        assert rep["ferrolm_threads"] == 1
        assert rep["outer_steps"] == 2
        assert len(rep["losses"]) == 2
    # Every rank holds the same model after the last outer step.
    assert reports[0]["checksum"] == reports[1]["checksum"]
