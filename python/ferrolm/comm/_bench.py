"""Ring all-reduce timing on local processes, optionally inside a network namespace whose
loopback is rate-limited with ``tc`` (used by ``benches/bench_comm.py`` and the demo).

``python -m ferrolm.comm._bench --n N --repeats R --world W`` prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from typing import Any

__all__ = ["ring_times", "run_ring_bench"]


def _ring_worker(rank: int, world: int, n: int, repeats: int, scheme: str) -> dict[str, Any]:
    import torch
    import torch.distributed as dist

    from ferrolm import comm

    x = torch.randn(n, generator=torch.Generator().manual_seed(rank))
    exact = sum(torch.randn(n, generator=torch.Generator().manual_seed(r)) for r in range(world))

    def timed(fn: Any) -> float:
        best = float("inf")
        for _ in range(repeats + 1):  # the first call warms up
            y = x.clone()
            dist.barrier()
            t = time.perf_counter()
            fn(y)
            best = min(best, time.perf_counter() - t)
        return best

    def fp32(y: torch.Tensor) -> None:
        dist.all_reduce(y)

    def int8(y: torch.Tensor) -> None:
        comm.all_reduce(y, op="sum", scheme=scheme, timeout=300.0)

    t_fp32 = timed(fp32)
    t_int8 = timed(int8)
    y = x.clone()
    int8(y)
    return {
        "fp32_s": t_fp32,
        "int8_s": t_int8,
        "rel_l2": float((y - exact).norm() / exact.norm()),
    }


def ring_times(n: int, repeats: int = 2, world: int = 2, scheme: str = "blockwise") -> dict:
    """Times int8 ring vs fp32 ``dist.all_reduce`` on ``world`` local gloo processes."""
    from ferrolm.comm._launch import run_local

    threads = max(1, (os.cpu_count() or 2) // world)
    res = run_local(_ring_worker, world, n, repeats, scheme, timeout=600, threads=threads)
    fp32 = max(r["fp32_s"] for r in res)
    int8 = max(r["int8_s"] for r in res)
    from ferrolm.comm.quantize import DEFAULT_BLOCK_SIZE, packed_len

    return {
        "n": n,
        "world": world,
        "scheme": scheme,
        "wire_bytes_vs_fp32": packed_len(scheme, DEFAULT_BLOCK_SIZE, n) / (4 * n),
        "fp32_s": fp32,
        "int8_s": int8,
        "int8_over_fp32": int8 / fp32,
        "speedup": fp32 / int8,
        "rel_l2": res[0]["rel_l2"],
    }


def run_ring_bench(
    n: int, repeats: int = 2, rate: str | None = None, scheme: str = "blockwise"
) -> dict[str, Any]:
    """Runs :func:`ring_times` in a fresh network namespace; with ``rate`` (e.g. ``"1gbit"``)
    its loopback is shaped with a ``tc`` token bucket, so both ranks talk over 127.0.0.1
    through that limit. Needs root and ``ip``/``tc`` (iproute2); returns ``{"skipped": why}``
    when the namespace cannot be made."""
    ip, tc = shutil.which("ip"), shutil.which("tc")
    if ip is None or tc is None:
        return {"skipped": "`ip`/`tc` not found (apt-get install iproute2)"}
    name = f"ferrolm-{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run([ip, "netns", "add", name], check=True, capture_output=True)
    except subprocess.CalledProcessError as e:
        return {"skipped": f"cannot create a network namespace: {e.stderr.decode().strip()}"}
    try:
        ns = [ip, "netns", "exec", name]
        subprocess.run([*ns, ip, "link", "set", "lo", "up"], check=True, capture_output=True)
        if rate is not None:
            # Both ranks share this one egress queue: the whole exchange flows through `rate`.
            shape = ["qdisc", "add", "dev", "lo", "root", "tbf", "rate", rate]
            shape += ["burst", "256kb", "latency", "100ms"]
            subprocess.run([*ns, tc, *shape], check=True, capture_output=True)
        cmd = [*ns, sys.executable, "-m", "ferrolm.comm._bench"]
        cmd += ["--n", str(n), "--repeats", str(repeats), "--scheme", scheme]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["link"] = f"netns loopback shaped with tc tbf {rate}" if rate else "netns loopback"
        return result
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"ring bench failed: {e.stderr}") from e
    finally:
        subprocess.run([ip, "netns", "del", name], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1 << 22)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--scheme", default="blockwise")
    a = parser.parse_args()
    print(json.dumps(ring_times(a.n, a.repeats, a.world, a.scheme)))


if __name__ == "__main__":
    main()
