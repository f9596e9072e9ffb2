"""Converting a GGUF model to a cached Hugging Face checkpoint, once; listing and clearing it.

Loading GGUF through ``transformers`` dequantizes every tensor and takes tens of seconds; the
speculative-decoding fixtures and ``ferrolm.tokens`` both convert once and reload the saved copy
in seconds. ``ferrolm.tokens.load_model`` stores bfloat16 (half the float32 size: about 14 GB
for a 7B model instead of 28); ``ferrolm cache ls`` and ``ferrolm cache clear`` manage the entries.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ferrolm._optional import require

logger = logging.getLogger(__name__)


def cache_root() -> Path:
    """Where converted models are cached.

    ``$FERROLM_CACHE`` if set; else ``$HF_HOME/ferrolm`` when ``HF_HOME`` is set (whoever moved
    the Hugging Face cache to a larger disk wants the converted weights there too); else
    ``$XDG_CACHE_HOME/ferrolm``; else ``~/.cache/ferrolm``. Empty variables count as unset.

    Example:
        >>> cache_root().name
        'ferrolm'
    """
    for variable, sub in (
        ("FERROLM_CACHE", ""),
        ("HF_HOME", "ferrolm"),
        ("XDG_CACHE_HOME", "ferrolm"),
    ):
        value = os.environ.get(variable)
        if value:
            return Path(value).expanduser() / sub if sub else Path(value).expanduser()
    return Path.home() / ".cache" / "ferrolm"


@dataclass(frozen=True)
class CacheEntry:
    """One converted checkpoint in the cache.

    Attributes:
        path: its directory.
        name: the path relative to :func:`cache_root`.
        size: bytes of all its files.
        modified: last modification time (seconds since the epoch).
    """

    path: Path
    name: str
    size: int
    modified: float


def cache_entries(root: Optional[Path] = None) -> list[CacheEntry]:
    """The converted checkpoints (directories holding a ``config.json``) under ``root``.

    Args:
        root: the cache directory (default :func:`cache_root`).

    Returns:
        the entries sorted by name; none when the directory does not exist.
    """
    root = cache_root() if root is None else root
    if not root.is_dir():
        return []
    entries = []
    for config in sorted(root.rglob("config.json")):
        path = config.parent
        files = [f for f in path.rglob("*") if f.is_file() and not f.is_symlink()]
        entries.append(
            CacheEntry(
                path=path,
                name=path.relative_to(root).as_posix(),
                size=sum(f.stat().st_size for f in files),
                modified=max((f.stat().st_mtime for f in files), default=config.stat().st_mtime),
            )
        )
    return entries


def remove_entry(entry: CacheEntry) -> None:
    """Deletes one cache entry (its directory)."""
    shutil.rmtree(entry.path)


def convert_gguf(gguf: Path, saved: Path, dtype: str = "float32") -> None:
    """Writes ``gguf`` as a plain checkpoint (model + tokenizer) of ``dtype`` to ``saved``.

    The copy is staged next to ``saved`` and renamed into place, so an interrupted conversion
    never leaves a half-written cache entry. A no-op when ``saved`` already holds a model.
    Only local files are read: the user's Hugging Face settings are neither needed nor changed.

    Args:
        gguf: the GGUF file.
        saved: the checkpoint directory to create.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``: what the weights are stored as.
    """
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"`dtype` must be float32, bfloat16 or float16, got {dtype!r}")
    if (saved / "config.json").is_file():
        return
    require("torch", "converting a GGUF model")
    require("transformers", "converting a GGUF model")
    # transformers reads GGUF through gguf and refuses to load one without accelerate.
    require("gguf", "converting a GGUF model")
    require("accelerate", "converting a GGUF model")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info(
        "converting %s to a %s checkpoint in %s (once; tens of seconds)", gguf, dtype, saved
    )
    saved.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=saved.parent) as tmp:
        model: Any = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=getattr(torch, dtype), local_files_only=True
        )
        tokenizer = AutoTokenizer.from_pretrained(
            gguf.parent, gguf_file=gguf.name, local_files_only=True
        )
        # The weights are dequantized already: drop the quantizer record so save_pretrained
        # writes a plain checkpoint (no second copy in memory).
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        staging = Path(tmp) / "out"
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        del model
        if saved.exists():
            shutil.rmtree(saved)
        staging.rename(saved)
