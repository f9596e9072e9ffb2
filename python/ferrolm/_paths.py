"""Where files come from: installed packages (fixtures), local paths, the Hugging Face Hub."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

__all__ = [
    "TOKENIZER_FILES",
    "check_revision",
    "embedding_shards",
    "is_hub_id",
    "package_file",
    "resolve",
    "resolve_embeddings",
    "resolve_file",
    "resolve_tokenizer",
]


def package_file(package: str, *parts: str) -> Optional[Path]:
    """``<package dir>/<parts...>`` when ``package`` is installed and the path exists, else None.

    Every directory of a namespace package is searched, in import order.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root, *parts)
        if path.exists():
            return path
    return None


#: Suffixes of the files ferrolm reads by path: such a name is a local file, never a Hub id.
_FILE_SUFFIXES = (".gguf", ".json", ".model", ".tiktoken", ".safetensors", ".bin", ".txt")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def is_hub_id(name: str) -> bool:
    """Whether ``name`` reads as a Hugging Face Hub repository id (``org/name`` or ``name``).

    Example:
        >>> is_hub_id("HuggingFaceTB/SmolLM2-135M"), is_hub_id("model.gguf"), is_hub_id("./x")
        (True, False, False)
    """
    return bool(_REPO_ID.match(name)) and not name.lower().endswith(_FILE_SUFFIXES)


def resolve(
    name_or_path: Union[str, os.PathLike[str]],
    *,
    revision: Optional[str] = None,
    allow_patterns: Optional[Sequence[str]] = None,
    argument: str = "path",
) -> Path:
    """A local path, or the local snapshot of a Hub repository resolved like ``from_pretrained``.

    A path that exists is returned as it is. Otherwise a Hub id is looked up through
    ``huggingface_hub``, which applies the user's settings unchanged: the hub cache
    (``HF_HOME``, ``HF_HUB_CACHE``), ``HF_HUB_OFFLINE`` (cache only) and the token; ``revision``
    is a branch, tag or commit.

    Args:
        name_or_path: a file, a directory or a Hub id.
        revision: the Hub revision (default the main branch); ignored for local paths.
        allow_patterns: download only the files matching these globs (default all).
        argument: the argument's name, for messages.

    Raises:
        FileNotFoundError: neither an existing path nor a Hub repository (revision, file) that
            can be found, offline or online; the message says which.
    """
    check_revision(revision)
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    allow = list(allow_patterns) if allow_patterns is not None else None
    return Path(_hub("snapshot_download", name_or_path, revision, argument, allow_patterns=allow))


def resolve_file(
    repo: Union[str, os.PathLike[str]],
    filename: str,
    *,
    revision: Optional[str] = None,
    argument: str = "path",
) -> Path:
    """One file of a local directory or of a Hub repository (downloading that file only)."""
    check_revision(revision)
    path = Path(repo).expanduser()
    if path.is_dir():
        found = path / filename
        if not found.is_file():
            raise FileNotFoundError(f"`{argument}` has no {filename}: {path}")
        return found
    if path.exists():
        raise FileNotFoundError(f"`{argument}` must be a directory to hold {filename}: {path}")
    return Path(_hub("hf_hub_download", repo, revision, argument, filename=filename))


def check_revision(revision: object) -> None:
    """Raises TypeError unless ``revision`` is a str (a branch, tag or commit) or None.

    Example:
        >>> check_revision(["main"])
        Traceback (most recent call last):
        ...
        TypeError: `revision` must be a str (branch, tag or commit) or None, got list
    """
    if revision is not None and not isinstance(revision, str):
        raise TypeError(
            "`revision` must be a str (branch, tag or commit) or None, got "
            f"{type(revision).__name__}"
        )


def _hub(
    function: str, repo: Union[str, os.PathLike[str]], revision: Any, argument: str, **kw: Any
) -> str:
    """Calls ``huggingface_hub.<function>`` for a Hub id; its failures become FileNotFoundError."""
    name = os.fspath(repo)
    if not is_hub_id(name):
        raise FileNotFoundError(f"`{argument}` does not exist: {name}")
    if importlib.util.find_spec("huggingface_hub") is None:
        raise FileNotFoundError(
            f"`{argument}` {name!r} is not a local path, and reading it as a Hugging Face Hub id "
            "needs huggingface_hub: pip install 'ferrolm[hf]'"
        )
    hub = importlib.import_module("huggingface_hub")
    try:
        return str(getattr(hub, function)(name, revision=revision, **kw))
    except Exception as e:  # the hub library's errors share no public base class in all versions
        offline = bool(hub.constants.HF_HUB_OFFLINE)
        where = "in the Hub cache (HF_HUB_OFFLINE is set)" if offline else "on the Hub"
        at = "" if revision is None else f" at `revision` {revision!r}"
        what = f" (file {kw['filename']})" if "filename" in kw else ""
        raise FileNotFoundError(
            f"`{argument}` {name!r} is not a local path and was not found {where}{at}{what}: "
            f"{type(e).__name__}: {e}"
        ) from e


#: Files that describe a tokenizer or a model's configuration (small; always fetched).
TOKENIZER_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "*.tiktoken",
)
_EMBEDDING_TENSOR = re.compile(
    r"(^|\.)(embed_tokens|word_embeddings|wte|tok_embeddings|embed_in|lm_head|output|embed_out)"
    r"\.weight$"
)
_INDEX = "model.safetensors.index.json"


def embedding_shards(index: dict[str, Any]) -> list[str]:
    """The shards of a ``model.safetensors.index.json`` holding the (un)embedding matrices.

    Example:
        >>> embedding_shards({"weight_map": {"model.embed_tokens.weight": "a.safetensors",
        ...                                  "model.layers.0.mlp.up.weight": "b.safetensors",
        ...                                  "lm_head.weight": "c.safetensors"}})
        ['a.safetensors', 'c.safetensors']
    """
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        raise ValueError(f"{_INDEX} has no `weight_map` object")
    return sorted({str(f) for name, f in weight_map.items() if _EMBEDDING_TENSOR.search(name)})


def resolve_tokenizer(name: str, *, revision: Optional[str] = None, argument: str = "path") -> Path:
    """The local snapshot of a Hub repository's tokenizer and config files only."""
    return resolve(name, revision=revision, allow_patterns=TOKENIZER_FILES, argument=argument)


def resolve_embeddings(
    name: str, *, revision: Optional[str] = None, argument: str = "path"
) -> Path:
    """The local snapshot of a Hub repository holding its tokenizer and the shards of its
    (un)embedding matrices, nothing else: a sharded checkpoint's index says which shards those
    are, so a 70B model costs a shard or two instead of the whole download.

    Raises:
        FileNotFoundError: the repository, or a file it needs, cannot be found.
    """
    import json

    allow = (*TOKENIZER_FILES, _INDEX)
    local = resolve(name, revision=revision, allow_patterns=allow, argument=argument)
    if (local / _INDEX).is_file():
        with open(local / _INDEX, encoding="utf-8") as f:
            for shard in embedding_shards(json.load(f)):
                resolve_file(name, shard, revision=revision, argument=argument)
        return local
    # A tokenizer-only repository (or one of GGUF files) has none: the scan works without.
    with contextlib.suppress(FileNotFoundError):
        resolve_file(name, "model.safetensors", revision=revision, argument=argument)
    return local
