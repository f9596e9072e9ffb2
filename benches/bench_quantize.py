"""int8 min-max quantization of 16M float32 on CPU: ferrolm (Rust) vs the same code in torch ops.

Run for real with `pytest benches/bench_quantize.py --benchmark-enable`; the ratio is printed
by comparing the two rows of the same group.
"""

from __future__ import annotations

import pytest
import torch

from ferrolm import comm

N = 1 << 24


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    return torch.randn(N, generator=torch.Generator().manual_seed(0))


def torch_quantize(x: torch.Tensor) -> torch.Tensor:
    lo, hi = torch.aminmax(x)
    scale = (hi - lo) / 255.0
    inv = torch.where(scale > 0, 1.0 / scale, torch.zeros_like(scale))
    return ((x - lo) * inv + 0.5).clamp_(0, 255).to(torch.uint8)


@pytest.mark.benchmark(group="quantize-minmax-16M")
def test_bench_ferrolm_quantize_minmax(benchmark, data):
    q = benchmark(comm.quantize, data)
    assert torch.equal(q.payload, torch_quantize(data))


@pytest.mark.benchmark(group="quantize-minmax-16M")
def test_bench_torch_quantize_minmax(benchmark, data):
    benchmark(torch_quantize, data)
