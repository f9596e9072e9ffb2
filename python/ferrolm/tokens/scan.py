"""Tokenizer scan: decode every token, encode it again, and sort tokens into categories."""

from __future__ import annotations

import operator
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union, overload

import numpy as np
import numpy.typing as npt

from ferrolm import _native
from ferrolm.tokens.convert import (
    TokenizerSource,
    _object_json,
    is_tiktoken_encoding,
    load_native,
    resolve_path,
)

#: Codes of the per-token ``category`` array, in code order (see :class:`ScanResult`).
CATEGORY_NAMES = ("ok", "special", "undecodable", "unreachable_single", "unreachable_multi")
OK, SPECIAL, UNDECODABLE, UNREACHABLE_SINGLE, UNREACHABLE_MULTI = range(5)

#: Exclusive summary classes, in report order, with their definitions (used by the CLI).
SUMMARY_DEFINITIONS = {
    "ok": "encoding its decoded text gives the token back, alone or in a context it occurs in",
    "special": "special/control token (added token marked special)",
    "single_byte": "stands for exactly one byte (byte-level or <0xNN> byte-fallback)",
    "undecodable": "multi-byte partial UTF-8: not valid text alone",
    "unreachable_single": "in every context tried, its text encodes to one other token",
    "unreachable_multi": "in every context tried, its text encodes to several tokens",
}


