"""Int8 communication: quantizers vs memory bandwidth and vs torch ops; ring all-reduce vs fp32.

Run for real (64M float32, the issue's sizes) with
``pytest benches/bench_comm.py --benchmark-enable -s``; CI runs it once with
``--benchmark-disable`` on 4M values. Each test times ferrolm and its baselines in the same run
on the same inputs and records the ratios in ``benchmark.extra_info`` (and prints them).

* quantize / dequantize-accumulate: fraction of the bandwidth of a NumPy copy of the same
  float32 array (bytes the kernel must move / its time, over 8 bytes per value / copy time),
  and speed-up over the same scheme written in torch ops;
* ring all-reduce on 2 gloo processes in a fresh network namespace on 127.0.0.1: int8 ring
  vs fp32 ``dist.all_reduce``, on the plain loopback and on a loopback shaped to 1 Gbit/s with
  ``tc`` (needs root and iproute2).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from netshape import run_ring_bench

from ferrolm import _native
from ferrolm.comm.quantize import packed_len
from ferrolm.testing.comm import torch_dequantize_accumulate, torch_quantize
from ferrolm.testing.timing import best_of

BLOCK = 256
# Bytes each ferrolm kernel must move per value: blockwise reads x once (a block stays in L1
# between its range and its encoding sweep) and writes 1 byte; minmax and intellect read x
# twice (a whole-tensor reduction first); dequantize-accumulate reads 1 + 4 and writes 4.
QUANT_BYTES = {"blockwise": 5.0, "minmax": 9.0, "intellect": 9.0}
DEQ_ACC_BYTES = 9.0


def _size(benchmark) -> int:
    return (1 << 22) if benchmark.disabled else (1 << 26)


@pytest.fixture(scope="module")
def data_full() -> torch.Tensor:
    return torch.randn(1 << 26, generator=torch.Generator().manual_seed(0))


def _copy_time(x: np.ndarray) -> float:
    dst = np.empty_like(x)
    return best_of(lambda: np.copyto(dst, x))


def _report(benchmark, info: dict) -> None:
    benchmark.extra_info.update(info)
    print("\n" + json.dumps(info))


@pytest.mark.parametrize("scheme", ["blockwise", "intellect", "minmax"])
@pytest.mark.benchmark(group="comm-quantize")
def test_bench_quantize(benchmark, data_full, scheme):
    n = _size(benchmark)
    x = data_full[:n]
    out = torch.empty(packed_len(scheme, BLOCK, n), dtype=torch.uint8)
    xs, os_ = x.numpy(), out.numpy()

    def ferrolm() -> None:
        _native.comm.quantize_packed(scheme, BLOCK, xs, os_)

    t_ferrolm = best_of(ferrolm)
    t_copy = _copy_time(xs)
    t_torch = best_of(lambda: torch_quantize(x, scheme), repeats=2)
    codes, _ = torch_quantize(x, scheme)
    agree = float((out[out.numel() - n :] == codes).float().mean())
    benchmark(ferrolm)
    _report(
        benchmark,
        {
            "op": f"quantize {scheme}",
            "n": n,
            "ferrolm_s": t_ferrolm,
            "torch_ops_s": t_torch,
            "numpy_copy_s": t_copy,
            "speedup_vs_torch": t_torch / t_ferrolm,
            "bandwidth_fraction": (QUANT_BYTES[scheme] / t_ferrolm) / (8.0 / t_copy),
            "codes_equal_torch": agree,
        },
    )
    assert agree > 0.999


@pytest.mark.parametrize("scheme", ["blockwise", "intellect", "minmax"])
@pytest.mark.benchmark(group="comm-dequantize-accumulate")
def test_bench_dequantize_accumulate(benchmark, data_full, scheme):
    n = _size(benchmark)
    x = data_full[:n]
    packed = torch.empty(packed_len(scheme, BLOCK, n), dtype=torch.uint8)
    _native.comm.quantize_packed(scheme, BLOCK, x.numpy(), packed.numpy())
    acc = torch.zeros(n)
    ps, accs = packed.numpy(), acc.numpy()

    def ferrolm() -> None:
        _native.comm.dequantize_packed(scheme, BLOCK, ps, accs, True)

    codes, params = torch_quantize(x, scheme)
    t_ferrolm = best_of(ferrolm)
    t_copy = _copy_time(x.numpy())
    t_torch = best_of(lambda: torch_dequantize_accumulate(codes, params, scheme, acc), repeats=2)
    benchmark(ferrolm)
    # Same result as torch ops (up to float rounding; for intellect also the few codes on a
    # bucket edge and torch's float32 index_add of ~1M values per bucket, which drifts ~1e-3).
    check_acc, ref = torch.zeros(n), torch.zeros(n)
    _native.comm.dequantize_packed(scheme, BLOCK, ps, check_acc.numpy(), True)
    torch_dequantize_accumulate(codes, params, scheme, ref)
    assert float((check_acc - ref).abs().mean()) < (2e-3 if scheme == "intellect" else 1e-4)
    _report(
        benchmark,
        {
            "op": f"dequantize-accumulate {scheme}",
            "n": n,
            "ferrolm_s": t_ferrolm,
            "torch_ops_s": t_torch,
            "numpy_copy_s": t_copy,
            "speedup_vs_torch": t_torch / t_ferrolm,
            "bandwidth_fraction": (DEQ_ACC_BYTES / t_ferrolm) / (8.0 / t_copy),
        },
    )


@pytest.mark.parametrize("rate", [None, "1gbit"], ids=["loopback", "1gbit"])
@pytest.mark.benchmark(group="comm-ring-allreduce")
def test_bench_ring_allreduce(benchmark, rate):
    n = _size(benchmark)
    repeats = 1 if benchmark.disabled else 2
    result: dict = {}

    def run() -> None:
        result.update(run_ring_bench(n, repeats=repeats, rate=rate))

    # One round: the interesting times are measured inside the worker processes.
    benchmark.pedantic(run, rounds=1, iterations=1)
    if "skipped" in result:
        pytest.skip(result["skipped"])
    _report(benchmark, {"op": "ring all-reduce (2 gloo processes)", **result})
    assert result["rel_l2"] < 0.015
