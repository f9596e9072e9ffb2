"""``comm`` as torch users expect it (issue #15, items 4, 5 and 8): ``all_reduce`` with
``dist.all_reduce``'s arguments, the DDP hook under ``torch.amp.GradScaler`` (non-finite values
reach every rank, the future completes on a worker thread, error feedback), and DiLoCo resumed
from a checkpoint.

Process start-up dominates, so one 2-process group (module fixture) runs every distributed
check and returns plain data; each test asserts one part of it.
"""

from __future__ import annotations

import io
import threading
import time
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist

from ferrolm import comm
from ferrolm.comm import _transport
from ferrolm.testing.launch import run_local

pytestmark = pytest.mark.dist


# --- all_reduce's arguments ------------------------------------------------------------------


def _api(rank: int, world: int) -> dict:
    out: dict = {}
    x = torch.full((1000,), float(rank + 1))
    comm.all_reduce(x)  # the default is a sum, as dist.all_reduce's
    out["default"] = float(x.mean())
    for op in (dist.ReduceOp.SUM, dist.ReduceOp.AVG, "sum", "mean", "avg", "AVG"):
        y = torch.full((1000,), float(rank + 1))
        comm.all_reduce(y, op, None, False, scheme="minmax", timeout=20.0)  # positional
        out[str(op)] = float(y.mean())
    # async_op: several reductions in flight, then waited in any order; the peer issues its
    # calls late, so the first work cannot be complete when all_reduce returns.
    if rank == 1:
        time.sleep(0.5)
    ts = [
        torch.randn(5000, generator=torch.Generator().manual_seed(10 * rank + i)) for i in range(3)
    ]
    syncs = [t.clone() for t in ts]
    works = [comm.all_reduce(t, dist.ReduceOp.AVG, async_op=True, timeout=30.0) for t in ts]
    out["async_done_at_return"] = works[0].is_completed()
    out["async_wait"] = [w.wait() for w in reversed(works)]
    out["async_completed"] = [w.is_completed() and w.is_success() for w in works]
    out["future"] = works[0].get_future().value() is ts[0]
    for s in syncs:
        comm.all_reduce(s, "avg", timeout=30.0)
    out["async_equals_sync"] = all(torch.equal(t, s) for t, s in zip(ts, syncs))
    out["async_result"] = ts[0].numpy()
    # An async failure surfaces in wait(), on every rank.
    bad = torch.ones(10 + rank)
    work = comm.all_reduce(bad, async_op=True, timeout=20.0)
    try:
        work.wait()
        out["async_error"] = "no error"
    except ValueError as e:
        out["async_error"] = str(e)
    # A group whose backend string maps devices, like the default "cpu:gloo,cuda:nccl".
    mixed = dist.new_group([0, 1], backend="cpu:gloo,cuda:gloo")
    out["mixed_backend"] = str(dist.get_backend(mixed))
    z = torch.full((300,), float(rank + 1))
    comm.all_reduce(z, group=mixed, timeout=20.0)
    out["mixed"] = float(z.mean())
    return out


# --- the DDP hook under GradScaler -----------------------------------------------------------

#: (step, rank) where the loss is multiplied by inf: an overflow on ONE rank only.
_OVERFLOWS = ((3, 1), (7, 0))


def _amp(rank: int, dtype: torch.dtype, int8: bool) -> dict:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
    # Small buckets: several per step, so their order matters.
    ddp = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=0.002)
    if int8:
        ddp.register_comm_hook(comm.Int8HookState(timeout=30.0), comm.int8_allreduce_hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=4)
    skipped, scales = [], []
    for step in range(12):
        gen = torch.Generator().manual_seed(100 * rank + step)
        x = torch.randn(32, 16, generator=gen)
        y = x[:, :1].sin()
        with torch.autocast("cpu", dtype=dtype):
            loss = torch.nn.functional.mse_loss(ddp(x).float(), y)
        if (step, rank) in _OVERFLOWS:
            loss = loss * float("inf")
        scaler.scale(loss).backward()
        before = [p.detach().clone() for p in model.parameters()]
        scaler.step(opt)
        scaler.update()
        unchanged = all(torch.equal(b, p) for b, p in zip(before, model.parameters()))
        skipped.append(unchanged)
        scales.append(scaler.get_scale())
        opt.zero_grad(set_to_none=True)
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return {"skipped": skipped, "scales": scales, "params": params.numpy()}


def _overlap(rank: int) -> dict:
    """The hook returns before its bucket is reduced; a worker thread completes the future."""
    torch.manual_seed(0)
    model = torch.nn.Linear(32, 4)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    seen: dict = {}

    def hook(state, bucket):  # no annotations: DDP compares them with its own types
        if rank == 1:
            time.sleep(0.5)  # the peer is late: rank 0's reduction cannot have finished
        fut = comm.int8_allreduce_hook(state, bucket)
        seen["done_at_return"] = fut.done()
        seen["caller"] = threading.current_thread().name

        def where(f):
            seen["completer"] = threading.current_thread().name
            return f.value()

        return fut.then(where)

    ddp.register_comm_hook(comm.Int8HookState(timeout=30.0), hook)
    ddp(torch.randn(8, 32, generator=torch.Generator().manual_seed(rank))).sum().backward()
    return seen