class PackedStrings(Sequence[str]):
    """A read-only sequence of strings stored in one UTF-8 buffer.

    The scan returns every token's string and decoded text this way: string ``i`` is
    ``data[offsets[i]:offsets[i + 1]]`` (``data``: bytes or a ``uint8`` array, not copied),
    decoded when it is read, so a scan of a 262k-token vocabulary hands over two buffers
    instead of building half a million ``str`` objects that most callers never look at. It
    behaves like a read-only list: ``len``, indexing (negative too), slicing (gives a list),
    iteration, ``in``, and ``==`` with a list, a tuple or another ``PackedStrings``.

    Example:
        >>> s = PackedStrings("ab€".encode(), np.array([0, 1, 5], dtype=np.uint32))
        >>> s[1], s[-2:], s == ["a", "b€"]
        ('b€', ['a', 'b€'], True)
    """

    __slots__ = ("_bounds", "_data", "_offsets", "_text")

    def __init__(self, data: Union[bytes, npt.NDArray[np.uint8]], offsets: npt.ArrayLike) -> None:
        bounds = np.ascontiguousarray(offsets)
        if (
            bounds.dtype.kind not in "ui"
            or bounds.ndim != 1
            or len(bounds) == 0
            or bounds[0] != 0
            or bounds[-1] != len(data)
        ):
            raise ValueError(
                f"`offsets` must be a 1-D integer array from 0 to len(data) ({len(data)}), "
                f"got {bounds.dtype} of shape {bounds.shape}"
            )
        self._data = data
        self._offsets = bounds
        # Indexing a memoryview gives Python ints several times faster than a NumPy array.
        self._bounds = bounds.data
        # Slices of `bytes` decode fastest; an array is copied into one on first read.
        self._text = data if isinstance(data, bytes) else None

    def __len__(self) -> int:
        return len(self._bounds) - 1

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: Union[int, slice]) -> Union[str, list[str]]:
        if isinstance(index, slice):
            return [self._get(i) for i in range(*index.indices(len(self)))]
        i = operator.index(index)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for {n} strings")
        return self._get(i)

    def _bytes(self) -> bytes:
        if self._text is None:
            self._text = np.asarray(self._data).tobytes()
        return self._text

    def _get(self, i: int) -> str:
        return self._bytes()[self._bounds[i] : self._bounds[i + 1]].decode()

    def __iter__(self) -> Iterator[str]:
        text, bounds = self._bytes(), self._offsets.tolist()
        for start, end in zip(bounds, bounds[1:]):
            yield text[start:end].decode()

    def __reduce__(self) -> tuple[Any, ...]:
        return (PackedStrings, (self._bytes(), self._offsets))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackedStrings):
            same_text = self._bytes() == other._bytes()
            return same_text and np.array_equal(self._offsets, other._offsets)
        if isinstance(other, (list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        more = ", ..." if len(self) > 3 else ""
        return f"PackedStrings({self[:3]!r}{more}, {len(self)} strings)"


@dataclass
class ScanResult:
    """Per-token results of :func:`scan`; arrays are indexed by token id.

    Attributes:
        tokens: vocabulary string of each id (a :class:`PackedStrings` from a scan).
        decoded: text of each token decoded alone (continuation pieces without ``##``).
        category: ``uint8`` codes, see :data:`CATEGORY_NAMES`.
        single_byte: token stands for exactly one byte.
        continuation: WordPiece continuation piece (``##x``), judged in word context.
        impossible_bytes: contains a byte that occurs in no valid UTF-8 text.
        reencoded_offsets, reencoded: CSR lists of the ids unreachable tokens encode to.
        contained_count: number of longer tokens containing each token (None if not computed).
        contained_offsets, contained_examples: CSR lists of up to ``max_examples`` of them.
        notes: approximations made while converting or scanning the tokenizer.
        source: where the tokenizer came from.
        warnings: assumptions that may make the categories wrong for some tokens (an unknown
            pre-tokenizer label, a tiktoken file without a known encoding).
    """

    tokens: Sequence[str]
    decoded: Sequence[str]
    category: npt.NDArray[np.uint8]
    single_byte: npt.NDArray[np.bool_]
    continuation: npt.NDArray[np.bool_]
    impossible_bytes: npt.NDArray[np.bool_]
    reencoded_offsets: npt.NDArray[np.uint32]
    reencoded: npt.NDArray[np.uint32]
    contained_count: npt.NDArray[np.uint32] | None
    contained_offsets: npt.NDArray[np.uint32] | None
    contained_examples: npt.NDArray[np.uint32] | None
    notes: list[str] = field(default_factory=list)
    source: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def vocab_size(self) -> int:
        """Number of token ids scanned."""
        return len(self.tokens)

    @property
    def special(self) -> npt.NDArray[np.bool_]:
        """Mask of special tokens."""
        mask: npt.NDArray[np.bool_] = self.category == SPECIAL
        return mask

    @property
    def unreachable(self) -> npt.NDArray[np.bool_]:
        """Mask of tokens whose decoded text never encodes to them (single or multi)."""
        mask: npt.NDArray[np.bool_] = (self.category == UNREACHABLE_SINGLE) | (
            self.category == UNREACHABLE_MULTI
        )
        return mask

    @property
    def never_produced(self) -> npt.NDArray[np.bool_]:
        """Mask of tokens the tokenizer cannot produce from plain text.

        Special tokens, unreachable tokens, and byte tokens holding a byte that no valid UTF-8
        text contains.
        """
        return self.special | self.unreachable | self.impossible_bytes

    def summary_class(self) -> npt.NDArray[np.uint8]:
        """An exclusive class per token, indexing ``list(SUMMARY_DEFINITIONS)``.

        Precedence: special, then single-byte, then the scan category. So ``undecodable``
        counts multi-byte partial characters only (GPT-2: 256 single-byte, 216 undecodable).
        """
        names = list(SUMMARY_DEFINITIONS)
        out = np.full(self.vocab_size, names.index("ok"), dtype=np.uint8)
        for code, name in enumerate(CATEGORY_NAMES):
            out[self.category == code] = names.index(name)
        out[self.single_byte & ~self.special] = names.index("single_byte")
        return out

    def counts(self) -> dict[str, int]:
        """Token counts per exclusive summary class (they add up to the vocabulary size)."""
        cls = self.summary_class()
        bins = np.bincount(cls, minlength=len(SUMMARY_DEFINITIONS))
        return {name: int(bins[i]) for i, name in enumerate(SUMMARY_DEFINITIONS)}

    def ids(self, summary: str) -> npt.NDArray[np.int64]:
        """Token ids in one summary class (a key of :data:`SUMMARY_DEFINITIONS`)."""
        names = list(SUMMARY_DEFINITIONS)
        if summary not in names:
            raise ValueError(f"`summary` must be one of {names}, got {summary!r}")
        return np.flatnonzero(self.summary_class() == names.index(summary))

    def _token_id(self, token_id: int) -> int:
        # A negative id would index from the end and answer for another token, in silence.
        n = self.vocab_size
        if isinstance(token_id, bool) or not isinstance(token_id, (int, np.integer)):
            raise TypeError(f"`token_id` must be an int, got {type(token_id).__name__}")
        if not 0 <= token_id < n:
            raise ValueError(f"`token_id` must be an id in [0, {n}), got {token_id}")
        return int(token_id)

    def reencoded_ids(self, token_id: int) -> list[int]:
        """The ids an unreachable token's text encodes to (empty for other tokens)."""
        token_id = self._token_id(token_id)
        a, b = self.reencoded_offsets[token_id], self.reencoded_offsets[token_id + 1]
        return [int(x) for x in self.reencoded[a:b]]

    def contained_in(self, token_id: int) -> list[int]:
        """Up to ``max_examples`` longer tokens containing this token, shortest first."""
        if self.contained_offsets is None or self.contained_examples is None:
            raise ValueError("containment was not computed; call scan(..., containment=True)")
        token_id = self._token_id(token_id)
        a, b = self.contained_offsets[token_id], self.contained_offsets[token_id + 1]
        return [int(x) for x in self.contained_examples[a:b]]


class Scanner:
    """A tokenizer loaded once (in Rust) and scanned on demand.

    Loading converts GGUF and tiktoken vocabularies and builds the exact fast re-encoding path
    (byte-level and SentencePiece-style BPE); :func:`scan` accepts a ``Scanner`` so repeated
    scans skip loading.

    Example:
        >>> from tokenizers import Tokenizer, models
        >>> s = Scanner(Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")])))
        >>> s.vocab_size, s.scan().counts()["ok"]
        (3, 3)
    """

    def __init__(
        self,
        source: TokenizerSource,
        *,
        encoding: Optional[str] = None,
        revision: Optional[str] = None,
    ) -> None:
        self._native, self.source = load_native(source, encoding, revision)

    @property
    def warnings(self) -> list[str]:
        """Assumptions that may make the converted tokenizer differ from the real one.

        An unknown GGUF pre-tokenizer label, a tiktoken rank file with no known encoding:
        the scan's categories may then be wrong for some tokens.
        """
        return list(self._native.warnings)

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text`` under the converted tokenizer (see :func:`encode`)."""
        if not isinstance(text, str):
            raise TypeError(f"`text` must be a str, got {type(text).__name__}")
        return list(self._native.encode(text, add_special_tokens=bool(add_special_tokens)))

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added tokens included."""
        return self._native.vocab_size

    @property
    def has_fast_path(self) -> bool:
        """Whether the exact fast re-encoding path applies (else the `tokenizers` pipeline)."""
        return self._native.has_fast_path

    def to_json(self) -> str:
        """The tokenizer as ``tokenizer.json`` text (for the Python ``tokenizers`` package)."""
        return self._native.to_json()

    def scan(
        self, *, containment: bool = True, max_examples: int = 5, fast: bool = True
    ) -> ScanResult:
        """Scans every token; see :func:`scan`. ``fast=False`` forces the library path."""
        if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 0:
            raise ValueError(f"`max_examples` must be a non-negative int, got {max_examples!r}")
        raw = self._native.scan(containment=containment, max_examples=max_examples, fast=fast)
        raw["tokens"] = PackedStrings(*raw["tokens"])
        raw["decoded"] = PackedStrings(*raw["decoded"])
        return ScanResult(**raw, source=self.source, warnings=self.warnings)


def tokenizer_json(source: TokenizerSource, *, revision: Optional[str] = None) -> str:
    """The ``tokenizer.json`` text of a tokenizer file, directory or tokenizer object.

    GGUF and tiktoken vocabularies are converted (see :func:`scan`); load the result with
    ``tokenizers.Tokenizer.from_str``.

    Example:
        >>> from tokenizers import Tokenizer, models
        >>> text = tokenizer_json(Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[])))
        >>> Tokenizer.from_str(text).get_vocab_size()
        2
    """
    if isinstance(source, (str, os.PathLike)):
        path = resolve_path(Path(source), revision, argument="source")
        text, _ = _native.tokens.tokenizer_json(path)
        return text
    if revision is not None:
        raise ValueError(f"`revision` goes with a Hub id, not with a {type(source).__name__}")
    if is_tiktoken_encoding(source):
        return load_native(source)[0].to_json()
    return _object_json(source)


def scan(
    source: Union[TokenizerSource, Scanner],
    *,
    containment: bool = True,
    max_examples: int = 5,
    encoding: Optional[str] = None,
    revision: Optional[str] = None,
) -> ScanResult:
    """Scans every token of a tokenizer (parallel, in Rust).

    Each token is decoded alone and its text encoded again; tokens are then special,
    undecodable (partial UTF-8), unreachable (the text encodes to one other token, or to
    several) or ok; single-byte tokens are flagged, and with ``containment`` every token lists
    the longer tokens that contain it.

    **Unreachable** means that no natural context makes the tokenizer emit the token. The
    scan encodes the token's text in the contexts it can occur in, the most favourable ones
    for each tokenizer shape, and calls the token reachable when one of them gives exactly
    the token over its text:

    - alone: the text is the whole input (a ``▁`` that a SentencePiece-style tokenizer puts
      in front of a text not starting with a space, left as its own token, is dropped);
    - after a separator, for tokenizers that put ``▁`` in front of the text and have no
      pre-tokenizer (Llama 2, Phi-3, Baichuan GGUF): a word-internal piece (``er``) follows
      other characters, never the text start, where the prepended ``▁`` merges into it
      (``▁er``). The text the token stands for after another token is put after a
      character ``c`` that no BPE merge continues past (a digit in Llama's vocabulary), and
      the token is reachable when ``encode(c + text)`` is ``encode(c)`` then the token. No
      merge can cross from ``c`` into the text, so no other left context does better;
    - WordPiece continuation pieces (``##x``) are judged inside a word.

    Byte-level BPE needs only the first context: its split regexes have no look-behind, so
    a left context either restarts the split at the token's text or only adds merges across
    the boundary. The ``notes`` of the result say which contexts were tried.

    Args:
        source: a ``tokenizer.json``, GGUF or tiktoken file (``base64 rank`` lines), a
            directory holding one, a Hub id (``org/name``: only the tokenizer files are
            fetched), a ``tokenizers.Tokenizer``, a Hugging Face fast tokenizer,
            a ``tiktoken.Encoding`` (duck-typed; tiktoken itself is not needed), or a
            :class:`Scanner`. GGUF vocabularies are split per their ``tokenizer.ggml.pre``
            label as llama.cpp does; an unknown label is a warning in ``warnings``.
        containment: also compute, for every token, the longer tokens containing it.
        max_examples: how many containing tokens to keep per token.
        encoding: the encoding of a tiktoken rank file (``gpt2``, ``r50k_base``,
            ``p50k_base``, ``cl100k_base``, ``o200k_base``): its split pattern and special
            tokens. Without it, a file named ``NAME.tiktoken`` for one of these gets that
            encoding, and any other gets GPT-2's pattern with ``<|endoftext|>`` after the last
            rank, and a warning saying so.
        revision: for a Hub id, the branch, tag or commit to read (default the main branch),
            resolved like ``from_pretrained`` (hub cache, ``HF_HOME``, ``HF_HUB_OFFLINE``);
            ignored for a local path.

    Returns:
        A :class:`ScanResult`.

    Raises:
        FileNotFoundError: the path or a tokenizer inside the directory is missing, or the
            Hub repository (at ``revision``) is not found (offline: not in the cache).
        ValueError: the file is malformed (bad JSON, truncated GGUF, bad tiktoken line), or
            its tokenizer model type is not supported.
        TypeError: ``source`` is of an unsupported type.

    Example:
        A toy BPE vocabulary; GPT-2's ``gpt2.tiktoken``, for comparison, has 256 single-byte
        and 216 undecodable tokens.

        >>> from tokenizers import Tokenizer, models
        >>> bpe = models.BPE(vocab={"a": 0, "b": 1, "ab": 2, "ba": 3}, merges=[("a", "b")])
        >>> r = scan(Tokenizer(bpe))
        >>> [r.decoded[i] for i in np.flatnonzero(r.unreachable)]
        ['ba']
    """
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 0:
        raise ValueError(f"`max_examples` must be a non-negative int, got {max_examples!r}")
    if max_examples >= 2**63:
        raise ValueError(f"`max_examples` must be below 2**63, got {max_examples}")
    if isinstance(source, Scanner):
        if encoding is not None:
            raise ValueError("`encoding` goes with a file path, not with a Scanner")
        if revision is not None:
            raise ValueError("`revision` goes with a Hub id, not with a Scanner")
        scanner = source
    else:
        scanner = Scanner(source, encoding=encoding, revision=revision)
    return scanner.scan(containment=containment, max_examples=max_examples)
