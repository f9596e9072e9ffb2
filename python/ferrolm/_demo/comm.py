"""The ``ferrolm demo`` section for int8 communication: quantizers and the ring all-reduce."""

from __future__ import annotations

import functools
import time

import torch

from ferrolm import _native
from ferrolm import cuda as _cuda
from ferrolm._report import Section
from ferrolm.comm.quantize import DEFAULT_BLOCK_SIZE, dequantize, packed_len, quantize
from ferrolm.testing.comm import ring_times, torch_quantize
from ferrolm.testing.timing import best_of

N_QUANT = 1 << 24
N_RING = 1 << 22


def demo_section() -> Section:
    """int8 quantizers (16M float32) and the int8 ring all-reduce on 2 local gloo processes."""
    s = Section(
        "int8 quantizers and ring all-reduce (ferrolm.comm)",
        ["what", "ferrolm (ms)", "baseline (ms)", "speed-up", "rel. L2 error", "note"],
    )
    x = torch.randn(N_QUANT, generator=torch.Generator().manual_seed(0))
    for scheme in ("blockwise", "intellect", "minmax"):
        out = torch.empty(packed_len(scheme, DEFAULT_BLOCK_SIZE, N_QUANT), dtype=torch.uint8)
        args = (scheme, DEFAULT_BLOCK_SIZE, x.numpy(), out.numpy())
        t_f = best_of(functools.partial(_native.comm.quantize_packed, *args))
        t_t = best_of(functools.partial(torch_quantize, x, scheme), repeats=2)
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
