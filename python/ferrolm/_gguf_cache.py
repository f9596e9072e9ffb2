"""Converting a GGUF model to a cached Hugging Face checkpoint, once; listing, clearing and
evicting the cached checkpoints.

Loading GGUF through ``transformers`` dequantizes every tensor and takes tens of seconds; the
speculative-decoding fixtures and ``ferrolm.tokens`` both convert once and reload the saved copy
in seconds. ``ferrolm.tokens.load_model`` stores bfloat16 (half the float32 size: about 14 GB
for a 7B model instead of 28); ``ferrolm cache ls`` and ``ferrolm cache clear`` manage the entries.

The cache has a size cap (:func:`cache_limit`, ``FERROLM_CACHE_MAX_GB``, default
:data:`DEFAULT_MAX_GB`). Each time a conversion is written, the least recently used entries are
deleted until the cache fits under it; the entry just written and entries being loaded (held
through :func:`cached_checkpoint`, by any process) are never deleted. An entry's last use is the
modification time of its lock file, which every load through :func:`cached_checkpoint` touches.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ferrolm._optional import require

logger = logging.getLogger(__name__)

#: The cache's size cap, in GB (10**9 bytes), when ``FERROLM_CACHE_MAX_GB`` is not set.
DEFAULT_MAX_GB = 50.0
#: In each entry: held shared while the entry is loaded, exclusive while it is evicted; its
#: modification time is the entry's last use.
LOCK_NAME = ".ferrolm-lock"
#: Conversions being written and entries being deleted: hidden names, never listed as entries.
_STAGING_PREFIX = ".staging-"
_TRASH_PREFIX = ".evicting-"


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


def cache_limit() -> Optional[int]:
    """The cache's size cap in bytes, from ``FERROLM_CACHE_MAX_GB``; None: no cap.

    The variable is a number of GB (10**9 bytes, fractions allowed, ``0`` keeps only the entry
    just written), or ``none``/``inf`` for no cap; unset or empty means :data:`DEFAULT_MAX_GB`.

    Raises:
        ValueError: the variable is set to anything else (a negative number, NaN, text).

    Example:
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, {"FERROLM_CACHE_MAX_GB": "1.5"}):
        ...     cache_limit()
        1500000000
    """
    raw = os.environ.get("FERROLM_CACHE_MAX_GB", "").strip()
    if not raw:
        return int(DEFAULT_MAX_GB * 1e9)
    if raw.lower() == "none":
        return None
    try:
        gb = float(raw)
    except ValueError:
        gb = math.nan
    if math.isnan(gb) or gb < 0:
        raise ValueError(
            f"FERROLM_CACHE_MAX_GB must be a number of GB >= 0, or 'none' for no cap, got {raw!r}"
        )
    return None if math.isinf(gb) else int(gb * 1e9)


@dataclass(frozen=True)
class CacheEntry:
    """One converted checkpoint in the cache.

    Attributes:
        path: its directory.
        name: the path relative to :func:`cache_root`.
        size: bytes of all its files.
        modified: last modification time of its files (seconds since the epoch).
        last_used: when it was last loaded or written (its lock file's modification time), or
            ``modified`` for an entry that has no lock file yet.
    """

    path: Path
    name: str
    size: int
    modified: float
    last_used: float = 0.0


def cache_entries(root: Optional[Path] = None) -> list[CacheEntry]:
    """The converted checkpoints (directories holding a ``config.json``) under ``root``.

    Directories with a hidden name (conversions being written, entries being deleted) are not
    entries.

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
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        try:
            files = [
                f
                for f in path.rglob("*")
                if f.is_file() and not f.is_symlink() and f.name != LOCK_NAME
            ]
            modified = max((f.stat().st_mtime for f in files), default=config.stat().st_mtime)
            lock = path / LOCK_NAME
            used = lock.stat().st_mtime if lock.is_file() else modified
            size = sum(f.stat().st_size for f in files)
        except FileNotFoundError:  # deleted by another process while we looked
            continue
        entries.append(CacheEntry(path, relative.as_posix(), size, modified, used))
    return entries


def _hold(path: Path, *, exclusive: bool) -> Optional[int]:
    """A descriptor of ``path``'s lock file, locked shared (waiting for an eviction to finish)
    or exclusive (not waiting: None when the entry is in use); None as well when the entry is
    gone. Closing the descriptor releases the lock."""
    lock = path / LOCK_NAME
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
        # An evicted entry is renamed away before it is deleted: the lock must still be the
        # one at this path, in a complete entry.
        present = os.path.samestat(os.fstat(fd), os.stat(lock))
        present = present and (path / "config.json").is_file()
    except (BlockingIOError, FileNotFoundError):
        present = False
    if not present:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def cached_checkpoint(saved: Path, convert: Callable[[Path], None]) -> Iterator[Path]:
    """``saved``, first written by ``convert(saved)`` when missing, held in use for the block.

    While the block runs, no eviction (in any process) deletes the entry; its last use becomes
    now. Load the model inside the block.

    Raises:
        RuntimeError: the entry was evicted by other processes' conversions three times
            before it could be held (the cap is too small for the models in use).
    """
    fd: Optional[int] = None
    for _ in range(3):
        if not (saved / "config.json").is_file():
            convert(saved)
        try:
            fd = _hold(saved, exclusive=False)
        except PermissionError:  # a read-only cache: nothing can evict from it either
            break
        if fd is not None:
            break
    else:
        raise RuntimeError(
            f"the cached checkpoint {saved} was evicted three times before it could be "
            "loaded: raise FERROLM_CACHE_MAX_GB above the models in use together"
        )
    if fd is None:
        yield saved
        return
    try:
        os.utime(fd)
        yield saved
    finally:
        os.close(fd)


def remove_entry(entry: CacheEntry) -> bool:
    """Deletes one cache entry unless it is in use; returns whether it was deleted.

    The entry is renamed to a hidden name under its lock, so no load starts on a half-deleted
    directory, then deleted.
    """
    try:
        fd = _hold(entry.path, exclusive=True)
    except PermissionError as e:  # someone else's entry in a shared cache: not ours to delete
        logger.warning("cannot delete the cache entry %s: %s", entry.path, e)
        return False
    if fd is None:
        return False
    trash = entry.path.with_name(f"{_TRASH_PREFIX}{entry.path.name}-{uuid.uuid4().hex[:8]}")
    try:
        entry.path.rename(trash)
    finally:
        os.close(fd)
    shutil.rmtree(trash, ignore_errors=True)
    if trash.exists():
        logger.warning("could not delete all of %s; delete it by hand", trash)
    return True


def evict(keep: Optional[Path] = None, root: Optional[Path] = None) -> list[CacheEntry]:
    """Deletes the least recently used entries until the cache fits under :func:`cache_limit`.

    ``keep`` (the entry just written) and entries in use are never deleted; when they alone
    are over the cap, a warning says so.

    Returns:
        the deleted entries.
    """
    limit = cache_limit()
    if limit is None:
        return []
    entries = cache_entries(root)
    total = sum(e.size for e in entries)
    kept = None if keep is None else keep.resolve()
    removed: list[CacheEntry] = []
    for e in sorted(entries, key=lambda e: e.last_used):
        if total <= limit:
            break
        if e.path.resolve() != kept and remove_entry(e):
            logger.info("cache over %.3g GB: evicted %s (%d bytes)", limit / 1e9, e.name, e.size)
            removed.append(e)
            total -= e.size
    if total > limit:
        logger.warning(
            "the ferrolm cache holds %.3g GB, over FERROLM_CACHE_MAX_GB=%.3g: the entries left "
            "are in use or just written",
            total / 1e9,
            limit / 1e9,
        )
    return removed


def publish(staging: Path, saved: Path) -> None:
    """Moves a complete checkpoint from ``staging`` into place as ``saved`` and marks it used,
    then evicts least recently used entries when ``saved`` is in the cache (:func:`evict`).

    When another process published ``saved`` first, its entry stays and ``staging`` is deleted.
    """
    (staging / LOCK_NAME).touch()
    if (saved / "config.json").is_file():
        shutil.rmtree(staging)
    else:
        if saved.exists():  # a directory left by something else, without a model
            shutil.rmtree(saved)
        staging.rename(saved)
    root = cache_root()
    if saved.resolve().is_relative_to(root.resolve()):
        evict(keep=saved, root=root)


def convert_gguf(gguf: Path, saved: Path, dtype: str = "float32") -> None:
    """Writes ``gguf`` as a plain checkpoint (model + tokenizer) of ``dtype`` to ``saved``.

    The copy is staged next to ``saved`` and renamed into place, so an interrupted conversion
    never leaves a half-written cache entry; then least recently used entries are evicted when
    the cache is over its cap (:func:`evict`). A no-op when ``saved`` already holds a model.
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
    cache_limit()  # a malformed FERROLM_CACHE_MAX_GB is named before tens of seconds of work
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
    with tempfile.TemporaryDirectory(dir=saved.parent, prefix=_STAGING_PREFIX) as tmp:
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
        publish(staging, saved)
