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

from ferrolm._native import __version__, alloc_limit, set_alloc_limit

_SUBMODULES = ("speculative", "prune", "comm", "tokens", "cuda")

__all__ = ["__version__", "alloc_limit", "set_alloc_limit", *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"ferrolm.{name}")
    raise AttributeError(f"module 'ferrolm' has no attribute {name!r}")
