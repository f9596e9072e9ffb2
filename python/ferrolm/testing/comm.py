"""Baselines for the int8 communication demo and benches: the quantizers in plain torch ops, and
the int8 ring all-reduce timed against fp32 ``dist.all_reduce`` on local processes."""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from ferrolm.comm.quantize import DEFAULT_BLOCK_SIZE, packed_len
from ferrolm.testing.launch import run_local

__all__ = ["ring_times", "torch_dequantize_accumulate", "torch_quantize"]


def torch_quantize(
    x: torch.Tensor, scheme: str, block_size: int = DEFAULT_BLOCK_SIZE
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """A scheme's int8 codes of float32 ``x`` computed with torch ops, and its parameters.

    The baseline the Rust quantizers are timed against: ``minmax`` and ``blockwise`` return
    ``(lo, scale)`` (one per block for ``blockwise``, so ``x.numel()`` must divide by
    ``block_size``), ``intellect`` returns ``(codebook,)``: the mean of the values in each of
    the 256 buckets (the bucket centre where a bucket is empty).

    Example:
        >>> x = torch.linspace(-1.0, 1.0, 512)
        >>> codes, (lo, scale) = torch_quantize(x, "blockwise")
        >>> codes.shape, codes.dtype, lo.shape
        (torch.Size([512]), torch.uint8, torch.Size([2]))
        >>> int(codes[0]), int(codes[255]), int(codes[-1])
        (0, 255, 255)
    """
    if scheme == "minmax":
        lo, hi = torch.aminmax(x)
        scale = (hi - lo) / 255.0
        inv = torch.where(scale > 0, 1.0 / scale, torch.zeros_like(scale))
        return ((x - lo) * inv + 0.5).clamp_(0, 255).to(torch.uint8), (lo, scale)
    if scheme == "blockwise":
        xb = x.view(-1, block_size)
        lo, hi = torch.aminmax(xb, dim=1)
        scale = (hi - lo) / 255.0
        inv = torch.where(scale > 0, 1.0 / scale, torch.zeros_like(scale))
        codes = ((xb - lo[:, None]) * inv[:, None] + 0.5).clamp_(0, 255).to(torch.uint8)
        return codes.view(-1), (lo, scale)
    if scheme != "intellect":
        raise ValueError(f"unknown scheme {scheme!r}")
    scale = 6.0 * x.square().mean().sqrt() / 256.0
    codes = (x / scale).round_().add_(128).clamp_(0, 255).to(torch.uint8)
    idx = codes.long()
    sums = torch.zeros(256, device=x.device).index_add_(0, idx, x)
    counts = torch.bincount(idx, minlength=256)
    centre = (torch.arange(256, dtype=torch.float32, device=x.device) - 128) * scale
    return codes, (torch.where(counts > 0, sums / counts.clamp(min=1), centre),)


def torch_dequantize_accumulate(
    codes: torch.Tensor,
    params: tuple[torch.Tensor, ...],
    scheme: str,
    acc: torch.Tensor,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> None:
    """Adds the values that :func:`torch_quantize`'s ``codes`` and ``params`` stand for to ``acc``.

    Example:
        >>> x = torch.linspace(-1.0, 1.0, 512)
        >>> acc = torch.zeros(512)
        >>> torch_dequantize_accumulate(*torch_quantize(x, "minmax"), "minmax", acc)
        >>> bool((acc - x).abs().max() < 2.0 / 255)
        True
    """
    if scheme == "minmax":
        lo, scale = params
        acc += codes.float() * scale + lo
    elif scheme == "blockwise":
        lo, scale = params
        deq = codes.view(-1, block_size).float() * scale[:, None] + lo[:, None]
        acc.view(-1, block_size).add_(deq)
    else:
        (book,) = params
        acc += book[codes.long()]


def _ring_worker(rank: int, world: int, n: int, repeats: int, scheme: str) -> dict[str, float]:
    import torch.distributed as dist

    from ferrolm import comm

    x = torch.randn(n, generator=torch.Generator().manual_seed(rank))
    others = (torch.randn(n, generator=torch.Generator().manual_seed(r)) for r in range(world))
    exact = sum(others, torch.zeros(n))

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


def ring_times(
    n: int, repeats: int = 2, world: int = 2, scheme: str = "blockwise"
) -> dict[str, Any]:
    """Times the int8 ring vs fp32 ``dist.all_reduce`` of ``n`` floats on ``world`` local gloo
    processes (the slowest rank's best of ``repeats`` after a warm-up), and the int8 result's
    relative L2 error."""
    threads = max(1, (os.cpu_count() or 2) // world)
    res = run_local(_ring_worker, world, n, repeats, scheme, timeout=600, threads=threads)
    fp32 = max(r["fp32_s"] for r in res)
    int8 = max(r["int8_s"] for r in res)
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
