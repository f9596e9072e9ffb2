"""`ferrolm demo`: run every capability on built-in defaults and report timings vs baselines.

Each capability contributes one function returning a :class:`~ferrolm._report.Section`; they
are listed in :data:`SECTIONS` in the order they print.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from ferrolm import comm
from ferrolm import cuda as _cuda
from ferrolm._doctor import doctor_section
from ferrolm._report import Report, Section
from ferrolm._timing import best_of


def _torch_minmax_quantize(x: torch.Tensor) -> torch.Tensor:
    lo, hi = torch.aminmax(x)
    scale = (hi - lo) / 255.0
    inv = torch.where(scale > 0, 1.0 / scale, torch.zeros_like(scale))
    return ((x - lo) * inv + 0.5).clamp_(0, 255).to(torch.uint8)


def quantizer_section() -> Section:
    """The first kernel: int8 min-max quantization, CPU (Rust) vs torch ops, plus NVRTC/GPU."""
    s = Section(
        "int8 min-max quantizer (16M float32)",
        ["path", "time (ms)", "vs torch ops", "max abs error", "note"],
    )
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1 << 24, generator=gen)
    t_ferrolm = best_of(lambda: comm.quantize(x))
    t_torch = best_of(lambda: _torch_minmax_quantize(x))
    q = comm.quantize(x)
    err = float((comm.dequantize(q) - x).abs().max())
    same = bool(torch.equal(q.payload, _torch_minmax_quantize(x)))
    s.add("torch ops (baseline)", t_torch * 1e3, 1.0, None, "aminmax + affine + cast")
    s.add(
        "ferrolm CPU",
        t_ferrolm * 1e3,
        t_torch / t_ferrolm,
        err,
        "codes equal torch's" if same else "codes differ from torch's",
    )
    if _cuda.nvrtc_available():
        start = time.perf_counter()
        kernels = _cuda.compile_check()
        s.add(
            "NVRTC compile",
            (time.perf_counter() - start) * 1e3,
            None,
            None,
            f"{len(kernels)} kernel file(s) compiled",
        )
    else:
        s.add("NVRTC compile", None, None, None, "skipped: NVRTC not found")
    if _cuda.is_available():
        xg = x.cuda()
        qg = comm.quantize(xg)
        torch.cuda.synchronize()

        def run_gpu() -> None:
            comm.quantize(xg)
            torch.cuda.synchronize()

        t_gpu = best_of(run_gpu)
        same_gpu = bool(torch.equal(qg.payload.cpu(), q.payload))
        s.add(
            "ferrolm GPU",
            t_gpu * 1e3,
            t_torch / t_gpu,
            None,
            "codes equal CPU's" if same_gpu else "codes differ from CPU's",
        )
    else:
        s.add("ferrolm GPU", None, None, None, "skipped: no CUDA GPU")
    s.notes.append(f"torch threads: {torch.get_num_threads()}; best of 3 after a warm-up.")
    return s


def _tokens_section() -> Section:
    """Under-trained tokens: scan + indicators on SmolLM2-135M, ferrolm vs a Python loop."""
    from ferrolm.tokens._demo import demo_section

    return demo_section()


SECTIONS: list[Callable[[], Section]] = [doctor_section, quantizer_section, _tokens_section]


def run_demo(progress: Callable[[str], None] = print) -> Report:
    """Runs every section; a section that fails is reported, not fatal."""
    report = Report("ferrolm demo")
    for make in SECTIONS:
        name = (make.__doc__ or make.__name__).strip().splitlines()[0]
        progress(f"running: {name}")
        start = time.perf_counter()
        try:
            section = make()
        except Exception as e:  # report and go on: one broken capability must not hide the rest
            section = Section(make.__name__, ["error"], [[f"{type(e).__name__}: {e}"]])
        section.notes.append(f"section took {time.perf_counter() - start:.1f} s")
        report.sections.append(section)
    return report
