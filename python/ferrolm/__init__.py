"""ferrolm: fast, correct building blocks for LLM inference and training.

Rust at the core, torch at the edge. Capabilities live in subpackages that are imported on
first use, so ``import ferrolm`` stays cheap:

- ``ferrolm.cuda``: CUDA driver / NVRTC discovery and the kernel compile check.
- ``ferrolm.comm``: int8 quantizers (and the quantized all-reduce).

Example:
    >>> import ferrolm
    >>> ferrolm.__version__  # doctest: +SKIP
    '0.1.0'
"""

from __future__ import annotations

import importlib
from typing import Any

from ferrolm._native import __version__

_SUBMODULES = ("cuda", "comm", "speculative", "prune", "tokens", "cli")

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"ferrolm.{name}")
    raise AttributeError(f"module 'ferrolm' has no attribute {name!r}")
