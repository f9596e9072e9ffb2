"""ferrolm: fast, correct building blocks for LLM inference and training.

Rust at the core, torch at the edge. Each capability is a subpackage, imported on first use so
that ``import ferrolm`` stays cheap:

- ``ferrolm.speculative``: speculative decoding with draft trees (SpecExec, Sequoia), exact
  verification, and generation over Hugging Face target/draft pairs.
- ``ferrolm.prune``: DivPrune, visual-token pruning by max-min diversity, and its one-line
  integration into LLaVA / LLaVA-NeXT models.
- ``ferrolm.comm``: int8 quantizers, the quantized ring all-reduce over ``torch.distributed``,
  a DDP communication hook and DiLoCo.
- ``ferrolm.tokens``: finding under-trained ("glitch") tokens of a tokenizer and model
  (Magikarp).
- ``ferrolm.cuda``: CUDA driver / NVRTC discovery and the kernel compile check.

Every native buffer sized by the input is checked against :func:`alloc_limit` (16 GiB unless
:func:`set_alloc_limit` changes it) and allocated fallibly: an impossible size is a
``MemoryError`` naming the argument, never an abort.

Native work runs on :func:`get_num_threads` threads: the count given to
:func:`set_num_threads`, else ``torch.get_num_threads()`` once torch is imported, else
``OMP_NUM_THREADS`` (``torchrun`` sets it to 1 per rank), else the cores.

``ferrolm.testing`` holds the plain references, model loaders and launchers that the tests,
benches and ``ferrolm demo`` share; the ``ferrolm`` command lives in ``ferrolm.cli``.

Example:
    >>> import ferrolm
    >>> ferrolm.prune.keep_count(576, 0.098)
    56
"""

from __future__ import annotations

import importlib
from typing import Any

from ferrolm import _native
from ferrolm._native import __version__, alloc_limit, set_alloc_limit

_SUBMODULES = ("speculative", "prune", "comm", "tokens", "cuda")

__all__ = [
    "__version__",
    "alloc_limit",
    "get_num_threads",
    "set_alloc_limit",
    "set_num_threads",
    *_SUBMODULES,
]


def get_num_threads() -> int:
    """The number of threads ferrolm's native calls use.

    In order: the count given to :func:`set_num_threads`; else ``torch.get_num_threads()``
    when torch is imported (so ``torch.set_num_threads`` governs ferrolm too); else
    ``OMP_NUM_THREADS``; else ``RAYON_NUM_THREADS``; else the number of cores. It is read at
    every call, so a change takes effect at the next native call.

    Returns:
        The thread count, at least 1.

    Example:
        >>> import ferrolm
        >>> ferrolm.set_num_threads(2)
        >>> ferrolm.get_num_threads()
        2
        >>> ferrolm.set_num_threads(None)  # follow torch / OMP_NUM_THREADS again
    """
    return _native.get_num_threads()


def set_num_threads(n: int | None) -> None:
    """Fixes the number of threads of ferrolm's native calls (``None``: follow torch again).

    Args:
        n: A count from 1 to 4096, or ``None`` to return to the default order described in
            :func:`get_num_threads`.

    Raises:
        TypeError: ``n`` is not an int or ``None``.
        ValueError: ``n`` is outside [1, 4096].
    """
    _native.set_num_threads(n)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"ferrolm.{name}")
    raise AttributeError(f"module 'ferrolm' has no attribute {name!r}")
