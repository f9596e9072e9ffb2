"""CUDA plumbing: find the driver and NVRTC, compile ferrolm's kernels, describe the device.

ferrolm's kernels are ``.cu`` sources compiled at run time by NVRTC, loaded dynamically, so a
machine without CUDA still imports and runs ferrolm (CPU paths). NVRTC ships with CUDA builds of
torch as the ``nvidia-cuda-nvrtc`` wheel; ferrolm finds it there (or on the library path, or at
``$FERROLM_NVRTC``) and loads it before the first compile.

Example:
    >>> import ferrolm
    >>> ferrolm.cuda.is_available()  # doctest: +SKIP
    False
    >>> [k.name for k in ferrolm.cuda.compile_check()]  # doctest: +SKIP
    ['quantize_minmax']
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

from ferrolm import _native

__all__ = [
    "KernelReport",
    "compile_check",
    "device_count",
    "driver_available",
    "is_available",
    "kernel_names",
    "nvrtc_available",
    "nvrtc_path",
    "require_gpu",
]


@dataclass(frozen=True)
class KernelReport:
    """One kernel family compiled by NVRTC.

    Attributes:
        name: Family name (the ``.cu`` file in ``cuda/kernels/`` without its suffix).
        ptx_bytes: Size of the generated PTX.
    """

    name: str
    ptx_bytes: int


def _candidate_nvrtc_paths() -> list[str]:
    paths: list[str] = []
    override = os.environ.get("FERROLM_NVRTC")
    if override:
        paths.append(override)
    spec = importlib.util.find_spec("nvidia")
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            found = glob.glob(os.path.join(root, "*", "lib", "libnvrtc.so*"))
            paths.extend(sorted(p for p in found if "builtins" not in os.path.basename(p)))
    return paths


@lru_cache(maxsize=1)
def nvrtc_path() -> Optional[str]:
    """Loads NVRTC from the ``nvidia`` wheels (or ``$FERROLM_NVRTC``) and returns its path.

    Returns ``None`` when no such file loads; NVRTC may still be found on the library path.
    """
    for path in _candidate_nvrtc_paths():
        try:
            # RTLD_GLOBAL: the native module then finds the library by its soname.
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        return path
    return None


def nvrtc_available() -> bool:
    """Whether NVRTC can be loaded (needed to compile kernels; no GPU needed)."""
    nvrtc_path()
    return bool(_native.cuda.nvrtc_available())


def driver_available() -> bool:
    """Whether the NVIDIA driver library ``libcuda`` can be loaded."""
    return bool(_native.cuda.driver_available())


def device_count() -> int:
    """Number of CUDA devices, 0 when there is no driver."""
    if not driver_available():
        return 0
    try:
        return int(_native.cuda.device_count())
    except RuntimeError:
        return 0


def is_available() -> bool:
    """Whether ferrolm's GPU kernels can run here: driver, at least one GPU, and NVRTC."""
    return driver_available() and device_count() > 0 and nvrtc_available()


def kernel_names() -> list[str]:
    """The kernel families ferrolm ships."""
    return list(_native.cuda.kernel_names())


def compile_check(arch: Optional[str] = None) -> list[KernelReport]:
    """Compiles every kernel in ``cuda/kernels/`` with NVRTC. No GPU is needed.

    Args:
        arch: Virtual architecture such as ``"compute_90"``; ``None`` means the oldest one
            that this NVRTC supports and the kernels can use (``compute_60`` or newer: NVRTC's
            own default is too old for them before CUDA 13).

    Returns:
        One report per kernel family.

    Raises:
        RuntimeError: NVRTC is missing, or a kernel does not compile (the log is included).
    """
    if not nvrtc_available():
        raise RuntimeError(
            "NVRTC (libnvrtc) was not found: install a CUDA build of torch (it brings the "
            "`nvidia-cuda-nvrtc` wheel), or set FERROLM_NVRTC to the path of libnvrtc.so"
        )
    return [KernelReport(name, size) for name, size in _native.cuda.compile_all(arch)]


def require_gpu(arg: str, device_index: int) -> None:
    """Raises ``RuntimeError`` unless ferrolm's kernels can run on CUDA device ``device_index``."""
    if not driver_available():
        raise RuntimeError(f"`{arg}` is on a CUDA device but the CUDA driver was not found")
    if not nvrtc_available():
        raise RuntimeError(
            f"`{arg}` is on a CUDA device but NVRTC (libnvrtc) was not found: install the "
            "`nvidia-cuda-nvrtc` wheel or set FERROLM_NVRTC"
        )
    count = device_count()
    if device_index >= count:
        raise RuntimeError(f"`{arg}` is on cuda:{device_index} but the driver sees {count} GPU(s)")
