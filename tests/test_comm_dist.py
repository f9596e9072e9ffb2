"""The int8 ring all-reduce, DDP hook and DiLoCo on real gloo groups of 2-4 local processes.

Process start-up (importing torch) dominates, so each test launches ONE group and checks many
things inside it; the worker functions run in the spawned processes and return plain data.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist

from ferrolm import comm
from ferrolm.comm import allreduce as ar
from ferrolm.testing.launch import run_local

pytestmark = pytest.mark.dist

# (size, scheme, op, dtype): odd sizes that do not divide by 2, 3 or 4, sizes smaller than the
# world, several pieces per chunk (piece_size 5000 below) and every scheme.
CASES = [
    (1, "blockwise", "sum", torch.float32),
    (3, "minmax", "avg", torch.float32),
    (1_000_003, "blockwise", "avg", torch.float32),
    (77_777, "intellect", "sum", torch.float32),
    (54_321, "minmax", "avg", torch.bfloat16),
]


def _data(rank: int, n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed * 100 + rank))


def _ring_worker(rank: int, world: int, device: str = "cpu") -> list[dict]:
    out = []
    for i, (n, scheme, op, dtype) in enumerate(CASES):
        x = _data(rank, n, i).to(dtype)
        exact = sum(_data(r, n, i).to(dtype).float() for r in range(world))
        if op == "avg":
            exact = exact / world
        y = x.to(device)
        res = comm.all_reduce(y, op=op, scheme=scheme, timeout=60.0, piece_size=5000)
        assert res is y
        assert y.device.type == device
        y = y.float().cpu()
        rel = float((y - exact).norm() / exact.norm())
        out.append({"rel": rel, "y": y.numpy(), "scheme": scheme, "n": n})
    return out


def _check_ring(results: list[list[dict]], world: int) -> None:
    for i, (n, scheme, _, dtype) in enumerate(CASES):
        ys = [r[i]["y"] for r in results]
        for y in ys[1:]:
            np.testing.assert_array_equal(y, ys[0])  # bit-identical on every rank
        rel = results[0][i]["rel"]
        if n >= 1000:
            # Spec: <= 1.5 % at world 4 with blockwise on Gaussian data (measured ~1.0 %).
            bound = {"blockwise": 0.015, "minmax": 0.025, "intellect": 0.04}[scheme]
            if dtype == torch.bfloat16:
                bound += 0.005
            assert rel <= bound, (world, n, scheme, rel)
        else:
            assert rel <= 0.05, (world, n, scheme, rel)


@pytest.mark.parametrize("world", [3, 4])  # world 2 runs inside the 2-process test below
def test_ring_matches_exact_sum_and_is_bit_identical(world):
    _check_ring(run_local(_ring_worker, world, timeout=150), world)


@pytest.mark.gpu
def test_ring_on_nccl_matches_exact_sum_and_is_bit_identical():
    world = torch.cuda.device_count()
    if world < 2:
        pytest.skip(f"an NCCL ring needs 2 GPUs, this machine has {world}")
    world = min(world, 4)
    _check_ring(run_local(_ring_worker, world, "cuda", timeout=300, backend="nccl"), world)


def _checks_worker(rank: int, world: int) -> dict:
    """World 2: the ring cases, argument checks across ranks, NaN policy, DDP hook, DiLoCo."""
    out: dict = {"ring": _ring_worker(rank, world)}
    # Mismatched shapes: every rank raises the same ValueError, nothing changes.
    x = torch.ones(10 + rank)
    try:
        comm.all_reduce(x, timeout=20.0)
        out["shape"] = "no error"
    except ValueError as e:
        out["shape"] = str(e)
    out["shape_intact"] = bool(torch.equal(x, torch.ones(10 + rank)))
    # Mismatched dtype.
    x = torch.ones(10, dtype=torch.float32 if rank == 0 else torch.bfloat16)
    try:
        comm.all_reduce(x, timeout=20.0)
        out["dtype"] = "no error"
    except ValueError as e:
        out["dtype"] = str(e)
    # NaN on one rank: every rank raises, every tensor unchanged.
    x = torch.ones(100)
    if rank == 1:
        x[7] = float("nan")
    before = x.clone()
    try:
        comm.all_reduce(x, timeout=20.0)
        out["nan"] = "no error"
    except ValueError as e:
        out["nan"] = str(e)
    out["nan_intact"] = bool(torch.allclose(x, before, rtol=0, atol=0, equal_nan=True))
    # The group still works after the clean errors; a parameter (requires_grad) is fine too.
    x = torch.nn.Parameter(torch.full((5,), float(rank + 1)))
    comm.all_reduce(x, op="sum", scheme="minmax")
    out["after"] = x.tolist()
    out["ddp"] = _ddp(rank, world)
    out["diloco"] = {s: _diloco(rank, s) for s in ("blockwise", None)}
    out["example"] = _example().run(rank, steps=50, sync_every=25)
    return out


def _example():
    """examples/diloco_two_processes.py as a module (its `run` needs an initialised group)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "examples" / "diloco_two_processes.py"
    spec = importlib.util.spec_from_file_location("diloco_two_processes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ddp(rank: int, world: int) -> dict:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    ddp.register_comm_hook(comm.Int8HookState(timeout=30.0), comm.int8_allreduce_hook)
    xs = [torch.randn(32, 64, generator=torch.Generator().manual_seed(r)) for r in range(world)]
    ddp(xs[rank]).pow(2).mean().backward()
    grads = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    # Exact average of the per-rank gradients, computed locally.
    ref = []
    for r in range(world):
        model.zero_grad()
        model(xs[r]).pow(2).mean().backward()
        ref.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    exact = torch.stack(ref).mean(0)
    return {"rel": float((grads - exact).norm() / exact.norm()), "grads": grads.numpy()}


def _diloco(rank: int, scheme: str | None) -> list[float]:
    """A small MLP regression, 2 ranks with different data shards, H = 10 inner steps."""
    torch.manual_seed(0)
    teacher = torch.nn.Linear(16, 1)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    gen = torch.Generator().manual_seed(1000 + rank)
    x_eval = torch.randn(512, 16, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        y_eval = teacher(x_eval)
    inner = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    diloco = comm.DiLoCo(model, inner, sync_every=10, scheme=scheme, timeout=30.0)

    def eval_loss() -> float:
        with torch.no_grad():
            return float(torch.nn.functional.mse_loss(model(x_eval), y_eval))

    losses = [eval_loss()]
    for _ in range(150):
        xb = torch.randn(32, 16, generator=gen)
        with torch.no_grad():
            yb = teacher(xb)
        torch.nn.functional.mse_loss(model(xb), yb).backward()
        if diloco.step():
            losses.append(eval_loss())
        diloco.zero_grad()
    return losses


def test_ring_checks_ddp_hook_and_diloco_on_two_processes():
    r0, r1 = run_local(_checks_worker, 2, timeout=150)
    _check_ring([r0["ring"], r1["ring"]], 2)
    for r in (r0, r1):
        assert "element count" in r["shape"]
        assert "rank 1 has 11" in r["shape"]
        assert r["shape_intact"]
        assert "dtype" in r["dtype"]
        assert "bfloat16" in r["dtype"]
        assert "some rank holds NaN" in r["nan"]
        assert r["nan_intact"]
        assert r["after"] == pytest.approx([3.0] * 5, rel=1e-6)
        assert r["ddp"]["rel"] <= 0.02
    np.testing.assert_array_equal(r0["ddp"]["grads"], r1["ddp"]["grads"])
    # The example script's training loop: 2 outer steps, finite losses.
    assert len(r0["example"]) == 2
    assert all(np.isfinite(r0["example"]))
    # DiLoCo: the int8 run's eval loss falls like the fp32 one. Stated tolerance: every outer
    # step's loss within 5 % (relative) of the fp32 run's (measured: within 0.3 %), and both
    # fall by >= 5x from the start (measured: 29x).
    q, f = r0["diloco"]["blockwise"], r0["diloco"][None]
    assert len(q) == len(f) == 16
    assert q == r1["diloco"]["blockwise"]  # all ranks hold the same model after each sync
    assert f[-1] * 5 <= f[0]
    assert q[-1] * 5 <= q[0]
    for a, b in zip(q, f):
        assert abs(a - b) <= 0.05 * b + 1e-5, (q, f)


def _fault_worker(rank: int, world: int) -> dict:
    out: dict = {}
    x = torch.randn(400_000)
    before = x.clone()
    # 1) A stalled peer: the last rank does not join; the others time out in time.
    if rank == world - 1:
        time.sleep(4.0)
    else:
        t = time.perf_counter()
        try:
            comm.all_reduce(x, timeout=2.0)
            out["stall"] = "no error"
        except comm.CommTimeoutError as e:
            out["stall"] = (time.perf_counter() - t, bool(torch.equal(x, before)), str(e))
    # 2) A peer killed mid-reduce (after it sent a few pieces), on a fresh group.
    group = dist.new_group(list(range(world)))
    if rank == world - 1:
        original = ar._quantize_into
        calls = [0]

        def dying(*args):
            calls[0] += 1
            if calls[0] == 4:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args)

        ar._quantize_into = dying
    t = time.perf_counter()
    try:
        comm.all_reduce(x, group=group, timeout=5.0, piece_size=20_000)
        out["kill"] = "no error"
    except comm.CommTimeoutError as e:
        out["kill"] = (time.perf_counter() - t, bool(torch.equal(x, before)), str(e))
    return out


def test_dead_or_stalled_peer_raises_in_time_and_inputs_are_intact():
    results = run_local(_fault_worker, 3, timeout=120, allow_missing=True)
    assert results[2] is None  # the killed rank never reported
    for r in results[:2]:
        elapsed, intact, message = r["stall"]
        assert 1.9 <= elapsed <= 4.0
        assert intact
        assert "timeout=2" in message
        elapsed, intact, message = r["kill"]
        assert elapsed <= 6.0
        assert intact
        assert "unchanged" in message


def test_single_process_errors_need_no_group():
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        comm.all_reduce([1.0])
    with pytest.raises(ValueError, match="non-empty"):
        comm.all_reduce(torch.empty(0))
    with pytest.raises(ValueError, match="contiguous"):
        comm.all_reduce(torch.ones(4, 4).t())
    with pytest.raises(TypeError, match="float32"):
        comm.all_reduce(torch.ones(4, dtype=torch.int32))
    with pytest.raises(ValueError, match="`op`"):
        comm.all_reduce(torch.ones(4), op="max")
    with pytest.raises(ValueError, match="`timeout`"):
        comm.all_reduce(torch.ones(4), timeout=0)
    with pytest.raises(ValueError, match="`scheme`"):
        comm.all_reduce(torch.ones(4), scheme="int4")
    with pytest.raises(RuntimeError, match="init_process_group"):
        comm.all_reduce(torch.ones(4))


def test_diloco_argument_checks():
    model = torch.nn.Linear(4, 1)
    inner = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        comm.DiLoCo("model", inner)
    with pytest.raises(TypeError, match="inner_optimizer"):
        comm.DiLoCo(model, "adam")
    with pytest.raises(ValueError, match="sync_every"):
        comm.DiLoCo(model, inner, sync_every=0)
    with pytest.raises(ValueError, match="outer_momentum"):
        comm.DiLoCo(model, inner, outer_momentum=1.0)
    with pytest.raises(ValueError, match="`scheme`"):
        comm.DiLoCo(model, inner, scheme="fp8")
    with pytest.raises(RuntimeError, match="process group"):
        comm.DiLoCo(model, inner)
