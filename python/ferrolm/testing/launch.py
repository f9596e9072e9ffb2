"""Run a function on N local processes joined by a gloo (or NCCL) group on 127.0.0.1 (for the
tests, the demo and the benches)."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as _queue
import socket
import time
import traceback
from datetime import timedelta
from typing import Any, Callable

__all__ = ["free_port", "run_local"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(
    rank: int,
    world: int,
    port: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    results: Any,
    threads: int,
    backend: str,
) -> None:
    import torch
    import torch.distributed as dist

    # ferrolm's native threads follow torch's count.
    torch.set_num_threads(threads)
    try:
        if backend == "nccl":
            torch.cuda.set_device(rank)
        dist.init_process_group(
            backend,
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=60),
        )
        out = fn(rank, world, *args)
        results.put((rank, True, out))
    except BaseException:  # report everything, including assertion errors, to the parent
        results.put((rank, False, traceback.format_exc()))
    results.close()
    results.join_thread()
    # Skip interpreter teardown: a group whose peer died can block in its destructor.
    os._exit(0)


def run_local(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    timeout: float = 120.0,
    threads: int = 1,
    allow_missing: bool = False,
    backend: str = "gloo",
) -> list[Any]:
    """Runs ``fn(rank, world_size, *args)`` on ``world_size`` spawned processes in one gloo group
    (``backend="nccl"``: one NCCL group, rank ``r`` on GPU ``r``).

    Returns the per-rank return values (``None`` for a rank that died when ``allow_missing``).
    Raises ``RuntimeError`` with the remote traceback if a rank raised, and ``TimeoutError``
    (after killing the processes) if they do not finish within ``timeout``.
    """
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(target=_entry, args=(r, world_size, port, fn, args, results, threads, backend))
        for r in range(world_size)
    ]
    for p in procs:
        p.start()
    out: dict[int, Any] = {}
    errors: list[str] = []
    end = time.monotonic() + timeout
    try:
        while len(out) + len(errors) < world_size:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"run_local: ranks did not finish within {timeout} s")
            try:
                rank, ok, value = results.get(timeout=min(left, 0.5))
            except _queue.Empty:
                alive = sum(p.is_alive() for p in procs)
                if alive == 0 and results.empty():
                    break
                continue
            if ok:
                out[rank] = value
            else:
                errors.append(f"rank {rank}:\n{value}")
    finally:
        for p in procs:
            p.join(timeout=max(0.0, min(5.0, end - time.monotonic())))
            if p.is_alive():
                p.kill()
                p.join()
        results.close()
    if errors:
        raise RuntimeError("a rank failed:\n" + "\n".join(errors))
    if len(out) < world_size and not allow_missing:
        missing = sorted(set(range(world_size)) - set(out))
        raise RuntimeError(f"rank(s) {missing} exited without a result")
    return [out.get(r) for r in range(world_size)]
