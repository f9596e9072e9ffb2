"""`ferrolm doctor`: what ferrolm finds on this machine, honestly."""

from __future__ import annotations

import importlib.metadata
import os
import platform

from ferrolm import __version__
from ferrolm import cuda as _cuda
from ferrolm._native.cuda import driver_version as cuda_driver_version
from ferrolm._native.cuda import nvrtc_version as cuda_nvrtc_version
from ferrolm._report import Section


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def doctor_section() -> Section:
    """Versions, CPU threads, CUDA driver / GPU / NVRTC, and whether every kernel compiles."""
    s = Section("Environment", ["check", "result", "status"])
    s.add("ferrolm", __version__, "ok")
    s.add("python", platform.python_version(), "ok")
    for dist in ("torch", "transformers", "numpy", "tokenizers"):
        v = _version(dist)
        s.add(dist, v, "ok" if v != "not installed" else "missing")
    s.add("CPU threads", os.cpu_count(), "ok")
    try:
        import torch

        s.add("torch intra-op threads", torch.get_num_threads(), "ok")
    except ImportError:
        pass

    if _cuda.driver_available():
        major, minor = cuda_driver_version()
        s.add("CUDA driver", f"found (CUDA {major}.{minor})", "ok")
        n = _cuda.device_count()
        s.add("GPUs", n, "ok" if n else "missing")
    else:
        s.add("CUDA driver", "not found (libcuda.so)", "missing")
        s.add("GPUs", 0, "missing")
        s.notes.append("No NVIDIA driver: GPU paths are unavailable; CPU paths work.")

    if _cuda.nvrtc_available():
        major, minor = cuda_nvrtc_version()
        where = _cuda.nvrtc_path() or "library path"
        s.add("NVRTC", f"{major}.{minor} ({where})", "ok")
        try:
            for k in _cuda.compile_check():
                s.add(f"kernel {k.name}.cu", f"compiles ({k.ptx_bytes} bytes of PTX)", "ok")
        except RuntimeError as e:
            s.add("kernels", f"do not compile: {e}", "error")
    else:
        s.add("NVRTC", "not found", "missing")
        s.notes.append(
            "NVRTC missing: kernels cannot be compiled; install a CUDA build of torch "
            "(it brings nvidia-cuda-nvrtc) or set FERROLM_NVRTC."
        )
    return s
