"""The ``ferrolm demo`` section for int8 communication: quantizers and the ring all-reduce."""

from __future__ import annotations

import time

import torch

from ferrolm import _native
from ferrolm import cuda as _cuda
from ferrolm._report import Section
from ferrolm._timing import best_of
from ferrolm.comm.quantize import DEFAULT_BLOCK_SIZE, dequantize, packed_len, quantize

N_QUANT = 1 << 24
N_RING = 1 << 22


def _torch_quantize(x: torch.Tensor, scheme: str) -> torch.Tensor:
    if scheme == "minmax":
        lo, hi = torch.aminmax(x)
        scale = (hi - lo) / 255.0
        inv = torch.where(scale > 0, 1.0 / scale, torch.zeros_like(scale))
        return ((x - lo) * inv + 0.5).clamp_(0, 255).to(torch.uint8)
    if scheme == "blockwise":
        xb = x.view(-1, DEFAULT_BLOCK_SIZE)
        lo, hi = torch.aminmax(xb, dim=1)
        scale = (hi - lo) / 255.0
        inv = torch.where(scale > 0, 1.0 / scale, torch.zeros_like(scale))
        return ((xb - lo[:, None]) * inv[:, None] + 0.5).clamp_(0, 255).to(torch.uint8)
    scale = 6.0 * x.square().mean().sqrt() / 256.0
    codes = (x / scale).round_().add_(128).clamp_(0, 255).to(torch.uint8)
    idx = codes.long()
    torch.zeros(256).index_add_(0, idx, x)
    torch.bincount(idx, minlength=256)
    return codes


def demo_section() -> Section:
    """int8 quantizers (16M float32) and the int8 ring all-reduce on 2 local gloo processes."""
    s = Section(
        "int8 quantizers and ring all-reduce (ferrolm.comm)",
        ["what", "ferrolm (ms)", "baseline (ms)", "speed-up", "rel. L2 error", "note"],
    )
    x = torch.randn(N_QUANT, generator=torch.Generator().manual_seed(0))
    for scheme in ("blockwise", "intellect", "minmax"):
        out = torch.empty(packed_len(scheme, DEFAULT_BLOCK_SIZE, N_QUANT), dtype=torch.uint8)
        t_f = best_of(
            lambda scheme=scheme, out=out: _native.comm.quantize_packed(
                scheme, DEFAULT_BLOCK_SIZE, x.numpy(), out.numpy()
            )
        )
        t_t = best_of(lambda scheme=scheme: _torch_quantize(x, scheme), repeats=2)
        err = float((dequantize(quantize(x, scheme)) - x).norm() / x.norm())
        s.add(
            f"quantize {scheme}", t_f * 1e3, t_t * 1e3, t_t / t_f, err, "vs the same in torch ops"
        )
    if _cuda.nvrtc_available():
        start = time.perf_counter()
        kernels = _cuda.compile_check()
        ms = (time.perf_counter() - start) * 1e3
        s.add("NVRTC compile", ms, None, None, None, f"{len(kernels)} kernel families")
    else:
        s.add("NVRTC compile", None, None, None, None, "skipped: NVRTC not found")
    if _cuda.is_available():
        xg = x.cuda()

        def gpu() -> None:
            quantize(xg, "blockwise")
            torch.cuda.synchronize()

        t_g = best_of(gpu)
        s.add("quantize blockwise GPU", t_g * 1e3, None, None, None, "CUDA kernel")
    else:
        s.add("quantize blockwise GPU", None, None, None, None, "skipped: no CUDA GPU")
    from ferrolm.comm._bench import ring_times

    r = ring_times(N_RING, repeats=2, world=2, scheme="blockwise")
    wire = packed_len("blockwise", DEFAULT_BLOCK_SIZE, N_RING) / (4 * N_RING)
    s.add(
        "all-reduce 4M fp32, 2 procs (loopback)",
        r["int8_s"] * 1e3,
        r["fp32_s"] * 1e3,
        r["speedup"],
        r["rel_l2"],
        f"int8 ring vs fp32 dist.all_reduce (gloo); {wire:.3f}x the bytes on the wire",
    )
    s.notes.append(
        "On loopback the int8 ring roughly ties fp32; on a 1 Gbit/s link it is ~3.7x faster "
        "(benches/bench_comm.py shapes a network namespace with tc)."
    )
    s.notes.append(f"torch threads: {torch.get_num_threads()}; best of 3 after a warm-up.")
    return s