def _feedback(rank: int, world: int, error_feedback: bool, steps: int) -> dict:
    """A constant gradient per rank: without error feedback every step makes the same int8
    error, with it the errors of successive steps cancel."""
    c = torch.randn(20_000, generator=torch.Generator().manual_seed(rank))
    exact = sum(
        torch.randn(20_000, generator=torch.Generator().manual_seed(r)) for r in range(world)
    )
    exact = exact / world

    class Dot(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(20_000))

        def forward(self, c: torch.Tensor) -> torch.Tensor:
            return (self.w * c).sum()

    model = Dot()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    state = comm.Int8HookState(timeout=30.0, error_feedback=error_feedback)
    ddp.register_comm_hook(state, comm.int8_allreduce_hook)
    total = torch.zeros(20_000)
    first = None
    for _ in range(steps):
        ddp(c).backward()
        total += model.w.grad
        if first is None:
            first = float((model.w.grad - exact).abs().max())
        model.w.grad = None
    return {"first": first, "total": float((total - steps * exact).abs().max())}


# --- DiLoCo checkpoints ----------------------------------------------------------------------


def _diloco_resume(rank: int) -> dict:
    def make(seed: int) -> tuple:
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
        inner = torch.optim.AdamW(model.parameters(), lr=1e-2)
        return model, inner, comm.DiLoCo(model, inner, sync_every=4, timeout=30.0)

    def train(model, diloco, steps) -> None:
        for step in steps:
            gen = torch.Generator().manual_seed(1000 * rank + step)
            x = torch.randn(16, 8, generator=gen)
            torch.nn.functional.mse_loss(model(x), x.sum(1, keepdim=True).sin()).backward()
            diloco.step()
            diloco.zero_grad()

    def flat(model) -> np.ndarray:
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()

    model, _, diloco = make(0)
    train(model, diloco, range(12))
    full = flat(model)
    # Stop after the second outer step, checkpoint, resume in fresh objects (other init).
    model, inner, diloco = make(0)
    train(model, diloco, range(8))
    buffer = io.BytesIO()
    torch.save(
        {"model": model.state_dict(), "inner": inner.state_dict(), "diloco": diloco.state_dict()},
        buffer,
    )
    buffer.seek(0)
    ckpt = torch.load(buffer)
    model, inner, diloco = make(1)
    model.load_state_dict(ckpt["model"])
    inner.load_state_dict(ckpt["inner"])
    diloco.load_state_dict(ckpt["diloco"])
    loaded = diloco.outer_steps, diloco.inner_steps
    train(model, diloco, range(8, 12))
    resumed, resumed_steps = flat(model), diloco.outer_steps
    # Without the DiLoCo state (momentum, outer parameters, counts) the run differs.
    model, inner, diloco = make(1)
    model.load_state_dict(ckpt["model"])
    inner.load_state_dict(ckpt["inner"])
    train(model, diloco, range(8, 12))
    return {
        "full": full,
        "resumed": resumed,
        "without_state": flat(model),
        "loaded": loaded,
        "outer_steps": resumed_steps,
    }


def _worker(rank: int, world: int) -> dict:
    out = {"api": _api(rank, world)}
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        out[name] = {"int8": _amp(rank, dtype, True), "fp32": _amp(rank, dtype, False)}
    out["overlap"] = _overlap(rank)
    out["feedback"] = {ef: _feedback(rank, world, ef, 20) for ef in (False, True)}
    out["diloco"] = _diloco_resume(rank)
    return out


@pytest.fixture(scope="module")
def ranks() -> list[dict]:
    return run_local(_worker, 2, timeout=240)


def test_all_reduce_takes_dist_all_reduce_arguments(ranks):
    for r in ranks:
        api = r["api"]
        assert api["default"] == pytest.approx(3.0, rel=0.01)  # 1 + 2: a sum
        for op in (str(dist.ReduceOp.SUM), "sum"):
            assert api[op] == pytest.approx(3.0, rel=0.01), op
        for op in (str(dist.ReduceOp.AVG), "mean", "avg", "AVG"):
            assert api[op] == pytest.approx(1.5, rel=0.01), op
        assert api["mixed_backend"] == "cpu:gloo,cuda:gloo"
        assert api["mixed"] == pytest.approx(3.0, rel=0.01)


