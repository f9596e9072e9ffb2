"""Loading tokenizers for the scan: files, tokenizer objects and tiktoken encodings.

GGUF and tiktoken vocabularies are converted (in Rust) into a ``tokenizers`` tokenizer that
encodes text as the model's own tokenizer does; :func:`encode` exposes that encoding, so the
conversion can be checked against reference tokenizations.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

from ferrolm import _native
from ferrolm._paths import check_revision, is_hub_id, resolve_tokenizer

#: tiktoken encodings whose split pattern and special tokens are known (a rank file of one of
#: these needs ``encoding=NAME`` unless its file name is ``NAME.tiktoken``).
ENCODING_NAMES = ("gpt2", "r50k_base", "p50k_base", "cl100k_base", "o200k_base")

TokenizerSource = Union[str, "os.PathLike[str]", Any]


def resolve_path(path: Path, revision: Optional[str] = None, argument: str = "path") -> Path:
    """A tokenizer file, or the tokenizer file inside a directory or a Hub repository.

    ``revision`` (a branch, tag or commit) applies to a Hub id; a local path ignores it, as
    ``from_pretrained`` does.
    """
    check_revision(revision)
    if not path.exists() and is_hub_id(str(path)):
        path = resolve_tokenizer(str(path), revision=revision, argument=argument)
    if not path.exists():
        raise FileNotFoundError(f"`path` does not exist: {path}")
    if path.is_file():
        return path
    for name in ("tokenizer.json",):
        if (path / name).is_file():
            return path / name
    for pattern in ("*.gguf", "*.tiktoken"):
        found = sorted(path.glob(pattern))
        if found:
            return found[0]
    raise FileNotFoundError(f"no tokenizer.json, *.gguf or *.tiktoken file in the directory {path}")


def is_tiktoken_encoding(source: object) -> bool:
    """Whether ``source`` looks like a ``tiktoken.Encoding`` (duck-typed, tiktoken not needed)."""
    return all(hasattr(source, a) for a in ("_pat_str", "_mergeable_ranks", "_special_tokens"))


def _from_tiktoken_encoding(enc: Any) -> _native.tokens.Scanner:
    ranks, pattern, specials = enc._mergeable_ranks, enc._pat_str, enc._special_tokens
    if not isinstance(pattern, str):
        raise TypeError(f"`source._pat_str` must be a str, got {type(pattern).__name__}")
    if not isinstance(ranks, Mapping) or not all(
        isinstance(k, bytes) and isinstance(v, int) for k, v in ranks.items()
    ):
        raise TypeError("`source._mergeable_ranks` must map bytes to int")
    if not isinstance(specials, Mapping) or not all(
        isinstance(k, str) and isinstance(v, int) for k, v in specials.items()
    ):
        raise TypeError("`source._special_tokens` must map str to int")
    for what, values in (
        ("_mergeable_ranks", ranks.values()),
        ("_special_tokens", specials.values()),
    ):
        bad = [v for v in values if not 0 <= v < 2**32]
        if bad:
            raise ValueError(f"`source.{what}` ids must be in [0, 2**32), got {bad[0]}")
    name = str(getattr(enc, "name", "tiktoken.Encoding"))
    return _native.tokens.Scanner.from_tiktoken_ranks(
        list(ranks.items()), pattern, list(specials.items()), name
    )


def _object_json(source: Any) -> str:
    backend = getattr(source, "backend_tokenizer", source)
    to_str = getattr(backend, "to_str", None)
    if to_str is None:
        raise TypeError(
            "`source` must be a path, a tokenizers.Tokenizer, a Hugging Face fast tokenizer or "
            f"a tiktoken.Encoding, got {type(source).__name__}"
        )
    return str(to_str())


def _checked_path(
    source: TokenizerSource, encoding: Optional[str], revision: Optional[str] = None
) -> Optional[Path]:
    """The resolved path of a path ``source`` (None for objects), ``encoding`` checked."""
    check_revision(revision)
    if encoding is not None:
        if not isinstance(encoding, str):
            raise TypeError(f"`encoding` must be a str or None, got {type(encoding).__name__}")
        if encoding not in ENCODING_NAMES:
            raise ValueError(f"`encoding` must be one of {list(ENCODING_NAMES)}, got {encoding!r}")
        if not isinstance(source, (str, os.PathLike)):
            raise TypeError(
                f"`encoding` goes with a tiktoken rank file path, got {type(source).__name__}"
            )
    if not isinstance(source, (str, os.PathLike)):
        if revision is not None:
            raise ValueError(
                f"`revision` goes with a Hub id, not with a {type(source).__name__} `source`"
            )
        return None
    path = resolve_path(Path(source), revision, argument="source")
    if encoding is not None:
        with open(path, "rb") as f:
            head = f.read(4)
        if head == b"GGUF" or head.lstrip()[:1] == b"{":
            raise ValueError(f"`encoding` applies to tiktoken rank files only, got {path}")
    return path


def load_native(
    source: TokenizerSource, encoding: Optional[str] = None, revision: Optional[str] = None
) -> tuple[_native.tokens.Scanner, str]:
    """The native scanner for ``source`` and a name for it (see :func:`encode`)."""
    path = _checked_path(source, encoding, revision)
    if path is not None:
        if encoding is not None:
            return _native.tokens.Scanner.from_tiktoken_file(path, encoding=encoding), str(path)
        return _native.tokens.Scanner.from_file(path), str(path)
    if is_tiktoken_encoding(source):
        return _from_tiktoken_encoding(source), str(getattr(source, "name", "tiktoken.Encoding"))
    return _native.tokens.Scanner.from_json(_object_json(source)), type(source).__name__


def encode_batch(
    source: TokenizerSource,
    texts: Sequence[str],
    *,
    encoding: Optional[str] = None,
    add_special_tokens: bool = False,
    revision: Optional[str] = None,
) -> list[list[int]]:
    """Token ids of each of ``texts`` under ``source`` as ferrolm converts it.

    The tokenizer is loaded once (see :func:`encode` for the arguments).

    Example:
        >>> from tokenizers import Tokenizer, models
        >>> bpe = models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")])
        >>> encode_batch(Tokenizer(bpe), ["ab", "ba"])
        [[2], [1, 0]]
    """
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("`texts` must be a sequence of str")
    path = _checked_path(source, encoding, revision)
    if path is not None:
        ids, _ = _native.tokens.encode_file(
            path, list(texts), encoding=encoding, add_special_tokens=bool(add_special_tokens)
        )
        return ids
    native, _ = load_native(source, encoding)
    return [list(native.encode(t, add_special_tokens=bool(add_special_tokens))) for t in texts]


def encode(
    source: TokenizerSource,
    text: str,
    *,
    encoding: Optional[str] = None,
    add_special_tokens: bool = False,
    revision: Optional[str] = None,
) -> list[int]:
    """Token ids of ``text`` under the tokenizer ``source`` as ferrolm converts it.

    GGUF vocabularies are rebuilt from their metadata (the split rule of their
    ``tokenizer.ggml.pre`` label, normalisers, byte fallback, added tokens); tiktoken rank
    files get their encoding's pattern and special tokens. This is the tokenizer every scan
    judges reachability with; ``tests/test_tokens_reference.py`` checks it against llama.cpp's
    reference tokenizations. To encode many texts, :func:`encode_batch` loads once.

    Args:
        source: a ``tokenizer.json``, GGUF or tiktoken file or a directory holding one, a
            Hub id (``org/name``), a ``tokenizers.Tokenizer``, a Hugging Face fast tokenizer,
            or a ``tiktoken.Encoding``.
        text: the text to encode.
        encoding: for a tiktoken rank file, its encoding name (see :data:`ENCODING_NAMES`).
        add_special_tokens: add the tokenizer's BOS/EOS template, if it has one.
        revision: for a Hub id, the branch, tag or commit to read (default the main branch),
            resolved like ``from_pretrained``; ignored for a local path.

    Returns:
        The token ids.

    Raises:
        FileNotFoundError: the path is missing.
        ValueError: the file is malformed or its tokenizer type is not supported.
        TypeError: ``source`` or ``text`` has an unsupported type.

    Example:
        >>> from tokenizers import Tokenizer, models
        >>> bpe = models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")])
        >>> encode(Tokenizer(bpe), "ab")
        [2]
    """
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a str, got {type(text).__name__}")
    return encode_batch(
        source,
        [text],
        encoding=encoding,
        add_special_tokens=add_special_tokens,
        revision=revision,
    )[0]