def test_async_op_returns_a_work_that_completes_in_order(ranks):
    r0, r1 = (r["api"] for r in ranks)
    assert r0["async_done_at_return"] is False
    for api in (r0, r1):
        assert api["async_wait"] == [True, True, True]
        assert api["async_completed"] == [True, True, True]
        assert api["future"]
        assert api["async_equals_sync"]
        assert "element count" in api["async_error"], api["async_error"]
    np.testing.assert_array_equal(r0["async_result"], r1["async_result"])


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_ddp_hook_under_grad_scaler_skips_exactly_like_fp32_all_reduce(ranks, precision):
    expected = [step in {s for s, _ in _OVERFLOWS} for step in range(12)]
    for r in ranks:
        int8, fp32 = r[precision]["int8"], r[precision]["fp32"]
        assert fp32["skipped"] == expected  # the reference: torch's own all-reduce
        assert int8["skipped"] == fp32["skipped"]
        assert int8["scales"] == fp32["scales"]
        assert np.isfinite(int8["params"]).all()
        # Same training up to int8 rounding (measured: ~1e-3 relative).
        rel = np.linalg.norm(int8["params"] - fp32["params"]) / np.linalg.norm(fp32["params"])
        assert rel < 0.02, rel
    np.testing.assert_array_equal(
        ranks[0][precision]["int8"]["params"], ranks[1][precision]["int8"]["params"]
    )


def test_ddp_hook_returns_before_the_reduction_and_a_worker_completes_it(ranks):
    seen = ranks[0]["overlap"]
    assert seen["done_at_return"] is False
    assert seen["completer"] == "ferrolm-comm"
    assert seen["caller"] != "ferrolm-comm"


def test_error_feedback_cancels_the_int8_error_over_steps(ranks):
    for r in ranks:
        plain, fed = r["feedback"][False], r["feedback"][True]
        # Without feedback every step repeats the first step's error: 20 steps, 20 times it.
        assert plain["total"] == pytest.approx(20 * plain["first"], rel=0.05)
        assert plain["first"] > 0
        # With feedback the summed error stays about one step's error (measured: 1.02x).
        assert fed["total"] <= 2 * plain["first"], (fed, plain)


def test_diloco_resumes_bit_identically_from_a_checkpoint(ranks):
    for r in ranks:
        d = r["diloco"]
        assert d["loaded"] == (2, 8)
        assert d["outer_steps"] == 3
        np.testing.assert_array_equal(d["resumed"], d["full"])
        assert not np.array_equal(d["without_state"], d["full"])
    np.testing.assert_array_equal(ranks[0]["diloco"]["full"], ranks[1]["diloco"]["full"])


# --- single process --------------------------------------------------------------------------


def test_op_and_backend_errors_name_what_came():
    with pytest.raises(ValueError, match=r"`op` must be .*ReduceOp\.SUM.*got 'max'"):
        comm.all_reduce(torch.ones(4), "max")
    with pytest.raises(ValueError, match="`op`"):
        comm.all_reduce(torch.ones(4), dist.ReduceOp.MAX)

    class Fake:
        def __init__(self, device: str) -> None:
            self.device = torch.device(device)

    original = dist.get_backend
    try:
        dist.get_backend = lambda group=None: "cpu:gloo,cuda:nccl"
        assert _transport.transport(Fake("cpu"), None) is False
        assert _transport.transport(Fake("cuda"), None) is True
        with pytest.raises(RuntimeError, match="'cpu:gloo,cuda:nccl' has none for it"):
            _transport.transport(Fake("meta"), None)
        dist.get_backend = lambda group=None: "nccl"
        with pytest.raises(RuntimeError, match="CUDA tensor on an NCCL group"):
            _transport.transport(Fake("cpu"), None)
        dist.get_backend = lambda group=None: "gloo"
        with pytest.raises(RuntimeError, match="CPU tensor on a gloo group"):
            _transport.transport(Fake("cuda"), None)
    finally:
        dist.get_backend = original


def test_a_process_group_passed_where_op_now_is_gets_a_hint():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match="pass group="):
            comm.all_reduce(torch.ones(4), dist.group.WORLD)
        work = comm.all_reduce(torch.ones(4), async_op=True)
        assert isinstance(work, comm.AllReduceWork)
        assert work.wait(timeout=30.0) is True
    finally:
        dist.destroy_process_group()


def test_hook_state_calls_its_group_process_group():
    state = comm.Int8HookState(process_group=None, error_feedback=True)
    assert state.process_group is None
    assert state.error_feedback is True
    with pytest.warns(DeprecationWarning, match="process_group"):
        old = comm.Int8HookState(group="g")
    assert old.process_group == "g"
    with pytest.warns(DeprecationWarning, match="process_group"):
        assert old.group == "g"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        comm.Int8HookState("g")  # positional: the first field, no warning


def test_diloco_load_state_dict_refuses_another_model():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        a = torch.nn.Linear(4, 2)
        d = comm.DiLoCo(a, torch.optim.SGD(a.parameters(), lr=0.1), sync_every=2)
        state = d.state_dict()
        b = torch.nn.Linear(4, 3)
        other = comm.DiLoCo(b, torch.optim.SGD(b.parameters(), lr=0.1), sync_every=2)
        with pytest.raises(
            ValueError, match=r"outer_params'\]\[0\]` must be torch.float32 of shape \(3, 4\)"
        ):
            other.load_state_dict(state)
        with pytest.raises(ValueError, match="lacks"):
            d.load_state_dict({"outer_params": []})
        with pytest.raises(TypeError, match="inner_steps"):
            d.load_state_dict({**state, "inner_steps": -1})
    finally:
        dist.destroy_process_group()
